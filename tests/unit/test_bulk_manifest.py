"""f2f.bulk.manifest: JSONL, CSV and Parquet manifests scanned into Parquet parts (row, key, line), malformed ones
refused as a whole, a row's values checked where it runs (`item_of`, `row_problem`), keys, the PosEdit layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from f2f.bulk import manifest as manifest_module
from f2f.bulk.manifest import (
    ITEM_ID,
    MAX_REPORTED,
    ManifestError,
    Row,
    RowOptions,
    ScannedManifest,
    check_problem,
    item_of,
    posedit_manifest,
    row_problem,
    scan_manifest,
)
from f2f.bulk.storage import Location
from f2f.config import load_config
from f2f.errors import F2FError, InvalidInput

pa = pytest.importorskip("pyarrow", reason="f2f bulk needs its extra: pip install 'f2f[bulk]'")
pq = pytest.importorskip("pyarrow.parquet")

POSEDIT = Path(__file__).resolve().parents[3] / "shared" / "data" / "posedit"
SETTINGS: dict[str, Any] = {"model": "m-1", "width": 96, "height": 64}


def png(path: Path, color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format="PNG")  # "..png" has no suffix for PIL
    return path


def jsonl(path: Path, rows: list[Any]) -> Path:
    """Write one JSON value per line (strings are written as they are, for raw lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def text_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def parquet(path: Path, table: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def scan(path: Path, settings: dict[str, Any] | None = None, into: Path | None = None) -> ScannedManifest:
    into = into or path.parent / "out" / "manifest"
    return scan_manifest(Location.of(path), SETTINGS if settings is None else settings, Location.of(into))


def scanned_rows(scanned: ScannedManifest) -> list[dict[str, Any]]:
    """The rows of the scan's parts, in order: row, key, line."""
    return [row for part in scanned.parts for row in pq.read_table(part).to_pylist()]


def lines(path: Path, **kwargs: Any) -> list[dict[str, Any]]:
    """The manifest's rows as the scan wrote them (each line parsed back)."""
    return [json.loads(row["line"]) for row in scanned_rows(scan(path, **kwargs))]


def items(path: Path) -> list[Row]:
    return [item_of(row["line"]) for row in scanned_rows(scan(path))]


def refusal(path: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        scan(path)
    return str(caught.value)


def key_of(tmp_path: Path, row: dict[str, Any], settings: dict[str, Any] | None = None, before: int = 0) -> str:
    """The key of `row` scanned from a manifest of its own, after `before` other rows."""
    folder = tmp_path / f"m-{len(list(tmp_path.iterdir()))}"
    rows = [{"image": "other.png", "prompt": "x"}] * before + [row]
    return scanned_rows(scan(jsonl(folder / "m.jsonl", rows), settings))[-1]["key"]


def problem(row: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        item_of(json.dumps(row))
    return row_problem(caught.value)


@pytest.fixture
def posedit_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "posedit"
    png(folder / "src_images" / "a1_s1.png", "red")
    png(folder / "src_images" / "a2_s3.png", "blue")
    annotations = [
        {"image": "a1_s1.png", "target_caption": "A person with raised arms.", "instruction": "Raise both arms"},
        {"image": "a2_s3.png", "target_caption": "A person sitting.", "instruction": "Sit down"},
    ]
    (folder / "annotations.json").write_text(json.dumps(annotations), encoding="utf-8")
    return folder


# --- JSONL ----------------------------------------------------------------------------------------


def test_a_jsonl_scan_writes_parquet_parts_of_row_key_and_the_row_as_canonical_json(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", [{"prompt": "walk", "image": "a.png"}, {"image": "sub/b.png", "prompt": "run"}])
    scanned = scan(path)
    assert (scanned.location.path, scanned.rows) == (str(path), 2)
    assert scanned.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [Path(p).parent for p in scanned.parts] == [tmp_path / "out" / "manifest"]
    assert pq.read_schema(scanned.parts[0]).names == ["row", "key", "line"]
    rows = scanned_rows(scanned)
    assert [(r["row"], r["line"]) for r in rows] == [
        (1, '{"image": "a.png", "prompt": "walk"}'),  # keys sorted: the line is the same for the same row
        (2, '{"image": "sub/b.png", "prompt": "run"}'),
    ]
    assert all(len(r["key"]) == 32 and int(r["key"], 16) >= 0 for r in rows)


def test_the_scan_reads_no_image(tmp_path: Path) -> None:
    """Images are read where the item runs: a row naming a missing image scans (and fails on its own later)."""
    assert lines(jsonl(tmp_path / "m.jsonl", [{"image": "absent.png", "prompt": "walk"}])) == [
        {"image": "absent.png", "prompt": "walk"}
    ]


def test_jsonl_blank_lines_are_skipped_and_rows_are_1_based_line_numbers(tmp_path: Path) -> None:
    row_a, row_b = json.dumps({"image": "a.png", "prompt": "walk"}), json.dumps({"image": "b.png", "prompt": "run"})
    path = text_file(tmp_path / "m.jsonl", f"{row_a}\n\n   \n{row_b}\n\n")
    scanned = scan(path)
    assert scanned.rows == 2 and [r["row"] for r in scanned_rows(scanned)] == [1, 4]


@pytest.mark.parametrize("name", ["m.ndjson", "M.JSONL"])
def test_ndjson_suffix_and_upper_case_suffix_are_jsonl(tmp_path: Path, name: str) -> None:
    assert [row["prompt"] for row in lines(jsonl(tmp_path / name, [{"image": "a.png", "prompt": "walk"}]))] == ["walk"]


def test_jsonl_prompt_with_a_unicode_line_separator_is_one_row(tmp_path: Path) -> None:
    row = json.dumps({"image": "a.png", "prompt": "walk\u2028then run"}, ensure_ascii=False)
    scanned = scan(text_file(tmp_path / "m.jsonl", row + "\n"))
    assert [(r["row"], item_of(r["line"]).prompt) for r in scanned_rows(scanned)] == [(1, "walk\u2028then run")]


def test_a_utf8_bom_before_the_first_jsonl_row_is_not_part_of_it(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"image": "a.png", "prompt": "walk"}\r\n')
    assert lines(path) == [{"image": "a.png", "prompt": "walk"}]


def test_the_scan_writes_a_part_every_part_rows_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "PART_ROWS", 2)
    rows = [{"image": f"{n}.png", "prompt": "walk"} for n in range(5)]
    scanned = scan(jsonl(tmp_path / "m.jsonl", rows))
    assert [len(pq.read_table(part)) for part in scanned.parts] == [2, 2, 1]
    assert [r["row"] for r in scanned_rows(scanned)] == [1, 2, 3, 4, 5]


def test_a_rescan_empties_the_folder_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "PART_ROWS", 1)
    path = jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "walk"}, {"image": "b.png", "prompt": "run"}])
    assert len(scan(path).parts) == 2
    jsonl(path, [{"image": "a.png", "prompt": "walk"}])
    scanned = scan(path)
    assert sorted(p.name for p in (tmp_path / "out" / "manifest").iterdir()) == [Path(p).name for p in scanned.parts]
    assert scanned.rows == 1


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_rows_with_seeds_and_options(tmp_path: Path) -> None:
    path = text_file(tmp_path / "m.csv", "id,image,prompt,seeds,steps,video\nclip-1,a.png,walk left,1;2;3,20,true\n")
    (item,) = items(path)
    assert (item.id, item.image, item.prompt, item.seeds) == ("clip-1", "a.png", "walk left", [1, 2, 3])
    assert item.options == RowOptions(steps=20, video=True)


