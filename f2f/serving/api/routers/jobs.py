"""`/v1/edits`: edit jobs, their outputs and their events.

- `POST /v1/edits`: multipart (`image` file + fields) or JSON (`image` as
  base64) with `prompt` and options -> 202 and the job (`Location` header).
  An `Idempotency-Key` header makes a retried request return the same job.
- `GET /v1/edits?status=&after=&limit=`: the caller's jobs, newest first, a
  page at a time (OpenAI's list shape: `data`, `has_more`, `last_id` as the
  next page's `after`); never another key's.
- `GET /v1/edits/{id}`: the job: status, stage, progress, timings, result, error.
- `GET /v1/edits/{id}/image | /collage | /video | /result | /frames/{label}`: outputs
  (`/result`: the edit's result.json, as `f2f edit` writes it;
  label 0 is the source, 1..N the candidate tiles). `/image` takes
  `output_format`, `output_compression` and `size` (`f2f.serving.api.outputs`:
  at most the app's `max_output_pixels`; each conversion made once per job
  and kept with its objects). Each is streamed through the ingress, or
  with `jobs.downloads: redirect` answered 307 to a presigned URL of the
  bucket (`download_url_ttl_s`); either way only to the job's own key.
- `POST /v1/edits/{id}/select` with `{"label": N}`: another frame of the
  chosen clip's path as the result (`f2f.serving.api.candidates`); `/image` (rank
  1) then serves it.
- `DELETE /v1/edits/{id}`: cancels (a queued job at once, a running one at
  its next stage or denoising step) -> 202 and the job.
- `GET /v1/edits/{id}/events`: server-sent events `status`, `stage`,
  `progress`, `preview` (its URL) as they change, and `done` (the finished
  job), then the end.
- `GET /v1/edits/{id}/preview`: the latest approximate preview (PNG) of a
  job submitted with `previews: true`, while it runs and after; a 404
  (`no_such_output`) before the first one. Never cached by the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from f2f.errors import InvalidInput
from f2f.serving.api import candidates as frames
from f2f.serving.api import outputs
from f2f.serving.api.errors import JobNotFinished, NoSuchOutput
from f2f.serving.api.routers.deps import Caller, HttpArgs, Service
from f2f.serving.api.routers.parsing import multipart_schema, read_submission
from f2f.serving.api.wire import EditJSON, JobList, JobView, SelectRequest
from f2f.serving.jobs import JobNotFound, JobRecord, JobStatus, NoSuchObject, StoreBase
from f2f.serving.jobs.record import PREVIEW

router = APIRouter(prefix="/v1/edits", tags=["edits"])
FILE_OUTPUTS = (
    ("collage", "collage.png", "image/png"),
    ("video", "video.mp4", "video/mp4"),
    ("result", "result.json", "application/json"),
)


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": EditJSON.model_json_schema()},
                "multipart/form-data": {"schema": multipart_schema()},
            },
        }
    },
)
async def create_edit(
    request: Request,
    caller: Caller,
    service: Service,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=255, description="Retries with this key get the same job.")
    ] = None,
) -> JSONResponse:
    raw_image, mask, options = await read_submission(request)
    # (mask, alpha only?): here an alpha (transparent = edit) or one channel (white = edit), as the caller sent it
    submitted_mask = None if mask is None else (mask, False)
    record, created = await service.submit(
        raw_image, options, idempotency_key, caller, mask=submitted_mask, gone=request.is_disconnected
    )
    view = JobView.of(record)
    headers = {"Location": view.links["self"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=headers)


@router.get("")
async def list_edits(
    caller: Caller,
    service: Service,
    status: Annotated[JobStatus | None, Query(description="Only jobs with this status.")] = None,
    after: Annotated[str | None, Query(description="The `last_id` of the previous page: the jobs older than it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page, 1 to 100.")] = 20,
) -> JobList:
    """The caller's jobs, newest first."""
    try:
        records, more = await asyncio.to_thread(service.store.list_for, caller, status, after, limit)
    except JobNotFound:
        raise InvalidInput("after", after, "must be the id of one of your live jobs (the previous page's last_id)") from None
    return JobList.of(records, more)


@router.get("/{job_id}")
async def get_edit(job_id: str, caller: Caller, service: Service) -> JobView:
    return JobView.of(await asyncio.to_thread(service.store.get_for, job_id, caller))


@router.delete("/{job_id}", status_code=202)
async def cancel_edit(job_id: str, caller: Caller, service: Service) -> JobView:
    record = await asyncio.to_thread(service.store.get_for, job_id, caller)
    if record.finished:
        raise JobNotFinished(f"job {job_id} already finished ({record.status}); nothing to cancel", code="job_finished")
    return JobView.of(await asyncio.to_thread(service.store.request_cancel, job_id))


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def edit_events(job_id: str, caller: Caller, service: Service) -> StreamingResponse:
    first = await asyncio.to_thread(service.store.get_for, job_id, caller)
    release = service.waits.take(caller)  # a long wait: bounded per key and in all
    return HeldStream(service.events_of(first), release, media_type="text/event-stream")


@router.get("/{job_id}/preview", response_class=FileResponse)
async def edit_preview(job_id: str, caller: Caller, service: Service) -> Response:
    """The latest approximate preview of the edit as it forms (a job submitted with `previews: true`)."""
    record = await asyncio.to_thread(service.store.get_for, job_id, caller)
    missing = f"job {job_id} has no preview yet" + ("" if record.request.previews else "; submit it with previews=true")
    key = None if record.preview is None else service.store.key(job_id, PREVIEW)
    answer = await download(service, key, "image/png", None, missing)
    answer.headers["Cache-Control"] = "no-store"
    return answer


