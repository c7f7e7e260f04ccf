"""`generator.lora` on the tiny CogVideoX and LTX-Video checkpoints: checked before load, fused after, equal to a
hand-merged transformer.

The LoRA is written here in diffusers' own key names (`transformer.<layer>.lora_A/B.weight`; both families name
these layers alike); the Wan tests cover the original trainers' names that diffusers converts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("peft")

import torch
from safetensors.torch import load_file, save_file

from f2f.backends.tiny.tiny_cogvideox import make_tiny_cogvideox
from f2f.backends.video.i2v import DiffusersVideoGenerator
from f2f.config import LoraConfig, VideoConfig
from f2f.errors import InvalidConfig

pytestmark = pytest.mark.models

WIDTH, HEIGHT, RANK = 96, 64, 2
LAYERS = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_v", "transformer_blocks.0.ff.net.2")
SETTINGS = VideoConfig(width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=2, guidance_scale=6.0, fps=8)
EPS = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cogvideox(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0, height=HEIGHT, width=WIDTH)


@pytest.fixture(scope="module")
def base_weights(tiny_dir: Path) -> dict[str, torch.Tensor]:
    return transformer_weights(tiny_dir)


@pytest.fixture(scope="module", params=["cogvideox", "ltx"])
def family_dir(request: pytest.FixtureRequest, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "cogvideox":
        return tiny_dir
    from f2f.backends.tiny.tiny_ltx import make_tiny_ltx

    return make_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx", seed=0)


def transformer_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next((folder / "transformer").glob("*.safetensors")))


def write_lora(path: Path, weights: dict[str, torch.Tensor], layers=LAYERS, rank: int = RANK, seed: int = 3) -> Path:
    """A LoRA of `rank` for `layers`, shaped from the base weights (A: rank x in, B: out x rank)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in layers:
        out_features, in_features = weights[f"{layer}.weight"].shape
        tensors[f"transformer.{layer}.lora_A.weight"] = torch.randn(rank, in_features, generator=g) * 0.5
        tensors[f"transformer.{layer}.lora_B.weight"] = torch.randn(out_features, rank, generator=g) * 0.5
    save_file(tensors, str(path))
    return path


def frames_of(generator: DiffusersVideoGenerator, seed: int = 5) -> list[Image.Image]:
    image = Image.new("RGB", (WIDTH, HEIGHT), (120, 80, 40))
    return asyncio.run(generator.generate(image, "a dog sits", [seed], SETTINGS))[0]


def test_a_fused_lora_changes_the_video_and_equals_the_hand_merged_transformer(tmp_path, family_dir):
    base_weights = transformer_weights(family_dir)
    lora = write_lora(tmp_path / "lora.safetensors", base_weights)
    scale = 0.7
    plain = DiffusersVideoGenerator(family_dir, device="cpu")
    fused = DiffusersVideoGenerator(family_dir, device="cpu", lora=[LoraConfig(path=lora, scale=scale)])
    try:
        state = fused._pipe.transformer.state_dict()
        assert not any("lora" in key for key in state)  # fused and unloaded: no adapter layers left per step
        tensors = load_file(str(lora))
        for layer in LAYERS:
            base = base_weights[f"{layer}.weight"]
            delta = tensors[f"transformer.{layer}.lora_B.weight"] @ tensors[f"transformer.{layer}.lora_A.weight"]
            merged = base + scale * delta
            # float32 rounding of one rank-RANK product and one add, element by element
            bound = (RANK + 2) * EPS * (base.abs() + scale * delta.abs()).max()
            assert (state[f"{layer}.weight"] - merged).abs().max() <= bound, layer
            assert (merged - base).abs().max() > 1000 * bound  # the LoRA really moved this layer
        untouched = "transformer_blocks.0.attn1.to_k.weight"
        assert torch.equal(state[untouched], base_weights[untouched])
        with_lora, without = frames_of(fused), frames_of(plain)
        assert any(a.tobytes() != b.tobytes() for a, b in zip(with_lora, without, strict=True))
    finally:
        plain.close()
        fused.close()


def test_a_lora_that_does_not_fit_is_refused_before_the_pipeline_loads(tmp_path, tiny_dir, base_weights, monkeypatch):
    import diffusers

    def no_loading(*_args, **_kwargs):
        raise AssertionError("the pipeline loaded before the LoRA was checked")

    monkeypatch.setattr(diffusers.CogVideoXImageToVideoPipeline, "from_pretrained", no_loading)
    wrong_shape = {f"{LAYERS[0]}.weight": torch.zeros(base_weights[f"{LAYERS[0]}.weight"].shape[0] + 8, 4)}
    cases = {
        "missing": (tmp_path / "nope.safetensors", "no such file"),
        "shape": (write_lora(tmp_path / "shape.safetensors", wrong_shape, layers=LAYERS[:1]), "the LoRA makes"),
        "layer": (
            write_lora(tmp_path / "layer.safetensors", {"elsewhere.q.weight": torch.zeros(4, 4)}, ("elsewhere.q",)),
            "does not have",
        ),
    }
    for path, phrase in cases.values():
        with pytest.raises(InvalidConfig) as info:
            DiffusersVideoGenerator(tiny_dir, device="cpu", lora=[LoraConfig(path=path)])
        assert info.value.field == "generator.lora[0].path" and phrase in info.value.rule, info.value
    good = write_lora(tmp_path / "good.safetensors", base_weights)
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(tiny_dir, device="cpu", lora=[LoraConfig(path=good, target="transformer_2")])
    assert info.value.field == "generator.lora[0].target" and "no transformer_2" in info.value.rule
