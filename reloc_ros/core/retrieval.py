"""Global-descriptor retrieval over the map's keyframes (faiss inner product), with an optional pose prior."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

__all__ = ["GlobalIndex", "PosePrior", "build_index", "resolve_index_kind", "index_kind", "INDEX_KINDS",
           "AUTO_FLAT_MAX"]


@dataclass
class PosePrior:
    """A rough camera pose in the map frame (from ``/initialpose``, the last good pose, or odometry).

    Attributes:
        position: ``[3]`` camera centre in the map frame.
        sigma_m: standard deviation of the prior's position (metres); candidates far beyond it are demoted.
        rotation: optional ``[3 x 3]`` R_map_from_cam of the predicted camera (a pose predicted by odometry). With
            it (and ``sigma_deg`` > 0) retrieval becomes a pose window: keyframes within 3 sigma in position and
            in viewing direction, ranked by descriptor similarity.
        sigma_deg: standard deviation of the viewing direction (degrees) when ``rotation`` is given.
        tracked: the prediction of a place the tracker accepted (odometry from its last pose), with the tracker's
            publish gate on: the localizer matches fewer keyframes (``LocalizerConfig.tracked_top_k``) and skips the
            place check (``ambiguity_place_tracked``), since the gate checks every pose against the prediction.
    """

    position: np.ndarray
    sigma_m: float = 5.0
    rotation: np.ndarray | None = None
    sigma_deg: float = 0.0
    tracked: bool = False

    @property
    def has_rotation(self) -> bool:
        return self.rotation is not None and self.sigma_deg > 0

    def viewing_angle_deg(self, R_K33: np.ndarray) -> np.ndarray:
        """Angles (degrees) between this prior's optical axis and those of rotations ``R_K33`` (cameras' z)."""
        z = np.asarray(self.rotation, np.float64)[:, 2]
        c = np.clip(np.asarray(R_K33, np.float64)[:, :, 2] @ z, -1.0, 1.0)
        return np.degrees(np.arccos(c))

    def within(self, centers_N3: np.ndarray, R_N33: np.ndarray | None = None) -> np.ndarray:
        """``[N] bool``: cameras within 3 sigma of the prior in position and, when it has a rotation (and ``R_N33``
        is given), in viewing direction."""
        c = np.asarray(centers_N3, np.float64).reshape(-1, 3)
        ok = np.linalg.norm(c - np.asarray(self.position, np.float64).reshape(1, 3), axis=1) \
            <= 3.0 * max(self.sigma_m, 1e-3)
        if self.has_rotation and R_N33 is not None and ok.any():
            ok[ok] = self.viewing_angle_deg(np.asarray(R_N33)[ok]) <= 3.0 * self.sigma_deg
        return ok

    def rules_out(self, T_map_from_cam: np.ndarray) -> bool:
        """True when the pose lies beyond 3 sigma of the prior (position, or viewing direction if given)."""
        return not bool(self.within(T_map_from_cam[None, :3, 3], T_map_from_cam[None, :3, :3])[0])


# Index choice by map size (``kind="auto"``): exact search while the descriptors fit the CPU cache (a flat scan of
# 100k keyframes took ~100 ms on the loaded 2-core VM, 10k 0.5 ms), then IVF (1M keyframes: 4 ms per query,
# recall@10 0.9995 of exact, 21 s to build; HNSW: 0.6 ms but recall@10 0.88 with efSearch 256 and 7 min to build).
# Measured with `reloc bench --scaling`, see docs/performance.md.
AUTO_FLAT_MAX = 20_000  # keyframes: up to this many, flat (exact) search (20k x 1 KB fits the L3 cache)
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
HNSW_M = 32  # graph degree
HNSW_EF_CONSTRUCTION = 80  # build-time beam width
HNSW_EF_SEARCH = 256  # search-time beam width (128 gave recall@10 0.952 at 100k keyframes, too close to 0.95)
IVF_PROBE_FRACTION = 1 / 16  # inverted lists visited per query, as a fraction of nlist ...
IVF_MIN_PROBE = 8  # ... and at least this many
IVF_MAX_LISTS = 1024  # nlist = 4 sqrt(N), at most this (assigning 1M vectors to 4000 lists costs minutes)
IVF_TRAIN_PER_LIST = 64  # k-means training sample per list


def resolve_index_kind(kind: str, n: int) -> str:
    """The concrete index type for ``n`` keyframes: ``kind`` itself, or for ``auto`` flat up to
    :data:`AUTO_FLAT_MAX` keyframes and IVF beyond."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {list(INDEX_KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n <= AUTO_FLAT_MAX else "ivf"


