"""An edited image in the format, compression and size a caller asked for (`f2f.serving.outputs`)."""

from __future__ import annotations

import io
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
