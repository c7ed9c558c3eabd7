"""Maps that live: merge maps of several sessions (``reloc map merge``), add a session to a map without
re-extracting it (``reloc map update``), and keep a keyframe budget that keeps appearance diversity
(``--max-keyframes``, ``--max-per-place``).

A map's manifest lists its sessions (``sessions``: name, source, keyframes, alignment); keyframe names carry the
session's prefix (``s0/seq-01/frame-000000``) so that they stay unique.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from reloc_ros.core import lowlight
from reloc_ros.core.aliases import mark_aliases
from reloc_ros.core.camera import Camera
from reloc_ros.core.features import Features, FeatureExtractor
from reloc_ros.core.geometry import cameras_near, invert_T, pose_errors
from reloc_ros.core.mapdb import POINT_SOURCES, Keyframe, MapDatabase, MapError, extractor_for_map
from reloc_ros.datasets.base import DatasetError, Frame, check_image_size, evenly_spaced
from reloc_ros.pipelines.evaluate import is_wrong

__all__ = ["keyframes_of", "sessions_of", "merge_maps", "update_map", "select_keyframes", "Alignment", "align_map"]

log = logging.getLogger(__name__)

ALIGN_MODES = ("auto", "never", "always")
ALIGN_SAMPLE = 150  # keyframes of the map to align that are relocalized in the reference map (corridor: 60 -> 1.3 cm, 150 -> 0.8 cm)
ALIGN_MIN_AGREE = 5  # relocalized keyframes that must agree on one transform (3 for maps of at most 6 keyframes)
ALIGN_CONSENSUS = (0.10, 2.0)  # (m, deg): a relocalized keyframe agrees with a candidate transform within this
SAME_FRAME_TOL = (0.05, 1.0)  # (m, deg): --align auto keeps the frame when the fit is within this of the identity,
SAME_FRAME_EXTRA = (0.01, 0.25)  # or when the map's own poses disagree with the relocalizations at most this more
# than the fitted transform does (relocalized night keyframes scatter by ~4 cm / 1 deg around any fit),
SAME_FRAME_SCATTER = 2.0  # or when the fit moves the map less than this x the relocalizations' median residual: they
# cannot tell such a move from their own scatter (the hall's night map, in the same frame: 23 of 68 relocalized
# keyframes agreeing, residual 4.6 cm / 0.30 deg, would have been moved 6.1 cm / 0.13 deg)
PLACE_CELL = (0.5, 30.0)  # (m, deg): keyframes closer than this in position and viewing direction show one place
APPEARANCE_SIM = 0.8  # global-descriptor similarity above which two keyframes of one place look the same
# A keyframe whose keypoints the detector is unsure of (night, deep dusk: the covariance's keypoint-confidence factor
# f > 1, core/localizer.py DETECTION_SCORE_COVARIANCE) covers less of its place: under a keyframe budget its distance
# to the kept ones counts f ** this times, so that more of its kind are kept. Chosen on the tuning scenes' sessions
# (train_040, train_041; 3 sessions pruned to 300 keyframes, the worst query run against the 3-session map's recall):
# 0 (no weight) 94.0 %, 0.25 97.7 %, 0.5 88.3 % (too few day and evening keyframes left); docs/RESULTS.md
BUDGET_CONFIDENCE_POWER = 0.25


def keyframes_of(db: MapDatabase) -> list[Keyframe]:
    """The keyframes of a loaded map (views of its arrays)."""
    out = []
    for i, name in enumerate(db.names):
        s = db.keyframe_slice(i)
        out.append(Keyframe(name, db.T_map_from_cam[i], db.cameras[i], db.keypoints[s], db.descriptors[s],
                            db.scores[s], db.points3d[s], db.point_source[s], db.point_conf[s], db.global_desc[i]))
    return out


def _apply(T: np.ndarray, s: float, P: np.ndarray) -> np.ndarray:
    """Camera pose ``P`` moved by ``x' = s R x + t`` (``T`` = [R | t])."""
    Q = P.copy()
    Q[:3, :3] = T[:3, :3] @ P[:3, :3]
    Q[:3, 3] = s * (T[:3, :3] @ P[:3, 3]) + T[:3, 3]
    return Q


def _transformed(kf: Keyframe, T: np.ndarray, scale: float = 1.0) -> Keyframe:
    """``kf`` moved into another frame: ``x' = scale * R x + t`` for points and camera centres."""
    X = (scale * (kf.points3d.astype(np.float64) @ T[:3, :3].T) + T[:3, 3]).astype(np.float32)  # NaN rows stay NaN
    return replace(kf, T_map_from_cam=_apply(T, scale, kf.T_map_from_cam), points3d=X)


# --------------------------------------------------------------------------------------------------
@dataclass
class Alignment:
    """How a map was put into the reference map's frame: ``x_ref = scale * R x + t``."""

    T: np.ndarray
    scale: float
    applied: bool
    sampled: int
    localized: int
    agreeing: int
    residual_m: tuple[float, float]  # median, max over the agreeing keyframes
    residual_deg: tuple[float, float]
    reason: str
    elsewhere: int = 0  # relocalized at another place (> 1 m or 30 deg from where the fit puts them): look-alikes

    def to_dict(self) -> dict:
        dt, dr = pose_errors(self.T, np.eye(4))
        return {"applied": bool(self.applied), "reason": self.reason,
                "T": [[round(float(v), 9) for v in row] for row in self.T], "scale": round(float(self.scale), 6),
                "translation_m": round(float(dt), 4), "rotation_deg": round(float(dr), 4),
                "keyframes_sampled": self.sampled, "keyframes_localized": self.localized,
                "keyframes_agreeing": self.agreeing, "keyframes_elsewhere": self.elsewhere,
                "residual_m": {"median": round(self.residual_m[0], 4), "max": round(self.residual_m[1], 4)},
                "residual_deg": {"median": round(self.residual_deg[0], 4), "max": round(self.residual_deg[1], 4)}}


