"""Evaluate a localizer on posed query images: per-query errors, recalls, latency."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from reloc_ros.core.geometry import pose_errors
from reloc_ros.core.localizer import Localizer
from reloc_ros.core.metrics import RECALL_THRESHOLDS, summarize
from reloc_ros.datasets.base import Frame, load_image
from reloc_ros.progress import progress_bar

__all__ = ["evaluate", "format_table", "write_json"]


def evaluate(localizer: Localizer, queries: list[Frame], show_progress: bool = True,
             sequence_labels: dict | None = None) -> tuple[dict, list[dict]]:
    """Localize every query frame and compare with its ground-truth pose.

    Returns:
        (summary, records): the summary has ``queries``, ``localized``, ``failures``, ``median_t_m``,
        ``median_r_deg``, ``recall`` (percent per threshold), ``latency_ms`` (p50/p95, per stage), and
        ``per_sequence`` when the queries come from several sequences; one record per query.
    """
    records = []
    for f in progress_bar(queries, "localize", show_progress):
        res = localizer.localize(load_image(f), f.camera)
        rec = {"name": f.name, "sequence": f.sequence, "ok": res.ok, "status": res.status.value,
               "reason": res.reason, "num_matches": res.num_matches, "num_inliers": res.num_inliers,
               "timings_ms": res.timings_ms, "t_err": math.inf, "r_err": math.inf}
        if res.ok:
            rec["t_err"], rec["r_err"] = pose_errors(res.T_map_from_cam, f.T_world_from_cam)
            rec["T_map_from_cam"] = res.T_map_from_cam.tolist()
            rec["position_sigma_m"] = float(np.sqrt(np.trace(res.covariance[:3, :3])))
            e = res.T_map_from_cam[:3, 3] - f.T_world_from_cam[:3, 3]
            rec["nees_position"] = float(e @ np.linalg.solve(res.covariance[:3, :3], e))
        records.append(rec)
    summary = summarize(records)
    nees = [r["nees_position"] for r in records if r["ok"]]
    # Normalised estimation error squared of the position (3 dof): 3 when the covariance is calibrated.
    summary["nees_position"] = {"mean": float(np.mean(nees)) if nees else float("nan"),
                                "median": float(np.median(nees)) if nees else float("nan")}
    seqs = sorted({r["sequence"] for r in records})
    if len(seqs) > 1:
        labels = sequence_labels or {}
        summary["per_sequence"] = {labels.get(s, s): summarize([r for r in records if r["sequence"] == s])
                                   for s in seqs}
    return summary, records


def format_table(rows: dict[str, dict]) -> str:
    """A Markdown table of summaries (one row per name)."""
    keys = list(RECALL_THRESHOLDS)
    head = ("| run | queries | localized | median t (m) | median R (deg) | "
            + " | ".join(f"R@{k}" for k in keys) + " | p50 ms | p95 ms |")
    sep = "|" + "---|" * (head.count("|") - 1)
    lines = [head, sep]
    for name, s in rows.items():
        rec = " | ".join(f"{s['recall'][k]:.1f}" for k in keys)
        lines.append(f"| {name} | {s['queries']} | {s['localized']} | {_fmt(s['median_t_m'], 3)} | "
                     f"{_fmt(s['median_r_deg'], 2)} | {rec} | {s['latency_ms']['p50']:.1f} | "
                     f"{s['latency_ms']['p95']:.1f} |")
    return "\n".join(lines)


def _fmt(x: float, nd: int) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.{nd}f}"


def _jsonable(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def write_json(path: Path, obj) -> None:
    """Write strict JSON (non-finite numbers become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=False))
