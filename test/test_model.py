"""The learned extractor and its network: shapes, input policy, errors, ONNX <-> PyTorch parity.

The ONNX half needs only onnxruntime and the shipped ``models/*.onnx``; the PyTorch half needs the ``train``
extra (torch + onnx) and is skipped with the reason otherwise.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_ros.core.features import ExtractorError

ort = pytest.importorskip("onnxruntime", reason="the learned extractor needs onnxruntime (pip install .[cpu])")

from reloc_ros.core import learned  # noqa: E402
from reloc_ros.core.learned import LearnedExtractor, detect_keypoints, network_size, sample_descriptors  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("onnx") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch reference needs the train extra: "
                                                       "pip install 'reloc_ros[train]' (torch==2.13.0 CPU, onnx)")


def _shipped_model() -> Path:
    try:
        return learned.find_default_model()
    except ExtractorError as e:
        pytest.skip(f"no shipped model: {e}")


@pytest.fixture(scope="module")
def model_path() -> Path:
    return _shipped_model()


@pytest.fixture(scope="module")
def extractor(model_path) -> LearnedExtractor:
    return LearnedExtractor(model_path)


def realish_image(w: int = 640, h: int = 480, seed: int = 0) -> np.ndarray:
    """A textured RGB scene: smooth shading, rectangles, circles, lines and text (corners and blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 60 * np.sin(xx / 57.0 + c) * np.cos(yy / 43.0) for c in range(3)], axis=2)
    img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    for _ in range(40):
        p = rng.integers(0, [w, h])
        col = tuple(int(c) for c in rng.integers(0, 255, 3))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in p + rng.integers(10, 80, 2)), col, -1)
        elif kind == 1:
            cv2.circle(img, tuple(int(v) for v in p), int(rng.integers(5, 40)), col, -1)
        else:
            cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in rng.integers(0, [w, h])), col, 2)
    cv2.putText(img, "reloc_ros 42", (w // 8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, w / 400, (250, 250, 250), 2)
    return img


# ---------------------------------------------------------------------------------------------------------
# the extractor (ONNX Runtime only)
# ---------------------------------------------------------------------------------------------------------
def test_extract_shapes_and_units(extractor):
    img = realish_image()
    f = extractor.extract(img)
    n = len(f)
    assert 200 <= n <= extractor.max_keypoints
    assert f.keypoints.shape == (n, 2) and f.keypoints.dtype == np.float32
    assert f.descriptors.shape == (n, 64) and f.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-4)
    assert f.global_desc.shape == (extractor.global_dim,) and extractor.global_dim <= 256
    assert abs(float(np.linalg.norm(f.global_desc)) - 1.0) < 1e-4
    assert f.scores.shape == (n,) and np.all((f.scores >= 0) & (f.scores <= 1))
    assert np.all(np.diff(f.scores) <= 1e-7), "scores must be sorted, strongest first"
    assert np.all(f.keypoints >= -0.5) and np.all(f.keypoints[:, 0] <= 639.5) and np.all(f.keypoints[:, 1] <= 479.5)
    assert f.image_size == (640, 480)
    assert f.depth.shape == (120, 160) and np.all(np.isfinite(f.depth)) and np.all(f.depth > 0)
    assert f.depth_conf.shape == (120, 160) and np.all((f.depth_conf >= 0) & (f.depth_conf <= 1))


@pytest.mark.parametrize("wh", [(320, 240), (640, 480), (1000, 700), (333, 517)])
def test_dynamic_sizes_and_keypoints_in_input_coordinates(extractor, wh):
    W, H = wh
    img = realish_image(W, H, seed=1)
    f = extractor.extract(img)
    nw, nh = network_size(W, H, extractor.max_side)
    assert nw % 32 == 0 and nh % 32 == 0 and max(nw, nh) <= max(extractor.max_side, 32 * round(max(W, H) / 32))
    assert f.depth.shape == (nh // 4, nw // 4)
    assert f.image_size == (W, H)
    assert len(f) > 20
    assert np.all(f.keypoints[:, 0] >= -0.5) and np.all(f.keypoints[:, 0] <= W - 0.5)
    assert np.all(f.keypoints[:, 1] >= -0.5) and np.all(f.keypoints[:, 1] <= H - 0.5)


def test_keypoints_follow_the_image_content(extractor):
    """A 2x larger copy of an image (downscaled back by the input policy) gives keypoints at 2x positions."""
    small = realish_image(640, 480, seed=2)
    big = cv2.resize(small, (1280, 960), interpolation=cv2.INTER_LINEAR)
    a, b = extractor.extract(small), extractor.extract(big)
    d = np.linalg.norm(a.keypoints[:300, None] * 2 + 0.5 - b.keypoints[None, :, :], axis=2).min(1)
    assert np.median(d) < 3.0  # pixels of the big image


def test_grey_and_rgb_inputs_agree(extractor):
    img = realish_image(320, 256, seed=3)
    grey = np.round(img.astype(np.float32).mean(axis=2)).astype(np.uint8)
    a, b = extractor.extract(img), extractor.extract(grey)
    assert abs(len(a) - len(b)) <= 0.05 * len(a)
    assert float(a.global_desc @ b.global_desc) > 0.99


def test_identity(extractor, model_path):
    ident = extractor.identity()
    assert ident["name"] == "learned" and ident["local_dim"] == 64 and ident["global_dim"] <= 256
    assert len(ident["model_sha256"]) == 64 and ident["max_side"] == 1024 and ident["input_multiple"] == 32
    assert LearnedExtractor.params_from_identity(ident)["max_keypoints"] == extractor.max_keypoints
    assert not extractor.needs_fit


def test_query_outputs_drop_only_the_depth_head(extractor, model_path):
    """outputs='query' (what localization uses) runs a pruned graph: identical local and global features, no depth."""
    q = LearnedExtractor(model_path, outputs="query")
    assert q.identity() == extractor.identity()  # maps built with 'all' accept a 'query' extractor
    img = realish_image(seed=4)
    a, b = extractor.extract(img), q.extract(img)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)
    np.testing.assert_allclose(a.global_desc, b.global_desc, atol=1e-6)
    assert b.depth is None and b.depth_conf is None and a.depth is not None
    with pytest.raises(ExtractorError, match="outputs must be one of"):
        LearnedExtractor(model_path, outputs="depth-only")


def test_query_outputs_without_the_onnx_package_is_a_clear_error(model_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ExtractorError, match="pip install onnx"):
        LearnedExtractor(model_path, outputs="query")
    assert LearnedExtractor(model_path).extract(realish_image(320, 256)).depth is not None  # 'all' needs no onnx


@pytest.mark.parametrize("outputs", ["all", "query"])
def test_corrupt_model_file_in_both_output_modes(tmp_path, model_path, outputs):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(model_path.read_bytes()[: 4096])
    with pytest.raises(ExtractorError, match="corrupt"):
        LearnedExtractor(bad, outputs=outputs)


def test_shipped_model_matches_its_recorded_hashes(model_path):
    """models/SHA256SUMS (checked at every load) and the model card both name the shipped file's sha256."""
    from reloc_ros.core.features import sha256_file
    from reloc_ros.core.learned import recorded_sha256

    digest = sha256_file(model_path)
    assert recorded_sha256(model_path) == digest
    assert f"`{digest}`" in (model_path.parent / "MODEL_CARD.md").read_text()


def test_a_damaged_model_beside_its_checksums_is_refused(tmp_path, model_path):
    from reloc_ros.core.features import sha256_file
    from reloc_ros.core.learned import record_sha256

    good = tmp_path / model_path.name
    good.write_bytes(model_path.read_bytes())
    record_sha256(good, sha256_file(good))
    assert LearnedExtractor(good).model_sha256 == sha256_file(model_path)
    data = bytearray(good.read_bytes())
    data[-100] ^= 0x01  # one flipped bit in the weights: still a loadable ONNX file, but not the recorded one
    good.write_bytes(bytes(data))
    with pytest.raises(ExtractorError, match="damaged or was replaced"):
        LearnedExtractor(good)


def test_missing_model_file(tmp_path):
    with pytest.raises(ExtractorError, match="not found"):
        LearnedExtractor(tmp_path / "nope.onnx")


def test_corrupt_model_file(tmp_path, model_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(model_path.read_bytes()[: 4096])
    with pytest.raises(ExtractorError, match="corrupt"):
        LearnedExtractor(bad)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ExtractorError, match="cannot load"):
        LearnedExtractor(garbage)


def test_wrong_signature(tmp_path):
    onnx = pytest.importorskip("onnx", reason="building a foreign ONNX model needs the onnx package")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "foreign", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ExtractorError, match="not a RelocNet model"):
        LearnedExtractor(path)
    with pytest.raises(ExtractorError, match="not a RelocNet model"):
        LearnedExtractor(path, outputs="query")


