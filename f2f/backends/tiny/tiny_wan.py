"""Tiny random-weight Wan image-to-video checkpoints (and a LoRA for them), built offline.

The same classes and folder layout as the real Diffusers checkpoints, so the
real loader (`f2f.backends.video.i2v` with `f2f.backends.video.wan`) runs on them
unchanged; only the sizes shrink. Variants:

- `wan2.1` (Wan2.1-I2V-14B-480P/720P-Diffusers): one transformer with CLIP
  image conditioning (`image_dim`, `added_kv_proj_dim`), `image_encoder/`
  (CLIPVisionModel) and `image_processor/`; in_channels = noise latents + 4
  mask channels + image latents;
- `wan2.2` (Wan2.2-I2V-A14B-Diffusers): two experts, `transformer` (high noise)
  and `transformer_2` (low noise), switched at `boundary_ratio` 0.9; no image
  encoder; the same channel layout;
- `wan2.2-ti2v` (Wan2.2-TI2V-5B-Diffusers): `WanPipeline` in its model_index,
  `expand_timesteps`, a 16x residual VAE that patchifies 2x2; the image latents
  replace the first latent frame, so in_channels = the latent channels.

The VAE compresses 8x (16x for TI2V) in space and 4x in time like the real
ones; the scheduler is the real checkpoints' UniPC flow-matching config; the
text encoder is a tiny UMT5 and the tokenizer the in-memory T5 one
(`f2f.backends.tiny.tiny_t5`). The same seed gives byte-identical files; the
caller's global torch RNG state is left as it was. Random weights make noise,
not video: only shapes, counts, determinism and the plumbing are meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from f2f.backends.tiny import tiny_t5

Variant = Literal["wan2.1", "wan2.2", "wan2.2-ti2v"]
VARIANTS: tuple[str, ...] = ("wan2.1", "wan2.2", "wan2.2-ti2v")
LATENT_CHANNELS = 4
TEMPORAL_SCALE = 4  # also the mask channels of the 2.1 / A14B layout (one per frame of a latent frame)
TEXT_DIM = tiny_t5.TEXT_DIM
TEXT_TOKENS = 512  # the Wan trainers' text length (the pipeline's max_sequence_length)
HEADS, HEAD_DIM = 2, 12  # rotary splits a head as 4 + 4 + 4 (t, h, w)
IMAGE_DIM = 8  # the tiny CLIP's hidden size
BOUNDARY_RATIO = 0.9  # Wan2.2-I2V-A14B's: transformer for t >= 900, transformer_2 below

# The real checkpoints' scheduler/scheduler_config.json (UniPC over flow sigmas; Wan2.1-I2V-480P and Wan2.2-I2V-A14B: shift 3).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "solver_order": 2,
    "prediction_type": "flow_prediction",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "predict_x0": True,
    "solver_type": "bh2",
    "lower_order_final": True,
    "disable_corrector": [],
    "solver_p": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "final_sigmas_type": "zero",
    "rescale_betas_zero_snr": False,
}


def make_tiny_wan(out_dir: str | Path, *, seed: int = 0, variant: Variant = "wan2.1", heads: int = HEADS) -> Path:
    """Build and save a tiny Wan image-to-video pipeline folder of `variant` at `out_dir`; returns the folder.

    `heads` sizes the transformer(s) (more heads to split them over more ranks).
    """
    import torch
    from diffusers import WanImageToVideoPipeline, WanPipeline

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
    out = Path(out_dir)
    ti2v = variant == "wan2.2-ti2v"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts: dict[str, Any] = {
            "tokenizer": tiny_t5.t5_tokenizer(TEXT_TOKENS),
            "text_encoder": tiny_t5.t5_encoder(TEXT_DIM, umt5=True),
            "vae": _vae(ti2v),
            "transformer": _transformer(variant, heads),
            "scheduler": _scheduler(),
        }
        if variant == "wan2.1":
            parts |= {"image_encoder": _image_encoder(), "image_processor": _image_processor()}
        if variant == "wan2.2":
            parts |= {"transformer_2": _transformer(variant, heads), "boundary_ratio": BOUNDARY_RATIO}
        # TI2V-5B's model_index.json names WanPipeline (it also makes text-to-video); the I2V pipeline loads it
        pipe = WanPipeline(**parts, expand_timesteps=True) if ti2v else WanImageToVideoPipeline(**parts)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def make_tiny_wan_lora(out_file: str | Path, *, seed: int = 0, variant: Variant = "wan2.1", rank: int = 2) -> Path:
    """A LoRA for `make_tiny_wan(variant=...)`'s transformer in the original Wan trainers' key format.

    Keys as lightx2v's Lightning LoRAs have them: `diffusion_model.blocks.{i}.{self_attn,cross_attn}.{q,k,v,o}`
    and `...ffn.{0,2}`, each with `.lora_down.weight` [rank, in], `.lora_up.weight` [out, rank] and `.alpha`
    (diffusers scales the pair by alpha / rank when it converts them).
    """
    import torch
    from safetensors.torch import save_file

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
    inner, ffn = HEADS * HEAD_DIM, 32
    shapes = {f"{attn}.{p}": (inner, inner) for attn in ("self_attn", "cross_attn") for p in "qkvo"}
    shapes |= {"ffn.0": (ffn, inner), "ffn.2": (inner, ffn)}  # (out, in)
    state: dict[str, Any] = {}
    generator = torch.Generator().manual_seed(seed)
    for layer, (out_features, in_features) in shapes.items():
        key = f"diffusion_model.blocks.0.{layer}"
        state[f"{key}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * 0.5
        state[f"{key}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * 0.5
        state[f"{key}.alpha"] = torch.tensor(float(rank) / 2)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return out


def _transformer(variant: str, heads: int) -> Any:
    """One block; the 2.1 / A14B layout takes noise + mask + image latents, TI2V only the latents."""
    from diffusers import WanTransformer3DModel

    clip = variant == "wan2.1"
    in_channels = LATENT_CHANNELS if variant == "wan2.2-ti2v" else 2 * LATENT_CHANNELS + TEMPORAL_SCALE
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=HEAD_DIM,
        in_channels=in_channels,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        image_dim=IMAGE_DIM if clip else None,
        added_kv_proj_dim=heads * HEAD_DIM if clip else None,
        rope_max_seq_len=1024,
    )


def _vae(ti2v: bool) -> Any:
    """8-channel blocks, 8x space (Wan2.2's 16x: 8x plus a 2x2 patchify, residual blocks) and 4x time."""
    from diffusers import AutoencoderKLWan

    wan22 = {"is_residual": True, "patch_size": 2, "in_channels": 12, "out_channels": 12, "scale_factor_spatial": 16}
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.05, 0.0],
        latents_std=[1.5, 0.8, 1.2, 1.0],
        scale_factor_temporal=TEMPORAL_SCALE,
        **(wan22 if ti2v else {"scale_factor_spatial": 8}),
    )


def _image_encoder() -> Any:
    """A tiny CLIP vision tower (Wan2.1 reads its second-to-last hidden states: IMAGE_DIM wide)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=IMAGE_DIM, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    return CLIPVisionModel(config).eval()


def _image_processor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _scheduler() -> Any:
    """The real checkpoints' scheduler class and settings."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(**SCHEDULER_CONFIG)
