"""Later visits to a synthetic scene (``reloc data synth --session K``): the same world frame and room, with the
furniture moved as people move it and another light.

* session 0: the scene as :func:`~.scene.make_scene` builds it (today's output, unchanged).
* session 1, evening: 20 % of the movable objects moved by 0.5-1.5 m, 10 % removed, 10 % added (copies of others);
  ceiling lamps on at 40 %, warm (3000 K), the main light (spotlights) on the side opposite the windows, dusk
  through the windows, the camera's exposure that of session 0 (no auto-exposure to hide the change).
* session 2, night: session 1's furniture with another 20 % moved; ceiling lamps off, a few warm lamps only
  (about 15 % of the day's light), dark windows, stronger sensor noise.

Each session has its own trajectories and sensor noise (:func:`session_seed`). Object changes are recorded in
``scene.yaml`` (``session_changes``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from reloc_ros.datasets.synthetic.scene import Quad, Scene, SceneObject, scene_rng

__all__ = ["SESSIONS", "session_seed", "apply_session", "object_bounds"]

SESSIONS = {0: "day (the scene as built)", 1: "evening, furniture moved", 2: "night, more furniture moved"}
MOVE_FRACTION, REMOVE_FRACTION, ADD_FRACTION = 0.2, 0.1, 0.1
MOVE_RANGE_M = (0.5, 1.5)


def session_seed(seed: int, session: int) -> int:
    """The seed of a session's trajectories, sensor noise and odometry drift (session 0: ``seed`` itself)."""
    return int(seed) if session == 0 else int(seed) + 100_003 * int(session)


def check_session(session: int) -> None:
    if session not in SESSIONS:
        raise ValueError(f"session must be one of {sorted(SESSIONS)} ({'; '.join(f'{k}: {v}' for k, v in SESSIONS.items())}), "
                         f"got {session}")


def object_bounds(scene: Scene, obj: SceneObject) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (lo [3], hi [3]) of an object's quads."""
    c = np.concatenate([scene.quads[i].corners() for i in range(*obj.quads)])
    return c.min(axis=0), c.max(axis=0)


def _moved_quad(q: Quad, d: np.ndarray) -> Quad:
    b, c = q.tangent_axes
    m = q.material
    if m.tile_m is not None and m.world_anchored:  # keep the texture on the object, not on the world
        U, V = q.uv_axes()
        m = replace(m, offset_m=(m.offset_m[0] - float(U @ d), m.offset_m[1] - float(V @ d)))
    return replace(q, pos=q.pos + float(d[q.axis]), lo=(q.lo[0] + float(d[b]), q.lo[1] + float(d[c])),
                   hi=(q.hi[0] + float(d[b]), q.hi[1] + float(d[c])), material=m)


def _overlap(lo1, hi1, lo2, hi2, margin: float) -> bool:
    return bool(np.all(lo1 < hi2 + margin) and np.all(hi1 > lo2 - margin))


@dataclass(frozen=True)
class _Group:
    """One piece of furniture while a scene is edited: its quads, obstacle and occluder boxes, how it may move (as
    :class:`~.scene.SceneObject`) and the bounds of its quads."""

    obj: SceneObject
    quads: list
    obstacles: list
    occluders: list
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, obj: SceneObject, quads: list, obstacles: list, occluders: list) -> "_Group":
        c = np.concatenate([q.corners() for q in quads])
        return cls(obj, quads, obstacles, occluders, c.min(axis=0), c.max(axis=0))

    def moved(self, d: np.ndarray) -> "_Group":
        return _Group.of(self.obj, [_moved_quad(q, d) for q in self.quads],
                         [(lo + d, hi + d) for lo, hi in self.obstacles],
                         [(lo + d, hi + d) for lo, hi in self.occluders])


class _Edit:
    """A scene being edited: its movable objects as :class:`_Group` (None once removed), the rest static."""

    def __init__(self, scene: Scene):
        self.scene = scene
        owned_q, owned_o, owned_c = set(), set(), set()
        self.groups: list[_Group | None] = []
        for o in scene.objects:
            owned_q.update(range(*o.quads)), owned_o.update(range(*o.obstacles)), owned_c.update(range(*o.occluders))
            self.groups.append(_Group.of(o, [scene.quads[i] for i in range(*o.quads)],
                                         [scene.obstacles[i] for i in range(*o.obstacles)],
                                         [scene.occluders[i] for i in range(*o.occluders)]))
        self.static_q = [i for i in range(len(scene.quads)) if i not in owned_q]
        self.static_obstacles = [scene.obstacles[i] for i in range(len(scene.obstacles)) if i not in owned_o]
        self.static_occluders = [scene.occluders[i] for i in range(len(scene.occluders)) if i not in owned_c]

    def fits(self, gi: int | None, lo: np.ndarray, hi: np.ndarray, on_floor: bool) -> bool:
        x0, y0, x1, y1 = self.scene.floor_rect
        if lo[0] < x0 + 0.05 or lo[1] < y0 + 0.05 or hi[0] > x1 - 0.05 or hi[1] > y1 - 0.05:
            return False
        for j, g in enumerate(self.groups):
            if j != gi and g is not None and _overlap(lo, hi, g.lo, g.hi, 0.05):
                return False
        if on_floor:
            return not any(_overlap(lo, hi, o_lo, o_hi, 0.15) for o_lo, o_hi in self.static_obstacles)
        # on a shelf: stays within a rack (a static obstacle) in x and y, on one of its boards
        return lo[2] >= 0.0 and any(np.all(lo[:2] >= o_lo[:2] - 1e-6) and np.all(hi[:2] <= o_hi[:2] + 1e-6)
                                    and lo[2] < o_hi[2] for o_lo, o_hi in self.static_obstacles)

    def build(self) -> Scene:
        sc = self.scene
        quads = [sc.quads[i] for i in self.static_q]
        remap = {old: new for new, old in enumerate(self.static_q)}
        obstacles, occluders = list(self.static_obstacles), list(self.static_occluders)
        objects = []
        for g in self.groups:
            if g is None:
                continue
            q0, o0, c0 = len(quads), len(obstacles), len(occluders)
            quads += g.quads
            obstacles += g.obstacles
            occluders += g.occluders
            objects.append(replace(g.obj, quads=(q0, len(quads)), obstacles=(o0, len(obstacles)),
                                   occluders=(c0, len(occluders))))
        lamps = [replace(L, quad=remap.get(L.quad, -1)) for L in sc.lamps]
        windows = [remap[w] for w in sc.windows if w in remap]
        return replace(sc, quads=quads, obstacles=obstacles, occluders=occluders, objects=objects, lamps=lamps,
                       windows=windows, _cache={})


