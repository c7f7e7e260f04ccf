"""The service's metrics: fixed buckets and labels (no Ray), then exported by a real Ray on 127.0.0.1.

One Ray cluster with a metrics export port and one Serve application for the
module; one tiny edit over HTTP, then the node's /metrics is polled (Ray
exports custom metrics some seconds after they are recorded).
"""

from __future__ import annotations

import itertools
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from f2f.serving import metrics

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
EXPORT_WAIT_S = 30.0
SAMPLE_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name` in a Prometheus text exposition."""
    found = []
    for line in text.splitlines():
        match = SAMPLE_LINE.match(line)
        if match and match["name"] == name:
            found.append((dict(LABEL.findall(match["labels"] or "")), float(match["value"])))
    return found


# --- definitions, without Ray ---------------------------------------------------------------


def test_import_needs_no_ray() -> None:
    code = "import sys, f2f.serving.metrics; assert not [m for m in sys.modules if m.split('.')[0] == 'ray']"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_stage_buckets_are_sorted_and_span_seconds_to_minutes() -> None:
    buckets = metrics.STAGE_BUCKETS_S
    assert list(buckets) == sorted(set(buckets))
    assert buckets[0] == 0.1 and buckets[-1] >= 600
    assert all(1.4 <= b / a <= 2.6 for a, b in itertools.pairwise(buckets))


def test_labels_come_from_small_fixed_sets() -> None:
    assert metrics.STAGES == ("caption", "generate", "select", "total")
    assert metrics.OUTCOMES == ("edited", "no_edit", "fallback", "error")
    assert metrics.FALLBACK_KINDS == ("caption", "selection")
    names = [metrics.STAGE_SECONDS, metrics.EDITS_TOTAL, metrics.VLM_FALLBACKS_TOTAL, metrics.REQUESTS_IN_FLIGHT]
    assert all(name.startswith("f2f_") for name in names) and len(set(names)) == 4


# --- exported by a real Ray -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    """(application URL, metrics URL) on a Ray started with the loopback settings and a metrics export port."""
    pytest.importorskip("ray")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    cache_dir = tempfile.mkdtemp(prefix="f2f-cache")
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    port, metrics_port = _free_port(), _free_port()
    with pytest.MonkeyPatch.context() as env:
        for key, value in LOOPBACK_ENV.items():
            env.setenv(key, value)
        import ray
        from ray import serve

        from f2f.serving.app import build_app

        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 1024**2,
            _temp_dir=ray_tmp,
            _metrics_export_port=metrics_port,
        )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_app({"config": {"profile": "tiny", "cache_dir": cache_dir, "seed": 3}}), name="f2f")
            yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
        finally:
            serve.shutdown()
            ray.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)
            shutil.rmtree(cache_dir, ignore_errors=True)


def test_an_edit_is_exported(served: tuple[str, str]) -> None:
    httpx = pytest.importorskip("httpx")
    base_url, metrics_url = served
    files = {"image": ("source.png", SAMPLE.read_bytes(), "image/png")}
    response = httpx.post(f"{base_url}/v1/images/edits", data={"prompt": "make the sun set"}, files=files, timeout=120)
    assert response.status_code == 200, response.text[:300]

    recorded = time.perf_counter()
    deadline = recorded + EXPORT_WAIT_S
    edits: list = []
    total_buckets: list = []
    while time.perf_counter() < deadline:
        try:
            text = httpx.get(metrics_url, timeout=5).text
        except httpx.HTTPError:
            text = ""
        edits = _samples(text, "ray_f2f_edits_total")
        total_buckets = [s for s in _samples(text, "ray_f2f_stage_seconds_bucket") if s[0].get("stage") == "total"]
        if edits and total_buckets:
            break
        time.sleep(1)
    print(f"\nmetrics exported {time.perf_counter() - recorded:.1f} s after the edit answered")
    assert edits and total_buckets, f"not exported within {EXPORT_WAIT_S:.0f} s"

    assert {labels["outcome"] for labels, _ in edits} <= set(metrics.OUTCOMES)
    assert sum(value for labels, value in edits if labels["outcome"] != "error") >= 1
    assert all(labels.get("application") == "f2f" for labels, _ in edits)

    bounds = sorted(float(labels["le"]) for labels, _ in total_buckets)
    assert bounds == [*metrics.STAGE_BUCKETS_S, float("inf")]
    assert max(value for _, value in total_buckets) >= 1  # the +Inf bucket counts every observation
    in_flight = _samples(text, "ray_f2f_requests_in_flight")
    assert in_flight and all(value == 0 for _, value in in_flight)  # set before the edit answered
