"""Camera-drift compensation (`f2f.align`) measured: the paper's own PosEdit outputs, and known synthetic motions.

    python bench/align.py [--posedit ../shared/data/posedit] [--mode auto] [--synthetic 60]

(a) PosEdit: each of the paper's Frame2Frame outputs (edits/NAME.*, 480x480) is resized to its source's size
(400x400, LANCZOS) and aligned to the source under `--mode` (default: the config's default, auto). Before and
after, as means over the items: the mean absolute error (MAE, grey levels 0..255) and PSNR (dB) of the whole image
against the source and against the ground-truth target; the same against the source on the unchanged region
(PosEdit ships no mask: the pixels where the source and the target differ by less than 12 grey levels after a 9x9
box blur, the background a pose edit does not touch); LPIPS against source and target with `f2f eval`'s protocol
(512x512 bicubic, its installed AlexNet weights), when they are installed. Then how many were applied, why the
others were not, and the distribution of the motions found.

(b) Synthetic: `--synthetic N` textured 320x240 scenes (tests/scenes.py, seeds 0..N-1) moved by a random shift (up
to 8% of each side), zoom (0.9..1.1) and rotation (-6..6 degrees), every other one with an edited blob over 16% of
the image: how many were applied and the recovered motion's error, median and max.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic scenes the unit tests use

from scenes import camera_matrix, moved, textured, with_blob  # noqa: E402

from f2f.align import Alignment, align, decompose  # noqa: E402
from f2f.config import AlignConfig  # noqa: E402
from f2f.eval.dataset import load_dataset  # noqa: E402

UNCHANGED_LEVELS = 12
UNCHANGED_BLUR_PX = 9


def mae(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float((diff if region is None else diff[region]).mean())


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float((diff if region is None else diff[region]).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def unchanged_region(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[H, W] bool: where the ground truth leaves the source alone (blurred grey difference < UNCHANGED_LEVELS)."""
    diff = np.abs(source.astype(np.int16) - target.astype(np.int16)).mean(axis=2).astype(np.float32)
    return cv2.blur(diff, (UNCHANGED_BLUR_PX, UNCHANGED_BLUR_PX)) < UNCHANGED_LEVELS


class Lpips:
    """LPIPS with f2f eval's protocol and installed weights; `None` from `load` when they are not installed."""

    def __init__(self, model, protocol) -> None:
        self.model, self.protocol = model, protocol

    @classmethod
    def load(cls) -> Lpips | None:
        try:
            from f2f.eval.inputs import EvalProtocol
            from f2f.eval.lpips import load_lpips
            from f2f.eval.weights import default_folder, weights_file

            weights = weights_file(default_folder(Path.home() / ".cache" / "f2f"), "lpips_alex")
            return cls(load_lpips(weights), EvalProtocol())
        except Exception as exc:  # missing extra or weights: the table says so
            print(f"LPIPS not measured: {exc}", file=sys.stderr)
            return None

    def __call__(self, a: Image.Image, b: Image.Image) -> float:
        import torch

        from f2f.eval.inputs import lpips_array, prepare

        x0, x1 = (torch.from_numpy(lpips_array(prepare(im, self.protocol), self.protocol))[None] for im in (a, b))
        with torch.no_grad():
            return float(self.model(x0, x1)[0])


def posedit(folder: Path, config: AlignConfig, lpips: Lpips | None) -> tuple[dict[str, list[float]], list[Alignment], float]:
    """Per-item metrics before and after, the alignment records, and the median seconds per alignment."""
    rows: dict[str, list[float]] = {}
    records, seconds = [], []
    for item in load_dataset(folder, folder / "edits").items:
        if item.edit is None or item.target is None:
            continue
        source, target = (Image.open(p).convert("RGB") for p in (item.source, item.target))
        edit = Image.open(item.edit).convert("RGB").resize(source.size, Image.Resampling.LANCZOS)
        started = time.perf_counter()
        aligned, record = align(edit, source, config)
        seconds.append(time.perf_counter() - started)
        records.append(record)
        s, t = np.asarray(source), np.asarray(target)
        region = unchanged_region(s, t)
        for when, image in (("before", edit), ("after", aligned)):
            e = np.asarray(image)
            values = {
                "MAE to source": mae(e, s),
                "MAE to target": mae(e, t),
                "MAE to source, unchanged region": mae(e, s, region),
                "PSNR to source (dB)": psnr(e, s),
                "PSNR to target (dB)": psnr(e, t),
                "PSNR to source, unchanged region (dB)": psnr(e, s, region),
            }
            if lpips is not None:
                values |= {"LPIPS to source": lpips(image, source), "LPIPS to target": lpips(image, target)}
            for name, value in values.items():
                rows.setdefault(f"{name}|{when}", []).append(value)
    return rows, records, statistics.median(seconds)


