"""Where map 3D comes from: depth images, multi-view triangulation with known poses, predicted depth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import invert_T, transform_points
from reloc_ros.core.matching import match_mutual_nn

__all__ = ["TriangulationConfig", "points_from_depth", "triangulate_keyframes", "select_pairs",
           "sample_depth"]


def sample_depth(depth_hw: np.ndarray, uv_N2: np.ndarray, image_size: tuple[int, int],
                 max_rel_spread: float = 0.05) -> np.ndarray:
    """Depth at pixel positions, NaN where invalid or on a depth discontinuity.

    The depth map may have another resolution than the image it belongs to (``image_size`` = (W, H)); the
    nearest depth pixel is read, and rejected when its 3x3 neighbourhood spreads by more than
    ``max_rel_spread`` of its value (flying pixels at object edges) or contains invalid (<= 0) depth.
    """
    h, w = depth_hw.shape
    W, H = image_size
    uv = np.asarray(uv_N2, np.float64).reshape(-1, 2)
    x = np.round((uv[:, 0] + 0.5) * w / W - 0.5).astype(np.int64)
    y = np.round((uv[:, 1] + 0.5) * h / H - 0.5).astype(np.int64)
    inside = (x >= 1) & (x < w - 1) & (y >= 1) & (y < h - 1)
    xs, ys = np.clip(x, 1, w - 2), np.clip(y, 1, h - 2)
    d = np.asarray(depth_hw, np.float64)
    patch = np.stack([d[ys + dy, xs + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1)
    centre = patch[:, 4]
    ok = inside & np.all(np.isfinite(patch), axis=1) & np.all(patch > 0, axis=1)
    pmin, pmax = np.nanmin(patch, axis=1), np.nanmax(patch, axis=1)
    ok &= (pmax - pmin) <= max_rel_spread * np.where(ok, centre, 1.0)
    return np.where(ok, centre, np.nan)


def points_from_depth(kpts_raw_N2: np.ndarray, kpts_ideal_N2: np.ndarray, camera: Camera, depth_hw: np.ndarray,
                      T_map_from_cam: np.ndarray, max_depth: float = 50.0, max_rel_spread: float = 0.05) -> np.ndarray:
    """Map-frame 3D points of keypoints from a depth image registered to the (raw) image.

    Args:
        kpts_raw_N2: keypoints in the raw (possibly distorted) image, where the depth is registered.
        kpts_ideal_N2: the same keypoints undistorted (ideal pinhole pixels of ``camera.undistorted()``).
        max_rel_spread: depth-discontinuity test of :func:`sample_depth` (sensor depth: 0.05; predicted depth
            is smooth, so slanted surfaces need a looser bound).

    Returns:
        ``[N x 3]`` points, NaN rows where the depth is missing, invalid or beyond ``max_depth``.
    """
    z = sample_depth(depth_hw, kpts_raw_N2, camera.size, max_rel_spread)
    z = np.where(z <= max_depth, z, np.nan)
    pc = camera.undistorted().backproject(kpts_ideal_N2, np.nan_to_num(z, nan=1.0))
    pw = pc @ T_map_from_cam[:3, :3].T + T_map_from_cam[:3, 3]
    pw[~np.isfinite(z)] = np.nan
    return pw


@dataclass
class TriangulationConfig:
    ratio: float = 0.8  # Lowe ratio for keyframe-keyframe matching
    epipolar_px: float = 3.0  # max Sampson distance (pixels) to the known-pose epipolar line
    reproj_px: float = 4.0  # max reprojection error of a triangulated point in every view
    min_angle_deg: float = 1.5  # min triangulation angle between the two most distant rays
    pairs_per_keyframe: int = 8  # partners per keyframe when the map is large
    all_pairs_below: int = 24  # match all pairs when the map has at most this many keyframes
    # keyframe-keyframe matcher: "mnn" (mutual nearest neighbours + ratio) or "lighterglue" (the learned matcher,
    # learned features only; 2-3x the correct matches on wide baselines, ~0.3 s per pair on 2 cores: docs/precision.md)
    matcher: str = "mnn"
    # non-linear refinement of each DLT point on all its observations (poses fixed, Huber loss of this width in px;
    # 0 = keep the DLT point): DLT minimises an algebraic error that weighs views unequally
    refine_huber_px: float = 1.0
    refine_iterations: int = 10


def _fundamental(T_w_from_i, T_w_from_j, cam_i: Camera, cam_j: Camera) -> np.ndarray:
    T_j_from_i = invert_T(T_w_from_j) @ T_w_from_i
    R, t = T_j_from_i[:3, :3], T_j_from_i[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = tx @ R
    return np.linalg.inv(cam_j.K).T @ E @ np.linalg.inv(cam_i.K)


def _sampson(F, x1_N2, x2_N2) -> np.ndarray:
    x1 = np.c_[x1_N2, np.ones(len(x1_N2))]
    x2 = np.c_[x2_N2, np.ones(len(x2_N2))]
    Fx1 = x1 @ F.T
    Ftx2 = x2 @ F
    num = np.sum(x2 * Fx1, axis=1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-18))


def select_pairs(T_map_from_cam_K44: np.ndarray, global_KG: np.ndarray, cfg: TriangulationConfig) -> list:
    """Keyframe pairs to match for triangulation: all pairs for small maps, else the most similar ones
    (global descriptor) plus the nearest cameras that look in a similar direction."""
    K = len(T_map_from_cam_K44)
    if K <= cfg.all_pairs_below:
        return [(i, j) for i in range(K) for j in range(i + 1, K)]
    n = cfg.pairs_per_keyframe
    sim = global_KG @ global_KG.T
    centers = T_map_from_cam_K44[:, :3, 3]
    axes = T_map_from_cam_K44[:, :3, 2]
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=2)
    facing = axes @ axes.T > 0.0
    dist = np.where(facing, dist, np.inf)
    np.fill_diagonal(sim, -np.inf)
    np.fill_diagonal(dist, np.inf)
    pairs = set()
    for i in range(K):
        for j in np.argsort(-sim[i])[:n]:
            pairs.add((min(i, j), max(i, j)))
        for j in np.argsort(dist[i])[: n // 2]:
            if np.isfinite(dist[i, j]):
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, a: np.ndarray) -> np.ndarray:
        p = self.parent
        a = np.asarray(a)
        root = a.copy()
        while True:  # vectorised pointer jumping
            nxt = p[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        p[a] = root  # path compression for the queried nodes
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = x, y
            while self.parent[rx] != rx:
                rx = self.parent[rx]
            while self.parent[ry] != ry:
                ry = self.parent[ry]
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)


def _triangulate_dlt(P_LT34: np.ndarray, uv_LT2: np.ndarray) -> np.ndarray:
    """Batched multi-view DLT: ``P_LT34`` [T x L x 3 x 4] projection matrices, ``uv`` [T x L x 2]."""
    A = np.concatenate([uv_LT2[..., 0:1] * P_LT34[..., 2, :] - P_LT34[..., 0, :],
                        uv_LT2[..., 1:2] * P_LT34[..., 2, :] - P_LT34[..., 1, :]], axis=1)  # [T x 2L x 4]
    _, _, Vt = np.linalg.svd(A)
    X = Vt[:, -1, :]
    return X[:, :3] / np.where(np.abs(X[:, 3:4]) > 1e-12, X[:, 3:4], 1e-12)


def _pair_matcher(cfg: TriangulationConfig, kpts_ideal: list, descs: list, cameras: list):
    """(i, j) -> matches ``[M x 2]`` between keyframes i and j, with ``cfg.matcher``."""
    if cfg.matcher == "mnn":
        return lambda i, j: match_mutual_nn(descs[i], descs[j], ratio=cfg.ratio)[0]
    if cfg.matcher == "lighterglue":
        from reloc_ros.core.lighterglue import LighterGlueMatcher

        lg = LighterGlueMatcher()
        return lambda i, j: lg.match(kpts_ideal[i], descs[i], cameras[i].size,
                                     kpts_ideal[j], descs[j], cameras[j].size)[0]
    raise ValueError(f"unknown matcher {cfg.matcher!r}; choose mnn or lighterglue")


def _project(P_TL34: np.ndarray, X_T3: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each track's point projected into its views: (pixels ``[T x L x 2]``, their Jacobian d(u, v)/dX
    ``[T x L x 2 x 3]``, whether the point is in front of every view ``[T]``); depths clamped at 1e-9."""
    Xh = np.concatenate([X_T3, np.ones((len(X_T3), 1))], axis=1)
    p = np.einsum("tlij,tj->tli", P_TL34, Xh)  # [T x L x 3]
    z = p[..., 2:3]
    ok = np.all(z[..., 0] > 1e-9, axis=1)
    z = np.where(z > 1e-9, z, 1e-9)
    u = p[..., :2] / z
    # d(u)/dX = (P0 - u P2) / z, d(v)/dX = (P1 - v P2) / z
    J = (P_TL34[..., :2, :3] - u[..., None] * P_TL34[..., 2:3, :3]) / z[..., None]
    return u, J, ok


