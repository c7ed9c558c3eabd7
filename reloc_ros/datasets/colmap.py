"""Loader for a COLMAP text model (``cameras.txt``, ``images.txt``, optional ``points3D.txt``).

The model is looked for in ``root``, ``root/sparse/0`` and ``root/sparse`` (first match wins); images are
in ``root/images/`` and the names in images.txt are relative to it.

Conventions converted here:

* images.txt stores ``cam_from_world`` as ``QW QX QY QZ TX TY TZ`` (``wxyz`` quaternion); frames get the
  inverse, ``T_world_from_cam``.
* COLMAP puts the centre of the top-left pixel at (0.5, 0.5); this project (OpenCV / ROS) puts it at
  (0, 0). So ``cx`` and ``cy`` are shifted by -0.5 (focal lengths and distortion are unchanged).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from reloc_ros.core.camera import Camera, CameraError
from reloc_ros.core.geometry import invert_T, make_T, matrix_from_quat
from reloc_ros.datasets.base import Dataset, DatasetError, Frame
from reloc_ros.datasets.posed_images import parse_floats

__all__ = ["load", "find_model_dir", "read_cameras", "read_images", "read_points3D", "SUPPORTED_MODELS"]

FORMAT = "colmap"

# COLMAP model -> (number of params, function params -> (fx, fy, cx, cy, distortion_model, dist)).
SUPPORTED_MODELS = {
    "SIMPLE_PINHOLE": (3, lambda p: (p[0], p[0], p[1], p[2], "none", ())),
    "PINHOLE": (4, lambda p: (p[0], p[1], p[2], p[3], "none", ())),
    "SIMPLE_RADIAL": (4, lambda p: (p[0], p[0], p[1], p[2], "plumb_bob", (p[3], 0.0, 0.0, 0.0, 0.0))),
    "RADIAL": (5, lambda p: (p[0], p[0], p[1], p[2], "plumb_bob", (p[3], p[4], 0.0, 0.0, 0.0))),
    "OPENCV": (8, lambda p: (p[0], p[1], p[2], p[3], "plumb_bob", (p[4], p[5], p[6], p[7], 0.0))),
    "FULL_OPENCV": (12, lambda p: (p[0], p[1], p[2], p[3], "rational_polynomial", tuple(p[4:12]))),
    "OPENCV_FISHEYE": (8, lambda p: (p[0], p[1], p[2], p[3], "equidistant", tuple(p[4:8]))),
}

_MODEL_CANDIDATES = (".", "sparse/0", "sparse")


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None


def _parse_int(token: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DatasetError(f"{path}:{lineno}: expected an integer {what}, got {token!r}") from None


def find_model_dir(root: Path) -> Path:
    """Folder holding cameras.txt and images.txt: ``root``, ``root/sparse/0`` or ``root/sparse``.

    Raises:
        DatasetError: no text model found (the message says when a binary model was found instead).
    """
    for cand in _MODEL_CANDIDATES:
        d = (root / cand) if cand != "." else root
        if (d / "cameras.txt").is_file() and (d / "images.txt").is_file():
            return d
    for cand in _MODEL_CANDIDATES:
        d = (root / cand) if cand != "." else root
        if (d / "cameras.bin").is_file():
            raise DatasetError(
                f"{d} holds a binary COLMAP model; convert it with "
                f"'colmap model_converter --input_path {d} --output_path {d} --output_type TXT'"
            )
    raise DatasetError(
        f"no COLMAP text model (cameras.txt + images.txt) in {root}, {root / 'sparse/0'} or {root / 'sparse'}"
    )


def read_cameras(path: Path) -> dict[int, Camera]:
    """Parse ``cameras.txt`` (``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``) into project cameras.

    Raises:
        DatasetError: malformed line or an unsupported camera model.
    """
    cameras: dict[int, Camera] = {}
    for lineno, line in enumerate(_text_lines(path), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 4:
            raise DatasetError(
                f"{path}:{lineno}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {line.strip()!r}"
            )
        cam_id = _parse_int(tokens[0], path, lineno, "CAMERA_ID")
        model = tokens[1]
        if model not in SUPPORTED_MODELS:
            raise DatasetError(
                f"{path}:{lineno}: unsupported COLMAP camera model {model!r}; supported: "
                f"{', '.join(SUPPORTED_MODELS)} (undistort the images with 'colmap image_undistorter' first)"
            )
        width = _parse_int(tokens[2], path, lineno, "WIDTH")
        height = _parse_int(tokens[3], path, lineno, "HEIGHT")
        n, convert = SUPPORTED_MODELS[model]
        params = parse_floats(tokens[4:], path, lineno, f"parameters of a {model} camera", n)
        fx, fy, cx, cy, dist_model, dist = convert(params)
        try:
            cam = Camera(width, height, float(fx), float(fy), float(cx) - 0.5, float(cy) - 0.5, dist_model,
                         tuple(float(x) for x in dist))
        except CameraError as e:
            raise DatasetError(f"{path}:{lineno}: invalid camera: {e}") from None
        if cam_id in cameras:
            raise DatasetError(f"{path}:{lineno}: CAMERA_ID {cam_id} appears twice")
        cameras[cam_id] = cam
    return cameras


def _is_points2d_line(tokens: list[str]) -> bool:
    """Whether a line can be the 2D points line of images.txt (empty or triples ``X Y POINT3D_ID``)."""
    return len(tokens) % 3 == 0


def read_images(path: Path) -> list[tuple[int, str, int, np.ndarray]]:
    """Parse ``images.txt``: every image takes two lines (the second, the 2D points, may be empty).

    Returns:
        [(IMAGE_ID, NAME, CAMERA_ID, 4x4 T_world_from_cam)] in file order.

    Raises:
        DatasetError: malformed header line, invalid quaternion, or a missing 2D points line.
    """
    lines = [(i, line) for i, line in enumerate(_text_lines(path), start=1) if not line.lstrip().startswith("#")]
    out = []
    k = 0
    while k < len(lines):
        lineno, line = lines[k]
        k += 1
        tokens = line.split(maxsplit=9)
        if not tokens:  # blank line where an image line is expected (e.g. at the end of the file)
            continue
        if len(tokens) < 10:
            raise DatasetError(
                f"{path}:{lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line.strip()!r}"
            )
        image_id = _parse_int(tokens[0], path, lineno, "IMAGE_ID")
        v = parse_floats(tokens[1:8], path, lineno, "QW QX QY QZ TX TY TZ", 7)
        camera_id = _parse_int(tokens[8], path, lineno, "CAMERA_ID")
        name = tokens[9].strip()
        if not np.all(np.isfinite(v)):
            raise DatasetError(f"{path}:{lineno}: pose of {name} has non-finite values")
        try:
            R_cam_from_world = matrix_from_quat(v[0:4], "wxyz")
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: {e}") from None
        T_world_from_cam = invert_T(make_T(R_cam_from_world, v[4:7]))
        if k < len(lines):
            p_lineno, p_line = lines[k]
            if not _is_points2d_line(p_line.split()):
                raise DatasetError(
                    f"{path}:{p_lineno}: expected the 2D points line of image {name} (empty or triples "
                    "'X Y POINT3D_ID'); every image takes two lines in images.txt"
                )
            k += 1
        out.append((image_id, name, camera_id, T_world_from_cam))
    return out


def read_points3D(path: Path) -> dict:
    """Parse ``points3D.txt`` (``POINT3D_ID X Y Z R G B ERROR TRACK[]``); only ids and positions are kept.

    Returns:
        ``{"xyz": Nx3 float64, "ids": N int64}``.

    Raises:
        DatasetError: malformed line.
    """
    ids, xyz = [], []
    for lineno, line in enumerate(_text_lines(path), start=1):
        tokens = line.split(maxsplit=4)
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 4:
            raise DatasetError(
                f"{path}:{lineno}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK...', got {line.strip()!r}"
            )
        ids.append(_parse_int(tokens[0], path, lineno, "POINT3D_ID"))
        xyz.append(parse_floats(tokens[1:4], path, lineno, "X Y Z", 3))
    return {
        "xyz": np.array(xyz, dtype=np.float64).reshape(-1, 3),
        "ids": np.array(ids, dtype=np.int64),
    }


def load(root: Path) -> Dataset:
    """Load a COLMAP text model with its image folder.

    Args:
        root: folder holding ``images/`` and the model (in itself, ``sparse/0/`` or ``sparse/``).

    Returns:
        Dataset of format ``"colmap"`` (no split, no depth). Frame names are the image names without
        extension (sub-folders kept). ``meta`` holds ``model_dir`` and, when points3D.txt exists,
        ``points3D`` (see :func:`read_points3D`).

    Raises:
        DatasetError: no model, missing image folder or images, malformed files, unsupported camera model.
    """
    root = Path(root)
    model_dir = find_model_dir(root)
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} not found; the names in images.txt are relative to it")
    cameras = read_cameras(model_dir / "cameras.txt")
    images_txt = model_dir / "images.txt"
    frames, seen = [], set()
    for image_id, name, camera_id, T in read_images(images_txt):
        if camera_id not in cameras:
            raise DatasetError(f"{images_txt}: image {name} (IMAGE_ID {image_id}) uses CAMERA_ID {camera_id}, "
                               f"which is not in cameras.txt")
        frame_name = str(PurePosixPath(name).with_suffix(""))
        if frame_name in seen:
            raise DatasetError(f"{images_txt}: two images are named {frame_name!r} (after removing the extension)")
        seen.add(frame_name)
        image_path = image_dir / name
        if not image_path.is_file():
            raise DatasetError(f"{images_txt}: image {name} (IMAGE_ID {image_id}) not found at {image_path}")
        frames.append(Frame(name=frame_name, image_path=image_path, camera=cameras[camera_id], T_world_from_cam=T))
    meta: dict = {"model_dir": str(model_dir)}
    if (model_dir / "points3D.txt").is_file():
        meta["points3D"] = read_points3D(model_dir / "points3D.txt")
    return Dataset(root=root, format=FORMAT, frames=frames, meta=meta)
