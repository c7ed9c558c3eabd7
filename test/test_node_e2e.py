"""End to end: ``reloc_node`` in its own process localizes a synthetic query run streamed over real ROS 2.

A small synthetic scene is generated (mapping run -> SIFT map; query run -> rosbag2 with images, camera info,
drifting odometry TF and ground truth). This process plays the query bag at 30 Hz (with /clock, the node uses
sim time) and checks what the node publishes against ground truth and against the offline
:class:`~reloc_ros.core.localizer.Localizer` on the same frames. Then: ``/initialpose``, ``~/relocalize``, bad
inputs, parameter validation and map reload, a bag loop (time jump back), a clean shutdown.

SIFT takes 150-300 ms a VGA frame here, so the node drops most of the 30 Hz frames: the assertions are about
what it does publish. Every wait is for a condition with a timeout (discovery can take ~3 s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import REPO, NodeProcess, ShmJanitor, configure_ros_env, use_ros_env, wait_until

ENV = configure_ros_env("test_node_e2e")  # before rclpy.init

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install ros-rclpy ros-rmw-fastrtps-cpp ...)")
try:
    import tf2_msgs.msg  # noqa: F401
except ImportError:
    pytest.skip("tf2_msgs is not importable: build it with `python tools/build_tf2_msgs.py` (the Makefile does)",
                allow_module_level=True)
import reloc_ros.datasets.synthetic as synthetic  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from reloc_ros.core.geometry import pose_errors  # noqa: E402
from reloc_ros.core.localizer import Localizer  # noqa: E402
from reloc_ros.ros import conversions as conv  # noqa: E402
from reloc_ros.ros.camera_info import camera_from_info  # noqa: E402
from reloc_ros.ros.image_conversion import image_msg_to_localizer_input  # noqa: E402

N_MAP, N_QUERY = 60, 45  # frames of the mapping run and of each query run (30 Hz)
NODE = "/reloc_node"
NS = 1_000_000_000
WAIT = 20.0  # generous timeouts: two cores shared with SIFT and other work
ABS_SLACK_M, ABS_SLACK_DEG = 0.01, 0.2  # "within 2x" plus this, so that 2 mm vs 5 mm does not fail


# --------------------------------------------------------------------------------------------------
@dataclass
class Frame:
    stamp_ns: int
    image: Image
    info: CameraInfo
    tf: TFMessage  # odom -> base_link at the stamp
    T_odom_base: np.ndarray
    T_map_cam_gt: np.ndarray


@dataclass
class Scene:
    root: Path
    map_dir: Path
    frames: list
    tf_static: TFMessage
    T_base_cam: np.ndarray
    timings: dict = field(default_factory=dict)


def _read_query_bag(bag: Path):
    from rosbags.rosbag2 import Reader

    types = {"/camera/image_raw": Image, "/camera/camera_info": CameraInfo, "/tf": TFMessage, "/tf_static": TFMessage,
             "/ground_truth/camera_pose": PoseStamped}
    by_stamp: dict[int, dict] = {}
    tf_static = None
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic not in types:
                continue
            msg = deserialize_message(bytes(raw), types[conn.topic])  # rosbags CDR == rclpy CDR
            if conn.topic == "/tf_static":
                tf_static = msg
                continue
            stamp = conv.stamp_to_ns(msg.transforms[0].header.stamp if conn.topic == "/tf" else msg.header.stamp)
            by_stamp.setdefault(stamp, {})[conn.topic] = msg
    frames = []
    for stamp in sorted(by_stamp):
        d = by_stamp[stamp]
        if len(d) < len(types) - 1:
            continue
        tf = d["/tf"]
        t = next(t for t in tf.transforms if t.header.frame_id == "odom" and t.child_frame_id == "base_link")
        frames.append(Frame(stamp, d["/camera/image_raw"], d["/camera/camera_info"], tf,
                            conv.T_from_transform(t.transform),
                            conv.T_from_pose(d["/ground_truth/camera_pose"].pose)))
    st = next(t for t in tf_static.transforms if t.header.frame_id == "base_link")
    return frames, tf_static, conv.T_from_transform(st.transform), st.child_frame_id


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    root = tmp_path_factory.mktemp("e2e")
    timings = {}
    t0 = time.perf_counter()
    # workers=1: the generator's forked worker pool hung in this environment (see the ROS layer's report)
    synthetic.generate("office", root / "office", n_map=N_MAP, n_query=N_QUERY, seed=0, bag=True, workers=1,
                       progress=False)
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "reloc_ros.cli.main", "-q", "map", "build", "--dataset",
                        str(root / "office"), "--format", "7scenes", "--out", str(root / "map"),
                        "--extractor", "sift"],  # the node's behaviour on a SIFT map (learned: test_replay.py)
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    timings["map_build_s"] = time.perf_counter() - t0
    frames, tf_static, T_base_cam, cam_frame = _read_query_bag(root / "office" / "bags" / "query_1")
    assert len(frames) == N_QUERY and cam_frame == frames[0].image.header.frame_id
    return Scene(root, root / "map", frames, tf_static, T_base_cam, timings)


# --------------------------------------------------------------------------------------------------
class Graph:
    """This process's side of the graph: plays frames, records what the node publishes, calls its services."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self.ctx = rclpy.context.Context()
        use_ros_env(ENV)  # the domain id is read now; other modules may have applied theirs since import
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("e2e_player", context=self.ctx)
        n = self.node
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        tf_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = n.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.pub_info = n.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
        self.pub_tf = n.create_publisher(TFMessage, "/tf", tf_qos)
        self.pub_tf_static = n.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.pub_clock = n.create_publisher(Clock, "/clock", 10)
        self.pub_initialpose = n.create_publisher(PoseWithCovarianceStamped, "/initialpose", 10)
        self.lock = threading.Lock()
        self.poses, self.poses_cov, self.paths, self.markers, self.map_points = [], [], [], [], []
        self.map_keyframes = []
        self.map_odom, self.diags = [], []
        n.create_subscription(PoseStamped, f"{NODE}/pose", self._rec(self.poses), 50)
        n.create_subscription(PoseWithCovarianceStamped, f"{NODE}/pose_with_covariance", self._rec(self.poses_cov), 50)
        n.create_subscription(PathMsg, f"{NODE}/path", self._rec(self.paths), 10)
        n.create_subscription(MarkerArray, f"{NODE}/markers", self._rec(self.markers), 10)
        n.create_subscription(PointCloud2, f"{NODE}/map_points", self._rec(self.map_points), latched)
        n.create_subscription(MarkerArray, f"{NODE}/map_keyframes", self._rec(self.map_keyframes), latched)
        n.create_subscription(TFMessage, "/tf", self._on_tf, tf_qos)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.cli_relocalize = n.create_client(Trigger, f"{NODE}/relocalize")
        self.cli_params = n.create_client(SetParameters, f"{NODE}/set_parameters")
        self.cli_get_params = n.create_client(GetParameters, f"{NODE}/get_parameters")
        self.cli_state = n.create_client(GetState, f"{NODE}/get_state")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._spin.start()
        self.pub_tf_static.publish(scene.tf_static)

    def _spin_forever(self):
        try:
            while self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # context shut down while spinning
            pass

    def _rec(self, store):
        def cb(msg):
            with self.lock:
                store.append(msg)
        return cb

    def _on_tf(self, msg):
        with self.lock:
            for t in msg.transforms:
                if t.header.frame_id == "map":
                    self.map_odom.append(t)

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name.startswith("reloc_node"):
                d = {kv.key: kv.value for kv in st.values}
                d["_level"], d["_message"] = st.level, st.message
                d["_stamp"] = conv.stamp_to_ns(msg.header.stamp)
                with self.lock:
                    self.diags.append(d)

    def last_diag(self) -> dict:
        with self.lock:
            return dict(self.diags[-1]) if self.diags else {}

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self._spin.join(timeout=5)

    # -- playing -----------------------------------------------------------------------------------
    def publish_frame(self, f: Frame, offset_ns: int = 0, image: Image | None = None, info: CameraInfo | None = None):
        stamp = conv.ns_to_stamp(f.stamp_ns + offset_ns)
        self.pub_clock.publish(Clock(clock=stamp))
        tf = TFMessage(transforms=[conv.transform_stamped(f.T_odom_base, "odom", "base_link", f.stamp_ns + offset_ns)])
        self.pub_tf.publish(tf)
        info = info if info is not None else f.info
        info.header.stamp = stamp
        self.pub_info.publish(info)
        img = image if image is not None else f.image
        img.header.stamp = stamp
        img.header.frame_id = f.image.header.frame_id
        self.pub_image.publish(img)
        return f.stamp_ns + offset_ns

    def play(self, indices, offset_ns: int = 0, rate_hz: float = 30.0) -> list[int]:
        """Publish frames paced at ``rate_hz`` (wall clock); returns their stamps."""
        t0 = time.monotonic()
        stamps = []
        for k, i in enumerate(indices):
            delay = t0 + k / rate_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the stream, not waiting for a result
            stamps.append(self.publish_frame(self.scene.frames[i], offset_ns))
        return stamps

    def wait_done(self, stamp_ns: int, what: str = "frame", timeout: float = WAIT, exact: bool = False) -> dict:
        """Wait until the node reports the frame with ``stamp_ns`` handled (or a later one, unless ``exact``:
        after a jump back in time every earlier frame's stamp is already "later"); its diagnostics."""
        def done():
            d = self.last_diag()
            if d.get("last_done_stamp_ns", "") in ("", None):
                return False
            last = int(d["last_done_stamp_ns"])
            return last == stamp_ns if exact else last >= stamp_ns
        wait_until(done, timeout, what=f"the node to handle {what} (stamp {stamp_ns / NS:.3f})")
        return self.last_diag()

    def call(self, client, request, timeout: float = WAIT):
        wait_until(lambda: client.service_is_ready(), timeout, what=f"service {client.srv_name}")
        fut = client.call_async(request)
        wait_until(fut.done, timeout, what=f"response of {client.srv_name}")
        return fut.result()

    def get_param(self, name: str):
        res = self.call(self.cli_get_params, GetParameters.Request(names=[name]))
        v = res.values[0]
        return {1: v.bool_value, 2: v.integer_value, 3: v.double_value, 4: v.string_value}.get(v.type)

    def set_param(self, name: str, value):
        kinds = {bool: (ParameterType.PARAMETER_BOOL, "bool_value"),
                 int: (ParameterType.PARAMETER_INTEGER, "integer_value"),
                 float: (ParameterType.PARAMETER_DOUBLE, "double_value"),
                 str: (ParameterType.PARAMETER_STRING, "string_value")}
        kind, attr = kinds[type(value)]
        pv = ParameterValue(type=kind)
        setattr(pv, attr, value)
        res = self.call(self.cli_params, SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)]))
        return res.results[0]


