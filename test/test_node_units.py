"""Unit tests of the ROS layer without a running graph: image / CameraInfo conversion, the TF buffer,
message conversions, the parameter table, the frame slot, the pipeline hand-over and ``reloc_node --help``."""

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from reloc_ros.core.geometry import T_from_pos_quat, invert_T, make_T, pose_errors, random_rotation, so3_exp

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install ros-rclpy ros-rmw-fastrtps-cpp ...)")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from reloc_ros.ros import conversions as conv  # noqa: E402
from reloc_ros.ros.camera_info import CameraInfoError, camera_from_info, check_image_size  # noqa: E402
from reloc_ros.ros.frame_slot import HandOver, LatestSlot  # noqa: E402
from reloc_ros.ros.image_conversion import SUPPORTED_ENCODINGS, ImageConversionError, image_msg_to_localizer_input, \
    image_to_numpy, numpy_to_image, to_localizer_input  # noqa: E402
from reloc_ros.ros.parameters import PARAMETERS, localizer_config_from, parse_base_from_camera, \
    usage, validate  # noqa: E402
from reloc_ros.core.geometry import slerp  # noqa: E402
from reloc_ros.core.tf_buffer import TfExtrapolationError, TfLookupError, TransformBuffer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000


# --------------------------------------------------------------------------------------------------
# image conversion
def _pattern(h, w, ch, dtype, rng):
    if dtype == np.float32:
        a = rng.random((h, w, ch), dtype=np.float32)
    else:
        a = rng.integers(0, np.iinfo(dtype).max, size=(h, w, ch), endpoint=True).astype(dtype)
    return a[:, :, 0] if ch == 1 else a


def _raw_msg(arr, encoding, pad=0, bigendian=False):
    """An Image built by hand (row padding, byte order) to test the decoder independently of the encoder."""
    a = arr if arr.ndim == 3 else arr[:, :, None]
    h, w = a.shape[:2]
    a = a.astype(a.dtype.newbyteorder(">" if bigendian else "<"))
    row = a.reshape(h, -1).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1],
                 data=rows.tobytes())


@pytest.mark.parametrize("encoding", list(SUPPORTED_ENCODINGS))
@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("bigendian", [False, True])
def test_image_to_numpy_every_encoding(encoding, pad, bigendian):
    dtype, ch = SUPPORTED_ENCODINGS[encoding]
    arr = _pattern(5, 6, ch, dtype, np.random.default_rng(0))
    out = image_to_numpy(_raw_msg(arr, encoding, pad, bigendian))
    assert out.dtype == dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("encoding", list(SUPPORTED_ENCODINGS))
def test_numpy_to_image_round_trip(encoding):
    dtype, ch = SUPPORTED_ENCODINGS[encoding]
    arr = _pattern(4, 3, ch, dtype, np.random.default_rng(1))
    msg = numpy_to_image(arr, encoding)
    assert isinstance(msg.data, (bytes, bytearray)) or len(msg.data) == msg.step * msg.height
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_localizer_input_colour_orders_agree():
    rgb = _pattern(4, 5, 3, np.uint8, np.random.default_rng(2))
    alpha = np.full((4, 5, 1), 200, np.uint8)
    variants = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
                "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], 2)}
    for enc, a in variants.items():
        out = image_msg_to_localizer_input(numpy_to_image(a, enc))
        assert out.dtype == np.uint8 and out.shape == (4, 5, 3), enc
        np.testing.assert_array_equal(out, rgb, err_msg=enc)


