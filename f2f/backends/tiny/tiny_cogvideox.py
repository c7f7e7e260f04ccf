"""A tiny random-weight CogVideoX image-to-video checkpoint, built offline.

The same classes and folder layout as CogVideoX-5b-I2V (diffusers format), so
the real loader (`f2f.backends.video.i2v`) runs on it unchanged; only the sizes
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

`variant="cogvideox1.5"` builds the CogVideoX1.5-5B-I2V layout instead:
temporal patches (`patch_size_t` 2, a linear patch embedding without bias), the
`ofs` embedding, rotary embeddings only (a free canvas) over CogVideoX1.5's
300x300-latent RoPE table (`sample_height`/`sample_width`, as its config),
`sample_frames` 81; the VAE, text encoder, tokenizer and scheduler as above
(the scheduler settings are CogVideoX-5b-I2V's; the 1.5 repository's file was
not readable from here).

Random weights make noise, not video: only shapes, counts, determinism and the
plumbing are meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from f2f.backends.tiny.tiny_t5 import TEXT_DIM, t5_encoder, t5_tokenizer

SPATIAL_SCALE = 8  # 2 ** (len(block_out_channels) - 1)
TEMPORAL_SCALE = 4
LATENT_CHANNELS = 4
MAX_TEXT_TOKENS = 226  # as CogVideoX-5b-I2V: captions are not cut shorter than the real model cuts them
VARIANTS = ("cogvideox", "cogvideox1.5")
ROPE_TABLE_LATENTS = 300  # CogVideoX1.5-5B-I2V's sample_height and sample_width: the RoPE table it slices from

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
    out_dir: str | Path,
    *,
    seed: int = 0,
    height: int = 64,
    width: int = 96,
    heads: int = 2,
    layers: int = 1,
    variant: str = "cogvideox",
) -> Path:
    """Build and save a tiny CogVideoX I2V pipeline folder at `out_dir`; returns the folder.

    `height` and `width` must be multiples of 16 (the VAE's 8x times the
    transformer's 2x2 patches); they become the only canvas the model accepts.
    `heads` (of 16) and `layers` size the transformer (more heads for sequence
    parallelism over 4 processes). `variant`: "cogvideox" (5B-I2V) or
    "cogvideox1.5" (1.5-5B-I2V: any canvas; height and width then size only the
    VAE's tiles).
    """
    import torch
    from diffusers import CogVideoXImageToVideoPipeline

    if height % 16 or width % 16 or height < 16 or width < 16:
        raise ValueError(f"height and width must be positive multiples of 16 (got {width}x{height})")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = CogVideoXImageToVideoPipeline(
            tokenizer=t5_tokenizer(MAX_TEXT_TOKENS),
            text_encoder=t5_encoder(TEXT_DIM),
            vae=_vae(height, width),
            transformer=_transformer(height, width, heads, layers, variant),
            scheduler=_scheduler(),
        )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def _transformer(height: int, width: int, heads: int, layers: int, variant: str = "cogvideox") -> Any:
    """Heads of 16 (rotary needs head_dim/4 and 3*head_dim/8 even), I2V channels; the variant's layout."""
    from diffusers import CogVideoXTransformer3DModel

    if variant == "cogvideox1.5":
        layout: dict[str, Any] = {
            "sample_width": ROPE_TABLE_LATENTS,
            "sample_height": ROPE_TABLE_LATENTS,
            "sample_frames": 81,
            "patch_size_t": 2,
            "patch_bias": False,
            "ofs_embed_dim": 16,
            "use_learned_positional_embeddings": False,
        }
    else:
        layout = {
            "sample_width": width // SPATIAL_SCALE,
            "sample_height": height // SPATIAL_SCALE,
            "sample_frames": 49,
            "use_learned_positional_embeddings": True,
        }
    return CogVideoXTransformer3DModel(
        num_attention_heads=heads,
        attention_head_dim=16,
        in_channels=2 * LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        time_embed_dim=16,
        text_embed_dim=TEXT_DIM,
        num_layers=layers,
        patch_size=2,
        temporal_compression_ratio=TEMPORAL_SCALE,
        max_text_seq_length=MAX_TEXT_TOKENS,
        use_rotary_positional_embeddings=True,
        **layout,
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


def _scheduler() -> Any:
    """The real checkpoint's scheduler class and settings."""
    from diffusers import CogVideoXDDIMScheduler

    return CogVideoXDDIMScheduler(**SCHEDULER_CONFIG)
