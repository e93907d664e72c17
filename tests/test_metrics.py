import math

import numpy as np
import pytest

from simgan import metrics as M
from simgan.metrics import (
    angular_error_deg,
    constant_prediction,
    equalized_pixel_features,
    error_cdf,
    gaze_summary,
    joint_depth_shift,
    knn_predict,
    mean_std,
    pck_at,
    pck_curve,
    pupil_centres,
    pupil_shift_px,
    realism_accuracy,
)
from simgan.sim.eyes import equalize_histograms


def test_angular_error_known_answers():
    a = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 1], [1, 1, 0], [1e-9, 0, 1]], float)
    b = np.array([[0, 1, 0], [0, 1, 0], [0, 0, -3], [1, 0, 0], [0, 0, 1]], float)
    e = angular_error_deg(a, b)
    np.testing.assert_allclose(e[:4], [90, 0, 180, 45], atol=1e-9)
    assert 0 < e[4] < 1e-6  # tiny angles stay accurate (arccos would round to 0 or lose digits)
    with pytest.raises(ValueError, match="pred"):
        angular_error_deg(np.zeros((1, 3)), b[:1])
    with pytest.raises(ValueError, match="true"):
        angular_error_deg(a, b[:, :2])


def test_gaze_summary_and_cdf():
    e = np.array([1.0, 3.0, 7.0, 10.0])
    assert gaze_summary(e) == {"mean_error_deg": 5.25, "median_error_deg": 5.0, "within7_pct": 75.0}
    assert error_cdf(e, [0, 2, 7, 100]) == [0.0, 25.0, 75.0, 100.0]


def test_constant_predictor_error_is_angle_to_training_mean():
    rng = np.random.default_rng(0)
    train = rng.normal([0, -0.1, -1], 0.2, (100, 3))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test = rng.normal([0.1, 0, -1], 0.2, (20, 3))
    pred = constant_prediction("gaze", train, 20)
    assert pred.shape == (20, 3)
    mean = train.mean(0) / np.linalg.norm(train.mean(0))
    expect = np.degrees(np.arccos(np.clip(test @ mean / np.linalg.norm(test, axis=1), -1, 1)))
    np.testing.assert_allclose(angular_error_deg(pred, test), expect, atol=1e-4)
    # hand: mean (u, v) per joint; the depth column is dropped
    joints = np.array([[[0, 0, 0.5], [10, 4, 0.1]], [[2, 2, 0.3], [20, 8, 0.2]]], float)
    np.testing.assert_allclose(constant_prediction("hand", joints, 3), [[[1, 1], [15, 6]]] * 3)


def test_pck_known_answers():
    true = np.zeros((2, 2, 2))
    pred = np.array([[[3, 4], [0, 0]], [[0, 6], [12, 5]]], float)  # distances 5, 0, 6, 13
    assert pck_curve(pred, true, [0, 5, 6, 12, 13]) == [25.0, 50.0, 75.0, 75.0, 100.0]
    assert pck_at(pred, true) == 50.0
    assert pck_at(pred, np.concatenate([true, np.ones((2, 2, 1))], 2), d=6) == 75.0  # (u, v, d) accepted
    assert len(pck_curve(pred, true)) == 21
    with pytest.raises(ValueError, match="pred_uv"):
        pck_at(pred[:1], true)


def draw_eye(cx, cy, r=4.0, n_sub=8):
    """Bright background with an anti-aliased dark disk (area-sampled)."""
    rows, cols = np.mgrid[:35, :55]
    offs = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    cover = np.zeros((35, 55))
    for dy in offs:
        for dx in offs:
            cover += (cols + dx - cx) ** 2 + (rows + dy - cy) ** 2 <= r * r
    cover /= n_sub * n_sub
    img = 190 - 150 * cover
    img[3:6, 5:20] = 120  # an eyebrow-ish distractor, darker than skin but not than the pupil
    return np.clip(img, 0, 255).astype(np.uint8)


def test_pupil_centres_finds_drawn_disk():
    centres = [(27.3, 16.7), (12.8, 20.2), (40.5, 12.4), (30.0, 25.9)]
    imgs = np.stack([draw_eye(x, y) for x, y in centres])
    found = pupil_centres(imgs)
    err = np.linalg.norm(found - np.array(centres), axis=1)
    assert np.all(err < 0.5), (found, err)
    # label preservation: moving each disk by 2 px is measured as 2 px
    moved = np.stack([draw_eye(x + 2, y) for x, y in centres])
    mean, std = pupil_shift_px(imgs, moved)
    assert abs(mean - 2.0) < 0.3 and std < 0.3


def test_joint_depth_shift_known_answer():
    syn = np.zeros((2, 8, 8), np.float32)
    ref = syn.copy()
    ref[0, 2, 3] = 0.4  # joint 0 of image 0 sits exactly there
    joints = np.array([[[3, 2, 0], [6, 6, 0]], [[1, 1, 0], [5.5, 5.5, 0]]], float)
    assert joint_depth_shift(syn, ref, joints) == pytest.approx(0.1)
    ref[1] += 0.2
    assert joint_depth_shift(syn, ref, joints) == pytest.approx(0.2)


