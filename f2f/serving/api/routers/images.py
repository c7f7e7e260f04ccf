"""The OpenAI Images API: `POST /v1/images/edits` (synchronous) and `GET /v1/models`.

Rules of `POST /v1/images/edits` (multipart, as OpenAI's SDKs and curl send it, or OpenAI's JSON form):

- `mask`: OpenAI's format, a PNG with alpha of the image's size whose
  fully transparent pixels mark the area to edit (`f2f.masks`); outside it
  the edit keeps the source's pixels exactly.
- `image` or `image[]`: one image (more than one is refused: this server
  edits one image per request); `prompt`; `n` videos (seeds), and `n`
  images back, best first by the edit's ranking of its seeds (`f2f.ranking`).
- The JSON form (`application/json`): `images`, a list of one
  `{"image_url": ...}`, and `mask` the same way; a data: URL, or an http(s)
  URL of a host the operator allowed (`image_url_hosts`); a `file_id` is
  refused (`f2f.serving.api.image_urls`). The other fields are the form's.
- `size` (`auto`, or WIDTHxHEIGHT at the source's aspect ratio),
  `output_format` (png, jpeg, webp) and `output_compression` are honoured
  (`f2f.serving.api.outputs`), or refused before any work with the sizes this
  server makes (at most `max_output_pixels`); `response_format` is
  `b64_json` (default) or `url`: the job's `/image` route with the same
  format and size, kept for `jobs.ttl_s`, under the app's `public_base_url`
  (never the request's `Host`); without that arg, `url` is a 400 naming
  `response_format`, before any work (`f2f.serving.deployments.ingress_args`).
- `quality` (only `auto`), `background` (`auto` or `opaque`: the edit is an
  opaque photo) and `input_fidelity` (only `high`: the edit keeps the source
  but for what the prompt changes) are accepted where they describe what
  this server does and refused otherwise; `user` is taken as OpenAI takes
  it, to tell end users apart in the log.
- `model`: one of `GET /v1/models` (`f2f`, and `f2f-<profile>` when the
  server runs a profile), or left out; another name is answered as the
  OpenAI API does: 404 `model_not_found`.
- f2f's own fields (`seed`, `seeds`, `num_frames`, `steps`, `guidance`) are
  accepted too; `revised_prompt` is the temporal caption, and `f2f` is an
  extension object that OpenAI clients ignore (it names the job).
- `stream` (a boolean; `true` with `n` 1 only) answers `text/event-stream`
  in OpenAI's events: up to `partial_images` (0-3, default 0)
  `image_edit.partial_image` events, each the job's latest approximate
  preview (`f2f.backends.video.previews`: the job asks for them only when
  `partial_images` > 0) once the run has passed the next of
  `partial_images` even marks (1/(k+1), 2/(k+1), ... of its steps); then one
  `image_edit.completed` with the edit and its `usage`. An error once the stream has started
  is an `error` event with the typed body (`{"type": "error", "error": {...}}`),
  then the end. Every field is checked before any job is queued.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import ValidationError

from f2f.config import F2FConfig
from f2f.errors import F2FError, InvalidImage, InvalidInput
from f2f.request import CheckedEdit, invalid_input_from
from f2f.serving.api import outputs
from f2f.serving.api.errors import JobFailed, ModelNotFound, error_response
from f2f.serving.api.image_urls import ImageRef, image_bytes
from f2f.serving.api.routers.deps import Caller, HttpArgs, Service
from f2f.serving.api.routers.jobs import HeldStream
from f2f.serving.api.routers.parsing import form_fields, validated
from f2f.serving.api.service import sse
from f2f.serving.api.wire import (
    EditOptions,
    F2FExtension,
    ImageData,
    ImageEditCompleted,
    ImageEditPartialImage,
    ImagesResponse,
    JobError,
    ModelCard,
    ModelList,
)
from f2f.serving.deployments.ingress_args import IngressArgs, public_url, url_response_refusal
from f2f.serving.jobs import JobRecord, StoreBase
from f2f.serving.jobs.record import PREVIEW

router = APIRouter(tags=["openai"])
logger = logging.getLogger("f2f.serving")
STARTED = int(time.time())
# OpenAI fields that may only say what this server does anyway: field -> the values accepted, and why
DESCRIPTIVE = {
    "quality": (("auto",), "this server has one quality, set by its steps; must be auto"),
    "background": (("auto", "opaque"), "the edit is an opaque image; must be auto or opaque"),
    "input_fidelity": (("high",), "the edit keeps the source's details but for what the prompt changes; must be high"),
}


@dataclass(frozen=True)
class OpenAIAsk:
    """OpenAI's own fields of a request, checked: how the images are answered."""

    response_format: str  # b64_json or url
    format: outputs.OutputFormat
    quality: int | None  # output_compression
    size: str | None  # as asked: auto, WIDTHxHEIGHT, or left out
    user: str | None
    stream: bool = False
    partial_images: int = 0


