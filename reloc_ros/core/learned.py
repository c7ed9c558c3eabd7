"""The learned extractor: one forward pass of RelocNet gives keypoints, descriptors, a global descriptor and depth.

Backends:
    ``onnx`` (default): ONNX Runtime on the shipped ``models/*.onnx``; providers ``cpu`` / ``cuda`` / ``tensorrt``.
        This path never imports torch.
    ``torch``: the PyTorch reference network (needs the ``train`` extra), with the weights read from the same
        ONNX file, so both backends run identical weights (the parity test compares them).

Input policy: the image is converted to grey (mean of R, G, B), downscaled so that its longer side is at most
``max_side`` (1024) and both sides are rounded to multiples of 32 (the network's stride); keypoints are mapped back to
the input image's pixel coordinates. Post-processing (5x5 non-maximum suppression on the keypoint heatmap,
score = heatmap x reliability, top-N, sub-pixel refinement, bilinear descriptor sampling at 1/8) is vectorised
numpy/OpenCV.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from reloc_ros.core.features import ExtractorError, FeatureExtractor, Features, sha256_file

__all__ = ["LearnedExtractor", "find_default_model", "verify_model_file", "record_sha256", "recorded_sha256",
           "preprocess", "detect_keypoints", "sample_descriptors", "PROVIDERS", "INPUT_NAME", "OUTPUT_NAMES",
           "QUERY_OUTPUTS", "SUPPORTED_MODEL_VERSIONS"]

INPUT_NAME = "image"
# Must equal reloc_ros.model.network.OUTPUT_NAMES (checked by test_model.py; not imported: no torch here).
OUTPUT_NAMES = ("keypoint_heatmap", "reliability", "descriptors", "global_descriptor", "depth", "depth_confidence")
SUPPORTED_MODEL_VERSIONS = ("1",)
STRIDE = 32  # input sides must be multiples of this
DESC_STRIDE = 8  # descriptors / reliability are at 1/8 resolution

# provider parameter -> ONNX Runtime execution providers (in priority order; CPU is always the last fallback)
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


# ---------------------------------------------------------------------------------------------------------------
# model file
# ---------------------------------------------------------------------------------------------------------------
def model_dirs() -> list[Path]:
    """Where the shipped model may be: the source tree, the install prefix, the ament share directory."""
    dirs = [Path(__file__).resolve().parents[2] / "models", Path(sys.prefix) / "share" / "reloc_ros" / "models"]
    try:  # a ROS 2 install (colcon / apt): share/reloc_ros/models
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("reloc_ros")) / "models")
    except Exception:  # noqa: BLE001 - not a ROS install, or AMENT_PREFIX_PATH unset
        pass
    return dirs


def find_default_model() -> Path:
    """The single shipped ``models/*.onnx`` (first directory of :func:`model_dirs` that has one)."""
    searched = []
    for d in model_dirs():
        searched.append(str(d))
        found = sorted(d.glob("*.onnx")) if d.is_dir() else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ExtractorError(f"several ONNX models in {d}: {[p.name for p in found]}; "
                                 "choose one (reloc commands: --model; reloc_node: model_path)")
    raise ExtractorError(f"no learned model (*.onnx) found in {searched}: give one (reloc commands: --model; "
                         "reloc_node: model_path) or export one with `reloc export --out models/relocnet_v1.onnx`")


CHECKSUMS = "SHA256SUMS"  # beside a model: "<sha256>  <file name>" lines (sha256sum format), written by `reloc export`


def _read_checksums(sums: Path) -> dict[str, str]:
    """File name -> sha256 of a ``SHA256SUMS`` file ({} when there is none)."""
    entries = {}
    for line in (sums.read_text().splitlines() if sums.is_file() else []):
        digest, _, name = line.strip().partition("  ")
        if name:
            entries[name.lstrip("*")] = digest.lower()
    return entries


def recorded_sha256(path: Path) -> str | None:
    """The sha256 that the ``SHA256SUMS`` file beside ``path`` records for it, or None when none is recorded."""
    return _read_checksums(Path(path).parent / CHECKSUMS).get(Path(path).name)


def record_sha256(path: Path, digest: str) -> None:
    """Record ``digest`` for ``path`` in the ``SHA256SUMS`` beside it (other entries kept)."""
    sums = Path(path).parent / CHECKSUMS
    entries = {**_read_checksums(sums), Path(path).name: digest}
    tmp = sums.with_name(sums.name + ".tmp")
    tmp.write_text("".join(sorted(f"{d}  {n}\n" for n, d in entries.items())))
    tmp.replace(sums)


def verify_model_file(path: Path) -> str:
    """sha256 of the model file, checked against ``SHA256SUMS`` beside it when that records the file (the shipped
    model always is): a mismatch means a damaged or replaced file and is refused."""
    digest = sha256_file(path)
    want = recorded_sha256(path)
    if want is not None and want != digest:
        raise ExtractorError(f"model file {path} has sha256 {digest}, but {Path(path).parent / CHECKSUMS} records "
                             f"{want}: the file is damaged or was replaced. Restore it (git checkout / reinstall the "
                             f"package) or, for a model you exported yourself, re-run `reloc export --out {path}`, "
                             f"which updates {CHECKSUMS}")
    return digest


# ---------------------------------------------------------------------------------------------------------------
# pre- and post-processing (numpy / OpenCV, shared by both backends)
# ---------------------------------------------------------------------------------------------------------------
def network_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) of the network input: longer side <= ``max_side`` (no upscaling), sides rounded to multiples of 32."""
    s = min(1.0, max_side / max(width, height))
    w = max(STRIDE, int(round(width * s / STRIDE)) * STRIDE)
    h = max(STRIDE, int(round(height * s / STRIDE)) * STRIDE)
    return w, h


def preprocess(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """``[1 x 1 x h x w] float32`` network input of a uint8 image, and the scales (sx, sy) = (w / W, h / H)."""
    if image.dtype != np.uint8:
        raise ExtractorError(f"the learned extractor needs uint8 images, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (3, 4):
        grey = cv2.transform(image[:, :, :3], np.full((1, 3), 1.0 / 3.0))  # mean(R, G, B), as in training
    elif image.ndim == 3 and image.shape[2] == 1:
        grey = image[:, :, 0]
    elif image.ndim == 2:
        grey = image
    else:
        raise ExtractorError(f"unsupported image shape {image.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")
    H, W = grey.shape
    w, h = network_size(W, H, max_side)
    if (w, h) != (W, H):
        interp = cv2.INTER_AREA if w < W else cv2.INTER_LINEAR
        grey = cv2.resize(grey, (w, h), interpolation=interp)
    x = (grey.astype(np.float32) * np.float32(1.0 / 255.0))[None, None]
    return np.ascontiguousarray(x), w / W, h / H


def _bilinear_grid(xy_N2: np.ndarray, h: int, w: int, stride: int):
    """Corner indices and weights to sample an ``h x w`` map at stride ``stride`` at full-resolution pixels
    (centres aligned: pixel (u, v) -> cell ((u + 0.5) / stride - 0.5, (v + 0.5) / stride - 0.5))."""
    u = np.clip((xy_N2[:, 0] + 0.5) / stride - 0.5, 0, w - 1)
    v = np.clip((xy_N2[:, 1] + 0.5) / stride - 0.5, 0, h - 1)
    u0 = np.minimum(np.floor(u).astype(np.int64), max(w - 2, 0))
    v0 = np.minimum(np.floor(v).astype(np.int64), max(h - 2, 0))
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    du, dv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    return (v0, u0, v0, u1, v1, u0, v1, u1), ((1 - du) * (1 - dv), du * (1 - dv), (1 - du) * dv, du * dv)


def sample_map(map_hw_or_hwc: np.ndarray, xy_N2: np.ndarray, stride: int) -> np.ndarray:
    """Bilinear samples ``[N]`` or ``[N x C]`` of a channels-last map at full-resolution pixel positions."""
    h, w = map_hw_or_hwc.shape[:2]
    (a0, b0, a1, b1, a2, b2, a3, b3), (w0, w1, w2, w3) = _bilinear_grid(xy_N2, h, w, stride)
    m = map_hw_or_hwc
    if m.ndim == 3:
        w0, w1, w2, w3 = (x[:, None] for x in (w0, w1, w2, w3))
    return m[a0, b0] * w0 + m[a1, b1] * w1 + m[a2, b2] * w2 + m[a3, b3] * w3


def sample_descriptors(desc_Chw: np.ndarray, xy_N2: np.ndarray, stride: int = DESC_STRIDE) -> np.ndarray:
    """``[N x C]`` L2-normalised descriptors bilinearly sampled from a ``[C x h x w]`` map."""
    if len(xy_N2) == 0:
        return np.zeros((0, desc_Chw.shape[0]), np.float32)
    d = sample_map(np.ascontiguousarray(desc_Chw.transpose(1, 2, 0)), xy_N2, stride)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return d.astype(np.float32)


def detect_keypoints(heatmap_HW: np.ndarray, reliability_hw: np.ndarray, max_keypoints: int, nms_radius: int,
                     threshold: float, subpixel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``[N x 2]`` (x, y) float32 and scores ``[N]``, strongest first.

    A pixel is a keypoint if it is the maximum of its ``(2r+1)^2`` window and its heatmap value exceeds
    ``threshold``; its score is heatmap x reliability (bilinear at 1/8). ``subpixel``: refine each position
    by a parabola fit through the peak and its neighbours along x and y.
    """
    heat = np.ascontiguousarray(heatmap_HW, np.float32)
    if nms_radius > 0:
        k = 2 * nms_radius + 1
        local_max = cv2.dilate(heat, np.ones((k, k), np.uint8))
        ys, xs = np.nonzero((heat >= local_max) & (heat > threshold))
    else:
        ys, xs = np.nonzero(heat > threshold)
    xy = np.stack([xs, ys], axis=1).astype(np.float32)
    scores = heat[ys, xs] * sample_map(np.ascontiguousarray(reliability_hw, np.float32), xy, DESC_STRIDE)
    if len(scores) > max_keypoints:
        keep = np.argpartition(-scores, max_keypoints - 1)[:max_keypoints]
        xy, scores = xy[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    xy, scores = xy[order], scores[order].astype(np.float32)
    if subpixel and len(xy):
        xy = xy + _subpixel_offsets(heat, xy.astype(np.int64))
    return xy, scores


def _subpixel_offsets(heat_HW: np.ndarray, xy_N2: np.ndarray) -> np.ndarray:
    """``[N x 2]`` offsets in [-0.5, 0.5] of the vertex of a parabola through each peak and its 2 neighbours
    (per axis); 0 at the border or where the heatmap is not concave."""
    H, W = heat_HW.shape
    x, y = xy_N2[:, 0], xy_N2[:, 1]
    out = np.zeros(xy_N2.shape, np.float32)
    for axis, (c, n) in enumerate(((x, W), (y, H))):
        inner = (c > 0) & (c < n - 1)
        lo = np.where(inner, c - 1, c)
        hi = np.where(inner, c + 1, c)
        if axis == 0:
            a, b, m = heat_HW[y, lo], heat_HW[y, hi], heat_HW[y, x]
        else:
            a, b, m = heat_HW[lo, x], heat_HW[hi, x], heat_HW[y, x]
        curv = a + b - 2 * m
        ok = inner & (curv < -1e-12)
        out[:, axis] = np.where(ok, np.clip(0.5 * (a - b) / np.where(ok, curv, -1.0), -0.5, 0.5), 0.0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------------------------
QUERY_OUTPUTS = OUTPUT_NAMES[:4]  # what localizing a query needs: no depth (maps are built with all outputs)


def _pruned_model(path: Path, outputs: tuple[str, ...]) -> bytes:
    """The model reduced to the nodes that ``outputs`` need (ONNX Runtime computes every graph output, requested
    or not: dropping the depth head saves ~4 of 24 ms at 640x480 on 2 cores). Metadata is kept."""
    try:
        import onnx
        from onnx.utils import Extractor
    except ImportError as e:
        raise ExtractorError(f"outputs='query' needs the onnx package to drop the depth head ({e}): "
                             f"pip install onnx, or use outputs='all'") from e
    try:
        model = onnx.load(str(path))
        missing = [o for o in outputs if o not in {x.name for x in model.graph.output}]
        if missing:  # a wrong signature: let the normal load below report it in full
            return path.read_bytes()
        pruned = Extractor(model).extract_model([INPUT_NAME], list(outputs))
    except Exception as e:  # noqa: BLE001 - onnx raises several exception types on corrupt files
        raise ExtractorError(f"cannot load the ONNX model {path} (corrupt or not an ONNX file?): {e}; "
                             f"re-export it with `reloc export` or restore the shipped file") from e
    pruned.metadata_props.extend(model.metadata_props)
    for field in ("ir_version", "producer_name", "producer_version", "model_version"):
        setattr(pruned, field, getattr(model, field))
    del pruned.opset_import[:]
    pruned.opset_import.extend(model.opset_import)
    return pruned.SerializeToString()


def session_options(ort, threads: int, allow_spinning: bool = True):
    """ONNX Runtime session options of the project's CPU sessions (the encoder, the LighterGlue matcher)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # Spinning worker threads answer fastest on an idle CPU but burn a core the geometry (or another process)
    # could use while they wait: turn it off when the encoder shares 2 cores with other work.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    # ... and they stop spinning when a run ends, so the localizer's matching threads get both cores right after
    # the encoder (2-thread matching: 21 -> 12 ms with the encoder unchanged, 2-core VM; spinning on after the
    # run took the cores from the matching threads: 22-24 ms)
    so.add_session_config_entry("session.force_spinning_stop", "1")
    return so


class _OnnxBackend:
    """ONNX Runtime session; checks the model's signature and metadata.

    ``outputs``: the output names to compute; fewer than all runs a pruned graph (see :func:`_pruned_model`).
    """

    def __init__(self, path: Path, provider: str, threads: int, allow_spinning: bool = True,
                 outputs: tuple[str, ...] = OUTPUT_NAMES):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ExtractorError("the learned extractor needs onnxruntime: pip install 'reloc_ros[cpu]' "
                                 "(or [gpu] for CUDA / TensorRT)") from e
        if provider not in PROVIDERS:
            raise ExtractorError(f"unknown provider {provider!r}; choose one of {sorted(PROVIDERS)}")
        wanted = PROVIDERS[provider][0]
        available = ort.get_available_providers()
        if wanted not in available:
            raise ExtractorError(f"provider {provider!r} needs ONNX Runtime's {wanted}, but this onnxruntime offers "
                                 f"{available}: install onnxruntime-gpu (pip install 'reloc_ros[gpu]') with "
                                 f"matching CUDA/TensorRT libraries, or use provider='cpu'")
        so = session_options(ort, threads, allow_spinning)
        self.outputs = tuple(outputs)
        model = str(path) if self.outputs == OUTPUT_NAMES else _pruned_model(path, self.outputs)
        try:
            self.session = ort.InferenceSession(model, so, providers=PROVIDERS[provider])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several exception types
            raise ExtractorError(f"cannot load the ONNX model {path} (corrupt or not an ONNX file?): {e}; "
                                 f"re-export it with `reloc export` or restore the shipped file") from e
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        names = [o.name for o in self.session.get_outputs()]
        _check_signature(path, [(i.name, i.shape) for i in self.session.get_inputs()],
                         names if self.outputs == OUTPUT_NAMES else list(OUTPUT_NAMES), self.metadata)
        if set(names) != set(self.outputs):
            raise ExtractorError(f"{path} is not a RelocNet model this version can run: outputs {names}, expected "
                                 f"{list(self.outputs)}. Use the shipped models/*.onnx or re-export with "
                                 f"`reloc export`")

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(list(self.outputs), {INPUT_NAME: x})))


class _TorchBackend:
    """The PyTorch reference network with the ONNX file's weights (needs torch and onnx: the ``train`` extra)."""

    def __init__(self, path: Path, device: str = "cpu", outputs: tuple[str, ...] = OUTPUT_NAMES):
        self.outputs = tuple(outputs)
        try:
            import torch

            from reloc_ros.model.onnx_weights import relocnet_from_onnx
        except ImportError as e:
            raise ExtractorError(f"backend='torch' needs PyTorch and onnx ({e}): pip install 'reloc_ros[train]', "
                                 f"or use backend='onnx'") from e
        self.torch = torch
        self.device = device
        self.net, self.metadata = relocnet_from_onnx(path)
        self.net = self.net.to(device).eval()

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            out = self.net(self.torch.from_numpy(x).to(self.device))
        return {k: out[k].float().cpu().numpy() for k in self.outputs}


def _check_signature(path: Path, inputs: list, outputs: list[str], meta: dict) -> None:
    problems = []
    if len(inputs) != 1 or inputs[0][0] != INPUT_NAME or len(inputs[0][1]) != 4 or inputs[0][1][1] != 1:
        problems.append(f"inputs {inputs} (expected one input {INPUT_NAME!r} of shape [B, 1, H, W])")
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        problems.append(f"outputs {outputs} lack {missing}")
    if meta.get("reloc_model") != "relocnet":
        problems.append("no 'reloc_model: relocnet' metadata (not exported by reloc_ros.model.export)")
    elif meta.get("reloc_model_version") not in SUPPORTED_MODEL_VERSIONS:
        problems.append(f"model version {meta.get('reloc_model_version')!r}, this code supports "
                        f"{list(SUPPORTED_MODEL_VERSIONS)}")
    if problems:
        raise ExtractorError(f"{path} is not a RelocNet model this version can run: " + "; ".join(problems)
                             + ". Use the shipped models/*.onnx or re-export with `reloc export`")


# ---------------------------------------------------------------------------------------------------------------
# the extractor
# ---------------------------------------------------------------------------------------------------------------
class LearnedExtractor(FeatureExtractor):
    """RelocNet features: XFeat-style keypoints + 64-d descriptors, a 256-d global descriptor, metric depth.

    Args:
        model_path: ONNX file; None: the single shipped ``models/*.onnx`` (source tree, install prefix or
            ament share directory).
        backend: ``onnx`` (ONNX Runtime, default) or ``torch`` (PyTorch reference, needs the ``train`` extra).
        provider: ONNX Runtime device: ``cpu``, ``cuda`` or ``tensorrt`` (an error if this onnxruntime lacks it).
        threads: ONNX Runtime intra-op threads on CPU.
        max_side: longer side of the network input in pixels (images are downscaled, never upscaled).
            1024 by default: on Strecha (1024 x 683) it gave 86-91 % instead of 77-82 % recall at (0.5 m, 5 deg)
            on castle-P30 compared with 640; a 640 x 480 camera is processed at 640 x 480 either way.
        max_keypoints: keep at most this many keypoints (the strongest); 2000 as the SIFT baseline. 4096 (XFeat's
            default) raised castle-P30 recall at (0.5 m, 5 deg) from 86 to 91 % but made matching 3-5x slower.
        nms_radius: non-maximum suppression radius in network-input pixels (2: a 5x5 window).
        detection_threshold: minimum keypoint heatmap value.
        subpixel: refine keypoint positions by a parabola fit on the heatmap (sub-pixel accuracy).
        keypoint_area_ref: network inputs of fewer pixels than this get a keypoint budget that shrinks with their
            area (``max_keypoints`` x area / this, at least 256): a 320x240 image is not covered 4x as densely as a
            640x480 one (1840 instead of ~500 keypoints made matching cost as much as at 640x480 for no recall;
            docs/RESULTS.md "Performance and latency"). None: ``max_keypoints`` at every size (the maps built
            before it record no value and keep that).
        device: torch device for ``backend='torch'``.
        allow_spinning: ONNX Runtime worker threads busy-wait between operators (fastest on an idle CPU; False
            frees the cores for other threads, e.g. geometry running beside the encoder).
        outputs: ``all`` (keypoints, descriptors, global descriptor, depth: what map building needs) or ``query``
            (no depth head: what localizing a query needs; 20 instead of 24 ms at 640x480 on 2 cores; needs the
            ``onnx`` package). Not part of the identity: both give identical keypoints and descriptors.
    """

    name = "learned"
    VERSION = 1
    IDENTITY_PARAMS = ("max_side", "max_keypoints", "nms_radius", "detection_threshold", "subpixel",
                       "keypoint_area_ref")
    MIN_SMALL_IMAGE_KEYPOINTS = 256  # the budget's floor for small inputs (keypoint_area_ref)
    QUERY_PARAMS = {"outputs": "query"}
    # chosen on non-benchmark scenes (two generated tuning corridors + the three validation scenes, 720 queries):
    # ratio 0.8 / 0.85 / 0.9 / 0.95 / 1.0 -> 549 / 594 / 610 / 616 / 618 within (5 cm, 5 deg), wrong poses 31 -> 26;
    # PnP time grows with the matches (2.1 / 2.8 / 3.8 / 5.0 / 6.0 ms), 0.9 takes most of the gain (docs/RESULTS.md)
    MATCH_RATIO = 0.9
    OUTPUT_SETS = {"all": OUTPUT_NAMES, "query": QUERY_OUTPUTS}

    def __init__(self, model_path: str | os.PathLike | None = None, backend: str = "onnx", provider: str = "cpu",
                 threads: int = 2, max_side: int = 1024, max_keypoints: int = 2000, nms_radius: int = 2,
                 detection_threshold: float = 0.05, subpixel: bool = True, device: str = "cpu",
                 allow_spinning: bool = True, outputs: str = "all", keypoint_area_ref: int | None = 640 * 480):
        if outputs not in self.OUTPUT_SETS:
            raise ExtractorError(f"outputs must be one of {sorted(self.OUTPUT_SETS)}, got {outputs!r}")
        path = Path(model_path) if model_path else find_default_model()
        if not path.is_file():
            raise ExtractorError(f"learned model file not found: {path}: give an existing ONNX file (reloc "
                                 "commands: --model; reloc_node: model_path) or restore models/*.onnx")
        if int(max_side) < STRIDE:
            raise ExtractorError(f"max_side must be >= {STRIDE}, got {max_side}")
        self.model_path = path
        self.model_sha256 = verify_model_file(path)
        self.backend_name = backend
        if backend == "onnx":
            self._net = _OnnxBackend(path, provider, threads, allow_spinning, self.OUTPUT_SETS[outputs])
        elif backend == "torch":
            self._net = _TorchBackend(path, device, self.OUTPUT_SETS[outputs])
        else:
            raise ExtractorError(f"unknown backend {backend!r}; choose 'onnx' or 'torch'")
        self.metadata = self._net.metadata
        self.max_side = int(max_side)
        self.max_keypoints = int(max_keypoints)
        self.nms_radius = int(nms_radius)
        self.detection_threshold = float(detection_threshold)
        self.subpixel = bool(subpixel)
        self.keypoint_area_ref = None if keypoint_area_ref is None else int(keypoint_area_ref)
        self.global_dim = int(self.metadata.get("global_dim", 256))
        self.local_dim = int(self.metadata.get("descriptor_dim", 64))

    def identity(self) -> dict:
        return {"name": self.name, "version": self.VERSION, "model_sha256": self.model_sha256,
                "model_version": self.metadata.get("reloc_model_version"), "local_dim": self.local_dim,
                "global_dim": self.global_dim, "max_side": self.max_side, "input_multiple": STRIDE,
                "max_keypoints": self.max_keypoints, "nms_radius": self.nms_radius,
                "detection_threshold": self.detection_threshold, "subpixel": self.subpixel,
                "keypoint_area_ref": self.keypoint_area_ref}

    @classmethod
    def params_from_identity(cls, identity: dict) -> dict:
        params = super().params_from_identity(identity)
        params.setdefault("keypoint_area_ref", None)  # a map from before the budget: max_keypoints at every size
        return params

    def keypoint_budget(self, width: int, height: int) -> int:
        """At most this many keypoints for a network input of ``width`` x ``height`` pixels (keypoint_area_ref)."""
        area = int(width) * int(height)
        if self.keypoint_area_ref is None or area >= self.keypoint_area_ref:
            return self.max_keypoints
        scaled = int(round(self.max_keypoints * area / self.keypoint_area_ref))
        return min(self.max_keypoints, max(self.MIN_SMALL_IMAGE_KEYPOINTS, scaled))

    def forward(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], float, float]:
        """Raw network outputs for one image (batch of 1) and the input scales (sx, sy)."""
        x, sx, sy = preprocess(image, self.max_side)
        return self._net(x), sx, sy

    def network(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a :func:`preprocess`-ed ``[1 x 1 x h x w]`` input (the encoder alone, for timing)."""
        return self._net(x)

    def extract(self, image: np.ndarray) -> Features:
        out, sx, sy = self.forward(image)
        return self.postprocess(out, sx, sy, (image.shape[1], image.shape[0]))

    def postprocess(self, out: dict[str, np.ndarray], sx: float, sy: float, image_size: tuple[int, int]) -> Features:
        """Features from the raw outputs of :meth:`forward` (keypoints in the pixels of the ``(W, H)`` image)."""
        W, H = image_size
        heat = out["keypoint_heatmap"][0, 0]
        kpts, scores = detect_keypoints(heat, out["reliability"][0, 0],
                                        self.keypoint_budget(heat.shape[1], heat.shape[0]), self.nms_radius,
                                        self.detection_threshold, self.subpixel)
        desc = sample_descriptors(out["descriptors"][0], kpts)
        if len(kpts):
            kpts = np.stack([(kpts[:, 0] + 0.5) / sx - 0.5, (kpts[:, 1] + 0.5) / sy - 0.5], axis=1)
        g = out["global_descriptor"][0].astype(np.float32)
        g /= max(float(np.linalg.norm(g)), 1e-12)
        depth = out.get("depth")
        return Features(keypoints=kpts.astype(np.float32), descriptors=desc, scores=scores, global_desc=g,
                        image_size=(W, H),
                        depth=None if depth is None else np.ascontiguousarray(depth[0, 0], np.float32),
                        depth_conf=None if depth is None else np.ascontiguousarray(out["depth_confidence"][0, 0],
                                                                                   np.float32))

    def describe(self) -> str:
        return json.dumps({"model": str(self.model_path), "backend": self.backend_name, **self.identity()})
