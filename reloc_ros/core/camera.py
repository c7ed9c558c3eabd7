"""Pinhole camera model with optional lens distortion, resizing and cropping.

Pixel convention: OpenCV / ROS CameraInfo, the centre of the top-left pixel is (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["Camera", "CameraError", "CameraInfoError", "DISTORTION_MODELS", "camera_from_info", "camera_info_key",
           "check_image_size"]

# Distortion models understood here (names as in sensor_msgs/CameraInfo.distortion_model) and the
# number of coefficients each takes.
DISTORTION_MODELS = {
    "none": 0,
    "plumb_bob": 5,  # k1 k2 p1 p2 k3 (OpenCV's 5-parameter model)
    "rational_polynomial": 8,  # k1 k2 p1 p2 k3 k4 k5 k6
    "equidistant": 4,  # fisheye k1 k2 k3 k4
}


class CameraError(ValueError):
    """A camera description that cannot be used (zero focal length, unknown distortion model, ...)."""


@dataclass(frozen=True)
class Camera:
    """Intrinsics of one image stream.

    Attributes:
        width, height: image size in pixels.
        fx, fy, cx, cy: pinhole intrinsics in pixels.
        distortion_model: one of :data:`DISTORTION_MODELS`.
        dist: distortion coefficients (length given by the model; trailing zeros may be omitted).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "none"
    dist: tuple = field(default_factory=tuple)

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise CameraError(f"camera size must be positive, got {self.width}x{self.height}")
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals) or self.fx <= 0 or self.fy <= 0:
            raise CameraError(
                f"camera intrinsics fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy} are invalid: "
                "focal lengths must be finite and > 0 (is the CameraInfo K matrix filled in?)"
            )
        if self.distortion_model not in DISTORTION_MODELS:
            raise CameraError(
                f"unsupported distortion model {self.distortion_model!r}; supported: "
                f"{sorted(DISTORTION_MODELS)} (rectify the images or publish image_rect)"
            )
        d = tuple(float(x) for x in self.dist)
        n = DISTORTION_MODELS[self.distortion_model]
        if len(d) > n and any(abs(x) > 0 for x in d[n:]):
            raise CameraError(f"{self.distortion_model} takes {n} coefficients, got {len(d)}: {d}")
        if not all(np.isfinite(d)):
            raise CameraError(f"distortion coefficients must be finite, got {d}")
        d = (d + (0.0,) * n)[:n]
        object.__setattr__(self, "dist", d)

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_K(cls, K_33: np.ndarray, width: int, height: int, distortion_model: str = "none", dist=()) -> "Camera":
        K = np.asarray(K_33, dtype=np.float64).reshape(3, 3)
        if abs(K[0, 1]) > 1e-6 * max(abs(K[0, 0]), 1.0):
            raise CameraError("cameras with skew (K[0,1] != 0) are not supported")
        return cls(int(width), int(height), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   distortion_model, tuple(dist))

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def is_distorted(self) -> bool:
        return self.distortion_model != "none" and any(abs(x) > 0 for x in self.dist)

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx,
                "cy": self.cy, "distortion_model": self.distortion_model, "dist": list(self.dist)}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]),
                   float(d["cy"]), d.get("distortion_model", "none"), tuple(d.get("dist", ())))

    # ----------------------------------------------------------------------------------------------
    def scaled(self, sx: float, sy: float | None = None) -> "Camera":
        """The camera of the image resized by factors (sx, sy) (pixel-centre convention kept exact)."""
        sy = sx if sy is None else sy
        w, h = int(round(self.width * sx)), int(round(self.height * sy))
        return Camera(w, h, self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                      self.distortion_model, self.dist)

    def resized(self, width: int, height: int) -> "Camera":
        """The camera of the image resized to ``width`` x ``height``."""
        c = self.scaled(width / self.width, height / self.height)
        return Camera(width, height, c.fx, c.fy, c.cx, c.cy, c.distortion_model, c.dist)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Camera":
        """The camera of the sub-image ``[y0:y0+height, x0:x0+width]``."""
        if x0 < 0 or y0 < 0 or x0 + width > self.width or y0 + height > self.height:
            raise CameraError(f"crop {x0},{y0} {width}x{height} lies outside the {self.width}x{self.height} image")
        return Camera(width, height, self.fx, self.fy, self.cx - x0, self.cy - y0, self.distortion_model, self.dist)

    def undistorted(self) -> "Camera":
        """The ideal pinhole camera that :meth:`undistort_image` / :meth:`undistort_points` map to."""
        return Camera(self.width, self.height, self.fx, self.fy, self.cx, self.cy)

    # ----------------------------------------------------------------------------------------------
    def undistort_points(self, pts_N2: np.ndarray) -> np.ndarray:
        """Map distorted pixel coordinates to ideal pinhole pixel coordinates (same K)."""
        pts = np.asarray(pts_N2, dtype=np.float64).reshape(-1, 2)
        if not self.is_distorted or len(pts) == 0:
            return pts.copy()
        src = pts.reshape(-1, 1, 2)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(src, self.K, np.array(self.dist), P=self.K)
        else:
            out = cv2.undistortPoints(src, self.K, np.array(self.dist), P=self.K)
        return out.reshape(-1, 2)

    def undistort_image(self, image: np.ndarray) -> np.ndarray:
        """Resample an image of this camera to :meth:`undistorted` (identity when there is no distortion)."""
        if not self.is_distorted:
            return image
        if self.distortion_model == "equidistant":
            m1, m2 = cv2.fisheye.initUndistortRectifyMap(self.K, np.array(self.dist), np.eye(3), self.K,
                                                         self.size, cv2.CV_32FC1)
        else:
            m1, m2 = cv2.initUndistortRectifyMap(self.K, np.array(self.dist), None, self.K, self.size, cv2.CV_32FC1)
        return cv2.remap(image, m1, m2, cv2.INTER_LINEAR)

    def project(self, pts_cam_N3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project camera-frame points with the ideal pinhole model.

        Returns:
            uv_N2 pixel coordinates and a boolean mask of points in front of the camera (z > 0).
        """
        p = np.asarray(pts_cam_N3, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        valid = z > 1e-9
        zs = np.where(valid, z, 1.0)
        uv = np.stack([self.fx * p[:, 0] / zs + self.cx, self.fy * p[:, 1] / zs + self.cy], axis=1)
        return uv, valid

    def backproject(self, uv_N2: np.ndarray, depth_N: np.ndarray) -> np.ndarray:
        """Camera-frame 3D points of ideal pixel coordinates with z-depth (metres)."""
        uv = np.asarray(uv_N2, dtype=np.float64).reshape(-1, 2)
        z = np.asarray(depth_N, dtype=np.float64).reshape(-1)
        x = (uv[:, 0] - self.cx) / self.fx * z
        y = (uv[:, 1] - self.cy) / self.fy * z
        return np.stack([x, y, z], axis=1)

    def in_image(self, uv_N2: np.ndarray, margin: float = 0.0) -> np.ndarray:
        uv = np.asarray(uv_N2).reshape(-1, 2)
        return ((uv[:, 0] >= -0.5 + margin) & (uv[:, 0] < self.width - 0.5 - margin)
                & (uv[:, 1] >= -0.5 + margin) & (uv[:, 1] < self.height - 0.5 - margin))


# sensor_msgs/CameraInfo (any object with its fields: the node's messages, a bag's deserialised ones) -> Camera.
# The camera of the *raw* image is returned (K and D), so the localizer undistorts keypoints itself; ROI and
# binning (REP-104) are applied: the returned camera describes the image actually published.
# Aliases of the distortion model names used by camera drivers.
_MODEL_ALIASES = {"": "none", "none": "none", "plumb_bob": "plumb_bob", "rational_polynomial": "rational_polynomial",
                  "equidistant": "equidistant", "fisheye": "equidistant"}


class CameraInfoError(ValueError):
    """A CameraInfo message that cannot describe the image stream."""


def camera_info_key(msg) -> tuple:
    """A hashable summary of everything :func:`camera_from_info` reads (to cache conversions)."""
    roi = msg.roi
    return (int(msg.width), int(msg.height), tuple(float(x) for x in msg.k), str(msg.distortion_model),
            tuple(float(x) for x in msg.d), int(msg.binning_x), int(msg.binning_y),
            (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)))


def camera_from_info(msg) -> Camera:
    """The camera of the images that accompany a ``sensor_msgs/CameraInfo``.

    Raises:
        CameraInfoError: zero or invalid K, zero size, an unsupported distortion model (the supported ones are
            listed), too many distortion coefficients, or an ROI outside the image.
    """
    w, h = int(msg.width), int(msg.height)
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if w <= 0 or h <= 0:
        raise CameraInfoError(f"CameraInfo has size {w}x{h}: width and height must be set (is the camera calibrated?)")
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraInfoError(
            f"CameraInfo K has fx={K[0, 0]} fy={K[1, 1]}: the camera is not calibrated (K is all zeros or invalid); "
            "calibrate it (camera_calibration) or publish a camera_info with the intrinsics")
    model_in = str(msg.distortion_model)
    model = _MODEL_ALIASES.get(model_in)
    d = [float(x) for x in msg.d]
    if model is None:
        raise CameraInfoError(
            f"unsupported distortion model {model_in!r}; supported: {sorted(m for m in _MODEL_ALIASES if m)} "
            "(or publish rectified images with an empty model / zero D)")
    if model == "none" and any(abs(x) > 0 for x in d):
        raise CameraInfoError(f"CameraInfo has distortion coefficients {d} but no distortion model: "
                              "set distortion_model")
    n = DISTORTION_MODELS[model]
    if len(d) > n and any(abs(x) > 0 for x in d[n:]):
        raise CameraInfoError(f"distortion model {model!r} takes {n} coefficients, CameraInfo has {len(d)}: {d}")
    try:
        cam = Camera.from_K(K, w, h, model, tuple(d[:n]))
        roi = msg.roi
        if int(roi.width) > 0 and int(roi.height) > 0 and (int(roi.width), int(roi.height)) != (w, h):
            cam = cam.cropped(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
        bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
        if bx > 1 or by > 1:
            cam = cam.resized(cam.width // bx, cam.height // by)
    except CameraError as e:
        raise CameraInfoError(f"invalid CameraInfo: {e}") from None
    return cam


def check_image_size(camera: Camera, width: int, height: int) -> None:
    """Raise :class:`CameraInfoError` when the image size differs from the CameraInfo's."""
    if (int(width), int(height)) != camera.size:
        raise CameraInfoError(
            f"image is {width}x{height} but its CameraInfo describes {camera.width}x{camera.height}: "
            "camera_info and image topics do not belong together (check the remappings), or the image is resized")