@dataclass
class Session:
    scene: Scene
    graph: Graph
    node: NodeProcess
    janitor: ShmJanitor
    offset_ns: int = 0  # grows so that every phase plays frames later than the previous one
    results: dict = field(default_factory=dict)

    def next_offset(self) -> int:
        self.offset_ns += 10 * NS
        return self.offset_ns


@pytest.fixture(scope="module")
def session(scene, tmp_path_factory):
    janitor = ShmJanitor()
    log = tmp_path_factory.mktemp("node") / "reloc_node.log"
    node = NodeProcess(ENV, ["--params-file", str(REPO / "config" / "localizer.yaml"),
                             "-p", f"map_path:={scene.map_dir}", "-p", "use_sim_time:=true",
                             "-p", "tf_publish_rate_hz:=5.0",
                             # a 42-frame run (1.4 s): the tracker's motion rule is tested in test_tracking*.py
                             "-p", "track_min_motion_m:=0.0",
                             "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"], log)
    graph = Graph(scene)
    s = Session(scene, graph, node, janitor)
    try:
        # the node is up when its image subscription matched ours (discovery can take ~3 s)
        wait_until(lambda: graph.pub_image.get_subscription_count() > 0 or not node.alive(), 60.0,
                   what="reloc_node to subscribe to the image topic")
        assert node.alive(), node.log()[-3000:]
        wait_until(lambda: graph.pub_tf.get_subscription_count() > 0 and graph.pub_info.get_subscription_count() > 0,
                   WAIT, what="reloc_node to subscribe /tf and camera_info")
        yield s
    finally:
        graph.close()
        rc = node.stop()
        s.results["node_exit_code"] = rc
        removed = janitor.cleanup()
        if removed:
            print(f"removed stale shared-memory files: {removed}")


