"""Shared fixtures. This folder is on sys.path (pytest puts conftest folders there), so tests import `fakes`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from redis_server import RedisServer
from s3_server import CREDENTIALS as S3_CREDENTIALS
from s3_server import S3Server
from s3_server import available as s3_available

from f2f.config import F2FConfig, load_config

_EXIT_STATUS = pytest.StashKey[int]()

# Every Ray that a test starts stays on 127.0.0.1 (tests/serve/harness.py says why). Ray reads the first of these
# once, when it is imported, so it is set here, before any test module imports Ray; a multi-node test
# (tests/serve/test_multinode.py) would otherwise bind this machine's interface address.
for _key, _value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0")):
    os.environ.setdefault(_key, _value)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Once pytest has reported everything, leave with its status, skipping the interpreter's teardown.

    The suite loads Ray, torch, vLLM and Celery into one process; their native threads' destructors at
    interpreter exit once segfaulted after every test had been reported (CI: "1124 passed ...", then
    "make: *** Segmentation fault"), which turns a verdict already given into a crash. Nothing is left to
    run at this point: every fixture is torn down and every report written.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


@pytest.fixture
def small_config() -> F2FConfig:
    """A CogVideoX-family 96x64 canvas, 17 frames, 2 steps: candidates 4, 8, 12, 16 (labels 1..4), seed 7."""
    video = {"width": 96, "height": 64, "num_frames": 17, "num_inference_steps": 2}
    return load_config(overrides={"generator": {"family": "cogvideox"}, "video": video, "seed": 7})


@pytest.fixture
def square_image() -> Image.Image:
    """A 40x40 RGB image with a distinct colour in each quadrant."""
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    image.paste((30, 200, 30), (20, 0, 40, 20))
    image.paste((30, 30, 200), (0, 20, 20, 40))
    image.paste((220, 220, 220), (20, 20, 40, 40))
    return image


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `models_dir` for the session's test services: each tiny profile's checkpoints are built there on first use
    (`f2f.backends.ensure_tiny_checkpoints`), once, instead of in every module's cache."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3-protocol server on a free loopback port (moto's server mode); fails under CI when moto is missing."""
    if not s3_available():
        if os.environ.get("CI"):
            pytest.fail("moto[server] is missing: make installs it with the test extra")
        pytest.skip("moto[server] is not installed (pip install 'moto[server]')")
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's endpoint, emptied, with test credentials in the environment (boto3's standard chain reads them)."""
    s3_server.reset()
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return s3_server.url


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_endpoint: str) -> str:
    """`s3_endpoint` with a bucket `f2f` made."""
    s3_server.make_bucket("f2f")
    return s3_endpoint


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A `redis-server` on a free loopback port for the whole session (each test uses keys of its own); fails under
    CI when the server is missing."""
    server = RedisServer()
    if server.binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
