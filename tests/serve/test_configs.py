"""Every Serve config file in serve/ parses, points at the typed builder, validates, and yields the intended options.

No Ray cluster: `parse_args` and the option functions are pure (a real profile's
`models_dir` need not exist; only `build_app` checks the folder).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("ray")

from f2f.errors import InvalidConfig

SERVE_DIR = Path(__file__).resolve().parents[2] / "serve"
FILES = sorted(SERVE_DIR.glob("*.yaml"))

# file -> what the option functions must compute for it
EXPECTED: dict[str, dict[str, Any]] = {
    "local.yaml": {
        "host": "127.0.0.1",
        "profile": "tiny",
        "vlm": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 8},
        "generator": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 1, "max_queued_requests": 8},
        "worker": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 2},
        "ingress": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 1016, "max_queued_requests": 200},
        "broker": None,
    },
    "gpu.yaml": {
        "host": "127.0.0.1",
        "profile": "cogvideox-5b",
        "vlm": {"num_replicas": 1, "num_gpus": 0.3, "max_ongoing_requests": 8},
        "generator": {"num_replicas": 1, "num_gpus": 0.7, "max_ongoing_requests": 1, "max_queued_requests": 4},
        "worker": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 2},
        "ingress": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 1016, "max_queued_requests": 200},
        "broker": None,
    },
    "wan-ti2v-5b.yaml": {
        "host": "127.0.0.1",
        "profile": "wan2.2-ti2v-5b",
        "vlm": {"num_replicas": 1, "num_gpus": 0.4, "max_ongoing_requests": 8},
        "generator": {"num_replicas": 1, "num_gpus": 0.6, "max_ongoing_requests": 1, "max_queued_requests": 4},
        "worker": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 2},
        "ingress": {"num_replicas": 1, "num_gpus": 0, "max_ongoing_requests": 1016, "max_queued_requests": 200},
        "broker": None,
    },
    "cluster.yaml": {
        "host": "0.0.0.0",
        "profile": "cogvideox-5b",
        "vlm": {"autoscaling": (1, 2, 4), "num_gpus": 1, "max_ongoing_requests": 8},
        "generator": {"autoscaling": (0, 4, 1), "num_gpus": 1, "max_ongoing_requests": 1, "max_queued_requests": 16},
        "worker": {"autoscaling": (1, 8, 1), "queue_policy": True, "num_gpus": 0, "max_ongoing_requests": 4},
        "ingress": {"autoscaling": (2, 4, 200), "num_gpus": 0, "max_ongoing_requests": 1016, "max_queued_requests": 200},
        "broker": "redis",
    },
}


class _NoDuplicateKeys(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(key) for key in keys if keys.count(key) > 1})
        assert not twice, f"key(s) given twice in one mapping: {twice} ({node.start_mark})"
        return super().construct_mapping(node, deep=deep)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoDuplicateKeys)
    assert isinstance(data, dict) and data.get("applications"), f"{path.name}: no applications"
    return data


def test_every_file_is_covered() -> None:
    assert {p.name for p in FILES} == set(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_points_at_the_builder_and_validates(path: Path) -> None:
    from f2f.serving.app import parse_args

    for app in _load(path)["applications"]:
        assert app["import_path"] == "f2f.serving.app:build_app"
        _, config = parse_args(app.get("args"))
        assert config.profile == EXPECTED[path.name]["profile"]
        if config.profile != "tiny":
            assert str(config.models_dir) == "/models"
            assert config.vlm.model_path is not None and config.generator.model_path is not None


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_yields_the_intended_deployment_options(path: Path) -> None:
    from ray.serve.config import AutoscalingConfig

    from f2f.serving.app import parse_args
    from f2f.serving.deployments.generator import GeneratorDeployment
    from f2f.serving.deployments.ingress import Ingress
    from f2f.serving.deployments.vlm import VLMDeployment
    from f2f.serving.deployments.worker import EditWorker
    from f2f.serving.jobs.queue import broker_settings
    from f2f.serving.scaling import POLICY_PATH

    data, want = _load(path), EXPECTED[path.name]
    assert data["http_options"]["host"] == want["host"]
    parsed, _ = parse_args(data["applications"][0]["args"])
    broker = parsed.jobs.broker_url
    assert (broker.split(":")[0] if broker else None) == want["broker"]
    computed = (
        (VLMDeployment.deployment_options(parsed), want["vlm"]),
        (GeneratorDeployment.deployment_options(parsed), want["generator"]),
        (EditWorker.deployment_options(parsed, broker_settings(parsed.jobs, Path("/nonexistent/jobs"))), want["worker"]),
        (Ingress.deployment_options(parsed), want["ingress"]),
    )
    for options, expected in computed:
        assert options["ray_actor_options"].get("num_gpus", 0) == expected["num_gpus"]
        assert options["max_ongoing_requests"] == expected["max_ongoing_requests"]
        assert options.get("max_queued_requests") == expected.get("max_queued_requests")
        if "autoscaling" in expected:
            assert "num_replicas" not in options
            scaling = AutoscalingConfig(**options["autoscaling_config"])  # Serve accepts it as is
            got = (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests)
            assert got == expected["autoscaling"]
            queue_policy = scaling.policy.policy_function == POLICY_PATH
            assert queue_policy == expected.get("queue_policy", False)
        else:
            assert options["num_replicas"] == expected["num_replicas"] and "autoscaling_config" not in options


def _plant_unknown_key(args: dict) -> str:
    args["replica_count"] = 2
    return "args.replica_count"


def _plant_negative_replicas(args: dict) -> str:
    args.setdefault("generator_autoscaling", {})["min_replicas"] = -1
    return "args.generator_autoscaling.min_replicas"


def _plant_unknown_profile(args: dict) -> str:
    args["config"]["profile"] = "no-such-profile"
    return "config.profile"


def _plant_unknown_autoscaling_key(args: dict) -> str:
    args.setdefault("vlm_autoscaling", {})["replicas"] = 3
    return "args.vlm_autoscaling.replicas"


PLANTS = [_plant_unknown_key, _plant_negative_replicas, _plant_unknown_profile, _plant_unknown_autoscaling_key]


@pytest.mark.parametrize("plant", PLANTS, ids=lambda f: f.__name__.removeprefix("_plant_"))
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_a_planted_mistake_fails_naming_the_field(path: Path, plant: Any, tmp_path: Path) -> None:
    from f2f.serving.app import parse_args

    data = copy.deepcopy(_load(path))
    field = plant(data["applications"][0]["args"])
    planted = tmp_path / path.name
    planted.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(InvalidConfig) as info:
        parse_args(_load(planted)["applications"][0]["args"])
    assert info.value.field == field


def test_nothing_here_started_ray() -> None:
    import ray

    assert not ray.is_initialized()


def test_a_split_generator_gets_one_bundle_per_rank_packed_on_one_node() -> None:
    from f2f.serving.app import parse_args
    from f2f.serving.deployments.generator import GeneratorDeployment

    args = {"config": {"profile": "tiny"}, "auth": {"required": False}, "generator_num_gpus": 1, "generator_num_cpus": 2}
    parsed, _ = parse_args(args)
    options = GeneratorDeployment.deployment_options(parsed, world_size=4)
    assert options["placement_group_bundles"] == [{"CPU": 2, "GPU": 1}] * 4
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}  # the replica (rank 0) fits the first bundle
    assert "placement_group_bundles" not in GeneratorDeployment.deployment_options(parsed)


def test_a_split_generator_needs_whole_gpus() -> None:
    from f2f.serving.app import build_app

    args = {"config": {"profile": "tiny", "generator": {"parallel": {"cfg": 2}}}, "auth": {"required": False}}
    args["generator_num_gpus"] = 0.5
    with pytest.raises(InvalidConfig) as refused:
        build_app(args)
    assert refused.value.field == "generator_num_gpus" and "each rank takes a GPU" in str(refused.value)


def test_run_config_file_passes_every_http_option_to_the_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from f2f.serving import app

    started: dict[str, Any] = {}
    monkeypatch.setattr(app.serve, "start", lambda http_options: started.update(http_options))
    monkeypatch.setattr(app.serve, "run", lambda *args, **kwargs: None)
    monkeypatch.setattr(app, "_import_builder", lambda path: lambda args: "the app")
    path = tmp_path / "serve.yaml"
    http = {"host": "127.0.0.1", "port": 8123, "keep_alive_timeout_s": 3, "request_timeout_s": 900}
    path.write_text(yaml.safe_dump({"http_options": http, "applications": [{"import_path": "x:y"}]}))
    assert app.run_config_file(path, port=8124) == "http://127.0.0.1:8124"
    assert started == {**http, "port": 8124}  # the flag wins; the keep-alive and request timeouts reach Ray
