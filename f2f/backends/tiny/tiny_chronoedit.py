"""A tiny random-weight ChronoEdit checkpoint, built offline.

The same classes and folder layout as nvidia/ChronoEdit-14B-Diffusers
(`ChronoEditPipeline`: a `ChronoEditTransformer3DModel` in Wan2.1 I2V's
channel layout with CLIP image conditioning, Wan's VAE, UMT5, CLIP), so the
real loader (`f2f.backends.video.i2v` with `f2f.backends.video.chronoedit`)
runs on it unchanged; only the sizes shrink. The VAE, text and image parts
are `f2f.backends.tiny.tiny_wan`'s; the transformer keeps the real
`rope_temporal_skip_len` (8: the edit at latent frame 7, a 29-frame reasoning
clip). The scheduler is UniPC over flow sigmas, as ChronoEdit runs it. The same
seed gives byte-identical files; the caller's global torch RNG state is left
as it was. Random weights make noise, not edits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from f2f.backends.tiny import tiny_t5, tiny_wan

ROPE_TEMPORAL_SKIP = 8  # ChronoEdit-14B's rope_temporal_skip_len


def make_tiny_chronoedit(out_dir: str | Path, *, seed: int = 0, heads: int = tiny_wan.HEADS) -> Path:
    """Build and save a tiny ChronoEdit pipeline folder at `out_dir`; returns the folder."""
    import torch
    from diffusers import ChronoEditPipeline

    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = ChronoEditPipeline(
            tokenizer=tiny_t5.t5_tokenizer(tiny_wan.TEXT_TOKENS),
            text_encoder=tiny_t5.t5_encoder(tiny_wan.TEXT_DIM, umt5=True),
            image_encoder=tiny_wan._image_encoder(),
            image_processor=tiny_wan._image_processor(),
            transformer=_transformer(heads),
            vae=tiny_wan._vae(ti2v=False),
            scheduler=tiny_wan._scheduler(),
        )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def _transformer(heads: int) -> Any:
    """One block in Wan2.1 I2V's layout (noise + mask + image latents), with ChronoEdit's temporal RoPE skip."""
    from diffusers import ChronoEditTransformer3DModel

    return ChronoEditTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=tiny_wan.HEAD_DIM,
        in_channels=2 * tiny_wan.LATENT_CHANNELS + tiny_wan.TEMPORAL_SCALE,
        out_channels=tiny_wan.LATENT_CHANNELS,
        text_dim=tiny_wan.TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        image_dim=tiny_wan.IMAGE_DIM,
        added_kv_proj_dim=heads * tiny_wan.HEAD_DIM,
        rope_max_seq_len=1024,
        rope_temporal_skip_len=ROPE_TEMPORAL_SKIP,
    )
