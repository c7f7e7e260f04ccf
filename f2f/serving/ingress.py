"""The HTTP ingress: validates requests, keeps jobs in the job store, queues them, and serves results.

Routes (OpenAPI at `/openapi.json`, docs at `/docs`):

- `POST /v1/edits`: multipart (`image` file + fields) or JSON (`image` as
  base64) with `prompt` and options -> 202 and the job (`Location` header).
  An `Idempotency-Key` header makes a retried request return the same job.
- `GET /v1/edits/{id}`: the job: status, stage, progress, timings, result, error.
- `GET /v1/edits/{id}/image | /collage | /video | /frames/{label}`: outputs
  (label 0 is the source, 1..N the candidate tiles; `/image` is the selected
  frame once one was selected).
- `POST /v1/edits/{id}/select`: another frame of the path as the result
  (`f2f.serving.frames`). `GET /`: the web page (`f2f.serving.webpage`).
- `DELETE /v1/edits/{id}`: cancels (a queued job at once, a running one at
  its next stage or denoising step) -> 202 and the job.
- `GET /v1/edits/{id}/events`: server-sent events `status`, `stage`,
  `progress` as they change, and `done` (the finished job), then the end.
- `POST /v1/images/edits`: OpenAI Images API compatible and synchronous: the
  same job, awaited; `n` seeds, `response_format` `b64_json` or `url` (a link
  to the job's image); `revised_prompt` is the temporal caption.
- Auth: with `auth.required`, every `/v1` route needs `Authorization: Bearer
  <token>` (401 otherwise) and a key sees only its own jobs (`f2f.serving.auth`).
- `GET /healthz`: the process is up. `GET /readyz`: every deployment of the
  application is healthy in Serve's view (their health checks load-test
  nothing: the generator's answers while it generates).

Rules: every request is validated before a job exists (image, prompt,
options, the config's rules for frames and steps); a job exists once its
source is stored, and is then sent to the queue (if the broker is down, the
job is still accepted and the sweep sends it). When `jobs.max_queued` jobs
wait, or the job volume is full, a new edit is answered 503 with Retry-After
and nothing is stored. Bodies over `jobs.max_body_bytes` are answered 413
while they arrive. Every ingress replica sweeps the store every
`jobs.sweep_interval_s`: expired jobs are deleted, running jobs whose worker
was lost are queued again, queued jobs never sent (or sent over
`jobs.resend_after_s` ago) are sent, and every queued job is sent again once
an edit worker has been silent for `jobs.lease_s` (it may have taken a message
it never claimed); the queue gauges are set every few
seconds, changed or not (`f2f.serving.metrics.gauge_refresh_s`). Nothing here
blocks the event loop: file and image work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import gc
import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from f2f.config import F2FConfig, invalid_config_from, video_overrides
from f2f.errors import InvalidImage, InvalidInput
from f2f.imageio import open_image
from f2f.pipeline import check_inputs
from f2f.serving import metrics
from f2f.serving.auth import AuthArgs, KeyRing, TooManyJobs, caller_of
from f2f.serving.broker import JobQueue, JobsArgs
from f2f.serving.errors import (
    BodyTooLarge,
    JobFailed,
    JobNotFinished,
    NoSuchOutput,
    NotReady,
    RetryLater,
    error_response,
    install_error_handlers,
)
from f2f.serving.frames import frames_router, result_file
from f2f.serving.jobs import (
    EditRequest,
    JobError,
    JobNotFound,
    JobProgress,
    JobRecord,
    JobResult,
    JobStore,
    Selection,
    StorageFull,
    fingerprint,
)
from f2f.serving.protocol import F2FExtension, ImageData, ImagesResponse
from f2f.serving.webpage import web_router

logger = logging.getLogger("f2f.serving")

SEED_LIMIT = 2**32
_BEARER = HTTPBearer(auto_error=False, description="An API key (`f2f keys new`); not needed when auth.required is false.")


async def _caller(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None) -> str:
    """The API key name of the request (Unauthenticated -> 401); `anonymous` when auth is off."""
    return caller_of(request.headers.get("authorization"), request.app.state.ring)


Caller = Annotated[str, Depends(_caller)]


def _not_a_bool(value: Any) -> Any:
    """JSON `true` is not the number 1 (pydantic's lax mode would take it as 1)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "must be a number, not a boolean")
    return value


Number = BeforeValidator(_not_a_bool)
OUTPUTS = (("image", "edited.png", "image/png"), ("collage", "collage.png", "image/png"), ("video", "video.mp4", "video/mp4"))


class EditOptions(BaseModel):
    """Options of `POST /v1/edits` (JSON body or multipart fields); null means the server's setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(description="The edit: a target description or an instruction.")
    seed: Annotated[int | None, Number] = Field(
        None, ge=0, lt=SEED_LIMIT, description="Seed of the first video; the others follow it."
    )
    seeds: list[Annotated[int, Number, Field(ge=0, lt=SEED_LIMIT)]] | None = Field(
        None, min_length=1, description="Seeds of the videos, one video each (multipart: comma-separated)."
    )
    n: Annotated[int | None, Number] = Field(None, ge=1, description="Videos (seeds) to try; the best edit wins (at most max_n).")
    num_frames: Annotated[int | None, Number] = Field(
        None, description="Frames per video (frame_step*k + 1, at most the server's max_num_frames)."
    )
    steps: Annotated[int | None, Number] = Field(None, description="Denoising steps per video (at most the server's max_steps).")
    guidance: Annotated[float | None, Number] = Field(None, description="Classifier-free guidance scale.")
    return_video: bool = Field(False, description="Keep the chosen clip as video.mp4 (`/video`).")
    return_frames: bool = Field(False, description="Accepted for older clients: every job now keeps its candidate frames.")

    @field_validator("seeds", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class EditJSON(EditOptions):
    """`POST /v1/edits` as JSON."""

    image: str = Field(description="The source image (PNG, JPEG or WebP) as base64, or a data: URL.")


class RequestLimits(BaseModel):
    """The most one request may ask for: every option that multiplies its work (the app's args of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_n: int = Field(4, ge=1, le=64, description="Videos (seeds) per edit: `n`, or how many `seeds`.")
    max_num_frames: int = Field(49, ge=2, description="Frames per video: `num_frames`.")
    max_steps: int = Field(1000, ge=1, le=1000, description="Denoising steps per video: `steps`.")


class JobView(BaseModel):
    """An edit job as the API shows it."""

    id: str
    object: Literal["edit"] = "edit"
    status: str = Field(description="queued, running, succeeded, failed or cancelled.")
    stage: str | None = Field(description="The stage running now: caption, generate, select.")
    progress: JobProgress | None = Field(description="Denoising steps done of all steps of the job.")
    prompt: str
    seeds: list[int]
    created_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None = Field(description="When the job and its files are deleted (unix seconds).")
    attempts: int = Field(description="Tries so far (a lost model replica makes another).")
    cancel_requested: bool
    timings_s: dict[str, float]
    result: JobResult | None
    error: JobError | None
    selection: Selection | None = Field(description="The caller's choice of the result frame (`POST .../select`).")
    links: dict[str, str]

    @classmethod
    def of(cls, record: JobRecord) -> JobView:
        base = f"/v1/edits/{record.id}"
        links = {"self": base, "events": f"{base}/events"}
        if record.status == "succeeded" and record.result is not None:
            links |= {"image": f"{base}/image", "collage": f"{base}/collage"}
            if record.result.has_video:
                links["video"] = f"{base}/video"
            if record.result.has_frames:
                links["frames"] = f"{base}/frames/{{label}}"
        data = record.model_dump(exclude={"request", "fingerprint", "updated_at", "worker", "heartbeat_at"})
        return cls(**data, prompt=record.request.prompt, seeds=record.request.seeds, links=links)


class Ingress:
    """Serve deployment body: the job store, the queue producer, and the FastAPI app built on the replica."""

    def __init__(self, worker: Any, config: F2FConfig, jobs: JobsArgs, limits: RequestLimits, auth: AuthArgs) -> None:
        self.worker = worker  # bound so that Serve deploys the worker with this app
        self.config, self.jobs, self.limits, self.auth = config, jobs, limits, auth

    def __serve_build_asgi_app__(self) -> FastAPI:
        store_dir = self.jobs.store_dir(self.config.cache_dir)
        store = JobStore(store_dir, self.jobs.ttl_s, self.jobs.lease_s)
        queue = JobQueue(self.jobs, store_dir)
        return make_api(store, queue, self.config, self.jobs, self.limits, serve_ready, self.auth)


async def serve_ready() -> None:
    """Raise NotReady unless every deployment of this application is healthy in Serve's view."""
    from ray import serve

    app_name = serve.get_replica_context().app_name
    status = await asyncio.to_thread(serve.status)
    app = status.applications.get(app_name)
    if app is None:
        raise NotReady("the application is not deployed")
    unhealthy = sorted(name for name, d in app.deployments.items() if d.status not in ("HEALTHY", "UPSCALING", "DOWNSCALING"))
    if unhealthy:
        raise NotReady(f"not ready: {', '.join(unhealthy)}")


def make_api(
    store: JobStore, queue: Any, config: F2FConfig, jobs: JobsArgs, limits: RequestLimits, ready: Any, auth: AuthArgs
) -> FastAPI:
    """The FastAPI app over a job store and a queue producer (`send(job_id)`); `auth` says who may call."""
    ring = KeyRing(auth.keys_file) if auth.required and auth.keys_file else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_sweep_forever(store, queue, jobs)), asyncio.create_task(_queue_gauges_forever(store))]
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(
        title="f2f", description="Frame2Frame image editing: jobs and an OpenAI Images compatible API", lifespan=lifespan
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=jobs.max_body_bytes)  # type: ignore[arg-type]
    app.state.ring = ring

    async def submit(raw_image: bytes, options: EditOptions, key: str | None, owner: str) -> tuple[JobRecord, bool]:
        source_png, edit_request = await asyncio.to_thread(_validated_request, raw_image, options, config, limits)

        def admit() -> None:  # under the store's queue lock: concurrent requests never pass these bounds together
            depth, _ = store.queue_stats()
            if depth >= jobs.max_queued:
                raise RetryLater(f"{depth} edits are waiting, the most this server queues; retry later", jobs.retry_after_s)
            if ring is not None and store.active_jobs(owner) >= auth.max_active_jobs_per_key:
                rule = f"this API key has {auth.max_active_jobs_per_key} edits queued or running, the most it may; retry later"
                raise TooManyJobs(rule, auth.retry_after_s)

        same_request = fingerprint(raw_image, options.model_dump())
        try:
            record, created = await asyncio.to_thread(store.create, source_png, edit_request, same_request, key, owner, admit)
        except StorageFull as exc:
            logger.error("%s", exc)
            raise RetryLater(f"{exc}; retry later", jobs.retry_after_s, code=exc.code) from None
        if created:
            await _send(store, queue, record.id)  # if the broker is down, the sweep sends it later
        return record, created

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz() -> dict[str, str] | JSONResponse:
        try:
            await ready()
        except Exception as exc:
            return error_response(exc if isinstance(exc, NotReady) else NotReady(f"not ready ({type(exc).__name__})"))
        return {"status": "ok"}

    @app.post(
        "/v1/edits",
        status_code=202,
        response_model=JobView,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": EditJSON.model_json_schema()},
                    "multipart/form-data": {"schema": _multipart_schema()},
                },
            }
        },
    )
    async def create_edit(
        request: Request,
        caller: Caller,
        idempotency_key: Annotated[
            str | None, Header(min_length=1, max_length=255, description="Retries with this key get the same job.")
        ] = None,
    ) -> JSONResponse:
        raw_image, options = await _read_submission(request)
        record, created = await submit(raw_image, options, idempotency_key, caller)
        view = JobView.of(record)
        headers = {"Location": view.links["self"]}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=headers)

    @app.get("/v1/edits/{job_id}")
    async def get_edit(job_id: str, caller: Caller) -> JobView:
        return JobView.of(await asyncio.to_thread(store.get_for, job_id, caller))

    @app.delete("/v1/edits/{job_id}", status_code=202)
    async def cancel_edit(job_id: str, caller: Caller) -> JobView:
        record = await asyncio.to_thread(store.get_for, job_id, caller)
        if record.finished:
            raise JobNotFinished(f"job {job_id} already finished ({record.status}); nothing to cancel", code="job_finished")
        return JobView.of(await asyncio.to_thread(store.request_cancel, job_id))

    @app.get("/v1/edits/{job_id}/events", response_class=StreamingResponse)
    async def edit_events(job_id: str, caller: Caller) -> StreamingResponse:
        first = await asyncio.to_thread(store.get_for, job_id, caller)
        return StreamingResponse(_events(store, first, jobs.poll_interval_s), media_type="text/event-stream")

    for name, filename, media in (
        ("image", "edited.png", "image/png"),
        ("collage", "collage.png", "image/png"),
        ("video", "video.mp4", "video/mp4"),
    ):
        app.add_api_route(
            f"/v1/edits/{{job_id}}/{name}",
            _output_route(store, name, filename, media),
            methods=["GET"],
            response_class=FileResponse,
            name=f"edit_{name}",
        )

    @app.get("/v1/edits/{job_id}/frames/{label}", response_class=FileResponse)
    async def edit_frame(job_id: str, label: int, caller: Caller) -> FileResponse:
        record = await _finished(store, job_id, caller)
        assert record.result is not None
        candidates = record.result.candidate_frames
        if label == 0:
            return FileResponse(store.path(job_id, "source.png"), media_type="image/png")
        if not 1 <= label <= len(candidates):
            raise InvalidInput("label", label, f"must be 0 (the source) to {len(candidates)} (the last candidate tile)")
        path = store.path(job_id, f"candidates/frame_{candidates[label - 1]:03d}.png")
        if not path.is_file():
            raise NoSuchOutput(f"job {job_id} kept no frames (it was made before every job kept them)")
        return FileResponse(path, media_type="image/png")

    @app.post("/v1/images/edits")
    async def images_edits(request: Request, caller: Caller) -> ImagesResponse:
        raw_image, options, response_format = await _read_openai_form(request)
        record, _ = await submit(raw_image, options, None, caller)
        while not record.finished:
            await asyncio.sleep(jobs.poll_interval_s)
            record = await asyncio.to_thread(store.get, record.id)
        if record.status != "succeeded" or record.result is None:
            raise JobFailed(record.error or JobError(message="the edit failed", code="edit_failed"))
        result = record.result
        if response_format == "url":
            image = ImageData(url=str(request.url_for("edit_image", job_id=record.id)), revised_prompt=result.caption)
        else:
            png = await asyncio.to_thread(store.path(record.id, "edited.png").read_bytes)
            image = ImageData(b64_json=base64.b64encode(png).decode("ascii"), revised_prompt=result.caption)
        extension = F2FExtension(
            id=record.id,
            status=result.status,  # type: ignore[arg-type]
            caption_fallback=result.caption_fallback,
            seed=result.seed,
            selected_label=result.selected_label,
            selected_frame=result.selected_frame,
            timings_s=record.timings_s,
            canvas=result.canvas,
        )
        return ImagesResponse(created=int(record.finished_at or 0), data=[image], f2f=extension)

    app.include_router(frames_router(store, _caller, JobView))
    app.include_router(web_router())
    return app


