"""Camera-drift compensation: estimate the global camera motion between an edit and its source, and undo it.

An image-to-video model often pans, zooms or turns the camera a little, so the
chosen frame lies shifted against the source. `align(edited, source, config)`
returns the edit warped back onto the source's geometry and a typed record of
what it found and did (`Alignment`). Rules, in order:

1. Both images have the same size (the caller resizes; the pipeline's frame
   already has the source's size); another size is an InvalidInput. They are
   read as RGB (`f2f.imageio.to_rgb`). mode `off`: nothing is estimated
   (reason "off").
2. With `keep` (a masked edit's kept region) features are looked for there only.
   An image with a side under MIN_SIDE_PX is "too small". Features (SIFT, at most MAX_KEYPOINTS) are
   found on grey copies whose longer side is at most `work_px` (INTER_AREA);
   fewer than MIN_KEYPOINTS in either (one colour, a blur, a flat gradient)
   is "featureless".
3. Descriptors are matched both ways (nearest neighbour, Lowe's ratio test);
   a similarity (shift, one scale, rotation: 4 degrees of freedom) is fitted
   with RANSAC (`cv2.estimateAffinePartial2D`, 3 work pixels of tolerance,
   then refined on the inliers). Matches inside an edited region disagree with
   the camera's motion and are outliers. Fewer than `min_inliers` inliers is
   "too few matches" (noise frames of random-weight models end here).
4. The motion is the matrix M that maps source pixel coordinates to where the
   same point lies in the edit (scale > 1: the edit is zoomed in). It is
   reported as `shift_px` (where the image centre moved, dx and dy in source
   pixels), `scale` and `rotation_deg` (counter-clockwise on screen is
   negative: image y points down). A shift of the centre over
   `max_shift_fraction` of the width or height, a scale outside
   [1/max_zoom, max_zoom] or a rotation over `max_rotation_deg` is "out of
   bounds" and is never applied, whatever the mode.
5. The warp: every output pixel x is the edit at M x (bilinear). What the warp
   uncovers (M x outside the edit) is filled from the edit itself by mirroring
   at its border (BORDER_REFLECT_101): never black, never invented colour.
6. The error is the mean absolute difference (grey levels 0..255, RGB, full
   resolution) to the source over the region that matches: discs around the
   RANSAC inliers (in source coordinates, radius 3% of the shorter side) that
   the warp covers. `error_before` is the edit's, `error_after` the warped
   edit's, on the same pixels. mode `auto` applies the warp only when the
   error drops by at least `min_error_drop` ("did not lower the error"
   otherwise); `always` applies it whenever 1-4 found a motion within bounds.

The pipeline (`f2f.result.edit_of`) skips a result that is the source
itself (reason "no frame chosen"). Not applied, the image returned is the edit itself, unchanged. Bad images
never raise: they give a record with `applied` false and the reason. Every
step is deterministic (OpenCV's RANSAC seeds its own generator), so the same
pair gives the same record on any run.

A source's features are found once and kept for the next frames aligned to it
(the result, its candidates, the ranked edits; the last SOURCE_FEATURES_KEPT
sources). OpenCV (`cv2`) is imported by the functions that use it: `import f2f` stays light.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
from PIL import Image

from f2f.errors import InvalidInput
from f2f.imageio import to_rgb

if TYPE_CHECKING:
    from f2f.config import AlignConfig, AlignMode

MIN_SIDE_PX = 32
MIN_KEYPOINTS = 8
MAX_KEYPOINTS = 2000
RATIO_TEST = 0.8
RANSAC_TOLERANCE_WORK_PX = 3.0
REGION_RADIUS_FRACTION = 0.03

Reason = Literal[
    "off", "no frame chosen", "too small", "featureless", "too few matches", "out of bounds", "did not lower the error"
]
Matrix = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class Alignment:
    """What `align` found and did. Motion fields are None when no motion was estimated; errors when not measured."""

    mode: AlignMode
    applied: bool
    reason: Reason | None  # why it was not applied; None when it was
    matrix: Matrix | None = None  # source pixel (x, y, 1) -> the same point in the edit
    shift_px: tuple[float, float] | None = None  # where the image centre moved (dx, dy), source pixels
    scale: float | None = None  # > 1: the edit is zoomed in
    rotation_deg: float | None = None
    inliers: int | None = None  # matches that agree on the motion
    error_before: float | None = None  # mean absolute error on the matching region, grey levels
    error_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON values, floats rounded for reading."""
        return {
            "mode": self.mode,
            "applied": self.applied,
            "reason": self.reason,
            "matrix": [[round(v, 6) for v in row] for row in self.matrix] if self.matrix else None,
            "shift_px": [round(v, 3) for v in self.shift_px] if self.shift_px else None,
            "scale": _rounded(self.scale, 5),
            "rotation_deg": _rounded(self.rotation_deg, 4),
            "inliers": self.inliers,
            "error_before": _rounded(self.error_before, 4),
            "error_after": _rounded(self.error_after, 4),
        }


