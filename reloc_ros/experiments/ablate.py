"""The seed methods side by side: one table that shows what each idea buys.

``reloc ablate --dataset DIR --format FORMAT [--map-every N] --json OUT --md OUT [--work DIR]`` builds the maps
it needs (cached under ``--work``, named after their extractor model and point source) and localizes the same
queries with every variant of :data:`ROWS`:

1. retrieval only: the top-1 keyframe's pose (PNLP's / the thesis's image-retrieval step alone);
2. PnP with triangulated map points;
3. Perspective-n-Learned-Point: PnP with map points from the network's depth (monocular maps);
4. 2D-2D: essential matrices against the top-K keyframes, translation lines intersected (the thesis; no 3D);
5. confidence-weighted aggregation of the 2D-3D matches of all top-K keyframes (DeViLoc) on / off;
6. the global descriptor with / without a depth-aware branch (Piasco et al. ICRA 2019), both fine-tuned
   equally from the shipped model (``reloc_ros.model.variants``);
7. the depth head trained with / without extra dense depth supervision (MicKey + Depth Anything), both
   fine-tuned equally from the shipped model's encoder.

Rows 5 and 6 use the dataset's "base" map points: depth images when every map frame has one (synthetic scenes),
else triangulation. Variants 6 and 7 need the ONNX files written by ``python -m reloc_ros.model.variants``
(``--variants DIR``); without them their rows are in the table marked "skipped" with the reason (``reloc ablate
--require-variants`` stops instead).
"""

from __future__ import annotations

import datetime
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reloc_ros.core.metrics import RECALL_THRESHOLDS

if TYPE_CHECKING:
    from reloc_ros.core.mapdb import MapDatabase

__all__ = ["ROWS", "AblationRow", "run_ablation", "format_markdown", "DEFAULT_VARIANTS_DIR"]

DEFAULT_VARIANTS_DIR = Path("models/checkpoints/variants")
VARIANT_ARMS = ("global_rgb", "depth_aware_global", "depth_sparse", "depth_sparse_dense")


@dataclass(frozen=True)
class AblationRow:
    key: str  # identifier in the JSON
    idea: str  # issue item and what is varied
    source: str  # the paper the idea comes from
    model: str  # "shipped", "sift" or a variant arm of reloc_ros.model.variants
    points: str  # "triangulate", "learned", "depth" or "base" (depth if the map frames have it, else triangulate)
    method: str = "pnp"  # LocalizerConfig.method
    aggregation: bool = True  # LocalizerConfig.aggregation


ROWS = (
    AblationRow("retrieval", "1 retrieval only (top-1 keyframe pose)", "PNLP / Tsai thesis", "shipped", "base",
                "retrieval"),
    AblationRow("pnp_triangulated", "2 PnP, triangulated map points", "hloc-style baseline", "shipped",
                "triangulate"),
    AblationRow("pnlp", "3 PnP, learned-depth map points (PNLP)", "Piasco et al. BMVC 2019", "shipped", "learned"),
    AblationRow("pnp_depth", "PnP, sensor/rendered-depth map points", "reference (RGB-D maps)", "shipped", "depth"),
    AblationRow("2d2d", "4 2D-2D: essential matrices, line intersection", "Tsai thesis 2020", "shipped", "base",
                "2d2d"),
    AblationRow("aggregation_on", "5 aggregation over top-K on (default)", "DeViLoc CVPR 2024", "shipped", "base"),
    AblationRow("aggregation_off", "5 aggregation off (best single keyframe)", "DeViLoc CVPR 2024", "shipped",
                "base", aggregation=False),
    AblationRow("global_rgb", "6 global descriptor, image only (fine-tuned control)", "Piasco et al. ICRA 2019",
                "global_rgb", "base"),
    AblationRow("depth_aware_global", "6 global descriptor + depth branch (fine-tuned)", "Piasco et al. ICRA 2019",
                "depth_aware_global", "base"),
    AblationRow("depth_sparse", "7 PNLP, depth head: sparse (triangulated-like) depth only",
                "Jain & Verma 2024 (MicKey)", "depth_sparse", "learned"),
    AblationRow("depth_sparse_dense", "7 PNLP, depth head: sparse + extra dense depth",
                "Jain & Verma 2024 (MicKey)", "depth_sparse_dense", "learned"),
    AblationRow("sift_baseline", "baseline: SIFT + VLAD, PnP", "classical baseline", "sift", "base"),
)