def _keyframe_features(db: MapDatabase, i: int, recompute_global: bool) -> tuple[Features, Camera]:
    s = db.keyframe_slice(i)
    cam = db.cameras[i]
    f = Features(np.asarray(db.keypoints[s], np.float32), np.asarray(db.descriptors[s], np.float32),
                 np.asarray(db.scores[s], np.float32), None if recompute_global else db.global_desc[i], cam.size)
    return f, cam


def _relocalize(loc, db: MapDatabase, ids: np.ndarray) -> list[tuple[int, np.ndarray, float]]:
    """(keyframe, pose in the localizer's map, position sigma (m)) of the keyframes of ``db`` that it localizes."""
    same_state = _same_state(loc.db, db)
    out = []
    for i in ids:
        f, cam = _keyframe_features(db, int(i), not same_state)
        res = _pose_result(loc.localize_features(f, cam))
        if res.ok:
            sigma = float(np.sqrt(max(np.trace(res.covariance[:3, :3]), 0.0)))
            out.append((int(i), res.T_map_from_cam, sigma if np.isfinite(sigma) else 1.0))
    return out


def _pose_result(res):
    """The localizer's result, or the pose it held back as no stronger than the map's own look-alike
    (``ambiguity_lookalike_ratio``): the map pipelines check every pose otherwise (against the recording's own pose,
    or by the consensus of many keyframes), where a look-alike is an outlier like any wrong pose."""
    return res.held if not res.ok and res.held is not None else res


def _same_state(a: MapDatabase, b: MapDatabase) -> bool:
    """Whether two maps' global descriptors are comparable (same extractor state, e.g. SIFT's VLAD vocabulary)."""
    if set(a.extractor_state) != set(b.extractor_state):
        return False
    return all(np.array_equal(np.asarray(a.extractor_state[k]), np.asarray(b.extractor_state[k]))
               for k in a.extractor_state)


def _fit(pairs: list[tuple[np.ndarray, np.ndarray]], sim3: bool, w: np.ndarray | None = None
         ) -> tuple[np.ndarray, float]:
    """``x_ref = s R x + t`` from (T_ref, T_own) camera pose pairs: R the weighted chordal mean of the relative
    rotations, s (Sim(3)) from the spread of the camera centres, t from their weighted means; ``w``: a weight per
    pair (1 / its position variance). Rotations alone set R: a relocalized position errs mostly along its optical
    axis (depth), which a fit of R to the centres turns into a rotation (office, session 1 into session 0: 0.13 deg
    that way, 0.05 deg from the rotations)."""
    w = np.ones(len(pairs)) if w is None else np.asarray(w, np.float64)
    w = w / w.sum()
    M = sum(wi * Ta[:3, :3] @ Tb[:3, :3].T for wi, (Ta, Tb) in zip(w, pairs))
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    ca = np.array([Ta[:3, 3] for Ta, _ in pairs])
    cb = np.array([Tb[:3, 3] for _, Tb in pairs]) @ R.T
    s = 1.0
    if sim3 and len(pairs) >= 3:
        da, db_ = ca - w @ ca, cb - w @ cb
        den = float(np.sum(w[:, None] * db_ * db_))
        if den > 1e-9:
            s = float(np.sum(w[:, None] * da * db_) / den)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = w @ ca - s * (w @ cb)
    return T, s


