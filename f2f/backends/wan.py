"""The Wan image-to-video family: diffusers' `WanImageToVideoPipeline` (Wan2.1 I2V, Wan2.2 I2V-A14B, Wan2.2 TI2V-5B).

Everything else a video needs is `f2f.backends.i2v`'s; this module says what
Wan does differently (`FAMILY`). What a checkpoint allows is read from its
configs before any weight loads:

- layout: Wan2.1 I2V and Wan2.2 I2V-A14B concatenate noise latents, a 4-channel
  first-frame mask (one channel per frame of a latent frame) and the image
  latents, so the transformer takes `2 z + t` channels (z: the VAE's latent
  channels, t: its temporal scale; 36 for the real ones). Wan2.2 TI2V-5B
  (`expand_timesteps` in model_index.json, which names `WanPipeline`: it also
  makes text-to-video) writes the image latents over the first latent frame,
  so it takes `z` channels (48). A transformer of `z` channels without
  `expand_timesteps` is text-to-video and is refused.
- two experts (Wan2.2 A14B): `transformer_2` and `boundary_ratio` in
  model_index.json, both or neither; `transformer` denoises the steps with
  t >= boundary_ratio x 1000, `transformer_2` the rest.
- canvas: free. Width and height are multiples of the VAE's spatial scale x
  the patch size (8 x 2 = 16; TI2V-5B's 16x VAE: 32). The configs do not
  record the resolution a checkpoint was trained at, so its native area is a
  per-variant default: 832x480 (the 480p area; Wan2.1-I2V-480P, Wan2.2-A14B at
  480p) for the 2.1 / A14B layout, 1280x704 (TI2V-5B's 720p area) for TI2V; a
  720p profile sets its own `max_canvas_pixels`.
- frames: the VAE compresses time 4x, so clips have 4k+1 frames (81).
- the call: one image for the whole batch (`image_per_prompt=False`: the
  pipeline encodes one image and repeats it per seed; a list would be read as
  a batch of images and multiply the CLIP embeddings), the text length, and
  for two experts the second expert's guidance, the same as the first's.
- shift: the scheduler's timestep shift (UniPC `flow_shift`, FlowMatch
  `shift`), `video.shift`, or the checkpoint's own when null.
- a split over several processes: diffusers' native context parallelism
  (Ulysses) on both experts, rank 0 alone encoding the prompt and the image;
  its shards are equal, so each frame's video tokens must divide by the ranks
  (`split_divides_tokens`; on two CPU ranks it gives one process's frames bit
  for bit, tests/models/test_context_parallel.py). CFG-parallel is not
  offered (diffusers runs the two guidance passes one after the other).
- a mask (`f2f.backends.masks`): the denoised latents are the video
  ([B, C, F, h, w]; the image enters as condition channels and a frame mask,
  or for TI2V as latent frame 0, which the pipeline writes over at the end),
  so the reference is the static source's VAE encoding, normalised as the
  pipeline normalises its condition (`(z - latents_mean) / latents_std`).
  Noised flow-matching style at the scheduler's sigma (UniPC's flow sigmas,
  or FlowMatch's).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from f2f.backends.i2v import CheckpointSpec, Family, context_parallel, read_json
from f2f.backends.masks import MaskLatents
from f2f.config import VideoConfig
from f2f.errors import InvalidConfig

if TYPE_CHECKING:
    import torch

PIPELINE_CLASS = "WanImageToVideoPipeline"
TEXT_TOKENS = 512  # the Wan trainers' text length (text_len 512); no config file records it
CANVAS_480P = (832, 480)  # Wan2.1-I2V-14B-480P's trained area (and Wan2.2-I2V-A14B's at 480p)
CANVAS_TI2V = (1280, 704)  # Wan2.2-TI2V-5B's trained area (720p)
_FIELD = "generator.model_path"


def inspect(path: Path, index: dict[str, Any]) -> CheckpointSpec:
    """The rules of a Wan image-to-video checkpoint folder; InvalidConfig(generator.model_path) if it is not one."""
    transformer, vae = read_json(path, "transformer/config.json"), read_json(path, "vae/config.json")
    expand = bool(index.get("expand_timesteps", False))
    _check_layout(path.name, transformer, vae, expand)
    two_experts = _check_experts(path, index, transformer)
    patch = list(transformer.get("patch_size", (1, 2, 2)))
    if len(patch) != 3 or patch[1] != patch[2]:
        raise InvalidConfig(_FIELD, str(path), f"{path.name}: transformer patch_size {patch} is not [t, p, p]")
    return CheckpointSpec(
        name=path.name,
        canvas_size=CANVAS_TI2V if expand else CANVAS_480P,
        fixed_canvas=False,
        size_multiple=int(vae.get("scale_factor_spatial", 8)) * patch[1],
        frame_step=int(vae.get("scale_factor_temporal", 4)),
        options={"two_experts": two_experts, "text_tokens": TEXT_TOKENS},
    )


def _check_layout(name: str, transformer: dict[str, Any], vae: dict[str, Any], expand: bool) -> None:
    """InvalidConfig unless the transformer's channels are an image-to-video layout of the VAE's latents."""
    latent, temporal = vae.get("z_dim", 16), vae.get("scale_factor_temporal", 4)
    got, out = transformer.get("in_channels"), transformer.get("out_channels")
    wanted = latent if expand else 2 * latent + temporal
    if got == wanted and out == latent:
        return
    if got == latent and not expand:
        rule = (
            f"{name} is a text-to-video Wan checkpoint: its transformer takes in_channels {got} (the VAE's {latent} "
            f"latent channels alone); image-to-video needs {2 * latent + temporal} (noise + {temporal} mask + image latents) "
            "or expand_timesteps in model_index.json (TI2V)"
        )
    else:
        layout = "the latents (TI2V, expand_timesteps)" if expand else f"noise + {temporal} mask + image latents"
        rule = (
            f"{name}: the transformer is not the image-to-video layout: in_channels {got} and out_channels {out}, "
            f"expected {wanted} ({layout}) and {latent} (the VAE's z_dim)"
        )
    raise InvalidConfig(_FIELD, name, rule)


def _check_experts(path: Path, index: dict[str, Any], transformer: dict[str, Any]) -> bool:
    """True for a two-expert checkpoint (transformer_2 and boundary_ratio, both or neither; the same layout)."""
    second = index.get("transformer_2")
    has_second = isinstance(second, list) and bool(second) and second[0] is not None
    ratio = index.get("boundary_ratio")
    if has_second != (ratio is not None):
        rule = (
            f"{path.name}/model_index.json has {'transformer_2' if has_second else 'boundary_ratio'} without "
            f"{'boundary_ratio' if has_second else 'transformer_2'}: a two-expert Wan2.2 checkpoint needs both"
        )
        raise InvalidConfig(_FIELD, str(path), rule)
    if not has_second:
        return False
    if not 0 < ratio < 1:
        raise InvalidConfig(_FIELD, str(path), f"{path.name}: boundary_ratio {ratio} must lie between 0 and 1")
    other = read_json(path, "transformer_2/config.json")
    for key in ("in_channels", "out_channels", "patch_size"):
        if other.get(key) != transformer.get(key):
            rule = f"{path.name}: transformer_2 has {key} {other.get(key)}, transformer {transformer.get(key)} (they must agree)"
            raise InvalidConfig(_FIELD, str(path), rule)
    return True


def call_arguments(spec: CheckpointSpec, settings: VideoConfig) -> dict[str, Any]:
    """The text length; two experts: the low-noise expert's guidance, the same as the high-noise one's.

    Wan2.2-I2V-A14B publishes one guidance pair of equal halves (3.5, 3.5), and
    diffusers defaults `guidance_scale_2` to `guidance_scale`; it is passed
    explicitly so the call says what runs.
    """
    arguments: dict[str, Any] = {"max_sequence_length": spec.options["text_tokens"]}
    if spec.options["two_experts"]:
        arguments["guidance_scale_2"] = settings.guidance_scale
    return arguments


def set_shift(pipe: Any, shift: float | None) -> None:
    """The scheduler with timestep shift `shift` (None: the checkpoint's), its other settings the checkpoint's.

    The checkpoint's scheduler is kept on the pipeline at the first call, so
    every video starts from it and a shift never outlives its request.
    """
    checkpoint = pipe.__dict__.setdefault("_f2f_checkpoint_scheduler", pipe.scheduler)
    if shift is None:
        pipe.scheduler = checkpoint
        return
    config = checkpoint.config
    key = "flow_shift" if "flow_shift" in config else "shift" if "shift" in config else None
    if key is None:
        raise InvalidConfig("video.shift", shift, f"the checkpoint's {type(checkpoint).__name__} has no timestep shift")
    pipe.scheduler = type(checkpoint).from_config(config, **{key: shift})


def encode_reference(pipe: Any, video: torch.Tensor) -> torch.Tensor:
    """The static source video's latents [1, C, F', h, w], normalised as the pipeline normalises its condition latents."""
    import torch

    config = pipe.vae.config
    latents = pipe.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    inverse_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    return (latents - mean) * inverse_std


# Wan2.1-I2V-14B-480P's published settings (the Wan2.1 repository's generate.py for i2v: 40 steps, guidance 5.0;
# 81 frames at 16 fps). No shift here: null is the checkpoint's own scheduler shift (480P 3.0); profiles set theirs.
DEFAULTS = {"frame_step": 4, "size_multiple": 16, "num_frames": 81, "num_inference_steps": 40, "guidance_scale": 5.0, "fps": 16}

FAMILY = Family(
    name="wan",
    pipeline_class=PIPELINE_CLASS,
    index_classes=("WanPipeline",),  # Wan2.2-TI2V-5B-Diffusers; inspect refuses a text-to-video WanPipeline folder
    inspect=inspect,
    defaults=DEFAULTS,
    call_arguments=call_arguments,
    image_per_prompt=False,
    set_shift=set_shift,
    split=context_parallel,
    split_divides_tokens=True,
    split_axes=frozenset({"ulysses"}),
    speed=frozenset({"fuse_qkv", "attention", "compile", "quantize"}),  # the step caches are CogVideoX's only
    requires=("ftfy",),
    mask_latents=MaskLatents(encode=encode_reference, noise="flow"),
)
