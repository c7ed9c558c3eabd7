"""In-process tests of :class:`reloc_ros.ros.node.RelocNode` with real rclpy, driven by ``spin_once``.

The map is a textured plane (z = 0 in the map frame) seen from a few camera poses; images are rendered exactly
by a homography, so a query from a random new pose has a known ground truth. Covers the lifecycle
(configure / activate / deactivate / cleanup, a failing configure), parameter validation, the three TF modes
and the composition ``map->odom = T_map_from_cam inv(T_odom_from_base T_base_from_cam)``.
"""

from __future__ import annotations

import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from ros_helpers import ShmJanitor, configure_ros_env, use_ros_env, wait_until

ENV = configure_ros_env("test_node_inprocess")

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install ros-rclpy ros-rmw-fastrtps-cpp ...)")
try:
    import tf2_msgs.msg  # noqa: F401
except ImportError:
    pytest.skip("tf2_msgs is not importable: build it with `python tools/build_tf2_msgs.py` (the Makefile does)",
                allow_module_level=True)

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from reloc_ros.core.camera import Camera  # noqa: E402
from reloc_ros.core.features import create_extractor  # noqa: E402
from reloc_ros.core.geometry import invert_T, look_at, make_T, pose_errors, so3_exp  # noqa: E402
from reloc_ros.core.mapdb import POINT_SOURCES, Keyframe, MapDatabase  # noqa: E402
from reloc_ros.ros import conversions as conv  # noqa: E402
from reloc_ros.ros.image_conversion import numpy_to_image  # noqa: E402
from reloc_ros.ros.node import RelocNode  # noqa: E402

NS = 1_000_000_000
CAM = Camera(320, 240, 260.0, 260.0, 159.5, 119.5)
PLANE_HALF = 1.5  # the textured plane spans [-1.5, 1.5]^2 m at z = 0
T_BASE_CAM = make_T(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float), [0.2, 0.0, 0.4])  # optical, forward