def posedit_tables(rows: dict[str, list[float]], records: list[Alignment], seconds: float, mode: str) -> str:
    applied = [r.applied for r in records]
    names = list(dict.fromkeys(key.split("|")[0] for key in rows))
    lines = [
        f"PosEdit, the paper's own outputs, {len(records)} items, mode {mode}: {sum(applied)} applied "
        f"(median {seconds * 1000:.0f} ms per alignment)",
        "",
        "| metric (mean over items) | before | after | after, applied items only: before -> after |",
        "|---|---|---|---|",
    ]
    for name in names:
        before, after = rows[f"{name}|before"], rows[f"{name}|after"]
        picked = [(b, a) for b, a, used in zip(before, after, applied, strict=True) if used]
        only = f"{np.mean([b for b, _ in picked]):.3f} -> {np.mean([a for _, a in picked]):.3f}" if picked else "-"
        lines.append(f"| {name} | {np.mean(before):.3f} | {np.mean(after):.3f} | {only} |")
    reasons = Counter(r.reason or "applied" for r in records)
    lines += ["", "| outcome | items |", "|---|---|", *(f"| {k} | {v} |" for k, v in reasons.most_common())]
    lines += ["", motion_table([r for r in records if r.matrix is not None], "motions found (any outcome)")]
    lines += ["", motion_table([r for r in records if r.applied], "motions applied")]
    return "\n".join(lines)


def motion_table(records: list[Alignment], title: str) -> str:
    if not records:
        return f"{title}: none"
    shift = [float(np.hypot(*r.shift_px)) for r in records]
    zoom = [abs(r.scale - 1) * 100 for r in records]
    turn = [abs(r.rotation_deg) for r in records]
    lines = [f"{title}: {len(records)}", "", "| motion | median | 90th percentile | max |", "|---|---|---|---|"]
    for name, values in (("shift of the centre (px)", shift), ("zoom, abs(scale - 1) (%)", zoom), ("rotation (deg)", turn)):
        lines.append(f"| {name} | {np.median(values):.2f} | {np.percentile(values, 90):.2f} | {max(values):.2f} |")
    return "\n".join(lines)


def synthetic(n: int, config: AlignConfig) -> str:
    rng = np.random.default_rng(0)
    errors: dict[str, list[float]] = {"shift (px)": [], "scale (%)": [], "rotation (deg)": []}
    applied = 0
    for seed in range(n):
        scene = textured(seed)
        shift = (float(rng.uniform(-0.08, 0.08) * scene.width), float(rng.uniform(-0.08, 0.08) * scene.height))
        scale, rotation = float(rng.uniform(0.9, 1.1)), float(rng.uniform(-6, 6))
        edit = moved(scene, shift, scale, rotation)
        if seed % 2:
            edit = with_blob(edit, (100, 60, 220, 160), seed=n + seed)
        record = align(edit, scene, config).alignment
        applied += record.applied
        if record.matrix is None:
            continue
        (dx, dy), true_scale, true_rotation = decompose(camera_matrix(scene.size, shift, scale, rotation), *scene.size)
        errors["shift (px)"].append(float(np.hypot(record.shift_px[0] - dx, record.shift_px[1] - dy)))
        errors["scale (%)"].append(abs(record.scale / true_scale - 1) * 100)
        errors["rotation (deg)"].append(abs(record.rotation_deg - true_rotation))
    lines = [
        f"Synthetic: {n} textured 320x240 scenes, shifts up to 8%, zooms 0.9..1.1, rotations -6..6 deg, every other one "
        f"with an edited blob (16% of the image): {applied} applied, {len(errors['shift (px)'])} estimated",
        "",
        "| recovered motion's error | median | max |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {np.median(v):.3f} | {max(v):.3f} |" for name, v in errors.items() if v]
    return "\n".join(lines)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
    cpu = models[0] if models else platform.machine()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, OpenCV {cv2.__version__}, {date}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posedit", type=Path, default=ROOT.parent / "shared" / "data" / "posedit")
    parser.add_argument("--mode", choices=["auto", "always"], default=AlignConfig().mode)
    parser.add_argument("--synthetic", type=int, default=60)
    args = parser.parse_args()
    config = AlignConfig(mode=args.mode)
    print(f"machine: {machine()}\n")
    rows, records, seconds = posedit(args.posedit, config, Lpips.load())
    print(posedit_tables(rows, records, seconds, args.mode) + "\n")
    print(synthetic(args.synthetic, config))


if __name__ == "__main__":
    main()
