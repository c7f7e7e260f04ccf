"""One Frame2Frame edit, as numbered steps over the two model protocols.

`run_edit` runs a request checked by `f2f.request.check_edit` and checks
nothing again; `edit` is the library's call: it checks its arguments, then runs.
The steps are functions over an `EditInFlight` (what the steps made so far):
`run_edit` calls them in order, in one process; a bulk run calls each in the
stage that holds its model (`f2f.bulk.stages`), moving the `EditInFlight`
between them.

    1. check inputs      4. generate one clip per seed
    2. temporal caption  5. candidates + collage -> the VLM selects, per clip
    3. canvas            6. rank the clips
                         7. the best one's frame made an edit of the source (`f2f.result.edit_of`: un-letterbox,
                            undo the camera's drift (`f2f.align`), composite under a mask)

Several seeds: every clip is judged on its own, then the clips are ranked
(`f2f.ranking`). With two or more edited clips the VLM compares their chosen
frames, asked twice in opposite orders; when both answers name the same clip
it wins. Otherwise, or with `selection.rank: label`, the label rule decides:
the clip whose frame was chosen with the lowest label (the least drift from
the source), a clip whose answer could not be parsed ("fallback") after any
edited clip, "no_edit" clips last, ties to the earlier seed. The rest follow
by the label rule.

The edit's `usage` sums the tokens of every VLM call it made (the caption, each
selection ask and its retries, the ranking asks), as the VLM counted them.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image

from f2f.canvas import Letterboxed, place_on_canvas
from f2f.caption import caption_messages, clean_caption, load_exemplars
from f2f.config import F2FConfig, MaskConfig, VideoConfig
from f2f.masks import MaskedEdit, composite, feathered
from f2f.protocols import (
    VLM,
    Answer,
    CancelToken,
    Frames,
    Message,
    Models,
    Progress,
    ProgressCallback,
    TokenUsage,
    VideoGenerator,
)
from f2f.ranking import rank_clips
from f2f.request import CheckedEdit, check_edit, settings_from
from f2f.result import ClipOutcome, EditResult, Ranking, Status, edit_of
from f2f.selection import candidate_frames, make_collage, parse_selection, selection_messages, selection_reminder

_T = TypeVar("_T")

STAGES = ("caption", "generate", "select", "rank", "align", "total")
"""The stages whose seconds every report shows (metrics, bulk summaries); `timings_s` has these and the small ones."""


async def edit(
    image: Image.Image | bytes | str | Path,
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
    """Edit `image` as `text` asks (a target description or an instruction); `seeds` default to the config's."""
    settings = settings_from({"seeds": None if seeds is None else list(seeds)}, nested_fields=False)
    request = check_edit(image, text, config or F2FConfig(), settings)
    return await run_edit(request, Models(vlm, generator), progress=progress, cancel=cancel, keep_frames=keep_frames)


async def run_edit(
    request: CheckedEdit,
    models: Models,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    keep_frames: bool = False,
) -> EditResult:
    """Run a checked request on `models`; `keep_frames` keeps the chosen clip's frames on the result (for its video)."""
    cancel = cancel or CancelToken()
    notify = progress or (lambda _: None)
    edit = EditInFlight.of(request)
    cancel.raise_if_cancelled()
    notify(Progress("caption"))
    await caption_edit(edit, models.vlm)
    cancel.raise_if_cancelled()
    notify(Progress("generate"))
    await generate_clips(edit, models.generator, progress=notify, cancel=cancel)
    cancel.raise_if_cancelled()
    notify(Progress("select"))
    await select_clip(edit, models.vlm, cancel)
    result = finish_edit(edit, keep_frames)
    notify(Progress("done"))
    return result


