"""f2f.canvas: letterbox geometry, black bars, and the round trip back."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from f2f.canvas import Box, Letterboxed, fit_box, fit_canvas, letterbox, place_on_canvas, unletterbox
from f2f.config import F2FConfig, VideoConfig
from f2f.errors import InvalidInput
from f2f.request import check_edit

SOURCES = {
    "1:1": (500, 500),
    "4:3": (640, 480),
    "16:9": (1920, 1080),
    "3:2": (1080, 720),
    "9:16": (1080, 1920),
    "1x1": (1, 1),
    "1x4000": (1, 4000),
    "4000x1": (4000, 1),
}
# Worked by hand from the rule: scale = min(W/w, H/h), content = round(w*scale) x
# round(h*scale) (at least 1), left = (W - cw) // 2, top = (H - ch) // 2.
BOXES_720x480 = {
    "1:1": Box(120, 0, 600, 480),
    "4:3": Box(40, 0, 680, 480),
    "16:9": Box(0, 37, 720, 442),  # 720x405
    "3:2": Box(0, 0, 720, 480),
    "9:16": Box(225, 0, 495, 480),  # 270x480
    "1x1": Box(120, 0, 600, 480),
    "1x4000": Box(359, 0, 360, 480),
    "4000x1": Box(0, 239, 720, 240),
}
BOXES_96x64 = {
    "1:1": Box(16, 0, 80, 64),
    "4:3": Box(5, 0, 90, 64),  # 85.33 -> 85
    "16:9": Box(0, 5, 96, 59),  # 96x54
    "3:2": Box(0, 0, 96, 64),
    "9:16": Box(30, 0, 66, 64),  # 36x64
    "1x1": Box(16, 0, 80, 64),
    "1x4000": Box(47, 0, 48, 64),
    "4000x1": Box(0, 31, 96, 32),
}


def gradient(width: int, height: int) -> Image.Image:
    """Smooth RGB waves (period 240-340 px, amplitude 100 around 128): no detail lost at half size."""
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    waves = [np.sin(2 * np.pi * x / 240), np.sin(2 * np.pi * y / 240), np.sin(2 * np.pi * (x + y) / 340)]
    return Image.fromarray(np.rint(128 + 100 * np.stack(waves, axis=-1)).astype(np.uint8), "RGB")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    data = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(data, "RGB")


def outside(canvas: Image.Image, box: Box) -> np.ndarray:
    """The canvas pixels outside `box`."""
    data = np.asarray(canvas)
    mask = np.ones(data.shape[:2], dtype=bool)
    mask[box.top : box.bottom, box.left : box.right] = False
    return data[mask]


# --- Box and fit_box --------------------------------------------------------


def test_box_properties() -> None:
    box = Box(120, 0, 600, 480)
    assert (box.width, box.height, box.size) == (480, 480, (480, 480))
    assert tuple(box) == (120, 0, 600, 480)


@pytest.mark.parametrize("name", SOURCES)
def test_fit_box_on_720x480(name: str) -> None:
    assert fit_box(SOURCES[name], 720, 480) == BOXES_720x480[name]


@pytest.mark.parametrize("name", SOURCES)
def test_fit_box_on_96x64(name: str) -> None:
    assert fit_box(SOURCES[name], 96, 64) == BOXES_96x64[name]


@given(
    source=st.tuples(st.integers(1, 20_000), st.integers(1, 20_000)),
    width=st.integers(1, 4000),
    height=st.integers(1, 4000),
)
def test_fit_box_properties(source: tuple[int, int], width: int, height: int) -> None:
    box = fit_box(source, width, height)
    # inside the canvas and never empty
    assert 0 <= box.left < box.right <= width and 0 <= box.top < box.bottom <= height
    # touches two opposite edges
    assert (box.left == 0 and box.right == width) or (box.top == 0 and box.bottom == height)
    # aspect ratio kept: each side within 1 px of the exact scaled size
    scale = min(Fraction(width, source[0]), Fraction(height, source[1]))
    assert abs(box.width - source[0] * scale) <= 1 and abs(box.height - source[1] * scale) <= 1
    # centred within 1 px
    assert 0 <= (width - box.right) - box.left <= 1 and 0 <= (height - box.bottom) - box.top <= 1


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (((0, 10), 720, 480), "source_size"),
        (((10, -1), 720, 480), "source_size"),
        (((10,), 720, 480), "source_size"),
        (((10.0, 10), 720, 480), "source_size"),
        (((10, 10), 0, 480), "width"),
        (((10, 10), 7.5, 480), "width"),
        (((10, 10), True, 480), "width"),
        (((10, 10), 720, -480), "height"),
        (((10, 10), 720, "480"), "height"),
    ],
)
def test_fit_box_bad_arguments(args: tuple, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        fit_box(*args)
    assert caught.value.field == field
    assert "positive integer" in caught.value.rule


def test_fit_box_accepts_numpy_integers() -> None:
    assert fit_box((np.int64(500), np.int64(500)), np.int32(720), np.int32(480)) == Box(120, 0, 600, 480)


# --- letterbox --------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize(("width", "height", "boxes"), [(720, 480, BOXES_720x480), (96, 64, BOXES_96x64)])
def test_letterbox_canvas_is_black_outside_the_box(name: str, width: int, height: int, boxes: dict) -> None:
    result = letterbox(Image.new("RGB", SOURCES[name], (250, 200, 150)), width, height)
    assert isinstance(result, Letterboxed)
    assert result.image.mode == "RGB" and result.image.size == (width, height)
    assert result.box == boxes[name] and result.source_size == SOURCES[name]
    assert (outside(result.image, result.box) == 0).all()
    inside = np.asarray(result.image.crop(result.box)).astype(int)
    assert np.abs(inside - [250, 200, 150]).max() <= 2


def test_a_checked_non_rgb_source_is_letterboxed_as_rgb() -> None:
    rgba = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    result = letterbox(check_edit(rgba, "edit", F2FConfig()).source, 96, 64)  # the request made it RGB
    inside = np.asarray(result.image.crop(result.box))
    assert (inside == 255).all()  # transparent -> white, as to_rgb does
    assert (outside(result.image, result.box) == 0).all()


def test_a_checked_source_is_letterboxed_upright() -> None:
    image = Image.new("RGB", (60, 20), (255, 255, 255))
    image.getexif()[0x0112] = 6  # shown turned: 20x60
    result = letterbox(check_edit(image, "edit", F2FConfig()).source, 96, 64)  # the request applied the orientation
    assert result.source_size == (20, 60)
    assert result.box == fit_box((20, 60), 96, 64)


def test_letterbox_rejects_non_images_and_bad_sizes() -> None:
    with pytest.raises(InvalidInput) as caught:
        letterbox(np.zeros((4, 4, 3), dtype=np.uint8), 96, 64)  # type: ignore[arg-type]
    assert caught.value.field == "image"
    with pytest.raises(InvalidInput) as caught:
        letterbox(Image.new("RGB", (4, 4)), 96, 0)
    assert caught.value.field == "height"


def test_letterbox_does_not_change_its_input() -> None:
    source = noise(50, 40)
    before = source.tobytes()
    letterbox(source, 96, 64)
    assert source.tobytes() == before and source.size == (50, 40)


# --- round trip -------------------------------------------------------------


@pytest.mark.parametrize("size", [(720, 480), (480, 480)])
def test_a_source_that_fits_is_reproduced_exactly(size: tuple[int, int]) -> None:
    source = noise(*size)
    result = letterbox(source, 720, 480)
    assert np.array_equal(np.asarray(result.image.crop(result.box)), np.asarray(source))
    back = unletterbox(result.image, result.box, result.source_size)
    assert back.mode == "RGB" and back.size == size
    assert np.array_equal(np.asarray(back), np.asarray(source))
    assert np.array_equal(np.asarray(result.restore(result.image)), np.asarray(source))


@pytest.mark.parametrize("size", [(1000, 1000), (1600, 900), (300, 1200)])
def test_round_trip_of_a_downscaled_gradient_is_close(size: tuple[int, int]) -> None:
    source = gradient(*size)
    result = letterbox(source, 720, 480)
    back = unletterbox(result.image, result.box, result.source_size)
    assert back.size == size
    error = np.abs(np.asarray(back).astype(int) - np.asarray(source).astype(int))
    # Measured: mean 0.19-0.24, max 2-3 levels of 255. A box off by one canvas
    # pixel gives mean > 2.4 (and a black bar, max 228); NEAREST gives mean > 0.88.
    assert error.mean() < 0.5
    assert error.max() <= 6


@pytest.mark.parametrize("name", SOURCES)
def test_round_trip_returns_the_source_size(name: str) -> None:
    result = letterbox(Image.new("RGB", SOURCES[name], (10, 20, 30)), 96, 64)
    back = unletterbox(result.image, result.box, result.source_size)
    assert back.size == SOURCES[name] and back.mode == "RGB"
    assert np.abs(np.asarray(back).astype(int) - [10, 20, 30]).max() <= 2


# --- unletterbox ------------------------------------------------------------


def test_unletterbox_crops_exactly_the_box() -> None:
    frame = noise(96, 64, seed=5)
    back = unletterbox(frame, Box(10, 5, 40, 25), (30, 20))
    assert np.array_equal(np.asarray(back), np.asarray(frame)[5:25, 10:40])


def test_unletterbox_accepts_a_plain_tuple() -> None:
    frame = Image.new("RGB", (10, 10), (90, 90, 90))
    back = unletterbox(frame, (0, 0, 5, 5), (7, 7))
    assert back.mode == "RGB" and back.size == (7, 7)
    assert (np.asarray(back) == 90).all()


@pytest.mark.parametrize(
    "box",
    [Box(-1, 0, 10, 10), Box(0, 0, 97, 64), Box(0, 0, 96, 65), Box(10, 0, 10, 64), Box(0, 20, 96, 5), (1, 2, 3), (0, 0, 1.5, 2)],
)
def test_unletterbox_box_outside_the_frame(box: tuple) -> None:
    with pytest.raises(InvalidInput) as caught:
        unletterbox(Image.new("RGB", (96, 64)), box, (10, 10))
    assert caught.value.field == "box"
    assert "96x64 frame" in caught.value.rule


@pytest.mark.parametrize("size", [(0, 10), (10,), (10, -2), "10x10"])
def test_unletterbox_bad_size(size: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        unletterbox(Image.new("RGB", (96, 64)), Box(0, 0, 96, 64), size)  # type: ignore[arg-type]
    assert caught.value.field == "size"


def test_unletterbox_rejects_a_non_image_frame() -> None:
    with pytest.raises(InvalidInput) as caught:
        unletterbox("frame.png", Box(0, 0, 1, 1), (1, 1))  # type: ignore[arg-type]
    assert caught.value.field == "frame"


# --- free canvases: the source's own aspect ratio within a pixel budget -------------------------------------


@given(
    source=st.tuples(st.integers(1, 5000), st.integers(1, 5000)),
    budget=st.integers(256, 2_000_000),
    multiple=st.sampled_from([8, 16, 32]),
)
def test_fit_canvas_properties(source: tuple[int, int], budget: int, multiple: int) -> None:
    width, height = fit_canvas(source, budget, multiple)
    assert width % multiple == 0 and height % multiple == 0 and width >= multiple and height >= multiple
    if width > multiple and height > multiple:  # not clamped to one block: inside the budget, as large as it allows
        assert width * height <= budget
        # each side is the largest multiple under its exact aspect-keeping length: one more would overshoot it
        exact_w, exact_h = (budget * source[0] / source[1]) ** 0.5, (budget * source[1] / source[0]) ** 0.5
        assert width <= exact_w < width + multiple and height <= exact_h < height + multiple


@pytest.mark.parametrize(
    ("source", "budget", "multiple", "canvas"),
    [
        ((640, 480), 832 * 480, 16, (720, 544)),  # 4:3 within Wan's 480p area (worked by hand: sqrt(399360*4/3) = 729.7)
        ((480, 640), 832 * 480, 16, (544, 720)),  # portrait: the same sides swapped
        ((832, 480), 832 * 480, 16, (832, 480)),  # the trained size is its own canvas
        ((500, 500), 768 * 512, 32, (608, 608)),  # square on LTX's budget: sqrt(393216) = 627.1 -> 608
    ],
)
def test_fit_canvas_worked_examples(source, budget, multiple, canvas) -> None:
    assert fit_canvas(source, budget, multiple) == canvas


def test_a_free_canvas_has_no_bars_and_comes_back_at_the_source_size() -> None:
    video = VideoConfig(max_canvas_pixels=832 * 480, size_multiple=16)
    source = Image.linear_gradient("L").convert("RGB").resize((640, 480))
    placed = place_on_canvas(source, video)
    assert (placed.fit, placed.size, placed.box) == ("free", (720, 544), Box(0, 0, 720, 544))
    assert placed.restore(placed.image).size == (640, 480)
    fixed = place_on_canvas(source, VideoConfig(width=720, height=480))  # width and height set: the letterbox
    assert (fixed.fit, fixed.size, fixed.box) == ("letterbox", (720, 480), Box(40, 0, 680, 480))
    exact = place_on_canvas(Image.new("RGB", (832, 480), (9, 8, 7)), video)
    assert exact.image.tobytes() == Image.new("RGB", (832, 480), (9, 8, 7)).tobytes()  # no resampling when it fits
    with pytest.raises(InvalidInput) as info:
        place_on_canvas(source, VideoConfig(size_multiple=16))
    assert info.value.field == "video" and "max_canvas_pixels" in str(info.value)
