#!/usr/bin/env python3
"""Where does the learned path's pose precision go? (docs/precision.md)

For every query of the given (map, dataset) pairs it localizes as the CLI does, keeps the correspondences of the
accepted pose, and measures against the ground-truth poses:

- ``gt_px``: reprojection error of the PnP inliers under the query's ground-truth pose (keypoint error and map-point
  error together);
- ``epi_px``: symmetric epipolar distance of the same query keypoints to the map keypoints they were matched to,
  under both ground-truth poses (keypoint error alone: no map 3D involved);
- ``pose_cm``: position error of the pose, and ``inliers``.

If ``gt_px`` is much larger than ``epi_px`` the map points are what is imprecise; if both are large, the keypoints.

Usage:
    python tools/precision_breakdown.py --pair LABEL MAP DATASET FORMAT [--pair ...] [--map-every 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reloc_ros.core.geometry import invert_T, pose_errors  # noqa: E402
from reloc_ros.core.localizer import Localizer, LocalizerConfig  # noqa: E402
from reloc_ros.core.mapdb import MapDatabase, extractor_for_map  # noqa: E402
from reloc_ros.datasets import load_dataset  # noqa: E402
from reloc_ros.datasets.base import load_image  # noqa: E402


class _Recording(Localizer):
    """Keeps the matches and the solved pose of the last query."""

    def _solve(self, per_kf, kpts_ideal, camera, t):
        solved = super()._solve(per_kf, kpts_ideal, camera, t)
        self.last = (per_kf, kpts_ideal, solved)
        return solved


def _skew(v):
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _epipolar_px(uv_q, uv_k, K_q, K_k, T_w_q, T_w_k):
    """Symmetric epipolar distance (px) of matched ideal pixels under the two ground-truth poses."""
    T_k_q = invert_T(T_w_k) @ T_w_q
    E = _skew(T_k_q[:3, 3]) @ T_k_q[:3, :3]
    F = np.linalg.inv(K_k).T @ E @ np.linalg.inv(K_q)
    xq = np.c_[uv_q, np.ones(len(uv_q))]
    xk = np.c_[uv_k, np.ones(len(uv_k))]
    l_k = xq @ F.T  # lines in the keyframe
    l_q = xk @ F  # lines in the query
    d_k = np.abs(np.sum(l_k * xk, 1)) / np.hypot(l_k[:, 0], l_k[:, 1])
    d_q = np.abs(np.sum(l_q * xq, 1)) / np.hypot(l_q[:, 0], l_q[:, 1])
    return 0.5 * (d_k + d_q)


def measure(map_dir: Path, dataset: Path, fmt: str, map_every: int | None) -> dict:
    db = MapDatabase.load(map_dir)
    loc = _Recording(db, extractor_for_map(db), LocalizerConfig())
    frames = {n: None for n in db.names}
    ds = load_dataset(dataset, fmt)
    map_frames, queries = ds.split(map_every)
    by_name = {f.name: f for f in map_frames}
    gt_px, epi_px, pose_cm, inl = [], [], [], []
    for q in queries:
        res = loc.localize(load_image(q), q.camera)
        if not res.ok:
            continue
        per_kf, kpts_ideal, solved = loc.last
        pnp, corr = solved.pnp, solved.corr
        T_gt = q.T_world_from_cam
        pose_cm.append(100 * pose_errors(res.T_map_from_cam, T_gt)[0])
        inl.append(pnp.num_inliers)
        X = corr.xyz[pnp.inliers]
        Xc = (X - T_gt[:3, 3]) @ T_gt[:3, :3]
        uv_gt = (Xc[:, :2] / Xc[:, 2:3]) * [q.camera.fx, q.camera.fy] + [q.camera.cx, q.camera.cy]
        gt_px.append(np.median(np.linalg.norm(uv_gt - corr.uv[pnp.inliers], axis=1)))
        inlier_q = set(corr.query_idx[pnp.inliers].tolist())
        e = []
        for k, m, _ in per_kf:
            keep = np.array([qi in inlier_q for qi in m[:, 0]], bool)
            if not keep.any():
                continue
            kf = by_name[db.names[k]]
            e.append(_epipolar_px(kpts_ideal[m[keep, 0]], loc._kf_uv[k][m[keep, 1]], q.camera.K, kf.camera.K,
                                  T_gt, kf.T_world_from_cam))
        epi_px.append(np.median(np.concatenate(e)) if e else np.nan)
    del frames
    med = lambda v: float(np.nanmedian(v)) if len(v) else float("nan")  # noqa: E731
    return {"queries": len(queries), "localized": len(pose_cm), "pose_cm": med(pose_cm), "gt_px": med(gt_px),
            "epi_px": med(epi_px), "inliers": med(inl)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=4, action="append", required=True, metavar=("LABEL", "MAP", "DATASET", "FORMAT"))
    ap.add_argument("--map-every", type=int, default=None)
    args = ap.parse_args()
    print("| run | localized | median position error (cm) | inliers' GT reprojection (px) | "
          "their epipolar error (px) | inliers |")
    print("|---|---|---|---|---|---|")
    for label, m, d, fmt in args.pair:
        r = measure(Path(m), Path(d), fmt, args.map_every)
        print(f"| {label} | {r['localized']} / {r['queries']} | {r['pose_cm']:.1f} | {r['gt_px']:.2f} | "
              f"{r['epi_px']:.2f} | {r['inliers']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
