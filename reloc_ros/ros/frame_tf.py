"""The transforms a frame needs at its image stamp (base -> camera, odom -> base), each looked up once per frame.

The node's odometry check, its odometry prior and its publication need the same transforms: the first caller looks
one up (waiting up to its timeout), the others reuse it. Failures are not remembered (a later caller may wait
longer).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from reloc_ros.ros.frame_worker import Frame
from reloc_ros.ros.parameters import NodeConfig, parse_base_from_camera
from reloc_ros.ros.tf_buffer import TfError

__all__ = ["FrameTransforms"]


class FrameTransforms:
    """Args:
        client: returns the node's TF client (or None) and, when None, why there is none.
    """

    def __init__(self, client: Callable[[], tuple]):
        self._client = client
        self._base_from_camera_parsed: tuple = ("", None)  # (parameter text, its 4x4 or None)
        self.last_T_base_from_cam: np.ndarray | None = None  # the last base -> camera from TF (for /initialpose)

    def base_from_camera_param(self, text: str) -> np.ndarray | None:
        """The ``base_from_camera`` parameter as a 4x4 (None for ''), parsed once per value, not per frame."""
        if self._base_from_camera_parsed[0] != text:
            self._base_from_camera_parsed = (text, parse_base_from_camera(text))
        return self._base_from_camera_parsed[1]

    def lookup(self, frame: Frame, target: str, source: str, timeout: float) -> np.ndarray:
        """TF ``target <- source`` at the frame's stamp, looked up once per frame. Raises TfError."""
        T = frame.tf.get((target, source))
        if T is None:
            tf, unavailable = self._client()
            if tf is None:
                raise TfError(unavailable)
            T = frame.tf[(target, source)] = tf.lookup(target, source, frame.stamp_ns, timeout)
        return T

    def base_from_cam(self, frame: Frame, p: NodeConfig, timeout: float | None = None) -> np.ndarray:
        """base <- camera for ``frame``: the ``base_from_camera`` parameter, else TF (``timeout``: tf_timeout)."""
        T = self.base_from_camera_param(p.base_from_camera)
        if T is not None:
            return T
        tf, unavailable = self._client()
        if tf is None:
            raise TfError(f"base->camera is unknown: {unavailable}; or set base_from_camera")
        cam_frame = (p.camera_frame or frame.msg.header.frame_id).lstrip("/")
        if not cam_frame:
            raise TfError("the image has no header.frame_id: set the camera_frame parameter")
        T = self.lookup(frame, p.base_frame, cam_frame, p.tf_timeout if timeout is None else timeout)
        self.last_T_base_from_cam = T
        return T

    def odom_from_cam(self, frame: Frame, p: NodeConfig) -> np.ndarray:
        """Odometry of the camera at the frame's stamp (odom -> base -> camera), for the tracker and the odometry
        prior. It waits for odometry only where it is expected (``tf_mode`` map_odom); otherwise it uses what is
        there. Raises TfError."""
        timeout = p.tf_timeout if p.tf_mode == "map_odom" else 0.0
        T_base_from_cam = self.base_from_cam(frame, p, timeout)
        return self.lookup(frame, p.odom_frame, p.base_frame, timeout) @ T_base_from_cam
