"""The video generator deployment: one loaded image-to-video pipeline per replica.

Rules: the generator is built from `config.generator` and checked against
`config.video` when the replica starts (a checkpoint that cannot generate the
configured canvas or frame count fails the deployment, naming the field);
one video job per replica at a time (`max_ongoing_requests=1`, set by the
app builder); the backend runs the pipeline in a worker thread, so the
replica's event loop stays free. With `generator.parallel`, one replica
spans several GPUs (`f2f.serving.deployments.ranks`): every step runs on all of them. `generate_stream` yields `Progress` events
as the denoising steps finish (each step's time is recorded in
`f2f_denoise_step_seconds`) and then, last, the clips; cancelling the
request (the caller cancels its stream) stops the video at the next step.
A mask goes to the backend as is; a split generator never gets one (the
request's check refuses it: `f2f.request.check_edit`). `preview_every` goes
to the backend only when a job asked for previews; its `Progress` items then
carry them (rank 0's, when split), and the frames are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from PIL import Image

from f2f.backends import load_generator
from f2f.config import F2FConfig, VideoConfig
from f2f.errors import ReplicaLost, unwrap
from f2f.protocols import Frames, Progress
from f2f.serving import metrics
from f2f.serving.deployments.args import AppArgs, actor_options, replica_options
from f2f.serving.deployments.ranks import RankGroup
from f2f.serving.logs import log_to_serve

FOLLOWER_GRACE_S = 60.0  # how long the other ranks may take to end after rank 0 did
HEALTH_CHECK_S = 2.0  # a broken replica leaves routing before a job's retry (f2f.serving.deployments.worker)


class GeneratorDeployment:
    """Serve deployment body: `generate` over the checkpoint of `config.generator`.

    A split generator (`generator.parallel`) starts its other ranks with
    `rank_options` (their CPUs and GPUs) in this replica's placement group.
    """

    def __init__(self, config: F2FConfig, rank_options: dict[str, float]) -> None:
        log_to_serve(request_id_is_job=True)  # called by the edit worker only: a request's id is its job's
        self.ranks: RankGroup | None = None
        self.lost_rank: str | None = None  # set once another rank died: this replica is done for
        if config.generator.parallel.world_size > 1:
            self.ranks = RankGroup(config, **rank_options)
            self.backend: Any = self.ranks.backend
        else:
            self.backend = load_generator(config)

    @classmethod
    def deployment_options(cls, args: AppArgs, world_size: int = 1) -> dict[str, Any]:
        """One video per replica, a bounded queue.

        A replica split over `world_size` GPUs gets as many bundles of the
        replica's resources, packed on one node; it runs in the first.
        """
        actor = actor_options(args.generator_num_cpus, args.generator_num_gpus, args.generator_resources)
        options = {
            "name": "Generator",
            "health_check_period_s": HEALTH_CHECK_S,
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

    async def generate_stream(
        self,
        image: Image.Image,
        caption: str,
        seeds: Sequence[int],
        settings: VideoConfig,
        mask: Image.Image | None = None,
        preview_every: int | None = None,
    ) -> AsyncIterator[Progress | list[Frames]]:
        """`Progress` per denoising step, then the clips (one per seed); `mask`: the backend's (None: unmasked);
        `preview_every`: a preview every that many steps (None: none)."""
        if self.backend is None:
            raise RuntimeError("the video generator is closed")
        if self.lost_rank is not None:
            raise ReplicaLost(f"a rank of this split generator died ({self.lost_rank}); the replica is being replaced")
        events: asyncio.Queue[Progress] = asyncio.Queue()
        last_step: list[float] = []  # when the previous step ended; the first step also holds the set-up: not recorded

        def on_progress(event: Progress) -> None:
            if event.step is not None:
                now = time.perf_counter()
                if last_step:
                    metrics.record_denoise_step(now - last_step[0])
                last_step[:] = [now]
            events.put_nowait(event)

        followers = self.ranks.start(image, caption, list(seeds), settings) if self.ranks else []
        previews = {} if preview_every is None else {"preview_every": preview_every}
        call = self.backend.generate(image, caption, seeds, settings, progress=on_progress, mask=mask, **previews)
        task = asyncio.create_task(call)
        try:
            while not task.done():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            while not events.empty():  # the backend delivers every event before it returns
                yield events.get_nowait()
            yield task.result()
        finally:
            if not task.done():  # the caller cancelled: stop the video at its next step (every rank at the same one)
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            if followers:
                await self._check_followers(followers)

    async def _check_followers(self, followers: list[Any]) -> None:
        """Wait for the other ranks, which end with rank 0 (done, failed or stopped) unless one died.

        A dead rank (or one still running a minute after rank 0 ended) leaves
        this replica unable to generate: it fails its health checks from now on,
        and the call raises ReplicaLost, which the edit worker retries.
        """
        from ray.exceptions import RayActorError

        futures = [asyncio.ensure_future(ref) for ref in followers]
        done, pending = await asyncio.wait(futures, timeout=FOLLOWER_GRACE_S)
        lost = [f"{len(pending)} rank(s) still running {FOLLOWER_GRACE_S:g} s after rank 0 ended"] if pending else []
        lost += [str(unwrap(f.exception()))[:200] for f in done if isinstance(f.exception(), RayActorError)]
        if lost:
            self.lost_rank = lost[0]
            raise ReplicaLost(f"a rank of this split generator died ({self.lost_rank}); the replica is being replaced")

    async def check_health(self) -> None:
        """Raise if the pipeline is released or another rank is gone (also Serve's replica health check)."""
        if self.backend is None:
            raise RuntimeError("the video generator has been released")
        self.backend.health()
        if self.lost_rank is not None:
            raise RuntimeError(f"a rank of this split generator died: {self.lost_rank}")
        if self.ranks is not None:
            await self.ranks.check()

    def __del__(self) -> None:
        backend, self.backend = getattr(self, "backend", None), None
        ranks, self.ranks = getattr(self, "ranks", None), None
        if ranks is not None:
            ranks.close()
        elif backend is not None:
            backend.close()
