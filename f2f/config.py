"""The one configuration tree of f2f.

Every field has a description and units in its name where it has units
(`f2f config show --describe` prints them from the schema: `describe`).
Unknown keys are rejected at every level, naming the closest real key.
Defaults are the settings of the Frame2Frame paper (every 4th frame a
candidate, one seed); the video settings are the generator's own (its
profile's, else its family's: `VideoConfig`).

Build it once (`load_config`) and pass it down; nothing else in the package
reads files or environment variables for configuration.
"""

from __future__ import annotations

import difflib
import inspect
import json
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import to_jsonable_python

from f2f import catalogue
from f2f.errors import InvalidConfig
from f2f.families import family_named, video_defaults


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class VideoConfig(_Section):
    """What the image-to-video model is asked to generate.

    Every field left null is the generator's own default: the profile's
    (`models/catalogue.yaml`), else its family's (`f2f.families`), filled in
    when the config is loaded (`config_from_dict`). No model's number is a
    default here.
    """

    width: int | None = Field(
        None,
        ge=16,
        description="Canvas width in pixels, with height: every source is letterboxed onto this one size "
        "(a fixed-canvas model such as CogVideoX-5B-I2V: its only size). Null on a free-size model: a canvas of each "
        "source's own aspect ratio within max_canvas_pixels.",
    )
    height: int | None = Field(None, ge=16, description="Canvas height in pixels (with width; see width).")
    max_canvas_pixels: int | None = Field(
        None, ge=256, description="Free-size models: the canvas's pixel budget (width*height), e.g. 399,360 = 832x480."
    )
    size_multiple: int | None = Field(
        None, ge=1, le=256, description="Canvas width and height are multiples of this (the model's: VAE scale x patch)."
    )
    num_frames: int | None = Field(None, ge=2, description="Frames per video, the source frame included; frame_step*k + 1.")
    frame_step: int | None = Field(
        None, ge=1, description="The generator returns exactly frame_step*k + 1 frames (CogVideoX 8, Wan 4, LTX-Video 8)."
    )
    num_inference_steps: int | None = Field(None, ge=1, le=1000, description="Denoising steps per video.")
    guidance_scale: float | None = Field(
        None, ge=1.0, le=50.0, description="Classifier-free guidance scale (1.0 turns guidance off)."
    )
    shift: float | None = Field(
        None, gt=0, le=100, description="Flow-matching models: the timestep shift of the scheduler (null: the checkpoint's)."
    )
    fps: int | None = Field(None, ge=1, le=120, description="Frames per second of the written video file.")
    enable_temporal_reasoning: bool | None = Field(
        None,
        description="ChronoEdit: denoise a longer clip of reasoning frames between the source and the edit for the first "
        "num_temporal_reasoning_steps steps (null elsewhere; f2f.backends.video.chronoedit).",
    )
    num_temporal_reasoning_steps: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="ChronoEdit: steps that denoise the reasoning clip, at most num_inference_steps; all of them return "
        "the whole clip (num_frames 29), fewer the source and the edit (num_frames 5).",
    )

    @model_validator(mode="after")
    def _frames_the_model_can_produce(self) -> VideoConfig:
        if (self.width is None) != (self.height is None):
            given, missing = ("width", "height") if self.height is None else ("height", "width")
            raise InvalidConfig(missing, None, f"set both width and height, or neither ({given} is {getattr(self, given)})")
        if self.num_frames is not None and self.frame_step is not None and (self.num_frames - 1) % self.frame_step:
            valid = ", ".join(str(self.frame_step * k + 1) for k in range(1, 7))
            rule = f"the generator produces only {self.frame_step}k + 1 frames ({valid}, ...)"
            raise InvalidConfig("num_frames", self.num_frames, rule)
        if self.size_multiple is not None and self.width is not None:
            for name in ("width", "height"):
                if getattr(self, name) % self.size_multiple:
                    rule = f"must be a multiple of size_multiple ({self.size_multiple})"
                    raise InvalidConfig(name, getattr(self, name), rule)
        return self

    @property
    def complete(self) -> bool:
        """Everything a video needs is set: a canvas (width and height, or a pixel budget) and every setting."""
        canvas = self.width is not None or (self.max_canvas_pixels is not None and self.size_multiple is not None)
        return canvas and None not in (self.num_frames, self.num_inference_steps, self.guidance_scale, self.fps)

    def missing(self) -> list[str]:
        """The fields `complete` wants that are null."""
        names = ["num_frames", "num_inference_steps", "guidance_scale", "fps"]
        if self.width is None:
            names += ["max_canvas_pixels", "size_multiple"]
        return [name for name in names if getattr(self, name) is None]


