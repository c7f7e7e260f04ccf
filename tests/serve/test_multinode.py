"""A Ray cluster of three nodes on one host (Ray's own harness, `ray.cluster_utils.Cluster`, every socket on
127.0.0.1), with the deployments pinned to node kinds as the KubeRay overlays place them; a node killed mid-edit.

- head (`cpu_node`): the ingress and the events hub (the HTTP proxy runs here only);
- node 1 (`vlm_node`, `generator_node`, `worker_node`): the VLM, a generator, an edit worker;
- node 2 (`generator_node`, `worker_node`): a generator, an edit worker.

One replica of each kind per node (each asks for one unit of its node's resource), so an edit's ingress,
worker, VLM and generator span the three nodes. The file-system broker and job store sit on this host's disk,
which every node shares (on Kubernetes: Redis; tests/serve/test_resilience.py runs jobs through it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("diffusers")
httpx = pytest.importorskip("httpx")

from harness import LOOPBACK_ENV, free_port, submit, tiny_config, wait_for  # noqa: E402

NODE_1 = {"vlm_node": 1, "generator_node": 1, "worker_node": 1}
NODE_2 = {"generator_node": 1, "worker_node": 1}


class ThreeNodes:
    """The cluster, the app on it, and the node that the test kills."""

    def __init__(self, cluster: Any, node_2: Any, base_url: str, jobs_dir: Path) -> None:
        self.cluster, self.node_2, self.base_url, self.jobs_dir = cluster, node_2, base_url, jobs_dir


def _args(models: Path, cache: Path, jobs_dir: Path) -> dict[str, Any]:
    return {
        "config": tiny_config(models, cache),
        "ingress_resources": {"cpu_node": 1},
        "vlm_resources": {"vlm_node": 1},
        "generator_resources": {"generator_node": 1},
        "worker_resources": {"worker_node": 1},
        "generator_autoscaling": {"min_replicas": 2, "max_replicas": 2},
        "worker_autoscaling": {"min_replicas": 2, "max_replicas": 2},
        "worker_max_concurrent_jobs": 1,
        "auth": {"required": False},
        "jobs": {"dir": str(jobs_dir), "lease_s": 5, "heartbeat_s": 0.5, "sweep_interval_s": 0.5, "poll_interval_s": 0.1},
    }


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[ThreeNodes]:
    from ray.cluster_utils import Cluster

    port, jobs_dir = free_port(), tmp_path_factory.mktemp("jobs")
    with pytest.MonkeyPatch.context() as env:
        for key, value in LOOPBACK_ENV.items():
            env.setenv(key, value)
        import ray
        from ray import serve

        from f2f.serving.app import build_app

        head = {"num_cpus": 1, "resources": {"cpu_node": 4}, "include_dashboard": False}  # Ray's own /tmp/ray
        cluster = Cluster(initialize_head=True, head_node_args=head)
        try:
            cluster.add_node(num_cpus=1, resources=NODE_1)
            node_2 = cluster.add_node(num_cpus=1, resources=NODE_2)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address)
            serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
            serve.run(build_app(_args(tiny_models, tmp_path_factory.mktemp("f2f-cache"), jobs_dir)), name="f2f")
            yield ThreeNodes(cluster, node_2, f"http://127.0.0.1:{port}", jobs_dir)
        finally:
            ray.shutdown()  # the cluster just goes (harness.running_app says why)
            cluster.shutdown()


def _placement() -> dict[str, set[str]]:
    """Deployment -> the node ids its live replicas run on (Ray's actor table)."""
    from ray._private import state

    placed: dict[str, set[str]] = {}
    for actor in state.actors().values():
        name = actor.get("Name") or ""
        if actor["State"] == "ALIVE" and name.startswith("SERVE_REPLICA::f2f#"):
            deployment = name.split("#")[1]
            placed.setdefault(deployment, set()).add(actor["Address"]["NodeID"])
    return placed


def test_every_socket_stays_on_loopback_and_the_deployments_sit_where_pinned(nodes: ThreeNodes) -> None:
    import ray

    alive = [node for node in ray.nodes() if node["Alive"]]
    assert len(alive) == 3 and {node["NodeManagerAddress"] for node in alive} == {"127.0.0.1"}
    by_resource = {key: {n["NodeID"] for n in alive if key in n["Resources"]} for key in ("cpu_node", "vlm_node")}
    placed = _placement()
    assert placed["Ingress"] <= by_resource["cpu_node"] and placed["VLM"] <= by_resource["vlm_node"]
    assert len(placed["Generator"]) == 2 and len(placed["EditWorker"]) == 2  # one on each worker node
    assert not placed["Generator"] & by_resource["cpu_node"]  # no model on the head
    job = wait_for(nodes.base_url, submit(nodes.base_url, {"prompt": "across three nodes"}).json()["id"])
    assert job["status"] == "succeeded"


def test_a_node_killed_mid_edit_loses_no_job_and_runs_none_twice(nodes: ThreeNodes) -> None:
    base_url = nodes.base_url
    ids = [submit(base_url, {"prompt": f"survive {i}", "steps": "120"}).json()["id"] for i in range(4)]
    deadline = time.monotonic() + 120
    while True:  # both workers busy: one of them is on the node about to go
        running = [job_id for job_id in ids if httpx.get(f"{base_url}/v1/edits/{job_id}").json()["status"] == "running"]
        if len(running) == 2:
            break
        assert time.monotonic() < deadline, "two jobs never ran at once"
        time.sleep(0.2)
    nodes.cluster.remove_node(nodes.node_2, allow_graceful=False)
    jobs = [wait_for(base_url, job_id, timeout_s=300) for job_id in ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * len(ids)
    assert max(job["attempts"] for job in jobs) >= 2  # the killed node's job (or its generator call) was tried again
    for job in jobs:  # finished once: the record and its outputs agree, and nothing changed after
        assert len(list((nodes.jobs_dir / "jobs" / job["id"] / "attempts").glob("*/edited.png"))) == 1  # one attempt's
        again = httpx.get(f"{base_url}/v1/edits/{job['id']}").json()
        assert again == job  # a finished job never changes again
    print(f"\nattempts per job after the node died: {[job['attempts'] for job in jobs]}; pid {os.getpid()}")
