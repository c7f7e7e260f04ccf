"""Bulk manifests: JSONL or CSV rows of (id, image, prompt, seeds, options), validated before any work starts.

Rules:

- The format comes from the file name: `.jsonl` / `.ndjson` (one JSON object
  per line; blank lines are skipped) or `.csv` (a header row; columns `id`,
  `image`, `prompt`, `seeds` and the option names; `seeds` as `1;2;3`).
  Anything else, or a file that cannot be read as that format, is a
  `ManifestError` (fatal: nothing runs).
- A row: `image` (a path relative to the manifest's folder, or to
  `input_root` when given; absolute paths as they are) and `prompt` are
  required; `id` (letters, digits, `._-`, at most 128, not starting with a
  dot; default: the row number and the image's stem), `seeds` (a non-empty
  list) and `options` (`num_frames`, `steps`, `guidance`, `video`) are
  optional. Unknown keys, bad values, a missing image file and an id used
  twice make the row bad: `RowError` names the row number (1-based, the
  header of a CSV is row 0), the field and the rule.
- Given the run's config, every row is also checked by the rules of the edit
  itself (`f2f.request.check_edit_ahead`, before any model loads): seeds,
  options against the profile's frame rules, the prompt, the image up to
  its header (a file that is not an accepted image), the mask (format, size,
  modes). A row that breaks one is bad, as above: it can only fail.
- `Item.key` says what the work is: the image's content hash, the prompt,
  the seeds and options, and the settings of the run; the same key is the
  same finished work, whatever the row's id or position.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from f2f.errors import F2FError, InvalidInput

if TYPE_CHECKING:
    from f2f.config import F2FConfig
    from f2f.request import EditSettings

ITEM_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CSV_OPTIONS = ("num_frames", "steps", "guidance", "video")
SETTING_FIELD = {"num_frames": "options.num_frames", "steps": "options.steps", "guidance": "options.guidance"}


class ManifestError(F2FError):
    """The manifest as a whole cannot be used (format, unreadable, wrong output folder)."""

    code = "invalid_manifest"


class RowOptions(BaseModel):
    """Per-item settings; null leaves the run's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int | None = Field(None, ge=2, description="Frames per video (frame_step*k + 1).")
    steps: int | None = Field(None, ge=1, le=1000, description="Denoising steps per video.")
    guidance: float | None = Field(None, ge=1.0, le=50.0, description="Classifier-free guidance scale.")
    video: bool = Field(False, description="Also write the chosen clip as video.mp4.")


