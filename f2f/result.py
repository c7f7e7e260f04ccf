"""What an edit returns, and how it is written to a folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from PIL import Image

from f2f.align import Aligned, Alignment, align
from f2f.canvas import Box, unletterbox
from f2f.config import AlignConfig
from f2f.masks import MaskedEdit
from f2f.protocols import TokenUsage

OUTPUT_MODE = 0o644

Status = Literal["edited", "no_edit", "fallback"]
"""edited: the VLM chose a frame. no_edit: it said no frame achieves the edit
(the result is the source). fallback: its answer could not be read even after
the retries; the result is what `selection.on_unparseable` says."""


@dataclass(frozen=True)
class ClipOutcome:
    """How the VLM judged one clip (one seed)."""

    seed: int
    status: Status
    label: int | None  # 1..N the chosen tile, 0 none achieves the edit, None unparseable
    frame: int  # index in the clip of the chosen frame; 0 is the source
    answers: list[str]  # the VLM's raw answers, retries included
    candidates: list[int]  # frame indices of tiles 1..N
    collage: Image.Image = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "status": self.status, "label": self.label, "frame": self.frame, "answers": self.answers}


RankRule = Literal["vlm", "label_rule", "single"]
"""What ordered the clips (`f2f.ranking`). vlm: the VLM named the same clip in
both orders. label_rule: the lowest label, then the earlier seed (the VLM
disagreed with itself or could not be read, or `selection.rank` is label).
single: fewer than two edited clips, nothing to rank."""


@dataclass(frozen=True)
class Ranking:
    """How the clips were ranked."""

    rule: RankRule
    order: list[int]  # seeds, best first
    answers: list[str]  # the VLM's answers, the finalists as given then reversed; empty when it was not asked
    orders_asked: list[list[int]]  # seeds of tiles 1..K in each ask

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "order": self.order, "answers": self.answers, "orders_asked": self.orders_asked}


@dataclass(frozen=True)
class EditResult:
    """The edited image and everything that explains it."""

    image: Image.Image = field(repr=False)  # at the source's size
    text: str
    caption: str  # the caption the video was generated from
    caption_fallback: bool  # True: the VLM's caption was unusable; the edit text was used
    caption_answer: str  # the VLM's raw caption answer
    outcome: ClipOutcome  # the chosen clip
    clips: list[dict[str, Any]]  # every clip's outcome, in seed order
    candidate_frames: list[Image.Image] = field(repr=False)  # canvas frames of tiles 1..N, chosen clip
    box: Box  # where the source lies on the canvas
    source_size: tuple[int, int]
    timings_s: dict[str, float]
    canvas_size: tuple[int, int]  # (width, height) of the canvas the video was generated on
    ranking: Ranking
    ranked: list[ClipOutcome]  # every clip's outcome, best first: ranked[0] is outcome
    chosen_frames: list[Image.Image] = field(repr=False)  # canvas frames of the ranked clips that have one, best first
    alignment: Alignment  # how the chosen frame was aligned to the source (camera drift)
    source: Image.Image = field(repr=False)  # the source, RGB: what the candidates are aligned to
    align_config: AlignConfig  # the config the result and the candidates were aligned under
    frames: list[Image.Image] | None = field(default=None, repr=False)  # the whole chosen clip, if kept
    canvas_fit: Literal["letterbox", "free"] = "letterbox"  # letterboxed onto a fixed canvas, or a free one
    mask: MaskedEdit | None = None  # the caller's mask: the source is exact outside it (beyond the feather)
    usage: TokenUsage = field(default_factory=TokenUsage)  # the tokens of every VLM call of the edit (`f2f.pipeline`)

    @property
    def status(self) -> Status:
        return self.outcome.status

    @property
    def seed(self) -> int:
        return self.outcome.seed

    @property
    def collage(self) -> Image.Image:
        return self.outcome.collage

    def candidate_images(self) -> list[Image.Image]:
        """The candidate frames cut out of the canvas, resized to the source's size, and each aligned to the source on
        its own estimate under the result's `align_config` (`f2f.align`; only the chosen frame's record is kept);
        with a mask, composited onto the source as `image` is. The chosen frame's is `image` itself, not made again."""
        pairs = list(zip(self.outcome.candidates, self.candidate_frames, strict=True))
        made = iter(_each(self._as_result, [frame for index, frame in pairs if index != self.outcome.frame]))
        return [self.image if index == self.outcome.frame else next(made) for index, _ in pairs]

    def _as_result(self, frame: Image.Image) -> Image.Image:
        """A canvas frame made as `image` was made (`edit_of`)."""
        return edit_of(frame, self.box, self.source, self.align_config, self.mask).image

    def ranked_images(self, n: int | None = None) -> list[Image.Image]:
        """The best `n` (all: None) edits at the source's size: the chosen frames of the ranked clips that have one.

        They follow `[o for o in ranked if o.frame]`: a clip whose result is the source (no_edit, or a
        fallback to the source) gives none. The first is `image` whenever the best clip has a frame: each is
        aligned to the source on its own estimate, as `image` is (`f2f.align`).
        """
        return _each(self._as_result, self.chosen_frames[:n])

    def edits_by_rank(self) -> list[Image.Image]:
        """One edit per ranked clip, best first: `image` itself, then each other clip's chosen frame made as `image`
        was (the source where that clip has none). `image` is not made again."""
        rest = self.chosen_frames[1:] if self.outcome.frame else self.chosen_frames
        others = iter(_each(self._as_result, rest))
        return [self.image, *(next(others) if outcome.frame else self.source for outcome in self.ranked[1:])]

    def to_json(self) -> dict[str, Any]:
        """Everything that is not an image, ready for json.dumps."""
        return {
            "status": self.status,
            "text": self.text,
            "caption": self.caption,
            "caption_fallback": self.caption_fallback,
            "caption_answer": self.caption_answer,
            "seed": self.seed,
            "selected_label": self.outcome.label,
            "selected_frame": self.outcome.frame,
            "candidate_frames": self.outcome.candidates,
            "selection_answers": self.outcome.answers,
            "clips": self.clips,
            "ranking": self.ranking.as_json(),
            "letterbox_box": list(self.box),
            "source_size": list(self.source_size),
            "canvas": {"size": list(self.canvas_size), "fit": self.canvas_fit},
            "alignment": self.alignment.to_json(),
            "mask": None if self.mask is None else self.mask.as_json(),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
            "usage": self.usage.as_json(),
        }


