"""The Kubernetes manifests, validated offline: every overlay renders with `kubectl kustomize`; KubeRay objects
match the KubeRay v1.7.0 CRD schemas (unknown keys rejected, as `kubectl --validate=strict` would); core objects
match Kubernetes' own schemas (kubernetes-validate); every serveConfigV2 is parsed and its args validated by the
app's config model; and the rules of this project hold (head num-cpus "0", named ports, GPU requests equal to
limits, read-only models, no egress outside the cluster). The network policies are evaluated as Kubernetes
would for the pods KubeRay creates (labels as KubeRay v1.7 sets them); Redis runs from its manifest's own
arguments on 127.0.0.1. No overlay shares a volume read-write between nodes: jobs live in Redis and an object
store, bulk runs in the object store, whose credentials come from a Secret; the optional MinIO component renders
beside a scenario, pinned.
Then one planted mistake per rule must be caught.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
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
BROKER_URL = "redis://:${REDIS_PASSWORD}@f2f-redis:6379/0"  # f2f fills in the variable where it connects
REDIS_URL = "redis://:${REDIS_PASSWORD}@f2f-redis:6379/1"  # the job store: Redis's database 1
REDIS_SECRET = {"name": "f2f-redis", "key": "password"}
OBJECTS_SECRET = "f2f-objects"
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")  # boto3's own variables
MINIO = K8S / "components" / "minio"
SERVICES = [o for o in OVERLAYS if o != "bulk"]


def _need(thing: str, available: bool) -> None:
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{thing} is missing: .ci/run provides it")
        pytest.skip(f"{thing} is not available here")


def _kustomize(folder: Path) -> tuple[dict[str, Any], ...]:
    _need("kubectl", shutil.which("kubectl") is not None)
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True)
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return _kustomize(K8S / "overlays" / overlay)


@cache
def rendered_with_minio(overlay: str) -> tuple[dict[str, Any], ...]:
    """`overlay` with the MinIO component, from an overlay of the operator's own as docs/deploy.md writes it
    (kustomize takes relative paths only)."""
    with tempfile.TemporaryDirectory() as mine:
        here = os.path.relpath(K8S, mine)
        kustomization = {"resources": [f"{here}/overlays/{overlay}"], "components": [f"{here}/components/minio"]}
        (Path(mine) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return _kustomize(Path(mine))


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
        assert str(parsed.jobs.dir) == "/jobs" and parsed.jobs.broker_url == BROKER_URL
    assert _cluster_spec(service)["gcsFaultToleranceOptions"]["redisAddress"] == "f2f-redis:6379"


def test_the_external_vlm_token_comes_from_a_secret() -> None:
    (service,) = _ray_objects(rendered("external-vlm"))
    (args,) = serve_app_args(service)
    assert args["config"]["vlm"]["api_key_env"] == "F2F_VLM_API_KEY" and "api_key" not in args["config"]["vlm"]
    envs = [e for pod in _pod_specs(service) for c in pod["containers"] for e in c.get("env", []) if e["name"].startswith("F2F_")]
    assert envs == [{"name": "F2F_VLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "f2f-vlm-api-key", "key": "token"}}}]
    examples = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())}
    assert sorted(examples) == ["f2f-objects", "f2f-redis", "f2f-vlm-api-key"]
    assert all(schema_errors(d) == [] for d in examples.values())
    assert set(examples["f2f-vlm-api-key"]["stringData"]) == {"token"}
    assert set(examples["f2f-redis"]["stringData"]) == {REDIS_SECRET["key"]}
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


def test_the_bulk_job_runs_the_bulk_entry_point_over_the_object_store() -> None:
    """The manifest and the results are objects in the services' bucket, outside their expiring prefix; every Ray pod
    (the driver on the head, the stages on the workers) reads the store's variables from the Secret, as the services'
    pods do; no pod mounts anything but the read-only weights and its own scratch."""
    from f2f.bulk.command import main

    (job,) = _ray_objects(rendered("bulk"))
    words = job["spec"]["entrypoint"].split()
    assert words[:3] == ["python", "-m", "f2f.bulk"] and job["spec"]["shutdownAfterJobFinishes"] is True
    params = main.commands["run"].make_context("run", words[3:]).params  # `python -m f2f.bulk MANIFEST ...` runs `run`
    objects = urllib.parse.urlparse(_cluster_profile_jobs()["objects"])
    for where in (params["manifest"], params["out_dir"]):
        url = urllib.parse.urlparse(where)
        assert (url.scheme, url.netloc) == (objects.scheme, objects.netloc) and not url.path.startswith(objects.path + "/")
    assert params["profile"] == "cogvideox-5b" and str(params["models_dir"]) == "/models"
    for pod in _pod_specs(job):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == ["f2f-models"]
        (container,) = pod["containers"]
        aws = [e for e in container.get("env", []) if e["name"].startswith("AWS_")]
        assert aws == [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": OBJECTS_SECRET, "key": key, "optional": True}}}
            for key in AWS_KEYS
        ], container["name"]


def test_egress_stays_inside_the_cluster() -> None:
    (policy,) = [d for d in rendered("single-gpu") if d["kind"] == "NetworkPolicy" and "Egress" in d["spec"]["policyTypes"]]
    assert policy["spec"]["podSelector"] == {} and policy["spec"]["policyTypes"] == ["Egress"]
    blocks = [peer["ipBlock"]["cidr"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert blocks and all(cidr.endswith("/32") for cidr in blocks)  # only the API server's address, never 0.0.0.0/0


# --- no volume shared read-write: jobs in Redis and an object store -------------------------------


def _claims(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}


def _modes(claim: dict[str, Any]) -> list[str]:
    return claim["spec"]["accessModes"]


def shared_volume_errors(docs: tuple[dict[str, Any], ...]) -> list[str]:
    """Where a rendered service would need a volume that several nodes write: a ReadWriteMany claim anywhere, a
    claim a Ray pod mounts that is not read-only on a ReadOnlyMany claim, or a jobs.dir that is not the pod's own
    emptyDir. 'where: what' lines (empty when it needs none)."""
    claims = _claims(docs)
    errors = [f"PersistentVolumeClaim/{n}: ReadWriteMany" for n, c in claims.items() if "ReadWriteMany" in _modes(c)]
    for doc in _ray_objects(docs):
        (args,) = serve_app_args(doc)
        jobs_dir = (args.get("jobs") or {}).get("dir")
        for pod in _pod_specs(doc):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for container in pod["containers"]:
                for mount in container.get("volumeMounts", []):
                    where, volume = f"containers[{container['name']}].volumeMounts[{mount['name']}]", volumes[mount["name"]]
                    if "persistentVolumeClaim" in volume:
                        name = volume["persistentVolumeClaim"]["claimName"]
                        modes = _modes(claims[name]) if name in claims else ["not in the overlay"]
                        if modes != ["ReadOnlyMany"] or not mount.get("readOnly"):
                            how = "read-only" if mount.get("readOnly") else "read-write"
                            errors.append(f"{where}: claim {name} is {', '.join(modes)}, mounted {how}")
                    if mount["mountPath"] == jobs_dir and "emptyDir" not in volume:
                        errors.append(f"{where}: jobs.dir {jobs_dir} must be the pod's own emptyDir (scratch)")
    return errors


@pytest.mark.parametrize("overlay", SERVICES)
def test_no_service_shares_a_volume_read_write(overlay: str) -> None:
    docs = rendered(overlay)
    assert shared_volume_errors(docs) == []
    (service,) = _ray_objects(docs)
    for pod in _pod_specs(service):  # every Ray pod has its jobs.dir scratch, so no replica writes to a missing path
        assert [m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == "jobs"] == ["/jobs"]


def test_no_overlay_has_a_read_write_many_claim() -> None:
    """The base has none, and no overlay adds one: bulk edits read and write the object store too."""
    base = _kustomize(K8S / "base")
    assert {n: c["spec"]["accessModes"] for n, c in _claims(base).items()} == {
        "f2f-models": ["ReadOnlyMany"],
        "f2f-redis-data": ["ReadWriteOnce"],
    }
    for overlay in OVERLAYS:
        assert [n for n, c in _claims(rendered(overlay)).items() if "ReadWriteMany" in _modes(c)] == [], overlay


def _jobs_args(overlay: str) -> dict[str, Any]:
    (service,) = _ray_objects(rendered(overlay))
    (args,) = serve_app_args(service)
    return args["jobs"]


def _cluster_profile_jobs() -> dict[str, Any]:
    (app,) = yaml.safe_load((ROOT / "serve" / "cluster.yaml").read_text())["applications"]
    return app["args"]["jobs"]


@pytest.mark.parametrize("overlay", SERVICES)
def test_every_service_keeps_jobs_in_redis_and_an_object_store(overlay: str) -> None:
    """Records in Redis (with the password from the Secret), sources and outputs in the cluster profile's bucket,
    its endpoint from the environment (the Secret), as serve/cluster.yaml says."""
    jobs, profile = _jobs_args(overlay), _cluster_profile_jobs()
    assert jobs["store"] == profile["store"] == "redis" and jobs["redis_url"] == profile["redis_url"] == REDIS_URL
    assert jobs["objects"] == profile["objects"] and urllib.parse.urlparse(jobs["objects"]).scheme == "s3"
    assert "objects_endpoint_url" not in jobs and "objects_endpoint_url" not in profile  # AWS_ENDPOINT_URL, from the Secret
    assert jobs.get("downloads", "stream") == "stream"  # a presigned URL of an in-cluster bucket reaches no client


@pytest.mark.parametrize("overlay", SERVICES)
def test_object_store_credentials_come_from_a_secret(overlay: str) -> None:
    """Every Ray pod (the head builds the app and checks the bucket at start) reads boto3's variables from the
    Secret f2f-objects, each optional so that IRSA on EKS needs none; no manifest holds a value."""
    (service,) = _ray_objects(rendered(overlay))
    for pod in _pod_specs(service):
        for container in pod["containers"]:
            aws = [e for e in container.get("env", []) if e["name"].startswith("AWS_")]
            assert aws == [
                {"name": key, "valueFrom": {"secretKeyRef": {"name": OBJECTS_SECRET, "key": key, "optional": True}}}
                for key in AWS_KEYS
            ], container["name"]
    examples = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())}
    assert tuple(examples[OBJECTS_SECRET]["stringData"]) == AWS_KEYS


# --- the MinIO component ------------------------------------------------------------------------------------

PINNED = re.compile(r"[a-z0-9.-]+(?:/[a-z0-9._-]+)+:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ@sha256:[0-9a-f]{64}")


def _component_docs(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    names = {d["metadata"]["name"] for d in _kustomize_component()}
    return [d for d in docs if d["metadata"]["name"] in names]


@cache
def _kustomize_component() -> tuple[dict[str, Any], ...]:
    return _kustomize(MINIO)


def unpinned_images(docs: list[dict[str, Any]]) -> list[str]:
    """Where a workload's image is not pinned to a MinIO release tag and a digest: 'Kind/name: image' lines."""
    errors = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if not PINNED.fullmatch(image := container["image"]):
                    errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {image} is not pinned by tag and digest")
    return errors