def test_csv_every_option_column_becomes_an_option(tmp_path: Path) -> None:
    path = text_file(tmp_path / "m.csv", "image,prompt,num_frames,steps,guidance,video\na.png,walk,17,30,6.5,1\n")
    assert lines(path) == [
        {"image": "a.png", "prompt": "walk", "options": {"num_frames": "17", "steps": "30", "guidance": "6.5", "video": "1"}}
    ]
    assert items(path)[0].options == RowOptions(num_frames=17, steps=30, guidance=6.5, video=True)


def test_csv_seeds_may_be_separated_by_semicolons_or_spaces(tmp_path: Path) -> None:
    path = text_file(tmp_path / "m.csv", "image,prompt,seeds\na.png,walk, 5 ; 6;7 \n")
    assert items(path)[0].seeds == [5, 6, 7]


def test_csv_empty_cells_are_left_out(tmp_path: Path) -> None:
    path = text_file(tmp_path / "m.csv", "id,image,prompt,mask,seeds,num_frames,steps,guidance,video\n,a.png,walk,,,,,,\n")
    assert lines(path) == [{"image": "a.png", "prompt": "walk"}]
    (item,) = items(path)
    assert (item.item_id(1), item.seeds, item.options) == ("00001-a", None, RowOptions())


def test_csv_the_header_is_row_0_so_the_first_data_row_is_row_1(tmp_path: Path) -> None:
    scanned = scan(text_file(tmp_path / "m.csv", "image,prompt\na.png,walk\nb.png,run\n"))
    assert [r["row"] for r in scanned_rows(scanned)] == [1, 2]


