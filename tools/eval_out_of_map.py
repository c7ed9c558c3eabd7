#!/usr/bin/env python3
"""Wrong-pose protection, measured: queries from OUTSIDE the mapped area must come back FAILED, not as poses.

    python tools/eval_out_of_map.py --work data/oom --extractor sift --json oom_sift.json
    python tools/eval_out_of_map.py --work data/oom --extractor learned --json oom_learned.json
    python tools/eval_out_of_map.py --work data/oom --pairs office:hall --set max_map_keypoints=0  # a config

For each synthetic scene (default: the four benchmark scenes office, corridor, hall, storage; generated into
``--work`` unless there, small runs) a map is built from its mapping run. Out-of-map: scene B's query runs against
scene A's map, for every ordered pair A != B by default (every LOCALIZED result is a false localization: the camera
is not in A at all; the pairs are ordered because what A's map holds and what B's queries show differ). In-map:
A's own query runs against A's map (the recall the gates cost).

Each query is localized once with every gate off (min_inliers 6, no inlier-ratio / reprojection / uncertainty /
coverage / keyframe-distance / ambiguity gate) and once with the default gates except inlier coverage; the single
gates are applied offline to the no-gate result's figures (PnP is the same), the keyframe-distance and ambiguity
gates only exist in the default run. Inlier coverage (the fraction of the image covered by the convex hull of the
inliers; out-of-map matches of a picture that hangs in both scenes cluster on the picture) is replayed on the
default result at several thresholds (the localizer's default ``min_inlier_coverage`` among them; the localizer
checks it before the keyframe-distance and ambiguity gates, and all three are deterministic on the same PnP, so
the replay gives what the localizer gives). The odometry check of the node
(the place tracker :class:`reloc_ros.core.tracking.PlaceTracker`, default settings) is replayed over each query run in order on the
default results, with odometry = the run's ground truth scaled by 1 % (drift); note that it cannot reject the
first pose of a run (there is nothing to compare it with yet).

The default run also records every gate's value (inlier ratio, keyframe-distance ratio, and the strongest second
pose among the correspondences the pose leaves out: the ambiguity gate's figure), so each out-of-map query that the
localizer's defaults accept is listed with all of them: which gate, made how much stricter, would have stopped it.

Prints two tables (false-localization rate out of map; recall at (0.5 m, 5 deg) and wrong poses in map), the
false localizations with their gate values, the gate values' range over correct in-map poses, and writes JSON with
per-query records.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reloc_ros.core.geometry import invert_T, pose_errors  # noqa: E402
from reloc_ros.core.localizer import MAX_MEDIAN_REPROJ_PX, Localizer, LocalizerConfig  # noqa: E402
from reloc_ros.core.metrics import RECALL_THRESHOLDS  # noqa: E402
from reloc_ros.core.plausibility import inlier_coverage  # noqa: E402
from reloc_ros.core.pnp import solve_pnp  # noqa: E402
from reloc_ros.datasets import load_dataset  # noqa: E402
from reloc_ros.datasets.base import load_image  # noqa: E402
from reloc_ros.core.tracking import PlaceTracker  # noqa: E402

NS = 1_000_000_000

SCENES = ["office", "corridor", "hall", "storage"]  # the four synthetic benchmark scenes

DEFAULT = LocalizerConfig()
REPROJ_PX = MAX_MEDIAN_REPROJ_PX["depth"]  # the default gate of this tool's maps (built from depth images)
NO_GATES = dict(min_inliers=6, min_inlier_ratio=0.0, max_median_reproj_px=100.0, max_position_sigma_m=1e6,
                ambiguity_ratio=0.0, max_keyframe_distance_ratio=0.0, min_inlier_coverage=0.0)
# single gates applied offline to the no-gate figures: name -> predicate on a record (True = passes)
SINGLE_GATES = {
    f"min_inliers {DEFAULT.min_inliers}": lambda r: r["inliers"] >= DEFAULT.min_inliers,
    f"inlier ratio {DEFAULT.min_inlier_ratio}": lambda r: r["inliers"] >= DEFAULT.min_inlier_ratio * r["matches"],
    f"reprojection {REPROJ_PX} px": lambda r: r["median_reproj_px"] <= REPROJ_PX,
    f"sigma {DEFAULT.max_position_sigma_m} m": lambda r: r["sigma_m"] <= DEFAULT.max_position_sigma_m,
}
GOOD_M, GOOD_DEG = RECALL_THRESHOLDS["50cm_5deg"]  # a correct pose
NODE_COVERAGE = DEFAULT.min_inlier_coverage  # the node's default min_inlier_coverage
COVERAGES = (0.05, 0.1, 0.15, 0.2)  # thresholds replayed for the localizer's min_inlier_coverage (default 0.1)


def prepare(work: Path, scene: str, n_map: int, n_query: int, extractor: str) -> tuple[Path, Path]:
    from reloc_ros.pipelines.build_map import build_or_reuse_map
    from reloc_ros.core.features import create_extractor
    from reloc_ros.datasets import load_dataset, synthetic

    t0 = time.monotonic()
    data, reused = synthetic.generate_or_reuse(scene, work / scene, n_map=n_map, n_query=n_query, seed=0,
                                               workers=1, progress=False)
    print(f"{'reused' if reused else 'generated'} {scene} in {time.monotonic() - t0:.0f} s", flush=True)
    t0 = time.monotonic()
    map_dir = work / f"map_{scene}_{extractor}"
    map_frames = load_dataset(data, "7scenes").split(None)[0]
    _, reused = build_or_reuse_map(map_frames, create_extractor(extractor), "depth", map_dir,
                                   info={"command": "tools/eval_out_of_map.py"}, show_progress=False)
    print(f"{'reused' if reused else 'built'} map of {scene} ({extractor}) in {time.monotonic() - t0:.0f} s",
          flush=True)
    return data, map_dir


class _GateProbe:
    """Records the figures of the keyframe-distance and ambiguity gates during one ``localize`` call, by wrapping the
    Localizer's own methods on the instance (same computation, nothing re-implemented but the ambiguity figure
    when the gate found no second pose: then the strongest pose among the left-out correspondences is solved
    here the way the gate solves it, to report how close it came)."""

    def __init__(self, loc: Localizer):
        self.loc, self.values = loc, {}
        self._kf, self._amb = loc._keyframe_distance_ratio, loc._second_hypothesis
        loc._keyframe_distance_ratio, loc._second_hypothesis = self._kf_probe, self._amb_probe

    def take(self) -> dict:
        v, self.values = self.values, {}
        return v

    def _kf_probe(self, *a, **k):
        self.values["kf_distance_ratio"] = v = self._kf(*a, **k)
        return v

    def _amb_probe(self, corr, pnp, K, size, prior=None):
        out = self._amb(corr, pnp, K, size, prior)
        alt = out if out is not None else self._left_out_pose(corr, pnp, K, size)
        v = {"main_inliers": int(pnp.num_inliers), "alt_inliers": 0, "alt_m": None, "alt_deg": None,
             "found": out is not None}
        if alt is not None:
            v.update(alt_inliers=int(alt[0]), alt_m=float(alt[1]), alt_deg=float(alt[2]))
        v["alt_ratio"] = v["alt_inliers"] / max(v["main_inliers"], 1)
        # the gate's figure: a second pose counts only when distinct (else it is the same hypothesis)
        v["distinct"] = v["alt_m"] is not None and (v["alt_m"] >= self.loc.config.ambiguity_min_dist_m
                                                     or v["alt_deg"] >= 5.0)
        self.values["ambiguity"] = v
        return out

    def _left_out_pose(self, corr, pnp, K, size):
        """(inliers, m, deg) of the pose PnP finds among the correspondences ``pnp`` left out, or None."""
        rest = ~pnp.inliers
        if rest.sum() < 4:
            return None
        alt = solve_pnp(corr.uv[rest], corr.xyz[rest], K, size, self.loc._pnp_config())
        if not alt.success:
            return None
        dt, dr = pose_errors(invert_T(alt.T_cam_from_world), invert_T(pnp.T_cam_from_world))
        return alt.num_inliers, dt, dr


# LocalizerConfig fields whose default the tables replay offline (single gates, coverage thresholds): not settable
REPLAYED = ("min_inliers", "min_inlier_ratio", "max_median_reproj_px", "max_position_sigma_m", "min_inlier_coverage")


def parse_overrides(items: list[str]) -> dict:
    """``NAME=VALUE`` pairs -> LocalizerConfig overrides, typed like the defaults (validated by LocalizerConfig)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in LocalizerConfig.__dataclass_fields__:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME a LocalizerConfig field")
        if name in REPLAYED:
            raise SystemExit(f"--set {name}: the tables replay this gate at its default; not settable here")
        kind = type(getattr(DEFAULT, name))
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    try:
        replace(DEFAULT, **out)  # range check now, not after the map builds
    except ValueError as e:
        raise SystemExit(f"--set: {e}") from e
    return out


