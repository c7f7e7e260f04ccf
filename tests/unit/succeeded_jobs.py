"""What the unit tests of the job routes share: the result an edit worker records for a succeeded job, and how it
leaves one."""

from __future__ import annotations

from typing import Any

from f2f.serving.api.candidates import frame_links
from f2f.serving.api.wire import JobResult
from f2f.serving.jobs import JobRecord, Lease, StoreBase


def job_result(job_id: str, candidates: list[int], source_size: tuple[int, int], selected_label: int, **more: Any) -> JobResult:
    """A succeeded edit whose chosen tile is `selected_label` among `candidates`, every candidate frame kept."""
    return JobResult(
        status="edited",
        caption="the sun sets",
        caption_fallback=False,
        seed=1,
        selected_label=selected_label,
        selected_frame=candidates[selected_label - 1],
        candidate_frames=candidates,
        letterbox_box=[0, 0, *source_size],
        source_size=list(source_size),
        has_video=False,
        has_frames=True,
        frames=frame_links(job_id, candidates),
        **more,
    )


def run_job(store: StoreBase, job_id: str, outputs: dict[str, bytes], result: JobResult) -> JobRecord:
    """What an edit worker does with a job: claim it, write and keep its `outputs` (name: bytes), finish it."""
    claimed = store.claim(job_id, "w1")
    assert claimed is not None
    lease = Lease.of(claimed)
    folder = store.outputs_dir(lease)
    for name, data in outputs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    store.keep_outputs(lease, folder)
    return store.finish(lease, "succeeded", None, result, {"total": 1.0})