def test_csv_with_a_utf8_bom_reads_its_header(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfimage,prompt\r\na.png,walk\r\n")
    assert lines(path) == [{"image": "a.png", "prompt": "walk"}]


def test_csv_quoted_cells_may_hold_commas_and_line_breaks(tmp_path: Path) -> None:
    path = text_file(tmp_path / "m.csv", 'image,prompt\na.png,"walk, then run"\nb.png,"line one\nline two"\nc.png,jump\n')
    scanned = scan(path)
    assert [(r["row"], json.loads(r["line"])["prompt"]) for r in scanned_rows(scanned)] == [
        (1, "walk, then run"),
        (2, "line one\nline two"),
        (3, "jump"),  # rows are records, not lines of the file
    ]


def test_csv_a_missing_image_cell_is_a_value_problem_of_that_row(tmp_path: Path) -> None:
    (line,) = lines(text_file(tmp_path / "m.csv", "image,prompt\n,walk\n"))
    assert line == {"image": "", "prompt": "walk"}
    assert problem(line)[0] == "image"


def test_csv_unknown_column_is_refused_naming_it(tmp_path: Path) -> None:
    message = refusal(text_file(tmp_path / "m.csv", "image,prompt,colour\na.png,walk,red\n"))
    assert "unknown columns ['colour']" in message


@pytest.mark.parametrize("header", ["image,seeds", "prompt,seeds", "id,steps"])
def test_csv_without_an_image_or_prompt_column_is_refused(tmp_path: Path, header: str) -> None:
    assert "needs the columns image and prompt" in refusal(text_file(tmp_path / "m.csv", f"{header}\na,b\n"))


def test_csv_row_with_more_fields_than_the_header_is_refused_naming_its_row_and_line(tmp_path: Path) -> None:
    path = text_file(tmp_path / "m.csv", 'image,prompt\na.png,"two\nlines"\na.png,run,extra\na.png,jump\n')
    message = refusal(path)
    assert "row 2: line 4: has more fields than the header (2)" in message
    assert "row 1" not in message and "row 3" not in message


# --- Parquet --------------------------------------------------------------------------------------


def test_parquet_rows_with_seeds_as_a_list_and_options_as_a_struct(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["clip-1", None],
            "image": ["a.png", "b.png"],
            "prompt": ["walk", "run"],
            "seeds": [[1, 2], None],
            "options": [{"steps": 20, "video": True}, None],
        }
    )
    scanned = scan(parquet(tmp_path / "m.parquet", table))
    assert [r["row"] for r in scanned_rows(scanned)] == [1, 2]
    first, second = (item_of(r["line"]) for r in scanned_rows(scanned))
    assert (first.id, first.seeds, first.options.steps, first.options.video) == ("clip-1", [1, 2], 20, True)
    assert (second.id, second.image, second.seeds, second.options) == (None, "b.png", None, RowOptions())


def test_parquet_option_columns_become_options(tmp_path: Path) -> None:
    table = pa.table({"image": ["a.png"], "prompt": ["walk"], "num_frames": [17], "guidance": [6.5], "video": [None]})
    assert lines(parquet(tmp_path / "m.parquet", table)) == [
        {"image": "a.png", "prompt": "walk", "options": {"guidance": 6.5, "num_frames": 17}}
    ]


def test_parquet_unknown_column_is_refused_naming_it(tmp_path: Path) -> None:
    table = pa.table({"image": ["a.png"], "prompt": ["walk"], "colour": ["red"]})
    assert "unknown columns ['colour']" in refusal(parquet(tmp_path / "m.parquet", table))


