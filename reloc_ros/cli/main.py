"""`reloc`: the command-line entry point (thin wrappers around the pipeline functions).

Subcommands:
    reloc map build   build a map from posed images
    reloc map info    print a map's manifest
    reloc eval        localize a dataset's query images against a map, print a table, write JSON
    reloc data synth  generate a synthetic RGB-D scene (dataset folder and optional rosbag2)

Further subcommands live in their own modules (see ``_COMMAND_MODULES``): each module has
``add_parsers(sub) -> {command name: handler(args, argv) -> exit code}`` and imports heavy code lazily.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

__all__ = ["main"]

_COMMAND_MODULES = ("reloc_ros.cli.replay_cmd", "reloc_ros.cli.bench_cmd", "reloc_ros.cli.ablate_cmd")


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    from reloc_ros.datasets import FORMATS

    p.add_argument("--dataset", required=True, type=Path, help="dataset folder")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="dataset layout")
    p.add_argument("--map-every", type=int, default=None, metavar="N",
                   help="every N-th image (by sorted name) is a map image, the rest are queries; "
                        "default: the dataset's own split (7-Scenes / synthetic)")


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    import importlib

    ap = argparse.ArgumentParser(prog="reloc", description="reloc_ros: visual relocalization tools")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="cmd", required=True)

    mp = sub.add_parser("map", help="build or inspect maps")
    msub = mp.add_subparsers(dest="map_cmd", required=True)
    b = msub.add_parser("build", help="build a map from posed images")
    _add_dataset_args(b)
    b.add_argument("--extractor", default="sift", help="feature extractor: sift (baseline) or learned")
    b.add_argument("--points", choices=["depth", "triangulate", "learned"], default=None,
                   help="where map 3D comes from (default: depth if the dataset has depth images, else triangulate)")
    b.add_argument("--index", choices=["flat", "hnsw", "ivf"], default="flat", help="retrieval index type")
    b.add_argument("--out", required=True, type=Path, help="map directory to write")
    b.add_argument("--overwrite", action="store_true", help="replace an existing map (atomically)")
    i = msub.add_parser("info", help="print a map's manifest")
    i.add_argument("map", type=Path)

    e = sub.add_parser("eval", help="localize the dataset's query images against a map")
    e.add_argument("--map", required=True, type=Path)
    _add_dataset_args(e)
    e.add_argument("--json", type=Path, default=None, help="write the summary (and per-query records) here")
    e.add_argument("--config", type=Path, default=None, help="YAML file with LocalizerConfig overrides")
    e.add_argument("--no-aggregation", dest="aggregation", action="store_false", default=None,
                   help="PnP per retrieved keyframe instead of merging all top-K (DeViLoc off)")
    e.add_argument("--top-k", type=int, default=None)

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap, handlers = _parser()
    # `reloc data synth ...` forwards its arguments (including -h) to the generator's own parser.
    if len(argv) >= 2 and argv[0] == "data" and argv[1] == "synth":
        from reloc_ros.datasets.synthetic.cli import main as synth_main

        return synth_main(argv[2:])
    args = ap.parse_args(argv)
    from reloc_ros.core.features import ExtractorError
    from reloc_ros.core.mapdb import MapError
    from reloc_ros.datasets.base import DatasetError

    try:
        if args.cmd == "map" and args.map_cmd == "build":
            return _map_build(args, argv)
        if args.cmd == "map" and args.map_cmd == "info":
            return _map_info(args)
        if args.cmd == "eval":
            return _eval(args)
        if args.cmd in ("train", "export"):
            return _train_or_export(args)
        if args.cmd in handlers:
            return handlers[args.cmd](args, argv)
    except (DatasetError, MapError, ExtractorError, ValueError, FileNotFoundError) as e:
        print(f"reloc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reloc: interrupted", file=sys.stderr)
        return 130
    ap.print_help()
    return 2


def _map_build(args, argv) -> int:
    from reloc_ros.build_map import build_map
    from reloc_ros.core.features import create_extractor
    from reloc_ros.datasets import load_dataset

    ds = load_dataset(args.dataset, args.format)
    map_frames, _ = ds.split(args.map_every)
    points = args.points or ("depth" if all(f.depth_path for f in map_frames) else "triangulate")
    extractor = create_extractor(args.extractor)
    info = {"command": "reloc " + " ".join(shlex.quote(a) for a in argv),
            "dataset": {"root": str(Path(args.dataset).resolve()), "format": args.format,
                        "map_every": args.map_every}}
    db = build_map(map_frames, extractor, points, args.out, args.overwrite, info, show_progress=not args.quiet,
                   index_kind=args.index)
    c = db.manifest["counts"]
    print(f"map written to {db.path}: {c['keyframes']} keyframes, {c['keypoints']} keypoints, "
          f"{c['points'][points]} with 3D ({points}), {db.manifest['build']['seconds']:.1f} s")
    return 0


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

    db = MapDatabase.load(args.map)
    print(yaml.safe_dump(db.manifest, sort_keys=False))
    return 0


def _eval(args) -> int:
    import yaml

    from reloc_ros.core.localizer import Localizer, LocalizerConfig, config_from_dict
    from reloc_ros.datasets import load_dataset
    from reloc_ros.evaluate import evaluate, format_table, write_json

    overrides = {}
    if args.config:
        overrides = yaml.safe_load(Path(args.config).read_text()) or {}
    if args.aggregation is not None:
        overrides["aggregation"] = args.aggregation
    if args.top_k is not None:
        overrides["top_k"] = args.top_k
    cfg = config_from_dict(LocalizerConfig, overrides)
    loc = Localizer.from_map(args.map, cfg)
    ds = load_dataset(args.dataset, args.format)
    _, queries = ds.split(args.map_every)
    if not queries:
        raise ValueError("no query images: check --map-every or the dataset's TestSplit.txt")
    map_names = set(loc.db.names)
    leaked = [q.name for q in queries if q.name in map_names]
    if leaked:
        raise ValueError(f"{len(leaked)} query images are also in the map (e.g. {leaked[0]}): use the same "
                         "--map-every / split as for `reloc map build`")
    summary, records = evaluate(loc, queries, show_progress=not args.quiet,
                                sequence_labels=ds.meta.get("sequence_labels"))
    summary["map"] = str(args.map)
    summary["extractor"] = loc.db.extractor_identity.get("name")
    summary["config"] = vars(cfg)
    rows = {f"{summary['extractor']} (all)": summary}
    for name, s in summary.get("per_sequence", {}).items():
        rows[f"{summary['extractor']} {name}"] = s
    print(format_table(rows))
    st = summary["latency_ms"]["stages"]
    print("stage p50 ms: " + ", ".join(f"{k} {v['p50']:.1f}" for k, v in st.items()))
    nees = summary["nees_position"]
    print(f"position NEES (3 = calibrated covariance): mean {nees['mean']:.2f}, median {nees['median']:.2f}")
    if args.json:
        write_json(args.json, {**summary, "records": records})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
