"""Loader for TUM RGB-D sequences (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``).

* ``rgb.txt`` / ``depth.txt``: lines ``timestamp filename`` (``#`` comments), filenames relative to the
  sequence folder.
* ``groundtruth.txt``: lines ``timestamp tx ty tz qx qy qz qw`` (quaternion in ``xyzw`` order), the pose
  T_world_from_cam of the colour camera's optical frame.

Each colour frame gets the nearest depth image within :data:`MAX_DEPTH_DT` seconds (frames with none are
dropped when ``depth.txt`` exists) and the ground truth interpolated at its timestamp (linear position,
slerp rotation); frames outside the ground-truth time range or farther than :data:`MAX_GT_GAP` from the
nearest ground-truth sample are dropped. Counts of dropped frames are in ``meta``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import T_from_pos_quat, slerp
from reloc_ros.datasets.base import Dataset, DatasetError, Frame
from reloc_ros.datasets.posed_images import data_lines, parse_floats
from reloc_ros.datasets.sevenscenes import read_camera_yaml

__all__ = ["load", "default_camera", "interpolate_pose", "MAX_DEPTH_DT", "MAX_GT_GAP", "DEPTH_SCALE"]

FORMAT = "tum"

DEPTH_SCALE = 1.0 / 5000.0
MAX_DEPTH_DT = 0.02  # seconds between an rgb frame and its depth image
MAX_GT_GAP = 0.1  # seconds between an rgb frame and the nearest ground-truth sample

# Intrinsics published with the TUM RGB-D benchmark, by the sensor named in the sequence folder.
_TUM_CAMERAS = {
    "freiburg1": Camera(640, 480, 517.3, 516.5, 318.6, 255.3, "plumb_bob", (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "freiburg2": Camera(640, 480, 520.9, 521.0, 325.1, 249.7, "plumb_bob", (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "freiburg3": Camera(640, 480, 535.4, 539.2, 320.1, 247.6),
}
_ROS_DEFAULT_CAMERA = Camera(640, 480, 525.0, 525.0, 319.5, 239.5)


def default_camera(folder_name: str) -> tuple[Camera, str]:
    """TUM intrinsics for a sequence folder name (e.g. ``rgbd_dataset_freiburg1_xyz``).

    Returns:
        (camera, short description of where it came from).
    """
    for key, cam in _TUM_CAMERAS.items():
        if key in folder_name:
            return cam, f"TUM {key} defaults"
    return _ROS_DEFAULT_CAMERA, "ROS default 525/525/319.5/239.5"


# --------------------------------------------------------------------------------------------------
def _read_file_list(root: Path, name: str) -> list[tuple[float, Path]]:
    """(timestamp, file path) of an ``rgb.txt`` / ``depth.txt``, sorted by time."""
    path = root / name
    out = []
    for lineno, tokens in data_lines(path):
        if len(tokens) != 2:
            raise DatasetError(f"{path}:{lineno}: expected 'timestamp filename', got {' '.join(tokens)!r}")
        (t,) = parse_floats(tokens[:1], path, lineno, "timestamp in seconds", 1)
        if not np.isfinite(t):
            raise DatasetError(f"{path}:{lineno}: timestamp must be finite, got {tokens[0]!r}")
        file = root / tokens[1]
        if not file.is_file():
            raise DatasetError(f"{path}:{lineno}: file {file} not found")
        out.append((float(t), file))
    out.sort(key=lambda x: x[0])
    return out


def _read_groundtruth(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times N, positions Nx3, unit quaternions Nx4 in xyzw order) sorted by time, duplicates dropped."""
    rows = []
    for lineno, tokens in data_lines(path):
        v = parse_floats(tokens, path, lineno, "timestamp tx ty tz qx qy qz qw", 8)
        q = v[4:]
        n = np.linalg.norm(q)
        if not np.all(np.isfinite(v)) or n < 1e-9:
            raise DatasetError(
                f"{path}:{lineno}: expected finite values and a non-zero quaternion, got {' '.join(tokens)!r}"
            )
        rows.append(np.concatenate([v[:4], q / n]))
    if not rows:
        raise DatasetError(f"{path}: no ground-truth poses (expected lines 'timestamp tx ty tz qx qy qz qw')")
    gt = np.array(rows)
    gt = gt[np.argsort(gt[:, 0], kind="stable")]
    keep = np.concatenate([[True], np.diff(gt[:, 0]) > 0])
    gt = gt[keep]
    return gt[:, 0], gt[:, 1:4], gt[:, 4:8]


