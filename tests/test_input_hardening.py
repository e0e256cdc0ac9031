"""Small hostile inputs from the attack on the production setup (issue 13): each once broke something.

- a non-ASCII CSRF token gave 500 (and a logged traceback) on every state-changing route;
- filenames kept NUL and bidi overrides (U+202E makes "gpj.exe" read "exe.jpg");
- EXIF capture dates of year 1 or 2999 were believed.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re

import pytest
from PIL import Image

from tests.helpers import Browser, multipart, photo_bytes
from tests.test_security import state_changing_routes


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


@pytest.fixture
def person(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False)
    browser = Browser(app.test_client())
    assert browser.upload((photo_bytes(1), "mine.jpg")).status_code == 200
    (browser.kept,) = browser.photo_ids()
    return browser


# -- CSRF tokens that are not even ASCII --------------------------------------------------
MALFORMED = ["é", "\u202e", "ü" * 40, "\x00", "token\x7f", "😀"]


def test_a_malformed_token_is_a_403_on_every_state_changing_route_and_logs_nothing(person, caplog):
    routes = state_changing_routes(person.client.application)
    assert len(routes) >= 13
    with caplog.at_level(logging.ERROR):
        for endpoint, method, url in routes:
            url = url.replace("/x/", f"/{person.kept}/") if "/photos/x/" in url else url
            for token in MALFORMED:
                in_header = person.client.open(url, method=method, headers={"X-CSRF-Token": token, "HX-Request": "true"},
                                               **multipart([("taken_on", "2020-01-01")]))
                in_form = person.client.open(url, method=method, headers={"HX-Request": "true"},
                                             **multipart([("csrf_token", token), ("taken_on", "2020-01-01")]))
                for response in (in_header, in_form):
                    assert response.status_code == 403, (endpoint, token, response.status_code)
                    assert "out of date" in words(response), endpoint
    print(f"{len(routes)} state-changing routes x {len(MALFORMED)} malformed tokens x (header, form field): all 403")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert person.photo_ids() == [person.kept]  # nothing changed
    # The right token still works after all that.
    assert person.post(f"/photos/{person.kept}/date", data={"taken_on": "2021-02-03"}).status_code == 200


# -- filenames ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "filename, shown",
    [
        ("holiday\u202egpj.exe", "holidaygpj.exe"),  # right-to-left override: would read "holidayexe.jpg"
        ("a\u2066b\u2069c\u202a\u202b\u202c\u202d.jpg", "abc.jpg"),  # isolates and embeddings
        ("nul\x00byte.jpg", "nulbyte.jpg"),
        ("bell\x07back\x08tab\t.jpg", "bellbacktab.jpg"),
        ("zero\u200bwidth\ufeff\u200e\u200f.jpg", "zerowidth.jpg"),
        ("escape\x1b[31mred.jpg", "escape[31mred.jpg"),
        ("line\u2028sep.jpg", "line sep.jpg"),
        ("\u202e\u202e", "Photo 2"),  # nothing visible left: a generic name
    ],
)
def test_control_and_bidi_characters_are_removed_from_filenames(person, filename, shown):
    response = person.upload((photo_bytes(7), filename))
    assert response.status_code == 200
    store = person.client.application.extensions["privascan_store"]
    (data,) = store._sessions.values()
    names = [photo.name for photo in data.photos.values()]
    assert names[-1] == shown, names
    hidden = [c for c in "".join(names) if c in "\x00\n\r\t\x1b\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\ufeff"]
    assert not hidden
    assert shown in response.get_data(as_text=True)


# -- EXIF dates ----------------------------------------------------------------------------------
def exif_dated(value: str, seed: int) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = value
    image = Image.open(io.BytesIO(photo_bytes(seed)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


FILE_DATE = dt.date(2022, 7, 14)
FILE_DATE_MS = str(int(dt.datetime(2022, 7, 14, 12).timestamp() * 1000))


@pytest.mark.parametrize(
    "exif_value, expected, source",
    [
        ("0001:01:01 00:00:00", FILE_DATE, "file date"),
        ("2999:12:31 23:59:59", FILE_DATE, "file date"),
        ("1989:12:31 23:59:59", FILE_DATE, "file date"),
        ((dt.date.today() + dt.timedelta(days=3)).strftime("%Y:%m:%d 10:00:00"), FILE_DATE, "file date"),
        ("2024:03:05 10:11:12", dt.date(2024, 3, 5), "photo metadata"),
    ],
)
def test_implausible_exif_dates_are_ignored_and_the_file_date_used(person, exif_value, expected, source):
    seed = 20 + hash(exif_value) % 1000
    assert person.upload((exif_dated(exif_value, seed), "dated.jpg"), last_modified=FILE_DATE_MS).status_code == 200
    store = person.client.application.extensions["privascan_store"]
    (data,) = store._sessions.values()
    newest = list(data.photos.values())[-1]
    assert (newest.taken_on, newest.date_source) == (expected, source)


def test_an_implausible_file_date_falls_back_to_the_upload_day(person):
    year_2999 = str(int(dt.datetime(2999, 1, 1).timestamp() * 1000))
    assert person.upload((exif_dated("0001:01:01 00:00:00", 99), "dated.jpg"), last_modified=year_2999).status_code == 200
    store = person.client.application.extensions["privascan_store"]
    (data,) = store._sessions.values()
    newest = list(data.photos.values())[-1]
    assert (newest.taken_on, newest.date_source) == (dt.date.today(), "upload day")