@pytest.mark.parametrize("overlay", SERVICES)
def test_the_minio_component_renders_beside_every_service(overlay: str) -> None:
    docs = rendered_with_minio(overlay)
    added = {(d["kind"], d["metadata"]["name"]) for d in docs} - {(d["kind"], d["metadata"]["name"]) for d in rendered(overlay)}
    assert added == {
        ("PersistentVolumeClaim", "f2f-minio-data"),
        ("Deployment", "f2f-minio"),
        ("Service", "f2f-minio"),
        ("Job", "f2f-minio-bucket"),
        ("NetworkPolicy", "f2f-minio-from-ray-pods"),
    }
    for doc in docs:
        assert schema_errors(doc) == [], f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("namespace") == (None if doc["kind"] == "Namespace" else "f2f")
    assert shared_volume_errors(docs) == [] and _claims(docs)["f2f-minio-data"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert [e for doc in docs for e in literal_secrets(doc, doc["kind"])] == []
    assert reach_errors(docs) == []


def test_the_minio_images_are_pinned() -> None:
    docs = _component_docs(rendered_with_minio("cluster"))
    assert unpinned_images(docs) == []
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    images = [c["image"] for d in workloads for c in d["spec"]["template"]["spec"]["containers"]]
    assert sorted(i.split(":")[0].rsplit("/", 1)[1] for i in images) == ["mc", "minio"]  # the server and its client
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one writer on the RWO claim


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.com/mirror/minio:latest",
        "registry.example.com/mirror/minio:RELEASE.2025-09-07T16-13-09Z",
        "registry.example.com/mirror/minio@sha256:" + "0" * 64,
        "registry.example.com/mirror/minio:RELEASE.2025-09-07T16-13-09Z@sha256:abc",
    ],
)
def test_an_unpinned_minio_image_is_named(image: str) -> None:
    docs = copy.deepcopy(_component_docs(rendered_with_minio("cluster")))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = image
    assert unpinned_images(docs) == [f"Deployment/f2f-minio: {image} is not pinned by tag and digest"]


