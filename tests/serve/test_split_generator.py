"""A generator replica split over two processes (generator.parallel, Ulysses 2, gloo on the CPU) in real Ray Serve.

An edit on the split application must be the plain edit of the same config
(`f2f edit`, in one process, on the same tiny checkpoints): the caption, the
chosen frame and every candidate frame the same, within one uint8 level
(float rounding of the split attention). The split replica's second rank is
a Ray actor in the replica's placement group; killing it mid-video must not
leave the job hanging, and Serve must replace the broken replica. One
application for the module: a cluster's start is most of a test's time.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from harness import SAMPLE, running_app, submit, tiny_config, wait_for  # noqa: E402
from PIL import Image  # noqa: E402

PROMPT = "make the sun set"
SPLIT = {"generator": {"parallel": {"ulysses": 2}}}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split_url(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = {
        "config": tiny_config(tiny_models, tmp_path_factory.mktemp("f2f-cache"), **SPLIT),
        "auth": {"required": False},
        "generator_num_cpus": 0.2,
        "jobs": {"dir": str(tmp_path_factory.mktemp("jobs")), "poll_interval_s": 0.1, "max_attempts": 3},
    }
    with running_app(args) as url:
        yield url


def rank_actors() -> list[tuple[str, str]]:
    """(name, namespace) of the split generators' rank actors."""
    import ray

    from f2f.serving.deployments.ranks import RANK_ACTOR_PREFIX

    actors = ray.util.list_named_actors(all_namespaces=True)
    return [(a["name"], a["namespace"]) for a in actors if a["name"].startswith(RANK_ACTOR_PREFIX)]


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


def test_a_split_generator_replica_gives_the_plain_edit(split_url: str, tiny_models: Path, tmp_path: Path) -> None:
    assert len(rank_actors()) == 1  # rank 1, beside the replica (rank 0)
    job = wait_for(split_url, submit(split_url, {"prompt": PROMPT, "return_frames": "true"}).json()["id"], timeout_s=240)
    assert job["status"] == "succeeded", job["error"]
    split = job["result"]
    labels = range(1, len(split["candidate_frames"]) + 1)
    split_frames = [_pixels(httpx.get(f"{split_url}/v1/edits/{job['id']}/frames/{n}", timeout=30).content) for n in labels]

    config, out = tmp_path / "f2f.yaml", tmp_path / "plain"
    config.write_text(f"cache_dir: {tmp_path / 'cache'}\nmodels_dir: {tiny_models}\n")  # the same checkpoints
    command = [sys.executable, "-m", "f2f.cli", "edit", str(SAMPLE), PROMPT, "--profile", "tiny", "--config", str(config)]
    command += ["--seed", "3", "--save-frames", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    plain = json.loads((out / "result.json").read_text())
    for key in ("caption", "selected_label", "selected_frame", "candidate_frames"):
        assert split[key] == plain[key], key
    plain_frames = [_pixels((out / "candidates" / f"frame_{frame:03d}.png").read_bytes()) for frame in plain["candidate_frames"]]
    assert len(split_frames) == len(plain_frames) > 0
    # Both sides run on this CPU, so its kernels are the same on each; what differs is the order of the sums (the
    # split's attention, each process's thread count): float32 differences near 1e-5 of the value (a CFG split's
    # largest, docs/performance.md), far below one 8-bit level, which can still tip a pixel across a rounding edge.
    for split_frame, plain_frame in zip(split_frames, plain_frames, strict=True):
        assert split_frame.shape == plain_frame.shape and np.abs(split_frame - plain_frame).max() <= 1


def test_a_rank_lost_mid_video_ends_the_job_and_the_replica_is_replaced(split_url: str) -> None:
    import ray

    (first_rank,) = rank_actors()
    job_id = submit(split_url, {"prompt": "make it rain", "steps": "400"}).json()["id"]
    wait_for(split_url, job_id, lambda job: job["progress"] is not None, timeout_s=120)
    ray.kill(ray.get_actor(*first_rank), no_restart=True)
    job = wait_for(split_url, job_id, timeout_s=300)
    assert job["status"] == "succeeded", job["error"]  # retried once the broken replica left routing
    assert job["attempts"] >= 2
    after = wait_for(split_url, submit(split_url, {"prompt": "make it snow"}).json()["id"], timeout_s=300)
    assert after["status"] == "succeeded", after["error"]
    assert len(rank_actors()) == 1 and rank_actors() != [first_rank]  # a new replica with a new rank 1
