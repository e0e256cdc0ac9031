"""Load the classifiers in the background and say, in words, how it is going.

MedSigLIP takes tens of seconds to load on a CPU, so the page must be usable
at once: this module loads every classifier the clinical apps need on a
background thread, prepares each bank's text embeddings, and keeps a status a
person can read ("loading", "ready", or why not and what to do).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .i18n import N_, Message
from .interfaces import ExpectsBanks, LoadsAtStartup, ModelUnavailable, PreparesBanks, ReleasesTextTower
from .plugins import Registry

log = logging.getLogger(__name__)

READY = Message(N_("Photos can be analysed."))


@dataclass
class ModelStatus:
    state: str = "waiting"  # waiting, loading, ready, unavailable
    # Messages (made on the loader thread, shown in each reader's language).
    message: str = Message(N_("Starting up: the model will begin loading in a moment."))
    advice: str = ""
    seconds: float = 0.0
    # Work still running after "ready" (other banks' descriptions): the status line keeps polling.
    background: str = ""
    # The model's technical description (architecture, copy, device), behind "Technical details".
    detail: str = ""
    # Progress while loading: step of steps (weights, then each picture kind needed first), since when.
    step: int = 0
    steps: int = 0
    started_at: float = 0.0

    @property
    def elapsed(self) -> int:
        return int(time.time() - self.started_at) if self.started_at else 0

    @property
    def ready(self) -> bool:
        return self.state == "ready"


class ModelManager:
    def __init__(self, registry: Registry, default_app: str | None = None):
        self.registry = registry
        self.default_app = default_app
        self._status: dict[str, ModelStatus] = {name: ModelStatus() for name in registry.classifiers}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def status(self, classifier_name: str) -> ModelStatus:
        with self._lock:
            return self._status.get(classifier_name, ModelStatus("unavailable", Message(N_("No classifier is configured."))))

    def start(self) -> None:
        """Load in the background; returns immediately."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.load_all, name="privascan-model-loader", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def load_all(self) -> None:
        # Detectors and explainers with a load() import their libraries now,
        # at start-up: some (ultralytics)
        # create cache folders on first import, which must not happen while
        # a user's photo is being handled.
        for name in self.registry.classifiers:
            self._set(name, message=Message(N_("Starting up: loading the image libraries before the model…")), started_at=time.time())
        for part in [*self.registry.detectors.values(), *self.registry.explainers.values()]:
            if isinstance(part, LoadsAtStartup):
                try:
                    part.load()
                except Exception:
                    log.exception("%s failed to load", part.name)
        for name, classifier in self.registry.classifiers.items():
            self._load(name, classifier)

    def _set(self, name: str, **fields) -> None:
        with self._lock:
            status = self._status[name]
            for key, value in fields.items():
                setattr(status, key, value)

    def _load(self, name: str, classifier) -> None:
        started = time.perf_counter()
        pairs = self.pairs_default_first(name)
        self._set(name, state="loading", message=Message(N_("Loading the model (step 1: reading its weights)…")), advice="",
                  step=1, steps=1 + (1 if isinstance(classifier, PreparesBanks) and pairs else 0), started_at=time.time())
        try:
            if isinstance(classifier, ExpectsBanks) and isinstance(classifier, PreparesBanks):
                # With every pair's embeddings in the cache the text tower is never loaded,
                # and each prepare() below only finds what load() read.
                classifier.expect_banks(pairs)
            classifier.load()
            if isinstance(classifier, PreparesBanks) and pairs:
                # The default modality's default picture kind first: analysis can
                # start as soon as it is ready (on a CPU each set takes a minute or
                # two); the rest are prepared while people already work. A request
                # for one not prepared yet computes it on demand (the classifier
                # serialises that with its own lock).
                self._set(name, step=2, message=Message(N_("Loading the model (step 2: learning the conditions' descriptions)…")))
                classifier.prepare(*pairs[0])
                self._set(name, state="ready", message=READY, detail=_described(classifier),
                          seconds=time.perf_counter() - started)
                for index, (bank, template_set) in enumerate(pairs[1:], start=2):
                    self._set(name, background=Message(N_("Getting the other kinds of picture ready too (%(index)d of "
                                                          "%(total)d); until then, choosing one of them takes a minute longer."),
                                                       index=index, total=len(pairs)))
                    classifier.prepare(bank, template_set)
            if isinstance(classifier, ReleasesTextTower):
                classifier.release_text_tower()
        except ModelUnavailable as exc:
            self._set(name, state="unavailable", message=exc.reason, advice=exc.advice)
            return
        except Exception as exc:  # never let a model problem crash the app
            log.exception("classifier %s failed to load", name)
            self._set(
                name,
                state="unavailable",
                message=Message(N_("The model could not be loaded (%(error)s)."), error=type(exc).__name__),
                advice=Message(N_("See the server log for details.")),
            )
            return
        self._set(
            name,
            state="ready",
            message=READY,
            detail=_described(classifier),
            background="",
            seconds=time.perf_counter() - started,
        )

    def pairs_default_first(self, classifier_name: str) -> list:
        """Every (bank, template set) this classifier serves, the default app's first set first."""
        apps = [app for app in self.registry.apps.values() if app.classifier == classifier_name]
        apps.sort(key=lambda app: app.name != self.default_app)
        pairs = []
        for app in apps:
            bank = self.registry.banks[app.bank]
            for template_set in bank.template_sets:
                if (bank, template_set) not in pairs:
                    pairs.append((bank, template_set))
        return pairs


def _described(classifier) -> str:
    """The classifier's own one-line description (a Message when it gives one) as the status line's sentence."""
    return Message(N_("%(model)s."), model=classifier.describe())