def test_minio_and_its_bucket_follow_the_objects_secret_and_location() -> None:
    """MinIO's root user is the Secret's key pair the Ray pods sign with; the Job creates the bucket that jobs.objects
    names, at the Service the Secret's example endpoint names."""
    docs = _component_docs(rendered_with_minio("cluster"))
    by_kind = {d["kind"]: d for d in docs}
    (server,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in server["env"]}
    for variable, key in (("MINIO_ROOT_USER", "AWS_ACCESS_KEY_ID"), ("MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY")):
        assert env[variable]["valueFrom"] == {"secretKeyRef": {"name": OBJECTS_SECRET, "key": key}}  # not optional
    (mc,) = by_kind["Job"]["spec"]["template"]["spec"]["containers"]
    job_env = {e["name"]: e for e in mc["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert job_env[key]["valueFrom"] == {"secretKeyRef": {"name": OBJECTS_SECRET, "key": key}}
    assert job_env["BUCKET"]["value"] == urllib.parse.urlparse(_cluster_profile_jobs()["objects"]).netloc
    service = by_kind["Service"]
    (port,) = service["spec"]["ports"]
    endpoint = f"http://{service['metadata']['name']}:{port['port']}"
    examples = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())}
    assert job_env["MINIO_URL"]["value"] == examples[OBJECTS_SECRET]["stringData"]["AWS_ENDPOINT_URL"] == endpoint
    named = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert named[port["targetPort"]] == port["port"] == 9000
    assert "$MINIO_URL" in mc["args"][0] and 'mc mb --ignore-existing "f2f/$BUCKET"' in mc["args"][0]


def test_a_literal_minio_credential_is_named() -> None:
    docs = copy.deepcopy(_component_docs(rendered_with_minio("cluster")))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (root_user,) = [e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "MINIO_ROOT_USER"]
    root_user.pop("valueFrom")
    root_user["value"] = "hunter2"
    assert literal_secrets(deployment, "Deployment") == [
        "Deployment.spec.template.spec.containers.0.env.0: MINIO_ROOT_USER has a literal value, not valueFrom a Secret"
    ]


