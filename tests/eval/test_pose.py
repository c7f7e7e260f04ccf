"""The pose metric on BlazePose's real .tflite weights (mediapipe 0.10.21 wheel), on real PosEdit images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ai_edge_litert")

from f2f.eval.pose import PoseEstimator, PoseMetric, anchors, compare_keypoints
from f2f.eval.weights import weights_file


@pytest.fixture(scope="module")
def metric(weights) -> PoseMetric:
    return PoseMetric(PoseEstimator(weights_file(weights, "pose_detector"), weights_file(weights, "pose_landmarks")))


def _open(path) -> Image.Image:
    return Image.open(path).convert("RGB").resize((512, 512), Image.Resampling.BICUBIC)


def test_the_anchors_are_mediapipes_grid():
    a = anchors()
    assert a.shape == (2254, 2)  # 28x28x2 + 14x14x2 + 7x7x6, the detector's output count
    assert a[0].tolist() == a[1].tolist() == pytest.approx([0.5 / 28, 0.5 / 28])
    assert a[-1].tolist() == pytest.approx([6.5 / 7, 6.5 / 7])


def test_the_landmarks_lie_on_the_person(metric, posedit):
    k = metric.keypoints(_open(posedit / "src_images" / "a27_s5.png"))
    assert k.shape == (33, 2)
    assert ((k >= 0) & (k <= 512)).all()
    nose, hips, ankles = k[0, 1], k[[23, 24], 1].mean(), k[[27, 28], 1].mean()
    assert nose < hips < ankles  # head above hips above feet, in image rows
    assert k[11, 0] > k[12, 0]  # the person faces the camera: their left shoulder is on the image's right


def test_the_target_against_itself_is_exact_and_two_poses_differ(metric, posedit):
    # separate decodes of the same file (the cache is by image object): the models are deterministic
    target, again = _open(posedit / "tgt_images" / "a27_s5.png"), _open(posedit / "tgt_images" / "a27_s5.png")
    assert metric.compare(again, target, 0.2) == {"pose_error": 0.0, "pose_pck": 1.0}
    source = _open(posedit / "src_images" / "a27_s5.png")  # arms down; the target raises them
    moved = metric.compare(source, target, 0.2)
    assert moved["pose_error"] > 0.2
    assert moved["pose_pck"] < 0.5
    # over the joints the edit must move: the source gets none of them, the target all
    assert metric.compare(source, target, 0.2, source)["pose_pck_moved"] == 0.0
    assert metric.compare(again, target, 0.2, source)["pose_pck_moved"] == 1.0


def test_an_image_without_a_person_scores_no_joint():
    blank = None  # what the estimator returns when the detector finds nobody
    target = np.random.default_rng(0).uniform(0, 512, (33, 2))
    assert compare_keypoints(blank, target, 0.2) == {"pose_error": None, "pose_pck": 0.0}


def test_the_detector_finds_nobody_in_a_flat_image(metric):
    assert metric.estimator.detect(Image.new("RGB", (512, 512), (128, 128, 128))) is None
