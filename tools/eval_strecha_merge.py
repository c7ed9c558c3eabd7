"""Merge across frames on real photographs: per Strecha scene, two maps from disjoint thirds of the images
(i % 3 == 0 and i % 3 == 1), the second moved by a known rigid transform, merged with --align auto; the third
(i % 3 == 2) are the queries of all three maps (docs/RESULTS.md "Multi-session maps").

    python tools/eval_strecha_merge.py [--data ../shared/data/strecha] [--out data/strecha-merge] [--extractor learned]

Prints the alignment error against the known transform and the recall of each map; writes OUT/<scene>.json.
About 10 min on 2 cores (learned, LighterGlue-triangulated maps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from reloc_ros.core.features import create_extractor
from reloc_ros.core.geometry import pose_errors
from reloc_ros.core.localizer import Localizer
from reloc_ros.core.points import TriangulationConfig
from reloc_ros.datasets import load_dataset
from reloc_ros.pipelines.build_map import build_or_reuse_map
from reloc_ros.pipelines.evaluate import evaluate
from reloc_ros.pipelines.map_sessions import merge_maps

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from move_map import move_map, rigid  # noqa: E402
MOVE = dict(yaw_deg=35.0, pitch_deg=2.0, roll_deg=0.0, t=(3.0, -2.0, 0.4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "strecha")
    ap.add_argument("--out", type=Path, default=Path("data/strecha-merge"))
    ap.add_argument("--extractor", default="learned")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    T_move = rigid(**MOVE)
    rows = []
    for scene in ("fountain-P11", "Herz-Jesus-P25", "castle-P30"):
        ds = load_dataset(a.data / scene, "posed_images")
        fr = ds.frames
        parts = {"A": [f for i, f in enumerate(fr) if i % 3 == 0], "B": [f for i, f in enumerate(fr) if i % 3 == 1]}
        queries = [f for i, f in enumerate(fr) if i % 3 == 2]
        ex = create_extractor(a.extractor)
        tri = TriangulationConfig(matcher="lighterglue" if a.extractor == "learned" else "mnn")
        paths = {}
        for k, frames in parts.items():
            db, _ = build_or_reuse_map(frames, ex, "triangulate", a.out / f"{scene}-{k}", show_progress=False,
                                       tri_cfg=tri)
            paths[k] = db.path
        moved = move_map(paths["B"], a.out / f"{scene}-B-moved", T_move, overwrite=True)
        merged, rec = merge_maps([paths["A"], moved], a.out / f"{scene}-merged", align="auto", overwrite=True)
        al = rec[1]
        dt, dr = pose_errors(np.array(al["T"]) @ T_move, np.eye(4))
        res = {"scene": scene, "keyframes": {"A": len(parts["A"]), "B": len(parts["B"])}, "queries": len(queries),
               "alignment": al, "alignment_error": {"m": dt, "deg": dr}, "recall": {}}
        for name, path in (("A", paths["A"]), ("B", paths["B"]), ("merged", a.out / f"{scene}-merged")):
            loc = Localizer.from_map(path)
            summ, _ = evaluate(loc, queries, show_progress=False)
            res["recall"][name] = summ["recall"]
        (a.out / f"{scene}.json").write_text(json.dumps(res, indent=1))
        rows.append(res)
        r = res["recall"]
        print(f"| {scene} | {len(parts['A'])} / {len(parts['B'])} / {len(queries)} | {al['keyframes_agreeing']} of "
              f"{al['keyframes_sampled']} | {dt * 100:.2f} cm / {dr:.3f} deg | "
              + " | ".join(f"{r[m]['5cm_5deg']:.0f} / {r[m]['50cm_5deg']:.0f}" for m in ("A", "B", "merged")) + " |",
              flush=True)


if __name__ == "__main__":
    main()
