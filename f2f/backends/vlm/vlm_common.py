"""What the three VLM backends share: the checkpoint check, the chat messages, the images, the prompt length.

Light on purpose (Pillow and the standard library only): each backend module
imports its own heavy library; `import_or_explain` turns a missing one into
`BackendNotConfigured` naming the extra to install.

Rules every backend follows:
- `check_checkpoint` reads only `config.json` and raises
  `InvalidConfig("vlm.model_path", ...)` before any weight is loaded: the
  folder must exist, hold a `config.json`, and name a Qwen2-VL, Qwen2.5-VL
  or Qwen3-VL architecture.
- `check_messages` accepts OpenAI-format messages: role system, user or
  assistant; content a string or a list of `{"type": "text", "text": str}`
  and `{"type": "image", "image": <PIL.Image>}` parts.
- `prepare_image` takes the RGB images the edit made (the checked source,
  collages, frames), pads an extreme strip to Qwen's largest aspect ratio
  (MAX_ASPECT_RATIO, black bars on the short side) and shrinks anything
  above `max_pixels`, keeping the aspect ratio.
- `check_prompt_length`: a prompt of `max_model_len` tokens or more is an
  `InvalidInput("vlm.max_model_len", ...)`; the answer is then capped to the
  room that is left (`answer_budget`).
- An engine that runs the model here counts its tokens from the ids it ran
  (`token_usage`): the prompt's, the images' among them (IMAGE_TOKEN, one per
  visual token), and the answer's, its stop token included.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from PIL import Image

from f2f.errors import BackendNotConfigured, InvalidConfig, InvalidInput
from f2f.protocols import Message, TokenUsage

ARCHITECTURES = {
    "Qwen2VLForConditionalGeneration": "qwen2-vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2.5-vl",
    "Qwen3VLForConditionalGeneration": "qwen3-vl",
}
ROLES = ("system", "user", "assistant")
MAX_ASPECT_RATIO = 200  # Qwen's image processor (Qwen2-VL's, which Qwen3-VL uses too) refuses anything longer
IMAGE_TOKEN = "<|image_pad|>"  # Qwen-VL's image pad token: the prompt holds one per visual token


def import_or_explain(module: str, backend: str, extra: str) -> ModuleType:
    """`module`, imported; if it is missing, BackendNotConfigured naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendNotConfigured(
            f"the {backend} VLM backend needs {module}, which cannot be imported ({exc}): pip install 'f2f[{extra}]'"
        ) from None


# --- the checkpoint -------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """What `config.json` says about a Qwen-VL-family checkpoint."""

    path: Path
    architecture: str  # a key of ARCHITECTURES
    patch_size: int  # pixels per vision patch side (Qwen2-VL, Qwen2.5-VL: 14; Qwen3-VL: 16)
    merge_size: int  # patches merged per visual token side (2): one token per (patch*2)^2 pixels, 28^2 or 32^2


def check_checkpoint(path: Path | str | None, backend: str) -> Checkpoint:
    """The checkpoint at `path` if it is a local Qwen-VL folder (ARCHITECTURES), else InvalidConfig naming vlm.model_path."""
    if path is None:
        raise InvalidConfig("vlm.model_path", None, f"the {backend} backend needs a local checkpoint folder")
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidConfig("vlm.model_path", str(folder), "no such folder (checkpoints are never downloaded)")
    config = _read_config(folder)
    architectures = config.get("architectures") or []
    found = [a for a in architectures if a in ARCHITECTURES]
    if not found:
        rule = f"config.json names architecture {architectures}; supported: {', '.join(ARCHITECTURES)}"
        raise InvalidConfig("vlm.model_path", str(folder), rule)
    vision = config.get("vision_config") or {}
    return Checkpoint(folder, found[0], int(vision.get("patch_size", 14)), int(vision.get("spatial_merge_size", 2)))


