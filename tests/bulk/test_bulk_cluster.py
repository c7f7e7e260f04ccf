"""A bulk run on a multi-node Ray cluster on one host (`ray.cluster_utils.Cluster`: a head and two worker nodes on
127.0.0.1): the stages run on more than one node, and a worker node removed mid-run loses no item.

Zero-cost fake models (`zero_cost.py`) whose videos take a moment, so the run is still going when the node goes.
The run is this process's: a driver joined to the cluster, `BulkRun.execute` on a thread, the node removed from here.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray.data")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from zero_cost import ZeroCostModels, config, write_manifest  # noqa: E402

ITEMS = 40


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Any:
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # The workers import this folder's fakes by name, and this checkout's f2f
    monkeypatch.setenv("PYTHONPATH", f"{HERE.parents[1]}:{HERE}")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    workers = [cluster.add_node(num_cpus=2, resources={"worker": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_stages_spread_over_nodes_and_a_lost_node_loses_no_item(cluster: Any, tmp_path: Path) -> None:
    from f2f.bulk.report import read_index
    from f2f.bulk.run import BulkRun
    from f2f.bulk.storage import Location

    cluster_utils, workers = cluster
    manifest, out = write_manifest(tmp_path / "m.jsonl", ITEMS), tmp_path / "out"
    run = BulkRun(
        Location.of(manifest), Location.of(out), config(), generators=2, loader=ZeroCostModels(delay_s=0.3), max_retries=3
    )
    scanned = run.scan()
    outcome: dict[str, Any] = {}

    def go() -> None:
        try:
            outcome["summary"] = run.execute(scanned, False, lambda *_: None, lambda _line: None)
        except BaseException as exc:  # reported by the test below
            outcome["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    deadline = time.monotonic() + 300
    while len(list((out / "index").glob("*.parquet"))) < 3:
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.2)
    cluster_utils.remove_node(workers[0], allow_graceful=False)  # mid-run: its actors and tasks die with it
    thread.join(600)
    assert not thread.is_alive() and "error" not in outcome, outcome

    index = read_index(Location.of(out))
    assert [r["status"] for r in index] == ["succeeded"] * ITEMS, [r["reason"] for r in index if r["reason"]]
    assert outcome["summary"]["by_status"] == {"succeeded": ITEMS}
    nodes = {node for r in index for node in json.loads(r["nodes"]).values()}
    assert len(nodes) >= 2  # the stages ran on more than one node