def align_map(ref: MapDatabase, other: MapDatabase, mode: str = "auto", sim3: bool = False,
              sample: int = ALIGN_SAMPLE, localizer=None) -> Alignment:
    """Put ``other`` into ``ref``'s frame: a sample of its keyframes relocalized in ``ref``; each gives a candidate
    transform; the one most others agree with (``ALIGN_CONSENSUS``) is refitted on those (:func:`_fit`).

    ``mode``: ``never`` keeps ``other``'s frame without looking; ``always`` applies the fit; ``auto`` applies it
    unless ``other`` is in the same frame (:func:`same_frame`).

    Raises:
        MapError: fewer than ``ALIGN_MIN_AGREE`` relocalized keyframes agree (``auto``/``always``): the maps do not
            overlap enough to tell how they relate.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown --align {mode!r}; choose one of {ALIGN_MODES}")
    if mode == "never":
        return Alignment(np.eye(4), 1.0, False, 0, 0, 0, (0.0, 0.0), (0.0, 0.0), "--align never")
    from reloc_ros.core.localizer import Localizer

    loc = localizer or Localizer(ref, extractor_for_map(ref))
    ids = evenly_spaced(len(other), min(sample, len(other)))
    found = _relocalize(loc, other, ids)
    pairs = [(T_ref, other.T_map_from_cam[i]) for i, T_ref, _ in found]
    wts = np.array([1.0 / (sig ** 2 + 0.01 ** 2) for _, _, sig in found])
    best: list[int] = []
    for Ta, Tb in pairs:  # a candidate per relocalized keyframe; the one with most support
        C = Ta @ invert_T(Tb)
        agree = [j for j, (Tj, Tbj) in enumerate(pairs)
                 if _agrees(pose_errors(C @ Tbj, Tj))]
        if len(agree) > len(best):
            best = agree
    need = min(ALIGN_MIN_AGREE, max(3, (len(ids) + 1) // 2))  # a map of 4 keyframes: 3 (full poses; 1 would do)
    if len(best) < need:
        raise MapError(f"only {len(best)} of {len(ids)} sampled keyframes of {other.path} relocalize consistently in "
                       f"{ref.path} ({len(found)} localized; {need} needed): the maps do not overlap "
                       "enough to align them. Build them from images of a common area, or pass --align never if "
                       "they are already in one frame (e.g. both from the robot's SLAM map)")
    idx = best
    T, s = _fit([pairs[j] for j in idx], sim3, wts[idx])
    for _ in range(2):  # refit on what agrees with the refined transform
        agree = [j for j, p in enumerate(pairs) if _agrees(pose_errors(_apply(T, s, p[1]), p[0]))]
        if len(agree) >= need:
            idx = agree
            T, s = _fit([pairs[j] for j in idx], sim3, wts[idx])
    sel = [pairs[j] for j in idx]
    res = np.array([pose_errors(_apply(T, s, Tb), Ta) for Ta, Tb in sel])
    as_is = np.array([pose_errors(Tb, Ta) for Ta, Tb in sel])
    mt, mr = float(np.median(as_is[:, 0])), float(np.median(as_is[:, 1]))
    dt, dr = pose_errors(T, np.eye(4))
    same = same_frame((mt, mr), (float(np.median(res[:, 0])), float(np.median(res[:, 1]))), (dt, dr), s)
    applied = mode == "always" or not same
    reason = ("--align always" if mode == "always" else
              f"same frame: its relocalized keyframes are {mt:.3f} m / {mr:.2f} deg (median) from its own poses, "
              f"{np.median(res[:, 0]):.3f} m / {np.median(res[:, 1]):.2f} deg from the fit ({dt:.3f} m / {dr:.2f} "
              "deg from the identity)" if same else
              f"aligned: its relocalized keyframes are {mt:.3f} m / {mr:.2f} deg (median) from its own poses; the "
              f"fit moves it {dt:.3f} m / {dr:.2f} deg")
    if not sim3:
        s = 1.0
    off = [pose_errors(_apply(T, s, Tb), Ta) for Ta, Tb in pairs]
    elsewhere = sum(1 for dt_, dr_ in off if dt_ > 1.0 or dr_ > 30.0)
    return Alignment(T if applied else np.eye(4), s if applied else 1.0, applied, len(ids), len(found), len(sel),
                     (float(np.median(res[:, 0])), float(res[:, 0].max())),
                     (float(np.median(res[:, 1])), float(res[:, 1].max())), reason, elsewhere)


def same_frame(as_is: tuple[float, float], residual: tuple[float, float], move: tuple[float, float],
               scale: float = 1.0) -> bool:
    """``--align auto``'s decision: whether a map is already in the reference map's frame, from the median
    disagreement (m, deg) of its relocalized keyframes with its own poses (``as_is``) and with the fitted transform
    (``residual``), and how far the fit moves it (``move``): its own poses explain the relocalizations about as well
    as the fit (``SAME_FRAME_EXTRA``), or the move is within ``SAME_FRAME_TOL`` of the identity, or within
    ``SAME_FRAME_SCATTER`` x the residual (less than the relocalizations can tell; up to twice SAME_FRAME_TOL's
    distance)."""
    if abs(scale - 1.0) > 0.01:
        return False
    explained = as_is[0] <= residual[0] + SAME_FRAME_EXTRA[0] and as_is[1] <= residual[1] + SAME_FRAME_EXTRA[1]
    small = move[0] <= SAME_FRAME_TOL[0] and move[1] <= SAME_FRAME_TOL[1]
    # (at most twice SAME_FRAME_TOL's distance: the consensus lets residuals reach ALIGN_CONSENSUS)
    unseen = (move[0] <= min(SAME_FRAME_SCATTER * residual[0], 2 * SAME_FRAME_TOL[0])
              and move[1] <= min(SAME_FRAME_SCATTER * residual[1], SAME_FRAME_TOL[1]))
    return explained or small or unseen


def _agrees(err: tuple[float, float]) -> bool:
    return err[0] <= ALIGN_CONSENSUS[0] and err[1] <= ALIGN_CONSENSUS[1]


# --------------------------------------------------------------------------------------------------
def select_keyframes(T_map_from_cam: np.ndarray, global_desc: np.ndarray, max_keyframes: int | None = None,
                     max_per_place: int | None = None, keep_first: int = 0,
                     group: np.ndarray | None = None, weight: np.ndarray | None = None) -> np.ndarray:
    """Indices of the keyframes to keep under a budget, in their original order.

    A place is what lies within ``PLACE_CELL`` (position, viewing direction) of a keyframe. Within a place, a keyframe that looks like
    one already kept (global similarity > ``APPEARANCE_SIM``) is redundant; one that looks different (the dusk
    version of a day view) is not. Selection is greedy farthest-point in a distance that mixes position,
    viewing direction and appearance, so that the kept set covers space first and appearance within a place
    next. ``max_per_place`` caps the keyframes of one place (most different first). ``keep_first``: the first
    that many keyframes are seeds (kept before any other; the rest fill the budget). ``group``: a recording (session)
    per keyframe; two keyframes of different recordings count as different looks (the global descriptor is made to
    ignore light, so a night view and a day view of one place can look the same to it). ``weight``: per keyframe,
    >= 1, a factor on every distance to it (a keyframe that covers less of its place: :func:`coverage_weights`).
    """
    K = len(T_map_from_cam)
    if K == 0:
        return np.zeros(0, np.int64)
    budget = K if not max_keyframes else min(int(max_keyframes), K)
    C = T_map_from_cam[:, :3, 3]
    Z = T_map_from_cam[:, :3, 2]
    G = np.asarray(global_desc, np.float32)
    cos_cell = np.cos(np.radians(PLACE_CELL[1]))

    def dist(i: int) -> np.ndarray:  # of every keyframe to keyframe i, in units of "another place / appearance"
        dp = np.linalg.norm(C - C[i], axis=1) / PLACE_CELL[0]
        da = np.degrees(np.arccos(np.clip(Z @ Z[i], -1.0, 1.0))) / PLACE_CELL[1]
        dg = np.clip(1.0 - G @ G[i], 0.0, None) / (1.0 - APPEARANCE_SIM)
        if group is not None:
            dg = np.maximum(dg, (group != group[i]).astype(np.float64))
        out = np.maximum(np.maximum(dp, da), dg)
        return out if weight is None else out * weight

    kept = np.zeros(K, bool)
    full = np.zeros(K, bool)  # its place already holds max_per_place kept keyframes
    near_count = np.zeros(K, np.int64)  # kept keyframes within PLACE_CELL of each keyframe
    d = np.full(K, np.inf)
    order = list(range(min(keep_first, K)))
    picked = []
    cap = max_per_place or K
    while len(picked) < budget:
        if order:
            i = order.pop(0)
        else:
            cand = np.flatnonzero(~kept & ~full)
            if len(cand) == 0:
                break
            i = int(cand[np.argmax(d[cand])])
        if kept[i] or full[i]:
            continue
        kept[i] = True
        picked.append(i)
        near_count += (np.linalg.norm(C - C[i], axis=1) <= PLACE_CELL[0]) & (Z @ Z[i] >= cos_cell)
        full = near_count >= cap
        d = np.minimum(d, dist(i))
    return np.sort(np.asarray(picked, np.int64))


# --------------------------------------------------------------------------------------------------
def sessions_of(db: MapDatabase, source: Path) -> list[dict]:
    """A map's sessions (a map made by build alone is one session, named after its folder)."""
    if db.manifest.get("sessions"):
        return [dict(s) for s in db.manifest["sessions"]]
    return [{"name": Path(source).name, "prefix": "", "source": str(Path(source).resolve()),
             "build_key": (db.manifest.get("build") or {}).get("key"), "keyframes": len(db)}]


SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# an image already in the map has its keyframe's pose to within this (m, deg), and its keypoints and descriptors
DUPLICATE_POSE = (1e-4, 0.01)


def _already_in(T_old: np.ndarray, features_of, T: np.ndarray, keypoints: np.ndarray, descriptors: np.ndarray) -> int:
    """The index of a keyframe among ``T_old`` (``[K x 4 x 4]``; ``features_of(i)`` -> its (keypoints, descriptors))
    made from the same image as a frame with pose ``T`` and these features, or -1: the same pose and the same
    features (the descriptors as the map stores them, float16). Only a recording added twice has such frames."""
    if len(T_old) == 0:
        return -1
    for i in np.flatnonzero(cameras_near(T_old, T, *DUPLICATE_POSE)):
        kp, desc = features_of(int(i))
        if (kp.shape == keypoints.shape and np.allclose(kp, keypoints, atol=1e-3)
                and np.array_equal(np.asarray(desc, np.float16), np.asarray(descriptors, np.float16))):
            return int(i)
    return -1


def _session_key(s: dict) -> tuple:
    """What identifies a session across maps: where it came from and how it was built."""
    return (s.get("source"), s.get("build_key"), None if s.get("build_key") else s.get("name"))


def _recount(sessions: list[dict], names: list[str]) -> None:
    """Each session's ``keyframes`` from the names actually kept (after a budget)."""
    prefixes = [s.get("prefix") or "" for s in sessions]
    for s, p in zip(sessions, prefixes):
        if p:
            s["keyframes"] = sum(1 for n in names if n.startswith(p))
        else:
            s["keyframes"] = sum(1 for n in names if not any(q and n.startswith(q) for q in prefixes))


def _check_compatible(a: MapDatabase, b: MapDatabase) -> None:
    ia, ib = a.extractor_identity, b.extractor_identity
    diff = sorted(k for k in set(ia) | set(ib) if ia.get(k) != ib.get(k))
    if ia.get("name") != ib.get("name"):
        raise MapError(f"{b.path} is a {ib.get('name')} map, {a.path} a {ia.get('name')} one: maps merge only when "
                       f"their features are comparable; rebuild one with the other's --extractor")
    if diff:
        def short(v) -> str:
            r = repr(v)
            return r if len(r) <= 24 else r[:20] + "..."
        raise MapError(f"{b.path} was built with other extractor settings than {a.path} (" +
                       ", ".join(f"{k}: {short(ia.get(k))} vs {short(ib.get(k))}" for k in diff[:4]) +
                       (f" and {len(diff) - 4} more" if len(diff) > 4 else "") +
                       "): maps merge only when their features are comparable; rebuild one with the other's "
                       "extractor settings and model")
    if a.descriptors.shape[1] != b.descriptors.shape[1] or a.global_desc.shape[1] != b.global_desc.shape[1]:
        raise MapError(f"{a.path} and {b.path} have different descriptor sizes: rebuild one with the other's extractor")


