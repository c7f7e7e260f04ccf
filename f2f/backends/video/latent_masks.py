"""Masked edits inside the generator (`mask.mode: latent`): blended latent diffusion over any family's pipeline.

Rules:

- the caller's mask is an "L" image of the canvas size: 255 where the edit may
  happen, 0 where the source must stay, soft values between (the checked
  request's, placed on the canvas: `f2f.canvas.Letterboxed.place_mask`).
- onto the latent grid: the mask (0..1) is dilated by `mask.dilate_px` canvas
  pixels (a square max filter), then max-pooled over each latent cell's
  pixels: a cell is as free as the freest pixel it covers. A cell's keep
  weight is `mask.strength x (1 - that)`; the same in every latent frame.
- the reference: the VAE encoding (the posterior's mode) of a video that is the
  source repeated over all `num_frames` frames, in the pipeline's own latent
  space and layout (each family's `MaskLatents`). A static video, not the
  first frame's latent repeated: the VAEs are causal in time, so latent frame 0
  encodes one frame and each later one a group of 4 or 8 frames; a repeated
  first-frame latent does not decode to the source.
- after every denoising step (`callback_on_step_end`: every pipeline goes on
  with the latents it returns) the latents become
  `keep x reference_t + (1 - keep) x latents`, where `reference_t` is the
  reference noised to the level the latents are now at, with a fixed noise per
  seed (drawn on the CPU from the seed, apart from the pipeline's generator):
  `scheduler.add_noise` at the next timestep (CogVideoX's DDIM and DPM
  schedulers), or `(1 - sigma) x reference + sigma x noise` at the scheduler's
  current sigma (the flow-matching schedulers of Wan and LTX-Video). After the
  last step: the clean reference itself. A multistep scheduler (Wan's UniPC)
  keeps its own history and its corrector starts from it, but the model sees
  the blended latents at every step, as in diffusers' inpainting pipelines.
- a family without `MaskLatents` (`keeps_latents` False in its facts),
  settings whose latents change length mid-way (ChronoEdit's temporal
  reasoning for fewer steps than all) and a split generator (its other ranks never receive one) get no mask: the request's
  check refuses it (`f2f.request.check_edit`).

torch is imported by the functions that need it, so the family modules can
import this one without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from f2f.config import MaskConfig, VideoConfig

if TYPE_CHECKING:
    import torch


def _unchanged(_pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    return latents


@dataclass(frozen=True)
class MaskLatents:
    """How one family's pipeline holds its latents, for a mask to keep the source's."""

    encode: Callable[[Any, torch.Tensor], torch.Tensor]  # (pipe, video [1, 3, F, H, W] in [-1, 1]) -> [1, C, F', h, w]
    noise: Literal["add_noise", "flow"]  # how the scheduler noises clean latents (see the module docstring)
    layout: Callable[[Any, torch.Tensor], torch.Tensor] = _unchanged  # [1, C, F', h, w] -> the pipeline's own layout
    first_frame_held: bool = False  # the pipeline holds latent frame 0 at the source itself (LTX-Video): not blended


def edit_weights(mask: Image.Image, dilate_px: int) -> torch.Tensor:
    """The mask as 0..1 weights [H, W] (1: free to edit), dilated by `dilate_px` pixels (a square max filter)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    edit = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]  # [1, 1, H, W]
    if dilate_px:
        size = 2 * dilate_px + 1  # separable: rows then columns (a square of side `size`)
        edit = F.max_pool2d(edit, (1, size), stride=1, padding=(0, dilate_px))
        edit = F.max_pool2d(edit, (size, 1), stride=1, padding=(dilate_px, 0))
    return edit[0, 0]


def keep_weights(edit: torch.Tensor, latent_shape: Sequence[int], strength: float) -> torch.Tensor:
    """Keep weights [1, 1, F', h, w] on the latent grid of `latent_shape` ([1, C, F', h, w]): strength x (1 - max-pooled edit)."""
    import torch.nn.functional as F

    frames, height, width = latent_shape[2:]
    free = F.adaptive_max_pool2d(edit[None, None], (height, width))  # [1, 1, h, w]
    return (strength * (1.0 - free))[:, :, None].expand(1, 1, frames, height, width).contiguous()


def static_video(pipe: Any, image: Image.Image, settings: VideoConfig) -> torch.Tensor:
    """The source repeated over all `num_frames` frames, as the pipelines preprocess images: [1, 3, F, H, W] in [-1, 1]."""
    frame = pipe.video_processor.preprocess(image, height=settings.height, width=settings.width)  # [1, 3, H, W]
    return frame[:, :, None].repeat(1, 1, settings.num_frames, 1, 1)


def seed_noise(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """One standard normal tensor of `shape` (batch 1 dropped) per seed, from a CPU generator: [len(seeds), ...]."""
    import torch

    return torch.stack([torch.randn(tuple(shape[1:]), generator=torch.Generator().manual_seed(seed)) for seed in seeds])


class Blend:
    """One job's masked generation: the clean reference and the keep weights (made once), a step for each batch of seeds."""

    def __init__(self, reference: torch.Tensor, keep: torch.Tensor, noise: Literal["add_noise", "flow"]) -> None:
        self.reference, self.keep, self.noise = reference, keep, noise

    @classmethod
    def prepare(
        cls, hooks: MaskLatents, pipe: Any, image: Image.Image, mask: Image.Image, settings: VideoConfig, config: MaskConfig
    ) -> Blend:
        """The reference latents of the static source and the keep weights, both in the pipeline's layout (batch 1)."""
        import torch

        video = static_video(pipe, image, settings).to(pipe._execution_device, pipe.vae.dtype)
        with torch.no_grad():
            clean = hooks.encode(pipe, video)  # [1, C, F', h, w]
        keep = keep_weights(edit_weights(mask, config.dilate_px), clean.shape, config.strength).to(clean.device, clean.dtype)
        if hooks.first_frame_held:
            keep[:, :, 0] = 0.0
        return cls(hooks.layout(pipe, clean), hooks.layout(pipe, keep), hooks.noise)

    def target(self, pipe: Any, i: int, noise: torch.Tensor) -> torch.Tensor:
        """The reference at the noise level of the latents after step `i` (the clean reference after the last step)."""
        scheduler = pipe.scheduler
        if i >= len(scheduler.timesteps) - 1:
            return self.reference
        if self.noise == "add_noise":
            return scheduler.add_noise(self.reference, noise, scheduler.timesteps[i + 1 : i + 2])
        sigma = float(scheduler.sigmas[scheduler.step_index])
        return (1.0 - sigma) * self.reference + sigma * noise

    def for_seeds(self, seeds: Sequence[int]) -> Callable[[Any, int, torch.Tensor], torch.Tensor]:
        """(pipe, step index, latents after the step) -> the latents blended with the reference, for these seeds."""
        noise = seed_noise(seeds, self.reference.shape).to(self.reference.device, self.reference.dtype)

        def blend(pipe: Any, i: int, latents: torch.Tensor) -> torch.Tensor:
            target = self.target(pipe, i, noise).to(latents.dtype)
            keep = self.keep.to(latents.dtype)
            return keep * target + (1.0 - keep) * latents

        return blend
