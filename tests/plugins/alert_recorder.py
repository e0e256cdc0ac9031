"""A hand-off plugin for the tests: it keeps every alert it is given and sends nothing anywhere.

A real one would forward each alert to a clinic system (HL7, a pager, a
ticket); this one proves what such a plugin receives: the alert record and
the app's config, nothing else.
"""

from __future__ import annotations

from webapp import hookimpl

RECEIVED: list[dict] = []


@hookimpl
def alert_raised(alert, config):
    RECEIVED.append({"alert": alert, "config": config})
