"""The feature-extractor interface: one call gives everything the localizer needs from an image.

An extractor returns, for one image: a global descriptor (retrieval), keypoints with descriptors and
scores (matching) and, optionally, a dense depth map (3D for maps without depth sensors).
The SIFT baseline (``reloc_ros.core.sift``) and the learned network implement it; the map builder,
the localizer and the node only talk to this interface.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Features", "FeatureExtractor", "ExtractorError", "create_extractor", "EXTRACTORS", "array_digest",
           "sha256_file", "extractor_class"]


class ExtractorError(RuntimeError):
    """An extractor that cannot run (missing model file, wrong input, unfitted vocabulary, ...)."""


@dataclass
class Features:
    """Everything one image yields.

    Attributes:
        keypoints: ``[N x 2] float32`` pixel coordinates in the input image (OpenCV convention).
        descriptors: ``[N x D] float32``, each row L2-normalised (inner product = cosine similarity).
        scores: ``[N] float32`` detection confidence in [0, 1].
        global_desc: ``[G] float32`` L2-normalised global descriptor, or None before it is computed.
        depth: optional ``[h x w] float32`` metric depth predicted for the image (any resolution; it covers the
            whole image, so pixel (u, v) maps to ``((u + 0.5) * w / W - 0.5, (v + 0.5) * h / H - 0.5)``).
        depth_conf: optional ``[h x w] float32`` confidence of ``depth`` in [0, 1].
        image_size: (width, height) of the input image.
        low_light: the image was enhanced for low light before extraction (``LocalizerConfig.low_light_brightness``).
        sharpness: the query image's sharpness (core/quality.py; NaN: not measured), for the pose covariance.
        brightness: the query image's median grey level in [0, 1] (core/quality.py; NaN: not measured), likewise.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    global_desc: np.ndarray | None
    image_size: tuple[int, int]
    depth: np.ndarray | None = None
    depth_conf: np.ndarray | None = None
    low_light: bool = False
    sharpness: float = float("nan")
    brightness: float = float("nan")

    def __len__(self) -> int:
        return len(self.keypoints)


class FeatureExtractor(abc.ABC):
    """Interface of all extractors.

    Subclasses set ``name`` and implement :meth:`extract` and :meth:`identity`. Extractors whose global
    descriptor needs data-dependent state (e.g. a VLAD vocabulary trained on the map images) implement
    :meth:`fit` / :meth:`state` / :meth:`load_state`; the map stores that state, so queries use the same.
    """

    name: str = "abstract"
    # identity keys that are also constructor parameters (a map's identity recreates the same extractor)
    IDENTITY_PARAMS: tuple = ()
    # constructor parameters for localizing queries only (e.g. skip outputs only map building needs)
    QUERY_PARAMS: dict = {}
    # Lowe ratio for query-keyframe matching when LocalizerConfig.ratio is 0 (the default): what suits this
    # extractor's descriptors (SIFT 0.8 as in Lowe 2004; learned descriptors keep more good matches at 0.9)
    MATCH_RATIO: float = 0.8

    @abc.abstractmethod
    def extract(self, image: np.ndarray) -> Features:
        """Features of one image (``[H x W x 3] uint8 RGB`` or ``[H x W] uint8`` grey)."""

    @abc.abstractmethod
    def identity(self) -> dict:
        """What must agree between a map and the extractor that queries it (name, weights hash, dims, ...)."""

    @classmethod
    def params_from_identity(cls, identity: dict) -> dict:
        """Constructor parameters recorded in a map's extractor identity."""
        return {k: identity[k] for k in cls.IDENTITY_PARAMS if k in identity}

    @property
    def needs_fit(self) -> bool:
        """True when :meth:`fit` must run on the map's features before global descriptors exist."""
        return False

    def fit(self, features: list[Features]) -> None:  # pragma: no cover - trivial default
        """Learn data-dependent state (e.g. a vocabulary) from the map images' features."""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to store in the map so that queries are described with the same state."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""

    def describe_global(self, feats: Features) -> np.ndarray:
        """The global descriptor of already extracted features (after :meth:`fit`)."""
        if feats.global_desc is None:
            raise ExtractorError(f"extractor {self.name} produced no global descriptor")
        return feats.global_desc


def array_digest(*arrays: np.ndarray) -> str:
    """A short sha256 of array contents (used to identify vocabularies and weights)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's contents (model files, map files): unbuffered reads into one reused buffer
    (no allocation per chunk; it stays in cache while hashlib, which releases the GIL, digests it), ~20 % faster
    than reading new chunks on a 770 MB map file."""
    h = hashlib.sha256()
    buf = memoryview(bytearray(chunk))
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


# name -> "module:Class"; imported lazily so that, e.g., SIFT works without onnxruntime installed.
EXTRACTORS = {
    "sift": "reloc_ros.core.sift:SiftVladExtractor",
    "learned": "reloc_ros.core.learned:LearnedExtractor",
}


def extractor_class(name: str) -> type[FeatureExtractor]:
    """The extractor class registered under ``name`` (imported on first use)."""
    if name not in EXTRACTORS:
        raise ExtractorError(f"unknown extractor {name!r}; available: {sorted(EXTRACTORS)}")
    import importlib

    mod, cls = EXTRACTORS[name].split(":")
    return getattr(importlib.import_module(mod), cls)


def create_extractor(name: str, **kwargs) -> FeatureExtractor:
    """Instantiate an extractor by name (``sift`` or ``learned``)."""
    return extractor_class(name)(**kwargs)
