"""Confidence-weighted aggregation of 2D-3D correspondences from several retrieved keyframes (DeViLoc).

Matches of one query image against the top-K keyframes give, for many query keypoints, several 3D
points (one per keyframe that matched it). DeViLoc merges them: for all correspondences whose query keypoint
quantises to the same cell, ``p_agg = sum(c_i p_i) / sum(c_i)``. A wrong match in one keyframe would drag
that mean away, so here the mean runs over the points that agree with the most confident one (within a
tolerance relative to their viewing distance); points that disagree are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Correspondences", "aggregate_correspondences"]


@dataclass
class Correspondences:
    """A 2D-3D correspondence set.

    Attributes:
        uv: ``[P x 2]`` ideal (undistorted) query pixel coordinates.
        xyz: ``[P x 3]`` points in the map frame.
        conf: ``[P]`` confidence weights (> 0).
        query_idx: ``[P]`` index of the query keypoint each correspondence belongs to.
        support: ``[P]`` number of keyframes whose points were merged into each correspondence.
    """

    uv: np.ndarray
    xyz: np.ndarray
    conf: np.ndarray
    query_idx: np.ndarray
    support: np.ndarray

    def __len__(self) -> int:
        return len(self.uv)


def aggregate_correspondences(uv_M2: np.ndarray, query_idx_M: np.ndarray, xyz_M3: np.ndarray,
                              conf_M: np.ndarray, ref_center_M3: np.ndarray, cell_px: float = 0.0,
                              rel_tol: float = 0.05) -> Correspondences:
    """Merge correspondences that share a query keypoint (or quantisation cell).

    Args:
        uv_M2: query pixel of each raw correspondence.
        query_idx_M: query keypoint index of each raw correspondence.
        xyz_M3: 3D point (map frame) of each raw correspondence.
        conf_M: confidence (> 0) of each raw correspondence (match score x point confidence).
        ref_center_M3: centre of the keyframe camera each point was seen from (sets the agreement tolerance).
        cell_px: quantisation cell Q_s in pixels; 0 groups by keypoint index only.
        rel_tol: points agree when closer than ``rel_tol`` x their distance to the reference camera.

    Returns:
        The merged correspondences (one per group), ordered by decreasing total confidence.
    """
    M = len(uv_M2)
    if M == 0:
        z2, z3 = np.zeros((0, 2)), np.zeros((0, 3))
        return Correspondences(z2, z3, np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    uv = np.asarray(uv_M2, np.float64)
    xyz = np.asarray(xyz_M3, np.float64)
    conf = np.asarray(conf_M, np.float64)
    qidx = np.asarray(query_idx_M, np.int64)
    if cell_px > 0:
        cells = np.round(uv / cell_px).astype(np.int64)
        key = cells[:, 0] * 1_000_003 + cells[:, 1]
    else:
        key = qidx
    # Sort by group, most confident first: the first row of each group is its anchor.
    order = np.lexsort((-conf, key))
    key, uv, xyz, conf, qidx = key[order], uv[order], xyz[order], conf[order], qidx[order]
    centers = np.asarray(ref_center_M3, np.float64)[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    group = np.cumsum(np.r_[False, key[1:] != key[:-1]])  # group id of each row
    anchor = starts[group]
    tol = rel_tol * np.linalg.norm(xyz[anchor] - centers[anchor], axis=1)
    agree = np.linalg.norm(xyz - xyz[anchor], axis=1) <= np.maximum(tol, 1e-6)
    G = len(starts)
    w = np.where(agree, conf, 0.0)
    wsum = np.bincount(group, weights=w, minlength=G)
    xyz_agg = np.stack([np.bincount(group, weights=w * xyz[:, c], minlength=G) for c in range(3)], axis=1)
    xyz_agg /= wsum[:, None]
    support = np.bincount(group, weights=agree.astype(np.float64), minlength=G).astype(np.int64)
    out_order = np.argsort(-wsum, kind="stable")
    a = starts[out_order]
    return Correspondences(uv[a], xyz_agg[out_order], wsum[out_order], qidx[a], support[out_order])
