"""One checked edit request: what a caller sent, made once into what the pipeline runs.

Every way in builds it with `check_edit`: the HTTP routes (a multipart form or
JSON), a bulk manifest row, `f2f edit`, and `f2f.edit` for library callers.
The pipeline (`f2f.pipeline.run_edit`) trusts it and checks nothing again.

Rules:

- `EditSettings` holds the settings a caller may set per edit, under their
  wire names (`seed`, `seeds`, `n`, `num_frames`, `steps`, `guidance`); null
  is the server's. Its fields check types and ranges (JSON `true` is not the
  number 1); `CONFIG_FIELD` is the one mapping from a wire name to the config
  field it sets, both ways.
- `check_edit(image, text, config, settings, limits)` decodes the image once
  (bytes or a path through `f2f.imageio.open_image`; a Pillow image is made
  RGB) and checks, in this order: the combination rules (`seed` or `seeds`,
  `n` or `seeds`), the server's per-request `limits` (`RequestLimits`, the
  service's `max_n`, `max_num_frames`, `max_steps`), the config's own rules
  for the settings (frames `frame_step*k + 1`, steps, guidance), the image's
  size, the text, the seeds, and the mask (`f2f.masks.read_mask`: the
  image's size; in `mask_mode` latent, a video family that keeps latents
  outside a mask, and a generator that is not split over several
  processes). Every failure is an `InvalidInput` naming the caller's field,
  the value and the rule. What runs after trusts the request: the source is
  made RGB here and nowhere else, the generator checks nothing per call.
- `check_edit_ahead` applies the same rules, in the same order, to work
  checked long before it runs (a bulk manifest's rows, before any model
  loads): the image up to its header only (`f2f.imageio.probe_image`), so
  it is decoded once, when the edit runs.
- `CheckedEdit.config` is the server's config with the caller's settings, and
  `CheckedEdit.seeds` the seeds the videos use (given, or counted up from
  `seed`, or drawn at random): the request is complete, nothing is guessed later.
- `CheckedEdit.of_record` rebuilds a request that was checked before (a job's
  stored source and settings): it checks nothing, as the pipeline does not.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from f2f.config import F2FConfig, invalid_config_from, nested
from f2f.errors import InvalidImage, InvalidInput
from f2f.families import family_named
from f2f.imageio import ensure_rgb, open_image, probe_image
from f2f.masks import read_mask

SEED_LIMIT = 2**32
CONFIG_FIELD = {
    "seed": "seed",
    "n": "num_seeds",
    "num_frames": "video.num_frames",
    "steps": "video.num_inference_steps",
    "guidance": "video.guidance_scale",
    "mask_mode": "mask.mode",
}
WIRE_NAME = {config: wire for wire, config in CONFIG_FIELD.items()}


def _not_a_bool(value: Any) -> Any:
    """JSON `true` is not the number 1 (pydantic's lax mode would take it as 1)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "must be a number, not a boolean")
    return value


Number = BeforeValidator(_not_a_bool)


class EditSettings(BaseModel):
    """What a caller may set per edit (wire names); null means the server's setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: Annotated[int | None, Number] = Field(
        None, ge=0, lt=SEED_LIMIT, description="Seed of the first video; the others follow it."
    )
    seeds: list[Annotated[int, Number, Field(ge=0, lt=SEED_LIMIT)]] | None = Field(
        None, min_length=1, description="Seeds of the videos, one video each (multipart: comma-separated)."
    )
    n: Annotated[int | None, Number] = Field(None, ge=1, description="Videos (seeds) to try; the best edit wins (at most max_n).")
    num_frames: Annotated[int | None, Number] = Field(
        None, description="Frames per video (frame_step*k + 1, at most the server's max_num_frames)."
    )
    steps: Annotated[int | None, Number] = Field(None, description="Denoising steps per video (at most the server's max_steps).")
    guidance: Annotated[float | None, Number] = Field(None, description="Classifier-free guidance scale.")
    mask_mode: Literal["latent", "composite"] | None = Field(
        None, description="With a mask: latent (kept while the video is made) or composite (only in the result)."
    )

    def config_overrides(self) -> dict[str, Any]:
        """The config fields these settings set, as a nested mapping ({"video": {...}, "seed": ...})."""
        return nested({CONFIG_FIELD[wire]: getattr(self, wire) for wire in CONFIG_FIELD})

    def video(self) -> dict[str, Any]:
        """The `video` fields these settings set (config names)."""
        return self.config_overrides().get("video", {})


class RequestLimits(BaseModel):
    """The most one request may ask for: every setting that multiplies its work (the service's args of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_n: int = Field(4, ge=1, le=64, description="Videos (seeds) per edit: `n`, or how many `seeds`.")
    max_num_frames: int = Field(49, ge=2, description="Frames per video: `num_frames`.")
    max_steps: int = Field(1000, ge=1, le=1000, description="Denoising steps per video: `steps`.")


@dataclass(frozen=True)
class CheckedEdit:
    """An edit request that passed every check: the pipeline runs it as it is."""

    source: Image.Image  # RGB, fully loaded
    text: str  # stripped, within input.max_text_chars
    seeds: list[int]  # one video each, in order
    settings: EditSettings  # what the caller set (wire names)
    config: F2FConfig  # the server's config with the caller's settings
    check_s: float = 0.0  # seconds the check (or the reload of a checked request) took
    mask: Image.Image | None = None  # "L", the source's size: 255 where the edit may happen (f2f.masks)

    @classmethod
    def of_record(
        cls,
        source: Image.Image,
        text: str,
        seeds: Sequence[int],
        settings: EditSettings,
        server: F2FConfig,
        load_s: float = 0.0,
        mask: Image.Image | None = None,
    ) -> CheckedEdit:
        """A request checked before (a job's stored source, mask and settings), rebuilt without checking it again."""
        return cls(source, text, list(seeds), settings, _with_settings(server, settings), load_s, mask)


def settings_from(data: dict[str, Any], *, nested_fields: bool = True) -> EditSettings:
    """`EditSettings` from a caller's mapping; InvalidInput names the field (`seeds.1`, or `seeds` without nesting)."""
    try:
        return EditSettings.model_validate(data, strict=not nested_fields)
    except ValidationError as exc:
        raise invalid_input_from(exc, nested_fields) from None


def invalid_input_from(exc: ValidationError, nested_fields: bool = True) -> InvalidInput:
    """The first validation error as an InvalidInput naming the caller's field; its code is pydantic's error type."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    param = (".".join(loc) if nested_fields else loc[0]) if loc else "body"
    rule = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    error = InvalidInput(param, None if err["type"] == "missing" else err.get("input"), rule)
    error.code = str(err["type"])
    return error


def check_edit(
    image: Image.Image | bytes | str | Path,
    text: str,
    config: F2FConfig,
    settings: EditSettings | None = None,
    limits: RequestLimits | None = None,
    text_field: str = "text",
    mask: Image.Image | bytes | str | Path | None = None,
    mask_needs_alpha: bool = False,
) -> CheckedEdit:
    """The checked request, or InvalidInput naming the caller's field (the module docstring's order).

    `text_field` is the text's name where the caller wrote it: `prompt` on the wire, `text` in Python and the CLI.
    `mask_needs_alpha`: the caller's API is OpenAI's, whose masks carry the area in their alpha channel.
    """
    started = time.perf_counter()
    settings = settings or EditSettings()
    run_config = _checked_settings(config, settings, limits)
    source = _source(image, run_config)
    text = _text(text, run_config, text_field)
    seeds = _seeds(settings, run_config)
    area = None if mask is None else _mask(mask, source.size, mask_needs_alpha, run_config)
    return CheckedEdit(source, text, seeds, settings, run_config, time.perf_counter() - started, area)


def check_edit_ahead(
    image: bytes | str | Path,
    text: str,
    config: F2FConfig,
    settings: EditSettings | None = None,
    limits: RequestLimits | None = None,
    text_field: str = "text",
    mask: bytes | str | Path | None = None,
) -> F2FConfig:
    """`check_edit`'s rules, in its order, for work checked long before it runs (a bulk row, before any model loads).

    The image is read up to its header only (`f2f.imageio.probe_image`: the file, its format, its size; the
    mask is checked against the upright size); `check_edit` decodes it when the edit runs, so a body that is
    corrupt behind a good header fails only then. A mask is read in full: its rules need its pixels.
    The run's config for these settings, or InvalidInput naming the caller's field.
    """
    settings = settings or EditSettings()
    run_config = _checked_settings(config, settings, limits)
    size = probe_image(image, run_config.input)
    _text(text, run_config, text_field)
    if mask is not None:
        _mask(mask, size, False, run_config)
    return run_config


def _checked_settings(config: F2FConfig, settings: EditSettings, limits: RequestLimits | None) -> F2FConfig:
    """The combination rules, the server's limits and the config's own rules: the run's config."""
    _check_combination(settings)
    if limits is not None:
        _check_limits(settings, limits)
    return _run_config(config, settings)


def _check_combination(settings: EditSettings) -> None:
    if settings.seed is not None and settings.seeds is not None:
        raise InvalidInput("seeds", settings.seeds, "give seed or seeds, not both")
    if settings.n is not None and settings.seeds is not None:
        raise InvalidInput("n", settings.n, "give n or seeds, not both (n is the number of seeds)")


def _check_limits(settings: EditSettings, limits: RequestLimits) -> None:
    count = len(settings.seeds) if settings.seeds is not None else settings.n
    if count is not None and count > limits.max_n:
        raise InvalidInput(
            "seeds" if settings.seeds else "n", count, f"at most {limits.max_n} videos per edit on this server (max_n)"
        )
    for wire, limit in (("num_frames", "max_num_frames"), ("steps", "max_steps")):
        value = getattr(settings, wire)
        if value is not None and value > getattr(limits, limit):
            raise InvalidInput(wire, value, f"at most {getattr(limits, limit)} on this server ({limit})")


def _with_settings(config: F2FConfig, settings: EditSettings) -> F2FConfig:
    """The config with the caller's settings, each in its section (the section's other fields the server's), unchecked."""
    overrides = settings.config_overrides()
    sections = {key: getattr(config, key).model_copy(update=value) for key, value in overrides.items() if isinstance(value, dict)}
    return config.model_copy(update={**overrides, **sections}) if overrides else config


def _run_config(config: F2FConfig, settings: EditSettings) -> F2FConfig:
    """`_with_settings`, checked by the config's own rules; errors name the caller's field."""
    merged = _with_settings(config, settings)
    if merged is config:
        return config
    try:
        return F2FConfig.model_validate(merged.model_dump())
    except ValidationError as exc:
        error = invalid_config_from(exc, "")
        raise InvalidInput(WIRE_NAME.get(error.field, error.field), error.value, error.rule) from None


def _source(image: Image.Image | bytes | str | Path, config: F2FConfig) -> Image.Image:
    if not isinstance(image, Image.Image):
        return open_image(image, config.input)  # its rules include the size limits
    if image.width < 1 or image.height < 1:
        raise InvalidImage("image", image.size, "must be at least 1x1 pixels")
    if image.width * image.height > config.input.max_image_pixels:
        rule = (
            f"{image.width}x{image.height} is over the limit of {config.input.max_image_pixels:,} pixels (input.max_image_pixels)"
        )
        raise InvalidImage("image", image.size, rule)
    return ensure_rgb(image, config.input.alpha_background)


def _text(text: str, config: F2FConfig, field: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(field, text, "the edit text must not be empty")
    if len(text.strip()) > config.input.max_text_chars:
        raise InvalidInput(field, text, f"must be at most {config.input.max_text_chars} characters (input.max_text_chars)")
    return text.strip()


def _mask(mask: Image.Image | bytes | str | Path, size: tuple[int, int], needs_alpha: bool, config: F2FConfig) -> Image.Image:
    area = read_mask(mask, size, needs_alpha)
    family = config.generator.family
    if config.mask.mode == "latent" and family is not None and not family_named(family).keeps_latents:
        rule = f"the {family} video family cannot keep the source outside a mask while it generates; ask for mask_mode composite"
        raise InvalidInput("mask_mode", "latent", rule)
    video = config.video
    cut_short = video.enable_temporal_reasoning and video.num_temporal_reasoning_steps != video.num_inference_steps
    if config.mask.mode == "latent" and cut_short:
        rule = (
            "temporal reasoning for fewer steps than all drops the reasoning frames mid-way, so the latents cannot be kept "
            "against one reference; reason for every step, turn temporal reasoning off, or ask for mask_mode composite"
        )
        raise InvalidInput("mask", "given", rule)
    if config.mask.mode == "latent" and config.generator.parallel.world_size > 1:  # its other ranks would never get the mask
        rule = "a generator split over several processes (generator.parallel) cannot keep latents outside a mask"
        raise InvalidInput("mask", "given", f"{rule}; use mask.mode: composite")
    return area


def _seeds(settings: EditSettings, config: F2FConfig) -> list[int]:
    if settings.seeds is not None:
        return list(settings.seeds)
    first = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    return [first + i for i in range(config.num_seeds)]
