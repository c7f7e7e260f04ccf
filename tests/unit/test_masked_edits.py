"""Masked edits (`f2f.masks`, the pipeline with a mask): the caller's mask read by its rules, and outside it
the result is the source's pixels exactly, whatever the video made there."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from fakes import NoiseGenerator, ScriptedVLM
from PIL import Image

from f2f.config import F2FConfig, load_config
from f2f.errors import InvalidInput
from f2f.masks import area_fraction, composite, feathered, read_mask
from f2f.pipeline import run_edit
from f2f.protocols import Models
from f2f.request import check_edit

SIZE = (40, 40)


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _openai_mask(box: tuple[int, int, int, int], size: tuple[int, int] = SIZE) -> Image.Image:
    """OpenAI's format: opaque, with the area to edit fully transparent."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def _white_mask(box: tuple[int, int, int, int], size: tuple[int, int] = SIZE) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_an_openai_mask_marks_its_fully_transparent_pixels() -> None:
    mask = _openai_mask((20, 0, 40, 40))
    mask.putpixel((5, 5), (0, 0, 0, 1))  # nearly transparent is not transparent: kept
    area = read_mask(_png(mask), SIZE, needs_alpha=True)
    assert area.mode == "L" and area.size == SIZE
    assert area.getpixel((30, 10)) == 255 and area.getpixel((5, 5)) == 0 and area.getpixel((10, 30)) == 0
    assert area_fraction(area) == 0.5


def test_a_one_channel_mask_marks_its_white_pixels() -> None:
    area = read_mask(_png(_white_mask((0, 0, 10, 40))), SIZE)
    assert area.getpixel((5, 5)) == 255 and area.getpixel((30, 5)) == 0 and area_fraction(area) == 0.25


@pytest.mark.parametrize(
    ("data", "needs_alpha", "phrase"),
    [
        (_png(_white_mask((0, 0, 10, 40), (40, 30))), False, "must be the image's size, 40x40 (got 40x30)"),
        (_png(_white_mask((0, 0, 10, 40))), True, "must be a PNG with an alpha channel"),
        (_png(Image.new("RGB", SIZE, "white")), False, "alpha channel (transparent = edit here) or one channel"),
        (_png(Image.new("L", SIZE, 0)), False, "marks nothing to edit"),
        (_png(_openai_mask((0, 0, 40, 40))), True, "marks the whole image"),
        (_png(Image.new("L", SIZE, 255), "JPEG"), False, "must be a PNG, WebP or TIFF file"),
        (b"not a picture", False, "must be a PNG, WebP or TIFF file that decodes completely"),
        (_png(_white_mask((0, 0, 10, 40)))[:60], False, "decodes completely"),  # truncated
    ],
    ids=["other-size", "openai-without-alpha", "rgb", "empty", "full", "jpeg", "garbage", "truncated"],
)
def test_bad_masks_are_refused_naming_mask(data: bytes, needs_alpha: bool, phrase: str) -> None:
    with pytest.raises(InvalidInput) as info:
        read_mask(data, SIZE, needs_alpha)
    assert info.value.field == "mask" and phrase in str(info.value)


WHITE_FROM = {"I;16": (65535, 32768, 32767), "I;16B": (65535, 32768, 32767), "I": (65535, 32768, 32767)}
WHITE_FROM["F"] = (1.0, 0.5, float(np.nextafter(np.float32(0.5), np.float32(0))))  # full scale, white from, just under


