"""Light setups, sensor models and light maps of the synthetic scenes.

Shading model (Lambertian, view independent, so a surface point has the same colour from every viewpoint
under the same light)::

    radiance = albedo(u, v) * E(p) * exposure
    E(p) = tint * (ambient + sum_k I_k * colour_k * max(0, n . l_k) * emit_k(l_k) * spot_k(l_k)
                   / (1 + (d_k / falloff_k)^2) * visible_k(p))

``E`` is baked per run into light maps: a grid of samples on every quad (about :data:`LIGHTMAP_RES` metres
apart) with shadows from the scene's occluder boxes, interpolated bilinearly at render time.
Self-lit quads (lamp panels while their lamp is on, windows) store their emission instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from reloc_ros.datasets.synthetic.scene import Scene, scene_rng
from reloc_ros.datasets.synthetic.textures import kelvin_rgb

__all__ = ["PointLight", "LightSetup", "SensorModel", "Lightmaps", "bake_lightmaps", "run_setups",
           "RUN_NAMES", "LIGHTMAP_RES", "TARGET_LEVEL"]

RUN_NAMES = ("mapping", "query_same_light", "query_light_change")
LIGHTMAP_RES = 0.12  # metres between light-map samples
TARGET_LEVEL = 0.85  # auto exposure: mean exposed irradiance of the mapping light


@dataclass(frozen=True)
class PointLight:
    """A point light or spotlight.

    Attributes:
        position: (x, y, z) in metres.
        rgb: colour (unit luminance) times intensity.
        falloff_m: distance at which the intensity halves (``1 / (1 + (d / falloff)^2)``).
        direction: unit axis of a spotlight, or of a ceiling panel's emission lobe (with ``panel``); None: omni.
        cone_deg: (inner, outer) half angles of a spotlight.
        panel: ceiling panel emitting mostly downwards (``0.25 + 0.75 cos``) instead of a spot cone.
    """

    position: tuple[float, float, float]
    rgb: tuple[float, float, float]
    falloff_m: float = 2.5
    direction: tuple[float, float, float] | None = None
    cone_deg: tuple[float, float] = (18.0, 30.0)
    panel: bool = False


@dataclass(frozen=True)
class SensorModel:
    """Camera sensor effects applied after rendering (all in [0, 1] intensity units).

    Attributes:
        read_noise: std of additive gaussian noise.
        shot_noise: variance per unit intensity (signal-dependent noise).
        blur_sigma: std in pixels of a gaussian blur (defocus / motion), 0 for none.
        exposure_jitter: relative std of a per-frame exposure change (auto-exposure flicker).
    """

    read_noise: float = 0.0
    shot_noise: float = 0.0
    blur_sigma: float = 0.0
    exposure_jitter: float = 0.0

    def to_dict(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LightSetup:
    """Everything that lights one run.

    Attributes:
        name: label of the run's light ("mapping", "light_change", ...).
        ambient: RGB ambient irradiance.
        lights: point lights and spotlights.
        lamps_on: per scene lamp, whether its panel glows (its point light is in ``lights`` when on).
        lamp_glow: RGB emission of a glowing lamp panel.
        daylight: RGB emission of the windows.
        exposure: global gain of the camera.
        shadows: cast shadows from the scene's occluders.
        colour_temperature_k, lamp_intensity: for the record (scene.yaml).
    """

    name: str
    ambient: tuple[float, float, float]
    lights: tuple[PointLight, ...]
    lamps_on: tuple[bool, ...]
    lamp_glow: tuple[float, float, float]
    daylight: tuple[float, float, float]
    exposure: float = 1.0
    shadows: bool = True
    colour_temperature_k: float = 4000.0
    lamp_intensity: float = 1.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "ambient": [round(float(v), 5) for v in self.ambient],
            "exposure": round(float(self.exposure), 5),
            "colour_temperature_k": float(self.colour_temperature_k),
            "lamp_intensity": round(float(self.lamp_intensity), 5),
            "lamps_on": int(sum(self.lamps_on)),
            "lamps_total": len(self.lamps_on),
            "daylight": [round(float(v), 5) for v in self.daylight],
            "shadows": bool(self.shadows),
            "spotlights": [{"position": [round(float(v), 3) for v in L.position],
                            "direction": [round(float(v), 3) for v in L.direction],
                            "rgb": [round(float(v), 4) for v in L.rgb]}
                           for L in self.lights if L.direction is not None and not L.panel],
        }


# --------------------------------------------------------------------------------------------------
@dataclass
class Lightmaps:
    """Baked irradiance of every quad of a scene under one light.

    Sample ``(i, j)`` of quad ``q`` lies at ``lo_b + i / sx[q]``, ``lo_c + j / sy[q]`` (its two tangent axes) and
    is stored at ``image[oy[q] + j, ox[q] + i]``; a one-pixel replicated border surrounds every grid.

    Attributes:
        image: ``[LH x LW x 3] float32``.
        ox, oy, sx, sy: ``[n_quads] float32``.
        mean_irradiance: area-weighted mean of the lit (non-emissive) samples (before ``exposure``).
    """

    image: np.ndarray
    ox: np.ndarray
    oy: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    mean_irradiance: float = 1.0
    extra: dict = field(default_factory=dict)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _segment_blocked(P_M3: np.ndarray, L_3: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``[M] bool``: the segment from each point to ``L`` crosses one of the boxes (slab test)."""
    d = L_3[None, :] - P_M3
    d = np.where(np.abs(d) < 1e-9, 1e-9, d)
    inv = 1.0 / d
    blocked = np.zeros(len(P_M3), bool)
    for lo, hi in boxes:
        t0 = (lo[None, :] - P_M3) * inv
        t1 = (hi[None, :] - P_M3) * inv
        tmin = np.minimum(t0, t1).max(axis=1)
        tmax = np.maximum(t0, t1).min(axis=1)
        blocked |= (tmax > np.maximum(tmin, 1e-4)) & (tmin < 1.0 - 1e-4)
    return blocked