def served_models(config: F2FConfig) -> list[str]:
    """The model names this server answers to."""
    return ["f2f", *([f"f2f-{config.profile}"] if config.profile else [])]


@router.get("/v1/models")
async def list_models(_: Caller, service: Service) -> ModelList:
    return ModelList(data=[ModelCard(id=name, created=STARTED) for name in served_models(service.config)])


@router.get("/v1/models/{model}")
async def get_model(model: str, _: Caller, service: Service) -> ModelCard:
    if model not in served_models(service.config):
        raise ModelNotFound(model)
    return ModelCard(id=model, created=STARTED)


@router.post("/v1/images/edits", response_model=ImagesResponse)
async def images_edits(request: Request, caller: Caller, service: Service, http_args: HttpArgs) -> ImagesResponse | Response:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        raw_image, mask, fields = await form_fields(request)
    elif kind == "application/json":
        raw_image, mask, fields = await _json_form(await request.body(), http_args, service.jobs.max_body_bytes)
    else:
        raise InvalidInput("content-type", kind or None, "must be multipart/form-data or application/json")
    ask = _openai_fields(fields, service.config, http_args)
    options = validated(EditOptions, fields)
    if ask.stream and (options.n or 1) > 1:
        raise InvalidInput("n", options.n, "a streamed edit answers one image: n must be 1 with stream=true")
    size = OutputSize(ask.size, http_args.max_output_pixels)
    submission = Submission(request, caller, service, raw_image, mask, options, size, ask.user)
    if ask.stream:
        release = service.waits.take(caller)  # a long wait: bounded per key and in all, taken before any job exists
        try:
            record = await submission.submit()
        except BaseException:
            release()
            raise
        return HeldStream(_stream(submission, record, ask, http_args), release, media_type="text/event-stream")
    with service.waits.hold(caller):  # a long wait: bounded per key and in all, taken before any job exists
        record = await service.finished(await submission.submit())
    check_succeeded(record)
    data = [
        await _image(request, http_args, service.store, record, rank, ask, size.resize) for rank in range(1, (options.n or 1) + 1)
    ]
    result = record.result
    assert result is not None  # a succeeded job's
    extension = F2FExtension(
        id=record.id,
        status=result.status,  # type: ignore[arg-type]
        caption_fallback=result.caption_fallback,
        seed=result.seed,
        selected_label=result.selected_label,
        selected_frame=result.selected_frame,
        timings_s=record.timings_s,
        canvas=result.canvas,
        seeds=result.ranked_seeds,
    )
    return ImagesResponse(
        created=int(record.finished_at or 0),
        data=data,
        f2f=extension,
        output_format=ask.format,
        size=ask.size or "auto",
        usage=result.usage,
    )


def check_succeeded(record: JobRecord) -> None:
    """JobFailed (the job's own error) unless the job succeeded."""
    if record.status != "succeeded" or record.result is None:
        raise JobFailed(record.error or JobError(message="the edit failed", code="edit_failed"))


