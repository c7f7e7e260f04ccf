"""Stage 3: candidate frames, the collage, and the VLM's choice.

Candidates are every `stride`-th frame after the source (49 frames, stride 4:
frames 4, 8, ..., 48, labelled 1..12; label k is frame k*stride). The VLM gets
one collage (the source on top, the labelled candidates beneath) and picks
the LOWEST label whose frame achieves the edit, or 0 when none does. It must
answer with the fixed phrase ``SELECTED: <label>``; `parse_selection` also
reads the usual ways a model deviates from it.

A clip with one candidate (ChronoEdit without temporal reasoning: 5 frames,
the source and the edit, stride 4) is not put to the VLM: there is nothing to
choose among, so that frame, the editing model's own result, is chosen
(`f2f.pipeline.judge_clip`: "edited", label 1, no answers). With reasoning
for every step ChronoEdit returns its 29-frame trajectory, selected from as
any clip.

With several seeds, `ranking_messages` asks which clip's chosen frame is the
best edit (`f2f.ranking`); its answer is parsed the same way, whatever the
clips' lengths.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from f2f.canvas import fit_box
from f2f.caption import prompt_text
from f2f.errors import InvalidInput
from f2f.protocols import Message

ANSWER_PHRASE = "SELECTED"


def candidate_frames(num_frames: int, stride: int) -> list[int]:
    """Frame indices of the candidates: stride, 2*stride, ... up to the last frame."""
    if num_frames < 2:
        raise InvalidInput("num_frames", num_frames, "a clip needs at least 2 frames (the source and one more)")
    if not 1 <= stride < num_frames:
        raise InvalidInput("stride", stride, f"must be at least 1 and smaller than num_frames ({num_frames})")
    return list(range(stride, num_frames, stride))


# --- collage -------------------------------------------------------------------

GAP = 8
BACKGROUND = (24, 24, 24)
LABEL_COLOUR = (255, 255, 255)
MIN_LABEL_PX = 24
MAX_ASPECT = 3.0
MIN_TILE_PX = 8
MAX_TILE_PX = 1024


@dataclass(frozen=True)
class CollageLayout:
    """Where everything of a collage lies, in collage pixels (right/bottom exclusive)."""

    size: tuple[int, int]
    label_px: int  # height of the label band above each picture
    source: tuple[int, int, int, int]
    tiles: tuple[tuple[int, int, int, int], ...]


def collage_layout(content_size: tuple[int, int], num_tiles: int, columns: int, max_pixels: int) -> CollageLayout:
    """The largest layout within `max_pixels`: source twice a tile's width on top, tiles in rows.

    Tiles take the content's aspect ratio, clamped to 1:MAX_ASPECT..MAX_ASPECT:1
    so that a 1x4000 source still gets tiles a model can see; pictures are
    fitted inside their tile, never stretched.
    """
    columns = min(columns, num_tiles)
    rows = math.ceil(num_tiles / columns)
    aspect = min(max(content_size[0] / content_size[1], 1 / MAX_ASPECT), MAX_ASPECT)

    def fits(tile_w: int) -> bool:
        width, height = _layout(tile_w, aspect, num_tiles, columns, rows).size
        return width * height <= max_pixels

    if not fits(MIN_TILE_PX):
        raise InvalidInput("selection.collage_max_pixels", max_pixels, f"too small for {num_tiles} tiles in {columns} columns")
    low, high = MIN_TILE_PX, MAX_TILE_PX  # the area grows with the tile width: the widest that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return _layout(low, aspect, num_tiles, columns, rows)


def _layout(tile_w: int, aspect: float, num_tiles: int, columns: int, rows: int) -> CollageLayout:
    tile_h = max(1, round(tile_w / aspect))
    label = max(MIN_LABEL_PX, round(0.22 * tile_h))
    width = columns * tile_w + (columns + 1) * GAP
    source_w = min(2, columns) * tile_w + (min(2, columns) - 1) * GAP
    source_h = max(1, round(source_w / aspect))
    source_left = (width - source_w) // 2
    source = (source_left, GAP + label, source_left + source_w, GAP + label + source_h)
    top = source[3] + GAP
    tiles = []
    for i in range(num_tiles):
        row, col = divmod(i, columns)
        left = GAP + col * (tile_w + GAP)
        y = top + row * (label + tile_h + GAP) + label
        tiles.append((left, y, left + tile_w, y + tile_h))
    height = top + rows * (label + tile_h + GAP)
    return CollageLayout((width, height), label, source, tuple(tiles))


def make_collage(source: Image.Image, candidates: list[Image.Image], columns: int, max_pixels: int) -> Image.Image:
    """The source on top labelled SOURCE, candidates beneath labelled 1..N."""
    layout = collage_layout(source.size, len(candidates), columns, max_pixels)
    collage = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(collage)
    font = ImageFont.load_default(size=round(layout.label_px * 0.85))
    pictures = [(source, layout.source, "SOURCE")]
    pictures += [(frame, box, str(i)) for i, (frame, box) in enumerate(zip(candidates, layout.tiles, strict=True), start=1)]
    for picture, box, label in pictures:
        _paste_fitted(collage, picture, box)
        draw.text((box[0], box[1] - layout.label_px // 2), label, fill=LABEL_COLOUR, font=font, anchor="lm")
    return collage


def _paste_fitted(collage: Image.Image, picture: Image.Image, box: tuple[int, int, int, int]) -> None:
    inner = fit_box(picture.size, box[2] - box[0], box[3] - box[1])
    resized = picture.convert("RGB").resize(inner.size, Image.Resampling.LANCZOS)
    collage.paste(resized, (box[0] + inner.left, box[1] + inner.top))


# --- prompt --------------------------------------------------------------------


def selection_messages(collage: Image.Image, edit: str, num_candidates: int) -> list[Message]:
    """The selection question: the collage and the edit text; the answer is SELECTED: <label>."""
    text = (
        f"The top picture, labelled SOURCE, is an original image. Below it are {num_candidates} "
        f"frames, labelled 1 to {num_candidates} in time order, from a clip that starts at the "
        f'source and moves toward this edit: "{prompt_text(edit)}".\n'
        f"Choose the LOWEST label whose frame achieves the edit fully and naturally while still "
        f"being an edit of the source (same subject, same scene).\n"
        f"Do not choose frames where the camera moved or zoomed, where the image quality changed, "
        f"or where the content is unstable or distorted.\n"
        f"If no frame achieves the edit, choose 0.\n"
        f"Reply with exactly one line and nothing else: {ANSWER_PHRASE}: <label>"
    )
    return [{"role": "user", "content": [{"type": "image", "image": collage}, {"type": "text", "text": text}]}]


def selection_reminder(answer: str, num_candidates: int) -> list[Message]:
    """Turns to append after an unparseable answer: the answer, then a stricter reminder."""
    text = (
        f"That reply could not be read. Reply with exactly one line, {ANSWER_PHRASE}: <label>, "
        f"where <label> is one number from 0 to {num_candidates}, and write nothing else."
    )
    return [
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]


def ranking_messages(collage: Image.Image, edit: str, num_versions: int) -> list[Message]:
    """The ranking question (several seeds): the source and each clip's chosen frame; the answer is SELECTED: <version>."""
    text = (
        f"The top picture, labelled SOURCE, is an original image. Below it are {num_versions} edited "
        f'versions of it, labelled 1 to {num_versions}, each made for this edit: "{prompt_text(edit)}".\n'
        f"Choose the one version that achieves the edit fully and naturally while changing the least of "
        f"everything else (the subject's identity, the background, any text, the colours, the framing).\n"
        f"The order of the versions means nothing: judge each on its own.\n"
        f"Reply with exactly one line and nothing else: {ANSWER_PHRASE}: <version>"
    )
    return [{"role": "user", "content": [{"type": "image", "image": collage}, {"type": "text", "text": text}]}]


