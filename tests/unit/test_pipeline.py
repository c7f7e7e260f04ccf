from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fakes import USAGE, DriftingGenerator, NoiseGenerator, ScriptedVLM, SyntheticGenerator, scripted_usage
from PIL import Image
from scenes import textured

from f2f import CancelToken, EditCancelled, InvalidImage, InvalidInput, edit
from f2f.canvas import fit_box
from f2f.config import load_config
from f2f.pipeline import check_clips
from f2f.protocols import TokenUsage
from f2f.result import write_outputs
from f2f.selection import collage_layout


def run(image, text="make the sun set", **kwargs):
    kwargs.setdefault("vlm", ScriptedVLM())
    kwargs.setdefault("generator", SyntheticGenerator())
    return asyncio.run(edit(image, text, **kwargs))


def expected_frame(square_image, config, seed, index):
    """The synthetic clip's frame `index`, un-letterboxed by hand (independent of f2f.canvas)."""
    # A 40x40 source on a 96x64 canvas: 64x64 content at x 16..80.
    canvas = Image.new("RGB", (96, 64))
    canvas.paste(square_image.resize((64, 64), Image.Resampling.LANCZOS), (16, 0))
    frame = SyntheticGenerator.clip(canvas, seed, config.video.num_frames)[index]
    return frame.crop((16, 0, 80, 64)).resize((40, 40), Image.Resampling.LANCZOS)


def test_label_selects_its_frame_unletterboxed_at_the_source_size(square_image, small_config):
    vlm, generator = ScriptedVLM(selections=["SELECTED: 3"]), SyntheticGenerator()
    result = run(square_image, vlm=vlm, generator=generator, config=small_config)
    assert result.status == "edited"
    assert (result.outcome.label, result.outcome.frame) == (3, 12)
    assert result.outcome.candidates == [4, 8, 12, 16]
    assert result.image.size == (40, 40)
    assert tuple(result.box) == (16, 0, 80, 64)
    assert np.array_equal(np.asarray(result.image), np.asarray(expected_frame(square_image, small_config, 7, 12)))
    # The generator got the letterboxed source, the cleaned caption, the seed and the settings.
    canvas, caption, seeds, settings = generator.calls[0]
    assert canvas.size == (96, 64) and canvas.getpixel((5, 5)) == (0, 0, 0)
    assert caption == "The sun slowly sets behind the hills."
    assert seeds == [7] and settings == small_config.video
    assert [c[0] for c in vlm.calls] == ["caption", "select"]
    assert vlm.calls[1][3] == 0.0  # selection is greedy


class RoundTripGenerator(SyntheticGenerator):
    """Frame 0 is not the source (as after a VAE round trip, or noise from a tiny random model): it is inverted."""

    @staticmethod
    def clip(image, seed, num_frames):
        frames = SyntheticGenerator.clip(image, seed, num_frames)
        return [Image.fromarray(255 - np.asarray(frames[0])), *frames[1:]]


def test_the_collages_top_tile_is_the_source_not_the_clips_frame_0(square_image, small_config):
    generator = RoundTripGenerator()
    result = run(square_image, generator=generator, config=small_config)
    canvas, box, cfg = generator.calls[0][0], result.box, small_config.selection
    layout = collage_layout(box.size, 4, cfg.collage_columns, cfg.collage_max_pixels)
    inner = fit_box(box.size, layout.source[2] - layout.source[0], layout.source[3] - layout.source[1])
    left, top = layout.source[0] + inner.left, layout.source[1] + inner.top
    shown = np.asarray(result.collage.crop((left, top, left + inner.width, top + inner.height)))
    resize = lambda image: np.asarray(image.crop(box).resize(inner.size, Image.Resampling.LANCZOS))  # noqa: E731 as tiles are
    assert np.array_equal(shown, resize(canvas))
    assert not np.array_equal(shown, resize(generator.clip(canvas, 7, 17)[0]))  # frame 0 would have looked different


def test_label_zero_returns_the_source_and_no_edit(square_image, small_config):
    result = run(square_image, vlm=ScriptedVLM(selections=["SELECTED: 0"]), config=small_config)
    assert result.status == "no_edit"
    assert (result.outcome.label, result.outcome.frame) == (0, 0)
    assert np.array_equal(np.asarray(result.image), np.asarray(square_image))


