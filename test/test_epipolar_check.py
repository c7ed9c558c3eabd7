"""The epipolar check: essential matrices with the retrieved keyframes overrule a PnP orientation they disagree with."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import invert_T, look_at, make_T, so3_exp, transform_points
from reloc_ros.core.localizer import Localizer, LocalizerConfig

CAM = Camera(640, 480, 525.0, 525.0, 319.5, 239.5)


def _project(T_map_from_cam, X):
    """Pixels of map points ``X`` in a camera at ``T_map_from_cam``, and which of them it sees."""
    uv, front = CAM.project(transform_points(invert_T(T_map_from_cam), X))
    return uv, front & CAM.in_image(uv)


def _scene(seed=0, n_kf=4, n=300, outliers=0.3, q_center=(0.4, 0.05, 0.1)):
    """Keyframes turning in place at the origin, a query 0.4 m aside; points 2-6 m ahead; a share of wrong matches."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(2, 6, n)]
    kfs = [look_at([0, 0, 0], [np.sin(a), 0, np.cos(a)], up_3=[0, -1, 0]) for a in np.radians([-12, -4, 4, 12])[:n_kf]]
    c = np.asarray(q_center, np.float64)
    T_q = look_at(c, c + [np.sin(0.1), 0.0, np.cos(0.1)], up_3=[0, -1, 0])
    uv_q, seen_q = _project(T_q, X)
    kf_uv, per_kf = [], []
    for k, T in enumerate(kfs):
        uv_k, seen_k = _project(T, X)
        seen = np.flatnonzero(seen_k & seen_q)
        kf_uv.append(uv_k[seen] + rng.normal(0, 0.3, (len(seen), 2)))
        q_idx = seen.copy()
        bad = rng.random(len(seen)) < outliers
        q_idx[bad] = rng.integers(0, n, bad.sum())  # wrong matches: another query keypoint
        per_kf.append((k, np.c_[q_idx, np.arange(len(seen))], np.ones(len(seen))))
    loc = Localizer.__new__(Localizer)
    loc.config = LocalizerConfig()
    loc.db = SimpleNamespace(T_map_from_cam=np.stack(kfs), cameras=[CAM] * len(kfs))
    loc._kf_uv = kf_uv
    kq = uv_q + rng.normal(0, 0.3, uv_q.shape)
    return loc, per_kf, kq, T_q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_epipolar_check_refuses_a_wrong_orientation_and_passes_the_right_one(seed):
    loc, per_kf, kq, T_q = _scene(seed)
    K = CAM.K
    assert loc._epipolar_disagreement(per_kf, kq, K, T_q) is None  # the true pose passes
    near = make_T(so3_exp([0.0, np.radians(3.0), 0.0]) @ T_q[:3, :3], T_q[:3, 3])
    assert loc._epipolar_disagreement(per_kf, kq, K, near) is None  # within the 5 deg tolerance
    wrong = make_T(so3_exp([np.radians(15.0), 0.0, 0.0]) @ T_q[:3, :3], T_q[:3, 3] + [0.3, 0.0, 0.0])
    out = loc._epipolar_disagreement(per_kf, kq, K, wrong)
    assert out is not None and abs(out[0] - 15.0) < 1.0 and out[1] >= 3, out  # most keyframes agree on the truth
    loc.config = LocalizerConfig(epipolar_max_keyframes=1)  # only the keyframe with the most matches votes
    out1 = loc._epipolar_disagreement(per_kf, kq, K, wrong)
    assert out1 is not None and out1[1] == 1
    loc.config = LocalizerConfig(epipolar_max_rot_deg=20.0)
    assert loc._epipolar_disagreement(per_kf, kq, K, wrong) is None


def test_epipolar_check_makes_no_decision_without_enough_evidence():
    loc, per_kf, kq, T_q = _scene(3)
    wrong = make_T(so3_exp([np.radians(15.0), 0.0, 0.0]) @ T_q[:3, :3], T_q[:3, 3])
    few = [(k, m[:15], s[:15]) for k, m, s in per_kf]  # under the 20 matches an essential matrix needs
    assert loc._epipolar_disagreement(few, kq, CAM.K, wrong) is None
    # the query at the keyframes' centre: no parallax, so the essential matrices give no orientation
    loc, per_kf, kq, T_q = _scene(4, q_center=(0.0, 0.0, 0.0))
    wrong = make_T(so3_exp([np.radians(15.0), 0.0, 0.0]) @ T_q[:3, :3], T_q[:3, 3])
    assert loc._epipolar_disagreement(per_kf, kq, CAM.K, wrong) is None


def test_epipolar_check_runs_on_learned_point_maps_by_default():
    loc = Localizer.__new__(Localizer)
    for mode, source, on in [("auto", "learned", True), ("auto", "depth", False), ("auto", "triangulate", False),
                             ("always", "depth", True), ("never", "learned", False)]:
        loc.config, loc._point_source = LocalizerConfig(epipolar_check=mode), source
        assert loc.epipolar_check_on is on, (mode, source)
    with pytest.raises(ValueError, match="epipolar_check"):
        LocalizerConfig(epipolar_check="maybe")
    with pytest.raises(ValueError, match="epipolar_max_rot_deg"):
        LocalizerConfig(epipolar_max_rot_deg=0.0)
