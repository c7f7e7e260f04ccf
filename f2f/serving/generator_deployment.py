"""The video generator deployment: one loaded CogVideoX pipeline per replica.

Rules: the generator is built from `config.generator` and checked against
`config.video` when the replica starts (a checkpoint that cannot generate the
configured canvas or frame count fails the deployment, naming the field);
one video job per replica at a time (`max_ongoing_requests=1`, set by the
app builder); `generate` awaits the backend, which runs the pipeline in a
worker thread. Progress and cancellation stay in this replica in this slice:
the ingress gets the clips only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from f2f.backends import load_generator
from f2f.config import F2FConfig, VideoConfig
from f2f.protocols import Frames


class GeneratorDeployment:
    """Serve deployment body: `generate` over the CogVideoX checkpoint of `config.generator`."""

    def __init__(self, config: F2FConfig) -> None:
        self.backend: Any = load_generator(config)

    async def generate(self, image: Image.Image, caption: str, seeds: Sequence[int], settings: VideoConfig) -> list[Frames]:
        if self.backend is None:
            raise RuntimeError("the video generator is closed")
        return await self.backend.generate(image, caption, seeds, settings)

    async def check_health(self) -> None:
        """Raise if the pipeline is released (also Serve's replica health check)."""
        if self.backend is None or getattr(self.backend, "_pipe", True) is None:
            raise RuntimeError("the video generator has been released")

    def __del__(self) -> None:
        backend, self.backend = getattr(self, "backend", None), None
        if backend is not None:
            backend.close()
