"""What `f2f eval` evaluates: items (source, edit, optional ground truth and text) read from one of four layouts.

1. PosEdit: DATASET/annotations.json, src_images/NAME.png, tgt_images/NAME.png;
   text = the target caption.
2. TEdBench (imagic-editing.github.io/tedbench): DATASET/input_list.json (a list
   of {"img_name": NAME, "target_text": T}; [NAME, T] pairs also do) and
   DATASET/originals/NAME; no ground truth. Item ids
   are the image's stem and the text's number for that image: `cat_0`, `cat_1`.
3. A bulk run: DATASET/bulk.json and DATASET/index/ (Parquet parts) as
   `f2f bulk` writes them, each row's latest record
   (`f2f.bulk.report.read_index`); the sources and prompts come from the
   index (an image as its manifest row wrote it: a relative one is found
   beside the manifest that bulk.json names, not under a run's
   `--input-root`, which no file records), the edits from each item's
   folder (items/<k0k1>/<k2k3>/<key>/edited.png).
4. A manifest (.jsonl or .csv): rows of id, source, edit, target (optional),
   text (optional); paths relative to the manifest's folder.

For 1 and 2, `--edits EDITS` gives the edits, matched to items by name:
EDITS/NAME.<any image extension>, EDITS/NAME/edited.png (an `f2f edit`
folder), or, when EDITS is a bulk run (bulk.json, index/) over the same
benchmark, the item with that id. Frames along the path are the
`candidates/frame_NNN.png` files beside an edited.png (`f2f edit --save-frames`),
else the candidate frames of the `video.mp4` beside it (`f2f bulk` with
`"video": true`), read with its result.json (f2f.eval.frames).

Problems (a missing edit, a failed bulk item, a manifest row without a
source) are kept per row as `problems`; the rest is still evaluated. What
belongs to no row (files in EDITS that match no item, e.g. misnamed edits)
is a problem of the dataset: `Dataset.problems`.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from f2f.errors import InvalidInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
STRAY_NAMES_SHOWN = 5
_FRAME = re.compile(r"^frame_(\d+)\.png$")


@dataclass
class Item:
    id: str
    source: Path | None
    edit: Path | None = None
    target: Path | None = None
    text: str | None = None
    frames: dict[int, Path] = field(default_factory=dict)  # frame index -> image, along the path
    video: Path | None = None  # else the chosen clip (video.mp4 beside edited.png and result.json)
    problems: list[str] = field(default_factory=list)


@dataclass
class Dataset:
    layout: str  # posedit, tedbench, bulk, manifest
    items: list[Item]
    problems: list[str] = field(default_factory=list)  # of no one item: files in EDITS that match no item


def load_dataset(path: Path, edits: Path | None = None) -> Dataset:
    """The items of DATASET (a benchmark folder, a bulk run or a manifest), with their edits."""
    # 1. Which layout
    if path.is_file():
        layout, items = "manifest", _manifest(path)
    elif (path / "annotations.json").is_file():
        layout, items = "posedit", _posedit(path)
    elif (path / "input_list.json").is_file():
        layout, items = "tedbench", _tedbench(path)
    elif _is_bulk(path):
        layout, items = "bulk", _bulk_items(path)
    else:
        rule = "must be a PosEdit or TEdBench folder, a bulk run (bulk.json, index/) or a manifest (.jsonl, .csv)"
        raise InvalidInput("dataset", str(path), rule)
    # 2. The edits
    if layout in ("posedit", "tedbench"):
        if edits is None:
            raise InvalidInput("--edits", None, f"a {layout} folder needs --edits: a folder of edits named after its items")
        return Dataset(layout, items, _attach_edits(items, edits))
    if edits is not None:
        raise InvalidInput("--edits", str(edits), f"a {layout} already names its edits; leave --edits out")
    return Dataset(layout, items)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput("dataset", str(path), f"must be readable JSON ({exc})") from None


def _posedit(folder: Path) -> list[Item]:
    entries = _read_json(folder / "annotations.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "image" in e for e in entries):
        raise InvalidInput("dataset", str(folder / "annotations.json"), "must be a list of objects with an image key")
    items = []
    for entry in entries:
        name = entry["image"]
        item = Item(Path(name).stem, folder / "src_images" / name, text=entry.get("target_caption"))
        target = folder / "tgt_images" / name
        if target.is_file():
            item.target = target
        else:
            item.problems.append(f"no ground truth: {target} is missing")
        items.append(item)
    return items


def _tedbench(folder: Path) -> list[Item]:
    entries = _read_json(folder / "input_list.json")
    items, seen = [], {}
    for row, entry in enumerate(entries if isinstance(entries, list) else [None], 1):
        if isinstance(entry, dict):
            name, text = entry.get("img_name") or entry.get("image"), entry.get("target_text")
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            name, text = entry
        else:
            name = text = None
        if not isinstance(name, str) or not isinstance(text, str):
            rule = 'entries must be {"img_name": NAME, "target_text": TEXT} or [NAME, TEXT]'
            raise InvalidInput(f"input_list.json row {row}", entry, rule)
        stem = Path(name).stem
        k = seen[stem] = seen.get(stem, -1) + 1
        items.append(Item(f"{stem}_{k}", folder / "originals" / name, text=text))
    return items


def _is_bulk(folder: Path) -> bool:
    return (folder / "bulk.json").is_file() and (folder / "index").is_dir()


def _bulk_rows(folder: Path) -> list[dict]:
    """The latest index record of each finished item of the bulk run in `folder`, in row order."""
    from f2f.bulk.report import read_index
    from f2f.bulk.storage import Location

    try:
        return read_index(Location.of(folder))
    except ImportError:
        raise InvalidInput("dataset", str(folder), "a bulk run's index is Parquet: pip install 'f2f[bulk]'") from None
    except (OSError, ValueError) as exc:  # pyarrow's errors for a part that is not the index's Parquet
        raise InvalidInput("dataset", str(folder / "index"), f"must hold the Parquet parts f2f bulk writes ({exc})") from None


def _bulk_items(folder: Path) -> list[Item]:
    owner = _read_json(folder / "bulk.json")
    manifest = str(owner.get("manifest") or "") if isinstance(owner, dict) else ""
    items = []
    for row in _bulk_rows(folder):
        item = Item(row.get("id") or f"row{row.get('row')}", None, text=row.get("prompt"))
        if row.get("image"):
            item.source = _bulk_source(row["image"], manifest, item)
        _bulk_edit(item, folder, row)
        items.append(item)
    return items


def _bulk_source(image: str, manifest: str, item: Item) -> Path | None:
    """A row's image as a local file: absolute as it is, relative beside the manifest (None, with a problem, when
    it is in an object store)."""
    if "://" not in image and not Path(image).is_absolute() and manifest:
        image = f"{manifest.rsplit('/', 1)[0]}/{image}"
    if "://" in image:
        item.problems.append(f"no source: {image} is not a local file")
        return None
    return Path(image)


def _bulk_edit(item: Item, folder: Path, row: dict) -> None:
    if row.get("status") != "succeeded":
        item.problems.append(f"no edit: the bulk item is {row.get('status')} ({row.get('reason') or 'no reason given'})")
        return
    item.edit = folder / row["paths"]["edited"]
    _kept_path(item)


def _kept_path(item: Item) -> None:
    """Frames along the path beside an edited.png: candidates/frame_NNN.png, else video.mp4 with its result.json."""
    folder = item.edit.parent
    item.frames = _frames(folder / "candidates")
    if not item.frames and (folder / "video.mp4").is_file() and (folder / "result.json").is_file():
        item.video = folder / "video.mp4"


def _frames(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in sorted(folder.iterdir()) if (m := _FRAME.match(p.name))}


def _attach_edits(items: list[Item], edits: Path) -> list[str]:
    """Each item's edit from EDITS (problems on the item when missing); the dataset's problems: EDITS's stray files."""
    if not edits.is_dir():
        raise InvalidInput("--edits", str(edits), "must be a folder of edits")
    bulk = {row.get("id"): row for row in _bulk_rows(edits)} if _is_bulk(edits) else None
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(edits.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            by_stem.setdefault(p.stem, []).append(p)
    for item in items:
        if bulk is not None:
            if item.id in bulk:
                _bulk_edit(item, edits, bulk[item.id])
            else:
                item.problems.append(f"no edit: {item.id} is not in {edits / 'index'}")
        elif item.id in by_stem:
            item.edit, *others = by_stem[item.id]
            if others:
                item.problems.append(
                    f"several edits named {item.id}: used {item.edit.name}, not {', '.join(p.name for p in others)}"
                )
        elif (edits / item.id / "edited.png").is_file():
            item.edit = edits / item.id / "edited.png"
            _kept_path(item)
        else:
            item.problems.append(f"no edit: no {item.id}.png/.jpg/.webp nor {item.id}/edited.png in {edits}")
    return [] if bulk is not None else _stray_files(edits, [item.id for item in items])


def _stray_files(edits: Path, ids: list[str]) -> list[str]:
    """EDITS's files and folders that can be no item's edit (hidden ones aside): one problem naming a few."""
    known = set(ids)
    stray = [
        p
        for p in sorted(edits.iterdir())
        if not p.name.startswith(".")
        and not (p.is_dir() and p.name in known)
        and not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.stem in known)
    ]
    if not stray:
        return []
    shown = []
    for p in stray[:STRAY_NAMES_SHOWN]:
        close = difflib.get_close_matches(p.stem if p.is_file() else p.name, ids, n=1, cutoff=0.8)
        shown.append(p.name + (f" (item {close[0]}?)" if close else ""))
    more = f", and {len(stray) - len(shown)} more" if len(stray) > len(shown) else ""
    return [
        f"stray edits: {_count(len(stray), 'file')} in {edits} match no item and were not evaluated: {', '.join(shown)}{more} "
        "(an item's edit is ITEM.png/.jpg/.webp or ITEM/edited.png)"
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


_MANIFEST_KEYS = {"id", "source", "edit", "target", "text"}


def _manifest(path: Path) -> list[Item]:
    rows = _manifest_rows(path)
    items = []
    for n, row in enumerate(rows, 1):
        unknown = set(row) - _MANIFEST_KEYS
        if unknown:
            raise InvalidInput(
                f"{path.name} row {n}", sorted(unknown), f"unknown keys; known: {', '.join(sorted(_MANIFEST_KEYS))}"
            )
        source, edit, target = (path.parent / row[k] if row.get(k) else None for k in ("source", "edit", "target"))
        item = Item(str(row.get("id") or f"row{n}"), source, edit, target, row.get("text") or None)
        if item.source is None:
            item.problems.append("no source: the row has no source")
        if item.edit is None:
            item.problems.append("no edit: the row has no edit")
        elif item.edit.name == "edited.png":
            _kept_path(item)
        if item.target is None:
            item.problems.append("no ground truth: the row has no target (target metrics skipped)")
        items.append(item)
    return items


def _manifest_rows(path: Path) -> list[dict]:
    if path.suffix not in (".csv", ".jsonl"):
        raise InvalidInput("dataset", str(path), "a manifest must be .jsonl or .csv")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("dataset", str(path), f"must be a readable UTF-8 text file ({exc})") from None
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise InvalidInput("dataset", f"{path}:{n}", "must be one JSON object per line") from None
    if not all(isinstance(r, dict) for r in rows):
        raise InvalidInput("dataset", str(path), "every line must be a JSON object")
    return rows
