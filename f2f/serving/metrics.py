"""Every metric of the f2f service, defined once, here (`ray.serve.metrics`).

| metric (as exported) | type | labels | what |
|---|---|---|---|
| `ray_f2f_stage_seconds` | histogram | `stage`: caption, generate, select, total | wall time of a pipeline stage, per edit |
| `ray_f2f_edits_total` | counter | `outcome`: edited, no_edit, fallback, error | edits answered, by how they ended |
| `ray_f2f_vlm_fallbacks_total` | counter | `kind`: caption, selection | VLM answers that could not be used |
| `ray_f2f_edits_running` | gauge | (none of ours) | edits running in this worker replica |
| `ray_f2f_denoise_step_seconds` | histogram | (none of ours) | one denoising step; a video's first step (set-up) is left out |
| `ray_f2f_queue_depth` | gauge | (none of ours) | jobs waiting for a worker (the job store's count, shared by every replica) |
| `ray_f2f_queue_oldest_age_seconds` | gauge | (none of ours) | how long the oldest waiting job has waited |
| `ray_f2f_broker_queue_length` | gauge | (none of ours) | job messages on the broker no worker took yet (workers scale on it) |
| `ray_f2f_job_records_unreadable_total` | counter | (none of ours) | reads of a job record this version cannot parse |
| `ray_f2f_leases_lost_total` | counter | (none of ours) | attempts stopped: their job was no longer theirs |

Ray Serve adds its own tags (application, deployment, replica) and exports
every metric with a `ray_` prefix on the node's metrics export port, a few
seconds after it is recorded; a `prometheus_client` registry inside a replica
would not be exported. Counter names end in `_total`, so Ray exports them
under that name and no deprecated gauge twin. Ray 2.60 exports a histogram
observation as its bucket's midpoint (over +Inf: twice the last bound), so
`_sum` and `_sum / _count` are approximate; the buckets are exact (use
`histogram_quantile`).

Outcomes: the status of the chosen clip (`edited`, `no_edit`, `fallback`),
or `error` when the pipeline raised; a request rejected as bad input is the
client's mistake and is not counted.
Fallbacks: `caption` when the caption answer was unusable and the edit text
was used, `selection` once per clip whose selection answer could not be
parsed (so one edit with n seeds adds at most n).

Unreadable records: a record written by a newer version during a rolling
upgrade (or a damaged file) is counted at each read that meets it (every
sweep pass, every request for the job), so a rate that stays above zero
after an upgrade finished names a record to look at; the log line has its
id. Lost leases: a worker paused or cut off from the store past `lease_s`
whose job another worker took; a few during an outage are expected, a
steady rate means `lease_s` is too short for the heartbeats to get through.

Labels take values from the fixed sets above only: never a prompt, a
caption, a seed or a request id. Other timings of `EditResult.timings_s`
(check_inputs, letterbox, unletterbox) take milliseconds and are not
recorded. The queue gauges are set by each ingress replica: take the max
over replicas, not the sum.

Gauges are set again every `gauge_refresh_s()` (half of Ray's export
interval, at most 5 s), whether or not they changed: Ray exports a gauge
only when it was set since its last export (`metrics_report_interval_ms`,
10 s), and its metrics agent drops a series not refreshed for two export
intervals (`ray/_private/telemetry/open_telemetry_metric_recorder.py`,
the gauge TTL), so a gauge set only on change or on each sweep vanished from
scrapes between updates.

Metric objects are created on first use, once per process, so importing
this module needs no Ray cluster.

vLLM's engine statistics (`vlm.backend: vllm` with `vlm.engine_stats`, on by
default) are vLLM's own metrics, not defined here: in a VLM replica vLLM's
`RayPrometheusStatLogger` records them as Ray metrics (`f2f.backends.vlm.vllm_vlm`),
with the name's `vllm:` made `vllm_`, labels `model_name` (the checkpoint's
path), `engine` (0) and `ReplicaId`, and no Serve tags. The ones to watch:

| metric (as exported) | type | what |
|---|---|---|
| `ray_vllm_num_requests_running`, `ray_vllm_num_requests_waiting` | gauge | chats in the engine's batch, and queued for it |
| `ray_vllm_kv_cache_usage_perc` | gauge | share of the KV cache in use (1 = full: chats wait) |
| `ray_vllm_num_preemptions_total` | counter | requests pushed out of the KV cache and recomputed |
| `ray_vllm_prompt_tokens_total`, `ray_vllm_generation_tokens_total` | counter | tokens read (visual ones included), written |
| `ray_vllm_request_success_total` | counter | chats finished, by `finished_reason` |
| `ray_vllm_mm_cache_queries_total`, `ray_vllm_mm_cache_hits_total` | counter | image-processor cache lookups and hits |
| `ray_vllm_time_to_first_token_seconds` | histogram | prompt read (prefill) until the first answer token |
| `ray_vllm_e2e_request_latency_seconds` | histogram | one chat in the engine, end to end |
| `ray_vllm_request_queue_time_seconds` | histogram | waiting for a place in the batch |

vLLM's counters do not end in `_total`: Ray exports each as `<name>_total`
and, while `RAY_EXPORT_COUNTER_AS_GAUGE` is on (Ray 2.60's default), a
deprecated gauge under the bare name too; use the `_total` one. The other
`ray_vllm_*` series are vLLM's (`vllm/v1/metrics/loggers.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from f2f.pipeline import STAGES
from f2f.result import EditResult

# Seconds. Steps of about x2-x2.5 from 0.1 s (a caption on a tiny model) to 30 min (a long video on a
# slow GPU); a stage past the last bound lands in +Inf.
STAGE_BUCKETS_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600, 1200, 1800)

# Seconds. One denoising step: ~20 ms (tiny model on a CPU) to a minute (many seeds, a slow GPU).
STEP_BUCKETS_S: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)

OUTCOMES = ("edited", "no_edit", "fallback", "error")
FALLBACK_KINDS = ("caption", "selection")

STAGE_SECONDS = "f2f_stage_seconds"
EDITS_TOTAL = "f2f_edits_total"
VLM_FALLBACKS_TOTAL = "f2f_vlm_fallbacks_total"
EDITS_RUNNING = "f2f_edits_running"
DENOISE_STEP_SECONDS = "f2f_denoise_step_seconds"
QUEUE_DEPTH = "f2f_queue_depth"
QUEUE_OLDEST_AGE = "f2f_queue_oldest_age_seconds"
BROKER_QUEUE_LENGTH = "f2f_broker_queue_length"
UNREADABLE_RECORDS_TOTAL = "f2f_job_records_unreadable_total"
LEASES_LOST_TOTAL = "f2f_leases_lost_total"


@cache
def _metrics() -> dict[str, Any]:
    """The metric objects of this process, created once (needs Ray; `ray.serve.metrics` tags the replica)."""
    from ray.serve import metrics

    return {
        STAGE_SECONDS: metrics.Histogram(
            STAGE_SECONDS,
            description="Wall time of one pipeline stage of one edit, in seconds.",
            boundaries=list(STAGE_BUCKETS_S),
            tag_keys=("stage",),
        ),
        EDITS_TOTAL: metrics.Counter(
            EDITS_TOTAL, description="Edits answered, by outcome (the chosen clip's status, or error).", tag_keys=("outcome",)
        ),
        VLM_FALLBACKS_TOTAL: metrics.Counter(
            VLM_FALLBACKS_TOTAL,
            description="VLM answers that could not be used: the caption, or one clip's selection.",
            tag_keys=("kind",),
        ),
        EDITS_RUNNING: metrics.Gauge(EDITS_RUNNING, description="Edits running in this worker replica."),
        DENOISE_STEP_SECONDS: metrics.Histogram(
            DENOISE_STEP_SECONDS,
            description="Wall time of one denoising step, in seconds (the first step of each video is left out).",
            boundaries=list(STEP_BUCKETS_S),
        ),
        QUEUE_DEPTH: metrics.Gauge(QUEUE_DEPTH, description="Edit jobs waiting for a worker."),
        QUEUE_OLDEST_AGE: metrics.Gauge(QUEUE_OLDEST_AGE, description="Seconds the oldest waiting edit job has waited."),
        BROKER_QUEUE_LENGTH: metrics.Gauge(
            BROKER_QUEUE_LENGTH, description="Job messages waiting on the broker, not yet taken by an edit worker."
        ),
        UNREADABLE_RECORDS_TOTAL: metrics.Counter(
            UNREADABLE_RECORDS_TOTAL, description="Reads of a job record this version cannot parse (logged with its id)."
        ),
        LEASES_LOST_TOTAL: metrics.Counter(
            LEASES_LOST_TOTAL, description="Attempts stopped by their worker because the job was no longer theirs."
        ),
    }


class _InFlight:
    """Edits running in this process, mirrored into the `f2f_edits_running` gauge."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._lock:
            self._count += delta
            _metrics()[EDITS_RUNNING].set(self._count)

    def refresh(self) -> None:
        """Set the gauge again (unchanged), so that Ray keeps exporting it."""
        self.add(0)