def run_pair(probe: _GateProbe, data: Path, in_map: bool) -> list[dict]:
    """Localize every query of ``data`` with ``probe``'s Localizer without and with the gates (the other
    LocalizerConfig values: the Localizer's, for both runs)."""
    loc = probe.loc
    base = replace(loc.config, min_inlier_coverage=0.0)  # the coverage gate is replayed below at several thresholds
    _, queries = load_dataset(data, "7scenes").split(None)
    recs = []
    for q in queries:
        feats = loc.extractor.extract(load_image(q))
        loc.config = replace(base, **NO_GATES)
        r0 = loc.localize(None, q.camera, features=feats)
        loc.config = base
        probe.take()
        r1 = loc.localize(None, q.camera, features=feats)
        gv = probe.take()
        rec = {"name": q.name, "sequence": q.sequence, "T_gt": np.asarray(q.T_world_from_cam).tolist(),
               "ok_nogate": r0.ok, "matches": r0.num_matches, "inliers": r0.num_inliers,
               "inlier_ratio": r0.num_inliers / max(r0.num_matches, 1),
               "median_reproj_px": r0.median_reproj_px if r0.ok else float("inf"),
               "sigma_m": float(np.sqrt(np.trace(r0.covariance[:3, :3]))) if r0.ok else float("inf"),
               "ok_default": r1.ok, "reason_default": r1.reason,
               "matches_default": r1.num_matches, "inliers_default": r1.num_inliers,
               "kf_distance_ratio": gv.get("kf_distance_ratio"), "ambiguity": gv.get("ambiguity"),
               "T_default": r1.T_map_from_cam.tolist() if r1.ok else None,
               "lookalike_free_default": bool(r1.lookalike_free),
               "coverage_default": inlier_coverage(r1.inlier_xyz, r1.T_map_from_cam, q.camera) if r1.ok else 0.0}
        for key, res in (("nogate", r0), ("default", r1)):
            rec[f"good_{key}"] = bool(in_map and res.ok and all(
                e <= lim for e, lim in zip(pose_errors(res.T_map_from_cam, q.T_world_from_cam), (GOOD_M, GOOD_DEG))))
        recs.append(rec)
    _replay_odometry(recs, "odom", lambda r: r["ok_default"])
    _replay_odometry(recs, "node", lambda r: r["ok_default"] and r["coverage_default"] >= NODE_COVERAGE)
    return recs


