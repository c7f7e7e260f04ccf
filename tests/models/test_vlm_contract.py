"""One contract for every VLM: the scripted fake, transformers, vLLM (in-process engine) and OpenAI (vLLM's own server).

The real backends run the tiny random Qwen2-VL, and again the tiny random
Qwen3-VL (its 32-pixel visual tokens, its processor and chat template): a
backend parameter "engine:variant" names both. The answers are garbage: the
contract checks types, limits and plumbing, and that f2f's parsers survive
whatever comes back. Each backend is built once per module (the parameter
groups the tests); every real one is skipped when its library is not
installed. Backend-specific error paths follow the contract.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import ScriptedVLM
from PIL import Image
from vlm_fixtures import (
    IN_PROCESS_ENGINE,
    NUM_CANDIDATES,
    LoopThread,
    ScriptedHTTPServer,
    VllmServer,
    caption_conversation,
    completion,
    free_port,
    long_conversation,
    min_tokens,
    sample_picture,
    selection_conversation,
    token_bytes,
    vllm_env,
)

from f2f.backends.vlm.hf_vlm import TransformersVLM
from f2f.backends.vlm.openai_vlm import OpenAIVLM
from f2f.backends.vlm.vllm_vlm import VllmVLM
from f2f.backends.vlm.vlm_common import (
    MAX_ASPECT_RATIO,
    chat_template,
    check_checkpoint,
    message_images,
    prepare_image,
    render_prompt,
    visual_tokens,
)
from f2f.caption import clean_caption
from f2f.config import VLMConfig
from f2f.errors import BackendNotConfigured, InvalidConfig, InvalidInput, VLMEndpointError
from f2f.protocols import VLM, TokenUsage
from f2f.selection import parse_selection, selection_reminder

# vLLM 0.32 always hands Qwen's processor both `size` and the deprecated min/max_pixels aliases.
pytestmark = pytest.mark.filterwarnings("ignore:Passing `min_pixels` and `max_pixels`:FutureWarning")

# In this order each vLLM server boots once: "vllm" starts Qwen2-VL's for "openai", "vllm:qwen3-vl" swaps it for Qwen3-VL's.
BACKENDS = ["scripted", "transformers", "transformers:qwen3-vl", "vllm", "openai", "vllm:qwen3-vl", "openai:qwen3-vl"]
API_KEY = "f2f-test-key"
MAX_MODEL_LEN = 16384  # the config default: f2f's prompts must fit it
TOO_MANY_WORDS = 17_000  # one token each: more than MAX_MODEL_LEN


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """One event loop for the module: vLLM's engine binds to the loop that first uses it."""
    runner = LoopThread()
    yield runner
    runner.close()


