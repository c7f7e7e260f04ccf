"""The typed app builder that Serve config files point at (`import_path: f2f.serving.app:build_app`).

Rules of `build_app(args)`:

- `args` is validated by `AppArgs` (unknown keys rejected); `args.config` is
  an f2f config mapping (as a config file holds, e.g. `{profile: tiny}`),
  validated by `f2f.config.config_from_dict`. Any error is an `InvalidConfig`
  naming the field (`args.vlm_num_cpus`, `config.video.num_frames`).
- With a profile, its tiny checkpoints are built (first use) and its folder
  is checked here, once, before any replica loads weights.
- Deployment options come from the args, one small function per deployment
  (`vlm_options`, `generator_options`, `ingress_options`): fractional CPUs (a
  replica asks for 1 CPU by default, and an oversubscribed app hangs without a
  word), GPUs, replicas, queue bounds.
- Replicas: a `Replicas` block per model deployment; `min_replicas ==
  max_replicas` is a fixed count (`num_replicas`), otherwise Serve autoscales
  between them on ongoing requests per replica (`autoscaling_config`).
- Edits are jobs: the ingress stores and queues them (`jobs`: store, broker,
  TTL, queue bound; see `f2f.serving.broker`), the edit worker (a Ray Serve
  task consumer) runs `worker_max_concurrent_jobs` at once per replica
  against the two model deployments. A full job queue answers 503 at once.
- The generator runs one video at a time per replica (`max_ongoing_requests=1`);
  the jobs a worker replica runs at once wait for it in a bounded queue
  (`generator_max_queued_requests`, per caller, at least the worker's
  concurrency). The VLM answers several chats per replica
  (`vlm_max_ongoing_requests`; vLLM batches them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import serve
from ray.serve import Application

from f2f.backends import prepare_models
from f2f.config import F2FConfig, config_from_dict, invalid_config_from
from f2f.errors import InvalidConfig
from f2f.serving.auth import AuthArgs, KeyRing
from f2f.serving.broker import JobsArgs, task_processor_config
from f2f.serving.generator_deployment import GeneratorDeployment
from f2f.serving.ingress import Ingress, RequestLimits
from f2f.serving.vlm_deployment import VLMDeployment
from f2f.serving.worker_deployment import EditWorker


class Replicas(BaseModel):
    """How many replicas a deployment runs: fixed (min_replicas == max_replicas) or autoscaled between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=1, le=256, description="Fewest replicas (each loads its model: a cold start takes minutes).")
    max_replicas: int = Field(1, ge=1, le=256, description="Most replicas; equal to min_replicas means a fixed count.")
    target_ongoing_requests: float = Field(
        1.0, gt=0, description="Autoscaling aims at this many requests in flight per replica (queued ones included)."
    )
    upscale_delay_s: float = Field(30.0, ge=0, description="Seconds the load must stay above target before adding replicas.")
    downscale_delay_s: float = Field(
        600.0, ge=0, description="Seconds the load must stay below target before removing replicas (long: reloads are slow)."
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Replicas:
        if self.min_replicas > self.max_replicas:
            raise InvalidConfig("min_replicas", self.min_replicas, f"must not exceed max_replicas ({self.max_replicas})")
        return self


class AppArgs(BaseModel):
    """The arguments of `build_app`: the f2f config and the resources of each deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: dict[str, Any] = Field(default_factory=dict, description="An f2f config mapping, e.g. {profile: tiny}.")
    vlm_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per VLM replica (fractions allowed).")
    vlm_num_gpus: float = Field(0, ge=0, description="GPUs per VLM replica (0: CPU; a fraction shares a GPU).")
    vlm_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per VLM replica, e.g. {vlm_node: 1} to pin it to a worker group."
    )
    vlm_max_ongoing_requests: int = Field(
        8, ge=1, le=1024, description="Chat calls one VLM replica serves at once (vLLM batches them)."
    )
    vlm_autoscaling: Replicas = Field(
        default_factory=lambda: Replicas(target_ongoing_requests=4, downscale_delay_s=300),
        description="VLM replicas: fixed, or autoscaled on chat calls in flight per replica.",
    )
    generator_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per generator replica.")
    generator_num_gpus: float = Field(0, ge=0, description="GPUs per generator replica (0: CPU; a fraction shares a GPU).")
    generator_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per generator replica (pins it to a worker group)."
    )
    generator_autoscaling: Replicas = Field(
        default_factory=Replicas,
        description="Generator replicas: fixed, or autoscaled on videos in flight per replica (one runs at a time).",
    )
    generator_max_queued_requests: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Jobs each worker replica lets wait for a busy generator (at least worker_max_concurrent_jobs).",
    )
    worker_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per edit worker replica.")
    worker_max_concurrent_jobs: int = Field(
        2, ge=1, le=256, description="Jobs one worker replica runs at once (each waits for the VLM and the generator)."
    )
    worker_autoscaling: Replicas = Field(default_factory=Replicas, description="Edit worker replicas (each consumes the queue).")
    ingress_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per ingress replica.")
    max_n: int = Field(4, ge=1, le=64, description="Largest `n` (seeds per edit) a request may ask for.")
    max_num_frames: int = Field(49, ge=2, description="Most frames per video a request may ask for (`num_frames`).")
    max_steps: int = Field(1000, ge=1, le=1000, description="Most denoising steps per video a request may ask for (`steps`).")
    jobs: JobsArgs = Field(default_factory=JobsArgs, description="Job store, queue broker, expiry and limits.")
    auth: AuthArgs = Field(
        default_factory=lambda: AuthArgs(), description="API keys: on by default (needs keys_file); off only on loopback."
    )

    @model_validator(mode="after")
    def _targets_reachable(self) -> AppArgs:
        vlm_target = self.vlm_autoscaling.target_ongoing_requests
        if vlm_target > self.vlm_max_ongoing_requests:
            rule = f"must not exceed vlm_max_ongoing_requests ({self.vlm_max_ongoing_requests}), or it never scales up"
            raise InvalidConfig("vlm_autoscaling.target_ongoing_requests", vlm_target, rule)
        if self.generator_max_queued_requests < self.worker_max_concurrent_jobs:
            rule = f"must be at least worker_max_concurrent_jobs ({self.worker_max_concurrent_jobs}), or running jobs are refused"
            raise InvalidConfig("generator_max_queued_requests", self.generator_max_queued_requests, rule)
        return self


def parse_args(args: dict[str, Any] | None) -> tuple[AppArgs, F2FConfig]:
    """Validated args and the f2f config they hold; InvalidConfig names the field. Reads no model folder."""
    try:
        parsed = AppArgs.model_validate(args or {})
    except ValidationError as exc:
        raise invalid_config_from(exc, "args.") from None
    config = config_from_dict(dict(parsed.config), origin="config.")
    for limit, value in (("max_num_frames", config.video.num_frames), ("max_steps", config.video.num_inference_steps)):
        if value is not None and value > getattr(parsed, limit):
            rule = f"must be at least the config's own setting ({value}), or requests that ask for nothing are refused"
            raise InvalidConfig(f"args.{limit}", getattr(parsed, limit), rule)
    return parsed, config


def request_limits(args: AppArgs) -> RequestLimits:
    """The most one request may ask for, from the args."""
    return RequestLimits(max_n=args.max_n, max_num_frames=args.max_num_frames, max_steps=args.max_steps)


def replica_options(replicas: Replicas) -> dict[str, Any]:
    """Serve's `num_replicas` for a fixed count, else its `autoscaling_config`."""
    if replicas.min_replicas == replicas.max_replicas:
        return {"num_replicas": replicas.min_replicas}
    return {"autoscaling_config": replicas.model_dump()}


def _actor_options(cpus: float, gpus: float, resources: dict[str, float]) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if resources:
        options["resources"] = dict(resources)
    return options


def vlm_options(args: AppArgs) -> dict[str, Any]:
    """Deployment options of the VLM: several chats per replica."""
    return {
        "name": "VLM",
        "max_ongoing_requests": args.vlm_max_ongoing_requests,
        "ray_actor_options": _actor_options(args.vlm_num_cpus, args.vlm_num_gpus, args.vlm_resources),
        **replica_options(args.vlm_autoscaling),
    }


GENERATOR_HEALTH_CHECK_S = 2.0


def generator_options(args: AppArgs, world_size: int = 1) -> dict[str, Any]:
    """Deployment options of the generator: one video per replica, a bounded queue.

    A replica split over `world_size` GPUs gets as many bundles of the
    replica's resources, packed on one node; it runs in the first.
    """
    actor = _actor_options(args.generator_num_cpus, args.generator_num_gpus, args.generator_resources)
    options = {
        "name": "Generator",
        "health_check_period_s": GENERATOR_HEALTH_CHECK_S,  # a broken replica leaves routing before a job's retry
        "max_ongoing_requests": 1,
        "max_queued_requests": args.generator_max_queued_requests,
        "ray_actor_options": actor,
        **replica_options(args.generator_autoscaling),
    }
    if world_size > 1:
        bundle = {"CPU": args.generator_num_cpus, **({"GPU": args.generator_num_gpus} if args.generator_num_gpus else {})}
        options["placement_group_bundles"] = [{**bundle, **args.generator_resources} for _ in range(world_size)]
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


def worker_options(args: AppArgs) -> dict[str, Any]:
    """Deployment options of the edit worker: its concurrency is the queue consumer's."""
    return {
        "name": "EditWorker",
        "max_ongoing_requests": args.worker_max_concurrent_jobs,
        "ray_actor_options": {"num_cpus": args.worker_num_cpus},
        **replica_options(args.worker_autoscaling),
    }


def ingress_options(args: AppArgs) -> dict[str, Any]:
    """Deployment options of the HTTP ingress: one replica, fractional CPU."""
    return {"name": "Ingress", "ray_actor_options": {"num_cpus": args.ingress_num_cpus}}


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The f2f Serve application: Ingress -> queue -> EditWorker -> (VLMDeployment, GeneratorDeployment)."""
    from ray.serve.task_consumer import task_consumer

    parsed, config = parse_args(args)
    if parsed.auth.keys_file is not None:
        KeyRing(parsed.auth.keys_file)  # readable and well-formed, before any replica starts
    world = config.generator.parallel.world_size
    if world > 1 and parsed.generator_num_gpus not in (0, 1):
        rule = f"must be 1 (or 0 on CPUs) when generator.parallel splits a video over {world} GPUs: each rank takes a GPU"
        raise InvalidConfig("generator_num_gpus", parsed.generator_num_gpus, rule)
    prepare_models(config)
    queue = task_processor_config(parsed.jobs, parsed.jobs.store_dir(config.cache_dir))
    vlm = serve.deployment(VLMDeployment, **vlm_options(parsed))
    generator = serve.deployment(GeneratorDeployment, **generator_options(parsed, world))
    rank_options = {"num_cpus": parsed.generator_num_cpus, "num_gpus": parsed.generator_num_gpus}
    worker = serve.deployment(task_consumer(task_processor_config=queue)(EditWorker), **worker_options(parsed))
    ingress = serve.deployment(serve.ingress()(Ingress), **ingress_options(parsed))
    bound_worker = worker.bind(vlm.bind(config), generator.bind(config, rank_options), config, parsed.jobs)
    return ingress.bind(bound_worker, config, parsed.jobs, request_limits(parsed), parsed.auth)


# --- Serve config files ---------------------------------------------------------------------


def run_config_file(path: str | Path, host: str | None = None, port: int | None = None) -> str:
    """`serve.run` every application of a Serve config file (Ray must be running); the base URL.

    Reads `http_options` (all of them go to Ray's HTTP proxy: `host`, `port`, `keep_alive_timeout_s`,
    `request_timeout_s`, ...; `host` and `port` given here win) and `applications[]` (`name`,
    `route_prefix`, `import_path`, `args`); other keys are left to Ray.
    """
    data = _read_serve_config(Path(path))
    http = dict(data.get("http_options") or {})
    host, port = host or http.get("host", "127.0.0.1"), port or http.get("port", 8000)
    serve.start(http_options={**http, "host": host, "port": port})
    for app in data["applications"]:
        builder = _import_builder(app["import_path"])
        target = builder(app.get("args") or {}) if callable(builder) and not isinstance(builder, Application) else builder
        serve.run(target, name=app.get("name", "default"), route_prefix=app.get("route_prefix", "/"), blocking=False)
    return f"http://{host}:{port}"


def _read_serve_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidConfig("config", str(path), f"cannot read the Serve config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InvalidConfig("config", str(path), f"not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("applications"), list) or not data["applications"]:
        raise InvalidConfig("applications", str(path), "a Serve config file needs a non-empty `applications` list")
    return data


def _import_builder(import_path: str) -> Any:
    import importlib

    module_name, _, attr = import_path.partition(":")
    if not attr:
        raise InvalidConfig("import_path", import_path, "must be `module:attribute`")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidConfig("import_path", import_path, f"cannot import it ({exc})") from None
