"""The transformers VLM backend: Qwen2-VL / Qwen2.5-VL / Qwen3-VL through `AutoModelForImageTextToText`.

For CPUs and small installs (`pip install 'f2f[transformers]'`); production
uses the vLLM backend. Rules:
- the checkpoint is a local folder (`local_files_only=True`,
  `trust_remote_code=False`), checked before any weight is loaded;
- device and dtype come from the config (auto: cuda + bfloat16 when a GPU is
  there, else cpu + float32);
- images are read by Qwen's image processor (its PIL flavour, so torchvision
  is not needed; Qwen3-VL uses the same class, with 16-pixel patches) within
  `min_pixels`..`max_pixels`, passed as its `size` edges;
- image tokens are marked in `mm_token_type_ids` (as transformers' own Qwen
  processors do) where the model takes it (transformers 5): without it,
  `generate` silently gives the visual tokens text positions instead of
  M-RoPE's 3-D ones;
- one `generate` runs at a time, in a worker thread, so the event loop stays
  free; temperature 0 is greedy decoding;
- the answer is the new text only, special tokens skipped; its usage counts
  the prompt's ids and the generated ones (`vlm_common.token_usage`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

from f2f.backends import resolve_device
from f2f.backends.vlm.vlm_common import (
    IMAGE_TOKEN,
    Checkpoint,
    answer_budget,
    chat_template,
    check_checkpoint,
    check_messages,
    check_prompt_length,
    import_or_explain,
    message_images,
    prepare_image,
    render_prompt,
    token_usage,
)
from f2f.config import VLMConfig
from f2f.errors import InvalidInput
from f2f.protocols import Answer, Message

EXTRA = "transformers"


class TransformersVLM:
    """A Qwen-VL-family model run by transformers in this process."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        template: str,
        *,
        max_model_len: int,
        min_pixels: int,
        max_pixels: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.image_processor = image_processor
        self.template = template
        self.max_model_len = max_model_len
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.marks_image_tokens = "mm_token_type_ids" in inspect.signature(model.forward).parameters
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, cfg: VLMConfig) -> TransformersVLM:
        """Load the checkpoint at `cfg.model_path` onto the configured device and dtype."""
        checkpoint = check_checkpoint(cfg.model_path, "transformers")
        torch = import_or_explain("torch", "transformers", EXTRA)
        transformers = import_or_explain("transformers", "transformers", EXTRA)
        device, dtype = resolve_device("vlm", cfg.device, cfg.dtype, torch.cuda.is_available())
        model = _load_model(transformers, checkpoint, getattr(torch, dtype)).to(device).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint.path, local_files_only=True, trust_remote_code=False)
        return cls(
            model,
            tokenizer,
            _load_image_processor(transformers, checkpoint),
            chat_template(tokenizer, checkpoint.path),
            max_model_len=cfg.max_model_len,
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
        )

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        """The model's answer to the conversation; one generation at a time, off the event loop."""
        check_messages(messages)
        async with self._lock:
            return await asyncio.to_thread(self._answer, messages, max_tokens, temperature)

    def close(self) -> None:
        """Drop the model so its memory can be freed (the object is unusable afterwards)."""
        on_cuda = self.model is not None and self.model.device.type == "cuda"
        self.model = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    # --- in the worker thread ---------------------------------------------------

    def _answer(self, messages: Sequence[Message], max_tokens: int, temperature: float) -> Answer:
        inputs = self._inputs(messages)
        n_prompt = inputs["input_ids"].shape[1]
        check_prompt_length(n_prompt, self.max_model_len)
        budget = answer_budget(n_prompt, max_tokens, self.max_model_len)
        new = self._generate(inputs, budget, temperature)[0, n_prompt:]
        usage = token_usage(inputs["input_ids"][0].tolist(), new.tolist(), self.image_token_id)
        return Answer(self.tokenizer.decode(new, skip_special_tokens=True), usage)

    def _inputs(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Token ids (each image's pad token repeated once per visual token), pixels and grids, on the model's device."""
        prompt = render_prompt(self.tokenizer, self.template, messages)
        images = [prepare_image(image, self.max_pixels) for image in message_images(messages)]
        vision: dict[str, Any] = {}
        if images:
            size = {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}
            vision = dict(self.image_processor(images=images, size=size, return_tensors="pt"))
            prompt = _expand_image_tokens(prompt, vision["image_grid_thw"], self.image_processor.merge_size)
        text = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        if images and self.marks_image_tokens:
            text["mm_token_type_ids"] = (text["input_ids"] == self.image_token_id).long()
        return {key: value.to(self.model.device) for key, value in {**text, **vision}.items()}

    def _generate(self, inputs: dict[str, Any], max_new_tokens: int, temperature: float) -> Any:
        import torch

        sampling: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature}
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            return self.model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad, **sampling)


def _load_model(transformers: Any, checkpoint: Checkpoint, dtype: Any) -> Any:
    return transformers.AutoModelForImageTextToText.from_pretrained(
        checkpoint.path, local_files_only=True, trust_remote_code=False, dtype=dtype
    )


def _load_image_processor(transformers: Any, checkpoint: Checkpoint) -> Any:
    """Qwen2-VL's PIL image processor (Qwen2.5-VL and Qwen3-VL use the same one); it needs no torchvision.

    transformers 5 calls it Qwen2VLImageProcessorPil; in transformers 4 the
    PIL one is Qwen2VLImageProcessor.
    """
    processor_class = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    return processor_class.from_pretrained(checkpoint.path, local_files_only=True)


def _expand_image_tokens(prompt: str, grids: Any, merge_size: int) -> str:
    """Each image's single pad token becomes one pad token per visual token (t*h*w / merge_size^2)."""
    parts = prompt.split(IMAGE_TOKEN)
    if len(parts) - 1 != len(grids):
        raise InvalidInput("messages", IMAGE_TOKEN, f"the text must not contain the model's image token {IMAGE_TOKEN}")
    counts = [int(grid.prod()) // merge_size**2 for grid in grids]
    return parts[0] + "".join(IMAGE_TOKEN * n + rest for n, rest in zip(counts, parts[1:], strict=True))