def test_realism_accuracy_chance_and_perfect():
    rng = np.random.default_rng(0)
    a = rng.integers(60, 200, (240, 35, 55)).astype(np.uint8)
    b = rng.integers(60, 200, (300, 35, 55)).astype(np.uint8)
    same = realism_accuracy(a, b, "gaze", seed=0, steps=60, batch_size=32)
    assert 35.0 <= same <= 65.0, same
    c = np.clip(rng.normal(40, 10, (240, 35, 55)), 0, 255).astype(np.uint8)
    diff = realism_accuracy(a, c, "gaze", seed=0, steps=60, batch_size=32)
    assert diff >= 95.0, diff
    assert realism_accuracy(a, c, "gaze", seed=0, steps=60, batch_size=32) == diff  # seeded
    with pytest.raises(ValueError, match="test_fraction"):
        realism_accuracy(a, c, "gaze", seed=0, test_fraction=1.0)


def test_knn_predict():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(50, 8))
    labels = rng.normal(size=(50, 3))
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    for metric in ("cosine", "l2"):
        np.testing.assert_allclose(knn_predict(feats, labels, feats, k=1, metric=metric, chunk=7), labels, atol=1e-6)
    # k = N averages everything: the constant predictor
    np.testing.assert_allclose(
        knn_predict(feats, labels, feats[:4], k=50), constant_prediction("gaze", labels, 4), atol=1e-6
    )
    hand = rng.normal(size=(50, 14, 3))
    out = knn_predict(feats, hand, feats[:5], k=1)
    assert out.shape == (5, 14, 2)
    np.testing.assert_allclose(out, hand[:5, :, :2], atol=1e-6)
    with pytest.raises(ValueError, match="k"):
        knn_predict(feats, labels, feats, k=0)


def test_equalized_pixel_features():
    rng = np.random.default_rng(0)
    dark = rng.integers(10, 40, (3, 35, 55)).astype(np.uint8)
    eq = equalize_histograms(dark)
    assert eq.max() == 255 and eq.min() == 0
    # the mapping is monotonic
    order = np.argsort(dark[0].ravel(), kind="stable")
    assert np.all(np.diff(eq[0].ravel()[order].astype(int)) >= 0)
    f = equalized_pixel_features(dark)
    assert f.shape == (3, 35 * 55) and f.dtype == np.float32
    np.testing.assert_allclose(f.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(f.std(1), 1, atol=1e-4)
    with pytest.raises(ValueError, match=r"images: expected \(N, H, W\) uint8, got \(3, 35, 55\) float64"):
        equalize_histograms(dark.astype(float))
    # a brightness-shifted copy gives the same features (the point of equalizing)
    np.testing.assert_allclose(equalized_pixel_features(dark + 100), f, atol=1e-5)


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}  # sample std (ddof=1)
    assert mean_std([4.0]) == {"mean": 4.0, "std": 0.0}
    with pytest.raises(ValueError, match="values"):
        mean_std([])
    assert math.isclose(mean_std(np.array([0.0, 10.0]))["std"], math.sqrt(50))


def test_realism_accuracy_tells_depth_hands_apart_on_held_out_images():
    """Depth hands are mostly constant background; the classifier must still separate two kinds of
    them on held-out images: here hands alone vs hands with the forearm in view (the difference
    between the embedded domains before generator hands-2). The committed default run once scored
    exactly 50% for both synthetic and refined hands: a BatchNorm classifier whose eval-mode
    statistics put every test image on one side."""
    import numpy as np

    from simgan.sim import hands as H

    def render(seed, forearm):
        hand, full, _, cam = H.render_poses(H.sample_poses(300, np.random.default_rng(seed), "synthetic"), 32, forearm)
        return H.normalize_depth(full if forearm else hand, cam.z_centre)

    assert realism_accuracy(render(1, True), render(0, False), "hand", seed=0, steps=200, batch_size=32) >= 65.0


def test_realism_accuracy_sees_the_depth_sensor_alone():
    """The embedded hand domains differ in the sensor (noise, quantization, shadows, holes), a fine
    texture on mostly flat depth maps. Clean renders vs the same pose distribution through the
    Kinect model must be told apart; without the high-pass input the 200-step classifier stayed
    at exactly 50% on this (and on the committed run's raw synthetic vs real hands)."""
    from simgan.sim import hands as H

    def render(seed, sensor):
        rng = np.random.default_rng(seed)
        _, full, joints, cam = H.render_poses(H.sample_poses(300, rng, "synthetic"), 64, forearm=True)
        if sensor:
            full = H.kinect_sensor(full, cam.focal, rng, joints[..., :2].astype(np.float64))
        return H.normalize_depth(full, cam.z_centre)

    assert realism_accuracy(render(1, True), render(0, False), "hand", seed=0, steps=200, batch_size=32) >= 90.0


def test_pose_matching_takes_the_nearest_pool_row_of_each_query_once():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(50, 2, 3))
    query = pool[[7, 3, 41]] + 1e-3  # near copies: each finds its own row
    assert M.pose_matched_rows(pool, query).tolist() == [7, 3, 41]
    # a row is used once: two queries at one pose take it and its nearest neighbour
    twice = M.pose_matched_rows(pool, pool[[5, 5]])
    assert twice[0] == 5 and twice[1] != 5
    with pytest.raises(ValueError, match="at least as many pool rows"):
        M.pose_matched_rows(pool[:2], pool[:3])
