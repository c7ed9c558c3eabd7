"""sensor_msgs/Image (any object with its fields: the node's messages, a bag's deserialised ones) -> numpy, and
to the ``uint8`` RGB / grey input the localizer takes. Pure numpy; the node's conversions (cv_bridge when a real
ROS 2 install provides it, numpy -> Image) are in :mod:`reloc_ros.ros.image_conversion`.

Supported encodings (:data:`SUPPORTED_ENCODINGS`): ``rgb8 bgr8 rgba8 bgra8 mono8 mono16 16UC1 32FC1``.
Rows may be padded (``step`` > width * bytes per pixel); big-endian 16/32-bit data is byte-swapped.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ImageConversionError", "SUPPORTED_ENCODINGS", "MAX_PIXELS", "check_header", "decode_image",
           "to_localizer_input", "decode_to_localizer_input"]

# encoding -> (numpy dtype, channels)
SUPPORTED_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}

# Images larger than this are refused (a corrupt header would otherwise ask for absurd allocations).
MAX_PIXELS = 100_000_000


class ImageConversionError(ValueError):
    """An image message that cannot be converted; the message names the problem and what is supported."""


def supported_list() -> str:
    return ", ".join(SUPPORTED_ENCODINGS)


def check_header(msg) -> tuple[np.dtype, int]:
    enc = str(msg.encoding)
    if enc not in SUPPORTED_ENCODINGS:
        shown = enc if enc else "<empty>"
        raise ImageConversionError(
            f"unsupported image encoding {shown!r}; supported: {supported_list()} "
            "(publish one of these, e.g. via image_proc / a format converter)")
    dtype, ch = SUPPORTED_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    n = len(msg.data)
    if h == 0 or w == 0 or n == 0:
        raise ImageConversionError(f"empty image ({w}x{h}, {n} bytes of data): is the camera driver running?")
    if h * w > MAX_PIXELS:
        raise ImageConversionError(f"image of {w}x{h} pixels exceeds the limit of {MAX_PIXELS} pixels")
    row = w * ch * dtype.itemsize
    if step < row:
        raise ImageConversionError(
            f"step {step} is smaller than one row of {w} px x {ch} channel(s) x {dtype.itemsize} byte(s) = {row} "
            f"bytes for encoding {enc!r}: corrupt header")
    if n != step * h:
        raise ImageConversionError(
            f"image data has {n} bytes but step x height = {step} x {h} = {step * h} (encoding {enc!r}, "
            f"{w}x{h}): truncated or corrupt message")
    return dtype, ch


def decode_image(msg) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` (any object with its fields) as an array in the message's own
    encoding, decoded with numpy.

    Returns:
        ``[H x W]`` (one channel) or ``[H x W x C]`` array of the encoding's dtype (uint8, uint16 or
        float32), native byte order. It may be a read-only view of the message buffer; copy before writing.

    Raises:
        ImageConversionError: unsupported encoding, empty image, or ``step`` / data size inconsistent.
    """
    dtype, ch = check_header(msg)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    rows = buf.reshape(h, step)[:, : w * ch * dtype.itemsize]
    big = bool(msg.is_bigendian)
    if dtype.itemsize > 1:
        typed = dtype.newbyteorder(">" if big else "<")
        rows = np.ascontiguousarray(rows)  # views of padded rows cannot be reinterpreted in place
        arr = rows.view(typed).reshape(h, w, ch).astype(dtype, copy=False)  # to native byte order
    else:
        arr = rows.reshape(h, w, ch)
    return arr[:, :, 0] if ch == 1 else arr


def to_localizer_input(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert pixels in ``encoding`` to what the localizer takes: ``[H x W x 3] uint8`` RGB or ``[H x W]`` grey.

    16-bit images are scaled by 1/257 (full range -> 0..255); 32-bit float images are taken as intensities in
    [0, 1] when their finite values lie there, else min-max normalised (NaN -> 0).
    """
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding {encoding!r}; supported: {supported_list()}")
    if encoding == "rgb8":
        return arr
    if encoding == "bgr8":
        return np.ascontiguousarray(arr[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(arr[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(arr[:, :, 2::-1])
    if encoding in ("mono8", "8UC1"):
        return arr
    if encoding in ("mono16", "16UC1"):
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    # 32FC1
    f = np.asarray(arr, np.float32)
    finite = np.isfinite(f)
    if not finite.any():
        return np.zeros(f.shape, np.uint8)
    lo, hi = float(f[finite].min()), float(f[finite].max())
    if lo < 0.0 or hi > 1.0:
        f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
    f = np.where(finite, f, 0.0)
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def decode_to_localizer_input(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``[H x W x 3] uint8`` RGB or ``[H x W] uint8`` grey (see :func:`to_localizer_input`)."""
    return to_localizer_input(decode_image(msg), str(msg.encoding))
