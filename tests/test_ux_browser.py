"""Issue 16 in a real browser: the rough edges a new user found, each reproduced and checked fixed.

Debian's Chromium (Playwright, never a downloaded browser) drives the real
app (tiny random MedSigLIP) on a loopback port, with the keyboard where the
finding was about the keyboard, at 1366x900 and as a 390x844 touch phone.
A journal shared by the module collects console errors and CSP violations;
the last test checks that it stayed empty.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from zoneinfo import ZoneInfo

import pytest

from tests.helpers import CHROMIUM  # noqa: E402
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

from tests.helpers import gate_sized_photo_bytes as photo_bytes, make_app, serving  # noqa: E402

TIMEOUT_MS = 15_000
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}

PROBE = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__privascanCsp(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} in ${event.sourceFile || "page"}`);
}, true);
"""


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    app = make_app(tiny_model_dir, SESSION_COOKIE_SECURE=False)
    app.config["DEMO_MODEL"] = True  # the banner only (the model is the tiny one either way)
    return app


@pytest.fixture(scope="module")
def server(app):
    with serving(app, "ux-browser-test-server") as url:
        yield url


@pytest.fixture(scope="module")
def journal() -> dict[str, list[str]]:
    return {"console errors": [], "page errors": [], "csp violations": []}


@pytest.fixture
def open_page(server, chromium, journal, request):
    """``open_page(path, **context_options)``: a fresh session in a new context; errors go to the journal."""
    contexts = []

    def opener(path: str = "/", expected_console=(), **options):
        context = chromium.new_context(base_url=server, **{**DESKTOP, **options})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        test = request.node.name
        context.expose_function("__privascanCsp", lambda text: journal["csp violations"].append(f"{test}: {text}"))
        context.add_init_script(PROBE)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and not any(re.search(p, m.text) for p in expected_console)
                and journal["console errors"].append(f"{test}: {m.text}"))
        page.on("pageerror", lambda error: journal["page errors"].append(f"{test}: {error}"))
        page.goto(path)
        page.wait_for_function("() => window.htmx !== undefined")
        return page

    yield opener
    for context in contexts:
        context.close()


def add_photos(page, *names_and_seeds):
    page.set_input_files("#photo-input", [{"name": n, "mimeType": "image/jpeg", "buffer": photo_bytes(s)} for n, s in names_and_seeds])
    expect(page.locator("#timeline article.card")).to_have_count(len(names_and_seeds))


def card(page, name):
    return page.locator("#timeline article.card").filter(has=page.locator(".photo-name", has_text=name))


def focused(page) -> str:
    """What has focus: its id, else its tag and text."""
    return page.evaluate("""() => { const e = document.activeElement;
      return !e || e === document.body ? "BODY" : (e.id || e.tagName + ":" + e.textContent.trim().slice(0, 40)); }""")


def test_focus_stays_with_analyze_and_its_card_and_the_state_is_announced(open_page):
    page = open_page()
    add_photos(page, ("first.jpg", 1), ("second.jpg", 2))
    first = card(page, "first.jpg")
    photo_id = first.get_attribute("id").removeprefix("photo-")
    button = first.get_by_role("button", name="Analyze first.jpg", exact=True)  # the photo is in its name now
    button.focus()
    page.keyboard.press("Enter")
    expect(first.locator(".state")).to_have_text(re.compile("Analysed"), timeout=30_000)
    # Through every swap (queued, running, done) focus stayed in the card, and now rests on "Analyze again".
    assert focused(page) == f"analyze-{photo_id}"
    expect(page.get_by_role("button", name="Analyze again first.jpg")).to_be_focused()
    expect(page.locator("#announcer")).to_have_text("first.jpg: Analysed")


