"""2D-2D relocalization without map 3D: essential matrices against several retrieved keyframes.

The camera re-localization thesis (Tsai 2020) localizes a query from relative poses alone:

1. for each retrieved keyframe k (pose ``T_map_from_kf``), an essential matrix between the keyframe's and the
   query's matched keypoints (five-point RANSAC, ``cv2.findEssentialMat`` + ``cv2.recoverPose`` on undistorted,
   normalised coordinates) gives ``R_q_from_kf`` and the translation *direction* ``t_q_from_kf`` (scale unknown).
   The query's centre lies on the half-line ``c_k + s * d_k`` (s > 0) with ``d_k = R_map_from_kf (-R^T t)``, and
   its orientation is ``R_map_from_q = R_map_from_kf R^T``;
2. RANSAC over pairs of lines: every pair of non-parallel lines proposes the midpoint of their common
   perpendicular (both points in front of their keyframes); a line is an inlier when the direction from its
   keyframe centre to the hypothesis is within ``inlier_angle_deg`` of the line's direction. With the few lines
   of a top-K retrieval all pairs are tried (an exhaustive RANSAC);
3. refinement: the least-squares point closest to all inlier lines; orientation: the average of the inlier
   lines' rotation estimates (quaternion averaging by the dominant eigenvector of ``sum w q q^T``, weights = the
   essential-matrix inlier counts).

Needs at least two keyframes whose essential matrices have enough inliers and parallax, and lines that are not
all parallel (the keyframe centres and the query must not be collinear); otherwise the result is a failure with
the reason. The covariance is a first-order estimate from the residuals (documented in :func:`_covariance`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from reloc_ros.core.geometry import make_T, matrix_from_quat, quat_from_matrix, rotation_error_deg
from reloc_ros.core.matching import match_mutual_nn

__all__ = ["RelPoseConfig", "KeyframeView", "LineEstimate", "RelPoseResult", "estimate_line", "intersect_lines",
           "METHODS", "pose_without_3d",
           "closest_point_two_lines", "average_rotations", "relocalize_2d2d"]


@dataclass
class RelPoseConfig:
    min_matches: int = 20  # matches with a keyframe below this: no essential matrix is tried
    min_inliers: int = 15  # essential-matrix inliers (in front of both cameras) for a keyframe's line to count
    ransac_px: float = 1.0  # five-point RANSAC threshold in pixels (converted with the mean focal length)
    ransac_prob: float = 0.999
    min_parallax_deg: float = 1.0  # median ray angle of the inliers below this: translation direction undefined
    inlier_angle_deg: float = 5.0  # a line supports a centre hypothesis when it points there within this angle
    min_pair_angle_deg: float = 2.0  # two lines closer to parallel than this propose no hypothesis
    min_lines: int = 2  # inlier lines the final pose needs


@dataclass
class KeyframeView:
    """A retrieved keyframe's side of one query-keyframe pair.

    Attributes:
        index: keyframe index in the map (for reporting).
        T_map_from_kf: 4x4 pose of the keyframe camera.
        K_kf: 3x3 intrinsics of its (undistorted) keypoints.
        uv_kf_M2: ``[M x 2]`` its matched keypoints, undistorted pixels.
        uv_q_M2: ``[M x 2]`` the query's matched keypoints (same order), undistorted pixels.
    """

    index: int
    T_map_from_kf: np.ndarray
    K_kf: np.ndarray
    uv_kf_M2: np.ndarray
    uv_q_M2: np.ndarray


@dataclass
class LineEstimate:
    """What one keyframe says about the query: a half-line for the centre and an orientation."""

    index: int
    num_matches: int
    num_inliers: int = 0
    parallax_deg: float = 0.0
    center_3: np.ndarray | None = None  # keyframe centre in the map frame
    direction_3: np.ndarray | None = None  # unit direction of the query centre from the keyframe centre (map)
    R_map_from_q: np.ndarray | None = None
    reason: str = ""  # why no line ("" when the line is usable)

    @property
    def ok(self) -> bool:
        return self.direction_3 is not None


@dataclass
class RelPoseResult:
    success: bool
    reason: str = ""
    T_map_from_cam: np.ndarray | None = None
    covariance: np.ndarray | None = None  # 6x6 (x, y, z, rot x, rot y, rot z), map frame
    lines: list[LineEstimate] = field(default_factory=list)
    inlier_lines: list[int] = field(default_factory=list)  # keyframe indices of the inlier lines
    num_matches: int = 0  # matches over all keyframes with a line
    num_inliers: int = 0  # essential-matrix inliers over the inlier lines


def _normalised(uv_N2: np.ndarray, K: np.ndarray) -> np.ndarray:
    return ((uv_N2 - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])).astype(np.float64)


def estimate_line(view: KeyframeView, K_q: np.ndarray, cfg: RelPoseConfig = RelPoseConfig()) -> LineEstimate:
    """Relative pose of the query to one keyframe -> the line of the query centre and its orientation."""
    n = len(view.uv_q_M2)
    est = LineEstimate(view.index, n)
    if n < max(cfg.min_matches, 5):
        est.reason = f"{n} matches < {max(cfg.min_matches, 5)}"
        return est
    x_kf = _normalised(np.asarray(view.uv_kf_M2, np.float64), view.K_kf)
    x_q = _normalised(np.asarray(view.uv_q_M2, np.float64), K_q)
    f = 0.25 * (K_q[0, 0] + K_q[1, 1] + view.K_kf[0, 0] + view.K_kf[1, 1])
    E, mask = cv2.findEssentialMat(x_kf, x_q, np.eye(3), method=cv2.USAC_ACCURATE, prob=cfg.ransac_prob,
                                   threshold=cfg.ransac_px / f)
    if E is None or E.shape != (3, 3):  # several solutions stacked (degenerate): take none
        est.reason = "no essential matrix"
        return est
    n_inl, R, t, mask = cv2.recoverPose(E, x_kf, x_q, np.eye(3), mask=mask.copy())
    inl = mask.ravel() > 0
    est.num_inliers = int(n_inl)
    if n_inl < cfg.min_inliers:
        est.reason = f"{n_inl} essential-matrix inliers < {cfg.min_inliers}"
        return est
    # parallax: angle between each inlier's query ray (rotated into the keyframe) and its keyframe ray
    rq = np.c_[x_q[inl], np.ones(inl.sum())] @ R  # rows: R^T x_q
    rk = np.c_[x_kf[inl], np.ones(inl.sum())]
    cosang = np.sum(rq * rk, 1) / (np.linalg.norm(rq, axis=1) * np.linalg.norm(rk, axis=1))
    est.parallax_deg = float(np.degrees(np.median(np.arccos(np.clip(cosang, -1, 1)))))
    if est.parallax_deg < cfg.min_parallax_deg:
        est.reason = f"parallax {est.parallax_deg:.2f} deg < {cfg.min_parallax_deg} (baseline too short)"
        return est
    R_map_from_kf = view.T_map_from_kf[:3, :3]
    d = R_map_from_kf @ (-R.T @ t.ravel())
    est.center_3 = view.T_map_from_kf[:3, 3].astype(np.float64)
    est.direction_3 = d / np.linalg.norm(d)
    est.R_map_from_q = R_map_from_kf @ R.T
    return est


def closest_point_two_lines(c1: np.ndarray, d1: np.ndarray, c2: np.ndarray, d2: np.ndarray):
    """Midpoint of the common perpendicular of lines ``c1 + s d1`` and ``c2 + u d2`` (unit directions) and
    the parameters (s, u) of its feet; None for (near) parallel lines."""
    b = float(d1 @ d2)
    den = 1.0 - b * b
    if den < 1e-12:
        return None
    w = c1 - c2
    dw1, dw2 = float(d1 @ w), float(d2 @ w)
    s = (b * dw2 - dw1) / den
    u = (dw2 - b * dw1) / den
    return 0.5 * ((c1 + s * d1) + (c2 + u * d2)), s, u


def _angles_deg(X: np.ndarray, lines: list[LineEstimate]) -> np.ndarray:
    out = np.empty(len(lines))
    for i, ln in enumerate(lines):
        v = X - ln.center_3
        nv = np.linalg.norm(v)
        out[i] = 180.0 if nv < 1e-12 else np.degrees(np.arccos(np.clip(float(ln.direction_3 @ v) / nv, -1, 1)))
    return out


def _least_squares_point(lines: list[LineEstimate], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The point minimising the weighted squared distances to the lines, and the normal matrix
    ``A = sum w (I - d d^T)``."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for ln, w in zip(lines, weights):
        P = np.eye(3) - np.outer(ln.direction_3, ln.direction_3)
        A += w * P
        b += w * P @ ln.center_3
    return np.linalg.solve(A, b), A


def average_rotations(Rs: list[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted average rotation: dominant eigenvector of ``sum w q q^T`` (Markley et al. 2007; sign-free)."""
    w = np.ones(len(Rs)) if weights is None else np.asarray(weights, np.float64)
    M = np.zeros((4, 4))
    for R, wi in zip(Rs, w):
        q = quat_from_matrix(R, order="wxyz")
        M += wi * np.outer(q, q)
    _, V = np.linalg.eigh(M)
    return matrix_from_quat(V[:, -1], order="wxyz")