def _globals_in(ref: MapDatabase, db: MapDatabase, extractor: FeatureExtractor | None) -> np.ndarray:
    """``db``'s global descriptors comparable with ``ref``'s (SIFT-VLAD: recomputed with ``ref``'s vocabulary)."""
    if _same_state(ref, db):
        return db.global_desc
    ex = extractor or extractor_for_map(ref)
    return np.stack([ex.describe_global(_keyframe_features(db, i, True)[0]) for i in range(len(db))])


def _merged_low_light(dbs: list[MapDatabase], paths: list[Path]) -> dict:
    """The merged map's ``low_light_brightness`` (the highest of its parts'; absent when 0), with a warning when the
    parts disagree: the dark keyframes of a part built without it were not enhanced."""
    values = [db.low_light_brightness for db in dbs]
    if len(set(values)) > 1:
        without = [str(p) for p, v in zip(paths, values) if v != max(values)]
        log.warning("reloc: warning: %s built without --low-light-brightness %g: fine for a map of daylight "
                    "images; if it holds night images, they were not prepared like the others' (rebuild it with "
                    "the option)", ", ".join(without), max(values))
    if max(values) <= 0:
        return {}
    return {"low_light_brightness": max(values), "low_light_keyframes": sum(db.low_light_keyframes for db in dbs)}


def merge_maps(paths: list[Path], out: Path, align: str = "auto", sim3: bool = False,
               max_keyframes: int | None = None, max_per_place: int | None = None, overwrite: bool = False,
               info: dict | None = None, model: Path | None = None) -> tuple[MapDatabase, list[dict]]:
    """Merge maps into one in the first map's frame (see :func:`align_map` for ``align`` / ``sim3``).

    Each input map's keyframes get a session prefix (``s0/``, ``s1/``, ...; maps that already list sessions keep
    theirs and the new ones continue the numbering). Points keep what each map gave them (moved by the alignment).

    ``model``: the ONNX file of learned maps built with one that is not the shipped network (``map build --model``).

    Returns:
        (the written map, one record per input map: its alignment).
    """
    if len(paths) < 2:
        raise ValueError("reloc map merge needs at least two maps")
    t0 = time.perf_counter()
    dbs = [MapDatabase.load(p) for p in paths]
    ref = dbs[0]
    for db in dbs[1:]:
        _check_compatible(ref, db)
    extractor = extractor_for_map(ref, model_path=model)
    sessions, keyframes, records = [], [], []
    seen: dict[tuple, str] = {}  # session key -> the map it came in with
    loc = None
    for j, (db, path) in enumerate(zip(dbs, paths)):
        own = sessions_of(db, path)
        for sess in own:
            key = _session_key(sess)
            if key in seen:
                raise MapError(f"session {sess['name']!r} of {path} is already in {seen[key]}: merge each session "
                               "once (leave out the map it is part of, or its part)")
            seen[key] = str(path)
        if j == 0:
            al = Alignment(np.eye(4), 1.0, False, 0, 0, 0, (0.0, 0.0), (0.0, 0.0), "reference frame")
        else:
            if loc is None and align != "never":
                from reloc_ros.core.localizer import Localizer

                loc = Localizer(ref, extractor)
            al = align_map(ref, db, align, sim3, localizer=loc)
        records.append({"map": str(path), **al.to_dict()})
        # the session whose keyframes carry no prefix (a built map, or an updated map's original keyframes) gets one
        bare = next((sess for sess in own if not sess.get("prefix")), None)
        prefixes = [sess["prefix"] for sess in own if sess.get("prefix")]
        if bare is not None:
            used = {p.rstrip("/") for sess in sessions + own for p in [sess.get("prefix") or ""]}
            bare["prefix"] = next(f"s{i}/" for i in range(len(sessions), len(sessions) + len(used) + 2)
                                  if f"s{i}" not in used)
        g = _globals_in(ref, db, extractor)
        earlier = list(keyframes)  # an image that an earlier map holds already (a map merged with its updated copy)
        T_earlier = np.stack([k.T_map_from_cam for k in earlier]) if earlier else np.zeros((0, 4, 4))
        dropped = 0
        for k, kf in enumerate(keyframes_of(db)):
            own_prefix = next((p for p in prefixes if kf.name.startswith(p)), None)
            name = kf.name if own_prefix is not None or bare is None else bare["prefix"] + kf.name
            kf = replace(kf, name=name, global_desc=g[k])
            kf = _transformed(kf, al.T, al.scale) if al.applied else kf
            if _already_in(T_earlier, lambda i: (earlier[i].keypoints, earlier[i].descriptors), kf.T_map_from_cam,
                           kf.keypoints, kf.descriptors) >= 0:
                dropped += 1
                continue
            keyframes.append(kf)
        if dropped:
            records[-1]["duplicates_dropped"] = dropped
        for s in own:
            if j > 0:
                s["alignment"] = al.to_dict()
            sessions.append(s)
    names = [k.name for k in keyframes]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise MapError(f"keyframe name {dup!r} occurs in two of the maps (their sessions share a name prefix): merge "
                       "each session once, or merge the maps in another order")
    keyframes, pruned = _budget(keyframes, max_keyframes, max_per_place, extractor=ref.extractor_identity.get("name"))
    _recount(sessions, [k.name for k in keyframes])
    manifest = {"points": ref.manifest.get("points"), "sessions": sessions,
                **_merged_low_light(dbs, paths), **_merged_point_sigma(dbs),
                "build": {**(info or {}), "merged_from": [str(Path(p).resolve()) for p in paths],
                          "alignment": records, "seconds": round(time.perf_counter() - t0, 2),
                          **({"pruned": pruned} if pruned else {})}}
    db = MapDatabase.from_keyframes(keyframes, ref.extractor_identity, ref.extractor_state, manifest)
    kind = (ref.manifest.get("index") or {}).get("requested", "auto")
    mark_aliases(db, extractor, kind)
    db.save(Path(out), overwrite=overwrite, index_kind=kind)
    return db, records


