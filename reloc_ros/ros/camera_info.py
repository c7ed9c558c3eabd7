"""sensor_msgs/CameraInfo -> :class:`reloc_ros.core.camera.Camera`, with errors that say what to fix, and the
CameraInfo of each image (:class:`CameraInfoSync`).

The camera of the *raw* image is returned (K and D), so the localizer undistorts keypoints itself.
ROI and binning (REP-104) are applied: the returned camera describes the image actually published.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

from reloc_ros.core.camera import DISTORTION_MODELS, Camera, CameraError

__all__ = ["CameraInfoError", "CameraInfoSync", "camera_from_info", "check_image_size", "camera_info_key"]

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


NS = 1_000_000_000
INFO_WAIT_S = 0.1  # longest wait for the CameraInfo of an image's stamp (when the stream's stamps match)


class CameraInfoSync:
    """The CameraInfo of each image: the one with its stamp (within a tolerance), else the latest received.

    Thread-safe: the callbacks :meth:`add`, a worker asks :meth:`wait`. Conversions are cached per calibration.
    """

    def __init__(self, maxlen: int = 30):
        self._lock = threading.Lock()
        self._infos: collections.deque = collections.deque(maxlen=maxlen)  # (stamp_ns, CameraInfo)
        self._cache: tuple | None = None  # (key, Camera or CameraInfoError)
        self._stamps_match = False  # the last image had a CameraInfo with its stamp

    def add(self, stamp_ns: int, msg) -> None:
        with self._lock:
            self._infos.append((stamp_ns, msg))

    def __len__(self) -> int:
        return len(self._infos)

    def _snapshot(self) -> list:
        with self._lock:
            return list(self._infos)

    def camera_for(self, stamp_ns: int, tolerance_s: float, topic: str, stopping=lambda: False) -> Camera:
        """The camera of the image at ``stamp_ns`` (CameraInfo with the same stamp, else the latest).

        Raises:
            CameraInfoError: none received yet, or the chosen one is unusable.
        """
        tol = int(tolerance_s * NS)
        infos = self._snapshot()
        if not infos:
            raise CameraInfoError(f"no CameraInfo received on {topic}")
        best = min(infos, key=lambda si: abs(si[0] - stamp_ns))
        matched = abs(best[0] - stamp_ns) <= tol
        if not matched and self._stamps_match and infos[-1][0] < stamp_ns:
            # The stream's CameraInfos carry the image stamps, and this image's may still be on its way (the
            # two topics are not ordered): wait for it briefly rather than use another image's calibration.
            deadline = time.monotonic() + INFO_WAIT_S
            while not matched and time.monotonic() < deadline and not stopping():
                time.sleep(0.005)
                infos = self._snapshot()
                best = min(infos, key=lambda si: abs(si[0] - stamp_ns))
                matched = abs(best[0] - stamp_ns) <= tol
        self._stamps_match = matched
        msg = best[1] if matched else infos[-1][1]
        key = camera_info_key(msg)
        if self._cache is not None and self._cache[0] == key:
            cam = self._cache[1]
        else:
            try:
                cam = camera_from_info(msg)
            except CameraInfoError as e:
                cam = e
            self._cache = (key, cam)
        if isinstance(cam, Exception):
            raise cam
        return cam

    def wait(self, stamp_ns: int, since: float, timeout_s: float, tolerance_s: float, topic: str,
             stopping=lambda: False) -> Camera:
        """:meth:`camera_for`, waiting until ``since`` (time.monotonic() of the first image) + ``timeout_s`` for
        the first CameraInfo.

        Raises:
            CameraInfoError: none arrived in time, or the matching one is unusable.
        """
        deadline = since + timeout_s
        while True:
            try:
                return self.camera_for(stamp_ns, tolerance_s, topic, stopping)
            except CameraInfoError as e:
                if len(self._infos):
                    raise
                if time.monotonic() >= deadline or stopping():
                    raise CameraInfoError(f"{e} within {timeout_s:.1f} s") from None
            time.sleep(0.02)
