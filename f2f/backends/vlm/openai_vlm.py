"""The OpenAI-compatible VLM backend: any `/v1/chat/completions` endpoint (an existing vLLM server, say).

`pip install 'f2f[openai]'` (httpx). Rules:
- `vlm.base_url` is required (`http://host:port/v1`); `vlm.model_name` null
  asks `GET {base_url}/models` once and uses the first id; `vlm.api_key` is
  sent as a bearer token;
- images are sent as base64 PNG data URLs, shrunk on our side to at most
  `vlm.max_pixels` (aspect ratio kept);
- a connection error, 408, 429 or 5xx is retried `vlm.max_retries` times,
  waiting `backoff_s * 2**attempt` seconds (or the server's Retry-After, up
  to MAX_WAIT_S); an answer that takes longer than `vlm.timeout_s` is not
  retried (the server is still working on it);
- the server's own settings decide the context length and the image pixel
  floor: `vlm.max_model_len` and `vlm.min_pixels` are not used here;
- the answer's usage is the endpoint's `usage` (prompt and completion
  tokens; unknown where it gives none); it does not say how many of the
  prompt's tokens were the images', so their split is unknown;
- a 4xx is a `VLMEndpointError` naming the status and the server's message,
  except a prompt over the server's context length, which is an
  `InvalidInput` naming vlm.max_model_len;
- each call opens its own connection pool, so nothing outlives a call and
  any event loop may call; `close()` has nothing to release.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from f2f.backends.vlm.vlm_common import check_messages, import_or_explain, prepare_image
from f2f.config import VLMConfig
from f2f.errors import BackendNotConfigured, InvalidConfig, InvalidInput, VLMEndpointError
from f2f.protocols import Answer, Message, TokenUsage

EXTRA = "openai"
RETRY_STATUSES = frozenset({408, 429})
MAX_WAIT_S = 30.0
_CONTEXT = re.compile(r"maximum (?:context|model) length", re.IGNORECASE)
_PROMPT_TOKENS = re.compile(r"(?:prompt contains|length|has) (?:at least )?(\d+)(?: input)? tokens|\(length (\d+)\)")


class OpenAIVLM:
    """A VLM behind an OpenAI-compatible chat completions endpoint."""

    def __init__(
        self,
        base_url: str | None,
        *,
        model_name: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        max_pixels: int = 1_003_520,
        backoff_s: float = 0.5,
    ) -> None:
        self.base_url = _check_base_url(base_url)
        self.httpx = import_or_explain("httpx", "openai", EXTRA)
        self.model_name = model_name
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_pixels = max_pixels
        self.backoff_s = backoff_s

    @classmethod
    def from_config(cls, cfg: VLMConfig, *, backoff_s: float = 0.5) -> OpenAIVLM:
        """The endpoint at `cfg.base_url`; nothing is contacted until the first call.

        The token is `vlm.api_key`, or the environment variable `vlm.api_key_env` names (which must be set).
        """
        api_key = cfg.api_key.get_secret_value() if cfg.api_key else None
        if cfg.api_key_env is not None:
            api_key = os.environ.get(cfg.api_key_env)
            if not api_key:
                raise BackendNotConfigured(f"vlm.api_key_env: the environment variable {cfg.api_key_env} is not set or empty")
        return cls(
            cfg.base_url,
            model_name=cfg.model_name,
            api_key=api_key,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            max_pixels=cfg.max_pixels,
            backoff_s=backoff_s,
        )

    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        """The endpoint's answer to the conversation."""
        check_messages(messages)
        wire = await asyncio.to_thread(self.wire_messages, messages)  # PNG encoding takes a while
        async with self._client() as client:
            body = {
                "model": await self._model(client),
                "messages": wire,
                "max_tokens": max_tokens,
                "temperature": temperature,
            }
            data = await self._request(client, "POST", "/chat/completions", json=body)
        return Answer(_answer_text(data), _usage(data))

    def close(self) -> None:
        """Nothing to release: every call closes its own connections."""

    def wire_messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """The messages as the endpoint reads them: each image part becomes a PNG data URL."""
        out = []
        for message in messages:
            content = message["content"]
            if not isinstance(content, str):
                content = [self._wire_part(part) for part in content]
            out.append({"role": message["role"], "content": content})
        return out

    def _wire_part(self, part: dict[str, Any]) -> dict[str, Any]:
        if part["type"] != "image":
            return dict(part)
        return {"type": "image_url", "image_url": {"url": png_data_url(prepare_image(part["image"], self.max_pixels))}}

    # --- HTTP ----------------------------------------------------------------------

    def _client(self) -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return self.httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout_s)

    async def _model(self, client: Any) -> str:
        """The configured model name, else the first id the endpoint lists (asked once)."""
        if self.model_name is None:
            data = await self._request(client, "GET", "/models")
            ids = [item.get("id") for item in data.get("data") or [] if isinstance(item, dict)]
            if not ids or not isinstance(ids[0], str):
                raise VLMEndpointError(f"{self.base_url}/models lists no model; set vlm.model_name")
            self.model_name = ids[0]
        return self.model_name

    async def _request(self, client: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON answer to one request, retrying connection errors, 408, 429 and 5xx."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = await client.request(method, path, **kwargs)
            except (self.httpx.ReadTimeout, self.httpx.WriteTimeout):  # the server is busy with it: no retry
                raise VLMEndpointError(f"{method} {self.base_url}{path}: no answer within {self.timeout_s} s") from None
            except self.httpx.TransportError as exc:
                if not last:
                    await asyncio.sleep(self._wait(attempt, None))
                    continue
                raise VLMEndpointError(f"{method} {self.base_url}{path}: cannot connect ({exc!r})") from None
            if _retryable(response.status_code) and not last:
                await asyncio.sleep(self._wait(attempt, response.headers.get("retry-after")))
                continue
            return _json_or_raise(response, method, f"{self.base_url}{path}")
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before the next try: the server's Retry-After if it gives one, else exponential backoff."""
        try:
            wait = float(retry_after) if retry_after is not None else self.backoff_s * 2**attempt
        except ValueError:
            wait = self.backoff_s * 2**attempt
        return min(max(wait, 0.0), MAX_WAIT_S)


def _check_base_url(base_url: str | None) -> str:
    if not base_url:
        raise InvalidConfig("vlm.base_url", base_url, "the openai backend needs the endpoint, e.g. http://vllm:8000/v1")
    if not base_url.startswith(("http://", "https://")):
        raise InvalidConfig("vlm.base_url", base_url, "must start with http:// or https://")
    return base_url.rstrip("/")


def _retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def _json_or_raise(response: Any, method: str, url: str) -> dict[str, Any]:
    """The response's JSON object; an error status is raised with the server's message."""
    status = response.status_code
    if status >= 400:
        message = _server_message(response)
        if status == 400 and _CONTEXT.search(message):
            raise _context_error(message)
        raise VLMEndpointError(f"{method} {url} answered {status}: {message}", status)
    try:
        data = response.json()
    except ValueError:
        raise VLMEndpointError(f"{method} {url} answered {status} with a body that is not JSON", status) from None
    if not isinstance(data, dict):
        raise VLMEndpointError(f"{method} {url} answered {status} with JSON that is not an object", status)
    return data


def _server_message(response: Any) -> str:
    """`error.message` of an OpenAI-style error body, else `message` or `detail`, else the body's start."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])
    return str(data)[:500]


def _context_error(message: str) -> InvalidInput:
    """The server's "maximum context length" refusal, as InvalidInput naming vlm.max_model_len."""
    found = _PROMPT_TOKENS.search(message)
    n_tokens = int(next(g for g in found.groups() if g)) if found else None
    rule = f"the prompt is longer than the endpoint's context length (server: {message})"
    if n_tokens is not None:
        rule = f"the prompt has {n_tokens} tokens, more than the endpoint's context length allows (server: {message})"
    return InvalidInput("vlm.max_model_len", n_tokens, rule)


def _answer_text(data: dict[str, Any]) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise VLMEndpointError(f"the endpoint's answer has no choices[0].message: {str(data)[:300]}") from None
    return content or ""


def _usage(data: dict[str, Any]) -> TokenUsage:
    """The endpoint's count of the call's tokens; a count it does not give is unknown, and so is the images' share."""
    usage = data.get("usage")
    counts = usage if isinstance(usage, dict) else {}
    prompt, completion = counts.get("prompt_tokens"), counts.get("completion_tokens")
    return TokenUsage(prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None, None)


def png_data_url(image: Image.Image) -> str:
    """`data:image/png;base64,...` of the image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
