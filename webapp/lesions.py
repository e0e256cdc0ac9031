"""Lesions within a session: photos the user groups as "the same spot", and the "same lesion?" hint.

A lesion is a name, an optional body site from the fixed list
(webapp/body_sites.py) and the ids of its photos; it lives in the session's
data in memory and goes with the session. A photo belongs to at most one
lesion; a lesion always holds at least one photo (ungrouping the last one
deletes it), so the session's photo cap also caps its lesions.

The hint: the classifier keeps each crop's unit-norm image embedding with
the result (``Scores.embedding``). For a photo in no lesion, the most similar
lesion (its best-matching photo) or ungrouped photo of the same modality is
suggested when the cosine similarity reaches ``SAME_LESION_SIMILARITY``. It is
only a suggestion: nothing is grouped until the user confirms, and a "no" is
remembered for the session. Why 0.90 (docs/lesions.md): MedSigLIP, like the
SigLIP it comes from, puts two views of the same object far closer together
than two different objects of one kind, but no labelled set of
same-lesion pairs was available to fit the value, so it errs on the side of
asking rarely; an operator sets ``PRIVASCAN_SAME_LESION_SIMILARITY``.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
from flask_babel import gettext as _

from .body_sites import BodySite, body_site

SAME_LESION_SIMILARITY = 0.90
NAME_MAX = 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class LesionError(Exception):
    """A request about lesions that cannot be honoured; ``message`` is for the user, ``status`` the HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Lesion:
    id: str
    name: str
    site_id: str = ""  # "" = not given
    photo_ids: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def site(self) -> BodySite | None:
        return body_site(self.site_id)


@dataclass(frozen=True)
class Suggestion:
    """ "Same lesion as ...?" for one photo: an existing lesion, or another ungrouped photo."""

    photo_id: str
    similarity: float
    lesion_id: str = ""  # set: join this lesion
    other_photo_id: str = ""  # set: start a lesion with that photo

    @property
    def key(self) -> str:
        return f"lesion:{self.lesion_id}" if self.lesion_id else f"photo:{self.other_photo_id}"


# -- validation -----------------------------------------------------------------------
def clean_name(raw: str | None, fallback: str) -> str:
    name = _CONTROL.sub(" ", raw or "").strip()
    if len(name) > NAME_MAX:
        raise LesionError(_("Please keep the lesion's name to %(limit)d characters or fewer.", limit=NAME_MAX))
    return name or fallback


def clean_site(raw: str | None) -> str:
    if not raw:
        return ""
    if body_site(raw) is None:
        raise LesionError(_("That body site is not in the list. Please choose one from the menu."))
    return raw


# -- reading ---------------------------------------------------------------------------
def lesion_of(data, photo_id: str) -> Lesion | None:
    return next((lesion for lesion in data.lesions.values() if photo_id in lesion.photo_ids), None)


def get_lesion(data, lesion_id: str) -> Lesion:
    lesion = data.lesions.get(lesion_id) if data is not None else None
    if lesion is None:
        raise LesionError(_("That lesion is not in your session (it may have been ungrouped, or your session ended)."), 404)
    return lesion


def photos_in_date_order(data, lesion: Lesion) -> list:
    photos = [data.photos[pid] for pid in lesion.photo_ids if pid in data.photos]
    return sorted(photos, key=lambda p: (p.taken_on, p.added_at))


def embedding_of(photo) -> np.ndarray | None:
    result = photo.result
    if result is None or not result.analysed or result.scores.embedding is None:
        return None
    return result.scores.embedding


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    # Stored unit-norm, but renormalise: a classifier plugin may hand back raw features.
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 0.0


