"""The interface's languages: which one a request gets, its catalogue, and Babel's formats.

English is the source language; every other language is a gettext catalogue
``webapp/translations/<code>/LC_MESSAGES/messages.po`` (extracted with
``babel.cfg``, see the README's "Adding a language"). The catalogues are
compiled in memory when the app is created, so no ``.mo`` file is needed or
ever written, and flask-babel never reads one at request time.

A request's language is, in order: ``?lang=<code>`` (the picker in the page
header; it also stores the code, and only the code, in a cookie), that
cookie, the browser's ``Accept-Language``, English. The JSON API always
answers in English: its words are part of a machine contract.

Prompt banks carry their own translations per condition and tier (a bank is
data; see ``webapp/bank_i18n.py``). Sentences made where there is no request
(the inference worker) are ``Message`` objects: English text that remembers
its msgid and parameters, so a page translates it when it is shown.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from babel import Locale
from babel.messages import mofile, pofile
from babel.support import Translations
from flask import Flask, has_request_context, request
from babel.dates import format_date
from babel.numbers import format_decimal
from flask_babel import Babel, get_locale, gettext
from markupsafe import escape

DEFAULT_LANGUAGE = "en"
TRANSLATIONS = Path(__file__).with_name("translations")
COOKIE = "privascan_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600  # a language code, nothing else: no reason to forget it sooner


def N_(text: str) -> str:
    """Mark ``text`` for extraction only; it is translated where it is shown."""
    return text


class Message(str):
    """An English sentence made without a request (the worker), translated when a page shows it.

    It is a ``str`` (the JSON API, logs and exports read it as English) whose
    ``__html__`` renders it in the page's language: a template that prints
    ``{{ note }}`` needs nothing special. Parameters that are Messages are
    translated too. It pickles like any str subclass (scale-out mode keeps
    results in Redis).
    """

    def __new__(cls, msgid: str, **params):
        self = super().__new__(cls, msgid % params if params else msgid)
        self.msgid = msgid
        self.params = params
        return self

    def __reduce__(self):
        return (_rebuild_message, (self.msgid, self.params))

    def translated(self) -> str:
        params = {key: translate(value) for key, value in self.params.items()}
        text = gettext(self.msgid)
        return text % params if params else text

    def __html__(self):
        return escape(self.translated())


def _rebuild_message(msgid: str, params: dict) -> Message:
    return Message(msgid, **params)


class Translated(str):
    """A text that carries its own translations (a bank's words): English as a str, the page's language in HTML."""

    def __new__(cls, english: str, translations: dict[str, str]):
        self = super().__new__(cls, english)
        self.translations = dict(translations)
        return self

    def __reduce__(self):
        return (Translated, (str(self), self.translations))

    def translated(self) -> str:
        return self.translations.get(current_language(), str(self))

    def __html__(self):
        return escape(self.translated())


def translate(text) -> str:
    """``text`` in the request's language: a Message or Translated translates itself; another str
    is looked up in the catalogue (words stored as plain English, marked with N_ where they are made)."""
    if isinstance(text, (Message, Translated)):
        return text.translated()
    return gettext(text) if isinstance(text, str) and text else text


def available_languages() -> tuple[str, ...]:
    """English and every language with a catalogue, English first."""
    codes = sorted(p.parent.parent.name for p in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"))
    return (DEFAULT_LANGUAGE, *(code for code in codes if code != DEFAULT_LANGUAGE))


def language_name(code: str) -> str:
    """The language's own name for itself ("Español"), as a picker shows it."""
    name = Locale.parse(code).get_display_name(code) or code
    return name[:1].upper() + name[1:]


@lru_cache(maxsize=None)
def compiled_catalogue(code: str, folder: Path = TRANSLATIONS) -> Translations:
    """The ``.po`` catalogue of ``code`` (in ``folder``) compiled in memory (fuzzy entries left out, as msgfmt does)."""
    path = folder / code / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as source:
        catalogue = pofile.read_po(source, locale=code)
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalogue, use_fuzzy=False)
    compiled.seek(0)
    return Translations(fp=compiled, domain="messages")


def select_language() -> str:
    """The request's language code (see the module's docstring for the order)."""
    if not has_request_context():
        return DEFAULT_LANGUAGE
    languages = current_languages()
    if request.blueprint == "api":
        return DEFAULT_LANGUAGE
    for asked in (request.args.get("lang"), request.cookies.get(COOKIE)):
        if asked in languages:
            return asked
    return request.accept_languages.best_match(languages, default=DEFAULT_LANGUAGE)