def test_parquet_without_a_prompt_column_is_refused(tmp_path: Path) -> None:
    assert "needs the columns image and prompt" in refusal(parquet(tmp_path / "m.parquet", pa.table({"image": ["a.png"]})))


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    assert "is not a Parquet file" in refusal(text_file(tmp_path / "m.parquet", "image,prompt\na.png,walk\n"))


def test_an_empty_parquet_manifest_is_refused(tmp_path: Path) -> None:
    empty = pa.table({"image": pa.array([], pa.string()), "prompt": pa.array([], pa.string())})
    assert "has no rows" in refusal(parquet(tmp_path / "m.parquet", empty))


# --- malformed manifests: refused as a whole, naming the line and the field -------------------------


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        pytest.param("{not json", "line 2: line: not JSON", id="not-json"),
        pytest.param(json.dumps(["a.png", "walk"]), "line 2: line: must be a JSON object", id="array"),
        pytest.param(json.dumps("a.png"), "line 2: line: must be a JSON object", id="string"),
        pytest.param(json.dumps({"image": "a.png", "prompt": "w", "colour": "red"}), "line 2: colour: unknown key", id="key"),
        pytest.param(
            json.dumps({"image": "a.png", "prompt": "w", "options": {"fps": 8}}),
            "line 2: options.fps: unknown option",
            id="option",
        ),
        pytest.param(json.dumps({"image": "a.png"}), "line 2: prompt: missing", id="no-prompt"),
        pytest.param(json.dumps({"prompt": "walk"}), "line 2: image: missing", id="no-image"),
    ],
)
def test_a_malformed_row_refuses_the_whole_manifest(tmp_path: Path, bad: str, expected: str) -> None:
    path = jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "good"}, bad, {"image": "b.png", "prompt": "good"}])
    message = refusal(path)
    assert expected in message and "nothing was run" in message and "(and maybe more)" not in message
    assert "line 1" not in message and "line 3" not in message
    assert not list((tmp_path / "out" / "manifest").glob("*.parquet"))


def test_every_malformed_row_is_named_up_to_max_reported(tmp_path: Path) -> None:
    few = refusal(jsonl(tmp_path / "few" / "m.jsonl", ["{bad"] * 3))
    assert [n for n in range(1, 4) if f"line {n}:" in few] == [1, 2, 3] and "(and maybe more)" not in few
    many = refusal(jsonl(tmp_path / "many" / "m.jsonl", ["{bad"] * (MAX_REPORTED + 5)))
    named = [n for n in range(1, MAX_REPORTED + 6) if f"line {n}: line: not JSON" in many]
    assert named == list(range(1, MAX_REPORTED + 1)) and "(and maybe more)" in many


def test_a_csv_renamed_jsonl_is_refused(tmp_path: Path) -> None:
    assert "line 1: line: not JSON" in refusal(text_file(tmp_path / "m.jsonl", "image,prompt\na.png,walk\n"))


@pytest.mark.parametrize("name", ["m.txt", "m.json", "m", "m.csv.bak"])
def test_other_suffixes_are_refused(tmp_path: Path, name: str) -> None:
    path = text_file(tmp_path / name, '{"image": "a.png", "prompt": "walk"}\n')
    assert "must be a .jsonl, .csv or .parquet file" in refusal(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert "cannot read" in refusal(tmp_path / "absent.jsonl")


def test_a_folder_named_like_a_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").mkdir()
    assert "cannot read" in refusal(tmp_path / "m.jsonl")


@pytest.mark.parametrize("name", ["m.jsonl", "m.csv"])
def test_non_utf8_bytes_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'image,prompt\n{"image": "a.png", "prompt": "caf\xe9"}\n')
    assert "is not UTF-8 text" in refusal(path)


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("m.jsonl", "", "has no rows"),
        ("m.jsonl", "\n  \n\n", "has no rows"),
        ("m.csv", "", "the header needs the columns image and prompt"),
        ("m.csv", "image,prompt\n", "has no rows"),
    ],
)
def test_an_empty_manifest_is_refused(tmp_path: Path, name: str, text: str, words: str) -> None:
    assert words in refusal(text_file(tmp_path / name, text))


def test_manifest_error_is_an_f2f_error_with_its_code() -> None:
    assert issubclass(ManifestError, F2FError)
    assert ManifestError.code == "invalid_manifest"


