"""Job ids on log lines: every line a job causes, in the ingress, the edit worker and the model replicas, names it.

Rules:

- Serve writes each replica's lines to `logs/serve/replica_<app>_<deployment>_<replica>.log` under Ray's
  session directory, one JSON object per line when the application's `logging_config` says `encoding: JSON`
  (serve/*.yaml do). Only the `ray.serve` logger writes there: `log_to_serve()`, called by each deployment's
  constructor, hands the lines of f2f's loggers (`f2f.*`) to it, so they land in the same file with the same
  fields (`deployment`, `replica`, `request_id`, ...), and adds `f2f_job_id` to the lines that belong to a job.
- The edit worker runs each job inside `job_logging(job_id)`: the lines it writes carry `f2f_job_id`, and the
  handle calls it makes carry the job's id as their Serve request id, so Serve's own lines in the called
  replica (the access line of each call) carry it as `request_id`.
- The model deployments are called by the edit worker only: there a request's Serve request id is its job's
  id (`log_to_serve(request_id_is_job=True)`), and every line written while serving it carries both.
- The ingress names the job on each line about one (created, sent, requeued, expired):
  `logger.info(..., extra=job_fields(job_id))`.
- The field is `f2f_job_id`, not `job_id`: that name is Ray's (the Ray job a line's process belongs to) and
  Serve strips it from its lines.

Outside a Serve replica (the CLI, tests) `log_to_serve` changes nothing, and `job_logging` only sets the job.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

JOB_FIELD = "f2f_job_id"
SERVE_LOGGER = "ray.serve"  # the one logger whose lines Serve writes to the replica's log file
F2F_LOGGER = "f2f"
T = TypeVar("T")

_job: ContextVar[str | None] = ContextVar("f2f_job", default=None)


def job_fields(job_id: str) -> dict[str, str]:
    """`extra=` for one line about a job."""
    return {JOB_FIELD: job_id}


def current_job() -> str | None:
    """The job whose work this code runs for (set by `job_logging`), if any."""
    return _job.get()


@contextmanager
def job_logging(job_id: str) -> Iterator[None]:
    """Lines written inside name the job; handle calls made inside carry it as their Serve request id."""
    token = _job.set(job_id)
    serve_context, previous, app_name = _serve_request_context()
    if serve_context is not None:  # what a replica does for each request it serves (Serve's replica.py `_wrap_request`)
        serve_context.set(dataclasses.replace(previous, request_id=job_id, app_name=app_name))
    try:
        yield
    finally:
        if serve_context is not None:
            serve_context.set(previous)
        _job.reset(token)


async def in_job(job_id: str, work: Awaitable[T]) -> T:
    """Await `work` inside `job_logging(job_id)` (run it as its own task, so the job stays in that task's context)."""
    with job_logging(job_id):
        return await work


def log_to_serve(*, request_id_is_job: bool = False) -> None:
    """In a Serve replica: f2f's lines go to the replica's Serve log file, and lines of a job carry `f2f_job_id`.

    `request_id_is_job`: this deployment is called by the edit worker only, so a request's id is its job's.
    """
    if not _in_replica():
        return
    serve_logger, f2f_logger = logging.getLogger(SERVE_LOGGER), logging.getLogger(F2F_LOGGER)
    if not any(isinstance(f, JobFilter) for f in serve_logger.filters):
        serve_logger.addFilter(JobFilter(request_id_is_job))
    if not any(isinstance(h, _ToServeLogger) for h in f2f_logger.handlers):
        f2f_logger.addHandler(_ToServeLogger())
    f2f_logger.setLevel(serve_logger.getEffectiveLevel())
    f2f_logger.propagate = False  # Serve's own handlers write to stderr too (RAY_SERVE_LOG_TO_STDERR): once is enough


class JobFilter(logging.Filter):
    """Adds `f2f_job_id` to a line written for a job (it filters nothing out)."""

    def __init__(self, request_id_is_job: bool = False) -> None:
        super().__init__()
        self.request_id_is_job = request_id_is_job

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, JOB_FIELD, None) is None:
            job_id = _job.get() or (_serve_request_id() if self.request_id_is_job else None)
            if job_id:
                setattr(record, JOB_FIELD, job_id)
        return True


class _ToServeLogger(logging.Handler):
    """Hands f2f's lines to the `ray.serve` logger: its filters, then its handlers as they are now (the log file)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(SERVE_LOGGER).handle(record)


def _in_replica() -> bool:
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:  # not in a replica (RayServeException), or no Ray
        return False
    return True


def _serve_request_context() -> tuple[ContextVar | None, Any, str]:
    """Serve's request-context variable, its value here, and this replica's application; (None, None, "") without Ray."""
    try:
        from ray.serve import context
    except ImportError:
        return None, None, ""
    current, replica = context._get_serve_request_context(), context._get_internal_replica_context()
    return context._serve_request_context, current, current.app_name or (replica.app_name if replica else "")


def _serve_request_id() -> str | None:
    from ray.serve import context

    return context._get_serve_request_context().request_id or None
