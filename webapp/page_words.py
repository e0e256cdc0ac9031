"""The words the page's scripts show (camera, live scan, session timer, Undo), translated like the templates'.

base.html puts them, in the page's language, in a JSON block (``<script type="application/json"
id="page-words">``: data, never run, so the strict CSP allows it); ``static/words.js`` reads it and the
scripts call ``t("English text", {name: value})``. tests/test_i18n.py fails when a script uses a text
that is not listed here.
"""

from __future__ import annotations

from flask import Flask
from flask_babel import gettext

from .i18n import N_

WORDS = (
    N_("The camera is off."),
    N_("This browser cannot show a live camera here. Use the camera app, or choose a photo file, instead."),
    N_("The camera could not be started (%(error)s). Check the browser's permission, or use the camera app."),
    N_("The camera is on. Frame the spot and press “Take photo”."),
    N_("The camera is not ready yet."),
    N_("The photo could not be taken."),
    N_("Photo taken and added."),
    N_("Undo is no longer possible."),
    N_("Explain this frame (%(condition)s alert)"),
    N_("Explain this frame"),
    N_("Live scan stopped: see the message above."),
    N_("This browser cannot use a live camera here (a secure https:// page is needed)."),
    N_("The server could not be reached; retrying…"),
    N_("Camera %(number)s"),
    N_("Starting the camera…"),
    N_("The camera could not be started (%(error)s). Check the browser's camera permission."),
    N_("The server could not be reached."),
    N_("Live scan could not start: see the message above."),
    N_("Live scan is running. Hold the camera steady over the spot."),
    N_("The camera is off. The last frame's result and the alert log stay on the page."),
    N_("That camera could not be opened (%(error)s)."),
    N_("Keep my session"),
    N_("Your session has ended and its photos were deleted from the server. Reload the page to start a new one."),
    N_("about %(minutes)s minutes"),
    N_("%(seconds)s seconds"),
    N_("This session reaches its time limit at %(time)s (in %(left)s) and cannot be extended: everything in it will then be deleted. Download or print what you need now."),
    N_("Your session will end in %(left)s without activity, and everything in it will be deleted from the server."),
    N_("Your session was extended."),
    N_("Your session had already ended. Reload the page to start a new one."),
)


def page_words() -> dict[str, str]:
    """Each script text in the request's language, keyed by its English."""
    return {text: gettext(text) for text in WORDS}


def init_app(app: Flask) -> None:
    app.context_processor(lambda: {"page_words": page_words})
