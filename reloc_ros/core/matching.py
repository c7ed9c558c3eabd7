"""Descriptor matching: mutual nearest neighbours with Lowe's ratio test, vectorised."""

from __future__ import annotations

import numpy as np

__all__ = ["match_mutual_nn"]


def match_mutual_nn(desc_q_ND: np.ndarray, desc_r_MD: np.ndarray, ratio: float = 0.8,
                    mutual: bool = True, min_sim: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """Match two sets of L2-normalised descriptors.

    A query descriptor i matches reference j when j is i's nearest neighbour, its distance is below
    ``ratio`` times the second nearest (Lowe), i is j's nearest neighbour (when ``mutual``) and the cosine
    similarity is at least ``min_sim``.

    Args:
        desc_q_ND: ``[N x D]`` query descriptors (unit rows).
        desc_r_MD: ``[M x D]`` reference descriptors (unit rows).
        ratio: distance-ratio threshold in (0, 1]; 1 disables the test.

    Returns:
        matches_K2: ``[K x 2] int64`` pairs (query index, reference index).
        scores_K: ``[K] float32`` match confidence in [0, 1] (1 - d1/d2 scaled by similarity).
    """
    N, M = len(desc_q_ND), len(desc_r_MD)
    if N == 0 or M == 0:
        return np.zeros((0, 2), np.int64), np.zeros((0,), np.float32)
    S = desc_q_ND.astype(np.float32, copy=False) @ desc_r_MD.astype(np.float32, copy=False).T  # [N x M]
    rows = np.arange(N)
    nn = np.argmax(S, axis=1)
    s1 = S[rows, nn]
    col_best = np.argmax(S, axis=0) if mutual else None
    if M >= 2:
        S[rows, nn] = -np.inf  # S is our own product: reuse it to find the second best
        s2 = S.max(axis=1)
    else:
        s2 = np.full(N, -1.0, np.float32)
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * s1, 0.0))
    d2 = np.sqrt(np.maximum(2.0 - 2.0 * s2, 0.0))
    keep = (d1 <= ratio * d2) & (s1 >= min_sim)
    if mutual:
        keep &= col_best[nn] == rows
    qi = rows[keep]
    ri = nn[keep]
    conf = (1.0 - d1[keep] / np.maximum(d2[keep], 1e-6)) if M >= 2 else np.clip(s1[keep], 0, 1)
    conf = np.clip(conf, 0.0, 1.0).astype(np.float32)
    return np.stack([qi, ri], axis=1).astype(np.int64), conf
