"""Wan split over two ranks by diffusers' own context parallelism (Ulysses), on the CPU with gloo; LTX-Video refuses.

The split must give one process's frames: Ulysses moves whole heads between ranks, so every attention still
sees every token. Only float rounding may differ: each rank's linear layers see half the tokens, and a GEMM of
another height may block its sums differently on other CPUs (bit for bit on this one), so the frames may differ
by one uint8 level, no more. Rank 0 alone loads the text encoder.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("ftfy")

from harness_ports import free_port

from f2f.backends.video.i2v import DiffusersVideoGenerator
from f2f.config import VideoConfig
from f2f.errors import InvalidConfig

pytestmark = pytest.mark.models

WORKER = Path(__file__).with_name("context_parallel_worker.py")
CAPTION = "The dog slowly sits down on the grass."
# a canvas whose per-frame token count divides by 2: 96/16 x 64/16 = 24
CASES = {"wan2.1": (96, 64), "wan2.2": (96, 64)}
ROUNDING = 1  # uint8 levels: float rounding of GEMMs over half the tokens, as test_cogvideox's batch bound


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from f2f.backends.tiny.tiny_ltx import make_tiny_ltx
    from f2f.backends.tiny.tiny_wan import make_tiny_wan

    root = tmp_path_factory.mktemp("cp")
    return {
        "wan2.1": make_tiny_wan(root / "wan2.1", seed=0, variant="wan2.1"),
        "wan2.2": make_tiny_wan(root / "wan2.2", seed=0, variant="wan2.2"),  # both experts split
        "ltx": make_tiny_ltx(root / "ltx", seed=0),
    }


def one_process(folder: Path, width: int, height: int) -> np.ndarray:
    generator = DiffusersVideoGenerator(folder, device="cpu")
    settings = VideoConfig(width=width, height=height, num_frames=9, num_inference_steps=2, guidance_scale=5.0, fps=16)
    image = Image.new("RGB", (width, height), (120, 80, 40))
    image.paste((30, 200, 30), (width // 2, 0, width, height // 2))
    clip = asyncio.run(generator.generate(image, CAPTION, [3], settings))[0]
    generator.close()
    return np.stack([np.asarray(frame) for frame in clip])


def run_ranks(folder: Path, width: int, height: int, out: Path, world: int = 2) -> list[dict]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world)}
    command = [sys.executable, str(WORKER), str(folder), str(world), str(width), str(height), str(out)]
    ranks = [
        subprocess.Popen(command, env={**env, "RANK": str(rank)}, stderr=subprocess.PIPE, text=True) for rank in range(world)
    ]
    errors = [rank.communicate(timeout=300)[1] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(errors)[-4000:]
    return [pickle.loads(Path(f"{out}.{rank}").read_bytes()) for rank in range(world)]


@pytest.mark.parametrize("name", list(CASES))
def test_a_context_parallel_split_gives_one_processs_frames(folders: dict[str, Path], name: str, tmp_path: Path) -> None:
    width, height = CASES[name]
    rank_0, rank_1 = run_ranks(folders[name], width, height, tmp_path / "out")
    assert rank_1["frames"] is None and rank_0["frames"].shape == (9, height, width, 3)
    assert rank_0["text_encoder"] and not rank_1["text_encoder"]  # rank 0 encodes the prompt for both
    difference = np.abs(rank_0["frames"].astype(np.int16) - one_process(folders[name], width, height).astype(np.int16))
    assert difference.max() <= ROUNDING


def test_a_canvas_whose_tokens_do_not_divide_is_refused_before_the_call(folders: dict[str, Path]) -> None:
    from f2f.backends.video.i2v import check_video, inspect_checkpoint

    family, spec = inspect_checkpoint(folders["wan2.1"])
    uneven = VideoConfig(width=80, height=48, num_frames=9, num_inference_steps=2, guidance_scale=5.0, fps=16)  # 5 x 3
    with pytest.raises(InvalidConfig) as info:
        check_video(family, spec, uneven, sequence_split=2)
    assert info.value.field == "video.width" and "15 video tokens" in info.value.rule
    free = VideoConfig(max_canvas_pixels=6144, size_multiple=16, num_frames=9, num_inference_steps=2, guidance_scale=5.0, fps=16)
    with pytest.raises(InvalidConfig) as info:
        check_video(family, spec, free, sequence_split=2)
    assert info.value.field == "video.size_multiple" and "set video.size_multiple: 32" in info.value.rule
    check_video(family, spec, free.model_copy(update={"size_multiple": 32}), sequence_split=2)


def test_ltx_video_refuses_a_split_at_load(folders: dict[str, Path]) -> None:
    """Diffusers 0.42.1's LTX plan does not split image to video's per-token timesteps: on two ranks it fails
    with a shape error, so f2f refuses instead (f2f.backends.video.ltx)."""
    from f2f.backends.video.parallel import ParallelGroups
    from f2f.config import ParallelConfig

    groups = ParallelGroups(ParallelConfig(cfg=1, ulysses=2), rank=0, cfg_group=None, sp_group=None)
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(folders["ltx"], device="cpu", parallel=groups)
    assert info.value.field == "generator.parallel" and "ltx family cannot split" in info.value.rule