def current_languages() -> tuple[str, ...]:
    from flask import current_app

    return current_app.extensions["privascan_languages"]


def current_language() -> str:
    """The request's language code; English where there is no request (the worker, the CLI)."""
    if not has_request_context():
        return DEFAULT_LANGUAGE
    locale = get_locale()
    return str(locale) if locale is not None else DEFAULT_LANGUAGE


# ------------------------------------------------------------ Babel formats
def current_locale() -> Locale:
    """The request's locale; English where there is no request, never the server's own locale."""
    return Locale.parse(current_language())


def _decimals(digits: int) -> str:
    return "#,##0" + ("." + "0" * digits if digits > 0 else "")


def number(value: float, digits: int = 0) -> str:
    """A number with ``digits`` decimals in the request's locale (``2.5`` / ``2,5``)."""
    return format_decimal(value, format=_decimals(digits), locale=current_locale())


def signed(value: float, digits: int = 0) -> str:
    """A number with its sign always shown (``+3`` / ``-0.12``), in the request's locale."""
    body = _decimals(digits)
    return format_decimal(value, format=f"+{body};-{body}", locale=current_locale())


def significant(value: float, digits: int = 3) -> str:
    """At most ``digits`` significant digits, as ``%.3g`` but in the request's locale."""
    if value == 0:
        return format_decimal(0, locale=current_locale())  # Babel's "@##" pattern writes zero as "0.0"; %g says "0"
    return format_decimal(value, format="@" + "#" * (digits - 1), locale=current_locale())


def percent(fraction: float, digits: int = 1) -> str:
    """A fraction as a percentage (``0.025`` -> ``2.5 %`` / ``2,5 %``)."""
    return f"{number(100 * fraction, digits)} %"


def short_date(day) -> str:
    """``2 Dec 2026`` / ``2 dic 2026``."""
    return format_date(day, "medium", locale=current_locale())


def add_plugin_catalogues(app: Flask, folders: dict[str, Path]) -> None:
    """Merge the catalogues plugins ship (``translations/<code>/LC_MESSAGES/messages.po`` in the package)
    into the app's, for the languages the app has; the core's own translations win where both have one."""
    cache = app.extensions["privascan_translations"]
    for code in app.extensions["privascan_languages"][1:]:
        for folder in folders.values():
            if (folder / code / "LC_MESSAGES" / "messages.po").is_file():
                plugin = compiled_catalogue(code, folder)
                merged = Translations()
                merged.merge(plugin)
                merged.merge(cache[(code, "messages")])
                merged.plural = cache[(code, "messages")].plural
                cache[(code, "messages")] = merged


def init_app(app: Flask) -> None:
    languages = available_languages()
    app.extensions["privascan_languages"] = languages
    babel = Babel(app, locale_selector=select_language, default_locale=DEFAULT_LANGUAGE)
    # Every language's catalogue is compiled now, in memory, and put in
    # flask-babel's cache, so it never looks for a .mo file on disk.
    with app.app_context():
        cache = babel.domain_instance.cache
    cache[(DEFAULT_LANGUAGE, "messages")] = Translations()
    for code in languages[1:]:
        cache[(code, "messages")] = compiled_catalogue(code)
    app.extensions["privascan_translations"] = cache
    # {% trans %} blocks are whitespace-normalised, as babel.cfg extracts them.
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    from .pipeline import stage_name
    from .quality import check_name

    app.jinja_env.filters.update(
        number=number, signed=signed, significant=significant, pct=percent,
        short_date=short_date, translate=translate,
        stage_name=stage_name, check_name=check_name,
        condition_label=lambda condition_id, bank: bank.condition(condition_id).label,
    )

    @app.context_processor
    def language_context():
        return {
            "current_language": current_language(),
            "languages": [(code, language_name(code)) for code in languages],
        }

    @app.after_request
    def remember_language(response):
        asked = request.args.get("lang")
        if asked in languages and request.cookies.get(COOKIE) != asked:
            response.set_cookie(COOKIE, asked, max_age=COOKIE_MAX_AGE, httponly=True,
                                secure=app.config.get("SESSION_COOKIE_SECURE", True), samesite="Lax", path="/")
        if request.endpoint != "static" and request.blueprint != "plugin_static":  # files are the same in every language
            response.headers["Content-Language"] = current_language()
            response.vary.update(("Accept-Language", "Cookie"))
        return response
