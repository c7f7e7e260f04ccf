"""LoRAs for the video generator (`generator.lora`): checked before any weight loads, then fused after load.

A LoRA is read by the checkpoint's own diffusers pipeline class
(`lora_state_dict`, which also converts the original trainers' key names, e.g.
Wan's `diffusion_model.*.lora_down`), and every layer it adapts is matched
against the transformer's weight file headers: a LoRA made for another model
(a missing layer, a wrong shape) is refused naming `generator.lora[i].path`
before the pipeline loads, instead of being half applied. After load, the
LoRAs are loaded through `load_lora_weights` (from the state dicts the check
already read and converted: each file is read once), weighted
(`set_adapters`), fused into the transformer's weights (`fuse_lora`) and their
adapter layers unloaded, so a fused LoRA costs nothing per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from f2f.config import LoraConfig
from f2f.errors import InvalidConfig

_LORA_DOWN, _LORA_UP = ".lora_A.weight", ".lora_B.weight"


def check_loras(pipeline_class: Any, model_path: Path, loras: Sequence[LoraConfig]) -> list[dict[str, Any]]:
    """Each LoRA's state dict in diffusers' key names; InvalidConfig naming `generator.lora[i]...` unless every LoRA
    fits the checkpoint's transformer it targets."""
    if not loras:
        return []
    if not hasattr(pipeline_class, "load_lora_weights"):
        raise InvalidConfig("generator.lora", [str(lora.path) for lora in loras], f"{pipeline_class.__name__} takes no LoRA")
    states = []
    for index, lora in enumerate(loras):
        field = f"generator.lora[{index}]"
        if lora.target == "transformer_2" and not (model_path / "transformer_2").is_dir():
            rule = f"{model_path.name} has one transformer (no transformer_2, the low-noise expert of a two-expert model)"
            raise InvalidConfig(f"{field}.target", lora.target, rule)
        state = _read(pipeline_class, lora.path, f"{field}.path")
        _check_fits(
            _lora_layers(state, lora.path, f"{field}.path"), _weight_shapes(model_path / lora.target), lora, f"{field}.path"
        )
        states.append(state)
    return states


def fuse_loras(pipe: Any, loras: Sequence[LoraConfig], states: Sequence[dict[str, Any]]) -> None:
    """Load (`states`: `check_loras`'), weight and fuse `loras` into the loaded pipeline's transformer(s); their
    adapter layers are then dropped."""
    if not loras:
        return
    names = [f"f2f_lora_{index}" for index in range(len(loras))]
    for name, lora, state in zip(names, loras, states, strict=True):
        extra = {"load_into_transformer_2": True} if lora.target == "transformer_2" else {}
        pipe.load_lora_weights(state, adapter_name=name, **extra)  # diffusers copies a dict it is given
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
    targets = sorted({lora.target for lora in loras})
    pipe.fuse_lora(components=targets, lora_scale=1.0, adapter_names=names)
    pipe.unload_lora_weights()


def _read(pipeline_class: Any, path: Path, field: str) -> dict[str, Any]:
    """A LoRA file's state dict, converted to diffusers' key names by the pipeline class."""
    if not path.is_file():
        raise InvalidConfig(field, str(path), "no such file (a LoRA .safetensors file)")
    try:
        state = pipeline_class.lora_state_dict(str(path), local_files_only=True)
    except Exception as exc:
        raise InvalidConfig(field, str(path), f"not a LoRA file diffusers can read ({type(exc).__name__}: {exc})") from None
    return state[0] if isinstance(state, tuple) else state  # some mixins return (state dict, alphas)


def _lora_layers(state: dict[str, Any], path: Path, field: str) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """{transformer layer: (down shape, up shape)} of a converted LoRA state dict."""
    layers: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for key, tensor in state.items():
        if key.endswith(_LORA_DOWN):
            layer = key.removeprefix("transformer.")[: -len(_LORA_DOWN)]
            up = state.get(key[: -len(_LORA_DOWN)] + _LORA_UP)
            if up is not None:
                layers[layer] = (tuple(tensor.shape), tuple(up.shape))
    if not layers:
        raise InvalidConfig(field, str(path), "holds no LoRA layers (no lora_A/lora_B weight pairs after conversion)")
    return layers


def _weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """{weight name: shape} from a diffusers model folder's safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def _check_fits(
    layers: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], weights: dict[str, tuple[int, ...]], lora: LoraConfig, field: str
) -> None:
    """InvalidConfig unless every adapted layer is a weight of the transformer with the LoRA's (out, in) shape."""
    target = lora.target
    for layer, (down, up) in sorted(layers.items()):
        base = weights.get(f"{layer}.weight")
        if base is None:
            rule = f"does not fit the {target}: it adapts {layer!r}, which the {target} does not have ({len(layers)} layers)"
            raise InvalidConfig(field, str(lora.path), rule)
        if len(base) == 2 and (up[0], down[1]) != base:
            rule = f"does not fit the {target}: {layer!r} is {base[0]}x{base[1]}, the LoRA makes {up[0]}x{down[1]}"
            raise InvalidConfig(field, str(lora.path), rule)
