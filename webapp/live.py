"""Live scan: per-condition thresholds, smoothing, hysteresis and the alert log.

This module is pure logic (no Flask, no model): the live view feeds it one
frame's probabilities at a time and it answers which alerts were raised, and
what the table under the video shows. It is unit-tested with scripted score
sequences in tests/test_live.py.

Smoothing: k-of-n with a moving average. A condition is *raised* when at least
``needed`` of its last ``window`` frame scores reached its threshold **and**
the average of that window did too. We chose k-of-n over an exponential moving
average because it gives a guarantee an EMA cannot: with ``needed >= 2`` a
single frame, however extreme, never raises an alert, whatever the threshold
(an EMA that reacts within two or three frames lets one spike of 1.0 cross a
low threshold on its own). The window is counted in frames, not seconds, so
the behaviour is the same on a 2-core CPU (seconds per frame) and on a GPU
(tens of frames per second), and the tests need no clock.

Hysteresis: an active alert is *cleared* only when the window's average falls
below ``threshold - gap``. Raising needs the average at or above the
threshold, clearing needs it clearly below, so no single frame can both raise
and clear, and scores hovering at the threshold do not make the alert flicker.
The gap is capped at half the threshold so that a very low threshold (a
clinician asking for an eager alert) still has a level at which it clears.

A frame with nothing in view (no skin, no lesion) is evidence against every
condition: it enters the window as a score of 0, so pointing the camera away
clears alerts after a few frames instead of leaving them stuck on.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace

from flask_babel import gettext as _, ngettext

from .i18n import percent
from .interfaces import Condition, PromptBank
from .interpret import group_names

# Probabilities are float32 softmax outputs: a score this close to the
# threshold counts as reaching it (as in webapp.interpret).
EPSILON = 1e-9
LOG_LIMIT = 500  # alerts kept per session; the oldest go first
LOG_FIELDS = (
    "number", "raised_at", "time_zone", "condition_id", "label", "score", "threshold", "frames",
    "groups", "snomed_ct", "icd10", "explanation",
)


@dataclass(frozen=True)
class Smoothing:
    """How many frames an alert needs, and how far a score must fall to clear it."""

    window: int = 5  # frames remembered per condition
    needed: int = 3  # frames of the window that must reach the threshold to raise
    gap: float = 0.05  # hysteresis: clear only below threshold - gap (gap capped at threshold / 2)

    def __post_init__(self):
        if not 1 <= self.needed <= self.window:
            raise ValueError("smoothing needs 1 <= needed <= window")
        if not 0.0 <= self.gap < 1.0:
            raise ValueError("the hysteresis gap must be in [0, 1)")

    def clear_level(self, threshold: float) -> float:
        return threshold - min(self.gap, threshold / 2)


@dataclass
class Track:
    """One condition's recent frame scores and whether its alert is on."""

    recent: deque
    active: bool = False

    @property
    def smoothed(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else 0.0


class AlertTracker:
    """k-of-n smoothing with hysteresis, for any set of condition ids."""

    def __init__(self, smoothing: Smoothing | None = None):
        self.smoothing = smoothing or Smoothing()
        self.tracks: dict[str, Track] = {}

    def track(self, condition_id: str) -> Track:
        if condition_id not in self.tracks:
            self.tracks[condition_id] = Track(deque(maxlen=self.smoothing.window))
        return self.tracks[condition_id]

    def update(self, scores: Mapping[str, float] | None, thresholds: Mapping[str, float]) -> tuple[list[str], list[str]]:
        """Add one frame; returns (raised ids, cleared ids).

        ``scores`` maps condition ids to this frame's probability; ``None`` (or
        a missing id) means the condition was not seen in this frame (score 0).
        Every id in ``thresholds`` is updated.
        """
        raised: list[str] = []
        cleared: list[str] = []
        for condition_id, threshold in thresholds.items():
            track = self.track(condition_id)
            track.recent.append(float((scores or {}).get(condition_id, 0.0)))
            smoothed = track.smoothed
            if not track.active:
                reached = sum(1 for score in track.recent if score + EPSILON >= threshold)
                if reached >= self.smoothing.needed and smoothed + EPSILON >= threshold:
                    track.active = True
                    raised.append(condition_id)
            elif smoothed < self.smoothing.clear_level(threshold) - EPSILON:
                track.active = False
                cleared.append(condition_id)
        return raised, cleared

    def active(self) -> list[str]:
        return [condition_id for condition_id, track in self.tracks.items() if track.active]

    def smoothed(self, condition_id: str) -> float:
        track = self.tracks.get(condition_id)
        return track.smoothed if track else 0.0


def effective_thresholds(bank: PromptBank, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each condition's alert threshold: the bank's ``alert_threshold`` unless the session overrode it."""
    overrides = overrides or {}
    return {c.id: float(overrides.get(c.id, c.alert_threshold)) for c in bank.conditions}


SHOWN_SCORES = 5  # closest matches listed under the video


def frame_rows(
    live: "LiveState",
    bank: PromptBank,
    probabilities: Mapping[str, float] | None,
    thresholds: Mapping[str, float],
    shown: int = SHOWN_SCORES,
) -> list[dict]:
    """The table under the video: the ``shown`` closest matches by smoothed score, plus any active alert.

    Empty when nothing was in view lately, rather than a table of zeros.
    """
    current = {alert.condition_id for alert in live.current_alerts()}
    rows = sorted(
        ({"condition": c, "frame": (probabilities or {}).get(c.id, 0.0), "smoothed": live.smoothed(c.id),
          "threshold": thresholds[c.id], "active": c.id in current} for c in bank.conditions),
        key=lambda row: -row["smoothed"],
    )
    kept = rows[:shown] + [row for row in rows[shown:] if row["active"]]
    if probabilities is None and not any(row["smoothed"] > 0 for row in kept):
        return []
    return kept


def frame_timings(seconds: Mapping[str, float]) -> dict[str, float]:
    """Stage seconds as the milliseconds the page shows, rounded to 0.1 ms."""
    return {name: round(value * 1000, 1) for name, value in seconds.items()}


@dataclass(frozen=True)
class Alert:
    """One raised alert: what a clinician sees, what the log holds, and all a hand-off plugin receives.

    Only words and numbers: no frame, no crop, no image, nothing that
    identifies the person in front of the camera.
    """

    number: int  # 1, 2, 3... within the session
    condition_id: str
    label: str
    score: float  # the smoothed score that raised it
    threshold: float
    raised_at: str  # ISO-8601 with the server's UTC offset
    groups: tuple[str, ...]
    snomed_ct: str
    icd10: str
    explanation: str  # in the language of the request that raised it (the exports keep it so)
    frames: int = 0  # frames the average was taken over (fewer than the window just after Start)

    def as_dict(self) -> dict:
        record = asdict(self)
        record["groups"] = list(self.groups)
        return record

    def worded_by(self, bank: PromptBank) -> "Alert":
        """The alert in the words of ``bank`` (the page's language): its label and explanation made again from the codes and numbers."""
        try:
            condition = bank.condition(self.condition_id)
        except KeyError:
            return self
        explanation = explain_alert(condition, self.score, self.threshold, self.frames) if self.frames else self.explanation
        return replace(self, label=condition.label, explanation=explanation)


def explain_alert(condition: Condition, score: float, threshold: float, frames: int) -> str:
    """A plain-language explanation from the bank's own words and codes (no language model)."""
    # Made while the frame's request is answered: in that request's language (the bank is localized too).
    codes = [f"SNOMED CT {condition.snomed_ct}" if condition.snomed_ct else "",
             f"ICD-10 {condition.icd10}" if condition.icd10 else ""]
    codes = [code for code in codes if code]
    words = dict(condition=condition.label, score=percent(score), threshold=percent(threshold))
    text = ngettext(
        "The camera view matched %(condition)s with an average score of %(score)s over the last frame, "
        "at or above this session's alert threshold of %(threshold)s",
        "The camera view matched %(condition)s with an average score of %(score)s over the last %(num)d frames, "
        "at or above this session's alert threshold of %(threshold)s",
        frames, **words,
    )
    text += (" " + _("(group: %(groups)s).", groups=group_names(condition.groups))) if condition.groups else "."
    if condition.summary:
        text += " " + " ".join(condition.summary.split())
    if codes:
        text += " " + _("Codes: %(codes)s.", codes=", ".join(codes))
    return text + " " + _("This is a triage aid, not a diagnosis.")


def _now() -> dt.datetime:
    return dt.datetime.now().astimezone()


class LiveState:
    """One session's live scan: smoothing, alerts, the bounded log and the last frame's crop.

    Kept in ``SessionData.live`` so it is deleted with the session. The only
    picture it holds is the last analysed frame's crop (for "explain this
    frame"), replaced by every frame; the frames themselves are never kept.
    """

    def __init__(self, app_name: str, smoothing: Smoothing | None = None, log_limit: int = LOG_LIMIT):
        self.app_name = app_name
        self.smoothing = smoothing or Smoothing()
        self.tracker = AlertTracker(self.smoothing)
        self.log: deque[Alert] = deque(maxlen=log_limit)
        self.active_alerts: dict[str, Alert] = {}
        self.frames = 0
        self.last_crop_jpeg = b""
        self.last_crop_at = ""
        self.last_template_set = ""
        self._numbers = 0
        self.run_id = secrets.token_hex(8)  # tells a restarted scan from this one across replicas
        self._lock = threading.RLock()
        # Held while one of this session's frames (or heatmaps) is being
        # analysed; a second one is refused, never queued.
        self.frame_lock = threading.Lock()
        self.explain_lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Scale-out mode keeps the state in Redis (sealed); locks do not travel, the store attaches shared ones."""
        state = self.__dict__.copy()
        for name in ("_lock", "frame_lock", "explain_lock"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self.frame_lock = threading.Lock()
        self.explain_lock = threading.Lock()

    def restart(self) -> None:
        """A new run of the camera: forget the smoothing and the last crop, keep the log."""
        with self._lock:
            self.tracker = AlertTracker(self.smoothing)
            self.active_alerts.clear()
            self.last_crop_jpeg = b""
            self.last_crop_at = ""

    def observe(
        self,
        probabilities: Mapping[str, float] | None,
        bank: PromptBank,
        thresholds: Mapping[str, float],
        now: dt.datetime | None = None,
    ) -> list[Alert]:
        """Add one frame (``None``: nothing in view); returns the alerts it raised, already logged."""
        now = now or _now()
        with self._lock:
            self.frames += 1
            raised, cleared = self.tracker.update(probabilities, thresholds)
            for condition_id in cleared:
                self.active_alerts.pop(condition_id, None)
            alerts = []
            for condition_id in raised:
                condition = bank.condition(condition_id)
                score = self.tracker.smoothed(condition_id)
                frames = len(self.tracker.track(condition_id).recent)
                self._numbers += 1
                alert = Alert(
                    number=self._numbers,
                    condition_id=condition.id,
                    label=condition.label,
                    score=round(score, 4),
                    threshold=float(thresholds[condition_id]),
                    raised_at=now.isoformat(timespec="seconds"),
                    groups=tuple(condition.groups),
                    snomed_ct=condition.snomed_ct,
                    icd10=condition.icd10,
                    explanation=explain_alert(condition, score, float(thresholds[condition_id]), frames),
                    frames=frames,
                )
                self.active_alerts[condition_id] = alert
                self.log.append(alert)
                alerts.append(alert)
            return alerts

    def keep_crop(self, crop_jpeg: bytes, template_set: str, now: dt.datetime | None = None) -> None:
        """Replace the last crop (b"" when the frame had nothing to crop)."""
        with self._lock:
            self.last_crop_jpeg = crop_jpeg
            self.last_template_set = template_set
            self.last_crop_at = (now or _now()).isoformat(timespec="seconds") if crop_jpeg else ""

    def current_alerts(self) -> list[Alert]:
        with self._lock:
            return sorted(self.active_alerts.values(), key=lambda alert: -alert.score)

    def log_snapshot(self) -> list[Alert]:
        with self._lock:
            return list(self.log)

    # Python's own overhead of one logged Alert (object, fields, small strings), beyond its text.
    ALERT_OVERHEAD_BYTES = 600

    @property
    def size_bytes(self) -> int:
        """What the scan keeps, for the session's memory caps: the last crop and the alert log."""
        with self._lock:
            texts = sum(len(a.explanation) + len(a.label) + self.ALERT_OVERHEAD_BYTES for a in self.log)
            return len(self.last_crop_jpeg) + texts

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def smoothed(self, condition_id: str) -> float:
        with self._lock:
            return self.tracker.smoothed(condition_id)


def _on_clock(record: dict, zone: dt.tzinfo | None) -> dict:
    """``raised_at`` on the reader's clock (``zone``), with the zone named; the server's offset if none is given."""
    moment = dt.datetime.fromisoformat(record["raised_at"])
    if zone is not None:
        moment = moment.astimezone(zone)
    record["raised_at"] = moment.isoformat(timespec="seconds")
    record["time_zone"] = getattr(moment.tzinfo, "key", None) or moment.tzname() or ""
    return record


def log_json(alerts: Iterable[Alert], zone: dt.tzinfo | None = None) -> list[dict]:
    return [_on_clock(alert.as_dict(), zone) for alert in alerts]


def _cell(value) -> str:
    text = " ".join(value) if isinstance(value, (list, tuple)) else str(value)
    # A cell starting with = + - @ is a formula to a spreadsheet: defuse it.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def log_csv(alerts: Iterable[Alert], zone: dt.tzinfo | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LOG_FIELDS)
    for alert in alerts:
        record = _on_clock(alert.as_dict(), zone)
        writer.writerow([_cell(record[name]) for name in LOG_FIELDS])
    return buffer.getvalue()
