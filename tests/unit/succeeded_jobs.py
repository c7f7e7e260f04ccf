"""What the unit tests of the job routes share: the result an edit worker records for a succeeded job."""

from __future__ import annotations

from typing import Any

from f2f.serving.frames import frame_links
from f2f.serving.protocol import JobResult


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
