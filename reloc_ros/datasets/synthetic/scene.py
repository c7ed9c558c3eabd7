"""Synthetic indoor scenes made of textured axis-aligned rectangles (rooms, walls, boxes, posters).

World frame: REP-103, metres, x / y horizontal, z up, floor at z = 0.

A scene is a flat list of :class:`Quad` (one-sided rectangles orthogonal to a world axis) with
:class:`Material` (texture + how it is laid), the textures, the light fixtures (ceiling lamps, windows), the
obstacles the trajectories must avoid and the walkable floor rectangle.

Named scenes (:data:`SCENES`) have a fixed character; the seed only varies details (textures crops,
furniture jitter):

* ``office``: a 9 x 7 m office, posters, whiteboard, windows, desks with monitors, bookshelves, cubicle wall.
* ``corridor``: an L-shaped corridor with many identical doors (repetitive structure), few landmarks.
* ``hall``: a 24 x 16 x 6 m hall with pillars, banners, a stage, crates; long viewing distances.
* ``storage``: a storage room with rows of shelves full of cardboard boxes (cluttered, repetitive).

Any other name of the form ``train_*`` / ``val_*`` / ``random_*`` gives a random scene of a random
archetype, fully determined by ``(name, seed)``: random dimensions, furniture and materials, and pictures
(posters, screens, windows) made of random recoloured crops with painted shapes, so training data never shows
the named scenes or their pictures (generic materials such as wood, brick or carpet grain are shared).
"""

from __future__ import annotations

import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from reloc_ros.datasets.synthetic import textures as tx

__all__ = ["SCENES", "Material", "Quad", "Lamp", "Scene", "SceneBuilder", "SceneError", "make_scene",
           "scene_rng", "TRAIN_NAME_RE"]

SCENES = ("office", "corridor", "hall", "storage")
TRAIN_NAME_RE = re.compile(r"^(train|val|random)_[A-Za-z0-9_\-]+$")


class SceneError(ValueError):
    """Unknown scene name or an inconsistent scene description."""


def scene_rng(name: str, seed: int, stream: str = "scene") -> np.random.Generator:
    """Seeded generator for ``(name, seed, stream)`` (stable across processes and Python versions)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), zlib.crc32(stream.encode())])


@dataclass(frozen=True)
class Material:
    """How a texture is laid on a quad.

    Attributes:
        texture: key in :attr:`Scene.textures`.
        tile_m: (width, height) in metres of one texture tile for tiled textures; ``None``: the texture is
            stretched once over the quad (posters, doors, screens).
        tint: RGB multiplier of the albedo.
        world_anchored: tiled textures continue across quads of the same plane (walls, floors); otherwise
            the tile starts at the quad's top-left corner (box sides).
        offset_m: (u, v) shift of the tiling in metres.
        emission: RGB radiance of a self-lit surface (window, lamp panel); ``None`` for lit surfaces.
        lamp: index of the :class:`Lamp` this panel belongs to (it glows only while the lamp is on).
    """

    texture: str
    tile_m: tuple[float, float] | None = (1.0, 1.0)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    world_anchored: bool = True
    offset_m: tuple[float, float] = (0.0, 0.0)
    emission: tuple[float, float, float] | None = None
    lamp: int = -1


@dataclass(frozen=True)
class Quad:
    """A one-sided rectangle ``x[axis] = pos`` facing ``sign * e_axis``.

    ``lo`` / ``hi`` bound the two other coordinates, in increasing axis order (for ``axis=1``: x then z).
    """

    axis: int
    sign: int
    pos: float
    lo: tuple[float, float]
    hi: tuple[float, float]
    material: Material

    @property
    def tangent_axes(self) -> tuple[int, int]:
        return tuple(a for a in range(3) if a != self.axis)  # type: ignore[return-value]

    @property
    def normal(self) -> np.ndarray:
        n = np.zeros(3)
        n[self.axis] = self.sign
        return n

    def uv_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """World directions of the texture's u (right) and v (down) axes, seen from the front."""
        if self.axis == 2:
            return np.array([1.0, 0.0, 0.0]), np.array([0.0, -float(self.sign), 0.0])
        U = np.cross([0.0, 0.0, 1.0], self.normal)
        return U, np.array([0.0, 0.0, -1.0])

    def corners(self) -> np.ndarray:
        """``[4 x 3]`` world corners."""
        b, c = self.tangent_axes
        out = np.zeros((4, 3))
        out[:, self.axis] = self.pos
        out[:, b] = [self.lo[0], self.hi[0], self.hi[0], self.lo[0]]
        out[:, c] = [self.lo[1], self.lo[1], self.hi[1], self.hi[1]]
        return out

    @property
    def area(self) -> float:
        return (self.hi[0] - self.lo[0]) * (self.hi[1] - self.lo[1])


@dataclass(frozen=True)
class Lamp:
    """A ceiling light fixture: a point light at ``position`` pointing down, with a glowing panel quad."""

    position: tuple[float, float, float]
    quad: int
    power: float = 1.0


@dataclass(frozen=True)
class SceneObject:
    """A piece of movable furniture: the half-open index ranges of its quads, obstacles and occluders in the
    scene's lists. ``on_floor``: it stands on the floor (moves in x and y); else it sits on a shelf (moves along
    ``slide_axis`` only)."""

    kind: str
    quads: tuple[int, int]
    obstacles: tuple[int, int]
    occluders: tuple[int, int]
    on_floor: bool = True
    slide_axis: int = 0
    level_step: float = 0.0  # a shelf object may also move up or down by multiples of this (shelf spacing)


