"""rosbag2 (mcap) recordings of the synthetic runs, written with the pure-Python ``rosbags`` package.

Topics of one run (all stamps are the image stamps, i.e. simulated time; reliable QoS so both reliable
and best-effort subscribers match on replay):

==============================  ==========================  ==============================================
topic                           type                        content
==============================  ==========================  ==============================================
``/camera/image_raw``           sensor_msgs/Image           rgb8, frame ``camera_optical``
``/camera/camera_info``         sensor_msgs/CameraInfo      plumb_bob with zero D, K, R = I, P = [K | 0]
``/camera/depth/image_raw``     sensor_msgs/Image           16UC1 z-depth in millimetres (0 = none), registered
                                                            to the colour image, frame ``camera_optical``
``/clock``                      rosgraph_msgs/Clock         the image stamp
``/tf``                         tf2_msgs/TFMessage          ``odom -> base_link`` (drifting odometry)
``/tf_static``                  tf2_msgs/TFMessage          ``base_link -> camera_optical`` once (latched)
``/ground_truth/camera_pose``   geometry_msgs/PoseStamped   frame ``map``: T_map_from_camera_optical
==============================  ==========================  ==============================================

There is no ``map -> ...`` transform: providing ``map -> odom`` is the localizer's job.
``T_map_from_cam_gt = T_map_from_base_gt @ T_base_from_cam`` holds exactly.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import pos_quat_from_T

__all__ = ["TOPICS", "FRAMES", "get_ros2_typestore", "write_run_bag"]

TOPICS = {
    "image": "/camera/image_raw",
    "camera_info": "/camera/camera_info",
    "depth": "/camera/depth/image_raw",
    "clock": "/clock",
    "tf": "/tf",
    "tf_static": "/tf_static",
    "ground_truth": "/ground_truth/camera_pose",
}
FRAMES = {"map": "map", "odom": "odom", "base": "base_link", "camera": "camera_optical"}
BAG_VERSION = 8  # rosbag2 metadata version read by Jazzy and newer


def get_ros2_typestore():
    """The ``rosbags`` type store of the newest ROS 2 distribution it knows among Kilted / Jazzy / Humble."""
    from rosbags.typesys import Stores, get_typestore

    for name in ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE"):
        if hasattr(Stores, name):
            return get_typestore(getattr(Stores, name))
    raise RuntimeError("rosbags has no ROS 2 type store (Kilted / Jazzy / Humble); upgrade rosbags")


def _qos(transient_local: bool = False, depth: int = 10):
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,  # noqa: I001
                                    QosTime)

    zero = QosTime(0, 0)  # 0 = the middleware default (no deadline / lifespan / lease limit)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class _Msgs:
    """Message constructors of one type store."""

    def __init__(self, ts):
        self.ts = ts
        t = ts.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.Image = t["sensor_msgs/msg/Image"]
        self.CameraInfo = t["sensor_msgs/msg/CameraInfo"]
        self.ROI = t["sensor_msgs/msg/RegionOfInterest"]
        self.Clock = t["rosgraph_msgs/msg/Clock"]
        self.TFMessage = t["tf2_msgs/msg/TFMessage"]
        self.TransformStamped = t["geometry_msgs/msg/TransformStamped"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.Vector3 = t["geometry_msgs/msg/Vector3"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]
        self.PoseStamped = t["geometry_msgs/msg/PoseStamped"]
        self.Pose = t["geometry_msgs/msg/Pose"]
        self.Point = t["geometry_msgs/msg/Point"]

    def header(self, t_ns: int, frame: str):
        return self.Header(stamp=self.Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000)),
                           frame_id=frame)

    def quat(self, R_33):
        _, q = pos_quat_from_T(np.block([[R_33, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]]), "xyzw")
        return self.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))

    def transform(self, t_ns: int, parent: str, child: str, T):
        tr = self.Transform(translation=self.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                            rotation=self.quat(T[:3, :3]))
        return self.TransformStamped(header=self.header(t_ns, parent), child_frame_id=child, transform=tr)

    def camera_info(self, t_ns: int, cam: Camera):
        K = cam.K
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.CameraInfo(
            header=self.header(t_ns, FRAMES["camera"]), height=cam.height, width=cam.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(9).astype(np.float64),
            r=np.eye(3).reshape(9), p=P.reshape(12), binning_x=0, binning_y=0,
            roi=self.ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def write_run_bag(bag_dir: Path, image_paths: list[Path], times_ns: np.ndarray, camera: Camera,
                  T_map_from_cam_N44: np.ndarray, T_odom_from_base_N44: np.ndarray, T_base_from_cam: np.ndarray,
                  typestore=None, depth_paths: list[Path] | None = None) -> Path:
    """Write one run as a rosbag2 directory in mcap storage.

    Args:
        bag_dir: the bag directory to create (must not exist).
        image_paths: colour PNGs of the frames (their decoded RGB bytes become the Image data).
        times_ns: ``[N] int64`` image stamps.
        T_map_from_cam_N44: ground-truth camera optical poses (``/ground_truth/camera_pose``).
        T_odom_from_base_N44: odometry (``/tf`` odom -> base_link).
        T_base_from_cam: the mount (``/tf_static`` base_link -> camera_optical).
        depth_paths: optional uint16 millimetre depth PNGs of the frames (``/camera/depth/image_raw``).

    Returns:
        ``bag_dir``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    bag_dir = Path(bag_dir)
    if bag_dir.exists():
        raise FileExistsError(f"bag directory {bag_dir} already exists")
    n = len(image_paths)
    if not (len(times_ns) == len(T_map_from_cam_N44) == len(T_odom_from_base_N44) == n):
        raise ValueError("image_paths, times_ns and the pose arrays must have the same length")
    if depth_paths is not None and len(depth_paths) != n:
        raise ValueError("depth_paths must have one entry per image")
    ts = typestore or get_ros2_typestore()
    M = _Msgs(ts)
    bag_dir.parent.mkdir(parents=True, exist_ok=True)
    with Writer(bag_dir, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as w:
        def conn(topic, msgtype, latched=False):
            qos = [_qos(latched, 1 if latched else 10)]
            return w.add_connection(topic, msgtype, typestore=ts, offered_qos_profiles=qos)

        c_static = conn(TOPICS["tf_static"], "tf2_msgs/msg/TFMessage", latched=True)
        c_clock = conn(TOPICS["clock"], "rosgraph_msgs/msg/Clock")
        c_tf = conn(TOPICS["tf"], "tf2_msgs/msg/TFMessage")
        c_info = conn(TOPICS["camera_info"], "sensor_msgs/msg/CameraInfo")
        c_img = conn(TOPICS["image"], "sensor_msgs/msg/Image")
        c_depth = conn(TOPICS["depth"], "sensor_msgs/msg/Image") if depth_paths is not None else None
        c_gt = conn(TOPICS["ground_truth"], "geometry_msgs/msg/PoseStamped")
        ser = ts.serialize_cdr
        t0 = int(times_ns[0])
        static = M.TFMessage(transforms=[M.transform(t0, FRAMES["base"], FRAMES["camera"], T_base_from_cam)])
        w.write(c_static, t0, ser(static, "tf2_msgs/msg/TFMessage"))
        for k in range(n):
            t = int(times_ns[k])
            bgr = cv2.imread(str(image_paths[k]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"cannot read {image_paths[k]}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, wd = rgb.shape[:2]
            w.write(c_clock, t, ser(M.Clock(clock=M.header(t, "").stamp), "rosgraph_msgs/msg/Clock"))
            tf = M.TFMessage(transforms=[M.transform(t, FRAMES["odom"], FRAMES["base"], T_odom_from_base_N44[k])])
            w.write(c_tf, t, ser(tf, "tf2_msgs/msg/TFMessage"))
            w.write(c_info, t, ser(M.camera_info(t, camera), "sensor_msgs/msg/CameraInfo"))
            img = M.Image(header=M.header(t, FRAMES["camera"]), height=h, width=wd, encoding="rgb8", is_bigendian=0,
                          step=wd * 3, data=np.frombuffer(rgb.tobytes(), np.uint8))
            w.write(c_img, t, ser(img, "sensor_msgs/msg/Image"))
            if c_depth is not None:
                mm = cv2.imread(str(depth_paths[k]), cv2.IMREAD_UNCHANGED)
                if mm is None or mm.dtype != np.uint16 or mm.shape != (h, wd):
                    raise ValueError(f"{depth_paths[k]}: expected a {wd}x{h} uint16 depth PNG")
                dimg = M.Image(header=M.header(t, FRAMES["camera"]), height=h, width=wd, encoding="16UC1",
                               is_bigendian=0, step=wd * 2, data=np.frombuffer(mm.astype("<u2").tobytes(), np.uint8))
                w.write(c_depth, t, ser(dimg, "sensor_msgs/msg/Image"))
            Tg = T_map_from_cam_N44[k]
            pose = M.Pose(position=M.Point(x=float(Tg[0, 3]), y=float(Tg[1, 3]), z=float(Tg[2, 3])),
                          orientation=M.quat(Tg[:3, :3]))
            w.write(c_gt, t, ser(M.PoseStamped(header=M.header(t, FRAMES["map"]), pose=pose),
                                 "geometry_msgs/msg/PoseStamped"))
    return bag_dir
