"""Metrics of the encoder's heads (used by :mod:`reloc_ros.model.eval_heads`): relative-pose error and AUC, the
relative pose from two views' matches, retrieval correctness and recall, depth errors, and helpers (bilinear
sampling, view overlap, nearest frame by pose, a bootstrap interval of an AUC difference). numpy / OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np

from reloc_ros.core.geometry import invert_T, rotation_error_deg, transform_points

__all__ = ["AUC_THRESHOLDS", "RECALL_KS", "relative_pose_error", "pose_auc", "estimate_relative_pose",
           "retrieval_correct", "retrieval_recall", "depth_errors", "sample_bilinear", "auc_difference_ci",
           "points_overlap", "nearest_by_pose"]


AUC_THRESHOLDS = (5.0, 10.0, 20.0)  # degrees


RECALL_KS = (1, 5)


def _angle_deg(a_3: np.ndarray, b_3: np.ndarray) -> float:
    a = np.asarray(a_3, np.float64).reshape(3)
    b = np.asarray(b_3, np.float64).reshape(3)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return float("nan")
    # atan2 of |cross| and dot: accurate for tiny and for near-180 deg angles alike
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), float(a @ b))))


def relative_pose_error(T_1_from_0_gt: np.ndarray, R_1_from_0: np.ndarray | None,
                        t_1_from_0: np.ndarray | None) -> tuple[float, float]:
    """(rotation error, translation-direction error) in degrees of an estimated relative pose.

    The translation of an essential matrix has no scale and, before the chirality check, no sign: its error is
    the angle between the directions, folded to [0, 90] (``min(e, 180 - e)``, as SuperGlue and LoFTR do).
    A failed estimate (``None``) has infinite errors.
    """
    if R_1_from_0 is None or t_1_from_0 is None:
        return float("inf"), float("inf")
    err_r = rotation_error_deg(T_1_from_0_gt[:3, :3], R_1_from_0)
    e = _angle_deg(t_1_from_0, T_1_from_0_gt[:3, 3])
    if not np.isfinite(e):
        return err_r, float("inf")
    return err_r, float(min(e, 180.0 - e))


def pose_auc(errors_deg, thresholds=AUC_THRESHOLDS) -> dict[str, float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 100] (percent).

    The cumulative curve starts at (0, 0), steps up by 1/N at each sorted error and is integrated with the
    trapezoidal rule up to the threshold (the convention of SuperGlue, LoFTR and LightGlue). Infinite errors
    (failures) count as misses. A perfect estimator scores 100; errors spread uniformly over [0, t] score ~50
    at t.
    """
    e = np.sort(np.asarray(errors_deg, np.float64).reshape(-1))
    if len(e) == 0:
        return {f"auc@{t:g}": float("nan") for t in thresholds}
    e = np.where(np.isnan(e), np.inf, e)
    recall = np.r_[0.0, np.arange(1, len(e) + 1) / len(e)]
    e = np.r_[0.0, e]
    out = {}
    for t in thresholds:
        last = int(np.searchsorted(e, t))  # e[:last] < t
        x = np.r_[e[:last], t]
        y = np.r_[recall[:last], recall[last - 1]]
        out[f"auc@{t:g}"] = float(100.0 * np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0) / t)
    return out