# --------------------------------------------------------------------------------------------------
def test_node_is_active_and_latches_map_points(session):
    g = session.graph
    res = g.call(g.cli_state, GetState.Request())
    assert res.current_state.label == "active"
    wait_until(lambda: len(g.map_points) > 0, WAIT, what="latched ~/map_points")
    cloud = g.map_points[-1]
    db_points = Localizer.from_map(session.scene.map_dir).db.valid_points()
    assert cloud.header.frame_id == "map"
    assert 0 < cloud.width <= min(len(db_points), 200000)
    xyz = conv.pointcloud2_to_xyz(cloud)
    assert np.all(np.isfinite(xyz))
    # the keyframes, those with a look-alike elsewhere in the map apart (the map was built with the analysis)
    wait_until(lambda: len(g.map_keyframes) > 0, WAIT, what="latched ~/map_keyframes")
    db = Localizer.from_map(session.scene.map_dir).db
    assert db.alias_inliers is not None
    by_ns = {m.ns: len(m.points) for m in g.map_keyframes[-1].markers}
    assert by_ns == {"keyframes": int((db.alias_inliers == 0).sum()),
                     "keyframes_with_lookalike": int((db.alias_inliers > 0).sum())}, by_ns
    assert all(m.header.frame_id == "map" for m in g.map_keyframes[-1].markers)


