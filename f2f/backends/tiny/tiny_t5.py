"""The tiny T5 text encoder and tokenizer that the tiny video checkpoints share (CogVideoX's and LTX-Video's T5,
Wan's UMT5).

A Unigram `T5Tokenizer` built from an in-memory vocabulary (specials, a few
whole words, then single characters; `extra_ids` as the real T5 tokenizers):
nothing is downloaded. The text encoders are one small layer (`ENCODER_SIZES`)
over `vocab_size()` ids. Their weights come from torch's global RNG: the caller
seeds it (inside `torch.random.fork_rng`).
"""

from __future__ import annotations

import string
from typing import Any

TEXT_DIM = 32
EXTRA_IDS = 100
_WORDS = "the a of and to in is it on with photo image slowly turns becomes man woman dog cat sits smiles".split()

# One small encoder layer: T5Config / UMT5Config keywords (with d_model, the text width, given by the caller).
ENCODER_SIZES: dict[str, Any] = {
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 1,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 16,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}


def t5_encoder(dim: int = TEXT_DIM, *, umt5: bool = False) -> Any:
    """A one-layer T5 encoder (`umt5`: Wan's UMT5) of width `dim` whose vocabulary matches `t5_tokenizer`."""
    import transformers

    prefix = "UMT5" if umt5 else "T5"
    config = getattr(transformers, f"{prefix}Config")(vocab_size=vocab_size(), d_model=dim, **ENCODER_SIZES)
    return getattr(transformers, f"{prefix}EncoderModel")(config).eval()


def t5_tokenizer(max_tokens: int) -> Any:
    """A Unigram T5 tokenizer from the in-memory vocabulary: <pad>=0, </s>=1, <unk>=2, then pieces."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=vocab(), extra_ids=EXTRA_IDS, model_max_length=max_tokens)


def vocab_size() -> int:
    """Ids the text encoder must embed: the pieces and the extra ids."""
    return len(vocab()) + EXTRA_IDS


def vocab() -> list[tuple[str, float]]:
    """Specials, whole words (preferred), then single characters with and without the word marker."""
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -3.0) for word in _WORDS]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,!?'-"
    pieces += [(f"▁{c}", -8.0) for c in chars]
    pieces += [(c, -9.0) for c in chars]
    return pieces