def estimate_relative_pose(kpts0_N2: np.ndarray, kpts1_N2: np.ndarray, K0_33: np.ndarray, K1_33: np.ndarray,
                           threshold_px: float = 1.0, confidence: float = 0.99999):
    """Relative pose ``T_1_from_0`` (R, unit t) from matched pixels: essential matrix in RANSAC + recoverPose.

    Points are normalised with their own intrinsics, so the two cameras may differ; the RANSAC threshold
    (pixels) is divided by the mean focal length. When RANSAC returns several essential matrices, the one
    with the most points passing the chirality check wins.

    Returns:
        (R_33, t_3, RANSAC inlier mask ``[N]``) or None (fewer than 5 matches or no solution).
    """
    if len(kpts0_N2) < 5:
        return None
    p0 = cv2.undistortPoints(np.asarray(kpts0_N2, np.float64).reshape(-1, 1, 2), K0_33, None).reshape(-1, 2)
    p1 = cv2.undistortPoints(np.asarray(kpts1_N2, np.float64).reshape(-1, 1, 2), K1_33, None).reshape(-1, 2)
    f = np.mean([K0_33[0, 0], K0_33[1, 1], K1_33[0, 0], K1_33[1, 1]])
    cv2.setRNGSeed(0)  # RANSAC samples: the same figures on every run
    E, mask = cv2.findEssentialMat(p0, p1, np.eye(3), method=cv2.RANSAC, prob=confidence,
                                   threshold=threshold_px / f)
    if E is None or mask is None:
        return None
    best = None
    for i in range(len(E) // 3):
        n, R, t, _ = cv2.recoverPose(E[3 * i:3 * i + 3], p0, p1, np.eye(3), mask=mask.copy())
        if best is None or n > best[0]:
            best = (n, R, t.reshape(3))
    if best is None or best[0] == 0:
        return None
    return best[1], best[2], mask.reshape(-1) > 0


def _distances_angles(T_w_from_q_Q44: np.ndarray, T_w_from_db_M44: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[Q x M]`` distances between the camera centres (m) and rotation angles between the orientations (deg)."""
    Tq = np.asarray(T_w_from_q_Q44, np.float64)
    Td = np.asarray(T_w_from_db_M44, np.float64)
    dist = np.linalg.norm(Tq[:, None, :3, 3] - Td[None, :, :3, 3], axis=2)
    # rotation angle of R_q^T R_db from its trace
    tr = np.einsum("qji,mji->qm", Tq[:, :3, :3], Td[:, :3, :3])
    return dist, np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def retrieval_correct(T_w_from_q_Q44: np.ndarray, T_w_from_db_M44: np.ndarray, max_dist_m: float,
                      max_angle_deg: float, q_group=None, db_group=None) -> np.ndarray:
    """``[Q x M]`` bool: database image m is a correct retrieval for query q (same group, camera centres within
    ``max_dist_m`` and orientations within ``max_angle_deg``). Groups (e.g. scene names) keep images of different
    scenes apart when their coordinates are unrelated."""
    dist, ang = _distances_angles(T_w_from_q_Q44, T_w_from_db_M44)
    ok = (dist <= max_dist_m) & (ang <= max_angle_deg)
    if q_group is not None or db_group is not None:
        if q_group is None or db_group is None:
            raise ValueError("give groups for both queries and database images, or for neither")
        ok &= np.asarray(q_group)[:, None] == np.asarray(db_group)[None, :]
    return ok


def retrieval_recall(ranked_QK: np.ndarray, correct_QM: np.ndarray, ks=RECALL_KS) -> dict[str, float]:
    """Percent of queries with at least one correct image among their first k retrieved (``ranked_QK``:
    database indices, best first; -1 = no result)."""
    ranked = np.asarray(ranked_QK, np.int64)
    Q = len(ranked)
    if Q == 0:
        return {f"r@{k}": float("nan") for k in ks}
    valid = ranked >= 0
    hit = np.zeros(ranked.shape, bool)
    rows = np.repeat(np.arange(Q)[:, None], ranked.shape[1], axis=1)
    hit[valid] = np.asarray(correct_QM, bool)[rows[valid], ranked[valid]]
    return {f"r@{k}": float(100.0 * np.mean(hit[:, :k].any(axis=1))) for k in ks}


def depth_errors(pred_N: np.ndarray, gt_N: np.ndarray, median_scaling: bool = False) -> dict[str, float]:
    """AbsRel = mean(|pred - gt| / gt) and delta1 = fraction with max(pred / gt, gt / pred) < 1.25, over the
    pixels (or points) of one image where both are finite and > 0.

    ``median_scaling`` first multiplies the prediction by median(gt) / median(pred) (scale-free evaluation).
    Returns NaNs (and n = 0) when no pixel is valid.
    """
    p = np.asarray(pred_N, np.float64).reshape(-1)
    g = np.asarray(gt_N, np.float64).reshape(-1)
    ok = np.isfinite(p) & np.isfinite(g) & (p > 0) & (g > 0)
    p, g = p[ok], g[ok]
    if len(g) == 0:
        return {"abs_rel": float("nan"), "delta1": float("nan"), "scale": float("nan"), "n": 0}
    s = float(np.median(g) / np.median(p)) if median_scaling else 1.0
    p = p * s
    ratio = np.maximum(p / g, g / p)
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "delta1": float(np.mean(ratio < 1.25)), "scale": s,
            "n": len(g)}


def _mean_depth_metrics(per_image: list[dict]) -> dict[str, float]:
    rows = [r for r in per_image if r["n"] > 0]
    if not rows:
        return {"images": 0, "abs_rel": float("nan"), "delta1": float("nan"), "median_scale": float("nan")}
    return {"images": len(rows), "abs_rel": float(np.mean([r["abs_rel"] for r in rows])),
            "delta1": float(100.0 * np.mean([r["delta1"] for r in rows])),
            "median_scale": float(np.median([r["scale"] for r in rows])),
            "points": int(sum(r["n"] for r in rows))}


def sample_bilinear(map_hw: np.ndarray, xy_N2: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Bilinear samples of a map covering the whole ``image_size`` (W, H) image at image pixels ``xy_N2``
    (pixel centres aligned: pixel u -> map ``(u + 0.5) * w / W - 0.5``); NaN outside."""
    h, w = map_hw.shape
    W, H = image_size
    xy = np.asarray(xy_N2, np.float64).reshape(-1, 2)
    mx = ((xy[:, 0] + 0.5) * w / W - 0.5).astype(np.float32).reshape(1, -1)
    my = ((xy[:, 1] + 0.5) * h / H - 0.5).astype(np.float32).reshape(1, -1)
    out = cv2.remap(np.ascontiguousarray(map_hw, np.float32), mx, my, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    return out.reshape(-1).astype(np.float64)


def auc_difference_ci(errors_a, errors_b, n_boot: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """AUC(a) - AUC(b) (percentage points) over the same pairs and its 95 % paired-bootstrap interval:
    ``{"auc@t": [difference, low, high]}``."""
    a = np.asarray(errors_a, np.float64)
    b = np.asarray(errors_b, np.float64)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired errors needed, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        pa, pb = pose_auc(a[i]), pose_auc(b[i])
        diffs.append([pa[k] - pb[k] for k in pa])
    lo, hi = np.percentile(np.array(diffs), [2.5, 97.5], axis=0)
    pa, pb = pose_auc(a), pose_auc(b)
    return {k: [float(pa[k] - pb[k]), float(x), float(y)] for k, x, y in zip(pa, lo, hi)}


def points_overlap(P_N3: np.ndarray, T_w_from_cam: np.ndarray, camera) -> float:
    """Fraction of the finite 3D points ``P_N3`` (a query's triangulated points) that project in front of and
    inside the image of ``camera`` at pose ``T_w_from_cam`` (no occlusion test)."""
    P = np.asarray(P_N3, np.float64)
    P = P[np.isfinite(P[:, 0])]
    if len(P) == 0:
        return 0.0
    uv, front = camera.project(transform_points(invert_T(T_w_from_cam), P))
    return float(np.mean(front & camera.in_image(uv)))


def nearest_by_pose(T_q44: np.ndarray, T_db_M44: np.ndarray, max_angle_deg: float) -> int:
    """Index of the database camera nearest to the query's centre among those whose orientation is within
    ``max_angle_deg``; -1 when none is."""
    d, ang = _distances_angles(np.asarray(T_q44)[None], T_db_M44)
    d = np.where(ang[0] <= max_angle_deg, d[0], np.inf)
    j = int(np.argmin(d))
    return j if np.isfinite(d[j]) else -1
