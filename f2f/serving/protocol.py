"""Wire types of the HTTP API: the OpenAI Images response shape, f2f's extension, and the error body.

Rules:

- `POST /v1/images/edits` answers `ImagesResponse`: `created` (unix seconds)
  and `data`, one item (the chosen edit) with `b64_json` (a PNG at the
  source's size) or `url` (the job's `/image` route, kept for `jobs.ttl_s`),
  and `revised_prompt` (the temporal caption the video was made from); `f2f`
  is an extension object that OpenAI clients ignore (it names the job).
- Every error answers `ErrorResponse`: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from f2f.result import Status


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


class F2FExtension(BaseModel):
    """What explains the edit (a subset of `f2f edit`'s result.json)."""

    id: str = Field(description="The edit job: GET /v1/edits/{id} for everything about it.")
    status: Status = Field(description="edited, no_edit or fallback (see README: result.json).")
    caption_fallback: bool = Field(description="True: the VLM's caption was unusable and the prompt was used.")
    seed: int = Field(description="Seed of the chosen clip.")
    selected_label: int | None = Field(description="Chosen tile 1..N, 0 none, null unparseable.")
    selected_frame: int = Field(description="Frame index of the chosen frame (0 = the source).")
    timings_s: dict[str, float] = Field(description="Seconds per pipeline stage, and total.")
    canvas: Canvas | None = Field(None, description="The canvas the video was generated on.")


class ImagesResponse(BaseModel):
    """The OpenAI Images API response, plus the `f2f` extension."""

    created: int = Field(description="Unix time the edit finished, seconds.")
    data: list[ImageData]
    f2f: F2FExtension


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
