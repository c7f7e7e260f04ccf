"""Step 6 with several seeds: the VLM ranks the edited clips, asked in two orders; the label rule breaks a disagreement."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fakes import ScriptedVLM, SyntheticGenerator, scripted_usage
from PIL import Image
from test_caption import check_golden, render
from test_pipeline import RoundTripGenerator, expected_frame

from f2f import edit
from f2f.canvas import fit_box
from f2f.config import load_config
from f2f.result import write_outputs
from f2f.selection import collage_layout, ranking_messages

# Seeds 7, 8, 9 choose labels 2, 3, 4 (frames 8, 12, 16): the label rule ranks 7, 8, 9.
LABELS_234 = ["SELECTED: 2", "SELECTED: 3", "SELECTED: 4"]


def run(config, image, selections, rankings=("SELECTED: 1",), generator=None):
    """An edit of seeds 7, 8, 9 with scripted answers; the result, the VLM and the generator."""
    vlm, generator = ScriptedVLM(selections=selections, rankings=rankings), generator or SyntheticGenerator()
    result = asyncio.run(edit(image, "make the sun set", vlm=vlm, generator=generator, config=config, seeds=[7, 8, 9]))
    return result, vlm, generator


def kinds(vlm):
    return [call[0] for call in vlm.calls]


def pixels(image):
    return np.asarray(image)


def test_two_agreeing_orders_pick_their_clip_even_with_a_higher_label(small_config, square_image):
    # Tiles as asked: seeds 7, 8, 9 then 9, 8, 7; label 3 of the first and 1 of the second both name seed 9.
    result, vlm, _ = run(small_config, square_image, LABELS_234, ["SELECTED: 3", "SELECTED: 1"])
    assert (result.seed, result.status, result.outcome.label, result.outcome.frame) == (9, "edited", 4, 16)
    assert np.array_equal(pixels(result.image), pixels(expected_frame(square_image, small_config, 9, 16)))
    assert result.ranking.rule == "vlm" and result.ranking.order == [9, 7, 8]  # the winner, then the label rule
    assert [o.seed for o in result.ranked] == [9, 7, 8] and result.ranked[0] is result.outcome
    assert result.ranking.answers == ["SELECTED: 3", "SELECTED: 1"]
    assert result.ranking.orders_asked == [[7, 8, 9], [9, 8, 7]]
    assert kinds(vlm) == ["caption", "select", "select", "select", "rank", "rank"]
    assert result.usage == scripted_usage(kinds(vlm))  # every call's tokens: the caption, each selection, both ranks
    assert all(call[2:] == (small_config.selection.max_new_tokens, 0.0) for call in vlm.calls[-2:])  # greedy
    assert [c["seed"] for c in result.clips] == [7, 8, 9]  # clips stay in seed order


@pytest.mark.parametrize(
    "rankings",
    [
        ["SELECTED: 1"],  # position bias: seed 7 first, seed 9 reversed
        ["SELECTED: 3", "I cannot tell them apart"],  # the second cannot be read
        ["SELECTED: 1", "SELECTED: 4"],  # the second is out of range (3 versions)
        ["SELECTED: 0"],  # names none
    ],
)
def test_disagreeing_or_unreadable_orders_fall_back_to_the_label_rule_and_say_so(small_config, square_image, rankings):
    # Seeds 7, 8, 9 choose labels 3, 2, 4: the label rule ranks 8, 7, 9, unlike either first answer alone.
    result, vlm, _ = run(small_config, square_image, ["SELECTED: 3", "SELECTED: 2", "SELECTED: 4"], rankings)
    assert (result.seed, result.outcome.frame) == (8, 8)
    assert np.array_equal(pixels(result.image), pixels(expected_frame(square_image, small_config, 8, 8)))
    answers = [rankings[0], rankings[-1]]
    assert (result.ranking.rule, result.ranking.order, result.ranking.answers) == ("label_rule", [8, 7, 9], answers)
    assert kinds(vlm).count("rank") == 2


def test_one_edited_clip_is_not_ranked(small_config, square_image):
    # no_edit, edited, fallback (unreadable twice): one finalist, no ranking calls.
    result, vlm, _ = run(small_config, square_image, ["SELECTED: 0", "SELECTED: 3", "??"])
    assert "rank" not in kinds(vlm)
    assert (result.seed, result.status) == (8, "edited")
    assert result.ranking.as_json() == {"rule": "single", "order": [8, 9, 7], "answers": [], "orders_asked": []}
    assert [o.status for o in result.ranked] == ["edited", "fallback", "no_edit"]


def test_rank_label_keeps_the_label_rule_without_extra_calls(small_config, square_image):
    config = load_config(overrides={**small_config.model_dump(), "selection": {"rank": "label"}})
    result, vlm, _ = run(config, square_image, LABELS_234, ["SELECTED: 3", "SELECTED: 1"])  # would pick 9
    assert kinds(vlm) == ["caption", "select", "select", "select"]
    assert (result.seed, result.outcome.label, result.outcome.frame) == (7, 2, 8)
    assert np.array_equal(pixels(result.image), pixels(expected_frame(square_image, small_config, 7, 8)))
    assert result.ranking.as_json() == {"rule": "label_rule", "order": [7, 8, 9], "answers": [], "orders_asked": []}


def test_the_ranking_is_in_result_json(small_config, square_image, tmp_path):
    result, _, _ = run(small_config, square_image, LABELS_234, ["SELECTED: 3", "SELECTED: 1"])
    write_outputs(result, tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["ranking"] == {
        "rule": "vlm",
        "order": [9, 7, 8],
        "answers": ["SELECTED: 3", "SELECTED: 1"],
        "orders_asked": [[7, 8, 9], [9, 8, 7]],
    }
    assert data["seed"] == 9 and data["selected_frame"] == 16
    assert "rank" in result.timings_s and data["timings_s"]["rank"] >= 0


def test_ranked_images_are_the_chosen_frames_best_first_at_the_source_size(small_config, square_image):
    result, _, _ = run(small_config, square_image, ["SELECTED: 2", "SELECTED: 0", "SELECTED: 4"], ["SELECTED: 2", "SELECTED: 1"])
    assert result.ranking.order == [9, 7, 8]  # 9 by the VLM, then 7 (label 2), then 8 (no_edit)
    images = result.ranked_images()
    assert len(images) == 2  # the no_edit clip's result is the source: no edit to return
    assert np.array_equal(pixels(images[0]), pixels(result.image))
    for image, (seed, frame) in zip(images, [(9, 16), (7, 8)], strict=True):
        assert np.array_equal(pixels(image), pixels(expected_frame(square_image, small_config, seed, frame)))
    assert len(result.ranked_images(1)) == 1


def test_edits_by_rank_give_one_edit_per_seed_the_source_for_a_clip_without_one(small_config, square_image):
    """What the service writes as ranked/<k>.png: the result itself first, not made again."""
    result, _, _ = run(small_config, square_image, ["SELECTED: 2", "SELECTED: 0", "SELECTED: 4"], ["SELECTED: 2", "SELECTED: 1"])
    edits = result.edits_by_rank()
    assert len(edits) == 3 and edits[0] is result.image
    assert np.array_equal(pixels(edits[1]), pixels(expected_frame(square_image, small_config, 7, 8)))
    assert np.array_equal(pixels(edits[2]), pixels(square_image))  # seed 8 said no_edit: its result is the source


def _shown(collage, box, content_size):
    """The picture pasted into a collage box, without the box's margins."""
    inner = fit_box(content_size, box[2] - box[0], box[3] - box[1])
    left, top = box[0] + inner.left, box[1] + inner.top
    return pixels(collage.crop((left, top, left + inner.width, top + inner.height))), inner.size


