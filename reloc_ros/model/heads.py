"""The three heads on the shared encoder: local features, global descriptor, depth.

All heads work on the feature pyramid of :class:`reloc_ros.model.backbone.XFeatBackbone`
(``x``: normalised image, ``f4``/``f8``/``f16``/``f32``: features at 1/4 .. 1/32).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from reloc_ros.model.backbone import ConvBnRelu

__all__ = ["LocalHead", "NetVLAD", "GlobalHead", "DepthHead", "softmax_channels"]


def softmax_channels(x: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of ``[B x C x h x w]``, written out: ONNX Runtime's Softmax on a non-last axis
    transposes the tensor twice (measured 5.7 ms vs 0.5 ms for 65 x 60 x 80)."""
    e = torch.exp(x - x.amax(dim=1, keepdim=True))
    return e / e.sum(dim=1, keepdim=True)


class LocalHead(nn.Module):
    """Keypoints and descriptors at 1/8 resolution (XFeat's heads; parameter names equal XFeat's).

    * keypoint logits: 65 classes per 8x8 cell (64 pixel positions + "no keypoint"), predicted from the
      8x8 pixel block itself (pixel-unshuffled normalised image) -> a full-resolution keypoint heatmap;
    * reliability: per-cell probability that the cell's descriptor matches (sigmoid);
    * descriptors: the L2-normalised 64-d ``f8`` feature map.
    """

    def __init__(self):
        super().__init__()
        self.keypoint_head = nn.Sequential(
            ConvBnRelu(64, 64, kernel=1), ConvBnRelu(64, 64, kernel=1), ConvBnRelu(64, 64, kernel=1),
            nn.Conv2d(64, 65, 1),
        )
        self.heatmap_head = nn.Sequential(
            ConvBnRelu(64, 64, kernel=1), ConvBnRelu(64, 64, kernel=1), nn.Conv2d(64, 1, 1)
        )

    def forward(self, x: torch.Tensor, f8: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: ``x`` ``[B x 1 x H x W]`` normalised image, ``f8`` ``[B x 64 x H/8 x W/8]``.

        Returns:
            ``keypoint_logits`` ``[B x 65 x H/8 x W/8]``, ``keypoint_heatmap`` ``[B x 1 x H x W]``
            (softmax over the 65 classes, "no keypoint" dropped, cells unfolded to pixels),
            ``reliability`` ``[B x 1 x H/8 x W/8]`` in [0, 1], ``descriptors`` ``[B x 64 x H/8 x W/8]`` unit norm.
        """
        # The first 1x1 conv on the pixel-unshuffled 8x8 blocks equals an 8x8 stride-8 conv on the image
        # (channel ky * 8 + kx <-> kernel tap (ky, kx)); that form avoids a slow transpose in ONNX Runtime.
        first = self.keypoint_head[0].layer
        y = F.conv2d(x, first[0].weight.reshape(64, 1, 8, 8), stride=8)
        logits = self.keypoint_head[1:](first[2](first[1](y)))
        heatmap = F.pixel_shuffle(softmax_channels(logits)[:, :64], 8)
        return {
            "keypoint_logits": logits,
            "keypoint_heatmap": heatmap,
            "reliability": torch.sigmoid(self.heatmap_head(f8)),
            "descriptors": F.normalize(f8, dim=1),
        }


class NetVLAD(nn.Module):
    """NetVLAD pooling (Arandjelovic et al. 2016): soft-assigned residuals to K learned centroids.

    Initialise with :meth:`init_from_centroids` (k-means of training descriptors) before training.
    """

    def __init__(self, clusters: int, dim: int):
        super().__init__()
        self.assign = nn.Conv2d(dim, clusters, 1)  # soft-assignment logits, 2*alpha*c_k . x - alpha*|c_k|^2
        self.centroids = nn.Parameter(torch.randn(clusters, dim) * 0.1)

    @torch.no_grad()
    def init_from_centroids(self, centroids_KD: torch.Tensor, alpha: float) -> None:
        self.centroids.copy_(centroids_KD)
        self.assign.weight.copy_((2.0 * alpha * centroids_KD)[:, :, None, None])
        self.assign.bias.copy_(-alpha * (centroids_KD ** 2).sum(1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B x D x h x w]`` unit-norm features -> ``[B x K*D]`` VLAD, intra-normalised then L2-normalised."""
        B, D = feats.shape[:2]
        a = softmax_channels(self.assign(feats)).flatten(2)  # B x K x N
        x = feats.flatten(2)  # B x D x N
        vlad = torch.bmm(a, x.transpose(1, 2)) - a.sum(2, keepdim=True) * self.centroids[None]  # B x K x D
        vlad = F.normalize(vlad, dim=2)
        return F.normalize(vlad.reshape(B, -1), dim=1)


class GlobalHead(nn.Module):
    """Retrieval descriptor: residual 1x1 adapter on the local descriptors -> NetVLAD -> learned whitening -> L2.

    The adapter's last layer starts at zero, so before training the head is NetVLAD over XFeat's descriptors
    (VLAD with a k-means vocabulary) followed by PCA-whitening; training then specialises it.
    """

    def __init__(self, clusters: int = 64, dim: int = 64, hidden: int = 128, out_dim: int = 256):
        super().__init__()
        self.adapter = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim, 1))
        nn.init.zeros_(self.adapter[2].weight)
        nn.init.zeros_(self.adapter[2].bias)
        self.vlad = NetVLAD(clusters, dim)
        self.whiten = nn.Linear(clusters * dim, out_dim)  # initialised by PCA-whitening (train.init_global_head)

    def local_features(self, desc: torch.Tensor) -> torch.Tensor:
        """Unit-norm ``[B x D x h x w]`` features that NetVLAD pools (descriptors + adapter residual)."""
        return F.normalize(desc + self.adapter(desc), dim=1)

    def forward(self, desc: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: ``desc`` ``[B x 64 x H/8 x W/8]`` unit-norm descriptors.

        Returns: ``vlad`` ``[B x K*64]`` (before whitening) and ``global_descriptor`` ``[B x out_dim]`` unit norm.
        """
        vlad = self.vlad(self.local_features(desc))
        return {"vlad": vlad, "global_descriptor": F.normalize(self.whiten(vlad), dim=1)}


class _ConvBnReluAffine(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class DepthHead(nn.Module):
    """A light U-Net decoder: 1/32 -> 1/16 -> 1/8 -> 1/4 with skip connections -> depth + confidence at 1/4.

    Depth is predicted as log-depth (metres), clamped to ``[min_depth, max_depth]``; confidence is a
    sigmoid trained to tell where the depth error is small.
    """

    def __init__(self, width: int = 64, min_depth: float = 0.1, max_depth: float = 80.0, init_depth: float = 3.0):
        super().__init__()
        self.min_log, self.max_log = math.log(min_depth), math.log(max_depth)
        self.top = nn.Sequential(_ConvBnReluAffine(64, width), _ConvBnReluAffine(width, width))  # 1/32
        self.up16 = _ConvBnReluAffine(width + 64, width)  # + f16
        self.up8 = _ConvBnReluAffine(width + 64, 32)  # + f8
        # At 1/4 only a 1x1 mix with the f4 skip and a thin 3x3 output conv (a 3x3 conv 72 -> 32 here
        # cost 4 ms of a 50 ms forward pass at 640 x 480).
        self.up4 = _ConvBnReluAffine(32 + 24, 16, kernel=1)  # + f4
        self.out = nn.Conv2d(16, 2, 3, padding=1)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.copy_(torch.tensor([math.log(init_depth), 0.0]))

    @staticmethod
    def _up_cat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.interpolate(x, skip.shape[-2:], mode="bilinear", align_corners=False), skip], dim=1)

    def forward(self, pyr: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Args: the backbone's pyramid (``f4``, ``f8``, ``f16``, ``f32``).

        Returns: ``depth`` ``[B x 1 x H/4 x W/4]`` metres, ``log_depth`` (same shape, for the losses),
        ``depth_confidence`` ``[B x 1 x H/4 x W/4]`` in [0, 1].
        """
        y = self.top(pyr["f32"])
        y = self.up16(self._up_cat(y, pyr["f16"]))
        y = self.up8(self._up_cat(y, pyr["f8"]))
        y = self.up4(self._up_cat(y, pyr["f4"]))
        out = self.out(y)
        log_depth = torch.clamp(out[:, :1], self.min_log, self.max_log)
        return {"log_depth": log_depth, "depth": torch.exp(log_depth), "depth_confidence": torch.sigmoid(out[:, 1:])}
