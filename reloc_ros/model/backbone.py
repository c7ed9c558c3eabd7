"""The shared encoder: an XFeat-compatible CNN on grey images (loads XFeat's weights, Apache-2.0, 1:1).

Levels (stride relative to the input, channels)::

    image [B x 1 x H x W] in [0, 1] -> instance norm (per image: zero mean, unit variance)
    block1  1 -> 4 -> 8 -> 8 -> 24        /4   (+ skip1: 4x4 average pool, 1x1 conv 1 -> 24)
    block2  24 -> 24 -> 24                /4   -> f4
    block3  24 -> 64 -> 64 -> 64          /8
    block4  64 -> 64 -> 64 -> 64          /16  -> f16
    block5  64 -> 128 -> 128 -> 128 -> 64 /32  -> f32
    fusion  block3 + up(block4) + up(block5) -> 3 convs -> f8 (64 channels, the local descriptor map)

H and W must be multiples of 32. 1.2 M parameters without the heads.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ConvBnRelu", "XFeatBackbone", "STRIDE"]

STRIDE = 32  # input height and width must be multiples of this


class ConvBnRelu(nn.Module):
    """Conv (no bias) -> BatchNorm without affine parameters -> ReLU (XFeat's basic layer)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, kernel: int = 3):
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _stack(*layers: tuple) -> nn.Sequential:
    """A sequence of :class:`ConvBnRelu` from ``(c_in, c_out, stride[, kernel])`` tuples."""
    return nn.Sequential(*[ConvBnRelu(*spec) for spec in layers])


class XFeatBackbone(nn.Module):
    """Encoder returning the feature pyramid used by all three heads.

    The parameter names equal those of XFeat's weight file, so its ``block*``, ``skip1`` and
    ``block_fusion`` tensors load with ``load_state_dict(strict=True)``.
    """

    def __init__(self):
        super().__init__()
        self.norm = nn.InstanceNorm2d(1)  # no parameters
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block1 = _stack((1, 4, 1), (4, 8, 2), (8, 8, 1), (8, 24, 2))
        self.block2 = _stack((24, 24, 1), (24, 24, 1))
        self.block3 = _stack((24, 64, 2), (64, 64, 1), (64, 64, 1, 1))
        self.block4 = _stack((64, 64, 2), (64, 64, 1), (64, 64, 1))
        self.block5 = _stack((64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 64, 1, 1))
        self.block_fusion = nn.Sequential(
            ConvBnRelu(64, 64), ConvBnRelu(64, 64), nn.Conv2d(64, 64, 1)
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature pyramid of a grey image.

        Args:
            image: ``[B x 1 x H x W]`` float in [0, 1], H and W multiples of 32.

        Returns:
            ``x``: ``[B x 1 x H x W]`` normalised image (input of the keypoint head),
            ``f4``: ``[B x 24 x H/4 x W/4]``, ``f8``: ``[B x 64 x H/8 x W/8]`` (raw, not normalised),
            ``f16``: ``[B x 64 x H/16 x W/16]``, ``f32``: ``[B x 64 x H/32 x W/32]``.
        """
        x = self.norm(image)
        f4 = self.block2(self.block1(x) + self.skip1(x))
        x3 = self.block3(f4)
        f16 = self.block4(x3)
        f32 = self.block5(f16)
        size = x3.shape[-2:]
        fused = x3 + F.interpolate(f16, size, mode="bilinear", align_corners=False) \
            + F.interpolate(f32, size, mode="bilinear", align_corners=False)
        return {"x": x, "f4": f4, "f8": self.block_fusion(fused), "f16": f16, "f32": f32}