def _texture(seed=0, size=1024) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 128, np.uint8)
    for _ in range(900):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(4, 30)), c, -1)
        else:
            w, h = (int(v) for v in rng.integers(6, 50, 2))
            cv2.rectangle(img, (x, y), (x + w, y + h), c, -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def _render(tex: np.ndarray, T_map_cam: np.ndarray) -> np.ndarray:
    """Exact image of the plane z = 0 (homography from texture pixels to image pixels)."""
    n = tex.shape[0]
    A = np.array([[2 * PLANE_HALF / n, 0, -PLANE_HALF], [0, 2 * PLANE_HALF / n, -PLANE_HALF], [0, 0, 1]])
    T = invert_T(T_map_cam)
    H = CAM.K @ np.stack([T[:3, 0], T[:3, 1], T[:3, 3]], axis=1) @ A
    return cv2.warpPerspective(tex, H, CAM.size, flags=cv2.INTER_LINEAR, borderValue=(90, 90, 90))


def _plane_points(kpts_N2: np.ndarray, T_map_cam: np.ndarray) -> np.ndarray:
    rays = np.linalg.solve(CAM.K, np.c_[kpts_N2, np.ones(len(kpts_N2))].T).T @ T_map_cam[:3, :3].T
    o = T_map_cam[:3, 3]
    s = -o[2] / rays[:, 2]
    X = o + s[:, None] * rays
    X[(s <= 0) | (np.abs(X[:, 0]) > PLANE_HALF) | (np.abs(X[:, 1]) > PLANE_HALF)] = np.nan
    return X.astype(np.float32)


def _pose(x, y, tx, ty, h=1.6) -> np.ndarray:
    return look_at([x, y, h], [tx, ty, 0.0], (0.0, 1.0, 0.0))


@pytest.fixture(scope="module", autouse=True)
def _clean_shared_memory():
    janitor = ShmJanitor()
    yield
    janitor.cleanup()  # Fast DDS files left by this module, if a participant was not shut down cleanly


@pytest.fixture(scope="module")
def plane_map(tmp_path_factory):
    tex = _texture()
    poses = [_pose(x, y, 0.3 * x, 0.3 * y) for x in (-0.6, 0.0, 0.6) for y in (-0.5, 0.5)]
    ex = create_extractor("sift", n_features=1000, n_words=16)
    feats = [ex.extract(_render(tex, T)) for T in poses]
    ex.fit(feats)
    kfs = []
    for i, (T, f) in enumerate(zip(poses, feats, strict=True)):
        xyz = _plane_points(f.keypoints, T)
        has = np.isfinite(xyz[:, 0])
        kfs.append(Keyframe(f"kf{i}", T, CAM, f.keypoints, f.descriptors, f.scores, xyz,
                            np.where(has, POINT_SOURCES["depth"], 0).astype(np.uint8), has.astype(np.float32),
                            ex.describe_global(f)))
    out = tmp_path_factory.mktemp("plane") / "map"
    MapDatabase.from_keyframes(kfs, ex.identity(), ex.state()).save(out)
    bad = out.parent / "map_bad"
    import shutil
    shutil.copytree(out, bad)
    (bad / "global.faiss").write_bytes(b"not an index")
    return {"map": out, "bad": bad, "tex": tex}


class Harness:
    """The node under test and a helper node in one context, spun with ``spin_once``."""

    def __init__(self, overrides: dict):
        use_ros_env(ENV)
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        # The place tracker (test_tracking.py, test_tracking_node.py) withholds poses until the robot moved; tests of
        # other behaviour switch it off unless they set it.
        overrides = {"odom_jump_max_m": 0.0, **overrides}
        params = [Parameter(k, value=v) for k, v in overrides.items()]
        self.node = RelocNode(context=self.ctx, parameter_overrides=params)
        self.node.autostart()  # what main() does (when the autostart parameter is true)
        self.helper = rclpy.create_node("inprocess_helper", context=self.ctx)
        h = self.helper
        self.pub_image = h.create_publisher(Image, "image", qos_profile_sensor_data)
        self.pub_info = h.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.pub_tf = h.create_publisher(TFMessage, "/tf", 100)
        self.pub_tf_static = h.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.pub_initialpose = h.create_publisher(PoseWithCovarianceStamped, "/initialpose", 10)
        self.poses, self.poses_cov, self.tf, self.diags, self.clouds = [], [], [], [], []
        h.create_subscription(PoseStamped, "/reloc_node/pose", self.poses.append, 10)
        h.create_subscription(PoseWithCovarianceStamped, "/reloc_node/pose_with_covariance", self.poses_cov.append, 10)
        h.create_subscription(TFMessage, "/tf", lambda m: self.tf.extend(m.transforms), 100)
        h.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diags.extend(m.status), 50)
        h.create_subscription(PointCloud2, "/reloc_node/map_points", self.clouds.append, QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(h)

    def spin(self):
        self.executor.spin_once(timeout_sec=0.02)

    def wait(self, predicate, what, timeout=20.0):
        wait_until(predicate, timeout, spin=self.spin, what=what)

    def send(self, image: np.ndarray, stamp_ns: int, frame_id="camera_optical", info: CameraInfo | None = None):
        hdr = conv.header(frame_id, stamp_ns)
        info = info or CameraInfo(width=CAM.width, height=CAM.height, k=CAM.K.reshape(9).tolist(),
                                  distortion_model="plumb_bob", d=[0.0] * 5)
        info.header = hdr
        self.pub_info.publish(info)
        self.pub_image.publish(numpy_to_image(image, "rgb8", hdr))

    def close(self):
        self.node.shutdown_worker()
        self.node.destroy_node()
        self.helper.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def harness_factory():
    made = []

    def make(**overrides):
        h = Harness(overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _query(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-0.5, 0.5, 2)
    T = _pose(x, y, rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), h=rng.uniform(1.4, 1.8))
    return T @ make_T(so3_exp(rng.normal(size=3) * 0.03), [0, 0, 0])


# --------------------------------------------------------------------------------------------------
def test_lifecycle_and_camera_pose(plane_map, harness_factory):
    h = harness_factory(map_path=str(plane_map["map"]), autostart=False, tf_mode="none", pose_frame="camera")
    node = h.node
    assert node.lifecycle_state == "unconfigured"
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "inactive"
    h.wait(lambda: len(h.clouds) > 0, "latched map points")
    assert h.clouds[-1].width == len(node._localizer.db.valid_points())
    # inactive: no subscription, images are ignored
    assert h.pub_image.get_subscription_count() == 0
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "the node to subscribe")

    errs = []
    for k in range(3):
        T_gt = _query(10 + k)
        h.send(_render(plane_map["tex"], T_gt), (100 + k) * NS)
        h.wait(lambda k=k: len(h.poses) > k, f"pose {k}")
        p = h.poses[-1]
        assert conv.stamp_to_ns(p.header.stamp) == (100 + k) * NS and p.header.frame_id == "map"
        errs.append(pose_errors(conv.T_from_pose(p.pose), T_gt))
    errs = np.array(errs)
    assert errs[:, 0].max() < 0.03 and errs[:, 1].max() < 1.0, errs
    assert not h.tf, "tf_mode none publishes no TF"
    h.wait(lambda: len(h.poses_cov) >= 3, "poses with covariance")
    cov = np.array(h.poses_cov[-1].pose.covariance).reshape(6, 6)
    assert np.all(np.diag(cov) > 0) and np.sqrt(cov[0, 0]) < 0.5

    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "inactive"
    h.wait(lambda: h.pub_image.get_subscription_count() == 0, "the image subscription to go")
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "unconfigured" and node._localizer is None


def test_under_a_lifecycle_manager_a_bad_map_path_leaves_the_node_up_and_unconfigured(plane_map, harness_factory,
                                                                                      tmp_path):
    """autostart false (Nav2): a map_path that names no map does not stop the node (it did: rc 2 at start); it stays
    unconfigured, configure fails with the reason, and once map_path names a map, configure and activate succeed.
    Standalone (autostart true) such a start is still refused at once (test_cli_errors)."""
    h = harness_factory(map_path=str(tmp_path / "no_such_map"), autostart=False, tf_mode="none", pose_frame="camera")
    assert h.node.lifecycle_state == "unconfigured"
    assert h.node.trigger_configure() != TransitionCallbackReturn.SUCCESS
    assert h.node.lifecycle_state == "unconfigured" and "not found" in h.node._map.error, h.node._map.error
    assert not h.node.set_parameters([Parameter("map_path", value=str(tmp_path / "still_none"))])[0].successful
    assert h.node.set_parameters([Parameter("map_path", value=str(plane_map["map"]))])[0].successful
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS and h.node.lifecycle_state == "active"


