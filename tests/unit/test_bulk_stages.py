"""f2f.bulk.stages called in-process on scanned rows, with the test fakes as the models (no Ray: the node id a
stage records is faked): decode, the model stages, an item's own failures, finish's files and index parts."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import ScriptedVLM, SyntheticGenerator, scripted_usage
from PIL import Image

from f2f.bulk.manifest import scan_manifest
from f2f.bulk.report import read_index
from f2f.bulk.run import run_settings
from f2f.bulk.stages import CaptionStage, GenerateStage, SelectStage, Work, decode, finish, item_folder, pack, unpack
from f2f.bulk.storage import Location
from f2f.config import F2FConfig
from f2f.errors import VLMEndpointError
from f2f.pipeline import EditInFlight
from f2f.protocols import Answer

pq = pytest.importorskip("pyarrow.parquet", reason="f2f bulk needs its extra: pip install 'f2f[bulk]'")
ray = pytest.importorskip("ray", reason="f2f bulk needs its extra: pip install 'f2f[bulk]'")

NODE = "0123456789abcdef0123456789abcdef"
VIDEO = {"width": 32, "height": 32, "num_frames": 9, "frame_step": 8, "num_inference_steps": 2}
CONFIG = F2FConfig.model_validate({"video": VIDEO, "seed": 3, "selection": {"collage_max_pixels": 65536}})
GOOD = {"image": "a.png", "prompt": "make it red"}


class _Context:
    def get_node_id(self) -> str:
        return NODE


_LOOPS: list[asyncio.AbstractEventLoop] = []


@pytest.fixture(autouse=True)
def on_a_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`Work.ran` asks Ray which node it is on: here, one fixed node. The generate stages' loops are closed after
    the test (an actor's lives as long as its process)."""
    monkeypatch.setattr(ray, "get_runtime_context", _Context)
    yield
    while _LOOPS:
        _LOOPS.pop().close()


class Fakes:
    """A `ModelLoader` of the test fakes; every stage gets the same instances, so a test reads their calls."""

    def __init__(self, vlm: Any = None, generator: Any = None) -> None:
        self.the_vlm = vlm or ScriptedVLM(selections=("SELECTED: 2",))
        self.the_generator = generator or SyntheticGenerator()

    def vlm(self, config: F2FConfig) -> Any:
        return self.the_vlm

    def generator(self, config: F2FConfig) -> Any:
        return self.the_generator


class Stages:
    """The three model stages on one loader, as one actor of each pool holds them."""

    def __init__(self, loader: Fakes, config: F2FConfig = CONFIG, timeout_s: float | None = None) -> None:
        self.caption = CaptionStage(config, loader)
        self.generate = GenerateStage(config, loader, timeout_s)
        _LOOPS.append(self.generate.loop)
        self.select = SelectStage(config, loader)

    def through(self, row: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(self.select(self.generate(asyncio.run(self.caption(row)))))


class SlowOnceGenerator(SyntheticGenerator):
    """Its first call takes 30 s (and records that it was cancelled); the others are at once."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        if not self.calls:
            self.calls.append(args)  # type: ignore[arg-type]
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super().generate(*args, **kwargs)


class BrokenGenerator(SyntheticGenerator):
    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access")


class DownVLM(ScriptedVLM):
    async def chat(self, *args: Any, **kwargs: Any) -> Answer:
        raise VLMEndpointError("the VLM endpoint answered 503", status=503)


def png(path: Path, size: tuple[int, int] = (40, 30), color: Any = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def scanned(folder: Path, rows: list[dict[str, Any]], attempts: int | None = None) -> list[dict[str, Any]]:
    """The manifest's rows as the scan wrote them, as decode gets them (`attempts` so far: null when never tried)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    scan = scan_manifest(Location.of(manifest), run_settings(CONFIG), Location.of(folder / "scan"))
    return [{**row, "attempts": attempts} for part in scan.parts for row in pq.read_table(part).to_pylist()]


def decoded(folder: Path, row: dict[str, Any], config: F2FConfig = CONFIG, attempts: int | None = None) -> Work:
    (one,) = scanned(folder, [row], attempts)
    return unpack(decode(one, config, str(folder)))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    png(tmp_path / "a.png")
    return tmp_path


# --- decode -------------------------------------------------------------------------------------------


def test_decode_makes_a_good_row_an_edit_in_flight(folder: Path) -> None:
    work = decoded(folder, GOOD)
    assert (work.row, work.attempts, work.id, work.image, work.prompt, work.video) == (
        1,
        1,
        "00001-a",
        "a.png",
        "make it red",
        False,
    )
    assert work.image_sha256 == hashlib.sha256((folder / "a.png").read_bytes()).hexdigest()
    assert (work.reason, work.retry, work.nodes) == (None, True, {"decode": NODE[:12]})
    assert isinstance(work.edit, EditInFlight)
    request = work.edit.request
    assert (request.text, request.seeds, request.source.size, request.mask) == ("make it red", [3], (40, 30), None)


def test_decode_applies_the_rows_id_seeds_and_options_and_counts_its_attempts(folder: Path) -> None:
    row = {**GOOD, "id": "clip-1", "seeds": [5, 6], "options": {"steps": 3, "video": True}}
    work = decoded(folder, row, attempts=2)
    assert (work.id, work.attempts, work.video) == ("clip-1", 3, True)
    assert work.edit is not None
    assert (work.edit.request.seeds, work.edit.request.config.video.num_inference_steps) == ([5, 6], 3)


def test_decode_finds_relative_images_under_the_root_and_absolute_ones_where_they_are(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png")
    elsewhere = png(tmp_path / "elsewhere" / "b.png")
    rows = scanned(tmp_path / "manifests", [GOOD, {**GOOD, "image": str(elsewhere)}])
    works = [unpack(decode(row, CONFIG, str(tmp_path / "images"))) for row in rows]
    assert [w.reason for w in works] == [None, None]
    beside_the_manifest = unpack(decode(rows[0], CONFIG, str(tmp_path / "manifests")))
    assert beside_the_manifest.reason is not None and beside_the_manifest.reason.startswith("unreadable: image:")


@pytest.mark.parametrize(
    ("row", "start"),
    [
        pytest.param({"image": "absent.png"}, "unreadable: image: cannot read absent.png (", id="missing-image"),
        pytest.param({"image": "folder.png"}, "unreadable: image: cannot read folder.png (", id="folder"),
        pytest.param({"mask": "absent.png"}, "unreadable: mask: cannot read absent.png (", id="missing-mask"),
    ],
)
def test_an_unreadable_file_fails_the_item_for_a_rerun_to_try_again(folder: Path, row: dict[str, Any], start: str) -> None:
    (folder / "folder.png").mkdir()
    work = decoded(folder, {**GOOD, **row})
    assert work.reason is not None and work.reason.startswith(start)
    assert (work.retry, work.edit, work.image_sha256) == (True, None, None)


@pytest.mark.parametrize(
    ("row", "start"),
    [
        pytest.param({"prompt": ""}, "invalid_row: prompt: String should have at least 1 character", id="empty-prompt"),
        pytest.param({"options": {"steps": 0}}, "invalid_row: options.steps: Input should be greater than", id="steps"),
        pytest.param({"options": {"video": "maybe"}}, "invalid_row: options.video:", id="video"),
        pytest.param({"seeds": []}, "invalid_row: seeds:", id="no-seeds"),
        pytest.param({"id": "a/b"}, "invalid_row: id: Value error, must be 1-128 letters", id="id"),
    ],
)
def test_a_bad_value_fails_the_item_for_good_naming_the_field(folder: Path, row: dict[str, Any], start: str) -> None:
    work = decoded(folder, {**GOOD, **row})
    assert work.reason is not None and work.reason.startswith(start)
    assert (work.retry, work.edit) == (False, None)
    assert work.id == row.get("id", "")  # the id as given, for the index; none when it was not given


@pytest.mark.parametrize(
    ("row", "start"),
    [
        pytest.param({"prompt": "   "}, "invalid_input: prompt: the edit text must not be empty", id="blank-prompt"),
        pytest.param({"options": {"num_frames": 10}}, "invalid_input: options.num_frames: ", id="num_frames"),
        pytest.param({"image": "notes.png"}, "invalid_image: image: not a readable image", id="not-an-image"),
        pytest.param({"image": "cut.png"}, "invalid_image: image: the image data is truncated or corrupt", id="corrupt"),
        pytest.param({"mask": "small-mask.png"}, "invalid_input: mask: must be the image's size, 40x30", id="mask-size"),
    ],
)
def test_a_row_the_edits_rules_refuse_fails_for_good_naming_the_manifests_field(
    folder: Path, row: dict[str, Any], start: str
) -> None:
    Image.new("L", (4, 4), 255).save(folder / "small-mask.png")
    (folder / "notes.png").write_text("not an image\n")
    noise = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])  # a good header, half the pixels
    work = decoded(folder, {**GOOD, **row})
    assert work.reason is not None and work.reason.startswith(start)
    assert (work.retry, work.edit) == (False, None)
    assert work.image_sha256 is not None  # the image was read: its hash is in the index


