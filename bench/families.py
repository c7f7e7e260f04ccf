"""Seconds per edit for each video family: the plain diffusers pipeline, then f2f's `compiled` switches.

    python bench/families.py [--families a,b] [--modes plain,compiled] [--steps 3] [--json FILE] [--budget-s S]
    python bench/families.py --tiny          # CPU smoke check: every family's architecture at tiny sizes

Full size (the default) builds each family's transformer (both experts for
Wan2.2-A14B), VAE and image encoder (Wan2.1's CLIP ViT-H/14) from their
published configs with random weights (`generate._random`: the compute is the
real model's, the pictures are noise) in bfloat16 on the GPU. The text
encoder (T5-XXL / UMT5-XXL, about 5B) is not rebuilt per family: each family
gets random prompt embeddings of its shape (tokens x 4096), and T5-XXL is
built once and timed at each family's token count (UMT5-XXL has T5-XXL's
shape but a larger vocabulary, which only the embedding lookup sees).

Per family and mode, on one image at the profile's canvas and frames: a
1-step warm-up video (`first s`: with compiling for `compiled`), then
`--steps` timed steps with `output_type="latent"`; the time before the first
denoising step (`prep s`: the image through the VAE encoder and, for Wan2.1,
CLIP) is measured apart; the VAE decode of one latent video of the profile's
shape is timed once per family. `est. s/edit` = text + prep + the profile's
published steps x s/step (median) + VAE: an **estimate** (a step costs the
same at every timestep without a cache). Each row is printed and the JSON
rewritten as it comes. All families' `plain` rows come before any `compiled`
row, so a budget cut still leaves a plain figure for every family it reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import generate

from f2f.config import SpeedConfig

MODES = {"plain": SpeedConfig(), "compiled": SpeedConfig(fuse_qkv=True, compile="regional")}
T5_DIM = 4096  # T5-XXL and UMT5-XXL d_model (generate.FULL.t5)

# --- the published configs -----------------------------------------------------------------------
# Sources, all read 2026-12 through the mirrors of public repositories:
#   [conv-cog]  huggingface/diffusers scripts/convert_cogvideox_to_diffusers.py @58eb52c (get_transformer_init_kwargs,
#               convert_transformer, convert_vae; 5B: 42 layers, 48 heads, per its --num_layers/--num_attention_heads help)
#   [conv-wan]  huggingface/diffusers scripts/convert_wan_to_diffusers.py @58eb52c (get_transformer_config,
#               convert_vae: AutoencoderKLWan() defaults, vae22_diffusers_config, boundary_ratio=0.9, flow_shift)
#   [conv-ltx]  huggingface/diffusers scripts/convert_ltx_to_diffusers.py @58eb52c (get_transformer_config "else"
#               = 0.9.0/0.9.1, get_vae_config("0.9.1"), the 0.9.1 FlowMatchEulerDiscreteScheduler arguments)
#   [wan21]     Wan-Video/Wan2.1 generate.py @9737cba: 40 steps for i2v, 81 frames, shift 3.0 at 832*480
#   [wan22]     Wan-Video/Wan2.2 wan/configs/wan_i2v_A14B.py, wan_ti2v_5B.py, __init__.py @42bf4cf: A14B 40 steps,
#               boundary 0.900, guide (3.5, 3.5); TI2V-5B 50 steps, 121 frames, guide 5.0, size 1280*704
#   [clip-h]    mlfoundations/open_clip src/open_clip/model_configs/ViT-H-14.json @964981a: width 1280, 32 layers,
#               head_width 80 (16 heads), patch 14, image 224, embed_dim 1024; mlp_ratio 4 (open_clip's default)
#   [ltx-pipe]  diffusers 0.42.1 LTXImageToVideoPipeline.__call__ defaults and example: 161 frames, 50 steps,
#               guidance 3, max_sequence_length 128
#   [chrono]    nv-tlabs/ChronoEdit scripts/run_inference_diffusers.py @11626ef: 50 steps, guidance 5.0, UniPC
#               flow_shift 5.0, a 720*1280 area, 5 frames (29 with temporal reasoning, 50 reasoning steps); its
#               README @077553c: the distillation LoRA at 8 steps, guidance 1.0, flow shift 2.0. The transformer is
#               Wan2.1-I2V-14B-720P's ([conv-wan]) with diffusers' ChronoEditTransformer3DModel (RoPE skip 8)
#   [brief]     not confirmed from a public source here: see UNCONFIRMED
WAN_14B = {  # [conv-wan] "Wan2.2-I2V-14B-720p" (the A14B experts; the same for both)
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 13824,
    "freq_dim": 256,
    "in_channels": 36,
    "num_attention_heads": 40,
    "num_layers": 40,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "text_dim": 4096,
}
WAN22_VAE = {  # [conv-wan] vae22_diffusers_config, latents_mean/std (48 each) left to a neutral 0/1: timing only;
    # its "clip_output": False is not an argument in diffusers 0.42.1 (left out)
    "base_dim": 160,
    "z_dim": 48,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "decoder_base_dim": 256,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    "patch_size": 2,
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
}
COG_15 = {  # [conv-cog] version 1.5 with --i2v: CogVideoX1.5-5B-I2V
    **generate.FULL.transformer,
    "patch_size_t": 2,
    "patch_bias": False,
    "sample_height": 300,
    "sample_width": 300,
    "sample_frames": 81,
    "ofs_embed_dim": 512,
    "use_learned_positional_embeddings": False,
}
LTX_091 = {  # [conv-ltx] get_transformer_config for 0.9.0 / 0.9.1
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 32,
    "attention_head_dim": 64,
    "cross_attention_dim": 2048,
    "num_layers": 28,
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "caption_channels": 4096,
    "attention_bias": True,
    "attention_out_bias": True,
}
LTX_091_VAE = {  # [conv-ltx] get_vae_config("0.9.1")
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("LTXVideoDownBlock3D",) * 4,
    "decoder_block_out_channels": (256, 512, 1024),
    "layers_per_block": (4, 3, 3, 3, 4),
    "decoder_layers_per_block": (5, 6, 7, 8),
    "spatio_temporal_scaling": (True, True, True, False),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "decoder_inject_noise": (True, True, True, False),
    "downsample_type": ("conv", "conv", "conv", "conv"),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": True,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": False,
}
CLIP_H14 = {  # [clip-h], as transformers' CLIPVisionConfig (laion/CLIP-ViT-H-14-laion2B-s32B-b79K, [conv-wan])
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 1024,
    "hidden_act": "gelu",
}
CHRONOEDIT = {**WAN_14B, "image_dim": 1280, "added_kv_proj_dim": 5120, "rope_temporal_skip_len": 8}  # [chrono]
UNCONFIRMED = {
    "wan2.2-i2v-a14b-lightning": "4 steps at guidance 1.0 come from the brief (the Wan2.2-Lightning LoRA card was not "
    "read here); the architecture is Wan2.2-I2V-A14B's, confirmed",
    "cogvideox1.5-5b": "1360x768 is the brief's canvas (the model card was not read here); the config is confirmed",
    "ltx-video": "768x512 is the brief's canvas; 161 frames and 50 steps are diffusers' LTXImageToVideoPipeline "
    "defaults (the LTX-Video card was not read here)",
}


@dataclass(frozen=True)
class Profile:
    """One family at its published sizes, and how a video of it is made."""

    name: str
    model: str
    kind: str  # "cogvideox" | "wan" | "ltx" | "chronoedit": which diffusers pipeline
    width: int
    height: int
    frames: int
    steps: int  # the profile's published denoising steps
    guidance: float
    text_tokens: int
    transformer: dict[str, Any]
    vae: dict[str, Any]
    image_encoder: dict[str, Any] | None = None
    pipeline: dict[str, Any] = field(default_factory=dict)  # boundary_ratio, expand_timesteps
    two_experts: bool = False
    flow_shift: float = 3.0
    reasoning: bool = False  # chronoedit: temporal reasoning for every step (the whole clip is denoised)


# Profile(name, model, kind, width, height, frames, published steps, guidance, text tokens, transformer, vae, ...)
PROFILES = {
    p.name: p
    for p in (
        Profile(
            "cogvideox-5b",
            "CogVideoX-5B-I2V",
            "cogvideox",
            720,
            480,
            49,
            50,
            6.0,
            generate.TEXT_TOKENS,
            generate.FULL.transformer,
            generate.FULL.vae,
        ),
        Profile(
            "cogvideox1.5-5b",
            "CogVideoX1.5-5B-I2V",
            "cogvideox",
            1360,
            768,
            81,
            50,
            6.0,
            generate.TEXT_TOKENS,
            COG_15,
            {"scaling_factor": 0.7, "invert_scale_latents": True},
        ),  # [conv-cog] convert_vae
        Profile(
            "wan2.1-i2v-14b-480p",
            "Wan2.1-I2V-14B-480P",
            "wan",
            832,
            480,
            81,
            40,
            5.0,
            512,  # [wan21]; 512: text_len
            {**WAN_14B, "image_dim": 1280, "added_kv_proj_dim": 5120},
            {},
            CLIP_H14,
        ),  # [conv-wan]
        Profile(
            "wan2.2-i2v-a14b",
            "Wan2.2-I2V-A14B",
            "wan",
            832,
            480,
            81,
            40,
            3.5,
            512,
            WAN_14B,
            {},  # [wan22]
            pipeline={"boundary_ratio": 0.9},
            two_experts=True,
            flow_shift=5.0,
        ),
        Profile(
            "wan2.2-i2v-a14b-lightning",
            "Wan2.2-I2V-A14B + Lightning",
            "wan",
            832,
            480,
            81,
            4,
            1.0,
            512,
            WAN_14B,
            {},
            pipeline={"boundary_ratio": 0.9},
            two_experts=True,
            flow_shift=5.0,
        ),  # [brief]
        Profile(
            "wan2.2-ti2v-5b",
            "Wan2.2-TI2V-5B",
            "wan",
            1280,
            704,
            121,
            50,
            5.0,
            512,  # [wan22]
            {**WAN_14B, "ffn_dim": 14336, "in_channels": 48, "num_attention_heads": 24, "num_layers": 30, "out_channels": 48},
            WAN22_VAE,
            pipeline={"expand_timesteps": True},
            flow_shift=5.0,
        ),
        Profile("ltx-video", "LTX-Video 0.9.1", "ltx", 768, 512, 161, 50, 3.0, 128, LTX_091, LTX_091_VAE),  # [ltx-pipe]
        *(
            Profile(
                name,
                "ChronoEdit-14B" + suffix,
                "chronoedit",
                1280,
                720,
                frames,
                steps,
                guidance,
                512,
                CHRONOEDIT,
                {},
                CLIP_H14,
                flow_shift=shift,
                reasoning=frames > 5,
            )
            for name, suffix, frames, steps, guidance, shift in (  # [chrono]
                ("chronoedit-14b", "", 5, 50, 5.0, 5.0),
                ("chronoedit-14b-distill", " + 8-step LoRA", 5, 8, 1.0, 2.0),  # fused: a step costs the base model's
                ("chronoedit-14b-think", ", temporal reasoning", 29, 50, 5.0, 5.0),
            )
        ),
    )
}

# --- tiny sizes: the same classes and code, small widths (the diffusers tests' dummy components) --------
TINY = {
    "cogvideox": {"transformer": generate.TINY.transformer, "vae": generate.TINY.vae},
    "wan": {
        "transformer": {
            "num_attention_heads": 2,
            "attention_head_dim": 12,
            "text_dim": 32,
            "ffn_dim": 32,
            "num_layers": 2,
            "rope_max_seq_len": 32,
        },
        "vae": {
            "base_dim": 3,
            "decoder_base_dim": None,
            "dim_mult": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "temperal_downsample": [False, True, True],
        },
    },
    "chronoedit": {"transformer": {}, "vae": {}},  # Wan's (filled in below)
    "ltx": {
        "transformer": {
            "in_channels": 8,
            "out_channels": 8,
            "num_attention_heads": 4,
            "attention_head_dim": 8,
            "cross_attention_dim": 32,
            "num_layers": 1,
            "caption_channels": 32,
        },
        "vae": {
            "latent_channels": 8,
            "block_out_channels": (8, 16, 32, 32),
            "decoder_block_out_channels": (8, 16, 32),
            "layers_per_block": (1, 1, 1, 1, 1),
            "decoder_layers_per_block": (1, 1, 1, 1),
        },
    },
}
TINY["chronoedit"] = TINY["wan"]
TINY_CLIP = {
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 4,
    "projection_dim": 8,
}


def tiny(profile: Profile) -> Profile:
    """`profile` at tiny widths on a 96x64 canvas, 9 frames: everything else (classes, layout, pipeline) kept."""
    sizes = TINY[profile.kind]
    transformer = {**profile.transformer, **sizes["transformer"]}
    if profile.kind == "cogvideox":  # keep 1.5's layout (patch_size_t, ofs, no learned positions) on tiny widths
        keep = ("patch_size_t", "patch_bias", "ofs_embed_dim", "use_learned_positional_embeddings")
        transformer.update({k: profile.transformer[k] for k in keep if k in profile.transformer})
        if transformer.get("ofs_embed_dim"):
            transformer["ofs_embed_dim"] = transformer["time_embed_dim"]
    if transformer.get("image_dim"):
        transformer.update(image_dim=TINY_CLIP["hidden_size"], added_kv_proj_dim=transformer["num_attention_heads"] * 12)
    vae = {**profile.vae, **sizes["vae"]}
    if profile.kind in ("wan", "chronoedit") and vae.get("decoder_base_dim", 1) is None:
        vae.pop("decoder_base_dim")
    image_encoder = TINY_CLIP if profile.image_encoder else None
    return dataclasses.replace(
        profile, width=96, height=64, frames=9, transformer=transformer, vae=vae, image_encoder=image_encoder
    )


# --- one family's pipeline, with random weights --------------------------------------------------------


def build_pipeline(profile: Profile, device: Any, dtype: Any) -> Any:
    """The plain diffusers image-to-video pipeline of `profile`, no text encoder (embeddings are passed in)."""
    import diffusers

    def random(cls: Any, config: dict[str, Any], seed: int) -> Any:
        return generate._random(lambda: cls(**config), device, dtype, seed=seed)

    if profile.kind == "cogvideox":
        from f2f.backends.tiny.tiny_cogvideox import SCHEDULER_CONFIG

        return diffusers.CogVideoXImageToVideoPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=random(diffusers.AutoencoderKLCogVideoX, profile.vae, 1),
            transformer=random(diffusers.CogVideoXTransformer3DModel, profile.transformer, 0),
            scheduler=diffusers.CogVideoXDDIMScheduler(**SCHEDULER_CONFIG),
        )
    if profile.kind in ("wan", "chronoedit"):
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        encoder, processor = None, None
        if profile.image_encoder:
            size = profile.image_encoder["image_size"]
            config = CLIPVisionConfig(**profile.image_encoder)
            encoder = generate._random(lambda: CLIPVisionModelWithProjection(config), device, dtype, seed=3)
            positions = encoder.vision_model.embeddings.position_ids  # an integer buffer: `_random` leaves it unset
            positions.copy_(torch.arange(positions.shape[-1], device=device).expand_as(positions))
            processor = CLIPImageProcessor(size=size, crop_size=size)
        wan = profile.kind == "wan"
        transformer = diffusers.WanTransformer3DModel if wan else diffusers.ChronoEditTransformer3DModel
        experts = {"transformer_2": random(transformer, profile.transformer, 4) if profile.two_experts else None} if wan else {}
        return (diffusers.WanImageToVideoPipeline if wan else diffusers.ChronoEditPipeline)(
            tokenizer=None,
            text_encoder=None,
            vae=random(diffusers.AutoencoderKLWan, profile.vae, 1),
            transformer=random(transformer, profile.transformer, 0),
            image_encoder=encoder,
            image_processor=processor,
            scheduler=diffusers.UniPCMultistepScheduler(  # [conv-wan], [chrono]
                prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=profile.flow_shift
            ),
            **experts,
            **profile.pipeline,
        )
    return diffusers.LTXImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=random(diffusers.AutoencoderKLLTXVideo, profile.vae, 1),
        transformer=random(diffusers.LTXVideoTransformer3DModel, profile.transformer, 0),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(  # [conv-ltx], 0.9.1
            use_dynamic_shifting=True,
            base_shift=0.95,
            max_shift=2.05,
            base_image_seq_len=1024,
            max_image_seq_len=4096,
            shift_terminal=0.1,
        ),
    )


def call_arguments(profile: Profile, embeds: Any, device: Any) -> dict[str, Any]:
    """The pipeline call's family-specific arguments: the prompt embeddings (and LTX's masks), guidance."""
    import torch

    arguments: dict[str, Any] = {"prompt_embeds": embeds[:1], "negative_prompt_embeds": embeds[1:]}
    if profile.kind == "cogvideox":
        arguments["use_dynamic_cfg"] = False
    if profile.kind == "wan" and profile.two_experts:
        arguments["guidance_scale_2"] = profile.guidance
    if profile.kind == "chronoedit":  # reasoning for every step: each step denoises the whole clip
        arguments.update(enable_temporal_reasoning=profile.reasoning, num_temporal_reasoning_steps=profile.steps)
    if profile.kind == "ltx":
        mask = torch.ones(1, profile.text_tokens, device=device, dtype=torch.long)
        arguments.update(prompt_attention_mask=mask, negative_prompt_attention_mask=mask)
    return arguments


def decode_seconds(pipe: Any, profile: Profile, device: Any, dtype: Any) -> float:
    """One VAE decode of a latent video of the profile's shape (random values: the decode's cost is the shape's)."""
    import torch

    vae = pipe.vae
    spatial = getattr(pipe, "vae_scale_factor_spatial", None) or pipe.vae_spatial_compression_ratio
    temporal = getattr(pipe, "vae_scale_factor_temporal", None) or pipe.vae_temporal_compression_ratio
    channels = vae.config.get("latent_channels") or vae.config.z_dim
    shape = (1, channels, (profile.frames - 1) // temporal + 1, profile.height // spatial, profile.width // spatial)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(5)).to(device, dtype)  # [B, C, F, H, W]
    extra = {"temb": torch.full((1,), 0.05, device=device, dtype=dtype)} if vae.config.get("timestep_conditioning") else {}
    with torch.no_grad():
        generate.synchronize(device)
        started = time.perf_counter()
        vae.decode(z, **extra)
        generate.synchronize(device)
    return time.perf_counter() - started


@dataclass
class FamilyRow:
    profile: str
    model: str
    mode: str
    width: int
    height: int
    frames: int
    timed_steps: int
    step_s: float  # median of the timed steps
    steps: int  # the profile's published steps
    text_s: float
    prep_s: float  # before the first denoising step: image encoders, latents
    vae_s: float
    edit_s: float  # the estimate: text + prep + steps x step_s + VAE
    first_s: float
    peak_gib: float | None


HEADER = [
    "profile",
    "mode",
    "canvas",
    "frames",
    "s/step",
    "steps",
    "text s",
    "prep s",
    "VAE s",
    "est. s/edit",
    "first s",
    "peak GiB",
]


def table_row(row: FamilyRow) -> str:
    cells = [
        row.profile,
        row.mode,
        f"{row.width}x{row.height}",
        str(row.frames),
        f"{row.step_s:.3f}",
        str(row.steps),
        f"{row.text_s:.3f}",
        f"{row.prep_s:.2f}",
        f"{row.vae_s:.2f}",
        f"{row.edit_s:.1f} (estimate)",
        f"{row.first_s:.1f}",
        "-" if row.peak_gib is None else f"{row.peak_gib:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


class Bench:
    """Times one family's video per mode; the image, seeds and embeddings are the same for every mode."""

    def __init__(self, device: Any, dtype: Any, steps: int, text_s: dict[int, float], t5_dim: int) -> None:
        self.device, self.dtype, self.steps, self.text_s, self.t5_dim = device, dtype, steps, text_s, t5_dim
        self.vae_s: dict[str, float] = {}  # decoded once per family, in its first mode

    def run(self, profile: Profile, mode: str) -> FamilyRow:
        import torch
        from PIL import Image

        from f2f.backends.video.i2v import release_memory
        from f2f.backends.video.speedups import apply_speedups, check_speed

        check_speed(MODES[mode], self.device)
        generate.reset_peak(self.device)
        pipe = build_pipeline(profile, self.device, self.dtype)
        pipe.set_progress_bar_config(disable=True)
        if mode != "plain":
            apply_speedups(pipe, MODES[mode])
        embeds = torch.randn(2, profile.text_tokens, self.t5_dim, generator=torch.Generator().manual_seed(1))
        image = Image.new("RGB", (profile.width, profile.height), (120, 80, 40))
        arguments = {
            **call_arguments(profile, embeds.to(self.device, self.dtype), self.device),
            "image": image,
            "height": profile.height,
            "width": profile.width,
            "num_frames": profile.frames,
            "guidance_scale": profile.guidance,
            "num_inference_steps": profile.steps,  # the published schedule, interrupted after the timed steps
            "output_type": "latent",
        }
        try:
            first_s = self._video(pipe, arguments, 1)[0]  # warm-up: kernels chosen, blocks compiled
            _, prep_s, step_times = self._video(pipe, arguments, self.steps)
            if profile.name not in self.vae_s:
                self.vae_s[profile.name] = decode_seconds(pipe, profile, self.device, self.dtype)
            peak_gib = generate.peak_memory_gib(self.device)
        finally:
            del pipe
            release_memory(self.device)
        step_s = statistics.median(step_times)
        text_s, vae_s = self.text_s[profile.text_tokens], self.vae_s[profile.name]
        return FamilyRow(
            profile=profile.name,
            model=profile.model,
            mode=mode,
            width=profile.width,
            height=profile.height,
            frames=profile.frames,
            timed_steps=self.steps,
            step_s=step_s,
            steps=profile.steps,
            text_s=text_s,
            prep_s=prep_s,
            vae_s=vae_s,
            edit_s=text_s + prep_s + profile.steps * step_s + vae_s,
            first_s=first_s,
            peak_gib=peak_gib,
        )

    def _video(self, pipe: Any, arguments: dict[str, Any], steps: int) -> tuple[float, float, list[float]]:
        """The first `steps` steps of the profile's schedule (then the pipeline is interrupted): (total s, s before
        the first transformer call, each step's s). The real schedule keeps the real timesteps (and, with two
        experts, the real expert for each step); a schedule of 1 step would break LTX's shift_terminal."""
        import torch

        marks: list[float] = []

        def mark(*_: Any) -> dict[str, Any]:
            generate.synchronize(self.device)
            marks.append(time.perf_counter())
            if len(marks) > steps:  # the loop's start, then one mark per step
                pipe._interrupt = True  # diffusers' own stop: the remaining steps are skipped
            return {}

        def loop_starts(*_: Any) -> None:
            if not marks:
                generate.synchronize(self.device)
                marks.append(time.perf_counter())

        hooks = [t.register_forward_pre_hook(loop_starts) for t in _transformers(pipe)]
        generate.synchronize(self.device)
        started = time.perf_counter()
        try:
            with torch.no_grad():
                pipe(**arguments, generator=torch.Generator("cpu").manual_seed(42), callback_on_step_end=mark)
        finally:
            for hook in hooks:
                hook.remove()
        generate.synchronize(self.device)
        total = time.perf_counter() - started
        return total, marks[0] - started, [b - a for a, b in itertools.pairwise(marks)]


def _transformers(pipe: Any) -> list[Any]:
    from f2f.backends.video.speedups import transformers_of

    return transformers_of(pipe)


def time_text(tokens: list[int], device: Any, dtype: Any, size: generate.Size) -> dict[int, float]:
    """T5-XXL (built once) timed at each token count: seconds of one prompt and negative prompt."""
    t5 = generate.build_t5(size, device, dtype)
    try:
        return {n: generate.encode_timed(t5, size, n, device)[1] for n in sorted(set(tokens))}
    finally:
        del t5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tiny", action="store_true", help="every family at tiny sizes on the CPU (a smoke check)")
    parser.add_argument("--families", help=f"comma-separated, of {', '.join(PROFILES)} (default: all)")
    parser.add_argument("--modes", default="plain,compiled", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=3, help="timed denoising steps per family and mode (default 3)")
    parser.add_argument("--json", type=Path, help="write the results to this file (rewritten after each row)")
    parser.add_argument("--budget-s", type=float, help="start no further family once this many seconds have passed")
    args = parser.parse_args(argv)
    started = time.monotonic()
    names = args.families.split(",") if args.families else list(PROFILES)
    modes = args.modes.split(",")
    for flag, asked, known in (("--families", names, PROFILES), ("--modes", modes, MODES)):
        unknown = [name for name in asked if name not in known]
        if unknown:
            parser.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    if args.steps < 1:
        parser.error(f"--steps: at least 1 timed step (got {args.steps})")

    import torch

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        parser.error("the full-size benchmark needs a CUDA GPU; use --tiny on the CPU")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    profiles = [tiny(PROFILES[n]) if args.tiny else PROFILES[n] for n in names]
    t5_size = generate.TINY if args.tiny else generate.FULL
    setup = {
        "sizes": "tiny (CPU smoke check)" if args.tiny else "full",
        "timed_steps": args.steps,
        "warm_up_steps": 1,
        "dtype": str(dtype).removeprefix("torch."),
        "text": f"T5-XXL timed once per token count ({t5_size.name})",
        "unconfirmed": {n: UNCONFIRMED[n] for n in names if n in UNCONFIRMED},
    }
    results = generate.Results(args.json, setup, generate.machine(device))
    results.save()  # the machine first: a run that dies at once still says where it ran
    say = generate.print_now
    say(f"# families: {', '.join(names)}; {setup['sizes']}, {setup['dtype']}, 1 warm-up + {args.steps} timed steps")
    say("# " + ", ".join(f"{k} {v}" for k, v in results.machine.items()))
    text_s: dict[int, float] = {}
    if args.budget_s is None or args.budget_s > 0:
        text_s = time_text([p.text_tokens for p in profiles], device, dtype, t5_size)
        say("# text encoder (T5-XXL, once): " + ", ".join(f"{n} tokens {s:.3f} s" for n, s in text_s.items()))
    bench = Bench(device, dtype, args.steps, text_s, t5_size.t5["d_model"])
    say("| " + " | ".join(HEADER) + " |")
    say("|" + "---|" * len(HEADER))
    for mode in modes:  # every family's plain row before any compiled one
        for profile in profiles:
            key = f"{profile.name} {mode}"
            if args.budget_s is not None and time.monotonic() - started >= args.budget_s:
                results.skipped[key] = f"the {args.budget_s:g} s budget was spent"
                continue
            try:
                row = bench.run(profile, mode)
            except Exception as exc:  # a family this card or build cannot run: say so, go on
                results.skipped[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
                say(f"| {profile.name} | {mode} | skipped: {results.skipped[key][:160]} |")
                results.save()
                continue
            results.rows.append(row)
            results.save()
            say(table_row(row))
    results.save()
    for key, why in results.skipped.items():
        say(f"# {key}: skipped ({why})")
    for name, what in setup["unconfirmed"].items():
        say(f"# {name}: unconfirmed: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