def bake_lightmaps(scene: Scene, light: LightSetup, res: float = LIGHTMAP_RES, max_side: int = 160,
                   atlas_width: int = 2048) -> Lightmaps:
    """Irradiance samples of every quad of ``scene`` under ``light`` (with shadows when enabled).

    Returns:
        :class:`Lightmaps` (float32 atlas + placement).
    """
    quads = scene.quads
    nq = len(quads)
    grids = []
    for q in quads:
        (lb, lc), (hb, hc) = q.lo, q.hi
        nb = int(np.clip(np.ceil((hb - lb) / res) + 1, 2, max_side))
        nc = int(np.clip(np.ceil((hc - lc) / res) + 1, 2, max_side))
        grids.append((nb, nc))
    # Pack grids (with a 1-sample border) into shelves.
    ox = np.zeros(nq, np.float32)
    oy = np.zeros(nq, np.float32)
    order = sorted(range(nq), key=lambda i: -grids[i][1])
    x = y = shelf = 0
    for i in order:
        w, h = grids[i][0] + 2, grids[i][1] + 2
        if x + w > atlas_width:
            x, y, shelf = 0, y + shelf, 0
        ox[i], oy[i] = x + 1, y + 1
        x += w
        shelf = max(shelf, h)
    image = np.zeros((y + shelf, atlas_width, 3), np.float32)

    # All sample points at once.
    pts, nrm, owner = [], [], []
    for i, q in enumerate(quads):
        nb, nc = grids[i]
        b, c = q.tangent_axes
        ub = np.linspace(q.lo[0], q.hi[0], nb)
        uc = np.linspace(q.lo[1], q.hi[1], nc)
        P = np.zeros((nc, nb, 3))
        P[..., q.axis] = q.pos
        P[..., b] = ub[None, :]
        P[..., c] = uc[:, None]
        pts.append(P.reshape(-1, 3))
        nrm.append(np.repeat(q.normal[None], nb * nc, axis=0))
        owner.append(np.full(nb * nc, i))
    P = np.concatenate(pts)
    N = np.concatenate(nrm)
    owner = np.concatenate(owner)
    E = np.repeat(np.asarray(light.ambient, np.float64)[None], len(P), axis=0)
    P_off = P + 0.01 * N  # lift off the surface for shadow rays
    for L in light.lights:
        Lp = np.asarray(L.position, float)
        v = Lp[None] - P
        d = np.linalg.norm(v, axis=1)
        l = v / np.maximum(d, 1e-6)[:, None]
        w = np.clip((l * N).sum(axis=1), 0.0, None) / (1.0 + (d / L.falloff_m) ** 2)
        if L.direction is not None:
            axis = np.asarray(L.direction, float)
            cos_a = -(l * axis[None]).sum(axis=1)
            if L.panel:
                w = w * (0.25 + 0.75 * np.clip(cos_a, 0.0, 1.0))
            else:
                ci, co = np.cos(np.radians(L.cone_deg[0])), np.cos(np.radians(L.cone_deg[1]))
                w = w * (0.03 + 0.97 * _smoothstep((cos_a - co) / (ci - co)))
        active = w > 2e-3
        if light.shadows and scene.occluders and np.any(active):
            idx = np.flatnonzero(active)
            blocked = _segment_blocked(P_off[idx], Lp, scene.occluders)
            w[idx[blocked]] *= 0.12  # light bounced from elsewhere still reaches shadowed points
        E += w[:, None] * np.asarray(L.rgb, float)[None]
    tint = np.array([quads[i].material.tint for i in range(nq)], float)
    E *= tint[owner]

    # Emissive quads.
    lit = np.ones(len(P), bool)
    win = set(scene.windows)
    for i, q in enumerate(quads):
        m = q.material
        glow = None
        if m.lamp >= 0 and m.lamp < len(light.lamps_on) and light.lamps_on[m.lamp]:
            glow = light.lamp_glow
        elif i in win:
            glow = light.daylight
        if glow is not None:
            sel = owner == i
            E[sel] = np.asarray(glow, float)[None] * np.asarray(m.emission or (1, 1, 1), float)[None]
            lit[sel] = False
    area = np.array([q.area / (grids[i][0] * grids[i][1]) for i, q in enumerate(quads)])[owner]
    mean_E = float((E[lit].mean(axis=1) * area[lit]).sum() / max(area[lit].sum(), 1e-9))

    start = 0
    for i in range(nq):
        nb, nc = grids[i]
        g = E[start:start + nb * nc].reshape(nc, nb, 3).astype(np.float32)
        start += nb * nc
        g = np.pad(g, ((1, 1), (1, 1), (0, 0)), mode="edge")
        image[int(oy[i]) - 1:int(oy[i]) + nc + 1, int(ox[i]) - 1:int(ox[i]) + nb + 1] = g
    sx = np.array([(grids[i][0] - 1) / (q.hi[0] - q.lo[0]) for i, q in enumerate(quads)], np.float32)
    sy = np.array([(grids[i][1] - 1) / (q.hi[1] - q.lo[1]) for i, q in enumerate(quads)], np.float32)
    return Lightmaps(image, ox, oy, sx, sy, mean_E)