@dataclass
class Scene:
    """A complete synthetic scene.

    Attributes:
        name, seed: what :func:`make_scene` was called with.
        quads: the geometry.
        textures: {key: Texture}.
        lamps: ceiling fixtures (their panels are quads with ``material.lamp`` set).
        windows: indices of window quads (emission scaled by the run's daylight).
        obstacles: ``[(lo_3, hi_3)]`` boxes trajectories must keep clear of.
        occluders: ``[(lo_3, hi_3)]`` boxes casting shadows.
        floor_rect: (x0, y0, x1, y1) of the walkable floor (minus obstacles).
        height: ceiling height in metres.
        archetype: office / corridor / hall / storage.
        objects: the movable furniture (:class:`SceneObject`): what another visit moves, removes or adds
            (``reloc data synth --session``); nothing else uses it.
    """

    name: str
    seed: int
    quads: list[Quad]
    textures: dict[str, tx.Texture]
    lamps: list[Lamp]
    windows: list[int]
    obstacles: list[tuple[np.ndarray, np.ndarray]]
    occluders: list[tuple[np.ndarray, np.ndarray]]
    floor_rect: tuple[float, float, float, float]
    height: float
    archetype: str
    objects: list["SceneObject"] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def texture_keys(self) -> list[str]:
        return list(self.textures)

    def atlas(self) -> tx.TextureAtlas:
        """The packed texture atlas (built once per scene object)."""
        if "atlas" not in self._cache:
            self._cache["atlas"] = tx.TextureAtlas([self.textures[k] for k in self.textures])
        return self._cache["atlas"]

    def summary(self) -> dict:
        return {"name": self.name, "seed": int(self.seed), "archetype": self.archetype,
                "n_quads": len(self.quads), "n_textures": len(self.textures), "n_lamps": len(self.lamps),
                "floor_rect": [float(v) for v in self.floor_rect], "height": float(self.height)}


