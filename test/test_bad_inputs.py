"""The bad-input matrix: one table per boundary (map directories, model files, CLI, dataset files, parameters,
ROS messages). Every row is a kind of bad input NOT already covered by another test module (those are counted in
``docs/reliability.md``); each must give the documented error type with a message that names the problem and
says what to do, and the node must keep localizing good frames afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import faiss
import h5py
import numpy as np
import pytest
import yaml

from reloc_ros.core.camera import Camera
from reloc_ros.core.features import ExtractorError
from reloc_ros.core.mapdb import MapDatabase, MapError
from reloc_ros.datasets.base import DatasetError

from map_helpers import random_map

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000


# ==================================================================================================
# map directories: MapDatabase.load -> MapError
# ==================================================================================================
def _manifest(fn):
    def edit(d: Path):
        m = yaml.safe_load((d / "manifest.yaml").read_text())
        fn(m)
        (d / "manifest.yaml").write_text(yaml.safe_dump(m))
    return edit


def _unhash(name):
    return _manifest(lambda m: m["files"].pop(name))


UNVERIFIED = set()  # cases loaded with verify=False: the hash check is skipped to reach the file's reader


def _h5(fn):
    def edit(d: Path):
        with h5py.File(d / "keyframes.h5", "r+") as f:
            fn(f)
    UNVERIFIED.add(edit)
    return edit


def _replace(f, name, data):
    del f[name]
    f[name] = data


def _faiss_dim(d: Path):
    idx = faiss.IndexFlatIP(16)
    idx.add(np.zeros((4, 16), np.float32))
    faiss.write_index(idx, str(d / "global.faiss"))


UNVERIFIED.add(_faiss_dim)


def _write(name, data):
    def edit(d: Path):
        (d / name).write_bytes(data)
    if name != "manifest.yaml":
        UNVERIFIED.add(edit)
    return edit


def _make_dir(name):
    def edit(d: Path):
        (d / name).unlink()
        (d / name).mkdir()
    return edit


MAP_CASES = [
    ("manifest not UTF-8", _write("manifest.yaml", b"\x00\xff: [\n"), "not valid YAML"),
    ("manifest invalid YAML", _write("manifest.yaml", b"format_version: [1\n"), "not valid YAML"),
    ("manifest is a list", _write("manifest.yaml", b"- 1\n- 2\n"), "no format_version"),
    ("manifest empty", _write("manifest.yaml", b""), "no format_version"),
    ("manifest is a directory", _make_dir("manifest.yaml"), "no manifest.yaml"),
    ("format_version a string", _manifest(lambda m: m.update(format_version="1")), "not an integer"),
    ("format_version a bool", _manifest(lambda m: m.update(format_version=True)), "not an integer"),
    ("format_version older", _manifest(lambda m: m.update(format_version=0)), "old map format 0"),
    ("manifest files not a mapping", _manifest(lambda m: m.update(files=["keyframes.h5"])), "'files' is a list"),
    ("manifest extractor not a mapping", _manifest(lambda m: m.update(extractor="sift")), "'extractor' is a str"),
    ("sha256 of wrong type", _manifest(lambda m: m["files"].update({"keyframes.h5": 12345})), "sha256"),
    ("sha256 entry removed", _unhash("global.faiss"), "has no sha256 for global.faiss"),
    ("keyframes.h5 not HDF5", _write("keyframes.h5", b"hello world"), "truncated or corrupt"),
    ("keyframes.h5 empty", _write("keyframes.h5", b""), "truncated or corrupt"),
    ("keyframes.h5 is a directory", _make_dir("keyframes.h5"), "missing keyframes.h5"),
    ("keyframes.h5 lacks a dataset", _h5(lambda f: f.__delitem__("scores")), "'scores' doesn't exist"),
    ("keyframes.h5 offsets inconsistent", _h5(lambda f: f["kp_offsets"].__setitem__(-1, 7)), "kp_offsets disagrees"),
    ("keyframes.h5 cameras wrong shape", _h5(lambda f: _replace(f, "cameras", np.zeros((4, 2)))),
     "truncated or corrupt"),
    ("keyframes.h5 zero-size cameras", _h5(lambda f: f["cameras"].__setitem__(Ellipsis, 0.0)), "camera size"),
    ("keyframes.h5 NaN pose", _h5(lambda f: f["T_map_from_cam"].__setitem__((0, 0, 3), np.nan)), "non-finite"),
    ("keyframes.h5 extractor_state not a group", _h5(lambda f: _replace(f, "extractor_state", 3)),
     "truncated or corrupt"),
    ("global.faiss garbage", _write("global.faiss", b"junk" * 10), "cannot read"),
    ("global.faiss empty", _write("global.faiss", b""), "cannot read"),
    ("global.faiss other dimension", _faiss_dim, "dimension 16"),
]


@pytest.fixture(scope="module")
def good_map(tmp_path_factory):
    return random_map(tmp_path_factory.mktemp("maps") / "good")


@pytest.mark.parametrize("what, edit, needle", MAP_CASES, ids=[c[0] for c in MAP_CASES])
def test_bad_map_directory(good_map, tmp_path, what, edit, needle):
    d = tmp_path / "m"
    shutil.copytree(good_map, d)
    edit(d)
    with pytest.raises(MapError) as e:
        MapDatabase.load(d, verify=edit not in UNVERIFIED)
    msg = str(e.value)
    assert needle in msg and "build" in msg, msg  # says what to do: rebuild the map


def test_map_path_is_a_file(tmp_path):
    (tmp_path / "m").write_text("x")
    with pytest.raises(MapError, match="map directory not found.*reloc map build"):
        MapDatabase.load(tmp_path / "m")


# ==================================================================================================
# model files: LearnedExtractor / extractor_for_map -> ExtractorError / MapError
# ==================================================================================================
onnx = pytest.importorskip("onnx", reason="building ONNX models needs the onnx package")
from onnx import TensorProto, helper  # noqa: E402

from reloc_ros.core.learned import OUTPUT_NAMES, LearnedExtractor, find_default_model  # noqa: E402
from reloc_ros.core.localizer import extractor_for_map  # noqa: E402


def _tiny_onnx(path: Path, outputs=OUTPUT_NAMES, meta: dict | None = None, in_name="image", in_ch=1) -> Path:
    x = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [1, in_ch, "h", "w"])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, in_ch, "h", "w"]) for o in outputs]
    nodes = [helper.make_node("Identity", [in_name], [o]) for o in outputs]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], outs),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


MODEL_CASES = [
    ("empty file", lambda p: (p.write_bytes(b""), p)[1], "cannot load the ONNX model"),
    ("a directory", lambda p: (p.mkdir(), p)[1], "not found"),
    ("outputs missing", lambda p: _tiny_onnx(p, outputs=("keypoint_heatmap",),
                                            meta={"reloc_model": "relocnet", "reloc_model_version": "1"}), "lack"),
    ("three-channel input", lambda p: _tiny_onnx(p, in_ch=3, meta={"reloc_model": "relocnet",
                                                                    "reloc_model_version": "1"}), "[B, 1, H, W]"),
    ("no RelocNet metadata", lambda p: _tiny_onnx(p), "no 'reloc_model: relocnet' metadata"),
    ("newer model version", lambda p: _tiny_onnx(p, meta={"reloc_model": "relocnet", "reloc_model_version": "2"}),
     "model version '2'"),
]


@pytest.mark.parametrize("what, make, needle", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_file(tmp_path, what, make, needle):
    path = make(tmp_path / "model.onnx")
    with pytest.raises(ExtractorError) as e:
        LearnedExtractor(path)
    assert needle in str(e.value), str(e.value)


def test_map_built_with_other_weights_is_refused(tmp_path):
    """A learned map and a model file that differs from the one it was built with (same architecture, other
    bytes): refused with the hash difference named, while the original model is accepted."""
    shipped = find_default_model()
    ident = LearnedExtractor(shipped).identity()
    map_dir = random_map(tmp_path / "learned_map", d_local=64, d_global=256, identity=ident)
    db = MapDatabase.load(map_dir)
    assert extractor_for_map(db).identity() == ident  # the weights it was built with
    model = onnx.load(str(shipped))
    model.metadata_props.add(key="retrained", value="yes")  # still a valid RelocNet, other bytes
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    with pytest.raises(MapError, match=r"another extractor \(model_sha256: map='[0-9a-f]{64}' vs extractor="):
        extractor_for_map(db, model_path=str(other))


# ==================================================================================================
# CLI arguments (the `reloc` command): exit code 2 and one line, no traceback
# ==================================================================================================
from reloc_ros.cli.main import main as reloc_main  # noqa: E402


def _posed_images(root: Path, n: int) -> Path:
    """A posed_images dataset of ``n`` textured 160x120 images."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "cameras").mkdir()
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(str(root / "images" / f"{i:04d}.png"), img)
        (root / "cameras" / f"{i:04d}.txt").write_text(
            f"# K R C wh\n100 0 80\n0 100 60\n0 0 1\n1 0 0\n0 1 0\n0 0 1\n{0.1 * i} 0 0\n160 120\n")
    return root


