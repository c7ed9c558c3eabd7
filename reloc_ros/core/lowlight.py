"""Low-light query images: detect them, and prepare them for the extractor (``LocalizerConfig.low_light_brightness``).

A camera at night delivers an image whose scene occupies the bottom tenth of the grey range, under sensor noise and
JPEG blocks, with a few saturated light sources (lamps, windows) that own the brightest pixels. The extractor was
trained on images of normal exposure; shown such an image it finds few keypoints, many of them on noise, on block
edges and on the rims of the light sources. :func:`enhance` undoes what can be undone, on the grey image the
extractors use:

1. light sources are suppressed: connected bright regions that contain saturated pixels are filled from their
   surroundings (at a quarter of the resolution, blended in with a soft edge), so that they neither attract
   keypoints nor dominate the contrast equalisation below;
2. a Gaussian blur of ``sigma`` pixels of the extractor's input (noise and 8x8 JPEG blocks);
3. contrast-limited adaptive histogram equalisation (CLAHE, clip ``clip``, 8x8 tiles) stretches the scene's few grey
   levels to the full range, tile by tile.

Images of normal exposure are never touched: :func:`brightness` (the median grey level) decides, and the localizer
enhances only below its threshold. The parameters were chosen on the tuning scenes (``train_040`` / ``train_041``
with ``--degrade night`` / ``dusk``; docs/RESULTS.md "Robustness to degraded queries"), never on the evaluation data.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["brightness", "suppress_light_sources", "enhance", "prepare", "extract", "NIGHT_BRIGHTNESS", "BLUR_SIGMA_PX",
           "CLAHE_CLIP"]

BLUR_SIGMA_PX = 2.0  # Gaussian blur, in pixels of the extractor's input (1024 px longer side for the learned one)
CLAHE_CLIP = 8.0  # CLAHE clip limit (OpenCV's units: multiples of the uniform histogram's bin height)
CLAHE_TILES = 8  # CLAHE tiles per side
LIGHT_SATURATED = 250  # a light source contains grey levels >= this ...
LIGHT_MIN_LEVEL = 64  # ... and extends over the connected pixels >= max(this, LIGHT_REL_MEDIAN x the median)
LIGHT_REL_MEDIAN = 4.0
LIGHT_GLOW = 1.0  # ... and its glow over this x its equivalent radius around it
_SMALL = 4  # light sources are found and filled at 1 / _SMALL of the resolution
# The threshold the docs recommend (chosen on the tuning scenes: docs/RESULTS.md "Low-light mode"); `reloc map update`
# counts new images below it when the map has no rule
NIGHT_BRIGHTNESS = 0.06


def _grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey of an RGB / RGBA / grey image: the mean of R, G, B, as the extractors see it."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.transform(image[:, :, :3], np.full((1, 3), 1.0 / 3.0))


def _small(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape
    return cv2.resize(grey, (max(1, w // _SMALL), max(1, h // _SMALL)), interpolation=cv2.INTER_AREA)


def brightness(image: np.ndarray) -> float:
    """The median grey level of ``image`` (uint8, any of the localizer's layouts) in [0, 1], at a quarter of its
    resolution (~1 ms at 1024 x 683). Clean photographs: 0.12-0.6; the ``night`` preset: 0.02-0.06."""
    return float(np.median(_small(_grey(image)))) / 255.0


def suppress_light_sources(grey: np.ndarray) -> np.ndarray:
    """``grey`` with its saturated light sources (and their glow) filled from their surroundings; unchanged (the same
    array) when it has none."""
    small = _small(grey)
    if int(small.max()) < LIGHT_SATURATED - 20 and int(grey.max()) < LIGHT_SATURATED:
        return grey
    level = max(LIGHT_MIN_LEVEL, LIGHT_REL_MEDIAN * float(np.median(small)))
    n, labels = cv2.connectedComponents((small >= level).astype(np.uint8), connectivity=8)
    if n <= 1:
        return grey
    # a component is a light source when it holds a saturated pixel (at full resolution: the max of its block)
    block_max = cv2.resize(cv2.dilate(grey, np.ones((_SMALL, _SMALL), np.uint8)), (small.shape[1], small.shape[0]),
                           interpolation=cv2.INTER_NEAREST)
    sources = np.unique(labels[(block_max >= LIGHT_SATURATED) & (labels > 0)])
    if len(sources) == 0:
        return grey
    mask = np.isin(labels, sources).astype(np.uint8)
    # the glow around a source fades into the scene over a distance that grows with the source's size: grow each
    # source by LIGHT_GLOW x its equivalent radius (at least 2 px), measured from its nearest pixel
    dist, nearest = cv2.distanceTransformWithLabels(1 - mask, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    area = np.bincount(labels.ravel(), minlength=n).astype(np.float32)
    grow = np.maximum(2.0, LIGHT_GLOW * np.sqrt(area / np.pi))
    source_of = np.zeros(int(nearest.max()) + 1, np.int32)  # nearest's ids are the mask's pixels, in raster order
    source_of[nearest[mask > 0]] = labels[mask > 0]
    mask = (dist <= grow[source_of[nearest]]).astype(np.uint8)
    filled = cv2.inpaint(small, mask, 3, cv2.INPAINT_TELEA)
    h, w = grey.shape
    alpha = cv2.resize(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0), (w, h), interpolation=cv2.INTER_LINEAR)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    alpha = np.clip(alpha, 0.0, 1.0)
    alpha[alpha < 1.0 / 256.0] = 0.0  # the blur's far tails: leave the rest of the image exactly as it was
    out = grey.astype(np.float32) * (1.0 - alpha) + up * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def enhance(image: np.ndarray, pixel_scale: float = 1.0, sigma: float = BLUR_SIGMA_PX,
            clip: float = CLAHE_CLIP) -> np.ndarray:
    """The grey ``[H x W] uint8`` image the extractor gets in place of a low-light ``image``: light sources
    suppressed, blurred by ``sigma * pixel_scale`` pixels, CLAHE. ``pixel_scale``: input pixels per pixel of the
    extractor's own input (an image the extractor downscales 3x: 3.0)."""
    grey = suppress_light_sources(_grey(image))
    s = float(sigma) * max(float(pixel_scale), 1e-3)
    if s > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), s)
    tiles = (CLAHE_TILES, CLAHE_TILES)
    return cv2.createCLAHE(clipLimit=float(clip), tileGridSize=tiles).apply(grey)


def prepare(image: np.ndarray, threshold: float, max_side: int | None = None) -> tuple[np.ndarray, bool]:
    """(the image the extractor gets, whether it was enhanced): ``image`` itself unless ``threshold`` > 0 and its
    :func:`brightness` is below it, else :func:`enhance` (with ``max_side``, the extractor's input size, for the
    blur's scale). The one rule for query images (``LocalizerConfig.low_light_brightness``) and map images
    (``reloc map build --low-light-brightness``, recorded in the map)."""
    if threshold <= 0 or brightness(image) >= threshold:
        return image, False
    side = max(image.shape[0], image.shape[1])
    return enhance(image, pixel_scale=side / min(side, max_side or side)), True


def extract(extractor, image: np.ndarray, threshold: float):
    """``extractor.extract`` of ``image`` prepared by :func:`prepare` (the extractor's ``max_side`` sets the blur's
    scale), with ``Features.low_light`` saying whether it was enhanced: how queries (Localizer.extract), new map
    images (build, update) go through the rule."""
    image, low_light = prepare(image, threshold, getattr(extractor, "max_side", None))
    features = extractor.extract(image)
    features.low_light = low_light
    return features
