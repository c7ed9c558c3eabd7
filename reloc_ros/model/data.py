"""Training data: posed RGB-D renders of synthetic training scenes, held in memory at the training resolution.

* :func:`ensure_scenes` renders ``train_000 ..`` / ``val_000 ..`` scenes with the project's generator
  (never the four benchmark scenes, never Strecha) into a cache folder, once.
* :class:`SceneSet` loads them (grey image, depth at 1/4 of the training input, pose, intrinsics) and
  precomputes, per scene, the frustum overlap of every pair of frames from the depth and the poses:
  overlap(i, j) = fraction of frame i's pixels that are seen, unoccluded, by frame j.
* :func:`photometric` / :func:`random_homography` are the augmentations; :func:`splat_sparse_depth` turns
  sparse 3D points (e.g. triangulated map points of the user's own posed images) into a masked depth target.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reloc_ros.datasets import load_dataset, load_depth, load_image

__all__ = ["ensure_scenes", "SceneSet", "SceneFrames", "photometric", "random_homography", "frame_overlap",
           "splat_sparse_depth", "block_depth"]

DEPTH_STRIDE = 4  # the depth head predicts at 1/4 of the network input


def ensure_scenes(root: Path, names: list[str], n_map: int, n_query: int, stride: int, seed: int,
                  workers: int = 1) -> list[Path]:
    """Render the named training scenes into ``root/<name>`` unless already there with the same settings.

    ``workers > 1`` forks rendering processes: only safe before torch has started its thread pools (a forked
    child of a process that ran torch can deadlock), so training uses 1.
    """
    from reloc_ros.datasets.synthetic import SCENES, generate

    out = []
    for i, name in enumerate(names):
        if name in SCENES:
            raise ValueError(f"scene {name!r} is an evaluation scene: training must use train_* / val_* scenes")
        d = Path(root) / name
        if not _cached_scene_matches(d, seed + i, stride, {"seq-01": n_map, "seq-02": n_query, "seq-03": n_query}):
            t = time.perf_counter()
            generate(name, d, n_map=n_map, n_query=n_query, seed=seed + i, stride=stride, workers=workers,
                     overwrite=True, progress=False)
            print(f"[data] rendered {name} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        out.append(d)
    return out


def _cached_scene_matches(d: Path, seed: int, stride: int, counts: dict) -> bool:
    """True when ``d`` holds a rendered scene made with these settings (else it is rendered again)."""
    import yaml

    try:
        meta = yaml.safe_load((d / "scene.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return (isinstance(meta, dict) and meta.get("seed") == seed and meta.get("stride") == stride
            and meta.get("frame_counts") == counts)


def block_depth(depth_HW: np.ndarray, block: int) -> np.ndarray:
    """Mean of the valid (> 0) depths of each ``block x block`` cell (0 where a cell has none)."""
    H, W = depth_HW.shape
    d = depth_HW[: H // block * block, : W // block * block].reshape(H // block, block, W // block, block)
    valid = d > 0
    n = valid.sum(axis=(1, 3))
    s = np.where(valid, d, 0).sum(axis=(1, 3))
    return np.where(n > block * block // 2, s / np.maximum(n, 1), 0).astype(np.float32)


def splat_sparse_depth(uv_N2: np.ndarray, z_N: np.ndarray, size_wh: tuple[int, int], stride: int) -> np.ndarray:
    """Depth target ``[h x w]`` at 1/``stride`` from sparse points: per cell the nearest point's depth, else 0.

    Args:
        uv_N2: pixel coordinates in the (network input) image; z_N: their depths in metres (> 0).
    """
    w, h = size_wh[0] // stride, size_wh[1] // stride
    out = np.zeros((h, w), np.float32)
    c = np.floor((uv_N2 + 0.5) / stride).astype(np.int64)
    ok = (c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h) & (z_N > 0) & np.isfinite(z_N)
    c, z = c[ok], z_N[ok]
    order = np.argsort(-z)  # nearest last, so it wins
    out[c[order, 1], c[order, 0]] = z[order]
    return out


@dataclass
class SceneFrames:
    """Frames of one scene at the training resolution."""

    name: str
    grey: np.ndarray  # [F x H x W] uint8
    depth: np.ndarray  # [F x H/4 x W/4] float32 metres, 0 = invalid
    T_world_from_cam: np.ndarray  # [F x 4 x 4]
    K: np.ndarray  # [3 x 3] intrinsics at the training resolution
    sequence: list[str]
    overlap: np.ndarray | None = None  # [F x F]

    def __len__(self) -> int:
        return len(self.grey)


def frame_overlap(depth_FHW: np.ndarray, T_FW44: np.ndarray, K: np.ndarray, n_samples: int = 300,
                  rel_tol: float = 0.1, seed: int = 0) -> np.ndarray:
    """``[F x F]`` overlap: fraction of frame i's sampled pixels visible (in image, depth-consistent) in frame j."""
    F, h, w = depth_FHW.shape
    rng = np.random.default_rng(seed)
    Kinv = np.linalg.inv(K)
    out = np.zeros((F, F), np.float32)
    T_cam_from_world = np.linalg.inv(T_FW44)
    for i in range(F):
        vs, us = np.nonzero(depth_FHW[i] > 0)
        if len(us) == 0:
            continue
        pick = rng.choice(len(us), min(n_samples, len(us)), replace=False)
        uv1 = np.stack([us[pick], vs[pick], np.ones(len(pick))], 0).astype(np.float64)
        X_cam = (Kinv @ uv1) * depth_FHW[i][vs[pick], us[pick]]
        X_world = T_FW44[i, :3, :3] @ X_cam + T_FW44[i, :3, 3:4]  # 3 x N
        Xj = np.einsum("fab,bn->fan", T_cam_from_world[:, :3, :3], X_world) + T_cam_from_world[:, :3, 3:4]
        z = Xj[:, 2]
        uvj = np.einsum("ab,fbn->fan", K, Xj)
        u = np.round(uvj[:, 0] / np.maximum(z, 1e-6)).astype(np.int64)
        v = np.round(uvj[:, 1] / np.maximum(z, 1e-6)).astype(np.int64)
        inside = (z > 0.05) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        fidx = np.broadcast_to(np.arange(F)[:, None], u.shape)
        dj = np.zeros(u.shape, np.float32)
        dj[inside] = depth_FHW[fidx[inside], v[inside], u[inside]]
        visible = inside & (dj > 0) & (np.abs(dj - z) < rel_tol * z)
        out[i] = visible.mean(axis=1)
    return out


