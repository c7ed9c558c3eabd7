"""The report of a replay: summary (the JSON keys of ``reloc eval``), Markdown, PNG plots, TUM trajectories.

Files written by :func:`write_report` into the output folder:

==========================  ==================================================================================
``report.json``             summary + ``mode``, ``bag``, ``map``, ``replay`` (counters) + ``records``
``summary.md``              the accuracy / latency table, per-stage latency, counters, links to the plots
``trajectory.png``          top-down (x-y) ground truth vs estimates, failures marked at their true position
``error_over_time.png``     position and rotation error of each handled image over bag time, failures marked
``error_cdf.png``           cumulative distribution of position and rotation errors, recall thresholds drawn
``latency.png``             histogram of the per-stage and total latency
``trajectory_est.tum``      estimates, TUM format ``t x y z qx qy qz qw`` (``evo_ape tum gt est``)
``trajectory_gt.tum``       the ground truth at the handled images' stamps, same format
==========================  ==================================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc_ros.core.geometry import pos_quat_from_T
from reloc_ros.core.metrics import RECALL_THRESHOLDS, summarize
from reloc_ros.pipelines.evaluate import format_table, is_wrong, write_json
from reloc_ros.replay.run import ReplayRun

__all__ = ["summarize_run", "write_report", "write_tum", "PLOTS"]

NS = 1_000_000_000
PLOTS = ("trajectory.png", "error_over_time.png", "error_cdf.png", "latency.png")


def summarize_run(run: ReplayRun) -> dict:
    """The summary of ``reloc eval`` (queries, localized, failures, medians, recall, latency_ms, nees_position)
    over the handled images, plus ``mode``, ``bag``, ``map`` and ``replay`` (the run's counters)."""
    s = summarize(run.records)
    nees = [r["nees_position"] for r in run.records if "nees_position" in r]
    s["nees_position"] = {"mean": float(np.mean(nees)) if nees else float("nan"),
                          "median": float(np.median(nees)) if nees else float("nan")}
    s["localized_wrong"] = sum(1 for r in run.records if r["ok"] and is_wrong(r["t_err"], r["r_err"]))
    s.update(mode=run.mode, bag=run.bag, map=run.map, replay=dict(run.stats))
    return s


def write_tum(path: Path, stamps_ns, poses) -> None:
    """Write poses ``T_map_from_cam`` as a TUM trajectory (``timestamp tx ty tz qx qy qz qw``, seconds)."""
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for t, T in zip(stamps_ns, poses):
        p, q = pos_quat_from_T(np.asarray(T), "xyzw")
        lines.append(f"{int(t) // NS}.{int(t) % NS:09d} " + " ".join(f"{v:.9f}" for v in (*p, *q)))
    Path(path).write_text("\n".join(lines) + "\n")


def write_report(run: ReplayRun, out: Path, title: str = "") -> dict:
    """Write every file of the report into ``out`` (created); returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_run(run)
    write_json(out / "report.json", {**summary, "records": run.records})
    ok = [r for r in run.records if r["ok"]]
    write_tum(out / "trajectory_est.tum", [r["stamp_ns"] for r in ok], [r["T_map_from_cam"] for r in ok])
    write_tum(out / "trajectory_gt.tum", [r["stamp_ns"] for r in run.records], [r["T_gt"] for r in run.records])
    _plots(run, out)
    (out / "summary.md").write_text(markdown(summary, title or f"reloc eval-bag ({run.mode})"))
    return summary


def markdown(summary: dict, title: str) -> str:
    """The Markdown summary of one replay."""
    st = summary["latency_ms"]["stages"]
    stages = "\n".join(f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} |" for k, v in st.items())
    counters = "\n".join(f"- {k}: {v}" for k, v in summary["replay"].items())
    nees = summary["nees_position"]
    plots = "\n".join(f"![{p}]({p})" for p in PLOTS)
    return (f"# {title}\n\nbag `{summary['bag']}`, map `{summary['map']}`, mode **{summary['mode']}**\n\n"
            f"{format_table({summary['mode']: summary})}\n\n"
            f"Failures count as misses in the recalls; the medians are over all handled images.\n"
            f"Position NEES: mean {nees['mean']:.2f}, median {nees['median']:.2f} (calibrated: mean 3, median 2.37)\n\n"
            f"| stage | p50 ms | p95 ms |\n|---|---|---|\n{stages}\n\n{counters}\n\n"
            f"Trajectories for evo: `evo_ape tum trajectory_gt.tum trajectory_est.tum -a`\n\n{plots}\n")


# --------------------------------------------------------------------------------------------------
def _plots(run: ReplayRun, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = run.records
    t0 = recs[0]["stamp_ns"] if recs else 0
    t = np.array([(r["stamp_ns"] - t0) / NS for r in recs])
    ok = np.array([r["ok"] for r in recs], bool)
    te = np.array([r["t_err"] for r in recs], np.float64)
    re = np.array([r["r_err"] for r in recs], np.float64)
    gt_xyz = np.array([np.asarray(r["T_gt"])[:3, 3] for r in recs]).reshape(-1, 3)
    est_xyz = np.array([np.asarray(r["T_map_from_cam"])[:3, 3] for r in recs if r["ok"]]).reshape(-1, 3)
    title = f"{run.mode} replay: {Path(run.bag).name}"

    fig, ax = plt.subplots(figsize=(7, 6))
    if run.gt is not None and len(run.gt):
        g = run.gt.poses[:, :3, 3]
        ax.plot(g[:, 0], g[:, 1], "-", color="0.6", lw=1.5, label="ground truth")
    ax.plot(est_xyz[:, 0], est_xyz[:, 1], ".", color="tab:blue", ms=5, label=f"estimate ({ok.sum()})")
    if (~ok).any():
        ax.plot(gt_xyz[~ok, 0], gt_xyz[~ok, 1], "x", color="tab:red", ms=7, label=f"failed ({(~ok).sum()})")
    ax.set(xlabel="x (m)", ylabel="y (m)", title=title + ": top-down trajectory")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best")
    _save(fig, out / "trajectory.png")

    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, err, unit in ((axes[0], te, "position error (m)"), (axes[1], re, "rotation error (deg)")):
        ax.semilogy(t[ok], np.maximum(err[ok], 1e-4), ".-", color="tab:blue", ms=4, lw=0.8)
        if (~ok).any():
            floor = np.nanmin(err[ok]) if ok.any() else 1e-3
            ax.plot(t[~ok], np.full((~ok).sum(), max(floor, 1e-4)), "x", color="tab:red", label="failed")
            ax.legend(loc="best")
        ax.set_ylabel(unit)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(title + ": error over time")
    axes[1].set_xlabel("bag time (s)")
    _save(fig, out / "error_over_time.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    n = max(len(recs), 1)
    for ax, err, unit, ths in ((axes[0], te, "position error (m)", {v[0] for v in RECALL_THRESHOLDS.values()}),
                               (axes[1], re, "rotation error (deg)", {v[1] for v in RECALL_THRESHOLDS.values()})):
        e = np.sort(np.maximum(err[ok], 1e-5))
        ax.step(e, np.arange(1, len(e) + 1) / n * 100.0, where="post", color="tab:blue")
        for th in sorted(ths):
            ax.axvline(th, color="0.7", ls="--", lw=0.8)
        ax.set(xscale="log", xlabel=unit, ylabel="% of images (failures never reach 100 %)", ylim=(0, 100))
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title + ": error CDF")
    _save(fig, out / "error_cdf.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    stages = sorted({k for r in recs for k in r["timings_ms"]})
    all_ms = [v for r in recs for v in r["timings_ms"].values() if np.isfinite(v) and v > 0]
    if all_ms:
        bins = np.logspace(np.log10(max(min(all_ms), 1e-2)), np.log10(max(all_ms) * 1.05), 40)
        for s in stages:
            v = [r["timings_ms"][s] for r in recs if s in r["timings_ms"]]
            ax.hist(np.maximum(v, bins[0]), bins=bins, histtype="step", lw=1.5,
                    label=f"{s} (p50 {np.median(v):.1f} ms)")
        ax.set_xscale("log")
        ax.legend(loc="best", fontsize=8)
    ax.set(xlabel="milliseconds", ylabel="images", title=title + ": latency per stage")
    _save(fig, out / "latency.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
