"""Evaluation metrics: pose errors, recall at the standard thresholds, latency statistics."""

from __future__ import annotations

import numpy as np

__all__ = ["RECALL_THRESHOLDS", "recall", "latency_stats", "summarize"]

# key -> (metres, degrees)
RECALL_THRESHOLDS = {
    "5cm_5deg": (0.05, 5.0),
    "25cm_2deg": (0.25, 2.0),
    "50cm_5deg": (0.5, 5.0),
    "5m_10deg": (5.0, 10.0),
}


def recall(t_err_m: np.ndarray, r_err_deg: np.ndarray) -> dict:
    """Percent of queries within each threshold; failed queries carry +inf errors and count as misses."""
    t = np.asarray(t_err_m, np.float64)
    r = np.asarray(r_err_deg, np.float64)
    n = max(len(t), 1)
    return {k: float(100.0 * np.sum((t <= tm) & (r <= rd)) / n) for k, (tm, rd) in RECALL_THRESHOLDS.items()}


def latency_stats(timings: list[dict]) -> dict:
    """p50 / p95 of the total and of every stage (milliseconds)."""
    if not timings:
        return {"p50": float("nan"), "p95": float("nan"), "stages": {}}
    total = np.array([t.get("total", np.nan) for t in timings])
    stages = sorted({k for t in timings for k in t if k != "total"})
    out = {"p50": float(np.nanpercentile(total, 50)), "p95": float(np.nanpercentile(total, 95)), "stages": {}}
    for s in stages:
        v = np.array([t.get(s, np.nan) for t in timings], np.float64)
        out["stages"][s] = {"p50": float(np.nanpercentile(v, 50)), "p95": float(np.nanpercentile(v, 95))}
    return out


def summarize(records: list[dict]) -> dict:
    """Aggregate per-query records (keys ``t_err``, ``r_err``, ``ok``, ``timings_ms``).

    Medians are over all queries, failures counted as infinite error (the usual convention), so a median
    is finite only when more than half the queries localized.
    """
    t = np.array([r["t_err"] if r["ok"] else np.inf for r in records], np.float64)
    rr = np.array([r["r_err"] if r["ok"] else np.inf for r in records], np.float64)
    n = len(records)
    return {
        "queries": n,
        "localized": int(sum(r["ok"] for r in records)),
        "failures": int(sum(not r["ok"] for r in records)),
        "median_t_m": float(np.median(t)) if n else float("nan"),
        "median_r_deg": float(np.median(rr)) if n else float("nan"),
        "recall": recall(t, rr),
        "latency_ms": latency_stats([r["timings_ms"] for r in records]),
    }
