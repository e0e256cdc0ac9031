"""The user's own clock: the browser's time zone, and dates and times shown and exported in it.

The page's script (static/local_time.js) sends the browser's IANA time zone
with every request it makes (the ``X-Time-Zone`` header on htmx and live-scan
requests, a hidden ``time_zone`` field in forms). The last valid zone is kept
in the session, so a plain link (a CSV download, a printable report) and a
page loaded without the script use it too. Until a browser has sent one, the
server's own zone is used, and named wherever a time is shown.

Times are stored as aware datetimes (ISO 8601 with an offset); only their
presentation changes with the zone, so two people in two zones each see their
own clock. Dates a person picks (the date a photo was taken) are plain dates.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from babel.dates import format_date, format_time
from flask import Flask, g, has_request_context, request, session

from .i18n import current_locale

HEADER = "X-Time-Zone"
FIELD = "time_zone"
SESSION_KEY = "time_zone"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$")


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    # Checked against the list, never opened by a name the browser made up.
    return frozenset(available_timezones())


def valid_zone_name(name: str | None) -> str | None:
    name = (name or "").strip()
    if len(name) > 64 or not _NAME.match(name) or name not in _known_zones():
        return None
    return name


def _server_zone() -> dt.tzinfo:
    return dt.datetime.now().astimezone().tzinfo or dt.timezone.utc


def _parsed_form_zone() -> str | None:
    # Only a form the view already read: parsing it here could raise (a body over
    # the limit) inside an error page, or read an upload the view meant to refuse.
    form = request.__dict__.get("form")
    return valid_zone_name(form.get(FIELD)) if form is not None else None


def user_zone() -> dt.tzinfo:
    """This request's time zone: the browser's, else the one it sent before, else the server's."""
    if not has_request_context():
        return _server_zone()
    if "user_zone" not in g:
        name = valid_zone_name(request.headers.get(HEADER)) or _parsed_form_zone()
        _remember(name)
        name = name or valid_zone_name(session.get(SESSION_KEY))
        g.user_zone = ZoneInfo(name) if name else _server_zone()
    return g.user_zone


def zone_label(zone: dt.tzinfo | None = None) -> str:
    """The zone as people and spreadsheets read it: ``America/New_York``, else its abbreviation (``UTC``)."""
    zone = zone or user_zone()
    return getattr(zone, "key", None) or dt.datetime.now(zone).tzname() or "UTC"


def user_now() -> dt.datetime:
    return dt.datetime.now(user_zone())


def user_today() -> dt.date:
    """The user's own date: past midnight in their zone it is already tomorrow there."""
    return user_now().date()


def in_user_zone(moment: dt.datetime | str) -> dt.datetime:
    """An aware datetime (or its ISO text) on the user's clock; a naive one is taken as the server's."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_server_zone())
    return moment.astimezone(user_zone())


def clock_time(moment: dt.datetime | str | None) -> str:
    """``17:13:10`` on the user's clock ('' for nothing)."""
    return in_user_zone(moment).strftime("%H:%M:%S") if moment else ""


def date_and_time(moment: dt.datetime | str | None) -> str:
    """``3 December 2026, 12:13`` on the user's clock, with the zone named (``3 de diciembre de 2026, 12:13`` in Spanish)."""
    if not moment:
        return ""
    local = in_user_zone(moment)
    locale = current_locale()
    day = format_date(local, "d MMMM y" if locale.language == "en" else "long", locale=locale)
    return f"{day}, {format_time(local, 'HH:mm', locale=locale)} ({zone_label(local.tzinfo)})"


def long_date(day: dt.date) -> str:
    """``Wednesday 2 December 2026``: the month in words, so no reader mistakes day for month.

    Other languages write it their own way (Babel's full date: ``miércoles, 2 de diciembre de 2026``)."""
    locale = current_locale()
    return format_date(day, "EEEE d MMMM y" if locale.language == "en" else "full", locale=locale)


def local_iso(moment: dt.datetime | str) -> str:
    """ISO 8601 with the user's offset (what the exports carry)."""
    return in_user_zone(moment).isoformat(timespec="seconds")


def _remember(name: str | None) -> None:
    # Only in a session that already holds something: the server keeps nothing for a browser before that.
    from .sessions import current_data

    if name and session.get(SESSION_KEY) != name and current_data() is not None:
        session[SESSION_KEY] = name


def _remember_zone() -> None:
    if request.endpoint != "static":
        _remember(valid_zone_name(request.headers.get(HEADER)))


def init_app(app: Flask) -> None:
    app.before_request(_remember_zone)
    app.add_template_filter(clock_time)
    app.add_template_filter(date_and_time)
    app.add_template_filter(long_date)
    app.add_template_filter(local_iso)
    app.context_processor(lambda: {"time_zone_label": zone_label(), "user_today": user_today})
