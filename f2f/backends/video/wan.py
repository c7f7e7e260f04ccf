"""The Wan image-to-video family: diffusers' `WanImageToVideoPipeline` (Wan2.1 I2V, Wan2.2 I2V-A14B, Wan2.2 TI2V-5B).

Everything else a video needs is `f2f.backends.video.i2v`'s; this module says what
Wan does differently (`FAMILY`). What a checkpoint allows is read from its
configs before any weight loads:

- layout: Wan2.1 I2V and Wan2.2 I2V-A14B concatenate noise latents, a 4-channel
  first-frame mask (one channel per frame of a latent frame) and the image
  latents, so the transformer takes `2 z + t` channels (z: the VAE's latent
  channels, t: its temporal scale; 36 for the real ones). Wan2.2 TI2V-5B
  (`expand_timesteps` in model_index.json, which names `WanPipeline`: it also
  makes text-to-video) writes the image latents over the first latent frame,
  so it takes `z` channels (48). A transformer of `z` channels without
  `expand_timesteps` is text-to-video and is refused.
- two experts (Wan2.2 A14B): `transformer_2` and `boundary_ratio` in
  model_index.json, both or neither; `transformer` denoises the steps with
  t >= boundary_ratio x 1000, `transformer_2` the rest.
- canvas: free. Width and height are multiples of the VAE's spatial scale x
  the patch size (8 x 2 = 16; TI2V-5B's 16x VAE: 32). The configs do not
  record the resolution a checkpoint was trained at, so its native area is a
  per-variant default: 832x480 (the 480p area; Wan2.1-I2V-480P, Wan2.2-A14B at
  480p) for the 2.1 / A14B layout, 1280x704 (TI2V-5B's 720p area) for TI2V; a
  720p profile sets its own `max_canvas_pixels`.
- frames: the VAE compresses time 4x, so clips have 4k+1 frames (81).
- the call: one image for the whole batch (`image_per_prompt=False`: the
  pipeline encodes one image and repeats it per seed; a list would be read as
  a batch of images and multiply the CLIP embeddings), the text length, and
  for two experts the second expert's guidance, the same as the first's.
- shift: the scheduler's timestep shift (UniPC `flow_shift`, FlowMatch
  `shift`), `video.shift`, or the checkpoint's own when null.
- a split over several processes: diffusers' native context parallelism
  (Ulysses) on both experts, rank 0 alone encoding the prompt and the image;
  its shards are equal, so each frame's video tokens must divide by the ranks
  (`split_divides_tokens`; on two CPU ranks it gives one process's frames bit
  for bit, tests/models/test_context_parallel.py). CFG-parallel is not
  offered (diffusers runs the two guidance passes one after the other).
- a mask (`f2f.backends.video.latent_masks`): the denoised latents are the video
  ([B, C, F, h, w]; the image enters as condition channels and a frame mask,
  or for TI2V as latent frame 0, which the pipeline writes over at the end),
  so the reference is the static source's VAE encoding, normalised as the
  pipeline normalises its condition (`(z - latents_mean) / latents_std`).
  Noised flow-matching style at the scheduler's sigma (UniPC's flow sigmas,
  or FlowMatch's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from f2f.backends.video.i2v import Family, context_parallel
from f2f.backends.video.latent_masks import MaskLatents
from f2f.config import VideoConfig
from f2f.errors import InvalidConfig
from f2f.families import FAMILIES, CheckpointSpec

if TYPE_CHECKING:
    import torch


def call_arguments(spec: CheckpointSpec, settings: VideoConfig) -> dict[str, Any]:
    """The text length; two experts: the low-noise expert's guidance, the same as the high-noise one's.

    Wan2.2-I2V-A14B publishes one guidance pair of equal halves (3.5, 3.5), and
    diffusers defaults `guidance_scale_2` to `guidance_scale`; it is passed
    explicitly so the call says what runs.
    """
    arguments: dict[str, Any] = {"max_sequence_length": spec.options["text_tokens"]}
    if spec.options["two_experts"]:
        arguments["guidance_scale_2"] = settings.guidance_scale
    return arguments


def set_shift(pipe: Any, shift: float | None) -> None:
    """The scheduler with timestep shift `shift` (None: the checkpoint's), its other settings the checkpoint's.

    The checkpoint's scheduler is kept on the pipeline at the first call, so
    every video starts from it and a shift never outlives its request.
    """
    checkpoint = pipe.__dict__.setdefault("_f2f_checkpoint_scheduler", pipe.scheduler)
    if shift is None:
        pipe.scheduler = checkpoint
        return
    config = checkpoint.config
    key = "flow_shift" if "flow_shift" in config else "shift" if "shift" in config else None
    if key is None:
        raise InvalidConfig("video.shift", shift, f"the checkpoint's {type(checkpoint).__name__} has no timestep shift")
    pipe.scheduler = type(checkpoint).from_config(config, **{key: shift})


def encode_reference(pipe: Any, video: torch.Tensor) -> torch.Tensor:
    """The static source video's latents [1, C, F', h, w], normalised as the pipeline normalises its condition latents."""
    import torch

    config = pipe.vae.config
    latents = pipe.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    inverse_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    return (latents - mean) * inverse_std


FAMILY = Family(
    facts=FAMILIES["wan"],
    call_arguments=call_arguments,
    image_per_prompt=False,
    set_shift=set_shift,
    split=context_parallel,
    split_divides_tokens=True,
    split_axes=frozenset({"ulysses"}),
    speed=frozenset({"fuse_qkv", "attention", "compile", "quantize", "cache:mag", "cache:taylorseer"}),
    requires=("ftfy",),
    mask_latents=MaskLatents(encode=encode_reference, noise="flow"),
)