class CaptionConfig(_Section):
    """Stage 1: the caption written by the VLM, in the style the video model wants (`f2f.caption`)."""

    style: Literal["temporal", "instruction"] | None = Field(
        None,
        description="temporal: one sentence of a clip changing from the source into the edit (the paper's); instruction: "
        "the edit rewritten for an editing model, what changes and what must stay (ChronoEdit). Null: the generator "
        "family's (temporal when none is configured).",
    )

    exemplars_path: Path | None = Field(
        None, description="YAML file of in-context exemplars; null uses those packaged with f2f for the style."
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
    rank: Literal["vlm", "label"] = Field(
        "vlm",
        description="With several seeds, which clip wins: vlm asks the VLM, twice in opposite orders, which edited clip's "
        "frame achieves the edit while changing least of everything else (if the answers differ, label decides); "
        "label: the lowest label, then the earlier seed, without extra VLM calls (f2f.ranking).",
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


Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "bfloat16", "float16", "float32"]


class SpeedConfig(_Section):
    """Generator speed-ups (`f2f.backends.video.speedups`). All off is the plain diffusers path; only `cache` changes results."""

    fuse_qkv: bool = Field(False, description="One matmul for the query, key and value projections (same result to rounding).")
    attention: Literal["auto", "flash", "cudnn", "efficient", "math"] = Field(
        "auto", description="Scaled-dot-product attention kernel: auto lets PyTorch choose; cudnn and efficient need CUDA."
    )
    compile: Literal["off", "regional"] = Field(
        "off", description="regional: torch.compile each transformer block (one compile reused 42 times)."
    )
    quantize: Literal["none", "fp8"] = Field(
        "none", description="fp8: float8 weights and activations in the transformer's linear layers (torchao; CUDA, sm 8.9+)."
    )
    cache: Literal["off", "first_block", "pyramid", "mag", "taylorseer"] = Field(
        "off",
        description="Opt-in fast mode that reuses work across steps (approximate): first_block, pyramid (attention), mag "
        "(MagCache) or taylorseer (TaylorSeer); the families that take each: docs/backbones.md.",
    )
    cache_threshold: float = Field(
        0.05,
        gt=0,
        le=1,
        description="first_block: skip the other blocks while the first block's change stays below this; mag: skip a "
        "step while the error its magnitude ratios add up to stays below this.",
    )
    cache_ratios: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        (),
        description="mag: the checkpoint's magnitude ratios, one per step of a plain run (measured once: "
        "docs/performance.md). Interpolated to each request's video.num_inference_steps (re-enabled when the count "
        "changes), so a request may ask for any step count.",
    )
    cache_interval: int = Field(
        5,
        ge=1,
        le=100,
        description="taylorseer: after 3 steps, the blocks run 1 step in this many (1: all); the rest extrapolate",
    )

    @model_validator(mode="after")
    def _mag_has_its_ratios(self) -> SpeedConfig:
        if self.cache == "mag" and not self.cache_ratios:
            rule = "cache mag needs the checkpoint's magnitude ratios, one per step of a plain run (docs/performance.md)"
            raise InvalidConfig("cache_ratios", self.cache_ratios, rule)
        if self.cache != "mag" and self.cache_ratios:
            raise InvalidConfig("cache_ratios", self.cache_ratios, f"only cache mag uses them (cache is {self.cache})")
        return self


class ParallelConfig(_Section):
    """One video split over `cfg` x `ulysses` processes, one GPU each (`f2f.backends.video.parallel`)."""

    cfg: Literal[1, 2] = Field(1, description="2: the two halves of classifier-free guidance run on two GPUs.")
    ulysses: int = Field(
        1, ge=1, le=64, description="Split the video tokens over this many GPUs (Ulysses); it must divide the attention heads."
    )

    @property
    def world_size(self) -> int:
        return self.cfg * self.ulysses


class LoraConfig(_Section):
    """One LoRA file, loaded into the generator's transformer through diffusers and fused after load."""

    path: Path = Field(description="The LoRA's .safetensors file (diffusers, PEFT or the original trainers' key names).")
    scale: float = Field(1.0, gt=0, le=10, description="Its weight when fused (1.0: as trained).")
    target: Literal["transformer", "transformer_2"] = Field(
        "transformer",
        description="The transformer it fits; transformer_2: the low-noise expert of a two-expert model (Wan2.2-A14B).",
    )


