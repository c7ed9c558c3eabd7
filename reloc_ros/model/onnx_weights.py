"""Rebuild the PyTorch RelocNet from an exported ONNX file (the reference backend and the parity test).

The exporter keeps PyTorch's parameter names for the graph initialisers (``net.<state-dict key>``; constant
folding is left to ONNX Runtime; equal tensors are merged into one initialiser plus ``Identity`` nodes whose
outputs carry the other names), and stores the architecture config as metadata, so the ONNX file alone
defines the network. Loading is strict: every tensor must be there with the right shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from reloc_ros.model.network import RelocNet

__all__ = ["relocnet_from_onnx"]

_PREFIX = "net."


def relocnet_from_onnx(path: str | Path) -> tuple[RelocNet, dict[str, str]]:
    """(network in eval mode, ONNX metadata) of an ONNX file written by :mod:`reloc_ros.model.export`."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf decode errors have several types
        raise ValueError(f"cannot read ONNX file {path}: {e}") from e
    meta = {p.key: p.value for p in model.metadata_props}
    if "conf" not in meta:
        raise ValueError(f"{path} has no 'conf' metadata: not exported by reloc_ros.model.export")
    net = RelocNet(json.loads(meta["conf"]))
    sd = net.state_dict()
    tensors = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:  # merged duplicates: Identity(initialiser) -> name
        if node.op_type == "Identity" and node.input[0] in tensors:
            tensors.setdefault(node.output[0], tensors[node.input[0]])
    loaded = {}
    for name, init in tensors.items():
        if name.startswith(_PREFIX) and name[len(_PREFIX):] in sd:
            loaded[name[len(_PREFIX):]] = torch.from_numpy(numpy_helper.to_array(init).copy())
    for k, v in sd.items():  # BatchNorm counters are not used in eval mode and not exported
        if k.endswith("num_batches_tracked") and k not in loaded:
            loaded[k] = torch.zeros_like(v)
    net.load_state_dict(loaded, strict=True)  # raises on missing tensors or wrong shapes
    return net.eval(), meta