def intersect_lines(lines: list[LineEstimate], cfg: RelPoseConfig = RelPoseConfig()) -> RelPoseResult:
    """RANSAC over pairs of lines, refinement and rotation averaging (see the module docstring)."""
    usable = [ln for ln in lines if ln.ok]
    res = RelPoseResult(False, lines=list(lines))
    if len(usable) < cfg.min_lines:
        why = "; ".join(f"kf {ln.index}: {ln.reason}" for ln in lines if not ln.ok)
        res.reason = (f"2D-2D needs >= {cfg.min_lines} keyframes with a relative pose, got {len(usable)}"
                      + (f" ({why})" if why else ""))
        return res
    min_sin = np.sin(np.radians(cfg.min_pair_angle_deg))
    best = None  # (inlier count, -sum of inlier angles, inlier mask)
    for i, j in itertools.combinations(range(len(usable)), 2):
        a, b = usable[i], usable[j]
        if np.linalg.norm(np.cross(a.direction_3, b.direction_3)) < min_sin:
            continue
        hyp = closest_point_two_lines(a.center_3, a.direction_3, b.center_3, b.direction_3)
        if hyp is None or hyp[1] <= 0 or hyp[2] <= 0:  # behind a keyframe: not on both half-lines
            continue
        ang = _angles_deg(hyp[0], usable)
        inl = ang < cfg.inlier_angle_deg
        score = (int(inl.sum()), -float(ang[inl].sum()))
        if best is None or score > best[0]:
            best = (score, inl)
    if best is None:
        res.reason = (f"the {len(usable)} translation lines are (nearly) parallel or meet behind the keyframes: "
                      f"position undetermined (keyframes and query collinear?)")
        return res
    inl = best[1]
    if inl.sum() < cfg.min_lines:
        res.reason = f"only {int(inl.sum())} consistent translation lines (< {cfg.min_lines})"
        return res
    inliers = [ln for ln, k in zip(usable, inl) if k]
    w = np.array([ln.num_inliers for ln in inliers], np.float64)
    X, A = _least_squares_point(inliers, w / w.sum())
    if np.linalg.eigvalsh(A)[0] < min_sin ** 2 / len(inliers):
        res.reason = "the inlier translation lines are nearly parallel: position undetermined"
        return res
    R = average_rotations([ln.R_map_from_q for ln in inliers], w)
    res.success = True
    res.T_map_from_cam = make_T(R, X)
    res.covariance = _covariance(X, R, inliers, A)
    res.inlier_lines = [ln.index for ln in inliers]
    res.num_matches = sum(ln.num_matches for ln in usable)
    res.num_inliers = int(w.sum())
    return res