@dataclass
class EditInFlight:
    """One edit between its stages: what each step made so far. Plain data (Pillow images, config models), so a
    host may run the stages in different processes (`f2f.bulk` moves it between Ray Data's actor pools)."""

    request: CheckedEdit
    timings: dict[str, float]
    started: float  # wall clock (time.time) when the request's check began: `total` counts from there
    answer: str = ""  # the VLM's raw caption answer
    caption: str | None = None  # the cleaned caption; None: the answer was unusable (the edit text is used)
    canvas: Letterboxed | None = None
    settings: VideoConfig | None = None  # the video settings at the canvas's size
    masked: MaskedEdit | None = None
    canvas_mask: Image.Image | None = None
    clips: list[Frames] = field(default_factory=list)
    judged: list[ClipOutcome] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # clip indices, best first
    ranking: Ranking | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)  # the tokens of the VLM calls so far

    @classmethod
    def of(cls, request: CheckedEdit) -> EditInFlight:
        """1. Check inputs: done by check_edit (its seconds are the request's)."""
        return cls(request, {"check_inputs": request.check_s}, time.time() - request.check_s)


async def caption_edit(edit: EditInFlight, vlm: VLM) -> None:
    """2. The temporal caption; 3. the canvas: letterboxed onto a fixed one, or a free one of the source's aspect ratio."""
    request, config = edit.request, edit.request.config
    with _timed(edit.timings, "caption"):
        edit.answer, edit.caption = await write_caption(_Counted(vlm, edit), request.source, request.text, config)
    with _timed(edit.timings, "letterbox"):
        edit.canvas = canvas = place_on_canvas(request.source, config.video)
        edit.settings = config.video.model_copy(update={"width": canvas.size[0], "height": canvas.size[1]})
        if request.mask is not None:
            edit.masked = MaskedEdit.of(request.mask, config.mask)
            edit.canvas_mask = canvas.place_mask(request.mask)


async def generate_clips(
    edit: EditInFlight, generator: VideoGenerator, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
) -> None:
    """4. One clip per seed (with a mask in latent mode, the generator keeps the source outside it), then a mask's
    clips composited onto the canvas. Needs `caption_edit`."""
    request, canvas, settings = edit.request, _made(edit.canvas), _made(edit.settings)
    with _timed(edit.timings, "generate"):
        latent_mask = {"mask": edit.canvas_mask} if edit.masked is not None and edit.masked.mode == "latent" else {}
        clips = await generator.generate(
            canvas.image, edit.caption or request.text, request.seeds, settings, progress=progress, cancel=cancel, **latent_mask
        )
        check_clips(clips, request.seeds, settings)
    if edit.canvas_mask is not None:
        with _timed(edit.timings, "mask"):
            clips = composite_clips(clips, canvas.image, edit.canvas_mask, request.config.mask)
    edit.clips = clips


async def select_clip(edit: EditInFlight, vlm: VLM, cancel: CancelToken | None = None) -> None:
    """5. Candidates + collage -> the VLM selects, per clip; 6. the clips ranked (the VLM compares the edited ones).
    Needs `generate_clips`."""
    request, canvas, vlm = edit.request, _made(edit.canvas), _Counted(vlm, edit)
    with _timed(edit.timings, "select"):
        judgements = (
            judge_clip(vlm, clip, seed, canvas, request.text, request.config)
            for clip, seed in zip(edit.clips, request.seeds, strict=True)
        )
        edit.judged = list(await asyncio.gather(*judgements))
    if cancel is not None:
        cancel.raise_if_cancelled()
    with _timed(edit.timings, "rank"):
        edit.order, edit.ranking = await rank_clips(vlm, edit.judged, edit.clips, canvas, request.text, request.config)


