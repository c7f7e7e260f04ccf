"""The typed app builder that Serve config files point at (`import_path: f2f.serving.app:build_app`).

Rules of `build_app(args)`:

- `args` is validated by `AppArgs` (unknown keys rejected); `args.config` is
  an f2f config mapping (as a config file holds, e.g. `{profile: tiny}`),
  validated by `f2f.config.config_from_dict`. Any error is an `InvalidConfig`
  naming the field (`args.vlm_num_cpus`, `config.video.num_frames`).
- With a profile, its tiny checkpoints are built (first use) and its folder
  is checked here, once, before any replica loads weights.
- Each deployment class computes its Serve options from the args
  (`deployment_options`, see `f2f.serving.deployments.args`): fractional CPUs, GPUs,
  replicas, queue bounds.
- Replicas: a `Replicas` block per model deployment; `min_replicas ==
  max_replicas` is a fixed count (`num_replicas`), otherwise Serve autoscales
  between them on ongoing requests per replica (`autoscaling_config`).
- Edits are jobs: the ingress stores and queues them (`jobs`: store, broker,
  TTL, queue bound; see `f2f.serving.jobs.queue`), the edit worker (a Ray Serve
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

from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from f2f.backends import prepare_models
from f2f.config import F2FConfig, config_from_dict, invalid_config_from
from f2f.errors import InvalidConfig
from f2f.serving.api.auth import KeyRing
from f2f.serving.deployments.args import AppArgs, request_limits
from f2f.serving.deployments.generator import GeneratorDeployment
from f2f.serving.deployments.ingress import Ingress
from f2f.serving.deployments.ingress_args import IngressArgs
from f2f.serving.deployments.serve_file import http_address, read_serve_config
from f2f.serving.deployments.vlm import VLMDeployment
from f2f.serving.deployments.worker import EditWorker, consumer_class
from f2f.serving.jobs import check_store
from f2f.serving.jobs.events import JobEvents
from f2f.serving.jobs.queue import broker_settings, task_processor_config


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


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The f2f Serve application: Ingress -> queue -> EditWorker -> (VLMDeployment, GeneratorDeployment), and, with
    the file store, JobEvents between the worker and the ingress (job changes pushed to the requests waiting for them;
    the Redis store pushes them over Redis)."""
    parsed, config = parse_args(args)
    if parsed.auth.keys_file is not None:
        KeyRing(parsed.auth.keys_file)  # readable and well-formed, before any replica starts
    world = config.generator.parallel.world_size
    if world > 1 and parsed.generator_num_gpus not in (0, 1):
        rule = f"must be 1 (or 0 on CPUs) when generator.parallel splits a video over {world} GPUs: each rank takes a GPU"
        raise InvalidConfig("generator_num_gpus", parsed.generator_num_gpus, rule)
    check_store(parsed.jobs)  # an unreachable Redis is one line now, not a replica that fails to start
    prepare_models(config)
    store_dir = parsed.jobs.store_dir(config.cache_dir)
    queue = task_processor_config(parsed.jobs, store_dir)
    vlm = serve.deployment(VLMDeployment, **VLMDeployment.deployment_options(parsed))
    generator = serve.deployment(GeneratorDeployment, **GeneratorDeployment.deployment_options(parsed, world))
    rank_options = {"num_cpus": parsed.generator_num_cpus, "num_gpus": parsed.generator_num_gpus}
    # The file store's changes go through the JobEvents hub; the Redis store publishes its own (RedisEvents).
    events = None if parsed.jobs.store == "redis" else serve.deployment(JobEvents, **JobEvents.deployment_options()).bind()
    worker_options = EditWorker.deployment_options(parsed, broker_settings(parsed.jobs, store_dir))
    worker = serve.deployment(consumer_class(queue), **worker_options)
    ingress = serve.deployment(serve.ingress()(Ingress), **Ingress.deployment_options(parsed))
    models = (vlm.bind(config), generator.bind(config, rank_options))
    bound_worker = worker.bind(*models, events, config, parsed.jobs, parsed.worker_max_concurrent_jobs)
    limits = (request_limits(parsed), parsed.auth, IngressArgs.of(parsed))
    return ingress.bind(bound_worker, events, config, parsed.jobs, *limits)


# --- Serve config files ---------------------------------------------------------------------


def run_config_file(path: str | Path, host: str | None = None, port: int | None = None) -> str:
    """`serve.run` every application of a Serve config file (Ray must be running); the base URL.

    Reads `http_options` (all of them go to Ray's HTTP proxy: `host`, `port`, `keep_alive_timeout_s`,
    `request_timeout_s`, ...; `host` and `port` given here win) and `applications[]` (`name`,
    `route_prefix`, `import_path`, `args`, `logging_config`); other keys are left to Ray.
    """
    data = read_serve_config(Path(path))
    http = dict(data.get("http_options") or {})
    host, port = http_address(data, host, port)
    serve.start(http_options={**http, "host": host, "port": port})
    for app in data["applications"]:
        builder = _import_builder(app["import_path"])
        target = builder(app.get("args") or {}) if callable(builder) and not isinstance(builder, Application) else builder
        name, prefix, logging = app.get("name", "default"), app.get("route_prefix", "/"), app.get("logging_config")
        serve.run(target, name=name, route_prefix=prefix, logging_config=logging, blocking=False)
    return f"http://{host}:{port}"


def _import_builder(import_path: str) -> Any:
    import importlib

    module_name, _, attr = import_path.partition(":")
    if not attr:
        raise InvalidConfig("import_path", import_path, "must be `module:attribute`")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidConfig("import_path", import_path, f"cannot import it ({exc})") from None
