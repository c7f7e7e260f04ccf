"""The two model interfaces the method needs, and the small types they share.

A VLM takes OpenAI-format chat messages whose image parts carry PIL images
(``{"type": "image", "image": <PIL.Image>}``) and answers with text and the
tokens the call took, as its engine counted them (`Answer`); each backend
encodes the images for its own engine. A video generator takes the
letterboxed source (the first frame), a caption and seeds and returns one clip
per seed; with a mask (an "L" image of the canvas size: 255 where the edit may
happen, 0 where the source must stay, soft values between) it keeps the video
outside the mask at the source. Backends live elsewhere; the core depends only
on these protocols, and takes the models an edit runs on as one `Models`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from f2f.config import VideoConfig
from f2f.errors import EditCancelled

Message = dict[str, Any]  # {"role": "system" | "user" | "assistant", "content": [part, ...]}
Frames = list[Image.Image]  # one clip: frame 0 is the source


@dataclass(frozen=True)
class Progress:
    """One progress event: a stage starts, or a denoising step finishes.

    `step` and `total` count denoising steps and are set only while generating.
    `preview` (only when the caller asked the generator for previews) is an
    approximate small RGB image of the predicted last frame after that step
    (`f2f.backends.video.previews`).
    """

    stage: str
    step: int | None = None
    total: int | None = None
    preview: Image.Image | None = None


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Set from any thread to stop an edit at the next stage or denoising step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise EditCancelled("the edit was cancelled")


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of VLM calls, as the engine counted them; None where it did not say.

    `image_tokens` are the input's visual tokens (each image's pad tokens; its
    start and end markers are text). Usages add field by field: a sum with an
    unknown part is unknown.
    """

    input_tokens: int | None = 0
    output_tokens: int | None = 0
    image_tokens: int | None = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            *(None if a is None or b is None else a + b for a, b in zip(astuple(self), astuple(other), strict=True))
        )

    def as_json(self) -> dict[str, Any] | None:
        """OpenAI's Images API `usage` (the VLM writes text: every output token is a text token); None when the
        input or the output was not counted."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        text = None if self.image_tokens is None else self.input_tokens - self.image_tokens
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"image_tokens": self.image_tokens, "text_tokens": text},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"image_tokens": 0, "text_tokens": self.output_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True)
class Answer:
    """A VLM's answer to one conversation: its text, and the tokens the call read and wrote."""

    text: str
    usage: TokenUsage


@runtime_checkable
class VLM(Protocol):
    """A vision-language model: chat messages in, text (and its token counts) out."""

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        """Answer the conversation; temperature 0 means greedy decoding."""
        ...


@runtime_checkable
class VideoGenerator(Protocol):
    """An image-to-video model: the first frame, a caption and seeds in, clips out."""

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
        """One clip of exactly `settings.num_frames` canvas-size frames per seed, in seed order.

        Calls `progress(Progress("generate", step, total))` after each denoising
        step and stops with `EditCancelled` at the next step once `cancel` is set.
        `mask` (None: no mask) is an "L" image the size of `image`: where it is 0
        the generator keeps the latents pulled to the source's, noised to each
        step (blended latent diffusion); a generator that cannot raises
        `InvalidInput` naming `mask` (the caller may composite instead).
        """
        ...


@runtime_checkable
class LoadedVideoGenerator(VideoGenerator, Protocol):
    """A video generator that holds a model (what `load_generator` returns and the deployments hold): its lifecycle.

    Adapters that only pass calls on (a Ray Serve handle, an actor pool) are plain `VideoGenerator`s.
    """

    def health(self) -> None:
        """Return if the generator can generate; raise once it cannot (closed, or broken)."""
        ...

    def close(self) -> None:
        """Release the model; `generate` and `health` raise afterwards."""
        ...


@dataclass(frozen=True)
class Models:
    """What an edit runs on (`f2f.pipeline.run_edit`), one model per stage. Each host builds one in one place: in process
    `f2f.backends.build_backends`, the edit worker over its Serve handles. Bulk runs call the step functions one by one,
    each stage on its own model (`f2f.bulk.stages`)."""

    vlm: VLM
    generator: VideoGenerator
