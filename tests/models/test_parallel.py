"""CFG-parallel and Ulysses sequence parallelism (f2f.backends.parallel) against the one-process result.

Real processes: 2 or 4 ranks of `parallel_worker.py` on gloo over loopback,
each loading the same tiny pipeline (4 heads, 2 layers; 45 video tokens, so
the token shards are uneven). The split run's frames must equal the
one-process frames within 1e-5 (float32 rounding: the per-head, per-token
arithmetic is the same, summed in another order).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import CogVideoXImageToVideoPipeline  # noqa: E402

from f2f.backends.parallel import ParallelGroups, parallelize_transformer, shard_sizes  # noqa: E402
from f2f.backends.tiny_cogvideox import make_tiny_cogvideox  # noqa: E402
from f2f.config import ParallelConfig  # noqa: E402
from f2f.errors import InvalidConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from harness_ports import free_port  # noqa: E402
from parallel_case import HEADS, HEIGHT, WIDTH, run_case  # noqa: E402

pytestmark = pytest.mark.models

WORKER = Path(__file__).with_name("parallel_worker.py")
TOLERANCE = 1e-5
VIDEO_TOKENS = 3 * (HEIGHT // 16) * (WIDTH // 16)  # 9 frames -> 3 latent frames of 3 x 5 patches: 45


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-4-heads"
    return make_tiny_cogvideox(folder, seed=1, height=HEIGHT, width=WIDTH, heads=HEADS, layers=2)


@pytest.fixture(scope="module")
def single(checkpoint: Path) -> np.ndarray:
    return run_case(CogVideoXImageToVideoPipeline.from_pretrained(checkpoint))


def run_split(checkpoint: Path, cfg: int, ulysses: int, out: Path, mode: str = "pipeline") -> dict[str, Any]:
    """Start the ranks, wait for them; rank 0's saved results (mode `pipeline`)."""
    world, port = cfg * ulysses, free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world)}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(checkpoint), str(cfg), str(ulysses), str(out), mode],
            env={**env, "RANK": str(rank)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    errors = [rank.communicate(timeout=300)[1] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(errors)[-4000:]
    return torch.load(out, weights_only=False) if mode.startswith("pipeline") else {}


@pytest.mark.parametrize(
    ("cfg", "ulysses"), [(1, 2), (2, 1), (2, 2), (1, 4)], ids=["ulysses2", "cfg2", "cfg2xulysses2", "ulysses4"]
)
def test_a_split_run_gives_the_one_process_frames(
    checkpoint: Path, single: np.ndarray, tmp_path: Path, cfg: int, ulysses: int
) -> None:
    saved = run_split(checkpoint, cfg, ulysses, tmp_path / "frames.pt")
    assert saved["seen"] == [(2 // cfg, shard_sizes(VIDEO_TOKENS, ulysses)[0])]  # rank 0 really did its part only
    split = saved["frames"]
    assert split.shape == single.shape == (9, HEIGHT, WIDTH, 3)
    assert np.abs(split - single).max() <= TOLERANCE
    assert np.abs(single - single[0]).max() > 0.01  # the frames differ from each other: a real video, not a constant


def test_without_guidance_a_cfg_split_runs_the_whole_batch_on_both_halves(checkpoint: Path, tmp_path: Path) -> None:
    single = run_case(CogVideoXImageToVideoPipeline.from_pretrained(checkpoint), guidance=1.0)
    saved = run_split(checkpoint, 2, 1, tmp_path / "frames.pt", mode="pipeline-no-guidance")
    assert saved["seen"] == [(1, VIDEO_TOKENS)]  # a batch of one cannot be halved
    assert np.abs(saved["frames"] - single).max() <= TOLERANCE


@pytest.mark.parametrize(("cfg", "ulysses"), [(1, 2), (2, 2)], ids=["ulysses2", "cfg2xulysses2"])
def test_a_cancel_on_rank_0_stops_every_rank_at_the_same_step(checkpoint: Path, tmp_path: Path, cfg: int, ulysses: int) -> None:
    run_split(checkpoint, cfg, ulysses, tmp_path / "cancel", mode="cancel")  # returns: no rank hung in a collective
    results = [torch.load(f"{tmp_path / 'cancel'}.{rank}", weights_only=False) for rank in range(cfg * ulysses)]
    assert [result["raised"] for result in results] == ["EditCancelled"] * len(results)
    steps = results[0]["steps"]
    assert steps[:2] == [1, 2] and len(steps) < 6  # stopped soon after the cancel (step 2 or 3: the token is async)
    assert all(result["steps"] == steps for result in results)  # every rank at the same step


def test_shards_are_contiguous_and_differ_by_at_most_one_token() -> None:
    assert shard_sizes(17_550, 4) == [4388, 4388, 4387, 4387]
    assert shard_sizes(45, 2) == [23, 22] and shard_sizes(8, 4) == [2, 2, 2, 2]
    assert sum(shard_sizes(17_776, 8)) == 17_776


def test_layouts_are_checked() -> None:
    with pytest.raises(ValueError, match="cfg"):
        ParallelConfig(cfg=3)  # type: ignore[arg-type]
    assert ParallelConfig(cfg=2, ulysses=4).world_size == 8
    transformer = SimpleNamespace(config=SimpleNamespace(num_attention_heads=48))
    groups = ParallelGroups(ParallelConfig(ulysses=5), rank=0, cfg_group=None, sp_group=None)
    with pytest.raises(InvalidConfig, match="divide the transformer's 48 attention heads") as refused:
        parallelize_transformer(transformer, groups)
    assert refused.value.field == "generator.parallel.ulysses"