def interpolate_pose(t: float, times: np.ndarray, pos: np.ndarray, quat_xyzw: np.ndarray,
                     max_gap: float = MAX_GT_GAP) -> np.ndarray | None:
    """Ground-truth T_world_from_cam at time ``t``.

    Args:
        t: query time (seconds).
        times: sorted, strictly increasing sample times.
        pos: Nx3 positions.
        quat_xyzw: Nx4 unit quaternions in ``xyzw`` order.
        max_gap: largest allowed distance in time to the nearest sample.

    Returns:
        4x4 pose, or None when ``t`` is outside the sample range or farther than ``max_gap`` from a sample.
    """
    if t < times[0] or t > times[-1]:
        return None
    i1 = int(np.searchsorted(times, t, side="left"))
    if times[i1] == t:
        return T_from_pos_quat(pos[i1], quat_xyzw[i1], "xyzw")
    i0 = i1 - 1
    t0, t1 = times[i0], times[i1]
    if min(t - t0, t1 - t) > max_gap:
        return None
    a = (t - t0) / (t1 - t0)
    p = (1.0 - a) * pos[i0] + a * pos[i1]
    q = slerp(quat_xyzw[i0], quat_xyzw[i1], a)
    return T_from_pos_quat(p, q, "xyzw")


def _nearest(times: np.ndarray, t: float) -> tuple[int, float]:
    """Index of the sample nearest to ``t`` in sorted ``times`` and its distance in time."""
    i = int(np.searchsorted(times, t))
    cands = [j for j in (i - 1, i) if 0 <= j < len(times)]
    j = min(cands, key=lambda k: abs(times[k] - t))
    return j, abs(float(times[j]) - t)


# --------------------------------------------------------------------------------------------------
def load(root: Path) -> Dataset:
    """Load a TUM RGB-D sequence folder.

    Args:
        root: folder holding ``rgb.txt``, ``groundtruth.txt`` and (optionally) ``depth.txt``.

    Returns:
        Dataset of format ``"tum"`` (no split). Frame names are the rgb file stems (timestamp strings).
        ``meta`` holds ``camera_source``, ``skipped_no_depth`` and ``skipped_no_groundtruth``.

    Raises:
        DatasetError: missing rgb.txt / groundtruth.txt, malformed lines, missing image files.
    """
    root = Path(root)
    for name in ("rgb.txt", "groundtruth.txt"):
        if not (root / name).is_file():
            raise DatasetError(
                f"{root / name} not found: a TUM RGB-D sequence folder holds rgb.txt, depth.txt and groundtruth.txt"
            )
    cam_path = root / "camera.yaml"
    if cam_path.is_file():
        camera, camera_source = read_camera_yaml(cam_path), str(cam_path)
    else:
        camera, camera_source = default_camera(root.resolve().name)
    rgb = _read_file_list(root, "rgb.txt")
    depth = _read_file_list(root, "depth.txt") if (root / "depth.txt").is_file() else None
    depth_times = np.array([d[0] for d in depth]) if depth else np.zeros(0)
    gt_t, gt_p, gt_q = _read_groundtruth(root / "groundtruth.txt")

    frames, no_depth, no_gt = [], 0, 0
    for t, image_path in rgb:
        depth_path = None
        if depth is not None:
            j, dt = _nearest(depth_times, t) if len(depth_times) else (-1, np.inf)
            if dt > MAX_DEPTH_DT:
                no_depth += 1
                continue
            depth_path = depth[j][1]
        T = interpolate_pose(t, gt_t, gt_p, gt_q)
        if T is None:
            no_gt += 1
            continue
        frames.append(Frame(
            name=image_path.stem,
            image_path=image_path,
            camera=camera,
            T_world_from_cam=T,
            depth_path=depth_path,
            depth_scale=DEPTH_SCALE,
            timestamp=t,
            split=None,
            sequence=root.resolve().name,
        ))
    meta = {"camera_source": camera_source, "skipped_no_depth": no_depth, "skipped_no_groundtruth": no_gt}
    if not frames:
        raise DatasetError(
            f"{root}: no usable frames ({len(rgb)} rgb images, {no_depth} without depth within {MAX_DEPTH_DT} s, "
            f"{no_gt} outside the ground truth); check that the timestamps of rgb.txt and groundtruth.txt overlap"
        )
    return Dataset(root=root, format=FORMAT, frames=frames, meta=meta)
