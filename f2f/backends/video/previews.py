"""Approximate previews of a video while it is denoised: the predicted last frame, from the latents, without the VAE.

Rules:

- what is previewed: the first seed's last latent frame of the current
  prediction of the clean video. Where the scheduler keeps that prediction
  (UniPC and the DPM-Solver++ multistep schedulers hold x0 as `model_outputs[-1]`
  when `predict_x0`: Wan and ChronoEdit) it is that; elsewhere (CogVideoX's
  DDIM and DPM, LTX-Video's flow-matching Euler keep no x0) it is the latents
  themselves: rebuilding x0 there would take the previous step's latents (a
  copy of every latent each step) and per-scheduler algebra, and the latents
  are noisy early and close to x0 in the last steps.
- how it becomes RGB: a per-checkpoint linear map (`PreviewMap`: a 3 x C
  matrix and a bias) from latent channels to RGB in [0, 1], fitted by least
  squares from the checkpoint's own VAE: `VIDEOS` static videos of random
  colour blocks (one block per `size_multiple` pixels, so each covers whole
  latent cells) are encoded as the mask path encodes a source
  (`MaskLatents.encode`, the pipeline's latent space), each latent cell
  averaged over its block, and the map solved (lightly ridge-regularised, so
  a VAE with more channels than colours still solves). No decode ever runs.
- caching: fitted once per checkpoint, the first time a job asks for
  previews, and kept beside the checkpoint as `f2f-preview-<key>.json` (key: a
  hash of the family and the VAE's config); a checkpoint folder that cannot
  be written keeps it in memory only.
- the image: the canvas's aspect, at the canvas size or smaller (longer side
  at most `MAX_SIDE`), bilinear from the latent grid. Previews are
  approximate (a linear map is not the VAE) and never change the video: the
  latents are only read.
- cost per preview: one C x h x w multiply-add of the last latent frame and
  a resize; the first one also pays the fit (or reads the cached map).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    import torch

    from f2f.backends.video.i2v import Family
    from f2f.families import CheckpointSpec

logger = logging.getLogger("f2f.backends")
MAX_SIDE = 256  # a preview's longer side at most (px)
VIDEOS, GRID = 4, 8  # the fit's static videos, each GRID x GRID colour blocks
RIDGE = 1e-4
PER_RUN = 8  # previews a run when `generator.preview_every` is null


@dataclass(frozen=True)
class PreviewMap:
    """Latent channels -> RGB in [0, 1]: `rgb = weights @ latent + bias` (weights [3][C], bias [3])."""

    weights: list[list[float]]
    bias: list[float]

    def to_rgb(self, latent: torch.Tensor) -> torch.Tensor:
        """[C, h, w] -> [3, h, w] in [0, 1]."""
        import torch

        weights = torch.tensor(self.weights, dtype=torch.float32, device=latent.device)
        bias = torch.tensor(self.bias, dtype=torch.float32, device=latent.device)
        return (torch.einsum("oc,chw->ohw", weights, latent.float()) + bias[:, None, None]).clamp(0.0, 1.0)


def cache_key(family: str, vae_config: dict[str, Any]) -> str:
    """The cached map's key: the family and the VAE's config (its weights come with it)."""
    text = json.dumps({"family": family, "vae": vae_config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def preview_map(pipe: Any, family: Family, spec: CheckpointSpec, folder: Path) -> PreviewMap:
    """The checkpoint's map: read from beside it, or fitted now and written there (kept in memory where it cannot be)."""
    path = folder / f"f2f-preview-{cache_key(family.name, dict(pipe.vae.config))}.json"
    try:
        return PreviewMap(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass  # not fitted yet (or unreadable): fitted below
    fitted = fit_map(pipe, family, spec)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # replicas fitting at once never read half a file
    try:
        partial.write_text(json.dumps({"weights": fitted.weights, "bias": fitted.bias}))
        partial.replace(path)
    except OSError as exc:
        logger.info("the preview map of %s stays in memory (%s)", folder, exc)
    return fitted


def fit_map(pipe: Any, family: Family, spec: CheckpointSpec) -> PreviewMap:
    """Least squares from the VAE's encodings of static colour-block videos (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    assert family.mask_latents is not None  # every family has one (`Family.mask_latents`)
    block, frames = spec.size_multiple, spec.frame_step + 1
    colors = torch.rand(VIDEOS, 3, GRID, GRID, generator=torch.Generator().manual_seed(0))  # [V, 3, G, G]
    inputs, targets = [], []
    for video_colors in colors:
        pixels = video_colors.repeat_interleave(block, 1).repeat_interleave(block, 2)  # [3, H, W]
        video = (pixels[None, :, None].expand(1, 3, frames, -1, -1) * 2.0 - 1.0).to(pipe._execution_device, pipe.vae.dtype)
        with torch.no_grad():
            latents = family.mask_latents.encode(pipe, video).float()  # [1, C, F', h, w]
        pooled = F.adaptive_avg_pool3d(latents, (latents.shape[2], GRID, GRID))[0]  # [C, F', G, G]
        channels = pooled.shape[0]
        inputs.append(pooled.permute(1, 2, 3, 0).reshape(-1, channels).cpu())
        targets.append(video_colors.permute(1, 2, 0).reshape(1, -1, 3).expand(pooled.shape[1], -1, -1).reshape(-1, 3))
    x = torch.cat(inputs).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # [N, C + 1]
    y = torch.cat(targets).double()  # [N, 3]
    solved = torch.linalg.solve(x.T @ x + RIDGE * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)  # [C + 1, 3]
    return PreviewMap(weights=solved[:-1].T.tolist(), bias=solved[-1].tolist())


def clean_prediction(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """The scheduler's x0 where it keeps one (the multistep solvers' `model_outputs[-1]` with `predict_x0`), else
    the latents (see the module docstring); in the pipeline's layout."""
    scheduler = pipe.scheduler
    outputs = getattr(scheduler, "model_outputs", None)
    if getattr(scheduler.config, "predict_x0", False) and outputs and outputs[-1] is not None:
        return outputs[-1]
    return latents