# --------------------------------------------------------------------------------------------------
def _lamp_lights(scene: Scene, on: list[bool], kelvin: float, intensity: float) -> list[PointLight]:
    rgb = kelvin_rgb(kelvin) * intensity
    fall = max(2.5, 0.8 * scene.height)
    return [PointLight(lamp.position, tuple(rgb * lamp.power), fall, (0.0, 0.0, -1.0), panel=True)
            for lamp, o in zip(scene.lamps, on) if o]


def _spotlights(scene: Scene, rng: np.random.Generator, n: int, kelvin: float, power: float,
                side: int | None = None) -> list[PointLight]:
    """Spotlights mounted below the ceiling near the walls (``side``: all on that wall, 0 south, 1 east, 2 north,
    3 west; None: each on a random one), aimed at the walls / floor nearby."""
    x0, y0, x1, y1 = scene.floor_rect
    out = []
    fixed = side
    for _ in range(n):
        side = int(rng.integers(4)) if fixed is None else fixed
        t = float(rng.uniform(0.15, 0.85))
        zc = scene.height - 0.15
        if side == 0:
            pos, tgt = (x0 + t * (x1 - x0), y0 + 0.6, zc), (x0 + t * (x1 - x0), y0, 1.0)
        elif side == 1:
            pos, tgt = (x1 - 0.6, y0 + t * (y1 - y0), zc), (x1, y0 + t * (y1 - y0), 1.0)
        elif side == 2:
            pos, tgt = (x0 + t * (x1 - x0), y1 - 0.6, zc), (x0 + t * (x1 - x0), y1, 1.0)
        else:
            pos, tgt = (x0 + 0.6, y0 + t * (y1 - y0), zc), (x0, y0 + t * (y1 - y0), 1.0)
        d = np.asarray(tgt) - np.asarray(pos)
        d = d / np.linalg.norm(d)
        out.append(PointLight(tuple(map(float, pos)), tuple(kelvin_rgb(kelvin) * power), 2.5 + 0.3 * scene.height,
                              tuple(map(float, d)), (float(rng.uniform(15, 25)), float(rng.uniform(30, 40)))))
    return out


