"""Vectorised numpy ray caster of textured axis-aligned quads (pinhole camera, exact z-depth).

Per frame:
    1. one ray per pixel centre (OpenCV convention: pixel (u, v) looks along ``((u - cx)/fx, (v - cy)/fy, 1)``);
    2. every front-facing quad is intersected with the rays inside its projected bounding box (exact
       ray / rectangle test, z-buffer), so the depth is the exact z of the first surface hit;
    3. texture coordinates are affine in the hit point (textures are attached to world surface coordinates);
       the mip level follows the pixel footprint on the surface (``z / (f sqrt(|d . n|))``), colours come from
       trilinear filtering of one texture atlas with ``cv2.remap``;
    4. the colour is multiplied by the run's baked light map (see :mod:`.lighting`) and the exposure.

Sensor effects (noise, blur, exposure flicker) are applied by :func:`apply_sensor`.
"""

from __future__ import annotations

import cv2
import numpy as np

from reloc_ros.core.camera import Camera
from reloc_ros.datasets.synthetic.lighting import LightSetup, Lightmaps, SensorModel, bake_lightmaps, run_setups
from reloc_ros.datasets.synthetic.scene import Scene, make_scene
from reloc_ros.datasets.synthetic.textures import N_LEVELS

__all__ = ["Renderer", "render", "apply_sensor", "NEAR_M"]

NEAR_M = 0.05  # near clipping distance (metres, along the optical axis)


