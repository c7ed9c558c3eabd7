"""Live replay: ``reloc_node`` in a subprocess, the bag played into it over ROS 2, its output scored.

The player (this process, rclpy) publishes the bag's ``/tf_static`` (latched), then ``/clock``, ``/tf``, camera
info and images in recording order, paced at the recorded rate times ``rate``; bags without ``/clock`` get one
from the recording time of each message. The node runs with ``use_sim_time`` and ``pose_frame: camera`` (so
``~/pose`` is the camera optical frame, like the ground truth), and ``tf_mode: none`` when the bag has no
``/tf`` (no odometry to compose ``map -> odom`` with). Recorded: ``~/pose`` (the estimates, stamped
with their image's stamp) and ``/diagnostics`` (the status, reason and per-stage timings of each handled
frame, and the node's counters). The node drops stale frames (newest wins) when it is slower than the bag:
only the frames it handled are scored; ``replay.frames_dropped`` says how many it skipped.

Every ROS process of a replay stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in a domain
of its own (``domain_id``), with the shared-memory Fast DDS profile for VGA images (config/fastdds_shm.xml)
unless the environment names another (:mod:`reloc_ros.replay.ros_process`). The node is always stopped (SIGINT,
then SIGTERM, then SIGKILL), and the Fast DDS shared-memory files the replay's processes leave are removed
(:mod:`reloc_ros.replay.shm`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reloc_ros.core.mapdb import manifest_path
from reloc_ros.datasets.base import DatasetError
from reloc_ros.datasets.rosbag import NS, BagTopics, bag_dir, open_reader, read_ground_truth, require_camera_topics
from reloc_ros.replay.ros_process import NodeProcess, ros_env, use_ros_env
from reloc_ros.replay.run import ReplayRun, frame_record
from reloc_ros.replay.shm import ShmCleanup
from reloc_ros.ros.parameters import NODE_NAME

__all__ = ["replay_live", "LiveOptions", "ReplayError"]

_STAGE_SUFFIX = "_ms"
_NOT_STAGES = {"latency_p50_ms", "latency_p95_ms"}


class ReplayError(RuntimeError):
    """The live replay could not run (the node did not start, or did not finish); the message says why."""


@dataclass
class LiveOptions:
    """How the live replay runs."""

    rate: float = 1.0  # playback speed (1.0 = recorded rate)
    domain_id: int | None = None  # ROS_DOMAIN_ID of the replay (None: one derived from the pid, 1..200)
    node_args: list[str] = field(default_factory=list)  # extra ROS arguments of the node, e.g. ["-p", "top_k:=3"]
    startup_timeout_s: float = 90.0  # the node loads the map (and model) before it subscribes
    finish_timeout_s: float = 60.0  # after the last image: wait this long for the node to handle it
    log_path: Path | None = None  # the node's output (default: a temporary file, shown in errors)
    start_frame: int = 0  # play from the image with this index on (a node started in the middle of a recording)
    params_file: Path | None = None  # a ROS 2 parameters file for the node, read before the replay's own settings


# --------------------------------------------------------------------------------------------------
@dataclass
class _Playlist:
    """What the player sends: the bag's topics to play (streamed in recording order) and its static TF."""

    bag: Path
    topics: list[str]  # played in recording order
    static: list[bytes]  # /tf_static messages (raw CDR), sent once, latched

    @property
    def has_clock(self) -> bool:
        return "/clock" in self.topics

    @property
    def has_tf(self) -> bool:
        return "/tf" in self.topics

    def image_time(self, image_topic: str, index: int) -> int:
        """Recording time (ns) of the ``index``-th image of the bag."""
        r = open_reader(self.bag)
        n = 0
        try:
            for _, t, _ in r.messages(connections=[c for c in r.connections if c.topic == image_topic]):
                if n == index:
                    return int(t)
                n += 1
        finally:
            r.close()
        raise DatasetError(f"{self.bag}: --start-frame {index} is past the last image ({n} images)")

    def messages(self):
        """``(recording time ns, topic, raw CDR bytes)`` in recording order, read from the bag as it plays."""
        r = open_reader(self.bag)
        try:
            conns = [c for c in r.connections if c.topic in self.topics]
            for c, t, raw in r.messages(connections=conns):
                yield int(t), c.topic, bytes(raw)
        finally:
            r.close()


