"""`f2f models make-tiny DIR && f2f models verify DIR`: what make-tiny writes verifies, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")


def f2f(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "f2f.cli", *args], capture_output=True, text=True, timeout=600, env=env)


def test_a_fresh_make_tiny_folder_verifies(tmp_path):
    from f2f.catalogue import load_catalogue

    made = f2f("models", "make-tiny", str(tmp_path))
    assert made.returncode == 0, made.stderr
    tiny = [c.dir for c in load_catalogue().checkpoints.values() if c.tiny]
    verified = f2f("models", "verify", str(tmp_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert sorted(line for line in verified.stdout.splitlines() if not line.startswith("  ")) == sorted(
        f"{tmp_path / d}: ok" for d in tiny
    )
    profile = f2f("models", "verify", str(tmp_path), "--profile", "tiny")
    assert profile.returncode == 0 and profile.stdout.count(": ok") == 2, profile.stdout + profile.stderr
    one = f2f("models", "verify", str(tmp_path), "--checkpoint", "tiny-qwen2-vl")
    assert one.returncode == 0 and one.stdout == f"{tmp_path / 'tiny-qwen2-vl'}: ok\n", one.stdout + one.stderr
