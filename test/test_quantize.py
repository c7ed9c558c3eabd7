"""`reloc quantize`: an INT8 copy of the shipped model, calibrated on a scene's images, runs in ONNX Runtime, stays
close to the float model, localizes as well on its own maps, and is refused by maps of the float model."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the learned extractor needs onnxruntime (pip install .[cpu])")
onnx = pytest.importorskip("onnx", reason="quantization needs onnx (pip install .[cpu])")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from reloc_ros.datasets.synthetic import generate
    from reloc_ros.datasets.synthetic.writer import DEFAULT_CAMERA

    root = tmp_path_factory.mktemp("quantize")
    generate("office", root / "office", n_map=24, n_query=6, seed=4, stride=10, camera=DEFAULT_CAMERA,
             workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def int8_model(scene):
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.base import load_image
    from reloc_ros.model.quantize import quantize_model

    map_frames = load_dataset(scene / "office", "7scenes").split()[0]
    q_path = scene / "int8_b" / "relocnet_int8.onnx"
    quantize_model(None, q_path, [load_image(f) for f in map_frames[::3]], max_side=640)
    return q_path


def test_quantize_cli_writes_a_close_int8_copy(scene, capsys):
    from reloc_ros.cli.main import main
    from reloc_ros.core.learned import LearnedExtractor, find_default_model, recorded_sha256, sha256_file

    out = scene / "models" / "relocnet_int8.onnx"
    assert main(["-q", "quantize", "--dataset", str(scene / "office"), "--format", "7scenes", "--images", "8",
                 "--max-side", "640", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sha256"] == sha256_file(out) == recorded_sha256(out)
    assert report["source_sha256"] == sha256_file(find_default_model())
    assert report["calibration_images"] == 8
    assert report["descriptor_cosine"] > 0.98 and report["global_cosine"] > 0.98, report
    assert report["keypoints_within_1px"] > 0.6, report
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["precision"] == "int8" and meta["quantized_from"] == report["source_sha256"]
    kinds = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    ex = LearnedExtractor(model_path=out, max_side=640)
    assert ex.identity()["model_sha256"] == report["sha256"]


def test_int8_maps_localize_like_float_maps_and_models_do_not_mix(scene, int8_model):
    from reloc_ros.pipelines.build_map import build_map
    from reloc_ros.core.geometry import pose_errors
    from reloc_ros.core.learned import LearnedExtractor
    from reloc_ros.core.localizer import Localizer, extractor_for_map
    from reloc_ros.core.mapdb import MapDatabase, MapError
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.base import load_image

    ds = load_dataset(scene / "office", "7scenes")
    map_frames, queries = ds.split()
    q_path = int8_model
    hits = {}
    for name, model in (("float", None), ("int8", q_path)):
        db = build_map(map_frames, LearnedExtractor(model_path=model, max_side=640), "depth", scene / f"map_{name}",
                       overwrite=True, show_progress=False)
        loc = Localizer(db, extractor_for_map(db, **({"model_path": model} if model else {})))
        errs = []
        for f in queries:
            r = loc.localize(load_image(f), f.camera)
            errs.append(pose_errors(r.T_map_from_cam, f.T_world_from_cam) if r.ok else (np.inf, np.inf))
        hits[name] = sum(dt < 0.05 and dr < 5 for dt, dr in errs)
    assert hits["float"] >= len(queries) // 2, hits  # the scene is localizable at all
    assert hits["int8"] >= hits["float"] - 1, hits
    float_map = MapDatabase.load(scene / "map_float")
    with pytest.raises(MapError, match="built with another extractor"):
        Localizer(float_map, LearnedExtractor(model_path=q_path, max_side=640))


def test_quantize_refuses_to_make_the_default_model_ambiguous(scene):
    from reloc_ros.core.features import ExtractorError
    from reloc_ros.core.learned import find_default_model
    from reloc_ros.model.quantize import quantize_model

    beside = find_default_model().parent / "relocnet_int8.onnx"
    with pytest.raises(ExtractorError, match="makes the default model ambiguous"):
        quantize_model(None, beside, [np.zeros((480, 640, 3), np.uint8)])
    assert not beside.exists()


def test_a_map_built_with_an_int8_copy_names_it_when_refusing_another_model(scene, int8_model, capsys):
    from reloc_ros.cli.main import main

    m = scene / "map_cli_int8"
    assert main(["-q", "map", "build", "--dataset", str(scene / "office"), "--format", "7scenes", "--extractor",
                 "learned", "--model", str(int8_model), "--max-side", "640", "--out", str(m)]) == 0
    capsys.readouterr()
    code = main(["-q", "eval", "--map", str(m), "--dataset", str(scene / "office"), "--format", "7scenes"])
    err = capsys.readouterr().err
    assert code == 2 and f"it was built with --model {int8_model}" in err and "model_path" in err, err
    assert main(["-q", "eval", "--map", str(m), "--dataset", str(scene / "office"), "--format", "7scenes",
                 "--model", str(int8_model)]) == 0
    # the map's upkeep takes the same file: look-alike analysis, and an update with an evening visit (--keep-all
    # adds it without the frame check)
    assert main(["-q", "map", "analyse", str(m)]) == 2 and "map analyse" in capsys.readouterr().err
    assert main(["-q", "map", "analyse", str(m), "--model", str(int8_model)]) == 0
    from reloc_ros.datasets.synthetic import generate
    from reloc_ros.datasets.synthetic.writer import DEFAULT_CAMERA
    generate("office", scene / "evening", n_map=6, n_query=1, seed=4, stride=10, camera=DEFAULT_CAMERA, workers=1,
             progress=False, session=1)
    assert main(["-q", "map", "update", str(m), "--dataset", str(scene / "evening"), "--format", "7scenes",
                 "--keep-all", "--model", str(int8_model)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["-q", "map", "build", "--dataset", str(scene / "office"), "--format", "7scenes", "--extractor",
                 "sift", "--model", str(int8_model), "--out", str(scene / "m_sift")])
    assert code == 2 and "--model applies to --extractor learned only" in capsys.readouterr().err