def test_configure_fails_cleanly_on_a_corrupt_map(plane_map, harness_factory):
    h = harness_factory(map_path=str(plane_map["bad"]), autostart=False)
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert h.node.lifecycle_state == "unconfigured"
    h.node._publish_diagnostics()
    h.wait(lambda: any(s.level == DiagnosticStatus.ERROR and "cannot load map" in s.message for s in h.diags),
           "an ERROR diagnostic naming the map problem")
    # autostart: setting a good map later configures and activates the node
    assert h.node.set_parameters([Parameter("autostart", value=True)])[0].successful
    assert h.node.set_parameters([Parameter("map_path", value=str(plane_map["map"]))])[0].successful
    h.wait(lambda: h.node.lifecycle_state == "active", "autostart after a good map_path")


def test_parameter_validation_updates_localizer_config(plane_map, harness_factory):
    h = harness_factory(map_path=str(plane_map["map"]), autostart=False)
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    r = node.set_parameters([Parameter("min_inlier_ratio", value=1.5)])[0]
    assert not r.successful and "out of range [0, 1]" in r.reason
    r = node.set_parameters([Parameter("inference_provider", value="opencl")])[0]
    assert not r.successful and "cpu, cuda, tensorrt" in r.reason
    r = node.set_parameters([Parameter("base_from_camera", value="1 2")])[0]
    assert not r.successful and "7 numbers" in r.reason
    assert node.set_parameters([Parameter("top_k", value=2), Parameter("ransac_reproj_px", value=4)])[0].successful
    assert node._localizer.config.top_k == 2 and node._localizer.config.ransac_reproj_px == 4.0
    assert node.get_parameter("top_k").value == 2


@pytest.mark.parametrize("mode", ["map_odom", "map_base"])
def test_tf_modes_compose_odometry_and_mount(plane_map, harness_factory, mode):
    """map->odom (or map->base) from the localized camera pose, TF odometry at the image stamp and the mount."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode=mode, pose_frame="base", tf_publish_rate_hz=0.0,
                        odom_accept_after=1)  # one frame: published without the odometry gate's confirmation
    node = h.node
    assert node.lifecycle_state == "active"
    mount = conv.transform_stamped(T_BASE_CAM, "base_link", "camera_optical", 0)
    h.pub_tf_static.publish(TFMessage(transforms=[mount]))
    h.wait(lambda: h.pub_image.get_subscription_count() > 0 and h.pub_tf.get_subscription_count() > 0, "matching")
    rng = np.random.default_rng(7)
    T_map_odom_true = make_T(so3_exp([0, 0, 0.3]), [0.5, -0.2, 0.0])
    T_gt = _query(20)
    T_map_base = T_gt @ invert_T(T_BASE_CAM)
    T_odom_base = invert_T(T_map_odom_true) @ T_map_base
    stamp = 50 * NS
    # odometry around the image stamp (interpolated by the node's TF buffer)
    drift = make_T(so3_exp(rng.normal(size=3) * 1e-3), [0.01, 0, 0])
    for t, T in ((stamp - NS // 10, T_odom_base @ invert_T(drift)), (stamp + NS // 10, T_odom_base @ drift)):
        h.pub_tf.publish(TFMessage(transforms=[conv.transform_stamped(T, "odom", "base_link", t)]))
    T_odom_base_at = conv.T_from_transform(conv.transform_from_T(T_odom_base))  # mid-point of the two samples
    h.send(_render(plane_map["tex"], T_gt), stamp)
    want_child = "odom" if mode == "map_odom" else "base_link"
    h.wait(lambda: any(t.child_frame_id == want_child and t.header.frame_id == "map" for t in h.tf), "map TF")
    t = next(t for t in h.tf if t.child_frame_id == want_child and t.header.frame_id == "map")
    assert conv.stamp_to_ns(t.header.stamp) == stamp
    T_pub = conv.T_from_transform(t.transform)
    T_cam = (T_pub @ T_odom_base_at if mode == "map_odom" else T_pub) @ T_BASE_CAM
    err = pose_errors(T_cam, T_gt)
    assert err[0] < 0.03 and err[1] < 1.0, err
    # ~/pose is the base pose (pose_frame base)
    h.wait(lambda: h.poses, "the base pose")
    err = pose_errors(conv.T_from_pose(h.poses[-1].pose), T_map_base)
    assert err[0] < 0.05 and err[1] < 1.0, err


def test_missing_tf_is_reported_not_published(plane_map, harness_factory):
    """Localized, but no odom->base and no mount: nothing is published as a pose or TF; diagnostics say why."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="map_odom", pose_frame="base", tf_timeout=0.05)
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
    h.send(_render(plane_map["tex"], _query(30)), 70 * NS)
    h.wait(lambda: any("base->camera is unavailable" in kv.value for s in h.diags for kv in s.values), "a TF error")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.3:  # a short look for anything published (there must be nothing)
        h.spin()
    assert not h.poses and not [t for t in h.tf if t.header.frame_id == "map"]


