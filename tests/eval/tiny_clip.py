"""A tiny random-weight CLIP checkpoint (transformers' CLIPModel, a character-level CLIP tokenizer, the PIL image
processor), built offline and saved like a real one, so f2f.eval.clip loads it through the real code paths."""

from __future__ import annotations

from pathlib import Path

SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    # 1. A tokenizer: every letter alone and at a word's end; no merges
    letters = "abcdefghijklmnopqrstuvwxyz.,'"
    vocab = {c: i for i, c in enumerate(letters)} | {f"{c}</w>": len(letters) + i for i, c in enumerate(letters)}
    vocab |= {token: len(vocab) + i for i, token in enumerate(SPECIAL)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.save_pretrained(str(folder))
    # 2. The model: both towers of width 32, a 32x32 image in 8x8 patches
    torch.manual_seed(seed)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text |= {
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": vocab[SPECIAL[0]],
        "eos_token_id": vocab[SPECIAL[1]],
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(folder))
    # 3. The image processor: the shortest side to 32, centre crop 32x32
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder
