"""The service's metrics: fixed buckets and labels (no Ray), then exported by a real Ray on 127.0.0.1.

One Ray cluster with a metrics export port and one Serve application for the
module; one tiny edit over HTTP, then the node's /metrics is polled (Ray
exports custom metrics some seconds after they are recorded).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import free_port, running_app, tiny_config

from f2f.serving import metrics

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
EXPORT_WAIT_S = 30.0
SAMPLE_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


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
    assert metrics.STAGES == ("caption", "generate", "select", "rank", "align", "total")  # rank, align: issue 17
    assert metrics.OUTCOMES == ("edited", "no_edit", "fallback", "error")
    assert metrics.FALLBACK_KINDS == ("caption", "selection")
    names = [
        metrics.STAGE_SECONDS,
        metrics.EDITS_TOTAL,
        metrics.VLM_FALLBACKS_TOTAL,
        metrics.EDITS_RUNNING,
        metrics.DENOISE_STEP_SECONDS,
        metrics.QUEUE_DEPTH,
        metrics.QUEUE_OLDEST_AGE,
    ]
    assert all(name.startswith("f2f_") for name in names) and len(set(names)) == len(names)


def test_step_buckets_are_sorted_and_span_milliseconds_to_a_minute() -> None:
    buckets = metrics.STEP_BUCKETS_S
    assert list(buckets) == sorted(set(buckets)) and buckets[0] <= 0.01 and buckets[-1] >= 60


# --- exported by a real Ray -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[tuple[str, str]]:
    """(application URL, metrics URL) on a Ray with a metrics export port."""
    metrics_port = free_port()
    args = {"config": tiny_config(tiny_models, tmp_path_factory.mktemp("f2f-cache"))}
    args["jobs"] = {"dir": str(tmp_path_factory.mktemp("jobs")), "sweep_interval_s": 600}  # the gauges need no sweep
    args["auth"] = {"required": False}
    # Ray exports every second (default 10 s) and drops a gauge not set for two exports: gaps show within seconds.
    with running_app(args, metrics_port=metrics_port, system_config={"metrics_report_interval_ms": 1000}) as url:
        yield url, f"http://127.0.0.1:{metrics_port}/metrics"


def test_an_edit_is_exported(served: tuple[str, str]) -> None:
    httpx = pytest.importorskip("httpx")
    base_url, metrics_url = served
    files = {"image": ("source.png", SAMPLE.read_bytes(), "image/png")}
    response = httpx.post(f"{base_url}/v1/images/edits", data={"prompt": "make the sun set"}, files=files, timeout=120)
    assert response.status_code == 200, response.text[:300]

    recorded = time.perf_counter()
    deadline = recorded + EXPORT_WAIT_S
    wanted = (
        "ray_f2f_edits_total",
        "ray_f2f_stage_seconds_bucket",
        "ray_f2f_denoise_step_seconds_bucket",
        "ray_f2f_queue_depth",
        "ray_f2f_edits_running",
    )
    gauges = ("ray_f2f_queue_depth", "ray_f2f_edits_running")
    found: dict[str, list] = {}
    while time.perf_counter() < deadline:
        try:
            text = httpx.get(metrics_url, timeout=5).text
        except httpx.HTTPError:
            text = ""
        found = {name: _samples(text, name) for name in wanted}
        # A gauge is exported some seconds after it is set: a scrape may still show the edit waiting or running.
        settled = all(value == 0 for name in gauges for _, value in found[name])
        if all(found.values()) and settled:
            break
        time.sleep(1)
    print(f"\nmetrics exported {time.perf_counter() - recorded:.1f} s after the edit answered")
    assert all(found.values()), f"not exported within {EXPORT_WAIT_S:.0f} s: {[n for n, v in found.items() if not v]}"

    edits = found["ray_f2f_edits_total"]
    assert {labels["outcome"] for labels, _ in edits} <= set(metrics.OUTCOMES)
    assert sum(value for labels, value in edits if labels["outcome"] != "error") >= 1
    assert all(labels.get("application") == "f2f" for labels, _ in edits)

    total_buckets = [s for s in found["ray_f2f_stage_seconds_bucket"] if s[0].get("stage") == "total"]
    assert sorted(float(labels["le"]) for labels, _ in total_buckets) == [*metrics.STAGE_BUCKETS_S, float("inf")]
    assert max(value for _, value in total_buckets) >= 1  # the +Inf bucket counts every observation
    steps = found["ray_f2f_denoise_step_seconds_bucket"]
    assert sorted(float(labels["le"]) for labels, _ in steps) == [*metrics.STEP_BUCKETS_S, float("inf")]
    assert all(labels.get("deployment") == "Generator" for labels, _ in steps)
    assert all(value == 0 for _, value in found["ray_f2f_queue_depth"])  # nothing waits once the edit answered
    assert all(value == 0 for _, value in found["ray_f2f_edits_running"])  # nothing runs once the edit answered


def test_gauges_are_exported_in_every_scrape_while_idle(served: tuple[str, str]) -> None:
    """Ray drops a gauge that is not set again within two exports; ours are set again, unchanged, 0 included."""
    httpx = pytest.importorskip("httpx")
    _, metrics_url = served
    gauges = ("ray_f2f_queue_depth", "ray_f2f_queue_oldest_age_seconds", "ray_f2f_edits_running")
    deadline = time.monotonic() + EXPORT_WAIT_S
    while not all(_samples(httpx.get(metrics_url, timeout=5).text, name) for name in gauges):  # once exported
        assert time.monotonic() < deadline, "the gauges were never exported"
        time.sleep(0.5)
    missing = []
    for _ in range(20):  # 10 s: five times the 2 s a gauge outlives its last export here
        text = httpx.get(metrics_url, timeout=5).text
        missing += [name for name in gauges if not _samples(text, name)]
        time.sleep(0.5)
    assert not missing, f"gauges absent from some scrapes: {sorted(set(missing))} ({len(missing)} times)"