def test_odometry_missing_under_map_odom_is_reported(plane_map, harness_factory):
    """tf_mode map_odom with the tracker on, but TF cannot give odom -> base -> camera (here: no TF at all, and a
    camera_frame TF does not know): the tracker falls back to the pose sequence, and /diagnostics and the log say
    why (they said nothing)."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="map_odom", pose_frame="camera", tf_timeout=0.05,
                        odom_jump_max_m=0.5, camera_frame="no_such_frame")
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
    h.send(_render(plane_map["tex"], _query(30)), 70 * NS)
    h.wait(lambda: any("no odometry at the image stamp" in kv.value and "does not exist in TF" in kv.value
                       for s in h.diags for kv in s.values), "the missing odometry reported")


def test_failure_never_published_coarse_only_on_its_topic(plane_map, harness_factory):
    """An image of an unmapped surface FAILS: no pose, no TF; with publish_coarse the retrieved keyframe's pose
    goes to ~/pose_coarse only, with a large covariance."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="map_base", pose_frame="camera",
                        base_from_camera="0 0 0 0 0 0 1", publish_coarse=True, coarse_sigma_m=3.0)
    coarse = []
    h.helper.create_subscription(PoseWithCovarianceStamped, "/reloc_node/pose_coarse", coarse.append, 10)
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
    other = _render(_texture(seed=99), _query(40))  # another texture: nothing matches the map
    h.send(other, 80 * NS)
    h.wait(lambda: coarse, "a coarse pose")
    h.wait(lambda: any(kv.key == "status" and kv.value == "FAILED" for s in h.diags for kv in s.values),
           "diagnostics of the failure")
    st = next(s for s in h.diags if any(kv.key == "status" and kv.value == "FAILED" for kv in s.values))
    d = {kv.key: kv.value for kv in st.values}
    assert d["reason"] and st.level == DiagnosticStatus.WARN and st.message.startswith("FAILED"), d
    cov = np.array(coarse[-1].pose.covariance).reshape(6, 6)
    assert np.isclose(cov[0, 0], 9.0) and conv.stamp_to_ns(coarse[-1].header.stamp) == 80 * NS
    kf_centres = h.node._localizer.db.centers
    c = conv.T_from_pose(coarse[-1].pose.pose)[:3, 3]
    assert np.min(np.linalg.norm(kf_centres - c, axis=1)) < 1e-6, "the coarse pose is a keyframe's"
    assert not h.poses and not h.poses_cov and not [t for t in h.tf if t.header.frame_id == "map"]


