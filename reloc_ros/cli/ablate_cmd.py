"""`reloc ablate`: the seed methods side by side in one table (registered by reloc_ros.cli.main)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> dict:
    from reloc_ros.cli.main import _add_dataset_args

    p = sub.add_parser("ablate", help="one table of the seed methods' variants (maps built as needed)")
    _add_dataset_args(p)
    p.add_argument("--json", required=True, type=Path, help="write the report (rows with full summaries) here")
    p.add_argument("--md", required=True, type=Path, help="write the Markdown table here")
    p.add_argument("--work", type=Path, default=Path("ablation_work"),
                   help="folder for the maps it builds (reused by later runs with the same model and points)")
    p.add_argument("--variants", type=Path, default=None,
                   help="folder of the variant ONNX files (default models/checkpoints/variants)")
    p.add_argument("--require-variants", action="store_true",
                   help="stop when a variant model is missing (default: its rows are marked skipped; the variant "
                        "models are opt-in files, see `python -m reloc_ros.model.variants`)")
    p.add_argument("--skip-missing-variants", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--query-every", type=int, default=1, metavar="N",
                   help="localize every N-th query image only (shorter runs; the table says so)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the maps even when cached ones fit")
    return {"ablate": _ablate}


def _ablate(args, argv) -> int:
    import sys

    from reloc_ros.experiments.ablate import DEFAULT_VARIANTS_DIR, format_markdown, run_ablation
    from reloc_ros.pipelines.evaluate import write_json

    report = run_ablation(args.dataset, args.format, args.map_every, args.work,
                          variants_dir=args.variants or DEFAULT_VARIANTS_DIR,
                          skip_missing_variants=not args.require_variants, rebuild=args.rebuild,
                          query_every=args.query_every,
                          show_progress=not args.quiet, log=lambda m: print(m, file=sys.stderr, flush=True))
    md = format_markdown(report)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(md)
    write_json(args.json, report)
    print(md)
    skipped = [r["key"] for r in report["rows"] if "skipped" in r]
    if skipped:
        print(f"reloc ablate: SKIPPED rows {skipped} (see the table)", file=sys.stderr)
    return 0