def _playlist(bag: Path, topics: BagTopics) -> _Playlist:
    """Check the bag's topics and read its static TF."""
    r = open_reader(bag)
    try:
        tops = {c.topic: c.msgtype for c in r.connections}
        require_camera_topics(tops, topics)
        counts = {c.topic: c.msgcount for c in r.connections}
        static = [bytes(raw) for _, _, raw in r.messages(connections=[c for c in r.connections
                                                                      if c.topic == "/tf_static"])]
    finally:
        r.close()
    for t, what in ((topics.image, "image"), (topics.info_topic, "camera_info")):
        if not counts.get(t):
            raise DatasetError(f"{bag}: {what} topic {t} has no messages; record it with the images")
    played = [topics.image, topics.info_topic] + [t for t in ("/tf", "/clock") if t in tops]
    return _Playlist(bag, played, static)


class _Graph:
    """This process's side: the player's publishers and the recorder's subscriptions."""

    def __init__(self, topics: BagTopics):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from tf2_msgs.msg import TFMessage

        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        n = self.node = rclpy.create_node("reloc_replay_player", context=self.ctx)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {
            topics.image: n.create_publisher(Image, topics.image, qos_profile_sensor_data),
            topics.info_topic: n.create_publisher(CameraInfo, topics.info_topic, qos_profile_sensor_data),
            "/tf": n.create_publisher(TFMessage, "/tf", reliable),
            "/tf_static": n.create_publisher(TFMessage, "/tf_static", QoSProfile(
                depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)),
            "/clock": n.create_publisher(Clock, "/clock", 10),
        }
        self.Clock = Clock
        self.lock = threading.Lock()
        self.poses: dict[int, tuple] = {}  # stamp -> (T_map_from_cam, wall time received)
        self.poses_cov: dict[int, np.ndarray] = {}
        self.frames: dict[int, tuple] = {}  # stamp -> (diagnostic values, wall time received)
        self.last: dict = {}
        n.create_subscription(PoseStamped, f"/{NODE_NAME}/pose", self._on_pose, reliable)
        n.create_subscription(PoseWithCovarianceStamped, f"/{NODE_NAME}/pose_with_covariance", self._on_pose_cov,
                              reliable)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)
        self.map_points_seen = threading.Event()
        n.create_subscription(PointCloud2, f"/{NODE_NAME}/map_points", lambda _: self.map_points_seen.set(), latched)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._spin.start()

    def _spin_forever(self) -> None:
        try:
            while self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # the context was shut down while spinning
            pass

    def _on_pose(self, msg) -> None:
        from reloc_ros.ros import conversions as conv

        with self.lock:
            self.poses[conv.stamp_to_ns(msg.header.stamp)] = (conv.T_from_pose(msg.pose), time.monotonic())

    def _on_pose_cov(self, msg) -> None:
        from reloc_ros.ros import conversions as conv

        with self.lock:
            self.poses_cov[conv.stamp_to_ns(msg.header.stamp)] = np.array(msg.pose.covariance).reshape(6, 6)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if not st.name.startswith(NODE_NAME):
                continue
            d = {kv.key: kv.value for kv in st.values}
            with self.lock:
                self.last = d
                done = d.get("last_done_stamp_ns", "")
                if done not in ("", None) and int(done) not in self.frames:
                    self.frames[int(done)] = (d, time.monotonic())

    def publish_raw(self, topic: str, raw: bytes) -> None:
        self.pubs[topic].publish(raw)  # serialized CDR: rosbags and rclpy bytes are interchangeable

    def publish_clock(self, t_ns: int) -> None:
        from reloc_ros.ros import conversions as conv

        self.pubs["/clock"].publish(self.Clock(clock=conv.ns_to_stamp(t_ns)))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        self._spin.join(timeout=5)