class GeneratorConfig(_Section):
    """The image-to-video backend."""

    backend: Literal["diffusers"] = Field("diffusers", description="Video backend: a diffusers image-to-video pipeline.")
    family: str | None = Field(
        None,
        description="The checkpoint's family (cogvideox, wan, ltx; `f2f models list`); null reads it from the folder's "
        "model_index.json. Set, a folder of another family is refused.",
    )
    model_path: Path | None = Field(None, description="Local folder of the checkpoint (diffusers layout); never downloaded.")
    lora: tuple[LoraConfig, ...] = Field(
        (), description="LoRAs fused into the transformer after load, in order (e.g. a few-step distillation LoRA)."
    )
    device: Device = Field("auto", description="auto: cuda when available, else cpu.")
    dtype: DType = Field("auto", description="auto: bfloat16 on cuda, float32 on cpu.")
    vae_slicing: bool = Field(False, description="Decode the VAE one video at a time (less memory, same result).")
    vae_tiling: bool | Literal["auto"] = Field(
        False, description="Decode the VAE in tiles (less memory; may show seams); auto: only when untiled runs out of memory."
    )
    cpu_offload: bool = Field(
        False, description="Keep weights on the CPU and move each model to the GPU when used (slower, less GPU memory)."
    )
    max_batch_seeds: int = Field(
        1, ge=1, le=64, description="Seeds generated together in one batch; more seeds run in several batches."
    )
    speed: SpeedConfig = Field(default_factory=SpeedConfig, description="Speed-ups (all off: the plain diffusers path).")
    preview_every: int | None = Field(
        None,
        ge=1,
        description="Denoising steps between two approximate previews of a job that asked for them (`previews`); "
        "null: about 8 a run (every steps // 8 steps, at least 1). Nobody asks: none are made.",
    )
    parallel: ParallelConfig = Field(default_factory=ParallelConfig, description="One video over several GPUs.")

    @model_validator(mode="after")
    def _cache_every_rank_agrees_on(self) -> GeneratorConfig:
        # first_block decides per step from this rank's own activations: with the tokens split, ranks could decide
        # differently and one would wait forever in an all-to-all the other skipped. pyramid decides from the timestep,
        # the same on every rank; a CFG split gathers outside the blocks, so a skip on one half cannot hang the other.
        if self.speed.cache == "first_block" and self.parallel.ulysses > 1:
            rule = (
                f"cannot run with a token split (parallel.ulysses {self.parallel.ulysses}): each rank would decide from "
                "its own tokens and the ranks could disagree and hang; use cache pyramid (decided by the timestep), or "
                "ulysses 1"
            )
            raise InvalidConfig("speed.cache", "first_block", rule)
        return self