def edit_of(
    frame: Image.Image | None,
    box: Box,
    source: Image.Image,
    config: AlignConfig,
    mask: MaskedEdit | None = None,
    timed: Callable[[str], AbstractContextManager[object]] = lambda _stage: nullcontext(),
) -> Aligned:
    """The edit a canvas frame makes of `source`: un-letterboxed from `box`, aligned to the source (`f2f.align`; with a
    mask, estimated where the source stays), and with a mask the source's exact pixels put back beyond the feather.
    No frame (None): the source itself, not aligned. `timed(stage)` times the "unletterbox" and "align" stages."""
    with timed("unletterbox"):
        restored = None if frame is None else unletterbox(frame, box, source.size)
    with timed("align"):
        if restored is None:
            return Aligned(source.copy(), Alignment(config.mode, False, "no frame chosen"))
        aligned = align(restored, source, config, None if mask is None else mask.keep())
        return aligned if mask is None else Aligned(mask.apply(aligned.image, source), aligned.alignment)


def _each(make: Callable[[Image.Image], Image.Image], frames: list[Image.Image]) -> list[Image.Image]:
    """`make` of each frame, in order, on threads (OpenCV and Pillow release the GIL while they work)."""
    if len(frames) < 2:
        return [make(frame) for frame in frames]
    with ThreadPoolExecutor(max_workers=min(len(frames), os.cpu_count() or 1)) as pool:
        return list(pool.map(make, frames))


def write_outputs(
    result: EditResult, out_dir: str | Path, save_frames: bool = False, video_fps: int | None = None, png_level: int = 6
) -> list[Path]:
    """Write edited.png, collage.png, result.json; candidates/ with `save_frames`;
    video.mp4 (the chosen clip, as generated) with `video_fps` when the result kept its frames.

    `png_level` is zlib's level for the PNGs: 6 (Pillow's) for files that are kept, 1 where the write is on
    a waiting caller's path (the service; on a 400x400 PosEdit photo here: 12 ms instead of 41, 24 % larger)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_save_png(result.image, out / "edited.png", png_level), _save_png(result.collage, out / "collage.png", png_level)]
    if video_fps and result.frames:
        from f2f.video import write_mp4

        written.append(write_mp4(result.frames, out / "video.mp4", video_fps))
    if save_frames:
        (out / "candidates").mkdir(exist_ok=True)
        for index, image in zip(result.outcome.candidates, result.candidate_images(), strict=True):
            written.append(_save_png(image, out / "candidates" / f"frame_{index:03d}.png", png_level))
    data = json.dumps(result.to_json(), indent=2).encode() + b"\n"
    written.append(write_atomic(out / "result.json", lambda f: f.write(data)))
    return written


def _save_png(image: Image.Image, path: Path, level: int = 6) -> Path:
    return write_atomic(path, lambda f: image.save(f, format="PNG", compress_level=level))


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write through a temporary file beside `path`, then rename: readers never see half a file.

    If writing fails (a full disk), the temporary file is removed and the error raised; `path` is untouched.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, OUTPUT_MODE)  # temporary files are private (0600); outputs are not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
