"""The metric functions of ``reloc_ros.model.eval_heads`` on constructed inputs with known answers."""

from pathlib import Path

import numpy as np
import pytest

from reloc_ros.core.geometry import make_T, so3_exp
from reloc_ros.model.eval_heads import (depth_errors, estimate_relative_pose, nearest_by_pose, pose_auc,
                                        relative_pose_error, retrieval_correct, retrieval_recall, sample_bilinear)

K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])


def _project(X_N3):
    x = X_N3 @ K.T
    return x[:, :2] / x[:, 2:]


def _random_pair(rng, n=300):
    """Points in front of camera 0, a random relative pose T_1_from_0, the pixels in both views."""
    X0 = rng.uniform([-3, -2, 4], [3, 2, 10], (n, 3))
    t = rng.normal(size=3) * [1.0, 0.3, 0.3]
    T = make_T(so3_exp(rng.normal(scale=0.1, size=3)), t / np.linalg.norm(t))  # 1 m baseline
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    return T, _project(X0), _project(X1)


def test_auc_of_perfect_estimator_is_100():
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(10):
        T, u0, u1 = _random_pair(rng)
        R, t, inl = estimate_relative_pose(u0, u1, K, K, threshold_px=1.0)
        er, et = relative_pose_error(T, R, t)
        errors.append(max(er, et))
        assert inl.mean() > 0.99
    assert max(errors) < 0.01
    auc = pose_auc(errors)
    assert all(v > 99.9 for v in auc.values()), auc


def test_auc_of_noisy_estimator_with_outliers():
    rng = np.random.default_rng(1)
    errors = []
    for _ in range(10):
        T, u0, u1 = _random_pair(rng, 400)
        u1 = u1 + rng.normal(scale=0.5, size=u1.shape)  # 0.5 px noise
        out = rng.random(len(u1)) < 0.3  # 30 % outliers
        u1[out] = rng.uniform([0, 0], [640, 480], (out.sum(), 2))
        R, t, inl = estimate_relative_pose(u0, u1, K, K, threshold_px=1.0)
        assert np.mean(inl[out]) < 0.05  # outliers rejected
        errors.append(max(relative_pose_error(T, R, t)))
    auc = pose_auc(errors)
    # noisy but robust: all errors well under 5 deg, yet not exact
    assert max(errors) < 5.0 and max(errors) > 1e-3
    assert auc["auc@20"] > 90 and auc["auc@5"] > 50, auc
    assert auc["auc@5"] <= auc["auc@10"] <= auc["auc@20"] < 100


def test_pose_auc_known_curves():
    # errors uniform on [0, 20]: recall rises linearly, so AUC@t = t / 40 for t <= 20
    auc = pose_auc(np.linspace(0, 20, 2001))
    assert auc["auc@20"] == pytest.approx(50.0, abs=0.2)
    assert auc["auc@10"] == pytest.approx(25.0, abs=0.2)
    assert auc["auc@5"] == pytest.approx(12.5, abs=0.2)
    # all errors equal to 2 deg: recall jumps to 1 at 2 deg -> AUC@5 = 3/5 (plus the half-step of one sample)
    auc = pose_auc(np.full(1000, 2.0))
    assert auc["auc@5"] == pytest.approx(60.0, abs=0.1)
    # failures (inf / nan) are misses; half failed halves the AUC
    auc = pose_auc([0.0] * 5 + [np.inf] * 4 + [np.nan])
    assert all(v == pytest.approx(50.0, abs=1e-9) for v in auc.values())
    assert all(v == 0.0 for v in pose_auc([np.inf, np.inf]).values())


def test_relative_pose_error_conventions():
    rng = np.random.default_rng(2)
    T, _, _ = _random_pair(rng)
    # 3 deg rotation error, translation with the wrong sign and scale: sign and scale are not errors
    R_est = so3_exp(np.radians(3.0) * np.array([0.0, 0.6, 0.8])) @ T[:3, :3]
    er, et = relative_pose_error(T, R_est, -7.0 * T[:3, 3])
    assert er == pytest.approx(3.0, abs=1e-6) and et == pytest.approx(0.0, abs=1e-6)
    # a translation 90 deg off is the largest possible error
    perp = np.cross(T[:3, 3], [0.0, 0.0, 1.0])
    assert relative_pose_error(T, T[:3, :3], perp)[1] == pytest.approx(90.0, abs=1e-6)
    assert relative_pose_error(T, None, None) == (np.inf, np.inf)
    assert estimate_relative_pose(np.zeros((4, 2)), np.zeros((4, 2)), K, K) is None


def _pose(x, yaw_deg):
    return make_T(so3_exp([0.0, np.radians(yaw_deg), 0.0]), [x, 0.0, 0.0])