# --- values: not the scan's; checked where the item runs --------------------------------------------


@pytest.mark.parametrize(
    ("row", "field"),
    [
        pytest.param({"prompt": ""}, "prompt", id="empty-prompt"),
        pytest.param({"image": ""}, "image", id="empty-image"),
        pytest.param({"image": None}, "image", id="null-image"),
        pytest.param({"mask": ""}, "mask", id="empty-mask"),
        pytest.param({"options": {"steps": 0}}, "options.steps", id="steps-0"),
        pytest.param({"options": {"steps": 1001}}, "options.steps", id="steps-1001"),
        pytest.param({"options": {"steps": "many"}}, "options.steps", id="steps-text"),
        pytest.param({"options": {"guidance": 100}}, "options.guidance", id="guidance-high"),
        pytest.param({"options": {"guidance": 0.5}}, "options.guidance", id="guidance-low"),
        pytest.param({"options": {"num_frames": 1}}, "options.num_frames", id="num_frames"),
        pytest.param({"options": {"video": "maybe"}}, "options.video", id="video"),
        pytest.param({"options": "fast"}, "options", id="options-not-an-object"),
        pytest.param({"seeds": []}, "seeds", id="no-seeds"),
        pytest.param({"seeds": 7}, "seeds", id="seeds-not-a-list"),
        pytest.param({"seeds": [1, "x"]}, "seeds.1", id="seed-text"),
        pytest.param({"id": ""}, "id", id="id-empty"),
        pytest.param({"id": "***"}, "id", id="id-stars"),
        pytest.param({"id": "é"}, "id", id="id-accent"),
        pytest.param({"id": "a/b"}, "id", id="id-slash"),
        pytest.param({"id": "../escape"}, "id", id="id-dots"),
        pytest.param({"id": ".hidden"}, "id", id="id-hidden"),
        pytest.param({"id": "a b"}, "id", id="id-space"),
        pytest.param({"id": "x" * 129}, "id", id="id-129-chars"),
    ],
)
def test_a_bad_value_is_scanned_but_item_of_refuses_it_naming_the_field(tmp_path: Path, row: dict[str, Any], field: str) -> None:
    full = {"image": "a.png", "prompt": "walk", **row}
    scanned = scan(jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "good"}, full]))
    assert scanned.rows == 2
    bad = scanned_rows(scanned)[1]
    with pytest.raises(ValidationError) as caught:
        item_of(bad["line"])
    name, rule = row_problem(caught.value)
    assert name == field and "(got " in rule


def test_row_problem_words_the_first_bad_value() -> None:
    assert problem({"image": "a.png", "prompt": ""}) == ("prompt", "String should have at least 1 character (got '')")
    name, rule = problem({"image": "a.png", "prompt": "walk", "id": "a/b"})
    assert name == "id" and "must be 1-128 letters, digits or ._- and not start with a dot (got 'a/b')" in rule


def test_check_problem_names_the_manifests_field_for_an_edit_setting() -> None:
    assert check_problem(InvalidInput("num_frames", 10, "8k + 1 frames")) == ("options.num_frames", "8k + 1 frames (got 10)")
    assert check_problem(InvalidInput("steps", 0, "at least 1"))[0] == "options.steps"
    assert check_problem(InvalidInput("seeds.0", -1, "at least 0")) == ("seeds.0", "at least 0 (got -1)")
    assert check_problem(InvalidInput("mask", "m.png", "the image's size"))[0] == "mask"


def test_seeds_and_options_are_parsed() -> None:
    options = {"num_frames": 17, "steps": 20, "guidance": 5.5, "video": True}
    item = item_of(json.dumps({"image": "a.png", "prompt": "walk", "seeds": [3, 1], "options": options}))
    assert item.seeds == [3, 1]
    assert item.options == RowOptions(num_frames=17, steps=20, guidance=5.5, video=True)
    settings = item.settings()
    assert (settings.seeds, settings.num_frames, settings.steps, settings.guidance) == ([3, 1], 17, 20, 5.5)


def test_seeds_and_options_default_to_none_and_the_run_settings() -> None:
    item = item_of(json.dumps({"image": "a.png", "prompt": "walk"}))
    assert (item.id, item.mask, item.seeds, item.options) == (None, None, None, RowOptions())
    settings = item.settings()
    assert (settings.seeds, settings.num_frames, settings.steps, settings.guidance) == (None, None, None, None)


