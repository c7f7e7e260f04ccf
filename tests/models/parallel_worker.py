"""One process of a split CogVideoX run (started by test_parallel.py, one per rank, gloo on loopback).

argv: checkpoint folder, cfg, ulysses, output file, mode. Env: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE.

- mode `pipeline` (`pipeline-no-guidance`: guidance 1, a batch of one): every rank runs the same diffusers
  pipeline call; rank 0 saves the frames (numpy, float32) and the (batch, video tokens) its blocks saw.
- mode `compiled`: the same with every block compiled as `compile: regional` does, but on dynamo's eager backend
  (tracing only, seconds) and with fullgraph=True, so a graph break is an error; rank 0 also saves how many graphs
  dynamo made (one per recompile) and the graph-break count.
- mode `generator`: every rank runs the product's DiffusersVideoGenerator split by `parallel` on one seed; each rank saves
  the clips it returned (uint8), whether it loaded a text encoder, and how often its T5, VAE encoder and VAE decoder
  ran, to `<output file>.<rank>`.
- mode `cancel`: every rank runs the product's DiffusersVideoGenerator split by `parallel`; rank 0 cancels its
  token at step 2 of 6; each rank saves (what it raised, the steps it reported) to `<output file>.<rank>`.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import torch
import torch.distributed as dist
from diffusers import CogVideoXImageToVideoPipeline

from f2f.backends.video.i2v import DiffusersVideoGenerator
from f2f.backends.video.parallel import init_groups, parallelize_transformer
from f2f.config import ParallelConfig, VideoConfig
from f2f.protocols import CancelToken, Progress

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from parallel_case import CAPTION, HEIGHT, SETTINGS, WIDTH, case_image, run_case


def main() -> None:
    folder, cfg, ulysses, out, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    try:
        groups = init_groups(ParallelConfig(cfg=cfg, ulysses=ulysses))
        if mode == "cancel":
            cancel_at_step_2(folder, groups, out)
            return
        if mode == "generator":
            generate_split(folder, groups, out)
            return
        pipe = CogVideoXImageToVideoPipeline.from_pretrained(folder)
        parallelize_transformer(pipe.transformer, groups)
        seen: set[tuple[int, int]] = set()  # (batch, video tokens) that the blocks work on in this rank

        def record(_: object, args: tuple[object, ...], kwargs: dict[str, torch.Tensor]) -> None:
            seen.add(tuple(kwargs["hidden_states"].shape[:2]))

        for block in pipe.transformer.transformer_blocks:  # after the split's own hooks
            block.register_forward_pre_hook(record, with_kwargs=True)
            if mode == "compiled":
                block.compile(backend="eager", fullgraph=True, dynamic=False)
        frames = run_case(pipe, guidance=1.0 if mode == "pipeline-no-guidance" else 6.0)
        if dist.get_rank() == 0:
            from torch._dynamo.utils import counters

            graphs = {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values())}
            torch.save({"frames": frames, "seen": sorted(seen), **graphs}, out)
    finally:
        dist.destroy_process_group()


def generate_split(folder: str, groups: object, out: str) -> None:
    generator = DiffusersVideoGenerator(folder, device="cpu", parallel=groups)
    pipe, calls = generator._pipe, {"t5": 0, "vae_encoder": 0, "vae_decoder": 0}
    parts = {"t5": pipe.text_encoder, "vae_encoder": pipe.vae.encoder, "vae_decoder": pipe.vae.decoder}
    for name, module in parts.items():
        if module is not None:
            module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    clips = asyncio.run(generator.generate(case_image(), CAPTION, [3], SETTINGS))
    frames = [np.stack([np.asarray(frame) for frame in clip]) for clip in clips]
    torch.save({"clips": frames, "text_encoder": pipe.text_encoder is not None, **calls}, f"{out}.{dist.get_rank()}")


def cancel_at_step_2(folder: str, groups: object, out: str) -> None:
    generator = DiffusersVideoGenerator(folder, device="cpu", parallel=groups)
    token, steps = CancelToken(), []

    def on_progress(event: Progress) -> None:
        steps.append(event.step)
        if dist.get_rank() == 0 and event.step == 2:
            token.cancel()

    settings = VideoConfig(width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=6, guidance_scale=6.0, fps=8)
    try:
        asyncio.run(generator.generate(case_image(), CAPTION, [3], settings, progress=on_progress, cancel=token))
        raised = "nothing"
    except Exception as exc:
        raised = type(exc).__name__
    torch.save({"raised": raised, "steps": steps}, f"{out}.{dist.get_rank()}")


if __name__ == "__main__":
    main()
