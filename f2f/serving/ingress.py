"""The HTTP ingress: FastAPI routes over the two model deployments.

Routes (this slice):

- `GET /healthz`: the process is up -> 200 `{"status": "ok"}`.
- `GET /readyz`: both deployments answer a health call within
  `READY_TIMEOUT_S` -> 200, else 503 with the error body. The generator takes
  one request at a time, so while it generates a video the probe waits
  behind it and may time out.
- `POST /v1/images/edits`: OpenAI Images API compatible (multipart `image`,
  `prompt`, optional `n` seeds, `response_format`, `seed`; `model` and other
  OpenAI fields are accepted and ignored). Runs `f2f.pipeline.edit` unchanged,
  with adapters that implement the `VLM` and `VideoGenerator` protocols by
  awaiting the deployment handles; answers one image, the chosen edit.

Each edit is recorded in `f2f.serving.metrics` (stage times, outcome, VLM
fallbacks, edits in flight); rejected requests (bad input) are not.

Nothing here blocks the event loop: image decoding and PNG encoding run in
worker threads, model calls are awaited handle calls.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Sequence
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import Field

from f2f.config import F2FConfig, VideoConfig
from f2f.errors import F2FError, InvalidInput
from f2f.imageio import open_image
from f2f.pipeline import edit
from f2f.protocols import CancelToken, Frames, Message, ProgressCallback
from f2f.serving import metrics
from f2f.serving.errors import NotReady, error_response, install_error_handlers
from f2f.serving.protocol import SUPPORTED_RESPONSE_FORMATS, Health, ImagesResponse, ResponseFormat

READY_TIMEOUT_S = 5.0
# Constraints sit on the inner type: FastAPI does not apply Form(ge=...) to `int | None`. Annotations are
# resolved in this module's globals (postponed evaluation), so request limits known only at run time
# (the largest `n`) are checked in the route.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
SeedCount = Annotated[int, Field(ge=1)]


async def _remote(response: Awaitable[Any]) -> Any:
    """Await a handle call; an f2f error raised in the replica comes out as itself, not wrapped by Ray."""
    try:
        return await response
    except F2FError:
        raise
    except Exception as exc:
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError carries the original
        if isinstance(cause, F2FError):
            raise cause from None
        raise


class RemoteVLM:
    """`f2f.protocols.VLM` over a VLMDeployment handle."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> str:
        return await _remote(self.handle.chat.remote(list(messages), max_tokens, temperature))


class RemoteGenerator:
    """`f2f.protocols.VideoGenerator` over a GeneratorDeployment handle (progress is not forwarded)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def generate(
        self,
        image: Image.Image,
        caption: str,
        seeds: Sequence[int],
        settings: VideoConfig,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[Frames]:
        if cancel is not None:
            cancel.raise_if_cancelled()
        return await _remote(self.handle.generate.remote(image, caption, list(seeds), settings))


class Ingress:
    """Serve deployment body: holds the two handles; its FastAPI app is built on the replica."""

    def __init__(self, vlm: Any, generator: Any, config: F2FConfig, max_n: int = 4) -> None:
        self.handles = {"vlm": vlm, "generator": generator}
        self.config = config
        self.max_n = max_n

    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_api(self.handles["vlm"], self.handles["generator"], self.config, self.max_n)


def make_api(vlm_handle: Any, generator_handle: Any, config: F2FConfig, max_n: int) -> FastAPI:
    """The FastAPI app over two deployment handles."""
    app = FastAPI(title="f2f", description="Frame2Frame image editing (OpenAI Images API compatible)")
    install_error_handlers(app)
    vlm, generator = RemoteVLM(vlm_handle), RemoteGenerator(generator_handle)

    @app.get("/healthz")
    async def healthz() -> Health:
        return Health()

    @app.get("/readyz", response_model=None)
    async def readyz() -> Health | JSONResponse:
        probes = (vlm_handle.check_health.remote(), generator_handle.check_health.remote())
        try:
            await asyncio.wait_for(asyncio.gather(*(_remote(p) for p in probes)), READY_TIMEOUT_S)
        except Exception as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            return error_response(NotReady(f"a model deployment is not ready ({reason})"))
        return Health()

    @app.post("/v1/images/edits")
    async def images_edits(
        image: Annotated[UploadFile, File(description="The source image: PNG, JPEG or WebP.")],
        prompt: Annotated[str, Form(description="The edit: a target description or an instruction.")],
        n: Annotated[SeedCount | None, Form(description="Seeds (videos) to try; the best edit is returned.")] = None,
        response_format: Annotated[ResponseFormat, Form()] = "b64_json",
        seed: Annotated[Seed | None, Form(description="Seed of the first video (default: the config's, else random).")] = None,
        model: Annotated[str | None, Form(description="Accepted for OpenAI clients; ignored.")] = None,
    ) -> ImagesResponse:
        if response_format not in SUPPORTED_RESPONSE_FORMATS:
            rule = "only b64_json is supported; url needs result storage, which this server does not have yet"
            raise InvalidInput("response_format", response_format, rule)
        if n is not None and n > max_n:
            raise InvalidInput("n", n, f"must be at most {max_n} (seeds per edit this server allows)")
        run_config = _request_config(config, n, seed)
        source = await asyncio.to_thread(open_image, await image.read(), config.input)
        with metrics.in_flight():
            try:
                result = await edit(source, prompt, vlm=vlm, generator=generator, config=run_config)
            except InvalidInput:
                raise  # the client's mistake, not a failed edit: not counted
            except Exception:
                metrics.record_error()
                raise
        metrics.record_edit(result)
        return ImagesResponse.from_result(result, await asyncio.to_thread(_b64_png, result.image))

    return app


def _request_config(config: F2FConfig, n: int | None, seed: int | None) -> F2FConfig:
    """The server config with this request's seed count and first seed (both already validated)."""
    update: dict[str, Any] = {}
    if n is not None:
        update["num_seeds"] = n
    if seed is not None:
        update["seed"] = seed
    return config.model_copy(update=update)


def _b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
