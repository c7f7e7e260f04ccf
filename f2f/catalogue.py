"""The model catalogue: which checkpoints each profile uses, and checking a staged folder.

The catalogue is `models/catalogue.yaml` (packaged as `f2f/data/catalogue.yaml`).
A *checkpoint* is either a real one (a hub repository at a pinned revision,
the files its loader needs, their sizes and sha256) or a tiny random-weight
one that f2f builds itself. A *profile* names a generator checkpoint, a VLM
checkpoint and the config values that go with them.

Offline install: `stage` on a connected host downloads the pinned files and
writes `f2f-manifest.json` (sha256 of every file) into each checkpoint folder;
the folder is copied to the air-gapped host; `verify` checks it there against
the catalogue and the manifest.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from f2f.errors import InvalidConfig

MANIFEST = "f2f-manifest.json"
_HASH_CHUNK = 8 << 20


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int | None = Field(None, ge=0, description="Size in bytes; null when not published.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the file; null when not published.")


class LoraFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="The LoRA file inside the checkpoint folder (one of its files).")
    target: Literal["transformer", "transformer_2"] = Field("transformer", description="The transformer it fits.")
    scale: float = Field(1.0, gt=0, le=10, description="Its weight when fused.")


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["generator", "vlm", "lora", "metric"] = Field(
        description="What the checkpoint is used for (lora: fused into a generator; metric: f2f eval)."
    )
    dir: str = Field(description="Folder name inside the models folder.")
    tiny: str | None = Field(None, description="Built by f2f (random weights), not downloaded: the builder's kind.")
    family: str | None = Field(None, description="generator and lora: the video family (f2f.families.FAMILIES).")
    licence: str | None = Field(None, description="The weights' licence, as its model card names it.")
    memory_gib: float | None = Field(
        None, gt=0, description="GPU memory the weights take in bfloat16, in GiB (an estimate: parameters x 2 bytes)."
    )
    lora: tuple[LoraFile, ...] = Field((), description="role lora: its files, each fused into one transformer.")
    repo: str | None = Field(None, description="Hub repository id.")
    revision: str | None = Field(None, pattern=r"^[0-9a-f]{40}$", description="Pinned commit of the repository.")
    files: dict[str, FileEntry] = Field(default_factory=dict, description="Every file the loader needs.")
    notes: str = Field("", description="What an operator should know.")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(description="One line for `f2f models list`.")
    generator: str = Field(description="Checkpoint name of the video model.")
    vlm: str = Field(description="Checkpoint name of the VLM.")
    lora: tuple[str, ...] = Field((), description="Checkpoint names of LoRAs fused into the generator, in order.")
    config: dict[str, Any] = Field(default_factory=dict, description="Config values of this profile (under the user's).")


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoints: dict[str, Checkpoint]
    profiles: dict[str, Profile]

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise InvalidConfig("profile", name, f"unknown profile; known: {', '.join(self.profiles)}")
        return self.profiles[name]

    def is_tiny(self, profile: str) -> bool:
        """Every checkpoint of the profile is built by f2f (random weights): it needs no staged folder."""
        return all(ckpt.tiny for ckpt in self.checkpoints_of(profile).values())

    def checkpoints_of(self, profile: str) -> dict[str, Checkpoint]:
        """The profile's checkpoints by role: {"generator": ..., "vlm": ..., "lora", "lora.1", ...: each LoRA}."""
        p = self.profile(profile)
        loras = {("lora" if i == 0 else f"lora.{i}"): self.checkpoints[name] for i, name in enumerate(p.lora)}
        return {"generator": self.checkpoints[p.generator], "vlm": self.checkpoints[p.vlm], **loras}


@functools.cache
def load_catalogue() -> Catalogue:
    """The packaged catalogue, validated (profiles must name known checkpoints of the right role)."""
    text = (resources.files("f2f") / "data" / "catalogue.yaml").read_text(encoding="utf-8")
    try:
        catalogue = Catalogue.model_validate(yaml.safe_load(text))
    except ValidationError as exc:  # a broken catalogue is a packaging bug, said plainly
        raise InvalidConfig("catalogue", "models/catalogue.yaml", str(exc)) from None
    for name, profile in catalogue.profiles.items():
        for role in ("generator", "vlm"):
            ckpt = catalogue.checkpoints.get(getattr(profile, role))
            if ckpt is None or ckpt.role != role:
                raise InvalidConfig(f"profiles.{name}.{role}", getattr(profile, role), f"must name a {role} checkpoint")
        for lora in profile.lora:
            ckpt = catalogue.checkpoints.get(lora)
            if ckpt is None or ckpt.role != "lora" or ckpt.family != catalogue.checkpoints[profile.generator].family:
                rule = "must name a lora checkpoint of the generator's family"
                raise InvalidConfig(f"profiles.{name}.lora", lora, rule)
    return catalogue


# --- checking a folder -----------------------------------------------------------------


@dataclass
class Report:
    """What `verify_folder` found in one checkpoint folder."""

    folder: Path
    folder_missing: bool = False
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "path: why"
    unverified: list[str] = field(default_factory=list)  # no sha256 in the catalogue nor the manifest

    @property
    def ok(self) -> bool:
        return not (self.folder_missing or self.missing or self.mismatched)

    def lines(self) -> list[str]:
        if self.folder_missing:
            return [f"{self.folder}: NOT OK: folder missing"]
        out = [f"{self.folder}: {'ok' if self.ok else 'NOT OK'}"]
        out += [f"  missing    {p}" for p in self.missing]
        out += [f"  mismatched {p}" for p in self.mismatched]
        out += [f"  extra      {p}" for p in self.extra]
        out += [f"  unverified {p} (no published sha256 and no manifest entry)" for p in self.unverified]
        return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files_on_disk(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and not p.relative_to(folder).parts[0].startswith(".")
    }


