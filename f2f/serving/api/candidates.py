"""The edit path as a control: a job's candidate frames, and the caller's choice of another one as the result.

`POST /v1/edits/{id}/select` with JSON `{"label": N}` (`f2f.serving.api.routers.jobs`):
frame N of the chosen clip's path becomes the job's result; it answers 200
and the job, whose `selection` is `{label, frame, by, at}`.

Rules:

- Every service job keeps its candidate frames (`candidates/`, at the
  source's size); the job's `result.frames` lists `{label, frame, url}` for
  label 0 (the source) and 1..N (the collage's tiles), served by
  `/v1/edits/{id}/frames/{label}`.
- A label is 0..N, N the number of tiles: anything else is a 400 naming
  `label` and the range. Only a succeeded job has frames to choose from:
  another status is a 409 (`job_not_finished`). Another API key's job, like
  an unknown one, is a 404.
- The choice is recorded in the job record, with who made it (the API key's
  name, `anonymous` when auth is off) and when; the VLM's choice stays in
  `result` (`selected_label`, `selected_frame`). Choosing the label already
  chosen changes nothing (its `by` and `at` stay), so a retried request is
  harmless.
- Nothing is copied or rewritten: `edited.png` stays the VLM's edit, and
  `/v1/edits/{id}/image` serves the chosen frame's own file (`source.png`
  for label 0, `candidates/frame_NNN.png` otherwise), named by the record.
  The record is written atomically (the store's rule), so the image served
  and the `selection` shown always agree.
"""

from __future__ import annotations

import time

from f2f.errors import InvalidInput
from f2f.serving.api.errors import JobNotFinished, NoSuchOutput
from f2f.serving.api.wire import CandidateFrame, JobResult, Selection
from f2f.serving.jobs import JobRecord, StoreBase

EDITED = "edited.png"


def frame_links(job_id: str, candidates: list[int]) -> list[CandidateFrame]:
    """Label 0 (the source, frame 0) and each tile 1..N with the frame it shows and its URL."""
    frames = enumerate([0, *candidates])
    return [CandidateFrame(label=label, frame=frame, url=f"/v1/edits/{job_id}/frames/{label}") for label, frame in frames]


def frame_file(label: int, result: JobResult) -> str:
    """The job file that holds frame `label` (0 the source); InvalidInput naming `label` if out of range."""
    count = len(result.candidate_frames)
    if not 0 <= label <= count:
        raise InvalidInput("label", label, f"must be 0 (the source) to {count} (the last candidate tile)")
    return "source.png" if label == 0 else f"candidates/frame_{result.candidate_frames[label - 1]:03d}.png"


def result_file(record: JobRecord) -> str:
    """The file `/image` serves: the selected frame's, else the VLM's edit."""
    if record.selection is None or record.result is None:
        return EDITED
    return frame_file(record.selection.label, record.result)


def select(store: StoreBase, job_id: str, label: int, who: str) -> JobRecord:
    """Record `who`'s choice of frame `label` as the result of their succeeded job, by the rules above."""
    record = store.get_for(job_id, who)
    if record.status != "succeeded" or record.result is None:
        raise JobNotFinished(f"job {job_id} is {record.status}; a frame can be selected once it has succeeded")
    name = frame_file(label, record.result)
    if not store.has_output(record, name):
        raise NoSuchOutput(f"job {job_id} kept no candidate frames")
    frame = 0 if label == 0 else record.result.candidate_frames[label - 1]
    return store.select(job_id, Selection(label=label, frame=frame, by=who, at=round(time.time(), 3)))
