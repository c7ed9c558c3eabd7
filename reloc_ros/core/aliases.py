"""The map's own look-alikes: which keyframes show a view that the map also fits at another place.

Why. The place tracker (core/tracking.py) asks for motion before it publishes a place, because an alias seen from a
robot that has not moved is consistent too. How much motion is needed depends on whether the place HAS an alias:
in a room that looks like no other part of the map, a few consistent poses over a short stretch are evidence; along
a corridor of identical doors they are not. The map can answer that question about itself, once, when it is built.

How. Every keyframe is localized against the rest of the map the way the localizer's place check looks for another
place (core/localizer.py, ``_rival_place``): its stored keypoints and descriptors are the query, the keyframes
retrieved for its global descriptor that are far from it (``ambiguity_place_m``) or close by and facing away
(``ambiguity_place_facing_deg``) are matched and solved as groups, and a pose with at least ``min_inliers`` PnP
inliers that is not the keyframe's own pose is an alias (no ratio to its own support: the question is whether the
map fits the view elsewhere at all). The relation is made symmetric (the keyframes near the alias pose are marked
too: the place the alias lands on looks like this one) and spread to the keyframes within ``spread_m`` and
``spread_deg`` of a marked one (a neighbour sees much of the same view).

The result is one int32 per keyframe (``alias_inliers``: the best alias's inliers, 0 for none), stored in the map
(``keyframes.h5``, ``/alias_inliers``), and where each look-alike is (``alias_relation``: per keyframe up to
:data:`MAX_RELATIONS` rigid transforms ``W`` of the map frame, NaN where none, such that a camera near the keyframe
has its look-alike at ``W @ T_map_from_cam``; ``/alias_relation``). The closure stores the inverse transform at the
other end, the spread hands a keyframe's transforms to its neighbours. With them the place tracker localizes the
images of a new place at its look-alikes too (core/tracking.py): a look-alike that the images do not fit there is
ruled out by looking, not only by driving 1 m. A map built before the analysis existed has none of it: every place
counts as possibly aliased (the full motion rule); one analysed before the transforms were recorded has
``alias_inliers`` only (the same).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np

from reloc_ros.core.features import Features
from reloc_ros.core.geometry import cameras_near, invert_T, pose_errors

__all__ = ["AliasReport", "find_aliases", "mark_aliases", "unique_place", "lookalike_poses", "CLOSURE_M",
           "CLOSURE_DEG", "SPREAD_M", "SPREAD_DEG", "MAX_RELATIONS"]

# Keyframes this close to the pose a look-alike lands on are marked (the other end of the look-alike), and (the
# spread) this close to a marked keyframe: they see much of its view.
CLOSURE_M, CLOSURE_DEG = 0.5, 30.0
SPREAD_M, SPREAD_DEG = 0.5, 30.0
MAX_RELATIONS = 2  # look-alike places remembered per keyframe (the ones with most inliers)
SAME_RELATION_M, SAME_RELATION_DEG = 0.5, 10.0  # two transforms that move the keyframe this close are one place


@dataclass
class AliasReport:
    """Outcome of :func:`find_aliases`.

    Attributes:
        alias_inliers: ``[K] int32`` per keyframe, the inliers of the best pose the map gives its view at another
            place (0: none), after the symmetric closure and the spread.
        direct: ``[K] bool`` keyframes whose own view localized elsewhere (before closure and spread).
        seconds: time taken.
        relation: ``[K x MAX_RELATIONS x 4 x 4]``: where the look-alikes are (see the module docstring), NaN where
            none.
    """

    alias_inliers: np.ndarray
    direct: np.ndarray
    seconds: float
    relation: np.ndarray | None = None

    @property
    def fraction(self) -> float:
        """Share of keyframes marked as having a look-alike."""
        return float(np.mean(self.alias_inliers > 0)) if len(self.alias_inliers) else 0.0

    def summary(self) -> str:
        n = len(self.alias_inliers)
        return (f"look-alikes: {int(np.count_nonzero(self.alias_inliers))} of {n} keyframes have a view the map also "
                f"fits elsewhere ({int(np.count_nonzero(self.direct))} directly), {self.seconds:.1f} s")


def _keyframe_features(db, k: int) -> Features:
    sl = db.keyframe_slice(k)
    return Features(np.asarray(db.keypoints[sl], np.float32), np.asarray(db.descriptors[sl], np.float32),
                    np.asarray(db.scores[sl], np.float32), np.asarray(db.global_desc[k], np.float32),
                    db.cameras[k].size)


def _near(db, T: np.ndarray, max_m: float, max_deg: float) -> np.ndarray:
    """Keyframes within ``max_m`` of the camera centre of ``T`` and ``max_deg`` of its viewing direction."""
    return np.flatnonzero(cameras_near(db.T_map_from_cam, T, max_m, max_deg))


def find_aliases(loc, spread_m: float = SPREAD_M, spread_deg: float = SPREAD_DEG, progress=None) -> AliasReport:
    """Localize every keyframe of ``loc``'s map against the rest of it (see the module docstring).

    Args:
        loc: a :class:`reloc_ros.core.localizer.Localizer` on the map (its place-check settings are used).
        progress: optional callable ``(done, total)``.
    """
    t0 = time.perf_counter()
    db, cfg = loc.db, loc.config
    n = len(db)
    best = np.zeros(n, np.int32)
    rel = _Relations(db.T_map_from_cam)
    direct = np.zeros(n, bool)
    top_k = max(cfg.ambiguity_top_k, cfg.top_k)
    for k in range(n):
        T_k = db.T_map_from_cam[k]
        cam = db.cameras[k]
        feats = _keyframe_features(db, k)
        if len(feats) >= 4:
            q = loc._query(feats, cam)
            ids, _ = loc.index.search(feats.global_desc, top_k + 1, None)
            ids = ids[ids != k]
            groups = [g[:cfg.ambiguity_place_keyframes] for g in loc._other_places(ids, T_k)]
            todo = list(dict.fromkeys(int(i) for g in groups for i in g))
            if todo:
                matched = dict(zip(todo, loc._match(q.desc, q.sel, todo)))
                for g in groups:
                    alt = loc._solve_rival(g, q.kpts_ideal, cam.K, cam.size, T_k, 0, None, matched)
                    if alt is None:
                        continue
                    n_inl, T_alt = int(alt[0]), alt[4]
                    direct[k] = True
                    W = T_alt @ invert_T(T_k)  # this keyframe's view, seen at the look-alike
                    best[k] = max(best[k], n_inl)
                    rel.add(k, W, n_inl)
                    for j in _near(db, T_alt, CLOSURE_M, CLOSURE_DEG):  # the other end: its view is seen here
                        best[j] = max(best[j], n_inl)
                        rel.add(int(j), invert_T(W), n_inl)
        if progress is not None:
            progress(k + 1, n)
    # a neighbour of a marked keyframe sees much of its view
    marked = np.flatnonzero(best > 0)
    spread = best.copy()
    spread_rel = rel.copy()
    for k in (marked if spread_m > 0 else []):
        nb = _near(db, db.T_map_from_cam[k], spread_m, spread_deg)
        spread[nb] = np.maximum(spread[nb], best[k])
        for j in nb:
            spread_rel.add_all(int(j), rel, int(k))
    return AliasReport(spread, direct, time.perf_counter() - t0, spread_rel.W)


class _Relations:
    """Per keyframe, up to MAX_RELATIONS look-alike transforms with their inliers (most inliers kept; two that move
    the keyframe's camera to the same place are one)."""

    def __init__(self, T_map_from_cam: np.ndarray):
        n = len(T_map_from_cam)
        self.T = T_map_from_cam
        self.W = np.full((n, MAX_RELATIONS, 4, 4), np.nan)
        self.inl = np.zeros((n, MAX_RELATIONS))

    def copy(self) -> "_Relations":
        out = copy.copy(self)
        out.W, out.inl = self.W.copy(), self.inl.copy()
        return out

    def add(self, k: int, W: np.ndarray, inliers: float) -> None:
        T_k = self.T[k]
        for i in range(MAX_RELATIONS):
            if self.inl[k, i] > 0 and _same_place(self.W[k, i] @ T_k, W @ T_k):
                if inliers > self.inl[k, i]:
                    self.W[k, i], self.inl[k, i] = W, inliers
                return
        i = int(np.argmin(self.inl[k]))
        if inliers > self.inl[k, i]:
            self.W[k, i], self.inl[k, i] = W, inliers

    def add_all(self, k: int, other: "_Relations", j: int) -> None:
        for i in range(MAX_RELATIONS):
            if other.inl[j, i] > 0:
                self.add(k, other.W[j, i], other.inl[j, i])


def _same_place(P1: np.ndarray, P2: np.ndarray) -> bool:
    """Two camera poses within SAME_RELATION_M / SAME_RELATION_DEG of each other (one look-alike place)."""
    dt, dr = pose_errors(P1, P2)
    return dt <= SAME_RELATION_M and dr <= SAME_RELATION_DEG


def lookalike_poses(relation: np.ndarray | None, alias_inliers: np.ndarray | None, keyframes,
                    T_map_from_cam: np.ndarray) -> list | None:
    """Where the map's look-alikes of a pose solved from ``keyframes`` are: the camera poses ``W @ T_map_from_cam``
    for the transforms of the keyframes that have a look-alike, one per place (at most MAX_RELATIONS x their count);
    [] when none of them has a look-alike; None when one has but the map does not know where (a map analysed before
    the transforms were recorded), when no keyframe supports the pose on its own (nothing to tell), or the map has no
    analysis."""
    if relation is None or alias_inliers is None or len(keyframes) == 0:
        return None
    out = []
    for k in np.asarray(list(keyframes), np.int64):
        if alias_inliers[k] <= 0:
            continue
        Ws = [W for W in relation[k] if np.all(np.isfinite(W))]
        if not Ws:
            return None
        for W in Ws:
            P = W @ T_map_from_cam
            if not any(_same_place(P, Q) for Q in out):
                out.append(P)
    return out


def unique_place(alias_inliers: np.ndarray | None, keyframes) -> bool:
    """True when none of ``keyframes`` (the keyframes a pose was solved from) has a look-alike in the map; False
    when one has, when there are none, or when the map has no analysis (``alias_inliers`` None)."""
    ks = np.asarray(list(keyframes), np.int64)
    if alias_inliers is None or len(ks) == 0:
        return False
    return not bool(np.any(alias_inliers[ks] > 0))


def mark_aliases(db, extractor, index_kind: str = "auto", progress=None) -> AliasReport:
    """Run :func:`find_aliases` on ``db`` (a map about to be saved, or a loaded one) and store the result in it:
    ``db.alias_inliers``, ``db.alias_relation`` and the manifest's ``aliases`` record. Builds the retrieval index first
    when ``db`` has none of that kind (a map made by :meth:`MapDatabase.from_keyframes`). Every keyframe is analysed,
    after ``map update`` too."""
    from reloc_ros.core.localizer import Localizer

    db.ensure_index(index_kind)  # the one that save() writes
    # The analysis must see the descriptors the node will see: a map is saved and loaded with float16 descriptors, and
    # localizing a keyframe against its exact look-alike (repeated texture) turns on ties that the rounding decides (a
    # 120-keyframe office map: 33 keyframes marked with the build's float32, 12 after loading, as `reloc map analyse`
    # gave)
    full = db.descriptors
    if full.dtype != np.float16:
        db.descriptors = np.asarray(full).astype(np.float16)
    try:
        report = find_aliases(Localizer(db, extractor), progress=progress)
    finally:
        db.descriptors = full
    db.alias_inliers = report.alias_inliers
    db.alias_relation = report.relation
    db.manifest["aliases"] = {"keyframes_with_lookalike": int(np.count_nonzero(report.alias_inliers)),
                              "found_directly": int(np.count_nonzero(report.direct)),
                              "fraction": round(report.fraction, 4), "seconds": round(report.seconds, 2)}
    return report
