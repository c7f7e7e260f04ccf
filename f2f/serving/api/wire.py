"""Wire types of the HTTP API, all of them: requests, jobs, the OpenAI Images shapes, models, and the error body.

Rules:

- `POST /v1/edits` takes `EditOptions` (multipart fields) or `EditJSON` (the
  same with `image` as base64); its per-edit settings are `f2f.request.EditSettings`.
- A job is shown as `JobView`; its `result` (`JobResult`), `progress`
  (`JobProgress`) and `error` (`JobError`) are stored as they are shown.

- `POST /v1/images/edits` answers `ImagesResponse`: `created` (unix seconds)
  and `data`, one item (the chosen edit) with `b64_json` (a PNG at the
  source's size) or `url` (the job's `/image` route, kept for `jobs.ttl_s`),
  and `revised_prompt` (the temporal caption the video was made from); `usage`
  in OpenAI's shape (`Usage`: the tokens of the edit's VLM calls, as the job's
  result has it); `f2f` is an extension object that OpenAI clients ignore (it
  names the job, and its `timings_s` has the seconds of each stage).
- Every error answers `ErrorResponse`: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from f2f.request import EditSettings
from f2f.result import Status

if TYPE_CHECKING:
    from f2f.serving.jobs import JobRecord


class EditOptions(EditSettings):
    """Options of `POST /v1/edits` (JSON body or multipart fields); null means the server's setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(description="The edit: a target description or an instruction.")
    return_video: bool = Field(False, description="Keep the chosen clip as video.mp4 (`/video`).")
    return_frames: bool = Field(False, description="Accepted for older clients: every job now keeps its candidate frames.")
    previews: bool = Field(
        False,
        description="Make approximate previews of the edit as it forms: the job's `preview` event and `/preview` route.",
    )

    @field_validator("seeds", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def settings(self) -> EditSettings:
        return EditSettings(**self.model_dump(include=set(EditSettings.model_fields)))


class EditJSON(EditOptions):
    """`POST /v1/edits` as JSON."""

    image: str = Field(description="The source image (PNG, JPEG or WebP) as base64, or a data: URL.")
    mask: str | None = Field(
        None, description="A mask (base64 PNG, the image's size): alpha 0 = edit here, or one channel with white = edit here."
    )


class JobProgress(BaseModel):
    """Denoising steps done of all steps of the job (all seeds)."""

    step: int
    total: int


class JobPreview(BaseModel):
    """The latest preview of a job that asked for them: the predicted last frame after `step` of `total` steps."""

    step: int
    total: int
    count: int = Field(description="Previews written so far; the latest is at `/v1/edits/{id}/preview`.")
    approximate: Literal[True] = Field(True, description="A linear map of the latents, not the VAE: colours are rough.")


class JobError(BaseModel):
    """Why a job failed or was cancelled: as the HTTP error body's `error`."""

    message: str
    type: str = "server_error"
    code: str | None = None


class ImageData(BaseModel):
    """One edited image, as the OpenAI Images API returns it."""

    b64_json: str | None = Field(None, description="The edited image as base64 PNG, at the source's size.")
    url: str | None = Field(None, description="Where to GET the edited image (response_format=url).")
    revised_prompt: str = Field(description="The temporal caption the video was generated from.")


class Canvas(BaseModel):
    """The video canvas of an edit."""

    size: list[int] = Field(description="(width, height) in pixels.")
    fit: Literal["letterbox", "free"] = Field(
        description="letterbox: the source on a fixed canvas between black bars; free: a canvas of the source's own "
        "aspect ratio, no bars."
    )


class CandidateFrame(BaseModel):
    """One frame along the chosen clip's path: label 0 is the source, 1..N the collage's tiles."""

    label: int = Field(description="0 the source, 1..N the tile of the collage.")
    frame: int = Field(description="Index of the frame in the clip (0 = the source).")
    url: str = Field(description="Where to GET it: `/v1/edits/{id}/frames/{label}`.")


class Selection(BaseModel):
    """The caller's choice of the result frame (`POST /v1/edits/{id}/select`); the VLM's stays in `result`."""

    label: int = Field(description="The chosen label: 0 the source, 1..N a tile.")
    frame: int = Field(description="Index of the chosen frame in the clip (0 = the source).")
    by: str = Field(description="Who chose it: the API key's name, `anonymous` when auth is off.")
    at: float = Field(description="When (unix seconds).")


class SelectRequest(BaseModel):
    """`POST /v1/edits/{id}/select`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    label: int = Field(description="The frame to make the result: 0 the source, 1..N a tile of the collage.")


class RankingView(BaseModel):
    """How an edit's seeds were ranked (`f2f.ranking`): `/image?rank=k` serves the k-th."""

    rule: str = Field(description="vlm: both asks named the same clip; label_rule: they did not (or rank: label); single.")
    order: list[int] = Field(description="The seeds, best first.")
    answers: list[str] = Field(description="The VLM's answers to the two asks.")
    orders_asked: list[list[int]] = Field(description="The seeds of the finalists in the order each ask showed them.")


class AlignmentView(BaseModel):
    """How the result was aligned to the source (camera drift, `f2f.align`; README: result.json `alignment`)."""

    mode: str = Field(description="off, auto or always.")
    applied: bool
    reason: str | None = Field(description="Why it was not applied (null when it was).")
    matrix: list[list[float]] | None = Field(description="2x3 motion, source pixel to edit pixel.")
    shift_px: list[float] | None
    scale: float | None
    rotation_deg: float | None
    inliers: int | None
    error_before: float | None = Field(description="Mean absolute error to the source where it matches, grey levels.")
    error_after: float | None


class MaskView(BaseModel):
    """The caller's mask of a masked edit (`f2f.masks`): outside it, beyond the feather, the source's pixels."""

    area: float = Field(description="The fraction of the image the mask marks to edit.")
    mode: str = Field(description="latent (kept while the video was made) or composite (only in the result).")
    feather_px: int = Field(description="Width of the ramp between the edit and the kept source, pixels.")


class TokenDetails(BaseModel):
    """How many of the tokens were image tokens and how many text."""

    image_tokens: int | None = Field(description="Visual tokens; null: the VLM endpoint does not say (vlm.backend openai).")
    text_tokens: int | None = Field(description="The other tokens; null when image_tokens is.")


class Usage(BaseModel):
    """The tokens of the edit's VLM calls (the caption, every selection ask and its retries, the ranking asks), as the
    VLM counted them, in the shape of OpenAI's Images API `usage` (`f2f.protocols.TokenUsage.as_json`)."""

    input_tokens: int = Field(description="Prompt tokens of all calls, images and text.")
    input_tokens_details: TokenDetails
    output_tokens: int = Field(description="Answer tokens of all calls (text).")
    output_tokens_details: TokenDetails
    total_tokens: int = Field(description="input_tokens + output_tokens.")


class JobResult(BaseModel):
    """What explains a finished edit (a subset of `f2f edit`'s result.json) and which outputs exist."""

    status: str = Field(description="edited, no_edit or fallback.")
    caption: str = Field(description="The temporal caption the video was generated from.")
    caption_fallback: bool
    seed: int = Field(description="Seed of the chosen clip.")
    selected_label: int | None = Field(description="Chosen tile 1..N, 0 none, null unparseable.")
    selected_frame: int = Field(description="Frame index of the chosen frame (0 = the source).")
    candidate_frames: list[int] = Field(description="Frame index of each tile 1..N: `/frames/{label}` serves them.")
    letterbox_box: list[int] = Field(description="Where the source lies on the video canvas: left, top, right, bottom.")
    source_size: list[int]
    canvas: Canvas | None = Field(None, description="The canvas the video was generated on.")
    ranking: RankingView | None = Field(None, description="How the seeds were ranked.")
    alignment: AlignmentView | None = Field(None, description="How the camera's drift was undone (null in jobs before it).")
    mask: MaskView | None = Field(None, description="The caller's mask (null: none).")
    usage: Usage | None = Field(None, description="The tokens of the VLM's calls (null: the VLM did not count them).")
    has_video: bool
    has_frames: bool
    frames: list[CandidateFrame] = Field(default_factory=list, description="The source and every candidate tile, by label.")

    @property
    def ranked_seeds(self) -> list[int]:
        return self.ranking.order if self.ranking is not None else [self.seed]


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
    preview: JobPreview | None = Field(None, description="The latest approximate preview (a job that asked for them).")
    links: dict[str, str]

    @classmethod
    def of(cls, record: JobRecord) -> JobView:
        base = f"/v1/edits/{record.id}"
        links = {"self": base, "events": f"{base}/events"}
        if record.preview is not None:
            links["preview"] = preview_url(record)
        if record.status == "succeeded" and record.result is not None:
            links |= {"image": f"{base}/image", "collage": f"{base}/collage", "result": f"{base}/result"}
            if record.result.has_video:
                links["video"] = f"{base}/video"
            if record.result.has_frames:
                links["frames"] = f"{base}/frames/{{label}}"
        data = record.model_dump(exclude={"request", "fingerprint", "updated_at", "worker", "heartbeat_at", "sent_at", "owner"})
        return cls(**data, prompt=record.request.prompt, seeds=record.request.seeds, links=links)


def preview_url(record: JobRecord) -> str:
    """The job's latest preview (its count in the query: each one is a new URL to a browser's cache)."""
    assert record.preview is not None
    return f"/v1/edits/{record.id}/preview?n={record.preview.count}"


class JobList(BaseModel):
    """A page of the caller's jobs, newest first (OpenAI's list shape): `after=<last_id>` asks for the next one."""

    object: Literal["list"] = "list"
    data: list[JobView]
    first_id: str | None = Field(description="The id of the page's first (newest) job; null on an empty page.")
    last_id: str | None = Field(description="The id of the page's last job: the `after` of the next page.")
    has_more: bool = Field(description="Older jobs follow this page.")

    @classmethod
    def of(cls, records: list[JobRecord], has_more: bool) -> JobList:
        data = [JobView.of(record) for record in records]
        ids = [view.id for view in data] or [None]
        return cls(data=data, first_id=ids[0], last_id=ids[-1], has_more=has_more)


class F2FExtension(BaseModel):
    """What explains the edit (a subset of `f2f edit`'s result.json)."""

    id: str = Field(description="The edit job: GET /v1/edits/{id} for everything about it.")
    status: Status = Field(description="edited, no_edit or fallback (see README: result.json).")
    caption_fallback: bool = Field(description="True: the VLM's caption was unusable and the prompt was used.")
    seed: int = Field(description="Seed of the chosen clip.")
    selected_label: int | None = Field(description="Chosen tile 1..N, 0 none, null unparseable.")
    selected_frame: int = Field(description="Frame index of the chosen frame (0 = the source).")
    timings_s: dict[str, float] = Field(
        description="Seconds per pipeline stage (caption, generate, select, rank, align and the small ones), and total."
    )
    canvas: Canvas | None = Field(None, description="The canvas the video was generated on.")
    seeds: list[int] = Field(default_factory=list, description="The seeds, best edit first (the order of `data`).")


class ImagesResponse(BaseModel):
    """The OpenAI Images API response, plus the `f2f` extension."""

    created: int = Field(description="Unix time the edit finished, seconds.")
    data: list[ImageData] = Field(description="`n` edits, best first.")
    output_format: str = Field("png", description="png, jpeg or webp.")
    size: str = Field("auto", description="As asked: auto (the source's size) or WIDTHxHEIGHT.")
    usage: Usage | None = Field(None, description="The tokens of the edit's VLM calls (null: the VLM did not count them).")
    f2f: F2FExtension


class ImageEditEvent(BaseModel):
    """What OpenAI's image edit stream events share."""

    b64_json: str
    size: str = Field(description="WIDTHxHEIGHT of this image (a partial image is a small preview).")
    quality: Literal["auto"] = "auto"
    background: Literal["opaque"] = "opaque"
    output_format: str
    created_at: int


class ImageEditPartialImage(ImageEditEvent):
    """OpenAI's `image_edit.partial_image` stream event: an approximate preview of the edit as it forms."""

    type: Literal["image_edit.partial_image"] = "image_edit.partial_image"
    partial_image_index: int = Field(description="0-based, in the order they were made.")


class ImageEditCompleted(ImageEditEvent):
    """OpenAI's `image_edit.completed` stream event: the edit (the best of its seeds)."""

    type: Literal["image_edit.completed"] = "image_edit.completed"
    usage: Usage | None = Field(None, description="As the response's `usage`; left out where the VLM did not count.")


class ModelCard(BaseModel):
    """A model this server serves, as OpenAI's `GET /v1/models` lists one."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the server started, seconds.")
    owned_by: str = "f2f"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    """What went wrong: `param` names the request field at fault (null: none), `code` is machine-readable."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: Literal["ok"] = "ok"
