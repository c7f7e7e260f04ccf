"""CLIP scores for f2f eval, from a staged checkpoint folder (transformers' CLIPModel, local files only).

- `clip_i_source`, `clip_i_target`: cosine similarity of the CLIP image embeddings of the
  edit and the source (the ground truth);
- `clip_text`: CLIPScore (Hessel et al. 2021), 2.5 x max(cosine, 0) of the edit's image
  embedding and the item's text embedding (the target text).

The catalogue's entry is `clip-vit-base-patch32` (`f2f models stage DIR --checkpoint
clip-vit-base-patch32`). The folder is checked against the catalogue (files present, sizes)
before loading; nothing is downloaded. Needs transformers and torch (`pip install 'f2f[eval]'`).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from f2f.errors import InvalidInput

CATALOGUE_NAME = "clip-vit-base-patch32"
CLIPSCORE_WEIGHT = 2.5
STAGE = f"f2f models stage DIR --checkpoint {CATALOGUE_NAME}"


# What CLIPModel, CLIPTokenizer and CLIPImageProcessor read: each entry is satisfied by any one of its files
NEEDED = (
    ("config.json",),
    ("model.safetensors", "pytorch_model.bin"),
    ("preprocessor_config.json",),
    ("tokenizer.json", "vocab.json"),
)


def check_folder(folder: Path) -> None:
    """A clear error when `folder` is not a complete CLIP checkpoint (the catalogue's files for a staged one)."""
    from f2f.catalogue import load_catalogue, verify_folder

    ckpt = load_catalogue().checkpoints[CATALOGUE_NAME]
    stage = STAGE
    if not folder.is_dir():
        raise InvalidInput("--clip", str(folder), f"folder missing: give a staged CLIP checkpoint folder (`{stage}`)")
    missing = [" or ".join(names) for names in NEEDED if not any((folder / n).is_file() for n in names)]
    if missing:
        rule = "must be a staged CLIP checkpoint folder with config.json, weights, a tokenizer and preprocessor_config.json"
        raise InvalidInput("--clip", str(folder), f"{rule}; missing {', '.join(missing)} (`{stage}`)")
    model_type = _model_type(folder / "config.json")
    if model_type != "clip":
        rule = f"is not a CLIP checkpoint: its config.json has model_type {model_type!r}, not 'clip' (`{stage}`)"
        raise InvalidInput("--clip", str(folder), rule)
    if (folder / "f2f-manifest.json").is_file():  # staged by f2f: every catalogue file must be there
        report = verify_folder(folder, ckpt, hashes=False)
        if not report.ok:
            problems = "; ".join([*(f"missing {m}" for m in report.missing[:5]), *report.mismatched[:5]])
            raise InvalidInput("--clip", str(folder), f"is not a complete {ckpt.repo} checkpoint ({problems}); see `{stage}`")


def _model_type(config: Path) -> object:
    """config.json's model_type; None when the file is no JSON object."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


class ClipScorer:
    def __init__(self, folder: Path, device: str = "cpu") -> None:
        check_folder(folder)
        import torch
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

        self.torch = torch
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval().to(device).requires_grad_(False)
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.processor = CLIPImageProcessorPil.from_pretrained(str(folder), local_files_only=True)
        self.device = device
        self.name = f"{folder.name} ({folder})"
        self._cache: dict[int, tuple[Image.Image, object]] = {}

    def image_embedding(self, image: Image.Image):
        """Unit-length CLIP image embedding, [D] (cached by image object for the item being scored)."""
        if id(image) not in self._cache:
            pixels = self.processor(images=[image], return_tensors="pt")["pixel_values"].to(self.device)
            with self.torch.no_grad():
                e = self.model.get_image_features(pixel_values=pixels)
            e = getattr(e, "pooler_output", e)[0]
            self._cache[id(image)] = (image, e / e.norm())
        return self._cache[id(image)][1]

    def text_embedding(self, text: str):
        tokens = self.tokenizer([text], padding=True, truncation=True, max_length=77, return_tensors="pt")
        with self.torch.no_grad():
            e = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
        e = getattr(e, "pooler_output", e)[0]
        return e / e.norm()

    def scores(self, edit: Image.Image, source: Image.Image, target: Image.Image | None, text: str | None) -> dict[str, float]:
        e = self.image_embedding(edit)
        out = {"clip_i_source": float(e @ self.image_embedding(source))}
        if target is not None:
            out["clip_i_target"] = float(e @ self.image_embedding(target))
        if text:
            out["clip_text"] = CLIPSCORE_WEIGHT * max(float(e @ self.text_embedding(text)), 0.0)
        return out

    def forget(self) -> None:
        self._cache.clear()
