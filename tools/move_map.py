"""Write a copy of a map moved by a rigid transform (to test `reloc map merge` across frames).

    python tools/move_map.py MAP OUT --yaw-deg 30 --t 2.0 -1.0 0.5 [--roll-deg R --pitch-deg P]

The transform (x_out = R x + t, R = Rz(yaw) Ry(pitch) Rx(roll)) is recorded in the copy's manifest
(build.moved_by) so that an alignment can be checked against it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reloc_ros.core.mapdb import MapDatabase
from reloc_ros.pipelines.map_sessions import _transformed, keyframes_of


def rigid(yaw_deg: float, pitch_deg: float, roll_deg: float, t) -> np.ndarray:
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    Rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    Ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry @ Rx
    T[:3, 3] = t
    return T


def move_map(src: Path, out: Path, T: np.ndarray, overwrite: bool = False) -> Path:
    """Write map ``src`` moved by ``T`` (x_out = R x + t) to ``out``; the manifest records ``build.moved_by``."""
    db = MapDatabase.load(src)
    kfs = [_transformed(k, T) for k in keyframes_of(db)]
    man = {k: v for k, v in db.manifest.items() if k not in ("counts", "files", "index", "created")}
    man.setdefault("build", {})["moved_by"] = [[float(v) for v in row] for row in T]
    return MapDatabase.from_keyframes(kfs, db.extractor_identity, db.extractor_state, man).save(out, overwrite)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("map", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--yaw-deg", type=float, default=0.0)
    ap.add_argument("--pitch-deg", type=float, default=0.0)
    ap.add_argument("--roll-deg", type=float, default=0.0)
    ap.add_argument("--t", type=float, nargs=3, default=(0.0, 0.0, 0.0))
    a = ap.parse_args()
    move_map(a.map, a.out, rigid(a.yaw_deg, a.pitch_deg, a.roll_deg, a.t))
    print(f"{a.out}: {a.map} moved by yaw {a.yaw_deg} deg, pitch {a.pitch_deg}, roll {a.roll_deg}, t {list(a.t)}")


if __name__ == "__main__":
    main()
