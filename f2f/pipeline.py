"""One Frame2Frame edit, as numbered steps over the two model protocols.

    1. check inputs      4. generate one clip per seed
    2. temporal caption  5. candidates + collage -> the VLM selects, per clip
    3. canvas            6. pick the best clip, cut its frame back to the source
                         7. undo the camera's drift against the source (`f2f.align`)

Several seeds: every clip is judged on its own, then the result is the clip
whose frame was chosen with the lowest label (the least drift from the
source); a clip whose answer could not be parsed ("fallback") comes after any
edited clip, and "no_edit" clips come last. Ties go to the earlier seed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from PIL import Image

from f2f.align import Aligned, Alignment, align
from f2f.canvas import Letterboxed, place_on_canvas
from f2f.caption import caption_messages, clean_caption, load_exemplars
from f2f.config import AlignConfig, F2FConfig, VideoConfig
from f2f.errors import InvalidImage, InvalidInput
from f2f.imageio import ensure_rgb
from f2f.protocols import VLM, CancelToken, Frames, Progress, ProgressCallback, VideoGenerator
from f2f.result import ClipOutcome, EditResult, Status
from f2f.selection import candidate_frames, make_collage, parse_selection, selection_messages, selection_reminder

_STATUS_RANK = {"edited": 0, "fallback": 1, "no_edit": 2}


async def edit(
    image: Image.Image,
    text: str,
    *,
    vlm: VLM,
    generator: VideoGenerator,
    config: F2FConfig | None = None,
    seeds: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    keep_frames: bool = False,
) -> EditResult:
    """Edit `image` as `text` asks (a target description or an instruction)."""
    config = config or F2FConfig()
    cancel = cancel or CancelToken()
    notify = progress or (lambda _: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    # 1. Check inputs
    with _timed(timings, "check_inputs"):
        source, text, seeds = check_inputs(image, text, seeds, config)

    # 2. Temporal caption
    cancel.raise_if_cancelled()
    notify(Progress("caption"))
    with _timed(timings, "caption"):
        answer, caption = await write_caption(vlm, source, text, config)

    # 3. Canvas: letterboxed onto a fixed one, or a free one of the source's own aspect ratio
    with _timed(timings, "letterbox"):
        canvas = place_on_canvas(source, config.video)
        settings = config.video.model_copy(update={"width": canvas.size[0], "height": canvas.size[1]})

    # 4. Generate
    cancel.raise_if_cancelled()
    notify(Progress("generate"))
    with _timed(timings, "generate"):
        clips = await generator.generate(canvas.image, caption or text, seeds, settings, progress=notify, cancel=cancel)
        check_clips(clips, seeds, settings)

    # 5. Candidates + collage -> selection, per clip
    cancel.raise_if_cancelled()
    notify(Progress("select"))
    with _timed(timings, "select"):
        asks = (judge_clip(vlm, clip, seed, canvas, text, config) for clip, seed in zip(clips, seeds, strict=True))
        judged = await asyncio.gather(*asks)

    # 6. Best clip -> un-letterbox
    with _timed(timings, "unletterbox"):
        best = min(range(len(judged)), key=lambda i: (_STATUS_RANK[judged[i].status], judged[i].label or 0, i))
        outcome = judged[best]
        edited = canvas.restore(clips[best][outcome.frame]) if outcome.frame else source.copy()

    # 7. Camera drift: the chosen frame warped back onto the source
    with _timed(timings, "align"):
        edited, alignment = align_chosen(edited, source, outcome, config.align)
    timings["total"] = time.perf_counter() - started
    notify(Progress("done"))
    return EditResult(
        image=edited,
        text=text,
        caption=caption or text,
        caption_fallback=caption is None,
        caption_answer=answer,
        outcome=outcome,
        clips=[c.public() for c in judged],
        candidate_frames=[clips[best][f] for f in outcome.candidates],
        box=canvas.box,
        source_size=source.size,
        canvas_size=canvas.size,
        canvas_fit=canvas.fit,
        alignment=alignment,
        source=source,
        align_config=config.align,
        timings_s=timings,
        frames=clips[best] if keep_frames else None,
    )


def check_inputs(
    image: Image.Image, text: str, seeds: Sequence[int] | None, config: F2FConfig
) -> tuple[Image.Image, str, list[int]]:
    """The source as RGB, the stripped edit text, and the seeds to use; InvalidInput otherwise."""
    if not isinstance(image, Image.Image):
        raise InvalidImage("image", type(image).__name__, "must be a PIL image")
    if image.width < 1 or image.height < 1:
        raise InvalidImage("image", image.size, "must be at least 1x1 pixels")
    if image.width * image.height > config.input.max_image_pixels:
        rule = (
            f"{image.width}x{image.height} is over the limit of {config.input.max_image_pixels:,} pixels (input.max_image_pixels)"
        )
        raise InvalidImage("image", image.size, rule)
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text", text, "the edit text must not be empty")
    if len(text.strip()) > config.input.max_text_chars:
        raise InvalidInput("text", text, f"must be at most {config.input.max_text_chars} characters (input.max_text_chars)")
    return ensure_rgb(image, config.input.alpha_background), text.strip(), _seeds(seeds, config)


def _seeds(seeds: Sequence[int] | None, config: F2FConfig) -> list[int]:
    if seeds is None:
        first = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
        return [first + i for i in range(config.num_seeds)]
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or not 0 <= s < 2**32 for s in seeds):
        raise InvalidInput("seeds", seeds, "must be a non-empty list of integers 0 <= seed < 2**32")
    return seeds


async def write_caption(vlm: VLM, source: Image.Image, text: str, config: F2FConfig) -> tuple[str, str | None]:
    """The VLM's raw answer and the cleaned caption (None: the answer was unusable)."""
    cfg = config.caption
    messages = caption_messages(source, text, load_exemplars(cfg.exemplars_path))
    answer = await vlm.chat(messages, max_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    return answer, clean_caption(answer, cfg.max_chars)


def check_clips(clips: list[Frames], seeds: list[int], settings: VideoConfig) -> None:
    """The generator kept its contract: one clip per seed, exact frame count, canvas size."""
    size = (settings.width, settings.height)
    if len(clips) != len(seeds):
        raise RuntimeError(f"the video generator returned {len(clips)} clips for {len(seeds)} seeds")
    for clip in clips:
        if len(clip) != settings.num_frames or any(frame.size != size for frame in clip):
            sizes = sorted({frame.size for frame in clip})
            raise RuntimeError(
                f"the video generator returned {len(clip)} frames of sizes {sizes}; "
                f"expected {settings.num_frames} frames of {size}"
            )


async def judge_clip(vlm: VLM, clip: Frames, seed: int, canvas: Letterboxed, text: str, config: F2FConfig) -> ClipOutcome:
    """Ask the VLM which candidate of one clip achieves the edit; retry, then fall back."""
    cfg = config.selection
    frames = candidate_frames(len(clip), cfg.candidate_stride)
    crop = canvas.box
    collage = make_collage(clip[0].crop(crop), [clip[f].crop(crop) for f in frames], cfg.collage_columns, cfg.collage_max_pixels)
    messages = selection_messages(collage, text, len(frames))
    answers: list[str] = []
    for _ in range(1 + cfg.retries):
        answers.append(await vlm.chat(messages, max_tokens=cfg.max_new_tokens, temperature=0.0))
        label = parse_selection(answers[-1], len(frames))
        if label is not None:
            return ClipOutcome(seed, _status(label), label, frames[label - 1] if label else 0, answers, frames, collage)
        messages = messages + selection_reminder(answers[-1], len(frames))
    label = len(frames) if cfg.on_unparseable == "last_candidate" else 0
    return ClipOutcome(seed, "fallback", label or None, frames[-1] if label else 0, answers, frames, collage)


def align_chosen(edited: Image.Image, source: Image.Image, outcome: ClipOutcome, config: AlignConfig) -> Aligned:
    """The chosen frame aligned to the source (`f2f.align`); a result that is the source itself is left as it is."""
    if not outcome.frame:
        return Aligned(edited, Alignment(config.mode, False, "no frame chosen"))
    return align(edited, source, config)


def _status(label: int) -> Status:
    return "edited" if label else "no_edit"


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start
