"""LPIPS v0.1 (AlexNet) in numpy, written from the paper's definition (Zhang et al., CVPR 2018, eq. 1), as the
independent reference the torch network is checked against. Slow; for small images only."""

from __future__ import annotations

import numpy as np

SHIFT = np.array([-0.030, -0.088, -0.188], dtype=np.float64)[:, None, None]
SCALE = np.array([0.458, 0.448, 0.450], dtype=np.float64)[:, None, None]
# AlexNet's features (Krizhevsky 2014, torchvision layout): (stride, padding, max-pool 3x3/2 before)
LAYERS = ((4, 2, False), (1, 2, True), (1, 1, True), (1, 1, False), (1, 1, False))


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation: x [C, H, W], w [O, C, k, k] -> [O, H', W']."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # [C, H', W', k, k]
    return np.einsum("chwij,ocij->ohw", windows, w, optimize=True) + b[:, None, None]


def max_pool(x: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(3, 4))


def features(x: np.ndarray, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    x = (x - SHIFT) / SCALE
    out = []
    for i, (stride, pad, pool) in enumerate(LAYERS):
        if pool:
            x = max_pool(x)
        x = np.maximum(conv(x, params[f"features.{i}.weight"], params[f"features.{i}.bias"], stride, pad), 0)
        out.append(x)
    return out


def lpips(x0: np.ndarray, x1: np.ndarray, params: dict[str, np.ndarray]) -> float:
    """d(x0, x1) = sum_l 1/(H_l W_l) sum_hw sum_c w_lc (yhat0_lchw - yhat1_lchw)^2, yhat: features unit-normalised over c.

    (The paper writes ||w_l * (yhat0 - yhat1)||^2; the released v0.1 weights are the w_lc of this form, which is
    what the LPIPS authors' code computes: a 1x1 convolution of the squared difference.)
    """
    total = 0.0
    params = {k: v.astype(np.float64) for k, v in params.items()}
    layers = zip(features(x0.astype(np.float64), params), features(x1.astype(np.float64), params), strict=True)
    for layer, (f0, f1) in enumerate(layers):
        n0 = f0 / (np.sqrt((f0**2).sum(0, keepdims=True)) + 1e-10)
        n1 = f1 / (np.sqrt((f1**2).sum(0, keepdims=True)) + 1e-10)
        w = params[f"lin{layer}.weight"].reshape(-1, 1, 1)
        total += float(((n0 - n1) ** 2 * w).sum(0).mean())
    return total