# --------------------------------------------------------------------------------------------------
class SceneBuilder:
    """Helpers that add rooms, boxes, wall panels and lamps to a scene under construction."""

    def __init__(self, name: str, seed: int, archetype: str, training: bool = False):
        self.name, self.seed, self.archetype = name, int(seed), archetype
        self.training = training
        self.rng = scene_rng(name, seed)
        self.photos = tx.PhotoLibrary()
        self.textures: dict[str, tx.Texture] = {}
        self.quads: list[Quad] = []
        self.lamps: list[Lamp] = []
        self.windows: list[int] = []
        self.obstacles: list[tuple[np.ndarray, np.ndarray]] = []
        self.occluders: list[tuple[np.ndarray, np.ndarray]] = []
        self.floor_rect = (0.0, 0.0, 1.0, 1.0)
        self.height = 2.5
        self.objects: list[SceneObject] = []

    @contextmanager
    def movable(self, kind: str, on_floor: bool = True, slide_axis: int = 0, level_step: float = 0.0):
        """Everything added inside the block is one piece of movable furniture (:class:`SceneObject`)."""
        q0, o0, c0 = len(self.quads), len(self.obstacles), len(self.occluders)
        yield
        self.objects.append(SceneObject(kind, (q0, len(self.quads)), (o0, len(self.obstacles)),
                                        (c0, len(self.occluders)), on_floor, slide_axis, level_step))

    # textures -------------------------------------------------------------------------------------
    def tex(self, key: str, make) -> str:
        """Register a texture once under ``key``; ``make()`` builds it (only called the first time)."""
        if key not in self.textures:
            self.textures[key] = make()
        return key

    def picture(self, key: str, photo: str, height_px: int, frame: bool = True, crop_frac: float = 1.0) -> str:
        """Register a clamped picture texture: the photo itself in the named (evaluation) scenes, an
        :func:`~.textures.abstract_poster` in training scenes (they never show the evaluation pictures)."""
        if self.training:
            return self.tex(key, lambda: tx.abstract_poster(self.rng, self.photos, height_px, frame))
        return self.tex(key, lambda: tx.poster(self.rng, self.photos, photo, height_px, frame=frame,
                                                crop_frac=crop_frac))

    def mat(self, key: str, make, tile_m=(1.0, 1.0), **kw) -> Material:
        return Material(self.tex(key, make), tile_m=tile_m, **kw)

    # geometry -------------------------------------------------------------------------------------
    def quad(self, axis: int, sign: int, pos: float, lo, hi, material: Material) -> int:
        lo = (float(lo[0]), float(lo[1]))
        hi = (float(hi[0]), float(hi[1]))
        if hi[0] - lo[0] <= 1e-6 or hi[1] - lo[1] <= 1e-6:
            return -1
        self.quads.append(Quad(int(axis), int(sign), float(pos), lo, hi, material))
        return len(self.quads) - 1

    def room(self, x0, y0, x1, y1, height, floor: Material, ceiling: Material, walls) -> None:
        """An inward-facing room. ``walls``: one Material or 4 (south y=y0, east x=x1, north y=y1, west x=x0)."""
        if isinstance(walls, Material):
            walls = [walls] * 4
        self.floor_rect = (float(x0), float(y0), float(x1), float(y1))
        self.height = float(height)
        self.quad(2, +1, 0.0, (x0, y0), (x1, y1), floor)
        self.quad(2, -1, height, (x0, y0), (x1, y1), ceiling)
        self.quad(1, +1, y0, (x0, 0.0), (x1, height), walls[0])
        self.quad(0, -1, x1, (y0, 0.0), (y1, height), walls[1])
        self.quad(1, -1, y1, (x0, 0.0), (x1, height), walls[2])
        self.quad(0, +1, x0, (y0, 0.0), (y1, height), walls[3])

    def box(self, lo, hi, material, top=None, front=None, bottom=False, obstacle=True, occluder=True,
            skip=()) -> None:
        """An axis-aligned box with outward faces.

        Args:
            material: Material of the sides (or a dict {"+x": m, "-x": m, ...} per face).
            top: Material of the top face (default ``material``); front: Material of the face ``front[0]``
                (e.g. ``("-y", mat)``) such as a screen or a bookshelf front.
            bottom: also add the bottom face (boxes that do not stand on the floor).
            skip: face names ("+x", "-z", ...) not to add (hidden faces).
        """
        lo = np.asarray(lo, float)
        hi = np.asarray(hi, float)
        faces = {}
        for a, n in enumerate("xyz"):
            faces["+" + n] = material if not isinstance(material, dict) else material.get("+" + n)
            faces["-" + n] = material if not isinstance(material, dict) else material.get("-" + n)
        if top is not None:
            faces["+z"] = top
        if front is not None:
            faces[front[0]] = front[1]
        if not bottom:
            faces.pop("-z")
        for name in skip:
            faces.pop(name, None)
        for fname, m in faces.items():
            if m is None:
                continue
            a = "xyz".index(fname[1])
            s = 1 if fname[0] == "+" else -1
            b, c = [k for k in range(3) if k != a]
            self.quad(a, s, hi[a] if s > 0 else lo[a], (lo[b], lo[c]), (hi[b], hi[c]), m)
        if obstacle:
            self.obstacles.append((lo, hi))
        if occluder:
            self.occluders.append((lo, hi))

    def wall_panel(self, wall: str, u0: float, u1: float, z0: float, z1: float, material: Material,
                   offset: float = 0.01) -> int:
        """A rectangle on a room wall (poster, door, window), ``offset`` metres in front of it.

        Args:
            wall: "south" | "east" | "north" | "west" of :attr:`floor_rect`, or ("x"|"y", pos, sign) for any
                plane (e.g. a box side).
            u0, u1: range along the wall's horizontal axis (world x for south/north walls, y for east/west).
        """
        x0, y0, x1, y1 = self.floor_rect
        spec = {"south": (1, y0, +1), "north": (1, y1, -1), "west": (0, x0, +1), "east": (0, x1, -1)}
        if isinstance(wall, str):
            axis, pos, sign = spec[wall]
        else:
            axis, pos, sign = "xy".index(wall[0]), wall[1], wall[2]
        return self.quad(axis, sign, pos + sign * offset, (u0, z0), (u1, z1), material)

    def lamp(self, x: float, y: float, size=(0.6, 0.6), power: float = 1.0, z: float | None = None) -> int:
        """A ceiling lamp: a glowing panel just below the ceiling and a point light below it."""
        z = self.height if z is None else z
        k = len(self.lamps)
        key = self.tex("lamp_panel", lambda: tx.plain_texture(self.rng, (0.95, 0.95, 0.95), 32, 0.01))
        m = Material(key, tile_m=None, emission=(1.0, 1.0, 1.0), lamp=k)
        qi = self.quad(2, -1, z - 0.01, (x - size[0] / 2, y - size[1] / 2), (x + size[0] / 2, y + size[1] / 2), m)
        self.lamps.append(Lamp((float(x), float(y), float(z - 0.05)), qi, float(power)))
        return k

    def window(self, wall: str, u0, u1, z0, z1, photo: str) -> int:
        key = self.picture(f"window_{photo}", photo, 256)
        qi = self.wall_panel(wall, u0, u1, z0, z1, Material(key, tile_m=None, emission=(1.0, 1.0, 1.0)))
        self.windows.append(qi)
        return qi

    def poster(self, wall, u_centre, z_centre, height, photo: str, key: str | None = None, crop_frac=1.0,
               offset=0.01, pixels: int | None = None) -> int:
        """A framed picture of ``height`` metres centred on (u_centre, z_centre) of a wall (aspect of the photo)."""
        key = key or f"poster_{photo}"
        px = pixels or int(np.clip(height * 320, 128, 512))
        k = self.picture(key, photo, px, crop_frac=crop_frac)
        h_px, w_px = self.textures[k].image.shape[:2]
        w = height * w_px / h_px
        return self.wall_panel(wall, u_centre - w / 2, u_centre + w / 2, z_centre - height / 2, z_centre + height / 2,
                               Material(k, tile_m=None), offset)

    def build(self) -> Scene:
        if not self.quads:
            raise SceneError(f"scene {self.name!r} has no geometry")
        return Scene(self.name, self.seed, self.quads, self.textures, self.lamps, self.windows, self.obstacles,
                     self.occluders, self.floor_rect, self.height, self.archetype, list(self.objects))


# --------------------------------------------------------------------------------------------------
# Common materials
def _m_plain(b: SceneBuilder, key: str, colour, tile=2.0) -> Material:
    return b.mat(key, lambda: tx.plain_texture(b.rng, colour, 128, 0.035), (tile, tile))