def test_unavailable_provider_is_a_clear_error(model_path):
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    with pytest.raises(ExtractorError, match="onnxruntime-gpu"):
        LearnedExtractor(model_path, provider="tensorrt")
    with pytest.raises(ExtractorError, match="unknown provider"):
        LearnedExtractor(model_path, provider="tpu")


def test_unknown_backend(model_path):
    with pytest.raises(ExtractorError, match="unknown backend"):
        LearnedExtractor(model_path, backend="tf")


# ---------------------------------------------------------------------------------------------------------
# post-processing
# ---------------------------------------------------------------------------------------------------------
def test_nms_and_topk():
    heat = np.zeros((64, 96), np.float32)
    peaks = [(10, 20, 0.9), (11, 21, 0.5), (40, 70, 0.7), (50, 5, 0.3), (30, 30, 0.04)]
    for y, x, v in peaks:
        heat[y, x] = v
    rel = np.ones((8, 12), np.float32)
    kp, sc = detect_keypoints(heat, rel, max_keypoints=3, nms_radius=2, threshold=0.05)
    assert kp.tolist() == [[20, 10], [70, 40], [5, 50]]  # (11, 21) suppressed, 0.04 below threshold
    np.testing.assert_allclose(sc, [0.9, 0.7, 0.3], atol=1e-6)


