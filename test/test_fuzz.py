"""Fuzzing with hypothesis: image message conversion, CameraInfo handling and map loading.

Property: any input either converts / loads, or raises the documented error type (ImageConversionError,
CameraInfoError, MapError); nothing else escapes, and no example takes longer than the deadline (no hang).
Runs are deterministic (``derandomize``) so the suite cannot flake; ``RELOC_FUZZ_SCALE=N`` multiplies the number
of examples for a longer, randomised run (the run lengths are recorded in docs/reliability.md).
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis (the [test] extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("rclpy", reason="message types need rclpy")
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from reloc_ros.core.camera import Camera  # noqa: E402
from reloc_ros.core.mapdb import MapDatabase, MapError  # noqa: E402
from reloc_ros.ros.camera_info import CameraInfoError, camera_from_info, camera_info_key, \
    check_image_size  # noqa: E402
from reloc_ros.ros.image_conversion import SUPPORTED_ENCODINGS, ImageConversionError, \
    image_msg_to_localizer_input  # noqa: E402

from map_helpers import random_map  # noqa: E402

SCALE = max(1, int(os.environ.get("RELOC_FUZZ_SCALE", "1")))
EXAMPLES = {"image": 400 * SCALE, "camera_info": 400 * SCALE, "map": 120 * SCALE}


def _settings(n: int, deadline_ms: int = 2000):
    return settings(max_examples=n, deadline=timedelta(milliseconds=deadline_ms), derandomize=SCALE == 1,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                          HealthCheck.function_scoped_fixture])


# ==================================================================================================
# sensor_msgs/Image -> localizer input
# ==================================================================================================
ENCODINGS = list(SUPPORTED_ENCODINGS) + ["yuv422", "bayer_rggb8", "rgb16", "16UC3", "jpeg", ""]


@st.composite
def image_msgs(draw):
    enc = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=8)))
    h = draw(st.one_of(st.integers(0, 24), st.sampled_from([1, 100_000, 2**31 - 1])))
    w = draw(st.one_of(st.integers(0, 24), st.sampled_from([1, 100_000, 2**31 - 1])))
    dtype, ch = SUPPORTED_ENCODINGS.get(enc, (np.dtype(np.uint8), 3))
    row = w * ch * dtype.itemsize
    pad = draw(st.integers(0, 8))
    consistent = draw(st.booleans()) and h * (row + pad) <= 24 * 24 * 16  # (also bounds what the test allocates)
    if consistent:  # a valid header with arbitrary pixels (NaN / inf floats included)
        step = row + pad
        # pixels from a drawn seed (hypothesis then tracks one integer, not thousands of bytes) or a fill
        fill = draw(st.sampled_from(["random", "random", "nan", "inf", "zero", "ff"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        pattern = {"nan": np.float32(np.nan).tobytes(), "inf": np.float32(np.inf).tobytes(), "zero": b"\0",
                   "ff": b"\xff"}.get(fill, b"")
        data = rng.bytes(step * h) if fill == "random" else (pattern * (step * h))[: step * h]
    else:
        step = draw(st.one_of(st.integers(0, 200), st.just(row), st.integers(0, 2**32 - 1)))
        data = draw(st.binary(max_size=2048))
    return Image(height=h, width=w, encoding=enc, is_bigendian=draw(st.integers(0, 1)), step=step, data=data)


@_settings(EXAMPLES["image"])
@given(msg=image_msgs())
def test_fuzz_image_conversion(msg):
    try:
        out = image_msg_to_localizer_input(msg)
    except ImageConversionError as e:
        assert str(e)
        return
    assert out.dtype == np.uint8 and out.shape[:2] == (msg.height, msg.width)
    assert out.ndim == 2 or (out.ndim == 3 and out.shape[2] == 3)


# ==================================================================================================
# sensor_msgs/CameraInfo -> Camera
# ==================================================================================================
finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def camera_infos(draw):
    w = draw(st.one_of(st.integers(0, 4000), st.sampled_from([0, 1, 2**32 - 1])))
    h = draw(st.one_of(st.integers(0, 4000), st.sampled_from([0, 1, 2**32 - 1])))
    if draw(st.booleans()):  # plausible K with perturbations
        f = draw(st.floats(-10, 5000))
        k = [f, draw(st.sampled_from([0.0, 0.0, 1.0])), w / 2, 0.0, draw(st.one_of(st.just(f), finite_or_not)), h / 2,
             0.0, 0.0, 1.0]
    else:
        k = draw(st.lists(finite_or_not, min_size=9, max_size=9))
    model = draw(st.one_of(st.sampled_from(["", "none", "plumb_bob", "rational_polynomial", "equidistant",
                                            "fisheye", "kannala_brandt"]), st.text(max_size=12)))
    d = draw(st.lists(st.one_of(st.floats(-1, 1), finite_or_not), max_size=14))
    info = CameraInfo(width=w, height=h, k=k, distortion_model=model, d=d)
    info.binning_x, info.binning_y = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    roi = info.roi
    roi.x_offset, roi.y_offset = draw(st.integers(0, 5000)), draw(st.integers(0, 5000))
    roi.width, roi.height = draw(st.integers(0, 5000)), draw(st.integers(0, 5000))
    return info


@_settings(EXAMPLES["camera_info"])
@given(info=camera_infos())
def test_fuzz_camera_info(info):
    hash(camera_info_key(info))  # the node caches conversions by this key
    try:
        cam = camera_from_info(info)
    except CameraInfoError as e:
        assert str(e)
        return
    assert isinstance(cam, Camera) and cam.width > 0 and cam.height > 0 and cam.fx > 0 and cam.fy > 0
    assert np.all(np.isfinite(cam.K))
    check_image_size(cam, cam.width, cam.height)
    with pytest.raises(CameraInfoError):
        check_image_size(cam, cam.width + 1, cam.height)
    pts = np.array([[cam.cx, cam.cy], [0.0, 0.0]], np.float32)
    assert cam.undistort_points(pts).shape == (2, 2)


# ==================================================================================================
# map loading: byte flips, truncations and insertions in manifest.yaml, keyframes.h5, global.faiss
# ==================================================================================================
@pytest.fixture(scope="module")
def fuzz_maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_maps")
    good = random_map(root / "good", n_kf=3, n_kp=20, d_global=64)
    return {"good": good, "work": root / "work"}


@st.composite
def mutations(draw, size: int):
    kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert"]))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1, max_size=8))
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1))
    return kind, (draw(st.integers(0, size)), draw(st.binary(min_size=1, max_size=64)))


def _mutate(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    b = bytearray(data)
    if kind == "flip":
        for pos, bit in arg:
            b[pos] ^= 1 << bit
    elif kind == "truncate":
        b = b[:arg]
    else:
        b[arg[0]:arg[0]] = arg[1]
    return bytes(b)


# (file, verify): the production path verifies sha256 first; keyframes.h5 is also fuzzed with verify=False to
# reach the HDF5 reader. global.faiss is not: faiss trusts the sizes in its header (a flipped count made it
# allocate and zero gigabytes for minutes), which is why a missing sha256 is an error (see MapDatabase.load).
MAP_TARGETS = [("manifest.yaml", True), ("keyframes.h5", True), ("global.faiss", True), ("keyframes.h5", False)]


@pytest.mark.parametrize("name, verify", MAP_TARGETS,
                         ids=[f"{n}-{'verify' if v else 'reader'}" for n, v in MAP_TARGETS])
def test_fuzz_map_loading(fuzz_maps, name, verify):
    src = fuzz_maps["good"]
    data = (src / name).read_bytes()
    outcomes = {"loaded": 0, "MapError": 0}

    @_settings(EXAMPLES["map"] if not verify else EXAMPLES["map"] // 2, deadline_ms=5000)
    @given(mutation=mutations(len(data)))
    def run(mutation):
        new = _mutate(data, mutation)
        hypothesis.assume(new != data)  # two flips of the same bit cancel
        work = fuzz_maps["work"]
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        (work / name).write_bytes(new)
        try:
            db = MapDatabase.load(work, verify=verify)
        except MapError as e:
            assert str(e)
            outcomes["MapError"] += 1
            return
        outcomes["loaded"] += 1
        assert db.index.ntotal == len(db) and db.index.d == db.global_desc.shape[1]
        assert np.all(np.isfinite(db.T_map_from_cam))

    run()
    print(f"fuzzed {name} (verify={verify}): {outcomes}")  # run length, shown with pytest -s
    assert outcomes["MapError"] > 0, outcomes  # the mutations did reach the checks
    if verify and name != "manifest.yaml":
        assert outcomes["loaded"] == 0, f"a modified {name} passed the sha256 check: {outcomes}"
