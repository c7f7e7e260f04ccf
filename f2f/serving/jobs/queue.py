"""Where edit jobs wait: Ray Serve's asynchronous inference (Celery) over Redis or a file-system broker.

Rules:

- `JobsArgs` (the `jobs` block of the app's args) says where job records and
  results live (`dir`, a shared volume when replicas run on several nodes),
  how long they are kept (`ttl_s`), how many jobs may wait (`max_queued`),
  and which broker carries the job messages.
- Broker: `broker_url: null` (the default) is Kombu's file-system transport
  in `<dir>/broker/`: one node, nothing to install. `redis://host:port/db`
  is Redis (production; several nodes). Any other Celery broker URL works
  too (RabbitMQ's `amqp://`).
- No Celery result backend (`disabled://`): the job store is the record, so
  nothing a worker does after an edit writes to the broker's side, and no
  failed result write (a full or read-only volume, a Redis refusing writes)
  can stop a consumer from taking jobs.
- `BrokerQueue.length()` counts the messages waiting on the broker (Kombu's
  queue declare, any transport): the edit workers scale on it
  (`f2f.serving.scaling`), a worker's health check reads it (a consumer that
  takes nothing while messages wait is restarted), and the ingress exports it
  (`f2f_broker_queue_length`).
- A job message carries only the job id; everything else is in the job
  store. Ray's Celery adapter acknowledges a message after its handler
  returns (`acks_late`) and requeues it if the worker is lost; the handler
  never raises for a failed edit (the job records the failure), so Celery
  never retries an edit behind the job store's back.
- No prefetch (`worker_prefetch_multiplier: 1` with `acks_late`): a worker
  replica holds only the messages of the jobs it is running. Waiting jobs'
  messages stay on the broker, so when a worker is lost (kill -9), the
  others, or its replacement, take them at once; its running jobs come back
  through their leases (`lease_s`). Celery's default (4 per slot) let a dead
  worker take waiting jobs with it until `resend_after_s`.
- The file-system broker is Kombu's with two races closed (`FileTransport`,
  scheme `f2f-filesystem://`): a message is written under a name no reader
  takes and renamed into place when whole, and a reader claims a message by
  renaming it into `claimed/` beside the queue (one filesystem, so exactly
  one reader wins). Kombu's own creates the file empty and writes it after,
  so a worker polling in between read "" and its Celery consumer died on
  the JSON error, taking that job's message with it. A message that still
  cannot be read is moved to `unreadable/` and logged; its job is sent
  again by the ingress's sweep (`resend_after_s`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any, Literal
from urllib.parse import quote

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps, loads
from pydantic import BaseModel, ConfigDict, Field, model_validator

from f2f.errors import InvalidConfig

TASK_NAME = "f2f.edit"
FILE_SCHEME = "f2f-filesystem"
logger = logging.getLogger("f2f.serving")


class _FileChannel(filesystem.Channel):
    """Kombu's file-system channel whose messages appear whole and are taken by one reader (module docstring)."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"  # not "<queue>.msg": no reader takes it
        with open(partial, "wb") as f:
            f.write(dumps(payload).encode())
        os.replace(partial, final)

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        claimed = Path(self.transport_options["claim_folder"])
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            mine = claimed / name
            try:
                os.rename(os.path.join(self.data_folder_in, name), mine)
            except FileNotFoundError:
                continue  # another reader took it
            try:
                return loads(mine.read_bytes())
            except (ValueError, UnicodeDecodeError) as exc:
                aside = claimed.parent / "unreadable" / name
                os.replace(mine, aside)
                logger.warning("unreadable message %s moved to %s (%s); its job is sent again by the sweep", name, aside, exc)
            finally:
                mine.unlink(missing_ok=True)
        raise Empty()


class FileTransport(filesystem.Transport):
    Channel = _FileChannel


TRANSPORT_ALIASES[FILE_SCHEME] = f"{__name__}:FileTransport"


