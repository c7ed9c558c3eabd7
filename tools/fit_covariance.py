#!/usr/bin/env python3
"""Fit the covariance model of depth-image maps (docs/RESULTS.md "Covariance calibration").

The published position covariance is ``a f C_pnp + (rho z)^2 / n x I`` (Localizer._covariance: ``a`` =
PNP_COVARIANCE_SCALE, ``rho`` = MAP_POINT_SIGMA_REL of the map's point source, ``f = max(1, s0 / s) ** k`` the
keypoint-confidence factor of DETECTION_SCORE_COVARIANCE with ``s`` the median detection score of the query's
keypoints). For each (map, dataset) pair this localizes every ``--every``-th query, keeps the correct poses (within
0.5 m, 5 deg) and records the PnP covariance, the median inlier depth ``z``, the contributing keyframes ``n``, ``s``
and the position error; then it prints, per scene and for a grid of (a, rho, s0, k), the median and mean position
NEES (calibrated: 2.37 and 3). The fit uses the tuning scenes only; pass the benchmark scenes with --check to see
the chosen values there. ``--fixed-a-rho A RHO`` fits only (s0, k).

Usage:
    python tools/fit_covariance.py --fit MAP:DATASET [MAP:DATASET ...] [--check MAP:DATASET ...] [--every 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reloc_ros.core.geometry import pose_errors  # noqa: E402
from reloc_ros.core.localizer import Localizer, LocalizerConfig, extractor_for_map, \
    keypoint_confidence_factor  # noqa: E402
from reloc_ros.core.mapdb import MapDatabase  # noqa: E402
from reloc_ros.datasets import load_dataset  # noqa: E402
from reloc_ros.datasets.base import load_image  # noqa: E402
from reloc_ros.pipelines.evaluate import is_wrong  # noqa: E402

GRID_A = (1, 2, 3, 4, 5, 6, 8)
GRID_RHO = (0.0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.0042)
GRID_S0 = (0.0, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08)  # 0: no keypoint-confidence factor
GRID_K = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


class _Recording(Localizer):
    """A Localizer that keeps the inputs of its last covariance."""

    last = None
    _score_median = 1.0

    def _covariance(self, pnp_cov, z_med, n_keyframes, score_factor=None):
        if score_factor is None:  # the published covariance (not the tracker's copy without the factor)
            self.last = (pnp_cov[:3, :3].copy(), float(z_med), int(n_keyframes), self._score_median)
        return super()._covariance(pnp_cov, z_med, n_keyframes, score_factor)

    def detection_score_factor(self, features):
        self._score_median = float(np.median(features.scores)) if len(features) else 1.0
        return super().detection_score_factor(features)


def collect(map_dir: str, dataset: str, every: int) -> list[tuple]:
    db = MapDatabase.load(map_dir)
    loc = _Recording(db, extractor_for_map(db), LocalizerConfig())
    _, queries = load_dataset(dataset, "7scenes").split(None)
    rows = []
    for f in queries[::every]:
        loc.last = None
        res = loc.localize(load_image(f), f.camera)
        if res.ok and not is_wrong(*pose_errors(res.T_map_from_cam, f.T_world_from_cam)):
            rows.append((*loc.last, res.T_map_from_cam[:3, 3] - f.T_world_from_cam[:3, 3]))
    return rows


def nees(rows, a: float, rho: float, s0: float = 0.0, k: float = 1.0) -> tuple[float, float]:
    v = [e @ np.linalg.solve(a * keypoint_confidence_factor(s, s0, k) * P + np.eye(3) * (rho * z) ** 2 / max(n, 1), e)
         for P, z, n, s, e in rows]
    return float(np.median(v)), float(np.mean(v))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", nargs="+", required=True, metavar="MAP:DATASET")
    ap.add_argument("--check", nargs="*", default=[], metavar="MAP:DATASET")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--fixed-a-rho", nargs=2, type=float, default=None, metavar=("A", "RHO"))
    args = ap.parse_args()
    data = {}
    for pair in args.fit + args.check:
        m, d = pair.split(":")
        data[pair] = collect(m, d, args.every)
        print(f"{pair}: {len(data[pair])} correct poses", file=sys.stderr)
    fit = [data[p] for p in args.fit]
    grid_a, grid_rho = (([args.fixed_a_rho[0]], [args.fixed_a_rho[1]]) if args.fixed_a_rho else (GRID_A, GRID_RHO))
    scored = sorted((float(np.mean([abs(np.log(nees(r, a, rho, s0, k)[1] / 3.0)) for r in fit])), a, rho, s0, k)
                    for a in grid_a for rho in grid_rho for s0 in GRID_S0 for k in (GRID_K if s0 else (1.0,)))
    print("| a | rho | s0 | k | " + " | ".join(Path(p.split(":")[1]).name for p in data) + " |")
    print("|---|---|---|---|" + "---|" * len(data))
    best = scored[:5] + [x for x in scored if x[3] == 0.0][:1]  # and the best without the keypoint factor
    for _, a, rho, s0, k in best:
        cells = ["%.2f / %.2f" % nees(data[p], a, rho, s0, k) for p in data]
        print(f"| {a} | {rho} | {s0} | {k} | " + " | ".join(cells) + " |")
    print("(median / mean position NEES of the correct poses; best fits on the --fit scenes first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
