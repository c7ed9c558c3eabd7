"""``reloc data synth``: generate a synthetic scene dataset.

Usage::

    reloc data synth --scene NAME --out DIR [--bag] [--n-map N] [--n-query N] [--seed S] [--session K] [--stride K]
                     [--workers W] [--overwrite] [--quiet]

Exit status: 0 on success, 2 on a usage error (unknown scene, non-empty output folder, bad numbers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "add_arguments"]


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``synth`` options to a parser (lets the main ``reloc`` CLI reuse them in a sub-parser)."""
    from reloc_ros.datasets.synthetic.scene import SCENES
    from reloc_ros.datasets.synthetic.writer import DEFAULT_N_MAP, DEFAULT_N_QUERY

    p.add_argument("--scene", required=True,
                   help=f"scene name: one of {', '.join(SCENES)}, or a training scene train_<id> (e.g. train_000)")
    p.add_argument("--out", required=True, type=Path, help="output folder (7-Scenes layout)")
    p.add_argument("--bag", action="store_true", help="also write rosbag2 (mcap) recordings under OUT/bags/")
    p.add_argument("--n-map", type=int, default=DEFAULT_N_MAP, help=f"mapping-run frames (default {DEFAULT_N_MAP})")
    p.add_argument("--n-query", type=int, default=DEFAULT_N_QUERY,
                   help=f"frames per query run (default {DEFAULT_N_QUERY})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--session", type=int, default=0,
                   help="another visit to the same scene, same world frame, own trajectories: 1 = evening (40 %% "
                        "light, warm, furniture moved/removed/added), 2 = night (lamps only, ~15 %%, noise, more "
                        "furniture moved); 0 (default) = the scene as built")
    p.add_argument("--stride", type=int, default=1, help="keep every K-th frame of the 30 Hz trajectory (default 1)")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: min(2, CPUs))")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic dataset in OUT")
    p.add_argument("--reuse", action="store_true",
                   help="keep OUT when it holds this very scene (its scene.yaml records the same build key: scene, "
                        "seed, sizes, stride, bag, camera), else generate it (replacing a generated scene)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="reloc data synth", description=__doc__.splitlines()[0]))


def run(args: argparse.Namespace) -> int:
    """Execute parsed arguments; errors are printed to stderr and give exit status 2."""
    from reloc_ros.datasets.synthetic.scene import SceneError
    from reloc_ros.datasets.synthetic.writer import SynthError, generate, generate_or_reuse

    for name in ("n_map", "n_query", "stride"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    kwargs = dict(n_map=args.n_map, n_query=args.n_query, seed=args.seed, bag=args.bag, stride=args.stride,
                  workers=args.workers, progress=not args.quiet, session=args.session)
    try:
        if args.reuse:
            _, reused = generate_or_reuse(args.scene, args.out, **kwargs)
            if reused and not args.quiet:
                print(f"[synth] {args.out}: reused (same build key)", file=sys.stderr)
        else:
            generate(args.scene, args.out, overwrite=args.overwrite, **kwargs)
    except (SceneError, SynthError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``main(["--scene", "office", "--out", "/tmp/office"])``."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
