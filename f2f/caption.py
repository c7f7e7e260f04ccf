"""Stage 1: the caption the video model is prompted with, in the style its family wants (`CaptionStyle`).

- `temporal` (the paper's, every family but ChronoEdit): the VLM sees the
  source image and the edit text and writes one sentence that describes a
  short clip starting at the source and changing, gradually, into the
  requested result.
- `instruction` (ChronoEdit, an editing model prompted with a rewritten edit
  instruction, as its authors' prompt enhancer writes one): two to four
  sentences that say what changes, how it should look, and what must stay as
  it is.

A family names its style (`f2f.families.FamilyFacts.caption_style`), a profile
or config may set `caption.style`. The style's instruction is shown once per
in-context exemplar (`data/exemplars.yaml`, `data/instruction_exemplars.yaml`)
and once more with the real query, as the Frame2Frame paper does.

`caption_messages` builds the conversation (pure, returns data);
`clean_caption` turns the VLM's answer into a caption or None when the
answer is empty or garbage: a temporal caption is its first sentence, an
instruction all of its sentences. On None the pipeline uses the edit text
itself as the video caption (the paper's "target text as caption" baseline,
only a little worse than a temporal caption) and flags it in the result.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from f2f.errors import InvalidConfig
from f2f.protocols import Message

CAPTION_INSTRUCTION = """\
You write captions for an image-to-video model. You get a source image and an \
edit request. The request either describes the picture the user wants (for \
example "A photo of a sitting dog.") or says what to change (for example \
"make the dog sit"). Write the caption of a short clip that begins exactly at \
the source image and changes gradually until it shows the requested result.
Rules:
- Write one simple, concise sentence about how things change or move over time.
- Describe only the change the edit needs; leave out anything that does not contribute to it.
- Mention no object that is neither in the source image nor in the requested result.
- The camera stays still, unless the change is impossible without moving it.
- The change completes within a few seconds; do not state a duration and do not use the word "video".
Answer with the caption only."""

EDIT_INSTRUCTION = """\
You rewrite edit requests for an image-editing model. You get a source image and \
an edit request. The request either describes the picture the user wants (for \
example "A photo of a sitting dog.") or says what to change (for example "make \
the dog sit"). Write the instruction the editing model should follow to turn the \
source image into the requested result.
Rules:
- Begin with the change itself, as a direct instruction that names the subject as it appears in the source image.
- Say how the changed part should look: its shape, colour, material, position or pose, as far as the request implies it.
- Then say what must stay exactly as it is: the other subjects, the background, the lighting, the framing and the style.
- Mention no object that is neither in the source image nor in the requested result.
- Write two to four plain sentences: no lists, no headings, no reasoning.
Answer with the instruction only."""

CaptionStyle = Literal["temporal", "instruction"]
INSTRUCTIONS: dict[str, str] = {"temporal": CAPTION_INSTRUCTION, "instruction": EDIT_INSTRUCTION}
EXEMPLAR_FILES: dict[str, str] = {"temporal": "exemplars.yaml", "instruction": "instruction_exemplars.yaml"}


class Exemplar(BaseModel):
    """One in-context example: a source (described, or a picture), an edit, the caption we want."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, description="What the source image shows.")
    edit: str = Field(min_length=1, description="The edit text, a target description or an instruction.")
    caption: str = Field(min_length=1, description="The caption for this edit, in its file's style.")
    image: Path | None = Field(None, description="Optional picture of the source, relative to the exemplars file.")


@dataclass(frozen=True)
class LoadedExemplar:
    exemplar: Exemplar
    image: Image.Image | None