@dataclass(frozen=True)
class Submission:
    """One checked `POST /v1/images/edits`, to submit as a job."""

    request: Request
    caller: str
    service: Any
    raw_image: bytes
    mask: bytes | None
    options: EditOptions
    size: OutputSize
    user: str | None

    async def submit(self) -> JobRecord:
        record, _ = await self.service.submit(
            self.raw_image,
            self.options,
            None,
            self.caller,
            route_check=self.size,
            mask=None if self.mask is None else (self.mask, True),  # OpenAI's masks: a PNG with alpha, transparent = edit
            gone=self.request.is_disconnected,
        )
        if self.user:
            logger.info("job %s is for end user %r", record.id, self.user)
        return record


async def _stream(job: Submission, record: JobRecord, ask: OpenAIAsk, http_args: IngressArgs) -> AsyncIterator[bytes]:
    """OpenAI's image edit events for the job (see the module docstring); an error is an `error` event, then the end."""
    service, sent, seen = job.service, 0, 0
    try:
        async for version in service.versions(record, "its OpenAI stream"):
            record, preview = version, version.preview
            if preview is not None and preview.count > seen and sent < ask.partial_images:
                seen = preview.count
                if preview.step * (ask.partial_images + 1) >= (sent + 1) * preview.total:  # past the next mark
                    yield _event(await _partial(service, record.id, sent, ask))
                    sent += 1
        check_succeeded(record)
        done = await _image(job.request, http_args, service.store, record, 1, ask, job.size.resize)
        assert done.b64_json is not None and record.result is not None
        width, height = job.size.resize or record.result.source_size
        completed = ImageEditCompleted(
            b64_json=done.b64_json,
            size=f"{width}x{height}",
            output_format=ask.format,
            created_at=int(time.time()),
            usage=record.result.usage,
        )
        yield _event(completed)
    except Exception as exc:
        if not isinstance(exc, F2FError):
            logger.exception("job %s: its OpenAI stream failed", record.id)
        yield sse("error", {"type": "error", **json.loads(error_response(exc).body)})


async def _partial(service: Any, job_id: str, index: int, ask: OpenAIAsk) -> ImageEditPartialImage:
    """The job's latest preview as the `index`-th partial image, in the asked format."""
    stored = await asyncio.to_thread(service.store.objects.get, service.store.key(job_id, PREVIEW))
    data = await asyncio.to_thread(outputs.encode, stored, ask.format, ask.quality, None)
    with Image.open(io.BytesIO(stored)) as image:
        width, height = image.size
    return ImageEditPartialImage(
        b64_json=base64.b64encode(data).decode("ascii"),
        partial_image_index=index,
        size=f"{width}x{height}",
        output_format=ask.format,
        created_at=int(time.time()),
    )


def _event(event: ImageEditPartialImage | ImageEditCompleted) -> bytes:
    return sse(event.type, event.model_dump(mode="json", exclude_none=True))


@dataclass
class OutputSize:
    """OpenAI's `size`, checked once, against the checked source, before the job exists (`EditService.submit`'s
    `route_check`): `resize` is then the size the images are answered at (None: the source's)."""

    asked: str | None
    max_pixels: int
    resize: tuple[int, int] | None = None

    def __call__(self, checked: CheckedEdit) -> None:
        self.resize = outputs.check_size(self.asked, checked.source.size, self.max_pixels)


async def _json_form(body: bytes, http_args: IngressArgs, max_bytes: int) -> tuple[bytes, bytes | None, dict[str, Any]]:
    """OpenAI's JSON form: the image (`images`, one) and the mask as `{"image_url": ...}` (`f2f.serving.api.image_urls`),
    and the other fields as the multipart form has them."""
    try:
        fields = json.loads(body)
    except ValueError:
        raise InvalidInput("body", body[:40].decode("utf-8", "replace"), "must be a JSON object") from None
    if not isinstance(fields, dict):
        raise InvalidInput("body", type(fields).__name__, "must be a JSON object")
    images = fields.pop("images", None)
    if not isinstance(images, list) or not images:
        raise InvalidImage("images", images, 'must be a list of one image: [{"image_url": "data:image/png;base64,..."}]')
    if len(images) > 1:
        raise InvalidImage("images", f"{len(images)} images", "this server edits one image per request; send one")
    refs = {"images[0]": images[0], **({"mask": fields.pop("mask")} if fields.get("mask") is not None else {})}
    fields.pop("mask", None)
    found: dict[str, bytes] = {}
    for field, raw in refs.items():
        if not isinstance(raw, dict):
            raise InvalidInput(field, raw, 'must be an object: {"image_url": "data:image/png;base64,..."}')
        try:
            ref = ImageRef.model_validate(raw)
        except ValidationError as exc:
            error = invalid_input_from(exc)
            raise InvalidInput(field if error.field == "body" else f"{field}.{error.field}", raw, error.rule) from None
        found[field] = await asyncio.to_thread(image_bytes, ref, field, http_args.image_url_hosts, max_bytes)
    return found["images[0]"], found.get("mask"), fields


