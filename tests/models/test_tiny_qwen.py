"""The tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints: layout, determinism, the real loaders read them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from vlm_fixtures import sample_picture, vllm_env  # noqa: E402

from f2f.backends.tiny.tiny_qwen import QWEN3_ADDED_TOKENS, SPECIAL_TOKENS, make_tiny_qwen  # noqa: E402

VARIANTS = ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]
ARCHITECTURES = {
    "qwen2-vl": "Qwen2VLForConditionalGeneration",
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3-vl": "Qwen3VLForConditionalGeneration",
}
PATCH_SIZES = {"qwen2-vl": 14, "qwen2.5-vl": 14, "qwen3-vl": 16}  # Qwen3-VL: one visual token per 32 x 32 pixels
IMAGE_SIDE = 896  # a multiple of 28 and 32 within the default pixel budgets: 1024 (784 on Qwen3-VL) visual tokens, no resampling
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every variant, seed 0."""
    root = tmp_path_factory.mktemp("tiny-qwen")
    return {variant: make_tiny_qwen(root / variant, variant=variant, seed=0) for variant in VARIANTS}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- the folder ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_folder_holds_what_the_loaders_read(tiny, variant):
    folder = tiny[variant]
    for name in ["config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json", "tokenizer.json"]:
        assert (folder / name).is_file(), name
    assert read_json(folder / "config.json")["architectures"] == [ARCHITECTURES[variant]]
    processor = read_json(folder / "preprocessor_config.json")
    assert (processor["patch_size"], processor["merge_size"], processor["temporal_patch_size"]) == (PATCH_SIZES[variant], 2, 2)
    assert read_json(folder / "config.json")["vision_config"]["patch_size"] == PATCH_SIZES[variant]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000


