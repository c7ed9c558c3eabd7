"""RelocNet: one encoder, three heads, one forward pass (HF-Net style).

    image [B x 1 x H x W] grey in [0, 1], H and W multiples of 32
      -> XFeatBackbone -> {x, f4, f8, f16, f32}
      -> LocalHead(x, f8)   keypoint heatmap (full res), reliability + descriptors (1/8)
      -> GlobalHead(desc)   NetVLAD + whitening -> global descriptor
      -> DepthHead(pyramid) metric depth + confidence (1/4)
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from reloc_ros.model.backbone import STRIDE, XFeatBackbone
from reloc_ros.model.heads import DepthHead, GlobalHead, LocalHead

__all__ = ["RelocNet", "default_conf", "OUTPUT_NAMES", "INPUT_NAME", "MODEL_VERSION"]

MODEL_VERSION = 1  # bump when the outputs' meaning changes (maps record it)
INPUT_NAME = "image"
# Outputs of the exported graph, in this order (see RelocNet.forward).
OUTPUT_NAMES = ("keypoint_heatmap", "reliability", "descriptors", "global_descriptor", "depth", "depth_confidence")

default_conf = {
    "global": {
        "clusters": 64,  # NetVLAD centroids (64 as in PNLP); VLAD size = clusters * 64
        "hidden": 128,  # width of the residual 1x1 adapter before NetVLAD
        "dim": 256,  # output dimension after the learned whitening (<= 256)
    },
    "depth": {
        "width": 64,  # decoder channels at 1/32 and 1/16
        "min_depth": 0.1,  # metres; predictions are clamped to [min_depth, max_depth]
        "max_depth": 80.0,
        "init_depth": 3.0,  # initial constant prediction (typical indoor distance)
    },
}


def _merge(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if k not in out:
            raise ValueError(f"unknown model config key {k!r}; valid keys: {sorted(out)}")
        if isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"model config {k!r} must be a mapping")
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class RelocNet(nn.Module):
    """The relocalization network. ``conf`` overrides :data:`default_conf` (unknown keys are an error)."""

    stride = STRIDE

    def __init__(self, conf: dict | None = None):
        super().__init__()
        self.conf = _merge(default_conf, conf)
        g, d = self.conf["global"], self.conf["depth"]
        self.backbone = XFeatBackbone()
        self.local = LocalHead()
        self.global_head = GlobalHead(clusters=g["clusters"], dim=64, hidden=g["hidden"], out_dim=g["dim"])
        self.depth_head = DepthHead(width=d["width"], min_depth=d["min_depth"], max_depth=d["max_depth"],
                                    init_depth=d["init_depth"])

    def forward(self, image: torch.Tensor, heads: tuple[str, ...] = ("local", "global", "depth")) -> dict:
        """Run the encoder and the requested heads.

        Args:
            image: ``[B x 1 x H x W]`` float grey image in [0, 1]; H, W multiples of 32.
            heads: which heads to run (training runs only the ones it needs).

        Returns:
            dict with, for the heads run:
            ``keypoint_logits`` ``[B x 65 x H/8 x W/8]``, ``keypoint_heatmap`` ``[B x 1 x H x W]``,
            ``reliability`` ``[B x 1 x H/8 x W/8]``, ``descriptors`` ``[B x 64 x H/8 x W/8]`` (unit norm),
            ``vlad`` ``[B x K*64]``, ``global_descriptor`` ``[B x dim]`` (unit norm),
            ``depth`` / ``log_depth`` / ``depth_confidence`` ``[B x 1 x H/4 x W/4]``.
        """
        H, W = image.shape[-2:]
        if image.dim() != 4 or image.shape[1] != 1:
            raise ValueError(f"expected a [B x 1 x H x W] grey image, got shape {tuple(image.shape)}")
        if not torch.jit.is_tracing() and (H % self.stride or W % self.stride):
            raise ValueError(f"image size {W}x{H} is not a multiple of {self.stride}")
        pyr = self.backbone(image)
        out = {}
        if "local" in heads or "global" in heads:
            out.update(self.local(pyr["x"], pyr["f8"]))
        if "global" in heads:
            out.update(self.global_head(out["descriptors"]))
        if "depth" in heads:
            out.update(self.depth_head(pyr))
        return out


class ExportWrapper(nn.Module):
    """The network with exactly the exported outputs, as a tuple in :data:`OUTPUT_NAMES` order."""

    def __init__(self, net: RelocNet):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor):
        out = self.net(image)
        return tuple(out[k] for k in OUTPUT_NAMES)