def test_stream_query_run_accuracy_and_map_to_odom(session):
    """Stream the query run at 30 Hz; compare published poses and map->odom with GT and the offline localizer."""
    g, sc = session.graph, session.scene
    t_start = time.monotonic()
    stamps = g.play(range(len(sc.frames)))
    stream_s = time.monotonic() - t_start
    d = g.wait_done(stamps[-1], "the last streamed frame")
    by_stamp = {f.stamp_ns: f for f in sc.frames}
    n_loc = int(d["frames_localized"])

    def all_delivered():  # topics are independent writers: the diagnostics may overtake the last pose / TF
        with g.lock:
            tf_stamps = {conv.stamp_to_ns(t.header.stamp) for t in g.map_odom}
            return (len(g.poses) >= n_loc and len(g.poses_cov) >= n_loc
                    and all(any(0 <= s - conv.stamp_to_ns(p.header.stamp) <= 1000 for s in tf_stamps)
                            for p in g.poses))
    wait_until(all_delivered, WAIT, what="every pose, pose with covariance and map->odom to arrive")
    with g.lock:
        poses = list(g.poses)
        poses_cov = list(g.poses_cov)
        map_odom = [t for t in g.map_odom if t.child_frame_id == "odom"]
    assert poses, f"no pose published; diagnostics: {d}\nnode log:\n{session.node.log()[-3000:]}"

    # bookkeeping: every received frame is accounted for; drops are counted; failures never published
    received, processed = int(d["frames_received"]), int(d["frames_processed"])
    accounted = processed + int(d["frames_dropped"]) + int(d["frames_rate_skipped"]) + int(d["frames_out_of_order"]) \
        + int(d["input_errors"])
    # Images travel best effort (SensorDataQoS, as cameras publish them): on a loaded 2-core machine DDS may lose a
    # few before the node's callback sees them (seen once: 39 of 45). Those are not the node's to count; every
    # frame the node did receive must be accounted for.
    assert len(stamps) >= received >= 0.8 * len(stamps) and accounted == received, d
    assert len(poses) == int(d["frames_localized"]) == len(poses_cov), d
    assert all(conv.stamp_to_ns(p.header.stamp) in by_stamp and p.header.frame_id == "map" for p in poses)
    assert int(d["frames_failed"]) == processed - len(poses)
    assert d["_stamp"] >= stamps[0] - NS, "diagnostics not stamped in sim time (use_sim_time)"

    # node poses (base_link) -> camera poses -> errors vs ground truth
    err_node, frames_done, T_node_cam = [], [], {}
    for p in poses:
        f = by_stamp[conv.stamp_to_ns(p.header.stamp)]
        T_cam = conv.T_from_pose(p.pose) @ sc.T_base_cam
        T_node_cam[f.stamp_ns] = T_cam
        err_node.append(pose_errors(T_cam, f.T_map_cam_gt))
        frames_done.append(f)
    cov = np.array(poses_cov[0].pose.covariance).reshape(6, 6)
    assert np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0) and np.allclose(cov, cov.T)

    # the offline localizer on the same frames (no prior)
    loc = Localizer.from_map(sc.map_dir)
    err_off = []
    for f in frames_done:
        res = loc.localize(image_msg_to_localizer_input(f.image), camera_from_info(f.info))
        if res.ok:
            err_off.append(pose_errors(res.T_map_from_cam, f.T_map_cam_gt))
    assert err_off, "the offline localizer failed on every frame the node localized"
    med_node, med_off = np.median(err_node, axis=0), np.median(err_off, axis=0)
    assert med_node[0] <= 2 * med_off[0] + ABS_SLACK_M, (med_node, med_off)
    assert med_node[1] <= 2 * med_off[1] + ABS_SLACK_DEG, (med_node, med_off)

    # map->odom, sent at the image stamp (1 ns later if a future-dated republication took that stamp),
    # composed with the odometry and the mount at that stamp, is the camera pose the node published
    err_tf = []
    for stamp, T_cam_node in T_node_cam.items():
        f = by_stamp[stamp]
        cands = [conv.T_from_transform(t.transform) @ f.T_odom_base @ sc.T_base_cam for t in map_odom
                 if 0 <= conv.stamp_to_ns(t.header.stamp) - stamp <= 1000]
        assert cands, f"no map->odom at the image stamp {stamp / NS:.3f}"
        T_cam = min(cands, key=lambda T: np.abs(T - T_cam_node).max())
        np.testing.assert_allclose(T_cam, T_cam_node, atol=1e-6)
        err_tf.append(pose_errors(T_cam, f.T_map_cam_gt))
    med_tf = np.median(err_tf, axis=0)
    assert med_tf[0] <= 2 * med_off[0] + ABS_SLACK_M and med_tf[1] <= 2 * med_off[1] + ABS_SLACK_DEG

    # the periodic republication is future-dated (AMCL style) relative to the sim clock
    future = [t for t in map_odom if conv.stamp_to_ns(t.header.stamp) not in T_node_cam]
    if future:
        assert all(conv.stamp_to_ns(t.header.stamp) > stamps[0] for t in future)
    with g.lock:
        assert g.paths and len(g.paths[-1].poses) == len(poses)
        assert g.markers and any(m.ns == "matched_points" and len(m.points) > 0 for m in g.markers[-1].markers)

    session.results.update(
        frames_streamed=len(stamps), stream_s=round(stream_s, 2), poses=len(poses), processed=processed,
        dropped=int(d["frames_dropped"]), output_rate_hz=float(d["output_rate_hz"]),
        latency_p50_ms=float(d["latency_p50_ms"]), latency_p95_ms=float(d["latency_p95_ms"]),
        median_err_node=(round(float(med_node[0]), 4), round(float(med_node[1]), 3)),
        median_err_offline=(round(float(med_off[0]), 4), round(float(med_off[1]), 3)),
        median_err_map_odom=(round(float(med_tf[0]), 4), round(float(med_tf[1]), 3)),
        last_frame_stage_ms={k[:-3]: float(v) for k, v in d.items() if k.endswith("_ms") and "latency" not in k},
        **sc.timings)
    print("\nreloc_node e2e:", session.results)


