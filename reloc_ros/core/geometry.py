"""SE(3) helpers named by frames, and the one place where quaternion order is converted.

Conventions:
    * ``T_a_from_b`` is a 4x4 homogeneous matrix mapping coordinates in frame ``b`` to frame ``a``:
      ``x_a = T_a_from_b @ x_b``.
    * Camera frames are optical frames (x right, y down, z forward), REP-103 ``*_optical``.
    * Quaternions: ROS messages use ``xyzw``; transforms3d and most papers use ``wxyz``.
      :func:`quat_from_matrix` / :func:`matrix_from_quat` take an explicit ``order``; nothing else in the
      project reorders quaternion components.
"""

from __future__ import annotations

import numpy as np
import transforms3d.quaternions as _tq

__all__ = [
    "make_T",
    "slerp",
    "invert_T",
    "transform_points",
    "quat_from_matrix",
    "matrix_from_quat",
    "T_from_pos_quat",
    "pos_quat_from_T",
    "rotation_error_deg",
    "position_error_m",
    "pose_errors",
    "rodrigues",
    "skew",
    "so3_exp",
    "so3_log",
    "random_rotation",
    "look_at",
    "cameras_near",
]


def make_T(R_33: np.ndarray, t_3: np.ndarray) -> np.ndarray:
    """Build a 4x4 transform from a rotation matrix and a translation vector."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R_33, dtype=np.float64)
    T[:3, 3] = np.asarray(t_3, dtype=np.float64).reshape(3)
    return T


def invert_T(T_a_from_b: np.ndarray) -> np.ndarray:
    """Return ``T_b_from_a`` (closed form, no general matrix inverse)."""
    R = T_a_from_b[:3, :3]
    t = T_a_from_b[:3, 3]
    T = np.eye(4)
    T[:3, :3] = R.T
    T[:3, 3] = -R.T @ t
    return T


def transform_points(T_a_from_b: np.ndarray, pts_b_N3: np.ndarray) -> np.ndarray:
    """Map ``[N x 3]`` points from frame b to frame a."""
    pts = np.asarray(pts_b_N3, dtype=np.float64)
    return pts @ T_a_from_b[:3, :3].T + T_a_from_b[:3, 3]


def quat_from_matrix(R_33: np.ndarray, order: str = "xyzw") -> np.ndarray:
    """Unit quaternion of a rotation matrix, in ``order`` ``"xyzw"`` (ROS) or ``"wxyz"``.

    The sign is fixed so that w >= 0 (a canonical representative).
    """
    q_wxyz = _tq.mat2quat(np.asarray(R_33, dtype=np.float64))
    q_wxyz = q_wxyz / np.linalg.norm(q_wxyz)
    if q_wxyz[0] < 0:
        q_wxyz = -q_wxyz
    return _reorder(q_wxyz, "wxyz", order)


def matrix_from_quat(q: np.ndarray, order: str = "xyzw") -> np.ndarray:
    """Rotation matrix of a quaternion given in ``order`` ``"xyzw"`` (ROS) or ``"wxyz"``.

    Raises:
        ValueError: the quaternion is not finite or has (near) zero norm.
    """
    q = np.asarray(q, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.all(np.isfinite(q)) or n < 1e-9:
        raise ValueError(f"invalid quaternion {q.tolist()}: expected 4 finite values with non-zero norm")
    q_wxyz = _reorder(q / n, order, "wxyz")
    return _tq.quat2mat(q_wxyz)


def _reorder(q: np.ndarray, src: str, dst: str) -> np.ndarray:
    for o in (src, dst):
        if o not in ("xyzw", "wxyz"):
            raise ValueError(f"quaternion order must be 'xyzw' or 'wxyz', got {o!r}")
    if src == dst:
        return np.array(q, dtype=np.float64)
    if src == "wxyz":  # -> xyzw
        return np.array([q[1], q[2], q[3], q[0]], dtype=np.float64)
    return np.array([q[3], q[0], q[1], q[2]], dtype=np.float64)


def T_from_pos_quat(pos_3: np.ndarray, q: np.ndarray, order: str = "xyzw") -> np.ndarray:
    """4x4 transform from a position and a quaternion (``order`` as in :func:`matrix_from_quat`)."""
    return make_T(matrix_from_quat(q, order), pos_3)


def pos_quat_from_T(T: np.ndarray, order: str = "xyzw") -> tuple[np.ndarray, np.ndarray]:
    """Position and quaternion (``order``) of a 4x4 transform."""
    return np.array(T[:3, 3], dtype=np.float64), quat_from_matrix(T[:3, :3], order)


def skew(v_3: np.ndarray) -> np.ndarray:
    x, y, z = np.asarray(v_3, dtype=np.float64).reshape(3)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def so3_exp(w_3: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (Rodrigues' formula)."""
    w = np.asarray(w_3, dtype=np.float64).reshape(3)
    th = np.linalg.norm(w)
    K = skew(w)
    if th < 1e-12:
        return np.eye(3) + K
    return np.eye(3) + np.sin(th) / th * K + (1.0 - np.cos(th)) / th**2 * (K @ K)