_IN_FLIGHT = _InFlight()


@contextmanager
def in_flight() -> Iterator[None]:
    """Count one running edit in `f2f_edits_running` while the block runs."""
    _IN_FLIGHT.add(1)
    try:
        yield
    finally:
        _IN_FLIGHT.add(-1)


GAUGE_REFRESH_MAX_S = 5.0


def gauge_refresh_s() -> float:
    """How often a gauge is set again: half of Ray's metrics export interval (at least 1 s there), at most 5 s."""
    import ray

    interval_s = max(ray._config.metrics_report_interval_ms(), 1000) / 1000
    return min(GAUGE_REFRESH_MAX_S, interval_s / 2)


def refresh_running() -> None:
    """Set `f2f_edits_running` again, 0 included (the worker does so every `gauge_refresh_s()`)."""
    _IN_FLIGHT.refresh()


def record_edit(result: EditResult) -> None:
    """Record one finished edit: its stage times, its outcome and its VLM fallbacks."""
    m = _metrics()
    for stage in STAGES:
        if stage in result.timings_s:
            m[STAGE_SECONDS].observe(result.timings_s[stage], tags={"stage": stage})
    m[EDITS_TOTAL].inc(tags={"outcome": result.status})
    if result.caption_fallback:
        m[VLM_FALLBACKS_TOTAL].inc(tags={"kind": "caption"})
    selection_fallbacks = sum(1 for clip in result.clips if clip["status"] == "fallback")
    if selection_fallbacks:
        m[VLM_FALLBACKS_TOTAL].inc(selection_fallbacks, tags={"kind": "selection"})


def record_error() -> None:
    """Record one edit that raised."""
    _metrics()[EDITS_TOTAL].inc(tags={"outcome": "error"})


def record_denoise_step(seconds: float) -> None:
    """Record one denoising step's wall time."""
    _metrics()[DENOISE_STEP_SECONDS].observe(seconds)


def record_queue(depth: int, oldest_age_s: float) -> None:
    """Set the queue gauges: jobs waiting and the oldest one's wait."""
    m = _metrics()
    m[QUEUE_DEPTH].set(depth)
    m[QUEUE_OLDEST_AGE].set(oldest_age_s)


def record_broker_queue(length: int) -> None:
    """Set the broker gauge: job messages waiting on the broker."""
    _metrics()[BROKER_QUEUE_LENGTH].set(length)


def record_unreadable_record() -> None:
    """Count one read of a job record this version cannot parse."""
    _metrics()[UNREADABLE_RECORDS_TOTAL].inc()


def record_lease_lost() -> None:
    """Count one attempt stopped because its job was no longer its worker's."""
    _metrics()[LEASES_LOST_TOTAL].inc()