class Aligned(NamedTuple):
    image: Image.Image  # the warped edit, or the edit itself when not applied
    alignment: Alignment


class _Motion(NamedTuple):
    matrix: np.ndarray  # [2, 3] float64, full-resolution source -> edit
    inliers: np.ndarray  # [N, 2] inlier positions in source pixels


def align(edited: Image.Image, source: Image.Image, config: AlignConfig, keep: Image.Image | None = None) -> Aligned:
    """`edited` warped back onto `source`'s geometry when the rules of this module allow; see the module docstring.

    `keep` ("L", the source's size): features are looked for only where it is set (a masked edit's kept region).
    """
    frame, reference = _rgb_pair(edited, source)
    if config.mode == "off":
        return Aligned(edited, Alignment(config.mode, False, "off"))
    found = _estimate(frame, reference, config, keep)
    if isinstance(found, str):
        return Aligned(edited, Alignment(config.mode, False, found))
    shift, scale, rotation = decompose(found.matrix, reference.shape[1], reference.shape[0])
    motion = {"matrix": _as_tuple(found.matrix), "shift_px": shift, "scale": scale, "rotation_deg": rotation}
    region = _matching_region(found, reference.shape[:2])
    before = _mae(frame, reference, region)
    if not _within_bounds(shift, scale, rotation, reference.shape, config):
        record = Alignment(config.mode, False, "out of bounds", inliers=len(found.inliers), error_before=before, **motion)
        return Aligned(edited, record)
    warped = warp(frame, found.matrix)
    after = _mae(warped, reference, region)
    applied = config.mode == "always" or after <= before - config.min_error_drop
    reason = None if applied else "did not lower the error"
    record = Alignment(config.mode, applied, reason, inliers=len(found.inliers), error_before=before, error_after=after, **motion)
    return Aligned(Image.fromarray(warped) if applied else edited, record)


def decompose(matrix: np.ndarray, width: int, height: int) -> tuple[tuple[float, float], float, float]:
    """(shift of the image centre (dx, dy), scale, rotation in degrees) of a similarity [[a, -b, tx], [b, a, ty]]."""
    a, b = float(matrix[0, 0]), float(matrix[1, 0])
    centre = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    dx, dy = matrix @ centre - centre[:2]
    return (float(dx), float(dy)), math.hypot(a, b), math.degrees(math.atan2(b, a))


def warp(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8: output pixel x is `frame` at matrix @ x (bilinear); outside, `frame` mirrored at its border."""
    import cv2

    height, width = frame.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(frame, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REFLECT_101)


def _rgb_pair(edited: Image.Image, source: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    for name, image in (("edited", edited), ("source", source)):
        if not isinstance(image, Image.Image):
            raise InvalidInput(name, type(image).__name__, "must be a PIL image")
    if edited.size != source.size:
        rule = f"must have the source's size {source.size[0]}x{source.size[1]} (resize it first)"
        raise InvalidInput("edited", f"{edited.size[0]}x{edited.size[1]}", rule)
    return np.asarray(to_rgb(edited, orient=False)), np.asarray(to_rgb(source, orient=False))


def _estimate(frame: np.ndarray, reference: np.ndarray, config: AlignConfig, keep: Image.Image | None) -> _Motion | str:
    """The camera's motion from `reference` (the source) to `frame`, or the reason there is none."""
    import cv2

    height, width = reference.shape[:2]
    if min(width, height) < MIN_SIDE_PX:
        return "too small"
    k = min(1.0, config.work_px / max(width, height))
    where = None if keep is None else _work_mask(keep, k)
    src_points, src_desc = _source_features(_grey(reference, k), where)
    dst_points, dst_desc = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS).detectAndCompute(_grey(frame, k), where)
    if min(len(src_points), len(dst_points)) < MIN_KEYPOINTS or src_desc is None or dst_desc is None:
        return "featureless"
    pairs = _mutual_matches(src_desc, dst_desc)
    if len(pairs) < config.min_inliers:
        return "too few matches"
    src = np.float32([src_points[i].pt for i, _ in pairs])
    dst = np.float32([dst_points[j].pt for _, j in pairs])
    matrix, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_TOLERANCE_WORK_PX, maxIters=4000, confidence=0.999
    )
    if matrix is None or int(mask.sum()) < config.min_inliers:
        return "too few matches"
    inliers = src[mask.ravel() == 1]
    return _Motion(_to_full_resolution(matrix, k), (inliers + 0.5) / k - 0.5)


