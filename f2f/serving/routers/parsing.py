"""Reading edit request bodies: multipart forms (repeated fields, `image` and `image[]`) and JSON with base64 images."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from f2f.errors import InvalidImage, InvalidInput
from f2f.request import invalid_input_from
from f2f.serving.protocol import EditJSON, EditOptions

M = TypeVar("M", bound=BaseModel)
IMAGE_FIELDS = ("image", "image[]")  # OpenAI's SDKs send `image[]` for the array form


def multipart_schema() -> dict[str, Any]:
    schema = EditOptions.model_json_schema()
    schema["properties"]["image"] = {"type": "string", "format": "binary", "description": "The source image file."}
    schema["required"] = ["image", "prompt"]
    return schema


async def form_fields(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The uploaded image and the other fields of a multipart body (repeated fields joined by commas).

    The image is `image` or `image[]`, one file: this server edits one image per request.
    """
    form = await request.form()
    fields: dict[str, Any] = {}
    images: list[Any] = []
    for key in form:
        values = form.getlist(key)
        if key in IMAGE_FIELDS:
            images += values
        else:
            fields[key] = ",".join(str(v) for v in values) if len(values) > 1 else values[0]
    if not images:
        raise InvalidImage("image", None, "a multipart edit needs an `image` file field")
    if len(images) > 1:
        raise InvalidImage("image", f"{len(images)} images", "this server edits one image per request; send one `image`")
    upload = images[0]
    return (await upload.read() if hasattr(upload, "read") else str(upload).encode()), fields


async def read_submission(request: Request) -> tuple[bytes, EditOptions]:
    """The raw image bytes and the options of a `POST /v1/edits`, from JSON or multipart."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = validated(EditJSON, await request.body())
        return b64decode(body.image), EditOptions(**body.model_dump(exclude={"image"}))
    if kind == "multipart/form-data":
        image, fields = await form_fields(request)
        return image, validated(EditOptions, fields)
    raise InvalidInput("content-type", kind or None, "must be application/json or multipart/form-data")


def validated(model: type[M], data: bytes | dict[str, Any]) -> M:
    """`data` (a JSON body or form fields) as `model`; InvalidInput names the first bad field."""
    try:
        return model.model_validate_json(data) if isinstance(data, bytes) else model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input_from(exc) from None


def b64decode(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("image", text[:40], "must be base64 (or a data: URL) of a PNG, JPEG or WebP file") from None