def test_each_ask_shows_the_source_and_the_finalists_chosen_frames_in_its_order(small_config, square_image):
    # Frame 0 of every clip differs from the source: the top tile must be the source itself.
    result, vlm, generator = run(small_config, square_image, LABELS_234, ["SELECTED: 3", "SELECTED: 1"], RoundTripGenerator())
    canvas, box, cfg = generator.calls[0][0], result.box, small_config.selection
    chosen = {seed: generator.clip(canvas, seed, 17)[frame].crop(box) for seed, frame in [(7, 8), (8, 12), (9, 16)]}
    layout = collage_layout(box.size, 3, cfg.collage_columns, cfg.collage_max_pixels)
    for call, order in zip(vlm.calls[-2:], result.ranking.orders_asked, strict=True):
        collage = call[1][0]["content"][0]["image"]
        assert collage.size == layout.size
        shown, size = _shown(collage, layout.source, box.size)
        assert np.array_equal(shown, pixels(canvas.crop(box).resize(size, Image.Resampling.LANCZOS)))
        for tile, seed in zip(layout.tiles, order, strict=True):
            shown, size = _shown(collage, tile, box.size)
            assert np.array_equal(shown, pixels(chosen[seed].resize(size, Image.Resampling.LANCZOS)))
        assert "labelled 1 to 3" in call[1][0]["content"][1]["text"]


def test_ranking_prompt_golden():
    check_golden("ranking_messages.txt", render(ranking_messages(Image.new("RGB", (100, 50)), "make the dog sit", 3)))


def test_ranking_prompt_states_the_rules():
    text = ranking_messages(Image.new("RGB", (10, 10)), "x", 3)[0]["content"][1]["text"]
    for phrase in [
        "SOURCE",
        "labelled 1 to 3",
        "fully and naturally",
        "changing the least",
        "order of the versions means nothing",
    ]:
        assert phrase in text
    assert text.endswith("SELECTED: <version>")
