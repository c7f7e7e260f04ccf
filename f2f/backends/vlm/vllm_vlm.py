"""The vLLM VLM backend, the production engine: Qwen2-VL / Qwen2.5-VL / Qwen3-VL in an `AsyncLLM` engine.

`pip install 'f2f[vllm]'`. Rules:
- the checkpoint is a local folder, checked (config.json only) before the
  engine starts; `trust_remote_code=False`;
- the engine reads at most MAX_IMAGES_PER_PROMPT images and no video per
  prompt, each resized by Qwen's processor within `min_pixels`..`max_pixels`
  (named as the architecture's processor names them: `pixel_bounds`);
- the prompt is Qwen's chat template rendered by the checkpoint's tokenizer;
  the PIL images go to the engine as `multi_modal_data`;
- the answer's usage counts the ids the engine ran: its prompt's, images
  expanded to their visual tokens, and the answer's (`vlm_common.token_usage`);
- a prompt of `max_model_len` tokens or more is refused before it reaches
  the engine (InvalidInput naming vlm.max_model_len); the answer is capped to
  the room left;
- temperature 0 is greedy; the checkpoint's generation_config.json sampling
  settings (repetition_penalty, top_k, top_p) apply as in vLLM's server and
  transformers' `generate`; every call is its own request (a unique id), so
  concurrent calls are batched by the engine;
- dtype auto is bfloat16 on a GPU and float32 on a CPU;
- with `vlm.engine_stats` the engine records its statistics; in a Ray worker
  (a Serve replica) they go to Ray's metrics through vLLM's own
  `RayPrometheusStatLogger` (as Ray Serve LLM does), since a
  `prometheus_client` registry in a replica is not exported; elsewhere to
  vLLM's default loggers;
- the engine belongs to the event loop of its first `chat`: call it from one
  loop for its whole life (one `asyncio.run`, a Serve replica), not from a new
  `asyncio.run` per call.

`engine_kwargs` passes further `AsyncEngineArgs` fields (tests use it to run
the engine core without worker processes:
`{"distributed_executor_backend": "uni", "enforce_eager": True}`); they
override the ones derived from the config.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
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
    visual_tokens,
)
from f2f.config import VLMConfig
from f2f.errors import InvalidInput
from f2f.protocols import Answer, Message, TokenUsage

EXTRA = "vllm"
MAX_IMAGES_PER_PROMPT = 10  # the query image plus up to nine exemplar pictures
_TOO_LONG = re.compile(r"prompt \(length (\d+)\)")


class VllmVLM:
    """A Qwen-VL-family model served by an in-process vLLM `AsyncLLM` engine."""

    def __init__(
        self, engine: Any, tokenizer: Any, checkpoint: Checkpoint, *, max_model_len: int, min_pixels: int, max_pixels: int
    ) -> None:
        self.engine = engine
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer  # our own instance: a fast tokenizer must not be used by two threads at once
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self._tokenizer_lock = threading.Lock()
        self.template = chat_template(tokenizer, checkpoint.path)
        self.max_model_len = max_model_len
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.sampling_defaults = checkpoint_sampling_defaults(engine)

    @classmethod
    def from_config(cls, cfg: VLMConfig, *, engine_kwargs: Mapping[str, Any] | None = None) -> VllmVLM:
        """Start the engine on the checkpoint at `cfg.model_path`."""
        checkpoint = check_checkpoint(cfg.model_path, "vllm")
        import_or_explain("vllm", "vllm", EXTRA)
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**{**engine_args(cfg, checkpoint, _cuda_available()), **(engine_kwargs or {})})
        # No local name for the engine: vLLM keeps this frame alive, and a local would keep the engine alive too.
        return cls(
            AsyncLLM.from_engine_args(args, stat_loggers=stat_loggers(cfg)),
            AutoTokenizer.from_pretrained(checkpoint.path, local_files_only=True, trust_remote_code=False),
            checkpoint,
            max_model_len=args.max_model_len,
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
        )

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        """The model's answer to the conversation (one engine request)."""
        check_messages(messages)
        request, n_prompt = await asyncio.to_thread(self._request, messages)  # resizing and tokenizing take a while
        check_prompt_length(n_prompt, self.max_model_len)
        params = self._sampling_params(answer_budget(n_prompt, max_tokens, self.max_model_len), temperature)
        return await self._generate(request, params)

    def close(self) -> None:
        """Shut the engine down (its engine-core process exits)."""
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def _request(self, messages: Sequence[Message]) -> tuple[dict[str, Any], int]:
        """The engine's prompt (text and images) and its length in tokens."""
        images = [prepare_image(image, self.max_pixels) for image in message_images(messages)]
        with self._tokenizer_lock:
            prompt = render_prompt(self.tokenizer, self.template, messages)
            text_tokens = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        request: dict[str, Any] = {"prompt": prompt}
        if images:
            request["multi_modal_data"] = {"image": images}
        return request, self._count_tokens(text_tokens, images)

    def _count_tokens(self, text_tokens: int, images: list[Any]) -> int:
        """Prompt tokens as the engine counts them: the text's, each image's pad token replaced by its visual tokens."""
        ckpt = self.checkpoint
        visual = sum(visual_tokens(im.size, self.min_pixels, self.max_pixels, ckpt.patch_size, ckpt.merge_size) for im in images)
        return text_tokens - len(images) + visual

    def _sampling_params(self, max_tokens: int, temperature: float) -> Any:
        """Greedy when temperature is 0; the checkpoint's other sampling defaults apply."""
        from vllm import SamplingParams

        return SamplingParams(**self.sampling_defaults, max_tokens=max_tokens, temperature=temperature, skip_special_tokens=True)

    async def _generate(self, request: dict[str, Any], params: Any) -> Answer:
        from vllm.exceptions import VLLMValidationError

        final = None
        try:
            async for output in self.engine.generate(request, params, f"f2f-{uuid.uuid4().hex}"):
                final = output
        except VLLMValidationError as exc:
            raise _as_invalid_input(exc) from exc
        if final is None or not final.outputs:
            return Answer("", TokenUsage(None, None, None))
        output = final.outputs[0]
        return Answer(output.text, token_usage(final.prompt_token_ids, output.token_ids, self.image_token_id))


