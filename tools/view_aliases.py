#!/usr/bin/env python3
"""How ambiguous are the query views of the synthetic ``corridor``? For every query pose, render the view (no sensor
noise, one light for all) and the views from look-alike poses of the corridor's layout (shifted by whole door
periods along the arm, or turned by 180 degrees about an axis that maps the doors onto each other), and report the
fraction of pixels that differ by more than ``--threshold`` (grey, 0..1) between the true view and the most similar
look-alike at least 1 m away. For scale, the same fraction between the true view and the view 5 cm to the side.

A look-alike that differs in < 1 % of the pixels is a place no single-image method can tell from the true one (it
can only guess); with ``--results`` (``reloc eval --json`` of the same dataset) the outcomes are tabulated per class.

    python tools/view_aliases.py data/synth/corridor --json aliases.json \\
        --results data/synth/corridor-learned.json --results data/synth/corridor-sift.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reloc_ros.core.metrics import RECALL_THRESHOLDS
from reloc_ros.datasets import load_dataset
from reloc_ros.datasets.synthetic.lighting import run_setups
from reloc_ros.datasets.synthetic.renderer import Renderer
from reloc_ros.datasets.synthetic.scene import make_scene

# the named corridor's layout (reloc_ros/datasets/synthetic/scene.py: _corridor, fixed layout)
L1, L2, W, DOOR_PERIOD = 20.0, 10.0, 2.4, 3.0
IDENTICAL = 0.01  # a look-alike differing in fewer pixels than this fraction counts as identical


def _inside(c: np.ndarray, margin: float = 0.3) -> bool:
    x, y = c[0], c[1]
    arm1 = margin < x < L1 - margin and margin < y < W - margin
    arm2 = L1 - W + margin < x < L1 - margin and margin < y < L2 - margin
    return bool(arm1 or arm2)


def look_alike_transforms(center: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """World transforms A (4x4) that map the corridor's door layout onto itself near ``center``: shifts by whole
    door periods along the arm, and 180-degree turns about vertical axes every half period."""
    arm1 = center[1] < W
    out = []
    for k in range(-6, 7):
        if k:
            A = np.eye(4)
            A[0 if arm1 else 1, 3] = DOOR_PERIOD * k
            out.append((f"shift {DOOR_PERIOD * k:+.0f} m", A))
    for m in range(-2, 16):
        A = np.diag([-1.0, -1.0, 1.0, 1.0])
        cx, cy = (0.75 * DOOR_PERIOD + 0.5 * DOOR_PERIOD * m, W / 2) if arm1 else \
                 (L1 - W / 2, W + 0.75 * DOOR_PERIOD + 0.5 * DOOR_PERIOD * m)
        A[0, 3], A[1, 3] = 2 * cx, 2 * cy
        out.append((f"turn about ({cx:.2f}, {cy:.2f})", A))
    return out


def analyse(root: Path, light_name: str, threshold: float) -> list[dict]:
    scene = make_scene("corridor", 0)
    renderer = Renderer(scene)
    light = run_setups(scene, 0)[0][light_name]
    _, queries = load_dataset(root, "7scenes").split(None)

    def grey(T, cam):
        return renderer.render_linear(T, cam, light)[0].mean(axis=2)

    rows = []
    for q in queries:
        T = q.T_world_from_cam
        view = grey(T, q.camera)
        side = T.copy()
        side[:3, 3] += T[:3, 0] * 0.05
        near = float((np.abs(grey(side, q.camera) - view) > threshold).mean())
        best, best_name = 1.0, ""
        for name, A in look_alike_transforms(T[:3, 3]):
            T2 = A @ T
            if not _inside(T2[:3, 3]) or np.linalg.norm(T2[:3, 3] - T[:3, 3]) < 1.0:
                continue
            frac = float((np.abs(grey(T2, q.camera) - view) > threshold).mean())
            if frac < best:
                best, best_name = frac, name
        rows.append({"name": q.name, "sequence": q.sequence, "differ_5cm": near, "differ_alias": best,
                     "alias": best_name})
        print(f"{q.name}: 5 cm aside {near:.3f}, best look-alike {best:.3f} ({best_name})", file=sys.stderr)
    return rows


def _outcome(rec: dict) -> str:
    if not rec["ok"]:
        return "failed"
    t5, r5 = RECALL_THRESHOLDS["5cm_5deg"]
    t50, r50 = RECALL_THRESHOLDS["50cm_5deg"]
    if rec["t_err"] > t50 or rec["r_err"] > r50:
        return "wrong"
    return "within 5 cm, 5 deg" if rec["t_err"] <= t5 and rec["r_err"] <= r5 else "coarse"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path, help="the generated corridor dataset (reloc data synth --scene corridor)")
    ap.add_argument("--light", default="mapping", help="light of every render (default: the map's light, what the "
                    "map's features saw)")
    ap.add_argument("--threshold", type=float, default=0.06, help="grey difference that counts as different")
    ap.add_argument("--json", type=Path, help="write the per-query rows here")
    ap.add_argument("--results", type=Path, action="append", default=[], help="reloc eval --json of the dataset")
    args = ap.parse_args(argv)
    rows = analyse(args.dataset, args.light, args.threshold)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    frac = np.array([r["differ_alias"] for r in rows])
    print(f"{len(rows)} query views; a look-alike >= 1 m away differs in < 0.1 % / 0.5 % / 1 % / 2 % of the pixels: "
          f"{(frac < 0.001).sum()} / {(frac < 0.005).sum()} / {(frac < IDENTICAL).sum()} / {(frac < 0.02).sum()}; "
          f"look-alike closer than the view 5 cm aside: {sum(r['differ_alias'] < r['differ_5cm'] for r in rows)}")
    cls = {r["name"]: ("identical look-alike" if r["differ_alias"] < IDENTICAL else "distinct") for r in rows}
    for path in args.results:
        recs = json.loads(path.read_text())["records"]
        table = collections.defaultdict(collections.Counter)
        for rec in recs:
            if rec["name"] in cls:
                table[(rec["sequence"], cls[rec["name"]])][_outcome(rec)] += 1
        print(f"\n{path}:")
        print("| sequence | views | n | within 5 cm, 5 deg | coarse | wrong | failed |")
        print("|---|---|---|---|---|---|---|")
        for (seq, c), cnt in sorted(table.items()):
            print(f"| {seq} | {c} | {sum(cnt.values())} | {cnt['within 5 cm, 5 deg']} | {cnt['coarse']} | "
                  f"{cnt['wrong']} | {cnt['failed']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