def test_delete_moves_focus_to_undo_and_undo_brings_the_photo_back(open_page):
    page = open_page()
    add_photos(page, ("keep.jpg", 3), ("oops.jpg", 4))
    oops_id = card(page, "oops.jpg").get_attribute("id").removeprefix("photo-")
    card(page, "oops.jpg").get_by_role("button", name="Delete oops.jpg").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#timeline article.card")).to_have_count(1)
    expect(page.locator("#messages")).to_contain_text("Deleted “oops.jpg”. Undo is possible for 20 seconds")
    undo = page.get_by_role("button", name="Undo deleting oops.jpg")
    expect(undo).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#timeline article.card")).to_have_count(2)
    expect(page.locator("#messages")).to_contain_text("“oops.jpg” is back.")
    expect(page.locator(f"#delete-{oops_id}")).to_be_focused()
    # Undo is one-shot: the photo is in the session again, not on the shelf.
    page.expected = page.request.post("/photos/undo-delete", form={"photo_id": oops_id},
                                      headers={"X-CSRF-Token": csrf(page), "HX-Request": "true"})
    assert page.expected.status == 410


def csrf(page) -> str:
    return page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")


def test_arrow_keys_step_through_the_kind_of_picture_without_losing_focus(open_page):
    page = open_page()
    add_photos(page, ("kind.jpg", 5))
    select = page.get_by_label("Kind of picture")
    select.focus()
    first_value = select.input_value()
    page.keyboard.press("ArrowDown")
    expect(card(page, "kind.jpg").locator(".will-analyse-as")).to_contain_text("Dermoscopy")
    expect(select).to_be_focused()
    assert select.input_value() != first_value
    page.keyboard.press("ArrowUp")
    expect(card(page, "kind.jpg").locator(".will-analyse-as")).to_contain_text("Clinical photo")
    expect(page.get_by_label("Kind of picture")).to_be_focused()
    expect(page.get_by_label("Kind of picture")).to_have_value(first_value)