def engine_args(cfg: VLMConfig, checkpoint: Checkpoint, cuda_available: bool) -> dict[str, Any]:
    """The `AsyncEngineArgs` fields the config decides."""
    return {
        "model": str(checkpoint.path),
        "tokenizer": str(checkpoint.path),
        "trust_remote_code": False,
        "dtype": resolve_device("vlm", "auto", cfg.dtype, cuda_available)[1],
        "max_model_len": cfg.max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "enforce_eager": cfg.enforce_eager,
        "kv_cache_memory_bytes": None if cfg.kv_cache_memory_gib is None else int(cfg.kv_cache_memory_gib * 2**30),
        "limit_mm_per_prompt": {"image": MAX_IMAGES_PER_PROMPT, "video": 0},
        "mm_processor_kwargs": pixel_bounds(checkpoint, cfg.min_pixels, cfg.max_pixels),
        "disable_log_stats": not cfg.engine_stats,
    }


def stat_loggers(cfg: VLMConfig) -> list[Any] | None:
    """vLLM's stat loggers beside its defaults: Ray's metrics in a Ray worker (its prometheus_client one is not exported)."""
    if not cfg.engine_stats or not _in_ray():
        return None
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    return [RayPrometheusStatLogger]  # it takes the place of vLLM's own Prometheus logger


def _in_ray() -> bool:
    ray = sys.modules.get("ray")  # a Ray worker has imported it; nothing else needs to
    return ray is not None and ray.is_initialized()


def pixel_bounds(checkpoint: Checkpoint, min_pixels: int, max_pixels: int) -> dict[str, Any]:
    """The image pixel bounds as the checkpoint's processor names them.

    Qwen2-VL / Qwen2.5-VL: `min_pixels` / `max_pixels`. Qwen3-VL: the `size`
    edges, the one form both its image and its video processor accept.
    """
    if checkpoint.architecture == "Qwen3VLForConditionalGeneration":
        return {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}
    return {"min_pixels": min_pixels, "max_pixels": max_pixels}


def checkpoint_sampling_defaults(engine: Any) -> dict[str, Any]:
    """The checkpoint's generation_config.json sampling settings (e.g. repetition_penalty), as vLLM's server applies them.

    transformers' `generate` applies them too, so every backend samples alike;
    the caller's temperature and max_tokens always win.
    """
    defaults = engine.model_config.get_diff_sampling_param()
    return {key: value for key, value in defaults.items() if key not in ("temperature", "max_tokens")}


def _as_invalid_input(exc: Exception) -> InvalidInput:
    """vLLM's own refusal of a request, as the InvalidInput it is (a too-long prompt names vlm.max_model_len)."""
    found = _TOO_LONG.search(str(exc))
    if found:
        return InvalidInput("vlm.max_model_len", int(found.group(1)), f"the engine refused the prompt: {exc}")
    return InvalidInput("messages", None, f"the engine refused the request: {exc}")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
