"""A generator replica split over two processes (generator.parallel, Ulysses 2, gloo on the CPU) in real Ray Serve.

The same edit runs on the split application and then on the plain one (one
cluster at a time): the caption, the chosen frame and every candidate frame
must be the same, within one uint8 level (float rounding of the split
attention). The split replica's second rank is a Ray actor in the replica's
placement group; killing it mid-video must not leave the job hanging, and
Serve must replace the broken replica.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from harness import running_app, submit, wait_for  # noqa: E402
from PIL import Image  # noqa: E402

PROMPT = {"prompt": "make the sun set", "return_frames": "true"}
SPLIT = {"generator": {"parallel": {"ulysses": 2}}}


def edit_on(args: dict[str, Any], check: Any = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One edit on the application built from `args`: the job and its candidate frames (0..255 arrays)."""
    with running_app(args) as url:
        if check is not None:
            check()
        job = wait_for(url, submit(url, PROMPT).json()["id"], timeout_s=240)
        assert job["status"] == "succeeded", job["error"]
        labels = range(1, len(job["result"]["candidate_frames"]) + 1)
        frames = [httpx.get(f"{url}/v1/edits/{job['id']}/frames/{label}", timeout=30).content for label in labels]
    return job, [np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16) for png in frames]


@pytest.fixture(scope="module")
def app_args(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield {
        "config": {"profile": "tiny", "cache_dir": str(tmp_path_factory.mktemp("f2f-cache")), "seed": 3},
        "auth": {"required": False},
        "generator_num_cpus": 0.2,
        "jobs": {"dir": str(tmp_path_factory.mktemp("jobs")), "poll_interval_s": 0.1},
    }


def rank_actors() -> list[tuple[str, str]]:
    """(name, namespace) of the split generators' rank actors."""
    import ray

    from f2f.serving.deployments.ranks import RANK_ACTOR_PREFIX

    actors = ray.util.list_named_actors(all_namespaces=True)
    return [(a["name"], a["namespace"]) for a in actors if a["name"].startswith(RANK_ACTOR_PREFIX)]


def _two_ranks() -> None:
    assert len(rank_actors()) == 1  # rank 1, beside the replica (rank 0)


def test_a_split_generator_replica_gives_the_plain_edit(app_args: dict[str, Any], tmp_path: Path) -> None:
    split_args = {**app_args, "config": {**app_args["config"], **SPLIT}}
    split_job, split_frames = edit_on(split_args, check=_two_ranks)
    plain_job, plain_frames = edit_on(app_args)
    for key in ("caption", "selected_label", "selected_frame", "candidate_frames"):
        assert split_job["result"][key] == plain_job["result"][key], key
    assert len(split_frames) == len(plain_frames) > 0
    for split, plain in zip(split_frames, plain_frames, strict=True):
        assert np.abs(split - plain).max() <= 1


def test_a_rank_lost_mid_video_ends_the_job_and_the_replica_is_replaced(app_args: dict[str, Any]) -> None:
    import ray

    split_args = {**app_args, "config": {**app_args["config"], **SPLIT}, "jobs": {**app_args["jobs"], "max_attempts": 3}}
    with running_app(split_args) as url:
        (first_rank,) = rank_actors()
        job_id = submit(url, {"prompt": "make it rain", "steps": "400"}).json()["id"]
        wait_for(url, job_id, lambda job: job["progress"] is not None, timeout_s=120)
        ray.kill(ray.get_actor(*first_rank), no_restart=True)
        job = wait_for(url, job_id, timeout_s=300)
        assert job["status"] == "succeeded", job["error"]  # retried once the broken replica left routing
        assert job["attempts"] >= 2
        after = wait_for(url, submit(url, {"prompt": "make it snow"}).json()["id"], timeout_s=300)
        assert after["status"] == "succeeded", after["error"]
        assert len(rank_actors()) == 1 and rank_actors() != [first_rank]  # a new replica with a new rank 1