def test_subpixel_refinement_finds_the_vertex():
    yy, xx = np.mgrid[0:32, 0:40].astype(np.float32)
    heat = np.exp(-((xx - 17.3) ** 2 + (yy - 9.8) ** 2) / 4.0).astype(np.float32)  # peak at (17.3, 9.8)
    kp, _ = detect_keypoints(heat, np.ones((4, 5), np.float32), 10, 2, 0.05, subpixel=True)
    assert len(kp) == 1 and np.abs(kp[0] - [17.3, 9.8]).max() < 0.1
    kp0, _ = detect_keypoints(heat, np.ones((4, 5), np.float32), 10, 2, 0.05, subpixel=False)
    assert kp0[0].tolist() == [17.0, 10.0]


def test_descriptor_sampling_is_bilinear():
    h, w = 6, 8
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    desc = np.stack([xx + 1.0, 2 * yy + 1.0])  # linear in the cell coordinates
    xy = np.array([[12.0, 9.0], [35.5, 20.25]], np.float32)  # full-resolution pixels, stride 8
    d = sample_descriptors(desc, xy)
    u, v = (xy[:, 0] + 0.5) / 8 - 0.5, (xy[:, 1] + 0.5) / 8 - 0.5
    expected = np.stack([u + 1, 2 * v + 1], 1)
    np.testing.assert_allclose(d, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# PyTorch reference: parity with ONNX Runtime
# ---------------------------------------------------------------------------------------------------------
@needs_torch
def test_output_names_agree():
    from reloc_ros.model import network

    assert tuple(network.OUTPUT_NAMES) == learned.OUTPUT_NAMES
    assert network.INPUT_NAME == learned.INPUT_NAME


@needs_torch
@pytest.mark.parametrize("kind", ["random", "realish"])
def test_onnx_torch_parity(model_path, extractor, kind):
    ref = LearnedExtractor(model_path, backend="torch")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) if kind == "random" else realish_image(640, 480, 4)
    a, _, _ = extractor.forward(img)
    b, _, _ = ref.forward(img)
    tol = {"keypoint_heatmap": 1e-4, "reliability": 1e-4, "descriptors": 1e-4, "global_descriptor": 1e-4,
           "depth": 1e-3, "depth_confidence": 1e-4}
    for k, t in tol.items():
        assert a[k].shape == b[k].shape, k
        scale = 1.0 if k != "depth" else float(np.abs(b[k]).max())
        assert float(np.abs(a[k] - b[k]).max()) <= t * max(scale, 1.0), k
    fa, fb = extractor.extract(img), ref.extract(img)
    ka, kb = (np.round(f.keypoints * 20).astype(np.int64) for f in (fa, fb))  # 0.05 px grid
    same = len(np.intersect1d(ka[:, 0] * 100000 + ka[:, 1], kb[:, 0] * 100000 + kb[:, 1]))
    assert same >= 0.98 * len(fa)
    assert float(fa.global_desc @ fb.global_desc) > 0.9999


