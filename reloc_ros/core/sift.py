"""The classical baseline: OpenCV SIFT (RootSIFT descriptors) with a VLAD global descriptor.

Fixed so that comparisons stay fair: at most 2000 keypoints at the evaluation resolution, a 64-word VLAD
vocabulary trained on the map images (k-means with faiss), intra-normalisation + signed square root + L2.
"""

from __future__ import annotations

import cv2
import faiss
import numpy as np

from reloc_ros.core.features import ExtractorError, FeatureExtractor, Features, array_digest

__all__ = ["SiftVladExtractor", "resize_max", "to_gray"]


def to_gray(image: np.ndarray) -> np.ndarray:
    """``[H x W] uint8`` grey image of an RGB / RGBA / grey uint8 image."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise ExtractorError(f"unsupported image shape {image.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")


def resize_max(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so that the longer side is at most ``max_side``; returns (image, scale <= 1)."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    s = max_side / max(h, w)
    out = cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
    return out, s


class SiftVladExtractor(FeatureExtractor):
    """SIFT keypoints + RootSIFT descriptors + VLAD global descriptor.

    Args:
        n_features: maximum number of keypoints (2000 for the published baseline).
        n_words: VLAD vocabulary size (64).
        max_side: images whose longer side exceeds this are downscaled first (None: never).
        seed: k-means seed.
    """

    name = "sift"
    VERSION = 1
    IDENTITY_PARAMS = ("n_features", "n_words", "max_side")

    def __init__(self, n_features: int = 2000, n_words: int = 64, max_side: int | None = 1024, seed: int = 0):
        self.n_features = int(n_features)
        self.n_words = int(n_words)
        self.max_side = max_side
        self.seed = seed
        self._sift = cv2.SIFT_create(nfeatures=self.n_features)
        self.vocab: np.ndarray | None = None  # [n_words x 128] float32
        self._vocab_index = None

    # -- interface ---------------------------------------------------------------------------------
    def identity(self) -> dict:
        return {"name": self.name, "version": self.VERSION, "n_features": self.n_features,
                "n_words": self.n_words, "max_side": self.max_side, "local_dim": 128,
                "global_dim": self.n_words * 128,
                "vocab_digest": array_digest(self.vocab) if self.vocab is not None else None}

    @property
    def needs_fit(self) -> bool:
        return True

    def extract(self, image: np.ndarray) -> Features:
        gray = to_gray(image)
        if gray.dtype != np.uint8:
            raise ExtractorError(f"SIFT needs uint8 images, got {gray.dtype}")
        H, W = gray.shape
        small, s = resize_max(gray, self.max_side)
        kps, desc = self._sift.detectAndCompute(small, None)
        if desc is None or len(kps) == 0:
            kpts = np.zeros((0, 2), np.float32)
            desc = np.zeros((0, 128), np.float32)
            scores = np.zeros((0,), np.float32)
        else:
            # OpenCV may return a few more than nfeatures on ties: keep the strongest.
            resp = np.array([k.response for k in kps], np.float32)
            order = np.argsort(-resp, kind="stable")[: self.n_features]
            pts = np.array([k.pt for k in kps], np.float32)[order]
            kpts = ((pts + 0.5) / s - 0.5).astype(np.float32)
            desc = _root_sift(desc[order])
            resp = resp[order]
            scores = (resp / max(float(resp.max()), 1e-12)).astype(np.float32)
        feats = Features(kpts, desc, scores, None, (W, H))
        if self.vocab is not None:
            feats.global_desc = self.describe_global(feats)
        return feats

    def fit(self, features: list[Features], max_descriptors: int = 200_000) -> None:
        """Train the VLAD vocabulary (k-means) on the map images' descriptors."""
        all_desc = [f.descriptors for f in features if len(f)]
        if not all_desc:
            raise ExtractorError("cannot train the VLAD vocabulary: the map images gave no SIFT keypoints")
        X = np.concatenate(all_desc).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        if len(X) > max_descriptors:
            X = X[rng.choice(len(X), max_descriptors, replace=False)]
        if len(X) < self.n_words:
            raise ExtractorError(f"only {len(X)} descriptors for a {self.n_words}-word vocabulary: map too small")
        km = faiss.Kmeans(X.shape[1], self.n_words, niter=25, seed=self.seed, verbose=False,
                          max_points_per_centroid=100_000)
        km.train(X)
        self._set_vocab(km.centroids.astype(np.float32))

    def state(self) -> dict[str, np.ndarray]:
        if self.vocab is None:
            raise ExtractorError("SIFT-VLAD vocabulary not trained: call fit() on the map features first")
        return {"vlad_vocab": self.vocab}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if "vlad_vocab" not in state:
            raise ExtractorError("map has no VLAD vocabulary (vlad_vocab): rebuild the map with this version")
        vocab = np.asarray(state["vlad_vocab"], np.float32)
        if vocab.shape != (self.n_words, 128):
            raise ExtractorError(f"VLAD vocabulary has shape {vocab.shape}, expected ({self.n_words}, 128)")
        self._set_vocab(vocab)

    def describe_global(self, feats: Features) -> np.ndarray:
        if self.vocab is None:
            raise ExtractorError("SIFT-VLAD vocabulary not trained: call fit() or load a map first")
        return vlad(feats.descriptors, self.vocab, self._vocab_index)

    # -- helpers -----------------------------------------------------------------------------------
    def _set_vocab(self, vocab: np.ndarray) -> None:
        self.vocab = np.ascontiguousarray(vocab, np.float32)
        self._vocab_index = faiss.IndexFlatL2(self.vocab.shape[1])
        self._vocab_index.add(self.vocab)


def _root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT: L1-normalise, square root; the result has unit L2 norm."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    d = np.sqrt(d)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return d


def vlad(desc_ND: np.ndarray, vocab_KD: np.ndarray, index=None) -> np.ndarray:
    """VLAD of local descriptors: residual sums per word, intra-normalised, signed sqrt, L2 (``[K*D]``)."""
    K, D = vocab_KD.shape
    out = np.zeros((K, D), np.float32)
    if len(desc_ND):
        if index is None:
            index = faiss.IndexFlatL2(D)
            index.add(vocab_KD)
        _, assign = index.search(np.ascontiguousarray(desc_ND, np.float32), 1)
        assign = assign[:, 0]
        np.add.at(out, assign, desc_ND - vocab_KD[assign])
        n = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.where(n > 1e-12, out / np.maximum(n, 1e-12), 0.0)
    v = out.reshape(-1)
    v = np.sign(v) * np.sqrt(np.abs(v))
    n = np.linalg.norm(v)
    return (v / n if n > 1e-12 else v).astype(np.float32)
