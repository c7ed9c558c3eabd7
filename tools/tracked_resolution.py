#!/usr/bin/env python3
"""Tracked frames at a lower network resolution: what it would cost in accuracy (docs/performance.md, "Speed
targets"). Each query is localized with the prior of a tracked frame (the true pose moved by 3 cm / 1 deg, as in
`reloc bench`), by the map's own extractor with its longer side capped at each of the given sizes.

    python tools/tracked_resolution.py --map maps/node30 --dataset data/node30 --sides 1024,512,480 --queries 150

Prints one line per size: localized, within (5 cm, 5 deg) and (0.5 m, 5 deg), median and p90 position error,
LOCALIZED outside (0.5 m, 5 deg), time per query. An experiment, not a setting the node has.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reloc_ros.core.geometry import pose_errors  # noqa: E402
from reloc_ros.core.localizer import Localizer, LocalizerConfig  # noqa: E402
from reloc_ros.core.mapdb import MapDatabase, extractor_for_map  # noqa: E402
from reloc_ros.datasets import load_dataset, load_image  # noqa: E402
from reloc_ros.experiments.bench import _tracked_prior  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--map", required=True, type=Path)
    ap.add_argument("--dataset", required=True, type=Path, help="7-Scenes layout (its TestSplit's queries)")
    ap.add_argument("--sides", default="1024,512,480", help="network input's longer side, comma-separated")
    ap.add_argument("--queries", type=int, default=150, help="queries, evenly spaced over the query runs")
    args = ap.parse_args(argv)
    db = MapDatabase.load(args.map)
    locs = {}
    for side in (int(x) for x in args.sides.split(",")):
        ex = extractor_for_map(db)
        locs[side] = Localizer(db, ex, LocalizerConfig())
        ex.max_side = side  # after the map's check: the map was built at its own size
    queries = sorted(load_dataset(args.dataset, "7scenes").split()[1], key=lambda f: f.name)
    queries = queries[::max(1, len(queries) // args.queries)][:args.queries]
    out = {s: ([], [], []) for s in locs}
    for qi, f in enumerate(queries):
        img = load_image(f)
        for side, loc in locs.items():
            t0 = time.perf_counter()
            res = loc.localize(img, f.camera, _tracked_prior(f.T_world_from_cam, qi))
            ms = (time.perf_counter() - t0) * 1000.0
            dt, dr = pose_errors(res.T_map_from_cam, f.T_world_from_cam) if res.ok else (np.inf, np.inf)
            for lst, v in zip(out[side], (dt, dr, ms)):
                lst.append(v)
    for side, (t, r, ms) in out.items():
        t, r = np.array(t), np.array(r)
        ok = np.isfinite(t)
        fine, coarse = np.mean((t <= 0.05) & (r <= 5)), np.mean((t <= 0.5) & (r <= 5))
        print(f"max side {side}: localized {ok.sum()} / {len(t)}, within (5 cm, 5 deg) {100 * fine:.1f} %, "
              f"(0.5 m, 5 deg) {100 * coarse:.1f} %, "
              f"median {1000 * np.median(t[ok]):.1f} mm, p90 {1000 * np.percentile(t[ok], 90):.1f} mm, "
              f"outside (0.5 m, 5 deg) {int(np.sum(ok & ((t > 0.5) | (r > 5))))}, time p50 {np.median(ms):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
