"""`reloc eval-bag`: replay a rosbag2 against a map, offline (Localizer) or live (reloc_node), and report.

    reloc eval-bag --map MAP --bag BAG [--live [--rate R]] [--out DIR] [--json FILE] [topic options]

Registered by reloc_ros.cli.main; the work is done by reloc_ros.replay (docs/replay.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> dict:
    from reloc_ros.cli.main import _add_bag_args, _add_degrade_args

    p = sub.add_parser("eval-bag", help="replay a rosbag2 against a map (offline or --live through reloc_node) "
                                        "and score it against the bag's ground truth")
    p.add_argument("--map", required=True, type=Path, help="map directory (reloc map build)")
    _add_bag_args(p, bag_required=True)
    p.add_argument("--live", action="store_true",
                   help="start reloc_node as a subprocess and play the bag into it at the recorded rate (/clock, "
                        "use_sim_time); default: offline, every image through the Localizer as fast as possible")
    p.add_argument("--rate", type=float, default=1.0, help="--live: playback speed (1.0 = recorded rate)")
    p.add_argument("--start-frame", type=int, default=0, metavar="K",
                   help="--live: start playing at the K-th image (the node starts cold in the middle of the "
                        "recording; what was recorded before is not played)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="offline: localize every N-th image")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML file of settings (the node's parameter names; offline also the evaluation-only ones "
                        "such as max_map_keypoints), or the node's ROS 2 parameters file itself (config/localizer.yaml "
                        "layout): offline the localizer's settings are used, live the node gets them all but the map, "
                        "the clock and the pose frame, which the replay sets")
    p.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                   help="--live: extra ROS argument of the node, repeatable (e.g. --node-arg=-p "
                        "--node-arg=top_k:=3)")
    p.add_argument("--model", type=Path, default=None,
                   help="ONNX file of a learned map's network when it is not the shipped one (e.g. from `reloc "
                        "quantize`); live: passed to the node as model_path")
    p.add_argument("--domain-id", type=int, default=None, help="--live: ROS_DOMAIN_ID (default: from the pid)")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder: report.json, summary.md, PNG plots, TUM trajectories")
    p.add_argument("--json", type=Path, default=None, help="write the summary and per-image records here")
    _add_degrade_args(p)
    return {"eval-bag": _eval_bag}


def _eval_bag(args: argparse.Namespace, argv: list[str]) -> int:
    import yaml

    from reloc_ros.cli.main import _bag_topics, degradation_of
    from reloc_ros.core.config import settings_of
    from reloc_ros.core.localizer import LocalizerConfig, config_from_dict
    from reloc_ros.pipelines.evaluate import LATENCY_DEFINITION, OFFLINE_LATENCY_DEFINITION, WRONG_DEG, WRONG_M, \
        format_table, write_json
    from reloc_ros.replay.report import summarize_run, write_report

    if args.every < 1:
        raise ValueError(f"--every must be >= 1 (got {args.every})")
    topics = _bag_topics(args)
    degradation = degradation_of(args)
    if args.start_frame and not args.live:
        raise ValueError(f"--start-frame applies with --live (the node started in the middle of the recording); "
                         f"offline, every {args.every}-th image is localized on its own: drop --start-frame "
                         f"{args.start_frame} or add --live")
    if args.live and degradation:
        raise ValueError("--degrade works offline (the images go through the Localizer in this process); drop "
                         "--live, or play a degraded copy of the bag")
    file = None
    if args.config:
        from reloc_ros.cli.settings_file import read_settings_file

        file = read_settings_file(args.config)
        args.model = file.model_path(args.model)
    if args.live:
        import tempfile

        from reloc_ros.replay.live import LiveOptions, ReplayError, replay_live
        from reloc_ros.ros.parameters import NODE_NAME

        node_args = list(args.node_arg)
        if args.model is not None:
            node_args += ["-p", f"model_path:={Path(args.model).resolve()}"]
        tmp = None
        if file is not None:  # the node gets the file's settings, then the replay's own (map, clock, pose frame)
            file.drop(["map_path", "use_sim_time", "pose_frame"], "the live replay sets them")
            file.refuse_unknown(name for name, _, _ in settings_of(LocalizerConfig))  # typos as offline
            if unknown := file.not_node_parameters():
                raise ValueError(f"{args.config}: not node parameters, which the live node cannot take: "
                                 f"{', '.join(unknown)} (run offline, without --live, or drop them)")
            tmp = tempfile.NamedTemporaryFile("w", prefix="reloc_replay_params_", suffix=".yaml", delete=False)
            with tmp:
                yaml.safe_dump({f"/**/{NODE_NAME}": {"ros__parameters": file.values}}, tmp)
        opts = LiveOptions(rate=args.rate, domain_id=args.domain_id, node_args=node_args,
                           start_frame=args.start_frame, params_file=None if tmp is None else Path(tmp.name))
        try:
            run = replay_live(args.map, args.bag, topics, opts)
        except ReplayError as e:
            raise ValueError(str(e)) from None
        finally:
            if tmp is not None:  # the file this command wrote
                Path(tmp.name).unlink(missing_ok=True)
    else:
        from reloc_ros.replay.offline import replay_offline

        overrides = {}
        if file is not None:  # offline: the images go through the Localizer alone (no node, no tracker)
            file.drop(file.node_only(), "the node's frames, topics, rates and map: no offline meaning")
            tracker = file.tracker_keys()
            if tracker and not file.params_file:
                raise ValueError(f"{args.config}: {', '.join(tracker)} {'set' if len(tracker) > 1 else 'sets'} the "
                                 "node's place tracker, which an offline replay does not run: use --live (or `reloc "
                                 "eval --track`)")
            file.drop(tracker, "the place tracker's settings: offline replay localizes each image on its own")
            overrides = file.values
        try:
            cfg = config_from_dict(LocalizerConfig, overrides)
        except ValueError as e:
            raise ValueError(f"{args.config}: {e}") from None
        run = replay_offline(args.map, args.bag, topics, cfg, every=args.every, show_progress=not args.quiet,
                             model=args.model, degradation=degradation)
    summary = write_report(run, args.out) if args.out else summarize_run(run)
    label = f" degraded {'+'.join(degradation['presets'])}" if degradation else ""
    print(format_table({f"{run.mode}{label} {Path(run.bag).name}": summary}))
    print(LATENCY_DEFINITION if run.mode == "live" else OFFLINE_LATENCY_DEFINITION)
    what = "published" if run.mode == "live" else "localized"
    print(f"{what} outside ({WRONG_M} m, {WRONG_DEG} deg): {summary['localized_wrong']}")
    if degradation:
        print(f"query images degraded: {', '.join(degradation['presets'])} (seed {degradation['seed']}); the map's "
              "images were not")
    st = summary["latency_ms"]["stages"]
    print("stage p50 ms: " + ", ".join(f"{k} {v['p50']:.1f}" for k, v in st.items()))
    print("replay: " + ", ".join(f"{k} {v}" for k, v in run.stats.items() if k != "node_log"))
    if run.stats.get("node_log"):
        print(f"the node's log: {run.stats['node_log']}")
    if args.out:
        print(f"report written to {args.out}/ (summary.md, report.json, plots, trajectory_*.tum)")
    if args.json:
        write_json(args.json, {**summary, "records": run.records})
    return 0
