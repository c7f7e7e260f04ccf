"""One process of a split CogVideoX run (started by test_parallel.py, one per rank, gloo on loopback).

argv: checkpoint folder, cfg, ulysses, output file, mode. Env: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE.

- mode `pipeline` (`pipeline-no-guidance`: guidance 1, a batch of one): every rank runs the same diffusers
  pipeline call; rank 0 saves the frames (numpy, float32) and the (batch, video tokens) its blocks saw.
- mode `cancel`: every rank runs the product's CogVideoXGenerator split by `parallel`; rank 0 cancels its
  token at step 2 of 6; each rank saves (what it raised, the steps it reported) to `<output file>.<rank>`.
"""

from __future__ import annotations

import asyncio
import sys

import torch
import torch.distributed as dist
from diffusers import CogVideoXImageToVideoPipeline

from f2f.backends.cogvideox import CogVideoXGenerator
from f2f.backends.parallel import init_groups, parallelize_transformer
from f2f.config import ParallelConfig, VideoConfig
from f2f.protocols import CancelToken, Progress

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from parallel_case import CAPTION, HEIGHT, WIDTH, case_image, run_case


def main() -> None:
    folder, cfg, ulysses, out, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    try:
        groups = init_groups(ParallelConfig(cfg=cfg, ulysses=ulysses))
        if mode == "cancel":
            cancel_at_step_2(folder, groups, out)
            return
        pipe = CogVideoXImageToVideoPipeline.from_pretrained(folder)
        parallelize_transformer(pipe.transformer, groups)
        seen: set[tuple[int, int]] = set()  # (batch, video tokens) that the blocks work on in this rank

        def record(_: object, args: tuple[object, ...], kwargs: dict[str, torch.Tensor]) -> None:
            seen.add(tuple(kwargs["hidden_states"].shape[:2]))

        for block in pipe.transformer.transformer_blocks:  # after the split's own hooks
            block.register_forward_pre_hook(record, with_kwargs=True)
        frames = run_case(pipe, guidance=1.0 if mode == "pipeline-no-guidance" else 6.0)
        if dist.get_rank() == 0:
            torch.save({"frames": frames, "seen": sorted(seen)}, out)
    finally:
        dist.destroy_process_group()


def cancel_at_step_2(folder: str, groups: object, out: str) -> None:
    generator = CogVideoXGenerator(folder, device="cpu", parallel=groups)
    token, steps = CancelToken(), []

    def on_progress(event: Progress) -> None:
        steps.append(event.step)
        if dist.get_rank() == 0 and event.step == 2:
            token.cancel()

    settings = VideoConfig(width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=6)
    try:
        asyncio.run(generator.generate(case_image(), CAPTION, [3], settings, progress=on_progress, cancel=token))
        raised = "nothing"
    except Exception as exc:
        raised = type(exc).__name__
    torch.save({"raised": raised, "steps": steps}, f"{out}.{dist.get_rank()}")


if __name__ == "__main__":
    main()
