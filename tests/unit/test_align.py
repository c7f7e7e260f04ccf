"""f2f.align: known camera motions are recovered, edited regions are outliers, bad images are refused with a reason.

Tolerances (shift 0.5 px, scale 0.5%, rotation 0.25 degrees) hold on any CPU: the test images are drawn and warped
with OpenCV's integer and fixed-point code (the same pixels everywhere), and the fit is a least-squares similarity
over hundreds of RANSAC inliers whose SIFT positions are sub-pixel, so its error here is a few hundredths of a pixel
(at most 0.05 px, 0.04% and 0.013 degrees on this machine): float rounding that moved every keypoint or dropped some
would move the estimate by far less than the tolerances, which are ten times the worst error seen.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scenes import camera_matrix, moved, textured, with_blob

from f2f.align import align, decompose
from f2f.config import AlignConfig, load_config
from f2f.errors import InvalidConfig, InvalidInput

SHIFT_TOLERANCE_PX = 0.5
SCALE_TOLERANCE = 0.005
ROTATION_TOLERANCE_DEG = 0.25

MOTIONS = [
    {"shift": (6.5, -4.25)},
    {"shift": (-20.0, 11.0)},
    {"scale": 1.08},
    {"scale": 0.93},
    {"rotation_deg": 4.0},
    {"rotation_deg": -7.0},
    {"shift": (3.0, 2.0), "scale": 1.04, "rotation_deg": -3.0},
]


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return textured(0)


def assert_recovered(alignment, size, motion):
    (dx, dy), scale, rotation = decompose(
        camera_matrix(size, motion.get("shift", (0, 0)), motion.get("scale", 1.0), motion.get("rotation_deg", 0.0)), *size
    )
    assert abs(alignment.shift_px[0] - dx) < SHIFT_TOLERANCE_PX and abs(alignment.shift_px[1] - dy) < SHIFT_TOLERANCE_PX
    assert abs(alignment.scale - scale) < SCALE_TOLERANCE * scale
    assert abs(alignment.rotation_deg - rotation) < ROTATION_TOLERANCE_DEG


@pytest.mark.parametrize("motion", MOTIONS, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
def test_a_known_camera_motion_is_recovered_and_undone(source, motion):
    edited = moved(source, **motion)
    image, alignment = align(edited, source, AlignConfig())
    assert alignment.applied and alignment.reason is None and alignment.mode == "auto"
    assert_recovered(alignment, source.size, motion)
    # Interpolating twice (the test's warp and the alignment's) blurs a noisy texture: the matching region comes
    # back within about 10 grey levels of the source, from about 40 (measured 0.1 to 9.4 and 39 to 62 here).
    assert alignment.error_after < 15 < 30 < alignment.error_before
    assert image.size == source.size and image.mode == "RGB"


@pytest.mark.parametrize("motion", MOTIONS[::2], ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
def test_an_edited_region_does_not_break_it(source, motion):
    edited = with_blob(moved(source, **motion), (100, 60, 220, 160))  # 16% of the image replaced by another texture
    _, alignment = align(edited, source, AlignConfig())
    assert alignment.applied
    assert_recovered(alignment, source.size, motion)


def test_the_record_is_deterministic_and_json(source):
    edited = moved(source, (5.0, 3.0), 1.02, 1.0)
    first, second = align(edited, source, AlignConfig()), align(edited, source, AlignConfig())
    assert first.alignment == second.alignment
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    data = json.loads(json.dumps(first.alignment.to_json()))
    assert set(data) == {
        "mode", "applied", "reason", "matrix", "shift_px", "scale", "rotation_deg", "inliers", "error_before", "error_after"
    }  # fmt: skip
    assert len(data["matrix"]) == 2 and all(len(row) == 3 for row in data["matrix"])


@pytest.mark.parametrize("motion", [{"shift": (9.0, -6.0)}, {"scale": 1.1}, {"rotation_deg": 6.0}], ids=str)
def test_the_warp_fills_what_it_uncovers_from_the_edit_never_black(source, motion):
    assert np.asarray(source).min() > 0  # no pure black anywhere in the source
    image, alignment = align(moved(source, **motion), source, AlignConfig())
    assert alignment.applied
    pixels = np.asarray(image)
    assert not (pixels == 0).all(axis=2).any()


def test_identical_images_are_left_alone_in_auto_and_warped_in_always(source):
    image, alignment = align(source, source, AlignConfig())
    assert (alignment.applied, alignment.reason) == (False, "did not lower the error")
    assert image is source
    assert alignment.scale == pytest.approx(1.0, abs=1e-3) and alignment.error_before == pytest.approx(0.0, abs=0.5)
    _, always = align(source, source, AlignConfig(mode="always"))
    assert (always.applied, always.reason) == (True, None)


def test_mode_off_estimates_nothing(source):
    edited = moved(source, (6.0, 0.0))
    image, alignment = align(edited, source, AlignConfig(mode="off"))
    assert image is edited
    assert (alignment.applied, alignment.reason, alignment.matrix, alignment.error_before) == (False, "off", None, None)


@pytest.mark.parametrize(
    ("bounds", "motion"),
    [
        ({"max_shift_fraction": 0.02}, {"shift": (12.0, 0.0)}),  # 12 px of 320 is 3.75%
        ({"max_zoom": 1.05}, {"scale": 1.1}),
        ({"max_rotation_deg": 2.0}, {"rotation_deg": 5.0}),
    ],
    ids=["shift", "zoom", "rotation"],
)
@pytest.mark.parametrize("mode", ["auto", "always"])
def test_a_motion_out_of_bounds_is_never_applied(source, bounds, motion, mode):
    edited = moved(source, **motion)
    image, alignment = align(edited, source, AlignConfig(mode=mode, **bounds))
    assert (alignment.applied, alignment.reason) == (False, "out of bounds")
    assert image is edited
    assert_recovered(alignment, source.size, motion)  # the record still says what was found
    assert alignment.error_before > 0 and alignment.error_after is None


def _noise(size, seed=3):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _gradient(size):
    ramp = np.linspace(0, 255, size[0], dtype=np.float32)
    return Image.fromarray(np.repeat(np.tile(ramp, (size[1], 1))[..., None], 3, axis=2).astype(np.uint8))


@pytest.mark.parametrize(
    ("edited", "reference", "reason"),
    [
        (Image.new("RGB", (320, 240), (90, 120, 30)), "textured", "featureless"),
        ("textured", Image.new("RGB", (320, 240), (255, 255, 255)), "featureless"),
        (_gradient((320, 240)), "textured", "featureless"),
        (Image.new("RGB", (24, 300), (10, 10, 10)), Image.new("RGB", (24, 300), (10, 10, 10)), "too small"),
        (textured(0, (31, 31)), textured(0, (31, 31)), "too small"),
        (_noise((320, 240)), "textured", "too few matches"),  # what random-weight models generate
        (textured(5), "textured", "too few matches"),  # another scene
    ],
    ids=["one-colour-edit", "one-colour-source", "gradient", "too-narrow", "tiny", "noise", "other-scene"],
)
@pytest.mark.parametrize("mode", ["auto", "always"])
def test_bad_images_give_a_reason_never_an_exception(source, edited, reference, reason, mode):
    edited = source if edited == "textured" else edited
    reference = source if reference == "textured" else reference
    image, alignment = align(edited, reference, AlignConfig(mode=mode))
    assert (alignment.applied, alignment.reason, alignment.matrix) == (False, reason, None)
    assert image is edited


def test_the_edit_must_have_the_sources_size(source):
    with pytest.raises(InvalidInput) as info:
        align(source.resize((160, 120)), source, AlignConfig())
    assert info.value.field == "edited" and "320x240" in info.value.rule


def test_a_large_image_is_estimated_on_a_smaller_copy_and_warped_at_full_size():
    big = textured(2, (1280, 960))
    edited = moved(big, (-24.0, 16.0), 0.97, 1.5)
    image, alignment = align(edited, big, AlignConfig())  # features on 512x384, the warp at 1280x960
    assert alignment.applied and image.size == (1280, 960)
    # One work pixel is 2.5 full pixels: the tolerances scale with it.
    (dx, dy), scale, rotation = decompose(camera_matrix(big.size, (-24.0, 16.0), 0.97, 1.5), *big.size)
    assert (
        abs(alignment.shift_px[0] - dx) < 2.5 * SHIFT_TOLERANCE_PX and abs(alignment.shift_px[1] - dy) < 2.5 * SHIFT_TOLERANCE_PX
    )
    assert abs(alignment.scale - scale) < SCALE_TOLERANCE and abs(alignment.rotation_deg - rotation) < ROTATION_TOLERANCE_DEG


@pytest.mark.parametrize(
    ("align_block", "field", "phrase"),
    [
        ({"mode": "sometimes"}, "align.mode", "'off', 'auto' or 'always'"),
        ({"max_zoom": 0.5}, "align.max_zoom", "greater than or equal to 1"),
        ({"max_shift_fraction": 0}, "align.max_shift_fraction", "greater than 0"),
        ({"min_inliers": 2}, "align.min_inliers", "greater than or equal to 4"),
        ({"colour": "red"}, "align.colour", "unknown key"),
    ],
)
def test_align_config_errors_name_the_field(align_block, field, phrase):
    with pytest.raises(InvalidConfig) as info:
        load_config(overrides={"align": align_block})
    assert info.value.field == field and phrase in info.value.rule


def test_the_default_mode_is_auto():
    assert load_config().align.mode == "auto"