def run_setups(scene: Scene, seed: int = 0) -> tuple[dict[str, LightSetup], dict[str, SensorModel]]:
    """Light and sensor of the three runs of a scene.

    * ``mapping``: all lamps on, 4000 K, daylight windows, auto exposure (mean exposed irradiance
      :data:`TARGET_LEVEL`), very mild sensor noise.
    * ``query_same_light``: the same light, mild noise.
    * ``query_light_change``: about half of the lamps off, warm 2700-3000 K lamps, 2-3 spotlights, dimmer
      evening daylight, exposure x0.7-0.85 of the mapping run, stronger noise, blur and exposure flicker.

    Returns:
        ({run name: LightSetup}, {run name: SensorModel}) keyed by :data:`RUN_NAMES`.
    """
    rng = scene_rng(scene.name, seed, "lights")
    n = len(scene.lamps)
    map_k = 4000.0
    base = LightSetup(
        name="mapping",
        ambient=tuple(0.28 * kelvin_rgb(5500.0)),
        lights=tuple(_lamp_lights(scene, [True] * n, map_k, 1.0)),
        lamps_on=(True,) * n,
        lamp_glow=tuple(2.5 * kelvin_rgb(map_k)),
        daylight=tuple(1.25 * kelvin_rgb(6500.0)),
        exposure=1.0,
        colour_temperature_k=map_k,
        lamp_intensity=1.0,
    )
    lm = bake_lightmaps(scene, replace(base, shadows=False), res=0.5)
    exposure = TARGET_LEVEL / max(lm.mean_irradiance, 1e-6)
    mapping = replace(base, exposure=exposure, lamp_glow=tuple(np.asarray(base.lamp_glow) * lm.mean_irradiance),
                      daylight=tuple(np.asarray(base.daylight) * lm.mean_irradiance))

    on = [bool(v) for v in rng.random(n) < 0.5]
    if not any(on) and n:
        on[int(rng.integers(n))] = True
    warm = float(rng.uniform(2700.0, 3000.0))
    inten = float(rng.uniform(1.2, 1.5))
    spots = _spotlights(scene, rng, int(rng.integers(2, 4)), warm, 3.0 * inten)
    change = LightSetup(
        name="light_change",
        ambient=tuple(0.16 * kelvin_rgb(3500.0)),
        lights=tuple(_lamp_lights(scene, on, warm, inten) + spots),
        lamps_on=tuple(on),
        lamp_glow=tuple(2.5 * kelvin_rgb(warm) * lm.mean_irradiance),
        daylight=tuple(0.55 * kelvin_rgb(4200.0) * lm.mean_irradiance),
        exposure=exposure * float(rng.uniform(0.7, 0.85)),
        colour_temperature_k=warm,
        lamp_intensity=inten,
    )
    lights = {"mapping": mapping, "query_same_light": replace(mapping, name="mapping"),
              "query_light_change": change}
    sensors = {
        "mapping": SensorModel(read_noise=0.6 / 255, shot_noise=0.0, blur_sigma=0.0, exposure_jitter=0.0),
        "query_same_light": SensorModel(read_noise=1.5 / 255, shot_noise=0.5 / 255, blur_sigma=0.0,
                                        exposure_jitter=0.01),
        "query_light_change": SensorModel(read_noise=2.5 / 255, shot_noise=1.5 / 255, blur_sigma=0.7,
                                          exposure_jitter=0.04),
    }
    return lights, sensors