def _replay_odometry(recs: list[dict], key: str, passes) -> None:
    """The node's odometry check over each query run in order, on the results ``passes`` accepts (odometry:
    ground truth with 1 % scale drift); sets ``ok_{key}`` and ``good_{key}``."""
    for seq in sorted({r["sequence"] for r in recs}):
        gate = PlaceTracker()
        run = [r for r in recs if r["sequence"] == seq]
        p0 = np.asarray(run[0]["T_gt"])[:3, 3]
        for i, r in enumerate(run):
            r[f"ok_{key}"] = r[f"good_{key}"] = False
            if not passes(r):
                continue
            T_odom_cam = np.asarray(r["T_gt"]).copy()
            T_odom_cam[:3, 3] = p0 + 1.01 * (T_odom_cam[:3, 3] - p0)
            r[f"ok_{key}"] = gate.update(i * NS // 30, np.asarray(r["T_default"]), T_odom_cam,
                                         lookalike_free=r.get("lookalike_free_default", False)).accepted
            r[f"good_{key}"] = r[f"ok_{key}"] and r["good_default"]


def cov_label(c: float) -> str:
    return (f"localizer defaults (coverage >= {c})" if c == NODE_COVERAGE
            else f"default gates, coverage >= {c} instead")


NODE_LABEL = "node defaults: localizer defaults + odometry check"