@needs_torch
def test_losses_basic():
    import torch

    from reloc_ros.model.data import splat_sparse_depth
    from reloc_ros.model.losses import depth_loss, triplet_loss

    gt = torch.rand(2, 1, 8, 10) * 3 + 0.5
    gt[0, 0, :2] = 0  # unknown pixels are ignored
    loss, stats = depth_loss(torch.log(gt.clamp_min(1e-3)), torch.full_like(gt, 0.999), gt)
    assert stats["si"] < 1e-6 and stats["l1_log"] < 1e-6
    loss2, _ = depth_loss(torch.log(gt.clamp_min(1e-3)) + 0.5, torch.full_like(gt, 0.5), gt)
    assert float(loss2) > float(loss)
    sparse = splat_sparse_depth(np.array([[3.0, 5.0], [100.0, 1.0]]), np.array([2.0, 1.0]), (40, 32), 4)
    assert sparse.shape == (8, 10) and sparse[1, 0] == 2.0 and (sparse > 0).sum() == 1

    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0.9, 0.1]]), dim=1)
    pos = torch.tensor([1, 0, 3, 2])
    neg = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    loss, stats = triplet_loss(d, pos, neg, margin=0.1)
    assert float(loss) == 0.0 and stats["pos_sim"] > 0.9
    loss, _ = triplet_loss(d, torch.tensor([2, 3, 0, 1]), neg.logical_not() & ~torch.eye(4, dtype=torch.bool))
    assert float(loss) > 0.5


@needs_torch
def test_network_forward_shapes_and_config_errors():
    import torch

    from reloc_ros.model.network import RelocNet

    net = RelocNet({"global": {"dim": 128}}).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 96, 128))
    assert out["keypoint_heatmap"].shape == (1, 1, 96, 128) and out["descriptors"].shape == (1, 64, 12, 16)
    assert out["global_descriptor"].shape == (1, 128) and out["depth"].shape == (1, 1, 24, 32)
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.rand(1, 1, 100, 128))
    with pytest.raises(ValueError, match="unknown model config key"):
        RelocNet({"globl": {}})