# --- the model stages -------------------------------------------------------------------------------


def test_the_model_stages_carry_the_edit_and_record_their_nodes(folder: Path) -> None:
    loader = Fakes()
    work = unpack(Stages(loader).through(pack(decoded(folder, GOOD))))
    assert work.reason is None and work.edit is not None
    assert work.edit.caption == "The sun slowly sets behind the hills."
    assert len(work.edit.clips) == 1 and len(work.edit.clips[0]) == 9
    assert [j.status for j in work.edit.judged] == ["edited"]
    assert set(work.nodes) == {"decode", "caption", "generate", "select"}
    assert [kind for kind, *_ in loader.the_vlm.calls] == ["caption", "select"]


def test_an_item_over_the_timeout_fails_and_the_next_item_runs_on_the_same_generator(folder: Path) -> None:
    loader = Fakes(generator=SlowOnceGenerator())
    stages = Stages(loader, timeout_s=0.2)
    first, second = (asyncio.run(stages.caption(decode(row, CONFIG, str(folder)))) for row in scanned(folder, [GOOD, GOOD]))
    slow = unpack(stages.generate(first))
    assert slow.reason == "timeout: its videos took longer than 0.2 s on a generator"
    assert (slow.retry, slow.edit) == (True, None)
    assert loader.the_generator.cancelled == 1  # its videos were stopped: the actor is free
    fine = unpack(stages.generate(second))
    assert fine.reason is None and fine.edit is not None and len(fine.edit.clips) == 1


def test_a_model_error_fails_the_item_for_a_rerun_to_try_again(folder: Path) -> None:
    work = unpack(Stages(Fakes(generator=BrokenGenerator())).through(pack(decoded(folder, GOOD))))
    assert work.reason == "error: RuntimeError: CUDA error: an illegal memory access"
    assert (work.retry, work.edit) == (True, None)
    assert "select" not in work.nodes  # a failed item is not run again by the later stages


def test_a_vlm_error_is_worded_with_its_code(folder: Path) -> None:
    work = unpack(Stages(Fakes(vlm=DownVLM())).through(pack(decoded(folder, GOOD))))
    assert work.reason == "vlm_endpoint_error: the VLM endpoint answered 503" and work.retry is True
    assert set(work.nodes) == {"decode", "caption"}


def test_a_failed_item_passes_through_the_later_stages_untouched(folder: Path) -> None:
    failed = decoded(folder, {"image": "absent.png", "prompt": "walk"})
    loader = Fakes()
    after = unpack(Stages(loader).through(pack(failed)))
    assert after == failed
    assert loader.the_vlm.calls == [] and loader.the_generator.calls == []


