"""Test fakes for the two model protocols. They live in tests/ only: the product never uses them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image
from scenes import moved

from f2f.config import VideoConfig
from f2f.protocols import Answer, CancelToken, Frames, Message, Progress, ProgressCallback, TokenUsage
from f2f.selection import ANSWER_PHRASE


def _asks_for(messages: Sequence[Message], placeholder: str) -> bool:
    first = messages[0]["content"]
    return any(part["type"] == "text" and f"{ANSWER_PHRASE}: {placeholder}" in part["text"] for part in first)


def is_selection(messages: Sequence[Message]) -> bool:
    """Whether a conversation is a selection question (it asks for the fixed phrase with a label)."""
    return _asks_for(messages, "<label>")


def is_ranking(messages: Sequence[Message]) -> bool:
    """Whether a conversation is a ranking question (it asks for the fixed phrase with a version)."""
    return _asks_for(messages, "<version>")


USAGE = {"caption": TokenUsage(900, 14, 700), "select": TokenUsage(300, 5, 250), "rank": TokenUsage(200, 5, 150)}
"""The tokens ScriptedVLM says each kind of call took."""


def scripted_usage(kinds: Sequence[str]) -> TokenUsage:
    """The usage of ScriptedVLM calls of these kinds (caption, select, rank)."""
    return sum((USAGE[kind] for kind in kinds), TokenUsage())


class ScriptedVLM:
    """Answers captions with `caption`, selections with `selections` and rankings with `rankings`, each in
    order (the last repeats). The default ranking answer, 1 in both orders, is a position-biased VLM's.
    Each answer's usage is its kind's in `usage` (USAGE)."""

    def __init__(
        self,
        caption: str = "The sun slowly sets behind the hills.",
        selections: Sequence[str] = ("SELECTED: 3",),
        rankings: Sequence[str] = ("SELECTED: 1",),
        usage: Mapping[str, TokenUsage] = USAGE,
    ):
        self.caption = caption
        self.usage = usage
        self.scripts = {"select": list(selections), "rank": list(rankings)}
        self.calls: list[tuple[str, list[Message], int, float]] = []

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        kind = "select" if is_selection(messages) else "rank" if is_ranking(messages) else "caption"
        self.calls.append((kind, list(messages), max_tokens, temperature))
        answer = self.caption if kind == "caption" else self._next(kind)
        await asyncio.sleep(0)  # let concurrent asks interleave, as a real engine would
        return Answer(answer, self.usage[kind])

    def _next(self, kind: str) -> str:
        script = self.scripts[kind]
        index = sum(1 for call in self.calls if call[0] == kind) - 1
        return script[min(index, len(script) - 1)]


class SyntheticGenerator:
    """A clip that starts at the given image and brightens frame by frame; seeds shift the colour.

    Frame i of seed s is the first frame plus i * 3 on every channel and s % 50
    on the red channel, clipped: frames differ by index and by seed, so tests
    can tell which frame and which clip came back. A mask is recorded (`masks`,
    one entry per call, None when none came), not applied.
    """

    def __init__(self, cancel_at_step: int | None = None):
        self.cancel_at_step = cancel_at_step
        self.calls: list[tuple[Image.Image, str, list[int], VideoConfig]] = []
        self.masks: list[Image.Image | None] = []
        self.closed = False

    def health(self) -> None:
        if self.closed:
            raise RuntimeError("the synthetic generator is closed")

    def close(self) -> None:
        self.closed = True

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
        self.health()
        self.calls.append((image, caption, list(seeds), settings))
        self.masks.append(mask)
        for step in range(1, settings.num_inference_steps + 1):
            if cancel is not None:
                if step == self.cancel_at_step:
                    cancel.cancel()
                cancel.raise_if_cancelled()
            await asyncio.sleep(0)
            if progress is not None:
                progress(Progress("generate", step, settings.num_inference_steps))
        return [self.clip(image, seed, settings.num_frames) for seed in seeds]

    @staticmethod
    def clip(image: Image.Image, seed: int, num_frames: int) -> Frames:
        base = np.asarray(image, dtype=np.int16)
        frames = [image.copy()]
        for i in range(1, num_frames):
            frame = base + i * 3
            frame[..., 0] += seed % 50
            frames.append(Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)))
        return frames


class DriftingGenerator(SyntheticGenerator):
    """A clip whose camera pans: frame i is the first frame shifted right by i * `step_px` pixels (tests.scenes.moved)."""

    def __init__(self, step_px: float = 1.0):
        super().__init__()
        self.step_px = step_px

    def clip(self, image: Image.Image, seed: int, num_frames: int) -> Frames:  # type: ignore[override]
        return [moved(image, (i * self.step_px, 0.0)) for i in range(num_frames)]


class NoiseGenerator(SyntheticGenerator):
    """A clip of uniform noise after the first frame, as random-weight models make."""

    def clip(self, image: Image.Image, seed: int, num_frames: int) -> Frames:  # type: ignore[override]
        rng = np.random.default_rng(seed)
        noise = [
            Image.fromarray(rng.integers(0, 256, (image.height, image.width, 3), dtype=np.uint8)) for _ in range(1, num_frames)
        ]
        return [image.copy(), *noise]
