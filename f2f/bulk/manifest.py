"""Bulk manifests: JSONL, CSV or Parquet rows of (id, image, prompt, mask, seeds, options), read once, streaming.

Rules:

- The format comes from the file name: `.jsonl` / `.ndjson` (one JSON object
  per line; blank lines are skipped), `.csv` (a header row; columns `id`,
  `image`, `prompt`, `mask`, `seeds` and the option names; `seeds` as
  `1;2;3`) or `.parquet` (the same columns; `seeds` a list, `options` a
  struct or the option columns). The manifest and the images may be local
  paths or object-store URLs (`f2f.bulk.storage`).
- `scan_manifest` reads it once before the run, keeping nothing per row: a
  malformed manifest (a line that is not a JSON object, an unknown key,
  column or option, a missing `image` or `prompt`, a CSV line with more
  fields than the header) is refused as a whole (`ManifestError` naming the
  line and the field); nothing runs. It writes the rows as Parquet parts
  (`row`, `key`, `line`: the row as canonical JSON) that the run's stages read.
- The values are checked where the item runs, in a Ray task
  (`item_of`, then the edit's own rules, `f2f.request.check_edit`): a bad
  value (an empty prompt, an option out of range, an id that cannot name a
  folder), a missing or unreadable image or mask, a mask of the wrong size
  make that item `failed` with a reason naming the field.
- A row: `image` (a path or URL, relative to the manifest's folder, or to
  `input_root` when given) and `prompt` are required; `id` (letters, digits,
  `._-`, at most 128, not starting with a dot; default: the row number and
  the image's stem; it names the row in the index and the report, the
  outputs are stored by key), `mask`, `seeds` (a non-empty list) and
  `options` (`num_frames`, `steps`, `guidance`, `video`) are optional.
- A row's `key` says what its work is: the row's number and contents and the
  settings of the run. The output folder belongs to one manifest (its
  sha256), so the key is the same finished work on every rerun, and a
  changed setting (profile, steps, ...) is new work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from f2f.bulk.storage import Location
from f2f.errors import F2FError, InvalidInput

if TYPE_CHECKING:
    from f2f.request import EditSettings

ITEM_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
CSV_OPTIONS = ("num_frames", "steps", "guidance", "video")
SETTING_FIELD = {"num_frames": "options.num_frames", "steps": "options.steps", "guidance": "options.guidance"}
PART_ROWS = 10_000  # rows per Parquet part of a scanned manifest: what the driver holds at once
MAX_REPORTED = 10  # malformed rows named in the refusal


class ManifestError(F2FError):
    """The manifest as a whole cannot be used (format, unreadable, malformed rows, wrong output folder)."""

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
            raise ValueError("must be 1-128 letters, digits or ._- and not start with a dot")
        return value

    def settings(self) -> EditSettings:
        """The row's edit settings (InvalidInput names the field); `check_edit` checks them against the run's config."""
        from f2f.request import settings_from

        options = self.options
        return settings_from(
            {"seeds": self.seeds, "num_frames": options.num_frames, "steps": options.steps, "guidance": options.guidance}
        )

    def item_id(self, number: int) -> str:
        return self.id or f"{number:05d}-{_safe(self.image.rsplit('/', 1)[-1].rsplit('.', 1)[0])}"


ROW_KEYS = frozenset(Row.model_fields)
OPTION_KEYS = frozenset(RowOptions.model_fields)


@dataclass(frozen=True)
class ScannedManifest:
    """A manifest that passed the scan: its location and hash, its number of rows, its Parquet parts."""

    location: Location
    sha256: str
    rows: int
    parts: list[str]


def scan_manifest(manifest: Location, settings: dict[str, Any], into: Location, sha256: str | None = None) -> ScannedManifest:
    """Read `manifest` once (the module's rules), writing its rows as Parquet parts into `into` (emptied first), each
    with its key under the run's `settings`; `sha256`: its hash when the caller has it already.
    ManifestError: the format, the file, or the malformed rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = FORMATS.get("." + manifest.name.rsplit(".", 1)[-1].lower()) if "." in manifest.name else None
    if kind is None:
        raise ManifestError(f"manifest: must be a .jsonl, .csv or .parquet file (got {manifest.name!r})")
    digest = sha256 or manifest_sha256(manifest)
    into.fs.delete_dir_contents(into.path, missing_dir_ok=True)
    into.make_dirs()
    settings_json = json.dumps(settings, sort_keys=True)
    errors: list[str] = []
    parts: list[str] = []
    numbers: list[int] = []
    keys: list[str] = []
    lines: list[str] = []
    count = 0

    def flush() -> None:
        part = into.child(f"part-{len(parts):05d}.parquet")
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table({"row": numbers, "key": keys, "line": lines}), buffer)
        part.write_bytes(buffer.getvalue().to_pybytes())
        parts.append(part.path)
        numbers.clear(), keys.clear(), lines.clear()

    for number, raw in _rows(manifest, kind):
        problem = raw if isinstance(raw, str) else _structure(raw)
        if problem is not None:
            errors.append(f"{_where(kind, number)}: {problem}")
            if len(errors) >= MAX_REPORTED:
                break
            continue
        line = json.dumps(raw, sort_keys=True, ensure_ascii=False)
        numbers.append(number)
        lines.append(line)
        keys.append(hashlib.sha256(f"{number}\n{line}\n{settings_json}".encode()).hexdigest()[:32])
        count += 1
        if len(numbers) >= PART_ROWS and not errors:
            flush()
    if errors:
        more = " (and maybe more)" if len(errors) >= MAX_REPORTED else ""
        raise ManifestError(f"manifest: {manifest}: malformed, nothing was run{more}:\n  " + "\n  ".join(errors))
    if numbers:
        flush()
    if not count:
        raise ManifestError(f"manifest: {manifest.name} has no rows")
    return ScannedManifest(manifest, digest, count, parts)


