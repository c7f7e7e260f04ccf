"""The one configuration tree of f2f.

Every field has a description and units in its name where it has units.
Unknown keys are rejected at every level. Defaults are the settings of the
Frame2Frame paper (49 frames, 50 steps, guidance 6.0, a 720x480 canvas,
every 4th frame a candidate, one seed).

Build it once (`load_config`) and pass it down; nothing else in the package
reads files or environment variables for configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from f2f.errors import InvalidConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class VideoConfig(_Section):
    """What the image-to-video model is asked to generate."""

    width: int = Field(
        720,
        ge=16,
        multiple_of=16,
        description="Canvas width in pixels; the model generates only this size (CogVideoX-5B-I2V: 720).",
    )
    height: int = Field(480, ge=16, multiple_of=16, description="Canvas height in pixels (CogVideoX-5B-I2V: 480).")
    num_frames: int = Field(49, ge=2, description="Frames per video, the source frame included; must be frame_step*k + 1.")
    frame_step: int = Field(8, ge=1, description="The generator returns exactly frame_step*k + 1 frames (CogVideoX: 8).")
    num_inference_steps: int = Field(50, ge=1, le=1000, description="Denoising steps per video.")
    guidance_scale: float = Field(6.0, ge=1.0, le=50.0, description="Classifier-free guidance scale (1.0 turns guidance off).")
    fps: int = Field(8, ge=1, le=120, description="Frames per second of the written video file.")

    @model_validator(mode="after")
    def _frames_the_model_can_produce(self) -> VideoConfig:
        if (self.num_frames - 1) % self.frame_step != 0:
            valid = ", ".join(str(self.frame_step * k + 1) for k in range(1, 7))
            rule = f"the generator produces only frame_step*k + 1 frames ({valid}, ...)"
            raise InvalidConfig("num_frames", self.num_frames, rule)
        return self


class CaptionConfig(_Section):
    """Stage 1: the temporal caption written by the VLM."""

    exemplars_path: Path | None = Field(
        None, description="YAML file of in-context exemplars; null uses the nine packaged with f2f."
    )
    max_new_tokens: int = Field(96, ge=8, le=1024, description="Most tokens the VLM may write for the caption.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature for the caption (0 is greedy).")
    max_chars: int = Field(
        300, ge=20, le=2000, description="A longer cleaned caption is cut at a word boundary to this many characters."
    )


class SelectionConfig(_Section):
    """Stage 3: candidate frames, the collage and the VLM's choice."""

    candidate_stride: int = Field(
        4, ge=1, description="Every candidate_stride-th frame after the source is a candidate (4 -> frames 4, 8, ..., 48)."
    )
    collage_columns: int = Field(4, ge=1, le=16, description="Candidate tiles per row of the collage.")
    collage_max_pixels: int = Field(
        1_003_520,
        ge=65_536,
        description="Pixel budget of the collage (the VLM's max_pixels); tiles are sized to fit it so labels stay legible.",
    )
    max_new_tokens: int = Field(24, ge=4, le=512, description="Most tokens the VLM may write for its choice.")
    retries: int = Field(1, ge=0, le=5, description="Extra asks, with a stricter reminder, after an unparseable answer.")
    on_unparseable: Literal["last_candidate", "source"] = Field(
        "last_candidate",
        description="What an edit returns when no answer could be parsed: the last candidate frame "
        "(the paper's last-frame baseline) or the source image. Either way the status is 'fallback'.",
    )


class InputConfig(_Section):
    """Limits and rules for what callers send."""

    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted source image, width*height in pixels, checked before decoding."
    )
    max_text_chars: int = Field(1000, ge=1, le=100_000, description="Longest accepted edit text, in characters.")
    allowed_formats: tuple[str, ...] = Field(
        ("PNG", "JPEG", "WEBP"), min_length=1, description="Image formats accepted, as Pillow names them."
    )
    alpha_background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB colour that transparent pixels are composited on."
    )

    @model_validator(mode="after")
    def _colour_in_range(self) -> InputConfig:
        if any(not 0 <= c <= 255 for c in self.alpha_background):
            raise InvalidConfig("alpha_background", self.alpha_background, "must be three integers 0..255")
        return self


class F2FConfig(_Section):
    """The whole configuration of an edit."""

    video: VideoConfig = Field(default_factory=VideoConfig, description="Video generation settings.")
    caption: CaptionConfig = Field(default_factory=CaptionConfig, description="Temporal caption settings.")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="Frame selection settings.")
    input: InputConfig = Field(default_factory=InputConfig, description="Input limits.")
    seed: int | None = Field(
        None, ge=0, lt=2**32, description="Seed of the first video; null draws one at random (it is reported in the result)."
    )
    num_seeds: int = Field(
        1, ge=1, le=64, description="Videos per edit, seeds seed, seed+1, ...; the best edit among them is returned."
    )

    @model_validator(mode="after")
    def _stride_leaves_a_candidate(self) -> F2FConfig:
        stride, frames = self.selection.candidate_stride, self.video.num_frames
        if stride >= frames:
            rule = f"must be smaller than video.num_frames ({frames}), or no frame after the source is a candidate"
            raise InvalidConfig("selection.candidate_stride", stride, rule)
        return self


def _error_from_validation(exc: ValidationError, origin: str) -> InvalidConfig:
    """The first pydantic error as an InvalidConfig naming the dotted field."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    raised = err.get("ctx", {}).get("error")
    if isinstance(raised, InvalidConfig):  # a model validator naming its own field
        return InvalidConfig(origin + ".".join([*loc, raised.field]), raised.value, raised.rule)
    rule = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return InvalidConfig(origin + (".".join(loc) or "config"), err.get("input"), rule)


def config_from_dict(data: dict[str, Any], origin: str = "") -> F2FConfig:
    """Validate a plain mapping into an F2FConfig; errors name the dotted field."""
    try:
        return F2FConfig.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc, origin) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> F2FConfig:
    """The defaults, updated by a YAML file, updated by `overrides` (nested dicts)."""
    data: dict[str, Any] = {}
    origin = ""
    if path is not None:
        origin = f"{path}: "
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidConfig("config", str(path), f"cannot read the file ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise InvalidConfig("config", str(path), f"not valid YAML ({exc})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InvalidConfig("config", str(path), "the file must hold a mapping of sections")
        data = loaded
    if overrides:
        data = _merge(data, overrides)
    return config_from_dict(data, origin)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_to_yaml(config: F2FConfig) -> str:
    """The effective config as YAML that `load_config` reads back unchanged."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