class JobsArgs(BaseModel):
    """Job store, queue and expiry settings of the service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path | None = Field(
        None,
        description="The file store's records, the default `objects` folder (jobs/) and each node's scratch "
        "(default: <config.cache_dir>/jobs).",
    )
    store: Literal["file", "redis"] = Field(
        "file",
        description="Where job records live: file (in `dir`: one machine) or redis (`redis_url`: any cluster).",
    )
    redis_url: str | None = Field(
        None,
        description="The job store's Redis when `store` is redis, e.g. redis://:${REDIS_PASSWORD}@f2f-redis:6379/1 "
        "(`${NAME}` as in broker_url).",
    )
    redis_prefix: str = Field(
        "f2f", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Prefix of the job store's Redis keys: one per deployment."
    )
    objects: str | None = Field(
        None,
        description="Where sources and outputs live: s3://bucket/prefix (AWS S3, MinIO, Ceph; credentials from the "
        "AWS environment: AWS_ACCESS_KEY_ID, web identity, ...) or a folder, file:///path (null: `dir`/jobs, one "
        "machine). `${NAME}` as in broker_url.",
    )
    objects_endpoint_url: str | None = Field(
        None, description="The S3 endpoint of MinIO or Ceph, e.g. http://f2f-minio:9000 (null: $AWS_ENDPOINT_URL, else AWS)."
    )
    downloads: Literal["stream", "redirect"] = Field(
        "stream",
        description="How outputs are downloaded: stream (through the ingress) or redirect (a 307 to a presigned URL of "
        "the bucket, valid download_url_ttl_s; s3 objects only).",
    )
    download_url_ttl_s: int = Field(300, ge=10, le=604_800, description="Seconds a presigned download URL is valid.")
    ttl_s: float = Field(86_400.0, gt=0, description="Seconds a finished job and its files are kept.")
    max_queued: int = Field(64, ge=1, le=1_000_000, description="Jobs that may wait for a worker; one more is answered 503.")
    retry_after_s: int = Field(10, ge=1, description="Retry-After (seconds) of a 503 when the queue is full.")
    max_body_bytes: int = Field(64 * 2**20, ge=1024, description="Largest request body accepted (413 above).")
    max_attempts: int = Field(3, ge=1, le=20, description="Tries of one job when a model replica is lost mid-job.")
    lease_s: float = Field(120.0, gt=0, description="A running job whose worker sent no heartbeat this long is queued again.")
    heartbeat_s: float = Field(10.0, gt=0, description="How often a worker refreshes the lease of its running jobs.")
    resend_after_s: float = Field(
        300.0, gt=0, description="A job still queued this long after its message was sent is sent again (a duplicate is skipped)."
    )
    sweep_interval_s: float = Field(
        30.0, gt=0, description="How often the ingress deletes expired jobs, requeues lost ones and sends unsent ones."
    )
    poll_interval_s: float = Field(
        0.25, gt=0, le=5, description="The longest event streams and synchronous edits wait before they read a job again."
    )
    broker_poll_s: float = Field(
        0.02, gt=0, le=5, description="How often a worker looks for job messages on the file-system broker (Redis pushes them)."
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker URL, e.g. redis://redis:6379/0 (null: file system). `${NAME}` is replaced by that "
        "environment variable, URL-encoded, in each process that connects: redis://:${REDIS_PASSWORD}@redis:6379/0.",
    )
    queue_name: str = Field("f2f-edits", min_length=1, description="Name of the job queue on the broker.")
    stalled_after_s: float = Field(
        60.0,
        gt=0,
        description="A worker replica with a free slot that took no job for this long while messages wait on the broker "
        "fails its health check, and Serve replaces it.",
    )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> JobsArgs:
        if self.heartbeat_s >= self.lease_s:
            raise InvalidConfig("heartbeat_s", self.heartbeat_s, f"must be shorter than lease_s ({self.lease_s})")
        if self.store == "redis" and not self.redis_url:
            raise InvalidConfig("redis_url", self.redis_url, "is needed when jobs.store is redis (redis://host:6379/1)")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidConfig("redis_url", self.redis_url, "must be a redis://, rediss:// or unix:// URL")
        if self.downloads == "redirect" and not (self.objects or "").startswith("s3://"):
            rule = "redirect needs objects in a bucket (jobs.objects: s3://bucket/prefix); a folder is streamed"
            raise InvalidConfig("downloads", self.downloads, rule)
        return self

    def store_dir(self, cache_dir: Path) -> Path:
        return (self.dir or cache_dir / "jobs").expanduser()


_ENV_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def expand_url(url: str, field: str = "jobs.broker_url") -> str:
    """`url` with each `${NAME}` replaced by that environment variable, URL-encoded (a password from a Secret:
    `redis://:${REDIS_PASSWORD}@f2f-redis:6379/0`). Expanded only in the process that connects, so the args, the
    logs and `serve status` show the reference, never the value. An unset variable is InvalidConfig, naming it."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise InvalidConfig(field, url, f"names ${{{name}}}, which is not set in this process")
        return quote(os.environ[name], safe="")

    return _ENV_REFERENCE.sub(value, url)


