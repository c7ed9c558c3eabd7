"""Global-descriptor retrieval over the map's keyframes (faiss inner product), with an optional pose prior."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

__all__ = ["GlobalIndex", "PosePrior", "build_index"]


@dataclass
class PosePrior:
    """A rough camera position in the map frame (from ``/initialpose`` or the last good pose).

    Attributes:
        position: ``[3]`` camera centre in the map frame.
        sigma_m: standard deviation of the prior's position (metres); candidates far beyond it are demoted.
    """

    position: np.ndarray
    sigma_m: float = 5.0


def build_index(global_KG: np.ndarray, kind: str = "flat") -> faiss.Index:
    """A faiss index over L2-normalised global descriptors (inner product = cosine similarity).

    Args:
        kind: ``flat`` (exact), ``hnsw`` (graph, for large maps) or ``ivf`` (inverted lists, for large maps).
    """
    X = np.ascontiguousarray(global_KG, np.float32)
    d = X.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    elif kind == "ivf":
        nlist = max(1, int(4 * np.sqrt(len(X))))
        quant = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(X)
        index.nprobe = max(1, nlist // 16)
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose flat, hnsw or ivf")
    index.add(X)
    return index


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
