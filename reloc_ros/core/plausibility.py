"""Plausibility measures of a localized pose used by the localizer's gates (numpy / OpenCV).

:func:`inlier_coverage`: the fraction of the image covered by the convex hull of the PnP inliers. A view whose
matches all sit on one small patch (a picture that also hangs elsewhere, a logo, a poster) supports a pose
geometrically but says little about where the camera is: out-of-map queries of the four synthetic scenes that
passed every other gate had coverage 0.014-0.078, correct in-map poses >= 0.107 (SIFT) / 0.124 (learned)
(``tools/eval_out_of_map.py``, docs/reliability.md, docs/RESULTS.md "Wrong-pose gates and out-of-map queries").
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["inlier_coverage"]


def inlier_coverage(inlier_xyz_N3: np.ndarray, T_map_from_cam: np.ndarray, camera) -> float:
    """Fraction in [0, 1] of the ``camera`` image covered by the convex hull of the inliers' map points projected
    with the estimated pose (0 with fewer than 3 points in front of the camera)."""
    T_cam_from_map = np.linalg.inv(np.asarray(T_map_from_cam, np.float64))
    X = np.asarray(inlier_xyz_N3, np.float64).reshape(-1, 3) @ T_cam_from_map[:3, :3].T + T_cam_from_map[:3, 3]
    X = X[np.isfinite(X).all(axis=1) & (X[:, 2] > 1e-6)]
    if len(X) < 3:
        return 0.0
    uv = X[:, :2] / X[:, 2:3] * [camera.fx, camera.fy] + [camera.cx, camera.cy]
    uv = np.clip(uv, [0.0, 0.0], [camera.width, camera.height]).astype(np.float32)
    area = float(cv2.contourArea(cv2.convexHull(uv)))
    return min(area / float(camera.width * camera.height), 1.0)
