"""The main job on an embedded default (`make demo`).

Generates the synthetic ``office`` scene (a mapping run and two query runs, one under changed light), builds a
map from the mapping run, localizes every query frame, prints accuracy and latency, and writes a report to
``demo_output/``. Everything is made on the spot: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="reloc-demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (replaced)")
    ap.add_argument("--scene", default="office", help="synthetic scene name")
    ap.add_argument("--n-map", type=int, default=120, help="mapping-run frames")
    ap.add_argument("--n-query", type=int, default=60, help="frames per query run")
    ap.add_argument("--extractors", default="learned,sift",
                    help="comma-separated extractors, each with its own map, compared in one run (learned vs SIFT)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from reloc_ros.build_map import build_map
    from reloc_ros.core.features import create_extractor
    from reloc_ros.core.localizer import Localizer
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.synthetic import generate
    from reloc_ros.evaluate import evaluate, format_table, write_json

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"[1/3] generating synthetic scene '{args.scene}' ({args.n_map} mapping + 2x{args.n_query} query frames)")
    data = generate(args.scene, out / "scene", n_map=args.n_map, n_query=args.n_query, seed=args.seed)
    t_gen = time.perf_counter() - t0
    ds = load_dataset(data, "7scenes")
    map_frames, queries = ds.split()

    rows, reports, t_map = {}, {}, 0.0
    for name in args.extractors.split(","):
        print(f"[2/3] {name}: building a map from the mapping run ({len(map_frames)} keyframes, depth points)")
        t1 = time.perf_counter()
        build_map(map_frames, create_extractor(name), "depth", out / f"map_{name}",
                  info={"command": "reloc demo"}, show_progress=False)
        t_map += time.perf_counter() - t1
        print(f"[3/3] {name}: localizing {len(queries)} query frames")
        loc = Localizer.from_map(out / f"map_{name}")
        summary, records = evaluate(loc, queries, show_progress=False,
                                    sequence_labels=ds.meta.get("sequence_labels"))
        rows.update({f"{name} {k}": v for k, v in summary.get("per_sequence", {}).items()})
        rows[f"{name} all"] = summary
        reports[name] = {**summary, "records": records}
    table = format_table(rows)
    print()
    print(table)
    stages = "; ".join(name + ": " + ", ".join(f"{k} {v['p50']:.1f}" for k, v in r["latency_ms"]["stages"].items())
                       for name, r in reports.items())
    print(f"\nper-stage latency p50 (ms): {stages}")
    total = time.perf_counter() - t0
    print(f"timings: scene {t_gen:.0f} s, map {t_map:.0f} s, total {total:.0f} s; report in {out}/")
    write_json(out / "report.json", {"extractors": reports,
                                     "timings_s": {"generate": t_gen, "map": t_map, "total": total}})
    (out / "summary.md").write_text(f"# reloc_ros demo ({args.scene})\n\n{table}\n\nper-stage p50 ms: {stages}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
