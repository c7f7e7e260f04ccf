"""f2f.bulk.manifest: JSONL and CSV manifests (rows, row errors, fatal errors), Item.key and the PosEdit layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from f2f.bulk.manifest import ITEM_ID, Item, ManifestError, RowError, RowOptions, posedit_manifest, read_manifest
from f2f.config import F2FConfig, load_config
from f2f.errors import F2FError, InvalidImage, InvalidInput
from f2f.imageio import open_image

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


def csv_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def only_error(path: Path) -> RowError:
    manifest = read_manifest(path)
    assert len(manifest.errors) == 1, manifest.errors
    return manifest.errors[0]


def one_row_error(tmp_path: Path, row: dict[str, Any]) -> RowError:
    """The error of a bad row placed after a good one; the good row must still come back."""
    png(tmp_path / "a.png")
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "good"}, row]))
    assert [item.row for item in manifest.items] == [1]
    assert len(manifest.errors) == 1, manifest.errors
    assert manifest.errors[0].row == 2
    return manifest.errors[0]


def item_for(tmp_path: Path, name: str = "a.png", color: str = "red", **row: Any) -> Item:
    """The one item of a one-row JSONL manifest in its own folder."""
    folder = tmp_path / f"m-{len(list(tmp_path.iterdir()))}"
    png(folder / name, color)
    manifest = read_manifest(jsonl(folder / "m.jsonl", [{"image": name, "prompt": "walk", **row}]))
    assert manifest.errors == []
    return manifest.items[0]


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


# --- JSONL rows -----------------------------------------------------------------------------------


def test_jsonl_rows_become_items_with_images_relative_to_the_manifest_folder(tmp_path: Path) -> None:
    png(tmp_path / "m" / "a.png", "red")
    png(tmp_path / "m" / "sub" / "b.png", "blue")
    path = jsonl(tmp_path / "m" / "list.jsonl", [{"image": "a.png", "prompt": "walk"}, {"image": "sub/b.png", "prompt": "run"}])
    manifest = read_manifest(path)
    assert manifest.errors == []
    assert [(i.image, i.prompt) for i in manifest.items] == [(tmp_path / "m/a.png", "walk"), (tmp_path / "m/sub/b.png", "run")]
    assert manifest.path == path


def test_relative_images_do_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png(tmp_path / "m" / "a.png")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    manifest = read_manifest(jsonl(tmp_path / "m" / "list.jsonl", [{"image": "a.png", "prompt": "walk"}]))
    assert manifest.errors == []
    assert manifest.items[0].image == tmp_path / "m" / "a.png"


def test_item_image_sha256_is_the_hash_of_the_file_bytes(tmp_path: Path) -> None:
    image = png(tmp_path / "a.png")
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "walk"}]))
    assert manifest.items[0].image_sha256 == hashlib.sha256(image.read_bytes()).hexdigest()


def test_jsonl_blank_lines_are_skipped_and_rows_are_1_based_line_numbers(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", "blue")
    row_a, row_b = json.dumps({"image": "a.png", "prompt": "walk"}), json.dumps({"image": "b.png", "prompt": "run"})
    path = tmp_path / "m.jsonl"
    path.write_text(f"{row_a}\n\n   \n{row_b}\n\n", encoding="utf-8")
    manifest = read_manifest(path)
    assert manifest.errors == []
    assert [item.row for item in manifest.items] == [1, 4]


def test_jsonl_error_rows_are_line_numbers_counting_blank_lines(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"image": "a.png", "prompt": "walk"}) + "\n\n{broken\n", encoding="utf-8")
    assert only_error(path).row == 3


def test_ndjson_suffix_and_upper_case_suffix_are_jsonl(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    for name in ("m.ndjson", "M.JSONL"):
        manifest = read_manifest(jsonl(tmp_path / name, [{"image": "a.png", "prompt": "walk"}]))
        assert [item.prompt for item in manifest.items] == ["walk"]


def test_input_root_is_where_relative_images_are_found(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png")
    path = jsonl(tmp_path / "manifests" / "m.jsonl", [{"image": "a.png", "prompt": "walk"}])
    manifest = read_manifest(path, input_root=tmp_path / "images")
    assert manifest.errors == []
    assert manifest.items[0].image == tmp_path / "images" / "a.png"


def test_without_input_root_an_image_beside_input_root_is_not_found(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png")
    path = jsonl(tmp_path / "manifests" / "m.jsonl", [{"image": "a.png", "prompt": "walk"}])
    error = only_error(path)
    assert (error.row, error.field) == (1, "image")


def test_absolute_image_paths_are_used_as_they_are(tmp_path: Path) -> None:
    image = png(tmp_path / "elsewhere" / "a.png")
    path = jsonl(tmp_path / "m" / "m.jsonl", [{"image": str(image), "prompt": "walk"}])
    manifest = read_manifest(path, input_root=tmp_path / "not-used")
    assert manifest.errors == []
    assert manifest.items[0].image == image


def test_default_id_is_the_row_number_and_the_image_stem(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "walk_01.png", "blue")
    rows: list[Any] = [{"image": "a.png", "prompt": "walk"}, "", {"image": "walk_01.png", "prompt": "run"}]
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", rows))
    assert [item.id for item in manifest.items] == ["00001-a", "00003-walk_01"]


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
def test_default_id_replaces_unsafe_characters_of_the_stem(tmp_path: Path, name: str, expected: str) -> None:
    png(tmp_path / name)
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"image": name, "prompt": "walk"}]))
    assert manifest.errors == []
    assert manifest.items[0].id == expected
    assert ITEM_ID.fullmatch(manifest.items[0].id)


def test_explicit_ids_are_kept(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    rows = [{"id": "first.take-1", "image": "a.png", "prompt": "walk"}, {"id": "_second", "image": "a.png", "prompt": "run"}]
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", rows))
    assert manifest.errors == []
    assert [item.id for item in manifest.items] == ["first.take-1", "_second"]


def test_seeds_and_options_are_parsed(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    options = {"num_frames": 17, "steps": 20, "guidance": 5.5, "video": True}
    row = {"image": "a.png", "prompt": "walk", "seeds": [3, 1], "options": options}
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [row]))
    item = manifest.items[0]
    assert item.seeds == [3, 1]
    assert item.options == RowOptions(num_frames=17, steps=20, guidance=5.5, video=True)


def test_seeds_and_options_default_to_none_and_the_run_settings(tmp_path: Path) -> None:
    item = item_for(tmp_path)
    assert item.seeds is None
    assert item.options == RowOptions(num_frames=None, steps=None, guidance=None, video=False)


# --- CSV rows -------------------------------------------------------------------------------------


def test_csv_rows_become_items_with_seeds_and_options(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = csv_file(tmp_path / "m.csv", "id,image,prompt,seeds,steps,video\nclip-1,a.png,walk left,1;2,20,true\n")
    manifest = read_manifest(path)
    assert manifest.errors == []
    item = manifest.items[0]
    assert (item.row, item.id, item.image, item.prompt, item.seeds) == (1, "clip-1", tmp_path / "a.png", "walk left", [1, 2])
    assert item.options == RowOptions(steps=20, video=True)


def test_csv_every_option_column_becomes_an_option(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = csv_file(tmp_path / "m.csv", "image,prompt,num_frames,steps,guidance,video\na.png,walk,17,30,6.5,1\n")
    assert read_manifest(path).items[0].options == RowOptions(num_frames=17, steps=30, guidance=6.5, video=True)


def test_csv_seeds_may_be_separated_by_semicolons_or_spaces(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = csv_file(tmp_path / "m.csv", "image,prompt,seeds\na.png,walk, 5 ; 6;7 \n")
    assert read_manifest(path).items[0].seeds == [5, 6, 7]


def test_csv_empty_cells_are_ignored(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = csv_file(tmp_path / "m.csv", "id,image,prompt,seeds,num_frames,steps,guidance,video\n,a.png,walk,,,,,\n")
    manifest = read_manifest(path)
    assert manifest.errors == []
    item = manifest.items[0]
    assert (item.id, item.seeds, item.options) == ("00001-a", None, RowOptions())


def test_csv_header_is_row_0_so_the_first_data_row_is_row_1(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", "blue")
    manifest = read_manifest(csv_file(tmp_path / "m.csv", "image,prompt\na.png,walk\nb.png,run\n"))
    assert [(item.row, item.id) for item in manifest.items] == [(1, "00001-a"), (2, "00002-b")]


def test_csv_with_a_utf8_bom_reads_its_header(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfimage,prompt\r\na.png,walk\r\n")
    manifest = read_manifest(path)
    assert [item.prompt for item in manifest.items] == ["walk"]


def test_csv_quoted_cells_may_hold_commas(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    manifest = read_manifest(csv_file(tmp_path / "m.csv", 'image,prompt\na.png,"walk, then run"\n'))
    assert manifest.items[0].prompt == "walk, then run"


def test_csv_unknown_column_is_fatal_and_named(tmp_path: Path) -> None:
    path = csv_file(tmp_path / "m.csv", "image,prompt,colour\na.png,walk,red\n")
    with pytest.raises(ManifestError, match="colour"):
        read_manifest(path)


@pytest.mark.parametrize("header", ["image,seeds", "prompt,seeds", "id,steps"])
def test_csv_without_image_or_prompt_column_is_fatal(tmp_path: Path, header: str) -> None:
    path = csv_file(tmp_path / "m.csv", f"{header}\na,b\n")
    with pytest.raises(ManifestError, match="needs the columns image and prompt"):
        read_manifest(path)


def test_csv_row_with_more_fields_than_the_header_is_a_row_error(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    manifest = read_manifest(csv_file(tmp_path / "m.csv", "image,prompt\na.png,walk\na.png,run,extra\na.png,jump\n"))
    assert [item.row for item in manifest.items] == [1, 3]
    assert len(manifest.errors) == 1
    error = manifest.errors[0]
    assert (error.row, error.field) == (2, "line")
    assert "more fields than the header (2)" in error.message


def test_csv_bad_option_value_is_a_row_error_on_the_option(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    error = only_error(csv_file(tmp_path / "m.csv", "image,prompt,steps\na.png,walk,zero\n"))
    assert (error.row, error.field) == (1, "options.steps")


def test_csv_non_integer_seed_is_a_row_error_on_that_seed(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    error = only_error(csv_file(tmp_path / "m.csv", "image,prompt,seeds\na.png,walk,1;x\n"))
    assert (error.row, error.field) == (1, "seeds.1")


def test_csv_row_missing_its_image_cell_is_a_row_error(tmp_path: Path) -> None:
    error = only_error(csv_file(tmp_path / "m.csv", "image,prompt\n,walk\n"))
    assert (error.row, error.field) == (1, "image")


# --- fatal errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.txt", "m.json", "m", "m.csv.bak"])
def test_other_suffixes_are_fatal(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text('{"image": "a.png", "prompt": "walk"}\n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"must be a \.jsonl or \.csv"):
        read_manifest(path)


def test_manifest_error_is_an_f2f_error_with_its_code() -> None:
    assert issubclass(ManifestError, F2FError)
    assert ManifestError.code == "invalid_manifest"


def test_a_missing_file_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "absent.jsonl")


def test_a_folder_named_like_a_manifest_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").mkdir()
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "m.jsonl")


@pytest.mark.parametrize("name", ["m.jsonl", "m.csv"])
def test_non_utf8_bytes_are_fatal(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'{"image": "a.png", "prompt": "caf\xe9"}\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(path)


def test_a_csv_renamed_jsonl_is_fatal(tmp_path: Path) -> None:
    path = csv_file(tmp_path / "m.jsonl", "image,prompt\na.png,walk\nb.png,run\n")
    with pytest.raises(ManifestError, match="not JSONL"):
        read_manifest(path)


def test_a_jsonl_of_arrays_only_is_fatal(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", [["a.png", "walk"], ["b.png", "run"]])
    with pytest.raises(ManifestError, match="not JSONL"):
        read_manifest(path)


def test_a_jsonl_of_objects_that_are_all_bad_rows_is_not_fatal(tmp_path: Path) -> None:
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"prompt": "walk"}, {"prompt": "run"}]))
    assert manifest.items == []
    assert [(e.row, e.field) for e in manifest.errors] == [(1, "image"), (2, "image")]


@pytest.mark.parametrize(("name", "text"), [("m.jsonl", ""), ("m.jsonl", "\n  \n\n"), ("m.csv", ""), ("m.csv", "image,prompt\n")])
def test_an_empty_manifest_is_fatal(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError):
        read_manifest(path)


# --- row errors -----------------------------------------------------------------------------------


def test_a_line_that_is_not_json_is_a_row_error(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "walk"}, "{not json"]))
    assert [item.row for item in manifest.items] == [1]
    error = manifest.errors[0]
    assert (error.row, error.field) == (2, "line")
    assert error.message.startswith("not JSON")


def test_a_json_array_line_is_a_row_error(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [["a.png", "walk"], {"image": "a.png", "prompt": "walk"}]))
    assert [item.row for item in manifest.items] == [2]
    assert [(e.row, e.field, e.message) for e in manifest.errors] == [(1, "line", "must be a JSON object")]


def test_missing_prompt_is_a_row_error(tmp_path: Path) -> None:
    error = one_row_error(tmp_path, {"image": "a.png"})
    assert error.field == "prompt"
    assert "required" in error.message.lower()


def test_empty_prompt_is_a_row_error(tmp_path: Path) -> None:
    error = one_row_error(tmp_path, {"image": "a.png", "prompt": ""})
    assert error.field == "prompt"
    assert "got ''" in error.message


def test_unknown_key_is_a_row_error_naming_it(tmp_path: Path) -> None:
    error = one_row_error(tmp_path, {"image": "a.png", "prompt": "walk", "colour": "red"})
    assert error.field == "colour"
    assert error.message.startswith("unknown key")


def test_unknown_option_key_is_a_row_error_naming_it(tmp_path: Path) -> None:
    error = one_row_error(tmp_path, {"image": "a.png", "prompt": "walk", "options": {"fps": 8}})
    assert error.field == "options.fps"
    assert error.message.startswith("unknown key")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"steps": 0}, "options.steps"),
        ({"steps": 1001}, "options.steps"),
        ({"guidance": 100}, "options.guidance"),
        ({"guidance": 0.5}, "options.guidance"),
        ({"num_frames": 1}, "options.num_frames"),
        ({"video": "maybe"}, "options.video"),
        ({"steps": "many"}, "options.steps"),
    ],
)
def test_bad_option_values_are_row_errors(tmp_path: Path, options: dict[str, Any], field: str) -> None:
    error = one_row_error(tmp_path, {"image": "a.png", "prompt": "walk", "options": options})
    assert error.field == field


def test_empty_seeds_is_a_row_error(tmp_path: Path) -> None:
    assert one_row_error(tmp_path, {"image": "a.png", "prompt": "walk", "seeds": []}).field == "seeds"


def test_non_integer_seed_is_a_row_error_on_that_seed(tmp_path: Path) -> None:
    assert one_row_error(tmp_path, {"image": "a.png", "prompt": "walk", "seeds": [1, "x"]}).field == "seeds.1"


def test_seeds_that_are_not_a_list_are_a_row_error(tmp_path: Path) -> None:
    assert one_row_error(tmp_path, {"image": "a.png", "prompt": "walk", "seeds": 7}).field == "seeds"


@pytest.mark.parametrize("bad_id", ["", "***", "/", "é"])
def test_id_with_no_allowed_characters_is_a_row_error(tmp_path: Path, bad_id: str) -> None:
    assert one_row_error(tmp_path, {"id": bad_id, "image": "a.png", "prompt": "walk"}).field == "id"


@pytest.mark.parametrize("bad_id", ["a/b", "../escape", ".hidden", "a b", pytest.param("x" * 129, id="129-chars")])
def test_id_breaking_the_id_rule_is_a_row_error(tmp_path: Path, bad_id: str) -> None:
    assert one_row_error(tmp_path, {"id": bad_id, "image": "a.png", "prompt": "walk"}).field == "id"


def test_id_of_128_allowed_characters_is_kept(tmp_path: Path) -> None:
    assert item_for(tmp_path, id="x" * 128).id == "x" * 128


def test_missing_image_file_is_a_row_error(tmp_path: Path) -> None:
    error = one_row_error(tmp_path, {"image": "absent.png", "prompt": "walk"})
    assert error.field == "image"
    assert "cannot read" in error.message
    assert str(tmp_path / "absent.png") in error.message


def test_image_that_is_a_folder_is_a_row_error(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    error = one_row_error(tmp_path, {"image": "folder.png", "prompt": "walk"})
    assert (error.field, error.message.startswith("cannot read")) == ("image", True)


def test_a_duplicate_id_makes_the_second_row_bad(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    rows = [
        {"id": "clip", "image": "a.png", "prompt": "walk"},
        {"id": "other", "image": "a.png", "prompt": "run"},
        {"id": "clip", "image": "a.png", "prompt": "jump"},
    ]
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", rows))
    assert [(item.row, item.prompt) for item in manifest.items] == [(1, "walk"), (2, "run")]
    assert len(manifest.errors) == 1
    error = manifest.errors[0]
    assert (error.row, error.field) == (3, "id")
    assert "row 1" in error.message and "'clip'" in error.message


def test_an_explicit_id_equal_to_an_earlier_default_id_is_a_duplicate(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    rows = [{"image": "a.png", "prompt": "walk"}, {"id": "00001-a", "image": "a.png", "prompt": "run"}]
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", rows))
    assert [(e.row, e.field) for e in manifest.errors] == [(2, "id")]


def test_a_bad_row_does_not_claim_its_id(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    rows = [{"id": "clip", "image": "absent.png", "prompt": "walk"}, {"id": "clip", "image": "a.png", "prompt": "run"}]
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", rows))
    assert [(item.row, item.id) for item in manifest.items] == [(2, "clip")]
    assert [(e.row, e.field) for e in manifest.errors] == [(1, "image")]


def test_row_error_str_is_row_field_message() -> None:
    assert str(RowError(7, "options.steps", "too small")) == "row 7: options.steps: too small"


def test_jsonl_prompt_with_a_unicode_line_separator_is_one_row(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"image": "a.png", "prompt": "walk\u2028then run"}, ensure_ascii=False) + "\n", encoding="utf-8")
    manifest = read_manifest(path)
    assert manifest.errors == []
    assert [(item.row, item.prompt) for item in manifest.items] == [(1, "walk\u2028then run")]


def test_csv_quoted_multi_line_prompt_keeps_its_line_break(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    manifest = read_manifest(csv_file(tmp_path / "m.csv", 'image,prompt\na.png,"line one\nline two"\n'))
    assert manifest.items[0].prompt == "line one\nline two"


# --- Item.key and Manifest.sha256 -----------------------------------------------------------------


def test_key_is_the_same_for_the_same_image_content_under_another_name_id_and_row(tmp_path: Path) -> None:
    first = item_for(tmp_path, "a.png", "red", id="first")
    png(tmp_path / "other" / "b.png", "red")
    rows = [{"image": "b.png", "prompt": "x"}, {"id": "second", "image": "b.png", "prompt": "walk"}]
    manifest = read_manifest(jsonl(tmp_path / "other" / "m.jsonl", rows))
    second = manifest.items[1]
    assert (second.id, second.row, second.image.name) == ("second", 2, "b.png")
    assert second.key(SETTINGS) == first.key(SETTINGS)


@pytest.mark.parametrize(
    ("base", "changed"),
    [
        pytest.param({}, {"prompt": "run"}, id="prompt"),
        pytest.param({}, {"seeds": [1]}, id="seeds-given"),
        pytest.param({"seeds": [1]}, {"seeds": [2]}, id="seeds-other"),
        pytest.param({"seeds": [1]}, {"seeds": [1, 2]}, id="seeds-more"),
        pytest.param({}, {"options": {"num_frames": 17}}, id="num_frames"),
        pytest.param({}, {"options": {"steps": 10}}, id="steps"),
        pytest.param({}, {"options": {"guidance": 5.0}}, id="guidance"),
        pytest.param({}, {"options": {"video": True}}, id="video"),
    ],
)
def test_key_changes_with_prompt_seeds_and_options(tmp_path: Path, base: dict[str, Any], changed: dict[str, Any]) -> None:
    assert item_for(tmp_path, **changed).key(SETTINGS) != item_for(tmp_path, **base).key(SETTINGS)


def test_key_is_the_same_for_options_given_as_their_defaults(tmp_path: Path) -> None:
    explicit = item_for(tmp_path, options={"num_frames": None, "steps": None, "guidance": None, "video": False})
    assert explicit.key(SETTINGS) == item_for(tmp_path).key(SETTINGS)


@pytest.mark.parametrize(
    "settings",
    [{**SETTINGS, "model": "m-2"}, {**SETTINGS, "extra": None}, {"model": "m-1"}, {}],
)
def test_key_changes_with_the_settings(tmp_path: Path, settings: dict[str, Any]) -> None:
    item = item_for(tmp_path)
    assert item.key(settings) != item.key(SETTINGS)


def test_key_does_not_depend_on_the_order_of_the_settings(tmp_path: Path) -> None:
    item = item_for(tmp_path)
    assert item.key(dict(reversed(list(SETTINGS.items())))) == item.key(SETTINGS)


def test_key_changes_with_the_image_bytes(tmp_path: Path) -> None:
    assert item_for(tmp_path, color="red").key(SETTINGS) != item_for(tmp_path, color="blue").key(SETTINGS)


def test_key_is_32_hex_characters(tmp_path: Path) -> None:
    key = item_for(tmp_path).key(SETTINGS)
    assert len(key) == 32 and int(key, 16) >= 0


def test_manifest_sha256_is_the_hash_of_the_file_bytes(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "walk"}])
    assert read_manifest(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_sha256_changes_when_the_bytes_change(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    path = jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "walk"}])
    before = read_manifest(path).sha256
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    after = read_manifest(path)
    assert [item.prompt for item in after.items] == ["walk"]
    assert after.sha256 != before


# --- PosEdit --------------------------------------------------------------------------------------


def test_posedit_instruction_rows(posedit_folder: Path) -> None:
    rows = posedit_manifest(posedit_folder, text="instruction")
    assert rows == [
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


def test_posedit_rows_read_back_as_a_manifest(tmp_path: Path, posedit_folder: Path) -> None:
    manifest = read_manifest(jsonl(tmp_path / "out" / "posedit.jsonl", posedit_manifest(posedit_folder)))
    assert manifest.errors == []
    assert [(item.id, item.image) for item in manifest.items] == [
        ("a1_s1", posedit_folder / "src_images" / "a1_s1.png"),
        ("a2_s3", posedit_folder / "src_images" / "a2_s3.png"),
    ]


def test_posedit_unknown_text_is_invalid_input_on_text(posedit_folder: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        posedit_manifest(posedit_folder, text="caption")
    assert caught.value.field == "text"
    assert caught.value.value == "caption"


def test_posedit_folder_without_annotations_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"annotations\.json"):
        posedit_manifest(tmp_path)


def test_posedit_annotations_that_are_not_json_are_fatal(tmp_path: Path) -> None:
    (tmp_path / "annotations.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"annotations\.json"):
        posedit_manifest(tmp_path)


@pytest.mark.skipif(not (POSEDIT / "annotations.json").is_file(), reason=f"no PosEdit data at {POSEDIT}")
def test_real_posedit_gives_58_rows_that_read_back_without_errors(tmp_path: Path) -> None:
    rows = posedit_manifest(POSEDIT)
    assert len(rows) == 58
    assert all(Path(row["image"]).is_file() for row in rows)
    manifest = read_manifest(jsonl(tmp_path / "posedit.jsonl", rows))
    assert manifest.errors == []
    assert len(manifest.items) == 58
    assert len({item.id for item in manifest.items}) == 58


# --- masks ----------------------------------------------------------------------------------------


def test_a_mask_column_is_a_file_beside_the_image_and_part_of_the_items_key(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    png(folder / "a.png")
    Image.new("L", (8, 8), 255).save(folder / "a-mask.png")
    rows = [
        {"id": "masked", "image": "a.png", "prompt": "walk", "mask": "a-mask.png"},
        {"id": "whole", "image": "a.png", "prompt": "walk"},
    ]
    masked, whole = read_manifest(jsonl(folder / "m.jsonl", rows)).items
    assert masked.mask == folder / "a-mask.png" and whole.mask is None
    assert masked.mask_sha256 == hashlib.sha256((folder / "a-mask.png").read_bytes()).hexdigest()
    assert masked.key({}) != whole.key({})  # the same image edited with and without a mask is other work
    csv = read_manifest(csv_file(folder / "m.csv", "image,prompt,mask\na.png,walk,a-mask.png\n"))
    assert csv.errors == [] and csv.items[0].mask == folder / "a-mask.png"


def test_a_mask_that_cannot_be_read_is_a_row_error_naming_mask(tmp_path: Path) -> None:
    error = one_row_error(tmp_path, {"image": "a.png", "prompt": "walk", "mask": "missing.png"})
    assert error.field == "mask" and "cannot read" in error.message


# --- rows checked by the edit's own rules, given the run's config -----------------------------------

TINY = load_config(None, {"profile": "tiny"})  # a cogvideox-style profile: 8k + 1 frames, PNG, JPEG and WebP


def checked_error(tmp_path: Path, row: dict[str, Any], config: F2FConfig = TINY) -> RowError:
    """The error of a bad row placed after a good one, read with the run's config; the good row still comes back."""
    png(tmp_path / "a.png")
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "good"}, row]), config=config)
    assert [item.row for item in manifest.items] == [1]
    assert len(manifest.errors) == 1, manifest.errors
    assert manifest.errors[0].row == 2
    return manifest.errors[0]


