"""The bulk run's stages, as Ray Data runs them: one item a row, its edit carried from stage to stage.

    decode (task) -> caption (VLM actors) -> generate (generator actors) -> select (VLM actors) -> finish (task)

Rules:

- A row is `{"work": bytes}`: a pickled `Work` (the item and its
  `f2f.pipeline.EditInFlight`). Frames move between stages inside it, in
  Ray's object store; the driver never sees them.
- Each stage runs the same step function as `f2f edit`
  (`f2f.pipeline.caption_edit`, `generate_clips`, `select_clip`,
  `finish_edit`). An item's own failure (an unreadable image, a bad value,
  a model error, its videos over `--item-timeout`) is caught where it
  happens and recorded on the item, which then passes through the later
  stages untouched: a failed item never stops the run.
- What is not the item's (its actor lost mid-item: out of memory, a node
  gone) is Ray's: the actor is restarted and the item tried again, at most
  `--max-retries` times (`f2f.bulk.run`).
- The VLM stages answer several items at once (async: Ray Data runs up to 16
  calls at once in each actor); a generator makes one video at a time.
- `finish` writes each item's files into `items/<k0k1>/<k2k3>/<key>/` (two
  levels of 256 folders: no folder holds a million entries), then the
  batch's index rows as one Parquet part (`index/`); an item whose files
  were written but whose index row was not is done again on a rerun.
- The models come from a `ModelLoader` (`Backends`: the project's backends;
  the tests pass fakes of their own).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import pickle
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image
from pydantic import ValidationError

from f2f.bulk.manifest import check_problem, item_of, row_problem
from f2f.bulk.storage import Location, StorageError
from f2f.config import F2FConfig
from f2f.errors import EditCancelled, F2FError, InvalidInput, unwrap
from f2f.pipeline import EditInFlight, caption_edit, finish_edit, generate_clips, select_clip
from f2f.protocols import VLM, VideoGenerator
from f2f.request import check_edit
from f2f.result import EditResult, write_outputs

INDEX_SCHEMA_FIELDS = (
    ("row", "int64"),
    ("key", "string"),
    ("id", "string"),
    ("image", "string"),
    ("prompt", "string"),
    ("status", "string"),  # succeeded | failed
    ("reason", "string"),
    ("retry", "bool"),  # False: it can only fail again (the row's own data broke a rule)
    ("attempts", "int64"),
    ("edit_status", "string"),  # edited | no_edit | fallback
    ("caption", "string"),
    ("selected_frame", "int64"),
    ("seed", "int64"),
    ("image_sha256", "string"),
    ("folder", "string"),  # the item's files, relative to the output folder
    ("video", "bool"),
    ("timings_s", "string"),  # JSON: seconds per stage
    ("usage", "string"),  # JSON: the VLM's tokens, as result.json's usage
    ("nodes", "string"),  # JSON: the Ray node each stage ran on
    ("finished_at", "double"),
)
THUMBS = {"source": 160, "edited": 160, "collage": 320}  # thumb-<name>.jpg in the item's folder, for the report


class ModelLoader(Protocol):
    """Makes a stage's model in its actor."""

    def vlm(self, config: F2FConfig) -> VLM: ...

    def generator(self, config: F2FConfig) -> VideoGenerator: ...


class Backends:
    """The project's backends (`f2f.backends`), read from local folders only."""

    def vlm(self, config: F2FConfig) -> VLM:
        from f2f.backends import force_offline, load_vlm

        force_offline()
        return load_vlm(config)

    def generator(self, config: F2FConfig) -> VideoGenerator:
        from f2f.backends import force_offline, load_generator

        force_offline()
        return load_generator(config)


@dataclass
class Work:
    """One item on its way through the stages."""

    row: int
    key: str
    attempts: int  # this item's attempts, this one included
    id: str = ""
    image: str = ""
    prompt: str = ""
    video: bool = False
    image_sha256: str | None = None
    edit: EditInFlight | None = None
    reason: str | None = None  # set: it failed, and why
    retry: bool = True
    nodes: dict[str, str] = field(default_factory=dict)

    def fail(self, reason: str, retry: bool = True) -> None:
        self.reason, self.retry, self.edit = reason, retry, None  # its frames are dropped here

    def ran(self, stage: str) -> None:
        import ray

        self.nodes[stage] = ray.get_runtime_context().get_node_id()[:12]


