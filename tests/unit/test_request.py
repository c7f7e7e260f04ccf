"""The one checked edit request (`f2f.request`): every way in gets the same checks, named by the caller's field."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from f2f.config import F2FConfig
from f2f.errors import InvalidImage, InvalidInput
from f2f.request import (
    CONFIG_FIELD,
    WIRE_NAME,
    CheckedEdit,
    EditSettings,
    RequestLimits,
    check_edit,
    check_edit_ahead,
    settings_from,
)


def _png(size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 0) if mode == "RGBA" else (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_wire_and_config_names_are_one_mapping_both_ways() -> None:
    assert {WIRE_NAME[config]: config for config in WIRE_NAME} == CONFIG_FIELD
    settings = EditSettings(seed=5, n=2, num_frames=9, steps=3, guidance=4.5)
    assert settings.config_overrides() == {
        "seed": 5,
        "num_seeds": 2,
        "video": {"num_frames": 9, "num_inference_steps": 3, "guidance_scale": 4.5},
    }
    assert settings.video() == {"num_frames": 9, "num_inference_steps": 3, "guidance_scale": 4.5}


def test_a_checked_request_holds_the_decoded_source_the_text_the_seeds_and_the_run_config(small_config: F2FConfig) -> None:
    checked = check_edit(_png(mode="RGBA"), "  make it red \n", small_config, EditSettings(n=3, steps=1))
    assert checked.source.mode == "RGB" and checked.source.size == (40, 30)
    assert checked.source.getpixel((0, 0)) == (255, 255, 255)  # transparent onto input.alpha_background
    assert checked.text == "make it red"
    assert checked.seeds == [7, 8, 9]  # the config's seed, counted up n times
    assert checked.config.video.num_inference_steps == 1 and checked.config.num_seeds == 3
    assert small_config.video.num_inference_steps == 2  # the server's config is untouched


@pytest.mark.parametrize(
    ("settings", "limits", "field", "phrase"),
    [
        (EditSettings(seed=1, seeds=[1, 2]), None, "seeds", "give seed or seeds, not both"),
        (EditSettings(n=2, seeds=[1, 2]), None, "n", "give n or seeds, not both"),
        (EditSettings(n=5), RequestLimits(max_n=4), "n", "at most 4 videos per edit on this server (max_n)"),
        (EditSettings(seeds=[1, 2, 3]), RequestLimits(max_n=2), "seeds", "at most 2 videos"),
        (EditSettings(steps=11), RequestLimits(max_steps=10), "steps", "at most 10 on this server (max_steps)"),
        (EditSettings(num_frames=8), None, "num_frames", "8k + 1 frames"),  # the config's own rule, by the wire name
    ],
)
def test_each_rule_names_the_callers_field(
    small_config: F2FConfig, settings: EditSettings, limits: RequestLimits | None, field: str, phrase: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        check_edit(_png(), "make it red", small_config, settings, limits)
    assert info.value.field == field and phrase in str(info.value)


def test_the_text_is_named_as_the_caller_wrote_it(small_config: F2FConfig) -> None:
    for field in ("text", "prompt"):
        with pytest.raises(InvalidInput) as info:
            check_edit(_png(), "   ", small_config, text_field=field)
        assert info.value.field == field


def test_the_image_is_checked_once_by_its_rules(small_config: F2FConfig) -> None:
    with pytest.raises(InvalidImage, match="image"):
        check_edit(b"not an image", "make it red", small_config)
    tight = small_config.model_copy(update={"input": small_config.input.model_copy(update={"max_image_pixels": 100})})
    for image in (_png((40, 30)), Image.new("RGB", (40, 30))):
        with pytest.raises(InvalidImage, match="max_image_pixels"):
            check_edit(image, "make it red", tight)


def _mask_png(size: tuple[int, int], value: int = 255, edit_box: tuple[int, int, int, int] | None = None) -> bytes:
    mask = Image.new("L", size, value)
    if edit_box:
        mask.paste(255, edit_box)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "text", "settings", "mask", "field"),
    [
        (_png(), "make it red", EditSettings(seed=1, seeds=[1]), None, "seeds"),
        (_png(), "make it red", EditSettings(num_frames=10), None, "num_frames"),
        (_png(), "   ", None, None, "text"),
        (b"not an image", "make it red", None, None, "image"),
        (_png(), "make it red", None, b"not a mask", "mask"),
        (_png(), "make it red", None, _mask_png((30, 40), 0, (0, 0, 10, 10)), "mask"),  # another size
        (_png(), "make it red", None, _mask_png((40, 30), 0), "mask"),  # marks nothing
    ],
)
def test_the_check_ahead_refuses_what_the_edits_check_refuses_with_the_same_error(
    small_config: F2FConfig, image: bytes, text: str, settings: EditSettings | None, mask: bytes | None, field: str
) -> None:
    errors = []
    for check in (check_edit, check_edit_ahead):
        with pytest.raises(InvalidInput) as info:
            check(image, text, small_config, settings, mask=mask)
        errors.append((type(info.value), info.value.field, info.value.rule, info.value.value))
    assert errors[0] == errors[1] and errors[0][1] == field


def test_the_check_ahead_reads_the_image_up_to_its_header_and_gives_the_run_config(small_config: F2FConfig) -> None:
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(noise, format="PNG")
    cut = noise.getvalue()[: len(noise.getvalue()) // 2]  # a good header, half the pixels
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        check_edit(cut, "make it red", small_config)
    config = check_edit_ahead(cut, "make it red", small_config, EditSettings(steps=1), mask=_mask_png((40, 30), 0, (0, 0, 5, 5)))
    assert config.video.num_inference_steps == 1


@pytest.mark.parametrize("seeds", [[], [-1], [2**32], ["1"], [True]])
def test_library_seeds_are_strict_and_named_seeds(seeds: list) -> None:
    with pytest.raises(InvalidInput) as info:
        settings_from({"seeds": seeds}, nested_fields=False)
    assert info.value.field == "seeds"


def test_wire_seeds_name_the_item_at_fault() -> None:
    with pytest.raises(InvalidInput) as info:
        settings_from({"seeds": [1, "banana"]})
    assert info.value.field == "seeds.1" and info.value.code == "int_parsing"
    assert settings_from({"seeds": ["4", "5"]}).seeds == [4, 5]  # a form's strings are numbers on the wire


def test_a_caller_setting_changes_only_its_own_field_and_a_rebuilt_request_runs_the_same_config(
    small_config: F2FConfig,
) -> None:
    server = small_config.model_copy(update={"mask": small_config.mask.model_copy(update={"feather_px": 7, "strength": 0.5})})
    settings = EditSettings(mask_mode="composite", steps=1, seed=5)
    checked = check_edit(Image.new("RGB", (40, 30)), "make it red", server, settings)
    assert (checked.config.mask.mode, checked.config.mask.feather_px, checked.config.mask.strength) == ("composite", 7, 0.5)
    assert checked.config.video.num_inference_steps == 1 and checked.config.seed == 5
    rebuilt = CheckedEdit.of_record(checked.source, checked.text, checked.seeds, settings, server)
    assert rebuilt.config == checked.config


def test_a_request_rebuilt_from_a_record_is_not_checked_again(small_config: F2FConfig) -> None:
    """What the ingress checked runs as it is: even an image over today's pixel limit (the limit may have changed)."""
    tight = small_config.model_copy(update={"input": small_config.input.model_copy(update={"max_image_pixels": 100})})
    source = Image.new("RGB", (40, 30))
    rebuilt = CheckedEdit.of_record(source, "make it red", [3, 4], EditSettings(steps=1, num_frames=9), tight)
    assert rebuilt.source is source and rebuilt.seeds == [3, 4]
    assert (rebuilt.config.video.num_inference_steps, rebuilt.config.video.num_frames) == (1, 9)