class TinyModels:
    """The tiny checkpoints of the module, each built on first use (seed 0), and their tokens' bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: dict[str, Path] = {}
        self.vocabularies: dict[str, list[bytes]] = {}

    def path(self, variant: str) -> Path:
        from f2f.backends.tiny.tiny_qwen import make_tiny_qwen

        if variant not in self.paths:
            self.paths[variant] = make_tiny_qwen(self.root / variant, variant=variant, seed=0)
        return self.paths[variant]

    def vocabulary(self, variant: str) -> list[bytes]:
        import transformers

        if variant not in self.vocabularies:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.path(variant), local_files_only=True)
            self.vocabularies[variant] = token_bytes(tokenizer)
        return self.vocabularies[variant]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return TinyModels(tmp_path_factory.mktemp("vlm"))


def engine_and_variant(name: str) -> tuple[str, str]:
    """("vllm", "qwen3-vl") for "vllm:qwen3-vl"; the variant is qwen2-vl when the name has none."""
    engine, _, variant = name.partition(":")
    return engine, variant or "qwen2-vl"


@contextlib.contextmanager
def transformers_vlm(model: Path) -> Iterator[TransformersVLM]:
    vlm = TransformersVLM.from_config(VLMConfig(backend="transformers", model_path=model, max_model_len=MAX_MODEL_LEN))
    yield vlm
    vlm.close()


@contextlib.contextmanager
def vllm_vlm(model: Path) -> Iterator[VllmVLM]:
    pytest.importorskip("vllm")
    cfg = VLMConfig(backend="vllm", model_path=model, dtype="float32", max_model_len=MAX_MODEL_LEN)
    with pytest.MonkeyPatch.context() as env:
        for key, value in vllm_env().items():
            env.setenv(key, value)
        # As in a Serve replica: the engine's statistics go to Ray's metrics (recorded, then dropped: no Ray cluster here).
        env.setattr("f2f.backends.vlm.vllm_vlm._in_ray", lambda: True)
        vlm = VllmVLM.from_config(cfg, engine_kwargs=IN_PROCESS_ENGINE)
        yield vlm
        vlm.close()


class VllmServers:
    """vLLM's OpenAI server on a tiny model, one at a time (two would share 2 cores); `start` boots without waiting."""

    def __init__(self, models: TinyModels, work_dir: Path) -> None:
        self.models = models
        self.work_dir = work_dir
        self.running: dict[str, VllmServer] = {}

    def start(self, variant: str) -> VllmServer:
        if variant not in self.running:
            self.stop()
            model, work_dir = self.models.path(variant), self.work_dir / variant
            work_dir.mkdir(exist_ok=True)
            self.running[variant] = VllmServer(model, work_dir, api_key=API_KEY, max_model_len=MAX_MODEL_LEN)
        return self.running[variant]

    def stop(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()


@pytest.fixture(scope="module")
def vllm_servers(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServers]:
    pytest.importorskip("httpx")
    pytest.importorskip("vllm")
    servers = VllmServers(tiny_models, tmp_path_factory.mktemp("server"))
    yield servers
    servers.stop()


@contextlib.contextmanager
def openai_vlm(server: VllmServer) -> Iterator[OpenAIVLM]:
    server.wait_ready()
    yield OpenAIVLM.from_config(VLMConfig(backend="openai", base_url=server.base_url, api_key=API_KEY), backoff_s=0.05)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, VLM]]:
    """(name, VLM) for each backend; the real ones on the tiny model their name gives.

    Each vLLM backend starts the OpenAI backend's server on its model (its
    boot, mostly imports, overlaps the vLLM tests), which is waited on when
    the OpenAI backend's turn comes.
    """
    engine, variant = engine_and_variant(request.param)
    if engine == "scripted":
        yield request.param, ScriptedVLM()
        return
    model = request.getfixturevalue("tiny_models").path(variant)
    if engine in ("vllm", "openai") and importlib.util.find_spec("vllm") and importlib.util.find_spec("httpx"):
        request.getfixturevalue("vllm_servers").start(variant)
    if engine == "openai":
        context = openai_vlm(request.getfixturevalue("vllm_servers").start(variant))
    else:
        context = {"transformers": transformers_vlm, "vllm": vllm_vlm}[engine](model)
    with context as vlm:
        yield request.param, vlm


def ask(loop: LoopThread, vlm: VLM, messages: list, max_tokens: int = 24) -> str:
    return loop.run(vlm.chat(messages, max_tokens=max_tokens, temperature=0.0)).text


# --- the contract --------------------------------------------------------------------


def test_is_a_vlm(backend):
    assert isinstance(backend[1], VLM)


def test_answers_the_caption_prompt_with_text_the_cleaner_reads(backend, loop):
    """The nine exemplars plus a 2-megapixel source (shrunk to the 1-megapixel budget) fit the default context."""
    answer = ask(loop, backend[1], caption_conversation(sample_picture((1600, 1200))))
    assert isinstance(answer, str)
    cleaned = clean_caption(answer)
    assert cleaned is None or isinstance(cleaned, str)


def test_answers_the_selection_prompt_with_text_the_parser_reads(backend, loop):
    answer = ask(loop, backend[1], selection_conversation())
    assert isinstance(answer, str)
    label = parse_selection(answer, NUM_CANDIDATES)
    assert label is None or 0 <= label <= NUM_CANDIDATES


def test_answers_a_retry_after_an_assistant_turn(backend, loop):
    messages = selection_conversation()
    first = ask(loop, backend[1], messages)
    again = ask(loop, backend[1], messages + selection_reminder(first, NUM_CANDIDATES))
    assert isinstance(again, str)
    parse_selection(again, NUM_CANDIDATES)


def test_answers_a_text_only_conversation_with_a_system_turn(backend, loop):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Say hello."}]},
    ]
    assert isinstance(ask(loop, backend[1], messages), str)


def test_greedy_answers_repeat(backend, loop):
    messages = selection_conversation()
    assert ask(loop, backend[1], messages) == ask(loop, backend[1], messages)


