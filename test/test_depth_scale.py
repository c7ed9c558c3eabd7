"""Monocular maps (--points learned): the depth head's scale is fitted to the depth the map's own poses triangulate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reloc_ros.core.geometry import invert_T, look_at, transform_points
from reloc_ros.core.points import fit_depth_scale


def _views(rng, n_kf=4, n_pts=300):
    X = np.c_[rng.uniform(-3, 3, n_pts), rng.uniform(-2, 2, n_pts), rng.uniform(5, 9, n_pts)]
    poses = np.stack([look_at(np.array([x, 0.2 * x, 0.0]), np.array([0.0, 0.0, 7.0]), up_3=(0, -1, 0))
                      for x in np.linspace(-1, 1, n_kf)])
    z_true = [transform_points(invert_T(T), X)[:, 2] for T in poses]
    return X, poses, z_true


def test_fit_depth_scale_recovers_the_factor_despite_outliers():
    rng = np.random.default_rng(0)
    X, poses, z_true = _views(rng)
    z_pred, known = [], []
    for z in z_true:
        zp = z / 3.0 * np.exp(rng.normal(0, 0.1, len(z)))  # 3x short, 10 % noise
        zp[:60] *= rng.uniform(0.2, 5.0, 60)  # 20 % wrong depths
        pts = X.copy()
        pts[rng.random(len(pts)) < 0.5] = np.nan  # half the keypoints triangulated
        z_pred.append(zp)
        known.append(pts)
    factor, stats = fit_depth_scale(z_pred, known, poses)
    assert abs(factor / 3.0 - 1) < 0.03, factor
    assert stats["points"] == sum(int(np.isfinite(p[:, 0]).sum()) for p in known)
    assert 1.05 < stats["spread_factor"] < 1.3
    lo, hi = stats["keyframe_range"]
    assert 2.7 < lo <= factor <= hi < 3.3


def test_fit_depth_scale_refuses_when_nothing_constrains_it():
    rng = np.random.default_rng(1)
    X, poses, z_true = _views(rng, n_pts=30)
    few = [np.where(np.arange(len(X))[:, None] < 4, X, np.nan) for _ in poses]  # 4 points per keyframe
    with pytest.raises(ValueError, match="cannot fit the depth scale: only 16 keypoints"):
        fit_depth_scale(z_true, few, poses)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_monocular_map_takes_the_scale_of_its_poses(tmp_path, caplog):
    """A world three times larger than the depth head expects: ``fit`` rescales the map's points to it (and
    records the factor); ``check`` keeps the network's depth and warns."""
    pytest.importorskip("onnxruntime", reason="the learned extractor needs onnxruntime")
    from reloc_ros.pipelines.build_map import build_map
    from reloc_ros.core.learned import LearnedExtractor
    from reloc_ros.core.mapdb import MapDatabase
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.synthetic import generate
    from reloc_ros.datasets.synthetic.writer import DEFAULT_CAMERA

    generate("office", tmp_path / "office", n_map=12, n_query=1, seed=3, stride=15,
             camera=DEFAULT_CAMERA.scaled(0.5), workers=1, progress=False)
    frames = load_dataset(tmp_path / "office", "7scenes").split()[0]
    big = []
    for f in frames:
        T = f.T_world_from_cam.copy()
        T[:3, 3] *= 3.0
        big.append(dataclasses.replace(f, T_world_from_cam=T))
    ex = LearnedExtractor(max_side=320)
    maps = {mode: MapDatabase.load(build_map(big, ex, "learned", tmp_path / mode, depth_scale=mode,
                                             show_progress=False).path) for mode in ("fit", "check", "none")}
    fitted = maps["fit"].manifest["build"]["depth_scale"]
    assert fitted["applied"] and 2.2 < fitted["factor"] < 4.0, fitted
    assert not maps["check"].manifest["build"]["depth_scale"]["applied"]
    assert "depth_scale" not in maps["none"].manifest["build"]
    assert any("depth head's depth is" in r.getMessage() for r in caplog.records)

    def depth_from_camera(db):
        z = [transform_points(invert_T(T), db.points3d[db.keyframe_slice(i)])[:, 2]
             for i, T in enumerate(db.T_map_from_cam)]
        return np.nanmedian(np.concatenate(z))

    ratio = depth_from_camera(maps["fit"]) / depth_from_camera(maps["none"])
    assert abs(ratio / fitted["factor"] - 1) < 0.05, (ratio, fitted["factor"])
    assert depth_from_camera(maps["check"]) == pytest.approx(depth_from_camera(maps["none"]))

    # the map localizes one of its own frames, with the learned-point defaults: the epipolar check runs and the
    # median-reprojection gate is the learned points' 5 px
    from reloc_ros.core.geometry import pose_errors
    from reloc_ros.core.localizer import Localizer, LocalizerConfig, extractor_for_map
    from reloc_ros.datasets.base import load_image

    loc = Localizer(maps["fit"], extractor_for_map(maps["fit"]), LocalizerConfig())
    assert loc.epipolar_check_on and loc.max_median_reproj_px() == 5.0
    res = loc.localize(load_image(big[6]), big[6].camera)
    assert res.ok, res.reason
    assert "epipolar" in res.timings_ms
    dt, dr = pose_errors(res.T_map_from_cam, big[6].T_world_from_cam)
    assert dt < 0.05 and dr < 1.0, (dt, dr)
