"""An INT8 copy of a RelocNet ONNX file for CPUs: ONNX Runtime static quantization calibrated on your own images.

    reloc quantize --dataset D --format F --out maps/relocnet_v1_int8.onnx [--model IN] [--images 32]

Weights int8 per output channel, activations uint8 (QDQ format), ranges from MinMax calibration on evenly spaced
images of the dataset (use the map's own images: the ranges then fit the place the robot works in). The encoder is
1.3-1.5x faster on an x86 CPU with AVX-512 VNNI (docs/RESULTS.md "INT8 option"); keypoints and descriptors change
a little, so a map must be built with the same file (its sha256 is in the map, as for any model). Needs only
onnxruntime and onnx (the ``cpu`` extra), no torch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from reloc_ros.core.features import ExtractorError
from reloc_ros.core.learned import (INPUT_NAME, LearnedExtractor, model_dirs, find_default_model, preprocess,
                                    record_sha256, sha256_file)

__all__ = ["quantize_model"]

KEEP_FLOAT_PREFIXES = ("/net/global_head/",)


def quantize_model(src: Path | None, out: Path, images: list[np.ndarray], max_side: int = 1024,
                   source: str = "") -> dict:
    """Write an INT8 copy of ``src`` (default: the shipped model) to ``out``, calibrated on ``images`` (RGB).

    Returns:
        A report: sha256 of both files, the copy's size, and its fidelity on (up to 8 of) the calibration images
        (median cosine of dense and of global descriptors to the float model's, share of the float model's
        keypoints that the copy finds within 1 px).

    Raises:
        ExtractorError: no images, or the onnx / onnxruntime quantization tools are missing.
    """
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise ExtractorError(f"reloc quantize needs onnx and onnxruntime ({e}): pip install .[cpu]") from e
    if not images:
        raise ExtractorError("no calibration images: pass a dataset with images (e.g. the map's)")
    src = Path(src) if src else find_default_model()
    out = Path(out)
    if out.parent.resolve() in {d.resolve() for d in model_dirs()} and any(
            p.name != out.name for p in out.parent.glob("*.onnx")):
        raise ExtractorError(f"{out.parent} holds the shipped model: a second ONNX file there makes the default model "
                             f"ambiguous; write the INT8 copy elsewhere (e.g. beside your maps: --out maps/"
                             f"{out.name})")
    ref = LearnedExtractor(model_path=src, max_side=max_side)
    inputs = [preprocess(im, max_side)[0] for im in images]

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(inputs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reloc_quantize_") as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        # graph optimisation + shape inference first: without it few operators are quantized (1.03x instead of
        # 1.3-1.5x); symbolic shape inference is skipped (it fails on this graph and needs sympy)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer warns about every tensor it leaves alone
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            # the global head stays float: NetVLAD's soft assignment and the whitening amplify int8 rounding (global
            # descriptor cosine to the float model 0.83 when quantized), and it costs little at 1/8 resolution
            keep_float = [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith(KEEP_FLOAT_PREFIXES)]
            quantize_static(str(pre), str(q), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
        finally:
            root.setLevel(level)
        model = onnx.load(str(q))
        meta = {p.key: p.value for p in model.metadata_props}
        meta.update(precision="int8", quantized_from=ref.model_sha256,
                    calibration=json.dumps({"images": len(images), "max_side": max_side, "source": source}))
        del model.metadata_props[:]
        for k, v in meta.items():
            e = model.metadata_props.add()
            e.key, e.value = k, str(v)
        tmp_out = out.with_name(out.name + ".tmp")
        onnx.save(model, str(tmp_out))
        tmp_out.replace(out)
    digest = sha256_file(out)
    record_sha256(out, digest)
    report = {"out": str(out), "sha256": digest, "mb": round(out.stat().st_size / 1e6, 2),
              "source": str(src), "source_sha256": ref.model_sha256, "calibration_images": len(images)}
    report.update(_fidelity(ref, LearnedExtractor(model_path=out, max_side=max_side), inputs[:8]))
    return report


def _fidelity(ref: LearnedExtractor, q: LearnedExtractor, inputs: list[np.ndarray]) -> dict:
    """How close the INT8 copy's outputs are to the float model's on some network inputs."""
    dense, glob, kept = [], [], []
    for x in inputs:
        a, b = ref.network(x), q.network(x)
        dense.append(float(np.median(np.sum(a["descriptors"] * b["descriptors"], axis=1))))
        glob.append(float(np.sum(a["global_descriptor"] * b["global_descriptor"])))
        h, w = x.shape[2:]
        fa = ref.postprocess(a, 1.0, 1.0, (w, h))
        fb = q.postprocess(b, 1.0, 1.0, (w, h))
        if len(fa) and len(fb):
            ka, kb = fa.keypoints.astype(np.float32), fb.keypoints.astype(np.float32)
            d2 = (ka ** 2).sum(1)[:, None] + (kb ** 2).sum(1)[None, :] - 2 * ka @ kb.T
            kept.append(float(np.mean(d2.min(axis=1) <= 1.0)))
    return {"descriptor_cosine": round(float(np.median(dense)), 4), "global_cosine": round(float(np.median(glob)), 4),
            "keypoints_within_1px": round(float(np.median(kept)), 4) if kept else None}