def _window_side(scene: Scene) -> int:
    """The wall (0 south, 1 east, 2 north, 3 west) nearest to the scene's windows (2 when it has none)."""
    if not scene.windows:
        return 2
    c = np.mean([scene.quads[i].corners().mean(axis=0) for i in scene.windows], axis=0)
    x0, y0, x1, y1 = scene.floor_rect
    return int(np.argmin([c[1] - y0, x1 - c[0], y1 - c[1], c[0] - x0]))


def session_setups(scene: Scene, session: int, seed: int = 0
                   ) -> tuple[dict[str, LightSetup], dict[str, SensorModel]]:
    """Light and sensor of the three runs of a later visit (:mod:`.sessions`); session 0 is :func:`run_setups`.

    The camera keeps session 0's exposure (computed from the day light), so a darker visit is darker in the
    images. Session 1 (evening): ceiling lamps at 40 %, 3000 K, the main light (spotlights) on the wall opposite
    the windows, dusk daylight. Session 2 (night): ceiling lamps off, three warm lamps (spotlights) and little
    ambient light, dark windows, stronger noise. Each session's ``query_light_change`` turns half of its lamps
    off and exposes 0.8x.
    """
    lights0, sensors0 = run_setups(scene, seed)
    if session == 0:
        return lights0, sensors0
    rng = scene_rng(scene.name, seed, f"lights_session_{session}")
    day = lights0["mapping"]
    n = len(scene.lamps)
    irr = float(np.mean(day.lamp_glow) / np.mean(2.5 * kelvin_rgb(4000.0)))  # the day's mean irradiance
    opposite = (_window_side(scene) + 2) % 4
    if session == 1:
        f, warm = 0.4, 3000.0
        on = [True] * n
        lamps = _lamp_lights(scene, on, warm, f)
        spots = _spotlights(scene, rng, 3, warm, 2.5 * f, side=opposite)
        main = LightSetup(name="evening", ambient=tuple(f * 0.28 * kelvin_rgb(3500.0)), lights=tuple(lamps + spots),
                          lamps_on=tuple(on), lamp_glow=tuple(2.5 * f * kelvin_rgb(warm) * irr),
                          daylight=tuple(0.3 * kelvin_rgb(2500.0) * irr), exposure=day.exposure,
                          colour_temperature_k=warm, lamp_intensity=f)
        sensor = SensorModel(read_noise=1.5 / 255, shot_noise=1.0 / 255, blur_sigma=0.0, exposure_jitter=0.01)
        change_sensor = SensorModel(read_noise=2.5 / 255, shot_noise=1.5 / 255, blur_sigma=0.5, exposure_jitter=0.03)
    else:
        f, warm = 0.15, 2700.0
        on = [False] * n
        spots = _spotlights(scene, rng, 3, warm, 2.0, side=None)
        main = LightSetup(name="night", ambient=tuple(f * 0.2 * kelvin_rgb(3000.0)), lights=tuple(spots),
                          lamps_on=tuple(on), lamp_glow=tuple(2.5 * kelvin_rgb(warm) * irr),
                          daylight=tuple(0.03 * kelvin_rgb(8000.0) * irr), exposure=day.exposure,
                          colour_temperature_k=warm, lamp_intensity=0.0)
        sensor = SensorModel(read_noise=3.0 / 255, shot_noise=2.5 / 255, blur_sigma=0.0, exposure_jitter=0.01)
        change_sensor = SensorModel(read_noise=4.0 / 255, shot_noise=3.0 / 255, blur_sigma=0.6, exposure_jitter=0.03)
    # the light change: half of the lights that are on go off (a lamp panel with its light), exposure x0.8
    keep = rng.random(len(main.lights)) < 0.5
    if not keep.any() and len(keep):
        keep[int(rng.integers(len(keep)))] = True
    lamp_pos = [L.position for L in scene.lamps]
    change_on = tuple(o and not any(L.panel and L.position == p and not k for L, k in zip(main.lights, keep))
                      for o, p in zip(main.lamps_on, lamp_pos))
    change = replace(main, name=f"{main.name}_light_change",
                     lights=tuple(L for L, k in zip(main.lights, keep) if k), lamps_on=change_on,
                     exposure=0.8 * main.exposure)
    lights = {"mapping": main, "query_same_light": main, "query_light_change": change}
    sensors = {"mapping": sensor, "query_same_light": sensor, "query_light_change": change_sensor}
    return lights, sensors
