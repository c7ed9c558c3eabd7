"""`reloc`: the command-line entry point (thin wrappers around the pipeline functions).

Subcommands:
    reloc map build   build a map from posed images (a dataset folder, or a rosbag2 with --bag)
    reloc map info    print a map's manifest
    reloc eval        localize a dataset's query images against a map, print a table, write JSON
    reloc data synth  generate a synthetic RGB-D scene (dataset folder and optional rosbag2)

Further subcommands live in their own modules (see ``_COMMAND_MODULES``): each module has
``add_parsers(sub) -> {command name: handler(args, argv) -> exit code}`` and imports heavy code lazily.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

__all__ = ["main"]

_COMMAND_MODULES = ("reloc_ros.cli.replay_cmd", "reloc_ros.cli.bench_cmd", "reloc_ros.cli.ablate_cmd",
                    "reloc_ros.cli.quantize_cmd")


def _add_dataset_args(p: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    from reloc_ros.datasets import FORMATS

    p.add_argument("--dataset", required=dataset_required, type=Path, help="dataset folder")
    p.add_argument("--format", required=dataset_required, choices=sorted(FORMATS),
                   help="dataset layout" + ("" if dataset_required else " (rosbag when --bag is given)"))
    p.add_argument("--map-every", type=int, default=None, metavar="N",
                   help="every N-th image (by sorted name) is a map image, the rest are queries; "
                        "default: the dataset's own split (7-Scenes / synthetic)")


def _add_bag_args(p: argparse.ArgumentParser, bag_required: bool = False, depth: bool = False) -> None:
    """``--bag BAG`` and the bag's topics (reloc_ros/datasets/rosbag.py); ``depth``: also ``--depth-topic`` (map
    building: queries use no depth)."""
    from reloc_ros.datasets.rosbag import DEFAULT_GT_TOPIC, DEFAULT_IMAGE_TOPIC

    p.add_argument("--bag", type=Path, required=bag_required, default=None,
                   help="rosbag2 directory (mcap or sqlite3)" + ("" if bag_required else " instead of --dataset"))
    p.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC, help="sensor_msgs/Image topic")
    p.add_argument("--camera-info-topic", default=None,
                   help="sensor_msgs/CameraInfo topic (default: camera_info beside the image topic)")
    if depth:
        p.add_argument("--depth-topic", default=None, help="optional depth images (16UC1 mm or 32FC1 m, registered "
                                                           "to the colour images): map points from depth")
    p.add_argument("--gt-topic", default=DEFAULT_GT_TOPIC,
                   help="ground truth: pose of the camera optical frame (PoseStamped, PoseWithCovarianceStamped "
                        "or Odometry)")
    p.add_argument("--gt-frame", default=None,
                   help="ground truth from TF instead: the pose of the image's frame_id in this frame")


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-keyframes", type=int, default=None, metavar="N",
                   help="keep at most N keyframes: redundant ones go first (same place and same look), so that "
                        "the day and the dusk views of a place both stay (pipelines/map_sessions.py)")
    p.add_argument("--max-per-place", type=int, default=None, metavar="K",
                   help="keep at most K keyframes per place (0.5 m, 30 deg cell), the most different looks first")


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None,
                   help="the ONNX file a learned map was built with when it is not the shipped network (`map build "
                        "--model`, e.g. an INT8 copy from `reloc quantize`); the map's weights hash must match")


def _budget_of(args) -> dict:
    for name in ("max_keyframes", "max_per_place"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    return {"max_keyframes": args.max_keyframes, "max_per_place": args.max_per_place}


def _add_degrade_args(p: argparse.ArgumentParser) -> None:
    from reloc_ros.core.degrade import PRESETS

    p.add_argument("--degrade", default=None, metavar="NAME[,NAME...]",
                   help=f"degrade the query images (never the map's), seeded per image: {', '.join(PRESETS)} "
                        "(core/degrade.py has their parameters); the report says so")
    p.add_argument("--degrade-seed", type=int, default=0, help="seed of --degrade (default 0)")


def degradation_of(args) -> dict | None:
    """``{"presets": [...], "seed": N}`` from ``--degrade`` / ``--degrade-seed``, or None."""
    from reloc_ros.core.degrade import parse_presets

    if args.degrade is None:
        return None
    return {"presets": list(parse_presets(args.degrade)), "seed": args.degrade_seed}


def _bag_topics(args):
    from reloc_ros.datasets.rosbag import BagTopics

    return BagTopics(image=args.image_topic, camera_info=args.camera_info_topic,
                     depth=getattr(args, "depth_topic", None), gt_topic=args.gt_topic, gt_frame=args.gt_frame)


def _map_input(args, argv) -> tuple:
    """(dataset, map frames, the manifest's build info) of ``map build`` / ``map update``: a bag is one run with no
    split of its own, so all its frames are map frames unless --map-every says otherwise."""
    ds = _load_build_dataset(args)
    whole_bag = args.format == "rosbag" and args.map_every is None
    frames = ds.frames if whole_bag else ds.split(args.map_every)[0]
    info = {"command": "reloc " + " ".join(shlex.quote(a) for a in argv),
            "dataset": {"root": str(Path(ds.root).resolve()), "format": args.format, "map_every": args.map_every}}
    if args.format == "rosbag":
        info["dataset"].update(topics=ds.meta["topics"], gt_source=ds.meta["gt_source"],
                               skipped_no_gt=ds.meta["skipped_no_gt"])
    return ds, frames, info


def _load_build_dataset(args):
    """The dataset of ``reloc map build``: a folder (``--dataset DIR --format F``) or a bag (``--bag BAG``, with or
    without ``--format rosbag``)."""
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.rosbag import load_bag

    if args.bag is not None and args.dataset is not None:
        raise ValueError("give one input: --dataset DIR --format F (a folder of posed images), or --bag BAG (a "
                         "rosbag2), not both")
    if args.format is None and args.bag is not None:
        args.format = "rosbag"
    if args.format is None:
        if args.dataset is not None:
            from reloc_ros.datasets import FORMATS
            raise ValueError(f"--dataset {args.dataset} needs --format F: one of "
                             f"{', '.join(sorted(f for f in FORMATS if f != 'rosbag'))}")
        raise ValueError("give the input: --dataset DIR --format F, or --bag BAG")
    if args.format == "rosbag":
        if args.bag is None or args.dataset is not None:
            raise ValueError("--format rosbag takes --bag BAG (the rosbag2 directory) instead of --dataset")
        return load_bag(args.bag, _bag_topics(args))
    if args.bag is not None:
        raise ValueError(f"--bag reads a rosbag2; --format {args.format} is for --dataset DIR: give one of them")
    if args.dataset is None:
        raise ValueError(f"--format {args.format} needs --dataset DIR")
    return load_dataset(args.dataset, args.format)


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    import importlib

    ap = argparse.ArgumentParser(prog="reloc", description="reloc_ros: visual relocalization tools")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="cmd", required=True)

    mp = sub.add_parser("map", help="build or inspect maps")
    msub = mp.add_subparsers(dest="map_cmd", required=True)
    b = msub.add_parser("build", help="build a map from posed images (a dataset folder or a rosbag2)")
    _add_dataset_args(b, dataset_required=False)
    _add_bag_args(b, depth=True)
    b.add_argument("--extractor", default="learned",
                   help="feature extractor: learned (default: the shipped network, models/relocnet_v1.onnx; it keeps "
                        "localizing in dim light where SIFT finds nothing) or sift (the classical baseline)")
    b.add_argument("--model", type=Path, default=None,
                   help="--extractor learned: ONNX file when not the shipped one (your own export, or an INT8 copy "
                        "from `reloc quantize`); queries must use the same file (the map records its sha256)")
    b.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="the extractor works on images downscaled so that the longer side is at most PX (default "
                        "1024 for both; recorded in the map, queries use the same); smaller is faster and less "
                        "precise (docs/analysis.md, \"Strecha\": at 640 px about half the time per query and, "
                        "in an earlier run, 41 instead of 44 of 48 queries within (0.25 m, 2 deg))")
    b.add_argument("--points", choices=["depth", "triangulate", "learned"], default=None,
                   help="where map 3D comes from (default: depth if the dataset has depth images, else triangulate)")
    b.add_argument("--depth-scale", choices=["fit", "check", "none"], default=None,
                   help="--points learned: rescale the depth head's depth by one factor fitted to the depth the map's "
                        "poses triangulate (fit, the default: the shipped depth head's scale is indoor, 2-8x short "
                        "outdoors), only measure it and warn when off by > 25 %% (check), or neither (none)")
    b.add_argument("--matcher", choices=["auto", "mnn", "lighterglue"], default="auto",
                   help="triangulated points (and the scale fit of --points learned): how keyframes are matched to "
                        "each other for the tracks: lighterglue "
                        "(XFeat's learned matcher; learned features only: 4-6x the tracks, Strecha median error "
                        "1.2-2x lower; ~0.3 s per keyframe pair on 2 cores), mnn (mutual nearest neighbours) or auto "
                        "(the default: lighterglue for --extractor learned with --points triangulate, else mnn; "
                        "docs/precision.md)")
    b.add_argument("--index", choices=["auto", "flat", "hnsw", "ivf"], default="auto",
                   help="retrieval index type (auto: exact search for small maps, IVF for large ones)")
    b.add_argument("--low-light-brightness", type=float, default=0.0, metavar="B",
                   help="> 0: map images whose median grey level (0-1) is below B are enhanced before extraction "
                        "(core/lowlight.py), as queries are with the node's low_light_brightness; recorded in the "
                        "map, and `reloc map update` treats new images the same way. For maps with night "
                        "recordings localized at night: 0.06 with the same for the node (docs/robustness.md); "
                        "0 (default): images as they are")
    b.add_argument("--out", required=True, type=Path, help="map directory to write")
    b.add_argument("--overwrite", action="store_true", help="replace an existing map (atomically)")
    b.add_argument("--reuse", action="store_true",
                   help="keep OUT when it holds a map of these very inputs (its manifest records the same build key: "
                        "extractor and weights, points, index, each frame's name, pose, camera and files), else "
                        "build it (replacing a map)")
    _add_budget_args(b)
    i = msub.add_parser("info", help="say what a map holds: counts, memory, extractor, frame, sessions, updates")
    i.add_argument("map", type=Path)
    i.add_argument("--manifest", action="store_true",
                   help="print the whole manifest (YAML) after the two counts lines, instead of the labelled summary")
    a = msub.add_parser("analyse", help="find the map's look-alikes (keyframes whose view the map also fits at "
                                        "another place) and store them in the map, in place; build, merge and update "
                                        "do this themselves, older maps lack them (the node then asks for the full "
                                        "cold-start motion everywhere)")
    a.add_argument("map", type=Path, help="map directory (replaced atomically)")
    _add_model_arg(a)
    m = msub.add_parser("merge", help="merge maps of several sessions into one (aligned to the first map's frame)")
    m.add_argument("maps", nargs="+", type=Path, help="map directories; the first one's frame is the merged map's")
    m.add_argument("--out", required=True, type=Path, help="merged map directory to write")
    _add_model_arg(m)
    m.add_argument("--align", choices=["auto", "never", "always"], default="auto",
                   help="auto (default): relocalize 150 of each map's keyframes in the first map and move the map "
                        "only when it is in another frame: its own poses disagree with the relocalizations by more "
                        "than a fitted transform leaves (+1 cm / 0.25 deg) and the fit is more than 5 cm / 1 deg "
                        "from the identity; always: apply the fitted transform; never: the maps are in one frame "
                        "(e.g. both from the robot's SLAM map), merge them as they are")
    m.add_argument("--sim3", action="store_true",
                   help="also fit a scale (maps from monocular SLAM, whose scale is arbitrary)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing map at --out (atomically)")
    _add_budget_args(m)
    u = msub.add_parser("update", help="add a session (posed images in the map's frame) to a map, in place, "
                                       "without re-extracting its keyframes")
    u.add_argument("map", type=Path, help="map directory to update (replaced atomically)")
    _add_dataset_args(u, dataset_required=False)
    _add_bag_args(u, depth=True)
    _add_model_arg(u)
    u.add_argument("--session", default=None,
                   help="name of the new session (its keyframes' name prefix; default s<N>)")
    u.add_argument("--keep-all", action="store_true",
                   help="add every frame (default: only frames the map fails to localize, localizes with few "
                        "inliers or off their pose, or whose place has no keyframe that looks like them); the "
                        "recording's frame is then not checked")
    u.add_argument("--trust-poses", action="store_true",
                   help="the recording is in the map's frame even though too few of its frames localize in the map "
                        "to check it (e.g. a night visit); without it such a recording is refused, as is one whose "
                        "localized frames mostly lie far from their own poses (another frame: use `map merge`)")
    u.add_argument("--low-light-brightness", type=float, default=None, metavar="B",
                   help="enhance new images darker than B before extraction (as `map build --low-light-brightness`) "
                        "and record the rule in the map: for adding a night session to a map built without it; a map "
                        "built with a rule keeps its own (default: the map's rule)")
    _add_budget_args(u)

    e = sub.add_parser("eval", help="localize the dataset's query images against a map")
    e.add_argument("--map", required=True, type=Path, help="map directory (from `reloc map build`)")
    _add_dataset_args(e)
    e.add_argument("--json", type=Path, default=None, help="write the summary (and per-query records) here")
    e.add_argument("--config", type=Path, default=None,
                   help="YAML file of settings: the localizer's (the node's parameter names, e.g. top_k: 3, and "
                        "evaluation-only ones such as max_map_keypoints) and with --track the place tracker's (e.g. "
                        "track_min_motion_m); or the node's ROS 2 parameters file itself (config/localizer.yaml "
                        "layout), whose frame, topic and map settings are then left out with a note")
    e.add_argument("--method", choices=["pnp", "retrieval", "2d2d"], default=None,
                   help="pnp (default): 2D-3D + PnP; retrieval: the top-1 keyframe's pose (coarse); "
                        "2d2d: essential matrices against the top-K keyframes (no map 3D needed)")
    e.add_argument("--aggregation", dest="aggregation", action="store_true", default=None,
                   help="merge the 2D-3D matches of all top-K keyframes before PnP (DeViLoc, the default)")
    e.add_argument("--no-aggregation", dest="aggregation", action="store_false", default=None,
                   help="PnP per retrieved keyframe instead of merging all top-K (DeViLoc off)")
    e.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="keyframes retrieved per query (default 5; LocalizerConfig top_k)")
    e.add_argument("--matcher", choices=["mnn", "lighterglue"], default=None,
                   help="query matching: mnn (mutual nearest neighbours, the default) or lighterglue (XFeat's learned "
                        "matcher on the best --lighterglue-keyframes retrieved keyframes; learned maps only; "
                        "docs/precision.md)")
    e.add_argument("--lighterglue-keyframes", type=int, default=None, metavar="N",
                   help="with --matcher lighterglue: match this many retrieved keyframes with it (default 1)")
    e.add_argument("--model", type=Path, default=None,
                   help="ONNX file of a learned map's network when it is not the shipped one (e.g. an ablation "
                        "variant under models/checkpoints/variants/); the map's weights hash must match")
    e.add_argument("--track", action="store_true",
                   help="also replay every query sequence through the node's place tracker from cold starts (what "
                        "the node would publish; JSON key 'track'); odometry as in the scene's bags")
    e.add_argument("--starts-every", type=int, default=25, help="with --track: a cold start every N frames (25)")
    e.add_argument("--track-frames", type=int, default=150,
                   help="with --track: frames tracked after each start (150)")
    e.add_argument("--no-odometry", action="store_true",
                   help="with --track: no odometry (the node with tf_mode map_base): the pose sequence is checked")
    _add_degrade_args(e)

    t = sub.add_parser("train", help="train the shared encoder (needs the [train] extra: torch)")
    t.add_argument("--config", required=True, type=Path, help="training YAML (see config/train_relocnet.yaml)")
    x = sub.add_parser("export", help="export a trained checkpoint to ONNX (needs the [train] extra)")
    x.add_argument("--out", required=True, type=Path, help="ONNX file to write, e.g. models/relocnet_v1.onnx")
    x.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (default: the shipped training run's)")

    d = sub.add_parser("data", help="datasets")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser("synth", help="generate a synthetic RGB-D scene", add_help=False)
    s.add_argument("args", nargs=argparse.REMAINDER)

    handlers = {}
    for mod in _COMMAND_MODULES:
        handlers.update(importlib.import_module(mod).add_parsers(sub))
    return ap, handlers


class _Terminated(BaseException):
    """SIGTERM, raised where the command is, so that its clean-up runs (temporary folders, a map half written)."""


def _terminate(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import signal
    import threading

    own_handler = (threading.current_thread() is threading.main_thread()
                   and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if own_handler:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        if own_handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main(argv: list[str]) -> int:
    ap, handlers = _parser()
    # `reloc data synth ...` forwards its arguments (including -h) to the generator's own parser; the global -q
    # before it is the generator's --quiet.
    quiet = []
    while argv and argv[0] in ("-q", "--quiet"):
        quiet, argv = ["--quiet"], argv[1:]
    if len(argv) >= 2 and argv[0] == "data" and argv[1] == "synth":
        argv = argv + [q for q in quiet if q not in argv]
        from reloc_ros.datasets.synthetic.cli import main as synth_main

        if not {"-h", "--help"} & set(argv[2:]):
            try:  # its textures are scikit-image's photographs: fail before writing anything
                import skimage.data  # noqa: F401
            except ImportError as e:
                print(f"reloc: error: {e}: the scene generator needs the [synth] extra: pip install -e '.[synth]' "
                      "in a checkout (pip install 'reloc_ros[synth]' otherwise; `make demo` installs it)",
                      file=sys.stderr)
                return 2
        return synth_main(argv[2:])
    args = ap.parse_args(quiet + argv)
    from reloc_ros.core.features import ExtractorError
    from reloc_ros.core.mapdb import MapError
    from reloc_ros.datasets.base import DatasetError

    try:
        if args.cmd == "map" and args.map_cmd == "build":
            return _map_build(args, argv)
        if args.cmd == "map" and args.map_cmd == "info":
            return _map_info(args)
        if args.cmd == "map" and args.map_cmd == "analyse":
            return _map_analyse(args)
        if args.cmd == "map" and args.map_cmd == "merge":
            return _map_merge(args, argv)
        if args.cmd == "map" and args.map_cmd == "update":
            return _map_update(args, argv)
        if args.cmd == "eval":
            return _eval(args)
        if args.cmd in ("train", "export"):
            return _train_or_export(args)
        if args.cmd in handlers:
            return handlers[args.cmd](args, argv)
    except (DatasetError, MapError, ExtractorError, ValueError, FileNotFoundError) as e:
        print(f"reloc: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # a map (or its folder) that this user may not write
        print(f"reloc: error: {e}: this user may not write there; work on a copy, or fix the permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reloc: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("reloc: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `reloc map info M | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    ap.print_help()
    return 2


def _map_build(args, argv) -> int:
    from reloc_ros.pipelines.build_map import build_map, build_or_reuse_map
    from reloc_ros.core.features import create_extractor
    from reloc_ros.core.mapdb import check_map_out
    from reloc_ros.core.points import TriangulationConfig

    ds, map_frames, info = _map_input(args, argv)
    points = args.points or ("depth" if all(f.depth_path for f in map_frames) else "triangulate")
    depth_like = [t for t in ds.meta.get("other_image_topics", []) if "depth" in t.lower()]
    if args.format == "rosbag" and points == "triangulate" and args.points is None and depth_like:
        print(f"reloc: note: the bag has {', '.join(depth_like)}, which is not used: the map's points are "
              f"triangulated (minutes); for depth points from depth images registered to the colour images, pass "
              f"--depth-topic {depth_like[0]}", file=sys.stderr)
    if args.depth_scale is not None and points != "learned":
        raise ValueError(f"--depth-scale applies to --points learned only (this map's points: {points})")
    if args.max_side is not None and args.max_side < 32:
        raise ValueError(f"--max-side must be at least 32 pixels (got {args.max_side})")
    kwargs = {} if args.max_side is None else {"max_side": args.max_side}
    if args.model is not None:
        if args.extractor != "learned":
            raise ValueError(f"--model applies to --extractor learned only (got --extractor {args.extractor})")
        kwargs["model_path"] = args.model
    extractor = create_extractor(args.extractor, **kwargs)
    if args.model is not None:  # recorded after the command, as before
        info = {"command": info.pop("command"), "model": str(Path(args.model).resolve()), **info}
    # before the work, not after it (--reuse replaces a map of other inputs: only a map may be there)
    check_map_out(args.out, args.overwrite or args.reuse, "--reuse to keep a map of these inputs")
    _check_low_light(args.low_light_brightness)
    kwargs = dict(show_progress=not args.quiet, index_kind=args.index, depth_scale=args.depth_scale or "fit",
                  **{k: v for k, v in _budget_of(args).items() if v},
                  **({"low_light_brightness": args.low_light_brightness} if args.low_light_brightness > 0 else {}))
    matcher = args.matcher
    if matcher == "auto":
        matcher = "lighterglue" if args.extractor == "learned" and points == "triangulate" else "mnn"
    elif points == "depth":
        raise ValueError("--matcher applies to maps whose points are triangulated (this map's points: depth); "
                         "add --points triangulate or leave --matcher out")
    if matcher == "lighterglue" and args.extractor != "learned":
        raise ValueError(f"--matcher lighterglue matches learned features only (got --extractor {args.extractor}); "
                         "use --matcher mnn")
    if matcher != "mnn":
        kwargs["tri_cfg"] = TriangulationConfig(matcher=matcher)
    if args.reuse:
        db, reused = build_or_reuse_map(map_frames, extractor, points, args.out, info, **kwargs)
        if reused:
            print(f"map {db.path} reused: it was built from these inputs (build key {db.manifest['build']['key']})")
            return 0
    else:
        db = build_map(map_frames, extractor, points, args.out, args.overwrite, info, **kwargs)
    print(f"map written to {db.path}: {_map_summary(db)}, {db.manifest['build']['seconds']:.1f} s"
          + _budget_note(db))
    return 0


def _budget_note(db) -> str:
    """'; the keyframe budget kept N of M' for a map whose keyframes a budget chose, else ''."""
    pruned = db.manifest.get("build", {}).get("pruned")
    if not pruned:
        return ""
    return f"; the keyframe budget ({_budget_rule(pruned)}) kept {pruned['after']} of {pruned['before']}"


def _budget_rule(pruned: dict) -> str:
    """The options of a manifest's ``build.pruned``: '--max-keyframes N[, --max-per-place K]'."""
    return ", ".join(f"--{k.replace('_', '-')} {pruned[k]}" for k in ("max_keyframes", "max_per_place")
                     if pruned.get(k))


def _map_merge(args, argv) -> int:
    from reloc_ros.core.mapdb import check_map_out
    from reloc_ros.pipelines.map_sessions import merge_maps

    check_map_out(args.out, args.overwrite)
    if any(Path(p).resolve() == args.out.resolve() for p in args.maps):
        raise ValueError(f"--out {args.out} is one of the maps to merge: write the merged map elsewhere")
    db, records = merge_maps(args.maps, args.out, args.align, args.sim3, overwrite=args.overwrite, model=args.model,
                             info={"command": "reloc " + " ".join(shlex.quote(a) for a in argv)}, **_budget_of(args))
    for r in records[1:]:
        print(f"{r['map']}: {r['reason']}" + (f" ({r['keyframes_agreeing']} of {r['keyframes_sampled']} sampled "
              f"keyframes agree, residual median {r['residual_m']['median']:.3f} m / "
              f"{r['residual_deg']['median']:.2f} deg)" if r['keyframes_sampled'] else "")
              + (f"; scale {r['scale']:.4f}" if args.sim3 and r["applied"] else ""))
        if r.get("duplicates_dropped"):
            print(f"{r['map']}: {r['duplicates_dropped']} keyframes left out: their images are in an earlier map "
                  "already (the same recording, e.g. a map merged with its own updated copy)")
        if r.get("keyframes_elsewhere"):
            print(f"reloc: warning: {r['keyframes_elsewhere']} of its {r['keyframes_localized']} relocalized keyframes "
                  "were placed more than 1 m / 30 deg from where they are: look-alike places (repeated doors, a "
                  "symmetric corridor) or images too poor to trust (night); single images there can be wrong, and "
                  "more keyframes make a look-alike easier to find: run the node with odometry (docs/RESULTS.md, "
                  "Multi-session maps)",
                  file=sys.stderr)
    print(f"merged map written to {db.path}: {_map_summary(db)}, {len(db.manifest['sessions'])} sessions, "
          f"{db.manifest['build']['seconds']:.1f} s" + _budget_note(db))
    return 0


def _map_update(args, argv) -> int:
    from reloc_ros.core.lowlight import NIGHT_BRIGHTNESS
    from reloc_ros.pipelines.map_sessions import update_map

    _check_rewritable(Path(args.map), "map update")  # before the bag is decoded
    if args.low_light_brightness is not None:
        _check_low_light(args.low_light_brightness)
    _, frames, info = _map_input(args, argv)
    db, st = update_map(args.map, frames, args.session, info, keep_all=args.keep_all, trust_poses=args.trust_poses,
                        model=args.model,
                        show_progress=not args.quiet, low_light_brightness=args.low_light_brightness,
                        **_budget_of(args))
    why = "--keep-all" if args.keep_all else (", ".join(f"{v} {k}" for k, v in st["why_kept"].items() if v)
                                               or "none adds anything")
    print(f"map {db.path} updated with session {st['session']}: {st['kept']} of {st['frames']} frames added "
          f"({why}); now {_map_summary(db)}, {st['seconds']:.1f} s")
    if st.get("pruned"):
        p = st["pruned"]
        print(f"the keyframe budget ({_budget_rule(p)}) kept {p['after']} of {p['before']} keyframes, "
              f"{db.manifest['sessions'][-1]['keyframes']} of them from session {st['session']}")
    if st.get("dark_images"):
        print(f"reloc: note: {st['dark_images']} of the {st['frames']} new images are night-dark (median grey level "
              f"below {NIGHT_BRIGHTNESS:g}) and were used as they are: to localize at night with low_light_brightness "
              f"{NIGHT_BRIGHTNESS:g}, add such sessions with --low-light-brightness {NIGHT_BRIGHTNESS:g} "
              "(docs/robustness.md)")
    return 0


def _check_low_light(value: float) -> None:
    if not (0.0 <= value <= 1.0):  # NaN fails too
        raise ValueError(f"--low-light-brightness must be in [0, 1] (a median grey level; 0 = off), got {value}")


def _map_summary(db) -> str:
    """The counts line that ``map build`` prints and ``map info`` starts with (the map's own points with 3D)."""
    c = db.manifest["counts"]
    points = db.manifest["points"]
    scale = db.manifest.get("build", {}).get("depth_scale", {})
    note = f", depth x {scale['factor']:.3g}" if scale.get("applied") else ""
    tri = db.manifest.get("build", {}).get("triangulation") or {}
    distinct = next((u["triangulated_points"] for u in reversed(db.manifest.get("updates") or [])
                     if isinstance(u, dict) and "triangulated_points" in u), tri.get("points"))  # update: anew
    if points == "triangulate" and distinct is not None:  # one triangulated point is seen by several keypoints
        note += f", {distinct} distinct points"
    if db.point_sigma_rel is not None:  # MapDatabase.point_sigma_rel
        note += f", point uncertainty {100 * db.point_sigma_rel:.2g} % of their distance"
    al = db.manifest.get("aliases")
    looks = ("; look-alikes not analysed (`reloc map analyse` adds them)" if al is None else
             f"; {al['keyframes_with_lookalike']} keyframes have a look-alike elsewhere in the map")
    if al is not None and al["keyframes_with_lookalike"] and db.alias_relation is None:
        looks += " (not where: `reloc map analyse` records it)"
    dark, b = "", db.low_light_brightness
    if b > 0 and db.low_light_keyframes:
        dark = (f"; {db.low_light_keyframes} keyframes enhanced for low light (darker than {b:g}): localize with "
                f"low_light_brightness {b:g}")
    elif b > 0:
        dark = f"; low-light rule {b:g}, no keyframe that dark: a daylight map, localize with low_light_brightness 0"
    return (f"{c['keyframes']} keyframes, {c['keypoints']} keypoints, {len(db.valid_points())} with a 3D point "
            f"({points}{note}){looks}{dark}")


def _train_or_export(args) -> int:
    try:
        if args.cmd == "train":
            from reloc_ros.model.train import main as train_main

            print(f"training finished: {train_main(args.config)}")
        else:
            from reloc_ros.model.export import DEFAULT_CHECKPOINT
            from reloc_ros.model.export import main as export_main

            print(f"exported: {export_main(args.out, args.checkpoint or DEFAULT_CHECKPOINT)}")
    except ImportError as e:
        raise ValueError(f"{e}: training and export need torch: pip install 'reloc_ros[train]'") from e
    return 0


def _map_info(args) -> int:
    import yaml

    from reloc_ros.core.mapdb import MapDatabase
    from reloc_ros.pipelines.map_sessions import sessions_of

    db = MapDatabase.load(args.map)
    sessions = sessions_of(db, Path(args.map))  # a map made by build alone: one session, named after its folder
    print(f"# {db.path}: {_map_summary(db)}")
    print(f"# in memory when loaded: {db.nbytes / 2**20:.1f} MiB"
          + (f"; sessions: {', '.join(s['name'] + ' (' + str(s.get('keyframes')) + ' keyframes)' for s in sessions)}"
             if sessions else ""))
    if args.manifest:
        print(yaml.safe_dump(db.manifest, sort_keys=False))
        return 0
    for label, text in _map_details(db.manifest):
        print(f"{label + ':':<14}{text}")
    print("(the whole manifest, with the files' sha256 and the alignments' transforms: reloc map info MAP --manifest)")
    return 0


def _map_details(m: dict) -> list[tuple[str, str]]:
    """``reloc map info``'s labelled lines from a map's manifest: what a user checks before giving it to the node
    (which network, which frame, how it was made, what each session and update added)."""
    rows = []
    ex = m.get("extractor") or {}
    sha = str(ex.get("model_sha256") or "")
    rows.append(("extractor", f"{ex.get('name', '?')}" + (f" (model sha256 {sha[:12]}..., " if sha else " (")
                 + f"at most {ex.get('max_keypoints', '?')} keypoints, images up to {ex.get('max_side', '?')} px)"))
    rows.append(("map frame", f"{m.get('map_frame', 'map')}; points from {m.get('points', '?')}; index "
                 f"{(m.get('index') or {}).get('kind', '?')}"))
    rows.append(("created", f"{m.get('created', '?')} by reloc_ros {m.get('reloc_ros_version', '?')} "
                 f"(map format {m.get('format_version', '?')})"))
    build = m.get("build") or {}
    if build.get("command"):
        took = f" ({build['seconds']:.1f} s)" if isinstance(build.get("seconds"), (int, float)) else ""
        rows.append(("built by", f"{build['command']}{took}"))
    for i, s in enumerate(m.get("sessions") or []):
        al = s.get("alignment") or {}
        if al:
            how = ("moved into the first map's frame: " if al.get("applied") else "") + str(al.get("reason", ""))
        else:  # the first map of a merge, or a session that `map update` added in the map's own frame
            how = "the reference frame" if i == 0 else "added in the map's frame"
        names = f", keyframe names {s['prefix']}..." if s.get("prefix") else ""
        rows.append(("session", f"{s.get('name')} ({s.get('keyframes')} keyframes{names}): {how}"))
    pruned = build.get("pruned") or {}
    if pruned:
        rows.append(("budget", f"kept {pruned.get('after')} of {pruned.get('before')} keyframes "
                     f"({_budget_rule(pruned)})"))
    for u in m.get("updates") or []:
        if not isinstance(u, dict):
            continue
        why = ", ".join(f"{k} {v}" for k, v in (u.get("why_kept") or {}).items() if v)
        took = f" in {u['seconds']:.1f} s" if isinstance(u.get("seconds"), (int, float)) else ""
        pr = u.get("pruned") or {}
        budget = (f"; the budget ({_budget_rule(pr)}) kept {pr.get('after')} of {pr.get('before')} keyframes"
                  if pr else "")
        rows.append(("update", f"session {u.get('session', '?')}: kept {u.get('kept', '?')} of {u.get('frames', '?')} "
                     f"images{took}" + (f" ({why})" if why else "") + budget))
    files = m.get("files") or {}
    if files:
        rows.append(("files", ", ".join(files) + " (sha256 recorded, checked at load)"))
    return rows


def _check_rewritable(folder: Path, command: str) -> None:
    """Before the work: a map rewritten in place needs its folder and the folder above writable (the new map is
    written beside it and swapped in)."""
    if not folder.is_dir():
        return  # the command's own loading says what is wrong
    for p in (folder, folder.absolute().parent):
        if not os.access(p, os.W_OK):
            raise PermissionError(f"{p} is not writable and `reloc {command}` rewrites {folder} in place")


def _map_analyse(args) -> int:
    from reloc_ros.core.aliases import mark_aliases
    from reloc_ros.core.mapdb import MapDatabase, extractor_for_map

    db = MapDatabase.load(args.map)
    folder = Path(db.path)
    _check_rewritable(folder, "map analyse")
    report = mark_aliases(db, extractor_for_map(db, model_path=args.model))
    db.save(db.path, overwrite=True, index_kind=(db.manifest.get("index") or {}).get("requested", "auto"),
            write_ply=(Path(db.path) / "points.ply").is_file())
    print(f"map {db.path}: {report.summary()}")
    return 0


def _eval(args) -> int:
    from reloc_ros.core.config import settings_of
    from reloc_ros.core.localizer import Localizer, LocalizerConfig, config_from_dict, extractor_for_map
    from reloc_ros.core.mapdb import MapDatabase
    from reloc_ros.datasets import load_dataset
    from reloc_ros.pipelines.evaluate import WRONG_DEG, WRONG_M, evaluate, format_table, write_json

    if args.format == "rosbag":
        raise ValueError("reloc eval reads dataset folders; for a rosbag2 recording use `reloc eval-bag --map MAP "
                         "--bag BAG` (offline through the localizer, or --live through reloc_node)")
    overrides = {}
    if args.config:
        from reloc_ros.cli.settings_file import read_settings_file

        file = read_settings_file(args.config)
        if args.track and file.values.get("tf_mode", "map_odom") != "map_odom" and not args.no_odometry:
            file.note(f"tf_mode {file.values['tf_mode']}: --track replays the recording's odometry all the same "
                      "(add --no-odometry for a robot without odometry)")
        file.drop(file.node_only(), "the node's frames, topics, rates and map: no offline meaning")
        args.model = file.model_path(args.model)
        if file.params_file and not args.track:  # the node's own file sets the tracker too: used with --track
            file.drop(file.tracker_keys(), "the place tracker's settings: they apply with --track")
        for key, option in (("top_k", "--top-k"), ("matcher", "--matcher"), ("method", "--method"),
                            ("lighterglue_keyframes", "--lighterglue-keyframes"), ("aggregation", "--aggregation")):
            file.overridden(key, option, getattr(args, key))
        overrides = file.values
    # the place tracker's settings under their node parameter names (track_*), for --track
    from reloc_ros.core.tracking import TrackerConfig
    from reloc_ros.ros.parameters import TRACKER_FIELDS as tracker_keys
    given = sorted(k for k in overrides if k in tracker_keys)
    if given and not args.track:
        raise ValueError(f"{args.config}: {', '.join(given)} only apply with --track (the place tracker's cold "
                         "starts)")
    args.tracker_overrides = {tracker_keys[k]: overrides.pop(k) for k in given}
    if args.track and (args.starts_every < 1 or args.track_frames < 1):  # before the evaluation, not after it
        raise ValueError(f"--starts-every and --track-frames must be >= 1 (got {args.starts_every} and "
                         f"{args.track_frames})")
    if args.track:  # checked before the evaluation too, and named as the user wrote them (the node's names)
        try:
            args.tracker_config = config_from_dict(TrackerConfig, args.tracker_overrides)
        except ValueError as e:
            msg = str(e)
            for key, field_name in tracker_keys.items():
                msg = re.sub(rf"\bTrackerConfig\.{field_name}\b", key, msg)
            raise ValueError(f"{args.config}: {msg}" if args.config else msg) from None
    if args.aggregation is not None:
        overrides["aggregation"] = args.aggregation
    if args.top_k is not None:
        overrides["top_k"] = args.top_k
    if args.matcher is not None:
        overrides["matcher"] = args.matcher
    if args.lighterglue_keyframes is not None:
        if overrides.get("matcher") != "lighterglue":
            raise ValueError("--lighterglue-keyframes applies with --matcher lighterglue (or matcher: lighterglue in "
                             "--config)")
        overrides["lighterglue_keyframes"] = args.lighterglue_keyframes
    if args.method is not None:
        overrides["method"] = args.method
    settings = {name: st for name, _, st in settings_of(LocalizerConfig)}
    for name in ("top_k", "lighterglue_keyframes"):  # named as typed, not as the config field behind them
        value = getattr(args, name)
        if value is not None and (why := settings[name].why_not("--" + name.replace("_", "-"), value, sep=" ")):
            raise ValueError(why)
    try:
        cfg = config_from_dict(LocalizerConfig, overrides, tuple(tracker_keys))
    except ValueError as e:  # the options were checked above: what is left comes from the file
        raise ValueError(f"{args.config}: {e}" if args.config else str(e)) from None
    db = MapDatabase.load(args.map)
    loc = Localizer(db, extractor_for_map(db, model_path=args.model), cfg)  # --model on a SIFT map: refused there
    if mismatch := loc.low_light_mismatch():
        print(f"reloc: warning: {mismatch} (--config)", file=sys.stderr)
    ds = load_dataset(args.dataset, args.format)
    _, queries = ds.split(args.map_every)
    if not queries:
        raise ValueError("no query images: check --map-every or the dataset's TestSplit.txt")
    map_names = set(loc.db.names)
    for prefix in {str(x.get("prefix") or "") for x in (db.manifest.get("sessions") or []) if isinstance(x, dict)}:
        if prefix:  # keyframes that `map update` / `merge` added under a session prefix are the same images
            map_names |= {n[len(prefix):] for n in loc.db.names if n.startswith(prefix)}
    leaked = [q.name for q in queries if q.name in map_names]
    if leaked:
        raise ValueError(f"{len(leaked)} query images are also in the map (e.g. {leaked[0]}): use the same "
                         "--map-every / split as for `reloc map build` and `reloc map update`")
    odometry = _track_odometry(args, queries) if args.track else None  # before the evaluation: it may refuse
    degradation = degradation_of(args)
    summary, records = evaluate(loc, queries, show_progress=not args.quiet,
                                sequence_labels=ds.meta.get("sequence_labels"), degradation=degradation)
    summary["map"] = str(args.map)
    if degradation:
        summary["degradation"] = degradation
    summary["extractor"] = loc.db.extractor_identity.get("name")
    summary["config"] = vars(cfg)
    label = f" degraded {'+'.join(degradation['presets'])}" if degradation else ""
    rows = {f"{summary['extractor']}{label} (all)": summary}
    for name, s in summary.get("per_sequence", {}).items():
        rows[f"{summary['extractor']}{label} {name}"] = s
    print(format_table(rows))
    st = summary["latency_ms"]["stages"]
    print("stage p50 ms: " + ", ".join(f"{k} {v['p50']:.1f}" for k, v in st.items()))
    nees = summary["nees_position"]
    print(f"position NEES: mean {nees['mean']:.2f}, median {nees['median']:.2f} (a calibrated covariance: mean 3, "
          "median 2.37; below, it is conservative, far above, overconfident)")
    print(f"localized outside ({WRONG_M} m, {WRONG_DEG} deg): {summary['localized_wrong']}")
    held = summary.get("lookalike_held") or {}
    if held.get("count"):
        print(f"FAILED as no stronger than the map's own look-alike (ambiguity_lookalike_ratio; the place tracker "
              f"still weighs them): {held['count']}, of which {held['correct']} within ({WRONG_M} m, {WRONG_DEG} deg)")
    if summary.get("low_light"):
        print(f"enhanced for low light (low_light_brightness): {summary['low_light']} of {summary['queries']} queries")
    if degradation:
        print(f"query images degraded: {', '.join(degradation['presets'])} (seed {degradation['seed']}); the map's "
              "images were not")
    if args.track:
        summary["track"] = _eval_track(args, loc, queries, records, odometry)
    if args.json:
        write_json(args.json, {**summary, "records": records})
    return 0


def _track_odometry(args, queries) -> dict | None:
    """``reloc eval --track``'s odometry per query sequence, as the scene's bags carry it (None: --no-odometry)."""
    import numpy as np

    if args.no_odometry:
        return None
    from reloc_ros.datasets.synthetic.writer import SynthError, run_odometry

    odometry = {}
    for seq in sorted({q.sequence for q in queries}):
        frames = sorted((q for q in queries if q.sequence == seq), key=lambda q: q.name)
        try:
            odometry[seq] = run_odometry(args.dataset, seq, np.stack([f.T_world_from_cam for f in frames]))
        except SynthError as e:
            raise ValueError(f"--track: {e}") from None
    return odometry


def _eval_track(args, loc, queries, records, odometry: dict | None) -> dict:
    """``reloc eval --track``: cold starts through the place tracker (reloc_ros.pipelines.evaluate.evaluate_track)."""
    from reloc_ros.pipelines.evaluate import WRONG_DEG, WRONG_M, evaluate_track

    tracker = args.tracker_config
    tr = evaluate_track(loc, queries, odometry, tracker, args.starts_every, args.track_frames,
                        show_progress=not args.quiet, records=records, degradation=degradation_of(args))
    rows = {"all": tr, **{name or "(one run)": t for name, t in tr["per_sequence"].items()}}
    print(f"cold starts through the place tracker ({'odometry' if odometry else 'no odometry'}, a start every "
          f"{args.starts_every} frames, up to {args.track_frames} frames each: a start near a run's end has fewer):")
    print(f"(published wrong: outside ({WRONG_M} m, {WRONG_DEG} deg); the NEES median is over the published poses "
          "that are not wrong)")
    print("| run | starts | frames | published | within (5 cm, 5 deg) | published wrong | starts without pose | "
          "first pose p50 / p95 s | NEES mean | NEES median (correct) |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def num(v) -> str:  # no published pose: no figure
        return "-" if v != v else f"{v:.2f}"

    for name, t in rows.items():
        ttf = t["time_to_first_pose_s"]
        print(f"| {name} | {t['starts']} | {t['frames']} | {t['published']} | {t['published_within_5cm_5deg']} | "
              f"{t['published_wrong']} | {t['starts_without_pose']} | {num(ttf['p50'])} / {num(ttf['p95'])} | "
              f"{num(t['nees_mean_published'])} | {num(t['nees_median_published_correct'])} |")
    if not tr["published"]:
        print(f"no start published a pose (each had up to {args.track_frames} frames): the tracker needs "
              f"{tracker.min_motion_m:g} m or {tracker.min_motion_deg:g} deg of consistent motion "
              f"({tracker.free_motion_m:g} m / {tracker.free_motion_deg:g} deg where the map knows no look-alike); "
              "the single-image results above say whether the images localize at all")
    if tr["starts_without_pose"]:
        led = tr["starts_without_pose_lookalike_led"]
        print(f"starts without a pose: {tr['starts_without_pose']}; at the end of {led} of them another place had at "
              "least the true place's support (the images favoured a look-alike: publishing the best-supported place "
              "would have published a wrong pose; JSON track.starts_without_pose_detail)")
    w = tr["withheld"]
    g, u = w["publish_gate"], w["uncertain"]
    gate = (f"{g['poses']} off odometry's prediction (publish gate; of them {g['wrong']} wrong, "
            f"{g['within_5cm_5deg']} within (5 cm, 5 deg)), ") if odometry else ""  # the gate needs odometry
    print(f"withheld poses of an accepted place: {gate}{u['poses']} too uncertain (track_publish_max_sigma_deg; "
          f"{u['wrong']} wrong, {u['within_5cm_5deg']} within (5 cm, 5 deg))")
    return tr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