def _where(kind: str, number: int) -> str:
    return f"line {number}" if kind == "jsonl" else f"row {number}"


def _structure(raw: dict[str, Any]) -> str | None:
    """What makes a row malformed (its shape, not its values), naming the field; None when it is well formed."""
    unknown = sorted(set(raw) - ROW_KEYS)
    if unknown:
        return f"{unknown[0]}: unknown key (known: {', '.join(sorted(ROW_KEYS))})"
    for required in ("image", "prompt"):
        if required not in raw:
            return f"{required}: missing (every row needs image and prompt)"
    options = raw.get("options")
    if isinstance(options, dict):
        unknown = sorted(set(options) - OPTION_KEYS)
        if unknown:
            return f"options.{unknown[0]}: unknown option (known: {', '.join(sorted(OPTION_KEYS))})"
    return None


def manifest_sha256(manifest: Location) -> str:
    """The manifest file's sha256 (ManifestError when it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with manifest.fs.open_input_stream(manifest.path) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except (OSError, FileNotFoundError) as exc:
        raise ManifestError(f"manifest: cannot read {manifest} ({exc})") from None
    return digest.hexdigest()


def _rows(manifest: Location, kind: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, the row as a dict, or what makes it malformed), streaming."""
    if kind == "parquet":
        yield from _parquet_rows(manifest)
        return
    with manifest.fs.open_input_stream(manifest.path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")  # type: ignore[arg-type]
        try:
            yield from _jsonl_rows(text) if kind == "jsonl" else _csv_rows(text)
        except UnicodeDecodeError:
            raise ManifestError(f"manifest: {manifest.name} is not UTF-8 text") from None


def _jsonl_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(text, start=1):  # lines end at \n or \r only (not U+2028, which JSON strings may hold)
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"line: not JSON ({exc.msg})"
            continue
        yield number, value if isinstance(value, dict) else "line: must be a JSON object"


def _csv_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(text)  # quoted cells may hold line breaks
    header = reader.fieldnames or []
    known = {"id", "image", "prompt", "mask", "seeds", *CSV_OPTIONS}
    unknown = [name for name in header if name not in known]
    if not header or unknown or not {"image", "prompt"} <= set(header):
        rule = f"unknown columns {unknown}" if unknown else "the header needs the columns image and prompt"
        raise ManifestError(f"manifest: not a manifest CSV: {rule} (columns: {', '.join(sorted(known))})")
    for number, record in enumerate(reader, start=1):
        if None in record:
            yield number, f"line {reader.line_num}: has more fields than the header ({len(header)})"
            continue
        row: dict[str, Any] = {k: v for k, v in record.items() if k in ("id", "image", "prompt", "mask") and v not in (None, "")}
        row.setdefault("image", record.get("image") or "")
        row.setdefault("prompt", record.get("prompt") or "")
        if record.get("seeds"):
            row["seeds"] = [part.strip() for part in record["seeds"].replace(";", " ").split()]
        options = {k: record[k] for k in CSV_OPTIONS if record.get(k) not in (None, "")}
        if options:
            row["options"] = options
        yield number, row


def _parquet_rows(manifest: Location) -> Iterator[tuple[int, dict[str, Any] | str]]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(manifest.open())
    except Exception as exc:  # pyarrow's own error types for a file that is not Parquet
        raise ManifestError(f"manifest: {manifest.name} is not a Parquet file ({exc})") from None
    columns = set(reader.schema_arrow.names)
    unknown = sorted(columns - ROW_KEYS - set(CSV_OPTIONS))
    if unknown or not {"image", "prompt"} <= columns:
        rule = f"unknown columns {unknown}" if unknown else "it needs the columns image and prompt"
        raise ManifestError(f"manifest: not a manifest Parquet file: {rule}")
    number = 0
    for batch in reader.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            row = {k: v for k, v in record.items() if v is not None and k in ROW_KEYS}
            options = {k: record[k] for k in CSV_OPTIONS if record.get(k) is not None}
            if options:
                row["options"] = {**row.get("options", {}), **options}
            yield number, row


def item_of(line: str) -> Row:
    """A scanned row's values checked (ValidationError otherwise; `row_problem` words it)."""
    return Row.model_validate_json(line)


def row_problem(exc: ValidationError) -> tuple[str, str]:
    """The field and the rule a row's first bad value breaks."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "row"
    return field, err["msg"] + ("" if err["type"] == "missing" else f" (got {err.get('input')!r:.80})")


def check_problem(exc: InvalidInput) -> tuple[str, str]:
    """The manifest's field and the rule an edit's `InvalidInput` names."""
    given = "" if "(got " in exc.rule else f" (got {exc.value!r:.80})"  # some rules name what they got themselves
    return SETTING_FIELD.get(exc.field, exc.field), f"{exc.rule}{given}"


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