def test_rate_limit_and_missing_camera_info(plane_map, harness_factory):
    """max_rate_hz skips frames by image time (counted); images without any CameraInfo are reported after
    camera_info_timeout and the node goes on."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="none", pose_frame="camera", max_rate_hz=2.0,
                        camera_info_timeout=0.3)
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
    img = _render(plane_map["tex"], _query(50))
    hdr = conv.header("camera_optical", 90 * NS)
    h.pub_image.publish(numpy_to_image(img, "rgb8", hdr))  # no camera_info at all yet

    def diag_value(key):
        vals = [kv.value for s in h.diags for kv in s.values if kv.key == key]
        return vals[-1] if vals else ""

    h.wait(lambda: "no CameraInfo received" in diag_value("input_error"), "the missing CameraInfo error")
    assert "within 0.3 s" in diag_value("input_error")
    for k in range(3):  # 0.1 s apart in image time: only the first passes a 2 Hz limit
        h.send(img, 91 * NS + k * NS // 10)
    h.wait(lambda: diag_value("frames_rate_skipped") == "2" and diag_value("status") == "LOCALIZED",
           "two frames skipped by max_rate_hz and one localized")


# --------------------------------------------------------------------------------------------------
# pipeline: stage 1 (conversion, CameraInfo, extraction) overlaps stage 2 (retrieval, matching, PnP, publishing)
def _diag(node) -> dict:
    return {kv.key: kv.value for kv in node._diagnostics().status[0].values}


def _accounted(d: dict) -> int:
    return sum(int(d[k]) for k in ("frames_processed", "frames_dropped", "frames_rate_skipped", "frames_out_of_order",
                                   "input_errors"))


def _stream(h: Harness, tex, first_seed: int, n: int, t0_ns: int, rate_hz: float) -> dict:
    """Publish ``n`` query images at ``rate_hz`` (spinning between them); ground truth by stamp."""
    gt = {}
    for k in range(n):
        T = _query(first_seed + k)
        stamp = t0_ns + k * NS // 10
        gt[stamp] = T
        h.send(_render(tex, T), stamp)
        t_next = time.monotonic() + 1.0 / rate_hz
        while time.monotonic() < t_next:
            h.spin()
    return gt


def _blocking_localize(loc, entered, release):
    """Make ``loc.localize_features`` (what stage 2 runs, and ``localize`` after extraction) wait for ``release``
    (stage 2 busy for as long as the test wants)."""
    orig = loc.localize_features

    def slow(*args, **kwargs):
        entered.set()
        assert release.wait(30.0)
        return orig(*args, **kwargs)

    loc.localize_features = slow


def test_pipeline_localizes_a_stream_as_accurately_as_one_worker(plane_map):
    """The same 10-frame stream (20 Hz) through the single worker and through the pipeline: every frame is
    accounted for, the published poses are as accurate, and the pipeline's diagnostics split the stages."""
    errs, diags = {}, {}
    for pipeline in (False, True):
        h = Harness({"map_path": str(plane_map["map"]), "tf_mode": "none", "pose_frame": "camera",
                     "pipeline": pipeline})
        try:
            node = h.node
            assert [t.name for t in node._frames.threads] == (["reloc_extract", "reloc_localize"] if pipeline
                                                       else ["reloc_worker"])
            h.wait(lambda: h.pub_image.get_subscription_count() > 0, "the node to subscribe")
            gt = _stream(h, plane_map["tex"], 60, 10, 300 * NS, rate_hz=20.0)
            last = max(gt)
            h.wait(lambda: node._done_stamp_ns == last, "the last frame handled")
            d = _diag(node)
            h.wait(lambda: len(h.poses) == int(d["frames_localized"]), "every pose delivered")
            assert int(d["frames_received"]) == len(gt) == _accounted(d), d
            assert int(d["frames_localized"]) >= 3 and int(d["frames_failed"]) == 0, d
            errs[pipeline] = np.array([pose_errors(conv.T_from_pose(p.pose), gt[conv.stamp_to_ns(p.header.stamp)])
                                       for p in h.poses])
            diags[pipeline] = d
        finally:
            h.close()
    for pipeline, e in errs.items():
        assert e[:, 0].max() < 0.03 and e[:, 1].max() < 1.0, (pipeline, e)
    med_one, med_pipe = np.median(errs[False], axis=0), np.median(errs[True], axis=0)
    assert med_pipe[0] <= 2 * med_one[0] + 0.005 and med_pipe[1] <= 2 * med_one[1] + 0.1, (med_pipe, med_one)
    d = diags[True]
    assert d["pipeline"] == "True" and float(d["extract_ms"]) > 0 and "handover_wait_ms" in d, d
    assert int(d["queue_extracted"]) <= 1 and int(d["frames_dropped_stale"]) == 0, d
    assert diags[False]["pipeline"] == "False" and "handover_wait_ms" not in diags[False]
    # the last frame's keypoint-confidence factor of the covariance (1 for well-textured views, more otherwise)
    assert all(float(x["covariance_factor"]) >= 1.0 for x in diags.values()), diags


