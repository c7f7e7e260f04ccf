"""Hostile uploads through the ingress's validation: polyglots are stored re-encoded, other formats refused by content."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image, PngImagePlugin

pytest.importorskip("fastapi")

from f2f.config import F2FConfig
from f2f.errors import InvalidImage
from f2f.request import RequestLimits
from f2f.serving.api.service import checked_job
from f2f.serving.api.wire import EditOptions

HTML = b"<html><script>alert(document.cookie)</script></html>"


def picture(fmt: str, **save: object) -> bytes:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    image.paste((20, 40, 220), (0, 0, 32, 24))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("evil.jsp", '<% Runtime.getRuntime().exec(request.getParameter("c")); %>')
    return buffer.getvalue()


def stored(raw: bytes) -> bytes:
    source_png, _, _ = checked_job(raw, EditOptions(prompt="make it rain"), F2FConfig(), RequestLimits())
    return source_png


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("payload", [HTML, zip_archive()], ids=["html", "zip"])
def test_a_polyglot_image_is_stored_re_encoded_without_its_payload(fmt: str, payload: bytes) -> None:
    clean = picture(fmt, **({"quality": 95} if fmt != "PNG" else {}))
    source = stored(clean + payload)
    assert payload not in source and b"<html" not in source and b"PK\x03\x04" not in source
    assert source.startswith(b"\x89PNG") and source == stored(clean)  # exactly what the clean image gives


def test_text_chunks_of_a_png_are_not_kept() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", HTML.decode())
    source = stored(picture("PNG", pnginfo=info))
    assert b"alert" not in source and Image.open(io.BytesIO(source)).text == {}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (HTML, "not a readable image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "not a readable image"),
        (picture("GIF") + zip_archive(), "format"),  # a GIFAR: a GIF (not allowed) with an archive behind it
        (picture("BMP"), "format"),
        (picture("TIFF"), "format"),
        (zip_archive() + picture("PNG"), "not a readable image"),  # an archive first: not an image at all
    ],
    ids=["html", "svg", "gifar", "bmp", "tiff", "zip-then-png"],
)
def test_files_outside_the_allowlist_are_refused_by_content(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidImage) as refused:
        stored(raw)
    assert refused.value.field == "image" and words in str(refused.value)
