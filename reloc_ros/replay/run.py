"""What a replay produced: one record per handled image, the ground-truth trajectory, counters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from reloc_ros.core.geometry import pose_errors
from reloc_ros.datasets.rosbag import Trajectory

__all__ = ["ReplayRun", "frame_record"]


@dataclass
class ReplayRun:
    """The outcome of replaying one bag against one map.

    Attributes:
        mode: ``offline`` or ``live``.
        bag, map: what was replayed against what.
        records: one per handled image (keys of ``reloc eval``'s records plus ``stamp_ns`` and ``T_gt``), in
            stamp order; images without ground truth are not in it (counted in ``stats["no_gt"]``).
        gt: the bag's ground-truth trajectory (plots draw all of it).
        stats: counters of the mode (images in the bag, sent, dropped by the node, wall time, ...).
    """

    mode: str
    bag: str
    map: str
    records: list[dict] = field(default_factory=list)
    gt: Trajectory | None = None
    stats: dict = field(default_factory=dict)


def frame_record(name: str, stamp_ns: int, T_gt: np.ndarray, ok: bool, status: str, reason: str,
                 T_est: np.ndarray | None, covariance: np.ndarray | None, timings_ms: dict,
                 num_matches: int = 0, num_inliers: int = 0, code: str = "") -> dict:
    """One scored image, with the keys of :func:`reloc_ros.pipelines.evaluate.evaluate`'s records.

    Args:
        T_gt, T_est: ``T_map_from_cam`` ground truth and estimate (None when not localized).
        covariance: 6x6 pose covariance of the estimate (None: no NEES for this record).
    """
    rec = {"name": name, "sequence": "", "stamp_ns": int(stamp_ns), "ok": bool(ok), "status": status,
           "reason": reason, "code": code, "num_matches": int(num_matches), "num_inliers": int(num_inliers),
           "timings_ms": dict(timings_ms), "t_err": math.inf, "r_err": math.inf, "T_gt": np.asarray(T_gt).tolist()}
    if ok:
        rec["t_err"], rec["r_err"] = pose_errors(T_est, T_gt)
        rec["T_map_from_cam"] = np.asarray(T_est).tolist()
        if covariance is not None:
            cov = np.asarray(covariance)[:3, :3]
            rec["position_sigma_m"] = float(np.sqrt(np.trace(cov)))
            e = np.asarray(T_est)[:3, 3] - np.asarray(T_gt)[:3, 3]
            rec["nees_position"] = float(e @ np.linalg.solve(cov, e))
    return rec