_SOURCE_FEATURES: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()
_SOURCE_FEATURES_LOCK = threading.Lock()  # a worker replica aligns several jobs' frames at once
SOURCE_FEATURES_KEPT = 8  # sources whose features are kept: an edit aligns its result, candidates and ranked edits


def _source_features(grey: np.ndarray, where: np.ndarray | None) -> tuple[Any, Any]:
    """SIFT keypoints and descriptors of a source at the work scale; found once per source (and region)."""
    import cv2

    digest = hashlib.blake2b(grey.tobytes(), digest_size=16)
    digest.update(repr(grey.shape).encode() + (b"" if where is None else where.tobytes()))
    key = digest.digest()
    with _SOURCE_FEATURES_LOCK:
        found = _SOURCE_FEATURES.get(key)
        if found is not None:
            _SOURCE_FEATURES.move_to_end(key)
            return found
    found = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS).detectAndCompute(grey, where)
    with _SOURCE_FEATURES_LOCK:
        _SOURCE_FEATURES[key] = found
        while len(_SOURCE_FEATURES) > SOURCE_FEATURES_KEPT:
            _SOURCE_FEATURES.popitem(last=False)
    return found


def _work_mask(keep: Image.Image, k: float) -> np.ndarray:
    """`keep` at the work scale, as OpenCV's detection mask (nonzero: look here)."""
    size = (max(1, round(keep.width * k)), max(1, round(keep.height * k)))
    return np.asarray(keep.convert("L").resize(size, Image.Resampling.NEAREST), dtype=np.uint8)


def _grey(image: np.ndarray, k: float) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if k == 1.0:
        return grey
    size = (max(1, round(image.shape[1] * k)), max(1, round(image.shape[0] * k)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _mutual_matches(src_desc: np.ndarray, dst_desc: np.ndarray) -> list[tuple[int, int]]:
    """(source, edit) descriptor pairs that pass the ratio test and are each other's nearest neighbour."""
    import cv2

    matcher = cv2.BFMatcher(cv2.NORM_L2)
    forward = _ratio_matches(matcher.knnMatch(src_desc, dst_desc, k=2))
    backward = {(i, j) for j, i in _ratio_matches(matcher.knnMatch(dst_desc, src_desc, k=2))}
    return [pair for pair in forward if pair in backward]


def _ratio_matches(knn: Any) -> list[tuple[int, int]]:
    return [(m[0].queryIdx, m[0].trainIdx) for m in knn if len(m) == 2 and m[0].distance < RATIO_TEST * m[1].distance]


def _to_full_resolution(matrix: np.ndarray, k: float) -> np.ndarray:
    """A work-resolution motion in full-resolution pixels (INTER_AREA maps pixel centres: x_work = (x + 0.5) k - 0.5)."""
    to_work = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1]])
    full = np.linalg.inv(to_work) @ np.vstack([matrix, [0, 0, 1]]) @ to_work
    return full[:2]


def _matching_region(motion: _Motion, shape: tuple[int, int]) -> np.ndarray:
    """[H, W] bool: pixels within the region radius of an inlier whose warped position lies inside the edit."""
    import cv2

    height, width = shape
    radius = round(max(2.0, REGION_RADIUS_FRACTION * min(width, height)))
    region = np.zeros(shape, dtype=np.uint8)
    for x, y in motion.inliers:
        cv2.circle(region, (round(float(x)), round(float(y))), radius, 1, thickness=-1)
    ys, xs = np.nonzero(region)
    mapped_x, mapped_y = motion.matrix @ np.stack([xs, ys, np.ones_like(xs)])
    outside = (mapped_x < 0) | (mapped_x > width - 1) | (mapped_y < 0) | (mapped_y > height - 1)
    region[ys[outside], xs[outside]] = 0
    return region.astype(bool)


def _within_bounds(
    shift: tuple[float, float], scale: float, rotation: float, shape: tuple[int, ...], config: AlignConfig
) -> bool:
    limit = config.max_shift_fraction
    return (
        abs(shift[0]) <= limit * shape[1]
        and abs(shift[1]) <= limit * shape[0]
        and 1 / config.max_zoom <= scale <= config.max_zoom
        and abs(rotation) <= config.max_rotation_deg
    )


def _mae(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute difference of two [H, W, 3] uint8 images over `region`, in grey levels."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))[region]
    return float(diff.mean()) if diff.size else 0.0


def _as_tuple(matrix: np.ndarray) -> Matrix:
    (a, b, c), (d, e, f) = matrix.tolist()
    return (a, b, c), (d, e, f)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
