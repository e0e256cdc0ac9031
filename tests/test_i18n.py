"""The interface's second language: every string marked, the catalogue complete, Spanish pages with no English left.

Three guards:

- every visible string of every template (the repository's, the plugins' and
  the ``new-plugin`` scaffold's) is marked for translation: a text node, a
  visible attribute (alt, title, aria-label, placeholder, hx-confirm, the
  spoken alert) or a string constant printed by ``{{ ... }}`` that is not
  inside ``_()``/``{% trans %}`` fails the first test, with its file;
- every string the extractor finds (babel.cfg) has a Spanish translation
  with the same placeholders;
- the pages, in every state a session reaches (empty, photos analysed,
  refused by the quality gate, grouped as a lesion, compared, reported, the
  debug panel, the chest X-ray modality, live scan with alerts, an error),
  rendered with ``Accept-Language: es``, hold no English: neither a
  catalogue msgid (or the bank's English for a condition that has a
  translation) nor any visible text that the English page shows the same,
  except names, codes and the words that are the same in both languages.

The language picker in a real browser is in tests/test_i18n_browser.py.
"""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from jinja2 import nodes

from scripts.translations import extract, read_catalogue
from tests.helpers import REPO, Browser, jpeg_bytes, multipart, photo_bytes
from webapp.i18n import Message, Translated, available_languages, compiled_catalogue

TEMPLATE_FILES = sorted(
    [*REPO.glob("templates/**/*.html"), *REPO.glob("plugins/*/templates/**/*.html")]
)
VISIBLE_ATTRIBUTES = {"alt", "title", "aria-label", "placeholder", "hx-confirm", "data-speak", "aria-description", "label"}
# Names and codes, the same in every language.
UNTRANSLATED_WORDS = {"PrivaScan", "SNOMED", "CT", "ICD", "CSV", "JSON", "FHIR", "Ctrl", "ITA", "ms", "MB", "px"}
GETTEXT_CALLS = {"_", "gettext", "ngettext", "pgettext", "npgettext"}
NOT_SHOWN_CALLS = {"url_for"}  # their string arguments are names, not words
WORD = re.compile(r"[^\W\d_]{2,}")
CLASS_NAMES = re.compile(r"^\s*[a-z0-9]+(?:-[a-z0-9]+)+(?:\s+[a-z0-9]+(?:-[a-z0-9]+)+)*\s*$")


# -- 1. every template string is marked ------------------------------------------------
def _words(text: str) -> list[str]:
    return [word for word in WORD.findall(text) if word not in UNTRANSLATED_WORDS]


def shown_constants(node: nodes.Node):
    """String constants an expression can print (not those it only compares, looks up or passes to url_for/_())."""
    if isinstance(node, nodes.Const):
        if isinstance(node.value, str):
            yield node.value
    elif isinstance(node, nodes.CondExpr):
        yield from shown_constants(node.expr1)
        if node.expr2 is not None:
            yield from shown_constants(node.expr2)
    elif isinstance(node, (nodes.Or, nodes.And, nodes.Add, nodes.Concat)):
        for child in (node.nodes if isinstance(node, nodes.Concat) else (node.left, node.right)):
            yield from shown_constants(child)
    elif isinstance(node, nodes.Dict):
        for pair in node.items:
            yield from shown_constants(pair.value)
    elif isinstance(node, (nodes.List, nodes.Tuple)):
        for item in node.items:
            yield from shown_constants(item)
    elif isinstance(node, (nodes.Getitem, nodes.Filter)):
        yield from shown_constants(node.node)
    elif isinstance(node, nodes.Call):
        function = node.node
        if isinstance(function, nodes.Name) and function.name in GETTEXT_CALLS | NOT_SHOWN_CALLS:
            return
        if isinstance(function, nodes.Getattr) and function.attr == "get":  # {"a": "Words"}.get(key, "Default")
            yield from shown_constants(function.node)
            for argument in node.args[1:]:
                yield from shown_constants(argument)
            return
        if isinstance(function, nodes.Getattr) and function.attr in {"replace", "strftime", "startswith", "endswith"}:
            return
        for argument in [*node.args, *(keyword.value for keyword in node.kwargs)]:  # a macro's wording arguments
            yield from shown_constants(argument)