def test_relocalize_and_initialpose_priors(session):
    g, sc = session.graph, session.scene
    # single frames: a place confirmed by one pose (the tracker's rule after ~/relocalize, a cold start that needs
    # motion, is tested in test_tracking_node.py)
    assert g.set_param("odom_accept_after", 1).successful
    res = g.call(g.cli_relocalize, Trigger.Request())
    assert res.success and "without a prior" in res.message
    off = session.next_offset()
    d = g.wait_done(g.publish_frame(sc.frames[10], off), "a frame after ~/relocalize")
    assert d["prior"] == "none" and d["status"] == "LOCALIZED", d
    # the pose after ~/relocalize was accepted: the next frame's prior is the pose odometry predicts from it
    d = g.wait_done(g.publish_frame(sc.frames[12], off), "the next frame")
    assert d["prior"] == "odometry" and d["status"] == "LOCALIZED", d

    # /initialpose: the base pose of frame 30 (as RViz "2D Pose Estimate" sends it)
    f = sc.frames[30]
    T_map_base = f.T_map_cam_gt @ np.linalg.inv(sc.T_base_cam)
    msg = conv.pose_with_covariance_stamped(T_map_base, np.diag([0.25, 0.25, 0.25, 0.07, 0.07, 0.07]), "map", 0)
    n_before = len(g.poses)
    g.pub_initialpose.publish(msg)
    wait_until(lambda: "prior from /initialpose" in session.node.log(), WAIT, what="the node to take /initialpose")
    stamp = g.publish_frame(f, off)
    d = g.wait_done(stamp, "a frame after /initialpose")
    assert d["prior"] == "initialpose" and d["status"] == "LOCALIZED", d
    wait_until(lambda: len(g.poses) > n_before, WAIT, what="the pose after /initialpose")
    p = g.poses[-1]
    assert conv.stamp_to_ns(p.header.stamp) == stamp
    err = pose_errors(conv.T_from_pose(p.pose) @ sc.T_base_cam, f.T_map_cam_gt)
    assert err[0] < 0.1 and err[1] < 2.0, err