def _m_photo(b: SceneBuilder, key: str, photo: str, tile=2.0, **kw) -> Material:
    return b.mat(key, lambda: tx.photo_tile(b.rng, b.photos, photo, **kw), (tile, tile))


def _m_wood(b: SceneBuilder, key="wood", base=(0.55, 0.36, 0.2), tile=1.2, world=True) -> Material:
    return b.mat(key, lambda: tx.wood_texture(b.rng, 256, base), (tile, tile), world_anchored=world)


def _m_metal(b: SceneBuilder, key="metal", colour=(0.55, 0.56, 0.6)) -> Material:
    return b.mat(key, lambda: tx.noise_texture(b.rng, 64, np.array(colour) * 0.85, np.array(colour) * 1.1, 1.0),
                 (0.5, 0.5), world_anchored=False)


def _desk(b: SceneBuilder, x, y, w, d, rotate: bool, with_monitor=True, screen_photo="camera"):
    """A desk centred at (x, y) of size w x d (swapped when ``rotate``), with a monitor and a chair."""
    if rotate:
        w, d = d, w
    top = _m_wood(b, "desk_wood", (0.62, 0.45, 0.28), 1.0)
    metal = _m_metal(b)
    h = 0.74
    b.box((x - w / 2, y - d / 2, h - 0.04), (x + w / 2, y + d / 2, h), top, bottom=True, obstacle=False)
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = x + sx * (w / 2 - 0.05), y + sy * (d / 2 - 0.05)
            b.box((cx - 0.025, cy - 0.025, 0), (cx + 0.025, cy + 0.025, h - 0.04), metal, obstacle=False,
                  occluder=False)
    b.obstacles.append((np.array([x - w / 2, y - d / 2, 0]), np.array([x + w / 2, y + d / 2, h])))
    if with_monitor:
        scr = b.picture(f"screen_{screen_photo}", screen_photo, 128)
        dark = _m_plain(b, "plastic_dark", (0.12, 0.12, 0.13), 0.5)
        mw, mh = 0.55, 0.34
        if not rotate:  # screen faces -y (towards the chair at y - d)
            lo = (x - mw / 2, y + d / 2 - 0.25, h + 0.12)
            hi = (x + mw / 2, y + d / 2 - 0.22, h + 0.12 + mh)
            face = "-y"
        else:
            lo = (x + w / 2 - 0.25, y - mw / 2, h + 0.12)
            hi = (x + w / 2 - 0.22, y + mw / 2, h + 0.12 + mh)
            face = "-x"
        b.box(lo, hi, dark, front=(face, Material(scr, tile_m=None)), bottom=True, obstacle=False)
    # chair
    fab = b.mat("chair_fabric", lambda: tx.noise_texture(b.rng, 64, (0.1, 0.12, 0.25), (0.2, 0.25, 0.45), 0.8),
                (0.4, 0.4), world_anchored=False)
    cx, cy = (x, y - d / 2 - 0.35) if not rotate else (x - w / 2 - 0.35, y)
    b.box((cx - 0.24, cy - 0.24, 0.42), (cx + 0.24, cy + 0.24, 0.5), fab, bottom=True, obstacle=False)
    if not rotate:
        b.box((cx - 0.24, cy - 0.3, 0.5), (cx + 0.24, cy - 0.24, 1.0), fab, bottom=True, obstacle=False)
    else:
        b.box((cx - 0.3, cy - 0.24, 0.5), (cx - 0.24, cy + 0.24, 1.0), fab, bottom=True, obstacle=False)
    b.box((cx - 0.03, cy - 0.03, 0), (cx + 0.03, cy + 0.03, 0.42), metal, obstacle=False, occluder=False)
    b.obstacles.append((np.array([cx - 0.3, cy - 0.3, 0]), np.array([cx + 0.3, cy + 0.3, 1.0])))


def _bookshelf(b: SceneBuilder, lo, hi, face: str, key="books"):
    wood = _m_wood(b, "shelf_wood", (0.45, 0.3, 0.18), 1.0, world=False)
    books = b.tex(key, lambda: tx.books_texture(b.rng, 256, 2))
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    a = "xyz".index(face[1])
    span = hi[1 - a] - lo[1 - a] if a < 2 else 1.0
    h = hi[2] - lo[2]
    b.box(lo, hi, wood, front=(face, Material(books, tile_m=(span / max(1, round(span / 0.9)), h / 2),
                                              world_anchored=False)))