def _covariance(X: np.ndarray, R: np.ndarray, lines: list[LineEstimate], A: np.ndarray) -> np.ndarray:
    """First-order 6x6 covariance. Position: ``sigma^2 A^-1`` (A: the normalised normal matrix of the line
    intersection), ``sigma^2`` the mean squared point-to-line distance, floored at the distance 1 deg of
    direction error makes at the median keyframe range (two lines have no redundancy to measure it).
    Rotation: the mean squared angle between the line rotations and their average, floored at (0.5 deg)^2."""
    dist2, ranges, rot2 = [], [], []
    for ln in lines:
        v = X - ln.center_3
        ranges.append(np.linalg.norm(v))
        dist2.append(float(v @ v - (ln.direction_3 @ v) ** 2))
        rot2.append(np.radians(rotation_error_deg(ln.R_map_from_q, R)) ** 2)
    floor = (np.radians(1.0) * float(np.median(ranges))) ** 2
    s2 = max(float(np.mean(dist2)), floor)
    cov = np.zeros((6, 6))
    cov[:3, :3] = s2 * np.linalg.inv(A)
    cov[3:, 3:] = np.eye(3) * max(float(np.mean(rot2)), np.radians(0.5) ** 2)
    return cov


def relocalize_2d2d(views: list[KeyframeView], K_q: np.ndarray, cfg: RelPoseConfig = RelPoseConfig()) -> RelPoseResult:
    """The query pose from its matches with several posed keyframes (no 3D): lines, RANSAC, averaging."""
    return intersect_lines([estimate_line(v, K_q, cfg) for v in views], cfg)