def _open_minio_to_the_namespace(docs: list[dict[str, Any]]) -> None:
    _policy(docs, "f2f-minio-from-ray-pods")["ingress"][0]["from"].append({"podSelector": {}})


def _open_the_minio_console(docs: list[dict[str, Any]]) -> None:
    _policy(docs, "f2f-minio-from-ray-pods")["ingress"][0]["ports"].append({"protocol": "TCP", "port": 9001})


def _drop_the_bucket_job(docs: list[dict[str, Any]]) -> None:
    del _policy(docs, "f2f-minio-from-ray-pods")["ingress"][0]["from"][1]


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        (_open_minio_to_the_namespace, "another pod of the namespace -> MinIO:9000 (S3, MinIO): allowed"),
        (_open_the_minio_console, "a Ray worker -> MinIO:9001 (MinIO console): allowed"),
        (_drop_the_bucket_job, "the MinIO bucket Job -> MinIO:9000 (S3, MinIO): denied"),
    ],
)
def test_a_minio_policy_mistake_is_named(mistake: Any, caught: str) -> None:
    docs = copy.deepcopy(list(rendered_with_minio("single-gpu")))
    mistake(docs)
    assert caught in reach_errors(tuple(docs))


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
    policy = copy.deepcopy(next(d for d in rendered(overlay) if d["kind"] == "NetworkPolicy"))
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


def _share_the_jobs_volume(docs: list[dict[str, Any]]) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "f2f-jobs", "namespace": "f2f"}}
    claim["spec"] = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "200Gi"}}}
    docs.append(claim)
    pod = _pod_specs(_ray_objects(tuple(docs))[0])[1]
    (jobs,) = [v for v in pod["volumes"] if v["name"] == "jobs"]
    jobs.pop("emptyDir")
    jobs["persistentVolumeClaim"] = {"claimName": "f2f-jobs"}


def _write_to_the_models(docs: list[dict[str, Any]]) -> None:
    _claims(tuple(docs))["f2f-models"]["spec"]["accessModes"] = ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        (
            _share_the_jobs_volume,
            [
                "PersistentVolumeClaim/f2f-jobs: ReadWriteMany",
                "containers[ray-worker].volumeMounts[jobs]: claim f2f-jobs is ReadWriteMany, mounted read-write",
                "containers[ray-worker].volumeMounts[jobs]: jobs.dir /jobs must be the pod's own emptyDir (scratch)",
            ],
        ),
        (
            _write_to_the_models,
            [
                "PersistentVolumeClaim/f2f-models: ReadWriteMany",
                "containers[ray-worker].volumeMounts[models]: claim f2f-models is ReadWriteMany, mounted read-only",
            ],
        ),
    ],
)
def test_a_shared_volume_is_named(mistake: Any, caught: list[str]) -> None:
    docs = copy.deepcopy(list(rendered("single-gpu")))
    mistake(docs)
    assert shared_volume_errors(tuple(docs)) == caught


def test_a_split_generator_replica_fits_one_generator_pod() -> None:
    """multi-gpu: every rank's bundle ({CPU, GPU, generator_node}) fits, all of a replica's on one pod (STRICT_PACK)."""
    from f2f.serving.app import parse_args
    from f2f.serving.deployments.generator import GeneratorDeployment

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


# --- network policies: who reaches which port -------------------------------------------------------
# A pod as a NetworkPolicy sees it: (its namespace's labels, its own labels). The expected table is written out
# below; the actual one is computed from the rendered policies as Kubernetes evaluates them.

Pod = tuple[dict[str, str], dict[str, str]]
PORTS = {6379: "GCS / Redis", 8265: "dashboard and job submission", 8000: "Serve HTTP", 8080: "metrics", 10001: "Ray client"}
PORTS |= {52365: "dashboard agent", 6380: "not Redis", 9000: "S3, MinIO", 9001: "MinIO console"}
RAY_PODS = ("the Ray head", "a Ray worker")