# --------------------------------------------------------------------------------------------------
# Scene archetypes
def _office(b: SceneBuilder, rng: np.random.Generator, random_layout: bool) -> None:
    W = 9.0 if not random_layout else float(rng.uniform(7, 12))
    D = 7.0 if not random_layout else float(rng.uniform(6, 9))
    H = 2.8
    carpet = _m_photo(b, "carpet", str(rng.choice(["gravel", "grass"])) if random_layout else "gravel", tile=1.6,
                      tint=(0.55, 0.62, 0.8), contrast=0.9)
    ceil = b.mat("ceiling_tiles", lambda: tx.ceiling_tiles_texture(b.rng, 256, 2), (1.2, 1.2))
    wall_plain = _m_plain(b, "wall_beige", (0.86, 0.82, 0.72))
    wall_brick = b.mat("wall_brick", lambda: tx.brick_texture(b.rng, b.photos, 512), (2.0, 2.0))
    wall_wood = _m_wood(b, "wall_wood", (0.6, 0.42, 0.26), 2.4)
    walls = [wall_brick, wall_plain, wall_plain, wall_wood]
    if random_layout:
        rng.shuffle(walls)
    b.room(0, 0, W, D, H, carpet, ceil, walls)
    # Windows on the north wall, posters and a whiteboard on the east / south walls.
    outdoor = ["rocket"] if not random_layout else [str(rng.choice(["rocket", "hubble_deep_field", "coffee"]))]
    b.window("north", W * 0.15, W * 0.15 + 1.6, 0.9, 2.2, outdoor[0])
    b.window("north", W * 0.55, W * 0.55 + 1.6, 0.9, 2.2, outdoor[0])
    posters = ["astronaut", "chelsea", "hubble_deep_field", "colorwheel", "immunohistochemistry", "cat", "clock",
               "coins", "retina"]
    posters = list(rng.permutation(posters))
    b.poster("east", D * 0.25, 1.6, 0.8, posters[0])
    b.poster("east", D * 0.75, 1.5, 0.6, posters[1])
    b.poster("south", W * 0.2, 1.6, 0.7, posters[2])
    b.poster("south", W * 0.62, 1.55, 0.9, posters[3])
    b.poster("west", D * 0.8, 1.6, 0.6, posters[4])
    wb = b.picture("whiteboard", "text", 256)
    b.wall_panel("east", D * 0.42, D * 0.42 + 1.8, 0.95, 1.95, Material(wb, tile_m=None))
    door = b.tex("door_office", lambda: tx.door_texture(b.rng, (0.5, 0.33, 0.2)))
    b.wall_panel("west", D * 0.3 - 0.45, D * 0.3 + 0.45, 0.0, 2.05, Material(door, tile_m=None), 0.02)
    # Cubicle wall dividing the room partly.
    fabric = b.mat("cubicle", lambda: tx.noise_texture(b.rng, 128, (0.3, 0.36, 0.45), (0.45, 0.52, 0.62), 1.2, 0.5),
                   (1.0, 1.0), world_anchored=False)
    px = W * (0.5 + float(rng.uniform(-0.05, 0.05)))
    b.box((px - 0.04, 0.0, 0.0), (px + 0.04, D * 0.42, 1.6), fabric)
    # Desks with monitors (screens show different photos).
    screens = ["camera", "moon", "page", "coins"]
    desks = [(W * 0.25, D * 0.35, False), (W * 0.25, D * 0.62, False), (W * 0.75, D * 0.62, True),
             (W * 0.72, D * 0.2, False)]
    for i, (x, y, rot) in enumerate(desks):
        x += float(rng.uniform(-0.15, 0.15))
        y += float(rng.uniform(-0.1, 0.1))
        with b.movable("desk"):
            _desk(b, x, y, 1.4, 0.7, rot, screen_photo=screens[i % len(screens)])
    # Bookshelves and cabinets along the walls.
    with b.movable("bookshelf"):
        _bookshelf(b, (W - 0.4, D * 0.05, 0), (W, D * 0.05 + 1.0, 2.0), "-x", "books_a")
    with b.movable("bookshelf"):
        _bookshelf(b, (0.0, D * 0.55, 0), (0.4, D * 0.55 + 1.2, 1.9), "+x", "books_b")
    drawers = b.mat("drawers", lambda: tx.stripes_texture(b.rng, 128, 4, [np.array([0.7, 0.7, 0.72]),
                                                                           np.array([0.55, 0.55, 0.6])], False),
                    (0.6, 0.8), world_anchored=False)
    cab_metal = _m_metal(b, "cab_metal", (0.6, 0.6, 0.64))
    with b.movable("cabinet"):
        b.box((W * 0.42, D - 0.5, 0), (W * 0.42 + 1.2, D, 1.1), cab_metal, front=("-y", drawers))
    plant = _m_photo(b, "leaves", "grass", tile=0.6, tint=(0.4, 0.9, 0.35), contrast=1.3)
    with b.movable("plant"):
        b.box((0.3, 0.3, 0), (0.8, 0.8, 1.3), plant)
    # Lamps on a grid.
    nx, ny = max(2, int(round(W / 3.2))), max(2, int(round(D / 3.0)))
    for i in range(nx):
        for j in range(ny):
            b.lamp(W * (i + 0.5) / nx, D * (j + 0.5) / ny, (0.6, 1.2))


