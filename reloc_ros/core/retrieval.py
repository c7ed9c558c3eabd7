"""Global-descriptor retrieval over the map's keyframes (faiss inner product), with an optional pose prior."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

__all__ = ["GlobalIndex", "PosePrior", "build_index", "resolve_index_kind", "index_kind", "INDEX_KINDS",
           "AUTO_FLAT_MAX"]


@dataclass
class PosePrior:
    """A rough camera position in the map frame (from ``/initialpose`` or the last good pose).

    Attributes:
        position: ``[3]`` camera centre in the map frame.
        sigma_m: standard deviation of the prior's position (metres); candidates far beyond it are demoted.
    """

    position: np.ndarray
    sigma_m: float = 5.0


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
    """

    def __init__(self, index: faiss.Index, centers_K3: np.ndarray):
        self.index = index
        self.centers = np.asarray(centers_K3, np.float64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query_G: np.ndarray, k: int, prior: PosePrior | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices and similarities of the ``k`` best keyframes, best first.

        With a prior, the ``4 k`` most similar keyframes are re-ranked by similarity times a Gaussian of their
        distance to the prior position (sigma = ``prior.sigma_m``); keyframes outside 3 sigma are dropped unless
        none remains.
        """
        n = len(self)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        k = min(k, n)
        q = np.ascontiguousarray(query_G, np.float32).reshape(1, -1)
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
