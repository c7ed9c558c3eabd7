"""Image sharpness and brightness: how well an image can place its keypoints (blur, darkness), for the pose covariance.

A blurred query localizes with errors its reprojection residuals do not show: blur moves where a detector puts a
corner, consistently for the corners of one structure, so the residuals stay small while the pose shifts (correct
poses of motion-blurred and defocused tuning queries had position NEES medians 3.6-13 under the covariance of sharp
images; docs/RESULTS.md "Covariance calibration"). The localizer widens the covariance of such images by a factor
of their sharpness (``localizer.image_quality_factor``; a darkness factor of the median grey level goes with it).

The sharpness compares the gradients (their RMS: the strong edges dominate it) of the grey image with those of
the image at half its resolution, along x and y separately, and at two scales (1 -> 1/2, 1/2 -> 1/4): an edge a pixel
wide has the same gradient at both resolutions, a blurred edge twice the gradient at half the resolution. The
smallest of the four ratios is returned. Medians on the tuning scenes' VGA queries: 0.85-0.88 sharp, 0.85-0.87
JPEG quality 20, 0.57-0.58 for 15 px of motion blur, 0.57 for a defocus disc of 4 px, 0.75-0.82 at dusk (9 px blur
under noise), 0.57 at night; on Strecha's 1024 px photographs 0.78-0.80 sharp, 0.70-0.73 at dusk. It runs on the
image at up to :data:`SIDE_PX` pixels (the learned extractor's default input size; larger images are reduced).
:func:`measure` also returns the median grey level (a dark image's keypoints sit under noise relative to a faint
contrast: the darkness factor); both together take about 1 ms for a VGA image, 2 ms for 1024 x 683, on one core.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["measure", "SIDE_PX"]

SIDE_PX = 1024  # the longer side sharpness is measured at (larger images are reduced first): the learned
# extractor's default input size, so that it sees the blur the extractor sees
BLACK_LEVEL = 1  # grey levels up to this are left out of the brightness: masks and black borders (a fisheye's
# surround, letterboxing) are not the scene
MIN_LIT_FRACTION = 0.05  # fewer pixels above BLACK_LEVEL than this: brightness 0


def _rms_gradient(grey: np.ndarray, axis: int) -> float:
    d = cv2.Sobel(grey, cv2.CV_32F, 1 - axis, axis, ksize=3)
    return float(cv2.norm(d, cv2.NORM_L2)) / np.sqrt(d.size)


def measure(image: np.ndarray) -> tuple[float, float]:
    """(sharpness, brightness) of an image as the camera gave it.

    sharpness: the smallest ratio of the RMS gradient at one resolution to that at half of it, over x / y and two
    scales (see the module docstring): ~0.85 sharp, ~0.57 for 15 px of motion blur, above 1 for pure noise or tiny
    images (no factor then); NaN for an image too small (< 32 px) or without any gradient. brightness: the median
    grey level in [0, 1] of the pixels brighter than BLACK_LEVEL (8-bit images, RGB as the localizer takes them; NaN
    for other types, whose range is unknown). About 1 ms for a VGA image, 2 ms for 1024 x 683, on one core.
    """
    nan = float("nan")
    img = np.asarray(image)
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 32 or (img.ndim == 3 and img.shape[2] < 1):
        return nan, nan
    if img.ndim == 3 and img.shape[2] == 3:
        grey = cv2.cvtColor(img if img.dtype in (np.uint8, np.uint16, np.float32) else img.astype(np.float32),
                            cv2.COLOR_RGB2GRAY)  # the localizer takes RGB (datasets.base.load_image, the node)
    else:
        grey = img if img.ndim == 2 else img[..., 0]
    if grey.dtype != np.uint8:
        grey = grey.astype(np.float32)
        if not np.isfinite(grey).all():
            return nan, nan
    bright = nan
    if grey.dtype == np.uint8:  # the median of the 256-bin histogram of every 2nd pixel, black (masks, borders) aside
        hist = np.bincount(grey[::2, ::2].ravel(), minlength=256)
        lit = hist[BLACK_LEVEL + 1:]
        n = int(lit.sum())
        bright = (float(BLACK_LEVEL + 1 + np.searchsorted(np.cumsum(lit), (n + 1) // 2)) / 255.0
                  if n >= MIN_LIT_FRACTION * hist.sum() else 0.0)
    h, w = grey.shape
    s = SIDE_PX / max(h, w)
    if s < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    half = cv2.pyrDown(grey)
    quarter = cv2.pyrDown(half)
    ratios = []
    for fine, coarse in ((grey, half), (half, quarter)):
        for axis in (0, 1):
            c = _rms_gradient(coarse, axis)
            if c <= 1e-9:
                return nan, bright
            ratios.append(_rms_gradient(fine, axis) / c)
    r = float(min(ratios))
    return (r if np.isfinite(r) else nan), bright

