"""The CogVideoX image-to-video family: diffusers' `CogVideoXImageToVideoPipeline`.

CogVideoX-5B-I2V (the paper's default) and CogVideoX1.5-5B-I2V.

Everything else a video needs (the worker thread, batches, progress, cancel,
memory switches, out-of-memory errors) is `f2f.backends.video.i2v`'s; this module
says what CogVideoX does differently (`FAMILY`). What a checkpoint allows is
read from its configs before any weight loads:

- canvas: a transformer with learned positional embeddings (CogVideoX-5b-I2V)
  generates only `sample_width*s x sample_height*s` (s = the VAE's spatial
  scale, 8): 720x480 for the real model. Without them, any size that is a
  multiple of `s * patch_size` (16). CogVideoX 1.5 (temporal patches,
  `patch_size_t`) has none: its `sample_height`/`sample_width` (300 latents)
  are the RoPE table the pipeline slices from, not a training size, so its
  native area is the model card's 1360x768 (a pixel budget, not a size). A
  side longer than the table (2400 pixels) is not refused here.
- frames: the VAE compresses time 4x and decodes latent frames in pairs after a
  first group of three, so only an odd number of latent frames decodes to
  exactly `4 * (latents - 1) + 1` frames: counts `8k + 1` (9, 17, ..., 49).
  CogVideoX 1.5's temporal patches (`patch_size_t`) pad the latents inside the
  pipeline and drop the padding before decoding, so they do not change this
  (measured on the tiny 1.5 layout: 9, 17, 25 and 33 frames come back exactly;
  13 comes back as 16).
- the call: no dynamic CFG, and the T5 sequence length the transformer takes.
- a split over several processes: the project's own CFG-parallel x Ulysses
  (`f2f.backends.video.parallel`), with rank 0 alone encoding and decoding.
- a mask (`f2f.backends.video.latent_masks`): the denoised latents are the video itself
  ([B, F, C, h, w]; the image latents enter on the channel axis, apart), so
  the reference is the static source's VAE encoding times the VAE's scaling
  factor (what `decode_latents` divides by), frames first; CogVideoX 1.5's
  padding latent frames (at the start, dropped before decoding) repeat its
  first frame. Noised by the DDIM/DPM scheduler's own `add_noise`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from f2f.backends.video.i2v import Family
from f2f.backends.video.latent_masks import MaskLatents
from f2f.config import VideoConfig
from f2f.families import FAMILIES, CheckpointSpec

if TYPE_CHECKING:
    import torch

    from f2f.backends.video.parallel import ParallelGroups


def call_arguments(spec: CheckpointSpec, settings: VideoConfig) -> dict[str, Any]:
    """The pipeline call's CogVideoX arguments: constant guidance, the transformer's T5 length."""
    return {"use_dynamic_cfg": False, "max_sequence_length": spec.options["max_text_seq_length"]}


def split(pipe: Any, groups: ParallelGroups) -> None:
    """One video over the ranks: the transformer split (CFG x Ulysses); prompt and image encoded on rank 0."""
    from f2f.backends.video.parallel import encode_on_rank_0, parallelize_transformer

    parallelize_transformer(pipe.transformer, groups)
    encode_on_rank_0(pipe)


def encode_reference(pipe: Any, video: torch.Tensor) -> torch.Tensor:
    """The static source video's latents [1, C, F', h, w] in the space the pipeline denoises (x the VAE's scaling factor)."""
    return pipe.vae.encode(video).latent_dist.mode() * pipe.vae_scaling_factor_image


def latent_layout(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """[1, C, F', h, w] -> the pipeline's [1, F, C, h, w], with CogVideoX 1.5's padding frames (copies of frame 0) in front."""
    import torch

    frames = latents.permute(0, 2, 1, 3, 4)
    patch_t = pipe.transformer.config.patch_size_t
    pad = (patch_t - frames.shape[1] % patch_t) % patch_t if patch_t else 0
    return torch.cat([frames[:, :1].expand(-1, pad, -1, -1, -1), frames], dim=1)


FAMILY = Family(
    facts=FAMILIES["cogvideox"],
    call_arguments=call_arguments,
    split=split,
    mask_latents=MaskLatents(encode=encode_reference, noise="add_noise", layout=latent_layout),
)