# --- parsing the answer --------------------------------------------------------

_NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
_WORD_ALT = "|".join(_NUMBER_WORDS)
_NUMBER = rf"(?:-?\d+|{_WORD_ALT}|none)"
_PHRASE = re.compile(
    rf"\b{ANSWER_PHRASE.lower()}\s*(?:edit|frame|image|label|tile|version)?\s*(?:is\s*[:=\-]?|[:=\-])?\s*({_NUMBER})\b"
)
_DIGITS = re.compile(r"(?<![\w.-])-?\d+(?![\w]|\.\d)")
_WORDS = re.compile(rf"\b({_WORD_ALT})\b")
_NONE = re.compile(r"^(?:none|nothing|no\b)|\bnone of\b|\bno (?:frame|image|label|tile|candidate)s?\b")


def parse_selection(text: str | None, num_candidates: int) -> int | None:
    """The label in a VLM answer (0..num_candidates), or None when it cannot be read.

    Rules, in order:
    1. The fixed phrase ("SELECTED: 7", any case, spacing or markdown) decides,
       and so does a final statement such as "the selected edit is: 7",
       "selected frame is 7" or "selected edit: 7", whatever numbers come
       before it; if it appears several times, the last one counts;
       "SELECTED: none" is 0.
    2. Otherwise, if the answer holds exactly one distinct number (digits,
       else the words zero..twelve), that is the label ("7", "image 7").
    3. Otherwise, an answer without numbers that says none ("None of them",
       "no frame achieves it") is 0.
    4. Anything else (several numbers, refusals, empty) is None, and so is a
       label outside 0..num_candidates.
    """
    if not text or not text.strip():
        return None
    norm = " ".join(re.sub(r"[*_`#>\[\]()]", " ", text).lower().split())
    phrases = _PHRASE.findall(norm)
    if phrases:
        return _in_range(_value(phrases[-1]), num_candidates)
    numbers = {int(m) for m in _DIGITS.findall(norm)} or {_NUMBER_WORDS[w] for w in _WORDS.findall(norm)}
    if len(numbers) == 1:
        return _in_range(numbers.pop(), num_candidates)
    if not numbers and _NONE.search(norm):
        return 0
    return None


def _value(token: str) -> int:
    if token == "none":
        return 0
    return _NUMBER_WORDS[token] if token in _NUMBER_WORDS else int(token)


def _in_range(label: int, num_candidates: int) -> int | None:
    return label if 0 <= label <= num_candidates else None