def test_bad_inputs_reported_and_node_keeps_running(session):
    g, sc = session.graph, session.scene
    assert g.set_param("odom_accept_after", 1).successful  # single frames: see test_relocalize_and_initialpose_priors
    off = session.next_offset()
    f = sc.frames[20]
    cases = []
    yuv = Image(height=480, width=640, encoding="yuv422", step=1280, data=bytes(640 * 480 * 2))
    cases.append(("wrong encoding", dict(image=yuv), "unsupported image encoding 'yuv422'"))
    empty = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
    cases.append(("empty image", dict(image=empty), "empty image"))
    zero_k = CameraInfo(width=640, height=480, distortion_model="plumb_bob", d=[0.0] * 5)
    cases.append(("zero-K camera_info", dict(info=zero_k), "not calibrated"))
    for k, (what, kw, needle) in enumerate(cases):
        n_err = int(g.last_diag().get("input_errors", 0))
        stamp = g.publish_frame(f, off + k * NS // 10, **kw)
        d = g.wait_done(stamp, what)
        assert int(d["input_errors"]) == n_err + 1, (what, d)
        assert d["_level"] == DiagnosticStatus.ERROR and needle in d["_message"], (what, d["_message"])
        assert session.node.alive()
    n_poses = len(g.poses)
    d = g.wait_done(g.publish_frame(f, off + NS), "a good frame after the bad ones")
    assert d["status"] == "LOCALIZED" and d["_level"] == DiagnosticStatus.OK, d
    wait_until(lambda: len(g.poses) > n_poses, WAIT, what="a pose after the bad inputs")


def test_parameters_validated_and_map_reloaded_in_background(session, tmp_path):
    g, sc = session.graph, session.scene
    # single frames after reloads: publish a pose without waiting for the tracker to confirm the place again
    assert g.set_param("odom_accept_after", 1).successful
    assert g.set_param("track_min_motion_m", 0.0).successful
    r = g.set_param("top_k", 0)
    assert not r.successful and "out of range" in r.reason
    r = g.set_param("tf_mode", "map_world")
    assert not r.successful and "map_odom" in r.reason
    r = g.set_param("map_path", str(tmp_path / "nonexistent"))
    assert not r.successful and "not a directory" in r.reason
    assert g.set_param("top_k", 4).successful

    # a corrupt map: the reload fails, the old map stays and keeps localizing
    bad = tmp_path / "map_bad"
    shutil.copytree(sc.map_dir, bad)
    with open(bad / "keyframes.h5", "r+b") as fh:
        fh.truncate(1000)
    assert g.set_param("map_path", str(bad)).successful
    wait_until(lambda: "keeping" in g.last_diag().get("map_error", ""), WAIT, what="the failed reload to be reported")
    # the parameter names the map in use again (a later configure loads it, not the broken one)
    wait_until(lambda: g.get_param("map_path") == str(sc.map_dir), WAIT, what="map_path to be set back")
    off = session.next_offset()
    d = g.wait_done(g.publish_frame(sc.frames[5], off), "a frame after the failed reload")
    assert d["status"] == "LOCALIZED" and d["map_path"] == str(sc.map_dir), d

    # a good map: swapped in once loaded
    good = tmp_path / "map_copy"
    shutil.copytree(sc.map_dir, good)
    assert g.set_param("map_path", str(good)).successful
    wait_until(lambda: g.last_diag().get("map_path") == str(good) and not g.last_diag().get("map_error"), WAIT,
               what="the new map to be loaded")
    d = g.wait_done(g.publish_frame(sc.frames[7], off), "a frame with the reloaded map")
    assert d["status"] == "LOCALIZED", d


def test_time_jump_back_resets_state(session):
    """A bag loop: frames whose stamps jump back by more than time_jump_reset_s reset the node's state."""
    g = session.graph
    assert g.set_param("odom_accept_after", 1).successful  # after the reset, publish without re-confirmation
    assert g.set_param("track_min_motion_m", 0.0).successful
    resets = int(g.last_diag()["resets"])
    n_tf = len(g.map_odom)
    stamps = g.play([0, 2, 4, 6], offset_ns=-5 * NS, rate_hz=5.0)  # earlier than anything played so far
    d = g.wait_done(stamps[-1], "the looped frames", exact=True)
    assert int(d["resets"]) == resets + 1, d
    assert "jumped back" in session.node.log()
    wait_until(lambda: any(conv.stamp_to_ns(t.header.stamp) in stamps for t in g.map_odom[n_tf:]), WAIT,
               what="map->odom after the loop (odometry TF buffer reset too)")
    assert session.node.alive()


def test_clean_shutdown(session):
    rc = session.node.stop()
    assert rc == 0, session.node.log()[-3000:]
    assert "Traceback" not in session.node.log(), session.node.log()[-3000:]