def build_index(global_KG: np.ndarray, kind: str = "flat") -> faiss.Index:
    """A faiss index over L2-normalised global descriptors (inner product = cosine similarity).

    Args:
        kind: ``flat`` (exact), ``hnsw`` (graph, for large maps), ``ivf`` (inverted lists, for large maps) or
            ``auto`` (by map size, see :func:`resolve_index_kind`). The search parameters (HNSW ``efSearch``,
            IVF ``nprobe``) are stored in the index file.
    """
    X = np.ascontiguousarray(global_KG, np.float32)
    d = X.shape[1]
    kind = resolve_index_kind(kind, len(X))
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:  # ivf
        nlist = max(1, min(int(4 * np.sqrt(len(X))), IVF_MAX_LISTS, len(X) // 39))
        quant = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        n_train = min(len(X), IVF_TRAIN_PER_LIST * nlist)  # k-means on a sample: all of 1M would take hours
        index.train(X if n_train == len(X) else X[np.random.default_rng(0).choice(len(X), n_train, replace=False)])
        index.nprobe = min(nlist, max(IVF_MIN_PROBE, int(round(nlist * IVF_PROBE_FRACTION))))
    index.add(X)
    return index


def index_kind(index: faiss.Index) -> str:
    """``flat``, ``hnsw`` or ``ivf``: the type of a built or loaded index."""
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    return "flat"


class GlobalIndex:
    """Top-K retrieval of keyframes.

    Args:
        index: faiss index over the keyframes' global descriptors (row i = keyframe i).
        centers_K3: keyframe camera centres in the map frame (for the pose prior).
        rotations_K33: keyframe R_map_from_cam and ``global_KG`` their global descriptors (both optional): with them
            a prior with a rotation selects keyframes by pose (see :meth:`search`).
    """

    def __init__(self, index: faiss.Index, centers_K3: np.ndarray, rotations_K33: np.ndarray | None = None,
                 global_KG: np.ndarray | None = None):
        self.index = index
        self.centers = np.asarray(centers_K3, np.float64)
        self.rotations = None if rotations_K33 is None else np.asarray(rotations_K33, np.float64)
        self.global_desc = global_KG
        self._slab: tuple | None = None  # (axis, order, sorted coordinates) for pose windows
        if self.rotations is not None and global_KG is not None and len(self.centers):
            # keyframes sorted along the axis of widest spread: a pose window is a slab lookup (1M keyframes:
            # 2 ms per search instead of 35 ms for distances to all; the sort takes 0.2 s once, here)
            axis = int(np.argmax(np.ptp(self.centers, axis=0)))
            order = np.argsort(self.centers[:, axis], kind="stable")
            self._slab = (axis, order, self.centers[order, axis])

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query_G: np.ndarray, k: int, prior: PosePrior | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices and similarities of the ``k`` best keyframes, best first.

        With a prior, the ``4 k`` most similar keyframes are re-ranked by similarity times a Gaussian of their
        distance to the prior position (sigma = ``prior.sigma_m``); keyframes outside 3 sigma are dropped unless
        none remains.

        With a prior that has a rotation (a pose predicted by odometry) and the keyframes' rotations and
        descriptors at hand, the candidates are instead all keyframes within 3 sigma of the prior in position and
        in viewing direction, ranked by similarity: in repeated structure (identical doors
        every few metres) the most similar keyframes may all lie at another repetition, the pose window does not.
        An empty window falls back to the position re-ranking.
        """
        n = len(self)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        k = min(k, n)
        q = np.ascontiguousarray(query_G, np.float32).reshape(1, -1)
        if prior is not None and prior.has_rotation and self._slab is not None:
            found = self._search_window(q[0], k, prior)
            if found is not None:
                return found
        k_search = min(n, 4 * k) if prior is not None else k
        sims, ids = self.index.search(q, k_search)
        sims, ids = sims[0], ids[0]
        valid = ids >= 0
        sims, ids = sims[valid], ids[valid].astype(np.int64)
        if prior is not None and len(ids):
            d = np.linalg.norm(self.centers[ids] - np.asarray(prior.position).reshape(1, 3), axis=1)
            w = np.exp(-0.5 * (d / max(prior.sigma_m, 1e-3)) ** 2)
            near = d <= 3.0 * prior.sigma_m
            if near.any():
                sims, ids, w = sims[near], ids[near], w[near]
            order = np.argsort(-(np.maximum(sims, 0) + 1e-3) * w, kind="stable")
            sims, ids = sims[order], ids[order]
        return ids[:k], sims[:k].astype(np.float32)

    def _search_window(self, q_G: np.ndarray, k: int, prior: PosePrior):
        """The pose-window search of :meth:`search`; None when no keyframe lies in the window."""
        reach = 3.0 * max(prior.sigma_m, 1e-3)
        axis, order, coord = self._slab
        x = float(np.asarray(prior.position, np.float64).reshape(3)[axis])
        lo = int(np.searchsorted(coord, x - reach, side="left"))
        hi = int(np.searchsorted(coord, x + reach, side="right"))
        slab = np.sort(order[lo:hi])  # keyframe order: ties among equal similarities as before
        near = slab[prior.within(self.centers[slab], self.rotations[slab])]
        if len(near) == 0:
            return None
        sims = self.global_desc[near].astype(np.float32) @ q_G.astype(np.float32)
        best = np.argsort(-sims, kind="stable")[:k]
        return near[best].astype(np.int64), sims[best].astype(np.float32)