def summarize(recs: list[dict], in_map: bool) -> dict:
    n = len(recs)
    # row -> (run whose ok_ / good_ flags count, offline gate on top of it or None); good_X implies ok_X
    rows = {"no gates": ("nogate", None)}
    rows.update({name + " only": ("nogate", g) for name, g in SINGLE_GATES.items()})
    rows["default gates without coverage"] = ("default", None)
    rows["default gates without coverage + odometry"] = ("odom", None)
    rows.update({cov_label(c): ("default", lambda r, c=c: r["coverage_default"] >= c) for c in COVERAGES})
    rows[NODE_LABEL] = ("node", None)
    out = {}
    for name, (run, gate) in rows.items():
        passed = [r for r in recs if r[f"ok_{run}"] and (gate is None or gate(r))]
        loc_n, good_n = len(passed), sum(bool(r[f"good_{run}"]) for r in passed)
        out[name] = {"queries": n, "localized": loc_n, "correct": good_n,
                     "false_localization_pct": None if in_map else 100.0 * loc_n / n,
                     "recall_pct": 100.0 * good_n / n if in_map else None,
                     "wrong": loc_n - good_n if in_map else loc_n}
    return out


def _fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def gate_values(r: dict) -> dict:
    """The gate figures of one record (default run; PnP figures from the no-gate run, the same PnP)."""
    a = r.get("ambiguity") or {}
    return {"matches": r["matches"], "inliers": r["inliers"], "inlier_ratio": r["inlier_ratio"],
            "median_reproj_px": r["median_reproj_px"], "sigma_m": r["sigma_m"], "coverage": r["coverage_default"],
            "kf_distance_ratio": r.get("kf_distance_ratio"), "alt_inliers": a.get("alt_inliers"),
            "alt_ratio": a.get("alt_ratio"), "alt_m": a.get("alt_m"), "alt_deg": a.get("alt_deg"),
            # ambiguity gate figure: second-pose inliers / inliers when that pose is distinct, else 0
            "ambiguity": (a["alt_ratio"] if a.get("distinct") else 0.0) if a else None}


def _print_gate_rows(rows: list[dict], last: str) -> None:
    print("| MAP<-QUERIES | query | matches | inliers | ratio | reproj px | sigma m | coverage | kf dist ratio "
          f"| 2nd pose inliers (x main, m / deg away) | {last} |")
    print("|---" * 11 + "|")
    for x in rows:
        print(f"| {x['pair']} | {x['query']} | {x['matches']} | {x['inliers']} | {x['inlier_ratio']:.3f} | "
              f"{x['median_reproj_px']:.2f} | {x['sigma_m']:.3f} | {x['coverage']:.3f} | "
              f"{_fmt(x['kf_distance_ratio'])} | {_fmt(x['alt_inliers'], 'd')} ({_fmt(x['alt_ratio'])}, "
              f"{_fmt(x['alt_m'])} / {_fmt(x['alt_deg'], '.1f')}) | {x[last]} |")