class VLMConfig(_Section):
    """The vision-language model that writes captions and selects frames."""

    backend: Literal["vllm", "transformers", "openai"] = Field(
        "vllm",
        description="vllm (production engine), transformers (CPU, small installs) or openai (any OpenAI-compatible endpoint).",
    )
    model_path: Path | None = Field(None, description="Local folder of the checkpoint (vllm, transformers); never downloaded.")
    device: Device = Field("auto", description="transformers backend: auto is cuda when available, else cpu.")
    dtype: DType = Field("auto", description="auto: bfloat16 on cuda, float32 on cpu.")
    min_pixels: int = Field(3136, ge=784, description="Fewest pixels an image is resized to before it becomes visual tokens.")
    max_pixels: int = Field(
        1_003_520,
        ge=784,
        description="Most pixels an image is resized to (bounds visual tokens: 28x28 pixels each, 32x32 on Qwen3-VL).",
    )
    max_model_len: int = Field(16384, ge=512, description="Context length in tokens; a longer prompt is an error that names it.")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vllm: share of GPU memory the engine may take.")
    enforce_eager: bool = Field(
        False, description="vllm: skip torch.compile and CUDA graphs; starts much faster, decodes slower (CPU, development)."
    )
    kv_cache_memory_gib: float | None = Field(
        None,
        gt=0,
        description="vllm: memory for the KV cache in GiB; null sizes it from gpu_memory_utilization "
        "(on a CPU, that share of the machine's free memory).",
    )
    tensor_parallel_size: int = Field(1, ge=1, le=16, description="vllm: GPUs the VLM is split across.")
    engine_stats: bool = Field(
        True,
        description="vllm: the engine records its statistics (requests running and waiting, KV cache use, tokens, "
        "latencies); in a Ray Serve replica they are exported as Ray metrics (ray_vllm_*, f2f.serving.metrics). "
        "Off saves their small cost per engine step.",
    )
    base_url: str | None = Field(None, description="openai: the endpoint, e.g. http://vllm:8000/v1.")
    model_name: str | None = Field(None, description="openai: the served model name; null asks the endpoint's /models.")
    api_key: SecretStr | None = Field(
        None, description="openai: bearer token for the endpoint, if it needs one (shown masked by `f2f config show`)."
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="openai: the environment variable that holds the token instead (e.g. set from a Kubernetes Secret).",
    )
    timeout_s: float = Field(120.0, gt=0, le=3600, description="openai: seconds to wait for one answer.")
    max_retries: int = Field(2, ge=0, le=10, description="openai: retries after a connection error, 408, 429 or 5xx.")

    @model_validator(mode="after")
    def _consistent(self) -> VLMConfig:
        if self.api_key is not None and self.api_key_env is not None:
            raise InvalidConfig("api_key_env", self.api_key_env, "give api_key or api_key_env, not both")
        if self.min_pixels > self.max_pixels:
            raise InvalidConfig("min_pixels", self.min_pixels, f"must not exceed max_pixels ({self.max_pixels})")
        if self.backend == "openai" and not self.base_url:
            raise InvalidConfig("base_url", self.base_url, "the openai backend needs the endpoint, e.g. http://vllm:8000/v1")
        return self


AlignMode = Literal["off", "auto", "always"]


class MaskConfig(_Section):
    """Masked edits (`f2f.masks`): how the area outside a caller's mask is kept.

    mode `latent`: while the video is denoised, the latents outside the mask (dilated by `dilate_px`, then
    brought onto the latent grid) are pulled toward the source's own latents, noised to the current step, with
    `strength` (1: replaced), so every frame keeps the source's background (blended latent diffusion,
    `f2f.backends.video.latent_masks`); a family or a split generator that cannot do that refuses the mask, naming it, and never
    falls back. mode
    `composite`: the video is generated as without a mask. Either way the result, the candidates, the collage and
    the video are composited onto the source with a `feather_px` ramp: beyond it the source's pixels are exact.
    """

    mode: Literal["latent", "composite"] = Field("latent", description="latent (kept while generating) or composite.")
    strength: float = Field(
        1.0,
        gt=0,
        le=1,
        description="mode latent: how hard the latents outside the mask are pulled to the source's at each step "
        "(1: replaced by them; less lets the edit reach further into the kept area).",
    )
    dilate_px: int = Field(8, ge=0, le=256, description="Canvas pixels the mask grows by before it reaches the latents.")
    feather_px: int = Field(8, ge=0, le=256, description="Width of the ramp between the edit and the kept source, pixels.")


class AlignConfig(_Section):
    """Camera-drift compensation (`f2f.align`): the chosen frame warped back onto the source's geometry.

    Default `auto`: the method asks the video model for a static camera (the caption prompt) and the VLM to avoid
    tiles with camera motion (the selection prompt), so a global shift, zoom or turn left in the chosen frame is
    drift, not the edit. auto warps only when the motion is within the bounds below and the warp lowers the error on
    the region that matches the source; anything else (noise frames of random-weight models, featureless images, an
    edit that changes everything) leaves the frame untouched and records why. An edit whose request is itself a
    camera move ("zoom in on the dog") should run with mode off.
    """

    mode: AlignMode = Field(
        "auto",
        description="off: never; auto: only when the motion is within bounds and the warp lowers the matching region's "
        "error by min_error_drop; always: whenever a motion within bounds is found, even if the error does not drop.",
    )
    max_shift_fraction: float = Field(
        0.1, gt=0, le=0.5, description="Largest shift of the image centre corrected, as a share of the width (x) and height (y)."
    )
    max_zoom: float = Field(
        1.25, ge=1.0, le=4.0, description="Largest zoom corrected: the scale must lie within [1/max_zoom, max_zoom]."
    )
    max_rotation_deg: float = Field(10.0, ge=0, le=90, description="Largest rotation corrected, in degrees either way.")
    min_inliers: int = Field(
        20, ge=4, le=10_000, description="Fewest feature matches that must agree on one motion (RANSAC inliers) to trust it."
    )
    min_error_drop: float = Field(
        0.25,
        ge=0,
        le=255,
        description="auto: the matching region's mean absolute error (grey levels 0..255) must drop by at least this much.",
    )
    work_px: int = Field(
        512, ge=64, le=4096, description="Features are found on copies whose longer side is at most this many pixels."
    )