@needs_torch
def test_resumed_optimizer_takes_the_configs_learning_rates():
    """A continuation resumes the optimizer's moments but uses its own config's learning rates: with lr_global 0
    a step changes the depth head and leaves the global head exactly as it was."""
    import torch

    from reloc_ros.model.network import RelocNet
    from reloc_ros.model.train import default_config, make_optimizer

    torch.manual_seed(0)
    net = RelocNet({"global": {"dim": 64}})
    tc = copy.deepcopy(default_config["train"])
    first = make_optimizer(net, tc, frozen=True)
    x = torch.rand(2, 1, 64, 64)

    def step(opt):
        out = net(x)
        (out["global_descriptor"].sum() + out["depth"].mean()).backward()
        opt.step()
        opt.zero_grad()

    step(first)
    cont = make_optimizer(net, {**tc, "lr_global": 0.0}, frozen=True, state=first.state_dict())
    assert [g["base_lr"] for g in cont.param_groups] == [0.0, tc["lr_depth"]]
    g0 = [p.detach().clone() for p in net.global_head.parameters()]
    d0 = [p.detach().clone() for p in net.depth_head.parameters()]
    for g in cont.param_groups:
        g["lr"] = g["base_lr"]
    step(cont)
    assert all(torch.equal(a, p) for a, p in zip(g0, net.global_head.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(d0, net.depth_head.parameters()))


def test_mined_negatives_are_the_most_similar_wrong_frames():
    from reloc_ros.model.train_global import mine_negatives

    rng = np.random.default_rng(0)
    G = [rng.normal(size=(6, 8)), rng.normal(size=(4, 8))]
    G = [g / np.linalg.norm(g, axis=1, keepdims=True) for g in G]
    ov0 = np.eye(6)
    ov0[0, 1] = ov0[1, 0] = 0.5  # frames 0 and 1 see the same place: never each other's negative
    same, other, start = mine_negatives(G, [ov0, np.eye(4)], n=3, max_overlap=0.02)
    S = G[0] @ G[0].T
    expect = [k for k in np.argsort(-S[0]) if k not in (0, 1)][:3]
    assert list(same[0][0]) == expect
    assert 1 not in same[0][0] and 0 not in same[0][1]
    So = G[0] @ np.concatenate(G).T
    assert list(other[0][0]) == list(6 + np.argsort(-So[0, 6:])[:3])  # only the other scene's frames
    assert list(start) == [0, 6, 10]
    tiny, _, _ = mine_negatives([G[0][:2]], [np.full((2, 2), 0.5)], n=3, max_overlap=0.02)
    assert (tiny[0] == -1).all()  # no valid negative in a scene that overlaps everywhere


@needs_torch
def test_global_stage_trains_only_the_global_head_and_resumes(tmp_path):
    """``stage: global_hard_negatives``: from a checkpoint, a few steps on two tiny rendered scenes change the
    global head, leave every other weight bit-identical, write final.pt, and a longer run resumes from last.pt."""
    import json

    import torch
    import yaml

    from reloc_ros.model.network import RelocNet
    from reloc_ros.model.train import main
    from reloc_ros.model.weights import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "init.pt", RelocNet({"global": {"dim": 32}}), None, 0)
    cfg = {"stage": "global_hard_negatives", "init_checkpoint": str(tmp_path / "init.pt"),
           "out_dir": str(tmp_path / "out"), "threads": 1, "device": "cpu",
           "data": {"root": str(tmp_path / "synth"), "train_scenes": 2, "val_scenes": 1, "n_map": 6, "n_query": 2,
                    "stride": 3, "size_hw": [96, 128]},
           "train": {"steps": 3, "anchors": 2, "refresh": 2, "log_every": 1, "checkpoint_every": 3}}
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    final = main(path)
    net, ckpt = load_checkpoint(final)
    init, _ = load_checkpoint(tmp_path / "init.pt")
    ref = init.state_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref[k]) != k.startswith("global_head."), k  # the head changed, nothing else
    assert ckpt["step"] == 3
    cfg["train"]["steps"] = 4
    path.write_text(yaml.safe_dump(cfg))
    main(path)
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" and r["step"] == 3 for r in log)
    assert log[-1]["event"] == "done" and log[-1]["step"] == 4
    with pytest.raises(ValueError, match="unknown config key"):
        path.write_text(yaml.safe_dump({**cfg, "train": {**cfg["train"], "stepz": 1}}))
        main(path)