# ---------------------------------------------------------------------------------------------------------------
# the localizer's methods without 2D-3D matches (LocalizerConfig.method)
# ---------------------------------------------------------------------------------------------------------------
METHODS = ("pnp", "retrieval", "2d2d")
# method "retrieval": the top-1 keyframe's pose is the answer; its covariance says "somewhere near that keyframe"
# (1 m and 10 deg per axis: the scale of PNLP's retrieval-only errors on 7-Scenes, 0.3-0.45 m / 10-20 deg).
RETRIEVAL_SIGMA_M = 1.0
RETRIEVAL_SIGMA_DEG = 10.0


def pose_without_3d(db, method: str, features, camera, candidates, ratio: float = 0.8, mutual: bool = True,
                    cfg: RelPoseConfig = RelPoseConfig(), timings: dict | None = None) -> RelPoseResult:
    """The query pose by ``method`` "retrieval" (top-1 keyframe pose) or "2d2d" (relative poses to the
    retrieved keyframes, intersected), from a loaded map ``db``.

    Args:
        db: :class:`reloc_ros.core.mapdb.MapDatabase`; 2D-2D uses *all* keypoints of the keyframes (3D or not).
        features: the query's features; camera: its intrinsics (keypoints are undistorted with it).
        candidates: retrieved keyframe indices, best first.
        timings: per-stage milliseconds are added here ("matching", "relpose").
    """
    if method not in METHODS[1:]:
        raise ValueError(f"unknown localization method {method!r}; choose one of {list(METHODS)}")
    cand = [int(k) for k in candidates]
    if not cand:
        return RelPoseResult(False, "no candidates: the map is empty")
    if method == "retrieval":
        cov = np.diag([RETRIEVAL_SIGMA_M ** 2] * 3 + [np.radians(RETRIEVAL_SIGMA_DEG) ** 2] * 3)
        return RelPoseResult(True, T_map_from_cam=np.array(db.T_map_from_cam[cand[0]], np.float64), covariance=cov,
                             inlier_lines=[cand[0]])
    t = time.perf_counter()
    kq = camera.undistort_points(features.keypoints)
    views = []
    for k in cand:
        s = db.keyframe_slice(k)
        m, _ = match_mutual_nn(features.descriptors, db.descriptors[s], ratio, mutual)
        views.append(KeyframeView(k, db.T_map_from_cam[k], db.cameras[k].K, db.keypoints[s][m[:, 1]], kq[m[:, 0]]))
    if timings is not None:
        timings["matching"] = (time.perf_counter() - t) * 1000.0
    t = time.perf_counter()
    res = relocalize_2d2d(views, camera.K, cfg)
    if timings is not None:
        timings["relpose"] = (time.perf_counter() - t) * 1000.0
    return res
