"""LPIPS (Zhang et al., CVPR 2018), version 0.1 with the AlexNet backbone, in plain PyTorch.

The definition, for images x0, x1 in [-1, 1]:

1. scale each: (x - shift) / scale, with the LPIPS ScalingLayer constants;
2. AlexNet's five convolutions; keep each ReLU output (64, 192, 384, 256, 256 channels);
3. per layer, unit-normalise each position's channel vector, take the squared difference;
4. weight the channels with the layer's 1x1 linear weights (non-negative, no bias), sum them;
5. average over the positions; sum over the five layers.

torchvision is not used (its AlexNet is these five convolutions and three
max-pools). Weights: `f2f.eval.weights` (`lpips_alex`). Needs torch and
safetensors (`pip install 'f2f[eval]'`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
# (in, out, kernel, stride, padding, max-pool before this conv)
_CONVS = (
    (3, 64, 11, 4, 2, False),
    (64, 192, 5, 1, 2, True),
    (192, 384, 3, 1, 1, True),
    (384, 256, 3, 1, 1, False),
    (256, 256, 3, 1, 1, False),
)


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for i, o, k, s, p, _ in _CONVS)
        self.lin = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of AlexNet for x in [-1, 1], [B, 3, H, W]."""
        x = (x - self.shift) / self.scale
        out = []
        for conv, (*_, pool) in zip(self.features, _CONVS, strict=True):
            if pool:
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            out.append(x)
        return out

    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Steps 1-3 for one side: the unit-normalised layers, reusable against many images."""
        return [_unit(f) for f in self.layers(x)]

    def distance(self, e0: list[torch.Tensor], e1: list[torch.Tensor]) -> torch.Tensor:
        """Steps 3-5 between two embeddings of the same size: [B]."""
        total = e0[0].new_zeros(e0[0].shape[0])
        for f0, f1, w in zip(e0, e1, self.lin, strict=True):
            h, w_ = f0.shape[-2:]
            total = total + torch.einsum("bchw,c->b", (f0 - f1).square(), w.view(-1)) / (h * w_)  # [B, C, h, w] -> [B]
        return total

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per pair, [B], for x0, x1 in [-1, 1], [B, 3, H, W] (H, W >= 32)."""
        return self.distance(self.embed(x0), self.embed(x1))


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + eps)


def load_lpips(weights: Path, device: str = "cpu") -> LPIPS:
    """The LPIPS network with the weights of the safetensors file `weights` (f2f.eval.weights layout)."""
    from safetensors.torch import load_file

    state = load_file(str(weights))
    model = LPIPS()
    own = {f"features.{i}.{kind}": model.features[i] for i in range(5) for kind in ("weight", "bias")}
    with torch.no_grad():
        for name, module in own.items():
            getattr(module, name.rsplit(".", 1)[1]).copy_(state[name])
        for i in range(5):
            model.lin[i].copy_(state[f"lin{i}.weight"])
    return model.eval().to(device).requires_grad_(False)
