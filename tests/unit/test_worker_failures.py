"""The edit worker's failures that need no model: a volume filling up mid-outputs, and a replica's error wrapped by Ray."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from f2f.config import F2FConfig
from f2f.errors import F2FError, GeneratorOutOfMemory, unwrap
from f2f.serving import worker_deployment
from f2f.serving.jobs import EditRequest, JobStore, StorageFull
from f2f.serving.worker_deployment import EditWorker


@pytest.fixture
def worker(tmp_path: Path) -> EditWorker:
    """A worker with a job store and a config, and no model handles (only its output writing is used)."""
    worker = object.__new__(EditWorker)
    worker.store, worker.config = JobStore(tmp_path / "store", ttl_s=60), F2FConfig()
    return worker


def test_a_volume_that_fills_up_mid_outputs_is_storage_full_and_the_outputs_are_removed(
    worker: EditWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, _ = worker.store.create(b"source", EditRequest(prompt="p", seeds=[1], return_frames=True), "fp")
    folder = worker.store.job_dir(record.id)

    def fills_up(result: Any, out: Path, **_: Any) -> None:
        (out / "edited.png").write_bytes(b"edited")
        (out / "candidates").mkdir()
        (out / "candidates" / "frame_004.png").write_bytes(b"frame")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "collage.png"))

    monkeypatch.setattr(worker_deployment, "write_outputs", fills_up)
    with pytest.raises(StorageFull, match=f"the outputs of job {record.id} could not be written"):
        worker._write_outputs(record, None)  # type: ignore[arg-type]
    assert sorted(os.listdir(folder)) == ["job.json", "source.png"]
    assert worker.store.get(record.id).status == "queued"


def test_another_write_error_keeps_its_kind(worker: EditWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    record, _ = worker.store.create(b"source", EditRequest(prompt="p", seeds=[1]), "fp")

    def denied(result: Any, out: Path, **_: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(out))

    monkeypatch.setattr(worker_deployment, "write_outputs", denied)
    with pytest.raises(PermissionError):
        worker._write_outputs(record, None)  # type: ignore[arg-type]


def test_a_replica_error_wrapped_by_ray_is_still_f2f_error_and_its_message_is_the_replicas() -> None:
    from ray.exceptions import RayTaskError

    original = GeneratorOutOfMemory("the video did not fit in cuda:0 memory")
    wrapped = RayTaskError("generate_stream", "Traceback (most recent call last): ...", original).as_instanceof_cause()
    assert isinstance(wrapped, F2FError) and wrapped.code == "out_of_memory"  # the worker's `except F2FError` sees it
    assert str(wrapped) != str(original)  # Ray's text: the process, not the replica's message
    assert unwrap(wrapped) is original and unwrap(original) is original