def print_false_localizations(report: dict) -> dict:
    """Every out-of-map query the default gates without coverage accept (whether the coverage gate and the odometry
    check stop it), and every wrong in-map pose the localizer's defaults accept, with their gate values."""
    oom, wrong = [], []
    for pair, recs in report["records"].items():
        a, b = pair.split("<-")
        for r in recs:
            if not r["ok_default"]:
                continue
            row = {"pair": pair, "query": r["name"], **gate_values(r)}
            if a != b:
                cov_ok = r["coverage_default"] >= NODE_COVERAGE
                # the node's odometry replay runs on the results the coverage gate passes (ok_node)
                oom.append({**row, "coverage gate": "passes" if cov_ok else "stops it",
                            "stopped by": "coverage" if not cov_ok else "odometry" if not r["ok_node"] else "-",
                            "outcome": "LOCALIZED" if r["ok_node"] else "FAILED"})
            elif not r["good_default"] and r["coverage_default"] >= NODE_COVERAGE:
                err_m, err_deg = pose_errors(np.asarray(r["T_default"]), np.asarray(r["T_gt"]))
                wrong.append({**row, "error": f"{err_m:.2f} m / {err_deg:.1f} deg",
                              "odometry check": "passes" if r["ok_node"] else "stops it"})
    thresholds = (f"thresholds: inliers >= {DEFAULT.min_inliers}, ratio >= {DEFAULT.min_inlier_ratio}, "
                  f"reprojection <= {REPROJ_PX} px, sigma <= {DEFAULT.max_position_sigma_m} m, "
                  f"coverage >= {DEFAULT.min_inlier_coverage}, keyframe distance <= "
                  f"{DEFAULT.max_keyframe_distance_ratio}, distinct second pose < {DEFAULT.ambiguity_ratio} x inliers")
    n_false = sum(x["coverage gate"] == "passes" for x in oom)
    n_node = sum(x["outcome"] == "LOCALIZED" for x in oom)
    print(f"\nOut-of-map queries that pass every default gate but coverage ({len(oom)}; {n_false} pass coverage "
          f">= {NODE_COVERAGE} too = false localizations of the localizer, {n_node} of the node); {thresholds}")
    if oom:
        oom.sort(key=lambda x: -x["coverage"])
        _print_gate_rows([{**x, "node: stopped by / outcome": f"{x['stopped by']} / {x['outcome']}"} for x in oom],
                         "node: stopped by / outcome")
    print(f"\nWrong in-map poses (> {GOOD_M} m or {GOOD_DEG} deg) the localizer's defaults accept ({len(wrong)})")
    if wrong:
        _print_gate_rows([{**x, "error / odometry check": f"{x['error']} / {x['odometry check']}"} for x in wrong],
                         "error / odometry check")
    return {"out_of_map_without_coverage": oom, "in_map_wrong": wrong}


def print_in_map_ranges(report: dict) -> dict:
    """Range of each gate figure over the correct in-map poses the localizer's defaults accept: how far a gate can
    be tightened before it costs recall."""
    good = [gate_values(r) for k, recs in report["records"].items() if len(set(k.split("<-"))) == 1 for r in recs
            if r["good_default"] and r["coverage_default"] >= NODE_COVERAGE]
    out = {}
    if not good:
        return out
    for key in ("inliers", "inlier_ratio", "coverage", "median_reproj_px", "sigma_m", "kf_distance_ratio",
                "ambiguity"):
        v = np.array([g[key] for g in good if g[key] is not None], float)
        if len(v):
            q = np.percentile(v, [0, 1, 5, 50, 95, 99, 100])
            out[key] = dict(zip(("min", "p1", "p5", "median", "p95", "p99", "max"), map(float, q)))
    print(f"\nGate figures of the {len(good)} correct in-map poses the localizer's defaults accept "
          "(min / 1st / 5th / median / 95th / 99th percentile / max; ambiguity: a distinct second pose's inliers "
          "over the pose's, 0 when none)")
    for key, d in out.items():
        print(f"  {key}: " + " / ".join(f"{x:.3g}" for x in d.values()))
    return out


