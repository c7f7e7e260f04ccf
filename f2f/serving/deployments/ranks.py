"""A generator replica over several GPUs: the replica is rank 0, ranks 1..N-1 are Ray actors in its placement group.

Rules:

- The app builder gives a split generator (`generator.parallel`, N = cfg x
  ulysses > 1) N bundles of one GPU each, STRICT_PACK (one node: the
  all-to-alls need NVLink-class bandwidth). The replica takes bundle 0 and
  starts one `GeneratorRank` actor in each other bundle.
- Rendezvous: torch.distributed over TCP at the replica's node address and
  a free port; NCCL on GPUs, gloo on the CPU (tests). Each rank loads the
  same checkpoint and splits the transformer (`f2f.backends.video.parallel`).
- Every video runs on all ranks at once with the same inputs: the replica
  sends them to the actors and runs rank 0 itself; only rank 0's frames are
  returned (the others return nothing, so no frames cross Ray).
- Cancel: rank 0 stops at its next step and every rank stops at the same
  step (a collective flag per step). A rank lost or stuck makes the others
  wait in a collective until the process group's timeout
  (`PROCESS_GROUP_TIMEOUT`); the replica then fails its health check and
  Serve replaces it, and the job's worker retries the video.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
from typing import Any

from PIL import Image

from f2f.backends import load_generator
from f2f.config import F2FConfig, VideoConfig

PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=10)
RANK_ACTOR_PREFIX = "f2f-generator-rank-"


def join_ranks(config: F2FConfig, rank: int, address: str) -> Any:
    """Join the process group as `rank` and load this rank's part of the generator."""
    import torch
    import torch.distributed as dist

    from f2f.backends.video.parallel import init_groups

    layout = config.generator.parallel
    use_cuda = config.generator.device != "cpu" and torch.cuda.is_available()
    dist.init_process_group(
        "nccl" if use_cuda else "gloo",
        init_method=address,
        rank=rank,
        world_size=layout.world_size,
        timeout=PROCESS_GROUP_TIMEOUT,
    )
    return load_generator(config, parallel=init_groups(layout))


class GeneratorRank:
    """Ranks 1..N-1 of a split generator (a Ray actor)."""

    def __init__(self, config: F2FConfig, rank: int, address: str) -> None:
        self.backend = join_ranks(config, rank, address)

    async def generate(self, image: Image.Image, caption: str, seeds: list[int], settings: VideoConfig) -> None:
        """This rank's part of the video; the frames are rank 0's to return."""
        await self.backend.generate(image, caption, seeds, settings)

    def ready(self) -> bool:
        return True


class RankGroup:
    """Rank 0's view: the other ranks' actors, started in this replica's placement group, and rank 0's generator."""

    def __init__(self, config: F2FConfig, num_cpus: float, num_gpus: float) -> None:
        import ray
        from ray.util import get_current_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = get_current_placement_group()
        if group is None:
            raise RuntimeError("a split generator runs in a placement group (the app builder sets its bundles)")
        address = f"tcp://{ray.util.get_node_ip_address()}:{_free_port()}"
        actor, replica = ray.remote(GeneratorRank), ray.get_runtime_context().get_actor_id()[:12]
        self.ranks = [
            actor.options(
                name=f"{RANK_ACTOR_PREFIX}{replica}-{rank}",  # one name per replica and rank: `ray list actors` shows them
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank),
            ).remote(config, rank, address)
            for rank in range(1, config.generator.parallel.world_size)
        ]
        self.backend = join_ranks(config, 0, address)  # returns once every rank joined
        ray.get([rank.ready.remote() for rank in self.ranks])

    def start(self, image: Image.Image, caption: str, seeds: list[int], settings: VideoConfig) -> list[Any]:
        """Start the other ranks on a video (before rank 0 runs it); their object refs."""
        return [rank.generate.remote(image, caption, seeds, settings) for rank in self.ranks]

    async def check(self) -> None:
        """Raise (Ray's actor error) if another rank is gone; their actors answer while they generate."""
        await asyncio.gather(*(rank.ready.remote() for rank in self.ranks))

    def close(self) -> None:
        import ray

        for rank in self.ranks:
            ray.kill(rank)
        self.backend.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]