def _namespace(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector by matchLabels; {} selects everything."""
    assert not selector.get("matchExpressions"), "matchExpressions in a policy: not evaluated here, use matchLabels"
    return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())


def _peer_admits(peer: dict[str, Any], source: Pod, namespace: str) -> bool:
    assert "ipBlock" not in peer, "ingress from an ipBlock: pods are named by labels here"
    namespace_labels, pod_labels = source
    if "namespaceSelector" in peer:
        in_namespace = _selects(peer["namespaceSelector"], namespace_labels)
    else:  # a podSelector alone: the policy's own namespace
        in_namespace = namespace_labels == _namespace(namespace)
    return in_namespace and _selects(peer.get("podSelector", {}), pod_labels)


def _port_admits(spec: dict[str, Any], port: int) -> bool:
    assert isinstance(spec.get("port", 0), int), f"named port {spec['port']!r}: Ray pods do not all name theirs"
    return spec.get("protocol", "TCP") == "TCP" and spec.get("port", port) <= port <= spec.get("endPort", spec.get("port", port))


def ingress_allowed(docs: tuple[dict[str, Any], ...], source: Pod, target: dict[str, str], port: int) -> bool:
    """Whether `source` may open TCP `port` on a pod of namespace f2f labelled `target`."""
    policies = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and "Ingress" in d["spec"].get("policyTypes", ["Ingress"])
        and _selects(d["spec"]["podSelector"], target)
    ]
    if not policies:
        return True  # a pod no Ingress policy selects is not isolated
    return any(
        (not rule.get("ports") or any(_port_admits(p, port) for p in rule["ports"]))
        and (not rule.get("from") or any(_peer_admits(peer, source, policy["metadata"]["namespace"]) for peer in rule["from"]))
        for policy in policies
        for rule in policy["spec"].get("ingress") or []
    )


def kuberay_pod_labels(doc: dict[str, Any], group: str | None) -> dict[str, str]:
    """A Ray pod's labels as KubeRay v1.7 sets them (common/pod.go, labelPod): its own, overridden by the template's
    except node-type, group and cluster. A RayService's cluster gets a generated name."""
    cluster = _cluster_spec(doc)
    spec = cluster["headGroupSpec"] if group is None else next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == group)
    kuberay = {
        "ray.io/is-ray-node": "yes",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    fixed = {
        "ray.io/cluster": f"{doc['metadata']['name']}-x7k2p",
        "ray.io/node-type": "head" if group is None else "worker",
        "ray.io/group": "headgroup" if group is None else group,
    }
    return kuberay | spec["template"].get("metadata", {}).get("labels", {}) | fixed


def reach_table(docs: tuple[dict[str, Any], ...]) -> tuple[dict[str, Pod], dict[str, dict[str, str]]]:
    """(sources, targets) of one rendered overlay, by description."""
    (ray,) = _ray_objects(docs)
    (redis,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "f2f-redis"]
    groups = [g["groupName"] for g in _cluster_spec(ray)["workerGroupSpecs"]]
    f2f = _namespace("f2f")
    submitter = {"ray.io/originated-from-crd": "RayJob", "ray.io/originated-from-cr-name": "f2f-bulk-catalogue"}
    sources: dict[str, Pod] = {
        "the Ray head": (f2f, kuberay_pod_labels(ray, None)),
        "a Ray worker": (f2f, kuberay_pod_labels(ray, groups[0])),
        "another pod of the namespace": (f2f, {"app.kubernetes.io/name": "vllm"}),
        "the ingress controller": (_namespace("ingress-nginx"), {"app.kubernetes.io/name": "ingress-nginx"}),
        "Prometheus": (_namespace("monitoring"), {"app.kubernetes.io/name": "prometheus"}),
        "the KubeRay operator": (_namespace("kuberay-system"), {"app.kubernetes.io/name": "kuberay-operator"}),
        "another pod of the operator's namespace": (_namespace("kuberay-system"), {"app.kubernetes.io/name": "webhook"}),
        "a Ray-labelled pod of another namespace": (_namespace("default"), kuberay_pod_labels(ray, groups[0])),
        "the bulk RayJob's submitter": (f2f, submitter | {"app.kubernetes.io/created-by": "kuberay-operator"}),
        "the MinIO bucket Job": (f2f, {"app.kubernetes.io/name": "f2f-minio-bucket"}),
    }
    targets = {"the Ray head": kuberay_pod_labels(ray, None), "Redis": redis["spec"]["template"]["metadata"]["labels"]}
    targets |= {f"the {g} workers": kuberay_pod_labels(ray, g) for g in groups}
    minio = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "f2f-minio"]
    targets |= {"MinIO": minio[0]["spec"]["template"]["metadata"]["labels"]} if minio else {}
    return sources, targets


def expected_reach(source: str, target: str, port: int, bulk: bool) -> bool:
    """The intended exposure: Ray pods reach each other on every port, Redis on 6379 and MinIO on 9000 (as does
    the Job that makes its bucket); from outside them, only the Serve port (ingress controller), the metrics port
    (Prometheus), and on the head the dashboard and the Serve proxy (KubeRay operator) and, in the bulk overlay,
    job submission (its submitter)."""
    if target == "Redis":
        return source in RAY_PODS and port == 6379
    if target == "MinIO":
        return source in (*RAY_PODS, "the MinIO bucket Job") and port == 9000
    head = target == "the Ray head"
    return (
        source in RAY_PODS
        or (source == "the ingress controller" and port == 8000)
        or (source == "Prometheus" and port == 8080)
        or (head and source == "the KubeRay operator" and port in (8265, 8000))
        or (head and bulk and source == "the bulk RayJob's submitter" and port == 8265)
    )


def reach_errors(docs: tuple[dict[str, Any], ...]) -> list[str]:
    """Where the policies differ from `expected_reach`: 'source -> target:port (what): allowed|denied' lines."""
    sources, targets = reach_table(docs)
    bulk = _ray_objects(docs)[0]["kind"] == "RayJob"
    errors = []
    for (source, pod), (target, labels), (port, what) in itertools.product(sources.items(), targets.items(), PORTS.items()):
        allowed = ingress_allowed(docs, pod, labels, port)
        if allowed != expected_reach(source, target, port, bulk):
            errors.append(f"{source} -> {target}:{port} ({what}): {'allowed' if allowed else 'denied'}")
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_intended_callers_reach_each_port(overlay: str) -> None:
    docs = rendered(overlay)
    assert reach_errors(docs) == []
    sources, targets = reach_table(docs)
    dashboard = [s for s in sources if ingress_allowed(docs, sources[s], targets["the Ray head"], 8265)]
    assert dashboard == [*RAY_PODS, "the KubeRay operator", *(["the bulk RayJob's submitter"] if overlay == "bulk" else [])]