def _wait(pred, timeout: float, what: str, node: NodeProcess) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if not node.alive():
            refused = [ln for ln in node.tail().splitlines() if ln.startswith("reloc_node: ")]
            if node.proc.returncode == 2 and refused:  # the node's own one-line refusal (a bad parameter, file)
                sources = "--config, --node-arg, --model" if node.has_params_file else "--node-arg, --model"
                raise ReplayError(f"{refused[-1]} (the node's arguments: {sources})")
            raise ReplayError(f"reloc_node exited (code {node.proc.returncode}) while waiting for {what}; its log "
                              f"({node.log_path}):\n{node.tail()}")
        if time.monotonic() > deadline:
            raise ReplayError(f"timed out after {timeout:.0f} s waiting for {what}; node log ({node.log_path}):\n"
                              f"{node.tail()}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------------
def replay_live(map_path: Path, bag: Path, topics: BagTopics = BagTopics(),
                options: LiveOptions = LiveOptions()) -> ReplayRun:
    """Play ``bag`` into ``reloc_node`` (a subprocess with ``map_path``) and score what it publishes.

    Raises:
        DatasetError: unusable bag (missing topics, no camera_info, no ground truth).
        ReplayError: rclpy / tf2_msgs missing, the node did not start or did not handle the last image in time.
    """
    if options.rate <= 0:
        raise ValueError(f"--rate must be > 0 (got {options.rate})")
    if options.start_frame < 0:
        raise ValueError(f"--start-frame must be >= 0 (got {options.start_frame})")
    manifest_path(map_path)  # a folder that is no map: said before a node is started for it (as offline)
    bag = bag_dir(bag)
    gt = read_ground_truth(bag, topics)
    playlist = _playlist(bag, topics)
    log_dir_before = os.environ.get("ROS_LOG_DIR")
    env = ros_env(options.domain_id, "reloc_replay_log_", keep=True)  # this process's and the node's
    # the temporary folders of this run, removed after a run that went well: ROS_LOG_DIR unless the environment
    # named one (ros_env keeps it then), and the node's log folder unless options.log_path names the file
    ros_log_dir = env["ROS_LOG_DIR"] if env["ROS_LOG_DIR"] != log_dir_before else None
    use_ros_env(env)  # read by rcl when this process's context starts
    try:
        import rclpy  # noqa: F401
        import tf2_msgs.msg  # noqa: F401
    except ImportError as e:
        raise ReplayError(f"live replay needs rclpy and tf2_msgs ({e}): install the [ros] extra and run "
                          "`python tools/build_tf2_msgs.py` (the Makefile does both), or use offline replay") from None
    node_log_dir = None if options.log_path is not None else tempfile.mkdtemp(prefix="reloc_replay_")
    log_path = Path(options.log_path or Path(node_log_dir) / "reloc_node.log")
    has_tf = playlist.has_tf
    ros_args = ["-r", f"__node:={NODE_NAME}",
                *(["--params-file", str(Path(options.params_file).resolve())] if options.params_file else []),
                "-p", f"map_path:={Path(map_path).resolve()}",
                "-p", "use_sim_time:=true", "-p", "pose_frame:=camera",
                "-r", f"image:={topics.image}", "-r", f"camera_info:={topics.info_topic}",
                *([] if has_tf else ["-p", "tf_mode:=none"]),  # no odometry in the bag: nothing to compose with
                *options.node_args]
    shm = ShmCleanup()
    ok = False
    node = NodeProcess(env, ros_args, log_path)
    graph = None
    try:
        graph = _Graph(topics)
        t_start = time.monotonic()
        inputs = [graph.pubs[t] for t in (topics.image, topics.info_topic) + (("/tf",) if has_tf else ())]
        _wait(lambda: all(p.get_subscription_count() > 0 for p in inputs), options.startup_timeout_s,
              "reloc_node to load the map and subscribe to its inputs", node)
        # its latched ~/map_points reaching us means the node discovered this process too (discovery is per side)
        _wait(graph.map_points_seen.is_set, 10.0, "the node's latched ~/map_points", node)
        startup_s = time.monotonic() - t_start
        for raw in playlist.static:
            graph.publish_raw("/tf_static", raw)
        sent = _play(graph, playlist, topics, options.rate, options.start_frame)
        last = max(sent)

        def finished() -> bool:
            with graph.lock:
                d = dict(graph.last)
            return d.get("last_done_stamp_ns", "") not in ("", None) and int(d["last_done_stamp_ns"]) >= last
        _wait(finished, options.finish_timeout_s, "reloc_node to handle the last image", node)
        _wait(lambda: _delivered(graph), 5.0, "the last poses to arrive", node)
        run = _score(graph, sent, gt, str(bag), str(map_path), options.start_frame)
        run.stats.update(startup_s=round(startup_s, 2), rate=options.rate)
        troubled = "Traceback" in node.log()
        if options.log_path is not None or troubled:
            run.stats["node_log"] = str(log_path)
        ok = not troubled  # a node log with a traceback is kept (and named) even when the run went well
        return run
    finally:
        if graph is not None:
            graph.close()
        node.stop()
        shm.cleanup()  # what the node left; this process's own ports are still mapped until it exits:
        atexit.register(shm.cleanup, include_own=True)
        if ok:  # the logs of a run that went well are not kept (a failed run's errors name its node log)
            for d in (ros_log_dir, node_log_dir):
                if d is not None:
                    shutil.rmtree(d, ignore_errors=True)
            if ros_log_dir is not None:
                os.environ.pop("ROS_LOG_DIR", None)  # the next run makes its own


def _play(graph: _Graph, playlist: _Playlist, topics: BagTopics, rate: float, start_frame: int = 0
          ) -> dict[int, float]:
    """Publish the playlist at the recorded pace from the ``start_frame``-th image's recording time on (what was
    recorded before it is skipped); returns {image stamp: wall time it was sent}."""
    sent: dict[int, float] = {}
    has_clock = playlist.has_clock
    t0_bag, t0_wall = None, time.monotonic()
    t_start = playlist.image_time(topics.image, start_frame) if start_frame > 0 else None
    for t, topic, raw in playlist.messages():
        if t_start is not None and t < t_start:
            continue
        if t0_bag is None:
            t0_bag = t
        delay = t0_wall + (t - t0_bag) / NS / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the playback
        if not has_clock:
            graph.publish_clock(t)
        if topic == topics.image:
            sent[_header_stamp_ns(raw)] = time.monotonic()
        graph.publish_raw(topic, raw)
    if not sent:
        raise DatasetError(f"image topic {topics.image} has no messages")
    return sent


def _header_stamp_ns(raw: bytes) -> int:
    """``header.stamp`` of a serialized message that starts with a ``std_msgs/Header`` (sensor_msgs/Image), read
    from its CDR bytes: 4 bytes of encapsulation (the second one odd: little endian), then ``int32 sec``,
    ``uint32 nanosec``. Deserialising a VGA image just for its stamp would copy ~1 MB per frame."""
    sec, nanosec = struct.unpack_from("<iI" if raw[1] & 1 else ">iI", raw, 4)
    return sec * NS + nanosec


def _delivered(graph: _Graph) -> bool:
    """Every frame the diagnostics call localized has its pose (topics are independent writers)."""
    with graph.lock:
        return all(s in graph.poses for s, (d, _) in graph.frames.items() if d.get("status") == "LOCALIZED")


def _score(graph: _Graph, sent: dict, gt, bag: str, map_path: str, start_frame: int = 0) -> ReplayRun:
    """The run's records, named by the image's index in the bag (``start_frame`` is the first one sent), and its
    stats, with ``first_pose_s``: the recording time from the first image sent to the first published pose (None when
    none was), the cold-start figure of ``reloc eval --track``."""
    with graph.lock:
        frames, poses, covs, last = dict(graph.frames), dict(graph.poses), dict(graph.poses_cov), dict(graph.last)
    run = ReplayRun("live", bag, map_path, gt=gt)
    no_gt = 0
    stamps = sorted(sent)
    index = {s: i for i, s in enumerate(stamps)}
    for s in sorted(frames):
        if s not in sent:
            continue  # a frame from before this replay (cannot happen in a fresh domain; be safe)
        T_gt = gt.at(s)
        if T_gt is None:
            no_gt += 1
            continue
        d, t_diag = frames[s]
        ok = s in poses and d.get("status") == "LOCALIZED"
        t_done = poses[s][1] if ok else t_diag
        timings = {k[: -len(_STAGE_SUFFIX)]: float(v) for k, v in d.items()
                   if k.endswith(_STAGE_SUFFIX) and k not in _NOT_STAGES and v not in ("", None)}
        timings["end_to_end"] = (t_done - sent[s]) * 1000.0
        run.records.append(frame_record(f"frame-{start_frame + index[s]:06d}", s, T_gt, ok, d.get("status", ""),
                                        d.get("reason", ""), poses[s][0] if ok else None, covs.get(s), timings,
                                        int(d.get("num_matches") or 0), int(d.get("num_inliers") or 0),
                                        d.get("reason_code", "")))
    if not run.records:
        raise ReplayError(f"reloc_node handled no image with ground truth ({len(frames)} handled, {no_gt} without "
                          f"ground truth); its last diagnostics: {last}")
    published = sorted(r["stamp_ns"] for r in run.records if r["ok"])
    first_pose_s = round((published[0] - stamps[0]) / NS, 3) if published else None
    run.stats = {"images_sent": len(sent), "frames_handled": len(frames), "no_gt": no_gt,
                 "start_frame": start_frame, "first_pose_s": first_pose_s,
                 **{k: _num(last.get(k)) for k in ("frames_received", "frames_processed", "frames_localized",
                                                   "frames_failed", "frames_dropped", "frames_out_of_order",
                                                   "input_errors", "output_rate_hz", "latency_p50_ms",
                                                   "latency_p95_ms")}}
    return run


def _num(v):
    try:
        return float(v) if "." in str(v) else int(v)
    except (TypeError, ValueError):
        return v
