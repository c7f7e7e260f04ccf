"""The GPU run's fail-fast step: every import the benchmark makes, and every carried wheel's requirements met.

    PYTHONPATH=<carried site>:. python bench/gpu_imports.py <carried site>
    python bench/gpu_imports.py --rehearsal      # on a CPU: all but torchao (fp8 runs on a GPU only)

Run by bench/gpu-run.sh on the GPU machine before anything is timed (exit 3
names what is missing, so a lease is not spent on a run that dies later), and
by `bench/gpu-run.sh --check` here, in a clean Python 3.12 venv that holds
the GPU image's versions.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys

MODULES = (
    "torch",
    "transformers",
    "pydantic",
    "diffusers",
    "torchao",
    "f2f.config",
    "f2f.backends.video.i2v",
    "f2f.backends.video.cogvideox",
    "f2f.backends.video.parallel",
    "f2f.backends.video.speedups",
    "f2f.backends.tiny.tiny_cogvideox",
)
NAMES = (
    ("diffusers", "CogVideoXImageToVideoPipeline"),
    ("diffusers", "CogVideoXTransformer3DModel"),
    ("diffusers", "AutoencoderKLCogVideoX"),
    ("diffusers", "CogVideoXDDIMScheduler"),
    ("diffusers", "FirstBlockCacheConfig"),
    ("diffusers", "PyramidAttentionBroadcastConfig"),
    ("diffusers", "WanImageToVideoPipeline"),  # bench/families.py
    ("diffusers", "WanTransformer3DModel"),
    ("diffusers", "AutoencoderKLWan"),
    ("diffusers", "UniPCMultistepScheduler"),
    ("diffusers", "LTXImageToVideoPipeline"),
    ("diffusers", "LTXVideoTransformer3DModel"),
    ("diffusers", "AutoencoderKLLTXVideo"),
    ("diffusers", "FlowMatchEulerDiscreteScheduler"),
    ("transformers", "T5EncoderModel"),
    ("transformers", "CLIPVisionModelWithProjection"),
    ("transformers", "CLIPImageProcessor"),
    ("torchao.quantization", "Float8DynamicActivationFloat8WeightConfig"),
    ("torchao.quantization", "quantize_"),
)


def unmet_requirements(site: str) -> list[str]:
    """`wheel: requirement` for each requirement of a wheel installed in `site` that no installed distribution meets."""
    from packaging.requirements import Requirement

    unmet = []
    for dist in metadata.distributions(path=[site]):
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra's or another platform's
            try:
                found = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                unmet.append(f"{dist.metadata['Name']}: {text} (not installed)")
                continue
            if not requirement.specifier.contains(found, prereleases=True):
                unmet.append(f"{dist.metadata['Name']}: {text} (found {found})")
    return unmet


def main(argv: list[str]) -> int:
    rehearsal = "--rehearsal" in argv
    sites = [arg for arg in argv if arg != "--rehearsal"]
    problems = unmet_requirements(sites[0]) if sites else []
    skipped = {"torchao"} if rehearsal else set()
    failed = set()
    for module in MODULES:
        if module in skipped:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # the point: name whatever breaks
            problems.append(f"import {module}: {type(exc).__name__}: {exc}")
            failed.add(module.split(".")[0])
    for module, name in NAMES:
        if module.split(".")[0] in skipped | failed:
            continue  # already named (or, rehearsing, not needed)
        try:
            getattr(importlib.import_module(module), name)
        except Exception as exc:
            problems.append(f"{module}.{name}: {type(exc).__name__}: {exc}")
    if problems:
        print("gpu run: cannot start:", *problems, sep="\n  ", file=sys.stderr)
        return 3
    names = [name for name in ("torch", "transformers", "diffusers", "pydantic", "torchao") if name not in skipped]
    versions = {name: metadata.version(name) for name in names}
    print(f"gpu run: imports ok (Python {sys.version.split()[0]}; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
