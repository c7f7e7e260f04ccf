"""The Kubernetes manifests, validated offline: every overlay renders with `kubectl kustomize`; KubeRay objects
match the KubeRay v1.7.0 CRD schemas (unknown keys rejected, as `kubectl --validate=strict` would); core objects
match Kubernetes' own schemas (kubernetes-validate); every serveConfigV2 is parsed and its args validated by the
app's config model; and the rules of this project hold (head num-cpus "0", named ports, GPU requests equal to
limits, read-only models, no egress outside the cluster). Then one planted mistake per rule must be caught.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from f2f.errors import InvalidConfig

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CRDS = ROOT.parent / "shared" / "data" / "kuberay-crds"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
PROFILES = {"wan-ti2v-5b": "wan2.2-ti2v-5b"}  # the overlays that serve another profile than the paper's
KUBERNETES_VERSION = "1.33.0"
GPU = "nvidia.com/gpu"


def _need(thing: str, available: bool) -> None:
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{thing} is missing: .ci/run provides it")
        pytest.skip(f"{thing} is not available here")


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    _need("kubectl", shutil.which("kubectl") is not None)
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=True)
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The v1 openAPIV3Schema of a KubeRay kind, made strict: objects with known properties reject unknown keys."""
    _need("the KubeRay CRDs (shared/data/kuberay-crds)", CRDS.is_dir())
    crd = yaml.safe_load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    return _strict(copy.deepcopy(schema))


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Where `doc` breaks its schema: 'path: message' lines (empty when valid)."""
    if doc.get("apiVersion") == "ray.io/v1":
        import jsonschema

        validator = jsonschema.Draft7Validator(crd_schema(doc["kind"]))
        return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


def _ray_objects(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("apiVersion") == "ray.io/v1"]


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterConfig"] if doc["kind"] == "RayService" else doc["spec"]["rayClusterSpec"]


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = _cluster_spec(doc)
    return [cluster["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in cluster.get("workerGroupSpecs", []))]


def rule_errors(doc: dict[str, Any]) -> list[str]:
    """This project's rules for a KubeRay object: 'where: what' lines (empty when it keeps them)."""
    errors = []
    cluster = _cluster_spec(doc)
    if cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") != "0":
        errors.append('headGroupSpec.rayStartParams.num-cpus: must be "0" (no replicas on the head)')
    for pod in _pod_specs(doc):
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            errors.append("securityContext.runAsNonRoot: must be true")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            where = f"containers[{container['name']}]"
            errors += [
                f"{where}.ports: port {p.get('containerPort')} has no name" for p in container.get("ports", []) if "name" not in p
            ]
            requests = container.get("resources", {}).get("requests", {})
            limits = container.get("resources", {}).get("limits", {})
            if (GPU in requests or GPU in limits) and requests.get(GPU) != limits.get(GPU):
                errors.append(f"{where}.resources: {GPU} requests ({requests.get(GPU)}) must equal limits ({limits.get(GPU)})")
            for mount in container.get("volumeMounts", []):
                claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim", {})
                if claim.get("claimName") == "f2f-models" and not (mount.get("readOnly") and claim.get("readOnly")):
                    errors.append(f"{where}.volumeMounts[{mount['name']}]: the models volume must be read-only")
    return errors


def serve_app_args(doc: dict[str, Any]) -> list[dict[str, Any]]:
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert [app["import_path"] for app in config["applications"]] == ["f2f.serving.app:build_app"]
    return [app.get("args") or {} for app in config["applications"]]


# --- the manifests as shipped -----------------------------------------------------------------


