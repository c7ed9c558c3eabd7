#!/usr/bin/env python3
"""Fit the covariance model of depth-image maps (docs/RESULTS.md "Covariance calibration").

The published position covariance is ``a x C_pnp + (rho z)^2 / n x I`` (Localizer._covariance: ``a`` =
PNP_COVARIANCE_SCALE, ``rho`` = MAP_POINT_SIGMA_REL of the map's point source). For each (map, dataset) pair this
localizes every ``--every``-th query, keeps the correct poses (within 0.5 m, 5 deg) and records the PnP covariance,
the median inlier depth ``z``, the contributing keyframes ``n`` and the position error; then it prints, per scene
and for a grid of (a, rho), the median and mean position NEES (calibrated: 2.37 and 3). The fit uses the tuning
scenes only; pass the benchmark scenes with --check to see the chosen values there.

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
from reloc_ros.core.localizer import Localizer, LocalizerConfig, extractor_for_map  # noqa: E402
from reloc_ros.core.mapdb import MapDatabase  # noqa: E402
from reloc_ros.datasets import load_dataset  # noqa: E402
from reloc_ros.datasets.base import load_image  # noqa: E402
from reloc_ros.pipelines.evaluate import is_wrong  # noqa: E402

GRID_A = (1, 2, 3, 4, 5, 6, 8)
GRID_RHO = (0.0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.0042)


class _Recording(Localizer):
    """A Localizer that keeps the inputs of its last covariance."""

    last = None

    def _covariance(self, pnp_cov, z_med, n_keyframes):
        self.last = (pnp_cov[:3, :3].copy(), float(z_med), int(n_keyframes))
        return super()._covariance(pnp_cov, z_med, n_keyframes)


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


def nees(rows, a: float, rho: float) -> tuple[float, float]:
    v = [e @ np.linalg.solve(a * P + np.eye(3) * (rho * z) ** 2 / max(n, 1), e) for P, z, n, e in rows]
    return float(np.median(v)), float(np.mean(v))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", nargs="+", required=True, metavar="MAP:DATASET")
    ap.add_argument("--check", nargs="*", default=[], metavar="MAP:DATASET")
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args()
    data = {}
    for pair in args.fit + args.check:
        m, d = pair.split(":")
        data[pair] = collect(m, d, args.every)
        print(f"{pair}: {len(data[pair])} correct poses", file=sys.stderr)
    fit = [data[p] for p in args.fit]
    scored = sorted((float(np.mean([abs(np.log(nees(r, a, rho)[1] / 3.0)) for r in fit])), a, rho)
                    for a in GRID_A for rho in GRID_RHO)
    print("| a | rho | " + " | ".join(Path(p.split(":")[1]).name for p in data) + " |")
    print("|---|---|" + "---|" * len(data))
    for _, a, rho in scored[:5]:
        cells = ["%.2f / %.2f" % nees(data[p], a, rho) for p in data]
        print(f"| {a} | {rho} | " + " | ".join(cells) + " |")
    print("(median / mean position NEES of the correct poses; best fits on the --fit scenes first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