def test_grouping_a_photo_moves_focus_to_the_control_that_replaced_the_button(open_page):
    page = open_page()
    add_photos(page, ("group.jpg", 15))
    photo = card(page, "group.jpg")
    photo_id = photo.get_attribute("id").removeprefix("photo-")
    photo.get_by_text("Group as a lesion").click()
    photo.get_by_role("button", name="Group", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_contain_text("Started the lesion")
    expect(page.locator(f"#ungroup-{photo_id}")).to_be_focused()
    page.keyboard.press("Enter")  # "Take out of ..." from the keyboard too
    expect(card(page, "group.jpg").get_by_text("Group as a lesion")).to_be_visible()
    # Focus stays in the photo's lesion controls (settled after the swap), never on <body>.
    page.wait_for_function(f"() => document.activeElement && document.activeElement.closest('#lesion-panel-{photo_id}')")


def test_a_style_attribute_is_not_copied_by_htmx_while_settling(open_page, journal):
    """A style set through the CSSOM (as zoom and reader tools do) used to be copied with setAttribute on each swap."""
    page = open_page()
    add_photos(page, ("styled.jpg", 6))
    page.evaluate("() => { document.getElementById('timeline').style.outline = '1px solid red'; }")
    before = len(journal["csp violations"])
    page.get_by_label("Kind of picture").select_option(index=1)  # swaps #timeline, which has a style now
    expect(page.locator("#messages")).to_contain_text("Settings saved.")
    page.wait_for_timeout(300)  # settling is asynchronous
    assert journal["csp violations"][before:] == []


@pytest.fixture
def server_far_west(monkeypatch):
    """The server's clock in American Samoa (UTC-11): a browser at UTC+14 is always a day (or two) ahead."""
    monkeypatch.setenv("TZ", "Pacific/Pago_Pago")
    time.tzset()
    yield ZoneInfo("Pacific/Pago_Pago")
    monkeypatch.undo()
    time.tzset()


def test_dates_are_the_users_own_even_when_their_today_is_the_servers_tomorrow(open_page, server_far_west):
    zone = "Pacific/Kiritimati"
    page = open_page(timezone_id=zone)
    user_today = dt.datetime.now(ZoneInfo(zone)).date()
    assert user_today > dt.date.today()  # the server's own date is behind
    page.set_input_files("#photo-input", [{"name": "today.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes(7)}])
    photo = card(page, "today.jpg")
    # A file has a date of its own (the browser's lastModified: now), filed under the user's today, not the server's yesterday.
    expect(photo.get_by_label("Date taken")).to_have_value(user_today.isoformat())
    expect(page.locator("#timeline section.day h3 time")).to_have_attribute("datetime", user_today.isoformat())
    assert photo.get_by_label("Date taken").get_attribute("max") == user_today.isoformat()
    # Setting it to the user's today again (after another date) is accepted, not "must be yesterday or earlier".
    photo.get_by_label("Date taken").fill("2024-03-15")
    photo.get_by_role("button", name="Save date").click()
    expect(page.locator("#messages")).to_contain_text("Friday 15 March 2024")
    photo = card(page, "today.jpg")
    photo.get_by_label("Date taken").fill(user_today.isoformat())
    photo.get_by_role("button", name="Save date").click()
    expect(page.locator("#messages")).to_contain_text(f"Moved “today.jpg” to {user_today:%A} {user_today.day} {user_today:%B %Y}.")


def test_the_date_is_written_in_words_and_an_empty_date_names_the_photo(open_page):
    page = open_page(expected_console=[r"status of 400", r"Response Status Error Code 400"])
    add_photos(page, ("when.jpg", 8))
    photo = card(page, "when.jpg")
    value = dt.date.fromisoformat(photo.get_by_label("Date taken").input_value())
    # The field shows 12/02/2026 in a US browser: the words beside it say which day that is.
    expect(photo.locator(".date-form .hint")).to_contain_text(f"{value:%A} {value.day} {value:%B %Y}")
    photo.get_by_label("Date taken").fill("")
    photo.get_by_role("button", name="Save date").click()
    expect(page.locator("#messages .message-error")).to_contain_text("“when.jpg”: the date taken was empty")


def test_a_duplicate_says_which_photo_it_duplicates(open_page):
    page = open_page()
    add_photos(page, ("original.jpg", 9))
    page.set_input_files("#photo-input", [{"name": "copy.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes(9)}])
    expect(page.locator("#messages")).to_contain_text("“copy.jpg” was skipped: it is the same picture as “original.jpg”")
    expect(page.locator("#timeline article.card")).to_have_count(1)


def test_the_404_page_carries_the_demo_banner(open_page):
    page = open_page(expected_console=[r"status of 404"])
    response = page.goto("/no-such-page")
    assert response.status == 404
    expect(page.locator(".demo-banner")).to_contain_text("Demo mode")


def test_every_close_match_can_have_a_heatmap_with_a_legend(open_page):
    page = open_page()
    add_photos(page, ("heat.jpg", 10))
    photo = card(page, "heat.jpg")
    photo.get_by_role("button", name="Analyze heat.jpg", exact=True).click()
    expect(photo.locator(".state")).to_have_text(re.compile("Analysed"), timeout=30_000)
    labels = [re.sub(r"\s+", " ", t).strip() for t in photo.locator("ol.ranking > li .label").all_inner_texts()]
    # The headline has the first heatmap; each of the next four has its own button, not only the runner-up.
    for label in labels[1:5]:
        expect(photo.get_by_role("button", name=f"Show heatmap for {label}")).to_be_visible()
    expect(photo.get_by_role("button", name=f"Show heatmap for {labels[0]}")).to_have_count(0)
    photo.get_by_role("button", name=f"Show heatmap for {labels[2]}").focus()
    page.keyboard.press("Enter")
    extra = photo.get_by_role("img", name=f"Heatmap for {labels[2]}")
    expect(extra).to_be_visible(timeout=20_000)
    figure = extra.locator("xpath=ancestor::figure[1]")
    expect(figure.get_by_role("img", name=re.compile("^Colour scale"))).to_be_visible()
    page.wait_for_function(f"() => document.activeElement && document.activeElement.closest('#photo-{photo.get_attribute('id').removeprefix('photo-')}')")
    # The rest of a long bank is one list and one button, not dozens of tab stops.
    if len(labels) > 5:
        expect(photo.get_by_label("Heatmap for another condition")).to_be_visible()


def test_the_status_line_is_plain_with_the_details_behind_a_disclosure(open_page):
    page = open_page()
    status = page.locator("#model-status")
    expect(status).to_contain_text("Model ready: Photos can be analysed.")
    assert "SigLIP" not in status.locator("p").first.inner_text()
    status.get_by_text("Technical details").click()
    expect(status.locator("details")).to_contain_text("SigLIP")


def test_the_photo_guide_is_on_the_first_page_and_beside_the_camera(open_page):
    page = open_page()
    guide = page.locator("#photo-guide")
    expect(guide).to_have_attribute("open", "")  # open while there is no photo yet
    for words in ("One lesion, centred", "A hand's width away", "Daylight", "Sharp"):
        expect(guide).to_contain_text(words)
    page.get_by_text("Use the camera").click()
    expect(page.locator("#camera-panel .photo-guide")).to_contain_text("A hand's width away")


def test_each_device_is_told_what_it_can_do(open_page):
    desktop = open_page()
    expect(desktop.locator(".drop-zone")).to_contain_text("Ctrl")
    desktop.get_by_text("Use the camera").click()
    expect(desktop.get_by_text("Choose a photo file instead")).to_be_visible()
    expect(desktop.get_by_text("Open the camera app")).to_be_hidden()
    phone = open_page(**PHONE)
    expect(phone.get_by_text("Drop photos here")).to_be_hidden()
    expect(phone.get_by_text("Pick photos from this device, or take one with its camera.")).to_be_visible()
    phone.get_by_text("Use the camera").click()
    expect(phone.get_by_text("Open the camera app")).to_be_visible()
    expect(phone.get_by_text("Choose a photo file instead")).to_be_hidden()


def test_on_a_phone_a_message_does_not_cover_the_page_and_can_be_dismissed(open_page):
    page = open_page(**PHONE)
    add_photos(page, ("a.jpg", 11), ("b.jpg", 12))
    message = page.locator("#messages .message", has_text="Added 2 photos.")
    expect(message).to_be_visible()
    page.mouse.wheel(0, 1500)
    page.wait_for_timeout(300)
    box = message.bounding_box()
    assert box is None or box["y"] + box["height"] <= 0  # it scrolled away with the page, it does not float over it
    page.mouse.wheel(0, -3000)
    dismiss = message.get_by_role("button", name="Dismiss this message")
    size = dismiss.bounding_box()
    assert size["width"] >= 24 and size["height"] >= 24  # WCAG 2.2 target size
    dismiss.click()
    expect(page.locator("#messages .message")).to_have_count(0)


def test_analyze_all_shows_each_waiting_photo_its_own_place(open_page, monkeypatch):
    import webapp.jobs

    slow = webapp.jobs._analyse_stored_photo

    def analyse(*args, **kwargs):
        time.sleep(1.5)  # a real model takes seconds: long enough to watch the queue
        return slow(*args, **kwargs)

    monkeypatch.setattr(webapp.jobs, "_analyse_stored_photo", analyse)
    page = open_page()
    add_photos(page, *[(f"q{i}.jpg", 20 + i) for i in range(6)])
    page.get_by_role("button", name="Analyze all").click()
    samples = []
    for _ in range(6):
        page.wait_for_timeout(700)
        samples.append([re.sub(r"\s+", " ", t).strip() for t in page.locator("#timeline .state").all_inner_texts()])
    for states in samples:
        places = [int(m.group(1)) for s in states if (m := re.search(r"position (\d+) in line", s))]
        nexts = sum("next in line" in s for s in states)
        assert nexts <= 1 and len(places) == len(set(places)), states
    assert any("position" in s for states in samples for s in states), samples
    expect(page.locator("#timeline .state", has_text="Analysed")).to_have_count(6, timeout=30_000)


def test_debug_reset_works_while_a_field_is_invalid_and_an_invalid_field_is_named(open_page):
    page = open_page("/?debug=1", expected_console=[r"status of 400", r"Response Status Error Code 400"])
    page.get_by_label("Entropy limit (bits)").fill("99")
    page.get_by_role("button", name="Apply to stored results").click()
    expect(page.locator("#messages .message-error")).to_contain_text("Entropy limit: please enter a number between 0 and 10")
    page.get_by_label("Entropy limit (bits)").fill("99")
    page.get_by_role("button", name="Reset to the bank's values").click()
    expect(page.locator("#messages")).to_contain_text("reset to the bank's values")
    expect(page.get_by_label("Entropy limit (bits)")).not_to_have_value("99")


def test_thresholds_changed_for_the_session_are_named_on_the_photos_page(open_page):
    page = open_page("/live", expected_console=[r"status of 400", r"Response Status Error Code 400"])
    page.locator("#live-thresholds summary").click()
    # "2" is not a fraction: refused in words naming the condition, never "saved" (no request used to be sent).
    page.locator("#threshold-melanoma").fill("2")
    page.locator("#threshold-melanoma").press("Tab")
    expect(page.locator("#messages .message-error")).to_contain_text("Melanoma: 2 is not between 0 and 1")
    expect(page.locator("#messages")).to_contain_text("Nothing was saved; it stays")
    expect(page.locator("#messages")).not_to_contain_text("Alert thresholds saved")
    page.locator("#threshold-melanoma").fill("0.02")
    page.locator("#threshold-melanoma").press("Tab")
    expect(page.locator("#messages")).to_contain_text("Alert thresholds saved for this session: Melanoma 0.02 (2 %)")
    page.goto("/")
    add_photos(page, ("flagged.jpg", 13))
    note = page.locator("#threshold-note")
    expect(note).to_contain_text("This session uses its own alert thresholds")
    expect(note).to_contain_text("Melanoma 2 %")
    photo = card(page, "flagged.jpg")
    photo.get_by_role("button", name="Analyze flagged.jpg", exact=True).click()
    expect(photo.locator(".state")).to_have_text(re.compile("Analysed"), timeout=30_000)
    flags = photo.locator("ol.ranking .flag").all_inner_texts()
    assert all(re.search(r"\(\d+(\.\d+)? %\)$", flag) for flag in flags), flags  # every flag shows its threshold
    page.get_by_role("button", name="Use the bank's thresholds again").click()
    expect(page.locator("#threshold-note")).to_have_count(0)


def test_the_session_warns_before_it_expires_and_can_be_kept(open_page, app):
    page = open_page()
    add_photos(page, ("mine.jpg", 14))
    idle = int(page.evaluate("document.body.dataset.idleSeconds"))
    assert idle == app.config["SESSION_IDLE_MINUTES"] * 60
    # As if the user had been away for all but a minute of the idle limit.
    page.evaluate(f"() => {{ window.privascanSessionTimer.lastActivity(Date.now() - {(idle - 60) * 1000}); window.privascanSessionTimer.check(); }}")
    warning = page.get_by_role("alertdialog")
    expect(warning).to_contain_text("Your session will end in")
    keep = warning.get_by_role("button", name="Keep my session")
    expect(keep).to_be_focused()
    (data,) = [d for d in app.extensions["privascan_store"]._sessions.values() if any(p.name == "mine.jpg" for p in d.photos.values())]
    seen = data.last_seen
    page.wait_for_timeout(50)
    with page.expect_response(lambda r: r.url.endswith("/session/extend")) as extended:
        page.keyboard.press("Enter")
    assert extended.value.status == 204
    expect(warning).to_be_hidden()
    expect(page.locator("#announcer")).to_have_text("Your session was extended.")
    assert data.last_seen > seen  # the server's idle clock restarted


def test_no_console_errors_or_csp_violations(journal):
    """Runs last: the whole module's journal."""
    problems = {kind: entries for kind, entries in journal.items() if entries}
    assert not problems, problems
