"""Jobs on the cluster's parts: a real Redis broker, the Redis job store and a bucket for the job's objects:
backpressure, replicas lost mid-job, a paused worker, Redis restarts, an object-store outage (real Ray Serve, real
HTTP on 127.0.0.1).

Two `redis-server`s (Debian's package; `.ci/run` installs it) are started on
free loopback ports for the module: the broker's, without persistence, and
the job store's, append-only as deployed. The objects go to an S3-protocol
server (moto's server mode) through a TCP forwarder the tests can cut (an
outage that loses nothing the bucket holds). The worker runs one job at a
time and two may wait, so the queue fills quickly; leases are short, so a
lost worker's job is queued again within seconds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from harness import FINISHED, SAMPLE, error_of, kill_replica, replica_pid, running_app, submit, tiny_config, wait_for  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from s3_server import CREDENTIALS, S3Server  # noqa: E402
from tcp_proxy import TcpProxy  # noqa: E402

PREFIX = "resilience"  # the objects' prefix in the bucket

LONG = {"steps": "1000"}  # long enough to act on a job mid-video (400 steps took under 2 s on a 2-core Xeon)
# Two videos of 49 frames x 1000 steps: about 10 s on a 2-core Xeon (2026-12-06), five times the 2 s after which the
# client below hangs up (one 400-step video was answered within those 2 s there).
SYNC_LONG = {"steps": "1000", "num_frames": "49", "n": "2"}


def _redis(folder: Path | None = None) -> RedisServer:
    server = RedisServer(folder)
    if server.binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server.start()
    return server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """The broker's Redis, without persistence: a restart loses every message it held."""
    server = _redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="module")
