"""Export a trained RelocNet to ONNX (dynamic batch, height and width) and check it against PyTorch.

Usage (to become ``reloc export``)::

    python -m reloc_ros.model.export --checkpoint models/checkpoints/relocnet/final.pt --out models/relocnet_v1.onnx

Graph: input ``image`` ``[B x 1 x H x W]`` float32 grey in [0, 1] (H, W multiples of 32); outputs
:data:`reloc_ros.model.network.OUTPUT_NAMES`. Non-maximum suppression, top-N selection and descriptor
sampling stay outside the graph (vectorised numpy in :mod:`reloc_ros.core.learned`): measured cheaper than
the in-graph variant and keeps the output independent of N.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from reloc_ros.model.network import INPUT_NAME, MODEL_VERSION, OUTPUT_NAMES, ExportWrapper, RelocNet
from reloc_ros.core.features import sha256_file
from reloc_ros.core.learned import record_sha256
from reloc_ros.model.weights import XFEAT_SHA256, load_checkpoint

__all__ = ["main", "export_onnx", "finish_onnx", "check_parity", "model_metadata", "sha256_file", "DEFAULT_CHECKPOINT", "OPSET"]

DEFAULT_CHECKPOINT = Path("models/checkpoints/relocnet_global/final.pt")  # the last stage of the shipped run
OPSET = 17


def model_metadata(net: RelocNet, extra: dict | None = None) -> dict[str, str]:
    """Key/value metadata stored in the ONNX file (read back by the extractor to check the signature)."""
    meta = {
        "reloc_model": "relocnet",
        "reloc_model_version": str(MODEL_VERSION),
        "input_stride": str(net.stride),
        "input_normalisation": "grey = mean(R, G, B) / 255, float32 in [0, 1]",
        "descriptor_dim": "64",
        "descriptor_stride": "8",
        "global_dim": str(net.conf["global"]["dim"]),
        "depth_stride": "4",
        "outputs": ",".join(OUTPUT_NAMES),
        "conf": json.dumps(net.conf, sort_keys=True),
        "init_weights": f"XFeat (Apache-2.0) xfeat.pt sha256 {XFEAT_SHA256}",
    }
    for k, v in (extra or {}).items():
        meta[str(k)] = str(v)
    return meta


def export_onnx(net: RelocNet, out: Path, metadata: dict[str, str] | None = None, size_hw=(480, 640)) -> Path:
    """Write ``net`` as ONNX to ``out`` (atomically) and return the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    net = net.eval()
    dummy = torch.rand(1, 1, *size_hw)
    dyn = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    dyn.update({name: {0: "batch"} if name == "global_descriptor" else {0: "batch", 2: f"{name}_h", 3: f"{name}_w"}
                for name in OUTPUT_NAMES})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(net), (dummy,), str(tmp), input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dyn, opset_version=OPSET,
                          do_constant_folding=False, dynamo=False)
    return finish_onnx(tmp, out, metadata if metadata is not None else model_metadata(net), "reloc_ros.model.export")


def finish_onnx(tmp: Path, out: Path, metadata: dict[str, str], producer: str) -> Path:
    """Add ``metadata`` to the exported graph at ``tmp``, check it, and move it to ``out`` (atomically)."""
    import onnx

    model = onnx.load(str(tmp))
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = producer
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out


def check_parity(net: RelocNet, onnx_path: Path, sizes=((256, 320), (480, 640)), seed: int = 0) -> dict[str, float]:
    """Largest absolute difference per output between PyTorch and ONNX Runtime on random images."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst = {k: 0.0 for k in OUTPUT_NAMES}
    for h, w in sizes:
        x = torch.rand(1, 1, h, w, generator=g)
        with torch.no_grad():
            ref = ExportWrapper(net.eval())(x)
        got = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        for k, a, b in zip(OUTPUT_NAMES, ref, got):
            worst[k] = max(worst[k], float(np.abs(a.numpy() - b).max()))
    return worst


def main(out: Path, checkpoint: Path = DEFAULT_CHECKPOINT) -> Path:
    """Export ``checkpoint`` to ``out``, check parity, print the sha256. Returns ``out``."""
    net, ckpt = load_checkpoint(Path(checkpoint))
    extra = {"train_step": ckpt.get("step", 0)}
    extra.update({f"train_{k}": v for k, v in (ckpt.get("extra") or {}).items() if isinstance(v, (str, int, float))})
    out = export_onnx(net, Path(out), model_metadata(net, extra))
    diffs = check_parity(net, out)
    digest = sha256_file(out)
    record_sha256(out, digest)  # LearnedExtractor refuses the file if it no longer matches this record
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), sha256 {digest} (recorded in {out.parent / 'SHA256SUMS'})")
    print("max |torch - onnxruntime| per output: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return out


def _cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="trained checkpoint (.pt)")
    args = ap.parse_args(argv)
    main(args.out, args.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