def test_unparseable_answer_is_retried_with_a_reminder(square_image, small_config):
    vlm = ScriptedVLM(selections=["I think the fourth looks nice", "SELECTED: 2"])
    result = run(square_image, vlm=vlm, config=small_config)
    assert result.status == "edited" and result.outcome.frame == 8
    assert result.outcome.answers == ["I think the fourth looks nice", "SELECTED: 2"]
    retry = vlm.calls[2][1]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert "could not be read" in retry[-1]["content"][0]["text"]
    assert result.usage == scripted_usage(["caption", "select", "select"])  # the retry's tokens count too


def test_usage_the_vlm_did_not_count_is_unknown_not_invented(square_image, small_config):
    split_unknown = {kind: TokenUsage(u.input_tokens, u.output_tokens, None) for kind, u in USAGE.items()}
    usage = run(square_image, vlm=ScriptedVLM(usage=split_unknown), config=small_config).usage.as_json()
    assert usage is not None and usage["input_tokens"] == 1200 and usage["total_tokens"] == 1219
    assert usage["input_tokens_details"] == {"image_tokens": None, "text_tokens": None}
    uncounted = {**USAGE, "select": TokenUsage(None, None, None)}
    assert run(square_image, vlm=ScriptedVLM(usage=uncounted), config=small_config).usage.as_json() is None


def test_unparseable_twice_falls_back_to_the_last_candidate(square_image, small_config):
    result = run(square_image, vlm=ScriptedVLM(selections=["garbage ĠĠ", "still 3 or 4"]), config=small_config)
    assert result.status == "fallback"
    assert (result.outcome.label, result.outcome.frame) == (4, 16)
    assert len(result.outcome.answers) == 2


def test_fallback_to_the_source_when_configured(square_image, small_config):
    config = load_config(overrides={**small_config.model_dump(), "selection": {"on_unparseable": "source", "retries": 0}})
    vlm = ScriptedVLM(selections=["??"])
    result = run(square_image, vlm=vlm, config=config)
    assert result.status == "fallback" and result.outcome.frame == 0 and result.outcome.label is None
    assert np.array_equal(np.asarray(result.image), np.asarray(square_image))
    assert len(vlm.calls) == 2  # no retry


def test_garbage_caption_falls_back_to_the_edit_text_and_says_so(square_image, small_config):
    generator = SyntheticGenerator()
    result = run(
        square_image, "  A photo of a sunset.  ", vlm=ScriptedVLM(caption="ĠĠ ĉ"), generator=generator, config=small_config
    )
    assert result.caption_fallback is True
    assert result.caption == "A photo of a sunset." == generator.calls[0][1]
    assert result.caption_answer == "ĠĠ ĉ"
    assert result.to_json()["caption_fallback"] is True


def test_several_seeds_the_lowest_label_wins(square_image, small_config):
    # Seeds 7, 8, 9: answers 0 (no edit), 3, 2 -> the clip of seed 9, frame 8.
    vlm = ScriptedVLM(selections=["SELECTED: 0", "SELECTED: 3", "SELECTED: 2"])
    generator = SyntheticGenerator()
    result = run(square_image, vlm=vlm, generator=generator, config=small_config, seeds=[7, 8, 9])
    assert generator.calls[0][2] == [7, 8, 9]
    assert (result.seed, result.status, result.outcome.frame) == (9, "edited", 8)
    assert [c["status"] for c in result.clips] == ["no_edit", "edited", "edited"]
    assert np.array_equal(np.asarray(result.image), np.asarray(expected_frame(square_image, small_config, 9, 8)))


def test_several_seeds_an_edit_beats_a_fallback_and_a_fallback_beats_no_edit(square_image, small_config):
    config = load_config(overrides={**small_config.model_dump(), "selection": {"retries": 0}})
    result = run(square_image, vlm=ScriptedVLM(selections=["0", "??", "SELECTED: 4"]), config=config, seeds=[1, 2, 3])
    assert (result.seed, result.status) == (3, "edited")
    result = run(square_image, vlm=ScriptedVLM(selections=["0", "??"]), config=config, seeds=[1, 2])
    assert (result.seed, result.status) == (2, "fallback")


