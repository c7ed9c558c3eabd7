"""The main job on an embedded default (`make demo`): bags in, a map from a bag, the node replayed live, a report.

1. generates the synthetic ``office`` scene with its rosbag2 recordings: a mapping run and two query runs (one
   under changed light), each with images, camera_info, /clock, odometry TF and ground-truth poses;
2. builds a map per extractor FROM THE MAPPING BAG (learned and SIFT; 3D from the bag's depth topic);
3. replays both query bags LIVE through ``reloc_node`` (a subprocess, fed with /clock at a fraction of the
   recorded rate so that it keeps up on two cores) with the first extractor's map, and both query bags offline
   through the Localizer with every map (the learned-vs-SIFT comparison);
4. prints the accuracy / latency table and writes the report to ``demo_output/``: ``summary.md``,
   ``report.json`` and, per live replay, a folder with plots and TUM trajectories (reloc_ros/replay/report.py).

Everything is made on the spot: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

__all__ = ["main"]


DEMO_MARKER = ".reloc_ros_demo"  # marks a folder the demo wrote (and may replace)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="reloc-demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (replaced)")
    ap.add_argument("--scene", default="office", help="synthetic scene name")
    ap.add_argument("--n-map", type=int, default=120, help="mapping-run frames")
    ap.add_argument("--n-query", type=int, default=60, help="frames per query run")
    ap.add_argument("--extractors", default="learned,sift",
                    help="comma-separated extractors, each with its own map from the mapping bag; the first one's "
                         "map is replayed live through the node, all of them offline")
    ap.add_argument("--points", default="depth", choices=["depth", "triangulate", "learned"],
                    help="map 3D: the bag's depth topic, triangulation with its poses, or the network's depth")
    ap.add_argument("--rate", type=float, default=0.25, help="live playback speed (1.0 = the recorded 30 Hz)")
    ap.add_argument("--no-offline", dest="offline", action="store_false", help="skip the offline comparison")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from reloc_ros.pipelines.build_map import build_map
    from reloc_ros.core.features import create_extractor
    from reloc_ros.datasets.rosbag import BagTopics, load_bag
    from reloc_ros.datasets.synthetic.bag import TOPICS
    from reloc_ros.datasets.synthetic import generate
    from reloc_ros.datasets.synthetic.writer import RUNS
    from reloc_ros.pipelines.evaluate import LATENCY_DEFINITION, format_table, write_json
    from reloc_ros.replay.live import LiveOptions, replay_live
    from reloc_ros.replay.offline import replay_offline
    from reloc_ros.replay.report import summarize_run, write_report

    out = args.out
    if out.exists():
        # only a folder this demo wrote before (its report.json, summary.md and scene) is replaced
        ours = (out / DEMO_MARKER).is_file() or ((out / "report.json").is_file() and (out / "summary.md").is_file())
        if not out.is_dir() or (any(out.iterdir()) and not ours):
            print(f"demo: {out} exists and was not written by the demo: refusing to replace it (choose another "
                  "--out, or remove it yourself)", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("written by python -m reloc_ros.demo; replaced by the next demo run\n")
    extractors = args.extractors.split(",")
    t0 = time.perf_counter()
    timings = {}
    print(f"[1/4] generating synthetic scene '{args.scene}' with bags "
          f"({args.n_map} mapping + 2x{args.n_query} query frames)", flush=True)
    data = generate(args.scene, out / "scene", n_map=args.n_map, n_query=args.n_query, seed=args.seed, bag=True,
                    progress=False)
    timings["generate_s"] = time.perf_counter() - t0
    bags = {bag: data / "bags" / bag for _, _, bag in RUNS}
    labels = {bag: run for _, run, bag in RUNS if bag != "mapping"}

    t1 = time.perf_counter()
    topics = BagTopics(depth=TOPICS["depth"] if args.points == "depth" else None)
    map_frames = load_bag(bags["mapping"], topics).frames
    for name in extractors:
        print(f"[2/4] {name}: map from the mapping bag ({len(map_frames)} keyframes, {args.points} points)",
              flush=True)
        build_map(map_frames, create_extractor(name), args.points, out / f"map_{name}",
                  info={"command": "reloc demo", "dataset": {"root": str(bags["mapping"]), "format": "rosbag"}},
                  show_progress=False)
    timings["maps_s"] = time.perf_counter() - t1

    rows = {}  # one summary per run (offline ones with their per-frame records)
    waited = {}  # live runs: frames held back until the tracker confirmed the place
    t2 = time.perf_counter()
    for bag, label in labels.items():
        print(f"[3/4] {extractors[0]}: live replay of {bag} ({label}) through reloc_node at {args.rate}x", flush=True)
        run = replay_live(out / f"map_{extractors[0]}", bags[bag], options=LiveOptions(rate=args.rate))
        key = f"{extractors[0]} live {label}"
        rows[key] = write_report(run, out / f"live_{label}", title=f"reloc_ros demo: {key}")
        waited[key] = _waited(run.records)
    timings["live_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    if args.offline:
        for name in extractors:
            for bag, label in labels.items():
                print(f"[4/4] {name}: offline replay of {bag} ({label})", flush=True)
                run = replay_offline(out / f"map_{name}", bags[bag], show_progress=False)
                key = f"{name} offline {label}"
                rows[key] = {**summarize_run(run), "records": run.records}
    timings["offline_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0

    table = format_table(rows) + "\n\n" + LATENCY_DEFINITION
    stages = "\n".join(f"- {k}: " + ", ".join(f"{s} {v['p50']:.1f}" for s, v in r["latency_ms"]["stages"].items())
                       for k, r in rows.items())
    live_counts = "\n".join(f"- {k}: {r['replay']['images_sent']} images sent, {r['queries']} handled by the node, "
                            f"{r['replay']['frames_dropped']} dropped as stale, {r['localized']} poses published "
                            f"({waited[k]} handled frames held back until the place was confirmed by motion), "
                            f"output {r['replay']['output_rate_hz']} Hz" for k, r in rows.items() if r["mode"] == "live")
    live_counts += ("\n(live rows count what the node published: after a cold start its tracker publishes nothing "
                    "until the robot has moved far enough to rule out a look-alike place; offline rows are single "
                    "images)")
    times = ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items())
    print(f"\n{table}\n\nper-stage latency p50 (ms; live: end_to_end = image sent -> pose received):\n{stages}\n"
          f"\nlive replays:\n{live_counts}\n\ntimings: {times}; report in {out}/")
    write_json(out / "report.json", {"runs": rows, "timings_s": timings})
    links = "\n".join(f"- [{label}](live_{label}/summary.md)" for label in labels.values())
    (out / "summary.md").write_text(
        f"# reloc_ros demo ({args.scene})\n\nMaps from the mapping bag; query bags replayed live through reloc_node "
        f"at {args.rate}x the recorded rate, and offline through the Localizer.\n\n{table}\n\n"
        f"Per-stage latency p50 (ms):\n{stages}\n\nLive replays:\n{live_counts}\n\nLive reports with plots:\n"
        f"{links}\n\nTimings: {times}\n")
    return 0


def _waited(records: list[dict]) -> int:
    """Frames of a live run FAILED because the tracker had not yet confirmed the place (cold start)."""
    return sum("not yet confirmed" in (x.get("reason") or "") for x in records)


if __name__ == "__main__":
    sys.exit(main())