def broker_settings(jobs: JobsArgs, store_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """The Kombu URL of the job queue's broker (`${NAME}` references not expanded: `expand_url` does that where a
    connection is made) and its transport options (the file-system broker's folders)."""
    if jobs.broker_url:
        return jobs.broker_url, None
    folder = store_dir / "broker"
    for sub in ("messages", "claimed", "unreadable", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder_in": str(folder / "messages"),
        "data_folder_out": str(folder / "messages"),
        "claim_folder": str(folder / "claimed"),
        "control_folder": str(folder / "control"),
        "polling_interval": jobs.broker_poll_s,
    }
    return f"{FILE_SCHEME}://", options


def task_processor_config(jobs: JobsArgs, store_dir: Path) -> Any:
    """Ray Serve's TaskProcessorConfig for the job queue (Celery adapter, no result backend)."""
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig

    app_config: dict[str, Any] = {
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "broker_connection_retry_on_startup": True,
        # A worker takes only the messages of the jobs it runs (with acks_late: its concurrency, no more), so
        # the other jobs' messages stay on the broker for any worker; a lost worker strands none of them.
        "worker_prefetch_multiplier": 1,
    }
    broker, options = broker_settings(jobs, store_dir)
    broker = expand_url(broker)  # the consumers' Celery app is made from this in each worker replica
    # No result backend: the job store is the record. Celery's DisabledBackend stores nothing, so no failed write
    # to a backend (a full or read-only volume, a Redis that refuses writes) can break a consumer.
    adapter = CeleryAdapterConfig(
        broker_url=broker, backend_url="disabled://", broker_transport_options=options, app_custom_config=app_config
    )
    # Retries are the job store's (max_attempts, leases): Celery's own would run a failed edit again.
    return TaskProcessorConfig(queue_name=jobs.queue_name, adapter_config=adapter, max_retries=0)


class BrokerQueue:
    """How many job messages wait on the broker (no consumer took them yet), through Kombu: Redis, RabbitMQ or the
    file-system broker alike. One connection, opened on first use and again after an error (blocking: use a thread)."""

    def __init__(self, url: str, transport_options: dict[str, Any] | None, queue_name: str) -> None:
        self.url, self.options, self.queue_name = url, transport_options or {}, queue_name
        self._connection: Any = None

    @classmethod
    def of(cls, jobs: JobsArgs, store_dir: Path) -> BrokerQueue:
        return cls(*broker_settings(jobs, store_dir), jobs.queue_name)

    def length(self) -> int:
        """Messages waiting; raises (and reconnects next time) if the broker cannot be reached."""
        from kombu import Connection

        try:
            if self._connection is None:
                options = {**self.options, "socket_timeout": 2.0, "socket_connect_timeout": 2.0}
                self._connection = Connection(expand_url(self.url), transport_options=options, connect_timeout=2.0)
            # The queue as Celery declares it (durable, one direct exchange of its name): declaring is idempotent.
            declared = self._connection.default_channel.queue_declare(queue=self.queue_name, durable=True, auto_delete=False)
            return int(declared.message_count)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
            self._connection = None


class JobQueue:
    """The producer side: sends job ids to the queue (blocking calls; run them in a thread).

    Its own Celery app on the consumers' broker and queue, with no result backend: Ray's `enqueue_task_sync`
    reads the task's status from the result backend after sending, and there is none (`task_processor_config`).
    """

    def __init__(self, jobs: JobsArgs, store_dir: Path) -> None:
        from celery import Celery

        url, options = broker_settings(jobs, store_dir)
        name = self.queue_name = jobs.queue_name
        self.app = Celery(name, broker=expand_url(url), backend="disabled://")
        self.app.conf.update(
            broker_transport_options=options or {},
            broker_connection_retry_on_startup=True,
            # The queue as Ray's Celery adapter declares it for the consumers: one direct exchange of its name.
            task_queues={name: {"exchange": name, "exchange_type": "direct", "routing_key": name}},
        )

    def send(self, job_id: str) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], queue=self.queue_name)