def test_num_seeds_from_config_counts_up_from_the_seed(square_image, small_config):
    config = load_config(overrides={**small_config.model_dump(), "num_seeds": 3})
    generator = SyntheticGenerator()
    run(square_image, generator=generator, config=config)
    assert generator.calls[0][2] == [7, 8, 9]


def test_random_seed_is_reported(square_image, small_config):
    config = load_config(overrides={**small_config.model_dump(), "seed": None})
    generator = SyntheticGenerator()
    result = run(square_image, generator=generator, config=config)
    assert result.seed == generator.calls[0][2][0]
    assert 0 <= result.seed < 2**32


def test_progress_events_in_order(square_image, small_config):
    events = []
    run(square_image, config=small_config, progress=events.append)
    assert [(e.stage, e.step) for e in events] == [
        ("caption", None),
        ("generate", None),
        ("generate", 1),
        ("generate", 2),
        ("select", None),
        ("done", None),
    ]


def test_cancel_between_denoising_steps(square_image, small_config):
    vlm = ScriptedVLM()
    with pytest.raises(EditCancelled):
        run(square_image, vlm=vlm, generator=SyntheticGenerator(cancel_at_step=2), config=small_config, cancel=CancelToken())
    assert [c[0] for c in vlm.calls] == ["caption"]  # selection never ran


def test_cancel_before_start(square_image, small_config):
    token = CancelToken()
    token.cancel()
    vlm = ScriptedVLM()
    with pytest.raises(EditCancelled):
        run(square_image, vlm=vlm, config=small_config, cancel=token)
    assert vlm.calls == []


def test_timings_cover_every_stage(square_image, small_config):
    result = run(square_image, config=small_config)
    stages = {"check_inputs", "caption", "letterbox", "generate", "select", "rank", "unletterbox", "align", "total"}
    assert set(result.timings_s) == stages
    assert all(t >= 0 for t in result.timings_s.values())
    assert result.timings_s["total"] >= result.timings_s["generate"]


def test_keep_frames_and_candidates(square_image, small_config):
    result = run(square_image, config=small_config, keep_frames=True)
    assert len(result.frames) == 17 and result.frames[0].size == (96, 64)
    candidates = result.candidate_images()
    assert len(candidates) == 4 and all(c.size == (40, 40) for c in candidates)
    assert run(square_image, config=small_config).frames is None


@pytest.mark.parametrize(
    ("image", "text", "error", "field"),
    [
        (Image.new("RGB", (40, 40)), "", InvalidInput, "text"),
        (Image.new("RGB", (40, 40)), "   \n", InvalidInput, "text"),
        (Image.new("RGB", (40, 40)), "x" * 1001, InvalidInput, "text"),
        (Image.new("RGB", (0, 0)), "make it red", InvalidImage, "image"),
        (Image.new("RGB", (8000, 6000)), "make it red", InvalidImage, "image"),
        (b"not an image", "make it red", InvalidImage, "image"),
    ],
)
def test_bad_inputs_fail_before_any_model_call(image, text, error, field, small_config):
    vlm, generator = ScriptedVLM(), SyntheticGenerator()
    with pytest.raises(error) as info:
        run(image, text, vlm=vlm, generator=generator, config=small_config)
    assert info.value.field == field
    assert vlm.calls == [] and generator.calls == []


@pytest.mark.parametrize("seeds", [[], [-1], [2**32], ["1"]])
def test_bad_seeds(square_image, small_config, seeds):
    with pytest.raises(InvalidInput) as info:
        run(square_image, config=small_config, seeds=seeds)
    assert info.value.field == "seeds"


def test_rgba_source_is_composited_before_generation(small_config):
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    generator = SyntheticGenerator()
    result = run(image, generator=generator, config=small_config)
    assert generator.calls[0][0].getpixel((48, 32)) == (255, 255, 255)  # transparent -> white background
    assert result.image.mode == "RGB"