class F2FConfig(_Section):
    """The whole configuration of an edit."""

    video: VideoConfig = Field(default_factory=VideoConfig, description="Video generation settings.")
    caption: CaptionConfig = Field(default_factory=CaptionConfig, description="Temporal caption settings.")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="Frame selection settings.")
    input: InputConfig = Field(default_factory=InputConfig, description="Input limits.")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig, description="Video backend.")
    vlm: VLMConfig = Field(default_factory=VLMConfig, description="VLM backend.")
    align: AlignConfig = Field(default_factory=AlignConfig, description="Camera-drift compensation of the result.")
    mask: MaskConfig = Field(default_factory=MaskConfig, description="How a caller's mask is kept (masked edits).")
    profile: str | None = Field(
        None, description="A profile of the model catalogue (`f2f models list`): its checkpoints and config values, under yours."
    )
    models_dir: Path | None = Field(
        None,
        description="Folder of the profile's staged checkpoints (must exist unless under cache_dir); tiny profiles default to "
        "cache_dir/tiny.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "f2f",
        description="Where f2f builds what it can build itself (tiny checkpoints).",
    )
    seed: int | None = Field(
        None, ge=0, lt=2**32, description="Seed of the first video; null draws one at random (it is reported in the result)."
    )
    num_seeds: int = Field(
        1, ge=1, le=64, description="Videos per edit, seeds seed, seed+1, ...; the best edit among them is returned."
    )

    @model_validator(mode="after")
    def _stride_leaves_a_candidate(self) -> F2FConfig:
        stride, frames = self.selection.candidate_stride, self.video.num_frames
        if frames is not None and stride >= frames:
            rule = f"must be smaller than video.num_frames ({frames}), or no frame after the source is a candidate"
            raise InvalidConfig("selection.candidate_stride", stride, rule)
        if self.selection.collage_max_pixels > self.vlm.max_pixels:
            rule = f"must not exceed vlm.max_pixels ({self.vlm.max_pixels}), or the VLM would shrink the collage and its labels"
            raise InvalidConfig("selection.collage_max_pixels", self.selection.collage_max_pixels, rule)
        return self


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as a nested mapping ({"video.num_frames": 9} -> {"video": {"num_frames": 9}}); None means not given."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def invalid_config_from(exc: ValidationError, origin: str) -> InvalidConfig:
    """The first pydantic error as an InvalidConfig naming the dotted field."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    raised = err.get("ctx", {}).get("error")
    if isinstance(raised, InvalidConfig):  # a model validator naming its own field
        return InvalidConfig(origin + ".".join([*loc, raised.field]), raised.value, raised.rule)
    rule = _unknown_key_rule(err["loc"]) if err["type"] == "extra_forbidden" else err["msg"]
    if isinstance(err.get("input"), bool) and err["type"] == "literal_error" and "'off'" in rule:
        rule += "; YAML reads a bare off, on, yes or no as false or true: write 'off' in quotes"
    return InvalidConfig(origin + (".".join(loc) or "config"), err.get("input"), rule)


def _unknown_key_rule(loc: tuple[str | int, ...]) -> str:
    """`unknown key`, with the closest real key (in the same section, else anywhere), else the section's keys."""
    parts: list[str] = []
    for part in loc:  # generator.lora.0.path is generator.lora[].path, as `describe` names it
        if isinstance(part, int):
            parts[-1] += "[]"
        else:
            parts.append(part)
    key = ".".join(parts)
    match = suggest_key(key)
    if match:
        return f"unknown key (did you mean {match}?)"
    parent = key.rpartition(".")[0]
    known = [doc.key.rpartition(".")[2] for doc in describe() if doc.key.rpartition(".")[0] == parent]
    return f"unknown key; known here: {', '.join(known)}"


def suggest_key(key: str) -> str | None:
    """The real dotted key that `key` most likely meant: in its own section first, else anywhere; None if none is close."""
    keys = [doc.key for doc in describe()]
    parent = key.rpartition(".")[0]
    return _closest(key, [k for k in keys if k.rpartition(".")[0] == parent], 0.6) or _closest(key, keys, 0.75)