def store_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The job store's Redis, append-only as deployed (k8s/base/redis.yaml): a restart keeps the records."""
    server = _redis(tmp_path_factory.mktemp("store-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> Iterator[TcpProxy]:
    """The bucket `f2f` of the S3-protocol server, reached through a forwarder (`cut` / `restore`)."""
    s3_server.reset()
    s3_server.make_bucket("f2f")
    proxy = TcpProxy(s3_server.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.cut()


def _objects(bucket: TcpProxy, job_id: str) -> list[str]:
    """The keys of a job's objects in the bucket (under the module's prefix)."""
    import boto3

    keys = {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    client = boto3.client("s3", endpoint_url=bucket.url, region_name="us-east-1", **keys)
    found = client.list_objects_v2(Bucket="f2f", Prefix=f"{PREFIX}/{job_id}/").get("Contents", [])
    return sorted(item["Key"].removeprefix(f"{PREFIX}/{job_id}/") for item in found)


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: Path,
    redis_url: str,
    store_redis: RedisServer,
    bucket: TcpProxy,
    jobs_dir: Path,
) -> Iterator[str]:
    args = {
        "config": tiny_config(tiny_models, tmp_path_factory.mktemp("f2f-cache")),
        "worker_max_concurrent_jobs": 1,
        "auth": {"required": False},
        "jobs": {
            "dir": str(jobs_dir),
            "broker_url": redis_url,
            "store": "redis",  # every test here runs on the Redis job store (the file store: the other serve modules)
            "redis_url": store_redis.url,
            "objects": f"s3://f2f/{PREFIX}",  # and every job's bytes in a bucket: `dir` is each process's scratch
            "objects_endpoint_url": bucket.url,
            "max_queued": 2,
            "retry_after_s": 7,
            "lease_s": 4,
            "heartbeat_s": 0.5,
            "sweep_interval_s": 0.5,
            "poll_interval_s": 0.1,
            "resend_after_s": 5,
        },
    }
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():  # boto3's standard chain, in every Ray process started below
            env.setenv(name, value)
        with running_app(args) as url:
            yield url


def _waiting_messages(redis_url: str) -> int:
    """Job messages on the Redis broker that no worker has taken (Kombu's lists for the queue)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    return sum(client.llen(key) for key in client.scan_iter(match="f2f-edits*") if client.type(key) == b"list")


def test_jobs_go_through_redis(base_url: str, redis_url: str) -> None:
    import redis

    job = wait_for(base_url, submit(base_url, {"prompt": "make the sun set"}).json()["id"])
    assert job["status"] == "succeeded" and job["attempts"] == 1
    client = redis.Redis.from_url(redis_url)
    assert client.exists("_kombu.binding.f2f-edits")  # the queue lives in Redis (Kombu binds it there)
    # No result backend: the job store is the record, and no result write can fail a consumer.
    assert not any(key.startswith(b"celery-task-meta-") for key in client.scan_iter())
    from ray import serve

    assert "JobEvents" not in serve.status().applications["f2f"].deployments  # the store's Redis channel wakes waits


def test_a_full_queue_is_a_typed_503_with_retry_after(base_url: str, redis_url: str) -> None:
    ids = [submit(base_url, {"prompt": "slow", **LONG}).json()["id"]]
    wait_for(base_url, ids[0], lambda job: job["status"] == "running")  # the one worker slot is taken
    ids += [submit(base_url, {"prompt": f"wait {i}"}).json()["id"] for i in range(2)]
    assert _waiting_messages(redis_url) == 2  # the busy worker took none of them (no prefetch): any worker can
    refused = submit(base_url, {"prompt": "one too many"})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
    error = error_of(refused)
    assert error["code"] == "overloaded" and error["type"] == "server_error"
    files = {"image": ("source.png", SAMPLE.read_bytes(), "image/png")}
    openai = httpx.post(f"{base_url}/v1/images/edits", data={"prompt": "x"}, files=files, timeout=30)
    assert openai.status_code == 503 and error_of(openai)["code"] == "overloaded"
    for job_id in ids:
        httpx.delete(f"{base_url}/v1/edits/{job_id}")
    assert {wait_for(base_url, job_id)["status"] for job_id in ids} == {"cancelled"}
    assert submit(base_url, {"prompt": "room again"}).status_code == 202


def test_a_generator_replica_lost_mid_job_is_retried(base_url: str) -> None:
    job_id = submit(base_url, {"prompt": "make it rain", **LONG}).json()["id"]
    wait_for(base_url, job_id, lambda job: job["progress"] is not None, timeout_s=60)
    kill_replica("Generator")
    job = wait_for(base_url, job_id, timeout_s=180)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and job["progress"]["step"] == job["progress"]["total"]


def test_a_worker_replica_lost_mid_job_is_queued_again(base_url: str, redis_url: str) -> None:
    job_id = submit(base_url, {"prompt": "make it snow", **LONG}).json()["id"]
    first = wait_for(base_url, job_id, lambda job: job["progress"] is not None, timeout_s=60)
    waiting = submit(base_url, {"prompt": "make it hail"}).json()["id"]
    assert _waiting_messages(redis_url) == 1  # on the broker, not held by the worker about to die
    kill_replica("EditWorker")
    job = wait_for(base_url, job_id, timeout_s=180)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and job["started_at"] == first["started_at"]
    after = wait_for(base_url, waiting, timeout_s=60)
    assert after["status"] == "succeeded" and after["attempts"] == 1


def test_an_ingress_replica_lost_mid_job_loses_nothing(base_url: str) -> None:
    job_id = submit(base_url, {"prompt": "make it night", **LONG}).json()["id"]
    wait_for(base_url, job_id, lambda job: job["status"] == "running", timeout_s=60)
    kill_replica("Ingress")
    deadline = time.monotonic() + 60
    while True:  # Serve starts another ingress; the job is in the store all along
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "no ingress came back"
        time.sleep(0.5)
    job = wait_for(base_url, job_id, timeout_s=180)
    assert job["status"] == "succeeded" and job["attempts"] == 1


def test_a_vlm_replica_lost_mid_job_is_retried(base_url: str) -> None:
    job_id = submit(base_url, {"prompt": "make it foggy", **LONG}).json()["id"]
    wait_for(base_url, job_id, lambda job: job["progress"] is not None, timeout_s=60)  # captioned; selection to come
    kill_replica("VLM")
    job = wait_for(base_url, job_id, timeout_s=180)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] in (1, 2)  # a call routed to the dead replica is tried again; one to its successor is not


def test_a_client_that_hangs_up_on_a_synchronous_edit_still_gets_its_job(base_url: str) -> None:
    # The replicas killed by the tests above are replaced first: an edit now runs for its whole video.
    deadline = time.monotonic() + 120
    while httpx.get(f"{base_url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the application did not become ready again"
        time.sleep(0.5)
    before = {job["id"] for job in httpx.get(f"{base_url}/v1/edits?limit=100").json()["data"]}
    files = {"image": ("source.png", SAMPLE.read_bytes(), "image/png")}
    try:
        answer = httpx.post(
            f"{base_url}/v1/images/edits", data={"prompt": "hang up", **SYNC_LONG}, files=files, timeout=httpx.Timeout(30, read=2)
        )
    except httpx.ReadTimeout:
        answer = None  # the client hung up while its edit ran
    assert answer is None, f"the edit was answered within 2 s: {answer.status_code} {answer.text[:300]}"
    (job_id,) = {job["id"] for job in httpx.get(f"{base_url}/v1/edits?limit=100").json()["data"]} - before
    job = wait_for(base_url, job_id, timeout_s=180)
    assert job["status"] == "succeeded" and httpx.get(f"{base_url}/v1/edits/{job_id}/image").status_code == 200


def test_a_worker_paused_past_its_lease_cannot_change_its_job_once_resumed(base_url: str, bucket: TcpProxy) -> None:
    """SIGSTOP of the worker mid-edit until the sweep queued its job again (lease 4 s), then SIGCONT: the resumed
    attempt is refused every write (fenced), stops, and the job runs again as attempt 2. Before fencing, the resumed
    attempt's heartbeats wrote progress into the queued record and its finish made the job succeed at attempt 1."""
    deadline = time.monotonic() + 120
    while httpx.get(f"{base_url}/readyz", timeout=10).status_code != 200:  # replicas killed above are replaced first
        assert time.monotonic() < deadline, "the application did not become ready again"
        time.sleep(0.5)
    job_id = submit(base_url, {"prompt": "make it stormy", **LONG}).json()["id"]
    wait_for(base_url, job_id, lambda job: job["progress"] is not None, timeout_s=60)
    worker = replica_pid("EditWorker")
    os.kill(worker, signal.SIGSTOP)
    try:
        wait_for(base_url, job_id, lambda job: job["status"] == "queued", timeout_s=60)  # the lease lapsed
    finally:
        os.kill(worker, signal.SIGCONT)
    seen: list[dict[str, Any]] = []
    job = wait_for(base_url, job_id, lambda job: seen.append(job) or job["status"] in FINISHED, timeout_s=180)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), job["error"]
    back_in_queue = [state for state in seen if state["status"] == "queued"]
    assert all(state["stage"] is None and state["progress"] is None for state in back_in_queue), back_in_queue
    assert all(state["attempts"] == 2 for state in seen if state["status"] == "running"), seen
    time.sleep(2 * 0.5)  # two sweeps (sweep_interval_s 0.5) and heartbeats of any late writer: the record stays
    assert httpx.get(f"{base_url}/v1/edits/{job_id}").json() == job
    attempts = {key.split("/")[1] for key in _objects(bucket, job_id) if key.startswith("attempts/")}
    assert len(attempts) == 1 and attempts.pop().startswith("2-")  # only the finished attempt's outputs are kept
    assert httpx.get(f"{base_url}/v1/edits/{job_id}/image").status_code == 200


def test_a_redis_crash_loses_no_accepted_job(base_url: str, redis_server: RedisServer) -> None:
    """Redis dies (no persistence: its messages are gone) with a job running and one waiting; one more comes while it is down."""
    running = submit(base_url, {"prompt": "make it dusk", **LONG}).json()["id"]
    wait_for(base_url, running, lambda job: job["status"] == "running", timeout_s=60)
    waiting = submit(base_url, {"prompt": "make it dawn"}).json()["id"]
    redis_server.stop()
    accepted = submit(base_url, {"prompt": "make it noon"})
    assert accepted.status_code == 202, accepted.text  # the store has it; the sweep sends it once the broker is back
    during = accepted.json()["id"]
    assert httpx.get(f"{base_url}/v1/edits/{during}").json()["status"] == "queued"
    time.sleep(2)
    redis_server.start()
    jobs = [wait_for(base_url, job_id, timeout_s=240) for job_id in (running, waiting, during)]
    assert [job["status"] for job in jobs] == ["succeeded"] * 3, [job["error"] for job in jobs]
    assert submit(base_url, {"prompt": "and after"}).status_code == 202


def test_a_restart_of_the_stores_redis_loses_no_job_and_needs_no_restart(base_url: str, store_redis: RedisServer) -> None:
    """The job store's Redis crashes (append-only, as deployed) with a job running: a submission meanwhile is a typed
    503 with Retry-After, the running job's worker keeps trying its writes, and once Redis is back the job ends and
    new ones run, without restarting anything."""
    running = submit(base_url, {"prompt": "make it windy", **LONG}).json()["id"]
    wait_for(base_url, running, lambda job: job["status"] == "running", timeout_s=60)
    time.sleep(1.5)  # appendfsync everysec: what was written a second ago is on disk
    store_redis.stop()
    refused = submit(base_url, {"prompt": "while it is down"})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "7", refused.text
    assert error_of(refused)["code"] == "store_unavailable"
    time.sleep(2)
    store_redis.start()
    job = wait_for(base_url, running, timeout_s=240)
    assert job["status"] == "succeeded", job["error"]
    after = submit(base_url, {"prompt": "and after"})
    assert after.status_code == 202 and wait_for(base_url, after.json()["id"])["status"] == "succeeded"


def test_an_object_store_outage_is_a_typed_503_and_loses_no_job(base_url: str, bucket: TcpProxy) -> None:
    """The bucket cannot be reached for a few seconds while a job runs: a submission meanwhile is a typed 503 with
    Retry-After and leaves no job; the running job's writes are tried again (or, past its lease, the job runs again),
    and once the bucket is back every accepted job succeeds with its outputs, without restarting anything."""
    running = submit(base_url, {"prompt": "make it misty", **LONG}).json()["id"]
    wait_for(base_url, running, lambda job: job["status"] == "running", timeout_s=60)
    listed = len(httpx.get(f"{base_url}/v1/edits?limit=100").json()["data"])
    bucket.cut()
    try:
        refused = submit(base_url, {"prompt": "while the bucket is away"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "7", refused.text
        assert error_of(refused)["code"] == "object_store_unavailable"
        assert len(httpx.get(f"{base_url}/v1/edits?limit=100").json()["data"]) == listed  # no job was made
        time.sleep(3)
    finally:
        bucket.restore()
    job = wait_for(base_url, running, timeout_s=240)
    assert job["status"] == "succeeded", job["error"]
    assert "edited.png" in {key.rpartition("/")[2] for key in _objects(bucket, running)}
    after = submit(base_url, {"prompt": "and after"})
    assert after.status_code == 202 and wait_for(base_url, after.json()["id"])["status"] == "succeeded"
