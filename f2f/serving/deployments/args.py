"""The arguments of the f2f Serve application (`build_app(args)`), and what every deployment's options share.

Rules: `AppArgs` rejects unknown keys; each deployment class computes its own
Serve options from them (`deployment_options(args)`, as Ray Serve LLM's
`get_deployment_options` does), with `replica_options` (a fixed count, or
autoscaling between `min_replicas` and `max_replicas`) and `actor_options`
(fractional CPUs: a replica asks for 1 CPU by default, and an oversubscribed
app hangs without a word; GPUs; custom resources).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from f2f.errors import InvalidConfig
from f2f.request import RequestLimits
from f2f.serving.api.auth import AuthArgs
from f2f.serving.deployments.ingress_args import DEFAULT_MAX_OUTPUT_PIXELS, DocsSwitch, PublicBaseURL
from f2f.serving.jobs.queue import JobsArgs


class Replicas(BaseModel):
    """How many replicas a deployment runs: fixed (min_replicas == max_replicas) or autoscaled between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(
        1,
        ge=0,
        le=256,
        description="Fewest replicas; 0 lets the deployment scale to zero when idle (the next request waits for a cold "
        "start: a new node, where the cluster adds one, and the model's load, minutes for a real model).",
    )
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
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per edit worker replica, e.g. {cpu_node: 1}."
    )
    worker_graceful_shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A stopping worker replica (rollout, downscale, drain) hands its running jobs back to the queue at "
        "once; Serve kills it after this many seconds if it has not stopped by then.",
    )
    ingress_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per ingress replica.")
    ingress_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per ingress replica, e.g. {cpu_node: 1}."
    )
    ingress_autoscaling: Replicas = Field(
        default_factory=lambda: Replicas(target_ongoing_requests=200, upscale_delay_s=10, downscale_delay_s=300),
        description="Ingress replicas: fixed, or autoscaled on requests in flight per replica (held streams included).",
    )
    ingress_max_ongoing_requests: int = Field(
        1000,
        ge=8,
        le=100_000,
        description="Requests one ingress replica serves at once (it only waits on I/O); one more is a typed 503 "
        "`overloaded` with Retry-After (/healthz and /readyz are always answered).",
    )
    ingress_max_queued_requests: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Requests each HTTP proxy lets wait for an ingress replica (while none is placed, or all are full); "
        "one more is answered 503 with Retry-After by the proxy.",
    )
    max_waiting_requests: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Long waits one ingress replica holds at once (synchronous edits and event streams, all keys); "
        "one more is a typed 503 `too_many_waiting` with Retry-After.",
    )
    max_waiting_requests_per_key: int = Field(
        32,
        ge=1,
        le=100_000,
        description="Long waits one API key holds at once on one ingress replica; one more is a typed 429 "
        "`too_many_waiting` with Retry-After.",
    )
    max_n: int = Field(4, ge=1, le=64, description="Largest `n` (seeds per edit) a request may ask for.")
    max_num_frames: int = Field(49, ge=2, description="Most frames per video a request may ask for (`num_frames`).")
    max_steps: int = Field(1000, ge=1, le=1000, description="Most denoising steps per video a request may ask for (`steps`).")
    jobs: JobsArgs = Field(default_factory=JobsArgs, description="Job store, queue broker, expiry and limits.")
    auth: AuthArgs = Field(
        default_factory=lambda: AuthArgs(), description="API keys: on by default (needs keys_file); off only on loopback."
    )
    # the ingress's HTTP side (f2f.serving.deployments.ingress_args: the rules)
    public_base_url: PublicBaseURL | None = Field(
        None, description="Where clients reach this app, e.g. https://f2f.example.com; needed by response_format=url."
    )
    docs: DocsSwitch = Field(False, description="Swagger UI at /docs from the docs extra's files (off: no /docs).")
    max_output_pixels: int = Field(
        DEFAULT_MAX_OUTPUT_PIXELS, ge=256, description="Largest output a request may ask for (`size`, WIDTH x HEIGHT)."
    )
    image_url_hosts: tuple[str, ...] = Field(
        (),
        description="Hosts (exact names) whose http(s) image URLs the JSON form of /v1/images/edits may fetch; "
        "none: data: URLs only.",
    )

    @model_validator(mode="after")
    def _targets_reachable(self) -> AppArgs:
        vlm_target = self.vlm_autoscaling.target_ongoing_requests
        if vlm_target > self.vlm_max_ongoing_requests:
            rule = f"must not exceed vlm_max_ongoing_requests ({self.vlm_max_ongoing_requests}), or it never scales up"
            raise InvalidConfig("vlm_autoscaling.target_ongoing_requests", vlm_target, rule)
        if self.ingress_autoscaling.min_replicas < 1:
            rule = "must be at least 1: the ingress answers HTTP and runs the job store's sweep"
            raise InvalidConfig("ingress_autoscaling.min_replicas", self.ingress_autoscaling.min_replicas, rule)
        if self.max_waiting_requests >= self.ingress_max_ongoing_requests:
            rule = f"must be below ingress_max_ongoing_requests ({self.ingress_max_ongoing_requests}): short requests need room"
            raise InvalidConfig("max_waiting_requests", self.max_waiting_requests, rule)
        if self.max_waiting_requests_per_key > self.max_waiting_requests:
            rule = f"must not exceed max_waiting_requests ({self.max_waiting_requests})"
            raise InvalidConfig("max_waiting_requests_per_key", self.max_waiting_requests_per_key, rule)
        if self.generator_max_queued_requests < self.worker_max_concurrent_jobs:
            rule = f"must be at least worker_max_concurrent_jobs ({self.worker_max_concurrent_jobs}), or running jobs are refused"
            raise InvalidConfig("generator_max_queued_requests", self.generator_max_queued_requests, rule)
        return self


def request_limits(args: AppArgs) -> RequestLimits:
    """The most one request may ask for, from the args."""
    return RequestLimits(max_n=args.max_n, max_num_frames=args.max_num_frames, max_steps=args.max_steps)


def replica_options(replicas: Replicas) -> dict[str, Any]:
    """Serve's `num_replicas` for a fixed count, else its `autoscaling_config`."""
    if replicas.min_replicas == replicas.max_replicas:
        return {"num_replicas": replicas.min_replicas}
    return {"autoscaling_config": replicas.model_dump()}


def actor_options(cpus: float, gpus: float, resources: dict[str, float]) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if resources:
        options["resources"] = dict(resources)
    return options
