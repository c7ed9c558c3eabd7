"""Textures of the synthetic scenes: photographs bundled with scikit-image and procedural patterns.

Every texture is an RGB ``uint8`` image ``[H x W x 3]`` whose sides are multiples of :data:`SIZE_QUANTUM`
(so that all mip levels halve exactly). Tiled textures are made seamless (periodic noise, or a photo crop
mirrored into a 2x2 tile); posters / doors / screens are stretched once over their quad ("clamp").

All generators take a seeded ``numpy.random.Generator``; nothing here keeps global state.
:class:`PhotoLibrary` caches the decoded photographs inside one instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "SIZE_QUANTUM",
    "N_LEVELS",
    "PHOTOS",
    "PhotoLibrary",
    "Texture",
    "TextureAtlas",
    "periodic_noise",
    "noise_texture",
    "plain_texture",
    "stripes_texture",
    "checker_texture",
    "wood_texture",
    "books_texture",
    "brick_texture",
    "barcode_label",
    "ceiling_tiles_texture",
    "cardboard_texture",
    "door_texture",
    "photo_tile",
    "seamless_tile",
    "mirror_tile",
    "poster",
    "abstract_poster",
    "kelvin_rgb",
]

N_LEVELS = 6  # mip levels 0..5 (level 5 = 1/32 resolution)
SIZE_QUANTUM = 2 ** (N_LEVELS - 1)  # every texture side is a multiple of this

# Photographs of skimage.data that ship with the wheel (no download needed).
PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel", "text", "coins", "moon",
    "page", "hubble_deep_field", "immunohistochemistry", "retina", "cat", "colorwheel", "logo", "horse",
    "checkerboard", "clock", "cell",
)


@dataclass(frozen=True)
class Texture:
    """A texture image and how it is laid on a surface.

    Attributes:
        image: ``[H x W x 3] uint8`` RGB, sides multiples of :data:`SIZE_QUANTUM`.
        wrap: True: tiled periodically (the image must be seamless); False: clamped at its border (posters).
    """

    image: np.ndarray
    wrap: bool = True

    def __post_init__(self):
        im = self.image
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"texture must be [H x W x 3] uint8, got {im.shape} {im.dtype}")
        if im.shape[0] % SIZE_QUANTUM or im.shape[1] % SIZE_QUANTUM:
            raise ValueError(f"texture sides must be multiples of {SIZE_QUANTUM}, got {im.shape[:2]}")


# --------------------------------------------------------------------------------------------------
# Helpers
def _to_u8(img_f: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img_f * 255.0), 0, 255).astype(np.uint8)


def _as_rgb_float(img: np.ndarray) -> np.ndarray:
    """Any skimage.data image (grey, bool, RGBA, float) -> ``[H x W x 3] float32`` in [0, 1]."""
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    else:
        a = a.astype(np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:  # composite RGBA on white
        alpha = a[:, :, 3:4]
        a = a[:, :, :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(a[:, :, :3])


def _quantize_size(n: int) -> int:
    return max(SIZE_QUANTUM, int(round(n / SIZE_QUANTUM)) * SIZE_QUANTUM)


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """RGB multipliers of a black body of colour temperature ``kelvin``, normalised to unit luminance.

    Uses Tanner Helland's fit of the CIE black-body locus (accurate to a few percent, 1000-40000 K).
    """
    t = float(np.clip(kelvin, 1000.0, 40000.0)) / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * np.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
    rgb = np.clip(np.array([r, g, b], dtype=np.float64), 0, 255) / 255.0
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return rgb / lum


def mirror_tile(img_HWC: np.ndarray) -> np.ndarray:
    """Seamless ``[2H x 2W x C]`` tile made of the image and its mirror images."""
    top = np.concatenate([img_HWC, img_HWC[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def seamless_tile(img_HWC: np.ndarray, blend: int) -> np.ndarray:
    """Periodic tile of size ``(H - blend) x (W - blend)``: each border cross-faded with the opposite margin."""
    out = np.asarray(img_HWC, np.float32)
    for axis in (0, 1):
        n = out.shape[axis] - blend
        w = np.linspace(0.0, 1.0, blend, endpoint=False, dtype=np.float32)
        shape = [1, 1, 1]
        shape[axis] = blend
        w = w.reshape(shape)
        head = np.take(out, np.arange(blend), axis=axis)
        tail = np.take(out, np.arange(n, n + blend), axis=axis)
        body = np.take(out, np.arange(blend, n), axis=axis)
        out = np.concatenate([w * head + (1.0 - w) * tail, body], axis=axis)
    return out


def periodic_noise(rng: np.random.Generator, size: int, beta: float = 2.0, min_freq: float = 1.0) -> np.ndarray:
    """Seamless ``[size x size] float32`` noise with power spectrum ``1 / f**beta``, normalised to [0, 1].

    Args:
        beta: spectral exponent (0 white, 2 cloudy, 3 very smooth).
        min_freq: lowest frequency (cycles per tile) kept.
    """
    fy = np.fft.fftfreq(size)[:, None] * size
    fx = np.fft.rfftfreq(size)[None, :] * size
    f = np.sqrt(fx**2 + fy**2)
    amp = np.where(f >= min_freq, 1.0 / np.maximum(f, 1e-6) ** (beta / 2.0), 0.0)
    spec = amp * (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape))
    n = np.fft.irfft2(spec, s=(size, size)).astype(np.float32)
    n -= n.min()
    return n / max(float(n.max()), 1e-6)


def _colourize(gray_HW: np.ndarray, c0, c1) -> np.ndarray:
    c0 = np.asarray(c0, np.float32)
    c1 = np.asarray(c1, np.float32)
    return c0 + (c1 - c0) * gray_HW[:, :, None]


def _rand_colour(rng: np.random.Generator, sat=(0.2, 0.7), val=(0.35, 0.9)) -> np.ndarray:
    h = rng.uniform(0, 180)
    s = rng.uniform(*sat) * 255
    v = rng.uniform(*val) * 255
    hsv = np.array([[[h, s, v]]], np.float32).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


# --------------------------------------------------------------------------------------------------
# Procedural textures (all seamless)
def noise_texture(rng, size=256, c0=(0.3, 0.3, 0.3), c1=(0.8, 0.8, 0.8), beta=1.6, fine=0.15) -> Texture:
    """Cloudy noise between two colours plus fine grain (concrete, plaster, carpet)."""
    n = periodic_noise(rng, size, beta)
    g = periodic_noise(rng, size, 0.3)
    img = _colourize(np.clip((1 - fine) * n + fine * g, 0, 1), c0, c1)
    return Texture(_to_u8(img))


def plain_texture(rng, colour, size=128, amplitude=0.03) -> Texture:
    """An almost uniform painted surface (low texture on purpose)."""
    n = periodic_noise(rng, size, 2.5) - 0.5
    img = np.asarray(colour, np.float32)[None, None] * (1.0 + 2.0 * amplitude * n[:, :, None])
    return Texture(_to_u8(img))


def stripes_texture(rng, size=256, n_stripes=8, colours=None, vertical=True, noise=0.05) -> Texture:
    """Parallel stripes (radiators, blinds, wallpaper)."""
    if colours is None:
        colours = [_rand_colour(rng), _rand_colour(rng)]
    x = np.arange(size, dtype=np.float32)
    idx = (np.floor(x / size * n_stripes) % len(colours)).astype(int)
    row = np.stack([colours[i] for i in idx])  # [size x 3]
    img = np.repeat(row[None], size, axis=0)
    if not vertical:
        img = img.transpose(1, 0, 2)
    img = img * (1.0 + noise * (periodic_noise(rng, size, 1.0)[:, :, None] - 0.5))
    return Texture(_to_u8(img))


def checker_texture(rng, size=256, n=4, c0=(0.85, 0.85, 0.8), c1=(0.35, 0.35, 0.38), grout=0.02,
                    variation=0.08) -> Texture:
    """Floor tiles: checker of two colours with per-tile variation, grout lines and grain."""
    cell = size // n
    yy, xx = np.mgrid[0:size, 0:size]
    ci, cj = yy // cell, xx // cell
    par = ((ci + cj) % 2).astype(np.float32)[:, :, None]
    img = np.asarray(c0, np.float32) * (1 - par) + np.asarray(c1, np.float32) * par
    var = rng.normal(0, variation, size=(n, n)).astype(np.float32)
    img = img * (1.0 + var[ci, cj][:, :, None])
    img = img * (0.9 + 0.2 * periodic_noise(rng, size, 1.2)[:, :, None])
    g = int(max(1, grout * size))
    line = ((yy % cell) < g) | ((xx % cell) < g)
    img[line] = img[line] * 0.45
    return Texture(_to_u8(img))


def wood_texture(rng, size=256, base=(0.55, 0.36, 0.2), rings=12, planks=4) -> Texture:
    """Wood grain: warped rings along y, planks with their own tone, fine fibres."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = (periodic_noise(rng, size, 2.2) - 0.5) * 6.0
    ring = 0.5 + 0.5 * np.sin(2 * np.pi * (rings * xx / size) + warp)
    fibre = periodic_noise(rng, size, 0.6)
    plank = (xx // (size // planks)).astype(int)
    tone = 1.0 + rng.normal(0, 0.1, size=planks).astype(np.float32)[plank]
    g = (0.75 + 0.2 * ring + 0.1 * fibre) * tone
    seam = (xx % (size // planks)) < 2
    g[seam] *= 0.5
    img = np.asarray(base, np.float32)[None, None] * g[:, :, None]
    return Texture(_to_u8(img))


def brick_texture(rng, lib: "PhotoLibrary | None" = None, size=512, rows=16, cols=6, colour=(0.62, 0.3, 0.22),
                  mortar=(0.72, 0.7, 0.66), variation=0.12) -> Texture:
    """Running-bond brick wall (seamless): per-brick tone, mortar joints, grain from a photo (or noise)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bh, bw = size / rows, size / cols
    row = np.floor(yy / bh).astype(int)
    shift = (row % 2) * (bw / 2)
    col = np.floor(((xx + shift) % size) / bw).astype(int)
    tone = 1.0 + rng.normal(0, variation, size=(rows, cols)).astype(np.float32)
    img = np.asarray(colour, np.float32)[None, None] * tone[row, col][:, :, None]
    if lib is not None:
        grain = seamless_tile(lib.crop(rng, "gravel", size + 64, size + 64), 64).mean(axis=2)
    else:
        grain = periodic_noise(rng, size, 0.8)
    img *= (0.8 + 0.4 * grain)[:, :, None]
    j = max(2, int(round(size / 128)))
    joint = ((yy % bh) < j) | ((((xx + shift) % size) % bw) < j)
    img[joint] = np.asarray(mortar, np.float32) * (0.85 + 0.3 * grain[joint])[:, None]
    return Texture(_to_u8(img))


def barcode_label(rng, lib: "PhotoLibrary | None", h=48, w=64) -> np.ndarray:
    """A white shipping label ``[h x w x 3] float32``: printed text (photo crop) above a barcode."""
    lab = np.full((h, w, 3), 0.92, np.float32)
    if lib is not None:
        txt = lib.crop(rng, "text", h // 2 - 4, w - 8, 0.6).mean(axis=2, keepdims=True)
        lab[3:h // 2 - 1, 4:w - 4] = 0.15 + 0.8 * txt
    x = 4
    while x < w - 6:
        bw = int(rng.integers(1, 4))
        if rng.random() < 0.55:
            lab[h // 2 + 2:h - 4, x:x + bw] = 0.05
        x += bw
    return lab


def books_texture(rng, size=256, shelves=2) -> Texture:
    """Book spines on shelves: random widths, colours, heights and dark shelf boards."""
    img = np.zeros((size, size, 3), np.float32) + 0.12
    row_h = size // shelves
    for r in range(shelves):
        x = 0
        while x < size:
            w = int(rng.integers(6, 22))
            w = min(w, size - x)
            h = int(row_h * rng.uniform(0.6, 0.92))
            c = _rand_colour(rng, (0.3, 0.9), (0.25, 0.9))
            y1 = (r + 1) * row_h - 6
            img[y1 - h:y1, x:x + w] = c
            if w > 8:  # a title band
                yb = y1 - int(h * rng.uniform(0.3, 0.7))
                img[yb:yb + 4, x + 2:x + w - 2] = 1.0 - c
            x += w + int(rng.integers(0, 2))
        img[(r + 1) * row_h - 6:(r + 1) * row_h] = (0.45, 0.3, 0.18)
    img = img * (0.92 + 0.16 * periodic_noise(rng, size, 0.8)[:, :, None])
    return Texture(_to_u8(img))


def ceiling_tiles_texture(rng, size=256, n=2, colour=(0.86, 0.86, 0.84)) -> Texture:
    """Acoustic ceiling tiles: speckled panels in a metal grid."""
    speck = periodic_noise(rng, size, 0.2)
    img = np.asarray(colour, np.float32)[None, None] * (0.93 + 0.1 * speck[:, :, None])
    cell = size // n
    yy, xx = np.mgrid[0:size, 0:size]
    line = ((yy % cell) < 3) | ((xx % cell) < 3)
    img[line] = (0.7, 0.7, 0.72)
    return Texture(_to_u8(img))


def cardboard_texture(rng, labels: "PhotoLibrary | None" = None, size=128) -> Texture:
    """A cardboard box side (clamped): brown fibres, tape and often a printed label."""
    base = np.array([0.62, 0.46, 0.3], np.float32) * rng.uniform(0.85, 1.1)
    img = base[None, None] * (0.85 + 0.25 * periodic_noise(rng, size, 1.0)[:, :, None])
    img[:, size // 2 - 6:size // 2 + 6] *= 1.15  # tape
    if rng.random() < 0.8:
        y0, x0 = int(rng.integers(8, size - 56)), int(rng.integers(4, size - 68))
        img[y0:y0 + 48, x0:x0 + 64] = barcode_label(rng, labels, 48, 64)
    if rng.random() < 0.6:  # "this side up" arrows
        c = (0.15, 0.1, 0.08)
        y0 = int(rng.integers(10, size - 40))
        x0 = int(rng.integers(8, size - 40))
        cv2.arrowedLine(img, (x0, y0 + 30), (x0, y0), c, 3)
        cv2.arrowedLine(img, (x0 + 20, y0 + 30), (x0 + 20, y0), c, 3)
    return Texture(_to_u8(img), wrap=False)


def door_texture(rng, colour=(0.55, 0.35, 0.2), size=(256, 128)) -> Texture:
    """A door leaf (clamped; ``size`` = (H, W)): wood grain, panels, a handle and a kick plate."""
    h, w = size
    wood = wood_texture(rng, max(h, w), base=colour, rings=6, planks=1).image[:h, :w].astype(np.float32) / 255.0
    img = np.ascontiguousarray(wood)
    cv2.rectangle(img, (12, 14), (w - 13, h // 2 - 8), (0.3, 0.2, 0.12), 2)
    cv2.rectangle(img, (12, h // 2 + 8), (w - 13, h - 40), (0.3, 0.2, 0.12), 2)
    cv2.rectangle(img, (w - 26, h // 2 - 4), (w - 8, h // 2 + 2), (0.82, 0.82, 0.85), -1)
    cv2.rectangle(img, (4, h - 22), (w - 5, h - 4), (0.7, 0.7, 0.72), -1)
    return Texture(_to_u8(img), wrap=False)


# --------------------------------------------------------------------------------------------------
# Photographs
class PhotoLibrary:
    """Decoded ``skimage.data`` photographs as ``[H x W x 3] float32`` in [0, 1], cached per instance."""

    def __init__(self):
        self._cache: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray:
        if name not in PHOTOS:
            raise KeyError(f"unknown photo {name!r}; available: {', '.join(PHOTOS)}")
        if name not in self._cache:
            import skimage.data  # imported lazily: it is slow-ish and only needed when building scenes

            self._cache[name] = _as_rgb_float(getattr(skimage.data, name)())
        return self._cache[name]

    def crop(self, rng: np.random.Generator, name: str, h: int, w: int, scale: float = 1.0) -> np.ndarray:
        """A random ``[h x w x 3]`` crop; the photo is first resized by ``scale`` (at least to fit)."""
        img = self.get(name)
        s = max(scale, h / img.shape[0], w / img.shape[1])
        if abs(s - 1.0) > 1e-3:
            img = cv2.resize(img, (max(w, int(round(img.shape[1] * s))), max(h, int(round(img.shape[0] * s)))),
                             interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        y0 = int(rng.integers(0, img.shape[0] - h + 1))
        x0 = int(rng.integers(0, img.shape[1] - w + 1))
        return img[y0:y0 + h, x0:x0 + w]


def recolour(rng: np.random.Generator, img: np.ndarray, tint=None, contrast=None) -> np.ndarray:
    """Tint and contrast change of a ``[H x W x 3]`` float image (grey photos become coloured materials)."""
    g = img.mean(axis=2, keepdims=True)
    if tint is None:
        tint = _rand_colour(rng, (0.1, 0.5), (0.6, 1.0)) / 0.8
    c = rng.uniform(0.7, 1.2) if contrast is None else contrast
    out = (0.5 + (img - 0.5) * c) * 0.5 + (0.5 + (g - 0.5) * c) * np.asarray(tint, np.float32) * 0.5
    return np.clip(out, 0, 1)


def photo_tile(rng: np.random.Generator, lib: PhotoLibrary, name: str, size: int = 448, blend: int = 64,
               scale: float = 1.0, tint=None, contrast=None, grey_tint=True, mirror: bool = False) -> Texture:
    """Seamless tile from a photo.

    Args:
        size: tile side (a multiple of :data:`SIZE_QUANTUM`); a ``size + blend`` crop is cross-faded at its
            borders (``mirror=False``), or a ``size / 2`` crop is mirrored into a 2 x 2 tile (``mirror=True``).
        tint, contrast: recolouring (grey photos get a random tint unless ``grey_tint=False``).
    """
    size = _quantize_size(size)
    if mirror:
        c = mirror_tile(lib.crop(rng, name, size // 2, size // 2, scale))
    else:
        c = seamless_tile(lib.crop(rng, name, size + blend, size + blend, scale), blend)
    if tint is not None or (grey_tint and np.allclose(c[..., 0], c[..., 1], atol=1e-3)):
        c = recolour(rng, c, tint, contrast)
    return Texture(_to_u8(c))


def poster(rng: np.random.Generator, lib: PhotoLibrary, name: str, height: int = 256, frame: bool = True,
           crop_frac: float = 1.0) -> Texture:
    """A clamped picture of a photo (aspect kept, optional crop), with a dark frame / white margin."""
    img = lib.get(name)
    if crop_frac < 1.0:
        h, w = int(img.shape[0] * crop_frac), int(img.shape[1] * crop_frac)
        y0 = int(rng.integers(0, img.shape[0] - h + 1))
        x0 = int(rng.integers(0, img.shape[1] - w + 1))
        img = img[y0:y0 + h, x0:x0 + w]
    H = _quantize_size(height)
    W = _quantize_size(height * img.shape[1] / img.shape[0])
    out = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    if frame:
        m = max(3, H // 40)
        out[:m], out[-m:], out[:, :m], out[:, -m:] = 0.1, 0.1, 0.1, 0.1
    return Texture(_to_u8(out), wrap=False)


def abstract_poster(rng: np.random.Generator, lib: PhotoLibrary, height: int = 256, frame: bool = True) -> Texture:
    """A picture for training scenes: a small random crop of a random photo, flipped, hue-rotated, with random
    shapes painted over it, so training scenes never show the pictures of the evaluation scenes."""
    name = str(rng.choice([p for p in PHOTOS if p not in ("horse", "checkerboard")]))
    img = lib.get(name)
    f = float(rng.uniform(0.25, 0.5))
    h, w = max(16, int(img.shape[0] * f)), max(16, int(img.shape[1] * f))
    crop = lib.crop(rng, name, h, w)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    aspect = float(rng.uniform(0.6, 1.6))
    H = _quantize_size(height)
    W = _quantize_size(height * aspect)
    out = cv2.resize(np.ascontiguousarray(crop), (W, H), interpolation=cv2.INTER_LINEAR)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 360)) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.5) + rng.uniform(0, 0.3), 0, 1)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    for _ in range(int(rng.integers(3, 9))):
        c = tuple(float(v) for v in _rand_colour(rng, (0.3, 1.0), (0.2, 1.0)))
        p = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        if rng.random() < 0.5:
            q = (int(rng.integers(0, W)), int(rng.integers(0, H)))
            cv2.rectangle(out, p, q, c, int(rng.choice([-1, 2, 4])))
        else:
            cv2.circle(out, p, int(rng.integers(4, max(5, H // 3))), c, int(rng.choice([-1, 2, 4])))
    if frame:
        m = max(3, H // 40)
        out[:m], out[-m:], out[:, :m], out[:, -m:] = 0.1, 0.1, 0.1, 0.1
    return Texture(_to_u8(out), wrap=False)


# --------------------------------------------------------------------------------------------------
class TextureAtlas:
    """All textures of a scene and their mip levels packed into one ``uint8`` image.

    Level ``l`` of texture ``i`` occupies ``[oy[i,l] : oy[i,l]+h[i,l], ox[i,l] : ox[i,l]+w[i,l]]`` and is surrounded
    by a border of :attr:`pad` pixels (periodic for tiled textures, replicated for clamped ones), so one
    bilinear ``cv2.remap`` over the atlas samples any texture at any level.

    Attributes:
        image: ``[AH x AW x 3] uint8`` atlas.
        ox, oy, w, h: ``[n_tex x N_LEVELS] float32`` level placement (interior, without the border).
        wrap: ``[n_tex] bool``.
        size0: ``[n_tex x 2]`` level-0 size (w, h).
    """

    pad = 2

    def __init__(self, textures: list[Texture], max_width: int = 4096):
        n = len(textures)
        levels: list[list[np.ndarray]] = []
        for tex in textures:
            lv = [tex.image]
            for _ in range(1, N_LEVELS):
                lv.append(self._down(lv[-1], tex.wrap))
            levels.append(lv)
        # Shelf packing, tallest first.
        items = [(i, l, levels[i][l]) for i in range(n) for l in range(N_LEVELS)]
        items.sort(key=lambda it: (-it[2].shape[0], -it[2].shape[1]))
        p = self.pad
        ox = np.zeros((n, N_LEVELS), np.float32)
        oy = np.zeros((n, N_LEVELS), np.float32)
        x = y = shelf_h = 0
        places = []
        for i, l, im in items:
            hh, ww = im.shape[0] + 2 * p, im.shape[1] + 2 * p
            if ww > max_width:
                raise ValueError(f"texture {i} is wider than the atlas ({ww} > {max_width})")
            if x + ww > max_width:
                x, y, shelf_h = 0, y + shelf_h, 0
            places.append((i, l, x, y))
            ox[i, l], oy[i, l] = x + p, y + p
            x += ww
            shelf_h = max(shelf_h, hh)
        atlas = np.zeros((y + shelf_h, max_width, 3), np.uint8)
        for i, l, x0, y0 in places:
            im = levels[i][l]
            border = cv2.BORDER_WRAP if textures[i].wrap else cv2.BORDER_REPLICATE
            padded = cv2.copyMakeBorder(im, p, p, p, p, border)
            atlas[y0:y0 + padded.shape[0], x0:x0 + padded.shape[1]] = padded
        self.image = atlas
        self.ox, self.oy = ox, oy
        self.w = np.array([[levels[i][l].shape[1] for l in range(N_LEVELS)] for i in range(n)], np.float32)
        self.h = np.array([[levels[i][l].shape[0] for l in range(N_LEVELS)] for i in range(n)], np.float32)
        self.wrap = np.array([t.wrap for t in textures], bool)
        self.size0 = np.stack([self.w[:, 0], self.h[:, 0]], axis=1)

    @staticmethod
    def _down(img: np.ndarray, wrap: bool) -> np.ndarray:
        """Half-resolution level (Gaussian 5-tap, periodic border for tiled textures)."""
        b = 4
        border = cv2.BORDER_WRAP if wrap else cv2.BORDER_REPLICATE
        padded = cv2.copyMakeBorder(img, b, b, b, b, border)
        down = cv2.pyrDown(padded)
        return np.ascontiguousarray(down[b // 2:b // 2 + img.shape[0] // 2, b // 2:b // 2 + img.shape[1] // 2])
