from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_caption import check_golden, render

from f2f import candidate_frames, parse_selection
from f2f.errors import InvalidInput
from f2f.selection import (
    ANSWER_PHRASE,
    MAX_ASPECT,
    MIN_LABEL_PX,
    _layout,
    collage_layout,
    make_collage,
    selection_messages,
    selection_reminder,
)


@pytest.mark.parametrize(
    ("num_frames", "stride", "expected"),
    [
        (49, 4, [4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48]),
        (9, 4, [4, 8]),
        (17, 4, [4, 8, 12, 16]),
        (49, 8, [8, 16, 24, 32, 40, 48]),
        (49, 5, [5, 10, 15, 20, 25, 30, 35, 40, 45]),
        (2, 1, [1]),
        (25, 24, [24]),
    ],
)
def test_candidate_frames(num_frames, stride, expected):
    assert candidate_frames(num_frames, stride) == expected


@pytest.mark.parametrize(("num_frames", "stride", "field"), [(49, 49, "stride"), (49, 0, "stride"), (1, 1, "num_frames")])
def test_candidate_frames_rejects(num_frames, stride, field):
    with pytest.raises(InvalidInput) as info:
        candidate_frames(num_frames, stride)
    assert info.value.field == field


# (VLM answer, label among 12 candidates or None when unparseable)
PARSER_TABLE = [
    ("SELECTED: 7", 7),
    ("selected: 7", 7),
    ("SELECTED:7", 7),
    ("SELECTED : 7", 7),
    ("Selected   7", 7),
    ("**SELECTED: 7**", 7),
    ("`SELECTED: 7`", 7),
    ("### SELECTED: 7", 7),
    ("SELECTED: [7]", 7),
    ("SELECTED frame: 7", 7),
    ("SELECTED: seven", 7),
    ("SELECTED: 0", 0),
    ("SELECTED: none", 0),
    ("SELECTED: 12", 12),
    ("SELECTED: 13", None),
    ("SELECTED: -1", None),
    ("7", 7),
    ("  7.  ", 7),
    ("0", 0),
    ("Image 7", 7),
    ("image 7 achieves the edit", 7),
    ("Frame #7 looks right.", 7),
    ("label: 3", 3),
    ("three", 3),
    ("Twelve", 12),
    ("I would pick tile eleven.", 11),
    ("Images 3 and 5 both work, but the earliest is 3. SELECTED: 3", 3),
    ("Frames 4, 5 and 6 show the edit. SELECTED: 4", 4),
    ("SELECTED: 2\nActually, on reflection, SELECTED: 5", 5),
    ("Edits 2 and 4 change the background, but the selected edit is: 3", 3),
    ("Tiles 1, 2 and 5 drift; the selected edit is: **5**", 5),
    ("After 6 and 7 were compared, the selected edit is 2.", 2),
    ("Selected edit: 3", 3),
    ("The selected frame is 7", 7),
    ("Versions 1 and 2 differ. SELECTED version: 2", 2),
    ("The selected edit is: none", 0),
    ("Edits 2 and 4 work, the selected edit is: 13", None),
    ("The selected edits are 3 and 5", None),
    ("Both 3 and 5 achieve the edit.", None),
    ("3 or 4", None),
    ("None of the frames achieve the edit.", 0),
    ("none", 0),
    ("No frame shows the requested change.", 0),
    ("I'm sorry, I can't help with that.", None),
    ("I cannot determine which image is correct.", None),
    ("", None),
    ("   ", None),
    (None, None),
    ("SELECTED:", None),
    ("SELECTED: <label>", None),
    ("13", None),
    ("-1", None),
    ("100", None),
    ("7.5", None),
    ("ĠĠĊ ĉ xq", None),
    ("asdkj qwe zxc", None),
]


@pytest.mark.parametrize(("answer", "expected"), PARSER_TABLE)
def test_parse_selection_table(answer, expected):
    assert parse_selection(answer, 12) == expected


def test_range_depends_on_the_number_of_candidates():
    assert parse_selection("SELECTED: 4", 4) == 4
    assert parse_selection("SELECTED: 5", 4) is None
    assert parse_selection("five", 4) is None


def test_selection_prompt_golden():
    messages = selection_messages(Image.new("RGB", (100, 50)), "make the dog sit", 12)
    check_golden("selection_messages.txt", render(messages + selection_reminder("maybe the fourth?", 12)))


def test_selection_prompt_states_the_rules():
    text = selection_messages(Image.new("RGB", (10, 10)), "x", 12)[0]["content"][1]["text"]
    for phrase in [
        "LOWEST label",
        "fully and naturally",
        "edit of the source",
        "camera moved or zoomed",
        "image quality",
        "unstable",
        "choose 0",
        f"{ANSWER_PHRASE}: <label>",
        "labelled 1 to 12",
    ]:
        assert phrase in text