def _try_move(ed: _Edit, gi: int, rng: np.random.Generator, tries: int = 60) -> list[float] | None:
    g = ed.groups[gi]
    o = g.obj
    for _ in range(tries):
        r = float(rng.uniform(*MOVE_RANGE_M))
        if o.on_floor:
            a = float(rng.uniform(0, 2 * np.pi))
            d = np.array([r * np.cos(a), r * np.sin(a), 0.0])
        else:  # along the shelf, or to another board of the rack
            d = np.zeros(3)
            d[2] = o.level_step * int(rng.integers(-2, 3)) if o.level_step > 0 else 0.0
            along = np.sqrt(max(r * r - d[2] ** 2, 0.0))
            d[o.slide_axis] = along * (1 if rng.random() < 0.5 else -1)
            if not MOVE_RANGE_M[0] <= np.linalg.norm(d) <= MOVE_RANGE_M[1]:
                continue
        if ed.fits(gi, g.lo + d, g.hi + d, o.on_floor):
            ed.groups[gi] = g.moved(d)
            return [round(float(v), 3) for v in d]
    return None


def _try_add(ed: _Edit, gi: int, rng: np.random.Generator, tries: int = 100) -> list[float] | None:
    """A copy of object ``gi`` somewhere free (floor objects anywhere on the floor, shelf objects along a rack)."""
    g = ed.groups[gi]
    o = g.obj
    x0, y0, x1, y1 = ed.scene.floor_rect
    for _ in range(tries):
        if o.on_floor:
            c = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
            d = np.array([*(c - (g.lo[:2] + g.hi[:2]) / 2), 0.0])
        else:  # somewhere on a board of a rack
            d = np.zeros(3)
            d[o.slide_axis] = float(rng.uniform(-6.0, 6.0))
            d[2] = o.level_step * int(rng.integers(-3, 4)) if o.level_step > 0 else 0.0
        if np.linalg.norm(d) >= MOVE_RANGE_M[0] and ed.fits(None, g.lo + d, g.hi + d, o.on_floor):
            ed.groups.append(g.moved(d))
            return [round(float(v), 3) for v in d]
    return None


def _count(frac: float, n: int) -> int:
    return min(n, max(1, int(round(frac * n)))) if n else 0


def apply_session(scene: Scene, session: int, seed: int) -> tuple[Scene, dict]:
    """The scene as session ``session`` finds it, and what changed since session 0 (per session: object kinds and
    indices of the scene as built, offsets in metres)."""
    check_session(session)
    changes: dict = {}
    ed = _Edit(scene)
    for k in range(1, session + 1):
        rng = scene_rng(scene.name, seed, f"session_{k}")
        n = len(ed.groups)
        alive = [i for i in range(n) if ed.groups[i] is not None]
        order = [alive[i] for i in rng.permutation(len(alive))]
        n_move = _count(MOVE_FRACTION, len(alive))
        n_remove = _count(REMOVE_FRACTION, len(alive) - n_move) if k == 1 and len(alive) >= 3 else 0
        n_add = _count(ADD_FRACTION, len(alive)) if k == 1 else 0
        rec = {"moved": [], "removed": [], "added": []}
        rest = list(order)
        while rest and len(rec["moved"]) < n_move:  # an object with no free spot stays; the next one moves
            gi = rest.pop(0)
            d = _try_move(ed, gi, rng)
            if d is not None:
                rec["moved"].append({"object": gi, "kind": ed.groups[gi].obj.kind, "offset_m": d})
        keep = rest[n_remove:] or [m["object"] for m in rec["moved"]]
        for gi in rest[:n_remove]:
            rec["removed"].append({"object": gi, "kind": ed.groups[gi].obj.kind})
            ed.groups[gi] = None
        for _ in range(5 * n_add):
            if len(rec["added"]) == n_add:
                break
            src = keep[int(rng.integers(len(keep)))]
            d = _try_add(ed, src, rng)
            if d is not None:
                rec["added"].append({"object": len(ed.groups) - 1, "copy_of": src, "kind": ed.groups[src].obj.kind,
                                     "offset_m": d})
        changes[f"session_{k}"] = rec
    return (ed.build() if session else scene), changes