def test_concurrent_calls_all_get_the_greedy_answer(backend, loop):
    messages = selection_conversation(max_pixels=200_000)

    async def three() -> list[str]:
        return [answer.text for answer in await asyncio.gather(*(backend[1].chat(messages, max_tokens=8) for _ in range(3)))]

    answers = loop.run(three())
    assert len(set(answers)) == 1 and isinstance(answers[0], str)


@pytest.mark.parametrize("max_tokens", [1, 4])
def test_max_tokens_bounds_the_answer(backend, loop, max_tokens, request):
    name, vlm = backend
    engine, variant = engine_and_variant(name)
    if engine == "scripted":
        pytest.skip("the scripted fake answers fixed texts; it counts no tokens")
    vocabulary = request.getfixturevalue("tiny_models").vocabulary(variant)
    short = ask(loop, vlm, selection_conversation(), max_tokens=max_tokens)
    longer = ask(loop, vlm, selection_conversation(), max_tokens=24)
    assert min_tokens(short, vocabulary) <= max_tokens
    # The bound means something only if the model would have said more: the tiny models (seed 0) do here.
    assert min_tokens(longer, vocabulary) > max_tokens, f"the model stopped early: {longer!r}"


def test_a_prompt_longer_than_the_context_names_vlm_max_model_len(backend, loop):
    name, vlm = backend
    if name == "scripted":
        pytest.skip("the scripted fake has no context length")
    with pytest.raises(InvalidInput) as caught:
        ask(loop, vlm, long_conversation(TOO_MANY_WORDS))
    assert caught.value.field == "vlm.max_model_len"
    assert caught.value.value >= MAX_MODEL_LEN
    assert f"{MAX_MODEL_LEN}" in caught.value.rule


def prompt_tokens(model: Path, messages: list) -> tuple[int, int]:
    """The prompt's text tokens (each image's one pad token left out) and its visual tokens, by Qwen's rules."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model, local_files_only=True)
    checkpoint = check_checkpoint(model, "transformers")
    images = message_images(messages)
    text = len(tokenizer(render_prompt(tokenizer, chat_template(tokenizer, model), messages), add_special_tokens=False).input_ids)
    visual = sum(visual_tokens(im.size, 3136, 1_003_520, checkpoint.patch_size, checkpoint.merge_size) for im in images)
    return text - len(images), visual


def test_usage_is_the_tokens_the_engine_ran(backend, loop, request):
    """The answer's usage, on the tiny model: the prompt's text tokens plus each image's visual tokens (the images'
    share apart, except through OpenAI's endpoint, which does not say), and the answer's tokens within max_tokens."""
    name, vlm = backend
    engine, variant = engine_and_variant(name)
    if engine == "scripted":
        pytest.skip("the scripted fake's usage is fixed (fakes.USAGE)")
    models = request.getfixturevalue("tiny_models")
    messages = selection_conversation(max_pixels=200_000)
    one = loop.run(vlm.chat(messages, max_tokens=1))
    more = loop.run(vlm.chat(messages, max_tokens=24))
    text, visual = prompt_tokens(models.path(variant), messages)
    assert visual > 0
    assert one.usage == TokenUsage(text + visual, 1, None if engine == "openai" else visual)
    assert more.usage.input_tokens == one.usage.input_tokens and more.usage.image_tokens == one.usage.image_tokens
    assert min_tokens(more.text, models.vocabulary(variant)) <= more.usage.output_tokens <= 24


def test_vllm_counts_prompt_tokens_as_its_engine_does(backend, loop):
    """The length check before the engine counts text plus visual tokens exactly as vLLM does."""
    name, vlm = backend
    if engine_and_variant(name)[0] != "vllm":
        pytest.skip("vLLM only")
    from vllm import SamplingParams

    request, n_tokens = vlm._request(caption_conversation(sample_picture((1600, 1200))))

    async def prompt_length() -> int:
        async for output in vlm.engine.generate(request, SamplingParams(max_tokens=1), "count-check"):
            final = output
        return len(final.prompt_token_ids)

    assert loop.run(prompt_length()) == n_tokens


def test_vllm_records_engine_statistics_for_rays_metrics(backend, loop):
    """In a Ray worker the engine's statistics go to vLLM's Ray stat logger (exported as ray_vllm_*), which replaces
    its prometheus_client one (never exported from a replica); a chat's prompt and answer tokens reach it."""
    name, vlm = backend
    if engine_and_variant(name)[0] != "vllm":
        pytest.skip("vLLM only")
    from vllm.v1.metrics.loggers import PrometheusStatLogger
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    loggers = vlm.engine.logger_manager.stat_loggers
    prometheus = [stat_logger for stat_logger in loggers if isinstance(stat_logger, PrometheusStatLogger)]
    assert [type(stat_logger) for stat_logger in prometheus] == [RayPrometheusStatLogger]
    ray_logger, tokens = prometheus[0], {"prompt": 0, "generation": 0}

    def counting(scheduler_stats, iteration_stats, *args, **kwargs):
        if iteration_stats is not None:
            tokens["prompt"] += iteration_stats.num_prompt_tokens
            tokens["generation"] += iteration_stats.num_generation_tokens
        return RayPrometheusStatLogger.record(ray_logger, scheduler_stats, iteration_stats, *args, **kwargs)

    ray_logger.record = counting
    try:
        ask(loop, vlm, selection_conversation(), max_tokens=4)
        loop.run(asyncio.sleep(0.5))  # the engine's output loop records an iteration after handing out its tokens
    finally:
        del ray_logger.record
    assert tokens["prompt"] > 0 and 1 <= tokens["generation"] <= 4, tokens