def _merged_point_sigma(dbs: list[MapDatabase]) -> dict:
    """The merged map's ``point_sigma_rel`` (MapDatabase.point_sigma_rel): the largest of the parts' when every part
    has one (the merge keeps each part's points), else none (the covariance falls back to its constant)."""
    vals = [db.point_sigma_rel for db in dbs]
    return {"point_sigma_rel": max(vals)} if vals and all(v is not None for v in vals) else {}


def coverage_weights(keyframes: list[Keyframe], extractor: str | None) -> np.ndarray | None:
    """Per keyframe, the budget's weight (:func:`select_keyframes`): its keypoint-confidence factor (the median
    detection score against the extractor's reference, as the covariance computes it for a query) to the power
    BUDGET_CONFIDENCE_POWER; None where the extractor has no reference (SIFT: every keyframe counts alike)."""
    from reloc_ros.core.localizer import DETECTION_SCORE_COVARIANCE, keypoint_confidence_factor

    ref = DETECTION_SCORE_COVARIANCE.get(extractor or "")
    if ref is None or BUDGET_CONFIDENCE_POWER <= 0:
        return None
    return np.array([keypoint_confidence_factor(float(np.median(k.scores)), *ref) if len(k.scores) else 1.0
                     for k in keyframes]) ** BUDGET_CONFIDENCE_POWER


def _budget(keyframes: list[Keyframe], max_keyframes: int | None, max_per_place: int | None,
            keep_first: int = 0, extractor: str | None = None) -> tuple[list[Keyframe], dict | None]:
    if not max_keyframes and not max_per_place:
        return keyframes, None
    T = np.stack([k.T_map_from_cam for k in keyframes])
    G = np.stack([k.global_desc for k in keyframes])
    # the recording of each keyframe: the first part of its name (a session prefix, or the dataset's sequence)
    _, group = np.unique([k.name.split("/", 1)[0] for k in keyframes], return_inverse=True)
    sel = select_keyframes(T, G, max_keyframes, max_per_place, keep_first, group.ravel(),
                           coverage_weights(keyframes, extractor))
    return [keyframes[i] for i in sel], {"before": len(keyframes), "after": int(len(sel)),
                                         "max_keyframes": max_keyframes, "max_per_place": max_per_place}


# --------------------------------------------------------------------------------------------------
# a new frame the map localizes with fewer inliers than this fraction of its keypoints is kept ("barely"): office,
# evening frames in a day map: median 466 inliers of 2000 keypoints, the day's own queries 622
UPDATE_MIN_INLIER_FRACTION = 0.25


UPDATE_POSE_TOL = (0.05, 2.0)  # (m, deg): a new frame localized further from its own pose than this is kept
# The recording must be in the map's frame (map merge aligns one that is not): when at least UPDATE_FRAME_MIN_CHECK of
# its frames localize and more than UPDATE_FRAME_MAX_WRONG of them lie outside (0.5 m, 5 deg) of their own poses, the
# update is refused. A session in other light localizes fewer frames, not mostly wrong ones (night queries on the
# benchmark's day maps: at most 34 % of the localized ones outside (0.5 m, 5 deg), the hall with the low-light mode).
UPDATE_FRAME_MIN_CHECK = 5
UPDATE_FRAME_MAX_WRONG = 0.5
UPDATE_FRAME_CHECK_SHARE = 0.05  # fewer localized frames than this share (or 5): the frame cannot be checked


def _off(err: tuple[float, float]) -> bool:
    return err[0] > UPDATE_POSE_TOL[0] or err[1] > UPDATE_POSE_TOL[1]


