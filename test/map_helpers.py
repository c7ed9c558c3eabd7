"""Small map directories for tests (no ROS imports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import look_at
from reloc_ros.core.mapdb import Keyframe, MapDatabase


def random_map(tmp: Path, n_kf=4, n_kp=40, d_local=128, d_global=512, identity=None) -> Path:
    """A valid map of ``n_kf`` keyframes with random points and unit descriptors, saved to ``tmp``."""
    rng = np.random.default_rng(0)
    cam = Camera(640, 480, 500, 500, 319.5, 239.5)
    kfs = []
    for i in range(n_kf):
        pts = rng.normal(size=(n_kp, 3)).astype(np.float32)
        d = rng.normal(size=(n_kp, d_local)).astype(np.float32)
        g = rng.normal(size=d_global).astype(np.float32)
        kfs.append(Keyframe(f"kf{i}", look_at([i, 0, 1], [i, 5, 1]), cam,
                            rng.uniform(0, 480, (n_kp, 2)).astype(np.float32), d / np.linalg.norm(d, axis=1)[:, None],
                            np.ones(n_kp, np.float32), pts, np.full(n_kp, 1, np.uint8), np.ones(n_kp, np.float32),
                            g / np.linalg.norm(g)))
    ident = identity or {"name": "sift", "n_features": 2000}
    return MapDatabase.from_keyframes(kfs, ident, {}).save(tmp)
