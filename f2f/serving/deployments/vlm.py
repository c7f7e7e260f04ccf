"""The VLM deployment: one loaded VLM backend per replica, answering chat calls.

Rules: the backend is built from `config.vlm` when the replica starts (never
on a request) and closed when the replica stops; `chat` awaits the backend
(each backend keeps the event loop free); `check_health` raises once the
backend is closed or its engine reports a failure, so Serve restarts the
replica and `/readyz` answers 503. Images inside messages are PIL images,
pickled by Ray, as the `Answer` (text and token usage) is on the way back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from f2f.backends import load_vlm
from f2f.config import F2FConfig
from f2f.protocols import VLM, Answer, Message
from f2f.serving.deployments.args import AppArgs, actor_options, replica_options
from f2f.serving.logs import log_to_serve


class VLMDeployment:
    """Serve deployment body: `chat` over the VLM that `config.vlm` describes."""

    def __init__(self, config: F2FConfig) -> None:
        log_to_serve(request_id_is_job=True)  # called by the edit worker only: a request's id is its job's
        self.backend: VLM | None = load_vlm(config)

    @classmethod
    def deployment_options(cls, args: AppArgs) -> dict[str, Any]:
        """Several chats per replica (vLLM batches them)."""
        return {
            "name": "VLM",
            "max_ongoing_requests": args.vlm_max_ongoing_requests,
            "ray_actor_options": actor_options(args.vlm_num_cpus, args.vlm_num_gpus, args.vlm_resources),
            **replica_options(args.vlm_autoscaling),
        }

    async def chat(self, messages: Sequence[Message], max_tokens: int, temperature: float = 0.0) -> Answer:
        return await self._live().chat(messages, max_tokens=max_tokens, temperature=temperature)

    async def check_health(self) -> None:
        """Raise if the backend is closed or its engine is broken (also Serve's replica health check)."""
        backend = self._live()
        if any(getattr(backend, name, True) is None for name in ("model", "engine")):
            raise RuntimeError("the VLM backend has been released")
        engine_check = getattr(getattr(backend, "engine", None), "check_health", None)
        if engine_check is not None:
            await engine_check()  # vLLM's AsyncLLM raises when its engine core died

    def _live(self) -> VLM:
        if self.backend is None:
            raise RuntimeError("the VLM backend is closed")
        return self.backend

    def __del__(self) -> None:
        backend, self.backend = getattr(self, "backend", None), None
        close = getattr(backend, "close", None)
        if close is not None:
            close()
