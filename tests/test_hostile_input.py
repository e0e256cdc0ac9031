"""Hostile and odd input, generated here, through the real upload route and the JSON API.

Every case meets both doors a file can come through. A refused file gets a
plain message and a 4xx, a valid oddity is accepted; either way the session
keeps the photo it already had and no answer carries traceback text. Then a
hypothesis fuzz test of ``safe_decode``: arbitrary bytes and mutated valid
images either decode to a clean RGB image or raise ImageRejected, nothing else.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import Browser, make_app, photo_bytes
from webapp.images import ImageRejected, safe_decode

LEAKS = ("Traceback", 'File "', "Exception", "PIL.", "werkzeug", "UnidentifiedImage", "OSError", "SyntaxError")


# -- the corpus -------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def two_tone(width=120, height=80) -> Image.Image:
    """Left half red, right half blue: orientation is visible in the pixels."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2 :] = (30, 30, 220)
    return Image.fromarray(pixels)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (the pixel data is not there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def gps_exif() -> bytes:
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 36.0)
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(0x8769)[0x9003] = "2024:03:05 10:11:12"
    return exif.tobytes()


def huge_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: 60 KB of junk
    return exif.tobytes()


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    return exif.tobytes()


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((200, 40, 40), (40, 40, 200))]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)


def heic() -> bytes:
    from pillow_heif import from_pillow

    buffer = io.BytesIO()
    from_pillow(Image.open(io.BytesIO(photo_bytes(3)))).save(buffer, quality=80)
    return buffer.getvalue()


@dataclass
class Case:
    id: str
    data: bytes
    name: str
    status: int = 200  # 200: accepted (a valid oddity)
    words: str = ""  # what the refusal says
    content_type: str = "application/octet-stream"


