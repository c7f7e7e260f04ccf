"""A pose metric for PosEdit: BlazePose keypoints of an edit against its ground truth.

The models are MediaPipe's BlazePose GHUM 3D detector and full landmark
model (.tflite, from the mediapipe 0.10.21 wheel, Apache-2.0), run with
LiteRT (`ai-edge-litert`). The pipeline is MediaPipe's pose graph for one
person, without its temporal smoothing and without the heatmap refinement:

1. detector: the image letterboxed to 224x224, RGB in [-1, 1]; 2254 SSD
   anchors (strides 8, 16, 32, 32, 32; two per cell per layer); scores
   sigmoid, box and 4 keypoints decoded against the anchors; weighted
   non-maximum suppression of the best person;
2. region of interest: centred on keypoint 0 (the hips' centre), rotated so
   that keypoint 1 (the body's scale point) lies straight above it, side
   2 x their distance, then squared and enlarged 1.25 times;
3. landmark model: that rotated square cropped to 256x256, RGB in [0, 1];
   39 landmarks (33 of the body), projected back into the image.

Metric, on the 13 body joints (nose, shoulders, elbows, wrists, hips, knees,
ankles), in the pixels of the protocol's square image:
`pose_error` = mean joint distance / the target's torso size (shoulders'
centre to hips' centre); `pose_pck` = share of joints closer than
`pck_threshold` x torso size; `pose_pck_moved` = the same share over the
joints the edit must move (off by the threshold or more in the source). No
person found in the edit: error None, PCK 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

JOINTS = (0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
_DETECTOR_SIZE, _LANDMARK_SIZE = 224, 256
_MIN_SCORE, _NMS_IOU = 0.5, 0.3


@dataclass(frozen=True)
class Roi:
    """A rotated rectangle in pixels: centre, side lengths, rotation (radians)."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float


