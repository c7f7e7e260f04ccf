"""What the core knows of each video family (`FamilyFacts`): plain, torch-free values.

The config's `video` defaults and a checkpoint folder's canvas and frame rules
(`f2f.config.with_video_defaults`), the caption style its prompts take
(`caption.style`'s default), and whether a mask can be kept in the
latents (`f2f.request.check_edit`), come from here; the generator
(`f2f.backends.video.i2v.Family`) adds what runs on torch to these facts, so the
backends depend on the core and never the reverse. Adding a family: its facts
here (`FAMILIES`), its `Family` in a backend module (`f2f.backends.video.i2v.FAMILIES`),
a catalogue entry (`models/catalogue.yaml`) and a tiny-checkpoint builder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from f2f.errors import InvalidConfig

_FIELD = "generator.model_path"
COGVIDEOX_CLASS = "CogVideoXImageToVideoPipeline"
LATENT_DECODE_GROUP = 2  # AutoencoderKLCogVideoX decodes latent frames in pairs (after a first odd group)
COGVIDEOX15_CANVAS = (1360, 768)  # CogVideoX1.5-5B-I2V's training resolution (model card): its pixel budget
WAN_TEXT_TOKENS = 512  # the Wan trainers' text length (text_len 512); no config file records it
WAN_CANVAS_480P = (832, 480)  # Wan2.1-I2V-14B-480P's trained area (and Wan2.2-I2V-A14B's at 480p)
WAN_CANVAS_TI2V = (1280, 704)  # Wan2.2-TI2V-5B's trained area (720p)
LTX_CANVAS = (768, 512)  # LTX-Video's published resolution (its pixel budget here, not a size)
CHRONOEDIT_CANVAS = (1280, 720)  # ChronoEdit's published area (its inference script's target_area 720 x 1280)
CHRONOEDIT_PARTS = ("text_encoder", "tokenizer", "image_encoder", "image_processor", "transformer", "vae", "scheduler")


@dataclass(frozen=True)
class CheckpointSpec:
    """What a checkpoint can generate, read from its config files by its family."""

    name: str
    canvas_size: tuple[int, int]  # (width, height) the transformer was made for
    fixed_canvas: bool  # canvas_size is the only size (e.g. learned positional embeddings)
    size_multiple: int  # width and height must be multiples of this
    frame_step: int  # clips have frame_step*k + 1 frames
    options: Mapping[str, Any] = field(default_factory=dict)  # the family's own values (e.g. a text length)

    def video_defaults(self) -> dict[str, Any]:
        """The `video` fields this checkpoint decides: its canvas (or pixel budget), multiples and frame rule."""
        width, height = self.canvas_size
        canvas = {"width": width, "height": height} if self.fixed_canvas else {"max_canvas_pixels": width * height}
        return {**canvas, "size_multiple": self.size_multiple, "frame_step": self.frame_step}


@dataclass(frozen=True)
class FamilyFacts:
    """What the core knows of one kind of image-to-video checkpoint (see the module docstring)."""

    name: str
    pipeline_class: str  # the diffusers class the generator loads; a model_index.json naming it (or index_classes) is this family
    inspect: Callable[[Path, dict[str, Any]], CheckpointSpec]  # (folder, model_index.json) -> rules; InvalidConfig
    defaults: Mapping[str, Any]  # `video` defaults of its reference checkpoint (a profile's values come first)
    index_classes: tuple[str, ...] = ()  # other model_index.json class names of the family's checkpoints
    keeps_latents: bool = True  # mask.mode latent can keep the source's latents outside a mask; False: refused
    caption_style: str = "temporal"  # how the VLM prompts it (f2f.caption.CaptionStyle): a temporal caption or an instruction
    transformer_class: str | None = None  # a model_index.json whose transformer is this class is this family, whatever
    # pipeline class it names (a checkpoint published before diffusers had the family's pipeline names its base's)

    @property
    def classes(self) -> tuple[str, ...]:
        """Every model_index.json `_class_name` that is this family."""
        return (self.pipeline_class, *self.index_classes)


def family_named(name: str) -> FamilyFacts:
    """The family called `name`; InvalidConfig(generator.family) if f2f has none of that name."""
    if name not in FAMILIES:
        raise InvalidConfig("generator.family", name, f"unknown video family; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(path: Path) -> tuple[FamilyFacts, dict[str, Any]]:
    """The family of a checkpoint folder (by its model_index.json) and that index; InvalidConfig(generator.model_path)."""
    if not path.is_dir():
        raise InvalidConfig(_FIELD, str(path), f"no such folder {path.name!r} (it must be a local diffusers checkpoint folder)")
    index = read_json(path, "model_index.json")
    found, transformer = index.get("_class_name"), (index.get("transformer") or [None, None])[-1]
    for family in FAMILIES.values():
        if family.transformer_class is not None and transformer == family.transformer_class:
            return family, index
    for family in FAMILIES.values():
        if found in family.classes:
            return family, index
    known = ", ".join(f"{f.name} ({'/'.join(f.classes)})" for f in FAMILIES.values())
    rule = f"{path.name}/model_index.json names {found!r}; f2f makes videos with the families {known}"
    raise InvalidConfig(_FIELD, str(path), rule)


def inspect_checkpoint(path: Path, asked: str | None = None) -> tuple[FamilyFacts, CheckpointSpec]:
    """The checkpoint's family and what it can generate, from its configs alone (no weights load);
    InvalidConfig(generator.family) unless that is the family `asked` (None: any)."""
    family, index = family_of(path)
    spec = family.inspect(path, index)
    if asked is not None and family_named(asked).name != family.name:
        rule = f"{path.name} is a {family.name} checkpoint ({family.pipeline_class}), not {asked}"
        raise InvalidConfig("generator.family", asked, rule)
    return family, spec


def video_defaults(family: str | None, model_path: Path | None) -> tuple[str, dict[str, Any]] | None:
    """(family name, `video` defaults) for a config: the family's, and the checkpoint folder's rules when it is readable.

    `family` (a config's or the catalogue's) wins over the folder's; they must
    agree. None when neither is known (no generator configured).
    """
    folder = model_path if model_path is not None and model_path.is_dir() else None
    named = family_named(family) if family is not None else None
    if folder is None:  # not staged here (yet): loading it says so; a profile's settings need no folder
        return None if named is None else (named.name, dict(named.defaults))
    found, spec = inspect_checkpoint(folder, family)
    return found.name, {**found.defaults, **spec.video_defaults()}


def read_json(folder: Path, name: str) -> dict[str, Any]:
    """A checkpoint's JSON config as a dict; InvalidConfig(generator.model_path) if missing or broken."""
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidConfig(_FIELD, str(folder), f"{folder.name}/{name} is missing: not a diffusers checkpoint folder") from None
    except (OSError, ValueError) as exc:
        raise InvalidConfig(_FIELD, str(folder), f"{folder.name}/{name} cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidConfig(_FIELD, str(folder), f"{folder.name}/{name} must hold a JSON object")
    return data


def _inspect_cogvideox(path: Path, index: dict[str, Any]) -> CheckpointSpec:
    """The rules of a CogVideoX I2V checkpoint folder; InvalidConfig(generator.model_path) if it is not one.

    Rules: transformer/ and vae/ have config.json; the transformer takes 2 x
    the VAE's latent channels (noise + image latents) and returns the VAE's
    latent channels.
    """
    transformer, vae = read_json(path, "transformer/config.json"), read_json(path, "vae/config.json")
    latent = vae.get("latent_channels", 16)
    if transformer.get("in_channels") != 2 * latent or transformer.get("out_channels") != latent:
        rule = (
            f"{path.name}: the transformer is not the image-to-video layout: in_channels {transformer.get('in_channels')} and "
            f"out_channels {transformer.get('out_channels')}, expected {2 * latent} and {latent} "
            "(2 x and 1 x the VAE's latent channels); is this a text-to-video checkpoint?"
        )
        raise InvalidConfig(_FIELD, str(path), rule)
    return _cogvideox_spec(path.name, transformer, vae)


def _cogvideox_spec(name: str, transformer: dict[str, Any], vae: dict[str, Any]) -> CheckpointSpec:
    """Canvas and frame rules from the transformer and VAE configs (diffusers' defaults where absent)."""
    scale = 2 ** (len(vae.get("block_out_channels", (128, 256, 256, 512))) - 1)
    canvas = (transformer.get("sample_width", 90) * scale, transformer.get("sample_height", 60) * scale)
    fixed = bool(transformer.get("use_learned_positional_embeddings", False))
    if transformer.get("patch_size_t") is not None and not fixed:
        canvas = COGVIDEOX15_CANVAS  # 1.5: sample_* size the RoPE table, not the canvas it was trained at
    return CheckpointSpec(
        name=name,
        canvas_size=canvas,
        fixed_canvas=fixed,
        size_multiple=scale * transformer.get("patch_size", 2),
        frame_step=int(vae.get("temporal_compression_ratio", 4)) * LATENT_DECODE_GROUP,
        options={"max_text_seq_length": transformer.get("max_text_seq_length", 226)},
    )


# CogVideoX-5B-I2V's settings in the paper (a CogVideoX1.5 profile sets its own: 81 frames, 16 fps, a free canvas).
COGVIDEOX_DEFAULTS = {
    "frame_step": 8,
    "size_multiple": 16,
    "num_frames": 49,
    "num_inference_steps": 50,
    "guidance_scale": 6.0,
    "fps": 8,
}


def _inspect_wan(path: Path, index: dict[str, Any]) -> CheckpointSpec:
    """The rules of a Wan image-to-video checkpoint folder; InvalidConfig(generator.model_path) if it is not one."""
    transformer, vae = read_json(path, "transformer/config.json"), read_json(path, "vae/config.json")
    expand = bool(index.get("expand_timesteps", False))
    _check_wan_layout(path.name, transformer, vae, expand)
    two_experts = _check_wan_experts(path, index, transformer)
    patch = list(transformer.get("patch_size", (1, 2, 2)))
    if len(patch) != 3 or patch[1] != patch[2]:
        raise InvalidConfig(_FIELD, str(path), f"{path.name}: transformer patch_size {patch} is not [t, p, p]")
    return CheckpointSpec(
        name=path.name,
        canvas_size=WAN_CANVAS_TI2V if expand else WAN_CANVAS_480P,
        fixed_canvas=False,
        size_multiple=int(vae.get("scale_factor_spatial", 8)) * patch[1],
        frame_step=int(vae.get("scale_factor_temporal", 4)),
        options={"two_experts": two_experts, "text_tokens": WAN_TEXT_TOKENS},
    )


def _check_wan_layout(name: str, transformer: dict[str, Any], vae: dict[str, Any], expand: bool) -> None:
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


def _check_wan_experts(path: Path, index: dict[str, Any], transformer: dict[str, Any]) -> bool:
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


# Wan2.1-I2V-14B-480P's published settings (the Wan2.1 repository's generate.py for i2v: 40 steps, guidance 5.0;
# 81 frames at 16 fps). No shift here: null is the checkpoint's own scheduler shift (480P 3.0); profiles set theirs.
WAN_DEFAULTS = {
    "frame_step": 4,
    "size_multiple": 16,
    "num_frames": 81,
    "num_inference_steps": 40,
    "guidance_scale": 5.0,
    "fps": 16,
}


def _inspect_ltx(path: Path, index: dict[str, Any]) -> CheckpointSpec:
    """The rules of an LTX-Video checkpoint folder; InvalidConfig(generator.model_path) if it is not one.

    Rules: transformer/ and vae/ have config.json; the transformer takes and
    returns the VAE's latent channels (LTX conditions on the first latent
    frame, not on extra channels) in one-frame patches.
    """
    transformer, vae = read_json(path, "transformer/config.json"), read_json(path, "vae/config.json")
    latent = vae.get("latent_channels", 128)
    if transformer.get("in_channels") != latent or transformer.get("out_channels") != latent:
        rule = (
            f"{path.name}: the transformer takes in_channels {transformer.get('in_channels')} and returns out_channels "
            f"{transformer.get('out_channels')}, expected {latent} and {latent} (the VAE's latent channels): not an "
            "LTX-Video transformer and VAE pair"
        )
        raise InvalidConfig(_FIELD, str(path), rule)
    if transformer.get("patch_size_t", 1) != 1:
        patch = transformer.get("patch_size_t")
        rule = f"{path.name}: transformer patch_size_t {patch}; f2f knows LTX-Video with 1-frame patches"
        raise InvalidConfig(_FIELD, str(path), rule)
    return _ltx_spec(path.name, transformer, vae)


def _ltx_spec(name: str, transformer: dict[str, Any], vae: dict[str, Any]) -> CheckpointSpec:
    """Canvas and frame rules from the VAE's compression (as AutoencoderKLLTXVideo computes it) and the patch size."""
    scaling = sum(bool(s) for s in vae.get("spatio_temporal_scaling", (True, True, True, False)))
    spatial = vae.get("spatial_compression_ratio") or vae.get("patch_size", 4) * 2**scaling
    temporal = vae.get("temporal_compression_ratio") or vae.get("patch_size_t", 1) * 2**scaling
    return CheckpointSpec(
        name=name,
        canvas_size=LTX_CANVAS,
        fixed_canvas=False,
        size_multiple=int(spatial) * transformer.get("patch_size", 1),
        frame_step=int(temporal),
    )


# LTX-Video 0.9.1's published settings (diffusers' LTX-Video example and notes): 768x512, 161 frames, 50 steps,
# guidance 3.0 (the pipeline's default), written at 24 fps. The distilled profile sets its own (8 steps, guidance 1.0).
LTX_DEFAULTS = {
    "max_canvas_pixels": LTX_CANVAS[0] * LTX_CANVAS[1],
    "size_multiple": 32,
    "frame_step": 8,
    "num_frames": 161,
    "num_inference_steps": 50,
    "guidance_scale": 3.0,
    "fps": 24,
}


def _inspect_chronoedit(path: Path, index: dict[str, Any]) -> CheckpointSpec:
    """The rules of a ChronoEdit checkpoint folder; InvalidConfig(generator.model_path) if it is not one.

    Rules: every part the pipeline loads is in model_index.json and has its
    folder (`CHRONOEDIT_PARTS`: the CLIP image encoder and its processor too);
    the transformer is Wan2.1 I2V's layout (noise + 4 mask + image latents) and
    one expert. Frames: the edit is latent frame `rope_temporal_skip_len - 1`
    in time (the transformer's RoPE puts it there), so a temporal-reasoning
    clip is exactly that many latent frames: `4 (skip - 1) + 1` frames (29).
    """
    missing = [part for part in CHRONOEDIT_PARTS if not isinstance(index.get(part), list) or not (path / part).is_dir()]
    if missing:
        rule = f"{path.name} lacks {', '.join(missing)}: a ChronoEdit checkpoint has {', '.join(CHRONOEDIT_PARTS)}"
        raise InvalidConfig(_FIELD, str(path), rule)
    if index.get("transformer_2") not in (None, [None, None]):
        rule = f"{path.name}: ChronoEdit has one transformer (model_index.json names transformer_2)"
        raise InvalidConfig(_FIELD, str(path), rule)
    transformer, vae = read_json(path, "transformer/config.json"), read_json(path, "vae/config.json")
    _check_wan_layout(path.name, transformer, vae, expand=False)
    patch = list(transformer.get("patch_size", (1, 2, 2)))
    step = int(vae.get("scale_factor_temporal", 4))
    skip = int(transformer.get("rope_temporal_skip_len", 8))
    return CheckpointSpec(
        name=path.name,
        canvas_size=CHRONOEDIT_CANVAS,
        fixed_canvas=False,
        size_multiple=int(vae.get("scale_factor_spatial", 8)) * patch[1],
        frame_step=step,
        options={"text_tokens": WAN_TEXT_TOKENS, "reasoning_frames": step * (skip - 1) + 1},
    )


# ChronoEdit-14B's published settings (its inference script: 50 steps, guidance 5.0, UniPC flow_shift 5.0, a 720p
# area; 5 frames, the source and the edit; temporal reasoning off). Its video is written at 8 fps there.
CHRONOEDIT_DEFAULTS = {
    "max_canvas_pixels": CHRONOEDIT_CANVAS[0] * CHRONOEDIT_CANVAS[1],
    "size_multiple": 16,
    "frame_step": 4,
    "num_frames": 5,
    "num_inference_steps": 50,
    "guidance_scale": 5.0,
    "shift": 5.0,
    "fps": 8,
    "enable_temporal_reasoning": False,
    "num_temporal_reasoning_steps": 0,
}

FAMILIES = {
    "cogvideox": FamilyFacts("cogvideox", COGVIDEOX_CLASS, _inspect_cogvideox, COGVIDEOX_DEFAULTS),
    # WanPipeline: Wan2.2-TI2V-5B-Diffusers; the inspection refuses a text-to-video WanPipeline folder
    "wan": FamilyFacts("wan", "WanImageToVideoPipeline", _inspect_wan, WAN_DEFAULTS, index_classes=("WanPipeline",)),
    # how LTX-Video 0.9.x checkpoints name themselves
    "ltx": FamilyFacts("ltx", "LTXImageToVideoPipeline", _inspect_ltx, LTX_DEFAULTS, ("LTXPipeline", "LTXConditionPipeline")),
    # an editing model: prompted with a rewritten edit instruction, as its authors' prompt enhancer writes one
    # the Hub's ChronoEdit-14B-Diffusers is tagged WanImageToVideoPipeline: its transformer class tells it apart
    "chronoedit": FamilyFacts(
        "chronoedit",
        "ChronoEditPipeline",
        _inspect_chronoedit,
        CHRONOEDIT_DEFAULTS,
        caption_style="instruction",
        transformer_class="ChronoEditTransformer3DModel",
    ),
}
