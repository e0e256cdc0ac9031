"""The scope gate: is this the kind of picture the clinical app is made for?

The classifier scores the image embedding it already computed for the bank
against the bank's ``[scope]`` descriptions as well (one softmax over the
in-scope and out-of-scope prompts; no second forward pass). The in-scope share
of that softmax is the scope score. A zero-shot gate is only as good as the
model behind it: in demo mode (random weights) it cannot judge anything, says
so, and only the deterministic checks of the quality gate (colour) decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .i18n import N_, Message, Translated

from .interfaces import PromptBank, Scores


@dataclass(frozen=True)
class ScopeVerdict:
    in_scope: bool | None  # None: the gate could not judge (demo model, no scope prompts)
    score: float | None  # in-scope share of the scope softmax
    message: str  # what the page says; empty when in scope

    def as_dict(self) -> dict:
        return {
            "in_scope": self.in_scope,
            "score": None if self.score is None else round(self.score, 4),
            "message": self.message,
        }


def scope_score(scores: Scores, bank: PromptBank) -> float | None:
    """The in-scope share of the scope softmax, or None when nothing was scored."""
    if scores.scope_probabilities is None or not bank.scope.enabled:
        return None
    probabilities = np.asarray(scores.scope_probabilities, dtype=np.float64).reshape(-1)
    if probabilities.size != len(bank.scope.prompts) or not np.all(np.isfinite(probabilities)):
        raise ValueError(f"scope probabilities do not match bank '{bank.name}' ({len(bank.scope.prompts)} prompts)")
    total = probabilities.sum()
    return float(probabilities[: len(bank.scope.in_scope)].sum() / total) if total > 0 else None


def judge_scope(scores: Scores | None, bank: PromptBank, demo: bool = False) -> ScopeVerdict:
    """The gate's verdict on one image's scores under ``bank``'s scope rules."""
    score = scope_score(scores, bank) if scores is not None else None
    # Made on the worker: Messages, shown in the language of whoever reads the result.
    subject = Translated(bank.scope.subject, {code: words["subject"] for code, words in bank.scope.translations.items()
                                              if "subject" in words})
    if demo:
        return ScopeVerdict(
            None, score,
            Message(N_("Demo model: the zero-shot scope gate cannot judge whether this is %(subject)s; "
                       "only the deterministic checks were applied."), subject=subject),
        )
    if score is None:
        return ScopeVerdict(None, None, "")
    if score + 1e-9 >= bank.scope.min_score:
        return ScopeVerdict(True, score, "")
    return ScopeVerdict(False, score, Message(N_("This does not look like %(subject)s."), subject=subject))