def anchors() -> np.ndarray:
    """MediaPipe's SSD anchor centres for the 224x224 pose detector, [2254, 2] (x, y) in [0, 1]."""
    strides = (8, 16, 32, 32, 32)
    out = []
    layer = 0
    while layer < len(strides):
        same = sum(1 for s in strides[layer:] if s == strides[layer])  # layers of one stride share a grid
        size = math.ceil(_DETECTOR_SIZE / strides[layer])
        per_cell = 2 * same  # aspect ratio 1 plus its interpolated scale, per layer
        ys, xs = np.mgrid[0:size, 0:size]
        centres = np.stack([(xs + 0.5) / size, (ys + 0.5) / size], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
        layer += same
    return np.concatenate(out).astype(np.float32)


class PoseEstimator:
    def __init__(self, detector: Path, landmarks: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.detector = Interpreter(model_path=str(detector), num_threads=2)
        self.landmarker = Interpreter(model_path=str(landmarks), num_threads=2)
        self.detector.allocate_tensors()
        self.landmarker.allocate_tensors()
        self.anchors = anchors()

    def _run(self, interpreter, x: np.ndarray) -> dict[str, np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[None].astype(np.float32))
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"])[0] for d in interpreter.get_output_details()}

    def keypoints(self, image: Image.Image) -> np.ndarray | None:
        """33 body landmarks (x, y) in the image's pixels, [33, 2]; None when no person is found."""
        # 1. Detect the person
        detection = self.detect(image)
        if detection is None:
            return None
        # 2. The rotated region of interest
        roi = region_of_interest(detection)
        # 3. Landmarks in the region, projected back into the image
        crop = crop_rotated(image, roi, _LANDMARK_SIZE)
        out = self._run(self.landmarker, np.asarray(crop, dtype=np.float32) / 255.0)
        raw = out["Identity"].reshape(39, 5)[:33, :2] / _LANDMARK_SIZE  # normalised in the crop
        return project(raw, roi)

    def detect(self, image: Image.Image) -> np.ndarray | None:
        """The best person: its 4 keypoints (x, y) in the image's pixels, [4, 2]; None below the score threshold."""
        boxed, scale, pad = _letterbox(image, _DETECTOR_SIZE)
        out = self._run(self.detector, np.asarray(boxed, dtype=np.float32) / 127.5 - 1.0)
        raw, logits = out["Identity"], out["Identity_1"][:, 0]  # [2254, 12], [2254]
        scores = 1 / (1 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
        if scores.max() < _MIN_SCORE:
            return None
        a = self.anchors
        boxes = np.concatenate([raw[:, :2] / _DETECTOR_SIZE + a, raw[:, 2:4] / _DETECTOR_SIZE], 1)  # cx, cy, w, h
        points = raw[:, 4:12].reshape(-1, 4, 2) / _DETECTOR_SIZE + a[:, None, :]
        best = int(scores.argmax())
        group = (scores >= _MIN_SCORE) & (_iou(boxes[best], boxes) > _NMS_IOU)  # weighted NMS of the best cluster
        weights = scores[group] / scores[group].sum()
        keypoints = (points[group] * weights[:, None, None]).sum(0)  # [4, 2], letterboxed [0, 1]
        return (keypoints * _DETECTOR_SIZE - pad) / scale


def _letterbox(image: Image.Image, size: int) -> tuple[Image.Image, float, np.ndarray]:
    scale = size / max(image.size)
    w, h = round(image.width * scale), round(image.height * scale)
    canvas = Image.new("RGB", (size, size))
    pad = np.array([(size - w) // 2, (size - h) // 2], dtype=np.float32)
    canvas.paste(image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), (int(pad[0]), int(pad[1])))
    return canvas, scale, pad


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2] - box[2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
    hi = np.minimum(box[:2] + box[2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    inter = np.clip(hi - lo, 0, None).prod(1)
    return inter / (box[2:].prod() + boxes[:, 2:].prod(1) - inter + 1e-9)


def region_of_interest(keypoints: np.ndarray) -> Roi:
    """MediaPipe's alignment rect (keypoint 0 centre, keypoint 1 up, side 2 x distance), squared and scaled 1.25."""
    (x0, y0), (x1, y1) = keypoints[0], keypoints[1]
    side = 2 * math.hypot(x1 - x0, y1 - y0) * 1.25
    rotation = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
    rotation = rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))  # into [-pi, pi)
    return Roi(float(x0), float(y0), side, side, rotation)


def _roi_matrix(roi: Roi) -> np.ndarray:
    """2x3 affine map from crop coordinates normalised to [0, 1] to image pixels."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    rs = np.array([[c * roi.width, -s * roi.height], [s * roi.width, c * roi.height]])
    return np.concatenate([rs, (np.array([roi.cx, roi.cy]) - rs @ [0.5, 0.5])[:, None]], 1)


def crop_rotated(image: Image.Image, roi: Roi, size: int) -> Image.Image:
    m = _roi_matrix(roi) @ np.diag([1 / size, 1 / size, 1.0])  # output pixel -> image pixel
    coefficients = (*m[0], *m[1])
    return image.convert("RGB").transform((size, size), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)


def project(normalised: np.ndarray, roi: Roi) -> np.ndarray:
    """Points normalised in the crop, [N, 2], to image pixels."""
    m = _roi_matrix(roi)
    return normalised @ m[:, :2].T + m[:, 2]


def compare_keypoints(
    edit: np.ndarray | None, target: np.ndarray, pck_threshold: float, source: np.ndarray | None = None
) -> dict[str, float | None]:
    """`pose_error` (mean joint distance / target torso size) and `pose_pck` of the edit against the target.

    With the source's keypoints also `pose_pck_moved`: PCK over the joints the edit has to move (those the
    source has off the target by `pck_threshold` or more); None when there are none. The source scores 0
    on it and the ground truth 1, by construction.
    """
    joints = list(JOINTS)
    torso = max(float(np.linalg.norm(target[[11, 12]].mean(0) - target[[23, 24]].mean(0))), 1e-6)
    moved = None if source is None else np.linalg.norm(source[joints] - target[joints], axis=1) / torso >= pck_threshold
    if edit is None:
        out: dict[str, float | None] = {"pose_error": None, "pose_pck": 0.0}
        correct = np.zeros(len(joints), bool)
    else:
        distances = np.linalg.norm(edit[joints] - target[joints], axis=1) / torso
        correct = distances < pck_threshold
        out = {"pose_error": float(distances.mean()), "pose_pck": float(correct.mean())}
    if moved is not None:
        out["pose_pck_moved"] = float(correct[moved].mean()) if moved.any() else None
    return out


class PoseMetric:
    """Keypoints per image (cached by identity) and their comparison."""

    def __init__(self, estimator: PoseEstimator) -> None:
        self.estimator = estimator
        self._cache: dict[int, tuple[Image.Image, np.ndarray | None]] = {}

    def keypoints(self, image: Image.Image) -> np.ndarray | None:
        if id(image) not in self._cache:
            self._cache[id(image)] = (image, self.estimator.keypoints(image))
        return self._cache[id(image)][1]

    def compare(
        self, edit: Image.Image, target: Image.Image, pck_threshold: float, source: Image.Image | None = None
    ) -> dict[str, float | None]:
        reference = self.keypoints(target)
        if reference is None:
            return {"pose_error": None, "pose_pck": None}  # no person in the ground truth: nothing to compare with
        start = None if source is None else self.keypoints(source)
        return compare_keypoints(self.keypoints(edit), reference, pck_threshold, start)

    def forget(self) -> None:
        self._cache.clear()