class _TextFinder(HTMLParser):
    """Visible text and attributes of a template whose Jinja tags were replaced by placeholders."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []  # (where, text)
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1
        kind = dict(attrs).get("type")
        for name, value in attrs:
            if value and (name in VISIBLE_ATTRIBUTES or (tag == "input" and name == "value" and kind in ("submit", "button"))):
                self.found.append((f"<{tag} {name}=...>", value))

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._hidden = max(0, self._hidden - 1)

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.found.append(("text", data))


def unmarked_strings(source: str, environment: jinja2.Environment) -> list[str]:
    """Every visible string of one template that is not marked for translation."""
    problems = []
    # Macro defaults (a macro's wording) are printed too.
    for macro in environment.parse(source).find_all(nodes.Macro):
        for default in macro.defaults:
            problems += [f"macro {macro.name} default: {text!r}" for text in shown_constants(default) if _words(text)]
    source = re.sub(r"{#.*?#}", "", source, flags=re.S)
    source = re.sub(r"{%-?\s*trans\b.*?{%-?\s*endtrans\s*-?%}", "", source, flags=re.S)  # marked as a whole
    source = re.sub(r"{%.*?%}", "", source, flags=re.S)
    expressions: list[str] = []

    def placeholder(match):
        expressions.append(match.group(1))
        return f"\ue000{len(expressions) - 1}\ue001"

    source = re.sub(r"{{(.*?)}}", placeholder, source, flags=re.S)
    finder = _TextFinder()
    finder.feed(source)
    for where, text in finder.found:
        for index in re.findall(r"\ue000(\d+)\ue001", text):
            expression = environment.parse("{{" + expressions[int(index)] + "}}").find(nodes.Output).nodes[0]
            problems += [f"{where} {{{{{expressions[int(index)].strip()}}}}}: {constant!r}"
                         for constant in shown_constants(expression) if _words(constant)]
        literal = re.sub(r"\ue000\d+\ue001", " ", text)
        if CLASS_NAMES.match(literal):  # a child template's block that fills an attribute: {% block section_class %}
            continue
        if _words(literal):
            problems.append(f"{where}: {' '.join(literal.split())!r}")
    return problems


def scaffold_template() -> str:
    from webapp.commands.new_plugin import FILES

    (template,) = [text for path, text in FILES.items() if path.endswith("result.html")]
    return template.replace("$name", "retina")


def test_the_guard_finds_unmarked_strings():
    """The guard itself: an unmarked text, attribute, printed constant and macro default are each found."""
    environment = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    source = """{% macro m(x, word="Hello there") %}{% endmacro %}
      <p>Plain words</p><img alt="A picture"><p>{{ "Yes" if x else _("No") }}</p>
      <p>{% trans %}Marked words{% endtrans %} {{ _("Marked too") }} {{ {"a": "Shown"}.get(x, "Default") }}</p>
      <a href="{{ url_for('pages.index') }}">{{ x|number(2) }} %</a>"""
    found = "\n".join(unmarked_strings(source, environment))
    for text in ("Hello there", "Plain words", "A picture", "'Yes'", "'Shown'", "'Default'"):
        assert text in found
    for text in ("Marked", "'No'", "pages.index"):
        assert text not in found


@pytest.mark.parametrize(
    "name, source",
    [(str(path.relative_to(REPO)), path.read_text(encoding="utf-8")) for path in TEMPLATE_FILES]
    + [("new-plugin scaffold result.html", scaffold_template())],
)
def test_every_visible_template_string_is_marked_for_translation(name, source):
    environment = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    assert not unmarked_strings(source, environment), f"{name}: not marked for translation"


def test_every_script_text_goes_through_the_page_words():
    """The page's scripts show words from webapp/page_words.py (translated), never a bare English literal."""
    from webapp.page_words import WORDS

    used, bare = set(), []
    for path in sorted((REPO / "webapp" / "static").glob("*.js")):
        source = path.read_text(encoding="utf-8")
        used |= {json.loads(f'"{text}"') for text in re.findall(r'\bt\("((?:[^"\\]|\\.)*)"', source)}
        # Text put on the page or spoken: textContent = "...", status("..."), show("..."), announce("...")...
        for call in re.finditer(r'(?:textContent\s*=\s*|\b(?:status|cameraStatus|show|stop|announce)\()\s*"([^"]*)"', source):
            if _words(call.group(1)):
                bare.append(f"{path.name}: {call.group(0)}")
    assert not bare
    assert used == set(WORDS)


# -- 2. the catalogue is complete --------------------------------------------------------
def test_spanish_translates_every_extracted_string_with_the_same_placeholders():
    template = extract()
    spanish = read_catalogue("es")
    assert len(template) > 400  # the extractor really read the code and templates
    untranslated = []
    for message in template:
        if not message.id:
            continue
        found = spanish.get(message.id, message.context)
        strings = (found.string if isinstance(found.string, tuple) else (found.string,)) if found else ("",)
        if found is None or found.fuzzy or not all(strings):
            untranslated.append(message.id)
    assert not untranslated, f"{len(untranslated)} strings have no Spanish: {untranslated[:10]}"
    problems = [(message.id, [str(error) for error in errors]) for message, errors in spanish.check()]
    assert not problems
    assert compiled_catalogue("es").gettext("Analyze") == "Analizar"
    assert available_languages() == ("en", "es")


