"""Model backends behind the core's two protocols (`f2f.protocols`).

Each backend module imports its heavy library (torch, diffusers, vllm,
transformers, httpx) itself, so `import f2f` stays light:

- `video/`: `i2v.DiffusersVideoGenerator`, one diffusers image-to-video seam for every
  family of checkpoint (`i2v.FAMILIES`: `cogvideox`, CogVideoXImageToVideoPipeline; `wan`,
  WanImageToVideoPipeline; `ltx`, LTXImageToVideoPipeline; `chronoedit`, ChronoEditPipeline), with LoRAs,
  latent masks, speed-ups and split;
- `vlm/`: `vllm_vlm.VllmVLM`, `hf_vlm.TransformersVLM`, `openai_vlm.OpenAIVLM`;
- `tiny/`: random-weight checkpoints of the same architectures (`tiny_cogvideox`, `tiny_wan`,
  `tiny_ltx`, `tiny_chronoedit`, `tiny_qwen`), built offline, for tests and the demo.

`build_backends` turns a config into a loaded pair. It checks everything it
can (folders, the catalogue, the canvas and frame rules of the checkpoint)
before the slow part, loading weights, and never falls back to anything.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from f2f.catalogue import Checkpoint, check_profile_folder, load_catalogue, write_manifest
from f2f.config import F2FConfig
from f2f.errors import BackendNotConfigured, InvalidConfig
from f2f.protocols import VLM, LoadedVideoGenerator, Models

if TYPE_CHECKING:
    from f2f.backends.video.parallel import ParallelGroups


@dataclass(frozen=True)
class Backends(Models):
    """The `Models` of an edit in this process, loaded; `close()` (or `with`) releases them."""

    generator: LoadedVideoGenerator

    def close(self) -> None:
        for backend in (self.vlm, self.generator):
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Backends:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_backends(config: F2FConfig) -> Backends:
    """The VLM and the video generator that `config` asks for, loaded."""
    prepare_models(config)
    generator = load_generator(config)
    try:
        vlm = load_vlm(config)
    except BaseException:
        generator.close()
        raise
    return Backends(vlm=vlm, generator=generator)


def force_offline() -> None:
    """Model libraries never reach a hub, nor do the engine processes they start.

    The loaders already read local folders only; this also turns off the
    hub's own lookups. Call it before huggingface_hub is imported (it reads them once).
    """
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[key] = "1"


def prepare_models(config: F2FConfig) -> None:
    """Everything that can fail fast before weights load: models configured, a profile's
    tiny checkpoints built (first use), its folders complete."""
    if config.generator.model_path is None or (config.vlm.model_path is None and config.vlm.backend != "openai"):
        raise BackendNotConfigured(
            "no model is configured: use --profile (see `f2f models list`; `--profile tiny` runs on any CPU) "
            "or set generator.model_path and vlm.model_path in the config"
        )
    if config.profile and config.models_dir:
        check_models_dir(config)
        ensure_tiny_checkpoints(config.models_dir, config.profile)
        check_profile_folder(config.models_dir, config.profile)


def check_models_dir(config: F2FConfig) -> None:
    """f2f creates folders only under cache_dir: a models_dir elsewhere that does not exist is a typo, not a new folder.

    (Into an existing one, a tiny profile's checkpoints are built on first use; `f2f models make-tiny DIR` and
    `f2f models stage DIR` create DIR.)
    """
    folder = config.models_dir
    if folder is None or folder.is_dir() or folder.resolve().is_relative_to(config.cache_dir.resolve()):
        return
    rule = (
        f"folder missing: give an existing folder (`f2f models make-tiny DIR` or `f2f models stage DIR` make one), "
        f"or leave --models out for a tiny profile (built in {config.cache_dir / 'tiny'})"
    )
    raise InvalidConfig("models_dir", str(folder), rule)


def load_generator(config: F2FConfig, parallel: ParallelGroups | None = None) -> LoadedVideoGenerator:
    """The video backend of `config.generator`, `config.video` checked against its checkpoint before its weights load.

    A split generator (`generator.parallel` over more than one process) needs
    this process's rank groups (`parallel`, from `f2f.backends.video.parallel.init_groups`).
    """
    from f2f.backends.video.i2v import DiffusersVideoGenerator, check_video, inspect_checkpoint

    layout = config.generator.parallel
    if layout.world_size > 1 and parallel is None:
        rule = "splits one video over several processes: the service places them (Ray Serve), or start them with torchrun"
        raise InvalidConfig("generator.parallel", f"cfg {layout.cfg} x ulysses {layout.ulysses}", rule)
    if config.generator.model_path is not None:  # the video settings against the checkpoint's configs, before its weights
        family, spec = inspect_checkpoint(config.generator.model_path, config.generator.family)
        check_video(family, spec, config.video, sequence_split=layout.ulysses)
    return DiffusersVideoGenerator.from_config(config.generator, parallel=parallel, mask=config.mask)


def resolve_device(section: str, device: str, dtype: str, cuda_available: bool) -> tuple[str, str]:
    """(device, dtype) of a model (`f2f.config.Device`, `DType`): auto -> cuda + bfloat16 with CUDA, else cpu + float32."""
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    if device == "cuda" and not cuda_available:
        raise InvalidConfig(f"{section}.device", device, "CUDA is not available on this machine (use auto or cpu)")
    return device, dtype if dtype != "auto" else "bfloat16" if device == "cuda" else "float32"


def load_vlm(config: F2FConfig) -> VLM:
    """The VLM backend of `config.vlm`."""
    return vlm_class(config.vlm.backend).from_config(config.vlm)


def vlm_class(backend: str) -> Any:
    """The backend class for `vlm.backend`; each has `from_config` and `close`."""
    if backend == "vllm":
        from f2f.backends.vlm.vllm_vlm import VllmVLM

        return VllmVLM
    if backend == "transformers":
        from f2f.backends.vlm.hf_vlm import TransformersVLM

        return TransformersVLM
    from f2f.backends.vlm.openai_vlm import OpenAIVLM

    return OpenAIVLM


# --- tiny checkpoints ---------------------------------------------------------------------


def make_tiny(out_dir: str | Path, seed: int = 0, names: list[str] | None = None) -> dict[str, Path]:
    """Build the catalogue's tiny checkpoints (all, or `names`) into out_dir/<dir>."""
    catalogue = load_catalogue()
    names = names or [name for name, ckpt in catalogue.checkpoints.items() if ckpt.tiny]
    return {
        name: _build_tiny(catalogue.checkpoints[name], Path(out_dir) / catalogue.checkpoints[name].dir, seed) for name in names
    }


