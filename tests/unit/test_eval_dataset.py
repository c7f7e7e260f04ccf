"""f2f eval's dataset layouts (PosEdit, TEdBench, bulk runs, manifests) and how edits are matched to items (no torch)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from f2f.errors import InvalidInput
from f2f.eval.dataset import load_dataset


def _png(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


@pytest.fixture
def posedit(tmp_path):
    root = tmp_path / "posedit"
    entries = [{"image": f"{n}.png", "target_caption": f"pose {n}", "instruction": "move"} for n in ("a1_s1", "a1_s2", "a1_s3")]
    root.mkdir()
    (root / "annotations.json").write_text(json.dumps(entries))
    for n in ("a1_s1", "a1_s2", "a1_s3"):
        _png(root / "src_images" / f"{n}.png")
        if n != "a1_s3":
            _png(root / "tgt_images" / f"{n}.png")
    return root


def test_posedit_edits_are_matched_by_name_whatever_their_extension(posedit, tmp_path):
    edits = tmp_path / "edits"
    _png(edits / "a1_s1.jpg")
    _png(edits / "a1_s1.webp")  # two edits of one item: the first by name is used, and the row says so
    _png(edits / "a1s2.jpg")  # an extra that names no item
    _png(edits / "a1_s2" / "edited.png")  # an f2f edit folder, with its kept frames
    _png(edits / "a1_s2" / "candidates" / "frame_008.png")
    _png(edits / "a1_s2" / "candidates" / "frame_004.png")
    data = load_dataset(posedit, edits)
    items = {i.id: i for i in data.items}
    assert data.layout == "posedit" and list(items) == ["a1_s1", "a1_s2", "a1_s3"]
    assert items["a1_s1"].edit == edits / "a1_s1.jpg" and items["a1_s1"].text == "pose a1_s1"
    assert items["a1_s1"].problems == ["several edits named a1_s1: used a1_s1.jpg, not a1_s1.webp"]
    assert items["a1_s2"].edit == edits / "a1_s2" / "edited.png" and list(items["a1_s2"].frames) == [4, 8]
    assert items["a1_s3"].edit is None and items["a1_s3"].target is None
    assert items["a1_s3"].problems[0].startswith("no ground truth:")
    assert items["a1_s3"].problems[1].startswith("no edit: no a1_s3.png/.jpg/.webp nor a1_s3/edited.png in")


def test_tedbench_items_are_numbered_per_image(tmp_path):
    root = tmp_path / "tedbench"
    entries = [{"img_name": "cat.png", "target_text": "A sitting cat."}, ["cat.png", "A jumping cat."], ["dog.jpg", "A dog."]]
    root.mkdir()
    (root / "input_list.json").write_text(json.dumps(entries))
    _png(tmp_path / "edits" / "cat_1.png")
    data = load_dataset(root, tmp_path / "edits")
    assert [(i.id, i.text) for i in data.items] == [("cat_0", "A sitting cat."), ("cat_1", "A jumping cat."), ("dog_0", "A dog.")]
    assert data.items[0].source == root / "originals" / "cat.png" and data.items[1].edit == tmp_path / "edits" / "cat_1.png"
    (root / "input_list.json").write_text(json.dumps([["cat.png"]]))
    with pytest.raises(InvalidInput, match=r"input_list.json row 1: entries must be"):
        load_dataset(root, tmp_path / "edits")


def test_manifests_and_their_mistakes(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,source,edit,target,text\nx,s.png,e.png,,a cat\n")
    (item,) = load_dataset(manifest).items
    assert (item.source, item.edit, item.target, item.text) == (tmp_path / "s.png", tmp_path / "e.png", None, "a cat")
    assert item.problems == ["no ground truth: the row has no target (target metrics skipped)"]
    manifest.write_text("id,source,edit,colour\nx,s.png,e.png,red\n")
    with pytest.raises(
        InvalidInput, match=r"m.csv row 1: unknown keys; known: edit, id, source, target, text \(got \['colour'\]\)"
    ):
        load_dataset(manifest)
    _png(tmp_path / "s.png")
    with pytest.raises(InvalidInput, match=r"a manifest must be \.jsonl or \.csv"):
        load_dataset(tmp_path / "s.png")
    manifest.write_text("id,source,edit\nx,s.png,e.png\n")
    with pytest.raises(InvalidInput, match="a manifest already names its edits"):
        load_dataset(manifest, tmp_path)


def test_a_benchmark_folder_needs_its_edits(posedit, tmp_path):
    with pytest.raises(InvalidInput, match="a posedit folder needs --edits"):
        load_dataset(posedit)
    with pytest.raises(InvalidInput, match="--edits: must be a folder of edits"):
        load_dataset(posedit, tmp_path / "nowhere")