def _print_table(columns: dict, gates: list[str], cell, total) -> None:
    """A row per gate, a column per summary in ``columns`` (``cell`` formats one) and the ``total`` over them all
    (``total`` formats the summed counts)."""
    print("| gates | " + " | ".join(columns) + " | all |")
    print("|---" * (len(columns) + 2) + "|")
    for g in gates:
        cells = [col[g] for col in columns.values()]
        t = {k: sum(c[k] for c in cells) for k in ("queries", "localized", "correct", "wrong")}
        print(f"| {g} | " + " | ".join(map(cell, cells)) + f" | {total(t)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scenes and maps (reused when present)")
    ap.add_argument("--scenes", nargs="+", default=SCENES)
    ap.add_argument("--pairs", nargs="*", default=None, metavar="MAP:QUERIES",
                    help="out-of-map pairs (default: every ordered pair of different scenes)")
    ap.add_argument("--extractor", default="sift", choices=["sift", "learned"])
    ap.add_argument("--n-map", type=int, default=80)
    ap.add_argument("--n-query", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="LocalizerConfig values other than the defaults, e.g. max_map_keypoints=0 (not the gates "
                         f"the tables replay: {', '.join(REPLAYED)})")
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.set)
    config = replace(DEFAULT, **overrides)
    t_start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    scenes = {s: prepare(args.work, s, args.n_map, args.n_query, args.extractor) for s in args.scenes}
    pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs else [
        (a, b) for a in args.scenes for b in args.scenes if a != b]
    report = {"extractor": args.extractor, "n_map": args.n_map, "n_query": args.n_query,
              "overrides": overrides, "config": vars(config),
              "in_map": {},
              "out_of_map": {}, "records": {}}
    t0 = time.monotonic()
    probes = {s: _GateProbe(Localizer.from_map(scenes[s][1], config)) for s in args.scenes}  # each map loaded once
    for s in args.scenes:
        recs = run_pair(probes[s], scenes[s][0], in_map=True)
        report["in_map"][s] = summarize(recs, True)
        report["records"][f"{s}<-{s}"] = recs
        print(f"in map {s}: {len(recs)} queries ({time.monotonic() - t0:.0f} s)", flush=True)
    for a, b in pairs:
        recs = run_pair(probes[a], scenes[b][0], in_map=False)
        report["out_of_map"][f"{a}<-{b}"] = summarize(recs, False)
        report["records"][f"{a}<-{b}"] = recs
        print(f"out of map {a} map <- {b} queries: {len(recs)} ({time.monotonic() - t0:.0f} s)", flush=True)

    gates = list(next(iter(report["in_map"].values())))
    print(f"\nOut-of-map queries ({args.extractor}): false localizations (LOCALIZED results) / queries, "
          "columns MAP<-QUERIES")
    _print_table(report["out_of_map"], gates, lambda c: f"{c['localized']}/{c['queries']}",
                 lambda t: f"{t['localized']}/{t['queries']} ({100.0 * t['localized'] / max(t['queries'], 1):.1f} %)")
    print(f"\nIn-map queries ({args.extractor}): recall at ({GOOD_M} m, {GOOD_DEG} deg) % (wrong poses)")
    _print_table(report["in_map"], gates, lambda c: f"{c['recall_pct']:.1f} ({c['wrong']})",
                 lambda t: f"{100.0 * t['correct'] / max(t['queries'], 1):.1f} ({t['wrong']})")
    report["gate_values"] = print_false_localizations(report)
    report["in_map_gate_ranges"] = print_in_map_ranges(report)
    report["wall_s"] = time.monotonic() - t_start
    print(f"\nwall time {report['wall_s']:.0f} s (scene generation and map builds included)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=lambda x: None if x != x else str(x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
