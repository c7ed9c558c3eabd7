"""Camera trajectories of the synthetic runs: a base moving through free space, a camera on a fixed mount.

The carrier (``base_link``, REP-103: x forward, y left, z up) moves like a hand-held rig / legged robot:
planar path with heading, small vertical bob, small pitch / roll. The camera optical frame is rigidly mounted
on it (:func:`mount_T_base_from_cam`), so ``T_world_from_cam = T_world_from_base @ T_base_from_cam`` holds
exactly for every frame.

Paths:
    1. a free-space grid of the floor (obstacles = boxes reaching below 2 m, dilated by the body radius);
    2. waypoints by farthest-point sampling of well-clear cells, ordered into a closed tour (geodesic 2-opt);
    3. minimum-cost grid paths between waypoints (cost favours > 1 m clearance), resampled and smoothed;
    4. query runs: other waypoints, a smooth lateral offset, the other direction (clearance-checked).
The mapping run goes around its tour forwards, then backwards (so every place is seen in both directions).
Timing: 30 Hz samples, constant average speed with +-25 % variation, so a run covers its whole tour.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from reloc_ros.core.geometry import make_T
from reloc_ros.datasets.synthetic.scene import Scene, scene_rng

__all__ = ["FRAME_RATE_HZ", "MOUNT", "mount_T_base_from_cam", "FreeSpace", "Trajectory", "plan_runs",
           "simulate_odometry", "rpy_matrix", "OdometryNoise"]

FRAME_RATE_HZ = 30.0
NOMINAL_SPEED_MPS = 0.8
BODY_RADIUS_M = 0.45
# Camera mount on base_link: 0.10 m forward, 1.25 m up, pitched 3 deg down.
MOUNT = {"x": 0.10, "y": 0.0, "z": 1.25, "pitch_down_deg": 3.0}

# optical (x right, y down, z forward) -> REP-103 body (x forward, y left, z up)
_R_LINK_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """REP-103 rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians)."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
    Ry = np.array([[cp, 0, sp], [0, 1.0, 0], [-sp, 0, cp]])
    Rx = np.array([[1.0, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return Rz @ Ry @ Rx


def mount_T_base_from_cam(x=MOUNT["x"], y=MOUNT["y"], z=MOUNT["z"], pitch_down_deg=MOUNT["pitch_down_deg"]):
    """``T_base_from_cam`` of the camera optical frame on ``base_link`` (positive pitch looks down)."""
    R = rpy_matrix(0.0, np.radians(pitch_down_deg), 0.0) @ _R_LINK_FROM_OPTICAL
    return make_T(R, [x, y, z])


# --------------------------------------------------------------------------------------------------
def _smooth(x_N: np.ndarray, sigma: float, closed: bool) -> np.ndarray:
    """Gaussian smoothing along axis 0 (``sigma`` in samples), periodic when ``closed``."""
    if sigma <= 0.05:
        return x_N.copy()
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    x = np.asarray(x_N, float)
    x2 = x.reshape(len(x), -1)
    if closed:
        pad = x2[np.arange(-r, len(x) + r) % len(x)]
    else:
        pad = np.concatenate([np.repeat(x2[:1], r, 0), x2, np.repeat(x2[-1:], r, 0)], axis=0)
    out = np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x2.shape[1])], axis=1)
    return out.reshape(x.shape)


