"""Evaluate a localizer on posed query images: per-query errors, recalls, latency."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from reloc_ros.core.degrade import degrade
from reloc_ros.core.geometry import pose_errors
from reloc_ros.core.localizer import Localizer
from reloc_ros.core.metrics import RECALL_THRESHOLDS, summarize
from reloc_ros.core.tracking import PlaceTracker, TrackerConfig, run_probes
from reloc_ros.datasets.base import Frame, load_image
from reloc_ros.progress import progress_bar

__all__ = ["evaluate", "evaluate_track", "format_table", "write_json", "is_wrong", "WRONG_M", "WRONG_DEG",
           "LATENCY_DEFINITION", "OFFLINE_LATENCY_DEFINITION"]

# A pose farther than this from the ground truth is wrong (the trust figures: published_wrong, localized_wrong).
WRONG_M, WRONG_DEG = 0.5, 5.0


def is_wrong(t_err: float, r_err: float) -> bool:
    """A LOCALIZED pose outside (0.5 m, 5 deg) of the ground truth."""
    return t_err > WRONG_M or r_err > WRONG_DEG


def _record(f: Frame, res) -> dict:
    """The JSON record of one query's result (errors, covariance consistency)."""
    rec = {"name": f.name, "sequence": f.sequence, "ok": res.ok, "status": res.status.value,
           "reason": res.reason, "code": res.code.value if res.code is not None else "",
           "num_matches": res.num_matches, "num_inliers": res.num_inliers,
           "timings_ms": res.timings_ms, "t_err": math.inf, "r_err": math.inf, "low_light": bool(res.low_light),
           "covariance_factor": float(res.covariance_factor)}  # > 1: unsure keypoints, a blurred or dark image
    if res.ok:
        rec["t_err"], rec["r_err"] = pose_errors(res.T_map_from_cam, f.T_world_from_cam)
        rec["T_map_from_cam"] = res.T_map_from_cam.tolist()
        rec["position_sigma_m"] = float(np.sqrt(np.trace(res.covariance[:3, :3])))
        rec["covariance"] = np.asarray(res.covariance).tolist()  # published; NEES
        if res.measurement_covariance is not None:  # what the place tracker uses (LocalizationResult)
            rec["measurement_covariance"] = np.asarray(res.measurement_covariance).tolist()
        e = res.T_map_from_cam[:3, 3] - f.T_world_from_cam[:3, 3]
        rec["nees_position"] = float(e @ np.linalg.solve(res.covariance[:3, :3], e))
        rec["lookalike_free"] = bool(res.lookalike_free)  # the place tracker's shorter motion rule
        if res.lookalike_poses is not None:  # where the map's look-alikes would show it (the tracker checks them)
            rec["lookalike_poses"] = [np.asarray(T).tolist() for T in res.lookalike_poses]
    if res.hypotheses:  # an ambiguous image: the two poses it supports (the place tracker weighs them)
        rec["hypotheses"] = [[np.asarray(T).tolist(), int(n)] for T, n in res.hypotheses]
    if res.held is not None:  # FAILED as the map's look-alike: the pose the place tracker still weighs
        rec["held"] = _record(f, res.held)
    return rec


def query_image(f: Frame, degradation: dict | None = None):
    """A query's image as the localizer takes it, degraded when ``degradation`` ({"presets", "seed"}) is given
    (core/degrade.py; seeded per image by its name)."""
    image = load_image(f)
    if degradation:
        image = degrade(image, tuple(degradation["presets"]), degradation["seed"], f.name)
    return image


def evaluate(localizer: Localizer, queries: list[Frame], show_progress: bool = True,
             sequence_labels: dict | None = None, degradation: dict | None = None) -> tuple[dict, list[dict]]:
    """Localize every query frame and compare with its ground-truth pose.

    Returns:
        (summary, records): the summary has ``queries``, ``localized``, ``failures``, ``median_t_m``,
        ``median_r_deg``, ``recall`` (percent per threshold), ``latency_ms`` (p50/p95, per stage), and
        ``per_sequence`` when the queries come from several sequences; one record per query.
    """
    records = [_record(f, localizer.localize(query_image(f, degradation), f.camera))
               for f in progress_bar(queries, "localize", show_progress)]
    summary = summarize(records)
    summary["localized_wrong"] = sum(1 for r in records if r["ok"] and is_wrong(r["t_err"], r["r_err"]))
    summary["low_light"] = sum(1 for r in records if r["low_light"])  # enhanced (LocalizerConfig.low_light_brightness)
    # FAILED as no stronger than the map's look-alike (ambiguity_lookalike_ratio): the place tracker still weighs them;
    # of those, the ones whose pose was within (0.5 m, 5 deg) after all
    held = [r["held"] for r in records if "held" in r]
    summary["lookalike_held"] = {"count": len(held),
                                 "correct": sum(1 for h in held if not is_wrong(h["t_err"], h["r_err"]))}
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