@router.get("/{job_id}/image", name="edit_image", response_class=Response)
async def edit_image(
    job_id: str,
    caller: Caller,
    service: Service,
    http_args: HttpArgs,
    output_format: Annotated[str | None, Query(description="png (default), jpeg or webp.")] = None,
    output_compression: Annotated[int | None, Query(description="Quality 0-100 of a jpeg or webp.")] = None,
    size: Annotated[str | None, Query(description="auto, or WIDTHxHEIGHT at the source's aspect ratio.")] = None,
    rank: Annotated[int, Query(description="1: the edit; k: the k-th best of its seeds (`result.ranking.order`).")] = 1,
) -> Response:
    """The edited image of a succeeded job, as stored (PNG at the source's size) or as asked for."""
    record = await finished(service.store, job_id, caller)
    assert record.result is not None
    fmt, quality = outputs.check_format(output_format, output_compression)
    resize = outputs.check_size(size, tuple(record.result.source_size), http_args.max_output_pixels)  # type: ignore[arg-type]
    seeds = len(record.result.ranked_seeds)
    if not 1 <= rank <= seeds:
        raise InvalidInput("rank", rank, f"must be 1 (the edit) to {seeds} (the job's last seed)")
    served = frames.result_file(record) if rank == 1 else f"ranked/{rank}.png"  # rank 1: the selected frame, if any
    stored = service.store.output_key(record, served)
    missing = f"job {job_id} kept no image of rank {rank}"
    if stored is None:
        raise NoSuchOutput(missing)
    cache = service.store.key(job_id, f"{outputs.CACHE_DIR}/{outputs.cache_name(served, fmt, quality, resize)}")
    try:
        answer = await asyncio.to_thread(outputs.cached, service.store.objects, stored, cache, fmt, quality, resize)
    except NoSuchObject:  # the stored image, to convert (one as stored is looked up by `download`)
        raise NoSuchOutput(missing) from None
    filename = f"{job_id}-{Path(served).stem if rank == 1 else f'rank{rank}'}.{fmt}"
    if isinstance(answer, str):
        return await download(service, answer, outputs.MEDIA_TYPES[fmt], filename, missing)
    disposition = f'attachment; filename="{filename}"'  # the cache could not be written: the bytes
    return Response(answer, media_type=outputs.MEDIA_TYPES[fmt], headers={"Content-Disposition": disposition})


def _file_route(name: str, filename: str, media: str) -> Any:
    async def route(job_id: str, caller: Caller, service: Service) -> Response:
        record = await finished(service.store, job_id, caller)
        missing = f"job {job_id} has no {name}" + ("; submit it with return_video=true" if name == "video" else "")
        key = service.store.output_key(record, filename)
        return await download(service, key, media, f"{job_id}-{Path(filename).name}", missing)

    route.__doc__ = f"The {name} of a succeeded job."
    return route


for _name, _filename, _media in FILE_OUTPUTS:
    router.add_api_route(
        f"/{{job_id}}/{_name}",
        _file_route(_name, _filename, _media),
        methods=["GET"],
        response_class=FileResponse,
        name=f"edit_{_name}",
    )


@router.get("/{job_id}/frames/{label}", response_class=FileResponse)
async def edit_frame(job_id: str, label: int, caller: Caller, service: Service) -> Response:
    record = await finished(service.store, job_id, caller)
    assert record.result is not None
    key = service.store.output_key(record, frames.frame_file(label, record.result))
    return await download(service, key, "image/png", None, f"job {job_id} kept no frame {label}")


async def download(service: Any, key: str | None, media: str, filename: str | None, missing: str) -> Response:
    """The object `key` of a job: its local file, or its bytes streamed from the bucket, or (`jobs.downloads:
    redirect`) a 307 to a presigned URL of it; NoSuchOutput (`missing`) if there is none."""
    objects = service.store.objects
    if key is None:
        raise NoSuchOutput(missing)
    if service.jobs.downloads == "redirect":
        if not await asyncio.to_thread(objects.exists, key):
            raise NoSuchOutput(missing)
        url = objects.presigned_url(key, service.jobs.download_url_ttl_s, filename, media)
        return RedirectResponse(url, status_code=307)
    path = objects.local_path(key)
    if path is not None:
        return FileResponse(path, media_type=media, filename=filename)
    try:
        chunks = await asyncio.to_thread(objects.stream, key)
    except NoSuchObject:
        raise NoSuchOutput(missing) from None
    headers = {} if filename is None else {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(chunks, media_type=media, headers=headers)


@router.post("/{job_id}/select", response_model=JobView)
async def select_frame(job_id: str, body: SelectRequest, caller: Caller, service: Service) -> JobView:
    """Make another frame of the chosen clip's path the job's result image."""
    return JobView.of(await asyncio.to_thread(frames.select, service.store, job_id, body.label, caller))


class HeldStream(StreamingResponse):
    """A streaming response that gives its wait slot back when it ends, however it ends (done, or the client left)."""

    def __init__(self, content: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


async def finished(store: StoreBase, job_id: str, caller: str) -> JobRecord:
    """The caller's job, once it succeeded (JobNotFinished before)."""
    record = await asyncio.to_thread(store.get_for, job_id, caller)
    if record.status != "succeeded":
        raise JobNotFinished(f"job {job_id} is {record.status}; its outputs exist once it has succeeded")
    return record