def test_the_openai_backend_sends_the_key_and_a_wrong_one_is_refused(backend, loop):
    name, vlm = backend
    if name != "openai":
        pytest.skip("OpenAI only (the key check needs one server)")
    wrong = OpenAIVLM(vlm.base_url, api_key="not-the-key", max_retries=0)
    with pytest.raises(VLMEndpointError, match="401") as caught:
        ask(loop, wrong, long_conversation(3))
    assert caught.value.status == 401


def test_the_transformers_backend_runs_qwen2_5_vl_too(loop, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from f2f.backends.tiny.tiny_qwen import make_tiny_qwen

    model = make_tiny_qwen(tmp_path / "qwen2.5-vl", variant="qwen2.5-vl", seed=0)
    with transformers_vlm(model) as vlm:
        answer = ask(loop, vlm, selection_conversation(max_pixels=200_000))
    assert isinstance(answer, str)
    parse_selection(answer, NUM_CANDIDATES)


# --- checkpoints and libraries, before anything loads ----------------------------------


def write_config(folder: Path, architecture: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture]}), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"not weights: loading them would fail differently")
    return folder


def bad_model_paths(tmp_path: Path) -> dict[str, Path | None]:
    (tmp_path / "empty").mkdir()
    return {
        "unset": None,
        "missing": tmp_path / "missing",
        "no config.json": tmp_path / "empty",
        "another architecture": write_config(tmp_path / "llama", "LlamaForCausalLM"),
    }


@pytest.mark.parametrize("backend_class", [TransformersVLM, VllmVLM], ids=["transformers", "vllm"])
@pytest.mark.parametrize("case", ["unset", "missing", "no config.json", "another architecture"])
def test_a_bad_checkpoint_is_invalid_config_naming_vlm_model_path(backend_class, case, tmp_path):
    path = bad_model_paths(tmp_path)[case]
    with pytest.raises(InvalidConfig) as caught:
        backend_class.from_config(VLMConfig(model_path=path))
    assert caught.value.field == "vlm.model_path"


@pytest.mark.parametrize(
    ("backend_class", "modules", "extra"),
    [(TransformersVLM, ["torch", "transformers"], "transformers"), (VllmVLM, ["vllm"], "vllm"), (OpenAIVLM, ["httpx"], "openai")],
    ids=["transformers", "vllm", "openai"],
)
def test_a_missing_library_names_the_extra_to_install(backend_class, modules, extra, tmp_path, monkeypatch):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # "import module" now fails
    cfg = VLMConfig(model_path=write_config(tmp_path, "Qwen2VLForConditionalGeneration"), base_url="http://127.0.0.1:9/v1")
    with pytest.raises(BackendNotConfigured, match=rf"pip install 'f2f\[{extra}\]'"):
        backend_class.from_config(cfg)


# --- the OpenAI backend against a scripted endpoint ------------------------------------