def _closest(key: str, keys: list[str], cutoff: float) -> str | None:
    """Compared by the last dotted part: a key with a word that starts with it (`steps`: `num_inference_steps`), else
    difflib's closest at `cutoff` or better (a stricter one for keys of other sections)."""
    leaf = key.rpartition(".")[2].lower()
    by_leaf: dict[str, str] = {}
    for candidate in keys:
        by_leaf.setdefault(candidate.rpartition(".")[2], candidate)
    words = [k for k in by_leaf if len(leaf) >= 3 and any(w.startswith(leaf) for w in k.split("_"))]
    close = words or difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=cutoff)
    if not close:
        return None
    return by_leaf[max(close, key=lambda k: difflib.SequenceMatcher(None, leaf, k).ratio())]


# --- the schema as documentation (`f2f config show --describe`, `f2f config explain`) ---------------


@dataclass(frozen=True)
class FieldDoc:
    """One key of the config tree as the schema states it."""

    key: str  # dotted: generator.speed.cache; the fields of a list's entries: generator.lora[].path
    kind: str  # section, or the type: int, float | null, list of str, ...
    description: str
    default: Any = None  # `REQUIRED` when there is none; None for a section
    choices: tuple[Any, ...] = ()  # the allowed values, when they are a list
    limits: tuple[str, ...] = ()  # >= 16, <= 1000, matches ^...$


REQUIRED = "required"


def describe(model: type[BaseModel] = F2FConfig, prefix: str = "") -> list[FieldDoc]:
    """Every key under `model`, sections first then their fields, in the order the code declares them."""
    docs = []
    for name, info in model.model_fields.items():
        key = prefix + name
        section = _section_model(info.annotation)
        if section is not None:
            listed = get_origin(info.annotation) is tuple
            if listed:  # the list's own description; each entry's fields follow as key[].field
                docs.append(FieldDoc(key, f"list of {name} entries", info.description or "", info.get_default()))
            else:  # a section's docstring says more than its field's one line
                docs.append(FieldDoc(key, "section", inspect.getdoc(section) or info.description or ""))
            docs += describe(section, key + ("[]." if listed else "."))
            continue
        kind, choices = _type_text(info.annotation)
        default = REQUIRED if info.is_required() else info.get_default(call_default_factory=True)
        docs.append(FieldDoc(key, kind, info.description or "", default, choices, _limits(info.metadata)))
    return docs


def describe_text(docs: list[FieldDoc], config: F2FConfig | None = None) -> str:
    """`docs` as text: per key, its type, allowed values, limits and default (and its value in `config` where that
    differs), then its description."""
    blocks = []
    for doc in docs:
        facts = [doc.kind]
        if doc.choices:
            facts.append("one of " + ", ".join(_shown(c) for c in doc.choices))
        facts += doc.limits
        head = f"{doc.key}: {', '.join(facts)}"
        if doc.kind != "section":
            head += f"; default {_shown(doc.default)}"
            value = _value_at(config, doc.key) if config is not None and "[]" not in doc.key else doc.default
            if to_jsonable_python(value) != to_jsonable_python(doc.default):
                head += f" (here: {_shown(value)})"
        text = textwrap.fill(" ".join(doc.description.split()), 110, initial_indent="    ", subsequent_indent="    ")
        blocks.append(f"{head}\n{text}")
    return "\n".join(blocks) + "\n"