class Renderer:
    """Renders one scene; keeps per-scene tables, per-camera rays and per-light light maps.

    Args:
        scene: the scene to render.
    """

    def __init__(self, scene: Scene):
        self.scene = scene
        self.atlas = scene.atlas()
        keys = list(scene.textures)
        tex_index = {k: i for i, k in enumerate(keys)}
        quads = scene.quads
        nq = len(quads)
        self.axis = np.array([q.axis for q in quads], np.int64)
        self.sign = np.array([q.sign for q in quads], np.float64)
        self.pos = np.array([q.pos for q in quads], np.float64)
        self.lo = np.array([q.lo for q in quads], np.float64)
        self.hi = np.array([q.hi for q in quads], np.float64)
        self.corners = np.stack([q.corners() for q in quads])  # [Q x 4 x 3]
        # Texture coordinates (level-0 texels): u = ub * p_b + uc * p_c + u0 (same for v).
        coef = np.zeros((nq, 6), np.float64)
        lod = np.zeros(nq, np.float64)
        tex = np.zeros(nq, np.int64)
        for i, q in enumerate(quads):
            m = q.material
            if m.texture not in tex_index:
                raise ValueError(f"quad {i} uses unknown texture {m.texture!r}")
            t = tex_index[m.texture]
            tex[i] = t
            tw, th = self.atlas.size0[t]
            U, V = q.uv_axes()
            b, c = q.tangent_axes
            a = q.axis
            corners = q.corners()
            if m.tile_m is None:  # stretched once over the quad
                ext_u = np.ptp(corners @ U)
                ext_v = np.ptp(corners @ V)
                su, sv = tw / ext_u, th / ext_v
                off_u, off_v = -(corners @ U).min(), -(corners @ V).min()
            else:
                su, sv = tw / m.tile_m[0], th / m.tile_m[1]
                if m.world_anchored:
                    off_u, off_v = m.offset_m
                else:
                    off_u = -(corners @ U).min() + m.offset_m[0]
                    off_v = -(corners @ V).min() + m.offset_m[1]
            coef[i] = [U[b] * su, U[c] * su, (U[a] * q.pos + off_u) * su,
                       V[b] * sv, V[c] * sv, (V[a] * q.pos + off_v) * sv]
            lod[i] = np.sqrt(su * sv)
        # Per-quad shading table, one row per attribute (gathered with one np.take per frame):
        # ub, uc, u0, vb, vc, v0, log2(texels per metre), lo_b, lo_c, texture index * N_LEVELS, normal axis.
        self.table = np.concatenate([
            coef.T, np.log2(lod)[None], self.lo.T, (tex * N_LEVELS)[None], self.axis[None],
        ]).astype(np.float32)
        self.tex = tex
        # Per (texture, level): width, height, atlas x / y of texel (0, 0), 1 / width and 1 / height of a tiled
        # texture (0 for a clamped one: its coordinates stay inside and the replicated border clamps them).
        at = self.atlas
        inv_w = np.where(at.wrap[:, None], 1.0 / at.w, 0.0)
        inv_h = np.where(at.wrap[:, None], 1.0 / at.h, 0.0)
        self.level_table = np.stack([at.w.ravel(), at.h.ravel(), at.ox.ravel(), at.oy.ravel(), inv_w.ravel(),
                                     inv_h.ravel()]).astype(np.float32)
        self.level_scale = np.exp2(-np.arange(N_LEVELS)).astype(np.float32)
        self._rays: dict[Camera, tuple] = {}
        self._lightmaps: dict[LightSetup, Lightmaps] = {}
        self._default_light: LightSetup | None = None

    # ----------------------------------------------------------------------------------------------
    def default_light(self, seed: int = 0) -> LightSetup:
        """The mapping light of the scene (auto exposure)."""
        if self._default_light is None:
            self._default_light = run_setups(self.scene, seed)[0]["mapping"]
        return self._default_light

    def lightmaps(self, light: LightSetup) -> Lightmaps:
        """The baked light maps of ``light`` (cached; ``extra["table"]``: per-quad ox, oy, sx, sy rows)."""
        if light not in self._lightmaps:
            lm = bake_lightmaps(self.scene, light)
            lm.extra["table"] = np.stack([lm.ox, lm.oy, lm.sx, lm.sy]).astype(np.float32)
            self._lightmaps[light] = lm
        return self._lightmaps[light]

    def _camera_rays(self, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image coordinates ``(x_W, y_H)`` of the pixel centres (rays ``(x, y, 1)``)."""
        if camera not in self._rays:
            if camera.is_distorted:
                raise ValueError("the synthetic renderer only renders ideal pinhole cameras (distortion 'none')")
            x = ((np.arange(camera.width) - camera.cx) / camera.fx).astype(np.float32)
            y = ((np.arange(camera.height) - camera.cy) / camera.fy).astype(np.float32)
            self._rays[camera] = (x, y)
        return self._rays[camera]

    # ----------------------------------------------------------------------------------------------
    def _visible_boxes(self, T_world_from_cam: np.ndarray, camera: Camera):
        """Front-facing quads and their pixel bounding boxes ``[(q, y0, y1, x0, x1)]``."""
        R = T_world_from_cam[:3, :3]
        o = T_world_from_cam[:3, 3]
        front = self.sign * (o[self.axis] - self.pos) > 1e-6
        idx = np.flatnonzero(front)
        rel = self.corners[idx] - o
        Pc = np.stack([(rel * R[:, k]).sum(-1) for k in range(3)], axis=-1)  # [M x 4 x 3] camera frame
        z = Pc[..., 2]
        out = []
        W, H = camera.width, camera.height
        all_in = np.all(z > NEAR_M, axis=1)
        any_in = np.any(z > NEAR_M, axis=1)
        for k in np.flatnonzero(any_in):
            poly = Pc[k]
            if not all_in[k]:
                poly = _clip_near(poly, NEAR_M)
            u = camera.fx * poly[:, 0] / poly[:, 2] + camera.cx
            v = camera.fy * poly[:, 1] / poly[:, 2] + camera.cy
            x0 = max(int(np.floor(u.min())) - 1, 0)
            x1 = min(int(np.ceil(u.max())) + 2, W)
            y0 = max(int(np.floor(v.min())) - 1, 0)
            y1 = min(int(np.ceil(v.max())) + 2, H)
            if x1 > x0 and y1 > y0:
                out.append((int(idx[k]), y0, y1, x0, x1))
        return out

    def render_linear(self, T_world_from_cam: np.ndarray, camera: Camera, light: LightSetup | None = None):
        """Render without sensor effects.

        Returns:
            rgb_HW3: float32 exposed, tone-mapped colour (1.0 = white), depth_HW: float32 z-depth in metres
            (0 where no surface was hit), qid_HW: int32 index of the visible quad (-1 none).
        """
        T = np.asarray(T_world_from_cam, np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("T_world_from_cam must be a finite 4x4 matrix")
        light = light or self.default_light()
        H, W = camera.height, camera.width
        xr, yr = self._camera_rays(camera)
        R = T[:3, :3].astype(np.float32)
        o = T[:3, 3]
        # World ray directions (camera-z normalised), one [H x W] plane per axis; no BLAS (threads) involved.
        Dp = [(R[k, 0] * xr)[None, :] + (R[k, 1] * yr + R[k, 2])[:, None] for k in range(3)]
        with np.errstate(divide="ignore"):
            invD = [np.float32(1.0) / Dp[k] for k in range(3)]
        zbuf = np.full((H, W), np.inf, np.float32)
        qid = np.full((H, W), -1, np.int32)
        o32 = o.astype(np.float32)
        for q, y0, y1, x0, x1 in self._visible_boxes(T, camera):
            a = self.axis[q]
            b, c = (1, 2) if a == 0 else ((0, 2) if a == 1 else (0, 1))
            sl = (slice(y0, y1), slice(x0, x1))
            with np.errstate(invalid="ignore"):
                t = (np.float32(self.pos[q]) - o32[a]) * invD[a][sl]
                pb = o32[b] + t * Dp[b][sl]
                pc = o32[c] + t * Dp[c][sl]
                zb = zbuf[sl]
                m = (t > NEAR_M) & (t < zb)
                m &= (pb >= self.lo[q, 0]) & (pb <= self.hi[q, 0]) & (pc >= self.lo[q, 1]) & (pc <= self.hi[q, 1])
            np.copyto(zb, t, where=m)
            np.copyto(qid[sl], np.int32(q), where=m)
        valid = qid >= 0
        all_valid = bool(valid.all())
        qs = qid if all_valid else np.maximum(qid, 0)
        z = zbuf if all_valid else np.where(valid, zbuf, np.float32(0.0))
        ub, uc, u0, vb, vc, v0, log_lod, lo_b, lo_c, tex_row, ax = np.take(self.table, qs, axis=1)
        # Hit point coordinates along the quad's two tangent axes (b, c).
        Px = o32[0] + z * Dp[0]
        Py = o32[1] + z * Dp[1]
        is_x = ax == 0
        pb = np.where(is_x, Py, Px)
        pc = np.where(ax == 2, Py, o32[2] + z * Dp[2])
        da = np.where(is_x, Dp[0], np.where(ax == 1, Dp[1], Dp[2]))  # ray component along the normal
        # Texture coordinates (level-0 texels) and mip level: footprint z / (f sqrt(|d . n|)) in texels.
        u = ub * pb + uc * pc + u0
        v = vb * pb + vc * pc + v0
        f2 = np.float32(camera.fx * camera.fy)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.float32(0.5) * np.log2(z * z / (f2 * np.abs(da))) + log_lod
        np.clip(level, 0.0, N_LEVELS - 1 - 1e-3, out=level)
        level[~np.isfinite(level)] = 0.0
        l0 = level.astype(np.int32)
        frac = level - np.floor(level)
        k0 = l0 + tex_row.astype(np.int32)
        c0 = self._sample(k0, l0, u, v)
        c1 = self._sample(np.minimum(k0 + 1, k0 - l0 + N_LEVELS - 1), np.minimum(l0 + 1, N_LEVELS - 1), u, v)
        albedo = cv2.blendLinear(c0, c1, np.float32(1.0) - frac, frac)
        # Light map.
        lm = self.lightmaps(light)
        lox, loy, lsx, lsy = np.take(lm.extra["table"], qs, axis=1)
        lx = lox + (pb - lo_b) * lsx
        ly = loy + (pc - lo_c) * lsy
        irr = cv2.remap(lm.image, lx, ly, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rgb = _tonemap(cv2.multiply(albedo, irr, dtype=cv2.CV_32F, scale=float(light.exposure) / 255.0))
        if not all_valid:
            rgb[~valid] = 0.0
        return rgb, z, qid

    def _sample(self, k, level, u, v) -> np.ndarray:
        """Bilinear atlas lookup at level-0 texel coordinates (u, v) -> ``[H x W x 3] uint8``.

        Args:
            k: ``[H x W] int32`` row of :attr:`level_table` (texture * N_LEVELS + level); level: the level.
        """
        w, h, ox, oy, inv_w, inv_h = np.take(self.level_table, k, axis=1)
        s = self.level_scale[level]
        x = u * s - np.float32(0.5)
        y = v * s - np.float32(0.5)
        x -= np.floor(x * inv_w) * w  # periodic for tiled textures, unchanged for clamped ones
        y -= np.floor(y * inv_h) * h
        x += ox
        y += oy
        return cv2.remap(self.atlas.image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def render(self, T_world_from_cam: np.ndarray, camera: Camera, light: LightSetup | None = None,
               sensor: SensorModel | None = None, rng: np.random.Generator | None = None):
        """Render RGB ``[H x W x 3] uint8`` and z-depth ``[H x W] float32`` (metres, 0 = no hit).

        Args:
            sensor, rng: optional sensor effects and the generator of their noise.
        """
        rgb, depth, _ = self.render_linear(T_world_from_cam, camera, light)
        if sensor is not None:
            rgb = apply_sensor(rgb, sensor, rng if rng is not None else np.random.default_rng(0))
        return _quantize(rgb), depth


def _tonemap(x: np.ndarray, knee: float = 0.75) -> np.ndarray:
    """Identity below ``knee``, then a smooth rational shoulder towards 1 (highlights keep some texture)."""
    k = np.float32(knee)
    r = np.float32(1.0 - knee)
    over = np.maximum(x - k, np.float32(0.0))
    return np.minimum(x, k) + over * r / (over + r)


def _quantize(rgb_f: np.ndarray) -> np.ndarray:
    return np.clip(rgb_f * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)


def _clip_near(poly_N3: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon to ``z >= near``."""
    out = []
    n = len(poly_N3)
    for i in range(n):
        p, q = poly_N3[i], poly_N3[(i + 1) % n]
        pin, qin = p[2] >= near, q[2] >= near
        if pin:
            out.append(p)
        if pin != qin:
            t = (near - p[2]) / (q[2] - p[2])
            out.append(p + t * (q - p))
    return np.array(out)


def apply_sensor(rgb_HW3: np.ndarray, sensor: SensorModel, rng: np.random.Generator) -> np.ndarray:
    """Exposure flicker, blur and signal-dependent gaussian noise on a float image (values ~[0, 1])."""
    img = rgb_HW3
    if sensor.exposure_jitter > 0:
        img = img * np.float32(1.0 + sensor.exposure_jitter * rng.standard_normal())
    if sensor.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), sensor.blur_sigma)
    if sensor.read_noise > 0 or sensor.shot_noise > 0:
        var = np.float32(sensor.read_noise**2) + np.float32(sensor.shot_noise) * np.clip(img, 0.0, 1.0)
        img = img + np.sqrt(var) * rng.standard_normal(img.shape, dtype=np.float32)
    return img


def render(scene, T_world_from_cam: np.ndarray, camera: Camera, light: LightSetup | None = None):
    """Render one view of a scene without sensor effects.

    Args:
        scene: a :class:`Scene` or a scene name (built with seed 0).
        T_world_from_cam: 4x4 pose of the camera optical frame.
        camera: pinhole intrinsics (distortion "none").
        light: the light; default the scene's mapping light.

    Returns:
        rgb_HW3 uint8, depth_HW float32 z-depth in metres (0 = no hit).

    Note:
        Builds a :class:`Renderer` (texture atlas, light maps) on the first call per scene object; use a
        :class:`Renderer` directly to render many frames.
    """
    if isinstance(scene, str):
        scene = make_scene(scene, 0)
    r = scene._cache.get("renderer")
    if r is None:
        r = scene._cache["renderer"] = Renderer(scene)
    return r.render(T_world_from_cam, camera, light)