# --- request parsing ----------------------------------------------------------------------------


def _multipart_schema() -> dict[str, Any]:
    schema = EditOptions.model_json_schema()
    schema["properties"]["image"] = {"type": "string", "format": "binary", "description": "The source image file."}
    schema["required"] = ["image", "prompt"]
    return schema


async def _form_fields(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The uploaded `image` and the other fields of a multipart body (repeated fields joined by commas)."""
    form = await request.form()
    fields: dict[str, Any] = {}
    image: bytes | None = None
    for key in form:
        values = form.getlist(key)
        if key == "image":
            upload = values[0]
            image = await upload.read() if hasattr(upload, "read") else str(upload).encode()
        else:
            fields[key] = ",".join(str(v) for v in values) if len(values) > 1 else values[0]
    if image is None:
        raise InvalidImage("image", None, "a multipart edit needs an `image` file field")
    return image, fields


async def _read_submission(request: Request) -> tuple[bytes, EditOptions]:
    """The raw image bytes and the options of a `POST /v1/edits`, from JSON or multipart."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = EditJSON.model_validate_json(await request.body())
        except ValidationError as exc:
            raise _request_error(exc) from None
        return _b64decode(body.image), EditOptions(**body.model_dump(exclude={"image"}))
    if kind == "multipart/form-data":
        image, fields = await _form_fields(request)
        try:
            return image, EditOptions.model_validate(fields)
        except ValidationError as exc:
            raise _request_error(exc) from None
    raise InvalidInput("content-type", kind or None, "must be application/json or multipart/form-data")


async def _read_openai_form(request: Request) -> tuple[bytes, EditOptions, str]:
    """`POST /v1/images/edits` (multipart, OpenAI's fields): the image, the options, the response format."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidInput("content-type", request.headers.get("content-type"), "must be multipart/form-data")
    image, fields = await _form_fields(request)
    response_format = fields.pop("response_format", "b64_json")
    if response_format not in ("b64_json", "url"):
        raise InvalidInput("response_format", response_format, "must be b64_json or url")
    for ignored in ("model", "size", "quality", "user", "background", "output_format", "input_fidelity"):
        fields.pop(ignored, None)  # OpenAI fields this server has no use for
    try:
        return image, EditOptions.model_validate(fields), response_format
    except ValidationError as exc:
        raise _request_error(exc) from None


def _request_error(exc: ValidationError) -> InvalidInput:
    """The first validation error, naming the request field; its code is pydantic's error type."""
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or "body"
    rule = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    error = InvalidInput(param, None if err["type"] == "missing" else err.get("input"), rule)
    error.code = str(err["type"])
    return error


def _b64decode(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("image", text[:40], "must be base64 (or a data: URL) of a PNG, JPEG or WebP file") from None


WIRE_OPTION = {"video.num_frames": "num_frames", "video.num_inference_steps": "steps", "video.guidance_scale": "guidance"}


def _validated_request(
    raw_image: bytes, options: EditOptions, config: F2FConfig, limits: RequestLimits
) -> tuple[bytes, EditRequest]:
    """The source as PNG and the job's request, or InvalidInput naming the field (runs in a thread)."""
    if options.seed is not None and options.seeds is not None:
        raise InvalidInput("seeds", options.seeds, "give seed or seeds, not both")
    if options.n is not None and options.seeds is not None:
        raise InvalidInput("n", options.n, "give n or seeds, not both (n is the number of seeds)")
    count = len(options.seeds) if options.seeds is not None else options.n
    if count is not None and count > limits.max_n:
        rule = f"at most {limits.max_n} videos per edit on this server (max_n)"
        raise InvalidInput("seeds" if options.seeds else "n", count, rule)
    for field, value, limit in (("num_frames", options.num_frames, "max_num_frames"), ("steps", options.steps, "max_steps")):
        if value is not None and value > getattr(limits, limit):
            raise InvalidInput(field, value, f"at most {getattr(limits, limit)} on this server ({limit})")
    run_config = _run_config(config, options)
    image = open_image(raw_image, config.input)
    source, _, seeds = check_inputs(image, options.prompt, options.seeds, run_config)
    request = EditRequest(
        prompt=options.prompt,
        seeds=seeds,
        num_frames=options.num_frames,
        num_inference_steps=options.steps,
        guidance_scale=options.guidance,
        return_video=options.return_video,
        return_frames=options.return_frames,
    )
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    return buffer.getvalue(), request


def _run_config(config: F2FConfig, options: EditOptions) -> F2FConfig:
    """The config this request runs with, checked by the config's own rules; errors name the request field."""
    video = video_overrides(options.num_frames, options.steps, options.guidance)
    top: dict[str, Any] = {}
    if options.n is not None:
        top["num_seeds"] = options.n
    if options.seed is not None:
        top["seed"] = options.seed
    if not video and not top:
        return config
    data = config.model_dump()
    data["video"].update(video)
    data.update(top)
    try:
        return F2FConfig.model_validate(data)
    except ValidationError as exc:
        error = invalid_config_from(exc, "")
        field = WIRE_OPTION.get(error.field, {"num_seeds": "n"}.get(error.field, error.field))
        raise InvalidInput(field, error.value, error.rule) from None


# --- outputs and events -------------------------------------------------------------------------


async def _finished(store: JobStore, job_id: str, caller: str) -> JobRecord:
    record = await asyncio.to_thread(store.get_for, job_id, caller)
    if record.status != "succeeded":
        raise JobNotFinished(f"job {job_id} is {record.status}; its outputs exist once it has succeeded")
    return record


def _output_route(store: JobStore, name: str, filename: str, media: str) -> Any:
    async def route(job_id: str, caller: Caller) -> FileResponse:
        record = await _finished(store, job_id, caller)
        served = result_file(record) if name == "image" else filename  # a selected frame replaces the edit
        path = store.path(job_id, served)
        if not path.is_file():
            raise NoSuchOutput(f"job {job_id} has no {name}" + ("; submit it with return_video=true" if name == "video" else ""))
        return FileResponse(path, media_type=media, filename=f"{job_id}-{Path(served).name}")

    route.__doc__ = f"The {name} of a succeeded job."
    return route


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _events(store: JobStore, record: JobRecord, poll_s: float) -> AsyncIterator[bytes]:
    """`status` / `stage` / `progress` events as the job changes, then `done` with the whole job."""
    last: dict[str, Any] = {}
    while True:
        now = {
            "status": record.status,
            "stage": record.stage,
            "progress": record.progress.model_dump() if record.progress else None,
        }
        if record.finished:
            yield _sse("done", JobView.of(record).model_dump(mode="json"))
            return
        for key in ("status", "stage", "progress"):
            if now[key] != last.get(key, object()) and now[key] is not None:
                yield _sse(
                    key,
                    {"id": record.id, key: now[key]}
                    if key != "progress"
                    else {"id": record.id, "stage": record.stage, **now[key]},
                )
        last = now
        await asyncio.sleep(poll_s)
        try:
            record = await asyncio.to_thread(store.get, record.id)
        except JobNotFound:
            return


async def _send(store: JobStore, queue: Any, job_id: str) -> bool:
    """Send the job's message to the queue and record it; False (logged) if the broker refused."""
    try:
        await asyncio.to_thread(queue.send, job_id)
    except Exception as exc:
        logger.warning("the job queue refused job %s (%s: %s); it is sent again later", job_id, type(exc).__name__, exc)
        return False
    await asyncio.to_thread(store.mark_sent, job_id)
    return True


async def _queue_gauges_forever(store: JobStore) -> None:
    """Set the queue gauges every `metrics.gauge_refresh_s()`, changed or not (Ray drops a gauge not set again)."""
    every_s = metrics.gauge_refresh_s()
    while True:
        try:
            metrics.record_queue(*await asyncio.to_thread(store.queue_stats))
        except Exception:
            logger.exception("the queue gauges could not be set")
        await asyncio.sleep(every_s)


async def _sweep_forever(store: JobStore, queue: Any, jobs: JobsArgs) -> None:
    """`sweep_once` every `jobs.sweep_interval_s`."""
    while True:
        try:
            await sweep_once(store, queue, jobs)
        except Exception:
            logger.exception("the job store sweep failed")
        await asyncio.sleep(jobs.sweep_interval_s)


async def sweep_once(store: JobStore, queue: Any, jobs: JobsArgs) -> None:
    """Delete expired jobs, queue again the running jobs whose worker was lost, send unsent jobs, and send every
    waiting job again when a worker was lost (it may have taken messages it never claimed)."""
    await asyncio.to_thread(store.sweep)
    for job_id in await asyncio.to_thread(store.stale_running):
        if (await asyncio.to_thread(store.requeue, job_id)).status == "queued":
            logger.warning("job %s lost its worker; queued again", job_id)
            await _send(store, queue, job_id)
    lost = await asyncio.to_thread(store.lost_workers)
    due = await asyncio.to_thread(store.queued if lost else partial(store.unsent, jobs.resend_after_s))
    if lost:
        logger.warning("edit worker(s) %s lost; sending the %d waiting jobs again", ", ".join(lost), len(due))
    for job_id in due:
        if not await _send(store, queue, job_id):
            break  # the broker is still down: try again at the next sweep


# --- body size ----------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes` (by Content-Length, or as it arrives).

    It stops reading at the limit, and the 413 says `Connection: close`: the HTTP proxy then drops the
    connection instead of reading (and passing on) the rest of the body.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(BodyTooLarge(self.max_bytes))
            response.headers["connection"] = "close"
            return await response(scope, receive, send)
        seen, over = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal seen, over
            if over:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                over = True
                raise BodyTooLarge(self.max_bytes)
            return message

        async def closing(message: dict[str, Any]) -> None:
            if over and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, limited, closing)
        if over:  # Ray's proxy may have passed on much more than the limit: hand that memory back once it is dropped
            asyncio.get_running_loop().call_later(RELEASE_AFTER_S, release_memory)


RELEASE_AFTER_S = 1.0


def release_memory() -> None:
    """Collect garbage and return the C heap's free pages to the system (glibc's malloc_trim; elsewhere only the collect)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