# --- collage geometry ---------------------------------------------------------------------------


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize(
    ("content", "tiles", "columns"),
    [
        ((720, 480), 12, 4),
        ((480, 480), 12, 4),
        ((96, 64), 4, 4),
        ((1, 480), 12, 4),
        ((720, 1), 12, 4),
        ((720, 480), 2, 4),
        ((720, 480), 9, 1),
    ],
)
def test_collage_layout_fits_the_budget_without_overlap(content, tiles, columns):
    budget = 1_003_520
    layout = collage_layout(content, tiles, columns, budget)
    width, height = layout.size
    assert width * height <= budget
    boxes = [layout.source, *layout.tiles]
    assert len(layout.tiles) == tiles
    for i, box in enumerate(boxes):
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
        assert box[1] >= layout.label_px  # room for the label above
        for other in boxes[i + 1 :]:
            assert not _overlap(box, other)
    assert layout.source[3] <= min(t[1] for t in layout.tiles)  # the source is on top
    assert layout.label_px >= MIN_LABEL_PX


def test_collage_layout_default_is_four_by_three_and_uses_most_of_the_budget():
    layout = collage_layout((720, 480), 12, 4, 1_003_520)
    assert len({t[1] for t in layout.tiles}) == 3 and len({t[0] for t in layout.tiles}) == 4
    assert layout.size[0] * layout.size[1] > 0.9 * 1_003_520
    tile_w = layout.tiles[0][2] - layout.tiles[0][0]
    assert tile_w >= 200  # a tile the VLM can judge
    assert layout.source[2] - layout.source[0] > tile_w  # the source is shown larger


def test_collage_layout_rejects_a_budget_too_small():
    with pytest.raises(InvalidInput) as info:
        collage_layout((720, 480), 12, 4, 1000)
    assert info.value.field == "selection.collage_max_pixels"


def test_make_collage_pastes_pictures_and_draws_legible_labels():
    source = Image.new("RGB", (96, 64), (255, 0, 0))
    tiles = [Image.new("RGB", (96, 64), (0, 0, 10 * i)) for i in range(1, 13)]
    collage = make_collage(source, tiles, 4, 1_003_520)
    layout = collage_layout((96, 64), 12, 4, 1_003_520)
    assert collage.size == layout.size
    pixels = np.asarray(collage)
    centre = lambda b: ((b[1] + b[3]) // 2, (b[0] + b[2]) // 2)  # noqa: E731
    assert tuple(pixels[centre(layout.source)]) == (255, 0, 0)
    for i, box in enumerate(layout.tiles, start=1):
        assert tuple(pixels[centre(box)]) == (0, 0, 10 * i)
        band = pixels[box[1] - layout.label_px : box[1], box[0] : box[2]]
        ink = np.argwhere(band.min(axis=2) > 200)  # white label pixels
        assert len(ink) > 0, f"label {i} missing"
        assert ink[:, 0].max() - ink[:, 0].min() + 1 >= 0.5 * layout.label_px  # glyphs are tall, not specks


def test_make_collage_keeps_aspect_of_extreme_pictures():
    tall = Image.new("RGB", (2, 480), (0, 255, 0))
    collage = make_collage(tall, [tall] * 12, 4, 1_003_520)
    layout = collage_layout((2, 480), 12, 4, 1_003_520)
    box = layout.tiles[0]
    row = np.asarray(collage)[(box[1] + box[3]) // 2, box[0] : box[2]]
    green = (row[:, 1] > 200) & (row[:, 0] < 50)
    assert 0 < green.sum() < 0.2 * (box[2] - box[0])  # a thin column, fitted, not stretched


@pytest.mark.parametrize("content", [(40, 30), (1, 4000), (720, 480), (33, 1000)])
@pytest.mark.parametrize("max_pixels", [65_536, 300_000, 1_000_000])
def test_the_collage_layout_is_the_widest_tile_that_fits(content: tuple[int, int], max_pixels: int) -> None:
    layout = collage_layout(content, 9, 4, max_pixels)
    tile_w = layout.tiles[0][2] - layout.tiles[0][0]
    assert layout.size[0] * layout.size[1] <= max_pixels
    wider = collage_layout(content, 9, 4, 10**9)  # no bound: the widest tile there is
    if tile_w < wider.tiles[0][2] - wider.tiles[0][0]:
        aspect = min(max(content[0] / content[1], 1 / MAX_ASPECT), MAX_ASPECT)
        bigger = _layout(tile_w + 1, aspect, 9, 4, 3)  # 9 tiles in 4 columns: 3 rows
        assert bigger.size[0] * bigger.size[1] > max_pixels  # one pixel wider would not fit
