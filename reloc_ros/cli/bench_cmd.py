"""`reloc bench`: latency per stage (learned vs SIFT, one run) and the scaling study (registered by reloc_ros.cli.main).

    reloc bench [--json FILE] [--quick] [--work DIR] [--int8]
    reloc bench --scaling [--scaling-max N] [--json FILE] [--work DIR]
"""

from __future__ import annotations

from pathlib import Path


def add_parsers(sub) -> dict:
    b = sub.add_parser("bench", help="latency benchmark: learned vs SIFT per stage; --scaling: map-size study")
    b.add_argument("--json", type=Path, default=None, help="write the results here")
    b.add_argument("--quick", action="store_true", help="a small scene and few repetitions (smoke run)")
    b.add_argument("--work", type=Path, default=None,
                   help="folder for the generated scene and maps (reused on the next run); default: a temp folder")
    b.add_argument("--int8", action="store_true",
                   help="also an INT8 copy of the learned model (reloc quantize, calibrated on the scene's map images)")
    b.add_argument("--scaling", action="store_true",
                   help="retrieval (flat / IVF / HNSW), map load and matching cost against size instead")
    b.add_argument("--scaling-max", type=int, default=None, metavar="N",
                   help="largest retrieval database in keyframes (default 100000; 1000000 needs ~3 GB RAM)")
    return {"bench": _bench}


def _bench(args, argv) -> int:
    from reloc_ros.experiments.bench import main

    main(args.work, args.json, quick=args.quick, scaling=args.scaling, scaling_max=args.scaling_max,
         progress=not args.quiet, int8=args.int8)
    return 0