@pytest.fixture
def endpoint() -> Iterator[Callable[..., ScriptedHTTPServer]]:
    pytest.importorskip("httpx")
    servers: list[ScriptedHTTPServer] = []

    def start(*script: tuple[int, object, dict[str, str]]) -> ScriptedHTTPServer:
        servers.append(ScriptedHTTPServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def openai_client(base_url: str, **fields: object) -> OpenAIVLM:
    return OpenAIVLM.from_config(VLMConfig(backend="openai", base_url=base_url, **fields), backoff_s=0.01)


def hello() -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]


@pytest.mark.parametrize("base_url", [None, "", "vllm:8000/v1"])
def test_openai_needs_an_http_base_url(base_url):
    pytest.importorskip("httpx")
    with pytest.raises(InvalidConfig) as caught:
        OpenAIVLM(base_url)  # the config refuses a missing one earlier; the backend checks on its own too
    assert caught.value.field == "vlm.base_url"


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_openai_retries_a_transient_failure(endpoint, status):
    server = endpoint((status, {"error": {"message": "try later"}}, {"retry-after": "0"}), (200, completion("SELECTED: 2"), {}))
    answer = asyncio.run(openai_client(server.base_url, model_name="tiny").chat(hello(), max_tokens=8))
    assert answer.text == "SELECTED: 2"
    assert [r[:2] for r in server.requests] == [("POST", "/v1/chat/completions")] * 2


def test_openai_gives_up_after_max_retries_naming_the_status(endpoint):
    server = endpoint((503, {"error": {"message": "overloaded"}}, {}))
    with pytest.raises(VLMEndpointError, match="503: overloaded") as caught:
        asyncio.run(openai_client(server.base_url, model_name="tiny", max_retries=2).chat(hello(), max_tokens=8))
    assert caught.value.status == 503
    assert len(server.requests) == 3


def test_openai_a_client_error_is_not_retried_and_names_status_and_message(endpoint):
    server = endpoint((400, {"error": {"message": "unknown field 'foo'", "type": "BadRequestError"}}, {}))
    with pytest.raises(VLMEndpointError, match="400: unknown field 'foo'") as caught:
        asyncio.run(openai_client(server.base_url, model_name="tiny").chat(hello(), max_tokens=8))
    assert caught.value.status == 400
    assert len(server.requests) == 1


def test_openai_a_context_length_refusal_names_vlm_max_model_len(endpoint):
    message = "This model's maximum context length is 4096 tokens. However, your prompt contains 5000 input tokens."
    server = endpoint((400, {"error": {"message": message}}, {}))
    with pytest.raises(InvalidInput) as caught:
        asyncio.run(openai_client(server.base_url, model_name="tiny").chat(hello(), max_tokens=8))
    assert (caught.value.field, caught.value.value) == ("vlm.max_model_len", 5000)


def test_openai_usage_is_the_endpoints_own_count_and_never_invented(endpoint):
    counted = completion("SELECTED: 1", prompt_tokens=120, completion_tokens=7, total_tokens=127)
    server = endpoint((200, counted, {}), (200, completion("SELECTED: 1"), {}))
    client = openai_client(server.base_url, model_name="tiny")
    assert asyncio.run(client.chat(hello(), max_tokens=8)).usage == TokenUsage(120, 7, None)  # no image/text split
    assert asyncio.run(client.chat(hello(), max_tokens=8)).usage == TokenUsage(None, None, None)  # no usage at all


def test_openai_a_refused_connection_is_retried_then_reported():
    pytest.importorskip("httpx")
    client = openai_client(f"http://127.0.0.1:{free_port()}/v1", model_name="tiny", max_retries=1)
    with pytest.raises(VLMEndpointError, match="cannot connect"):
        asyncio.run(client.chat(hello(), max_tokens=8))


def test_openai_asks_the_model_name_once_and_sends_key_and_images(endpoint):
    server = endpoint((200, {"object": "list", "data": [{"id": "served-qwen"}]}, {}), (200, completion("fine"), {}))
    client = openai_client(server.base_url, api_key="secret", max_pixels=10_000)
    parts = [{"type": "image", "image": sample_picture((400, 100))}, {"type": "text", "text": "hi"}]
    messages = [{"role": "user", "content": parts}]
    for _ in range(2):
        assert asyncio.run(client.chat(messages, max_tokens=8, temperature=0.5)).text == "fine"
    assert [r[:2] for r in server.requests] == [("GET", "/v1/models")] + [("POST", "/v1/chat/completions")] * 2
    _, _, headers, body = server.requests[-1]
    assert headers["Authorization"] == "Bearer secret"
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("served-qwen", 8, 0.5)
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "hi"}
    url = image_part["image_url"]["url"]
    assert image_part["type"] == "image_url" and url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.width * sent.height <= 10_000 and abs(sent.width / sent.height - 4.0) < 0.1