def suggest(data, photo, threshold: float = SAME_LESION_SIMILARITY) -> Suggestion | None:
    """The best "same lesion?" candidate for a photo in no lesion, or None."""
    mine = embedding_of(photo)
    if mine is None or lesion_of(data, photo.id) is not None:
        return None
    best: Suggestion | None = None

    def consider(candidate: Suggestion):
        nonlocal best
        if (photo.id, candidate.key) in data.declined_matches or candidate.similarity < threshold:
            return
        if best is None or candidate.similarity > best.similarity:
            best = candidate

    grouped = set()
    for lesion in data.lesions.values():
        grouped.update(lesion.photo_ids)
        scores = [cosine(mine, e) for e in map(embedding_of, _same_app(data, lesion.photo_ids, photo)) if e is not None]
        if scores:
            consider(Suggestion(photo.id, max(scores), lesion_id=lesion.id))
    for other in data.photos.values():
        if other.id == photo.id or other.id in grouped or not _same_modality(other, photo):
            continue
        theirs = embedding_of(other)
        if theirs is not None:
            consider(Suggestion(photo.id, cosine(mine, theirs), other_photo_id=other.id))
    return best


def _same_modality(a, b) -> bool:
    return a.result is not None and b.result is not None and a.result.app_name == b.result.app_name


def _same_app(data, photo_ids, photo):
    return [data.photos[pid] for pid in photo_ids if pid in data.photos and _same_modality(data.photos[pid], photo)]


# -- changing (every change holds the store's lock) --------------------------------------
def _photo(data, photo_id: str):
    photo = data.photos.get(photo_id)
    if photo is None:
        raise LesionError(_("That photo is not in your session (it may have been deleted, or your session ended)."), 404)
    return photo


def _detach(data, photo_id: str) -> None:
    for lesion in list(data.lesions.values()):
        if photo_id in lesion.photo_ids:
            lesion.photo_ids.remove(photo_id)
            if not lesion.photo_ids:
                del data.lesions[lesion.id]


def new_lesion(store, data, photo_ids: list[str], name: str | None = None, site_id: str | None = None) -> Lesion:
    """Group these photos (each moved out of any other lesion) as a new lesion."""
    with store.locked(data):
        for photo_id in photo_ids:
            _photo(data, photo_id)
        site = clean_site(site_id)
        lesion = Lesion(secrets.token_urlsafe(9), clean_name(name, _("Lesion %(number)d", number=len(data.lesions) + 1)), site)
        for photo_id in dict.fromkeys(photo_ids):
            _detach(data, photo_id)
            lesion.photo_ids.append(photo_id)
        data.lesions[lesion.id] = lesion
        return lesion


def add_to_lesion(store, data, lesion_id: str, photo_id: str) -> Lesion:
    with store.locked(data):
        lesion = get_lesion(data, lesion_id)
        _photo(data, photo_id)
        if photo_id not in lesion.photo_ids:
            _detach(data, photo_id)
            lesion = get_lesion(data, lesion_id)
            lesion.photo_ids.append(photo_id)
        return lesion


def update_lesion(store, data, lesion_id: str, name: str | None, site_id: str | None) -> Lesion:
    with store.locked(data):
        lesion = get_lesion(data, lesion_id)
        new_name = clean_name(name, lesion.name)
        new_site = clean_site(site_id)
        lesion.name, lesion.site_id = new_name, new_site
        return lesion


def ungroup(store, data, photo_id: str) -> Lesion | None:
    """Take a photo out of its lesion; returns the lesion it left (gone if it was the last photo)."""
    with store.locked(data):
        _photo(data, photo_id)
        lesion = lesion_of(data, photo_id)
        if lesion is None:
            raise LesionError(_("That photo is not part of a lesion."), 409)
        _detach(data, photo_id)
        return lesion


def decline(store, data, photo_id: str, key: str) -> None:
    with store.locked(data):
        _photo(data, photo_id)
        data.declined_matches.add((photo_id, key))


def forget_photo(data, photo_id: str) -> None:
    """Called by the store when a photo is deleted."""
    _detach(data, photo_id)
    data.declined_matches = {pair for pair in data.declined_matches if pair[0] != photo_id and pair[1] != f"photo:{photo_id}"}
