"""Helpers of the VLM tests (a plain module: the test files import what they use).

- `LoopThread`: one event loop in a thread for a whole module, so engines
  that bind to a loop (vLLM's AsyncLLM) serve every test.
- `vllm_env` / `IN_PROCESS_ENGINE` / `VllmServer`: vLLM on this CPU machine:
  no worker processes, no compilation, a small KV cache, caches in a temp
  folder, nothing sent anywhere.
- `ScriptedHTTPServer`: a stdlib HTTP server on 127.0.0.1 that answers from a
  script, for the OpenAI backend's retry and error paths.
- `min_tokens`: the fewest tokens that can have produced a decoded answer.
- `caption_conversation` / `selection_conversation`: f2f's real prompts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

from f2f.caption import caption_messages, load_exemplars
from f2f.protocols import Message
from f2f.selection import make_collage, selection_messages

EDIT = "make the dog sit"
NUM_CANDIDATES = 12
IN_PROCESS_ENGINE = {"distributed_executor_backend": "uni", "enforce_eager": True}
SERVER_START_TIMEOUT_S = 180


# --- prompts ------------------------------------------------------------------------


def sample_picture(size: tuple[int, int] = (96, 64), shift: float = 0.0) -> Image.Image:
    """A deterministic RGB picture with structure (a Mandelbrot crop)."""
    return Image.effect_mandelbrot(size, (-2.0 + shift, -1.2, 1.0 + shift, 1.2), 40).convert("RGB")


def caption_conversation(image: Image.Image | None = None) -> list[Message]:
    """f2f's caption prompt: the nine packaged exemplars, then the image and the edit."""
    return caption_messages(image or sample_picture(), EDIT, load_exemplars())


def selection_conversation(max_pixels: int = 1_003_520) -> list[Message]:
    """f2f's selection prompt over a real collage of twelve candidates, `max_pixels` large."""
    source = sample_picture()
    candidates = [sample_picture(shift=0.05 * i) for i in range(1, NUM_CANDIDATES + 1)]
    return selection_messages(make_collage(source, candidates, 4, max_pixels), EDIT, NUM_CANDIDATES)


def long_conversation(n_words: int) -> list[Message]:
    """One user turn of `n_words` words (about one token each with the tiny tokenizer)."""
    return [{"role": "user", "content": [{"type": "text", "text": " the" * n_words}]}]


# --- one event loop for a module ----------------------------------------------------


class LoopThread:
    """An asyncio loop running in a daemon thread; `run` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vlm-test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# --- vLLM on this CPU ---------------------------------------------------------------


def vllm_cache_dir() -> Path:
    """vLLM's cache for the tests, shared by every test process of this user (a cold one costs ~10 s per engine)."""
    return Path(tempfile.gettempdir()) / f"f2f-tests-vllm-cache-{os.getuid()}"


def vllm_env() -> dict[str, str]:
    """Environment for vLLM in tests: in-process worker, 1 GiB KV cache, the tests' cache folder, offline."""
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(vllm_cache_dir()),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmServer:
    """vLLM's own OpenAI-compatible API server on 127.0.0.1, as a subprocess (`vllm serve` is broken in vllm-cpu)."""

    def __init__(self, model_dir: Path, work_dir: Path, *, api_key: str, max_model_len: int = 16384) -> None:
        self.port = free_port()
        self.api_key = api_key
        self.log_path = work_dir / "vllm-server.log"
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port),
            "--api-key", api_key, "--max-model-len", str(max_model_len), "--dtype", "float32",
            "--enforce-eager", "--distributed-executor-backend", "uni", "--disable-log-stats",
            "--limit-mm-per-prompt", json.dumps({"image": 10, "video": 0}),
        ]  # fmt: skip
        env = {**os.environ, **vllm_env()}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=work_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        """Return once GET /v1/models answers 200; fail with the log's tail if the server dies or takes too long."""
        import httpx

        deadline = time.monotonic() + timeout_s
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/models", headers=headers, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the vLLM server did not answer within {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the server's own process group (its engine core included)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def log_tail(self, n_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:]


