"""Absolute pose from 2D-3D correspondences: minimal solver in RANSAC, refinement, covariance.

Two backends behind one function: OpenCV (``solvePnPRansac`` with AP3P, then Levenberg-Marquardt on the
inliers) and PoseLib (LO-RANSAC with P3P and bundle refinement). Both are measured in
``test/test_pnp.py`` and ``docs/RESULTS.md``; the default is the one that measured better.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from reloc_ros.core.geometry import invert_T, make_T, so3_exp

__all__ = ["PnPConfig", "PnPResult", "solve_pnp", "refine_pnp", "pose_covariance", "reprojection_errors"]


@dataclass
class PnPConfig:
    backend: str = "poselib"  # "poselib" (LO-RANSAC + bundle refinement) or "opencv" (AP3P RANSAC + LM)
    reproj_px: float = 8.0  # RANSAC inlier threshold on reprojection error, pixels
    max_iterations: int = 10000  # RANSAC iteration cap
    confidence: float = 0.9999  # RANSAC success probability
    min_sigma_px: float = 0.5  # floor of the per-point reprojection noise used for the covariance
    # > 0: after RANSAC, refine the pose once more on the correspondences within this many pixels only (Cauchy loss
    # at half of it). The inliers (and the covariance) stay those within ``reproj_px`` of the final pose; only the
    # pose gets more precise when near-misses (a neighbouring keypoint matched, 3-6 px off) pass the RANSAC threshold.
    polish_px: float = 0.0
    polish_min_points: int = 12  # polish only when at least this many correspondences are within polish_px


@dataclass
class PnPResult:
    """Outcome of :func:`solve_pnp`.

    Attributes:
        success: a pose was found (says nothing about its plausibility: see the localizer's gates).
        T_cam_from_world: 4x4 pose (identity when not successful).
        inliers: ``[P]`` boolean mask over the input correspondences.
        reproj_px: ``[P]`` reprojection error of every correspondence under the final pose (pixels).
        covariance: 6x6 covariance of (position xyz, rotation xyz) of the camera in the world frame,
            ROS ``PoseWithCovariance`` order; rotation as a small rotation vector applied on the left
            (R' = exp(w) R).
    """

    success: bool
    T_cam_from_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    reproj_px: np.ndarray = field(default_factory=lambda: np.zeros(0))
    covariance: np.ndarray = field(default_factory=lambda: np.full((6, 6), np.nan))

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def reprojection_errors(T_cam_from_world: np.ndarray, K_33: np.ndarray, uv_P2: np.ndarray,
                        xyz_P3: np.ndarray) -> np.ndarray:
    """Pixel distance between observations and projections; points behind the camera get +inf."""
    Xc = xyz_P3 @ T_cam_from_world[:3, :3].T + T_cam_from_world[:3, 3]
    z = Xc[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    proj = np.stack([K_33[0, 0] * Xc[:, 0] / zs + K_33[0, 2], K_33[1, 1] * Xc[:, 1] / zs + K_33[1, 2]], axis=1)
    err = np.linalg.norm(proj - uv_P2, axis=1)
    return np.where(front, err, np.inf)


def solve_pnp(uv_P2: np.ndarray, xyz_P3: np.ndarray, K_33: np.ndarray, image_size: tuple[int, int],
              cfg: PnPConfig = PnPConfig()) -> PnPResult:
    """Camera pose from ideal (undistorted) pixel observations of known 3D points.

    Args:
        uv_P2: ``[P x 2]`` pixel coordinates (pinhole model ``K_33``, no distortion).
        xyz_P3: ``[P x 3]`` points in the world (map) frame.
        K_33: intrinsics.
        image_size: (width, height), used by PoseLib's camera model.
    """
    uv = np.ascontiguousarray(uv_P2, np.float64).reshape(-1, 2)
    X = np.ascontiguousarray(xyz_P3, np.float64).reshape(-1, 3)
    if len(uv) < 4:
        return PnPResult(False)
    if cfg.backend == "poselib":
        T = _ransac_poselib(uv, X, K_33, image_size, cfg)
    elif cfg.backend == "opencv":
        T = _ransac_opencv(uv, X, K_33, cfg)
    else:
        raise ValueError(f"unknown PnP backend {cfg.backend!r}; choose 'poselib' or 'opencv'")
    if T is None:
        return PnPResult(False)
    if 0 < cfg.polish_px < cfg.reproj_px:
        T = _polish(uv, X, K_33, image_size, T, cfg)
    err = reprojection_errors(T, K_33, uv, X)
    inl = err <= cfg.reproj_px
    if inl.sum() < 4:
        return PnPResult(False)
    # The covariance from all inliers, also after a polish: from the polished set alone, poses with few inliers got
    # far too small covariances (a 28-inlier pose 0.22 m off: NEES ~4000; docs/RESULTS.md "Covariance calibration").
    cov = pose_covariance(T, K_33, uv[inl], X[inl], cfg.min_sigma_px)
    return PnPResult(True, T, inl, err, cov)


def refine_pnp(uv_P2: np.ndarray, xyz_P3: np.ndarray, K_33: np.ndarray, image_size: tuple[int, int],
               T_init: np.ndarray, cfg: PnPConfig = PnPConfig(), rounds: int = 3) -> PnPResult:
    """Refine a known-good pose (``T_cam_from_world``) on new correspondences, without RANSAC: the
    correspondences within ``cfg.reproj_px`` of the pose are the inliers, a robust (Cauchy) Gauss-Newton
    refinement moves the pose, and inliers are re-selected, up to ``rounds`` times (until they stop changing).
    Meant for correspondences found *with* the pose (guided matching), where a random-sample search would only
    find the same pose again at a few times the cost."""
    uv = np.ascontiguousarray(uv_P2, np.float64).reshape(-1, 2)
    X = np.ascontiguousarray(xyz_P3, np.float64).reshape(-1, 3)
    T = np.asarray(T_init, np.float64)
    inl = reprojection_errors(T, K_33, uv, X) <= cfg.reproj_px
    for _ in range(max(1, int(rounds))):
        if inl.sum() < 4:
            return PnPResult(False)
        T = _refine_once(uv[inl], X[inl], K_33, image_size, T, cfg)
        err = reprojection_errors(T, K_33, uv, X)
        new = err <= cfg.reproj_px
        if np.array_equal(new, inl):
            break
        inl = new
    if inl.sum() < 4:
        return PnPResult(False)
    return PnPResult(True, T, inl, err, pose_covariance(T, K_33, uv[inl], X[inl], cfg.min_sigma_px))


def _polish(uv, X, K, image_size, T, cfg: PnPConfig, rounds: int = 2) -> np.ndarray:
    """Refinement on the correspondences within ``cfg.polish_px`` (re-selected once); T unchanged when fewer than
    ``polish_min_points`` are that close."""
    tight = dataclasses.replace(cfg, reproj_px=cfg.polish_px)
    for _ in range(rounds):
        sel = reprojection_errors(T, K, uv, X) <= cfg.polish_px
        if sel.sum() < max(4, cfg.polish_min_points):
            break
        T = _refine_once(uv[sel], X[sel], K, image_size, T, tight)
    return T


def _refine_once(uv, X, K, image_size, T, cfg: PnPConfig) -> np.ndarray:
    if cfg.backend == "poselib":
        import poselib

        pose = poselib.CameraPose()
        pose.R, pose.t = T[:3, :3], T[:3, 3]
        pose, _ = poselib.refine_absolute_pose(uv, X, pose, _poselib_camera(K, image_size), _bundle_options(cfg))
        return make_T(np.asarray(pose.R), np.asarray(pose.t))
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    rvec, tvec = cv2.solvePnPRefineLM(X, uv, K, None, rvec, T[:3, 3].reshape(3, 1).copy())
    return make_T(cv2.Rodrigues(rvec)[0], tvec.reshape(3))


def _ransac_opencv(uv, X, K, cfg: PnPConfig):
    ok, rvec, tvec, inl = cv2.solvePnPRansac(
        X, uv, K, None, iterationsCount=cfg.max_iterations, reprojectionError=cfg.reproj_px,
        confidence=cfg.confidence, flags=cv2.SOLVEPNP_AP3P)
    if not ok or inl is None or len(inl) < 4:
        return None
    for _ in range(2):  # refine on inliers, re-select inliers, refine again
        idx = inl.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(X[idx], uv[idx], K, None, rvec, tvec)
        T = make_T(cv2.Rodrigues(rvec)[0], tvec.reshape(3))
        err = reprojection_errors(T, K, uv, X)
        inl = np.flatnonzero(err <= cfg.reproj_px)
        if len(inl) < 4:
            return None
    return T


def _ransac_poselib(uv, X, K, image_size, cfg: PnPConfig):
    import poselib

    ransac_opt = {"max_reproj_error": float(cfg.reproj_px), "max_iterations": int(cfg.max_iterations),
                  "success_prob": float(cfg.confidence), "min_iterations": 100}
    pose, info = poselib.estimate_absolute_pose(uv, X, _poselib_camera(K, image_size), ransac_opt,
                                                _bundle_options(cfg))
    if info.get("num_inliers", 0) < 4:
        return None
    return make_T(np.asarray(pose.R), np.asarray(pose.t))


def _poselib_camera(K, image_size) -> dict:
    return {"model": "PINHOLE", "width": int(image_size[0]), "height": int(image_size[1]),
            "params": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]}


def _bundle_options(cfg: PnPConfig) -> dict:
    """PoseLib's refinement: Cauchy loss at half the inlier threshold (RANSAC's final step and refine_pnp)."""
    return {"loss_type": "CAUCHY", "loss_scale": float(cfg.reproj_px) / 2.0, "max_iterations": 100}


def pose_covariance(T_cam_from_world: np.ndarray, K_33: np.ndarray, uv_P2: np.ndarray, xyz_P3: np.ndarray,
                    min_sigma_px: float = 0.5) -> np.ndarray:
    """First-order covariance of the camera pose from the reprojection residuals' Jacobian.

    The pose is parametrised as the camera centre ``c`` and a left rotation increment ``w`` of
    ``R_world_from_cam`` (both in the world frame), the parametrisation of ROS ``PoseWithCovariance``.
    ``cov = sigma^2 (J^T J)^-1`` with sigma^2 the residuals' variance (floored at ``min_sigma_px``^2).
    """
    P = len(uv_P2)
    if P < 4:
        return np.full((6, 6), np.nan)
    T_wc = invert_T(T_cam_from_world)
    R0, c0 = T_wc[:3, :3], T_wc[:3, 3]

    def residuals(delta):
        R = so3_exp(delta[3:]) @ R0
        c = c0 + delta[:3]
        Xc = (xyz_P3 - c) @ R  # = R^T (X - c) row-wise
        z = np.where(np.abs(Xc[:, 2]) > 1e-9, Xc[:, 2], 1e-9)
        u = K_33[0, 0] * Xc[:, 0] / z + K_33[0, 2]
        v = K_33[1, 1] * Xc[:, 1] / z + K_33[1, 2]
        return np.concatenate([u - uv_P2[:, 0], v - uv_P2[:, 1]])

    r0 = residuals(np.zeros(6))
    J = np.empty((2 * P, 6))
    for i in range(6):  # central differences; the residual is smooth and cheap
        eps = 1e-6 * max(1.0, float(np.linalg.norm(c0))) if i < 3 else 1e-6
        d = np.zeros(6)
        d[i] = eps
        J[:, i] = (residuals(d) - residuals(-d)) / (2 * eps)
    dof = max(2 * P - 6, 1)
    sigma2 = max(float(r0 @ r0) / dof, min_sigma_px**2)
    JtJ = J.T @ J
    try:
        cov = sigma2 * np.linalg.inv(JtJ)
    except np.linalg.LinAlgError:
        return np.full((6, 6), np.nan)
    return 0.5 * (cov + cov.T)