def test_localizer_input_grey_scaling():
    m16 = np.array([[0, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(to_localizer_input(m16, "mono16"), [[0, 1, 255]])
    np.testing.assert_array_equal(to_localizer_input(m16, "16UC1"), [[0, 1, 255]])
    f = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    np.testing.assert_array_equal(to_localizer_input(f, "32FC1"), [[0, 128, 255, 0]])
    f2 = np.array([[2.0, 4.0]], np.float32)  # outside [0, 1]: min-max normalised
    np.testing.assert_array_equal(to_localizer_input(f2, "32FC1"), [[0, 255]])
    assert to_localizer_input(np.zeros((2, 2), np.uint8), "mono8").dtype == np.uint8


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_rggb8", "16UC3", "jpeg", ""])
def test_unsupported_encoding_names_it_and_the_supported_list(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=4, data=bytes(8))
    with pytest.raises(ImageConversionError) as e:
        image_to_numpy(msg)
    text = str(e.value)
    assert (repr(encoding) if encoding else "<empty>") in text
    for enc in ("rgb8", "bgr8", "mono16", "32FC1"):
        assert enc in text


@pytest.mark.parametrize("h, w, step, n, needle", [
    (0, 0, 0, 0, "empty image"),
    (2, 2, 6, 0, "empty image"),
    (2, 2, 5, 10, "step 5 is smaller"),  # rgb8 row needs 6 bytes
    (2, 2, 6, 11, "truncated"),
    (2, 2, 6, 13, "13 bytes"),
])
def test_bad_image_geometry(h, w, step, n, needle):
    msg = Image(height=h, width=w, encoding="rgb8", step=step, data=bytes(n))
    with pytest.raises(ImageConversionError, match=needle):
        image_to_numpy(msg)


# --------------------------------------------------------------------------------------------------
# CameraInfo
def _info(w=640, h=480, k=(500.0, 0, 320, 0, 500.0, 240, 0, 0, 1), model="plumb_bob", d=(0.0,) * 5):
    return CameraInfo(width=w, height=h, k=list(map(float, k)), distortion_model=model, d=list(map(float, d)))


def test_camera_from_info_plain_and_distorted():
    cam = camera_from_info(_info())
    assert cam.size == (640, 480) and cam.fx == 500.0 and not cam.is_distorted
    cam = camera_from_info(_info(d=(0.1, -0.05, 0.001, 0.0, 0.01)))
    assert cam.is_distorted and cam.distortion_model == "plumb_bob"
    cam = camera_from_info(_info(model="", d=()))
    assert cam.distortion_model == "none"
    cam = camera_from_info(_info(model="equidistant", d=(0.1, 0.0, 0.0, 0.0)))
    assert cam.distortion_model == "equidistant"


def test_camera_from_info_roi_and_binning():
    info = _info()
    info.binning_x = info.binning_y = 2
    cam = camera_from_info(info)
    assert cam.size == (320, 240) and abs(cam.fx - 250.0) < 1e-9
    info = _info()
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 10, 20, 100, 50
    cam = camera_from_info(info)
    assert cam.size == (100, 50) and cam.cx == 310.0 and cam.cy == 220.0


@pytest.mark.parametrize("kwargs, needle", [
    ({"k": (0.0,) * 9}, "not calibrated"),
    ({"w": 0, "h": 0}, "width and height"),
    ({"model": "kannala_brandt_weird"}, "unsupported distortion model"),
    ({"model": "", "d": (0.1, 0, 0, 0, 0)}, "no distortion model"),
    ({"model": "plumb_bob", "d": (0.1,) * 8}, "takes 5 coefficients"),
])
def test_camera_info_errors(kwargs, needle):
    with pytest.raises(CameraInfoError, match=needle):
        camera_from_info(_info(**kwargs))


def test_image_size_mismatch():
    cam = camera_from_info(_info())
    check_image_size(cam, 640, 480)
    with pytest.raises(CameraInfoError, match="640x480"):
        check_image_size(cam, 320, 240)


# --------------------------------------------------------------------------------------------------
# TF buffer
def _rand_T(rng, scale=1.0):
    return make_T(random_rotation(rng), rng.normal(size=3) * scale)


def test_tf_chain_lookup_through_common_ancestor():
    rng = np.random.default_rng(3)
    buf = TransformBuffer()
    T_map_odom, T_odom_base, T_base_cam, T_map_marker = (_rand_T(rng) for _ in range(4))
    buf.set_transform(T_map_odom, "map", "odom", 5 * NS)
    buf.set_transform(T_odom_base, "odom", "base_link", 5 * NS)
    buf.set_transform(T_base_cam, "base_link", "camera", 0, static=True)
    buf.set_transform(T_map_marker, "map", "marker", 5 * NS)
    got = buf.lookup("map", "camera", 5 * NS)
    np.testing.assert_allclose(got, T_map_odom @ T_odom_base @ T_base_cam, atol=1e-9)
    got = buf.lookup("marker", "camera", 5 * NS)  # up to map, then down to marker
    np.testing.assert_allclose(got, invert_T(T_map_marker) @ T_map_odom @ T_odom_base @ T_base_cam, atol=1e-9)
    np.testing.assert_allclose(buf.lookup("camera", "odom", 0), invert_T(T_odom_base @ T_base_cam), atol=1e-9)
    np.testing.assert_allclose(buf.lookup("odom", "odom", 5 * NS), np.eye(4))


def test_tf_time_interpolation():
    buf = TransformBuffer()
    R0, R1 = np.eye(3), so3_exp([0.0, 0.0, 1.0])
    buf.set_transform(make_T(R0, [0, 0, 0]), "odom", "base", 1 * NS)
    buf.set_transform(make_T(R1, [2, 0, 0]), "odom", "base", 3 * NS)
    T = buf.lookup("odom", "base", 2 * NS)
    np.testing.assert_allclose(T[:3, 3], [1, 0, 0], atol=1e-12)
    _, rot = pose_errors(T, make_T(so3_exp([0, 0, 0.5]), [1, 0, 0]))
    assert rot < 1e-6
    # 25 %: a quarter of the angle
    T = buf.lookup("odom", "base", int(1.5 * NS))
    assert pose_errors(T, make_T(so3_exp([0, 0, 0.25]), [0.5, 0, 0]))[1] < 1e-6


def test_tf_errors_missing_stale_future_disconnected():
    buf = TransformBuffer(cache_time_s=10.0)
    with pytest.raises(TfLookupError, match="no TF received"):
        buf.lookup("odom", "base", 0)
    buf.set_transform(np.eye(4), "odom", "base", 10 * NS)
    buf.set_transform(np.eye(4), "odom", "base", 11 * NS)
    with pytest.raises(TfLookupError, match="'camera' does not exist"):
        buf.lookup("odom", "camera", 0)
    with pytest.raises(TfExtrapolationError, match="after the newest data") as e:
        buf.lookup("odom", "base", 12 * NS)  # stale odometry / image newer than TF
    assert not e.value.too_old
    with pytest.raises(TfExtrapolationError, match="before the oldest") as e:
        buf.lookup("odom", "base", 9 * NS)
    assert e.value.too_old
    buf.set_transform(np.eye(4), "world", "tag", 10 * NS)
    with pytest.raises(TfLookupError, match="not connected"):
        buf.lookup("odom", "tag", 10 * NS)


def test_tf_cache_trim_and_jump_back_reset():
    buf = TransformBuffer(cache_time_s=2.0, jump_back_reset_s=1.0)
    for t in range(10):
        buf.set_transform(make_T(np.eye(3), [t, 0, 0]), "odom", "base", t * NS)
    with pytest.raises(TfExtrapolationError):
        buf.lookup("odom", "base", 5 * NS)  # trimmed (older than newest - 2 s)
    assert buf.lookup("odom", "base", 8 * NS)[0, 3] == 8
    buf.set_transform(make_T(np.eye(3), [100, 0, 0]), "odom", "base", 0)  # bag loop
    assert buf.jumps_back == 1
    assert buf.lookup("odom", "base", 0)[0, 3] == 100
    buf.set_transform(np.eye(4), "base", "cam", 0, static=True)
    buf.clear()
    assert buf.frames() == ["base", "cam"]


def test_tf_wait_for_data_arriving_later():
    buf = TransformBuffer()
    buf.set_transform(np.eye(4), "odom", "base", 1 * NS)

    def later():
        time.sleep(0.1)
        buf.set_transform(make_T(np.eye(3), [1, 0, 0]), "odom", "base", 3 * NS)

    threading.Thread(target=later, daemon=True).start()
    T = buf.wait_for("odom", "base", 2 * NS, timeout_s=5.0)
    assert abs(T[0, 3] - 0.5) < 1e-12
    t0 = time.monotonic()
    with pytest.raises(TfExtrapolationError):
        buf.wait_for("odom", "base", 9 * NS, timeout_s=0.2)
    assert 0.15 < time.monotonic() - t0 < 2.0


def test_tf_from_messages_and_slerp_sign():
    buf = TransformBuffer()
    rng = np.random.default_rng(4)
    T = _rand_T(rng)
    msg = conv.transform_stamped(T, "/odom", "base", 7 * NS)
    buf.set_transform_msg(msg)
    np.testing.assert_allclose(buf.lookup("odom", "base", 7 * NS), T, atol=1e-9)
    bad = TransformStamped()
    bad.header.frame_id, bad.child_frame_id = "odom", "x"
    bad.transform.rotation.w = 0.0
    with pytest.raises(Exception, match="zero quaternion"):
        buf.set_transform_msg(bad)
    q = np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(slerp(q, -q, 0.5), q)


# --------------------------------------------------------------------------------------------------
# message conversions
def test_pose_and_covariance_conversions():
    rng = np.random.default_rng(5)
    T = _rand_T(rng)
    np.testing.assert_allclose(conv.T_from_pose(conv.pose_from_T(T)), T, atol=1e-12)
    np.testing.assert_allclose(conv.T_from_transform(conv.transform_from_T(T)), T, atol=1e-12)
    A = rng.normal(size=(6, 6))
    cov = A @ A.T
    msg = conv.pose_with_covariance_stamped(T, cov, "map", 123 * NS + 5)
    np.testing.assert_allclose(np.array(msg.pose.covariance).reshape(6, 6), cov, atol=1e-12)
    assert conv.stamp_to_ns(msg.header.stamp) == 123 * NS + 5 and msg.header.frame_id == "map"
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    np.testing.assert_array_equal(conv.pointcloud2_to_xyz(conv.pointcloud2_xyz(xyz, "map", 0)), xyz)


def test_covariance_of_composed_matches_monte_carlo():
    """Propagating the camera pose covariance to the base pose agrees with sampling."""
    rng = np.random.default_rng(6)
    T_map_cam = _rand_T(rng, 2.0)
    T_cam_base = make_T(random_rotation(rng), [0.1, 0.3, -0.5])
    A = rng.normal(size=(6, 6)) * 0.01
    cov = A @ A.T
    pred = conv.covariance_of_composed(cov, T_map_cam, T_cam_base)
    L = np.linalg.cholesky(cov)
    samples = []
    for _ in range(4000):
        e = L @ rng.normal(size=6)
        Tp = make_T(so3_exp(e[3:]) @ T_map_cam[:3, :3], T_map_cam[:3, 3] + e[:3]) @ T_cam_base
        T_base = T_map_cam @ T_cam_base
        samples.append(Tp[:3, 3] - T_base[:3, 3])
    emp = np.cov(np.array(samples).T)
    np.testing.assert_allclose(emp, pred[:3, :3], atol=0.15 * np.abs(pred[:3, :3]).max())


# --------------------------------------------------------------------------------------------------
# parameters, slot, --help
def test_parameter_validation():
    for spec in PARAMETERS:
        assert validate(spec.name, spec.default) is None, spec.name
    assert "out of range" in validate("top_k", 0)
    assert "out of range" in validate("ratio", -0.1)
    assert validate("ratio", 0.0) is None  # 0: the extractor's own ratio
    assert "out of range" in validate("ratio", 1.5)
    assert "must be one of" in validate("tf_mode", "map_world")
    assert "must be a int" in validate("top_k", 2.5)
    assert validate("max_rate_hz", 5) is None  # ints accepted for doubles
    assert "not a directory" in validate("map_path", "/nonexistent/map")
    assert "7 numbers" in validate("base_from_camera", "1 2 3")
    assert validate("base_from_camera", "0 0 0.5 -0.5 0.5 -0.5 0.5") is None
    assert validate("use_sim_time", True) is None  # not ours


def test_parameters_map_onto_localizer_config():
    cfg = localizer_config_from({"top_k": 3, "ratio": 0.7, "min_inliers": 30, "map_frame": "x"})
    assert (cfg.top_k, cfg.ratio, cfg.min_inliers) == (3, 0.7, 30)
    from dataclasses import fields

    from reloc_ros.core.localizer import LocalizerConfig
    defaults = LocalizerConfig()
    names = {f.name for f in fields(LocalizerConfig)}
    for spec in PARAMETERS:
        if spec.config_field:
            assert spec.config_field in names, spec.name
            assert spec.default == getattr(defaults, spec.config_field), f"{spec.name} default differs from core"


def test_base_from_camera_parsing():
    T = parse_base_from_camera("0.1, 0, 0.5, -0.5, 0.5, -0.5, 0.5")
    np.testing.assert_allclose(T, T_from_pos_quat([0.1, 0, 0.5], [-0.5, 0.5, -0.5, 0.5]))
    assert parse_base_from_camera("") is None


def test_latest_slot_newest_wins_and_counts_drops():
    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.get(0.1) == 3 and slot.dropped == 2
    assert slot.get(0.01) is None
    slot.close()
    assert slot.get(None) is None


def test_handover_holds_one_item_and_counts_replaced_items():
    """A fast producer and a slow consumer: never more than one item waits, the consumer gets items in order
    (newest wins), and every item is either consumed, counted as dropped or still waiting."""
    ho = HandOver()
    n, got, pending_seen = 400, [], []
    done = threading.Event()

    def consume():
        while not done.is_set() or ho.pending:
            item = ho.get(timeout=0.05)
            if item is None:
                continue
            got.append(item)
            time.sleep(0.002)  # slower than the producer: items pile up unless they are replaced
            ho.task_done()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    for k in range(n):
        ho.put(k)
        pending_seen.append(ho.pending)
        if k % 50 == 0:
            time.sleep(0.01)
    done.set()
    consumer.join(10.0)
    assert not consumer.is_alive()
    assert max(pending_seen) == 1 and ho.pending == 0
    assert got == sorted(got) and got[-1] == n - 1, "items come out in order and the newest is never lost"
    assert ho.dropped > 0 and len(got) + ho.dropped == n, (len(got), ho.dropped)


def test_handover_wait_idle_waits_for_the_consumer():
    ho = HandOver()
    assert ho.wait_idle(0.0), "idle when empty"
    ho.put("a")
    assert not ho.wait_idle(0.02), "an item is waiting"
    assert ho.get(0.1) == "a"
    assert not ho.wait_idle(0.02), "the consumer is working on it"
    threading.Timer(0.05, ho.task_done).start()
    t0 = time.monotonic()
    assert ho.wait_idle(5.0) and time.monotonic() - t0 < 2.0
    ho.put("b")
    threading.Timer(0.05, ho.close).start()
    assert ho.wait_idle(5.0), "closing wakes a waiting producer"
    assert ho.put("c") and ho.dropped == 1  # "b" was never taken: replaced, counted


def test_pipeline_parameter():
    from reloc_ros.ros.parameters import PARAMS_BY_NAME
    assert PARAMS_BY_NAME["pipeline"].default is False
    assert validate("pipeline", True) is None
    assert "must be a bool" in validate("pipeline", 1)
    assert re.search(r"^  pipeline \(bool, default False\)", usage(), re.M)


def test_help_prints_usage_without_ros():
    env = dict(os.environ, PYTHONPATH=str(REPO), ROS_DOMAIN_ID="999")  # an invalid domain: ROS must not start
    for flag in ("--help", "-h"):
        r = subprocess.run([sys.executable, "-m", "reloc_ros.ros.node", flag], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        for name in ("map_path", "tf_mode", "~/pose_with_covariance", "/diagnostics", "~/relocalize"):
            assert name in r.stdout
    assert r.stdout == usage()
    r = subprocess.run([sys.executable, "-m", "reloc_ros.ros.node", "--bogus"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unknown arguments" in r.stderr


def test_a_new_transform_is_future_dated_at_once():
    """REP-105 timing: a new map -> odom goes out at its image stamp, which is older than the last future-dated
    republication (stamped now + transform_tolerance); the republication right after the frame (``only_new``) makes
    the newest stamp on /tf carry the new value, so that a lookup of the latest transform never returns the old one,
    and it is sent once (the timer's republications go on as before)."""
    from reloc_ros.ros.outputs import Outputs

    class Tf:
        def __init__(self):
            self.sent = []

        def send(self, msgs):
            self.sent += [(conv.stamp_to_ns(m.header.stamp), m.transform.translation.x) for m in msgs]

    tf, out = Tf(), Outputs()
    ms = 1_000_000
    T0, T1 = make_T(np.eye(3), [0.0, 0, 0]), make_T(np.eye(3), [1.0, 0, 0])
    out.send_transform(tf, T0, "map", "odom", 100 * ms)
    out.republish(tf, 150 * ms, 0.1)  # the timer: T0 at 250 ms
    out.send_transform(tf, T1, "map", "odom", 200 * ms)  # a new pose of an image 200 ms: older than 250
    assert max(tf.sent)[1] == 0.0  # the newest stamp still says T0 ...
    out.republish(tf, 160 * ms, 0.1, only_new=True)  # ... until the frame's own republication: T1 at 260 ms
    assert max(tf.sent) == (260 * ms, 1.0), tf.sent
    n = len(tf.sent)
    out.republish(tf, 170 * ms, 0.1, only_new=True)  # nothing new: not sent again
    assert len(tf.sent) == n
    out.republish(tf, 180 * ms, 0.1)  # the timer
    assert tf.sent[-1] == (280 * ms, 1.0) and len({s for s, _ in tf.sent}) == len(tf.sent), tf.sent


def test_path_and_markers_are_sent_only_while_subscribed():
    """~/path (up to 1000 poses: ~2.8 ms a frame to serialize, listener or not) and ~/markers are built and sent
    only while someone subscribes; the path keeps its poses meanwhile, ~/pose is always sent."""
    from reloc_ros.ros.outputs import Outputs

    class Pub:
        def __init__(self, subs):
            self.subs, self.msgs = subs, []

        def get_subscription_count(self):
            return self.subs

        def publish(self, m):
            self.msgs.append(m)

    out = Outputs()
    out._pubs = {k: Pub(0) for k in ("pose", "pose_cov", "path", "markers")}
    for i in range(3):
        out.pose(np.eye(4), np.eye(6), "map", i + 1, 1000)
        out.markers(np.zeros((5, 3)), np.zeros((2, 3)), True, "map", i + 1)
    assert len(out._pubs["pose"].msgs) == 3 and not out._pubs["path"].msgs and not out._pubs["markers"].msgs
    out._pubs["path"].subs = out._pubs["markers"].subs = 1  # RViz connects
    out.pose(np.eye(4), np.eye(6), "map", 4, 1000)
    out.markers(np.zeros((5, 3)), np.zeros((2, 3)), True, "map", 4)
    assert len(out._pubs["path"].msgs[-1].poses) == 4 and len(out._pubs["markers"].msgs) == 1


def test_map_holder_drops_a_reload_that_was_cancelled_or_outlived_a_cleanup(monkeypatch):
    """A map being loaded in the background is not swapped in when map_path was set back to the map in use meanwhile
    (``cancel``) or the node was cleaned up (``clear``): the parameter would name one map and the node use another."""
    import logging

    from reloc_ros.ros import map_holder as mh

    started, release = threading.Event(), threading.Event()

    def slow_load(want, config, log):
        started.set()
        release.wait(5)
        return object()  # stands for a Localizer

    monkeypatch.setattr(mh, "load_localizer", slow_load)
    for stop in ("cancel", "clear"):
        holder = mh.MapHolder(threading.Lock(), logging.getLogger("test"))
        swapped = []
        started.clear()
        release.clear()
        holder.reload({"map_path": "/maps/q", "model_path": "", "inference_provider": "cpu"}, None,
                      lambda: swapped.append(1), lambda loaded, newest: None)
        assert started.wait(5)
        assert getattr(holder, stop)() in (True, None)
        release.set()
        time.sleep(0.2)
        assert not swapped and holder.localizer is None and holder.loaded["map_path"] == "", stop
    assert holder.cancel() is False  # nothing running: nothing to drop
