"""`reloc quantize`: an INT8 copy of the learned model for CPUs, calibrated on a dataset's images (registered by
reloc_ros.cli.main; see reloc_ros/model/quantize.py)."""

from __future__ import annotations

from pathlib import Path


def add_parsers(sub) -> dict:
    from reloc_ros.cli.main import _add_dataset_args

    p = sub.add_parser("quantize", help="INT8 copy of the learned model for CPUs, calibrated on a dataset's images")
    _add_dataset_args(p)
    p.add_argument("--out", required=True, type=Path,
                   help="ONNX file to write, e.g. maps/relocnet_v1_int8.onnx (not into models/: one model there)")
    p.add_argument("--model", type=Path, default=None, help="float model to quantize (default: the shipped one)")
    p.add_argument("--images", type=int, default=32, metavar="N",
                   help="calibrate on N evenly spaced images (map images when the dataset has a split)")
    p.add_argument("--max-side", type=int, default=1024, metavar="PX",
                   help="calibration resolution: the --max-side the maps will be built with (default 1024)")
    return {"quantize": _quantize}


def _quantize(args, argv) -> int:
    import json

    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.base import evenly_spaced, load_image
    from reloc_ros.model.quantize import quantize_model

    if args.images < 1:
        raise ValueError(f"--images must be at least 1 (got {args.images})")
    ds = load_dataset(args.dataset, args.format)
    frames = ds.split(args.map_every)[0] if (args.map_every or ds.has_split) else ds.frames
    images = [load_image(frames[i]) for i in evenly_spaced(len(frames), args.images)]
    report = quantize_model(args.model, args.out, images, args.max_side, source=str(Path(args.dataset).resolve()))
    print(json.dumps(report, indent=2))
    return 0
