"""Loader for the Microsoft 7-Scenes layout (also written by the project's synthetic scene generator).

Layout of one scene folder::

    camera.yaml          optional intrinsics (width, height, fx, fy, cx, cy[, distortion_model, dist])
    sequences.yaml       optional {folder: label}, e.g. {seq-02: query_light_change}
    TrainSplit.txt       optional, lines "sequence1" (or "seq-01"): these sequences are the map
    TestSplit.txt        optional, same syntax: these sequences are the queries
    seq-01/
        frame-000000.color.png
        frame-000000.depth.png   optional, uint16 millimetres (0 and 65535 = invalid)
        frame-000000.pose.txt    4x4 T_world_from_cam, whitespace separated
        times.txt                optional, lines "frame-000000 0.000000" (seconds)

Frames whose pose has non-finite values (the original 7-Scenes has a few ``inf`` poses) are skipped and
counted in ``meta["skipped_invalid_pose"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml

from reloc_ros.core.camera import Camera, CameraError
from reloc_ros.datasets.base import Dataset, DatasetError, Frame
from reloc_ros.datasets.posed_images import checked_rotation, parse_floats

__all__ = ["load", "read_camera_yaml", "read_pose_file", "DEFAULT_CAMERA", "DEPTH_SCALE"]

FORMAT = "7scenes"

DEPTH_SCALE = 0.001  # uint16 millimetres -> metres

DEFAULT_CAMERA = Camera(640, 480, 585.0, 585.0, 320.0, 240.0)

_SEQ_DIR_RE = re.compile(r"^seq-(\d+)$")
_SPLIT_ENTRY_RE = re.compile(r"^(?:sequence|seq-?)(\d+)$", re.IGNORECASE)
_COLOR_SUFFIX = ".color.png"
_CAMERA_KEYS = ("width", "height", "fx", "fy", "cx", "cy")
# Windows printf spellings of inf / nan (1.#INF, -1.#IND, 1.#QNAN) found in some pose files.
_WINDOWS_NONFINITE_RE = re.compile(r"^[-+]?\d*\.?\d*#(INF|IND|QNAN|SNAN)\d*(e[-+]?\d+)?$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------
def read_camera_yaml(path: Path) -> Camera:
    """Read intrinsics from a ``camera.yaml`` (keys of :meth:`Camera.from_dict`).

    Raises:
        DatasetError: unreadable YAML, missing keys or invalid values (the message names the file).
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with keys {', '.join(_CAMERA_KEYS)}, got {type(data).__name__}")
    missing = [k for k in _CAMERA_KEYS if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: missing key(s) {', '.join(missing)}; a camera.yaml needs {', '.join(_CAMERA_KEYS)} "
            "and optionally distortion_model and dist"
        )
    try:
        return Camera.from_dict(data)
    except (CameraError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: invalid camera: {e}") from None


def _pose_token(tok: str) -> str:
    return "nan" if _WINDOWS_NONFINITE_RE.match(tok) else tok


def read_pose_file(path: Path) -> np.ndarray:
    """Read a 4x4 ``frame-NNNNNN.pose.txt`` (T_world_from_cam); may contain non-finite values.

    Returns:
        4x4 float64 matrix. Non-finite values are returned as they are (the caller skips such frames);
        a finite matrix has its rotation checked and re-orthonormalised.

    Raises:
        DatasetError: unreadable file, not 16 numbers, bad last row, or a rotation block that is not a rotation.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    values = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = [_pose_token(t) for t in line.split()]
        values.extend(parse_floats(tokens, path, lineno, "a row of the 4x4 pose T_world_from_cam"))
    if len(values) != 16:
        raise DatasetError(f"{path}: expected 16 numbers (4x4 matrix T_world_from_cam, 4 per line), got {len(values)}")
    T = np.array(values, dtype=np.float64).reshape(4, 4)
    if not np.all(np.isfinite(T)):
        return T
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DatasetError(f"{path}: last row of the 4x4 pose must be 0 0 0 1, got {T[3].tolist()}")
    T[:3, :3] = checked_rotation(T[:3, :3], str(path), tol=1e-2)
    T[3] = [0.0, 0.0, 0.0, 1.0]
    return T


# --------------------------------------------------------------------------------------------------
def _sequence_folders(root: Path) -> dict[int, str]:
    """{sequence number: folder name} of the ``seq-XX`` folders of a scene."""
    out: dict[int, str] = {}
    for p in sorted(root.iterdir()):
        m = _SEQ_DIR_RE.match(p.name)
        if m and p.is_dir():
            n = int(m.group(1))
            if n in out:
                raise DatasetError(f"{root}: folders {out[n]} and {p.name} are both sequence {n}; keep one")
            out[n] = p.name
    if not out:
        raise DatasetError(
            f"{root}: no seq-XX folders found; a 7-Scenes scene folder (e.g. chess/) holds seq-01/, seq-02/, ..."
        )
    return out


def _resolve_sequence(entry: str, folders: dict[int, str], where: str) -> str:
    """Folder name of a split / label entry such as ``sequence1``, ``seq-01`` or ``seq01``."""
    m = _SPLIT_ENTRY_RE.match(entry)
    if not m:
        raise DatasetError(f"{where}: expected a sequence name like 'sequence1' or 'seq-01', got {entry!r}")
    n = int(m.group(1))
    if n not in folders:
        raise DatasetError(
            f"{where}: sequence {entry!r} has no folder seq-{n:02d} in the scene (found: {sorted(folders.values())})"
        )
    return folders[n]


def _read_split_file(path: Path, folders: dict[int, str]) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    out = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(_resolve_sequence(s, folders, f"{path}:{lineno}"))
    return out


def _read_splits(root: Path, folders: dict[int, str]) -> dict[str, str]:
    """{folder: "map" | "query"} from TrainSplit.txt / TestSplit.txt (empty when neither exists)."""
    split: dict[str, str] = {}
    for fname, label in (("TrainSplit.txt", "map"), ("TestSplit.txt", "query")):
        path = root / fname
        if not path.is_file():
            continue
        for folder in _read_split_file(path, folders):
            if split.get(folder, label) != label:
                raise DatasetError(
                    f"{root}: sequence {folder} is listed in both TrainSplit.txt and TestSplit.txt; keep it in one"
                )
            split[folder] = label
    return split


def _read_sequence_labels(root: Path, folders: dict[int, str]) -> dict[str, str]:
    path = root / "sequences.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping 'seq-XX: label', got {type(data).__name__}")
    labels = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise DatasetError(f"{path}: label of {key!r} must be a string, got {value!r}")
        labels[_resolve_sequence(str(key), folders, str(path))] = value
    return labels


def _read_times(path: Path) -> dict[str, float]:
    """{frame stem: seconds} from a ``times.txt``."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    times: dict[str, float] = {}
    for lineno, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) != 2:
            raise DatasetError(f"{path}:{lineno}: expected '<frame stem> <seconds>', got {line.strip()!r}")
        stem = tokens[0].split(".", 1)[0]  # accept "frame-000000" and "frame-000000.color.png"
        (t,) = parse_floats(tokens[1:], path, lineno, "timestamp in seconds", 1)
        if not np.isfinite(t):
            raise DatasetError(f"{path}:{lineno}: timestamp must be finite, got {tokens[1]!r}")
        if stem in times:
            raise DatasetError(f"{path}:{lineno}: frame {stem} is listed twice")
        times[stem] = float(t)
    return times