def evaluate_track(localizer: Localizer, queries: list[Frame], odometry: dict | None, config: TrackerConfig,
                   starts_every: int = 25, track_frames: int = 150, show_progress: bool = True,
                   records: list[dict] | None = None, degradation: dict | None = None) -> dict:
    """Cold starts through the node's place tracker: every ``starts_every``-th frame of each query sequence starts
    a fresh :class:`~reloc_ros.core.tracking.PlaceTracker`, which then sees up to ``track_frames`` frames in order
    (retrieval priors chosen by it, as in the node); what it would publish is compared with the ground truth.

    Args:
        odometry: ``{sequence: [N x 4 x 4] T_odom_from_cam}`` aligned with the sequence's frames in name order, or
            None (no odometry: the tracker checks the pose sequence itself).
        records: :func:`evaluate`'s records of the same queries (localized without a prior): reused, not redone.

    Returns:
        ``{"starts", "frames", "published", "published_wrong", "starts_without_pose",
        "starts_without_pose_lookalike_led" (of those, the starts at whose end a wrong place had at least the true
        place's support), "starts_without_pose_detail", "time_to_first_pose_s":
        {"p50", "p95"}, "nees_mean_published", "nees_median_published_correct", "withheld": {"publish_gate" |
        "uncertain": {"poses", "wrong", "within_5cm_5deg"}}, "per_sequence", "config"}``.
    """
    seqs: dict[str, list[Frame]] = {}
    for f in sorted(queries, key=lambda f: f.name):
        seqs.setdefault(f.sequence, []).append(f)
    plan = [(s, k) for s, frames in seqs.items() for k in range(0, len(frames), max(1, starts_every))]
    # frame name -> record localized without a prior (shared by every start)
    cache: dict[str, dict] = {r["name"]: r for r in records or []}

    features: dict = {}  # frame name -> features (the probes localize the same image again with another prior)

    def localize(f: Frame, prior) -> dict:
        if prior is None and f.name in cache:
            return cache[f.name]
        if f.name not in features:
            if len(features) > 400:  # the frames of one start at most, in memory
                features.clear()
            features[f.name] = localizer.extract(query_image(f, degradation))
        res = localizer.localize(None, f.camera, prior, features=features[f.name])
        rec = _record(f, res)
        if prior is None:
            cache[f.name] = rec
        return rec

    starts = []
    n_probes = 0
    for seq, k0 in progress_bar(plan, "cold starts", show_progress):
        frames = seqs[seq][k0:k0 + track_frames]
        odo = None if odometry is None else odometry[seq][k0:k0 + track_frames]
        tracker = PlaceTracker(config)
        t0 = _stamp_s(frames[0], 0)
        pub, withheld = [], []
        for i, f in enumerate(frames):
            stamp_ns = int(round(_stamp_s(f, k0 + i) * 1e9))
            T_odom = None if odo is None else odo[i]
            prior, src = tracker.choose_prior(stamp_ns, T_odom)
            rec = localize(f, prior)
            # held: a single image no stronger than the map's look-alike, weighed by the tracker when it is on
            pose = rec if rec["ok"] else (rec.get("held") if tracker.weighs_held else None)
            d = None if pose is None else tracker.update(
                stamp_ns, np.asarray(pose["T_map_from_cam"]), T_odom, _tracking_covariance(pose),
                pose.get("lookalike_free", False), _lookalikes(pose), np.asarray(pose["covariance"]))
            if d is not None and d.accepted:
                pub.append({**pose, "dt_s": _stamp_s(f, k0 + i) - t0})
            elif d is not None and d.withheld:  # a pose of an accepted place, not published
                withheld.append({**pose, "why": d.withheld})
            elif pose is None:
                tracker.note_failure(src)
                if rec.get("hypotheses"):
                    tracker.note_ambiguous(stamp_ns, rec["hypotheses"], T_odom)
            n_probes += run_probes(tracker, stamp_ns, T_odom, lambda pr: _pose_of(localize(f, pr)))
        start = {"sequence": seq, "start": k0, "frames": len(frames), "published": pub, "withheld": withheld}
        if not pub:  # why nothing: which place the images favoured by the start's end
            truth = {int(round(_stamp_s(f, k0 + i) * 1e9)): f.T_world_from_cam for i, f in enumerate(frames)}
            start["places_at_end"] = _places_at_end(tracker.places(stamp_ns, T_odom), truth)
        starts.append(start)
    out = _track_summary(starts)
    out["per_sequence"] = {s: _track_summary([x for x in starts if x["sequence"] == s]) for s in seqs}
    out["odometry"] = odometry is not None
    out["config"] = dict(vars(config))
    out["localizations"] = len(cache)
    out["probes"] = n_probes  # extra localizations at a rival place (TrackerConfig.max_probes)
    return out


def _places_at_end(places: list, truth: dict) -> dict:
    """The support of the true place (its pose within (0.5 m, 5 deg) of the ground truth) and of the strongest
    other place, as the tracker held them at a start's end (:meth:`PlaceTracker.places`)."""
    true = other = 0.0
    for support, T, stamp_ns in places:
        T_true = truth.get(stamp_ns)
        if T_true is None:
            continue
        if is_wrong(*pose_errors(T, T_true)):
            other = max(other, support)
        else:
            true = max(true, support)
    return {"true": true, "other": other}