# --- shared helpers ----------------------------------------------------------------------


def test_prepare_image_shrinks_to_the_budget_and_keeps_the_aspect_ratio():
    image = prepare_image(Image.new("RGB", (4000, 3000)), max_pixels=1_003_520)
    assert image.mode == "RGB"
    assert image.width * image.height <= 1_003_520
    assert abs(image.width / image.height - 4 / 3) < 0.01
    small = Image.new("RGB", (50, 40))
    assert prepare_image(small, max_pixels=1_003_520).size == (50, 40)


def test_prepare_image_pads_a_strip_to_qwens_largest_aspect_ratio():
    strip = prepare_image(Image.new("RGB", (1, 4000), (255, 0, 0)), max_pixels=1_003_520)
    assert strip.size == (4000 // MAX_ASPECT_RATIO, 4000)
    assert strip.getpixel((9, 2000)) == (255, 0, 0)  # the strip itself, centred on black
    assert strip.getpixel((0, 2000)) == (0, 0, 0)


@pytest.mark.parametrize("patch_size", [14, 16], ids=["qwen2-vl", "qwen3-vl"])
@pytest.mark.parametrize("size", [(1, 1), (96, 64), (1600, 1200), (20, 4000), (4000, 3000), (10, 9)])
def test_visual_token_count_equals_qwens_image_processor(size, patch_size):
    transformers = pytest.importorskip("transformers")
    processor = transformers.Qwen2VLImageProcessorPil(patch_size=patch_size, min_pixels=3136, max_pixels=1_003_520)
    grid = processor(images=[Image.new("RGB", size)], return_tensors="np")["image_grid_thw"][0]
    assert visual_tokens(size, 3136, 1_003_520, patch_size) == int(grid.prod()) // 4


def test_vllm_engine_args_follow_the_config(tmp_path):
    from f2f.backends.vlm.vllm_vlm import engine_args
    from f2f.backends.vlm.vlm_common import Checkpoint
    from f2f.config import load_config

    checkpoint = Checkpoint(tmp_path, "Qwen2VLForConditionalGeneration", 14, 2)
    tiny = load_config(overrides={"profile": "tiny", "cache_dir": str(tmp_path)}).vlm
    args = engine_args(tiny, checkpoint, cuda_available=False)
    assert args["kv_cache_memory_bytes"] == 2**30 and args["enforce_eager"] is True
    assert args["dtype"] == "float32" and args["trust_remote_code"] is False
    assert args["mm_processor_kwargs"] == {"min_pixels": tiny.min_pixels, "max_pixels": tiny.max_pixels}
    qwen3 = engine_args(tiny, Checkpoint(tmp_path, "Qwen3VLForConditionalGeneration", 16, 2), cuda_available=False)
    assert qwen3["mm_processor_kwargs"] == {"size": {"shortest_edge": tiny.min_pixels, "longest_edge": tiny.max_pixels}}
    default = engine_args(load_config().vlm.model_copy(update={"model_path": tmp_path}), checkpoint, cuda_available=True)
    assert default["kv_cache_memory_bytes"] is None and default["enforce_eager"] is False and default["dtype"] == "bfloat16"
    assert default["disable_log_stats"] is False
    quiet = engine_args(tiny.model_copy(update={"engine_stats": False}), checkpoint, cuda_available=False)
    assert quiet["disable_log_stats"] is True


def test_vllm_stat_loggers_are_rays_only_inside_ray_and_with_engine_stats(monkeypatch):
    from f2f.backends.vlm import vllm_vlm

    pytest.importorskip("vllm")
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    monkeypatch.setattr(vllm_vlm, "_in_ray", lambda: False)
    assert vllm_vlm.stat_loggers(VLMConfig()) is None  # vLLM's defaults
    monkeypatch.setattr(vllm_vlm, "_in_ray", lambda: True)
    assert vllm_vlm.stat_loggers(VLMConfig()) == [RayPrometheusStatLogger]
    assert vllm_vlm.stat_loggers(VLMConfig(engine_stats=False)) is None