class Row(BaseModel):
    """One manifest row as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    image: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    mask: str | None = Field(None, min_length=1, description="A mask file (as `image`): where the edit may happen.")
    seeds: list[int] | None = Field(None, min_length=1)
    options: RowOptions = Field(default_factory=RowOptions)

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        if value is not None and not ITEM_ID.fullmatch(value):
            raise ValueError("must be 1-128 letters, digits or ._- and not start with a dot (it names a folder)")
        return value


@dataclass(frozen=True)
class RowError:
    """A bad row: where, which field, what rule."""

    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Item:
    """One piece of work: a valid row with its image found."""

    row: int
    id: str
    image: Path
    prompt: str
    seeds: list[int] | None
    options: RowOptions
    image_sha256: str
    mask: Path | None = None
    mask_sha256: str | None = None

    def settings(self) -> EditSettings:
        """The row's edit settings (InvalidInput names the field); `check_edit` checks them against the run's config."""
        from f2f.request import settings_from

        options = self.options
        return settings_from(
            {"seeds": self.seeds, "num_frames": options.num_frames, "steps": options.steps, "guidance": options.guidance}
        )

    def key(self, settings: dict[str, Any]) -> str:
        """What makes two runs the same work: image content, prompt, seeds, options and the run's settings."""
        payload = {
            "image": self.image_sha256,
            **({"mask": self.mask_sha256} if self.mask_sha256 else {}),  # no mask: the keys of runs made before masks
            "prompt": self.prompt,
            "seeds": self.seeds,
            "options": self.options.model_dump(),
            "settings": settings,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Manifest:
    path: Path
    sha256: str
    items: list[Item]
    errors: list[RowError]


def read_manifest(path: Path, input_root: Path | None = None, config: F2FConfig | None = None) -> Manifest:
    """The valid items and the bad rows of a manifest (by the edit's rules too, given the run's `config`).

    ManifestError if the file itself is unusable.
    """
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ManifestError(f"manifest: must be a .jsonl or .csv file (got {path.name!r})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"manifest: cannot read {path} ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(f"manifest: {path.name} is not UTF-8 text") from None
    raw_rows = _jsonl_rows(text) if kind == "jsonl" else _csv_rows(text)
    root = input_root or path.parent
    items: list[Item] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for number, raw in raw_rows:
        if isinstance(raw, RowError):
            errors.append(raw)
            continue
        item = _item(number, raw, root)
        if isinstance(item, Item) and config is not None:
            item = check_item(item, config) or item
        if isinstance(item, RowError):
            errors.append(item)
        elif item.id in seen:
            errors.append(RowError(number, "id", f"{item.id!r} is already used by row {seen[item.id]}"))
        else:
            seen[item.id] = number
            items.append(item)
    if not items and not errors:
        raise ManifestError(f"manifest: {path.name} has no rows")
    return Manifest(path, hashlib.sha256(data).hexdigest(), items, errors)


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any] | RowError]]:
    rows: list[tuple[int, dict[str, Any] | RowError]] = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((number, RowError(number, "line", f"not JSON ({exc.msg})")))
            continue
        rows.append((number, value if isinstance(value, dict) else RowError(number, "line", "must be a JSON object")))
    if rows and all(isinstance(r, RowError) for _, r in rows):
        raise ManifestError(f"manifest: not JSONL: {rows[0][1]}")
    return rows


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any] | RowError]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted cells may hold line breaks
    header = reader.fieldnames or []
    known = {"id", "image", "prompt", "mask", "seeds", *CSV_OPTIONS}
    unknown = [name for name in header if name not in known]
    if not header or unknown or not {"image", "prompt"} <= set(header):
        rule = f"unknown columns {unknown}" if unknown else "the header needs the columns image and prompt"
        raise ManifestError(f"manifest: not a manifest CSV: {rule} (columns: {', '.join(sorted(known))})")
    rows: list[tuple[int, dict[str, Any] | RowError]] = []
    for number, record in enumerate(reader, start=1):
        if None in record:
            rows.append((number, RowError(number, "line", f"has more fields than the header ({len(header)})")))
            continue
        row: dict[str, Any] = {k: v for k, v in record.items() if k in ("id", "image", "prompt", "mask") and v not in (None, "")}
        if record.get("seeds"):
            row["seeds"] = [part.strip() for part in record["seeds"].replace(";", " ").split()]
        options = {k: record[k] for k in CSV_OPTIONS if record.get(k) not in (None, "")}
        if options:
            row["options"] = options
        rows.append((number, row))
    return rows


def _item(number: int, raw: dict[str, Any], root: Path) -> Item | RowError:
    try:
        row = Row.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "row"
        rule = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        return RowError(number, field, rule + ("" if err["type"] == "missing" else f" (got {err.get('input')!r:.80})"))
    files: dict[str, tuple[Path, str]] = {}
    for field, name in (("image", row.image), ("mask", row.mask)):
        if name is None:
            continue
        path = Path(name) if Path(name).is_absolute() else root / name
        try:
            files[field] = path, hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            return RowError(number, field, f"cannot read {path} ({exc.strerror})")
    (image, digest), (mask, mask_digest) = files["image"], files.get("mask", (None, None))
    item_id = row.id or f"{number:05d}-{_safe(image.stem)}"
    return Item(number, item_id, image, row.prompt, row.seeds, row.options, digest, mask, mask_digest)


def check_item(item: Item, config: F2FConfig) -> RowError | None:
    """The rule of the edit itself that the row breaks under the run's `config` (the module's rules), or None."""
    from f2f.request import check_edit_ahead

    try:
        check_edit_ahead(item.image, item.prompt, config, item.settings(), None, "prompt", item.mask)
    except InvalidInput as exc:
        return RowError(item.row, SETTING_FIELD.get(exc.field, exc.field), f"{exc.rule} (got {exc.value!r:.80})")
    return None


def _safe(stem: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".")[:100]
    return cleaned or "image"


def posedit_manifest(folder: Path, text: str = "instruction") -> list[dict[str, Any]]:
    """Manifest rows for the PosEdit layout (`annotations.json`, `src_images/`): the instruction or the target caption."""
    field = {"instruction": "instruction", "target": "target_caption"}.get(text)
    if field is None:
        raise InvalidInput("text", text, "must be instruction or target")
    try:
        annotations = json.loads((folder / "annotations.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"posedit: cannot read {folder / 'annotations.json'} ({exc})") from None
    try:
        return [
            {"id": Path(entry["image"]).stem, "image": str(folder / "src_images" / entry["image"]), "prompt": entry[field]}
            for entry in annotations
        ]
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"posedit: annotations.json is not a list of entries with image and {field} ({exc!r})") from None
