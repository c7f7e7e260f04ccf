"""Tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints, built offline, for tests and the demo.

`make_tiny_qwen` writes a folder laid out like a real Qwen*-VL-Instruct
checkpoint (config.json, model.safetensors, generation_config.json,
tokenizer files with Qwen's chat template, preprocessor_config.json; Qwen3-VL
also video_preprocessor_config.json) from the REAL transformers classes, so
every loader (transformers, vLLM, vLLM's OpenAI server) reads it through the
same code paths as the real 7B / 8B weights. The weights are random: the
model writes garbage text, quickly.

Rules the sizes follow (vLLM on CPU and the Qwen-VL layouts need them):
- text head size 32 (vLLM's CPU attention supports 32, 64, 80, ...);
- `mrope_section` sums to head_dim / 2 (Qwen3-VL: interleaved, as in the
  real config);
- the vision tower's output size (Qwen2-VL `hidden_size`, Qwen2.5-VL and
  Qwen3-VL `out_hidden_size`) equals the text hidden size;
- Qwen3-VL: 16-pixel patches (one visual token per 32x32 pixels), a learnt
  position grid of `num_position_embeddings` (a square), and one DeepStack
  merger per `deepstack_visual_indexes` entry, each a vision layer and no
  more than the text layers it is added to;
- the image, video and vision-start/end token ids in the config are the ids
  the tokenizer gives those special tokens; the model's vocabulary is exactly
  the tokenizer's.

Deterministic: the same variant and seed give byte-identical weights; the
tokenizer is trained on a fixed corpus and does not depend on the seed.
Nothing is downloaded. Needs torch, transformers and tokenizers
(`pip install 'f2f[transformers]'`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from f2f.errors import BackendNotConfigured

Variant = Literal["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]

# Qwen2's special tokens, in Qwen's order (their ids follow the trained vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen3's further added tokens (not special: skip_special_tokens keeps them), after SPECIAL_TOKENS as in Qwen3-VL.
QWEN3_ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# Qwen2-VL-Instruct's chat template (Qwen2.5-VL uses the same one).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL-Instruct's chat template without its tool branches (f2f sends no tools): no default system
# turn; a system turn counts only as the first message; list contents of any role may hold text.
QWEN3_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for content in messages[0].content %}{%- if 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}{%- for content_item in message.content %}"
    "{%- if 'text' in content_item %}{{- content_item.text }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2's pre-tokenizer split (as in transformers' Qwen2Tokenizer).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

BPE_VOCAB_SIZE = 1024  # at most: the byte alphabet (256) + merges the corpus supports (about 450 in all)
TOKENIZER_CORPUS = """\
A photo of a sitting dog. Make the dog sit. The dog slowly sits down on the grass.
The sun slowly sets behind the hills, and the sky turns orange and then dark blue.
A woman raises her arms above her head. The man turns his head to the left and smiles.
The cat jumps onto the table. The car drives away down the road. Snow begins to fall.
The flower opens its petals. The child waves at the camera. The bird spreads its wings.
The top picture, labelled SOURCE, is an original image. Below it are frames, labelled
1 to 12 in time order, from a clip that starts at the source and moves toward this edit.
Choose the LOWEST label whose frame achieves the edit fully and naturally.
Reply with exactly one line and nothing else: SELECTED: 0 1 2 3 4 5 6 7 8 9 10 11 12
You are a helpful assistant. Caption: Answer: Output: Here is the caption.
"""

_CONFIG_CLASSES = {"qwen2-vl": "Qwen2VLConfig", "qwen2.5-vl": "Qwen2_5_VLConfig", "qwen3-vl": "Qwen3VLConfig"}
_MODEL_CLASSES = {
    "qwen2-vl": "Qwen2VLForConditionalGeneration",
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3-vl": "Qwen3VLForConditionalGeneration",
}

# Text model: hidden 128 = 4 heads x 32; mrope_section [4, 6, 6] sums to 32 / 2.
TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
    "rope_theta": 1_000_000.0,
}
# Qwen3-VL's text model (Qwen3: q/k norms, an explicit head_dim); the real [24, 20, 20] of 64, scaled to 16.
QWEN3_TEXT = {
    **{key: TEXT[key] for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")},
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [6, 5, 5], "mrope_interleaved": True},
}
PATCH = {"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
VISION = {
    "qwen2-vl": {"depth": 2, "embed_dim": 64, "num_heads": 2, "mlp_ratio": 2, "hidden_size": TEXT["hidden_size"], **PATCH},
    "qwen2.5-vl": {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "out_hidden_size": TEXT["hidden_size"],
        "window_size": 448,  # real: 112; fewer windows keep the CPU vision tower fast (3.4 s -> 0.3 s at 1024 tokens)
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
        **PATCH,
    },
    "qwen3-vl": {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,  # vision head size 32
        "out_hidden_size": TEXT["hidden_size"],
        "num_position_embeddings": 2304,  # the real 48 x 48 grid, interpolated to each image
        "deepstack_visual_indexes": [0, 1],  # real: [8, 16, 24] of 27 layers; added to text layers 0 and 1
        "hidden_act": "gelu_pytorch_tanh",
        **PATCH,
        "patch_size": 16,
    },
}
# Qwen2-VL's image processor defaults (the real checkpoints use 3136 .. 12845056 pixels).
PREPROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12_845_056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}
# Qwen3-VL-8B-Instruct's image and video processor configs: 16-pixel patches, merged 2 x 2 (32 x 32 pixels a token).
_QWEN3_PIXELS = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
QWEN3_PREPROCESSOR = {
    "size": {"shortest_edge": 65_536, "longest_edge": 16_777_216},
    **_QWEN3_PIXELS,
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "processor_class": "Qwen3VLProcessor",
}
QWEN3_VIDEO_PREPROCESSOR = {
    "size": {"shortest_edge": 4096, "longest_edge": 25_165_824},
    **_QWEN3_PIXELS,
    "video_processor_type": "Qwen3VLVideoProcessor",
    "processor_class": "Qwen3VLProcessor",
}


def make_tiny_qwen(out_dir: str | Path, *, variant: Variant = "qwen2-vl", seed: int = 0) -> Path:
    """Write a tiny random-weight checkpoint of the real Qwen2-VL, Qwen2.5-VL or Qwen3-VL class into `out_dir`.

    Returns the folder. Same variant and seed -> byte-identical weights.
    The caller's torch random state is left as it was.
    """
    if variant not in _MODEL_CLASSES:
        raise ValueError(f"variant must be one of {sorted(_MODEL_CLASSES)} (got {variant!r})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(variant)
    tokenizer.save_pretrained(out)
    model = _random_model(variant, _model_config(variant, tokenizer), seed)
    model.save_pretrained(out)
    _write_json(out / "generation_config.json", _generation_config(tokenizer))
    if variant == "qwen3-vl":
        _write_json(out / "preprocessor_config.json", QWEN3_PREPROCESSOR)
        _write_json(out / "video_preprocessor_config.json", QWEN3_VIDEO_PREPROCESSOR)
    else:
        _write_json(out / "preprocessor_config.json", PREPROCESSOR)
    return out


def build_tokenizer(variant: Variant = "qwen2-vl") -> Any:
    """A byte-level BPE tokenizer in Qwen2's layout, trained in-process on a fixed corpus.

    The vocabulary is the byte alphabet plus merges learnt from
    TOKENIZER_CORPUS, then SPECIAL_TOKENS (Qwen3-VL: then QWEN3_ADDED_TOKENS);
    the chat template is the variant's.
    """
    transformers = _import("transformers")
    vocab, merges = _train_bpe()
    tokenizer = transformers.Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:]),
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if variant == "qwen3-vl":
        tokenizer.add_tokens(list(QWEN3_ADDED_TOKENS))
        tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a byte-level BPE trained with Qwen2's pre-tokenizer; ids in the trainer's order."""
    _import("tokenizers")
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[SPECIAL_TOKENS[0]],  # keeps it whole; re-added after the learnt tokens
    )
    bpe.train_from_iterator(_corpus_lines(), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    learnt = sorted((t for t in state["vocab"] if t != SPECIAL_TOKENS[0]), key=state["vocab"].__getitem__)
    return {token: i for i, token in enumerate([*learnt, *SPECIAL_TOKENS])}, merges


def _corpus_lines() -> list[str]:
    """TOKENIZER_CORPUS and f2f's caption instruction, so f2f's prompts take realistic token counts."""
    from f2f.caption import CAPTION_INSTRUCTION

    return (TOKENIZER_CORPUS + CAPTION_INSTRUCTION).splitlines(keepends=True)


def _model_config(variant: Variant, tokenizer: Any) -> Any:
    """The config of the real architecture class with tiny sizes and the tokenizer's token ids."""
    transformers = _import("transformers")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config_class = getattr(transformers, _CONFIG_CLASSES[variant])
    return config_class(
        text_config={
            **(QWEN3_TEXT if variant == "qwen3-vl" else TEXT),
            "vocab_size": len(tokenizer),
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=VISION[variant],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )


def _random_model(variant: Variant, config: Any, seed: int) -> Any:
    """The real model class with weights drawn from `seed`, without touching the caller's RNG."""
    torch, transformers = _import("torch"), _import("transformers")
    model_class = getattr(transformers, _MODEL_CLASSES[variant])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.to(torch.float32).eval()


def _generation_config(tokenizer: Any) -> dict[str, Any]:
    """Greedy by default, stopping at <|im_end|> or <|endoftext|> like Qwen2-VL-Instruct."""
    ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    return {"bos_token_id": ids[1], "pad_token_id": ids[1], "eos_token_id": ids, "do_sample": False}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _import(name: str) -> Any:
    """The module `name`, or BackendNotConfigured naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendNotConfigured(f"building a tiny Qwen-VL needs {name} ({exc}): pip install 'f2f[transformers]'") from None