def test_a_generator_that_breaks_its_contract_is_reported(small_config):
    config = small_config.video
    frames = [Image.new("RGB", (96, 64))] * 16
    with pytest.raises(RuntimeError, match="16 frames"):
        check_clips([frames], [1], config)
    with pytest.raises(RuntimeError, match="1 clips for 2 seeds"):
        check_clips([frames + frames[:1]], [1, 2], config)
    with pytest.raises(RuntimeError, match=r"\(96, 64\)"):
        check_clips([[Image.new("RGB", (90, 64))] * 17], [1], config)


def test_result_json_and_outputs(square_image, small_config, tmp_path):
    result = run(square_image, config=small_config)
    written = write_outputs(result, tmp_path / "out", save_frames=True)
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    assert names == [
        "candidates/frame_004.png",
        "candidates/frame_008.png",
        "candidates/frame_012.png",
        "candidates/frame_016.png",
        "collage.png",
        "edited.png",
        "result.json",
    ]
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["status"] == "edited" and data["selected_frame"] == 12 and data["selected_label"] == 3
    assert data["candidate_frames"] == [4, 8, 12, 16] and data["seed"] == 7
    assert data["letterbox_box"] == [16, 0, 80, 64] and data["source_size"] == [40, 40]
    assert data["caption"] == "The sun slowly sets behind the hills."
    assert data["usage"] == {  # the caption's and the one selection's tokens (fakes.USAGE), in OpenAI's shape
        "input_tokens": 1200,
        "input_tokens_details": {"image_tokens": 950, "text_tokens": 250},
        "output_tokens": 19,
        "output_tokens_details": {"image_tokens": 0, "text_tokens": 19},
        "total_tokens": 1219,
    }
    assert data["alignment"]["mode"] == "auto" and data["alignment"]["applied"] is False  # four flat quadrants: no features
    assert Image.open(tmp_path / "out" / "edited.png").size == (40, 40)
    assert Image.open(tmp_path / "out" / "collage.png").size == result.collage.size
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in written)  # readable outputs, not private temp files


def test_a_free_canvas_family_gets_the_sources_own_shape_and_says_so(square_image):
    from f2f.canvas import fit_canvas

    video = {"max_canvas_pixels": 96 * 64, "num_frames": 17, "num_inference_steps": 2}
    config = load_config(overrides={"generator": {"family": "wan"}, "video": video, "seed": 7})
    assert (config.video.size_multiple, config.video.frame_step) == (16, 4)  # the Wan family's rules
    generator = SyntheticGenerator()
    result = run(square_image, config=config, generator=generator, vlm=ScriptedVLM(selections=["SELECTED: 2"]))
    canvas = fit_canvas(square_image.size, 96 * 64, 16)
    assert canvas == (64, 64)  # a square source: a square canvas, no bars
    image, _, _, settings = generator.calls[0]
    assert image.size == canvas and (settings.width, settings.height) == canvas  # the generator is told the canvas
    assert result.image.size == square_image.size and tuple(result.box) == (0, 0, 64, 64)
    assert result.to_json()["canvas"] == {"size": [64, 64], "fit": "free"}


@pytest.fixture
def drift_config():
    """A 256x160 canvas (a 256x160 source fills it: no bars, no resampling), 17 frames, seed 7."""
    video = {"width": 256, "height": 160, "num_frames": 17, "num_inference_steps": 2}
    return load_config(overrides={"generator": {"family": "cogvideox"}, "video": video, "seed": 7})


def interior_error(image, source):
    """Mean absolute error away from the borders (where a warp mirrors the edit)."""
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(source, dtype=np.int16))
    return float(diff[12:-12, 12:-12].mean())


