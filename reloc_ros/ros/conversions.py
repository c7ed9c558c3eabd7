"""4x4 transforms and covariances <-> ROS messages, stamps <-> nanoseconds, points -> PointCloud2.

Quaternion order is converted only by :func:`reloc_ros.core.geometry.pos_quat_from_T` /
:func:`~reloc_ros.core.geometry.T_from_pos_quat` (ROS messages are ``xyzw``).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, PoseWithCovariance, PoseWithCovarianceStamped, Transform, \
    TransformStamped
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from reloc_ros.core.geometry import T_from_pos_quat, pos_quat_from_T, skew

__all__ = [
    "stamp_to_ns", "ns_to_stamp", "header",
    "pose_from_T", "T_from_pose", "transform_from_T", "T_from_transform",
    "pose_stamped", "transform_stamped", "pose_with_covariance_stamped", "covariance_of_composed",
    "pointcloud2_xyz", "pointcloud2_to_xyz", "initialpose_position",
]


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header(frame_id: str, stamp_ns: int) -> Header:
    return Header(frame_id=frame_id, stamp=ns_to_stamp(stamp_ns))


def _set_vec_quat(vec, quat, T: np.ndarray) -> None:
    """Write T's translation into the message vector ``vec`` and its rotation into the quaternion ``quat``."""
    pos, q = pos_quat_from_T(T, "xyzw")
    vec.x, vec.y, vec.z = (float(v) for v in pos)
    quat.x, quat.y, quat.z, quat.w = (float(v) for v in q)


def _T_of(vec, quat) -> np.ndarray:
    """4x4 of a message vector + quaternion (raises ValueError for a zero or non-finite quaternion)."""
    return T_from_pos_quat([vec.x, vec.y, vec.z], [quat.x, quat.y, quat.z, quat.w], "xyzw")


def pose_from_T(T: np.ndarray) -> Pose:
    p = Pose()
    _set_vec_quat(p.position, p.orientation, T)
    return p


def T_from_pose(p: Pose) -> np.ndarray:
    """4x4 of a Pose (raises ValueError for a zero or non-finite quaternion)."""
    return _T_of(p.position, p.orientation)


def transform_from_T(T: np.ndarray) -> Transform:
    t = Transform()
    _set_vec_quat(t.translation, t.rotation, T)
    return t


def T_from_transform(t: Transform) -> np.ndarray:
    return _T_of(t.translation, t.rotation)


def pose_stamped(T_frame_from_body: np.ndarray, frame_id: str, stamp_ns: int) -> PoseStamped:
    return PoseStamped(header=header(frame_id, stamp_ns), pose=pose_from_T(T_frame_from_body))


def transform_stamped(T_parent_from_child: np.ndarray, parent: str, child: str, stamp_ns: int) -> TransformStamped:
    return TransformStamped(header=header(parent, stamp_ns), child_frame_id=child,
                            transform=transform_from_T(T_parent_from_child))


def pose_with_covariance_stamped(T_frame_from_body: np.ndarray, cov_66: np.ndarray, frame_id: str,
                                 stamp_ns: int) -> PoseWithCovarianceStamped:
    """PoseWithCovarianceStamped; ``cov_66`` is (x, y, z, rot x, rot y, rot z) in ``frame_id`` (ROS order)."""
    cov = np.asarray(cov_66, dtype=np.float64).reshape(6, 6)
    cov = 0.5 * (cov + cov.T)  # exact symmetry for consumers that check it
    msg = PoseWithCovarianceStamped(header=header(frame_id, stamp_ns))
    msg.pose = PoseWithCovariance(pose=pose_from_T(T_frame_from_body), covariance=cov.reshape(36).tolist())
    return msg


def covariance_of_composed(cov_cam_66: np.ndarray, T_map_from_cam: np.ndarray,
                           T_cam_from_body: np.ndarray) -> np.ndarray:
    """Covariance of ``T_map_from_body = T_map_from_cam @ T_cam_from_body`` from that of ``T_map_from_cam``.

    Both covariances are (x, y, z, rot x, rot y, rot z) with rotations as small left (map-frame) perturbations,
    so the rotation block is unchanged and the body position picks up ``-[R_map_from_cam t_cam_body]_x`` times
    the rotation error.
    """
    lever = T_map_from_cam[:3, :3] @ T_cam_from_body[:3, 3]
    J = np.eye(6)
    J[:3, 3:] = -skew(lever)
    return J @ np.asarray(cov_cam_66, dtype=np.float64) @ J.T


def pointcloud2_xyz(xyz_N3: np.ndarray, frame_id: str, stamp_ns: int) -> PointCloud2:
    """An unorganised ``PointCloud2`` with float32 fields x, y, z."""
    pts = np.ascontiguousarray(np.asarray(xyz_N3, dtype=np.float32).reshape(-1, 3))
    msg = PointCloud2(header=header(frame_id, stamp_ns))
    msg.height, msg.width = 1, int(len(pts))
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate("xyz")]
    msg.is_bigendian = False
    msg.point_step = 12
    msg.row_step = 12 * len(pts)
    msg.is_dense = bool(np.all(np.isfinite(pts)))
    msg.data = pts.astype("<f4").tobytes()
    return msg


def pointcloud2_to_xyz(msg: PointCloud2) -> np.ndarray:
    """``[N x 3] float32`` of a cloud written by :func:`pointcloud2_xyz` (x, y, z float32 at offsets 0, 4, 8)."""
    n = int(msg.width) * int(msg.height)
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(n, int(msg.point_step))
    return np.ascontiguousarray(raw[:, :12]).view("<f4").reshape(n, 3).astype(np.float32)


def initialpose_position(msg: PoseWithCovarianceStamped, map_frame: str,
                         T_base_from_cam: np.ndarray | None) -> tuple[np.ndarray, float]:
    """The camera centre and position sigma (m; 0 when the covariance gives none) of an ``/initialpose``: the pose
    is the base's (RViz "2D Pose Estimate"), the camera sits at ``T_base_from_cam`` on it (None: at the base).

    Raises:
        ValueError: a bad quaternion, another frame than ``map_frame``, or non-finite values (the message says
            which, for the log).
    """
    frame = msg.header.frame_id.lstrip("/")
    T = T_from_pose(msg.pose.pose)
    if frame and frame != map_frame:
        raise ValueError(f"it is in frame {frame!r}, not the map frame {map_frame!r} (set the fixed frame of RViz "
                         "to it)")
    cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)
    if not np.all(np.isfinite(cov)) or not np.all(np.isfinite(T)):
        raise ValueError("its position or covariance has non-finite values")
    sigma = float(np.sqrt(max(cov[0, 0], cov[1, 1], cov[2, 2], 0.0)))
    pos = (T @ T_base_from_cam)[:3, 3] if T_base_from_cam is not None else T[:3, 3]
    return pos, sigma
