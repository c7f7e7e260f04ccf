"""Synthetic test images: a procedural texture and known camera motions of it (tests only).

Drawn with OpenCV's integer rasterisers and warped with its fixed-point bilinear warp, so the pixels are the
same on any CPU; the fixed seeds make every image reproducible.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def textured(seed: int = 0, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Random circles, rectangles and lines over grey, plus mild noise; no pixel darker than 16 on any channel."""
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = np.full((height, width, 3), 128, np.uint8)
    for _ in range(width * height // 500):
        colour = tuple(int(c) for c in rng.integers(16, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.circle(canvas, (x, y), int(rng.integers(3, 30)), colour, -1)
        elif kind == 1:
            cv2.rectangle(canvas, (x, y), (x + int(rng.integers(5, 50)), y + int(rng.integers(5, 50))), colour, -1)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(canvas, (x, y), end, colour, int(rng.integers(1, 4)))
    noise = rng.integers(-6, 7, canvas.shape)
    return Image.fromarray(np.clip(canvas.astype(np.int16) + noise, 16, 255).astype(np.uint8))


def camera_matrix(size: tuple[int, int], shift: tuple[float, float], scale: float, rotation_deg: float) -> np.ndarray:
    """[2, 3]: source pixel -> where it lies in the moved image (the image centre moves by `shift`)."""
    centre = ((size[0] - 1) / 2, (size[1] - 1) / 2)
    matrix = cv2.getRotationMatrix2D(centre, -rotation_deg, scale)  # OpenCV's angle turns the other way in y-down pixels
    matrix[:, 2] += shift
    return matrix


def moved(image: Image.Image, shift: tuple[float, float] = (0, 0), scale: float = 1.0, rotation_deg: float = 0.0) -> Image.Image:
    """`image` as a camera that moved would see it (what the camera brought in is the image mirrored at its border)."""
    matrix = camera_matrix(image.size, shift, scale, rotation_deg)
    pixels = cv2.warpAffine(np.asarray(image), matrix, image.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return Image.fromarray(pixels)


def with_blob(image: Image.Image, box: tuple[int, int, int, int], seed: int = 1) -> Image.Image:
    """`image` with an edited region: `box` filled with another texture."""
    edited = image.copy()
    patch = textured(seed, (box[2] - box[0], box[3] - box[1]))
    edited.paste(patch, box[:2])
    return edited
