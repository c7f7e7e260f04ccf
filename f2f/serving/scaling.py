"""The edit workers scale on the job queue, and the generators follow them.

Rules:

- `JobQueuePolicy` is the workers' Serve autoscaling policy (a class-based
  `AutoscalingPolicy`, by import path, run in Serve's controller). Their
  workload is the jobs waiting on the broker (`BrokerQueue.length()`, polled
  every `poll_interval_s` on a thread, never on the controller's loop) plus
  the jobs they run (each replica's `record_autoscaling_stats`:
  `running_jobs`); it asks for `ceil(workload / jobs_per_replica)` replicas,
  `jobs_per_replica` being `worker_max_concurrent_jobs`. Serve applies
  `min_replicas`, `max_replicas` and the up- and downscale delays to that,
  and starts a first replica at once from zero.
- The generators autoscale on their calls in flight (Serve's default
  policy, `target_ongoing_requests` 1: one video at a time): each running job
  is one such call, so with workers that follow the backlog the generators
  do too, up to their `max_replicas`.
- Ray's own `AsyncInferenceAutoscalingPolicy` does not fit, for two reasons:
  it adds the queue to the deployment's Serve requests, but a task
  consumer's running jobs are not Serve requests, so while the last jobs run
  it sees no work and scales the replicas running them down (each then hands
  its jobs back: churn, and each job starts over); and it polls only Redis
  and RabbitMQ, not the file-system broker of one machine.
- A broker that cannot be read keeps the last length it gave (logged once
  per outage): no scale-down because a poll failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from f2f.serving.jobs.queue import BrokerQueue

logger = logging.getLogger("f2f.serving")
RUNNING_JOBS = "running_jobs"  # the workers' custom autoscaling metric (EditWorker.record_autoscaling_stats)
POLICY_PATH = "f2f.serving.scaling:JobQueuePolicy"


class JobQueuePolicy:
    """Serve autoscaling policy of the edit workers: replicas for the jobs waiting on the broker and running."""

    def __init__(
        self,
        broker_url: str,
        transport_options: dict[str, Any] | None,
        queue_name: str,
        jobs_per_replica: int,
        poll_interval_s: float = 2.0,
    ) -> None:
        self.queue = BrokerQueue(broker_url, transport_options, queue_name)
        self.jobs_per_replica, self.poll_interval_s = jobs_per_replica, poll_interval_s
        self.waiting = 0
        self._polled_at = float("-inf")
        self._poll: asyncio.Task[None] | None = None
        self._failing = False

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        self._maybe_poll()
        running = sum((ctx.aggregated_metrics or {}).get(RUNNING_JOBS, {}).values())
        workload = self.waiting + running
        return math.ceil(workload / self.jobs_per_replica), {"waiting_jobs": self.waiting, RUNNING_JOBS: running}

    def _maybe_poll(self) -> None:
        """Start one poll of the broker on a thread when the last is done and `poll_interval_s` passed."""
        if self._poll is not None and not self._poll.done():
            return
        now = time.monotonic()
        if now - self._polled_at < self.poll_interval_s:
            return
        self._polled_at = now
        with contextlib.suppress(RuntimeError):  # no running loop: called outside Serve's controller (a unit test)
            self._poll = asyncio.get_running_loop().create_task(self.poll())

    async def poll(self) -> None:
        try:
            self.waiting = await asyncio.to_thread(self.queue.length)
        except Exception as exc:
            if not self._failing:
                reason = f"{type(exc).__name__}: {exc}"
                logger.warning("the job queue's length could not be read (%s); scaling on the last one", reason)
            self._failing = True
            return
        self._failing = False