def test_there_is_an_overlay_per_scenario() -> None:
    assert OVERLAYS == ["bulk", "cluster", "external-vlm", "multi-gpu", "single-gpu", "wan-ti2v-5b"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_its_schema(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert {"Namespace", "NetworkPolicy", "PersistentVolumeClaim", "Deployment", "Service"} <= set(kinds)
    assert len(_ray_objects(docs)) == 1
    for doc in docs:
        assert schema_errors(doc) == [], f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("namespace") == (None if doc["kind"] == "Namespace" else "f2f")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_object_keeps_the_rules(overlay: str) -> None:
    for doc in _ray_objects(rendered(overlay)):
        assert rule_errors(doc) == []
        assert _cluster_spec(doc)["rayVersion"] == "2.60.0"


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "bulk"])
def test_every_serve_config_validates_against_the_app(overlay: str) -> None:
    from f2f.serving.app import parse_args

    (service,) = _ray_objects(rendered(overlay))
    assert service["kind"] == "RayService"
    for args in serve_app_args(service):
        parsed, config = parse_args(args)
        assert config.profile == PROFILES.get(overlay, "cogvideox-5b") and str(config.models_dir) == "/models"
        assert str(parsed.jobs.dir) == "/jobs" and parsed.jobs.broker_url == "redis://f2f-redis:6379/0"
    assert _cluster_spec(service)["gcsFaultToleranceOptions"]["redisAddress"] == "f2f-redis:6379"


def test_the_external_vlm_token_comes_from_a_secret() -> None:
    (service,) = _ray_objects(rendered("external-vlm"))
    (args,) = serve_app_args(service)
    assert args["config"]["vlm"]["api_key_env"] == "F2F_VLM_API_KEY" and "api_key" not in args["config"]["vlm"]
    envs = [e for pod in _pod_specs(service) for c in pod["containers"] for e in c.get("env", [])]
    assert envs == [{"name": "F2F_VLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "f2f-vlm-api-key", "key": "token"}}}]
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert schema_errors(example) == [] and example["metadata"]["name"] == "f2f-vlm-api-key"
    assert not any(d["kind"] == "Secret" for o in OVERLAYS for d in rendered(o))  # secrets are never in the repository


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "bulk"])
def test_api_keys_come_from_a_secret_mounted_read_only_everywhere(overlay: str) -> None:
    from f2f.serving.app import parse_args

    (service,) = _ray_objects(rendered(overlay))
    for args in serve_app_args(service):
        auth = parse_args(args)[0].auth
        assert auth.required and str(auth.keys_file) == "/etc/f2f/keys.yaml"
    for pod in _pod_specs(service):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["api-keys"]["secret"]["secretName"] == "f2f-api-keys"
        mounts = [m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == "api-keys"]
        assert mounts == [{"name": "api-keys", "mountPath": "/etc/f2f", "readOnly": True}]
    example = yaml.safe_load((K8S / "api-keys.example.yaml").read_text())
    assert schema_errors(example) == [] and example["metadata"]["name"] == "f2f-api-keys"
    assert "keys" in yaml.safe_load(example["stringData"]["keys.yaml"])


def test_the_bulk_job_runs_the_bulk_entry_point() -> None:
    from f2f.bulk.command import main

    (job,) = _ray_objects(rendered("bulk"))
    words = job["spec"]["entrypoint"].split()
    assert words[:3] == ["python", "-m", "f2f.bulk"] and job["spec"]["shutdownAfterJobFinishes"] is True
    params = main.commands["run"].make_context("run", words[3:]).params  # `python -m f2f.bulk MANIFEST ...` runs `run`
    assert str(params["manifest"]).startswith("/jobs/") and str(params["out_dir"]).startswith("/jobs/")
    assert params["profile"] == "cogvideox-5b" and str(params["models_dir"]) == "/models"