def _policy(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name]
    return policy["spec"]


def _open_the_dashboard_to_the_ingress_controller(docs: list[dict[str, Any]]) -> None:
    _policy(docs, "f2f-ray-serve-from-ingress-controller")["ingress"][0]["ports"].append({"protocol": "TCP", "port": 8265})


def _open_redis_to_the_namespace(docs: list[dict[str, Any]]) -> None:
    _policy(docs, "f2f-redis-from-ray-pods")["ingress"][0]["from"] = [{"podSelector": {}}]


def _trust_ray_labels_in_any_namespace(docs: list[dict[str, Any]]) -> None:
    _policy(docs, "f2f-ray-from-ray-pods")["ingress"][0]["from"][0]["namespaceSelector"] = {}


def _forget_the_operators_namespace(docs: list[dict[str, Any]]) -> None:
    del _policy(docs, "f2f-ray-head-from-kuberay-operator")["ingress"][0]["from"][0]["namespaceSelector"]


def _drop_the_ingress_controller(docs: list[dict[str, Any]]) -> None:
    docs.remove(next(d for d in docs if d["metadata"]["name"] == "f2f-ray-serve-from-ingress-controller"))


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        (
            _open_the_dashboard_to_the_ingress_controller,
            "the ingress controller -> the Ray head:8265 (dashboard and job submission): allowed",
        ),
        (_open_redis_to_the_namespace, "another pod of the namespace -> Redis:6379 (GCS / Redis): allowed"),
        (
            _trust_ray_labels_in_any_namespace,
            "a Ray-labelled pod of another namespace -> the Ray head:8265 (dashboard and job submission): allowed",
        ),
        (_forget_the_operators_namespace, "the KubeRay operator -> the Ray head:8265 (dashboard and job submission): denied"),
        (_drop_the_ingress_controller, "the ingress controller -> the gpu workers:8000 (Serve HTTP): denied"),
    ],
)
def test_a_policy_mistake_is_named(mistake: Any, caught: str) -> None:
    docs = copy.deepcopy(list(rendered("single-gpu")))
    mistake(docs)
    assert caught in reach_errors(tuple(docs))


# --- Redis and its password ---------------------------------------------------------------------------------

PASSWORD_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|AUTH|ACCESS_KEY|ROOT_USER", re.IGNORECASE)
URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:]*:([^\s/@]+)@")
ENV_REFERENCE = re.compile(r"\$\{[A-Z_][A-Z0-9_]*\}")  # f2f's, in jobs.broker_url
K8S_REFERENCE = re.compile(r"\$\([A-Z_][A-Z0-9_]*\)")  # Kubernetes', in a container's args


def literal_secrets(node: Any, where: str = "") -> list[str]:
    """Where a password or token is written in clear: 'where: what' lines (never the value itself)."""
    errors = []
    if isinstance(node, dict):
        for key, value in node.items():
            errors += literal_secrets(value, f"{where}.{key}".lstrip("."))
        if PASSWORD_NAME.search(str(node.get("name", ""))) and "value" in node:
            errors.append(f"{where}: {node['name']} has a literal value, not valueFrom a Secret")
        for key in ("redisPassword", "redisUsername"):
            if isinstance(node.get(key), dict) and "value" in node[key]:
                errors.append(f"{where}.{key}: a literal value, not valueFrom a Secret")
        if "redis-password" in node:
            errors.append(f"{where}.redis-password: a literal in rayStartParams (use gcsFaultToleranceOptions.redisPassword)")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            errors += literal_secrets(value, f"{where}.{index}")
        for flag, value in itertools.pairwise([*node, None]):
            if flag == "--requirepass" and not (isinstance(value, str) and K8S_REFERENCE.fullmatch(value)):
                errors.append(f"{where}: --requirepass takes a literal, not $(VARIABLE) from a Secret")
    elif isinstance(node, str):
        literal = [m for m in URL_PASSWORD.finditer(node) if not ENV_REFERENCE.fullmatch(m[1])]
        errors += [f"{where}: a URL with a literal password"] * len(literal)
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_manifest_holds_a_password(overlay: str) -> None:
    assert [e for doc in rendered(overlay) for e in literal_secrets(doc, doc["kind"])] == []


def _redis(docs: Any) -> dict[str, Any]:
    (redis,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "f2f-redis"]
    return redis


