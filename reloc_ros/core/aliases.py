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
(``keyframes.h5``, ``/alias_inliers``). A map built before the analysis existed has none: every place counts as
possibly aliased (the full motion rule).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from reloc_ros.core.features import Features
from reloc_ros.core.geometry import cameras_near

__all__ = ["AliasReport", "find_aliases", "mark_aliases", "unique_place", "CLOSURE_M", "CLOSURE_DEG", "SPREAD_M",
           "SPREAD_DEG"]

# Keyframes this close to the pose a look-alike lands on are marked (the other end of the look-alike), and (the
# spread) this close to a marked keyframe: they see much of its view.
CLOSURE_M, CLOSURE_DEG = 0.5, 30.0
SPREAD_M, SPREAD_DEG = 0.5, 30.0


@dataclass
class AliasReport:
    """Outcome of :func:`find_aliases`.

    Attributes:
        alias_inliers: ``[K] int32`` per keyframe, the inliers of the best pose the map gives its view at another
            place (0: none), after the symmetric closure and the spread.
        direct: ``[K] bool`` keyframes whose own view localized elsewhere (before closure and spread).
        seconds: time taken.
    """

    alias_inliers: np.ndarray
    direct: np.ndarray
    seconds: float

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


def find_aliases(loc, spread_m: float = SPREAD_M, spread_deg: float = SPREAD_DEG, progress=None,
                 known: np.ndarray | None = None) -> AliasReport:
    """Localize every keyframe of ``loc``'s map against the rest of it (see the module docstring).

    Args:
        loc: a :class:`reloc_ros.core.localizer.Localizer` on the map (its place-check settings are used).
        progress: optional callable ``(done, total)``.
        known: ``[K] int32`` with -1 for the keyframes to analyse and the earlier result for the others (``map
            update``: only the new keyframes are localized; a look-alike between a new and an old keyframe marks
            both, as the new one's view lands on the old place).
    """
    t0 = time.perf_counter()
    db, cfg = loc.db, loc.config
    n = len(db)
    known = np.full(n, -1, np.int32) if known is None else np.asarray(known, np.int32)
    best = np.maximum(known, 0)
    direct = np.zeros(n, bool)
    top_k = max(cfg.ambiguity_top_k, cfg.top_k)
    todo_kf = np.flatnonzero(known < 0)
    for done, k in enumerate(todo_kf):
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
                    for j in [k, *_near(db, T_alt, CLOSURE_M, CLOSURE_DEG)]:  # both ends of the look-alike
                        best[j] = max(best[j], n_inl)
        if progress is not None:
            progress(done + 1, len(todo_kf))
    # a neighbour of a marked keyframe sees much of its view (the carried marks have been spread already)
    marked = np.flatnonzero((best > 0) & ((known < 0) | (best > known)))
    spread = best.copy()
    for k in (marked if spread_m > 0 else []):
        nb = _near(db, db.T_map_from_cam[k], spread_m, spread_deg)
        spread[nb] = np.maximum(spread[nb], best[k])
    return AliasReport(spread, direct, time.perf_counter() - t0)


def unique_place(alias_inliers: np.ndarray | None, keyframes) -> bool:
    """True when none of ``keyframes`` (the keyframes a pose was solved from) has a look-alike in the map; False
    when one has, when there are none, or when the map has no analysis (``alias_inliers`` None)."""
    ks = np.asarray(list(keyframes), np.int64)
    if alias_inliers is None or len(ks) == 0:
        return False
    return not bool(np.any(alias_inliers[ks] > 0))


def mark_aliases(db, extractor, index_kind: str = "auto", progress=None, carry: dict | None = None) -> AliasReport:
    """Run :func:`find_aliases` on ``db`` (a map about to be saved, or a loaded one) and store the result in it:
    ``db.alias_inliers`` and the manifest's ``aliases`` record. Builds the retrieval index first when ``db`` has
    none of that kind (a map made by :meth:`MapDatabase.from_keyframes`). ``carry``: keyframe name -> its earlier result
    (``map update``: those keyframes are not localized again)."""
    from reloc_ros.core.localizer import Localizer

    db.ensure_index(index_kind)  # the one that save() writes
    known = None if carry is None else np.array([carry.get(name, -1) for name in db.names], np.int32)
    report = find_aliases(Localizer(db, extractor), progress=progress, known=known)
    db.alias_inliers = report.alias_inliers
    db.manifest["aliases"] = {"keyframes_with_lookalike": int(np.count_nonzero(report.alias_inliers)),
                              "found_directly": int(np.count_nonzero(report.direct)),
                              "fraction": round(report.fraction, 4), "seconds": round(report.seconds, 2)}
    return report