def _manifest(folder: Path) -> dict[str, FileEntry]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {k: FileEntry.model_validate(v) for k, v in data["files"].items()}
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise InvalidConfig("models", str(path), f"not a valid f2f manifest ({exc})") from None


def verify_folder(
    folder: Path, ckpt: Checkpoint, *, hashes: bool = True, progress: Callable[[str], None] | None = None
) -> Report:
    """Compare a staged folder with the catalogue entry (and the folder's manifest).

    A tiny checkpoint is compared with the manifest its builder wrote (what
    `f2f models make-tiny` made: every file, its size and sha256). Missing
    files and mismatches (size, or sha256 with `hashes`) make the report not
    ok; extra files and files whose hash nobody published are listed but allowed.
    """
    report = Report(folder)
    if not folder.is_dir():
        report.folder_missing = True
        return report
    on_disk, manifest = _files_on_disk(folder), _manifest(folder)
    if ckpt.tiny and not (folder / MANIFEST).is_file():
        report.missing = [f"{MANIFEST} (what `f2f models make-tiny` writes; build the folder again with it)"]
        return report
    expected = manifest if ckpt.tiny else ckpt.files
    report.extra = sorted(on_disk - set(expected))
    for name, entry in sorted(expected.items()):
        if name not in on_disk:
            report.missing.append(name)
            continue
        staged = None if ckpt.tiny else manifest.get(name)
        problem = _check_file(folder / name, entry, staged, hashes, progress)
        if problem == "unverified":
            report.unverified.append(name)
        elif problem:
            report.mismatched.append(f"{name}: {problem}")
    return report


def _check_file(
    path: Path, entry: FileEntry, staged: FileEntry | None, hashes: bool, progress: Callable[[str], None] | None
) -> str | None:
    size = path.stat().st_size
    expected_size = entry.size if entry.size is not None else (staged.size if staged else None)
    if expected_size is not None and size != expected_size:
        return f"size {size} bytes, expected {expected_size}"
    expected = entry.sha256 or (staged.sha256 if staged else None)
    if not hashes:
        return None
    if expected is None:
        return "unverified"
    if progress:
        progress(f"sha256 {path}")
    actual = sha256_of(path)
    return None if actual == expected else f"sha256 {actual}, expected {expected}"


def check_profile_folder(models_dir: Path, profile: str) -> dict[str, Path]:
    """Fast pre-flight before loading: every checkpoint folder of the profile exists with its files at
    the expected sizes. Raises InvalidConfig naming the folder and what is wrong."""
    folders = {}
    for role, ckpt in load_catalogue().checkpoints_of(profile).items():
        folder = models_dir / ckpt.dir
        if ckpt.tiny is None:
            report = verify_folder(folder, ckpt, hashes=False)
            if not report.ok:
                problems = "; ".join(
                    ["folder missing"]
                    if report.folder_missing
                    else [*(f"missing {m}" for m in report.missing[:5]), *report.mismatched[:5]]
                )
                what = f"{ckpt.repo}@{(ckpt.revision or '?')[:12]}"
                rule = f"{folder.name} is not a complete {what} checkpoint ({problems}); see `f2f models verify`"
                raise InvalidConfig("models_dir", str(folder), rule)
        folders[role] = folder
    return folders


# --- staging on a connected host ----------------------------------------------------------


def stage_checkpoint(ckpt: Checkpoint, folder: Path, download: Callable[..., Any] | None = None) -> Report:
    """Download the pinned files of `ckpt` into `folder`, hash them and write the manifest."""
    if ckpt.repo is None or ckpt.revision is None:
        rule = (
            "has no pinned repository and revision to stage from (not pinned yet: its catalogue notes say why; pin a "
            "verified revision and its files in models/catalogue.yaml first)"
        )
        raise InvalidConfig("checkpoint", ckpt.dir, rule)
    if download is None:
        download = _hub_download()
    folder.mkdir(parents=True, exist_ok=True)
    download(repo_id=ckpt.repo, revision=ckpt.revision, local_dir=folder, allow_patterns=sorted(ckpt.files))
    write_manifest(
        folder, [name for name in sorted(ckpt.files) if (folder / name).is_file()], repo=ckpt.repo, revision=ckpt.revision
    )
    return verify_folder(folder, ckpt)


def write_manifest(folder: Path, names: list[str] | None = None, **about: Any) -> None:
    """Write `f2f-manifest.json`: `about` and the size and sha256 of `names` (default: every file in `folder`)."""
    names = sorted(_files_on_disk(folder)) if names is None else names
    files = {name: {"size": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)} for name in names}
    (folder / MANIFEST).write_text(json.dumps({**about, "files": files}, indent=2) + "\n")


def _hub_download() -> Callable[..., Any]:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        from f2f.errors import BackendNotConfigured

        raise BackendNotConfigured("staging needs huggingface_hub: pip install 'f2f[stage]'") from None
    return snapshot_download
