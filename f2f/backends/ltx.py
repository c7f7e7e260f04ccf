"""The LTX-Video image-to-video family: diffusers' `LTXImageToVideoPipeline` (LTX-Video 0.9.x, 2B and 13B).

What LTX-Video does differently from `f2f.backends.i2v`'s shared path
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
- a mask (`f2f.backends.masks`): the pipeline denoises packed latents
  ([B, tokens, C], frame-major) whose frame 0 it holds at the source's image
  latent with timestep 0; that frame is left to it. The reference is the
  static source's VAE encoding, normalised as the decoder denormalises
  (latents mean, std and scaling factor) and packed like the latents. Noised
  flow-matching style at the scheduler's sigma. One seed per call, as always.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from f2f.backends.i2v import CheckpointSpec, Family, read_json
from f2f.backends.masks import MaskLatents
from f2f.config import VideoConfig
from f2f.errors import InvalidConfig

if TYPE_CHECKING:
    import torch

PIPELINE_CLASS = "LTXImageToVideoPipeline"
INDEX_CLASSES = ("LTXPipeline", "LTXConditionPipeline")  # how LTX-Video 0.9.x checkpoints name themselves
NATIVE_CANVAS = (768, 512)  # LTX-Video's published resolution (its pixel budget here, not a size)
DECODE_TIMESTEP, DECODE_NOISE_SCALE = 0.05, 0.025  # the timestep-aware VAE's settings (LTX-Video 0.9.1+)
_FIELD = "generator.model_path"


def inspect(path: Path, index: dict[str, Any]) -> CheckpointSpec:
    """The rules of an LTX-Video checkpoint folder; InvalidConfig(generator.model_path) if it is not one.

    Rules: transformer/ and vae/ have config.json; the transformer takes and
    returns the VAE's latent channels (LTX conditions on the first latent
    frame, not on extra channels) in one-frame patches.
    """
    transformer, vae = read_json(path, "transformer/config.json"), read_json(path, "vae/config.json")
    latent = vae.get("latent_channels", 128)
    if transformer.get("in_channels") != latent or transformer.get("out_channels") != latent:
        rule = (
            f"{path.name}: the transformer takes in_channels {transformer.get('in_channels')} and returns out_channels "
            f"{transformer.get('out_channels')}, expected {latent} and {latent} (the VAE's latent channels): not an "
            "LTX-Video transformer and VAE pair"
        )
        raise InvalidConfig(_FIELD, str(path), rule)
    if transformer.get("patch_size_t", 1) != 1:
        patch = transformer.get("patch_size_t")
        rule = f"{path.name}: transformer patch_size_t {patch}; f2f knows LTX-Video with 1-frame patches"
        raise InvalidConfig(_FIELD, str(path), rule)
    return _spec(path.name, transformer, vae)


def _spec(name: str, transformer: dict[str, Any], vae: dict[str, Any]) -> CheckpointSpec:
    """Canvas and frame rules from the VAE's compression (as AutoencoderKLLTXVideo computes it) and the patch size."""
    scaling = sum(bool(s) for s in vae.get("spatio_temporal_scaling", (True, True, True, False)))
    spatial = vae.get("spatial_compression_ratio") or vae.get("patch_size", 4) * 2**scaling
    temporal = vae.get("temporal_compression_ratio") or vae.get("patch_size_t", 1) * 2**scaling
    return CheckpointSpec(
        name=name,
        canvas_size=NATIVE_CANVAS,
        fixed_canvas=False,
        size_multiple=int(spatial) * transformer.get("patch_size", 1),
        frame_step=int(temporal),
    )


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


# LTX-Video 0.9.1's published settings (diffusers' LTX-Video example and notes): 768x512, 161 frames, 50 steps,
# guidance 3.0 (the pipeline's default), written at 24 fps. The distilled profile sets its own (8 steps, guidance 1.0).
DEFAULTS = {
    "max_canvas_pixels": NATIVE_CANVAS[0] * NATIVE_CANVAS[1],
    "size_multiple": 32,
    "frame_step": 8,
    "num_frames": 161,
    "num_inference_steps": 50,
    "guidance_scale": 3.0,
    "fps": 24,
}

FAMILY = Family(
    name="ltx",
    pipeline_class=PIPELINE_CLASS,
    index_classes=INDEX_CLASSES,
    inspect=inspect,
    defaults=DEFAULTS,
    call_arguments=call_arguments,
    one_seed_per_call=True,
    split=None,  # diffusers 0.42.1's LTX context-parallel plan does not fit image to video (see the docstring)
    speed=frozenset({"fuse_qkv", "attention", "compile", "quantize"}),  # the step caches are CogVideoX's only
    mask_latents=MaskLatents(encode=encode_reference, noise="flow", layout=latent_layout, first_frame_held=True),
)