def test_pipeline_handover_holds_one_frame_counts_replaced_ones_and_prior_is_chosen_in_stage_2(
        plane_map, harness_factory):
    """Stage 2 is held on frame 0 while stage 1 extracts frames 1..5: the hand-over holds one frame at a time, each
    replaced one is counted as dropped; an /initialpose received meanwhile is the prior of frame 5 (chosen when
    stage 2 takes it, not when stage 1 extracted it)."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="none", pose_frame="camera", pipeline=True,
                        base_from_camera="0 0 0 0 0 0 1")
    node = h.node
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "the node to subscribe")
    entered, release = threading.Event(), threading.Event()
    _blocking_localize(node._localizer, entered, release)
    h.send(_render(_texture(seed=99), _query(70)), 400 * NS)  # frame 0: an unmapped surface, FAILED
    h.wait(entered.is_set, "stage 2 to take frame 0")
    T5 = _query(75)
    for k in range(1, 6):
        h.send(_render(plane_map["tex"], _query(70 + k)), (400 + k) * NS)
        h.wait(lambda k=k: node._frames.slot.pending == 0 and node._frames.handover.dropped == k - 1 and node._frames.handover.pending,
               f"stage 1 to extract frame {k}")
        d = _diag(node)
        assert d["queue_extracted"] == "1" and int(d["frames_dropped_handover"]) == k - 1, d
        assert node._frames.handover.pending <= 1
    assert int(_diag(node)["frames_processed"]) == 0, "stage 2 is still on frame 0"

    T_prior = T5 @ make_T(np.eye(3), [0.05, 0.0, 0.0])
    h.pub_initialpose.publish(conv.pose_with_covariance_stamped(T_prior, np.eye(6) * 0.04, "map", 0))
    h.wait(lambda: node._tracker._prior.initial is not None, "the node to take /initialpose")
    release.set()
    h.wait(lambda: node._done_stamp_ns == 405 * NS, "frame 5 handled")
    d = _diag(node)
    assert d["prior"] == "initialpose" and d["status"] == "LOCALIZED", d
    assert int(d["frames_processed"]) == 2 and int(d["frames_failed"]) == 1, d
    assert int(d["frames_dropped"]) == 4 == int(d["frames_dropped_handover"]), d
    assert int(d["frames_received"]) == 6 == _accounted(d), d
    h.wait(lambda: h.poses, "the pose of frame 5")
    assert [conv.stamp_to_ns(p.header.stamp) for p in h.poses] == [405 * NS]
    err = pose_errors(conv.T_from_pose(h.poses[-1].pose), T5)
    assert err[0] < 0.03 and err[1] < 1.0, err


def test_pipeline_map_reload_never_matches_old_features_against_the_new_map(plane_map, harness_factory, tmp_path):
    """A map reload while frame A is in stage 2 and frame B (extracted for the old map) waits in the hand-over:
    neither is localized against (or published for) the new map; both are counted as dropped; the next frame is
    extracted and localized with the new map's extractor."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="none", pose_frame="camera", pipeline=True)
    node = h.node
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "the node to subscribe")
    old = node._localizer
    entered, release = threading.Event(), threading.Event()
    _blocking_localize(old, entered, release)
    h.send(_render(plane_map["tex"], _query(80)), 500 * NS)  # A
    h.wait(entered.is_set, "stage 2 to take frame A")
    h.send(_render(plane_map["tex"], _query(81)), 501 * NS)  # B
    h.wait(lambda: node._frames.handover.pending == 1, "stage 1 to extract frame B")

    copy = tmp_path / "map_copy"
    shutil.copytree(plane_map["map"], copy)
    assert node.set_parameters([Parameter("map_path", value=str(copy))])[0].successful
    h.wait(lambda: node._localizer is not old and node._loaded["map_path"] == str(copy), "the new map")
    new = node._localizer
    new_features, wrong = [], []  # features made by the new map's extractor; others given to the new localizer
    extract, localize = new.extractor.extract, new.localize

    def recorded(image):
        new_features.append(extract(image))
        return new_features[-1]

    def checked(image, camera, prior=None, features=None):
        if not any(features is f for f in new_features):
            wrong.append(features)
        return localize(image, camera, prior, features=features)

    new.extractor.extract, new.localize = recorded, checked
    release.set()
    h.wait(lambda: node._done_stamp_ns == 501 * NS, "frames A and B handled")
    d = _diag(node)
    assert int(d["frames_dropped_stale"]) == 2 and int(d["frames_processed"]) == 0, d
    assert not wrong, "features of the old map's extractor were matched against the new map"

    T = _query(82)
    h.send(_render(plane_map["tex"], T), 502 * NS)  # C
    h.wait(lambda: node._done_stamp_ns == 502 * NS, "frame C handled")
    d = _diag(node)
    assert d["status"] == "LOCALIZED" and len(new_features) == 1 and not wrong, d
    assert int(d["frames_received"]) == 3 == _accounted(d) and int(d["frames_dropped"]) == 2, d
    h.wait(lambda: h.poses, "the pose of frame C")
    assert [conv.stamp_to_ns(p.header.stamp) for p in h.poses] == [502 * NS], "nothing published for A or B"


def test_pipeline_threads_stop_on_deactivate_and_the_mode_switches_at_activation(plane_map, harness_factory):
    def workers():
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("reloc_") and t.is_alive()
                      and t.name != "reloc_map_reload" and not t.name.startswith("reloc_match"))  # matcher pools

    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="none", pose_frame="camera", pipeline=True)
    node = h.node
    assert workers() == ["reloc_extract", "reloc_localize"]
    assert node.set_parameters([Parameter("pipeline", value=False)])[0].successful
    assert workers() == ["reloc_extract", "reloc_localize"], "applies at the next activation"
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert workers() == [] and node._frames.threads == []
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert workers() == ["reloc_worker"] and node._frames.handover is None
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "the node to subscribe")
    h.send(_render(plane_map["tex"], _query(90)), 600 * NS)
    h.wait(lambda: h.poses, "a pose from the single worker")
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.set_parameters([Parameter("pipeline", value=True)])[0].successful
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert workers() == ["reloc_extract", "reloc_localize"]
    h.send(_render(plane_map["tex"], _query(91)), 601 * NS)
    h.wait(lambda: len(h.poses) == 2, "a pose from the pipeline")
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert workers() == [] and node._frames.handover.wait_idle(0.0)


def _boundary_values(spec):
    """(value, must be accepted) pairs at and beyond a parameter's documented range: its config field's setting
    (reloc_ros/core/config.py), the one source the parameter, its validation and its docs come from."""
    st = spec.setting
    if st.choices:
        return [(c, True) for c in st.choices] + [("no_such_choice", False)]
    if isinstance(spec.default, bool) or isinstance(spec.default, str):
        return []
    cast = type(spec.default)
    out = []
    if st.min is not None:
        lo = cast(st.min)
        out.append((lo, not st.min_exclusive))
        out.append((cast(st.min - 1) if cast is int else st.min - 0.5, False))
    if st.max is not None:
        out.append((cast(st.max), True))
        out.append((cast(st.max) + 1, False))
    return out


