"""sensor_msgs/Image <-> numpy for the node, and to the ``uint8`` RGB / grey input the localizer takes.

Uses ``cv_bridge`` when a real ROS 2 install provides it, else the numpy decoding of
:mod:`reloc_ros.core.image_decoding` (the PyPI ``cv-bridge`` is a broken ROS 1 port and is not used: see
``_load_cv_bridge``). Both paths validate the message the same way first, so errors read the same.
"""

from __future__ import annotations

import numpy as np

from reloc_ros.core.image_decoding import (SUPPORTED_ENCODINGS, ImageConversionError, supported_list, check_header,
                                           decode_image, to_localizer_input)

__all__ = [
    "ImageConversionError",
    "SUPPORTED_ENCODINGS",
    "image_to_numpy",
    "numpy_to_image",
    "to_localizer_input",
    "image_msg_to_localizer_input",
    "CV_BRIDGE_AVAILABLE",
]


def _load_cv_bridge():
    """A working ROS 2 ``CvBridge``, or None.

    The bridge is accepted only when it converts a small probe image correctly: the PyPI ``cv-bridge``
    (a ROS 1 port) imports on some setups but fails on numpy 2 / OpenCV 5.
    """
    try:
        from cv_bridge import CvBridge
        from sensor_msgs.msg import Image

        bridge = CvBridge()
        probe = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(range(12)))
        out = np.asarray(bridge.imgmsg_to_cv2(probe, desired_encoding="passthrough"))
        if out.shape != (2, 2, 3) or out.tobytes() != bytes(range(12)):
            return None
        return bridge
    except Exception:  # not installed, or broken
        return None


_BRIDGE = _load_cv_bridge()
CV_BRIDGE_AVAILABLE = _BRIDGE is not None


def image_to_numpy(msg) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` as an array in the message's own encoding (cv_bridge when it works,
    else :func:`reloc_ros.core.image_decoding.decode_image`; the same checks and errors either way)."""
    if _BRIDGE is not None:
        check_header(msg)  # the numpy path checks it itself
        try:
            arr = np.asarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
            if arr.shape[:2] == (int(msg.height), int(msg.width)):
                return arr
        except Exception:
            pass  # fall back to the numpy path
    return decode_image(msg)


def numpy_to_image(arr: np.ndarray, encoding: str, header=None):
    """A ``sensor_msgs/Image`` of ``arr`` (``[H x W]`` or ``[H x W x C]``) in ``encoding`` (little endian)."""
    from sensor_msgs.msg import Image

    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding {encoding!r}; supported: {supported_list()}")
    dtype, ch = SUPPORTED_ENCODINGS[encoding]
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != ch:
        raise ImageConversionError(f"encoding {encoding!r} needs {ch} channel(s), got an array of shape {arr.shape}")
    a = np.ascontiguousarray(a.astype(dtype.newbyteorder("<"), copy=False))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * ch * dtype.itemsize)
    msg.data = a.tobytes()  # bytes, not the ndarray: assigning an ndarray costs ~36 ms per VGA frame
    return msg


def image_msg_to_localizer_input(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``[H x W x 3] uint8`` RGB or ``[H x W] uint8`` grey (see :func:`to_localizer_input`)."""
    return to_localizer_input(image_to_numpy(msg), str(msg.encoding))
