"""`f2f edit` end to end on the tiny profile, through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vlm_fixtures import vllm_env

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"


def f2f(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "f2f.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("f2f-cache")


def check_outputs(out: Path) -> dict:
    from PIL import Image

    data = json.loads((out / "result.json").read_text())
    assert data["status"] in {"edited", "no_edit", "fallback"}
    assert Image.open(out / "edited.png").size == Image.open(SAMPLE).size
    assert Image.open(out / "collage.png").mode == "RGB"
    assert (out / "video.mp4").stat().st_size > 0
    assert data["candidate_frames"] == [4, 8]  # tiny profile: 9 frames, stride 4
    assert data["letterbox_box"] == [5, 0, 90, 64]  # 640x480 on 96x64
    assert set(data["timings_s"]) >= {"caption", "generate", "select", "total"}
    assert data["alignment"]["applied"] is False  # random-weight frames are noise: auto refuses to warp them
    return data


@pytest.mark.parametrize("profile", ["tiny", "tiny-qwen2.5", "tiny-qwen3"])
def test_edit_tiny_profile_with_transformers(tmp_path, cache_dir, profile):
    out = tmp_path / "out"
    config = tmp_path / "cache.yaml"
    config.write_text(f"cache_dir: {cache_dir}\n")
    result = f2f("edit", str(SAMPLE), "make the sun set behind the hills", "--profile", profile, "--config", str(config),
                 "--out", str(out), "--seed", "3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = check_outputs(out)
    assert data["seed"] == 3
    assert "generate step 2/2" in result.stderr and "select" in result.stderr  # progress on the terminal
    assert (cache_dir / "tiny" / "tiny-cogvideox-i2v" / "model_index.json").exists()  # built on first use


def test_edit_tiny_profile_with_vllm(tmp_path, cache_dir):
    pytest.importorskip("vllm")
    out = tmp_path / "out"
    config = tmp_path / "cache.yaml"
    config.write_text(f"cache_dir: {cache_dir}\n")
    env = vllm_env()  # in-process engine core, a small KV cache, the tests' compile cache
    result = f2f("edit", str(SAMPLE), "A photo of a sunset over the hills.", "--profile", "tiny", "--vlm-backend", "vllm",
                 "--config", str(config), "--out", str(out), env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(out)


def test_same_seed_same_result(tmp_path, cache_dir):
    config = tmp_path / "cache.yaml"
    config.write_text(f"cache_dir: {cache_dir}\n")
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        result = f2f(
            "edit",
            str(SAMPLE),
            "make the sun set",
            "--profile",
            "tiny",
            "--config",
            str(config),
            "--out",
            str(out),
            "--seed",
            "5",
        )
        assert result.returncode == 0, result.stderr
        outs.append(out)
    assert (outs[0] / "edited.png").read_bytes() == (outs[1] / "edited.png").read_bytes()
    first, second = (json.loads((o / "result.json").read_text()) for o in outs)
    assert first["caption"] == second["caption"] and first["selected_frame"] == second["selected_frame"]


def test_a_broken_model_folder_fails_before_loading(tmp_path):
    models = tmp_path / "models"
    (models / "tiny-cogvideox-i2v").mkdir(parents=True)  # exists, so it is not rebuilt, but is empty
    (models / "tiny-qwen2-vl").mkdir()
    result = f2f(
        "edit", str(SAMPLE), "make the sun set", "--profile", "tiny", "--models", str(models), "--out", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert "generator.model_path" in result.stderr and "tiny-cogvideox-i2v" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_tiny_profile_says_what_its_checkpoint_says(tmp_path):
    """A profile's video rules hold on a node without its folder (a Serve head): they equal what the folder says."""
    from f2f.backends import ensure_tiny_checkpoints
    from f2f.catalogue import load_catalogue
    from f2f.config import load_config

    rules = ("width", "height", "max_canvas_pixels", "size_multiple", "frame_step")
    for name in load_catalogue().profiles:
        if not load_catalogue().is_tiny(name):
            continue
        without = load_config(overrides={"profile": name, "cache_dir": str(tmp_path / "empty")}).video
        ensure_tiny_checkpoints(tmp_path / "tiny", name)
        with_folder = load_config(overrides={"profile": name, "cache_dir": str(tmp_path)}).video
        assert {r: getattr(without, r) for r in rules} == {r: getattr(with_folder, r) for r in rules}, name