def so3_log(R_33: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (inverse of :func:`so3_exp`)."""
    R = np.asarray(R_33, dtype=np.float64)
    c = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    th = np.arccos(c)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if th < 1e-7:
        return 0.5 * v
    if np.pi - th < 1e-4:
        # Near pi: axis from the largest diagonal element of (R + I) / 2.
        B = (R + np.eye(3)) / 2.0
        i = int(np.argmax(np.diag(B)))
        axis = B[:, i] / np.sqrt(max(B[i, i], 1e-12))
        axis /= np.linalg.norm(axis)
        if np.dot(axis, v) < 0:
            axis = -axis
        return th * axis
    return th / (2.0 * np.sin(th)) * v


def rodrigues(rvec_3: np.ndarray) -> np.ndarray:
    """Alias of :func:`so3_exp` for OpenCV-style rotation vectors."""
    return so3_exp(rvec_3)


def rotation_error_deg(R_a_33: np.ndarray, R_b_33: np.ndarray) -> float:
    """Angle of the rotation between two orientations, in degrees (accurate for tiny angles too)."""
    return float(np.degrees(np.linalg.norm(so3_log(np.asarray(R_a_33).T @ np.asarray(R_b_33)))))


def position_error_m(T_w_from_cam_est: np.ndarray, T_w_from_cam_gt: np.ndarray) -> float:
    """Distance between two camera centres (the translations of ``T_world_from_cam``)."""
    return float(np.linalg.norm(T_w_from_cam_est[:3, 3] - T_w_from_cam_gt[:3, 3]))


def pose_errors(T_w_from_cam_est: np.ndarray, T_w_from_cam_gt: np.ndarray) -> tuple[float, float]:
    """(position error in metres, rotation error in degrees) of an estimated camera pose."""
    return (
        position_error_m(T_w_from_cam_est, T_w_from_cam_gt),
        rotation_error_deg(T_w_from_cam_est[:3, :3], T_w_from_cam_gt[:3, :3]),
    )


def cameras_near(T_K44: np.ndarray, T: np.ndarray, max_m: float, max_deg: float) -> np.ndarray:
    """``[K] bool``: which of the camera poses ``T_K44`` (``T_world_from_cam``) are within ``max_m`` of ``T``'s camera
    centre and ``max_deg`` of its viewing direction (optical axis)."""
    d = np.linalg.norm(T_K44[:, :3, 3] - T[:3, 3], axis=1)
    return (d <= max_m) & (T_K44[:, :3, 2] @ T[:3, 2] >= np.cos(np.radians(max_deg)))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed random rotation matrix."""
    q = rng.normal(size=4)
    return matrix_from_quat(q / np.linalg.norm(q), "wxyz")


def look_at(eye_3: np.ndarray, target_3: np.ndarray, up_3=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_from_cam`` of an optical camera at ``eye`` looking at ``target`` (z forward, y down).

    ``up`` is the world's up direction; the camera's -y axis is aligned with it as closely as possible.
    """
    eye = np.asarray(eye_3, dtype=np.float64)
    z = np.asarray(target_3, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    up = np.asarray(up_3, dtype=np.float64)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along `up`
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_T(np.stack([x, y, z], axis=1), eye)


def slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (component order irrelevant, taken the short way)."""
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + a * (q1 - q0)
    else:
        th = np.arccos(min(d, 1.0))
        q = (np.sin((1.0 - a) * th) * q0 + np.sin(a * th) * q1) / np.sin(th)
    return q / np.linalg.norm(q)
