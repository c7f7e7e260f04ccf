"""One rank of a Wan or LTX-Video video split by diffusers' own context parallelism (test_context_parallel.py).

argv: checkpoint folder, ulysses, width, height, output file. Env: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE.
Every rank runs the product's DiffusersVideoGenerator split by `generator.parallel`; rank 0 saves the frames
(uint8) and every rank whether it loaded a text encoder, to `<output file>.<rank>`.

Diffusers 0.42.1 builds its device mesh on "the accelerator" (`torch._C._get_accelerator()`, and
`rank % torch.accelerator.device_count()`); this machine has none, so the worker presents the CPU as a one-device
accelerator. Everything else (the mesh, the all-to-alls on gloo, the attention) is diffusers' real code.
"""

from __future__ import annotations

import asyncio
import pickle
import sys

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

torch._C._get_accelerator = lambda: torch.device("cpu")
torch.accelerator.device_count = lambda: 1

from f2f.backends.video.i2v import DiffusersVideoGenerator  # noqa: E402
from f2f.backends.video.parallel import init_groups  # noqa: E402
from f2f.config import ParallelConfig, VideoConfig  # noqa: E402

CAPTION = "The dog slowly sits down on the grass."


def main() -> None:
    folder, ulysses, width, height, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    try:
        groups = init_groups(ParallelConfig(cfg=1, ulysses=ulysses))
        generator = DiffusersVideoGenerator(folder, device="cpu", parallel=groups)
        settings = VideoConfig(width=width, height=height, num_frames=9, num_inference_steps=2, guidance_scale=5.0, fps=16)
        image = Image.new("RGB", (width, height), (120, 80, 40))
        image.paste((30, 200, 30), (width // 2, 0, width, height // 2))
        clips = asyncio.run(generator.generate(image, CAPTION, [3], settings))
        saved = {
            "frames": np.stack([np.asarray(frame) for frame in clips[0]]) if clips else None,
            "text_encoder": generator._pipe.text_encoder is not None,
        }
        with open(f"{out}.{dist.get_rank()}", "wb") as f:
            pickle.dump(saved, f)
        generator.close()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