def test_retrieval_recall_constructed_case():
    db = np.stack([_pose(0, 0), _pose(10, 0), _pose(0, 90), _pose(2, 10)])
    db_group = ["a", "a", "a", "b"]  # the last image is of another scene: never correct for scene a
    q = np.stack([_pose(1, 5), _pose(9, 0), _pose(2, 10)])
    correct = retrieval_correct(q, db, 5.0, 30.0, ["a", "a", "a"], db_group)
    expected = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(correct, expected)
    # without groups the other scene's image at the same coordinates would count
    assert retrieval_correct(q, db, 5.0, 30.0)[2, 3]
    ranked = np.array([[0, 1, 2, 3, -1],  # right at rank 1
                       [3, 2, 0, 1, -1],  # right at rank 4
                       [3, 2, 1, -1, -1]])  # never right
    r = retrieval_recall(ranked, correct, ks=(1, 5))
    assert r["r@1"] == pytest.approx(100 / 3) and r["r@5"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        retrieval_correct(q, db, 5.0, 30.0, ["a", "a", "a"], None)


def test_depth_errors_with_and_without_median_scaling():
    rng = np.random.default_rng(3)
    gt = rng.uniform(1.0, 10.0, 5000)
    # a prediction off by a global factor 2: AbsRel 1, no pixel within 1.25; median scaling removes it exactly
    raw = depth_errors(2.0 * gt, gt)
    assert raw["abs_rel"] == pytest.approx(1.0) and raw["delta1"] == 0.0 and raw["n"] == 5000
    scaled = depth_errors(2.0 * gt, gt, median_scaling=True)
    assert scaled["abs_rel"] == pytest.approx(0.0, abs=1e-12) and scaled["delta1"] == 1.0
    assert scaled["scale"] == pytest.approx(0.5)
    # +-10 % multiplicative noise: AbsRel ~ 0.05 (mean of |U(-0.1, 0.1)|), every pixel within 1.25
    noisy = depth_errors(gt * rng.uniform(0.9, 1.1, gt.shape), gt)
    assert noisy["abs_rel"] == pytest.approx(0.05, abs=0.005) and noisy["delta1"] == 1.0
    # half exact, half 1.5x: AbsRel 0.25, delta1 0.5; invalid entries are ignored
    pred = np.r_[gt[:2500], 1.5 * gt[2500:], np.nan, 3.0]
    mixed = depth_errors(pred, np.r_[gt, 4.0, 0.0])
    assert mixed["abs_rel"] == pytest.approx(0.25) and mixed["delta1"] == pytest.approx(0.5) and mixed["n"] == 5000
    assert depth_errors(np.zeros(3), np.ones(3))["n"] == 0


def test_pairing_and_sparse_sampling():
    db = np.stack([_pose(0, 0), _pose(1, 90), _pose(3, 0)])
    assert nearest_by_pose(_pose(1.2, 5), db, 30.0) == 0  # the nearer camera looks 85 deg away
    assert nearest_by_pose(_pose(1.2, 180), db, 30.0) == -1
    # a depth map at 1/4 resolution of a 640 x 480 image, linear in x: bilinear samples are exact inside
    W, H = 640, 480
    u = (np.arange(W // 4) + 0.5) * 4 - 0.5  # image x of each depth-map column centre
    depth = np.tile(1.0 + 0.01 * u, (H // 4, 1)).astype(np.float32)
    xy = np.array([[100.3, 200.0], [320.0, 10.0], [600.7, 470.0]])
    np.testing.assert_allclose(sample_bilinear(depth, xy, (W, H)), 1.0 + 0.01 * xy[:, 0], atol=1e-5)
    assert np.isnan(sample_bilinear(depth, np.array([[-50.0, 10.0]]), (W, H))[0])


def test_xfeat_teacher_matches_local_head_keypoints():
    """The local head is XFeat's (frozen): its keypoints and the teacher's coincide on a real photograph."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    skimage_data = pytest.importorskip("skimage.data")
    from reloc_ros.model.eval_heads import EvalConfig, make_extractor

    cfg = EvalConfig(max_keypoints=300, threads=1)
    if not Path(cfg.xfeat_weights).is_file():
        pytest.skip(f"XFeat weights not downloaded ({cfg.xfeat_weights})")
    img = np.ascontiguousarray(skimage_data.astronaut()[:256, 96:416])
    a = make_extractor("learned", cfg).extract(img)
    b = make_extractor("xfeat", cfg).extract(img)
    assert len(a) == len(b) == 300
    d = np.linalg.norm(a.keypoints[:, None] - b.keypoints[None], axis=2)
    near = d.min(axis=1) < 1.0
    assert near.mean() > 0.9
    # the descriptors of coinciding keypoints are nearly the same vector (bilinear vs bicubic sampling)
    cos = np.sum(a.descriptors[near] * b.descriptors[d.argmin(axis=1)[near]], axis=1)
    assert np.median(cos) > 0.95


def test_auc_difference_interval_separates_only_real_differences():
    from reloc_ros.model.eval_heads import auc_difference_ci

    rng = np.random.default_rng(4)
    good = rng.uniform(0, 4, 200)  # all under 5 deg
    bad = rng.uniform(6, 30, 200)
    ci = auc_difference_ci(good, bad)
    d, lo, hi = ci["auc@10"]
    assert d == pytest.approx(pose_auc(good)["auc@10"] - pose_auc(bad)["auc@10"]) and 0 < lo <= d <= hi
    same = auc_difference_ci(good, rng.permutation(good))  # same distribution, other pairing
    assert all(lo < 0 < hi for _, lo, hi in same.values())
