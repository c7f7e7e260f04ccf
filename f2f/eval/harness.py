"""Evaluate a dataset of edits: per item and in aggregate.

Per item, for the edit E, the source S and the ground truth T (when there is one):

- `source_lpips` LPIPS(E, S), fidelity to the source (lower is better);
- `target_lpips` LPIPS(E, T), distance to the ground truth;
- `clip_i_source`, `clip_i_target`: CLIP image-image cosine similarity; `clip_text`:
  CLIPScore, 2.5 x max(cosine, 0), of E and the item's text (only when CLIP is staged);
- `pose_error`, `pose_pck`, `pose_pck_moved`: BlazePose keypoints of E against T
  (f2f.eval.pose), with `pose_error_source`, `pose_pck_source` (S against T) as the baseline;
- `path`: when frames along the edit's path were kept, the same metrics frame by frame.

An item whose edit is missing, unreadable or of another aspect ratio than
its source is listed with its problem and left out; the rest is evaluated.
Images are prepared by the protocol (f2f.eval.inputs) before any metric.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from f2f.config import InputConfig
from f2f.errors import F2FError, InvalidInput
from f2f.eval.dataset import Dataset, Item
from f2f.eval.inputs import EvalProtocol, aspect_mismatch, lpips_array, prepare

METRICS = ("lpips", "pose", "clip")
COLUMNS = (
    "source_lpips",
    "target_lpips",
    "clip_i_source",
    "clip_i_target",
    "clip_text",
    "pose_error",
    "pose_pck",
    "pose_pck_moved",
    "pose_error_source",
    "pose_pck_source",
)


@dataclass
class Evaluation:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per item: id, metrics, problems
    clip: str = "not staged"  # the CLIP model used, or why none

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"items": len(self.rows), "evaluated": sum(1 for r in self.rows if r["evaluated"])}
        for column in COLUMNS:
            values = [r[column] for r in self.rows if r.get(column) is not None]
            out[column] = round(statistics.fmean(values), 4) if values else None
            out[f"{column}_n"] = len(values)
        out["problems"] = sum(len(r["problems"]) for r in self.rows)
        return out


class Scorer:
    """The loaded metric models; each one `None` when not asked for."""

    def __init__(self, protocol: EvalProtocol, weights: Path, metrics: tuple[str, ...], clip_dir: Path | None) -> None:
        from f2f.eval.weights import weights_file

        self.protocol = protocol
        self._embedded: dict[int, tuple[Image.Image, list]] = {}
        self.lpips = self.pose = self.clip = None
        self.clip_status = "not asked for" if "clip" not in metrics else "not staged"
        if "lpips" in metrics:
            import torch

            from f2f.eval.lpips import load_lpips

            self.lpips = load_lpips(weights_file(weights, "lpips_alex")).to(memory_format=torch.channels_last)
            self._torch = torch
        if "pose" in metrics:
            from f2f.eval.pose import PoseEstimator, PoseMetric

            estimator = PoseEstimator(weights_file(weights, "pose_detector"), weights_file(weights, "pose_landmarks"))
            self.pose = PoseMetric(estimator)
        if "clip" in metrics and clip_dir is not None:
            from f2f.eval.clip import ClipScorer

            self.clip = ClipScorer(clip_dir)
            self.clip_status = self.clip.name

    def embed_lpips(self, image: Image.Image):
        if (key := id(image)) not in self._embedded:  # an item's images are embedded once (its prepared images live on)
            x = self._torch.from_numpy(lpips_array(image, self.protocol))[None]
            with self._torch.no_grad():
                self._embedded[key] = (image, self.lpips.embed(x.contiguous(memory_format=self._torch.channels_last)))
        return self._embedded[key][1]

    def forget(self) -> None:
        """Drop what was computed for the item just scored (an LPIPS embedding is about 10 MB at 512x512)."""
        self._embedded.clear()
        for metric in (self.pose, self.clip):
            if metric is not None:
                metric.forget()

    def lpips_distance(self, a, b) -> float:
        with self._torch.no_grad():
            return float(self.lpips.distance(a, b)[0])


def evaluate(dataset: Dataset, scorer: Scorer, progress=None) -> Evaluation:
    evaluation = Evaluation(clip=scorer.clip_status)
    for n, item in enumerate(dataset.items, 1):
        evaluation.rows.append(_evaluate_item(item, scorer))
        scorer.forget()
        if progress:
            progress(n, len(dataset.items))
    return evaluation


def _open(path: Path, what: str) -> Image.Image:
    from f2f.imageio import open_image

    return open_image(path, InputConfig(), field=what)


def _evaluate_item(item: Item, scorer: Scorer) -> dict[str, Any]:
    row: dict[str, Any] = {"id": item.id, "text": item.text, "evaluated": False, "problems": list(item.problems)}
    if item.source is None or item.edit is None:
        return row
    # 1. Read the images; a bad one is this row's problem, not the run's
    images: dict[str, Image.Image] = {}
    for role, path in (("source", item.source), ("edit", item.edit), ("target", item.target)):
        if path is None:
            continue
        try:
            images[role] = _open(path, role)
        except InvalidInput as exc:
            row["problems"].append(f"unreadable {role}: {exc}")
            if role == "target":
                continue
            return row
    # 2. Sizes: only the aspect ratio must agree (the paper's edits are 480x480 for 400x400 sources)
    for role in ("edit", "target"):
        if role in images and aspect_mismatch(images[role].size, images["source"].size):
            w, h = images[role].size
            sw, sh = images["source"].size
            row["problems"].append(f"size mismatch: {role} is {w}x{h}, source {sw}x{sh} (aspect ratios must agree)")
            if role == "edit":
                return row
            del images["target"]
    prepared = {role: prepare(image, scorer.protocol) for role, image in images.items()}
    if item.target is not None and "target" in prepared and item.target.resolve() == item.edit.resolve():
        prepared["target"] = prepared["edit"]  # the ground truth evaluated as an edit: one embedding
    row.update(_scores(prepared["edit"], prepared["source"], prepared.get("target"), item.text, scorer, baseline=True))
    row["evaluated"] = True
    # 3. Along the path, frame by frame
    if item.frames or item.video is not None:
        row["path"] = _path(item, prepared, scorer)
    return row


def _scores(edit: Image.Image, source: Image.Image, target: Image.Image | None, text: str | None, scorer: Scorer, baseline: bool):
    out: dict[str, Any] = {}
    if scorer.lpips is not None:
        e, s = scorer.embed_lpips(edit), scorer.embed_lpips(source)
        out["source_lpips"] = scorer.lpips_distance(e, s)
        if target is not None:
            out["target_lpips"] = scorer.lpips_distance(e, scorer.embed_lpips(target))
    if scorer.clip is not None:
        out.update(scorer.clip.scores(edit, source, target, text))
    if scorer.pose is not None and target is not None:
        out.update(scorer.pose.compare(edit, target, scorer.protocol.pck_threshold, source))
        if baseline:
            base = scorer.pose.compare(source, target, scorer.protocol.pck_threshold)
            out.update({f"{k}_source": v for k, v in base.items()})
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def _path(item: Item, prepared: dict[str, Image.Image], scorer: Scorer) -> list[dict[str, Any]]:
    steps = [{"frame": 0, **_scores(prepared["source"], prepared["source"], prepared.get("target"), item.text, scorer, False)}]
    for index, frame in _path_frames(item):
        if isinstance(frame, str):
            steps.append({"frame": index, "problem": frame})
            continue
        image = prepare(frame, scorer.protocol)
        steps.append({"frame": index, **_scores(image, prepared["source"], prepared.get("target"), item.text, scorer, False)})
    return steps


def _path_frames(item: Item):
    """(frame index, image or the problem reading it), in frame order."""
    if item.video is not None:
        from f2f.eval.frames import video_frames

        try:
            yield from sorted(video_frames(item.video, item.video.parent / "result.json").items())
        except F2FError as exc:
            yield None, f"frames of {item.video}: {exc}"
        return
    for index, path in sorted(item.frames.items()):
        try:
            yield index, _open(path, "frame")
        except InvalidInput as exc:
            yield index, str(exc)