def _openai_fields(fields: dict[str, Any], config: F2FConfig, http_args: IngressArgs) -> OpenAIAsk:
    """Take OpenAI's own fields out of `fields` (what is left are f2f's options), each checked."""
    response_format = fields.pop("response_format", "b64_json")
    if response_format not in ("b64_json", "url"):
        raise InvalidInput("response_format", response_format, "must be b64_json or url")
    if response_format == "url" and http_args.public_base_url is None:
        raise url_response_refusal()
    model = fields.pop("model", None)
    if model is not None and model not in served_models(config):
        raise ModelNotFound(model)
    for name, (accepted, rule) in DESCRIPTIVE.items():
        value = fields.pop(name, None)
        if value is not None and value not in accepted:
            raise InvalidInput(name, value, rule)
    compression = fields.pop("output_compression", None)
    if compression is not None:
        try:
            compression = int(compression)
        except ValueError:
            raise InvalidInput("output_compression", compression, "must be an integer 0 to 100") from None
    fmt, quality = outputs.check_format(fields.pop("output_format", None), compression)
    size = fields.pop("size", None)
    stream = _boolean(fields.pop("stream", False), "stream")
    partial_images = fields.pop("partial_images", None)
    partials = 0 if partial_images is None else _count(partial_images, "partial_images", 0, 3)
    if stream and response_format == "url":
        raise InvalidInput("response_format", response_format, "a streamed edit answers b64_json events; leave it out")
    if stream and partials:
        fields["previews"] = True  # the job makes previews: the partial images
    return OpenAIAsk(response_format, fmt, quality, size, fields.pop("user", None), stream, partials)


def _boolean(value: Any, field: str) -> bool:
    """A JSON boolean, or a form's `true` / `false`; InvalidInput naming `field` otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidInput(field, value, "must be a boolean: true or false")


def _count(value: Any, field: str, low: int, high: int) -> int:
    """A JSON integer, or a form's digits, from `low` to `high`; InvalidInput naming `field` otherwise."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(field, value, f"must be an integer {low} to {high}")
    return value


async def _image(
    request: Request,
    http_args: IngressArgs,
    store: StoreBase,
    record: JobRecord,
    rank: int,
    ask: OpenAIAsk,
    size: tuple[int, int] | None,
) -> ImageData:
    assert record.result is not None
    caption = record.result.caption
    if ask.response_format == "url":
        assert http_args.public_base_url is not None  # checked before the job existed
        query: dict[str, Any] = {"output_format": ask.format, "rank": rank}
        if ask.quality is not None:
            query["output_compression"] = ask.quality
        if size is not None:
            query["size"] = f"{size[0]}x{size[1]}"
        route = request.app.url_path_for("edit_image", job_id=record.id)  # the route's path: no Host header in it
        url = public_url(http_args.public_base_url, route, query)
        return ImageData(url=url, revised_prompt=caption)
    key = store.output_key(record, "edited.png" if rank == 1 else f"ranked/{rank}.png")
    assert key is not None  # a succeeded job's
    stored = await asyncio.to_thread(store.objects.get, key)
    data = await asyncio.to_thread(outputs.encode, stored, ask.format, ask.quality, size)
    return ImageData(b64_json=base64.b64encode(data).decode("ascii"), revised_prompt=caption)