@pytest.mark.parametrize(("seeds", "field"), [([-1], "seeds.0"), ([1, 2**32], "seeds.1")])
def test_a_seed_out_of_the_edits_range_is_a_row_error_naming_it(tmp_path: Path, seeds: list[int], field: str) -> None:
    error = checked_error(tmp_path, {"image": "a.png", "prompt": "walk", "seeds": seeds})
    assert error.field == field and f"(got {seeds[-1]})" in error.message
    assert str(error).startswith(f"row 2: {field}: Input should be")


def test_num_frames_off_the_profiles_frame_rule_is_a_row_error_naming_the_option(tmp_path: Path) -> None:
    error = checked_error(tmp_path, {"image": "a.png", "prompt": "walk", "options": {"num_frames": 10}})
    assert error.field == "options.num_frames"
    assert "8k + 1 frames (9, 17, 25" in error.message and error.message.endswith("(got 10)")


def test_options_within_the_profiles_rules_and_seeds_within_range_pass(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    row = {"image": "a.png", "prompt": "walk", "seeds": [0, 2**32 - 1], "options": {"num_frames": 17, "steps": 3}}
    assert read_manifest(jsonl(tmp_path / "m.jsonl", [row]), config=TINY).errors == []


def test_a_prompt_of_spaces_is_a_row_error_on_prompt(tmp_path: Path) -> None:
    error = checked_error(tmp_path, {"image": "a.png", "prompt": "   "})
    assert error.field == "prompt" and "must not be empty" in error.message


def test_a_text_file_given_as_the_image_is_a_row_error_naming_its_path(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image\n")
    error = checked_error(tmp_path, {"image": "notes.png", "prompt": "walk"})
    assert error.field == "image" and error.message == f"not a readable image (got {str(tmp_path / 'notes.png')!r})"


def test_an_image_of_a_format_the_run_refuses_is_a_row_error(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.bmp")
    error = checked_error(tmp_path, {"image": "a.bmp", "prompt": "walk"})
    assert error.field == "image" and "format BMP is not accepted" in error.message


def test_an_image_over_the_runs_pixel_limit_is_a_row_error(tmp_path: Path) -> None:
    config = TINY.model_copy(update={"input": TINY.input.model_copy(update={"max_image_pixels": 60})})
    png(tmp_path / "a.png")  # 8x8 = 64 pixels, and the good row's too: both rows are bad
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "prompt": "walk"}]), config=config)
    assert [(e.row, e.field) for e in manifest.errors] == [(1, "image")] and "input.max_image_pixels" in manifest.errors[
        0
    ].message


