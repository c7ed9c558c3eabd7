#!/usr/bin/env python3
"""Replay the node's odometry gate over ``reloc eval`` results: what the node would publish with odometry.

``reloc eval`` localizes every query image on its own. The node also checks each pose against odometry
(:class:`reloc_ros.ros.odom_gate.OdomGate`: place hypotheses, only a confirmed and dominant place is published).
This tool replays that gate, with the node's default parameters, over each query run in frame order; odometry is
the ground-truth camera pose (``<frame>.pose.txt`` of a 7-Scenes-layout dataset, e.g. ``reloc data synth``) with a
random-walk drift (``--drift`` metres per frame, seeded). It prints, per run,
the localized and the published poses: wrong ones (> 0.5 m or > 5 deg), recall at (5 cm, 5 deg) over all queries,
and the mean position NEES (ideal 3).

Usage:
    reloc eval --map MAP --dataset DS --format 7scenes --json run.json
    python tools/eval_odom_gate.py run.json:DS [run2.json:DS2 ...] [--accept-after 5 --dominance 1.5 --memory 50]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reloc_ros.core.metrics import RECALL_THRESHOLDS  # noqa: E402
from reloc_ros.ros.odom_gate import OdomGate  # noqa: E402
from reloc_ros.ros.parameters import PARAMS_BY_NAME  # noqa: E402


def _wrong(r: dict) -> bool:
    return r["t_err"] > 0.5 or r["r_err"] > 5.0


def _recall_5cm(recs: list[dict], n: int) -> float:
    """Percent of ``n`` queries that ``recs`` (a subset of them) localize within 5 cm / 5 deg."""
    t_max, r_max = RECALL_THRESHOLDS["5cm_5deg"]
    return 100.0 * sum(1 for r in recs if r["t_err"] <= t_max and r["r_err"] <= r_max) / max(n, 1)


def _mean_nees(recs: list[dict]) -> float:
    v = [r["nees_position"] for r in recs if "nees_position" in r]
    return float(np.mean(v)) if v else float("nan")


def replay(records: list[dict], dataset: Path, gate_args: dict, drift_m: float, seed: int = 0) -> list[dict]:
    """Rows (one per sequence): queries, localized, published, wrong, recall, NEES before and after the gate."""
    rows = []
    for seq in sorted({r["sequence"] for r in records}):
        run = [r for r in records if r["sequence"] == seq]
        gate = OdomGate(**gate_args)
        rng = np.random.default_rng(seed)
        drift = np.eye(4)
        published = []
        for r in run:
            drift[:3, 3] += drift_m * rng.normal(size=3)
            T_odom_cam = drift @ np.loadtxt(dataset / f"{r['name']}.pose.txt")
            if r["status"] == "LOCALIZED" and gate.check(np.asarray(r["T_map_from_cam"]), T_odom_cam).accepted:
                published.append(r)
        loc = [r for r in run if r["status"] == "LOCALIZED"]
        rows.append({"sequence": seq, "queries": len(run), "localized": len(loc), "wrong": sum(map(_wrong, loc)),
                     "recall_5cm": _recall_5cm(loc, len(run)), "nees_mean": _mean_nees(loc),
                     "published": len(published), "published_wrong": sum(map(_wrong, published)),
                     "published_recall_5cm": _recall_5cm(published, len(run)), "published_nees_mean":
                     _mean_nees(published), "switches": gate.switches})
    return rows


def main(argv=None) -> int:
    d = {k: PARAMS_BY_NAME[f"odom_{k}"].default for k in ("accept_after", "dominance", "memory")}
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="RESULT.json:DATASET_DIR pairs (JSON of `reloc eval --json`)")
    ap.add_argument("--accept-after", type=int, default=d["accept_after"])
    ap.add_argument("--dominance", type=float, default=d["dominance"])
    ap.add_argument("--memory", type=float, default=d["memory"])
    ap.add_argument("--max-m", type=float, default=PARAMS_BY_NAME["odom_jump_max_m"].default)
    ap.add_argument("--max-deg", type=float, default=PARAMS_BY_NAME["odom_jump_max_deg"].default)
    ap.add_argument("--drift", type=float, default=0.002, help="odometry random-walk drift, m per frame")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    gate_args = dict(max_m=a.max_m, max_deg=a.max_deg, accept_after=a.accept_after, dominance=a.dominance,
                     memory=a.memory)
    out = []
    for spec in a.runs:
        path, _, ds = spec.partition(":")
        if not ds:
            ap.error(f"{spec!r}: expected RESULT.json:DATASET_DIR")
        for row in replay(json.loads(Path(path).read_text())["records"], Path(ds), gate_args, a.drift):
            out.append({"run": Path(path).stem, **row})
    print(f"odometry gate: {gate_args}, drift {a.drift} m/frame")
    print("| run | seq | queries | localized | wrong | R@5cm | NEES mean | published | wrong | R@5cm | NEES mean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['run']} | {r['sequence']} | {r['queries']} | {r['localized']} | {r['wrong']} | "
              f"{r['recall_5cm']:.1f} | {r['nees_mean']:.2f} | {r['published']} | {r['published_wrong']} | "
              f"{r['published_recall_5cm']:.1f} | {r['published_nees_mean']:.2f} |")
    for ex in sorted({r["run"].rsplit("-", 1)[-1] for r in out}):
        rs = [r for r in out if r["run"].rsplit("-", 1)[-1] == ex]
        n = sum(r["published"] for r in rs)
        pooled = sum(r["published"] * r["published_nees_mean"] for r in rs if r["published"]) / max(n, 1)
        print(f"{ex}: pooled mean NEES of the published poses {pooled:.2f} over {n} poses, "
              f"wrong published {sum(r['published_wrong'] for r in rs)}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