def update_map(map_path: Path, frames: list[Frame], session: str | None = None, info: dict | None = None,
               max_keyframes: int | None = None, max_per_place: int | None = None, keep_all: bool = False,
               show_progress: bool = True, low_light_brightness: float | None = None,
               trust_poses: bool = False, model: Path | None = None) -> tuple[MapDatabase, dict]:
    """Add a session to a map without re-extracting its keyframes; written atomically in place.

    The recording must be in the map's frame: it is refused when most of its frames that localize lie far from
    their own poses, or when too few localize to tell (``trust_poses``: the caller vouches for its frame).

    The new frames (in the map's frame) are extracted with the map's extractor and localized in the current map;
    a frame is kept when the map fails to localize it, localizes it with fewer inliers than
    ``UPDATE_MIN_INLIER_FRACTION`` of its keypoints
    or off its pose by more than 5 cm / 2 deg, or when no keyframe of a similar pose (``PLACE_CELL``) looks like it
    (``APPEARANCE_SIM``). Its points come the way the map's did (depth images, the depth head, or triangulation
    with the old and the new keyframes).

    Returns:
        (the written map, stats: frames, kept, why kept, seconds).
    """
    from reloc_ros.core.localizer import Localizer
    from reloc_ros.datasets.base import load_image
    from reloc_ros.progress import progress_bar

    t0 = time.perf_counter()
    db = MapDatabase.load(map_path)
    if not frames:
        raise DatasetError("no frames to add: check the dataset's split or --map-every")
    points = db.manifest.get("points")
    if points not in ("depth", "learned", "triangulate"):
        raise MapError(f"{map_path}: unknown points mode {points!r} in the manifest; rebuild the map")
    if points == "depth" and any(f.depth_path is None for f in frames):
        raise DatasetError(f"{map_path} takes its 3D points from depth images but "
                           f"{next(f.name for f in frames if f.depth_path is None)} has none: add a session with depth "
                           "(from a bag: --depth-topic TOPIC), or build a new map with --points triangulate")
    sessions = sessions_of(db, map_path)  # the map's own keyframes keep their names (checked before the work)
    taken = {(s.get("prefix") or "").rstrip("/") for s in sessions} | {s.get("name") for s in sessions}
    if session is None:  # the first free s<N>
        name = next(f"s{i}" for i in range(len(sessions), len(sessions) + len(taken) + 2) if f"s{i}" not in taken)
    else:
        name = session
        if not SESSION_NAME.fullmatch(name):
            raise ValueError(f"--session {name!r}: a session name is 1-64 letters, digits, '_', '.' or '-' (it "
                             "prefixes the session's keyframe names)")
        if name in taken:
            raise ValueError(f"{map_path} already has a session {name!r}: pass another --session name")
    extractor = extractor_for_map(db, model_path=model,
                                  **({"outputs": "all"} if db.extractor_identity.get("name") == "learned" else {}))
    loc = Localizer(db, extractor)
    feats, keep, why = [], [], {"not localized": 0, "few inliers": 0, "off its pose": 0, "new appearance": 0}
    localized = []  # (m, deg) between the map's pose of each localized new frame and the frame's own pose
    dup = []  # the frames whose image is a keyframe of the map already (the same recording added again)

    def features_of(i: int):
        sl = db.keyframe_slice(i)
        return db.keypoints[sl], db.descriptors[sl]
    G = db.global_desc
    rule = db.low_light_brightness
    if low_light_brightness is not None and low_light_brightness != rule:
        if rule > 0:
            raise ValueError(f"{map_path} enhances images darker than {rule:g} (reloc map build "
                             f"--low-light-brightness); update it with the same rule (leave the option out)")
        rule = float(low_light_brightness)  # a map without the rule takes it from now on (its old images stay)
    n_dark = 0
    for f in progress_bar(frames, "localize new frames", show_progress):
        # the map's own rule for dark images (reloc map build --low-light-brightness): new keyframes like the old
        image = load_image(f)
        if rule <= 0:
            n_dark += lowlight.brightness(image) < lowlight.NIGHT_BRIGHTNESS
        fe = lowlight.extract(extractor, image, rule)
        check_image_size(f, fe.image_size, ": fix the camera (camera.yaml, or the camera_info topic); nothing was "
                                           "written")
        if fe.global_desc is None:
            fe.global_desc = extractor.describe_global(fe)
        feats.append(fe)
        j = _already_in(db.T_map_from_cam, features_of, f.T_world_from_cam, fe.keypoints, fe.descriptors)
        if j >= 0:
            dup.append(db.names[j])
            keep.append(False)
            continue
        if keep_all:
            keep.append(True)
            continue
        res = _pose_result(loc.localize_features(fe, f.camera))
        T = f.T_world_from_cam
        if res.ok:
            localized.append(pose_errors(res.T_map_from_cam, T))
        reason = None
        if not res.ok:
            reason = "not localized"
        elif res.num_inliers < UPDATE_MIN_INLIER_FRACTION * len(fe):
            reason = "few inliers"
        elif _off(pose_errors(res.T_map_from_cam, T)):
            reason = "off its pose"
        else:
            near = cameras_near(db.T_map_from_cam, T, *PLACE_CELL)
            if not near.any() or float((G[near] @ fe.global_desc).max()) < APPEARANCE_SIM:
                reason = "new appearance"
        keep.append(reason is not None)
        if reason:
            why[reason] += 1
    if 2 * len(dup) > len(frames):
        raise ValueError(f"{len(dup)} of the {len(frames)} frames offered are keyframes of {map_path} already (the same "
                         f"images, e.g. {dup[0]}): this recording was added before; nothing was written")
    if dup:
        why["already in the map"] = len(dup)
    _frame_check(map_path, localized, len(frames) - len(dup), keep_all, trust_poses)
    sel = [i for i, k in enumerate(keep) if k]
    prefix = name + "/"
    old = keyframes_of(db)
    new = [replace(k, name=prefix + k.name) for k in
           _new_keyframes(db, [frames[i] for i in sel], [feats[i] for i in sel])] if sel else []
    tri_stats = {}
    if points == "triangulate" and new:
        old, new, tri_stats = _retriangulated(db, old, new)
    keyframes, pruned = _budget(old + new, max_keyframes, max_per_place,
                                extractor=db.extractor_identity.get("name"))
    stats = {"session": name, "frames": len(frames), "kept": len(sel), "why_kept": why,
             **({"low_light_images": sum(fe.low_light for fe in feats)} if rule > 0 else {"dark_images": n_dark}),
             "seconds": round(time.perf_counter() - t0, 2), **({"pruned": pruned} if pruned else {}),
             **({"point_sigma_rel": tri_stats["point_sigma_rel"]} if "point_sigma_rel" in tri_stats else {}),
             **({"triangulated_points": tri_stats["points"]} if "points" in tri_stats else {})}
    sessions.append({"name": name, "prefix": prefix, "source": (info or {}).get("dataset", {}).get("root"),
                     "keyframes": len(new), "frames_offered": len(frames), "why_kept": dict(why)})
    _recount(sessions, [k.name for k in keyframes])
    manifest = {k: v for k, v in db.manifest.items() if k not in ("counts", "files", "index", "created")}
    manifest["sessions"] = sessions
    manifest.setdefault("updates", []).append({**(info or {}), **stats})
    manifest.pop("aliases", None)
    if "point_sigma_rel" in stats:  # the points were triangulated anew from old and new keyframes
        manifest["point_sigma_rel"] = stats["point_sigma_rel"]
    if rule > 0:
        kept = {k.name for k in keyframes}
        manifest["low_light_brightness"] = rule
        manifest["low_light_keyframes"] = db.low_light_keyframes + sum(  # (old ones as counted before any budget)
            1 for i, k in zip(sel, new) if feats[i].low_light and k.name in kept)
    out = MapDatabase.from_keyframes(keyframes, db.extractor_identity, db.extractor_state, manifest)
    kind = (db.manifest.get("index") or {}).get("requested", "auto")
    # every keyframe is analysed again, old ones too: a new keyframe can be the look-alike an old one's view now finds
    # (in its retrieval, or by its closure and spread), and keyframes the budget dropped take their look-alikes with
    # them. Analysing only the new keyframes marked 93 of a 343-keyframe hall map where the whole analysis marks 182,
    # and the place check is skipped for poses solved from unmarked keyframes. Cost: ~6 ms per keyframe
    # (docs/RESULTS.md "Multi-session maps")
    mark_aliases(out, extractor, kind)
    out.save(Path(map_path), overwrite=True, index_kind=kind)
    return out, stats