def refine_points(P_TL34: np.ndarray, uv_TL2: np.ndarray, X_T3: np.ndarray, huber_px: float = 1.0,
                  iterations: int = 10) -> np.ndarray:
    """Gauss-Newton on the reprojection error of each track's point in all its views (poses fixed), batched over
    tracks of equal length, with Huber weights (``huber_px``). Returns the refined ``[T x 3]`` points; a track whose
    step fails (degenerate normal equations, a point behind a camera) keeps its previous estimate."""
    X = X_T3.astype(np.float64).copy()
    eye = np.eye(3)[None] * 1e-9
    for _ in range(iterations):
        u, J, ok = _project(P_TL34, X)
        r = u - uv_TL2  # [T x L x 2]
        e = np.linalg.norm(r, axis=2)  # [T x L]
        w = np.where(e <= huber_px, 1.0, huber_px / np.maximum(e, 1e-12))[..., None, None]
        H = np.einsum("tlki,tlkj->tij", w * J, J) + eye
        g = np.einsum("tlki,tlk->ti", (w * J), r)
        try:
            step = np.linalg.solve(H, -g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            break
        step = np.where((ok & np.all(np.isfinite(step), axis=1))[:, None], step, 0.0)
        X += step
        if np.max(np.abs(step), initial=0.0) < 1e-10:
            break
    return X


def point_uncertainty(P_TL34: np.ndarray, uv_TL2: np.ndarray, X_T3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of each track's point covariance ``s^2 (J^T J)^-1`` (poses fixed): ``s^2``, the variance of
    its reprojection residuals (px^2, over its 2L - 3 degrees of freedom; NaN for a track without any), and
    ``trace((J^T J)^-1) / 3`` (m^2 per px^2: the geometry's share, large for short baselines and far points).
    """
    u, J, _ = _project(P_TL34, X_T3)
    H = np.einsum("tlki,tlkj->tij", J, J)
    dof = 2 * uv_TL2.shape[1] - 3
    s2 = np.sum((u - uv_TL2) ** 2, axis=(1, 2)) / dof if dof > 0 else np.full(len(X_T3), np.nan)
    with np.errstate(all="ignore"):
        geo = np.trace(np.linalg.pinv(H), axis1=1, axis2=2) / 3.0
    return s2, geo


def triangulate_keyframes(kpts_ideal: list, descs: list, T_map_from_cam_K44: np.ndarray, cameras: list,
                          global_KG: np.ndarray, cfg: TriangulationConfig = TriangulationConfig(),
                          progress=None) -> tuple[list, list, dict]:
    """Triangulate matched keypoints across keyframes with known poses.

    Args:
        kpts_ideal: per keyframe ``[N_i x 2]`` ideal pixel coordinates.
        descs: per keyframe ``[N_i x D]`` unit descriptors.
        T_map_from_cam_K44: keyframe poses.
        cameras: per keyframe ideal pinhole :class:`Camera`.
        global_KG: global descriptors (pair selection for large maps).

    Returns:
        (points per keyframe ``[N_i x 3]`` with NaN rows, confidence per keyframe ``[N_i]``, stats dict). The stats'
        ``point_sigma_rel`` is the map's median relative point uncertainty: per point the 1-sigma position error of
        ``s^2 (J^T J)^-1`` (:func:`point_uncertainty`; ``s^2`` its residual variance, at least the median over all
        points, since a 2- or 3-view track's own estimate rests on 1-3 degrees of freedom) over its distance to the
        cameras that see it (MapDatabase.point_sigma_rel).
    """
    K = len(kpts_ideal)
    offs = np.cumsum([0] + [len(k) for k in kpts_ideal])
    n_total = int(offs[-1])
    uf = _UnionFind(n_total)
    pairs = select_pairs(T_map_from_cam_K44, global_KG, cfg)
    pair_match = _pair_matcher(cfg, kpts_ideal, descs, cameras)
    n_pair_matches = 0
    for pi, (i, j) in enumerate(pairs):
        m = pair_match(i, j)
        if len(m) == 0:
            continue
        F = _fundamental(T_map_from_cam_K44[i], T_map_from_cam_K44[j], cameras[i], cameras[j])
        d = _sampson(F, kpts_ideal[i][m[:, 0]], kpts_ideal[j][m[:, 1]])
        m = m[d <= cfg.epipolar_px]
        n_pair_matches += len(m)
        uf.union(offs[i] + m[:, 0], offs[j] + m[:, 1])
        if progress is not None:
            progress(pi + 1, len(pairs))
    roots = uf.find(np.arange(n_total))
    kf_of = np.repeat(np.arange(K), np.diff(offs))
    # Tracks: nodes sharing a root, >= 2 nodes, at most one keypoint per keyframe. A keyframe that has several
    # keypoints in a component (a wrong match joined two tracks there) loses all of them; the rest of the component
    # stays a track (its DLT and reprojection check below judge it).
    key = roots.astype(np.int64) * K + kf_of
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    kept = np.flatnonzero(cnt[inv] == 1)
    order = kept[np.argsort(roots[kept], kind="stable")]
    r_sorted = roots[order]
    starts = np.flatnonzero(np.r_[True, r_sorted[1:] != r_sorted[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    points = [np.full((len(k), 3), np.nan) for k in kpts_ideal]
    confs = [np.zeros(len(k), np.float32) for k in kpts_ideal]
    P_all = np.stack([cameras[k].K @ invert_T(T_map_from_cam_K44[k])[:3, :] for k in range(K)])
    centers = T_map_from_cam_K44[:, :3, 3]
    n_tracks = n_points = 0
    unc = []  # per good track: (s^2, geometry factor, mean distance to its cameras)
    for L in np.unique(lengths):
        if L < 2:
            continue
        sel = starts[lengths == L]
        nodes = order[sel[:, None] + np.arange(L)[None]]  # [T x L], one keypoint per keyframe (see above)
        kfs = kf_of[nodes]
        n_tracks += len(nodes)
        local = nodes - offs[kfs]
        uv = np.stack([np.stack([kpts_ideal[k][l] for k, l in zip(kr, lr)]) for kr, lr in zip(kfs, local)])
        X = _triangulate_dlt(P_all[kfs], uv)
        if cfg.refine_huber_px > 0:
            X = refine_points(P_all[kfs], uv, X, cfg.refine_huber_px, cfg.refine_iterations)
        # Checks: reprojection error and positive depth in every view, triangulation angle.
        Xh = np.c_[X, np.ones(len(X))]
        proj = np.einsum("tlij,tj->tli", P_all[kfs], Xh)
        depth_ok = np.all(proj[..., 2] > 1e-6, axis=1)
        uvp = proj[..., :2] / np.where(np.abs(proj[..., 2:3]) > 1e-9, proj[..., 2:3], 1e-9)
        err = np.linalg.norm(uvp - uv, axis=2).max(axis=1)
        rays = X[:, None, :] - centers[kfs]
        rays /= np.maximum(np.linalg.norm(rays, axis=2, keepdims=True), 1e-12)
        cosang = np.einsum("tai,tbi->tab", rays, rays).min(axis=(1, 2))
        angle = np.degrees(np.arccos(np.clip(cosang, -1, 1)))
        good = depth_ok & (err <= cfg.reproj_px) & (angle >= cfg.min_angle_deg)
        conf = (np.clip(angle / 5.0, 0.1, 1.0) * (1.0 - 0.5 ** (L - 1))).astype(np.float32)
        for t in np.flatnonzero(good):
            for k, l in zip(kfs[t], local[t]):
                points[k][l] = X[t]
                confs[k][l] = conf[t]
        n_points += int(good.sum())
        if good.any():
            s2, geo = point_uncertainty(P_all[kfs[good]], uv[good], X[good])
            dist = np.linalg.norm(X[good][:, None, :] - centers[kfs[good]], axis=2).mean(axis=1)
            unc.append((s2, geo, dist))
    stats = {"matcher": cfg.matcher, "pairs": len(pairs), "pair_matches": n_pair_matches, "tracks": n_tracks,
             "points": n_points}
    if unc:
        s2, geo, dist = (np.concatenate(a) for a in zip(*unc))
        s2_all = np.fmax(s2, np.nanmedian(s2) if np.isfinite(s2).any() else 0.25)
        rel = np.sqrt(s2_all * geo) / np.maximum(dist, 1e-9)
        rel = rel[np.isfinite(rel)]
        if len(rel):
            stats["point_sigma_rel"] = round(float(np.median(rel)), 6)
    return points, confs, stats


def fit_depth_scale(z_pred: list, points_world: list, T_map_from_cam_K44: np.ndarray,
                    min_points: int = 20) -> tuple[float, dict]:
    """The factor that brings predicted depth to the depth of independently known 3D points.

    A monocular depth network's metric scale holds only where it was trained (indoors here): outdoors it is 2-8x
    off. Given the depth predicted at each keyframe's keypoints and the 3D points the keyframes' poses triangulate
    for some of them, the factor is the median of ``z_known / z_pred`` (median of logs: robust to the wrong
    matches triangulation lets through).

    Args:
        z_pred: per keyframe ``[N_i]`` predicted depth at its keypoints (NaN where none).
        points_world: per keyframe ``[N_i x 3]`` known map-frame points of the same keypoints (NaN rows: none).

    Returns:
        (factor, stats: the factor, the points used, the spread of the ratios as a factor (median absolute
        deviation of the logs), the range of the per-keyframe factors of keyframes with >= ``min_points``).

    Raises:
        ValueError: fewer than ``min_points`` keypoints have both depths (nothing constrains the scale).
    """
    logs = []
    for z, p, T in zip(z_pred, points_world, T_map_from_cam_K44):
        z_known = transform_points(invert_T(T), p)[:, 2]
        ok = np.isfinite(z) & np.isfinite(z_known) & (z > 0) & (z_known > 0)
        logs.append(np.log(z_known[ok] / z[ok]))
    pooled = np.concatenate(logs) if logs else np.zeros(0)
    if len(pooled) < min_points:
        raise ValueError(f"cannot fit the depth scale: only {len(pooled)} keypoints have both a predicted and a "
                         f"triangulated depth (need {min_points}); the map images need more overlap")
    log_f = float(np.median(pooled))
    per_kf = [float(np.median(lg)) for lg in logs if len(lg) >= min_points] or [log_f]
    stats = {"factor": round(float(np.exp(log_f)), 4), "points": int(len(pooled)),
             "spread_factor": round(float(np.exp(np.median(np.abs(pooled - log_f)))), 4),
             "keyframe_range": [round(float(np.exp(min(per_kf))), 4), round(float(np.exp(max(per_kf))), 4)]}
    return float(np.exp(log_f)), stats