def test_egress_stays_inside_the_cluster() -> None:
    (policy,) = [d for d in rendered("single-gpu") if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"] == {} and policy["spec"]["policyTypes"] == ["Egress"]
    blocks = [peer["ipBlock"]["cidr"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert blocks and all(cidr.endswith("/32") for cidr in blocks)  # only the API server's address, never 0.0.0.0/0


# --- planted mistakes ---------------------------------------------------------------------------


def _ray_object(overlay: str) -> dict[str, Any]:
    return copy.deepcopy(_ray_objects(rendered(overlay))[0])


def _spec_key(doc: dict[str, Any]) -> str:
    return "rayClusterConfig" if doc["kind"] == "RayService" else "rayClusterSpec"


def _gpu_container(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(worker group index, container) of the first container that asks for a GPU."""
    for index, group in enumerate(doc["spec"][_spec_key(doc)]["workerGroupSpecs"]):
        for container in group["template"]["spec"]["containers"]:
            if GPU in container.get("resources", {}).get("limits", {}):
                return index, container
    raise AssertionError("no GPU container")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_unknown_key_is_named(overlay: str) -> None:
    doc = _ray_object(overlay)
    doc["spec"][_spec_key(doc)]["headGroupSpec"]["replicaz"] = 1
    assert any(e.startswith(f"spec.{_spec_key(doc)}.headGroupSpec:") and "replicaz" in e for e in schema_errors(doc))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_wrong_type_is_named(overlay: str) -> None:
    doc = _ray_object(overlay)
    doc["spec"][_spec_key(doc)]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    assert any(e.startswith(f"spec.{_spec_key(doc)}.workerGroupSpecs.0.maxReplicas:") for e in schema_errors(doc))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_unknown_key_in_a_core_object_is_named(overlay: str) -> None:
    (policy,) = [copy.deepcopy(d) for d in rendered(overlay) if d["kind"] == "NetworkPolicy"]
    policy["spec"]["egres"] = []
    assert any("egres" in e for e in schema_errors(policy))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_gpu_request_without_a_limit_is_named(overlay: str) -> None:
    doc = _ray_object(overlay)
    _, container = _gpu_container(doc)
    del container["resources"]["limits"][GPU]
    requested = container["resources"]["requests"][GPU]
    assert rule_errors(doc) == [f"containers[ray-worker].resources: {GPU} requests ({requested}) must equal limits (None)"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_writable_models_volume_is_named(overlay: str) -> None:
    doc = _ray_object(overlay)
    _, container = _gpu_container(doc)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    mount["readOnly"] = False
    assert rule_errors(doc) == ["containers[ray-worker].volumeMounts[models]: the models volume must be read-only"]


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "bulk"])
def test_an_app_arg_the_config_model_rejects_is_named(overlay: str) -> None:
    from f2f.serving.app import parse_args

    doc = _ray_object(overlay)
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    config["applications"][0]["args"]["jobs"]["max_queued"] = 0
    with pytest.raises(InvalidConfig) as info:
        parse_args(config["applications"][0]["args"])
    assert info.value.field == "args.jobs.max_queued"


def test_a_bulk_option_the_command_rejects_is_named() -> None:
    import click

    from f2f.bulk.command import main

    words = _ray_object("bulk")["spec"]["entrypoint"].split()[3:]
    with pytest.raises(click.BadParameter) as info:
        main.commands["run"].make_context("run", [w if w != "2" else "-1" for w in words])
    assert info.value.param is not None and info.value.param.name == "max_retries"


def test_a_split_generator_replica_fits_one_generator_pod() -> None:
    """multi-gpu: every rank's bundle ({CPU, GPU, generator_node}) fits, all of a replica's on one pod (STRICT_PACK)."""
    from f2f.serving.app import parse_args
    from f2f.serving.generator_deployment import GeneratorDeployment

    (service,) = _ray_objects(rendered("multi-gpu"))
    (args,) = serve_app_args(service)
    parsed, config = parse_args(args)
    world = config.generator.parallel.world_size
    assert world == 4 and config.generator.speed.compile == "regional"
    options = GeneratorDeployment.deployment_options(parsed, world)
    assert options["placement_group_strategy"] == "STRICT_PACK"
    need = {key: sum(bundle.get(key, 0) for bundle in options["placement_group_bundles"]) for key in ("CPU", "GPU")}
    (group,) = [g for g in _cluster_spec(service)["workerGroupSpecs"] if g["groupName"] == "generator"]
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == need["GPU"] == world and int(limits["cpu"]) >= need["CPU"]
    custom = json.loads(json.loads(group["rayStartParams"]["resources"]))  # a JSON string inside a quoted string
    assert custom == {"generator_node": world * parsed.generator_resources["generator_node"]}
    (cluster,) = _ray_objects(rendered("cluster"))
    assert yaml.safe_load(cluster["spec"]["serveConfigV2"])["applications"][0]["args"]["config"].get("generator") is None