def test_the_image_is_checked_up_to_its_header_only(tmp_path: Path) -> None:
    """A body corrupt behind a good header is found when the edit decodes it: images are decoded once."""
    noise = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # a good header, half the pixels
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        open_image(tmp_path / "cut.png")  # what the edit finds when it decodes it
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", [{"image": "cut.png", "prompt": "walk"}]), config=TINY)
    assert manifest.errors == [] and len(manifest.items) == 1


def test_a_mask_of_another_size_than_the_image_is_a_row_error(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 255).save(tmp_path / "small-mask.png")
    error = checked_error(tmp_path, {"image": "a.png", "prompt": "walk", "mask": "small-mask.png"})
    assert error.field == "mask" and "must be the image's size, 8x8" in error.message


def test_a_mask_that_is_not_an_image_is_a_row_error(tmp_path: Path) -> None:
    (tmp_path / "mask.png").write_text("not a mask\n")
    error = checked_error(tmp_path, {"image": "a.png", "prompt": "walk", "mask": "mask.png"})
    assert error.field == "mask" and "PNG, WebP or TIFF" in error.message


def test_a_mask_marking_nothing_is_a_row_error(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    error = checked_error(tmp_path, {"image": "a.png", "prompt": "walk", "mask": "black.png"})
    assert error.field == "mask" and "marks nothing to edit" in error.message


def test_a_mask_is_checked_against_the_upright_image(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 8x4, shown turned a quarter: 4x8
    Image.new("RGB", (8, 4), "red").save(tmp_path / "turned.jpg", exif=exif)
    mask = Image.new("L", (4, 8), 0)
    mask.paste(255, (0, 0, 4, 4))
    mask.save(tmp_path / "upright-mask.png")
    png(tmp_path / "a.png")
    row = {"image": "turned.jpg", "prompt": "walk", "mask": "upright-mask.png"}
    assert read_manifest(jsonl(tmp_path / "m.jsonl", [row]), config=TINY).errors == []


def test_a_row_the_edits_rules_refuse_does_not_claim_its_id(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    rows = [{"id": "x", "image": "a.png", "prompt": "walk", "seeds": [-1]}, {"id": "x", "image": "a.png", "prompt": "run"}]
    manifest = read_manifest(jsonl(tmp_path / "m.jsonl", rows), config=TINY)
    assert [(e.row, e.field) for e in manifest.errors] == [(1, "seeds.0")] and [i.row for i in manifest.items] == [2]