def _load_sequence(root: Path, folder: str, camera: Camera, split: str | None) -> tuple[list[Frame], int]:
    """Frames of one sequence folder and the number of frames skipped for an invalid pose."""
    seq_dir = root / folder
    times_path = seq_dir / "times.txt"
    times = _read_times(times_path) if times_path.is_file() else None
    frames, skipped = [], 0
    for color in sorted(seq_dir.glob("frame-*" + _COLOR_SUFFIX)):
        stem = color.name[: -len(_COLOR_SUFFIX)]
        pose_path = seq_dir / f"{stem}.pose.txt"
        if not pose_path.is_file():
            raise DatasetError(f"image {color} has no pose file; expected {pose_path}")
        T = read_pose_file(pose_path)
        if not np.all(np.isfinite(T)):
            skipped += 1
            continue
        timestamp = None
        if times is not None:
            if stem not in times:
                raise DatasetError(f"{times_path}: no timestamp for frame {stem}; add a line '{stem} <seconds>'")
            timestamp = times[stem]
        depth = seq_dir / f"{stem}.depth.png"
        frames.append(Frame(
            name=f"{folder}/{stem}",
            image_path=color,
            camera=camera,
            T_world_from_cam=T,
            depth_path=depth if depth.is_file() else None,
            depth_scale=DEPTH_SCALE,
            timestamp=timestamp,
            split=split,
            sequence=folder,
        ))
    return frames, skipped


def load(root: Path) -> Dataset:
    """Load a 7-Scenes scene folder (or a synthetic scene written in the same layout).

    Args:
        root: the scene folder holding ``seq-XX/`` sub-folders.

    Returns:
        Dataset of format ``"7scenes"``. ``meta`` holds ``sequence_labels`` ({folder: label}, from
        sequences.yaml), ``skipped_invalid_pose`` (count), ``camera_source`` and ``sequences``.

    Raises:
        DatasetError: no sequences, malformed pose / split / yaml / times files.
    """
    root = Path(root)
    folders = _sequence_folders(root)
    cam_path = root / "camera.yaml"
    camera = read_camera_yaml(cam_path) if cam_path.is_file() else DEFAULT_CAMERA
    splits = _read_splits(root, folders)
    labels = _read_sequence_labels(root, folders)
    frames, skipped = [], 0
    for folder in folders.values():
        seq_frames, seq_skipped = _load_sequence(root, folder, camera, splits.get(folder))
        frames.extend(seq_frames)
        skipped += seq_skipped
    meta = {
        "sequence_labels": labels,
        "skipped_invalid_pose": skipped,
        "camera_source": str(cam_path) if cam_path.is_file() else "7-Scenes defaults",
        "sequences": list(folders.values()),
    }
    return Dataset(root=root, format=FORMAT, frames=frames, meta=meta)