def test_the_mask_reaches_the_generator_in_latent_mode_only(folder: Path) -> None:
    mask = Image.new("L", (40, 30), 0)
    mask.paste(255, (0, 0, 20, 30))
    mask.save(folder / "mask.png")
    rows = scanned(folder, [{**GOOD, "mask": "mask.png"}, GOOD])
    loader = Fakes()
    stages = Stages(loader)
    for row in rows:
        assert unpack(stages.through(decode(row, CONFIG, str(folder)))).reason is None
    masked, whole = loader.the_generator.masks
    assert whole is None and masked is not None
    assert (masked.mode, masked.size) == ("L", (32, 32))  # the mask on the canvas
    composite = CONFIG.model_copy(update={"mask": CONFIG.mask.model_copy(update={"mode": "composite"})})
    loader = Fakes()
    work = unpack(Stages(loader, composite).through(decode(rows[0], composite, str(folder))))
    assert work.reason is None and loader.the_generator.masks == [None]


# --- finish ---------------------------------------------------------------------------------------------


def test_finish_writes_each_items_files_and_one_index_part_per_call(folder: Path) -> None:
    out = folder / "out"
    stages = Stages(Fakes())
    rows = scanned(folder, [GOOD, {"image": "absent.png", "prompt": "walk"}, {**GOOD, "id": "third"}])
    batches = [
        [stages.through(decode(row, CONFIG, str(folder))) for row in rows[:2]],
        [stages.through(decode(rows[2], CONFIG, str(folder)))],
    ]
    outcome = finish({"work": [row["work"] for row in batches[0]]}, str(out), fps=8, run_id="run1")
    assert outcome["status"] == ["succeeded", "failed"] and outcome["row"] == [1, 2]
    assert outcome["id"] == ["00001-a", "00002-absent"] and outcome["reason"][0] is None
    assert outcome["reason"][1].startswith("unreadable: image:")
    assert len(list((out / "index").glob("part-*.parquet"))) == 1
    finish({"work": [row["work"] for row in batches[1]]}, str(out), fps=8, run_id="run1")
    assert len(list((out / "index").glob("part-*.parquet"))) == 2

    key = rows[0]["key"]
    item = out / "items" / key[:2] / key[2:4] / key
    assert item_folder(key) == f"items/{key[:2]}/{key[2:4]}/{key}"
    names = {"edited.png", "collage.png", "result.json", "thumb-source.jpg", "thumb-edited.jpg", "thumb-collage.jpg"}
    assert {p.name for p in item.iterdir()} == names
    assert Image.open(item / "edited.png").size == (40, 30)
    assert max(Image.open(item / "thumb-collage.jpg").size) <= 320
    assert json.loads((item / "result.json").read_text())["status"] == "edited"
    assert not (out / item_folder(rows[1]["key"])).exists()  # a failed item writes no files

    index = {row["row"]: row for row in read_index(Location.of(out))}
    assert [(n, r["status"], r["attempts"], r["retry"]) for n, r in index.items()] == [
        (1, "succeeded", 1, True),
        (2, "failed", 1, True),
        (3, "succeeded", 1, True),
    ]
    first = index[1]
    assert (first["folder"], first["edit_status"], first["seed"], first["selected_frame"]) == (item_folder(key), "edited", 3, 8)
    assert first["caption"] == "The sun slowly sets behind the hills."
    assert first["image_sha256"] == hashlib.sha256((folder / "a.png").read_bytes()).hexdigest()
    assert set(json.loads(first["nodes"])) == {"decode", "caption", "generate", "select", "finish"}
    assert {"caption", "generate", "select", "total"} <= set(json.loads(first["timings_s"]))
    assert json.loads(first["usage"]) == scripted_usage(["caption", "select"]).as_json()  # one seed: no ranking
    assert (index[2]["folder"], index[2]["timings_s"], index[2]["image"]) == (None, None, "absent.png")
    assert index[2]["usage"] is None
    assert index[3]["id"] == "third"


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None, reason="video.mp4 needs imageio-ffmpeg")
def test_finish_writes_the_video_of_a_row_that_asks_for_it(folder: Path) -> None:
    (row,) = scanned(folder, [{**GOOD, "options": {"video": True}}])
    finish(
        {"work": [Stages(Fakes()).through(decode(row, CONFIG, str(folder)))["work"]]}, str(folder / "out"), fps=8, run_id="run1"
    )
    (entry,) = read_index(Location.of(folder / "out"))
    assert entry["video"] is True and (folder / "out" / entry["paths"]["video"]).stat().st_size > 0
