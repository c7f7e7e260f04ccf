"""Reading edit request bodies: multipart forms (repeated fields, `image` and `image[]`) and JSON with base64 images."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from f2f.errors import InvalidImage, InvalidInput
from f2f.request import invalid_input_from
from f2f.serving.api.wire import EditJSON, EditOptions

M = TypeVar("M", bound=BaseModel)
MASK_DESCRIPTION = (
    "Where the edit may happen, the image's size: a PNG with alpha (fully transparent = edit here, OpenAI's format) "
    "or a one-channel PNG or TIFF (white = edit here: L, 16-bit I;16, I 0-65535, F 0.0-1.0). Outside it, the result "
    "keeps the source's pixels."
)
IMAGE_FIELDS = ("image", "image[]")  # OpenAI's SDKs send `image[]` for the array form


def multipart_schema() -> dict[str, Any]:
    schema = EditOptions.model_json_schema()
    schema["properties"]["image"] = {"type": "string", "format": "binary", "description": "The source image file."}
    schema["properties"]["mask"] = {"type": "string", "format": "binary", "description": MASK_DESCRIPTION}
    schema["required"] = ["image", "prompt"]
    return schema


async def form_fields(request: Request) -> tuple[bytes, bytes | None, dict[str, Any]]:
    """The uploaded image, the mask (None: not sent) and the other fields of a multipart body (repeated fields
    joined by commas).

    The image is `image` or `image[]`, one file: this server edits one image per request.
    """
    form = await request.form()
    fields: dict[str, Any] = {}
    images: list[Any] = []
    mask: bytes | None = None
    for key in form:
        values = form.getlist(key)
        if key in IMAGE_FIELDS:
            images += values
        elif key == "mask":
            mask = await _bytes(values[0])
        else:
            fields[key] = ",".join(str(v) for v in values) if len(values) > 1 else values[0]
    if not images:
        raise InvalidImage("image", None, "a multipart edit needs an `image` file field")
    if len(images) > 1:
        raise InvalidImage("image", f"{len(images)} images", "this server edits one image per request; send one `image`")
    return await _bytes(images[0]), mask, fields


async def _bytes(upload: Any) -> bytes:
    return await upload.read() if hasattr(upload, "read") else str(upload).encode()


async def read_submission(request: Request) -> tuple[bytes, bytes | None, EditOptions]:
    """The raw image bytes, the mask's (None: not sent) and the options of a `POST /v1/edits`, from JSON or multipart."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = validated(EditJSON, await request.body())
        mask = None if body.mask is None else b64decode(body.mask, "mask")
        return b64decode(body.image), mask, EditOptions(**body.model_dump(exclude={"image", "mask"}))
    if kind == "multipart/form-data":
        image, mask, fields = await form_fields(request)
        return image, mask, validated(EditOptions, fields)
    raise InvalidInput("content-type", kind or None, "must be application/json or multipart/form-data")


def validated(model: type[M], data: bytes | dict[str, Any]) -> M:
    """`data` (a JSON body or form fields) as `model`; InvalidInput names the first bad field."""
    try:
        return model.model_validate_json(data) if isinstance(data, bytes) else model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input_from(exc) from None


def b64decode(text: str, field: str = "image") -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(field, text[:40], "must be base64 (or a data: URL) of an image file") from None