def _frame_check(map_path: Path, localized: list[tuple[float, float]], offered: int, keep_all: bool,
                 trust_poses: bool) -> None:
    """Refuse a recording whose localized frames mostly disagree with their own poses (another frame, another
    place, wrong poses or camera), or of which too few frames localize to tell (``trust_poses``: the user vouches
    for its frame; ``keep_all``: nothing was localized, nothing can be checked)."""
    if keep_all:
        return
    wrong = [e for e in localized if is_wrong(*e)]
    if len(localized) >= UPDATE_FRAME_MIN_CHECK and len(wrong) > UPDATE_FRAME_MAX_WRONG * len(localized):
        m, deg = np.median(np.asarray(wrong), axis=0)
        raise ValueError(f"{len(wrong)} of the {len(localized)} new frames that localize in {map_path} lie far from "
                         f"their own poses (median {m:.2f} m / {deg:.1f} deg): the recording is not in the map's "
                         "frame (build a map of it and `reloc map merge` the two: merge aligns them), or its poses "
                         "or camera are wrong; nothing was written")
    need = max(UPDATE_FRAME_MIN_CHECK, int(np.ceil(UPDATE_FRAME_CHECK_SHARE * offered)))
    if len(localized) < need and not trust_poses:
        raise ValueError(f"{len(localized)} of the {offered} new frames localize in {map_path}; {need} are needed to "
                         "check that the recording is of this place and in the map's frame; nothing was written. If "
                         "it is (e.g. at night, or mostly new rooms, in the frame of the robot's SLAM map), pass "
                         "--trust-poses; if it is in another frame, build a map of it and `reloc map merge` the two "
                         "(merge aligns them)")


def _new_keyframes(db: MapDatabase, frames: list[Frame], feats: list[Features]) -> list[Keyframe]:
    """Keyframes of new frames with 3D the way ``db``'s have it (depth images, or the depth head with the map's
    fitted scale); triangulated maps get their points in :func:`_retriangulated`."""
    from reloc_ros.pipelines.build_map import frame_points, make_keyframe

    points = db.manifest["points"]
    scale_rec = (db.manifest.get("build") or {}).get("depth_scale") or {}
    scale = float(scale_rec["factor"]) if scale_rec.get("applied") and scale_rec.get("factor") else 1.0
    out = []
    for f, fe in zip(frames, feats):
        kpi = f.camera.undistort_points(fe.keypoints).astype(np.float32)
        if points == "triangulate":
            p, c = np.full((len(kpi), 3), np.nan, np.float32), np.zeros(len(kpi), np.float32)
        elif points == "learned" and fe.depth is None:
            raise MapError(f"{db.path} takes its 3D points from the depth head, which the extractor did not run")
        else:
            p, c = frame_points(points, f, fe, kpi, scale)
        out.append(make_keyframe(f, fe, kpi, fe.global_desc, p, c, points))
    return out


def _retriangulated(db: MapDatabase, old: list[Keyframe], new: list[Keyframe]
                    ) -> tuple[list[Keyframe], list[Keyframe], dict]:
    """Old and new keyframes of a triangulated map with points triangulated from all of them together (the old
    keyframes' stored features, no re-extraction), and the triangulation's stats."""
    from reloc_ros.core.points import TriangulationConfig, triangulate_keyframes

    tri = (db.manifest.get("build") or {}).get("triangulation") or {}
    cfg = TriangulationConfig(matcher=tri.get("matcher", "mnn"))
    allk = old + new
    pts, confs, stats = triangulate_keyframes([k.keypoints for k in allk],
                                          [np.asarray(k.descriptors, np.float32) for k in allk],
                                          np.stack([k.T_map_from_cam for k in allk]), [k.camera for k in allk],
                                          np.stack([k.global_desc for k in allk]), cfg)
    code = POINT_SOURCES["triangulate"]
    done = [replace(k, points3d=p.astype(np.float32), point_conf=np.asarray(c, np.float32),
                    point_source=np.where(np.isfinite(p[:, 0]), code, 0).astype(np.uint8))
            for k, p, c in zip(allk, pts, confs)]
    return done[:len(old)], done[len(old):], stats