def _corridor(b: SceneBuilder, rng: np.random.Generator, random_layout: bool) -> None:
    L1 = 20.0 if not random_layout else float(rng.uniform(14, 24))
    L2 = 10.0 if not random_layout else float(rng.uniform(6, 12))
    w = 2.4 if not random_layout else float(rng.uniform(2.2, 3.0))
    H = 2.6
    lino = b.mat("lino", lambda: tx.checker_texture(b.rng, 256, 4, (0.72, 0.7, 0.62), (0.6, 0.58, 0.5), 0.01, 0.05),
                 (1.2, 1.2))
    ceil = b.mat("ceiling_tiles", lambda: tx.ceiling_tiles_texture(b.rng, 256, 2), (1.2, 1.2))
    wall = _m_plain(b, "wall_corr", (0.82, 0.84, 0.8))
    b.room(0, 0, L1, L2, H, lino, ceil, wall)
    # The inner block turns the rectangle into an L: arm 1 along x (y < w), arm 2 along y (x > L1 - w).
    b.box((0.0, w, 0.0), (L1 - w, L2, H), wall, skip=("+z",))
    # Wainscot: a speckled lower band on every corridor wall (the upper walls stay plain: low texture).
    dado = b.mat("dado", lambda: tx.noise_texture(b.rng, 256, (0.32, 0.42, 0.36), (0.55, 0.66, 0.58), 0.9, 0.6),
                 (1.0, 1.0))
    for spec, u0, u1 in ((("y", 0.0, +1), 0.0, L1), (("y", w, -1), 0.0, L1 - w), (("x", L1, -1), 0.0, L2),
                         (("x", L1 - w, +1), w, L2), (("x", 0.0, +1), 0.0, w), (("y", L2, -1), L1 - w, L1)):
        b.wall_panel(spec, u0, u1, 0.0, 0.95, dado, 0.004)
    door_tex = b.tex("door_corr", lambda: tx.door_texture(b.rng, (0.55, 0.4, 0.25)))
    frame = _m_plain(b, "door_frame", (0.3, 0.3, 0.32), 1.0)
    door = Material(door_tex, tile_m=None)
    plates = 0

    def add_door(wall_spec, u):
        nonlocal plates
        b.wall_panel(wall_spec, u - 0.5, u + 0.5, 0.0, 2.12, frame, 0.01)
        b.wall_panel(wall_spec, u - 0.45, u + 0.45, 0.0, 2.05, door, 0.02)
        # A small number plate beside the door: a weak, tiny landmark.
        pk = b.tex(f"plate_{plates}", lambda: tx.Texture(tx._to_u8(_plate_image(b, plates)), wrap=False))
        b.wall_panel(wall_spec, u + 0.6, u + 0.84, 1.45, 1.57, Material(pk, tile_m=None), 0.01)
        plates += 1

    spacing = 3.0
    # Arm 1: south wall (y = 0, facing +y) and block face (y = w, facing -y).
    for k, u in enumerate(np.arange(1.5, L1 - w - 0.8, spacing)):
        add_door(("y", 0.0, +1), float(u))
        add_door(("y", w, -1), float(u + spacing / 2))
    # Arm 2: east wall (x = L1, facing -x) and block face (x = L1 - w, facing +x).
    for u in np.arange(w + 1.5, L2 - 0.8, spacing):
        add_door(("x", L1, -1), float(u))
        add_door(("x", L1 - w, +1), float(u + spacing / 2) if u + spacing / 2 < L2 - 0.6 else float(u))
    # A few landmarks: notice board, posters, fire extinguisher, radiators, end windows.
    page = b.picture("notice", "page", 256)
    b.wall_panel(("y", w, -1), 2.8, 4.2, 1.1, 1.8, Material(page, tile_m=None))
    b.poster(("y", 0.0, +1), L1 * 0.55, 1.55, 0.6, "clock")
    b.poster(("x", L1 - w, +1), L2 * 0.7, 1.5, 0.7, "coins")
    b.poster(("y", w, -1), L1 * 0.3, 1.6, 0.5, "chelsea")
    b.poster(("x", L1, -1), L2 * 0.45, 1.6, 0.6, "immunohistochemistry")
    bench = _m_wood(b, "bench", (0.5, 0.3, 0.15), 1.0, world=False)
    with b.movable("bench"):
        b.box((L1 * 0.4 + 0.15, 0.0, 0.0), (L1 * 0.4 + 1.45, 0.4, 0.45), bench)
    red = _m_plain(b, "red", (0.75, 0.08, 0.06), 0.5)
    b.box((L1 - w - 2.0, 0.0, 0.3), (L1 - w - 1.75, 0.18, 0.9), red, bottom=True, obstacle=True)
    rad = b.mat("radiator", lambda: tx.stripes_texture(b.rng, 64, 8, [np.array([0.9, 0.9, 0.88]),
                                                                      np.array([0.68, 0.68, 0.66])]),
                (0.5, 0.5), world_anchored=False)
    b.box((2.3, 0.0, 0.15), (3.5, 0.1, 0.75), rad, bottom=True)
    b.box((L1 - 0.1, L2 - 2.2, 0.15), (L1, L2 - 1.0, 0.75), rad, bottom=True)
    b.window(("x", 0.0, +1), 0.4, w - 0.4, 0.9, 2.2, "rocket")
    b.window(("y", L2, -1), L1 - w + 0.4, L1 - 0.4, 0.9, 2.2, "hubble_deep_field")
    for x in np.arange(1.25, L1, 2.5):
        b.lamp(float(x), w / 2, (1.2, 0.3))
    for y in np.arange(w + 1.25, L2, 2.5):
        b.lamp(L1 - w / 2, float(y), (0.3, 1.2))


def _plate_image(b: SceneBuilder, k: int) -> np.ndarray:
    """A 32 x 64 door plate: a crop of the ``text`` photo, different for each plate."""
    rng = scene_rng(b.name, b.seed, f"plate{k}")
    crop = b.photos.crop(rng, "text", 32, 64, 0.5)
    plate = np.full((32, 64, 3), 0.85, np.float32)
    plate[2:30, 2:62] = crop[2:30, 2:62] * 0.8 + 0.1
    return plate