def test_qwen3_vl_has_its_video_processor_and_loads_as_its_processor(tiny):
    folder = tiny["qwen3-vl"]
    video = read_json(folder / "video_preprocessor_config.json")
    assert (video["video_processor_type"], video["patch_size"]) == ("Qwen3VLVideoProcessor", 16)
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert processor.image_token_id == read_json(folder / "config.json")["image_token_id"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_sizes_follow_the_rules_of_vllm_and_qwen(tiny, variant):
    config = transformers.AutoConfig.from_pretrained(tiny[variant], local_files_only=True)
    text, vision = config.text_config, config.vision_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert head_dim >= 32
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    out_size = vision.hidden_size if variant == "qwen2-vl" else vision.out_hidden_size
    assert out_size == text.hidden_size
    if variant == "qwen3-vl":  # one DeepStack feature per listed vision layer, each added to one text layer
        assert text.rope_parameters["mrope_interleaved"] is True
        assert all(0 <= i < vision.depth for i in vision.deepstack_visual_indexes)
        assert 1 <= len(vision.deepstack_visual_indexes) <= text.num_hidden_layers
        assert int(vision.num_position_embeddings**0.5) ** 2 == vision.num_position_embeddings


@pytest.mark.parametrize("variant", VARIANTS)
def test_token_ids_of_config_and_tokenizer_agree(tiny, variant):
    config = transformers.AutoConfig.from_pretrained(tiny[variant], local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny[variant], local_files_only=True)
    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)), strict=True))
    assert config.image_token_id == ids["<|image_pad|>"]
    assert config.video_token_id == ids["<|video_pad|>"]
    assert (config.vision_start_token_id, config.vision_end_token_id) == (ids["<|vision_start|>"], ids["<|vision_end|>"])
    assert config.text_config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>"
    assert read_json(tiny[variant] / "generation_config.json")["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    if variant == "qwen3-vl":  # Qwen3's added tokens (<think>, ...) follow the special ones, not special themselves
        added = tokenizer.convert_tokens_to_ids(list(QWEN3_ADDED_TOKENS))
        assert added == list(range(len(tokenizer) - len(QWEN3_ADDED_TOKENS), len(tokenizer)))
        assert not set(added) & set(tokenizer.all_special_ids)


# --- determinism ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tiny, variant, tmp_path):
    again = make_tiny_qwen(tmp_path / "again", variant=variant, seed=0)
    other = make_tiny_qwen(tmp_path / "other", variant=variant, seed=1)
    weights = sha256(tiny[variant] / "model.safetensors")
    assert sha256(again / "model.safetensors") == weights
    assert sha256(other / "model.safetensors") != weights
    assert sha256(other / "tokenizer.json") == sha256(tiny[variant] / "tokenizer.json")


def test_building_leaves_the_callers_random_state_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_qwen(tmp_path, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_an_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        make_tiny_qwen(tmp_path, variant="llava")


# --- tokenizer -----------------------------------------------------------------------


def test_tokenizer_round_trips_any_text_and_keeps_special_tokens_whole(tiny):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny["qwen2-vl"], local_files_only=True)
    text = "Make the dog sit. SELECTED: 7\n\u00e9t\u00e9 \u4f60\u597d \U0001f642 \t tabs"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    for token in SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1


CHAT_TURNS = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
]
CHAT_TURNS_RENDERED = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n"
    "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.mark.parametrize(
    ("variant", "system", "header"),
    [
        ("qwen2-vl", None, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"),
        ("qwen3-vl", None, ""),  # Qwen3-VL adds no system turn of its own
        ("qwen3-vl", "Be terse.", "<|im_start|>system\nBe terse.<|im_end|>\n"),
    ],
)
def test_chat_template_is_the_variants(tiny, variant, system, header):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny[variant], local_files_only=True)
    messages = ([{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []) + CHAT_TURNS
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == header + CHAT_TURNS_RENDERED


# --- the real loaders ------------------------------------------------------------------


def image_prompt(tokenizer) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the picture."}]}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def transformers_greedy(folder: Path, image, prompt: str) -> list[int]:
    """Greedy new token ids from transformers: the model class, the tokenizer and Qwen's PIL image processor.

    The image tokens are marked in mm_token_type_ids, as transformers' own processors do (M-RoPE needs it).
    """
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    processor = transformers.Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
    vision = processor(images=[image], return_tensors="pt")
    n_visual = int(vision["image_grid_thw"].prod()) // processor.merge_size**2
    text = tokenizer(prompt.replace("<|image_pad|>", "<|image_pad|>" * n_visual), return_tensors="pt")
    text["mm_token_type_ids"] = (text["input_ids"] == model.config.image_token_id).long()
    with torch.inference_mode():
        out = model.generate(**text, **vision, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, text["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_loads_it_and_generates_from_a_thousand_visual_tokens(tiny, variant):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny[variant], local_files_only=True)
    image = sample_picture((IMAGE_SIDE, IMAGE_SIDE))
    new = transformers_greedy(tiny[variant], image, image_prompt(tokenizer))
    assert 1 <= len(new) <= NEW_TOKENS
    assert all(0 <= token < len(tokenizer) for token in new)


VLLM_GREEDY = """
import json, sys
from PIL import Image
from vllm import LLM, SamplingParams

args = json.loads(sys.argv[1])
llm = LLM(model=args["model"], dtype="float32", max_model_len=4096, enforce_eager=True,
          distributed_executor_backend="uni", limit_mm_per_prompt={"image": 1, "video": 0})
request = {"prompt": args["prompt"], "multi_modal_data": {"image": Image.open(args["image"]).convert("RGB")}}
params = SamplingParams(temperature=0, max_tokens=args["max_tokens"])
output = llm.generate(request, params, use_tqdm=False)[0]
print("TOKENS " + json.dumps(list(output.outputs[0].token_ids)))
"""


@pytest.mark.parametrize("variant", ["qwen2-vl", "qwen3-vl"])
def test_vllm_loads_it_and_its_greedy_tokens_equal_transformers(tiny, tmp_path, variant):
    """vLLM runs in a child process (its in-process engine pins the process to a core)."""
    pytest.importorskip("vllm")
    folder = tiny[variant]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image, prompt = sample_picture((IMAGE_SIDE, IMAGE_SIDE)), image_prompt(tokenizer)
    image.save(tmp_path / "image.png")
    args = json.dumps({"model": str(folder), "image": str(tmp_path / "image.png"), "prompt": prompt, "max_tokens": NEW_TOKENS})
    env = {**os.environ, **vllm_env()}
    command = [sys.executable, "-c", VLLM_GREEDY, args]
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("TOKENS ")]
    assert run.returncode == 0 and lines, run.stderr[-4000:]
    assert json.loads(lines[-1].removeprefix("TOKENS ")) == transformers_greedy(folder, image, prompt)
