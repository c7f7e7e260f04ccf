"""CLIP scores on a tiny random-weight CLIPModel built offline (the real checkpoint is staged by operators), the
catalogue entry and its stage/verify commands."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from f2f import cli

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_clip import make_tiny_clip  # noqa: E402

from f2f.eval.clip import ClipScorer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "clip-vit-base-patch32")


def _images(posedit):
    return [Image.open(posedit / d / "a27_s5.png").convert("RGB") for d in ("src_images", "tgt_images")]


def test_scores_are_the_cosines_of_clips_own_forward_pass(tiny_clip, posedit):
    scorer = ClipScorer(tiny_clip)
    source, target = _images(posedit)
    text = "a person raises both arms."
    scores = scorer.scores(target, source, target, text)
    # an embedding's cosine with itself: 1 up to the float32 rounding of its norm (a few 1e-7, any CPU)
    assert scores["clip_i_target"] == pytest.approx(1.0, abs=1e-5)
    assert -1 <= scores["clip_i_source"] < 0.99999
    # CLIPModel's own forward: logits_per_image = exp(logit_scale) * cosine
    tokens = scorer.tokenizer([text], return_tensors="pt")
    pixels = scorer.processor(images=[target], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = scorer.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
        cosine = float(out.logits_per_image[0, 0] / scorer.model.logit_scale.exp())
    # the same float32 embeddings through CLIPModel's own logits: only the order of one 512-term dot product differs
    assert scores["clip_text"] == pytest.approx(2.5 * max(cosine, 0.0), abs=1e-5)
    assert scorer.scores(target, source, None, None).keys() == {"clip_i_source"}


def test_f2f_eval_reports_clip_numbers_only_when_clip_is_staged(tiny_clip, posedit, tmp_path):
    row = {"id": "a27_s5", "source": str(posedit / "src_images" / "a27_s5.png"), "edit": str(posedit / "edits" / "a27_s5.png")}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(row | {"text": "a person raises both arms."}) + "\n")
    result = CliRunner().invoke(
        cli.main, ["eval", str(manifest), "--out", str(tmp_path / "o"), "--metrics", "clip", "--clip", str(tiny_clip)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert str(tiny_clip) in data["clip"]
    assert isinstance(data["summary"]["clip_i_source"], float) and data["summary"]["clip_text_n"] == 1
    assert "not staged" not in (tmp_path / "o" / "metrics.md").read_text()
    result = CliRunner().invoke(
        cli.main, ["eval", str(manifest), "--out", str(tmp_path / "o"), "--metrics", "clip", "--clip", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--clip: must be a staged CLIP checkpoint folder with config.json" in result.output


def test_the_clip_checkpoint_is_in_the_catalogue_and_staged_like_the_others(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(cli.main, ["models", "list"])
    assert "metric checkpoint clip-vit-base-patch32" in listed.output and "openai/clip-vit-base-patch32@" in listed.output
    verify = runner.invoke(cli.main, ["models", "verify", str(tmp_path), "--checkpoint", "clip-vit-base-patch32"])
    assert verify.exit_code == 1 and f"{tmp_path / 'clip-vit-base-patch32'}: NOT OK: folder missing" in verify.output
    unknown = runner.invoke(cli.main, ["models", "stage", str(tmp_path), "--checkpoint", "clip-vit-huge"])
    assert unknown.exit_code == 2 and "--checkpoint: unknown checkpoint" in unknown.output