def _pose_of(rec: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(T_map_from_cam, the covariance the tracker uses) of a LOCALIZED record, else None."""
    return (np.asarray(rec["T_map_from_cam"]), _tracking_covariance(rec)) if rec["ok"] else None


def _lookalikes(rec: dict) -> list | None:
    """The record's ``lookalike_poses`` as arrays (None when the map does not say where its look-alikes are)."""
    v = rec.get("lookalike_poses")
    return None if v is None else [np.asarray(T, np.float64) for T in v]


def _tracking_covariance(rec: dict) -> np.ndarray:
    """A LOCALIZED record's covariance as the place tracker uses it (LocalizationResult.tracking_covariance)."""
    return np.asarray(rec.get("measurement_covariance", rec["covariance"]))


def _stamp_s(f: Frame, index: int) -> float:
    """A frame's time (s): its timestamp, else 30 Hz from its index in the sequence."""
    return float(f.timestamp) if f.timestamp is not None else index / 30.0


def _track_summary(starts: list[dict]) -> dict:
    pub = [r for s in starts for r in s["published"]]
    wrong = [r for r in pub if is_wrong(r["t_err"], r["r_err"])]
    first = [s["published"][0]["dt_s"] for s in starts if s["published"]]
    nees_ok = [r["nees_position"] for r in pub if not is_wrong(r["t_err"], r["r_err"])]

    def pct(v, q):
        return float(np.percentile(v, q)) if v else float("nan")

    return {"starts": len(starts), "frames": sum(s["frames"] for s in starts), "published": len(pub),
            # the precise ones (what a robot gets from the map, waits and failures included, against "frames")
            "published_within_5cm_5deg": sum(1 for r in pub if _precise(r)),
            "published_wrong": len(wrong), "starts_without_pose": sum(1 for s in starts if not s["published"]),
            # how many frames each start without a pose had (a start 25 frames before a sequence's end has 0.8 s)
            "starts_without_pose_frames": sorted(s["frames"] for s in starts if not s["published"]),
            # of those, the starts at whose end another place had at least the true place's support: the images
            # favoured a look-alike, and publishing the best-supported place would have published a wrong pose
            "starts_without_pose_lookalike_led": sum(
                1 for s in starts if not s["published"] and s["places_at_end"]["other"] > 0
                and s["places_at_end"]["other"] >= s["places_at_end"]["true"]),
            "starts_without_pose_detail": [
                {"sequence": s["sequence"], "start": s["start"], "frames": s["frames"],
                 "support_true_place": round(s["places_at_end"]["true"], 2),
                 "support_other_place": round(s["places_at_end"]["other"], 2)}
                for s in starts if not s["published"]],
            "time_to_first_pose_s": {"p50": pct(first, 50), "p95": pct(first, 95)},
            "nees_mean_published": float(np.mean([r["nees_position"] for r in pub])) if pub else float("nan"),
            "nees_median_published_correct": float(np.median(nees_ok)) if nees_ok else float("nan"),
            "wrong_examples": [{k: r[k] for k in ("name", "t_err", "r_err", "num_inliers")} for r in wrong[:5]],
            # poses of an accepted place that were not published: by the publish gate (off odometry's prediction)
            # or as too uncertain (TrackerConfig.publish_max_sigma_deg), and how many of them were wrong
            "withheld": {why: {"poses": len(w), "wrong": sum(1 for r in w if is_wrong(r["t_err"], r["r_err"])),
                               "within_5cm_5deg": sum(1 for r in w if _precise(r))}
                         for why in ("publish_gate", "uncertain")
                         for w in [[r for s in starts for r in s["withheld"] if r["why"] == why]]}}


def _precise(r: dict) -> bool:
    """A record within the finest recall threshold, (5 cm, 5 deg)."""
    t, deg = RECALL_THRESHOLDS["5cm_5deg"]
    return r["t_err"] <= t and r["r_err"] <= deg


# What the table's p50 / p95 columns are, for every kind of row (offline and live alike).
LATENCY_DEFINITION = ("p50 / p95 ms: the localizer's time per image (extraction to the gated pose, the stages' "
                      "`total`); a live row's image -> pose time is its `end_to_end` stage. Live rows count the "
                      "images the node handled; images it dropped are counted beside the table.")
OFFLINE_LATENCY_DEFINITION = ("p50 / p95 ms: the localizer's time per image (extraction to the gated pose, the "
                              "stages' `total`), every image localized on its own.")


def format_table(rows: dict[str, dict]) -> str:
    """A Markdown table of summaries (one row per name); :data:`LATENCY_DEFINITION` says what its times are."""
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
    # the medians count a failure as infinitely wrong: infinite when fewer than half the queries localized
    return "over half failed" if not math.isfinite(x) else f"{x:.{nd}f}"


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
