"""The model protocols over deployment handles: the `Models` the edit worker runs `f2f.pipeline.run_edit` on
(`remote_models`: the one place a Serve host builds its bundle).

Rules:

- `RemoteVLM.chat` is one handle call to `VLMDeployment.chat`; the answer
  comes back whole, its token usage with it.
- `RemoteGenerator.generate` is one streaming handle call to
  `GeneratorDeployment.generate_stream`: `Progress` items are passed to the
  pipeline's progress callback as they arrive, the last item is the clips.
  When the awaiting task is cancelled, or the cancel token is set at a
  progress event, the stream is cancelled: Serve cancels the request in the
  generator replica, which stops the video at its next denoising step.
  A mask (an "L" PIL image, pickled by Ray) is passed on as `mask`, and
  left out of the call without one. A job that asked for previews runs on
  `with_previews`' models: the call then asks for one every
  `generator.preview_every` steps (`f2f.backends.video.previews.preview_interval`),
  and its `Progress` items carry them; no other call asks.
- An f2f error raised in a replica comes out as itself, not wrapped by Ray.
- A call made inside `f2f.serving.logs.job_logging` (the worker runs every
  job in it) carries the job's id as its Serve request id: the called
  replica's log lines name the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from PIL import Image

from f2f.config import VideoConfig
from f2f.errors import F2FError, unwrap
from f2f.protocols import Answer, CancelToken, Frames, Message, Models, Progress, ProgressCallback


def remote_models(vlm: Any, generator: Any) -> Models:
    """The models of an edit over a VLMDeployment and a GeneratorDeployment handle."""
    return Models(RemoteVLM(vlm), RemoteGenerator(generator))


def with_previews(models: Models, preview_every: int | None) -> Models:
    """`remote_models`' models, whose generator asks for previews (`preview_every`: the config's, null: about 8 a run)."""
    assert isinstance(models.generator, RemoteGenerator)
    return Models(models.vlm, RemoteGenerator(models.generator.handle, previews=True, preview_every=preview_every))


async def remote(response: Awaitable[Any]) -> Any:
    """Await a handle call, unwrapping f2f errors."""
    try:
        return await response
    except Exception as exc:
        cause = unwrap(exc)  # ray.exceptions.RayTaskError carries the original
        if cause is exc or not isinstance(cause, F2FError) or isinstance(exc, F2FError):
            raise
        raise cause from None


class RemoteVLM:
    """`f2f.protocols.VLM` over a VLMDeployment handle."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        return await remote(self.handle.chat.remote(list(messages), max_tokens, temperature))


class RemoteGenerator:
    """`f2f.protocols.VideoGenerator` over a GeneratorDeployment handle, with progress and cancellation."""

    def __init__(self, handle: Any, previews: bool = False, preview_every: int | None = None) -> None:
        self.handle = handle.options(stream=True)
        self.previews, self.preview_every = previews, preview_every

    async def generate(
        self,
        image: Image.Image,
        caption: str,
        seeds: Sequence[int],
        settings: VideoConfig,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        mask: Image.Image | None = None,
    ) -> list[Frames]:
        if cancel is not None:
            cancel.raise_if_cancelled()
        asked: dict[str, Any] = {} if mask is None else {"mask": mask}
        if self.previews:
            from f2f.backends.video.previews import preview_interval

            asked["preview_every"] = preview_interval(self.preview_every, settings.num_inference_steps)
        stream = self.handle.generate_stream.remote(image, caption, list(seeds), settings, **asked)
        clips: list[Frames] | None = None
        try:
            async for item in stream:
                if isinstance(item, Progress):
                    if progress is not None:
                        progress(item)
                    if cancel is not None and cancel.cancelled:
                        stream.cancel()
                        cancel.raise_if_cancelled()
                else:
                    clips = item
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except Exception as exc:
            raised = unwrap(exc)
            if raised is exc:
                raise
            raise raised from None
        if clips is None:
            raise RuntimeError("the generator's stream ended without clips")
        return clips