def test_a_seed_out_of_the_edits_range_is_invalid_input_from_settings_naming_it() -> None:
    with pytest.raises(InvalidInput) as caught:
        item_of(json.dumps({"image": "a.png", "prompt": "walk", "seeds": [1, 2**32]})).settings()
    assert caught.value.field == "seeds.1" and caught.value.value == 2**32


def test_explicit_ids_are_kept_and_128_allowed_characters_are_enough() -> None:
    for item_id in ("first.take-1", "_second", "x" * 128):
        assert item_of(json.dumps({"id": item_id, "image": "a.png", "prompt": "walk"})).item_id(7) == item_id


def test_default_id_is_the_row_number_and_the_image_stem() -> None:
    assert Row(image="a.png", prompt="walk").item_id(1) == "00001-a"
    assert Row(image="s3://bucket/sub/walk_01.png", prompt="walk").item_id(123) == "00123-walk_01"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("my photo (1).png", "00001-my_photo_1_"),
        ("héllo wörld.png", "00001-h_llo_w_rld"),
        (".hidden.png", "00001-hidden"),
        ("..png", "00001-image"),
        pytest.param("x" * 150 + ".png", "00001-" + "x" * 100, id="long-stem"),
    ],
)
def test_default_id_replaces_unsafe_characters_of_the_stem(name: str, expected: str) -> None:
    item_id = Row(image=f"sub/{name}", prompt="walk").item_id(1)
    assert item_id == expected and ITEM_ID.fullmatch(item_id)


def test_a_mask_is_a_row_field_in_jsonl_and_csv(tmp_path: Path) -> None:
    assert items(jsonl(tmp_path / "j" / "m.jsonl", [{"image": "a.png", "prompt": "walk", "mask": "a-mask.png"}]))[0].mask == (
        "a-mask.png"
    )
    assert items(text_file(tmp_path / "c" / "m.csv", "image,prompt,mask\na.png,walk,a-mask.png\n"))[0].mask == "a-mask.png"


# --- keys -------------------------------------------------------------------------------------------


def test_keys_are_the_same_on_every_rescan(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "walk"}, {"image": "b.png", "prompt": "run"}])
    first = [r["key"] for r in scanned_rows(scan(path, into=tmp_path / "one"))]
    again = [r["key"] for r in scanned_rows(scan(path, into=tmp_path / "two"))]
    assert first == again and len(set(first)) == 2


def test_a_key_depends_on_the_rows_contents_not_on_how_the_line_is_written(tmp_path: Path) -> None:
    spaced = text_file(tmp_path / "a" / "m.jsonl", '{ "prompt" : "walk",   "image": "a.png" }\n')
    compact = text_file(tmp_path / "b" / "m.jsonl", '{"image":"a.png","prompt":"walk"}\n')
    assert scanned_rows(scan(spaced))[0]["key"] == scanned_rows(scan(compact))[0]["key"]


def test_a_key_is_the_same_in_another_manifest_with_the_same_row_at_the_same_number(tmp_path: Path) -> None:
    row = {"image": "a.png", "prompt": "walk"}
    first = jsonl(tmp_path / "a" / "first.jsonl", [{"image": "x.png", "prompt": "x"}, row])
    second = jsonl(tmp_path / "b" / "second.jsonl", [{"image": "y.png", "prompt": "y"}, row, row])
    assert scanned_rows(scan(first))[1]["key"] == scanned_rows(scan(second))[1]["key"]


ROW = {"image": "a.png", "prompt": "walk"}


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"prompt": "run"}, id="prompt"),
        pytest.param({"image": "b.png"}, id="image"),
        pytest.param({"id": "named"}, id="id"),
        pytest.param({"mask": "a-mask.png"}, id="mask"),
        pytest.param({"seeds": [1]}, id="seeds"),
        pytest.param({"options": {"num_frames": 17}}, id="num_frames"),
        pytest.param({"options": {"steps": 10}}, id="steps"),
        pytest.param({"options": {"guidance": 5.0}}, id="guidance"),
        pytest.param({"options": {"video": True}}, id="video"),
    ],
)
def test_a_key_changes_with_the_rows_contents(tmp_path: Path, changed: dict[str, Any]) -> None:
    assert key_of(tmp_path, {**ROW, **changed}) != key_of(tmp_path, ROW)


