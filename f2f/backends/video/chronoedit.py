"""The ChronoEdit family: diffusers' `ChronoEditPipeline` (NVIDIA ChronoEdit-14B, Wan2.1-I2V-14B tuned to edit).

ChronoEdit carries an image to its edit through time: the source is the
first frame, the edit the last. What it does differently from
`f2f.backends.video.i2v`'s shared path (`FAMILY`), read from a checkpoint's
configs before any weight loads (`f2f.families`):

- layout: Wan2.1 I2V's (noise + 4 mask + image latents, a CLIP image encoder),
  one transformer; a folder without any of the pipeline's parts is refused,
  naming them.
- canvas: free, sides multiples of 16; the published area 1280x720 is the
  pixel budget.
- frames (`check`): without temporal reasoning the pipeline makes 5 frames (two
  latent frames: the source, then four frames ending at the edit), whatever it
  is asked, so `video.num_frames` must be 5. With temporal reasoning it denoises
  a clip of reasoning frames for the first `num_temporal_reasoning_steps`
  steps, then keeps the first and last latent frames. The transformer's RoPE
  puts the edit at latent frame `rope_temporal_skip_len - 1` (7), so the
  reasoning clip is always `4 x 7 + 1` = 29 frames: reasoning for every step
  returns that whole clip (`num_frames` 29: the editing trajectory, which the
  selection stage reads as any clip), for fewer steps the source and the edit
  (`num_frames` 5). More reasoning steps than steps, reasoning for no step, or
  reasoning steps without reasoning are refused, naming the field.
- the call: the text length, the two reasoning arguments, and the 29-frame
  clip as `num_frames` when reasoning.
- the scheduler (`set_shift`): always UniPC over flow sigmas at `video.shift`
  (null: the checkpoint's), as ChronoEdit's own inference script sets it. The
  pipeline's reasoning step trims UniPC's history (`model_outputs`,
  `last_sample`), which FlowMatchEulerDiscreteScheduler does not have
  (diffusers issue 13620), so a checkpoint that ships that scheduler is run
  with UniPC from its config.
- LoRAs: Wan's (`WanLoraLoaderMixin`), e.g. its 8-step distillation LoRA.
- a mask (`f2f.backends.video.latent_masks`): the latents are Wan's
  ([B, C, F', h, w], normalised by the VAE's mean and std), so Wan's
  reference; the request's check refuses one with reasoning for fewer steps
  than all, where the latents change length mid-way (`f2f.request`).
- no split over several processes: diffusers 0.42.1's context-parallel plan for
  this transformer was not run here on two ranks, so it is refused at load
  (`generator.parallel`) rather than offered untested.
"""

from __future__ import annotations

from typing import Any

from f2f.backends.video import wan
from f2f.backends.video.i2v import Family
from f2f.backends.video.latent_masks import MaskLatents
from f2f.config import VideoConfig
from f2f.errors import InvalidConfig
from f2f.families import FAMILIES, CheckpointSpec

EDIT_FRAMES = 5  # the source and the edit: two latent frames


def check(family: str, spec: CheckpointSpec, settings: VideoConfig) -> None:
    """InvalidConfig naming the `video` field whose value ChronoEdit cannot make (see the module docstring)."""
    steps, reasoning = settings.num_temporal_reasoning_steps or 0, bool(settings.enable_temporal_reasoning)
    clip = spec.options["reasoning_frames"]
    if not reasoning and steps:
        rule = "reasoning steps need enable_temporal_reasoning: true (without it, set 0)"
        raise InvalidConfig("video.num_temporal_reasoning_steps", steps, rule)
    if reasoning and not 1 <= steps <= settings.num_inference_steps:
        rule = f"with temporal reasoning, between 1 and video.num_inference_steps ({settings.num_inference_steps})"
        raise InvalidConfig("video.num_temporal_reasoning_steps", steps, rule)
    whole = reasoning and steps == settings.num_inference_steps
    frames = clip if whole else EDIT_FRAMES
    if settings.num_frames != frames:
        why = (
            f"temporal reasoning for every step returns the whole {clip}-frame reasoning clip"
            if whole
            else f"{family} returns {EDIT_FRAMES} frames (the source and the edit)"
            + (" when temporal reasoning stops before the last step" if reasoning else " without temporal reasoning")
        )
        raise InvalidConfig("video.num_frames", settings.num_frames, f"must be {frames}: {why}")


def call_arguments(spec: CheckpointSpec, settings: VideoConfig) -> dict[str, Any]:
    """The text length and the reasoning arguments; reasoning: the clip it denoises as `num_frames`."""
    arguments: dict[str, Any] = {
        "max_sequence_length": spec.options["text_tokens"],
        "enable_temporal_reasoning": bool(settings.enable_temporal_reasoning),
        "num_temporal_reasoning_steps": settings.num_temporal_reasoning_steps or 0,
    }
    if settings.enable_temporal_reasoning:
        arguments["num_frames"] = spec.options["reasoning_frames"]
    return arguments


def set_shift(pipe: Any, shift: float | None) -> None:
    """UniPC over flow sigmas at `shift` (None: the checkpoint's), whatever scheduler the checkpoint ships.

    The checkpoint's scheduler is kept on the pipeline at the first call, so
    every video starts from it and a shift never outlives its request.
    """
    from diffusers import UniPCMultistepScheduler

    checkpoint = pipe.__dict__.setdefault("_f2f_checkpoint_scheduler", pipe.scheduler)
    config = checkpoint.config
    own = config.get("flow_shift", config.get("shift", 1.0))
    if shift is None and isinstance(checkpoint, UniPCMultistepScheduler):
        pipe.scheduler = checkpoint
        return
    flow = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": own if shift is None else shift}
    pipe.scheduler = UniPCMultistepScheduler.from_config(config, **flow)


FAMILY = Family(
    facts=FAMILIES["chronoedit"],
    call_arguments=call_arguments,
    image_per_prompt=False,
    set_shift=set_shift,
    split=None,  # not run on two ranks here (see the module docstring)
    # no step cache: its pipeline runs the guidance halves as two calls outside diffusers' cache contexts (a cache
    # would mix them), its block copy is not in the caches' block registry, and temporal reasoning cuts the clip mid-way
    speed=frozenset({"fuse_qkv", "attention", "compile", "quantize"}),
    requires=("ftfy",),
    mask_latents=MaskLatents(encode=wan.encode_reference, noise="flow"),
    check=check,
)
