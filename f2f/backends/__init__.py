"""Model backends behind the core's two protocols (`f2f.protocols`).

Each backend module imports its heavy library (torch, diffusers, vllm,
transformers) itself, so `import f2f` stays light. None is built yet: this
version of f2f ships the method core only, and `build_backends` says so
instead of falling back to anything.
"""

from __future__ import annotations

from f2f.config import F2FConfig
from f2f.errors import BackendNotConfigured
from f2f.protocols import VLM, VideoGenerator


def build_backends(config: F2FConfig) -> tuple[VLM, VideoGenerator]:
    """The VLM and the video generator that `config` asks for."""
    raise BackendNotConfigured(
        "no model backend is configured: this version of f2f ships the Frame2Frame method core "
        "only; the video backend (diffusers CogVideoX) and the VLM backends (vLLM, transformers, "
        "OpenAI-compatible) are not available yet (see the README, 'Status')"
    )