def test_a_key_changes_with_the_rows_number(tmp_path: Path) -> None:
    assert key_of(tmp_path, ROW, before=1) != key_of(tmp_path, ROW)


@pytest.mark.parametrize("settings", [{**SETTINGS, "model": "m-2"}, {**SETTINGS, "extra": None}, {"model": "m-1"}, {}])
def test_a_key_changes_with_the_run_settings(tmp_path: Path, settings: dict[str, Any]) -> None:
    assert key_of(tmp_path, ROW, settings) != key_of(tmp_path, ROW)


def test_a_key_does_not_depend_on_the_order_of_the_settings(tmp_path: Path) -> None:
    assert key_of(tmp_path, ROW, dict(reversed(list(SETTINGS.items())))) == key_of(tmp_path, ROW)


def test_a_key_changes_with_a_run_setting_that_changes_the_edit(tmp_path: Path) -> None:
    from f2f.bulk.run import run_settings

    tiny = load_config(None, {"profile": "tiny"})
    fewer_steps = tiny.model_copy(update={"video": tiny.video.model_copy(update={"num_inference_steps": 1})})
    other_seed = tiny.model_copy(update={"seed": 7})
    keys = {key_of(tmp_path, ROW, run_settings(config)) for config in (tiny, fewer_steps, other_seed)}
    assert len(keys) == 3
    same = load_config(None, {"profile": "tiny"})
    assert key_of(tmp_path, ROW, run_settings(same)) == key_of(tmp_path, ROW, run_settings(tiny))


# --- PosEdit --------------------------------------------------------------------------------------


def test_posedit_instruction_rows(posedit_folder: Path) -> None:
    assert posedit_manifest(posedit_folder, text="instruction") == [
        {"id": "a1_s1", "image": str(posedit_folder / "src_images" / "a1_s1.png"), "prompt": "Raise both arms"},
        {"id": "a2_s3", "image": str(posedit_folder / "src_images" / "a2_s3.png"), "prompt": "Sit down"},
    ]


def test_posedit_default_text_is_the_instruction(posedit_folder: Path) -> None:
    assert [row["prompt"] for row in posedit_manifest(posedit_folder)] == ["Raise both arms", "Sit down"]


def test_posedit_target_rows_use_the_target_captions(posedit_folder: Path) -> None:
    rows = posedit_manifest(posedit_folder, text="target")
    assert [(row["id"], row["prompt"]) for row in rows] == [
        ("a1_s1", "A person with raised arms."),
        ("a2_s3", "A person sitting."),
    ]


def test_posedit_rows_scan_as_a_manifest(tmp_path: Path, posedit_folder: Path) -> None:
    scanned = items(jsonl(tmp_path / "out" / "posedit.jsonl", posedit_manifest(posedit_folder)))
    assert [(item.id, item.image) for item in scanned] == [
        ("a1_s1", str(posedit_folder / "src_images" / "a1_s1.png")),
        ("a2_s3", str(posedit_folder / "src_images" / "a2_s3.png")),
    ]


def test_posedit_unknown_text_is_invalid_input_on_text(posedit_folder: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        posedit_manifest(posedit_folder, text="caption")
    assert (caught.value.field, caught.value.value) == ("text", "caption")


def test_posedit_folder_without_annotations_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"annotations\.json"):
        posedit_manifest(tmp_path)


@pytest.mark.parametrize("text", ["{not json", '{"image": "a.png"}', '[{"image": "a.png"}]'])
def test_posedit_annotations_that_are_not_a_list_of_entries_are_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "annotations.json").write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=r"annotations\.json"):
        posedit_manifest(tmp_path)


@pytest.mark.skipif(not (POSEDIT / "annotations.json").is_file(), reason=f"no PosEdit data at {POSEDIT}")
def test_real_posedit_gives_58_rows_that_scan_with_distinct_ids(tmp_path: Path) -> None:
    rows = posedit_manifest(POSEDIT)
    assert len(rows) == 58 and all(Path(row["image"]).is_file() for row in rows)
    scanned = items(jsonl(tmp_path / "posedit.jsonl", rows))
    assert len({item.id for item in scanned}) == 58