def finish_edit(edit: EditInFlight, keep_frames: bool = False) -> EditResult:
    """7. The best frame made the edit: un-letterboxed, its camera drift undone, under a mask the source put back.
    Needs `select_clip`; `keep_frames` keeps the chosen clip's frames on the result (for its video)."""
    request, canvas, clips, judged, order = edit.request, _made(edit.canvas), edit.clips, edit.judged, edit.order
    source, config, timings = request.source, request.config, edit.timings
    best, outcome = order[0], judged[order[0]]
    chosen = clips[best][outcome.frame] if outcome.frame else None
    edited, alignment = edit_of(chosen, canvas.box, source, config.align, edit.masked, functools.partial(_timed, timings))
    timings["total"] = time.time() - edit.started
    return EditResult(
        image=edited,
        text=request.text,
        caption=edit.caption or request.text,
        caption_fallback=edit.caption is None,
        caption_answer=edit.answer,
        outcome=outcome,
        clips=[c.as_json() for c in judged],
        candidate_frames=[clips[best][f] for f in outcome.candidates],
        box=canvas.box,
        source_size=source.size,
        canvas_size=canvas.size,
        canvas_fit=canvas.fit,
        ranking=_made(edit.ranking),
        ranked=[judged[i] for i in order],
        chosen_frames=[clips[i][judged[i].frame] for i in order if judged[i].frame],
        alignment=alignment,
        source=source,
        align_config=config.align,
        mask=edit.masked,
        timings_s=timings,
        usage=edit.usage,
        frames=clips[best] if keep_frames else None,
    )


def _made(value: _T | None) -> _T:
    """What an earlier stage made (a stage run out of order is a programming error, not the caller's)."""
    if value is None:
        raise RuntimeError("an edit stage ran before the stage that makes its input")
    return value


async def write_caption(vlm: VLM, source: Image.Image, text: str, config: F2FConfig) -> tuple[str, str | None]:
    """The VLM's raw answer and the cleaned caption (None: the answer was unusable)."""
    cfg = config.caption
    style = cfg.style or "temporal"
    messages = caption_messages(source, text, load_exemplars(cfg.exemplars_path, style), style)
    answer = (await vlm.chat(messages, max_tokens=cfg.max_new_tokens, temperature=cfg.temperature)).text
    return answer, clean_caption(answer, cfg.max_chars, style)


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
    """Ask the VLM which candidate of one clip achieves the edit; retry, then fall back. A clip with one candidate
    (ChronoEdit without reasoning: 5 frames, the edit last) is not asked about: that frame is the model's edit and is
    chosen ("edited", label 1, no answers); with several seeds the ranking still compares the clips' frames.

    The collage's top tile is the source itself (the canvas cut to its box, as the tiles are), not the clip's
    frame 0: that is the source after the video model's round trip, or noise from a tiny random model.
    """
    cfg = config.selection
    frames = candidate_frames(len(clip), cfg.candidate_stride)
    crop = canvas.box
    tiles = [clip[f].crop(crop) for f in frames]
    collage = make_collage(canvas.image.crop(crop), tiles, cfg.collage_columns, cfg.collage_max_pixels)
    if len(frames) == 1:  # nothing to choose among (ChronoEdit's source and edit): the one candidate, unasked
        return ClipOutcome(seed, "edited", 1, frames[0], [], frames, collage)
    messages = selection_messages(collage, text, len(frames))
    answers: list[str] = []
    for _ in range(1 + cfg.retries):
        answers.append((await vlm.chat(messages, max_tokens=cfg.max_new_tokens, temperature=0.0)).text)
        label = parse_selection(answers[-1], len(frames))
        if label is not None:
            return ClipOutcome(seed, _status(label), label, frames[label - 1] if label else 0, answers, frames, collage)
        messages = messages + selection_reminder(answers[-1], len(frames))
    label = len(frames) if cfg.on_unparseable == "last_candidate" else 0
    return ClipOutcome(seed, "fallback", label or None, frames[-1] if label else 0, answers, frames, collage)


@dataclass
class _Counted:
    """`vlm`, adding the tokens of each of its answers to the edit's usage."""

    vlm: VLM
    edit: EditInFlight

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        answer = await self.vlm.chat(messages, max_tokens=max_tokens, temperature=temperature)
        self.edit.usage += answer.usage
        return answer


def composite_clips(clips: list[Frames], canvas: Image.Image, canvas_mask: Image.Image, config: MaskConfig) -> list[Frames]:
    """Every frame composited onto the canvas under the mask (feathered): what the VLM, the collage and the video show."""
    alpha = feathered(canvas_mask, config.feather_px)
    return [[composite(frame, canvas, alpha) for frame in clip] for clip in clips]


def _status(label: int) -> Status:
    return "edited" if label else "no_edit"


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start
