"""CFG-parallel and Ulysses sequence parallelism (f2f.backends.video.parallel) against the one-process result.

Real processes: 2 or 4 ranks of `parallel_worker.py` on gloo over loopback,
each loading the same tiny pipeline (4 heads, 2 layers; 45 video tokens, so
the token shards are uneven).

How close is close enough: a split run does the one-process arithmetic per
head and per token, summed in another order (other GEMM blockings for half a
batch, other all-to-all layouts), and another machine's kernels (AVX-512 or
AVX2, another BLAS blocking) reorder the sums again. No fixed number bounds
that on every CPU: 1e-5 held on AMD EPYC and failed on Intel Xeon (1.01e-5).
So the bound comes from the run itself: the same pipeline in float64, from
the same noise, is the exact result to float32 precision, and the one-process
float32 frames' distance from it (`rounding`, about 7e-6 here) is what float32
rounding does at these sizes on this machine. A split run summed in another
order is as accurate: within 2 x `rounding` of the float64 frames (observed:
at most 1.08 x, over every layout, with the ranks on the default kernels and
on AVX2 against a one-process run on AVX-512). The `-avx2` cases run the
ranks on the other code path torch picks between (ATEN_CPU_CAPABILITY=avx2).
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

from f2f.backends.tiny.tiny_cogvideox import make_tiny_cogvideox  # noqa: E402
from f2f.backends.video.i2v import DiffusersVideoGenerator  # noqa: E402
from f2f.backends.video.parallel import ParallelGroups, parallelize_transformer, shard_sizes  # noqa: E402
from f2f.config import ParallelConfig  # noqa: E402
from f2f.errors import InvalidConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from harness_ports import free_port  # noqa: E402
from parallel_case import CAPTION, HEADS, HEIGHT, SETTINGS, WIDTH, case_image, run_case  # noqa: E402

pytestmark = pytest.mark.models

WORKER = Path(__file__).with_name("parallel_worker.py")
ACCURACY = 2.0  # a split run's error against float64, in units of the one-process run's own float32 error
PER_RANK_MODES = ("cancel", "generator")  # the worker saves each rank's results to `<out>.<rank>`
VIDEO_TOKENS = 3 * (HEIGHT // 16) * (WIDTH // 16)  # 9 frames -> 3 latent frames of 3 x 5 patches: 45


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-4-heads"
    return make_tiny_cogvideox(folder, seed=1, height=HEIGHT, width=WIDTH, heads=HEADS, layers=2)


@pytest.fixture(scope="module")
def single(checkpoint: Path) -> np.ndarray:
    return run_case(CogVideoXImageToVideoPipeline.from_pretrained(checkpoint))


def exact(checkpoint: Path, guidance: float = 6.0) -> np.ndarray:
    """The one-process frames computed in float64 from the same noise (drawn in float32, then widened)."""
    import diffusers.models.autoencoders.vae as vae_module
    import diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video as pipeline_module
    from diffusers.utils.torch_utils import randn_tensor

    def same_noise(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, layout: Any = None) -> Any:
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32, layout=layout).to(dtype)

    with pytest.MonkeyPatch.context() as patch:  # the image latents' sample and the initial noise
        patch.setattr(vae_module, "randn_tensor", same_noise)
        patch.setattr(pipeline_module, "randn_tensor", same_noise)
        pipe = CogVideoXImageToVideoPipeline.from_pretrained(checkpoint, dtype=torch.float64)
        return run_case(pipe, guidance).astype(np.float64)


@pytest.fixture(scope="module")
def reference(checkpoint: Path, single: np.ndarray) -> tuple[np.ndarray, float]:
    """The float64 frames, and how far float32 rounding moves the one-process frames from them."""
    frames = exact(checkpoint)
    rounding = float(np.abs(single - frames).max())
    assert 0 < rounding < 1e-3  # the same computation: float32 rounding only, far below a uint8 level (3.9e-3)
    return frames, rounding


def run_split(
    checkpoint: Path, cfg: int, ulysses: int, out: Path, mode: str = "pipeline", kernels: str | None = None
) -> dict[str, Any]:
    """Start the ranks (on the CPU code path `kernels`, else torch's choice), wait; rank 0's results (or {}: per rank)."""
    world, port = cfg * ulysses, free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world)}
    if kernels is not None:
        env["ATEN_CPU_CAPABILITY"] = kernels
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
    return {} if mode in PER_RANK_MODES else torch.load(out, weights_only=False)


@pytest.mark.parametrize(
    ("cfg", "ulysses", "kernels"),
    [(1, 2, None), (2, 1, None), (2, 2, None), (1, 4, None), (2, 1, "avx2"), (2, 2, "avx2")],
    ids=["ulysses2", "cfg2", "cfg2xulysses2", "ulysses4", "cfg2-avx2", "cfg2xulysses2-avx2"],
)
def test_a_split_run_is_as_exact_as_one_process(
    checkpoint: Path,
    single: np.ndarray,
    reference: tuple[np.ndarray, float],
    tmp_path: Path,
    cfg: int,
    ulysses: int,
    kernels: str | None,
) -> None:
    saved = run_split(checkpoint, cfg, ulysses, tmp_path / "frames.pt", kernels=kernels)
    assert saved["seen"] == [(2 // cfg, shard_sizes(VIDEO_TOKENS, ulysses)[0])]  # rank 0 really did its part only
    split, (frames, rounding) = saved["frames"], reference
    assert split.shape == single.shape == (9, HEIGHT, WIDTH, 3)
    assert np.abs(split - frames).max() <= ACCURACY * rounding
    assert np.abs(single - single[0]).max() > 0.01  # the frames differ from each other: a real video, not a constant


def test_compiled_split_blocks_trace_whole_and_as_often_as_in_one_process(
    checkpoint: Path, reference: tuple[np.ndarray, float], tmp_path: Path
) -> None:
    # The tokens are split once, at the patch embedding: a compiled block sees only local shapes and no hook of the
    # split, and its all-to-alls trace into the graph (fullgraph=True: a graph break would fail the run). One process
    # makes two graphs too: block 0's input is a strided view of the patch embedding's output, the others' are not.
    one = run_split(checkpoint, 1, 1, tmp_path / "one.pt", mode="compiled")
    split = run_split(checkpoint, 2, 2, tmp_path / "split.pt", mode="compiled")
    assert split["graph_breaks"] == one["graph_breaks"] == 0
    assert split["graphs"] == one["graphs"]  # no recompile of the split's own
    frames, rounding = reference
    assert np.abs(split["frames"] - frames).max() <= ACCURACY * rounding


def test_only_rank_0_encodes_the_prompt_and_the_image_and_decodes_the_video(checkpoint: Path, tmp_path: Path) -> None:
    import asyncio

    one = asyncio.run(DiffusersVideoGenerator(checkpoint, device="cpu").generate(case_image(), CAPTION, [3], SETTINGS))
    expected = np.stack([np.asarray(frame) for frame in one[0]]).astype(int)
    run_split(checkpoint, 1, 2, tmp_path / "generator", mode="generator")
    rank0, rank1 = (torch.load(f"{tmp_path / 'generator'}.{rank}", weights_only=False) for rank in range(2))
    # T5 runs for the caption and for guidance's empty negative prompt; the VAE encodes one image, decodes one video
    assert (rank0["text_encoder"], rank0["t5"], rank0["vae_encoder"], rank0["vae_decoder"]) == (True, 2, 1, 1)
    assert (rank1["text_encoder"], rank1["t5"], rank1["vae_encoder"], rank1["vae_decoder"]) == (False, 0, 0, 0)
    assert len(rank0["clips"]) == 1 and rank1["clips"] == []
    # float rounding (within 2e-5 of the one-process floats, above) can move a frame's uint8 value by one level at most
    assert np.abs(rank0["clips"][0].astype(int) - expected).max() <= 1


def test_without_guidance_a_cfg_split_runs_the_whole_batch_on_both_halves(checkpoint: Path, tmp_path: Path) -> None:
    single = run_case(CogVideoXImageToVideoPipeline.from_pretrained(checkpoint), guidance=1.0)
    frames = exact(checkpoint, guidance=1.0)
    saved = run_split(checkpoint, 2, 1, tmp_path / "frames.pt", mode="pipeline-no-guidance")
    assert saved["seen"] == [(1, VIDEO_TOKENS)]  # a batch of one cannot be halved
    assert np.abs(saved["frames"] - frames).max() <= ACCURACY * np.abs(single - frames).max()


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
