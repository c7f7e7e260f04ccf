"""The LTX-Video image-to-video family: diffusers' `LTXImageToVideoPipeline` (LTX-Video 0.9.x, 2B and 13B).

What LTX-Video does differently from `f2f.backends.video.i2v`'s shared path
(`FAMILY`), read from a checkpoint's configs before any weight loads:

- recognised by model_index.json's `LTXPipeline` (how Lightricks/LTX-Video-0.9.1
  is published) or `LTXConditionPipeline` (0.9.5 and later, e.g. the 0.9.7
  distilled); the same five components load into `LTXImageToVideoPipeline`,
  which conditions on the source as the clean first latent frame;
- canvas: free (no positional table), sides multiples of the VAE's spatial
  compression x the transformer's patch (32 x 1); the published resolution
  768x512 is the pixel budget;
- frames: the VAE compresses time 8x (`8k + 1` frames; measured on the tiny:
  9, 17, 25 come back exactly, 13 comes back as 9); transformers with temporal
  patches (`patch_size_t` > 1) are refused, since they would change that rule;
- the call: the timestep-aware VAE's `decode_timestep` 0.05 and
  `decode_noise_scale` 0.025 (diffusers' notes for LTX-Video 0.9.1 and later),
  and `frame_rate` = `video.fps` (it scales the temporal RoPE);
- one seed per pipeline call: with a timestep-aware VAE the pipeline draws
  the decode noise with `torch.randn(generator=...)`, which takes one
  generator, not a list (diffusers 0.42.1: TypeError), so
  `generator.max_batch_seeds` must be 1;
- `video.shift` is refused: the scheduler shifts the timesteps from each
  video's sequence length (`use_dynamic_shifting`, `mu` computed in the
  pipeline), so one fixed shift has nothing to replace;
- no split over several processes: diffusers 0.42.1's context-parallel plan
  for the LTX transformer was written for text to video. It splits the video
  tokens but not the per-token timesteps that image to video passes (the
  first frame's tokens are clean), so the ranks' modulation no longer matches
  their shard (a shape error, found by running it on two ranks; splitting the
  timesteps too fails further on). A split is refused at load, naming
  `generator.parallel`.
- a mask (`f2f.backends.video.latent_masks`): the pipeline denoises packed latents
  ([B, tokens, C], frame-major) whose frame 0 it holds at the source's image
  latent with timestep 0; that frame is left to it. The reference is the
  static source's VAE encoding, normalised as the decoder denormalises
  (latents mean, std and scaling factor) and packed like the latents. Noised
  flow-matching style at the scheduler's sigma. One seed per call, as always.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from f2f.backends.video.i2v import Family
from f2f.backends.video.latent_masks import MaskLatents
from f2f.config import VideoConfig
from f2f.families import FAMILIES, CheckpointSpec

if TYPE_CHECKING:
    import torch

DECODE_TIMESTEP, DECODE_NOISE_SCALE = 0.05, 0.025  # the timestep-aware VAE's settings (LTX-Video 0.9.1+)


def call_arguments(spec: CheckpointSpec, settings: VideoConfig) -> dict[str, Any]:
    """The pipeline call's LTX-Video arguments: the VAE's decode noise, and the frame rate the RoPE is scaled by."""
    return {"decode_timestep": DECODE_TIMESTEP, "decode_noise_scale": DECODE_NOISE_SCALE, "frame_rate": settings.fps}


def encode_reference(pipe: Any, video: torch.Tensor) -> torch.Tensor:
    """The static source video's latents [1, C, F', h, w], normalised as the pipeline's decode denormalises them."""
    latents = pipe.vae.encode(video).latent_dist.mode()
    return pipe._normalize_latents(latents, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor)


def latent_layout(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """[1, C, F', h, w] -> the pipeline's packed [1, tokens, C x patch volume]."""
    return pipe._pack_latents(latents, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)


FAMILY = Family(
    facts=FAMILIES["ltx"],
    call_arguments=call_arguments,
    one_seed_per_call=True,
    split=None,  # diffusers 0.42.1's LTX context-parallel plan does not fit image to video (see the docstring)
    speed=frozenset({"fuse_qkv", "attention", "compile", "quantize", "cache:mag", "cache:taylorseer"}),
    mask_latents=MaskLatents(encode=encode_reference, noise="flow", layout=latent_layout, first_frame_held=True),
)