VALID_JPEG = photo_bytes(1)
CASES = [
    Case("text-as-jpg", b"Dear doctor, please see attached.", "letter.jpg", 415, "not a photo"),
    Case("html-as-png", b"<!doctype html><script>alert(1)</script>", "page.png", 415, "not a photo"),
    Case("pdf-as-jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "scan.jpg", 415, "not a photo"),
    Case("zip-as-webp", b"PK\x03\x04" + bytes(60), "archive.webp", 415, "not a photo"),
    Case("svg-as-png", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "logo.png", 415, "not a photo"),
    Case("gif-js-polyglot", b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00;*/=1;alert(document.cookie)//", "x.gif", 415, "not a photo"),
    Case("jpeg-plus-zip", VALID_JPEG + b"PK\x03\x04" + b"payload.txt" + bytes(200), "polyglot.jpg"),
    Case("jpeg-plus-html", VALID_JPEG + b"<html><script>alert(1)</script></html>", "polyglot2.jpg"),
    Case("truncated-jpeg", VALID_JPEG[: len(VALID_JPEG) // 3], "cut.jpg", 400, "damaged"),
    Case("truncated-png", photo_bytes(2, "PNG")[:120], "cut.png", 400, "damaged"),
    Case("header-only-jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "stub.jpg", 400, "damaged"),
    Case("zero-bytes", b"", "empty.jpg", 400, "empty"),
    Case("one-pixel", encode(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"), "dot.png"),
    Case("png-30000x30000", png_declaring(30000, 30000), "bomb.png", 413, "pixels"),
    Case("huge-exif", encode(Image.open(io.BytesIO(VALID_JPEG)), "JPEG", exif=huge_exif()), "exif.jpg"),
    Case("cmyk", encode(Image.new("CMYK", (90, 70), (0, 50, 100, 0)), "JPEG"), "print.jpg"),
    Case("16-bit", encode(Image.new("I;16", (90, 70), 40000), "PNG"), "deep.png"),
    Case("palette", encode(Image.new("P", (90, 70), 3), "PNG"), "palette.png"),
    Case("alpha", encode(Image.new("RGBA", (90, 70), (255, 0, 0, 60)), "PNG"), "alpha.png"),
    Case("animated-gif", animated("GIF"), "moving.gif", 415, "not a photo"),
    Case("animated-webp", animated("WEBP"), "moving.webp"),
    Case("heic", heic(), "phone.heic"),
    Case("exif-rotated", encode(two_tone(), "JPEG", exif=rotated_exif()), "rotated.jpg"),
    Case("gps-exif", encode(Image.open(io.BytesIO(photo_bytes(4))), "JPEG", exif=gps_exif()), "where.jpg"),
    Case("png-sent-as-text", photo_bytes(5, "PNG"), "notes.txt", content_type="text/plain"),
    Case("text-sent-as-jpeg", b"not an image at all", "photo.jpg", 415, "not a photo", content_type="image/jpeg"),
]


def multipart_body(fields: list[tuple[str, object]]) -> dict:
    """Like conftest.multipart, with a chosen Content-Type per file part."""
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    values = MultiDict()
    for key, value in fields:
        if isinstance(value, Case):
            values.add(key, FileStorage(io.BytesIO(value.data), filename=value.name, content_type=value.content_type))
        else:
            values.add(key, value)
    boundary, body = encode_multipart(values)
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


def words_of(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in {text[:300]}"


def assert_no_metadata(data: bytes) -> None:
    """No EXIF (so no GPS), no XMP, no text chunks, no ICC profile: pixels only."""
    image = Image.open(io.BytesIO(data))
    assert not image.getexif(), image.getexif()
    assert not {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment"} & set(image.info)
    assert b"Exif\x00\x00" not in data and b"PhoneMaker" not in data and b"http://ns.adobe.com/xap" not in data


# -- one app for the module: the cases only read their own sessions ---------------------------
@pytest.fixture(scope="module")
def hostile_app(tiny_model_dir):
    app = make_app(tiny_model_dir)
    yield app
    app.extensions["privascan_worker"].stop()


@pytest.fixture
def person(hostile_app):
    """A browser whose session already holds one photo, which must survive every case."""
    browser = Browser(hostile_app.test_client())
    assert browser.upload((photo_bytes(6), "keep.jpg")).status_code == 200
    (browser.kept,) = browser.photo_ids()
    return browser


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_upload_route(person, case):
    response = person.post("/photos", **multipart_body([("photos", case), ("last_modified", "")]))
    text = words_of(response)
    assert response.status_code == case.status, text
    assert_no_leak(response.get_data(as_text=True))
    ids = person.photo_ids()
    assert person.kept in ids  # the session is intact
    if case.status == 200:
        assert "Added 1 photo" in text
        assert len(ids) == 2
    else:
        assert case.words in text and case.name in text  # which file, and why, in words
        assert ids == [person.kept]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_json_api(hostile_app, case):
    response = hostile_app.test_client().post("/api/analyze", **multipart_body([("image", case)]))
    assert response.status_code == case.status, response.get_data(as_text=True)
    assert_no_leak(response.get_data(as_text=True))
    body = response.get_json()
    if case.status == 200:
        assert "conditions" in body and "image_size" in body
    else:
        assert case.words in body["error"] and body["status"] == case.status


# -- what an accepted oddity became ---------------------------------------------------------
def upload_one(person, case: Case) -> str:
    assert person.post("/photos", **multipart_body([("photos", case)])).status_code == 200
    (photo_id,) = [i for i in person.photo_ids() if i != person.kept]
    return photo_id


def test_exif_rotation_is_applied_to_the_stored_photo(person):
    case = next(c for c in CASES if c.id == "exif-rotated")
    photo_id = upload_one(person, case)
    stored = Image.open(io.BytesIO(person.get(f"/photos/{photo_id}/photo.jpg").data)).convert("RGB")
    assert stored.size == (80, 120)  # 120x80 turned upright
    # The file's left (red) half is the top once rotated 90 degrees clockwise.
    top, bottom = stored.getpixel((40, 15)), stored.getpixel((40, 105))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]
    assert_no_metadata(person.get(f"/photos/{photo_id}/photo.jpg").data)


def test_gps_and_all_metadata_are_gone_from_every_picture_and_the_api(hostile_app, person):
    case = next(c for c in CASES if c.id == "gps-exif")
    assert Image.open(io.BytesIO(case.data)).getexif().get_ifd(0x8825)  # the input really has GPS
    photo_id = upload_one(person, case)
    assert person.post(f"/photos/{photo_id}/analyze").status_code == 200
    assert hostile_app.extensions["privascan_worker"].join_idle(120)
    for picture in ("photo.jpg", "thumbnail.jpg", "crop.jpg", "heatmap.png", "located.jpg"):
        response = person.get(f"/photos/{photo_id}/{picture}")
        assert response.status_code == 200, picture
        assert_no_metadata(response.data)
    api = hostile_app.test_client().post("/api/analyze?explain=1", **multipart_body([("image", case)]))
    assert api.status_code == 200
    import base64
    import json

    body = api.get_json()
    heatmap = base64.b64decode(body.pop("heatmap").split(",", 1)[1])
    assert_no_metadata(heatmap)
    rest = json.dumps(body)  # the heatmap's base64 text could spell anything by chance
    assert "PhoneMaker" not in rest and "GPS" not in rest and "52.0" not in rest


def test_polyglot_payloads_do_not_survive_into_the_stored_photo(person):
    for case_id, payload in (("jpeg-plus-zip", b"PK\x03\x04"), ("jpeg-plus-html", b"<script")):
        case = next(c for c in CASES if c.id == case_id)
        photo_id = upload_one(person, case)
        for picture in ("photo.jpg", "thumbnail.jpg"):
            assert payload not in person.get(f"/photos/{photo_id}/{picture}").data
        person.post(f"/photos/{photo_id}/delete")


# -- whole requests that are hostile ----------------------------------------------------------
def test_a_thousand_parts_are_refused_in_words(hostile_app, person):
    assert hostile_app.config["MAX_FORM_PARTS"] <= 200  # a sane limit is configured
    fields = [("photos", Case("p", b"x", f"p{i}.jpg")) for i in range(1000)]
    response = person.post("/photos", **multipart_body(fields))
    assert response.status_code == 413
    text = words_of(response)
    assert "too many parts" in text and "Send fewer photos" in text
    assert_no_leak(response.get_data(as_text=True))
    assert person.photo_ids() == [person.kept]
    api = hostile_app.test_client().post("/api/analyze", **multipart_body([("image", Case("p", b"x", "p.jpg"))] * 1000))
    assert api.status_code == 413 and "too many parts" in api.get_json()["error"]


class CountingBody(io.RawIOBase):
    """A 200 MB request body that exists only as a length: bytes are made when read, and counted.

    Seeking only moves a marker (Werkzeug's test client seeks to the end to
    measure a stream); reading is what the counter sees.
    """

    def __init__(self, size: int):
        self.size = size
        self.position = 0
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self.size - self.position))
        buffer[:count] = b"x" * count
        self.position += count
        self.consumed += count
        return count


@pytest.mark.parametrize("path", ["/photos", "/api/analyze"])
def test_a_200_megabyte_body_is_refused_before_it_is_read(person, path):
    body = CountingBody(200 * 1024 * 1024)
    headers = person.headers() if path == "/photos" else {}
    response = person.client.post(path, input_stream=body, headers=headers,
                                  content_type="multipart/form-data; boundary=abc")
    assert response.request.content_length == 200 * 1024 * 1024
    assert response.status_code == 413
    assert "larger than the 64 MB allowed" in words_of(response)
    assert body.consumed == 0  # refused from the Content-Length alone
    assert person.photo_ids() == [person.kept]


def test_a_body_that_is_not_multipart(person):
    response = person.post("/photos", data=b'{"photos": "x"}', content_type="application/json")
    assert response.status_code == 400
    assert "No photo was received" in words_of(response)
    assert person.photo_ids() == [person.kept]


@pytest.mark.parametrize(
    "filename, shown",
    [
        ("../../../etc/passwd.jpg", "passwd.jpg"),
        ("..\\..\\Windows\\win.ini.jpg", "win.ini.jpg"),
        ("/var/lib/privascan/x.jpg", "x.jpg"),
        ("'><svg onload=alert(1)>.jpg", "&#39;&gt;&lt;svg onload=alert(1)&gt;.jpg"),
    ],
)
def test_filenames_are_shown_escaped_and_never_used_as_paths(person, filename, shown):
    response = person.upload((photo_bytes(7), filename))
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert shown in html
    assert "../" not in html and "..\\" not in html and "<svg" not in html


def test_a_refused_file_with_markup_in_its_name_is_escaped_in_the_message(person):
    response = person.upload((b"not a photo", "<img src=x onerror=alert(1)>.jpg"))
    html = response.get_data(as_text=True)
    assert response.status_code == 415
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.jpg" in html


def test_decoding_ignores_a_replaced_image_opener(monkeypatch):
    """Importing ultralytics replaces PIL's Image.open process-wide; untrusted bytes must not meet the wrapper."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("a library's wrapper ran")

    monkeypatch.setattr(Image, "open", wrapper)
    with pytest.raises(ImageRejected) as caught:
        safe_decode(b"plain text", 50_000_000)
    assert caught.value.status == 415
    assert safe_decode(VALID_JPEG, 50_000_000).image.mode == "RGB"
    assert calls == []


def test_the_yolo_detector_puts_pillows_opener_back(tmp_path):
    """In a fresh process: the first import of ultralytics, through the detector, leaves Pillow as it was."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    code = (
        "from PIL import Image\n"
        "from plugins.dermatology.yolo_detector import _import_ultralytics\n"
        "_import_ultralytics()\n"
        "from webapp.images import ImageRejected, safe_decode\n"
        "try:\n    safe_decode(b'plain text', 10**7)\nexcept ImageRejected as exc:\n    print(exc.status)\n"
        "print(Image.open.__module__)\n"
    )
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.stdout.splitlines()[-2:] == ["415", "PIL.Image"], done.stdout + done.stderr


# -- fuzzing the decoder ----------------------------------------------------------------------
FUZZ_PIXELS = 4_000_000
SEEDS = [
    encode(Image.open(io.BytesIO(photo_bytes(8))).resize((96, 72)), fmt, **save)
    for fmt, save in (("JPEG", {"quality": 80}), ("PNG", {}), ("WEBP", {"quality": 70}), ("JPEG", {"exif": gps_exif()}))
] + [encode(Image.new("P", (40, 30), 2), "PNG"), encode(Image.new("RGBA", (40, 30), (1, 2, 3, 4)), "PNG")]


def check_decode(data: bytes) -> None:
    try:
        decoded = safe_decode(data, FUZZ_PIXELS)
    except ImageRejected as exc:
        assert exc.message and 400 <= exc.status < 500
        return
    assert decoded.image.mode == "RGB"
    assert decoded.image.width * decoded.image.height <= FUZZ_PIXELS
    assert not decoded.image.info


@st.composite
def mutated_images(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data) - 1)) if data else 0
        action = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate")))
        if not data:
            break
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[position] = draw(st.sampled_from((0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255)))))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=32))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        else:
            del data[position:]
    return bytes(data)


FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes_only_decode_or_are_rejected(data):
    check_decode(data)


@FUZZ
@given(mutated_images())
def test_fuzz_mutated_images_only_decode_or_are_rejected(data):
    check_decode(data)