def pack(work: Work) -> dict[str, Any]:
    return {"work": pickle.dumps(work, protocol=5)}


def unpack(row: dict[str, Any]) -> Work:
    return pickle.loads(row["work"])


def failure(exc: BaseException) -> tuple[str, bool]:
    """An item's failure worded for the index, and whether a rerun may try it again."""
    if isinstance(exc, (F2FError, EditCancelled)):
        cause = unwrap(exc)
        return f"{exc.code}: {cause}", not isinstance(cause, InvalidInput)  # the row's own data: it can only fail again
    cause = unwrap(exc)
    return f"error: {type(cause).__name__}: {str(cause)[:300]}", True


# --- the stages -----------------------------------------------------------------------------------


def decode(row: dict[str, Any], config: F2FConfig, root: str) -> dict[str, Any]:
    """A scanned row (`row`, `key`, `line`, `attempts` so far or null) checked and decoded into its `Work` (CPU)."""
    work = Work(int(row["row"]), str(row["key"]), int(row.get("attempts") or 0) + 1)
    work.ran("decode")
    try:
        item = item_of(row["line"])
    except ValidationError as exc:
        given = json.loads(row["line"]).get("id")
        work.id = given if isinstance(given, str) else ""
        name, rule = row_problem(exc)
        work.fail(f"invalid_row: {name}: {rule}", retry=False)
        return pack(work)
    work.id, work.image, work.prompt, work.video = item.item_id(work.row), item.image, item.prompt, item.options.video
    base = _location(root)
    files: dict[str, bytes | None] = {"image": None, "mask": None}
    for name, where in (("image", item.image), ("mask", item.mask)):
        if where is None:
            continue
        try:
            files[name] = base.relative(where).read_bytes()
        except (OSError, StorageError) as exc:  # maybe there on a rerun: tried again
            work.fail(f"unreadable: {name}: cannot read {where} ({exc})")
            return pack(work)
    image = files["image"]
    assert image is not None
    work.image_sha256 = hashlib.sha256(image).hexdigest()
    try:
        request = check_edit(image, item.prompt, config, item.settings(), None, "prompt", files["mask"])
    except InvalidInput as exc:
        name, rule = check_problem(exc)
        work.fail(f"{type(exc).code}: {name}: {rule}", retry=False)  # the class's code (invalid_input, invalid_image)
        return pack(work)
    work.edit = EditInFlight.of(request)
    return pack(work)


class _VLMStage:
    """A step on a VLM actor: Ray Data runs several items at once in it (async)."""

    name: str  # the stage's name in the index's `nodes`
    step: Callable[[EditInFlight, VLM], Awaitable[None]]  # the edit's step (f2f.pipeline), a staticmethod

    def __init__(self, config: F2FConfig, loader: ModelLoader) -> None:
        self.vlm = loader.vlm(config)

    async def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        work = unpack(row)
        if work.edit is not None:
            work.ran(self.name)
            try:
                await self.step(work.edit, self.vlm)
            except Exception as exc:  # the item's failure, not the run's
                work.fail(*failure(exc))
        return pack(work)


class CaptionStage(_VLMStage):
    """2-3: the temporal caption and the canvas."""

    name, step = "caption", staticmethod(caption_edit)


class GenerateStage:
    """4: the videos, on a generator actor, one item at a time; `timeout_s` bounds an item's videos (cancelled at
    their next step, the actor freed)."""

    def __init__(self, config: F2FConfig, loader: ModelLoader, timeout_s: float | None) -> None:
        self.loop = asyncio.new_event_loop()  # the generator's calls all run on this one loop
        self.generator, self.timeout_s = loader.generator(config), timeout_s

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        work = unpack(row)
        if work.edit is not None:
            work.ran("generate")
            try:
                self.loop.run_until_complete(asyncio.wait_for(generate_clips(work.edit, self.generator), self.timeout_s))
            except TimeoutError:
                work.fail(f"timeout: its videos took longer than {self.timeout_s:g} s on a generator")
            except Exception as exc:
                work.fail(*failure(exc))
        return pack(work)