def _hall(b: SceneBuilder, rng: np.random.Generator, random_layout: bool) -> None:
    W = 24.0 if not random_layout else float(rng.uniform(16, 28))
    D = 16.0 if not random_layout else float(rng.uniform(12, 18))
    H = 6.0
    floor = b.mat("hall_floor", lambda: tx.checker_texture(b.rng, 256, 2, (0.78, 0.74, 0.66), (0.52, 0.5, 0.46),
                                                          0.01, 0.1), (1.6, 1.6))
    ceil = _m_plain(b, "hall_ceiling", (0.55, 0.55, 0.58), 3.0)
    brick = b.mat("hall_brick", lambda: tx.brick_texture(b.rng, b.photos, 512, colour=(0.55, 0.26, 0.2)), (2.2, 2.2))
    concrete = b.mat("concrete", lambda: tx.noise_texture(b.rng, 256, (0.5, 0.5, 0.5), (0.78, 0.77, 0.74), 1.4, 0.3),
                     (3.0, 3.0))
    b.room(0, 0, W, D, H, floor, ceil, [brick, concrete, brick, concrete])
    # Pillars.
    pil = b.mat("pillar", lambda: tx.noise_texture(b.rng, 128, (0.55, 0.55, 0.56), (0.8, 0.8, 0.8), 1.0, 0.4),
                (1.0, 1.0), world_anchored=False)
    for x in np.arange(W / 4, W - 1, W / 4):
        for y in (D / 3, 2 * D / 3):
            jx = float(rng.uniform(-0.3, 0.3)) if random_layout else 0.0
            b.box((x + jx - 0.3, y - 0.3, 0), (x + jx + 0.3, y + 0.3, H), pil, skip=("+z",))
    # Beams across the ceiling.
    for x in np.arange(W / 8, W, W / 4):
        b.box((x - 0.2, 0, H - 0.5), (x + 0.2, D, H), concrete, bottom=True, obstacle=False, occluder=False)
    # Banners / big posters on the long walls.
    banners = list(rng.permutation(["astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
                                    "chelsea", "coffee", "rocket"]))
    for i, u in enumerate(np.linspace(W * 0.15, W * 0.85, 4)):
        b.poster("south", float(u), 3.0, 2.2, banners[i])
        b.poster("north", float(u + W * 0.06), 3.2, 2.4, banners[4 + i])
    b.poster("east", D * 0.5, 2.8, 2.0, "camera")
    # High windows on the west wall.
    for u in np.linspace(D * 0.2, D * 0.8, 3):
        b.window("west", float(u) - 1.0, float(u) + 1.0, 3.5, 5.2, "moon")
    # A stage with a backdrop, crates and benches.
    stage = _m_wood(b, "stage_wood", (0.42, 0.28, 0.16), 2.0)
    b.box((W * 0.35, D - 3.2, 0), (W * 0.65, D, 0.6), stage)
    crate = b.mat("crate", lambda: tx.wood_texture(b.rng, 128, (0.7, 0.55, 0.35), 8, 4), (0.8, 0.8),
                  world_anchored=False)
    n_crates = 6 if not random_layout else int(rng.integers(3, 10))
    for _ in range(n_crates):
        for _try in range(20):
            cx, cy = float(rng.uniform(2, W - 2)), float(rng.uniform(2, D - 4))
            s = float(rng.uniform(0.6, 1.3))
            lo = np.array([cx - s / 2, cy - s / 2, 0])
            hi = np.array([cx + s / 2, cy + s / 2, s])
            if not any(np.all(lo[:2] < o_hi[:2] + 1.2) and np.all(hi[:2] > o_lo[:2] - 1.2)
                       for o_lo, o_hi in b.obstacles):
                with b.movable("crates"):
                    b.box(lo, hi, crate)
                    if rng.random() < 0.5:
                        t = s * 0.6
                        b.box(lo + [0.1, 0.1, s], [lo[0] + 0.1 + t, lo[1] + 0.1 + t, s + t], crate)
                break
    bench = _m_wood(b, "bench", (0.5, 0.3, 0.15), 1.0, world=False)
    with b.movable("bench"):
        b.box((W * 0.1, D * 0.45, 0), (W * 0.1 + 3.0, D * 0.45 + 0.5, 0.45), bench)
    with b.movable("bench"):
        b.box((W * 0.7, D * 0.48, 0), (W * 0.7 + 3.0, D * 0.48 + 0.5, 0.45), bench)
    nx, ny = max(2, int(round(W / 6))), max(2, int(round(D / 5.5)))
    for i in range(nx):
        for j in range(ny):
            b.lamp(W * (i + 0.5) / nx, D * (j + 0.5) / ny, (1.0, 1.0), power=2.2)