def test_every_parameter_at_its_boundaries_is_refused_or_applied(plane_map, harness_factory):
    """Each parameter set at run time to the edges of its range (and past them): refused with a reason, or
    accepted and then in effect in the localizer's / tracker's configuration; never an exception out of
    set_parameters, never a parameter that reads one value while the localizer uses another. Values a single
    range cannot judge (max_median_reproj_px 0.0) are refused by building the candidate configuration."""
    from reloc_ros.ros.parameters import PARAMETERS, RELOAD_PARAMS

    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="none")
    node = h.node
    h.wait(lambda: node.lifecycle_state == "active", "active")
    checked = 0
    for spec in PARAMETERS:
        if spec.name in RELOAD_PARAMS:
            continue
        for value, ok in _boundary_values(spec):
            res = node.set_parameters([Parameter(spec.name, value=value)])[0]
            now = node.get_parameter(spec.name).value
            if not res.successful:
                assert res.reason, (spec.name, value)
                assert now != value or not ok, (spec.name, value, res.reason)
                continue
            assert ok, (spec.name, value, "accepted out of range")
            assert now == value
            if spec.config_field:
                assert getattr(node._localizer.config, spec.config_field) == value, spec.name
            if spec.tracker_field:
                assert getattr(node._tracker.config, spec.tracker_field) == value, spec.name
            checked += 1
        node.set_parameters([Parameter(spec.name, value=spec.default)])
    assert checked > 80, checked
    res = node.set_parameters([Parameter("max_median_reproj_px", value=0.0)])[0]
    assert not res.successful and "max_median_reproj_px" in res.reason
    assert node.get_parameter("max_median_reproj_px").value == -1.0
    assert node._localizer.config.max_median_reproj_px == -1.0


def test_unknown_parameters_and_a_clock_far_from_the_image_stamps_are_reported(plane_map, harness_factory):
    """`-p topk:=3` is reported with the close match (not silently ignored); images stamped 100 s after the epoch
    while the node runs on wall time (a bag replayed without use_sim_time) are reported in /diagnostics."""
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="none", pose_frame="camera", topk=3)
    assert h.node.unknown_parameters == ["topk"]
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
    h.send(_render(plane_map["tex"], _query(1)), 100 * NS)
    h.wait(lambda: h.diags and any(kv.key == "clock_warning" and "use_sim_time" in kv.value
                                   for kv in h.diags[-1].values), "the clock warning")
    d = {kv.key: kv.value for kv in h.diags[-1].values}
    assert d["unknown_parameters"] == "topk" and "use_sim_time:=true" in d["clock_warning"], d
    # stamped now: no warning
    h.send(_render(plane_map["tex"], _query(1)), h.node.get_clock().now().nanoseconds)
    h.wait(lambda: any(kv.key == "clock_warning" and kv.value == "" for kv in h.diags[-1].values),
           "the warning to clear")


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (1600, 1200), (4000, 3000)])
def test_pixel_gates_scale_with_the_image_resolution(plane_map, size):
    """The same view at 320x240 .. 4000x3000 (a camera info that matches each): localized within 2 cm. Pixel
    thresholds are defined up to a 1024 px side and grow with it beyond (at 4000x3000 correct poses reprojected
    > 4 px and every query failed the median gate)."""
    from reloc_ros.core.camera import Camera
    from reloc_ros.core.localizer import Localizer, LocalizerConfig, pixel_scale

    s = size[0] / CAM.width
    cam = Camera(size[0], size[1], CAM.fx * s, CAM.fy * s, (CAM.cx + 0.5) * s - 0.5, (CAM.cy + 0.5) * s - 0.5)
    tex = plane_map["tex"]
    n = tex.shape[0]
    T = _query(11)
    A = np.array([[2 * PLANE_HALF / n, 0, -PLANE_HALF], [0, 2 * PLANE_HALF / n, -PLANE_HALF], [0, 0, 1]])
    Ti = invert_T(T)
    H = cam.K @ np.stack([Ti[:3, 0], Ti[:3, 1], Ti[:3, 3]], axis=1) @ A
    img = cv2.warpPerspective(tex, H, cam.size, flags=cv2.INTER_LINEAR, borderValue=(90, 90, 90))
    loc = Localizer.from_map(plane_map["map"], LocalizerConfig())
    res = loc.localize(img, cam)
    assert res.ok, (size, res.reason)
    assert np.linalg.norm(res.T_map_from_cam[:3, 3] - T[:3, 3]) < 0.02 * max(1.0, pixel_scale(size)), size
    assert loc.max_median_reproj_px() == pytest.approx(4.0 * pixel_scale(size))
    assert loc._pnp_config().reproj_px == pytest.approx(8.0 * pixel_scale(size))


