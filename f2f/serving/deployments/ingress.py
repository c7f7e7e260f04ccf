"""The HTTP ingress: the Serve deployment that builds the FastAPI app from the routers and the edit service.

Routes (OpenAPI at `/openapi.json`; Swagger UI at `/docs` only with the app arg `docs`, from this
server's own files: `f2f.serving.api.routers.docs`), one router per resource
in `f2f.serving.api.routers`: `jobs` (`/v1/edits...`), `images` (the OpenAI
Images API and `/v1/models`), `health` (`/healthz`, `/readyz`), `web` (the
page at `/`). Auth: with
`auth.required`, every `/v1` route needs `Authorization: Bearer <token>` (401
otherwise) and a key sees only its own jobs (`f2f.serving.api.auth`).

Rules: every request is checked before a job exists, and a job exists once
its source is stored (`f2f.serving.api.service`). Bodies over
`jobs.max_body_bytes` are answered 413 while they arrive. Every ingress
replica sweeps the store every `jobs.sweep_interval_s` (`f2f.serving.jobs`)
and sets the queue gauges every few seconds, changed or not
(`f2f.serving.metrics.gauge_refresh_s`). Nothing here blocks the event loop:
file and image work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from f2f.config import F2FConfig
from f2f.request import RequestLimits
from f2f.serving.api.admission import PROBE_ROOM, InFlightLimit
from f2f.serving.api.auth import AuthArgs
from f2f.serving.api.errors import BodyTooLarge, NotReady, error_response, install_error_handlers
from f2f.serving.api.routers import health, images, jobs, web
from f2f.serving.api.routers.docs import docs_router
from f2f.serving.api.service import EditService
from f2f.serving.deployments.args import AppArgs, actor_options, replica_options
from f2f.serving.deployments.ingress_args import IngressArgs
from f2f.serving.jobs import open_store
from f2f.serving.jobs.events import EventsClient
from f2f.serving.jobs.queue import BrokerQueue, JobQueue, JobsArgs
from f2f.serving.logs import log_to_serve


class Ingress:
    """Serve deployment body: the job store, the queue producer, and the FastAPI app built on the replica."""

    def __init__(
        self,
        worker: Any,
        events: Any,
        config: F2FConfig,
        jobs_args: JobsArgs,
        limits: RequestLimits,
        auth: AuthArgs,
        http: IngressArgs | None = None,
    ) -> None:
        log_to_serve()
        self.worker = worker  # bound so that Serve deploys the worker with this app
        self.events = events
        self.config, self.jobs, self.limits, self.auth = config, jobs_args, limits, auth
        self.http = http or IngressArgs(retry_after_s=jobs_args.retry_after_s)

    @classmethod
    def deployment_options(cls, args: AppArgs) -> dict[str, Any]:
        """Many requests at once (it waits on I/O; `f2f.serving.api.admission` answers overload), a bounded queue in
        each HTTP proxy (503 with Retry-After), replicas fixed or autoscaled on requests in flight."""
        return {
            "name": "Ingress",
            "max_ongoing_requests": args.ingress_max_ongoing_requests + PROBE_ROOM,
            "max_queued_requests": args.ingress_max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": args.jobs.retry_after_s},
            "ray_actor_options": {
                **actor_options(args.ingress_num_cpus, 0, args.ingress_resources),
                "runtime_env": {"env_vars": MALLOC_ENV},
            },
            **replica_options(args.ingress_autoscaling),
        }

    def __serve_build_asgi_app__(self) -> FastAPI:
        store_dir = self.jobs.store_dir(self.config.cache_dir)
        store = open_store(self.jobs, self.config.cache_dir)
        events = store.change_events() or EventsClient(self.events, asyncio.get_running_loop())
        queue, broker = JobQueue(self.jobs, store_dir), BrokerQueue.of(self.jobs, store_dir)
        service = EditService(store, queue, self.config, self.jobs, self.limits, self.auth, events, self.http, broker)
        return make_api(service, serve_ready)


async def serve_ready() -> None:
    """Raise NotReady unless every deployment of this application is healthy in Serve's view."""
    from ray import serve

    app_name = serve.get_replica_context().app_name
    status = await asyncio.to_thread(serve.status)
    app = status.applications.get(app_name)
    if app is None:
        raise NotReady("the application is not deployed")
    unhealthy = sorted(name for name, d in app.deployments.items() if d.status not in ("HEALTHY", "UPSCALING", "DOWNSCALING"))
    if unhealthy:
        raise NotReady(f"not ready: {', '.join(unhealthy)}")


def make_api(service: EditService, ready: Callable[[], Awaitable[None]]) -> FastAPI:
    """The FastAPI app over an edit service (its `http`: the ingress's HTTP args); `ready` raises NotReady while the
    application is not."""
    http_args = service.http

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = service.run_background()
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(
        title="f2f",
        description="Frame2Frame image editing: jobs and an OpenAI Images compatible API",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc load scripts from a CDN: ours is docs_router, or none
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=service.jobs.max_body_bytes)  # type: ignore[arg-type]
    app.add_middleware(InFlightLimit, limits=http_args)  # type: ignore[arg-type]  # outermost: added last
    app.state.service, app.state.ready, app.state.http_args = service, ready, http_args
    for router in (health.router, jobs.router, images.router, web.router, *([docs_router()] if http_args.docs else [])):
        app.include_router(router)
    return app


# --- body size ----------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes` (by Content-Length, or as it arrives).

    It stops reading at the limit, and the 413 says `Connection: close`: the HTTP proxy then drops the
    connection instead of reading (and passing on) the rest of the body.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(BodyTooLarge(self.max_bytes))
            response.headers["connection"] = "close"
            return await response(scope, receive, send)
        seen, over = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal seen, over
            if over:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                over = True
                raise BodyTooLarge(self.max_bytes)
            return message

        async def closing(message: dict[str, Any]) -> None:
            if over and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, limited, closing)
        if over:  # Ray's proxy may have passed on much more than the limit: hand that memory back once it is dropped
            asyncio.get_running_loop().call_later(RELEASE_AFTER_S, release_memory)


RELEASE_AFTER_S = 1.0

# glibc serves pieces over this size with their own mappings, which go back to the system when freed. By default
# the threshold rises with the pieces freed, and an upload's body then fragments the heap: after bursts of refused
# 64 MiB uploads, a replica held 122 to 178 MiB where it holds 93 MiB with the fixed threshold (bench machine,
# tests/serve/test_app.py's plateau test).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def release_memory() -> None:
    """Collect garbage and return the C heap's free pages to the system (glibc's malloc_trim; elsewhere only the collect)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