def _model_path(model: str, variants_dir: Path) -> Path | None:
    if model in ("shipped", "sift"):
        return None
    return Path(variants_dir) / f"relocnet_{model}.onnx"


def _extractor(model: str, variants_dir: Path):
    from reloc_ros.core.features import create_extractor

    if model == "sift":
        return create_extractor("sift")
    path = _model_path(model, variants_dir)
    return create_extractor("learned", **({"model_path": path} if path else {}))


def _variant_info(path: Path) -> dict:
    """Training budget recorded in a variant ONNX's metadata."""
    import onnxruntime as ort

    meta = dict(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                .get_modelmeta().custom_metadata_map)
    return {k: meta[k] for k in ("variant", "train_steps", "train_minutes", "train_from") if k in meta}


def _get_map(out: Path, model: str, points: str, variants_dir: Path, map_frames, info: dict, rebuild: bool,
             log) -> tuple[MapDatabase, dict]:
    """Build (or reuse, by build key) the map of ``model`` + ``points`` at ``out``; returns (the map, build facts)."""
    from reloc_ros.pipelines.build_map import build_or_reuse_map

    t = time.perf_counter()
    db, reused = build_or_reuse_map(map_frames, _extractor(model, variants_dir), points, out, info=info,
                                    rebuild=rebuild, show_progress=False)
    if reused:
        log(f"[ablate] reused map {out} (same build key)")
        return db, {"reused": True, "seconds": db.manifest.get("build", {}).get("seconds")}
    log(f"[ablate] built map {out} ({model}, points {points}, {len(map_frames)} frames)")
    c = db.manifest["counts"]
    return db, {"reused": False, "seconds": round(time.perf_counter() - t, 1), "keyframes": c["keyframes"],
                "points": c["points"].get(points)}


def run_ablation(dataset: Path, fmt: str, map_every: int | None, work: Path,
                 variants_dir: Path = DEFAULT_VARIANTS_DIR, skip_missing_variants: bool = False,
                 rows: tuple[AblationRow, ...] = ROWS, rebuild: bool = False, show_progress: bool = True,
                 query_every: int = 1, log=print) -> dict:
    """Build the maps, localize the queries with every row's variant, return the report (JSON-able).

    Raises:
        FileNotFoundError: a variant's ONNX file is missing and ``skip_missing_variants`` is false.
    """
    from reloc_ros.core.localizer import Localizer, LocalizerConfig, extractor_for_map
    from reloc_ros.datasets import load_dataset
    from reloc_ros.pipelines.evaluate import evaluate, write_json

    if query_every < 1:
        raise ValueError(f"--query-every must be >= 1, got {query_every}")
    ds = load_dataset(dataset, fmt)
    map_frames, queries = ds.split(map_every)
    queries = queries[::query_every]
    if not map_frames or not queries:
        raise ValueError(f"{dataset}: {len(map_frames)} map and {len(queries)} query frames; check --map-every")
    has_depth = all(f.depth_path for f in map_frames)
    base = "depth" if has_depth else "triangulate"
    work = Path(work)
    root = str(Path(dataset).resolve())
    info = {"command": "reloc ablate", "dataset": {"root": root, "format": fmt, "map_every": map_every}}
    report = {"dataset": root, "format": fmt, "map_every": map_every,
              "map_frames": len(map_frames), "queries": len(queries), "query_every": query_every, "base_points": base,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "variants_dir": str(variants_dir), "variants": {}, "maps": {}, "rows": []}
    used = [a for a in VARIANT_ARMS if any(r.model == a for r in rows)]
    missing = [a for a in used if not _model_path(a, variants_dir).is_file()]
    if missing and not skip_missing_variants:
        raise FileNotFoundError(f"variant models {missing} not found in {variants_dir}: train them with "
                                f"`python -m reloc_ros.model.variants --config config/train_variants.yaml` "
                                f"or pass --skip-missing-variants")
    for a in used:
        if a not in missing:
            path = _model_path(a, variants_dir)
            report["variants"][a] = {"onnx": str(path), **_variant_info(path)}
    results = {}  # (model, points, method, aggregation) -> summary
    dbs, extractors = {}, {}  # loaded maps by path, extractors by model (one ONNX session each)
    for row in rows:
        points = base if row.points == "base" else row.points
        entry = {"key": row.key, "idea": row.idea, "source": row.source, "model": row.model, "points": points,
                 "method": row.method, "aggregation": row.aggregation}
        if row.model in missing:
            entry["skipped"] = f"{_model_path(row.model, variants_dir)} not found"
            log(f"[ablate] SKIPPED {row.key}: {entry['skipped']}")
            report["rows"].append(entry)
            continue
        if points == "depth" and not has_depth:
            entry["skipped"] = "the map frames have no depth images"
            report["rows"].append(entry)
            continue
        cfg_key = (row.model, points, row.method, row.aggregation)
        if cfg_key not in results:
            mpath = work / "maps" / f"{row.model}_{points}"
            if mpath not in dbs:
                dbs[mpath], report["maps"][mpath.name] = _get_map(mpath, row.model, points, variants_dir,
                                                                  map_frames, info, rebuild, log)
            db = dbs[mpath]
            if row.model not in extractors:
                path = _model_path(row.model, variants_dir)
                extractors[row.model] = extractor_for_map(db, model_path=path or None)
            ex = extractors[row.model]
            cfg = LocalizerConfig(method=row.method, aggregation=row.aggregation)
            cache = work / "results" / f"{mpath.name}_{row.method}_agg{int(row.aggregation)}.json"
            stamp = {"map_created": db.manifest.get("created"), "queries": [q.name for q in queries],
                     "config": vars(cfg)}
            cached = json.loads(cache.read_text()) if cache.is_file() and not rebuild else {}
            if cached and all(cached.get(k) == v for k, v in stamp.items()):
                log(f"[ablate] {row.key}: reusing {cache}")
                results[cfg_key] = cached["summary"]
            else:
                log(f"[ablate] {row.key}: {len(queries)} queries, map {mpath.name}, method {row.method}, "
                    f"aggregation {row.aggregation}")
                summary, _ = evaluate(Localizer(db, ex, cfg), queries, show_progress=show_progress,
                                      sequence_labels=ds.meta.get("sequence_labels"))
                write_json(cache, {**stamp, "summary": summary})
                results[cfg_key] = json.loads(cache.read_text())["summary"]  # as stored (inf -> null)
        entry["summary"] = results[cfg_key]
        report["rows"].append(entry)
    return report