def _storage(b: SceneBuilder, rng: np.random.Generator, random_layout: bool) -> None:
    W = 12.0 if not random_layout else float(rng.uniform(10, 15))
    D = 9.4 if not random_layout else float(rng.uniform(8, 11))
    H = 3.6
    floor = b.mat("concrete_floor", lambda: tx.noise_texture(b.rng, 256, (0.4, 0.4, 0.4), (0.62, 0.61, 0.58), 1.5, 0.4),
                  (2.5, 2.5))
    ceil = _m_plain(b, "storage_ceiling", (0.7, 0.7, 0.7), 2.0)
    blocks = b.mat("blocks", lambda: tx.brick_texture(b.rng, b.photos, 512, rows=8, cols=4, colour=(0.62, 0.62, 0.6),
                                                       mortar=(0.45, 0.45, 0.45), variation=0.05), (3.2, 1.6))
    b.room(0, 0, W, D, H, floor, ceil, blocks)
    orange = _m_plain(b, "rack_orange", (0.85, 0.4, 0.08), 1.0)
    board = _m_metal(b, "rack_board", (0.5, 0.52, 0.55))
    n_card = 10
    card_keys = [b.tex(f"card_{i}", lambda: tx.cardboard_texture(b.rng, b.photos, 128)) for i in range(n_card)]
    x0s, x1s = 1.5, W - 4.2
    n_rows = 3 if not random_layout else int(rng.integers(2, 4))
    ys = np.linspace(1.9, D - 1.9, n_rows)
    depth = 0.6
    for y in ys:
        y0, y1 = y - depth / 2, y + depth / 2
        levels = [0.1, 0.8, 1.5, 2.2]
        for x in np.arange(x0s, x1s + 1e-6, (x1s - x0s) / 3):
            b.box((x - 0.04, y0, 0), (x + 0.04, y1, 2.5), orange, occluder=False, obstacle=False)
        for z in levels:
            b.box((x0s, y0, z - 0.03), (x1s, y1, z), board, bottom=True, obstacle=False, occluder=False)
            x = x0s + 0.1
            while x < x1s - 0.3:
                bw = float(rng.uniform(0.3, 0.7))
                bh = float(rng.uniform(0.25, 0.6))
                bd = float(rng.uniform(0.35, depth - 0.05))
                if x + bw > x1s - 0.05:
                    break
                if rng.random() < 0.85:
                    m = Material(card_keys[int(rng.integers(n_card))], tile_m=None)
                    yy = y0 + 0.02 if rng.random() < 0.5 else y1 - 0.02 - bd
                    with b.movable("shelf box", on_floor=False, slide_axis=0, level_step=levels[1] - levels[0]):
                        b.box((x, yy, z), (x + bw, yy + bd, z + bh), m, occluder=False, obstacle=False)
                x += bw + float(rng.uniform(0.02, 0.15))
        b.obstacles.append((np.array([x0s - 0.05, y0, 0]), np.array([x1s + 0.05, y1, 2.5])))
        b.occluders.append((np.array([x0s - 0.05, y0, 0]), np.array([x1s + 0.05, y1, 2.5])))
    # Pallets with stacked boxes in the open area.
    pallet = _m_wood(b, "pallet", (0.6, 0.48, 0.3), 0.6, world=False)
    for k in range(3 if not random_layout else int(rng.integers(2, 5))):
        px = W - 2.6 + float(rng.uniform(-0.3, 0.3))
        py = 1.6 + k * (D - 3.2) / 2 + float(rng.uniform(-0.3, 0.3))
        with b.movable("pallet"):
            b.box((px - 0.6, py - 0.4, 0), (px + 0.6, py + 0.4, 0.15), pallet)
            for i in range(int(rng.integers(1, 4))):
                s = float(rng.uniform(0.4, 0.6))
                bx = px - 0.55 + i * 0.4
                m = Material(card_keys[int(rng.integers(n_card))], tile_m=None)
                b.box((bx, py - 0.35, 0.15), (bx + s * 0.9, py + 0.35, 0.15 + s), m)
    # Wall features: roll-up door, signs, a floor marking line.
    rollup = b.mat("rollup", lambda: tx.stripes_texture(b.rng, 128, 16, [np.array([0.6, 0.62, 0.64]),
                                                                        np.array([0.45, 0.47, 0.5])], False),
                   (1.0, 1.0), world_anchored=False)
    b.wall_panel("east", D * 0.5 - 1.5, D * 0.5 + 1.5, 0.0, 3.0, rollup, 0.02)
    b.poster("south", W * 0.3, 2.2, 0.6, "checkerboard")
    b.poster("north", W * 0.6, 2.3, 0.5, "text", key="sign_text")
    b.poster("west", D * 0.3, 1.8, 0.7, "horse")
    b.poster("west", D * 0.75, 1.9, 0.6, "cell")
    yellow = _m_plain(b, "yellow", (0.9, 0.75, 0.1), 0.5)
    b.quad(2, +1, 0.005, (W - 4.0, 0.3), (W - 3.9, D - 0.3), yellow)
    for i in range(3):
        for j in range(2):
            b.lamp(W * (i + 0.5) / 3, D * (j + 0.5) / 2, (1.2, 0.3), power=1.3)


_ARCHETYPES = {"office": _office, "corridor": _corridor, "hall": _hall, "storage": _storage}


def make_scene(name: str, seed: int = 0) -> Scene:
    """Build a scene.

    Args:
        name: one of :data:`SCENES`, or a training-scene name ``train_*`` / ``val_*`` / ``random_*``
            (random archetype and layout, determined by the name and the seed).
        seed: varies textures crops and furniture placement.

    Raises:
        SceneError: unknown name.
    """
    if name in _ARCHETYPES:
        arch, random_layout = name, False
    elif TRAIN_NAME_RE.match(name or ""):
        arch, random_layout = str(scene_rng(name, seed, "archetype").choice(SCENES)), True
    else:
        raise SceneError(
            f"unknown scene {name!r}; choose one of {', '.join(SCENES)}, or a generated training scene "
            "name train_<id> (e.g. train_000; also val_<id>, random_<id>)"
        )
    b = SceneBuilder(name, seed, arch, training=random_layout)
    _ARCHETYPES[arch](b, scene_rng(name, seed, "layout"), random_layout)
    return b.build()
