"""Image sharpness: how well an image can place its keypoints (motion blur, defocus), for the pose covariance.

A blurred query localizes with errors its reprojection residuals do not show: blur moves where a detector puts a
corner, consistently for the corners of one structure, so the residuals stay small while the pose shifts (correct
poses of motion-blurred and defocused tuning queries had position NEES medians 3.6-13 under the covariance of sharp
images; docs/RESULTS.md "Covariance calibration"). The localizer widens the covariance of such images by a factor
of :func:`sharpness` (``Localizer.detection_score_factor``; a darkness factor of the median grey level goes with it).

:func:`sharpness` compares the gradients (their RMS: the strong edges dominate it) of the grey image with those of
the image at half its resolution, along x and y separately, and at two scales (1 -> 1/2, 1/2 -> 1/4): an edge a pixel
wide has the same gradient at both resolutions, a blurred edge twice the gradient at half the resolution. The
smallest of the four ratios is returned. Medians on the tuning scenes' VGA queries: 0.85-0.88 sharp, 0.85-0.87
JPEG quality 20, 0.57-0.58 for 15 px of motion blur, 0.57 for a defocus disc of 4 px, 0.75-0.82 at dusk (9 px blur
under noise), 0.57 at night; on Strecha's 1024 px photographs 0.78-0.80 sharp, 0.70-0.73 at dusk. It runs on the
image at the extractor's resolution (reduced to at most :data:`SIDE_PX` pixels): about 1.5 ms for 1024 x 683 on one
core.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["sharpness", "SIDE_PX"]

SIDE_PX = 1024  # the longer side sharpness is measured at (larger images are reduced first): the learned
# extractor's input size, so that it sees the blur the extractor sees


def _rms_gradient(grey: np.ndarray, axis: int) -> float:
    d = cv2.Sobel(grey, cv2.CV_32F, 1 - axis, axis, ksize=3)
    return float(np.sqrt(cv2.mean(cv2.multiply(d, d))[0]))


def sharpness(image: np.ndarray) -> float:
    """The smallest ratio of the RMS gradient at one resolution to that at half of it, over x / y and two scales
    (see the module docstring): ~0.8 sharp, ~0.6 for 15 px of motion blur. NaN for an image too small (< 32 px) or
    without any gradient."""
    img = np.asarray(image)
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 32:
        return float("nan")
    if img.ndim == 3 and img.shape[2] == 3:
        grey = cv2.cvtColor(img.astype(np.float32, copy=False), cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3 and img.shape[2] >= 1:
        grey = img[..., 0].astype(np.float32)
    else:
        grey = img.astype(np.float32)
    if grey.ndim != 2 or min(grey.shape) < 32 or not np.isfinite(grey).all():
        return float("nan")
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
                return float("nan")
            ratios.append(_rms_gradient(fine, axis) / c)
    r = float(min(ratios))
    return r if np.isfinite(r) else float("nan")