def _set_args(doc: dict[str, Any], change: Any) -> None:
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    change(config["applications"][0]["args"])
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(config)


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        (
            lambda d: _set_args(d, lambda a: a["jobs"].update(broker_url="redis://:hunter2@f2f-redis:6379/0")),
            "RayService.spec.serveConfigV2: a URL with a literal password",
        ),
        (
            lambda d: d["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"].update(redisPassword={"value": "hunter2"}),
            "RayService.spec.rayClusterConfig.gcsFaultToleranceOptions.redisPassword: a literal value, not valueFrom a Secret",
        ),
        (
            lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "REDIS_PASSWORD", "value": "hunter2"}
            ),
            "has a literal value",
        ),
        (
            lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "AWS_ACCESS_KEY_ID", "value": "hunter2"}
            ),
            "AWS_ACCESS_KEY_ID has a literal value, not valueFrom a Secret",
        ),
        (
            lambda d: _set_args(d, lambda a: a["jobs"].update(objects="s3://f2f:hunter2@f2f-jobs/edits")),
            "RayService.spec.serveConfigV2: a URL with a literal password",
        ),
    ],
)
def test_a_literal_password_is_named(mistake: Any, caught: str) -> None:
    doc = _ray_object("single-gpu")
    mistake(doc)
    errors = literal_secrets(doc, doc["kind"])
    assert any(caught in e for e in errors) and not any("hunter2" in e for e in errors)


def test_a_literal_requirepass_is_named() -> None:
    redis = copy.deepcopy(_redis(rendered("single-gpu")))
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--requirepass") + 1] = "hunter2"
    assert literal_secrets(redis, "Deployment") == [
        "Deployment.spec.template.spec.containers.0.args: --requirepass takes a literal, not $(VARIABLE) from a Secret"
    ]