class SceneSet:
    """All frames of a list of generated scenes, at ``size_hw`` (grey) with depth at 1/4.

    Images are downscaled from the rendered 640 x 480 and cropped at the bottom/right to multiples of 32.
    """

    def __init__(self, scene_dirs: list[Path], size_hw: tuple[int, int] = (224, 320), overlap: bool = True):
        self.size_hw = tuple(size_hw)
        self.scenes: list[SceneFrames] = []
        for d in scene_dirs:
            self.scenes.append(self._load(Path(d), overlap))

    def _load(self, root: Path, overlap: bool) -> SceneFrames:
        ds = load_dataset(root, "7scenes")
        h, w = self.size_hw
        greys, depths, poses, seqs = [], [], [], []
        cam = ds.frames[0].camera
        s = w / cam.width  # uniform scale; rows beyond h are cropped
        if round(cam.height * s) < h:
            raise ValueError(f"{root}: {cam.width}x{cam.height} frames cannot give a {w}x{h} training input")
        for f in ds.frames:
            rgb = load_image(f)
            grey = np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)  # mean(R, G, B) as at run time
            grey = cv2.resize(grey, (w, int(round(cam.height * s))), interpolation=cv2.INTER_AREA)[:h]
            greys.append(grey)
            block = int(round(DEPTH_STRIDE / s))  # full-resolution pixels per depth cell
            dep = block_depth(load_depth(f), block)[: h // DEPTH_STRIDE, : w // DEPTH_STRIDE]
            depths.append(dep)
            poses.append(f.T_world_from_cam)
            seqs.append(f.sequence or f.name.split("/")[0])
        K = np.array([[cam.fx * s, 0, (cam.cx + 0.5) * s - 0.5], [0, cam.fy * s, (cam.cy + 0.5) * s - 0.5],
                      [0, 0, 1]])
        sf = SceneFrames(root.name, np.stack(greys), np.stack(depths), np.stack(poses).astype(np.float64), K, seqs)
        if overlap:
            Kd = K.copy()  # intrinsics of the 1/4 depth grid
            Kd[:2] /= DEPTH_STRIDE
            Kd[0, 2] = (K[0, 2] + 0.5) / DEPTH_STRIDE - 0.5
            Kd[1, 2] = (K[1, 2] + 0.5) / DEPTH_STRIDE - 0.5
            sf.overlap = frame_overlap(sf.depth, sf.T_world_from_cam, Kd)
        return sf

    def __len__(self) -> int:
        return sum(len(s) for s in self.scenes)

    def sample_pairs(self, rng: np.random.Generator, n_pairs: int, pairs_per_scene: int = 2,
                     pos_range=(0.3, 0.95)) -> list[tuple[int, int, int]]:
        """``[(scene, anchor, positive)]``: positives overlap the anchor by ``pos_range`` (any run/lighting)."""
        out = []
        while len(out) < n_pairs:
            si = int(rng.integers(len(self.scenes)))
            sc = self.scenes[si]
            ov = np.minimum(sc.overlap, sc.overlap.T)
            for _ in range(pairs_per_scene):
                a = int(rng.integers(len(sc)))
                cand = np.flatnonzero((ov[a] >= pos_range[0]) & (ov[a] <= pos_range[1]))
                cand = cand[cand != a]
                if len(cand):
                    out.append((si, a, int(rng.choice(cand))))
        return out[:n_pairs]


def photometric(grey_HW: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random brightness, contrast, gamma, blur and noise of a uint8 grey image (returns float32 in [0, 1])."""
    x = grey_HW.astype(np.float32) / 255.0
    x = np.clip(x, 0, 1) ** np.float32(np.exp(rng.normal(0, 0.25 * strength)))
    x = (x - 0.5) * np.float32(np.exp(rng.normal(0, 0.2 * strength))) + 0.5 + np.float32(rng.normal(0, 0.1 * strength))
    if rng.random() < 0.3 * strength:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 1.5)))
    x = x + rng.normal(0, rng.uniform(0, 0.03 * strength), x.shape).astype(np.float32)
    return np.clip(x, 0, 1).astype(np.float32)


def random_homography(h: int, w: int, rng: np.random.Generator, max_angle_deg: float = 20, max_scale: float = 0.3,
                      max_persp: float = 0.15) -> np.ndarray:
    """A random 3x3 homography (rotation, scale, perspective, translation about the image centre)."""
    c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]])
    a = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
    s = np.exp(rng.uniform(-max_scale, max_scale))
    R = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1]])
    P = np.eye(3)
    P[2, :2] = rng.uniform(-max_persp, max_persp, 2) / np.array([w, h])
    t = np.eye(3)
    t[:2, 2] = rng.uniform(-0.1, 0.1, 2) * np.array([w, h])
    return t @ c @ P @ R @ np.linalg.inv(c)
