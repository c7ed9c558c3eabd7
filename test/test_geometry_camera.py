import numpy as np
import pytest

from reloc_ros.core.camera import Camera, CameraError
from reloc_ros.core.geometry import (T_from_pos_quat, invert_T, look_at, make_T, matrix_from_quat,
                                     pos_quat_from_T, quat_from_matrix, random_rotation, rotation_error_deg,
                                     so3_exp, so3_log, transform_points)


def test_quaternion_orders_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(100):
        R = random_rotation(rng)
        q_xyzw = quat_from_matrix(R, "xyzw")
        q_wxyz = quat_from_matrix(R, "wxyz")
        assert np.allclose(q_xyzw[:3], q_wxyz[1:]) and np.isclose(q_xyzw[3], q_wxyz[0])
        assert np.allclose(matrix_from_quat(q_xyzw, "xyzw"), R, atol=1e-12)
        assert np.allclose(matrix_from_quat(q_wxyz, "wxyz"), R, atol=1e-12)
    # 90 deg about z: ROS order (0, 0, sin45, cos45)
    Rz = so3_exp([0, 0, np.pi / 2])
    assert np.allclose(quat_from_matrix(Rz, "xyzw"), [0, 0, np.sqrt(0.5), np.sqrt(0.5)])


def test_quaternion_rejects_bad_input():
    with pytest.raises(ValueError, match="invalid quaternion"):
        matrix_from_quat([0, 0, 0, 0])
    with pytest.raises(ValueError, match="invalid quaternion"):
        matrix_from_quat([np.nan, 0, 0, 1])
    with pytest.raises(ValueError, match="order"):
        quat_from_matrix(np.eye(3), "zyxw")


def test_se3_helpers():
    rng = np.random.default_rng(1)
    T = make_T(random_rotation(rng), rng.normal(size=3))
    assert np.allclose(invert_T(T) @ T, np.eye(4), atol=1e-12)
    p = rng.normal(size=(10, 3))
    assert np.allclose(transform_points(invert_T(T), transform_points(T, p)), p)
    pos, q = pos_quat_from_T(T)
    assert np.allclose(T_from_pos_quat(pos, q), T)


def test_so3_log_exp_and_small_angle_error():
    rng = np.random.default_rng(2)
    for _ in range(50):
        w = rng.normal(size=3)
        w *= rng.uniform(0, np.pi - 1e-3) / np.linalg.norm(w)
        assert np.allclose(so3_log(so3_exp(w)), w, atol=1e-8)
    R = random_rotation(rng)
    assert rotation_error_deg(R, so3_exp([1e-9, 0, 0]) @ R) == pytest.approx(np.degrees(1e-9), rel=1e-3)
    assert rotation_error_deg(R, so3_exp([0, 0.3, 0]) @ R) == pytest.approx(np.degrees(0.3), rel=1e-9)


def test_look_at_is_optical_frame():
    T = look_at([0, 0, 1], [5, 0, 1])  # looking along world +x, z up
    assert np.allclose(T[:3, 2], [1, 0, 0])  # optical z forward
    assert np.allclose(T[:3, 1], [0, 0, -1])  # optical y down
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)


def test_camera_scale_crop_project_backproject():
    cam = Camera(640, 480, 500.0, 510.0, 319.5, 239.5)
    half = cam.resized(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (250.0, 255.0, 159.5, 119.5)
    crop = cam.cropped(100, 50, 200, 100)
    assert (crop.cx, crop.cy) == (219.5, 189.5)
    rng = np.random.default_rng(3)
    uv = rng.uniform([0, 0], [640, 480], size=(20, 2))
    z = rng.uniform(1, 5, 20)
    pts = cam.backproject(uv, z)
    uv2, valid = cam.project(pts)
    assert valid.all() and np.allclose(uv2, uv)
    # A point seen in the full image projects to the same place in the resized image (scaled).
    uv_half, _ = half.project(pts)
    assert np.allclose((uv_half + 0.5) * 2 - 0.5, uv)


def test_camera_distortion_round_trip():
    cam = Camera(640, 480, 500.0, 500.0, 320.0, 240.0, "plumb_bob", (0.1, -0.05, 0.001, 0.0005, 0.0))
    rng = np.random.default_rng(4)
    ideal = rng.uniform([100, 100], [540, 380], size=(50, 2))
    import cv2

    rays = np.c_[(ideal - [320, 240]) / 500.0, np.ones(50)]
    dist, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), cam.K, np.array(cam.dist))
    assert np.allclose(cam.undistort_points(dist.reshape(-1, 2)), ideal, atol=1e-3)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(width=640, height=480, fx=0.0, fy=500, cx=320, cy=240), "focal"),
    (dict(width=640, height=480, fx=np.nan, fy=500, cx=320, cy=240), "focal"),
    (dict(width=0, height=480, fx=500, fy=500, cx=320, cy=240), "size"),
    (dict(width=640, height=480, fx=500, fy=500, cx=320, cy=240, distortion_model="kannala"), "unsupported"),
    (dict(width=640, height=480, fx=500, fy=500, cx=320, cy=240, distortion_model="plumb_bob",
          dist=(0.1, 0, 0, 0, 0, 0.3)), "coefficients"),
])
def test_camera_rejects_bad_intrinsics(kwargs, msg):
    with pytest.raises(CameraError, match=msg):
        Camera(**kwargs)