def _resample(poly_N2: np.ndarray, step: float, closed: bool) -> np.ndarray:
    p = np.asarray(poly_N2, float)
    if closed:
        p = np.concatenate([p, p[:1]], axis=0)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    p = p[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    n = max(int(np.ceil(s[-1] / step)), 2)
    si = np.linspace(0.0, s[-1], n + (0 if closed else 1), endpoint=not closed)
    return np.stack([np.interp(si, s, p[:, 0]), np.interp(si, s, p[:, 1])], axis=1)


@dataclass
class FreeSpace:
    """Clearance map of the floor.

    Attributes:
        origin: world (x, y) of cell (0, 0)'s centre; res: cell size (m).
        clearance: ``[H x W] float32`` distance (m) to the nearest obstacle or wall; row = y, column = x.
    """

    origin: np.ndarray
    res: float
    clearance: np.ndarray

    @classmethod
    def from_scene(cls, scene: Scene, res: float = 0.08, max_obstacle_z: float = 2.0) -> "FreeSpace":
        x0, y0, x1, y1 = scene.floor_rect
        nx = int(np.ceil((x1 - x0) / res))
        ny = int(np.ceil((y1 - y0) / res))
        free = np.ones((ny + 2, nx + 2), np.uint8)  # one-cell wall border
        free[0, :] = free[-1, :] = free[:, 0] = free[:, -1] = 0
        origin = np.array([x0 - 0.5 * res, y0 - 0.5 * res])
        xs = origin[0] + res * np.arange(nx + 2)
        ys = origin[1] + res * np.arange(ny + 2)
        for lo, hi in scene.obstacles:
            if lo[2] >= max_obstacle_z or hi[2] <= 0.02:
                continue
            cx = (xs >= lo[0] - res / 2) & (xs <= hi[0] + res / 2)
            cy = (ys >= lo[1] - res / 2) & (ys <= hi[1] + res / 2)
            free[np.ix_(cy, cx)] = 0
        clr = cv2.distanceTransform(free, cv2.DIST_L2, 5).astype(np.float32) * res
        return cls(origin, res, clr)

    def cell(self, xy_N2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ij = np.rint((np.asarray(xy_N2) - self.origin) / self.res).astype(int)
        c = np.clip(ij[..., 0], 0, self.clearance.shape[1] - 1)
        r = np.clip(ij[..., 1], 0, self.clearance.shape[0] - 1)
        return r, c

    def at(self, xy_N2: np.ndarray) -> np.ndarray:
        """Clearance (m) at world points (bilinear)."""
        p = (np.asarray(xy_N2, np.float32) - self.origin.astype(np.float32)) / np.float32(self.res)
        mx = np.ascontiguousarray(p[..., 0].reshape(-1, 1)).astype(np.float32)
        my = np.ascontiguousarray(p[..., 1].reshape(-1, 1)).astype(np.float32)
        out = cv2.remap(self.clearance, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.reshape(np.asarray(xy_N2).shape[:-1])

    def distance_to(self, xy_N2: np.ndarray) -> np.ndarray:
        """``[H x W]`` distance (m) from every cell to the nearest of the given world points."""
        mask = np.ones(self.clearance.shape, np.uint8)
        r, c = self.cell(np.asarray(xy_N2))
        mask[r, c] = 0
        return cv2.distanceTransform(mask, cv2.DIST_L2, 5).astype(np.float32) * self.res

    def world(self, rc_N2: np.ndarray) -> np.ndarray:
        rc = np.asarray(rc_N2, float)
        return np.stack([self.origin[0] + rc[:, 1] * self.res, self.origin[1] + rc[:, 0] * self.res], axis=1)


# --------------------------------------------------------------------------------------------------
def _farthest_points(cells_N2: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    idx = [int(rng.integers(len(cells_N2)))]
    d = np.linalg.norm(cells_N2 - cells_N2[idx[0]], axis=1)
    for _ in range(1, k):
        i = int(np.argmax(d))
        idx.append(i)
        d = np.minimum(d, np.linalg.norm(cells_N2 - cells_N2[i], axis=1))
    return cells_N2[idx]


def _tour_order(D_KK: np.ndarray) -> list[int]:
    """Closed tour through all K points: nearest neighbour then 2-opt on distance matrix ``D``."""
    K = len(D_KK)
    order = [0]
    left = set(range(1, K))
    while left:
        nxt = min(left, key=lambda j: D_KK[order[-1], j])
        order.append(nxt)
        left.remove(nxt)
    improved = True
    while improved and K > 3:
        improved = False
        for i in range(1, K - 1):
            for j in range(i + 1, K):
                a, b = order[i - 1], order[i]
                c, d = order[j], order[(j + 1) % K]
                if D_KK[a, c] + D_KK[b, d] < D_KK[a, b] + D_KK[c, d] - 1e-9:
                    order[i:j + 1] = order[i:j + 1][::-1]
                    improved = True
    return order


def _cost_grid(fs: FreeSpace) -> np.ndarray:
    """Per-cell travel cost: 1 in the open, up to 3 close to obstacles, impassable within the body radius."""
    c_pref = 1.0
    cost = 1.0 + 2.0 * np.clip((c_pref - fs.clearance) / c_pref, 0.0, 1.0) ** 2
    cost[fs.clearance < BODY_RADIUS_M] = np.inf
    return cost


def _waypoint_cells(fs: FreeSpace) -> np.ndarray:
    """``[M x 2]`` (row, col) cells clear enough to be waypoints."""
    clr = fs.clearance
    if clr.max() < BODY_RADIUS_M + 0.02:
        raise ValueError("the scene has no free space wide enough for the camera carrier")
    r_wp = BODY_RADIUS_M + 0.25
    if clr.max() < r_wp:
        r_wp = max(BODY_RADIUS_M + 0.02, 0.85 * float(clr.max()))
    return np.argwhere(clr >= r_wp)


def _plan_tour(fs: FreeSpace, cost: np.ndarray, cand: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Closed, smoothed ``[N x 2]`` world path (5 cm spacing) through farthest-point waypoints of ``cand``."""
    from skimage.graph import MCP_Geometric

    area = len(cand) * fs.res**2
    k = int(np.clip(round(area / 6.0), 3, 10))
    k = min(k, len(cand))
    wp = _farthest_points(cand.astype(float), k, rng).astype(int)
    if k < 2:
        c = fs.world(wp[:1])[0]
        ang = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        return c + 0.1 * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    mcps = []
    D = np.zeros((k, k))
    for i in range(k):
        m = MCP_Geometric(cost)
        costs, _ = m.find_costs([tuple(wp[i])])
        mcps.append(m)
        D[i] = costs[wp[:, 0], wp[:, 1]]
    D = np.where(np.isfinite(D), D, 1e9)
    order = _tour_order(0.5 * (D + D.T))
    cells = []
    for a, b in zip(order, order[1:] + order[:1]):
        seg = np.array(mcps[a].traceback(tuple(wp[b])))
        cells.append(seg[:-1])
    path = _resample(fs.world(np.concatenate(cells, axis=0)), 0.05, closed=True)
    return _smooth_safe(fs, path, closed=True)


def _closed_length(path_N2: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(np.concatenate([path_N2, path_N2[:1]]), axis=0), axis=1).sum())


def _tour_within_budget(fs: FreeSpace, cost: np.ndarray, cand: np.ndarray, geo: np.ndarray, budget_m: float,
                        r_max: float, rng_seed: list[int]) -> tuple[np.ndarray, float]:
    """The widest tour (waypoints within geodesic radius ``r`` of the region centre) not longer than ``budget_m``.

    Returns:
        (path, r) of the largest radius found by bisection (the smallest tour when even that is too long).
    """
    def tour(r):
        sel = cand[geo[cand[:, 0], cand[:, 1]] <= r]
        if len(sel) == 0:
            sel = cand[np.argsort(geo[cand[:, 0], cand[:, 1]])[:1]]
        return _plan_tour(fs, cost, sel, np.random.default_rng(rng_seed))

    full = tour(r_max)
    if _closed_length(full) <= budget_m:
        return full, r_max
    lo, hi = 0.0, r_max
    best = tour(0.0)
    best_r = 0.0
    for _ in range(7):
        mid = 0.5 * (lo + hi)
        p = tour(mid)
        if _closed_length(p) <= budget_m:
            lo, best, best_r = mid, p, mid
        else:
            hi = mid
    return best, best_r


def _smooth_safe(fs: FreeSpace, path_N2: np.ndarray, closed: bool, sigma_m: float = 0.4) -> np.ndarray:
    for s in (sigma_m, 0.25, 0.12, 0.0):
        out = _smooth(path_N2, s / 0.05, closed)
        if np.all(fs.at(out) >= BODY_RADIUS_M - 0.02):
            return out
    return path_N2


def _normals(path_N2: np.ndarray, closed: bool) -> np.ndarray:
    if closed:
        t = np.roll(path_N2, -1, axis=0) - np.roll(path_N2, 1, axis=0)
    else:
        t = np.gradient(path_N2, axis=0)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def _offset_path(fs: FreeSpace, path_N2: np.ndarray, rng: np.random.Generator, bias: float,
                 amp: float = 0.2, wavelength_m: float = 6.0) -> np.ndarray:
    """Smooth lateral offset of a closed path, shrunk wherever it would leave the free space."""
    n = _normals(path_N2, True)
    s = np.arange(len(path_N2)) * 0.05
    L = max(s[-1] + 0.05, 1e-3)
    cycles = max(1, round(L / wavelength_m))
    d = bias + amp * np.sin(2 * np.pi * cycles * s / L + rng.uniform(0, 2 * np.pi))
    f = np.ones(len(path_N2))
    need = BODY_RADIUS_M + 0.05
    for _ in range(8):
        out = path_N2 + (f * d)[:, None] * n
        bad = fs.at(out) < need
        if not bad.any():
            break
        grow = _smooth(bad.astype(float), 10.0, True) > 1e-3
        f = np.where(grow, f * 0.5, f)
        f = np.minimum(f, _smooth(f, 10.0, True))
    out = path_N2 + (f * d)[:, None] * n
    bad = fs.at(out) < BODY_RADIUS_M
    out[bad] = path_N2[bad]
    return _smooth_safe(fs, _resample(out, 0.05, True), True, 0.15)


# --------------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """One run.

    Attributes:
        name: run name; times_ns: ``[N] int64`` stamps (nanoseconds, the source of truth; ``times_s`` is
        derived); T_world_from_base / T_world_from_cam: ``[N x 4 x 4]``; T_base_from_cam: the mount;
        path_length_m: distance travelled by the base; mean_speed_mps.
    """

    name: str
    times_ns: np.ndarray
    T_world_from_base: np.ndarray
    T_world_from_cam: np.ndarray
    T_base_from_cam: np.ndarray
    path_length_m: float
    mean_speed_mps: float

    def __len__(self) -> int:
        return len(self.times_ns)

    @property
    def times_s(self) -> np.ndarray:
        return self.times_ns / 1e9


def _poses_along(path_N2: np.ndarray, n: int, stride: int, t0: float, rng: np.random.Generator, z_offset: float,
                 T_base_from_cam: np.ndarray, name: str, fs: FreeSpace | None = None) -> Trajectory:
    """Sample ``n`` frames (every ``stride``-th of a 30 Hz trajectory) along a closed path.

    Heading follows the path (smoothed over 0.35 s) plus a look-around sweep of +-35 deg (8 s period) and
    +-8 deg (2.7 s), reduced to as little as 40 % where the free space is narrow (corridors, aisles: people
    look along them). Pitch +-5 deg, roll +-1.5 deg, vertical bob +-8 cm around ``z_offset``.
    """
    seg = np.linalg.norm(np.diff(np.concatenate([path_N2, path_N2[:1]]), axis=0), axis=1)
    s_nodes = np.concatenate([[0.0], np.cumsum(seg)])
    L = float(s_nodes[-1])
    closed = np.concatenate([path_N2, path_N2[:1]], axis=0)
    m = n * stride
    dt = 1.0 / FRAME_RATE_HZ
    tt = np.arange(m) * dt
    x = np.arange(m) / m
    a, cyc, psi = 0.25, 3, rng.uniform(0, 2 * np.pi)
    phi = x + a / (2 * np.pi * cyc) * (np.cos(psi) - np.cos(2 * np.pi * cyc * x + psi))
    s = phi * L
    xy = np.stack([np.interp(s, s_nodes, closed[:, 0]), np.interp(s, s_nodes, closed[:, 1])], axis=1)

    def at(si):
        return np.stack([np.interp(si % L, s_nodes, closed[:, 0]), np.interp(si % L, s_nodes, closed[:, 1])], 1)

    tang = at(s + 0.1) - at(s - 0.1)
    heading = np.unwrap(np.arctan2(tang[:, 1], tang[:, 0]))
    heading = _smooth(heading, 0.35 * FRAME_RATE_HZ, closed=False)
    ph = rng.uniform(0, 2 * np.pi, size=8)
    sweep = np.ones(m)
    if fs is not None:
        sweep = _smooth(np.clip((fs.at(xy) - 0.3) / 1.5, 0.4, 1.0), 1.0 * FRAME_RATE_HZ, closed=False)
    yaw = (heading + sweep * (np.radians(35) * np.sin(2 * np.pi * tt / 8.0 + ph[0])
                              + np.radians(8) * np.sin(2 * np.pi * tt / 2.7 + ph[1])))
    pitch = (np.radians(4.0) * np.sin(2 * np.pi * tt / 5.3 + ph[2])
             + np.radians(1.0) * np.sin(2 * np.pi * tt / 1.3 + ph[3]))
    roll = np.radians(1.5) * np.sin(2 * np.pi * tt / 4.4 + ph[4])
    z = z_offset + 0.07 * np.sin(2 * np.pi * tt / 4.1 + ph[5]) + 0.015 * np.sin(2 * np.pi * tt / 0.9 + ph[6])
    Tb = np.empty((m, 4, 4))
    for k in range(m):
        Tb[k] = make_T(rpy_matrix(roll[k], pitch[k], yaw[k]), [xy[k, 0], xy[k, 1], z[k]])
    sel = np.arange(0, m, stride)
    Tb = Tb[sel]
    Tc = Tb @ T_base_from_cam
    times = int(round(t0 * 1e9)) + np.round(np.arange(m)[sel] * (1e9 / FRAME_RATE_HZ)).astype(np.int64)
    travelled = float(np.linalg.norm(np.diff(Tb[:, :3, 3], axis=0), axis=1).sum()) if n > 1 else 0.0
    duration = max((m - 1) * dt, dt)
    return Trajectory(name, times, Tb, Tc, T_base_from_cam.copy(), travelled, L / duration)


def plan_runs(scene: Scene, n_frames: dict[str, int], seed: int = 0, stride: int = 1,
              start_times: dict[str, float] | None = None, speed_mps: float = NOMINAL_SPEED_MPS
              ) -> dict[str, Trajectory]:
    """Trajectories of the mapping and query runs of a scene.

    All runs explore the same region: waypoints within a geodesic radius of one centre (near the middle of
    the free space). The radius is the largest whose tour fits ``speed_mps`` times the run's duration (the
    whole scene when the run is long enough); the mapping run's tour is driven forwards then backwards, so it
    needs twice the length. Query runs use at most the mapping run's radius, other waypoints, a lateral offset
    and (``query_same_light``) the opposite direction.

    Args:
        n_frames: {run name: number of written frames}; run names "mapping", "query_same_light",
            "query_light_change" (other names get random offsets). "mapping", when present, is planned first.
        stride: write every ``stride``-th sample of the 30 Hz trajectory.
        start_times: {run name: first timestamp (s)}; default 1000 s, then each run starts on the next
            multiple of 1000 s at least 60 s after the previous one ended.
        speed_mps: nominal (maximum average) speed of the carrier.

    Returns:
        {run name: Trajectory} in the order of ``n_frames``.
    """
    from skimage.graph import MCP_Geometric

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    fs = FreeSpace.from_scene(scene)
    cost = _cost_grid(fs)
    cand = _waypoint_cells(fs)
    # Region centre: the waypoint cell nearest to the centroid of all waypoint cells.
    centre = tuple(cand[np.argmin(np.linalg.norm(cand - cand.mean(axis=0), axis=1))])
    geo, _ = MCP_Geometric(np.where(np.isfinite(cost), 1.0, np.inf)).find_costs([centre])
    geo = geo * fs.res
    r_all = float(geo[cand[:, 0], cand[:, 1]][np.isfinite(geo[cand[:, 0], cand[:, 1]])].max())
    cand = cand[np.isfinite(geo[cand[:, 0], cand[:, 1]])]
    mount = mount_T_base_from_cam()
    out: dict[str, Trajectory] = {}
    t_next = 1000.0
    # (height offset, lateral offset, reversed) of the base path per run
    offsets = {"mapping": (0.0, 0.0, False), "query_same_light": (0.12, -0.35, True),
               "query_light_change": (-0.12, 0.2, False)}
    r_region = r_all
    run_cost, run_cand = cost, cand
    names = sorted(n_frames, key=lambda n: n != "mapping")
    for name in names:
        n = n_frames[name]
        if n < 1:
            raise ValueError(f"run {name!r} needs at least 1 frame, got {n}")
        rng = scene_rng(scene.name, seed, f"traj_{name}")
        z_off, lateral, reverse = offsets.get(name, (float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.3, 0.3)),
                                                     bool(rng.random() < 0.5)))
        duration = n * stride / FRAME_RATE_HZ
        laps = 2.0 if name == "mapping" else 1.0
        tour, r = _tour_within_budget(fs, run_cost, run_cand, geo, speed_mps * duration / laps, r_region,
                                      [int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
        if name == "mapping":
            r_region = max(r, 1e-3)
            back = _offset_path(fs, tour[::-1], rng, 0.3, 0.1)
            path = np.concatenate([tour, back], axis=0)
            # Query runs stay in the mapped area: waypoints within 0.8 m of the mapping path, detours costly.
            d_map = fs.distance_to(path)
            near = run_cand[d_map[run_cand[:, 0], run_cand[:, 1]] <= 0.8]
            if len(near) >= 3:
                run_cand = near
                run_cost = cost * (1.0 + 3.0 * (d_map > 1.0))
        else:
            path = _offset_path(fs, tour, rng, lateral)
            if reverse:
                path = path[::-1]
        out[name] = _poses_along(path, n, stride, 0.0, rng, z_off, mount, name, fs)
    # Timestamps in the order the runs were given.
    for name in n_frames:
        traj = out[name]
        t0 = (start_times or {}).get(name, t_next)
        traj.times_ns = traj.times_ns + int(round(t0 * 1e9))
        t_next = float(np.ceil((traj.times_ns[-1] / 1e9 + 60.0) / 1000.0) * 1000.0)
    return {name: out[name] for name in n_frames}


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OdometryNoise:
    """Odometry error model (per run, drawn once): systematic scale and yaw bias, random walk noise.

    Attributes:
        scale_error: relative error of every translation increment.
        yaw_bias_deg_per_m: heading error accumulated per metre travelled.
        trans_noise_m_per_sqrt_m: std of the lateral / longitudinal random walk per sqrt(metre).
        yaw_noise_deg_per_sqrt_m: std of the heading random walk per sqrt(metre).
    """

    scale_error: float = 0.01
    yaw_bias_deg_per_m: float = 0.1
    trans_noise_m_per_sqrt_m: float = 0.005
    yaw_noise_deg_per_sqrt_m: float = 0.15

    @classmethod
    def random(cls, rng: np.random.Generator) -> "OdometryNoise":
        return cls(scale_error=float(rng.choice([-1, 1]) * rng.uniform(0.005, 0.015)),
                   yaw_bias_deg_per_m=float(rng.choice([-1, 1]) * rng.uniform(0.05, 0.15)),
                   trans_noise_m_per_sqrt_m=0.005, yaw_noise_deg_per_sqrt_m=0.15)


def simulate_odometry(T_world_from_base_N44: np.ndarray, rng: np.random.Generator,
                      noise: OdometryNoise | None = None) -> np.ndarray:
    """``T_odom_from_base`` of every frame: integrated noisy increments of the true base motion.

    The odom frame coincides with the world at the first frame (``T_odom_from_base[0] = T_world_from_base[0]``).
    The planar motion (x, y, yaw) is integrated from increments expressed in the previous heading frame, with
    the translation scaled by ``1 + scale_error`` plus random-walk noise, and the yaw increment biased in
    proportion to the distance plus random-walk noise. Height, roll and pitch are exact (IMU-aided odometry).
    """
    noise = noise or OdometryNoise.random(rng)
    T = np.asarray(T_world_from_base_N44, float)
    R = T[:, :3, :3]
    yaw = np.arctan2(R[:, 1, 0], R[:, 0, 0])
    pitch = np.arcsin(np.clip(-R[:, 2, 0], -1.0, 1.0))
    roll = np.arctan2(R[:, 2, 1], R[:, 2, 2])
    xy = T[:, :2, 3]
    out = np.empty_like(T)
    out[0] = T[0]
    yaw_o, xy_o = float(yaw[0]), xy[0].copy()
    for k in range(1, len(T)):
        c, s = np.cos(yaw[k - 1]), np.sin(yaw[k - 1])
        d = np.array([[c, s], [-s, c]]) @ (xy[k] - xy[k - 1])  # in the previous heading frame
        dist = float(np.linalg.norm(d))
        dyaw = float(np.angle(np.exp(1j * (yaw[k] - yaw[k - 1]))))
        d = d * (1.0 + noise.scale_error) + noise.trans_noise_m_per_sqrt_m * np.sqrt(dist) * rng.standard_normal(2)
        dyaw += np.radians(noise.yaw_bias_deg_per_m * dist
                           + noise.yaw_noise_deg_per_sqrt_m * np.sqrt(dist) * rng.standard_normal())
        co, so = np.cos(yaw_o), np.sin(yaw_o)
        xy_o = xy_o + np.array([[co, -so], [so, co]]) @ d
        yaw_o += dyaw
        out[k] = make_T(rpy_matrix(roll[k], pitch[k], yaw_o), [xy_o[0], xy_o[1], T[k, 2, 3]])
    return out