def _read_config(folder: Path) -> dict[str, Any]:
    file = folder / "config.json"
    if not file.is_file():
        raise InvalidConfig("vlm.model_path", str(folder), "the folder has no config.json (not a Hugging Face checkpoint)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidConfig("vlm.model_path", str(folder), f"config.json cannot be read ({exc})") from None
    if not isinstance(config, dict):
        raise InvalidConfig("vlm.model_path", str(folder), "config.json does not hold a JSON object")
    return config


def chat_template(tokenizer: Any, folder: Path) -> str:
    """The checkpoint's chat template: the tokenizer's, else chat_template.jinja / chat_template.json in the folder."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        return template
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
    raise InvalidConfig("vlm.model_path", str(folder), "the checkpoint has no chat template (an -Instruct checkpoint has one)")


# --- messages -------------------------------------------------------------------


def check_messages(messages: Sequence[Message]) -> None:
    """InvalidInput("messages", ...) unless every message has a known role and text or image parts."""
    if not messages:
        raise InvalidInput("messages", [], "the conversation is empty")
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise InvalidInput(f"messages[{i}].role", message.get("role"), f"must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list | tuple):
            raise InvalidInput(f"messages[{i}].content", content, "must be a string or a list of parts")
        for j, part in enumerate(content):
            _check_part(part, f"messages[{i}].content[{j}]")


def _check_part(part: Any, where: str) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return
    if kind == "image" and isinstance(part.get("image"), Image.Image):
        return
    raise InvalidInput(where, part, 'must be {"type": "text", "text": str} or {"type": "image", "image": <PIL.Image>}')


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The messages as a chat template reads them: each image part becomes `{"type": "image"}`."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": "image"} if part["type"] == "image" else dict(part) for part in content]
        out.append({"role": message["role"], "content": content})
    return out


def message_images(messages: Sequence[Message]) -> list[Image.Image]:
    """The images of the conversation, in the order the chat template places their tokens."""
    return [
        part["image"]
        for message in messages
        if not isinstance(message["content"], str)
        for part in message["content"]
        if part["type"] == "image"
    ]


def render_prompt(tokenizer: Any, template: str, messages: Sequence[Message]) -> str:
    """The prompt text: Qwen's chat template over the messages, ending with the assistant's turn."""
    return tokenizer.apply_chat_template(
        template_messages(messages), chat_template=template, tokenize=False, add_generation_prompt=True
    )


# --- images ---------------------------------------------------------------------


def prepare_image(image: Image.Image, max_pixels: int) -> Image.Image:
    """An RGB image no longer than MAX_ASPECT_RATIO:1 (padded), at most `max_pixels` (shrunk, aspect kept)."""
    image = _pad_to_aspect(image)
    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _pad_to_aspect(image: Image.Image) -> Image.Image:
    width, height = image.size
    if max(width, height) <= MAX_ASPECT_RATIO * min(width, height):
        return image
    short = math.ceil(max(width, height) / MAX_ASPECT_RATIO)
    size = (width, short) if width > height else (short, height)
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas


def visual_tokens(size: tuple[int, int], min_pixels: int, max_pixels: int, patch_size: int = 14, merge_size: int = 2) -> int:
    """Tokens a Qwen-VL image of `size` (width, height) becomes: Qwen's smart_resize, then one per (patch*merge)^2 pixels."""
    factor = patch_size * merge_size
    width, height = size
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return (h_bar // factor) * (w_bar // factor)


# --- lengths and devices --------------------------------------------------------


def check_prompt_length(n_tokens: int, max_model_len: int) -> None:
    """InvalidInput naming vlm.max_model_len unless the prompt leaves room for at least one answer token."""
    if n_tokens >= max_model_len:
        rule = (
            f"the prompt has {n_tokens} tokens; the limit is {max_model_len - 1} "
            f"(vlm.max_model_len {max_model_len}, prompt and answer together): use fewer or smaller images "
            "(vlm.max_pixels), a shorter text, or a larger vlm.max_model_len"
        )
        raise InvalidInput("vlm.max_model_len", n_tokens, rule)


def answer_budget(n_tokens: int, max_tokens: int, max_model_len: int) -> int:
    """New tokens the answer may have: `max_tokens`, capped by the room the prompt leaves."""
    if max_tokens < 1:
        raise InvalidInput("max_tokens", max_tokens, "must be at least 1")
    return min(max_tokens, max_model_len - n_tokens)


def token_usage(prompt_ids: Sequence[int], answer_ids: Sequence[int], image_token_id: int) -> TokenUsage:
    """The tokens of one generation, from the ids the engine ran: the prompt's (its IMAGE_TOKENs are the images'),
    the answer's."""
    return TokenUsage(len(prompt_ids), len(answer_ids), sum(1 for token in prompt_ids if token == image_token_id))