def _fmt(x, nd: int) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def format_markdown(report: dict) -> str:
    """The table (one row per variant) plus the protocol lines above it."""
    keys = tuple(k for k in ("25cm_2deg", "50cm_5deg", "5cm_5deg") if k in RECALL_THRESHOLDS)
    lines = [f"Dataset `{report['dataset']}` ({report['format']}, map-every {report['map_every']}): "
             f"{report['map_frames']} map frames, {report['queries']} queries"
             + (f" (every {report['query_every']}-th query image)" if report.get("query_every", 1) > 1 else "")
             + "; base map points: "
             f"{report['base_points']}; run {report['date']}."]
    for arm, v in report.get("variants", {}).items():
        lines.append(f"Variant `{arm}`: fine-tuned {v.get('train_steps', '?')} steps / "
                     f"{v.get('train_minutes', '?')} min on the 2-core CPU from the shipped model.")
    lines.append("")
    lines.append("| variant | from | map points | median t (m) | median R (deg) | R@25cm,2deg | R@50cm,5deg | "
                 "R@5cm,5deg | failures | p50 ms/query |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['idea']} | {r['source']} | {r['points']} | skipped: {r['skipped']} |"
                         + " |" * 6)
            continue
        s = r["summary"]
        rec = " | ".join(f"{s['recall'][k]:.1f}" for k in keys)
        lines.append(f"| {r['idea']} | {r['source']} | {r['points']} | {_fmt(s['median_t_m'], 3)} | "
                     f"{_fmt(s['median_r_deg'], 2)} | {rec} | {s['failures']}/{s['queries']} | "
                     f"{_fmt(s['latency_ms']['p50'], 0)} |")
    per_seq = [r for r in report["rows"] if "summary" in r and r["summary"].get("per_sequence")]
    if per_seq:
        lines += ["", "Per query run, recall at (0.5 m, 5 deg) / failures:", ""]
        names = list(per_seq[0]["summary"]["per_sequence"])
        lines.append("| variant | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for r in per_seq:
            ps = r["summary"]["per_sequence"]
            lines.append(f"| {r['idea']} | " + " | ".join(
                f"{ps[n]['recall']['50cm_5deg']:.1f} % / {ps[n]['failures']}" for n in names) + " |")
    return "\n".join(lines) + "\n"