def _deep_mask(mode: str, low: float = 0, high: float | None = None) -> Image.Image:
    """A one-channel `mode` mask of SIZE: `low` (0) on the left, the mode's full scale on the right, in the top
    row the first value that is white and the last that is not, and `high` at (30, 5)."""
    full, white, under = WHITE_FROM[mode]
    values = np.full(SIZE[::-1], low, dtype=np.float64)  # [H, W]
    values[:, 20:] = full
    values[0, 20], values[0, 21] = white, under
    values[5, 30] = full if high is None else high
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode]
    return Image.frombytes(mode, SIZE, np.ascontiguousarray(values.astype(dtype)).tobytes())


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF"), ("F", "TIFF")])
def test_every_one_channel_mode_is_read_white_from_half_its_full_scale(mode: str, fmt: str) -> None:
    """16-bit PNGs and TIFFs as Pillow writes them; the file comes back in the mode asked for."""
    data = _png(_deep_mask(mode), fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    area = read_mask(data, SIZE)
    assert area.mode == "L" and sorted(np.unique(np.asarray(area))) == [0, 255]
    assert area.getpixel((20, 0)) == 255 and area.getpixel((21, 0)) == 0  # half the full scale is white, just under is not
    assert area.getpixel((30, 10)) == 255 and area.getpixel((5, 5)) == 0
    assert area_fraction(area) == (20 * 40 - 1) / (40 * 40)


def test_an_8_bit_mask_written_as_16_bits_is_not_guessed_but_marks_nothing() -> None:
    """0/255 in a 16-bit file is nearly black at full scale 65535: refused as empty, never rescaled silently."""
    with pytest.raises(InvalidInput, match="marks nothing to edit"):
        read_mask(_png(Image.fromarray(np.asarray(_white_mask((0, 0, 20, 40))).astype(np.uint16))), SIZE)


@pytest.mark.parametrize(
    ("mode", "low", "high", "value", "phrase"),
    [
        ("I", 0, 70000, 70000, "a mode I mask must hold values 0 to 65535 (65535 = white)"),
        ("I", -1, None, -1, "a mode I mask must hold values 0 to 65535"),
        ("F", 0.0, 1.5, 1.5, "a mode F mask must hold values 0.0 to 1.0 (1.0 = white)"),
        ("F", -0.25, None, -0.25, "a mode F mask must hold values 0.0 to 1.0"),
        ("F", 0.0, float("nan"), "nan or inf", "a mode F mask must hold values 0.0 to 1.0"),
        ("F", 0.0, float("inf"), "nan or inf", "a mode F mask must hold values 0.0 to 1.0"),
    ],
)
def test_values_outside_a_modes_range_are_refused_naming_mask_the_value_and_the_range(
    mode: str, low: float, high: float | None, value: object, phrase: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        read_mask(_png(_deep_mask(mode, low, high), "TIFF"), SIZE)
    assert (info.value.field, info.value.value) == ("mask", value) and phrase in info.value.rule


def test_the_feather_is_a_ramp_of_finite_width() -> None:
    area = _white_mask((20, 0, 40, 40))
    alpha = np.asarray(feathered(area, 4))
    assert (alpha[:, :16] == 0).all() and (alpha[:, 24:] == 255).all()  # exact beyond the ramp, both sides
    assert 0 < alpha[0, 18] < alpha[0, 21] < 255
    edit, source = Image.new("RGB", SIZE, (250, 0, 0)), Image.new("RGB", SIZE, (0, 0, 250))
    mixed = np.asarray(composite(edit, source, feathered(area, 4)))
    assert (mixed[:, :16] == (0, 0, 250)).all() and (mixed[:, 24:] == (250, 0, 0)).all()


def _masked_edit(square_image: Image.Image, config: F2FConfig, mask: Image.Image, seeds: list[int]) -> object:
    from f2f.request import EditSettings

    request = check_edit(square_image, "make it snow", config, EditSettings(seeds=seeds), mask=_png(mask), mask_needs_alpha=True)
    vlm = ScriptedVLM(selections=["SELECTED: 3"] * len(seeds))
    return asyncio.run(run_edit(request, Models(vlm, NoiseGenerator()), keep_frames=True))


@pytest.mark.parametrize("seeds", [[7], [7, 8]])
def test_outside_the_mask_the_result_and_every_candidate_are_the_source_exactly(
    square_image: Image.Image, small_config: F2FConfig, seeds: list[int]
) -> None:
    """Noise frames (a random-weight model) inside and outside: outside the mask, beyond the feather, the source."""
    config = load_config(overrides={**small_config.model_dump(), "mask": {"mode": "composite", "feather_px": 3}})
    result = _masked_edit(square_image, config, _openai_mask((20, 0, 40, 40)), seeds)
    source = np.asarray(square_image)
    for image in (result.image, *result.candidate_images(), *result.ranked_images()):
        pixels = np.asarray(image)
        assert (pixels[:, :17] == source[:, :17]).all()  # beyond the 3 px feather: exact
        assert (pixels[:, 23:] != source[:, 23:]).any()  # inside: the video's noise
    record = json.loads(json.dumps(result.to_json()))["mask"]
    assert record == {"area": 0.5, "mode": "composite", "feather_px": 3}


def test_the_collage_and_the_video_frames_are_the_masked_ones(square_image: Image.Image, small_config: F2FConfig) -> None:
    """The VLM judges, and the video shows, frames whose kept area is the canvas's source, not the noise."""
    config = load_config(overrides={**small_config.model_dump(), "mask": {"mode": "composite", "feather_px": 0}})
    result = _masked_edit(square_image, config, _openai_mask((20, 0, 40, 40)), [7])
    left, top, right, bottom = result.box  # the 40x40 source is 64x64 on the 96x64 canvas, at x 16..80
    first = np.asarray(result.frames[0])  # frame 0 is the letterboxed source
    for frame in map(np.asarray, result.frames[1:]):
        assert (frame[top:bottom, left : left + 32] == first[top:bottom, left : left + 32]).all()  # kept: the source
        assert (frame[top:bottom, left + 32 : right] != first[top:bottom, left + 32 : right]).any()  # the area: noise


def test_alignment_with_a_mask_looks_for_features_only_where_the_source_stays() -> None:
    from f2f.align import align
    from f2f.config import AlignConfig

    textured = Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    found = align(textured, textured, AlignConfig(mode="always"), keep=Image.new("L", (128, 128), 0))
    assert not found.alignment.applied and found.alignment.reason == "featureless"


def test_in_latent_mode_the_generator_gets_the_mask_on_the_canvas_and_in_composite_mode_none(
    square_image: Image.Image, small_config: F2FConfig
) -> None:
    from fakes import SyntheticGenerator

    from f2f.request import EditSettings

    for mode, expect_mask in (("latent", True), ("composite", False)):
        generator = SyntheticGenerator()
        settings = EditSettings(seeds=[7], mask_mode=mode)
        request = check_edit(square_image, "make it snow", small_config, settings, mask=_png(_white_mask((20, 0, 40, 40))))
        asyncio.run(run_edit(request, Models(ScriptedVLM(selections=["SELECTED: 1"]), generator)))
        (mask,) = generator.masks
        if not expect_mask:
            assert mask is None
            continue
        canvas = np.asarray(mask)  # the 40x40 source is 64x64 at x 16..80 of the 96x64 canvas; bars are kept (0)
        assert mask.size == (96, 64) and mask.mode == "L"
        assert (canvas[:, :48] == 0).all() and (canvas[:, 48:80] == 255).all() and (canvas[:, 80:] == 0).all()


def test_a_family_that_cannot_keep_latents_refuses_latent_mode_naming_it(
    square_image: Image.Image, small_config: F2FConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from f2f import request as request_module
    from f2f.families import family_named

    unable = dataclasses.replace(family_named("cogvideox"), keeps_latents=False)
    monkeypatch.setattr(request_module, "family_named", lambda name: unable)
    mask = _png(_white_mask((20, 0, 40, 40)))
    with pytest.raises(InvalidInput) as info:
        check_edit(square_image, "make it snow", small_config, mask=mask)
    assert info.value.field == "mask_mode" and "ask for mask_mode composite" in str(info.value)
    from f2f.request import EditSettings

    assert check_edit(square_image, "make it snow", small_config, EditSettings(mask_mode="composite"), mask=mask).mask is not None