def test_a_worker_sentence_is_english_as_data_and_translated_on_the_page(app):
    note = Message("No %(subject)s could be located, so the whole photo was analysed. Treat this result with extra "
                   "caution: it may not describe any particular spot.", subject=Message("lesion"))
    assert str(note).startswith("No lesion could be located")  # the API, logs and exports read English
    with app.test_request_context("/", headers={"Accept-Language": "es"}):
        assert note.__html__().startswith("No se ha podido localizar ninguna lesión")
    word = Translated("a skin photo", {"es": "una foto de piel"})
    with app.test_request_context("/", headers={"Accept-Language": "es"}):
        assert word.translated() == "una foto de piel"
    import pickle

    assert pickle.loads(pickle.dumps(note)).params == note.params  # scale-out mode keeps results pickled


# -- 3. the Spanish pages hold no English ------------------------------------------------
class _Segments(HTMLParser):
    """Visible text segments of a page (text nodes and visible attributes), skipping parts marked in another language."""

    def __init__(self, language: str):
        super().__init__(convert_charrefs=True)
        self.language = language
        self.segments: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, hides its content)
        self._hidden = 0

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        foreign = values.get("lang") not in (None, self.language)
        if tag not in self.VOID:
            hides = tag in ("script", "style") or foreign
            self._stack.append((tag, hides))
            self._hidden += hides
        if self._hidden or foreign:
            return
        for name in VISIBLE_ATTRIBUTES:
            if values.get(name):
                self.segments.append(" ".join(values[name].split()))

    def handle_endtag(self, tag):
        while self._stack:
            open_tag, hides = self._stack.pop()
            self._hidden -= hides
            if open_tag == tag:
                break

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.segments.append(" ".join(data.split()))


def segments(html: str, language: str) -> list[str]:
    parser = _Segments(language)
    parser.feed(html)
    return parser.segments


def english_fragments(catalogue) -> set[str]:
    """Pieces of every msgid that would show if it were left untranslated: two words or more, tags and placeholders cut."""
    fragments = set()
    for message in catalogue:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for msgid in ids:
            if msgid in strings:
                continue  # the same in Spanish ("Error:")
            for piece in re.split(r"<[^>]+>|%\(\w+\)[sd]|%[sd]", msgid):
                piece = " ".join(piece.split()).strip(" .,:;()")
                if len(_words(piece)) >= 2:
                    fragments.add(piece)
    return fragments


def the_same_in_both(catalogue, registry) -> set[str]:
    """Texts legitimately identical in English and Spanish: catalogue entries translated as themselves, bank labels."""
    same = set()
    for message in catalogue:
        if message.id and message.string == message.id:
            same.add(message.id)
    from webapp.body_sites import BODY_SITES

    same |= {site.label for site in BODY_SITES if site.translations.get("es") == site.label}
    for bank in registry.banks.values():
        for condition in bank.conditions:
            if condition.translations.get("es", {}).get("label", condition.label) == condition.label:
                same.add(condition.label)
    return same


# Names, codes and units: the same on both pages. The test's photos and lesion have Spanish-looking names.
NAMES = re.compile(r"foto-\w+\.jpe?g|Lunar del hombro|PrivaScan|\bCSV\b|\bJSON\b|\byolo\b|\bCtrl\b|\bITA\b"
                   r"|SNOMED CT \d+|ICD-10 [\w.]+|\bms\b|\bUTC\b|\b[A-Z][a-z]+/[A-Za-z_/]+")  # time zones too


def only_names(segment: str) -> bool:
    return not WORD.search(NAMES.sub(" ", segment))


