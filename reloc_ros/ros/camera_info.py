"""The CameraInfo of each image (:class:`CameraInfoSync`); the conversion of a message to a
:class:`reloc_ros.core.camera.Camera` is :func:`reloc_ros.core.camera.camera_from_info` (pure, re-exported here).
"""

from __future__ import annotations

import collections
import threading
import time


from reloc_ros.core.camera import Camera, CameraInfoError, camera_from_info, camera_info_key, check_image_size

__all__ = ["CameraInfoError", "CameraInfoSync", "camera_from_info", "check_image_size", "camera_info_key"]

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

    def clear(self) -> None:
        """Forget the CameraInfos received (cleanup)."""
        with self._lock:
            self._infos.clear()
            self._stamps_match = False

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