# --- a scripted HTTP endpoint ------------------------------------------------------


class ScriptedHTTPServer:
    """Answers requests on 127.0.0.1 with `script` (status, JSON body, headers) in order; the last one repeats.

    `requests` records (method, path, headers, JSON body or None) of every request.
    """

    def __init__(self, script: Sequence[tuple[int, Any, dict[str, str]]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                self._answer(json.loads(self.rfile.read(length) or b"null"))

            def _answer(self, body: Any) -> None:
                owner.requests.append((self.command, self.path, dict(self.headers), body))
                status, payload, headers = owner.script[min(len(owner.requests), len(owner.script)) - 1]
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def completion(text: str, **usage: int) -> dict[str, Any]:
    """An OpenAI chat completion body answering `text`, with `usage` (prompt_tokens, ...) when given."""
    body: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }
    return body | ({"usage": usage} if usage else {})


# --- counting tokens of a decoded answer ---------------------------------------------


def _byte_alphabet() -> dict[str, int]:
    """GPT-2 / Qwen byte-level BPE: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def token_bytes(tokenizer: Any) -> list[bytes]:
    """The bytes of every token an answer decodes from: the byte-level BPE tokens, and the added tokens that
    are not special (Qwen3's <think>, <tool_call>, ...: skip_special_tokens keeps them) as their text."""
    alphabet = _byte_alphabet()
    added = tokenizer.added_tokens_decoder
    plain = [i for i in range(len(tokenizer)) if i not in added and i not in set(tokenizer.all_special_ids)]
    learnt = [bytes(alphabet[c] for c in token) for token in tokenizer.convert_ids_to_tokens(plain)]
    return learnt + [token.content.encode() for token in added.values() if not token.special]


def min_tokens(answer: str, vocabulary: Sequence[bytes]) -> int:
    """The fewest tokens that decode to `answer` (a lower bound when it holds U+FFFD).

    Decoding is UTF-8 with replacement, so each U+FFFD stands for 1 to 3
    unknown bytes, which any token bytes may fill. Special tokens decode to
    nothing and are not counted. A breadth-first search over positions
    (character, byte within it): every token costs one step.
    """
    units = [None if c == "\ufffd" else c.encode() for c in answer]  # None: 1..3 unknown bytes
    goal, best = (len(units), 0), {(0, 0): 0}
    queue = collections.deque([(0, 0)])
    while queue:
        state = queue.popleft()
        if state == goal:
            return best[state]
        for token in vocabulary:
            for end in _token_ends(units, state, token):
                if end not in best:
                    best[end] = best[state] + 1
                    queue.append(end)
    raise AssertionError(f"no token sequence decodes to {answer!r}")


def _token_ends(units: list[bytes | None], start: tuple[int, int], token: bytes) -> set[tuple[int, int]]:
    """Where `token` can end when its bytes are laid on the answer from `start`."""
    frontier = _closure(units, start)
    for byte in token:
        frontier = {moved for state in frontier if (moved := _step(units, state, byte)) is not None}
        frontier = {reached for state in frontier for reached in _closure(units, state)}
        if not frontier:
            break
    return frontier


def _closure(units: list[bytes | None], state: tuple[int, int]) -> set[tuple[int, int]]:
    """`state`, and the next character's start when an unknown unit already has a byte (it may end there)."""
    i, offset = state
    if i < len(units) and units[i] is None and offset >= 1:
        return {state, (i + 1, 0)}
    return {state}


def _step(units: list[bytes | None], state: tuple[int, int], byte: int) -> tuple[int, int] | None:
    i, offset = state
    if i >= len(units):
        return None
    unit = units[i]
    if unit is not None and unit[offset] != byte:
        return None
    offset += 1
    return (i + 1, 0) if offset == (3 if unit is None else len(unit)) else (i, offset)