@functools.lru_cache(maxsize=8)
def load_exemplars(path: str | Path | None = None, style: CaptionStyle = "temporal") -> tuple[LoadedExemplar, ...]:
    """The exemplars of a YAML file, or those packaged with f2f for `style` when `path` is None.

    Cached: a service reads the file once, not on every edit.
    """
    if path is None:
        ref = resources.files("f2f") / "data" / EXEMPLAR_FILES[style]
        text, base = ref.read_text(encoding="utf-8"), None
    else:
        path = Path(path)
        try:
            text, base = path.read_text(encoding="utf-8"), path.parent
        except OSError as exc:
            raise InvalidConfig("caption.exemplars_path", str(path), f"cannot read the file ({exc.strerror})") from None
    try:
        items = TypeAdapter(list[Exemplar]).validate_python(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise InvalidConfig("caption.exemplars_path", str(path), f"not a YAML list of exemplars ({exc})") from None
    return tuple(LoadedExemplar(item, _exemplar_image(item, base)) for item in items)


def _exemplar_image(item: Exemplar, base: Path | None) -> Image.Image | None:
    if item.image is None:
        return None
    from f2f.imageio import open_image

    location = item.image if base is None or item.image.is_absolute() else base / item.image
    return open_image(location, field="caption.exemplars_path")


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _image(image: Image.Image) -> dict:
    return {"type": "image", "image": image}


def _query(edit: str, described_source: str | None, style: CaptionStyle) -> str:
    source = f"Source image (described): {described_source}\n" if described_source else "The source image is attached.\n"
    return f'{INSTRUCTIONS[style]}\n\n{source}Edit request: "{prompt_text(edit)}"'


def caption_messages(
    image: Image.Image, edit: str, exemplars: Sequence[LoadedExemplar], style: CaptionStyle = "temporal"
) -> list[Message]:
    """The caption conversation in `style`: one user/assistant turn per exemplar, then the query."""
    messages: list[Message] = []
    for item in exemplars:
        ex = item.exemplar
        if item.image is None:
            content = [_text(_query(ex.edit, ex.source, style))]
        else:
            content = [_image(item.image), _text(_query(ex.edit, None, style))]
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [_text(ex.caption)]})
    messages.append({"role": "user", "content": [_image(image), _text(_query(edit, None, style))]})
    return messages


# --- cleaning the answer -----------------------------------------------------

_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>|</?s>")
_MARKDOWN = re.compile(r"[*_`#>]+")
_LABEL = re.compile(
    r"^(?:[^:\n]{0,60}?\b(?:caption|answer|output|response|prompt|description)\b[^:\n]{0,30}|result)\s*:\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'\u201c])")
_WORD = re.compile(r"[^\W\d_]{2,}")
MIN_WORDS = 3
MIN_LETTER_RATIO = 0.6


def prompt_text(edit: str) -> str:
    """The edit text as it goes inside a prompt's quotes: data that cannot end the quote, the line or the turn.

    Chat-template tokens (`<|im_end|>`, ...) are removed, every run of white space (newlines
    included) becomes one space, and double quotes become single ones. The request itself is
    not changed: only how it is shown to the VLM.
    """
    return " ".join(_SPECIAL_TOKENS.sub(" ", edit).replace('"', "'").split())


def clean_caption(answer: str | None, max_chars: int = 300, style: CaptionStyle = "temporal") -> str | None:
    """The caption in the answer without labels, quotes or markdown; None if garbage.

    `temporal`: the first sentence of the first content line. `instruction`:
    every content line after the first lead-in, joined into one paragraph.
    Garbage: fewer than MIN_WORDS words of two or more letters, letters
    making up less than MIN_LETTER_RATIO of the visible characters, or an echo
    of the style's instruction (ECHO_WORDS words in a row taken from it: a
    caption must never leak the prompt into the video or the result). A
    caption longer than `max_chars` is cut at a word boundary.
    """
    if not answer:
        return None
    lines = _content_lines(_MARKDOWN.sub("", _SPECIAL_TOKENS.sub(" ", answer)))
    text = " ".join(lines) if style == "instruction" else lines[0] if lines else ""
    text = _LABEL.sub("", text).strip().strip(_QUOTES).strip()
    if style == "temporal":
        text = _SENTENCE_END.split(text, maxsplit=1)[0].strip().strip(_QUOTES).strip()
    if _looks_like_garbage(text) or _echoes_instruction(text, INSTRUCTIONS[style]):
        return None
    return _finish(_cut(text, max_chars))


ECHO_WORDS = 8


@functools.cache
def _instruction_runs(instruction: str) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(instruction.lower())
    return frozenset(tuple(words[i : i + ECHO_WORDS]) for i in range(len(words) - ECHO_WORDS + 1))


def _echoes_instruction(text: str, instruction: str) -> bool:
    words, runs = _WORD.findall(text.lower()), _instruction_runs(instruction)
    return any(tuple(words[i : i + ECHO_WORDS]) in runs for i in range(len(words) - ECHO_WORDS + 1))


def _content_lines(text: str) -> list[str]:
    """The non-empty lines from the first one that is not a lead-in such as "Here is the caption:"."""
    lines = [line.strip().lstrip("-\u2022 ").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    first = next((i for i, line in enumerate(lines) if not line.endswith(":")), len(lines))
    return lines[first:]


def _looks_like_garbage(text: str) -> bool:
    visible = [c for c in text if not c.isspace()]
    if not visible or len(_WORD.findall(text)) < MIN_WORDS:
        return True
    return sum(c.isalpha() for c in visible) / len(visible) < MIN_LETTER_RATIO


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(",;:-\u2013\u2014 ")


def _finish(text: str) -> str:
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."
