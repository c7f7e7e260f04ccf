"""One process of a split CogVideoX run (started by test_parallel.py, one per rank, gloo on loopback).

argv: checkpoint folder, cfg, ulysses, output file. Env: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE.
Every rank runs the same pipeline call; rank 0 saves the frames (numpy, float32) and the (batch, video tokens)
its transformer blocks saw, with torch.save.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from diffusers import CogVideoXImageToVideoPipeline

from f2f.backends.parallel import init_groups, parallelize_transformer
from f2f.config import ParallelConfig

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from parallel_case import run_case


def main() -> None:
    folder, cfg, ulysses, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    try:
        pipe = CogVideoXImageToVideoPipeline.from_pretrained(folder)
        parallelize_transformer(pipe.transformer, init_groups(ParallelConfig(cfg=cfg, ulysses=ulysses)))
        seen: set[tuple[int, int]] = set()  # (batch, video tokens) that the blocks work on in this rank

        def record(_: object, args: tuple[object, ...], kwargs: dict[str, torch.Tensor]) -> None:
            seen.add(tuple(kwargs["hidden_states"].shape[:2]))

        for block in pipe.transformer.transformer_blocks:  # after the split's own hooks
            block.register_forward_pre_hook(record, with_kwargs=True)
        frames = run_case(pipe)
        if dist.get_rank() == 0:
            torch.save({"frames": frames, "seen": sorted(seen)}, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