def ensure_tiny_checkpoints(models_dir: Path, profile: str) -> None:
    """Build the profile's tiny checkpoints that are not in models_dir yet (first use)."""
    for ckpt in load_catalogue().checkpoints_of(profile).values():
        if ckpt.tiny and not (models_dir / ckpt.dir).is_dir():
            _build_tiny(ckpt, models_dir / ckpt.dir, seed=0)


def _build_tiny(ckpt: Checkpoint, folder: Path, seed: int) -> Path:
    """Build into a temporary sibling, then rename: a crash or a concurrent build never leaves half a folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _tiny_builder(ckpt.tiny)(scratch / "ckpt", seed)
        write_manifest(scratch / "ckpt", tiny=ckpt.tiny, seed=seed)  # what `f2f models verify` checks the folder against
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(scratch / "ckpt", folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


# The tiny-checkpoint builders by the catalogue's `tiny` kind: (module, function, keyword arguments); each is
# called as function(folder, seed=seed, **arguments) and writes a complete checkpoint folder.
TINY_BUILDERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cogvideox-i2v": ("f2f.backends.tiny.tiny_cogvideox", "make_tiny_cogvideox", {}),
    "cogvideox1.5-i2v": ("f2f.backends.tiny.tiny_cogvideox", "make_tiny_cogvideox", {"variant": "cogvideox1.5"}),
    "ltx": ("f2f.backends.tiny.tiny_ltx", "make_tiny_ltx", {}),
    "wan2.1-i2v": ("f2f.backends.tiny.tiny_wan", "make_tiny_wan", {"variant": "wan2.1"}),
    "wan2.2-i2v": ("f2f.backends.tiny.tiny_wan", "make_tiny_wan", {"variant": "wan2.2"}),
    "wan2.2-ti2v": ("f2f.backends.tiny.tiny_wan", "make_tiny_wan", {"variant": "wan2.2-ti2v"}),
    "chronoedit": ("f2f.backends.tiny.tiny_chronoedit", "make_tiny_chronoedit", {}),
    "qwen2-vl": ("f2f.backends.tiny.tiny_qwen", "make_tiny_qwen", {"variant": "qwen2-vl"}),
    "qwen2.5-vl": ("f2f.backends.tiny.tiny_qwen", "make_tiny_qwen", {"variant": "qwen2.5-vl"}),
    "qwen3-vl": ("f2f.backends.tiny.tiny_qwen", "make_tiny_qwen", {"variant": "qwen3-vl"}),
}


def _tiny_builder(kind: str | None) -> Callable[[Path, int], Any]:
    if kind not in TINY_BUILDERS:
        raise InvalidConfig("catalogue", kind, f"no tiny-checkpoint builder of that kind; known: {', '.join(TINY_BUILDERS)}")
    module, function, arguments = TINY_BUILDERS[kind]
    build = getattr(importlib.import_module(module), function)
    return lambda path, seed: build(path, seed=seed, **arguments)