def _value_at(config: BaseModel, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _shown(value: Any) -> str:
    """A value as YAML writes it: null, true, [PNG, JPEG], a string bare."""
    value = to_jsonable_python(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return json.dumps(value)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, or the entries of a tuple of them); None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is tuple:
        return next(filter(None, (_section_model(a) for a in get_args(annotation) if a is not ...)), None)
    return None


_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", Path: "path", SecretStr: "secret", type(None): "null"}


def _type_text(annotation: Any) -> tuple[str, tuple[Any, ...]]:
    """The type as words (`int | null`, `list of 3 int`) and the allowed values when the type lists them."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(dict.fromkeys(_TYPE_NAMES[type(a)] for a in args)), args
    if origin in (Union, types.UnionType):
        parts = [_type_text(a) for a in args]
        kind = " | ".join(dict.fromkeys(text for text, _ in parts))
        if not any(choices for _, choices in parts):
            return kind, ()
        enumerable = {bool: (True, False), type(None): (None,)}
        return kind, tuple(v for a, (_, choices) in zip(args, parts, strict=True) for v in choices or enumerable.get(a, ()))
    if origin is tuple:
        inner = _type_text(args[0])[0]
        return (f"list of {inner}", ()) if args[-1] is ... else (f"list of {len(args)} {inner}", ())
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation))), ()


_LIMITS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}", "min_length": "{} or more entries", "pattern": "matches {}"}


def _limits(metadata: list[Any]) -> tuple[str, ...]:
    return tuple(
        text.format(getattr(m, attr)) for m in metadata for attr, text in _LIMITS.items() if getattr(m, attr, None) is not None
    )


def config_from_dict(data: dict[str, Any], origin: str = "") -> F2FConfig:
    """Validate a plain mapping into an F2FConfig; errors name the dotted field.

    With a `profile`, the profile's config values lie under `data`, and the
    model paths that `data` leaves empty point into the profile's models folder.
    The `video` fields left null are then the generator's defaults (`with_video_defaults`).
    """
    if data.get("profile") is not None:
        try:
            profile = catalogue.load_catalogue().profile(data["profile"])
        except InvalidConfig as exc:
            raise InvalidConfig(origin + exc.field, exc.value, exc.rule) from None
        data = _merge(profile.config, data)
    try:
        config = F2FConfig.model_validate(data)
        if config.profile:
            config = _with_profile_paths(config)
        return with_video_defaults(config)
    except ValidationError as exc:
        raise invalid_config_from(exc, origin) from None
    except InvalidConfig as exc:
        raise InvalidConfig(origin + exc.field, exc.value, exc.rule) from None


def with_video_defaults(config: F2FConfig) -> F2FConfig:
    """`config` with the null `video` fields (and `caption.style`) set to its generator's defaults.

    The generator's family is `generator.family`, else the profile's generator
    checkpoint's (the catalogue), else the one `generator.model_path`'s
    model_index.json names. A readable checkpoint folder also gives its own
    canvas and frame rules (`f2f.families.video_defaults`). With no
    generator configured, the fields stay null (nothing can generate anyway).
    """
    family = config.generator.family
    if family is None and config.profile:
        family = catalogue.load_catalogue().checkpoints_of(config.profile)["generator"].family
    defaults = video_defaults(family, config.generator.model_path)
    if defaults is None:
        return config
    family_name, values = defaults
    if config.caption.style is None:
        caption = config.caption.model_copy(update={"style": family_named(family_name).caption_style})
        config = config.model_copy(update={"caption": caption})
    asked = config.video.model_dump(exclude_none=True)
    try:
        video = VideoConfig.model_validate({**values, **asked})
    except ValidationError as exc:
        err = exc.errors()[0]
        raised = err.get("ctx", {}).get("error")
        if isinstance(raised, InvalidConfig):
            raise InvalidConfig(f"video.{raised.field}", raised.value, f"{raised.rule} ({family_name} family)") from None
        raise
    return config.model_copy(update={"video": video})._stride_leaves_a_candidate()


def _with_profile_paths(config: F2FConfig) -> F2FConfig:
    models = catalogue.load_catalogue()
    checkpoints = models.checkpoints_of(config.profile)
    models_dir = config.models_dir or (config.cache_dir / "tiny" if models.is_tiny(config.profile) else None)
    if models_dir is None:
        rule = f"profile {config.profile!r} needs the folder of its staged checkpoints (--models DIR; see `f2f models stage`)"
        raise InvalidConfig("models_dir", None, rule)
    sections = {}
    for role in ("generator", "vlm"):
        section = getattr(config, role)
        sections[role] = (
            section
            if section.model_path is not None
            else section.model_copy(update={"model_path": models_dir / checkpoints[role].dir})
        )
    loras = [ckpt for role, ckpt in checkpoints.items() if role.startswith("lora")]
    if loras and not config.generator.lora:  # the profile's LoRAs, unless the config names its own
        fused = tuple(
            LoraConfig(path=models_dir / ckpt.dir / part.file, target=part.target, scale=part.scale)
            for ckpt in loras
            for part in ckpt.lora
        )
        sections["generator"] = sections["generator"].model_copy(update={"lora": fused})
    return config.model_copy(update={"models_dir": models_dir, **sections})


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