def _dataset_args(ds: Path, every=2) -> list[str]:
    """`reloc map build` / `reloc eval` arguments for the posed_images dataset ``ds``."""
    return ["--dataset", str(ds), "--format", "posed_images", "--map-every", str(every)]


def _cli_corrupt_map_image(tmp):
    ds = _posed_images(tmp / "ds", 4)
    (ds / "images" / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return ["map", "build", *_dataset_args(ds), "--out", str(tmp / "m")]


def _cli_overwrite_non_map(tmp):
    ds = _posed_images(tmp / "ds", 4)
    (tmp / "precious").mkdir()
    (tmp / "precious" / "notes.txt").write_text("keep me")
    return ["map", "build", *_dataset_args(ds), "--out", str(tmp / "precious"), "--overwrite"]


def _cli_map_info_file(tmp):
    (tmp / "file").write_text("x")
    return ["map", "info", str(tmp / "file")]


def _cli_map_info_not_a_map(tmp):
    (tmp / "dir").mkdir()
    return ["map", "info", str(tmp / "dir")]


def _cli_eval_corrupt_map(tmp):
    ds = _posed_images(tmp / "ds", 4)
    m = random_map(tmp / "map")
    with open(m / "keyframes.h5", "r+b") as fh:
        fh.truncate(100)
    return ["eval", "--map", str(m), *_dataset_args(ds)]


def _cli_map_every_one(tmp):
    ds = _posed_images(tmp / "ds", 4)
    return ["map", "build", *_dataset_args(ds, every=1), "--out", str(tmp / "m")]


def _cli_nan_intrinsics(tmp):
    ds = _posed_images(tmp / "ds", 4)
    (ds / "cameras" / "0000.txt").write_text("100 0 80\n0 nan 60\n0 0 1\n1 0 0\n0 1 0\n0 0 1\n0 0 0\n160 120\n")
    return ["map", "build", *_dataset_args(ds), "--out", str(tmp / "m")]


def _cli_max_side_too_small(tmp):
    ds = _posed_images(tmp / "ds", 4)
    return ["map", "build", *_dataset_args(ds), "--max-side", "8", "--out", str(tmp / "m")]


CLI_CASES = [
    ("map image not decodable", _cli_corrupt_map_image, "cannot decode image"),
    ("--overwrite onto a non-map directory", _cli_overwrite_non_map, "holds files that are not a reloc_ros map"),
    ("map info on a file", _cli_map_info_file, "map directory not found"),
    ("map info on a non-map directory", _cli_map_info_not_a_map, "no manifest.yaml"),
    ("eval with a truncated map", _cli_eval_corrupt_map, "sha256"),
    ("--map-every 1", _cli_map_every_one, "--map-every must be >= 2"),
    ("NaN in camera intrinsics", _cli_nan_intrinsics, "intrinsics"),
    ("--max-side below 32 px", _cli_max_side_too_small, "--max-side must be at least 32"),
]


@pytest.mark.parametrize("what, make, needle", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_arguments(tmp_path, capsys, what, make, needle):
    argv = make(tmp_path)
    code = reloc_main(["-q", *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    if what.startswith("--overwrite"):
        assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_max_side_is_recorded_in_the_map_and_used_for_queries(tmp_path, capsys):
    """`reloc map build --max-side`: the extractor's resolution is part of the map's extractor identity, so the
    queries of `reloc eval` run at the same resolution (a map extractor with another one would be refused)."""
    from reloc_ros.core.localizer import extractor_for_map
    from reloc_ros.core.mapdb import MapDatabase

    ds = _posed_images(tmp_path / "ds", 6)
    assert reloc_main(["-q", "map", "build", *_dataset_args(ds), "--max-side", "96", "--out",
                       str(tmp_path / "m")]) == 0
    db = MapDatabase.load(tmp_path / "m")
    assert db.extractor_identity["max_side"] == 96
    assert extractor_for_map(db).max_side == 96
    assert "--max-side 96" in db.manifest["build"]["command"]


def test_small_images_get_a_keypoint_budget_by_area_and_older_maps_keep_theirs(tmp_path):
    """Below 640x480 input pixels the learned extractor keeps max_keypoints x area / (640 x 480) keypoints (at least
    256); the budget is part of the identity, and a map that records none (built before it) gets an extractor with
    max_keypoints at every size, so it still loads."""
    from reloc_ros.core.features import create_extractor
    from reloc_ros.core.localizer import extractor_for_map
    from reloc_ros.core.mapdb import MapDatabase

    ex = create_extractor("learned")
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640), dtype=np.uint8), (0, 0), 1.0)
    assert len(ex.extract(img)) > 1500  # noise: the full budget of 2000 is nearly used at 640x480
    small = ex.extract(cv2.resize(img, (320, 240), interpolation=cv2.INTER_AREA))
    assert 400 <= len(small) <= 533 == ex.keypoint_budget(320, 256)  # the network input: 240 rounds up to 256
    assert ex.keypoint_budget(96, 64) == 256 and ex.keypoint_budget(1024, 672) == 2000
    ds = _posed_images(tmp_path / "ds", 6)
    assert reloc_main(["-q", "map", "build", *_dataset_args(ds), "--out", str(tmp_path / "m")]) == 0
    db = MapDatabase.load(tmp_path / "m")
    assert db.extractor_identity["keypoint_area_ref"] == 640 * 480
    del db.extractor_identity["keypoint_area_ref"]  # as a map built before the budget records it
    old = extractor_for_map(db)
    assert old.keypoint_area_ref is None and old.keypoint_budget(320, 240) == 2000


# ==================================================================================================
# dataset files
# ==================================================================================================
from reloc_ros.datasets.base import Frame, load_depth, load_image  # noqa: E402


def _frame(tmp: Path, depth_name: str, scale=1.0) -> Frame:
    return Frame("f", tmp / "img.png", Camera(64, 48, 50, 50, 31.5, 23.5), np.eye(4), tmp / depth_name, scale)


def test_nan_and_inf_depth_are_invalid_not_points(tmp_path):
    from reloc_ros.core.points import points_from_depth

    d = np.full((48, 64), 2.0, np.float32)
    d[:10] = np.nan
    d[10:20] = np.inf
    d[20:25] = -np.inf
    d[25:30] = -1.0
    np.save(tmp_path / "d.npy", d)
    frame = _frame(tmp_path, "d.npy")
    depth = load_depth(frame)
    assert np.all(np.isfinite(depth)) and np.all(depth[:30] == 0) and np.all(depth[30:] == 2.0)
    cam = frame.camera
    uv = np.array([[32.0, 5.0], [32.0, 15.0], [32.0, 22.0], [32.0, 27.0], [32.0, 40.0]], np.float32)
    xyz = points_from_depth(uv, uv, cam, depth, np.eye(4))
    assert np.all(np.isnan(xyz[:4])) and np.allclose(xyz[4, 2], 2.0), xyz


@pytest.mark.parametrize("what, make, needle", [
    ("colour depth image", lambda p: cv2.imwrite(str(p / "d.png"), np.zeros((8, 8, 3), np.uint8)), "3 channels"),
    ("undecodable depth image", lambda p: (p / "d.png").write_bytes(b"\x89PNG\r\n junk"), "cannot decode depth"),
    ("missing depth file", lambda p: None, "depth file not found"),
])
def test_bad_depth_files(tmp_path, what, make, needle):
    make(tmp_path)
    with pytest.raises(DatasetError, match=needle):
        load_depth(_frame(tmp_path, "d.png", 0.001))


def test_undecodable_and_missing_images(tmp_path):
    (tmp_path / "x.png").write_bytes(b"GIF89a not really")
    with pytest.raises(DatasetError, match="cannot decode image"):
        load_image(tmp_path / "x.png")
    with pytest.raises(DatasetError, match="image file not found"):
        load_image(tmp_path / "none.png")


# ==================================================================================================
# parameters: validate() (the node's set-parameters callback) and a node started with a bad value
# ==================================================================================================
from reloc_ros.ros.parameters import validate  # noqa: E402

PARAM_CASES = [
    ("ratio", float("nan"), "must be finite"),
    ("prior_sigma_m", float("inf"), "must be finite"),
    ("top_k", "5", "must be a int"),
    ("top_k", True, "must be a int"),
    ("use_prior", 1, "must be a bool"),
    ("map_frame", "/", "must not be empty"),
    ("model_path", "/nonexistent/model.onnx", "does not exist"),
    ("map_path", str(REPO / "config"), "no manifest.yaml"),
    ("odom_jump_max_m", -0.1, "out of range"),
    ("odom_jump_max_deg", 0.0, "out of range"),
    ("odom_accept_after", 0, "out of range"),
    ("tf_timeout", 11.0, "out of range"),
    ("pose_frame", "odom", "must be one of base, camera"),
    ("camera_info_timeout", 0.0, "out of range"),
    ("transform_tolerance", -1.0, "out of range"),
    ("base_from_camera", "0 0 0 0 0 0 nan", "7 numbers"),
]


@pytest.mark.parametrize("name, value, needle", PARAM_CASES, ids=[f"{c[0]}={c[1]!r}" for c in PARAM_CASES])
def test_bad_parameter_values(name, value, needle):
    why = validate(name, value)
    assert why is not None and needle in why and name in why, why


# ==================================================================================================
# ROS messages: a real node in process (real rclpy, real messages), driven by spin_once
# ==================================================================================================
rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
try:
    import tf2_msgs.msg  # noqa: F401
except ImportError:
    pytest.skip("tf2_msgs is not importable: build it with `python tools/build_tf2_msgs.py`", allow_module_level=True)

import test_node_inprocess as tni  # noqa: E402  (plane map, renderer, harness and ROS env of the in-process tests)
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from ros_helpers import ShmJanitor, ros_env  # noqa: E402

from reloc_ros.ros import conversions as conv  # noqa: E402
from reloc_ros.ros.image_conversion import numpy_to_image  # noqa: E402

plane_map = tni.plane_map  # the module-scoped fixture


class Bench:
    """The node (tf_mode map_odom, camera = base) and a helper; frames with increasing stamps."""

    def __init__(self, plane):
        self.plane = plane
        self.h = tni.Harness(dict(map_path=str(plane["map"]), tf_mode="map_odom", pose_frame="base",
                                  base_from_camera="0 0 0 0 0 0 1", tf_timeout=0.05, tf_publish_rate_hz=0.0,
                                  use_prior=False, odom_jump_max_m=0.0, diagnostics_rate_hz=20.0,
                                  publish_markers=False))
        self.h.wait(lambda: self.h.pub_image.get_subscription_count() > 0, "the node to subscribe")
        self.stamp = 1000 * NS
        self.k = 0

    def next_stamp(self):
        self.stamp += NS
        return self.stamp

    def diag_of(self, stamp):
        for s in reversed(self.h.diags):
            d = {kv.key: kv.value for kv in s.values}
            if d.get("last_done_stamp_ns") == str(stamp):
                d["_message"] = s.message
                return d
        return None

    def done(self, stamp, what):
        self.h.wait(lambda: self.diag_of(stamp) is not None, what)
        return self.diag_of(stamp)

    def info(self, w=tni.CAM.width, h=tni.CAM.height, k=None, model="plumb_bob", d=(0.0,) * 5):
        k = tni.CAM.K.reshape(9).tolist() if k is None else list(map(float, k))
        return CameraInfo(width=w, height=h, k=k, distortion_model=model, d=list(map(float, d)))

    def good_image(self):
        self.k += 1
        return tni._render(self.plane["tex"], tni._query(100 + self.k))

    def send_raw(self, image: Image, info: CameraInfo | None, stamp: int):
        hdr = conv.header("camera_optical", stamp)
        if info is not None:
            info.header = hdr
            self.h.pub_info.publish(info)
        image.header = hdr
        self.h.pub_image.publish(image)

    def good_frame(self, what):
        stamp = self.next_stamp()
        self.send_raw(numpy_to_image(self.good_image(), "rgb8"), self.info(), stamp)
        return self.done(stamp, f"a good frame after {what}")


@pytest.fixture(scope="module")
def bench(plane_map):
    janitor = ShmJanitor()
    b = Bench(plane_map)
    yield b
    b.h.close()
    janitor.cleanup()


def _img(b, enc="rgb8", arr=None, **hdr):
    msg = numpy_to_image(b.good_image() if arr is None else arr, enc)
    for k, v in hdr.items():
        setattr(msg, k, v)
    return msg


def _binned(b):
    info = b.info()
    info.binning_x = info.binning_y = 2
    return info


def _roi_outside(b):
    info = b.info()
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 300, 0, 100, 100
    return info


W, H = tni.CAM.width, tni.CAM.height
# (what, image(b), camera_info(b), diagnostics key, needle). "status:X" as key checks the status field instead.
MSG_CASES = [
    ("image wider than its CameraInfo", lambda b: _img(b, arr=np.zeros((H, W + 1, 3), np.uint8)), Bench.info,
     "input_error", f"image is {W + 1}x{H} but its CameraInfo describes {W}x{H}"),
    ("step smaller than a row", lambda b: _img(b, step=W * 3 - 2, data=bytes((W * 3 - 2) * H)), Bench.info,
     "input_error", "is smaller than one row"),
    ("data shorter than step x height", lambda b: _img(b, data=bytes(W * 3 * H - 5)), Bench.info,
     "input_error", "truncated or corrupt message"),
    ("absurd header size", lambda b: Image(height=100_000, width=100_000, encoding="mono8", step=100_000,
                                           data=bytes(16)), Bench.info, "input_error", "exceeds the limit"),
    ("unsupported encoding rgb16", lambda b: Image(height=H, width=W, encoding="rgb16", step=W * 6,
                                                   data=bytes(W * 6 * H)), Bench.info,
     "input_error", "unsupported image encoding 'rgb16'"),
    ("binned CameraInfo, full-size image", lambda b: _img(b), _binned, "input_error",
     f"describes {W // 2}x{H // 2}"),
    ("unsupported distortion model", lambda b: _img(b), lambda b: b.info(model="kannala_brandt"),
     "input_error", "unsupported distortion model 'kannala_brandt'"),
    ("NaN in K", lambda b: _img(b), lambda b: b.info(k=(np.nan, 0, 160, 0, 260, 120, 0, 0, 1)),
     "input_error", "not calibrated"),
    ("negative focal length", lambda b: _img(b), lambda b: b.info(k=(-260, 0, 160, 0, 260, 120, 0, 0, 1)),
     "input_error", "not calibrated"),
    ("ROI outside the image", lambda b: _img(b), _roi_outside, "input_error", "lies outside"),
    ("8 coefficients for plumb_bob", lambda b: _img(b), lambda b: b.info(d=(0.1,) * 8),
     "input_error", "takes 5 coefficients"),
    ("coefficients without a model", lambda b: _img(b), lambda b: b.info(model="", d=(0.1, 0, 0, 0, 0)),
     "input_error", "no distortion model"),
    ("1x1 image", lambda b: _img(b, "mono8", np.zeros((1, 1), np.uint8)),
     lambda b: b.info(w=1, h=1, k=(1, 0, 0, 0, 1, 0, 0, 0, 1)), "reason", "too few keypoints"),
    ("all-NaN/inf 32FC1 image (a depth image)",
     lambda b: _img(b, "32FC1", np.where(np.arange(W * H).reshape(H, W) % 2, np.nan, np.inf).astype(np.float32)),
     Bench.info, "reason", "too few keypoints"),
    ("odd-sized mono8 image", lambda b: _img(b, "mono8", cv2.cvtColor(b.good_image(), cv2.COLOR_RGB2GRAY)[:, :W - 1]),
     lambda b: b.info(w=W - 1), "status", "LOCALIZED"),
]


@pytest.mark.parametrize("what, image, info, key, needle", MSG_CASES, ids=[c[0] for c in MSG_CASES])
def test_bad_ros_messages_reported_and_node_keeps_going(bench, what, image, info, key, needle):
    n_err = int((bench.diag_of(bench.stamp) or {}).get("input_errors", 0))
    stamp = bench.next_stamp()
    bench.send_raw(image(bench), info(bench), stamp)
    d = bench.done(stamp, what)
    assert needle in d[key], (what, d)
    if key == "input_error":
        assert d["status"] == "INPUT_ERROR" and int(d["input_errors"]) == n_err + 1 and needle in d["_message"], d
    d = bench.good_frame(what)
    assert d["status"] == "LOCALIZED", (what, d)


def test_timestamps_stepping_back_are_dropped_and_counted(bench):
    d0 = bench.good_frame("start")
    ooo = int(d0["frames_out_of_order"])
    stamp = bench.stamp - NS // 5  # 0.2 s back: out of order, not a bag loop (time_jump_reset_s 1.0)
    bench.send_raw(numpy_to_image(bench.good_image(), "rgb8"), bench.info(), stamp)
    d = bench.done(stamp, "the out-of-order frame")
    assert int(d["frames_out_of_order"]) == ooo + 1 and d["resets"] == d0["resets"], d
    assert bench.good_frame("an out-of-order frame")["status"] == "LOCALIZED"


def test_an_image_stamped_0_is_an_input_error_not_a_time_jump(bench):
    """A driver that does not stamp its images (header.stamp 0): one input error that says so; not a bag loop that
    resets the tracker (as it was), and the next good frame localizes."""
    d0 = bench.good_frame("start")
    bench.send_raw(numpy_to_image(bench.good_image(), "rgb8"), bench.info(), 0)
    bench.h.wait(lambda: any("header.stamp is 0" in kv.value for s in bench.h.diags for kv in s.values),
                 "the unstamped image reported")
    d = bench.good_frame("an unstamped image")
    assert d["status"] == "LOCALIZED" and d["resets"] == d0["resets"], d


def test_odometry_missing_then_stale_then_invalid(bench):
    """map_odom without odom->base: localized, the pose published, map->odom not (and said why); stale odometry
    (older than the image) likewise; NaN / zero-quaternion transforms on /tf are ignored and counted."""
    h = bench.h
    d = bench.good_frame("start")
    assert d["status"] == "LOCALIZED" and "does not exist" in d["tf_error"] and "odom" in d["tf_error"], d
    stamp = bench.next_stamp()
    for t in (stamp - 3 * NS, stamp - 2 * NS):
        h.pub_tf.publish(TFMessage(transforms=[conv.transform_stamped(np.eye(4), "odom", "base_link", t)]))
    h.wait(lambda: h.node._tf.buffer.can_transform("odom", "base_link", stamp - 2 * NS), "the stale odometry")
    bench.send_raw(numpy_to_image(bench.good_image(), "rgb8"), bench.info(), stamp)
    d = bench.done(stamp, "a frame with stale odometry")
    assert d["status"] == "LOCALIZED" and "stale" in d["tf_error"], d
    assert not [t for t in h.tf if t.child_frame_id == "odom" and conv.stamp_to_ns(t.header.stamp) == stamp]
    bad = [conv.transform_stamped(np.eye(4), "odom", "base_link", stamp) for _ in range(2)]
    bad[0].transform.translation.x = float("nan")
    bad[1].transform.rotation.w = 0.0
    h.pub_tf.publish(TFMessage(transforms=bad))
    h.wait(lambda: h.node._tf.bad_transforms >= 2, "the invalid transforms to be counted")
    d = bench.good_frame("invalid /tf entries")
    assert d["status"] == "LOCALIZED" and d["tf_bad_transforms"] == "2" and "non-finite" in d["tf_last_bad_transform"]


@pytest.mark.parametrize("what, edit, needle", [
    ("zero quaternion", lambda m: setattr(m.pose.pose.orientation, "w", 0.0), "invalid quaternion"),
    ("wrong frame", lambda m: setattr(m.header, "frame_id", "odom"), "not the map frame 'map'"),
    ("NaN position", lambda m: setattr(m.pose.pose.position, "x", float("nan")), "non-finite"),
    ("NaN covariance", lambda m: m.pose.__setattr__("covariance", [float("nan")] * 36), "non-finite"),
])
def test_bad_initialpose_is_ignored_and_reported(bench, what, edit, needle):
    h = bench.h
    n = h.node.stats.initialpose_ignored
    msg = PoseWithCovarianceStamped()
    msg.header.frame_id = "map"
    msg.pose.pose.orientation.w = 1.0
    edit(msg)
    h.wait(lambda: h.pub_initialpose.get_subscription_count() > 0, "the /initialpose subscription")
    h.pub_initialpose.publish(msg)
    h.wait(lambda: any(kv.key == "initialpose_ignored" and kv.value == str(n + 1) for s in h.diags[-5:]
                       for kv in s.values), f"/initialpose ({what}) to be reported")
    d = bench.good_frame(f"/initialpose with {what}")
    assert d["status"] == "LOCALIZED" and d["prior"] == "none" and needle in d["initialpose_error"], d


def test_bad_parameter_refused_by_the_running_node(bench):
    node = bench.h.node
    for name, value, needle in (("ratio", float("nan"), "finite"), ("odom_accept_after", 0, "out of range"),
                                ("model_path", "/nonexistent.onnx", "does not exist")):
        r = node.set_parameters([Parameter(name, value=value)])[0]
        assert not r.successful and needle in r.reason, (name, r.reason)
    assert node.get_parameter("ratio").value == 0.0 and node._localizer.config.ratio == 0.0  # the extractor's own
    assert bench.good_frame("refused parameters")["status"] == "LOCALIZED"


def test_node_started_with_an_out_of_range_parameter_exits_cleanly(tmp_path):
    import subprocess
    import sys

    env = ros_env("test_bad_inputs_startup")
    r = subprocess.run([sys.executable, "-m", "reloc_ros.ros.node", "--ros-args", "-p", "top_k:=0"], env=env,
                       capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    # one line that names the parameter and the range, without rclpy's "for parameter. Reason:" wrapping
    line = [x for x in r.stderr.splitlines() if x.startswith("reloc_node: ")][-1]
    assert line == "reloc_node: invalid parameter: top_k=0 is out of range [1, 200]", line
