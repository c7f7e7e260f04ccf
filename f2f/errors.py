"""Exceptions of the f2f package.

Every error a caller can cause is an `InvalidInput`: it names the field, the
value and the rule, so the CLI (and later the HTTP API) can print it as is and
map it to a typed error body without parsing messages.
"""

from __future__ import annotations

from typing import Any

_MAX_VALUE_REPR = 300  # long enough for paths; prompts are shortened


def _short_repr(value: Any) -> str:
    text = repr(value)
    if len(text) > _MAX_VALUE_REPR:
        text = text[: _MAX_VALUE_REPR - 3] + "..."
    return text


class F2FError(Exception):
    """Base class of every error raised on purpose by f2f."""

    code: str = "f2f_error"


class InvalidInput(F2FError, ValueError):
    """A value given by the caller breaks a rule.

    `field` is the dotted name of what was wrong (``"image"``, ``"text"``,
    ``"video.num_frames"``), `value` what was given, `rule` what is allowed.
    """

    code = "invalid_input"

    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}: {rule} (got {_short_repr(value)})")


class InvalidImage(InvalidInput):
    """The source image cannot be used: unreadable, too large, wrong format."""

    code = "invalid_image"


class InvalidConfig(InvalidInput):
    """A configuration value or file is not valid."""

    code = "invalid_config"


class BackendNotConfigured(F2FError):
    """No model backend is available for an operation that needs one."""

    code = "backend_not_configured"


class VLMEndpointError(F2FError):
    """An OpenAI-compatible VLM endpoint failed or refused a request; `status` is the HTTP status (None: no answer)."""

    code = "vlm_endpoint_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EditCancelled(F2FError):
    """The edit was cancelled by its caller (between stages or denoising steps)."""

    code = "cancelled"


class GeneratorOutOfMemory(F2FError):
    """The video did not fit the accelerator's memory at the settings asked for (the generator stays usable)."""

    code = "out_of_memory"


class ReplicaLost(F2FError):
    """A part of a model replica died mid-call (a rank of a split generator): worth another try elsewhere."""

    code = "replica_lost"


def unwrap(exc: BaseException) -> BaseException:
    """The original exception of one raised in a Ray actor: Ray's wrapper keeps it as `cause`; its own text is Ray's."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