@pytest.mark.parametrize("overlay", SERVICES)
def test_redis_ray_and_f2f_read_one_password_secret(overlay: str) -> None:
    """Redis asks for the Secret's password; Ray's GCS and every f2f process (the broker URL names the variable)
    are given the same key. KubeRay sets REDIS_PASSWORD on the head from gcsFaultToleranceOptions (pod.go), so the
    head must not set it again; every worker sets it from the Secret."""
    docs = rendered(overlay)
    (redis,) = _redis(docs)["spec"]["template"]["spec"]["containers"]
    reference = {"valueFrom": {"secretKeyRef": REDIS_SECRET}}
    assert {"name": "REDIS_PASSWORD", **reference} in redis["env"]
    assert redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert redis["args"][redis["args"].index("--appendonly") + 1] == "yes"  # job records survive a restart
    (service,) = _ray_objects(docs)
    (args,) = serve_app_args(service)
    assert args["jobs"]["broker_url"] == BROKER_URL and ENV_REFERENCE.findall(BROKER_URL) == ["${REDIS_PASSWORD}"]
    assert _cluster_spec(service)["gcsFaultToleranceOptions"]["redisPassword"] == reference
    head, *workers = _pod_specs(service)
    assert not any(e["name"] == "REDIS_PASSWORD" for c in head["containers"] for e in c.get("env", []))
    assert workers and all({"name": "REDIS_PASSWORD", **reference} in c.get("env", []) for w in workers for c in w["containers"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kubernetes_expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Z_][A-Z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def test_redis_asks_for_the_password_and_keeps_an_append_only_file(tmp_path: Path) -> None:
    """Redis run with its manifest's args (Kubernetes' $(VAR) expansion, on 127.0.0.1): a client without the
    password is refused, the append-only file is written, and the readiness probe fails on a wrong password."""
    _need("redis-server", shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None)
    docs = rendered("single-gpu")
    deployment = _redis(docs)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    claim = claims[volume["persistentVolumeClaim"]["claimName"]]
    assert mount["mountPath"] == "/data" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one writer on the RWO claim

    password, port = "not-the-real-one-0123456789", _free_port()
    args = [_kubernetes_expand(a, {"REDIS_PASSWORD": password}) for a in container["args"]]
    server = subprocess.Popen(
        ["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        cli = ["redis-cli", "-p", str(port)]
        authed = {**os.environ, "REDISCLI_AUTH": password}
        for _ in range(100):
            if subprocess.run([*cli, "ping"], capture_output=True, text=True, env=authed).stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        assert "NOAUTH" in subprocess.run([*cli, "set", "k", "v"], capture_output=True, text=True).stdout
        assert subprocess.run([*cli, "set", "k", "v"], capture_output=True, text=True, env=authed).stdout.strip() == "OK"
        config = subprocess.run([*cli, "config", "get", "appendonly"], capture_output=True, text=True, env=authed).stdout.split()
        assert config == ["appendonly", "yes"] and any((tmp_path / "appendonlydir").glob("*.aof"))

        shim = tmp_path / "bin"  # the probe as the kubelet runs it, with redis-cli pointed at this port
        shim.mkdir()
        (shim / "redis-cli").write_text(f'#!/bin/sh\nexec {shutil.which("redis-cli")} -p {port} "$@"\n')
        (shim / "redis-cli").chmod(0o755)
        probe = container["readinessProbe"]["exec"]["command"]
        for given, ready in ((password, True), ("wrong", False)):
            env = {"PATH": f"{shim}:{os.environ['PATH']}", "REDIS_PASSWORD": given}
            assert (subprocess.run(probe, capture_output=True, env=env).returncode == 0) is ready, given
    finally:
        server.terminate()
        server.wait(timeout=10)


# --- the CPU worker group and where each deployment runs --------------------------------------------------

DEPLOYMENTS = ("ingress", "worker", "vlm", "generator")
GROUPED = [o for o in SERVICES if o in ("cluster", "multi-gpu")]  # the overlays with a worker group per kind of pod


def _offers(group: dict[str, Any]) -> dict[str, float]:
    resources = group["rayStartParams"].get("resources")
    return json.loads(json.loads(resources)) if resources else {}  # a JSON string inside a quoted string


def _has_gpu(group: dict[str, Any]) -> bool:
    return any(GPU in c["resources"].get("limits", {}) for c in group["template"]["spec"]["containers"])


def placement_errors(doc: dict[str, Any]) -> list[str]:
    """Where the deployments' custom resources and the worker groups disagree: each deployment pinned to exactly
    one group, GPU deployments on GPU groups and the others not, the CPU pods enough for the ingress and the
    workers at their most replicas, a generator group that empties when its replicas may."""
    (args,) = serve_app_args(doc)
    cluster = _cluster_spec(doc)
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    errors, placed = [], {}
    for deployment in DEPLOYMENTS:
        wanted = args.get(f"{deployment}_resources") or {}
        if not wanted:
            errors.append(f"{deployment}_resources: none, so it may land on any pod")
        for resource in wanted:
            holders = [name for name, group in groups.items() if resource in _offers(group)]
            if len(holders) != 1:
                errors.append(f"{deployment}_resources.{resource}: offered by {holders}, must be by one group")
                continue
            placed[deployment] = group = groups[holders[0]]
            has, needs = _has_gpu(group), args.get(f"{deployment}_num_gpus", 0) > 0
            if has != needs:
                errors.append(
                    f"{deployment}: on group {holders[0]} ({'GPU' if has else 'no GPU'}), needs {'a' if needs else 'no'} GPU"
                )
            scaling = args.get(f"{deployment}_autoscaling") or {}
            empties = group["minReplicas"] == 0 and cluster.get("enableInTreeAutoscaling")
            if scaling.get("min_replicas", 1) == 0 and not empties:
                rule = f"group {holders[0]} keeps {group['minReplicas']} pods or does not autoscale"
                errors.append(f"{deployment}_autoscaling.min_replicas: 0, but {rule}")
    cpu = [d for d in ("ingress", "worker") if d in placed]
    for name, group in {placed[d]["groupName"]: placed[d] for d in cpu}.items():
        need = sum(args[f"{d}_autoscaling"]["max_replicas"] * args[f"{d}_num_cpus"] for d in cpu if placed[d] is group)
        (container,) = group["template"]["spec"]["containers"]
        have = group["maxReplicas"] * float(container["resources"]["limits"]["cpu"])
        if need > have:
            errors.append(f"group {name}: {have:g} CPUs at most, the ingress and workers at their max_replicas need {need:g}")
    return errors


@pytest.mark.parametrize("overlay", GROUPED)
def test_the_ingress_and_workers_run_on_the_cpu_group(overlay: str) -> None:
    (service,) = _ray_objects(rendered(overlay))
    assert placement_errors(service) == []
    (args,) = serve_app_args(service)
    assert args["ingress_resources"] == args["worker_resources"] == {"cpu_node": 1}
    (cpu,) = [g for g in _cluster_spec(service)["workerGroupSpecs"] if "cpu_node" in _offers(g)]
    assert _offers(cpu) == {"cpu_node": 1000} and not _has_gpu(cpu)
    assert args["ingress_autoscaling"]["min_replicas"] >= 2 and cpu["minReplicas"] >= 2  # two ingress replicas, two pods
    assert args["ingress_max_ongoing_requests"] >= 100 and 0 < args["ingress_max_queued_requests"] <= 1000
    assert args["worker_graceful_shutdown_timeout_s"] > 0


def test_every_overlay_with_several_worker_groups_is_checked_for_placement() -> None:
    several = [o for o in SERVICES if len(_cluster_spec(_ray_object(o))["workerGroupSpecs"]) > 1]
    assert several == GROUPED


def _group(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in _cluster_spec(doc)["workerGroupSpecs"] if g["groupName"] == name)


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        (
            lambda d: _set_args(d, lambda a: a.update(worker_resources={"generator_node": 1})),
            "worker: on group generator (GPU), needs no GPU",
        ),
        (lambda d: _set_args(d, lambda a: a.pop("ingress_resources")), "ingress_resources: none, so it may land on any pod"),
        (
            lambda d: _group(d, "cpu")["rayStartParams"].pop("resources"),
            "ingress_resources.cpu_node: offered by [], must be by one group",
        ),
        (
            lambda d: _group(d, "cpu").update(maxReplicas=1),
            "group cpu: 4 CPUs at most, the ingress and workers at their max_replicas need 8",
        ),
        (
            lambda d: _group(d, "generator").update(minReplicas=1),
            "generator_autoscaling.min_replicas: 0, but group generator keeps 1 pods or does not autoscale",
        ),
    ],
)
def test_a_placement_mistake_is_named(mistake: Any, caught: str) -> None:
    doc = _ray_object("cluster")
    mistake(doc)
    assert caught in placement_errors(doc)
