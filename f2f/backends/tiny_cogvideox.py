"""A tiny random-weight CogVideoX image-to-video checkpoint, built offline.

The same classes and folder layout as CogVideoX-5b-I2V (diffusers format), so
the real loader (`f2f.backends.i2v`) runs on it unchanged; only the sizes
shrink. Rules:

- the transformer is the I2V layout: `in_channels` = 2 x the VAE's latent
  channels (noise latents + image latents), rotary AND learned positional
  embeddings, so the canvas is locked to `width x height` like 720x480 is for
  the real model (`sample_width = width // 8`, `sample_height = height // 8`);
- the VAE compresses 8x in space (four blocks) and 4x in time, like the real one;
- the scheduler is the real checkpoint's: CogVideoXDDIMScheduler, v-prediction,
  zero-SNR betas, trailing timesteps;
- the text encoder is a tiny T5 and the tokenizer a Unigram T5 tokenizer built
  from an in-memory vocabulary (letters and a few words): no file is downloaded;
- the same seed gives byte-identical weight files; the caller's global torch
  RNG state is left as it was.

Random weights make noise, not video: only shapes, counts, determinism and the
plumbing are meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from f2f.backends import tiny_t5

SPATIAL_SCALE = 8  # 2 ** (len(block_out_channels) - 1)
TEMPORAL_SCALE = 4
LATENT_CHANNELS = 4
TEXT_DIM = 32
MAX_TEXT_TOKENS = 226  # as CogVideoX-5b-I2V: captions are not cut shorter than the real model cuts them

# CogVideoX-5b-I2V's scheduler_config.json.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "rescale_betas_zero_snr": True,
    "snr_shift_scale": 1.0,
}


def make_tiny_cogvideox(
    out_dir: str | Path, *, seed: int = 0, height: int = 64, width: int = 96, heads: int = 2, layers: int = 1
) -> Path:
    """Build and save a tiny CogVideoX I2V pipeline folder at `out_dir`; returns the folder.

    `height` and `width` must be multiples of 16 (the VAE's 8x times the
    transformer's 2x2 patches); they become the only canvas the model accepts.
    `heads` (of 16) and `layers` size the transformer (more heads for sequence
    parallelism over 4 processes).
    """
    import torch
    from diffusers import CogVideoXImageToVideoPipeline

    if height % 16 or width % 16 or height < 16 or width < 16:
        raise ValueError(f"height and width must be positive multiples of 16 (got {width}x{height})")
    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = CogVideoXImageToVideoPipeline(
            tokenizer=_tokenizer(),
            text_encoder=_text_encoder(),
            vae=_vae(height, width),
            transformer=_transformer(height, width, heads, layers),
            scheduler=_scheduler(),
        )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def _transformer(height: int, width: int, heads: int, layers: int) -> Any:
    """Heads of 16 (rotary needs head_dim/4 and 3*head_dim/8 even), I2V channels."""
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=16,
        in_channels=2 * LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        time_embed_dim=16,
        text_embed_dim=TEXT_DIM,
        num_layers=layers,
        sample_width=width // SPATIAL_SCALE,
        sample_height=height // SPATIAL_SCALE,
        sample_frames=49,
        patch_size=2,
        temporal_compression_ratio=TEMPORAL_SCALE,
        max_text_seq_length=MAX_TEXT_TOKENS,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    )


def _vae(height: int, width: int) -> Any:
    """Four 8-channel blocks: 8x spatial, 4x temporal compression, as the real VAE.

    The VAE's sample size only sets its default tiles (half of it) for
    `enable_tiling`. The real 720x480 gives 360x240 tiles whose overlapping
    steps (288, 200 pixels) are multiples of 8; a tiny canvas with tiles of
    half its size would step at 38x26 pixels and break diffusers' tiled
    encode. Tiles of 5/6 x 3/4 of the canvas (80x48 for 96x64) step at
    multiples of 8 again, so the tiling switch runs on the tiny model.
    """
    from diffusers import AutoencoderKLCogVideoX

    return AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=TEMPORAL_SCALE,
        sample_height=height * 3 // 2,  # tiling uses tiles of half this size: see `_vae`'s docstring
        sample_width=width * 5 // 3,
        scaling_factor=0.7,
    )


def _text_encoder() -> Any:
    """A one-layer T5 encoder whose vocabulary matches the tokenizer (pieces + extra ids)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=tiny_t5.vocab_size(), d_model=TEXT_DIM, **tiny_t5.ENCODER_SIZES)).eval()


def _tokenizer() -> Any:
    """The in-memory T5 tokenizer, as long as the transformer's text."""
    return tiny_t5.tokenizer(MAX_TEXT_TOKENS)


def _scheduler() -> Any:
    """The real checkpoint's scheduler class and settings."""
    from diffusers import CogVideoXDDIMScheduler

    return CogVideoXDDIMScheduler(**SCHEDULER_CONFIG)
