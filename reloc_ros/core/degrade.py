"""Reproducible image degradations for robustness evaluation (``reloc eval --degrade``, ``reloc eval-bag
--degrade``): query images only, never map images, so that users see how a map made in good light holds up.

Each preset works on the image as x in [0, 1] in BGR order (OpenCV's) and is seeded per image (the seed and the
image's name), so a run can be repeated exactly. Presets:

    dusk         x' = 0.30 x^1.4, channel gains (B, G, R) (0.75, 0.95, 1.15), 9-px horizontal motion blur,
                 Gaussian noise sigma 0.02, JPEG quality 60
    night        x' = 0.12 x^1.6, gains (0.7, 0.9, 1.2), 3-6 bright light sources (saturated Gaussian blobs of
                 radius 2-6 % of the image width at random positions), 5-px motion blur, noise sigma 0.04, JPEG 50
    overexposed  x' = min(1, 2.2 x)
    motion_blur  15-px horizontal motion blur
    defocus      disc blur of radius 4 px
    jpeg         JPEG quality 20

Several names (``dusk,jpeg``) are applied in the order given.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

__all__ = ["PRESETS", "degrade", "parse_presets"]

PRESETS = ("dusk", "night", "overexposed", "motion_blur", "defocus", "jpeg")


def parse_presets(text: str) -> tuple[str, ...]:
    """``"dusk,jpeg"`` -> ("dusk", "jpeg"); ValueError naming the presets for an unknown one."""
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    bad = [n for n in names if n not in PRESETS]
    if not names or bad:
        raise ValueError(f"unknown degradation {', '.join(bad) or repr(text)}: choose from {', '.join(PRESETS)} "
                         "(comma-separated, applied in order)")
    return names


def degrade(image: np.ndarray, presets: tuple[str, ...], seed: int = 0, name: str = "") -> np.ndarray:
    """``image`` (uint8 RGB ``[H x W x 3]`` or grey ``[H x W]``, as the localizer takes it) degraded by ``presets``;
    the random parts are seeded by ``seed`` and ``name`` (the image's name in its dataset)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
    grey = image.ndim == 2
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if grey else cv2.COLOR_RGB2BGR).astype(np.float32) / 255.0
    for p in presets:
        bgr = _PRESET_FN[p](bgr, rng)
    out = np.clip(np.rint(bgr * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_BGR2GRAY if grey else cv2.COLOR_BGR2RGB)


def _tone(x, scale, gamma, gains):
    return np.clip(scale * np.power(x, gamma) * np.asarray(gains, np.float32), 0.0, 1.0)


def _motion_blur(x, length: int):
    k = np.zeros((1, length), np.float32)
    k[0, :] = 1.0 / length
    return cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT)


def _noise(x, sigma, rng):
    return np.clip(x + rng.normal(0.0, sigma, x.shape).astype(np.float32), 0.0, 1.0)


def _jpeg(x, quality: int):
    ok, buf = cv2.imencode(".jpg", np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) / 255.0


def _lights(x, rng):
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        r = float(rng.uniform(0.02, 0.06)) * w
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * (r / 2.0) ** 2))
        x = np.maximum(x, np.clip(2.0 * blob, 0.0, 1.0)[:, :, None])  # saturated at the centre
    return x


def _dusk(x, rng):
    x = _tone(x, 0.30, 1.4, (0.75, 0.95, 1.15))
    return _jpeg(_noise(_motion_blur(x, 9), 0.02, rng), 60)


def _night(x, rng):
    x = _lights(_tone(x, 0.12, 1.6, (0.7, 0.9, 1.2)), rng)
    return _jpeg(_noise(_motion_blur(x, 5), 0.04, rng), 50)


def _defocus(x, rng, radius: int = 4):
    k = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
    cv2.circle(k, (radius, radius), radius, 1.0, -1)
    return cv2.filter2D(x, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)


_PRESET_FN = {
    "dusk": _dusk,
    "night": _night,
    "overexposed": lambda x, rng: np.minimum(1.0, 2.2 * x),
    "motion_blur": lambda x, rng: _motion_blur(x, 15),
    "defocus": _defocus,
    "jpeg": lambda x, rng: _jpeg(x, 20),
}