class SelectStage(_VLMStage):
    """5-6: the VLM picks each clip's frame and ranks the clips."""

    name, step = "select", staticmethod(select_clip)


def finish(batch: dict[str, Any], out: str, fps: int, run_id: str) -> dict[str, Any]:
    """7 and the writes (CPU): each item's edit made and written, then the batch's index rows as one Parquet part
    (`index/part-<run_id>-<uuid>.parquet`: the run tells its own records from the earlier runs').
    Returns what the driver counts: `status`, `id`, `reason` per item."""
    root = _location(out)
    records = []
    for packed in batch["work"]:
        work = pickle.loads(packed)
        result = None
        if work.edit is not None:
            work.ran("finish")
            try:
                result = finish_edit(work.edit, keep_frames=work.video)
                _write_item(result, root.child(item_folder(work.key)), work, fps)
            except Exception as exc:
                work.fail(*failure(exc))
                result = None
        records.append(_record(work, result))
    _write_index(root, records, run_id)
    return {key: [r[key] for r in records] for key in ("status", "id", "reason", "row")}


@functools.lru_cache(maxsize=8)
def _location(url: str) -> Location:
    """A stage's folder, made once per worker process (an S3 filesystem is a client: not one per item)."""
    return Location.of(url)


def item_folder(key: str) -> str:
    return f"items/{key[:2]}/{key[2:4]}/{key}"


def _write_item(result: EditResult, folder: Location, work: Work, fps: int) -> None:
    """edited.png, collage.png, result.json (and video.mp4) as `f2f edit` writes them, and the report's thumbnails."""
    assert work.edit is not None
    thumbs = {"source": work.edit.request.source, "edited": result.image, "collage": result.collage}
    video_fps = fps if work.video else None
    if folder.local:
        write_outputs(result, folder.path, video_fps=video_fps)
    else:  # written to a local folder first (video.mp4 is made by a file writer), then each file put whole
        with tempfile.TemporaryDirectory(prefix="f2f-item-") as tmp:
            for path in write_outputs(result, tmp, video_fps=video_fps):
                folder.child(path.name).write_bytes(path.read_bytes())
    for name, image in thumbs.items():
        _thumbnail(image, folder.child(f"thumb-{name}.jpg"), THUMBS[name])


def _thumbnail(image: Image.Image, where: Location, size: int) -> None:
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=75)
    where.write_bytes(buffer.getvalue())


def _record(work: Work, result: EditResult | None) -> dict[str, Any]:
    succeeded = result is not None and work.reason is None
    return {
        "row": work.row,
        "key": work.key,
        "id": work.id or None,
        "image": work.image or None,
        "prompt": work.prompt or None,
        "status": "succeeded" if succeeded else "failed",
        "reason": work.reason,
        "retry": work.retry,
        "attempts": work.attempts,
        "edit_status": result.status if succeeded and result else None,
        "caption": result.caption if succeeded and result else None,
        "selected_frame": result.outcome.frame if succeeded and result else None,
        "seed": result.seed if succeeded and result else None,
        "image_sha256": work.image_sha256,
        "folder": item_folder(work.key) if succeeded else None,
        "video": work.video,
        "timings_s": json.dumps({k: round(v, 4) for k, v in result.timings_s.items()}) if succeeded and result else None,
        "usage": json.dumps(result.usage.as_json()) if succeeded and result else None,
        "nodes": json.dumps(work.nodes),
        "finished_at": time.time(),
    }


def index_schema() -> Any:
    import pyarrow as pa

    types = {"int64": pa.int64(), "string": pa.string(), "bool": pa.bool_(), "double": pa.float64()}
    return pa.schema([(name, types[kind]) for name, kind in INDEX_SCHEMA_FIELDS])


def _write_index(root: Location, records: list[dict[str, Any]], run_id: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records, schema=index_schema()), buffer)
    root.child("index", f"part-{run_id}-{uuid.uuid4().hex}.parquet").write_bytes(buffer.getvalue().to_pybytes())
