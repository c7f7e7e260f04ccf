"""f2f.imageio: every input is built here, in memory or in tmp_path."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, features

from f2f.config import InputConfig
from f2f.errors import InvalidImage, InvalidInput
from f2f.imageio import ensure_rgb, open_image, to_rgb

ORIENTATION = 0x0112


# --- helpers ----------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    """The file bytes of `image` saved as `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a valid CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels but holds no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Incompressible random pixels, so a cut file is cut inside its pixel data."""
    channels = len(mode)
    data = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(data.squeeze(-1) if channels == 1 else data, mode)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


@pytest.fixture
def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail the test if any image file is decoded (even if the error is swallowed)."""
    decoded: list[str] = []

    def refuse(self: ImageFile.ImageFile) -> None:
        decoded.append(str(self.format))
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    yield decoded
    assert decoded == [], "an image was decoded"


def expect_invalid(source: object, phrase: str, limits: InputConfig | None = None, field: str = "image") -> InvalidImage:
    """open_image must raise InvalidImage for `field` whose rule contains `phrase`."""
    with pytest.raises(InvalidImage) as caught:
        open_image(source, limits, field=field)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert phrase in caught.value.rule, caught.value.rule
    return caught.value


# --- accepted inputs --------------------------------------------------------


def test_rgb_png_from_path_str_path_and_bytes(tmp_path: Path) -> None:
    source = noise(7, 5)
    path = tmp_path / "a.png"
    path.write_bytes(encode(source))
    for given_source in (path, str(path), path.read_bytes()):
        out = open_image(given_source)
        assert out.mode == "RGB" and out.size == (7, 5)
        assert np.array_equal(pixels(out), pixels(source))


def test_result_is_fully_decoded_and_detached_from_the_file(tmp_path: Path) -> None:
    source = noise(16, 16)
    path = tmp_path / "a.png"
    path.write_bytes(encode(source))
    out = open_image(path)
    path.write_bytes(b"\0" * 10)  # a lazy image would now read garbage or fail
    assert np.array_equal(pixels(out), pixels(source))


def test_rgba_transparent_pixel_becomes_background_and_half_transparent_blends() -> None:
    image = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 128))
    image.putpixel((2, 0), (10, 20, 30, 255))
    data = encode(image)
    white = pixels(open_image(data))[0]
    assert white[0].tolist() == [255, 255, 255]
    assert np.abs(white[1] - [255, 127, 127]).max() <= 1
    assert white[2].tolist() == [10, 20, 30]
    blue = pixels(open_image(data, InputConfig(alpha_background=(0, 0, 255))))[0]
    assert blue[0].tolist() == [0, 0, 255]
    assert np.abs(blue[1] - [128, 0, 127]).max() <= 1


def test_la_png_is_composited() -> None:
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (100, 255))
    out = pixels(open_image(encode(image), InputConfig(alpha_background=(200, 0, 0))))[0]
    assert out.tolist() == [[200, 0, 0], [100, 100, 100]]


def test_palette_png_with_transparency_is_composited() -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([10, 20, 30, 40, 50, 60])
    image.putpixel((1, 0), 1)
    data = encode(image, transparency=1)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = pixels(open_image(data, InputConfig(alpha_background=(1, 2, 3))))[0]
    assert out.tolist() == [[10, 20, 30], [1, 2, 3]]


def test_grey_png_becomes_grey_rgb() -> None:
    image = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L")
    out = pixels(open_image(encode(image)))[0]
    assert out.tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = pixels(open_image(data))[0]
    assert out[:, 0].tolist() == [0, 1, 4, 128, 255]
    assert (out == out[:, :1]).all()  # grey


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = open_image(data)
    assert out.mode == "RGB"
    assert np.abs(pixels(out) - [255, 0, 0]).max() <= 8


def marked_jpeg(orientation: int) -> bytes:
    """A 40x20 grey JPEG, red in its stored top-left corner, with an EXIF orientation."""
    image = Image.new("RGB", (40, 20), (128, 128, 128))
    image.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(image, "JPEG", quality=95, exif=exif)


def is_red(rgb: np.ndarray) -> bool:
    return rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(1, (2, 2)), (6, (17, 2)), (8, (2, 37))],  # 6: turned clockwise, 8: counter-clockwise
)
def test_exif_orientation_is_applied(orientation: int, red_corner: tuple[int, int]) -> None:
    out = open_image(marked_jpeg(orientation))
    expected_size = (40, 20) if orientation == 1 else (20, 40)
    assert out.size == expected_size
    data = pixels(out)
    x, y = red_corner
    assert is_red(data[y, x])
    corners = [(2, 2), (out.width - 3, 2), (2, out.height - 3), (out.width - 3, out.height - 3)]
    assert sum(is_red(data[cy, cx]) for cx, cy in corners) == 1


@pytest.mark.parametrize("size", [(4000, 1), (1, 4000), (1, 1)])
def test_extreme_aspect_ratios_and_tiny_images(size: tuple[int, int]) -> None:
    out = open_image(encode(Image.new("RGB", size, (9, 8, 7))))
    assert out.size == size
    assert (pixels(out) == [9, 8, 7]).all()


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WEBP")
def test_lossless_webp() -> None:
    source = noise(9, 6)
    out = open_image(encode(source, "WEBP", lossless=True))
    assert np.array_equal(pixels(out), pixels(source))


def test_mpo_from_phone_cameras_counts_as_jpeg() -> None:
    image = Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(image, "MPO", save_all=True, append_images=[image])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = open_image(data, InputConfig(allowed_formats=("JPEG",)))
    assert out.size == (8, 8)
    assert np.abs(pixels(out) - [0, 0, 255]).max() <= 8


def test_gif_is_accepted_when_allowed() -> None:
    out = open_image(encode(Image.new("RGB", (4, 4), (255, 0, 0)), "GIF"), InputConfig(allowed_formats=("gif",)))
    assert out.mode == "RGB" and pixels(out)[0, 0].tolist() == [255, 0, 0]


# --- refused inputs ---------------------------------------------------------


def test_empty_bytes_and_empty_file(tmp_path: Path) -> None:
    assert expect_invalid(b"", "the file is empty").value == "<0 bytes>"
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert expect_invalid(path, "the file is empty", field="source").value == str(path)


def test_random_bytes_are_not_an_image() -> None:
    data = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert expect_invalid(data, "not a readable image").value == "<5000 bytes>"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_an_error_not_a_partial_image(fmt: str) -> None:
    data = encode(noise(64, 64), fmt)
    expect_invalid(data[: len(data) // 2], "truncated or corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_format_not_allowed_names_the_config_key() -> None:
    error = expect_invalid(encode(Image.new("RGB", (4, 4)), "GIF"), "format GIF is not accepted")
    assert "PNG, JPEG, WEBP (input.allowed_formats)" in error.rule
    expect_invalid(encode(Image.new("RGB", (4, 4))), "format PNG", InputConfig(allowed_formats=("JPEG",)))


@pytest.mark.usefixtures("forbid_decoding")
def test_pixel_limit_is_checked_before_decoding_a_header_only_bomb() -> None:
    error = expect_invalid(header_only_png(5000, 4000), "(input.max_image_pixels)", InputConfig(max_image_pixels=1_000_000))
    assert error.rule == "5000x4000 = 20,000,000 pixels is over the limit of 1,000,000 (input.max_image_pixels)"


@pytest.mark.usefixtures("forbid_decoding")
def test_solid_png_that_compresses_tiny_is_refused_without_decoding() -> None:
    data = encode(Image.new("L", (2000, 2000)))
    assert len(data) < 20_000
    expect_invalid(data, "2000x2000 = 4,000,000 pixels is over the limit of 3,999,999", InputConfig(max_image_pixels=3_999_999))


def test_image_at_the_pixel_limit_is_accepted() -> None:
    out = open_image(encode(Image.new("RGB", (100, 50))), InputConfig(max_image_pixels=5000))
    assert out.size == (100, 50)


@pytest.mark.usefixtures("forbid_decoding")
def test_pillow_decompression_bomb_error_maps_to_the_pixel_limit() -> None:
    error = expect_invalid(header_only_png(20_000, 20_000), "decompression bomb")
    assert "the limit is 40,000,000 pixels (input.max_image_pixels)" in error.rule


def test_header_only_file_within_the_limit_is_corrupt() -> None:
    expect_invalid(header_only_png(50, 50), "truncated or corrupt")


def test_zero_sized_image_is_refused() -> None:
    error = expect_invalid(header_only_png(0, 10), "")
    assert error.rule in ("not a readable image", "the image has no pixels (0x10)")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    assert expect_invalid(missing, "file not found").value == str(missing)
    expect_invalid(tmp_path, "directory")


def test_a_source_that_is_neither_path_nor_bytes() -> None:
    expect_invalid(12, "must be a file path or the image file's bytes")
    expect_invalid("bad\0name.png", "cannot read the file")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["PNG", "JPEG"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
)
def test_damaged_files_give_an_rgb_image_or_invalid_image_only(fmt: str, cut: float, flips: list[tuple[float, int]]) -> None:
    data = bytearray(encode(noise(24, 24, seed=3), fmt))
    for where, byte in flips:
        data[int(where * (len(data) - 1))] = byte
    data = data[: int(cut * len(data))]
    try:
        out = open_image(bytes(data), InputConfig(max_image_pixels=100_000))
    except InvalidImage as error:
        assert error.field == "image" and error.rule
    else:
        assert out.mode == "RGB" and out.width * out.height <= 100_000


# --- to_rgb on in-memory images --------------------------------------------


def test_to_rgb_never_mutates_or_returns_its_input() -> None:
    for source in (noise(5, 4), Image.new("RGBA", (5, 4), (1, 2, 3, 0))):
        before = (source.mode, source.size, source.tobytes())
        out = to_rgb(source)
        assert out is not source and out.mode == "RGB"
        assert (source.mode, source.size, source.tobytes()) == before


def test_to_rgb_applies_in_memory_exif_orientation_unless_told_not_to() -> None:
    image = Image.new("RGB", (6, 2))
    image.getexif()[ORIENTATION] = 6
    assert to_rgb(image).size == (2, 6)
    assert to_rgb(image, orient=False).size == (6, 2)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_sixteen_bit_modes_are_scaled(mode: str) -> None:
    image = Image.new(mode, (4, 1))
    for x, value in enumerate([0, 257, 32768, 65535]):
        image.putpixel((x, 0), value)
    assert pixels(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_thirty_two_bit_int_is_8_bit_when_small_else_16_bit() -> None:
    small = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), "I")
    assert pixels(to_rgb(small))[0, :, 0].tolist() == [0, 100, 255]
    large = Image.fromarray(np.array([[-5, 257, 32768, 65535, 70000]], dtype=np.int32), "I")
    assert pixels(to_rgb(large))[0, :, 0].tolist() == [0, 1, 128, 255, 255]


def test_float_is_rounded_and_clipped() -> None:
    image = Image.fromarray(np.array([[-3.0, 0.4, 99.6, 300.0, np.nan]], dtype=np.float32), "F")
    assert pixels(to_rgb(image))[0, :, 0].tolist() == [0, 0, 100, 255, 0]


def test_bilevel_and_ycbcr() -> None:
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    assert pixels(to_rgb(bilevel))[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    ycbcr = Image.new("RGB", (2, 2), (200, 30, 90)).convert("YCbCr")
    assert np.abs(pixels(to_rgb(ycbcr)) - [200, 30, 90]).max() <= 3


def test_in_memory_cmyk() -> None:
    assert pixels(to_rgb(Image.new("CMYK", (1, 1), (0, 0, 255, 0))))[0, 0].tolist() == [255, 255, 0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGBA", (1, 1), (0, 0, 0, 0)).convert("PA"),
        lambda: Image.new("RGBa", (1, 1), (0, 0, 0, 0)),
        lambda: Image.new("La", (1, 1), (0, 0)),
    ],
    ids=["PA", "RGBa", "La"],
)
def test_other_alpha_modes_are_composited(make: Callable[[], Image.Image]) -> None:
    assert pixels(to_rgb(make(), (7, 8, 9)))[0, 0].tolist() == [7, 8, 9]


def test_premultiplied_la_blends_like_straight_alpha() -> None:
    straight = Image.new("LA", (1, 1), (100, 128))
    premultiplied = straight.convert("La")
    expected = pixels(to_rgb(straight, (0, 0, 0)))
    assert np.abs(pixels(to_rgb(premultiplied, (0, 0, 0))) - expected).max() <= 1
    assert np.abs(pixels(to_rgb(premultiplied, (255, 255, 255))) - pixels(to_rgb(straight))).max() <= 1


def test_palette_with_rgba_palette_and_rgb_with_transparency() -> None:
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([10, 20, 30, 0, 40, 50, 60, 255], "RGBA")
    palette.putpixel((1, 0), 1)
    assert pixels(to_rgb(palette, (1, 1, 1)))[0].tolist() == [[1, 1, 1], [40, 50, 60]]
    rgb = Image.new("RGB", (1, 1), (5, 6, 7))
    rgb.info["transparency"] = (5, 6, 7)
    assert pixels(to_rgb(rgb, (200, 200, 200)))[0, 0].tolist() == [200, 200, 200]


def test_unsupported_mode_and_zero_size() -> None:
    with pytest.raises(InvalidImage) as caught:
        to_rgb(Image.new("HSV", (2, 2)))
    assert caught.value.field == "image" and caught.value.rule == "colour mode HSV is not supported"
    with pytest.raises(InvalidImage) as caught:
        to_rgb(Image.new("RGB", (0, 3)))
    assert caught.value.field == "image" and "no pixels" in caught.value.rule
    assert issubclass(InvalidImage, InvalidInput)


def test_ensure_rgb_skips_the_copy_only_when_nothing_would_change():
    plain = Image.new("RGB", (8, 6), (1, 2, 3))
    assert ensure_rgb(plain) is plain
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buffer, format="JPEG", exif=exif.tobytes())
    assert ensure_rgb(Image.open(buffer)).size == (6, 8)  # the EXIF orientation is still applied
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert ensure_rgb(rgba, (9, 9, 9)).getpixel((0, 0)) == (9, 9, 9)


# --- ICC profiles -----------------------------------------------------------


def srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def swapped_primaries_icc() -> bytes:
    """sRGB with its red and green primaries swapped: a valid RGB profile in which (255, 0, 0) means sRGB green."""
    data = bytearray(srgb_icc())
    count = struct.unpack(">I", data[128:132])[0]
    entries = {bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    data[red + 4 : red + 12], data[green + 4 : green + 12] = data[green + 4 : green + 12], data[red + 4 : red + 12]
    return bytes(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_an_icc_profile_is_honoured_colours_become_srgb(fmt: str) -> None:
    red = Image.new("RGB", (16, 8), (255, 0, 0))
    decoded = open_image(encode(red, fmt, icc_profile=swapped_primaries_icc(), **({"quality": 100} if fmt != "PNG" else {})))
    r, g, b = decoded.getpixel((8, 4))
    assert g > 200 and r < 60 and b < 60  # the profile says these numbers are green
    assert "icc_profile" not in decoded.info  # what comes out is sRGB, untagged


def test_an_srgb_profile_changes_nothing_and_a_broken_or_foreign_one_is_ignored() -> None:
    from PIL import ImageCms

    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    want = np.asarray(pixels)
    xyz = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()  # a profile of another colour space
    for icc in (srgb_icc(), b"not a profile at all", xyz):
        assert np.array_equal(np.asarray(open_image(encode(pixels, "PNG", icc_profile=icc))), want)


def test_to_rgb_leaves_the_callers_profile_in_place() -> None:
    image = Image.new("RGB", (4, 4), (255, 0, 0))
    image.info["icc_profile"] = swapped_primaries_icc()
    assert to_rgb(image).getpixel((0, 0))[1] > 200
    assert image.info["icc_profile"] == swapped_primaries_icc() and image.getpixel((0, 0)) == (255, 0, 0)
    assert ensure_rgb(image) is not image  # a tagged image is converted, not passed through
