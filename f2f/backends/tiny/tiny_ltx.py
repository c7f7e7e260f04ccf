"""A tiny random-weight LTX-Video image-to-video checkpoint, built offline.

The same classes and folder layout as Lightricks/LTX-Video-0.9.1 in diffusers
format (`LTXPipeline` in model_index.json; `LTXImageToVideoPipeline` loads
it), so the real loader (`f2f.backends.video.i2v`) runs on it unchanged; only the
sizes shrink. Rules:

- the transformer (`LTXVideoTransformer3DModel`) takes and returns the VAE's
  latent channels (1x1x1 patches, as the real one); image conditioning is the
  clean first latent frame, not extra channels;
- the VAE (`AutoencoderKLLTXVideo`) compresses 32x in space (4x4 patches and
  three 2x blocks) and 8x in time, like the real one, and is timestep-aware
  (`timestep_conditioning`, as 0.9.1): the pipeline's `decode_timestep` and
  `decode_noise_scale` reach it;
- the scheduler is the real checkpoint's: FlowMatchEulerDiscreteScheduler with
  dynamic shifting from the sequence length (`SCHEDULER_CONFIG`);
- the text encoder is a tiny T5 and the tokenizer a Unigram T5 tokenizer built
  in memory (`f2f.backends.tiny.tiny_t5`), 128 tokens as the real one;
- the same seed gives byte-identical weight files; the caller's global torch
  RNG state is left as it was.

Random weights make noise, not video: only shapes, counts, determinism and the
plumbing are meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from f2f.backends.tiny.tiny_t5 import TEXT_DIM, t5_encoder, t5_tokenizer

LATENT_CHANNELS = 8
MAX_TEXT_TOKENS = 128  # LTX-Video's tokenizer model_max_length and the pipeline's max_sequence_length

# LTX-Video 0.9.x's scheduler_config.json (diffusers format).
SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 1024,
    "base_shift": 0.95,
    "invert_sigmas": False,
    "max_image_seq_len": 4096,
    "max_shift": 2.05,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.1,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


def make_tiny_ltx(out_dir: str | Path, *, seed: int = 0, heads: int = 2, layers: int = 1) -> Path:
    """Build and save a tiny LTX-Video I2V pipeline folder at `out_dir`; returns the folder.

    Any canvas whose sides are multiples of 32 works; `heads` (of 8) and
    `layers` size the transformer.
    """
    import torch
    from diffusers import LTXPipeline

    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = LTXPipeline(
            tokenizer=t5_tokenizer(MAX_TEXT_TOKENS),
            text_encoder=t5_encoder(TEXT_DIM),
            vae=_vae(),
            transformer=_transformer(heads, layers),
            scheduler=_scheduler(),
        )
    pipe.save_pretrained(out, safe_serialization=True)  # model_index.json names LTXPipeline, as the real repository
    return out


def _transformer(heads: int, layers: int) -> Any:
    """1x1x1 patches and the VAE's latent channels in and out, as LTX-Video's."""
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=heads,
        attention_head_dim=12,  # inner width a multiple of 6: the 3D RoPE splits it over (t, h, w) x (cos, sin)
        cross_attention_dim=heads * 12,
        num_layers=layers,
        caption_channels=TEXT_DIM,
    )


def _vae() -> Any:
    """8-channel blocks: 32x spatial (4x4 patches, three 2x blocks), 8x temporal; a timestep-aware decoder."""
    from diffusers import AutoencoderKLLTXVideo

    return AutoencoderKLLTXVideo(
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_block_out_channels=(8, 8, 8, 8),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        timestep_conditioning=True,
        patch_size=4,
        patch_size_t=1,
    )


def _scheduler() -> Any:
    """The real checkpoint's scheduler class and settings."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
