"""An edited image in the format, compression and size a caller asked for (`f2f.serving.api.outputs`)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from f2f.errors import InvalidInput
from f2f.serving.api import outputs
from f2f.serving.jobs import Objects, open_objects

JOB = "0123456789abcdef0123456789abcdef"
STORED = f"{JOB}/attempts/1-w1/edited.png"


@pytest.fixture
def stored() -> bytes:
    image = Image.new("RGB", (64, 48))
    for x in range(64):
        image.putpixel((x, x % 48), (255, 4 * x, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path, stored: bytes) -> Objects:
    """A job's objects with its stored edit, in a local folder or in a bucket."""
    if request.param == "local":
        made = open_objects(str(tmp_path / "objects"))
    else:
        made = open_objects("s3://f2f/deploy", endpoint_url=request.getfixturevalue("s3_bucket"))
    made.put(STORED, stored, "image/png")
    return made


def _cached(
    objects: Objects, fmt: str = "png", compression: int | None = None, size: tuple[int, int] | None = None
) -> str | bytes:
    cache = f"{JOB}/cache/{outputs.cache_name('edited.png', fmt, compression, size)}"  # type: ignore[arg-type]
    return outputs.cached(objects, STORED, cache, fmt, compression, size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "want"), [(None, None), ("auto", None), ("64x48", None), ("32x24", (32, 24)), ("128x96", (128, 96))]
)
def test_sizes_at_the_sources_aspect_ratio_are_honoured(size: str | None, want: tuple[int, int] | None) -> None:
    assert outputs.check_size(size, (64, 48)) == want


@pytest.mark.parametrize("size", ["1024x1024", "48x64", "8x6", "8192x6144", "64 x 48", "64x", "-64x48"])
def test_other_sizes_are_refused_naming_the_sizes_this_server_makes(size: str) -> None:
    with pytest.raises(InvalidInput) as info:
        outputs.check_size(size, (64, 48))
    assert info.value.field == "size" and "auto (64x48)" in info.value.rule and "1.333" in info.value.rule


@pytest.mark.parametrize(
    ("fmt", "compression", "field"),
    [("gif", None, "output_format"), ("png", 50, "output_compression"), ("jpeg", 101, "output_compression")],
)
def test_bad_formats_name_the_field(fmt: str, compression: int | None, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        outputs.check_format(fmt, compression)
    assert info.value.field == field


def test_a_png_as_stored_is_served_as_it_is(stored: bytes) -> None:
    assert outputs.encode(stored) == stored


@pytest.mark.parametrize(("fmt", "pillow"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_conversions_have_the_format_and_size_asked_for(stored: bytes, fmt: str, pillow: str) -> None:
    image = Image.open(io.BytesIO(outputs.encode(stored, fmt, None, (32, 24))))  # type: ignore[arg-type]
    assert (image.format, image.size) == (pillow, (32, 24))


def test_compression_is_the_encoders_quality(stored: bytes) -> None:
    small, large = (len(outputs.encode(stored, "jpeg", quality)) for quality in (5, 95))
    assert small < large


def test_a_resize_over_the_pixel_limit_names_size_the_value_and_the_limit() -> None:
    assert outputs.check_size("128x96", (64, 48), max_pixels=128 * 96) == (128, 96)
    with pytest.raises(InvalidInput) as info:
        outputs.check_size("128x96", (64, 48), max_pixels=10_000)
    assert (info.value.field, info.value.value) == ("size", "128x96")
    assert "at most 10,000 pixels" in info.value.rule and "max_output_pixels" in info.value.rule and "12,288" in info.value.rule
    assert outputs.check_size("auto", (64, 48), max_pixels=256) is None  # the stored image: nothing is made
    assert outputs.check_size("64x48", (64, 48), max_pixels=256) is None


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    calls: list[tuple[object, ...]] = []
    real = outputs.encode
    monkeypatch.setattr(outputs, "encode", lambda *args: calls.append(args) or real(*args))
    return calls


def test_a_conversion_is_encoded_once_per_stored_file_size_format_and_quality(objects: Objects, counted: list[object]) -> None:
    first = _cached(objects, "jpeg", None, (32, 24))
    assert first == f"{JOB}/cache/edited-32x24-jpeg-d.jpeg"
    assert _cached(objects, "jpeg", None, (32, 24)) == first and len(counted) == 1
    others = {
        _cached(objects, "webp", None, (32, 24)),
        _cached(objects, "jpeg", 30, (32, 24)),
        _cached(objects, "jpeg", None, (128, 96)),
        _cached(objects, "jpeg", None, None),
    }
    assert len(others | {first}) == 5 and len(counted) == 5
    made = Image.open(io.BytesIO(objects.get(first)))
    assert made.size == (32, 24) and made.format == "JPEG"
    assert _cached(objects) == STORED and len(counted) == 5  # the stored PNG as it is: no conversion


def test_the_cache_keeps_the_most_recently_asked_files_only(tmp_path: Path, stored: bytes, counted: list[object]) -> None:
    objects = open_objects(str(tmp_path / "objects"))
    objects.put(STORED, stored)
    sizes = [(16 * k, 12 * k) for k in range(1, outputs.CACHE_FILES_PER_JOB + 4)]
    for i, size in enumerate(sizes):
        made = _cached(objects, "jpeg", None, size)
        if i == 3:
            _cached(objects, "jpeg", None, sizes[0])  # the first asked for again: kept
        os.utime(tmp_path / "objects" / str(made), (1_000 + i, 1_000 + i))  # distinct: a clock may not tell writes apart
    kept = [key.rpartition("/")[2] for key in objects.keys(f"{JOB}/cache")]
    assert len(kept) == outputs.CACHE_FILES_PER_JOB
    assert "edited-16x12-jpeg-d.jpeg" in kept and "edited-32x24-jpeg-d.jpeg" not in kept  # the least recently asked for


def test_a_bucket_keeps_a_bounded_cache_too(objects: Objects, counted: list[object]) -> None:
    for k in range(1, outputs.CACHE_FILES_PER_JOB + 4):
        _cached(objects, "jpeg", None, (16 * k, 12 * k))
    assert len(objects.keys(f"{JOB}/cache")) == outputs.CACHE_FILES_PER_JOB


def test_an_unwritable_cache_answers_the_conversion_uncached(tmp_path: Path, stored: bytes, counted: list[object]) -> None:
    objects = open_objects(str(tmp_path / "objects"))
    objects.put(STORED, stored)
    (tmp_path / "objects" / JOB / "cache").write_bytes(b"not a folder")  # the cache cannot be made
    answer = _cached(objects, "webp", None, (32, 24))
    assert isinstance(answer, bytes) and Image.open(io.BytesIO(answer)).size == (32, 24)
