#!/usr/bin/env python3
"""Fit the covariance model (docs/RESULTS.md "Covariance calibration").

The published position covariance is ``a f C_pnp + (rho z)^2 / n x I`` (Localizer._covariance: ``a`` =
PNP_COVARIANCE_SCALE, ``rho`` = MAP_POINT_SIGMA_REL of the map's point source, ``f`` the larger of the
keypoint-confidence factor ``max(1, s0 / s) ** k`` of DETECTION_SCORE_COVARIANCE, ``s`` the median detection score
of the query's keypoints, and the image-quality factor of its sharpness and brightness, localizer.image_quality_factor).
For each (map, dataset) pair this localizes every ``--every``-th query, keeps the correct poses (within 0.5 m, 5 deg)
and records the PnP covariance, the median inlier depth ``z``, the contributing keyframes ``n``, ``s``, the image
measures and the position error; then it prints, per scene and for a grid of (a, rho, s0, k), the median and mean
position NEES (calibrated: 2.37 and 3). The fit uses the tuning scenes only; pass the benchmark scenes with --check
to see the chosen values there. ``--fixed-a-rho A RHO`` fits only (s0, k); ``--fit-blur`` (with ``--fixed-a-rho``
and ``--score``) the image-quality factor's (b0, kb, d0, kd); with ``--rho-scale`` each ``rho`` multiplies the map's
own default (a triangulated map's recorded point uncertainty, MapDatabase.point_sigma_rel, else the constant of its
point source, MAP_POINT_SIGMA_REL).

A pair may name the dataset's format, its map split and a degradation of its own (``MAP:DATASET:posed_images:4``
for a dataset of posed images whose every 4th image is the map; ``MAP:DATASET:::defocus`` for defocused queries);
``--degrade`` degrades every pair's queries (core/degrade.py), ``--rho`` replaces the grid of ``rho`` (the
triangulated maps' map term lives on another scale), ``--config`` a YAML of settings.

Usage:
    python tools/fit_covariance.py --fit MAP:DATASET[:FORMAT[:MAP_EVERY[:DEGRADE]]] [...] [--check MAP:DATASET ...]
        [--every 2] [--degrade PRESETS] [--rho R [R ...]] [--rho-scale] [--fixed-a-rho A RHO] [--config YAML]
        [--score S0 K] [--blur B0 KB [D0 KD]] [--fit-blur [--show B0 KB D0 KD ...]]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reloc_ros.core.degrade import parse_presets  # noqa: E402
from reloc_ros.core.geometry import pose_errors  # noqa: E402
from reloc_ros.core.localizer import MAP_POINT_SIGMA_REL, Localizer, LocalizerConfig, _main_point_source, \
    config_from_dict, extractor_for_map, image_quality_factor, keypoint_confidence_factor  # noqa: E402
from reloc_ros.core.mapdb import MapDatabase  # noqa: E402
from reloc_ros.datasets import load_dataset  # noqa: E402
from reloc_ros.pipelines.evaluate import is_wrong, query_image  # noqa: E402

GRID_A = (1, 2, 3, 4, 5, 6, 8)
GRID_RHO = (0.0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.0042)
GRID_S0 = (0.0, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08)  # 0: no keypoint-confidence factor
GRID_K = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
GRID_B0 = (0.0, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)  # 0: no blur factor
GRID_KB = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
GRID_D0 = (0.0, 0.1, 0.15, 0.2, 0.25)  # 0: no darkness factor
GRID_KD = (0.5, 1.0, 1.5, 2.0)


class _Recording(Localizer):
    """A Localizer that keeps the inputs of its last covariance."""

    last = None
    _score_median = 1.0
    _sharpness = float("nan")
    _brightness = float("nan")

    def _covariance(self, pnp_cov, z_med, n_keyframes, score_factor=None):
        if score_factor is None:  # the published covariance (not the tracker's copy without the factor)
            self.last = (pnp_cov[:3, :3].copy(), float(z_med), int(n_keyframes), self._score_median,
                         (self._sharpness, self._brightness))
        return super()._covariance(pnp_cov, z_med, n_keyframes, score_factor)

    def detection_score_factor(self, features, image_quality=True):
        self._score_median = float(np.median(features.scores)) if len(features) else 1.0
        self._sharpness = features.sharpness
        self._brightness = features.brightness
        return super().detection_score_factor(features, image_quality)


def collect(pair: str, every: int, degradation: dict | None, config, rho_scale: bool = False) -> list[tuple]:
    map_dir, dataset, fmt, map_every, presets = (pair.split(":") + ["", "", ""])[:5]
    fmt = fmt or "7scenes"
    if presets:  # this pair's own degradation
        degradation = {"presets": parse_presets(presets), "seed": 0}
    db = MapDatabase.load(map_dir)
    loc = _Recording(db, extractor_for_map(db), config)
    _, queries = load_dataset(dataset, fmt).split(int(map_every) if map_every else None)
    # --rho-scale: rho multiplies the map's recorded point uncertainty, else the constant of its point source
    rho_unit = (db.point_sigma_rel or MAP_POINT_SIGMA_REL[_main_point_source(db)]) if rho_scale else 1.0
    rows = []
    for f in queries[::every]:
        loc.last = None
        res = loc.localize(query_image(f, degradation), f.camera)
        if res.ok and not is_wrong(*pose_errors(res.T_map_from_cam, f.T_world_from_cam)):
            rows.append((*loc.last, res.T_map_from_cam[:3, 3] - f.T_world_from_cam[:3, 3], rho_unit))
    return rows


def nees(rows, a: float, rho: float, s0: float = 0.0, k: float = 1.0,
         blur: tuple = (0.0, 1.0, 0.0, 1.0)) -> tuple[float, float]:
    """Median and mean position NEES of ``rows`` under ``a``, ``rho`` (times each row's map multiplier), the
    keypoint-confidence factor (``s0``, ``k``; s0 0: none) and ``blur`` = (b0, kb, d0, kd), the image-quality
    factor's models (localizer.image_quality_factor; a reference of 0: that factor off)."""
    v = [e @ np.linalg.solve(a * max(keypoint_confidence_factor(s, s0, k),
                                     image_quality_factor(*q, blur=blur[:2], dark=blur[2:])) * P
                             + np.eye(3) * (rho * r * z) ** 2 / max(n, 1), e)
         for P, z, n, s, q, e, r in rows]
    return float(np.median(v)), float(np.mean(v))


def _label(pair: str) -> str:
    """A table column's name: the dataset's folder and the pair's degradation."""
    return ":".join([Path(pair.split(":")[1]).name] + pair.split(":")[4:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", nargs="+", required=True, metavar="MAP:DATASET")
    ap.add_argument("--check", nargs="*", default=[], metavar="MAP:DATASET")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--fixed-a-rho", nargs=2, type=float, default=None, metavar=("A", "RHO"))
    ap.add_argument("--a", nargs="+", type=float, default=None, help="the grid of a (default 1-8)")
    ap.add_argument("--rho", nargs="+", type=float, default=None, help="the grid of rho (default: depth maps' grid)")
    ap.add_argument("--score", nargs=2, type=float, default=None, metavar=("S0", "K"),
                    help="fix the keypoint-confidence factor (e.g. the shipped 0.02 2) instead of fitting it")
    ap.add_argument("--blur", nargs="+", type=float, default=None, metavar="B0 KB [D0 KD]",
                    help="the blur factor max(1, B0 / sharpness) ** KB (BLUR_COVARIANCE) and the darkness factor "
                         "max(1, D0 / brightness) ** KD (DARK_COVARIANCE); default: none")
    ap.add_argument("--show", nargs=4, type=float, action="append", metavar=("B0", "KB", "D0", "KD"),
                    help="with --fit-blur: also print these values")
    ap.add_argument("--fit-blur", action="store_true",
                    help="fit the blur factor (a, rho and --score fixed) instead of a, rho, s0, k")
    ap.add_argument("--rho-scale", action="store_true",
                    help="the rho values multiply each map's recorded point uncertainty (MapDatabase.point_sigma_rel; "
                         "else MAP_POINT_SIGMA_REL of its points)")
    ap.add_argument("--degrade", default=None, help="degrade the queries (reloc eval --degrade)")
    ap.add_argument("--config", default=None, help="YAML of localizer settings (reloc eval --config)")
    args = ap.parse_args()
    blur = (tuple(args.blur) + (0.0, 1.0))[:4] if args.blur else (0.0, 1.0, 0.0, 1.0)
    degradation = {"presets": parse_presets(args.degrade), "seed": 0} if args.degrade else None
    config = config_from_dict(LocalizerConfig, yaml.safe_load(Path(args.config).read_text()) if args.config else {})
    data = {}
    for pair in args.fit + args.check:
        data[pair] = collect(pair, args.every, degradation, config, args.rho_scale)
        print(f"{pair}: {len(data[pair])} correct poses", file=sys.stderr)
    fit = [data[p] for p in args.fit]
    grid_a, grid_rho = (([args.fixed_a_rho[0]], [args.fixed_a_rho[1]]) if args.fixed_a_rho
                        else (args.a or GRID_A, args.rho or GRID_RHO))
    if args.fit_blur:
        if not (args.fixed_a_rho and args.score):
            ap.error("--fit-blur needs --fixed-a-rho and --score")
        a, rho, (s0, k) = *args.fixed_a_rho, args.score
        grid = [(b0, kb, d0, kd) for b0 in GRID_B0 for kb in (GRID_KB if b0 else (1.0,))
                for d0 in GRID_D0 for kd in (GRID_KD if d0 else (1.0,))]
        scored = sorted((float(np.mean([abs(np.log(nees(r, a, rho, s0, k, q)[1] / 3.0)) for r in fit])), q)
                        for q in grid)
        print("| b0 | kb | d0 | kd | " + " | ".join(_label(p) for p in data) + " |")
        print("|---|---|---|---|" + "---|" * len(data))
        shown = [q for _, q in scored[:6]] + [(0.0, 1.0, 0.0, 1.0)] + [tuple(x) for x in args.show or []]
        for q in shown:
            print("| %g | %g | %g | %g | " % q + " | ".join("%.2f / %.2f" % nees(data[p], a, rho, s0, k, q)
                                                            for p in data) + " |")
        print("(median / mean position NEES of the correct poses; best fits first, then without the blur factor)")
        return 0
    scored = sorted((float(np.mean([abs(np.log(nees(r, a, rho, s0, k, blur)[1] / 3.0)) for r in fit])),
                     a, rho, s0, k)
                    for a in grid_a for rho in grid_rho
                    for s0, k in ([tuple(args.score)] if args.score else
                                  [(s0, k) for s0 in GRID_S0 for k in (GRID_K if s0 else (1.0,))]))
    print("| a | rho | s0 | k | " + " | ".join(_label(p) for p in data) + " |")
    print("|---|---|---|---|" + "---|" * len(data))
    best = scored[:5] + ([] if args.score else [x for x in scored if x[3] == 0.0][:1])  # and without the factor
    for _, a, rho, s0, k in best:
        cells = ["%.2f / %.2f" % nees(data[p], a, rho, s0, k, blur) for p in data]
        print(f"| {a} | {rho} | {s0} | {k} | " + " | ".join(cells) + " |")
    print("(median / mean position NEES of the correct poses; best fits on the --fit scenes first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