def test_the_chosen_frame_and_every_candidate_are_aligned_back_onto_the_source(drift_config, tmp_path):
    source = textured(0, (256, 160))
    generator = DriftingGenerator(step_px=0.5)  # frame 12: the camera moved 6 px right
    result = run(source, vlm=ScriptedVLM(selections=["SELECTED: 3"]), generator=generator, config=drift_config)
    alignment = result.alignment
    assert (alignment.applied, alignment.reason, result.outcome.frame) == (True, None, 12)
    # The frames are the source warped by OpenCV's fixed-point bilinear code: the same pixels on any CPU, and a
    # sub-pixel estimate from hundreds of inliers (errors of hundredths of a pixel here), so 0.5 px holds anywhere.
    assert abs(alignment.shift_px[0] - 6.0) < 0.5 and abs(alignment.shift_px[1]) < 0.5
    assert abs(alignment.scale - 1) < 0.005 and abs(alignment.rotation_deg) < 0.25
    # Aligned, the interior is within a few grey levels of the source (bilinear blur on noise); drifted, tens off.
    unaligned = generator.clip(source, 7, 17)
    assert interior_error(result.image, source) < 5 < 20 < interior_error(unaligned[12], source)
    for candidate, frame in zip(result.candidate_images(), result.outcome.candidates, strict=True):
        assert interior_error(candidate, source) < 5 < 10 < interior_error(unaligned[frame], source)
    assert result.candidate_images()[2] is result.image  # tile 3 is the chosen frame: the result, not aligned again
    write_outputs(result, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "result.json").read_text())["alignment"]
    assert data["mode"] == "auto" and data["applied"] is True and data["reason"] is None
    assert data["error_after"] < data["error_before"] and data["shift_px"][0] == pytest.approx(6.0, abs=0.5)
    assert len(data["matrix"]) == 2 and {"scale", "rotation_deg", "inliers"} <= set(data)


def test_noise_frames_are_refused_cleanly_and_left_as_they_are(drift_config):
    source = textured(0, (256, 160))
    generator = NoiseGenerator()  # what random-weight models generate
    result = run(source, vlm=ScriptedVLM(selections=["SELECTED: 2"]), generator=generator, config=drift_config)
    assert (result.alignment.applied, result.alignment.reason) == (False, "too few matches")
    assert np.array_equal(np.asarray(result.image), np.asarray(generator.clip(source, 7, 17)[8]))


def test_align_mode_off_keeps_the_drifted_frame(drift_config):
    config = load_config(overrides={**drift_config.model_dump(), "align": {"mode": "off"}})
    source, generator = textured(0, (256, 160)), DriftingGenerator(step_px=0.5)
    result = run(source, vlm=ScriptedVLM(selections=["SELECTED: 3"]), generator=generator, config=config)
    assert (result.alignment.applied, result.alignment.reason) == (False, "off")
    assert np.array_equal(np.asarray(result.image), np.asarray(generator.clip(source, 7, 17)[12]))


def test_a_result_that_is_the_source_is_not_aligned(square_image, small_config):
    result = run(square_image, vlm=ScriptedVLM(selections=["SELECTED: 0"]), config=small_config)
    assert (result.alignment.applied, result.alignment.reason) == (False, "no frame chosen")
    assert result.to_json()["alignment"]["reason"] == "no frame chosen"


def test_a_clip_with_one_candidate_is_its_edit_without_asking_the_vlm(square_image, small_config):
    """ChronoEdit without reasoning: 5 frames, stride 4, one candidate (the edit): no choice among one frame."""
    config = small_config.model_copy(update={"video": small_config.video.model_copy(update={"num_frames": 9})})
    config = config.model_copy(update={"selection": config.selection.model_copy(update={"candidate_stride": 8})})
    vlm = ScriptedVLM(selections=["SELECTED: 0"])  # would say no edit, if it were asked
    result = run(square_image, vlm=vlm, config=config, seeds=[7])
    assert (result.status, result.outcome.label, result.outcome.frame, result.outcome.answers) == ("edited", 1, 8, [])
    assert result.outcome.candidates == [8]
    assert [c[0] for c in vlm.calls] == ["caption"] and result.usage == scripted_usage(["caption"])
    two = ScriptedVLM(rankings=["SELECTED: 2", "SELECTED: 1"])  # both orders name the second seed's frame
    ranked = run(square_image, vlm=two, config=config, seeds=[7, 8])
    assert [c[0] for c in two.calls] == ["caption", "rank", "rank"]  # the seeds are still ranked by the VLM
    assert ranked.usage == scripted_usage(["caption", "rank", "rank"])
    assert ranked.outcome.seed == 8