def _channels_first(_pipe: Any, latents: torch.Tensor, _size: tuple[int, int], _frames: int) -> torch.Tensor:
    return latents[0, :, -1]  # [B, C, F, h, w]


def _frames_first(_pipe: Any, latents: torch.Tensor, _size: tuple[int, int], _frames: int) -> torch.Tensor:
    return latents[0, -1]  # [B, F, C, h, w] (CogVideoX 1.5's padding frames are in front)


def _packed(pipe: Any, latents: torch.Tensor, size: tuple[int, int], frames: int) -> torch.Tensor:
    """LTX-Video's packed [B, tokens, C x patch volume], unpacked to [B, C, F', h, w]."""
    spatial, temporal = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
    (width, height), latent_frames = size, (frames - 1) // temporal + 1
    unpacked = pipe._unpack_latents(
        latents[:1],
        latent_frames,
        height // spatial,
        width // spatial,
        pipe.transformer_spatial_patch_size,
        pipe.transformer_temporal_patch_size,
    )
    return unpacked[0, :, -1]


# family -> (pipe, latents in its layout, canvas (w, h), num_frames) -> the first seed's last latent frame [C, h, w]
LAST_FRAME: dict[str, Callable[[Any, torch.Tensor, tuple[int, int], int], torch.Tensor]] = {
    "cogvideox": _frames_first,
    "wan": _channels_first,
    "chronoedit": _channels_first,
    "ltx": _packed,
}


def render(mapping: PreviewMap, family: str, pipe: Any, latents: torch.Tensor, size: tuple[int, int], frames: int) -> Image.Image:
    """The preview of the predicted last frame (`size`: the canvas), at the canvas's aspect (see the module docstring)."""
    import numpy as np

    last = LAST_FRAME[family](pipe, clean_prediction(pipe, latents), size, frames)
    rgb = (mapping.to_rgb(last) * 255.0).round().to("cpu").numpy().astype(np.uint8)  # [3, h, w]
    image = Image.fromarray(rgb.transpose(1, 2, 0), "RGB")
    return image.resize(preview_size(size), Image.Resampling.BILINEAR)


def preview_interval(configured: int | None, steps: int) -> int:
    """Steps between two previews: `generator.preview_every`, or (null) about `PER_RUN` a run of `steps` steps."""
    return configured or max(1, steps // PER_RUN)


def preview_size(canvas: tuple[int, int]) -> tuple[int, int]:
    """The canvas's size, or smaller at its aspect with the longer side `MAX_SIDE`."""
    width, height = canvas
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
