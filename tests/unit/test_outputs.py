"""An edited image in the format, compression and size a caller asked for (`f2f.serving.outputs`)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from f2f.errors import InvalidInput
from f2f.serving import outputs


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    path = tmp_path / "edited.png"
    image = Image.new("RGB", (64, 48))
    for x in range(64):
        image.putpixel((x, x % 48), (255, 4 * x, 0))
    image.save(path, format="PNG")
    return path


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


def test_a_png_as_stored_is_served_as_it_is(stored: Path) -> None:
    assert outputs.encode(stored) == stored.read_bytes()


@pytest.mark.parametrize(("fmt", "pillow"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_conversions_have_the_format_and_size_asked_for(stored: Path, fmt: str, pillow: str) -> None:
    image = Image.open(io.BytesIO(outputs.encode(stored, fmt, None, (32, 24))))  # type: ignore[arg-type]
    assert (image.format, image.size) == (pillow, (32, 24))


def test_compression_is_the_encoders_quality(stored: Path) -> None:
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


def test_a_conversion_is_encoded_once_per_stored_file_size_format_and_quality(stored: Path, counted: list[object]) -> None:
    job = stored.parent
    first = outputs.cached(job, "edited.png", "jpeg", None, (32, 24))
    assert isinstance(first, Path) and first.parent == job / "cache" and first.name == "edited-32x24-jpeg-d.jpeg"
    assert outputs.cached(job, "edited.png", "jpeg", None, (32, 24)) == first and len(counted) == 1
    others = {
        outputs.cached(job, "edited.png", "webp", None, (32, 24)),
        outputs.cached(job, "edited.png", "jpeg", 30, (32, 24)),
        outputs.cached(job, "edited.png", "jpeg", None, (128, 96)),
        outputs.cached(job, "edited.png", "jpeg", None, None),
    }
    assert len(others | {first}) == 5 and len(counted) == 5
    assert Image.open(first).size == (32, 24) and Image.open(first).format == "JPEG"
    assert outputs.cached(job, "edited.png") == stored and len(counted) == 5  # the stored PNG as it is: no conversion


def test_the_cache_keeps_the_most_recently_asked_files_only(stored: Path, counted: list[object]) -> None:
    job = stored.parent
    sizes = [(16 * k, 12 * k) for k in range(1, outputs.CACHE_FILES_PER_JOB + 4)]
    for i, size in enumerate(sizes):
        made = outputs.cached(job, "edited.png", "jpeg", None, size)
        os.utime(made, (1_000 + i, 1_000 + i))  # distinct times: a file system's clock may not tell quick writes apart
    kept = sorted((job / "cache").iterdir())
    assert len(kept) == outputs.CACHE_FILES_PER_JOB
    assert not (job / "cache" / "edited-16x12-jpeg-d.jpeg").exists()  # the least recently asked for went first


def test_an_unwritable_cache_answers_the_conversion_uncached(stored: Path, counted: list[object]) -> None:
    (stored.parent / "cache").write_bytes(b"not a folder")  # the cache cannot be made
    answer = outputs.cached(stored.parent, "edited.png", "webp", None, (32, 24))
    assert isinstance(answer, bytes) and Image.open(io.BytesIO(answer)).size == (32, 24)