def test_lifecycle_services_driven_as_nav2_lifecycle_manager_does(plane_map, harness_factory):
    """autostart false (the launch file's autostart:=false, for Nav2): the node's lifecycle services, called by
    another node as nav2_lifecycle_manager does, take it through configure, activate, deactivate, cleanup and
    configure + activate again; each transition succeeds and the node localizes when active."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    h = harness_factory(map_path=str(plane_map["map"]), autostart=False, tf_mode="none", pose_frame="camera")
    change = h.helper.create_client(ChangeState, "/reloc_node/change_state")
    get = h.helper.create_client(GetState, "/reloc_node/get_state")
    h.wait(lambda: change.service_is_ready() and get.service_is_ready(), "the lifecycle services")

    def call(cli, req):
        fut = cli.call_async(req)
        h.wait(fut.done, f"{type(req).__name__}")
        return fut.result()

    def transition(tid):
        return call(change, ChangeState.Request(transition=Transition(id=tid))).success

    def state():
        return call(get, GetState.Request()).current_state.label

    assert state() == "unconfigured"
    stamp = h.node.get_clock().now().nanoseconds
    for tid, label in ((Transition.TRANSITION_CONFIGURE, "inactive"), (Transition.TRANSITION_ACTIVATE, "active"),
                       (Transition.TRANSITION_DEACTIVATE, "inactive"), (Transition.TRANSITION_CLEANUP, "unconfigured"),
                       (Transition.TRANSITION_CONFIGURE, "inactive"), (Transition.TRANSITION_ACTIVATE, "active")):
        assert transition(tid), (tid, label)
        assert state() == label and h.node.lifecycle_state == label
        if label == "active" and not h.poses:  # the first activation: a frame, whose pose the tracker remembers
            h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
            h.send(_render(plane_map["tex"], _query(2)), stamp)
            h.wait(lambda: h.poses, "a pose after configure/activate by service")
            assert h.node._tracker._prior.last_good is not None and h.node._steps.last_stamp_ns == stamp
    # cleanup forgot the frames (the tracker's memory, the last stamp): a recording played again from its start,
    # 0.5 s before the last frame, is localized, not dropped as out of order
    assert h.node._tracker._prior.last_good is None and h.node._steps.last_stamp_ns is None
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
    n = len(h.poses)
    h.send(_render(plane_map["tex"], _query(3)), stamp - NS // 2)
    h.wait(lambda: len(h.poses) > n, "a pose after cleanup / configure / activate by service")


def test_node_swaps_live_to_a_merged_map(plane_map, harness_factory, tmp_path):
    """`reloc map merge` output (here: the map and a copy moved by a known transform, aligned back by --align auto)
    is a map like any other: the node swaps to it through map_path and localizes with it in the map's frame."""
    from reloc_ros.pipelines.map_sessions import _transformed, keyframes_of, merge_maps

    db = MapDatabase.load(plane_map["map"])
    T_move = make_T(so3_exp(np.radians([0.0, 0.0, 30.0])), [2.0, -1.0, 0.2])
    MapDatabase.from_keyframes([_transformed(k, T_move) for k in keyframes_of(db)], db.extractor_identity,
                               db.extractor_state).save(tmp_path / "moved")
    merged, rec = merge_maps([plane_map["map"], tmp_path / "moved"], tmp_path / "merged")
    assert rec[1]["applied"] and len(merged) == 2 * len(db)
    h = harness_factory(map_path=str(plane_map["map"]), tf_mode="none", pose_frame="camera")
    node = h.node
    old = node._localizer
    assert node.set_parameters([Parameter("map_path", value=str(tmp_path / "merged"))])[0].successful
    h.wait(lambda: node._localizer is not old and node._loaded["map_path"] == str(tmp_path / "merged"), "the merge")
    assert len(node._localizer.db) == 2 * len(db)
    h.wait(lambda: h.pub_image.get_subscription_count() > 0, "the node to subscribe")
    T_gt = _query(31)
    h.send(_render(plane_map["tex"], T_gt), 700 * NS)
    h.wait(lambda: h.poses, "a pose from the merged map")
    dt, dr = pose_errors(conv.T_from_pose(h.poses[-1].pose), T_gt)
    assert dt < 0.03 and dr < 1.0, (dt, dr)
    # the same map_path again: nothing to reload while the map on disk is the one in use; once the folder holds
    # another map (here the original written over it, as `reloc map update` does in place), it is reloaded
    merged_loc = node._localizer
    assert node.set_parameters([Parameter("map_path", value=str(tmp_path / "merged"))])[0].successful
    time.sleep(0.5)
    assert node._localizer is merged_loc
    db.save(tmp_path / "merged", overwrite=True)
    assert node.set_parameters([Parameter("map_path", value=str(tmp_path / "merged"))])[0].successful
    h.wait(lambda: node._localizer is not merged_loc, "the map changed on disk to be reloaded")
    assert len(node._localizer.db) == len(db)
    # a folder whose new map does not load: the map in use stays, the parameter is set back, and setting it back is
    # not taken for another request (the reload is tried once, not in a loop)
    in_use = node._localizer
    kf = tmp_path / "merged" / "keyframes.h5"
    kf.write_bytes(kf.read_bytes()[:-100])  # its sha256 no longer matches the manifest
    (tmp_path / "merged" / "manifest.yaml").touch()
    assert node.set_parameters([Parameter("map_path", value=str(tmp_path / "merged"))])[0].successful
    h.wait(lambda: "does not match the sha256" in node._map.error, "the failed reload")
    gen = node._map._gen
    time.sleep(1.0)
    assert node._map._gen == gen and node._localizer is in_use, (gen, node._map._gen)
