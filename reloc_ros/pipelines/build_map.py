"""Build a map (keyframes + 3D points + retrieval index) from posed images."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from reloc_ros.core import lowlight
from reloc_ros.core.aliases import mark_aliases
from reloc_ros.core.config import digest
from reloc_ros.core.features import ExtractorError, FeatureExtractor
from reloc_ros.core.mapdb import POINT_SOURCES, Keyframe, MapDatabase, MapError
from reloc_ros.core.points import (TriangulationConfig, fit_depth_scale, points_from_depth, sample_depth,
                                   triangulate_keyframes)
from reloc_ros.datasets.base import DatasetError, Frame, check_image_size, evenly_spaced, load_depth, load_image
from reloc_ros.progress import progress_bar

__all__ = ["build_map", "build_or_reuse_map", "map_build_key", "frame_points", "make_keyframe", "POINT_MODES",
           "DEPTH_SCALE_MODES"]

log = logging.getLogger(__name__)

POINT_MODES = ("depth", "triangulate", "learned")
# --points learned: rescale the predicted depth to the depth the map's own poses triangulate (fit), only compare the
# two and warn (check), or neither (none); see fit_depth_scale
DEPTH_SCALE_MODES = ("fit", "check", "none")
DEPTH_SCALE_TOLERANCE = 1.25  # check: warn when the fitted factor is outside [1 / this, this]
DEPTH_SCALE_KEYFRAMES = 60  # the factor is measured on at most this many (evenly spaced) keyframes
# Predicted depth is smooth: the 5 % neighbourhood test for sensor depth rejects most points on slanted surfaces.
LEARNED_DEPTH_MAX_SPREAD = 0.2


def map_build_key(frames: list[Frame], extractor: FeatureExtractor, points: str, index_kind: str = "auto",
                  depth_scale: str = "fit", tri_cfg: TriangulationConfig = TriangulationConfig(),
                  max_keyframes: int | None = None, max_per_place: int | None = None,
                  low_light_brightness: float = 0.0) -> str:
    """The digest of everything a map depends on: the extractor's identity (weights' sha256 and settings), where
    its points come from and how, and each map frame (name, pose, camera, image and depth file sizes). Recorded in
    the manifest as ``build.key``; :func:`build_or_reuse_map` reuses a map only when it matches."""
    def size(p):
        try:
            return Path(p).stat().st_size if p is not None else None
        except OSError:
            return None

    cams = {}
    rows = []
    for f in frames:
        c = f.camera
        cam = cams.setdefault((c.width, c.height, c.fx, c.fy, c.cx, c.cy, c.distortion_model, tuple(c.dist)),
                              len(cams))
        rows.append([f.name, np.round(np.asarray(f.T_world_from_cam, np.float64), 9).ravel().tolist(), cam,
                     size(f.image_path), size(f.depth_path), f.depth_scale])
    from reloc_ros.pipelines.map_sessions import BUDGET_CONFIDENCE_POWER

    # (the power: a budgeted map built before the weights is built again)
    budget = ({"budget": [max_keyframes, max_per_place], "budget_confidence_power": BUDGET_CONFIDENCE_POWER}
              if max_keyframes or max_per_place else {})
    if low_light_brightness > 0:  # absent when off: the keys of maps built before the option stay valid
        budget["low_light_brightness"] = float(low_light_brightness)
    return digest({**budget, "extractor": extractor.identity(), "points": points, "index": index_kind,
                   "depth_scale": depth_scale if points == "learned" else None,
                   "triangulation": repr(tri_cfg) if points == "triangulate" else None,
                   "cameras": [list(k) for k in cams], "frames": rows})


def build_or_reuse_map(frames: list[Frame], extractor: FeatureExtractor, points: str, out: Path,
                       info: dict | None = None, rebuild: bool = False, **kwargs) -> tuple[MapDatabase, bool]:
    """The map at ``out`` when its manifest records the build key of these inputs (:func:`map_build_key`), else
    built there (:func:`build_map`, replacing a map of other inputs; a folder that is not a map is refused).
    Returns (the loaded map, reused). The one way drivers (bench, ablate, tools, ``reloc map build --reuse``)
    reuse maps."""
    key = map_build_key(frames, extractor, points, kwargs.get("index_kind", "auto"), kwargs.get("depth_scale", "fit"),
                        kwargs.get("tri_cfg", TriangulationConfig()), kwargs.get("max_keyframes"),
                        kwargs.get("max_per_place"), kwargs.get("low_light_brightness", 0.0))
    if not rebuild and (Path(out) / "manifest.yaml").is_file():
        try:
            db = MapDatabase.load(out)
            if db.manifest.get("build", {}).get("key") == key:
                return db, True
        except MapError:
            pass
    build_map(frames, extractor, points, out, overwrite=True, info=info, **kwargs)
    return MapDatabase.load(out), False  # as stored (float16 descriptors), like a reused map


def build_map(frames: list[Frame], extractor: FeatureExtractor, points: str, out: Path, overwrite: bool = False,
              info: dict | None = None, tri_cfg: TriangulationConfig = TriangulationConfig(),
              show_progress: bool = True, index_kind: str = "auto", depth_scale: str = "fit",
              max_keyframes: int | None = None, max_per_place: int | None = None,
              low_light_brightness: float = 0.0) -> MapDatabase:
    """Extract features of ``frames``, give their keypoints 3D points, and write the map to ``out``.

    Args:
        frames: the map images with poses (the dataset's world frame becomes the map frame).
        extractor: feature extractor (its identity and state are stored in the manifest / HDF5).
        points: where 3D comes from: ``depth`` (depth images), ``triangulate`` (multi-view with the known
            poses) or ``learned`` (the extractor's depth head, Perspective-n-Learned-Point).
        out: map directory (written atomically; an existing one needs ``overwrite``).
        info: extra manifest entries (e.g. the build command).
        depth_scale: with ``points="learned"``: ``fit`` measures one factor between the depth head's metric depth
            and the depth of the keypoints that the map's poses triangulate and rescales the depth by it (the
            shipped depth head's scale is indoor: outdoors it is 2-8x short); when the poses do not constrain it
            (too little overlap) it warns and keeps the network's scale. ``check`` only records the factor and warns
            when it is off by more than 25 %; ``none`` skips both. The factor goes into the manifest.
        max_keyframes, max_per_place: a keyframe budget (:func:`~.map_sessions.select_keyframes`), applied after
            the points are made (triangulation sees every frame).
        low_light_brightness: > 0: map images darker than this (median grey level, 0-1) are enhanced before
            extraction, as queries are with the same ``LocalizerConfig.low_light_brightness`` (core/lowlight.py);
            recorded in the manifest. 0: images as they are.

    Raises:
        DatasetError / ExtractorError: unusable input, with what to do.
    """
    if points not in POINT_MODES:
        raise ValueError(f"unknown --points {points!r}; choose one of {POINT_MODES}")
    if depth_scale not in DEPTH_SCALE_MODES:
        raise ValueError(f"unknown --depth-scale {depth_scale!r}; choose one of {DEPTH_SCALE_MODES}")
    if not frames:
        raise DatasetError("no map frames selected: check --map-every or the dataset's TrainSplit.txt")
    if points == "depth" and any(f.depth_path is None for f in frames):
        missing = next(f.name for f in frames if f.depth_path is None)
        raise DatasetError(f"--points depth needs a depth image for every map frame; {missing} has none "
                           "(use --points triangulate)")
    t_start = time.perf_counter()
    feats, kp_ideal = [], []
    for f in progress_bar(frames, "extract", show_progress):
        fe = lowlight.extract(extractor, load_image(f), low_light_brightness)
        check_image_size(f, fe.image_size)
        feats.append(fe)
        kp_ideal.append(f.camera.undistort_points(fe.keypoints).astype(np.float32))
    if extractor.needs_fit:
        extractor.fit(feats)
    globals_ = [extractor.describe_global(fe) for fe in feats]
    poses = np.stack([f.T_world_from_cam for f in frames])
    cams = [f.camera.undistorted() for f in frames]

    pts, confs, stats = [], [], {}
    if points == "depth":
        for f, fe, kpi in zip(progress_bar(frames, "depth points", show_progress), feats, kp_ideal):
            p, c = frame_points("depth", f, fe, kpi)
            pts.append(p)
            confs.append(c)
    elif points == "triangulate":
        bar = progress_bar(None, "triangulate", show_progress)
        pts, confs, stats = triangulate_keyframes(kp_ideal, [fe.descriptors for fe in feats], poses, cams,
                                                  np.stack(globals_), tri_cfg, progress=bar.update_to)
        bar.close()
    else:  # learned
        if any(fe.depth is None for fe in feats):
            raise ExtractorError(f"--points learned needs an extractor with a depth head; "
                                 f"{extractor.name} predicts no depth (use --points triangulate)")
        scale = 1.0
        if depth_scale != "none":
            scale, stats["depth_scale"] = _depth_scale(frames, feats, kp_ideal, poses, cams, globals_, tri_cfg,
                                                       depth_scale, show_progress)
        for f, fe, kpi in zip(frames, feats, kp_ideal):
            p, c = frame_points("learned", f, fe, kpi, scale)
            pts.append(p)
            confs.append(c)

    keyframes = [make_keyframe(f, fe, kpi, g, p, c, points)
                 for f, fe, kpi, g, p, c in zip(frames, feats, kp_ideal, globals_, pts, confs)]
    if max_keyframes or max_per_place:
        from reloc_ros.pipelines.map_sessions import _budget

        keyframes, pruned = _budget(keyframes, max_keyframes, max_per_place,
                                    extractor=extractor.identity().get("name"))
        stats["pruned"] = pruned
    manifest_info = {"points": points, "build": dict(info or {})}
    manifest_info["build"]["key"] = map_build_key(frames, extractor, points, index_kind, depth_scale, tri_cfg,
                                                  max_keyframes, max_per_place, low_light_brightness)
    if low_light_brightness > 0:  # queries should be prepared the same way (MapDatabase.low_light_brightness)
        manifest_info["low_light_brightness"] = float(low_light_brightness)
        manifest_info["build"]["low_light_images"] = sum(fe.low_light for fe in feats)
        kept = {k.name for k in keyframes}
        manifest_info["low_light_keyframes"] = sum(fe.low_light and f.name in kept for f, fe in zip(frames, feats))
    manifest_info["build"]["seconds"] = round(time.perf_counter() - t_start, 2)
    if "depth_scale" in stats:
        manifest_info["build"]["depth_scale"] = stats.pop("depth_scale")
    if "pruned" in stats:
        manifest_info["build"]["pruned"] = stats.pop("pruned")
    if stats:
        manifest_info["build"]["triangulation"] = stats
        if "point_sigma_rel" in stats:  # the covariance's map term (MapDatabase.point_sigma_rel)
            manifest_info["point_sigma_rel"] = stats["point_sigma_rel"]
    db = MapDatabase.from_keyframes(keyframes, extractor.identity(), extractor.state(), manifest_info)
    mark_aliases(db, extractor, index_kind)
    db.save(Path(out), overwrite=overwrite, index_kind=index_kind)
    return db


def frame_points(points: str, f: Frame, fe, kp_ideal: np.ndarray, depth_scale: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(3D point [N x 3], NaN where none; confidence [N]) of one map frame's keypoints: from its depth image
    (``depth``) or from the depth head's depth times ``depth_scale`` (``learned``)."""
    if points == "depth":
        p = points_from_depth(fe.keypoints, kp_ideal, f.camera, load_depth(f), f.T_world_from_cam)
        return p, np.where(np.isfinite(p[:, 0]), 1.0, 0.0).astype(np.float32)
    p = points_from_depth(fe.keypoints, kp_ideal, f.camera, fe.depth * np.float32(depth_scale), f.T_world_from_cam,
                          max_rel_spread=LEARNED_DEPTH_MAX_SPREAD)
    c = np.ones(len(p), np.float32) if fe.depth_conf is None else _sample_conf(fe, f)
    return p, np.where(np.isfinite(p[:, 0]), c, 0.0).astype(np.float32)


def make_keyframe(f: Frame, fe, kp_ideal: np.ndarray, global_desc: np.ndarray, p: np.ndarray, conf: np.ndarray,
                  points: str) -> Keyframe:
    """The map keyframe of frame ``f``: its features, 3D points ``p`` (source ``points``) and their confidence."""
    has = np.isfinite(p[:, 0])
    return Keyframe(name=f.name, T_map_from_cam=f.T_world_from_cam, camera=f.camera.undistorted(),
                    keypoints=kp_ideal, descriptors=fe.descriptors, scores=fe.scores, points3d=p.astype(np.float32),
                    point_source=np.where(has, POINT_SOURCES[points], 0).astype(np.uint8),
                    point_conf=np.asarray(conf, np.float32), global_desc=global_desc)


def _depth_scale(frames, feats, kp_ideal, poses, cams, globals_, tri_cfg, mode: str, show_progress: bool):
    """(factor to apply, manifest entry): the depth head's scale against the depth the map's poses triangulate,
    on at most DEPTH_SCALE_KEYFRAMES evenly spaced keyframes (one number: a subset measures it as well)."""
    sel = evenly_spaced(len(frames), DEPTH_SCALE_KEYFRAMES)
    z_pred = [sample_depth(feats[i].depth, feats[i].keypoints, frames[i].camera.size, LEARNED_DEPTH_MAX_SPREAD)
              for i in sel]
    bar = progress_bar(None, "depth scale", show_progress)
    tri, _, _ = triangulate_keyframes([kp_ideal[i] for i in sel], [feats[i].descriptors for i in sel], poses[sel],
                                      [cams[i] for i in sel], np.stack(globals_)[sel], tri_cfg,
                                      progress=bar.update_to)
    bar.close()
    try:
        factor, stats = fit_depth_scale(z_pred, tri, poses[sel])
    except ValueError as e:
        log.warning("reloc: warning: the depth head's scale is used as it is: %s", e)
        return 1.0, {"mode": mode, "factor": None, "reason": str(e)}
    stats = {"mode": mode, **stats, "applied": mode == "fit"}
    off = not 1 / DEPTH_SCALE_TOLERANCE <= factor <= DEPTH_SCALE_TOLERANCE
    if mode == "check" and off:
        log.warning("reloc: warning: the depth head's depth is %.2fx the depth the map's poses triangulate (%d "
                    "points): the map's 3D points are off by that factor and poses from it will be wrong; rebuild "
                    "with --depth-scale fit, or --points triangulate", 1 / factor, stats["points"])
    return (factor if mode == "fit" else 1.0), stats


def _sample_conf(fe, frame: Frame) -> np.ndarray:
    h, w = fe.depth_conf.shape
    W, H = frame.camera.size
    x = np.clip(np.round((fe.keypoints[:, 0] + 0.5) * w / W - 0.5).astype(int), 0, w - 1)
    y = np.clip(np.round((fe.keypoints[:, 1] + 0.5) * h / H - 0.5).astype(int), 0, h - 1)
    return fe.depth_conf[y, x].astype(np.float32)
