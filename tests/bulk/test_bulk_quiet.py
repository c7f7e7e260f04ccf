"""`f2f bulk` writing to a file (a log, `ray job logs`): its own lines only, no progress bar from the model libraries
(the driver's, the actors') and no colour codes from Ray, unless --verbose. Each case is a driver process that
starts its own local Ray (about 15 s here) on a one-row tiny manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "f2f" / "data" / "sample.png"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short; no other Ray is joined
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("verbose", [False, True])
def test_bulk_output_off_a_terminal_is_its_own_lines_unless_verbose(tmp_path: Path, ray_tmp: str, verbose: bool) -> None:
    manifest, config = tmp_path / "m.jsonl", tmp_path / "f2f.yaml"
    manifest.write_text(json.dumps({"id": "a", "image": str(SAMPLE), "prompt": "make it red", "options": {"steps": 2}}) + "\n")
    config.write_text(yaml.safe_dump({"profile": "tiny", "seed": 3, "cache_dir": str(tmp_path / "cache")}))
    # This checkout's f2f in the driver and in every Ray worker it starts; a Ray of its own (RAY_TMPDIR).
    env = {**os.environ, **LOOPBACK_ENV, "PYTHONPATH": str(REPO), "RAY_TMPDIR": ray_tmp}
    for key in ("RAY_ADDRESS", "RAY_COLOR_PREFIX", "TQDM_DISABLE"):
        env.pop(key, None)
    command = [sys.executable, "-m", "f2f.bulk", str(manifest), "--out", str(tmp_path / "out"), "--config", str(config)]
    done = subprocess.run(
        command + (["--verbose"] if verbose else []), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "bulk: 1/1 finished: 1 edited" in output
    # tqdm's rate is on every bar the model libraries draw: the driver's as it writes the tiny checkpoints (always,
    # the cache is new), the actors' as they load them (when Ray forwards their lines before the driver exits)
    assert ("it/s]" in output) is verbose, output[-3000:]
    if not verbose:
        assert "\x1b[" not in output, output[-3000:]  # Ray's colour codes around its "(VLMActor pid=...)" prefix