def wait_until_done(browser: Browser, count: int, timeout: float = 240.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        html = browser.get("/", htmx=False).get_data(as_text=True)
        busy = html.count("state-queued") + html.count("state-running")
        if busy == 0 and html.count("state-done") + html.count("state-error") >= count:
            return html
        assert time.monotonic() < deadline, "the analyses did not finish"
        time.sleep(0.5)


def test_the_spanish_pages_have_no_english_left(app_factory):
    app = app_factory()
    client = app.test_client()
    browser = Browser(client)
    pages: dict[str, tuple[str, str]] = {}

    def capture(name: str, path: str, *, htmx: bool = False, status: int = 200) -> None:
        rendered = []
        for language in ("en", "es"):
            headers = {"Accept-Language": f"{language};q=1.0"}
            if htmx:
                headers["HX-Request"] = "true"
            response = client.get(path, headers=headers)
            assert response.status_code == status, (name, language, response.status_code)
            assert response.headers["Content-Language"] == language
            rendered.append(response.get_data(as_text=True))
        pages[name] = tuple(rendered)

    def capture_post(name: str, path: str, status: int = 200, **body) -> None:
        """An HTMX action that changes nothing the second time (its messages), in both languages."""
        rendered = []
        for language in ("en", "es"):
            headers = {**browser.headers(), "Accept-Language": language}
            response = client.post(path, headers=headers, **body)
            assert response.status_code == status, (name, language, response.status_code)
            # A partial: give it the page's <html lang> so it is read like one.
            rendered.append(f'<html lang="{language}">' + response.get_data(as_text=True))
        pages[name] = tuple(rendered)

    capture("empty page", "/")
    capture("error page", "/no-such-page", status=404)
    capture("empty live page", "/live")

    # Photos in several states: analysed, analysed although too small (a note), refused by the quality gate.
    browser.upload((photo_bytes(1), "foto-a.jpg"), (photo_bytes(2), "foto-b.jpg"), (jpeg_bytes(800, 600), "foto-c.jpg"),
                   (photo_bytes(3), "foto-d.jpg"))
    first, second, flat, fourth = browser.photo_ids()
    capture("photos not analysed", "/")
    for photo_id in (first, second):
        assert browser.post(f"/photos/{photo_id}/analyze", data={"analyse_anyway": "1"}).status_code == 200
    assert browser.post(f"/photos/{flat}/analyze").status_code == 200
    wait_until_done(browser, 3)
    capture("photos analysed", "/")
    capture_post("duplicate photo refused", "/photos", **multipart([("photos", (photo_bytes(1), "foto-a.jpg"))]))
    capture_post("settings saved", "/settings", data={"template_set": "clinical"})
    capture_post("date refused", f"/photos/{first}/date", status=400, data={"taken_on": "mañana"})
    capture_post("file refused", "/photos", status=415, **multipart([("photos", (b"not a picture at all", "foto-x.jpg"))]))
    capture("debug panel", "/?debug=1")

    # A lesion of two photos: the panel, the comparison page, the reports.
    response = browser.post(f"/photos/{first}/lesion", data={"lesion": "new", "name": "Lunar del hombro", "site": "shoulder"})
    assert response.status_code == 200
    lesion_id = re.search(r'/lesions/([\w-]+)"', response.get_data(as_text=True)).group(1)
    assert browser.post(f"/photos/{second}/lesion", data={"lesion": lesion_id}).status_code == 200
    capture("lesion grouped", "/")
    capture("lesion comparison", f"/lesions/{lesion_id}")
    capture("session report", "/report/session")
    capture("photo report", f"/report/photos/{first}")
    capture("lesion report", f"/report/lesions/{lesion_id}")

    # The chest X-ray modality: its own words, its bank's hints for a colour photo.
    browser.post("/settings", data={"app": "chest_xray", "template_set": ""})
    browser.post(f"/photos/{fourth}/analyze")
    wait_until_done(browser, 4)
    capture("chest X-ray modality", "/")
    browser.post("/settings", data={"app": "dermatology", "template_set": ""})

    # Live scan: frames with a lesion in view, every threshold at 0 so alerts are raised and logged.
    registry = app.extensions["privascan_registry"]
    bank = registry.banks["dermatology"]
    browser.post("/live/thresholds", data={f"threshold_{c.id}": "0" for c in bank.conditions})
    assert browser.post("/live/start").status_code == 200
    for _ in range(4):
        frame = browser.post("/live/frame", **multipart([("frame", (photo_bytes(5), "frame.jpg"))]))
        assert frame.status_code == 200, frame.get_data(as_text=True)
    capture("live scan with alerts", "/live")

    catalogue = read_catalogue("es")
    fragments = english_fragments(catalogue)
    same = the_same_in_both(catalogue, registry)
    bank_english = {
        text for b in registry.banks.values() for item in (*b.conditions, *b.triage.tiers, *b.template_sets)
        for key, text in (("label", item.label), ("summary", getattr(item, "summary", "")), ("meaning", getattr(item, "meaning", "")))
        if text and item.translations.get("es", {}).get(key, text) != text
    }
    left: dict[str, list[str]] = {}
    for name, (english, spanish) in pages.items():
        assert '<html lang="es">' in spanish, name
        spanish_segments = segments(spanish, "es")
        spanish_text = " ".join(spanish_segments)
        english_segments = set(segments(english, "en"))
        assert set(spanish_segments) - english_segments, f"{name}: no Spanish at all"
        found = [f"msgid: {fragment!r}" for fragment in fragments if fragment in spanish_text]
        found += [f"bank: {text[:60]!r}" for text in bank_english if re.search(rf"(?<!\w){re.escape(text)}(?!\w)", spanish_text)]
        found += [
            f"same as the English page: {segment!r}" for segment in dict.fromkeys(spanish_segments)
            if segment in english_segments and WORD.search(segment) and segment not in same and not only_names(segment)
        ]
        if found:
            left[name] = found
    assert not left, "English left on the Spanish pages:\n" + "\n".join(
        f"{name}:\n  " + "\n  ".join(found) for name, found in left.items()
    )
