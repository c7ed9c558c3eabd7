#!/usr/bin/env python3
"""Wrong-pose protection, measured: queries from OUTSIDE the mapped area must come back FAILED, not as poses.

    python tools/eval_out_of_map.py --work /tmp/reloc_oom --json oom.json      # office, storage, hall; SIFT

For each synthetic scene (generated into ``--work`` unless there, small runs) a map is built from its mapping run.
Out-of-map: scene B's query runs against scene A's map (every LOCALIZED result is a false localization: the
camera is not in A at all). In-map: A's own query runs against A's map (the recall the gates cost).

Each query is localized once with every gate off (min_inliers 6, no inlier-ratio / reprojection / uncertainty /
ambiguity gate) and once with the default gates; the single gates are applied offline to the no-gate result's
figures (PnP is the same), the ambiguity gate only exists in the default run. The odometry check of the node
(:class:`reloc_ros.ros.odom_gate.OdomGate`, default thresholds) is replayed over each query run in order on the
default results, with odometry = the run's ground truth scaled by 1 % (drift); note that it cannot reject the
first pose of a run (there is nothing to compare it with yet). A candidate check is measured too: the fraction
of the image covered by the convex hull of the inliers (out-of-map matches of a picture that hangs in both scenes
cluster on the picture).

Prints two tables (false-localization rate out of map; recall at (0.5 m, 5 deg) and wrong poses in map) and writes
JSON with per-query records.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reloc_ros.core.geometry import pose_errors  # noqa: E402
from reloc_ros.core.localizer import Localizer, LocalizerConfig  # noqa: E402
from reloc_ros.datasets import load_dataset  # noqa: E402
from reloc_ros.datasets.base import load_image  # noqa: E402
from reloc_ros.ros.odom_gate import OdomGate  # noqa: E402
from reloc_ros.core.plausibility import inlier_coverage  # noqa: E402

DEFAULT = LocalizerConfig()
NO_GATES = dict(min_inliers=6, min_inlier_ratio=0.0, max_median_reproj_px=100.0, max_position_sigma_m=1e6,
                ambiguity_ratio=0.0, max_keyframe_distance_ratio=0.0, min_inlier_coverage=0.0)
# single gates applied offline to the no-gate figures: name -> predicate on a record (True = passes)
SINGLE_GATES = {
    f"min_inliers {DEFAULT.min_inliers}": lambda r: r["inliers"] >= DEFAULT.min_inliers,
    f"inlier ratio {DEFAULT.min_inlier_ratio}": lambda r: r["inliers"] >= DEFAULT.min_inlier_ratio * r["matches"],
    f"reprojection {DEFAULT.max_median_reproj_px} px": lambda r: r["median_reproj_px"] <= DEFAULT.max_median_reproj_px,
    f"sigma {DEFAULT.max_position_sigma_m} m": lambda r: r["sigma_m"] <= DEFAULT.max_position_sigma_m,
}
GOOD_M, GOOD_DEG = 0.5, 5.0
NODE_COVERAGE = DEFAULT.min_inlier_coverage  # the node's default min_inlier_coverage
COVERAGES = (0.05, 0.1, 0.2)  # thresholds of the node's inlier-coverage check (min_inlier_coverage, default 0.1)


def prepare(work: Path, scene: str, n_map: int, n_query: int, extractor: str) -> tuple[Path, Path]:
    from reloc_ros.datasets import synthetic

    data, map_dir = work / scene, work / f"map_{scene}_{extractor}"
    if not (data / "TestSplit.txt").is_file():
        t0 = time.monotonic()
        synthetic.generate(scene, data, n_map=n_map, n_query=n_query, seed=0, bag=False, workers=1, overwrite=True,
                           progress=False)
        print(f"generated {scene} in {time.monotonic() - t0:.0f} s", flush=True)
    if not (map_dir / "manifest.yaml").is_file():
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "reloc_ros.cli.main", "-q", "map", "build", "--dataset", str(data),
                            "--format", "7scenes", "--extractor", extractor, "--out", str(map_dir), "--overwrite"],
                           capture_output=True, text=True, cwd=str(REPO))
        if r.returncode != 0:
            raise SystemExit(f"map build of {scene} failed: {r.stderr.strip()[-2000:]}")
        print(f"built map of {scene} ({extractor}) in {time.monotonic() - t0:.0f} s", flush=True)
    return data, map_dir


def run_pair(map_dir: Path, data: Path, in_map: bool) -> list[dict]:
    """Localize every query of ``data`` against ``map_dir`` without and with the gates."""
    loc = Localizer.from_map(map_dir)
    base = replace(loc.config, min_inlier_coverage=0.0)  # the coverage gate is replayed below at several thresholds
    _, queries = load_dataset(data, "7scenes").split(None)
    recs = []
    for q in queries:
        feats = loc.extractor.extract(load_image(q))
        loc.config = replace(base, **NO_GATES)
        r0 = loc.localize(None, q.camera, features=feats)
        loc.config = base
        r1 = loc.localize(None, q.camera, features=feats)
        rec = {"name": q.name, "sequence": q.sequence, "T_gt": np.asarray(q.T_world_from_cam).tolist(),
               "ok_nogate": r0.ok, "matches": r0.num_matches, "inliers": r0.num_inliers,
               "median_reproj_px": r0.median_reproj_px if r0.ok else float("inf"),
               "sigma_m": float(np.sqrt(np.trace(r0.covariance[:3, :3]))) if r0.ok else float("inf"),
               "ok_default": r1.ok, "reason_default": r1.reason,
               "T_default": r1.T_map_from_cam.tolist() if r1.ok else None,
               "coverage_default": inlier_coverage(r1.inlier_xyz, r1.T_map_from_cam, q.camera) if r1.ok else 0.0}
        for key, res in (("nogate", r0), ("default", r1)):
            rec[f"good_{key}"] = bool(in_map and res.ok and all(
                e <= lim for e, lim in zip(pose_errors(res.T_map_from_cam, q.T_world_from_cam), (GOOD_M, GOOD_DEG))))
        recs.append(rec)
    _replay_odometry(recs, "odom", lambda r: r["ok_default"])
    _replay_odometry(recs, "node", lambda r: r["ok_default"] and r["coverage_default"] >= NODE_COVERAGE)
    return recs


def _replay_odometry(recs: list[dict], key: str, passes) -> None:
    """The node's odometry check over each query run in order, on the results ``passes`` accepts (odometry:
    ground truth with 1 % scale drift); sets ``ok_{key}`` and ``good_{key}``."""
    for seq in sorted({r["sequence"] for r in recs}):
        gate = OdomGate()
        run = [r for r in recs if r["sequence"] == seq]
        p0 = np.asarray(run[0]["T_gt"])[:3, 3]
        for r in run:
            r[f"ok_{key}"] = r[f"good_{key}"] = False
            if not passes(r):
                continue
            T_odom_cam = np.asarray(r["T_gt"]).copy()
            T_odom_cam[:3, 3] = p0 + 1.01 * (T_odom_cam[:3, 3] - p0)
            r[f"ok_{key}"] = gate.check(np.asarray(r["T_default"]), T_odom_cam).accepted
            r[f"good_{key}"] = r[f"ok_{key}"] and r["good_default"]


def _nogate_pass(r: dict, gate) -> bool:
    return r["ok_nogate"] and gate(r)


def summarize(recs: list[dict], in_map: bool) -> dict:
    n = len(recs)
    rows = {"no gates": [r["ok_nogate"] for r in recs]}
    good = {"no gates": [r["good_nogate"] for r in recs]}
    for name, g in SINGLE_GATES.items():
        rows[name] = [_nogate_pass(r, g) for r in recs]
        good[name] = [r["good_nogate"] and g(r) for r in recs]
    rows["all default gates"] = [r["ok_default"] for r in recs]
    good["all default gates"] = [r["good_default"] for r in recs]
    rows["default + odometry check"] = [r["ok_odom"] for r in recs]
    good["default + odometry check"] = [r["good_odom"] for r in recs]
    for c in COVERAGES:
        rows[f"default + inlier coverage >= {c}"] = [r["ok_default"] and r["coverage_default"] >= c for r in recs]
        good[f"default + inlier coverage >= {c}"] = [r["good_default"] and r["coverage_default"] >= c for r in recs]
    rows[f"node defaults: coverage >= {NODE_COVERAGE} + odometry"] = [r["ok_node"] for r in recs]
    good[f"node defaults: coverage >= {NODE_COVERAGE} + odometry"] = [r["good_node"] for r in recs]
    out = {}
    for name in rows:
        loc_n, good_n = int(np.sum(rows[name])), int(np.sum(good[name]))
        out[name] = {"queries": n, "localized": loc_n,
                     "false_localization_pct": None if in_map else 100.0 * loc_n / n,
                     "recall_pct": 100.0 * good_n / n if in_map else None,
                     "wrong": loc_n - good_n if in_map else loc_n}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scenes and maps (reused when present)")
    ap.add_argument("--scenes", nargs="+", default=["office", "storage", "hall"])
    ap.add_argument("--pairs", nargs="*", default=None, metavar="MAP:QUERIES",
                    help="out-of-map pairs (default: first scene's map vs each other scene's queries and back)")
    ap.add_argument("--extractor", default="sift", choices=["sift", "learned"])
    ap.add_argument("--n-map", type=int, default=80)
    ap.add_argument("--n-query", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    scenes = {s: prepare(args.work, s, args.n_map, args.n_query, args.extractor) for s in args.scenes}
    first = args.scenes[0]
    pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs else (
        [(first, s) for s in args.scenes[1:]] + [(s, first) for s in args.scenes[1:]])
    report = {"extractor": args.extractor, "n_map": args.n_map, "n_query": args.n_query, "in_map": {},
              "out_of_map": {}, "records": {}}
    t0 = time.monotonic()
    for s in args.scenes:
        recs = run_pair(scenes[s][1], scenes[s][0], in_map=True)
        report["in_map"][s] = summarize(recs, True)
        report["records"][f"{s}<-{s}"] = recs
        print(f"in map {s}: {len(recs)} queries ({time.monotonic() - t0:.0f} s)", flush=True)
    for a, b in pairs:
        recs = run_pair(scenes[a][1], scenes[b][0], in_map=False)
        report["out_of_map"][f"{a}<-{b}"] = summarize(recs, False)
        report["records"][f"{a}<-{b}"] = recs
        print(f"out of map {a} map <- {b} queries: {len(recs)} ({time.monotonic() - t0:.0f} s)", flush=True)

    gates = list(next(iter(report["in_map"].values())))
    print(f"\nOut-of-map queries ({args.extractor}): false localizations (LOCALIZED results) / queries, "
          "columns MAP<-QUERIES")
    print("| gates | " + " | ".join(report["out_of_map"]) + " | all |")
    print("|---" * (len(report["out_of_map"]) + 2) + "|")
    for g in gates:
        cells = [report["out_of_map"][k][g] for k in report["out_of_map"]]
        tot, n = sum(c["localized"] for c in cells), sum(c["queries"] for c in cells)
        print(f"| {g} | " + " | ".join(f"{c['localized']}/{c['queries']}" for c in cells)
              + f" | {tot}/{n} ({100.0 * tot / max(n, 1):.1f} %) |")
    print(f"\nIn-map queries ({args.extractor}): recall at ({GOOD_M} m, {GOOD_DEG} deg) % (wrong poses)")
    print("| gates | " + " | ".join(report["in_map"]) + " | all |")
    print("|---" * (len(report["in_map"]) + 2) + "|")
    for g in gates:
        cells = [report["in_map"][k][g] for k in report["in_map"]]
        n = sum(c["queries"] for c in cells)
        good_n = sum(round(c["recall_pct"] * c["queries"] / 100.0) for c in cells)
        print(f"| {g} | " + " | ".join(f"{c['recall_pct']:.1f} ({c['wrong']})" for c in cells)
              + f" | {100.0 * good_n / max(n, 1):.1f} ({sum(c['wrong'] for c in cells)}) |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=lambda x: None if x != x else str(x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
