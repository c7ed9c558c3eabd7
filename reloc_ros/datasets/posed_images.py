"""Loader for the ``posed_images`` format (the Strecha layout): ``images/NNNN.jpg`` + ``cameras/NNNN.txt``.

Each camera file holds, after an optional comment line (lines starting with ``#`` and blank lines are
skipped):

* 3 lines: K (3x3, pixels),
* 3 lines: R_world_from_cam (3x3; columns are the camera's x, y, z axes in world coordinates),
* 1 line: camera centre in world coordinates (= t_world_from_cam),
* 1 line: ``width height``.

So ``T_world_from_cam = [R | C]``. The format has no depth and no map/query split of its own.

The small parsing helpers :func:`parse_floats` and :func:`checked_rotation` are shared with the other
loaders of this package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc_ros.core.camera import Camera, CameraError
from reloc_ros.core.geometry import make_T
from reloc_ros.datasets.base import Dataset, DatasetError, Frame

__all__ = ["load", "read_camera_file", "parse_floats", "checked_rotation", "IMAGE_SUFFIXES"]

FORMAT = "posed_images"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")

# What each data line of a camera file holds: (description, number of values).
_CAMERA_FILE_LINES = (
    ("row 1 of K", 3),
    ("row 2 of K", 3),
    ("row 3 of K", 3),
    ("row 1 of R_world_from_cam", 3),
    ("row 2 of R_world_from_cam", 3),
    ("row 3 of R_world_from_cam", 3),
    ("camera centre (x y z)", 3),
    ("image size (width height)", 2),
)


def parse_floats(tokens: list[str], path: Path, lineno: int, what: str, count: int | None = None) -> np.ndarray:
    """Parse whitespace-separated tokens of one line as floats.

    Args:
        tokens: the tokens of the line.
        path: file the line comes from (for the error message).
        lineno: 1-based line number (for the error message).
        what: what the line should hold, e.g. ``"row 1 of K"``.
        count: expected number of values, or None for any number.

    Returns:
        float64 array of the values (``inf`` / ``nan`` are accepted; callers check finiteness).

    Raises:
        DatasetError: wrong number of values or a token that is not a number.
    """
    if count is not None and len(tokens) != count:
        raise DatasetError(
            f"{path}:{lineno}: expected {count} numbers ({what}), got {len(tokens)}: {' '.join(tokens)!r}"
        )
    try:
        return np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        raise DatasetError(f"{path}:{lineno}: expected numbers ({what}), got {' '.join(tokens)!r}") from None


def checked_rotation(R_33: np.ndarray, where: str, tol: float = 1e-3) -> np.ndarray:
    """Check that a matrix is a rotation and return the nearest exact rotation.

    Args:
        R_33: candidate rotation matrix.
        where: file (and line) the matrix comes from, for the error message.
        tol: allowed max-abs deviation of ``R^T R`` from the identity.

    Returns:
        The closest orthonormal matrix (SVD projection); equals ``R_33`` up to rounding when the input is
        already a rotation written with enough digits.

    Raises:
        DatasetError: the matrix is not finite, not orthonormal within ``tol``, or a reflection (det < 0).
    """
    R = np.asarray(R_33, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(R)):
        raise DatasetError(f"{where}: rotation matrix has non-finite values: {R.tolist()}")
    err = float(np.max(np.abs(R.T @ R - np.eye(3))))
    if err > tol:
        raise DatasetError(
            f"{where}: the 3x3 rotation is not orthonormal (max |R^T R - I| = {err:.2e} > {tol:g}); "
            "write R_world_from_cam with more digits or check that the rows are in the right order"
        )
    if np.linalg.det(R) <= 0:
        raise DatasetError(f"{where}: the 3x3 rotation has det(R) < 0 (a reflection, not a rotation)")
    U, _, Vt = np.linalg.svd(R)
    return U @ Vt


def data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, tokens) of the non-blank, non-comment lines of a text file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((lineno, s.split()))
    return out


def read_camera_file(path: Path) -> tuple[Camera, np.ndarray]:
    """Read one ``cameras/NNNN.txt`` file.

    Returns:
        (camera intrinsics, 4x4 T_world_from_cam).

    Raises:
        DatasetError: malformed file (the message names the file, the line and what was expected).
    """
    lines = data_lines(path)
    if len(lines) != len(_CAMERA_FILE_LINES):
        raise DatasetError(
            f"{path}: expected {len(_CAMERA_FILE_LINES)} data lines after the comment line (3 lines K, 3 lines "
            f"R_world_from_cam, 1 line camera centre, 1 line 'width height'), found {len(lines)}"
        )
    vals = [parse_floats(tokens, path, lineno, what, n)
            for (lineno, tokens), (what, n) in zip(lines, _CAMERA_FILE_LINES)]
    K = np.stack(vals[0:3])
    R = np.stack(vals[3:6])
    C = vals[6]
    size_line = lines[7][0]
    w, h = vals[7]
    if not (w.is_integer() and h.is_integer()):
        raise DatasetError(f"{path}:{size_line}: image size must be integers 'width height', got {w} {h}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or abs(K[1, 0]) > 1e-9:
        raise DatasetError(
            f"{path}:{lines[0][0]}: K must be [[fx 0 cx] [0 fy cy] [0 0 1]], got {K.tolist()}"
        )
    if not np.all(np.isfinite(C)):
        raise DatasetError(f"{path}:{lines[6][0]}: camera centre has non-finite values: {C.tolist()}")
    try:
        camera = Camera.from_K(K, int(w), int(h))
    except CameraError as e:
        raise DatasetError(f"{path}: {e}") from None
    R = checked_rotation(R, f"{path}:{lines[3][0]}-{lines[5][0]}")
    return camera, make_T(R, C)


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` (case-insensitive), keyed by stem."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        if p.stem in out:
            raise DatasetError(f"{folder}: two files named {p.stem!r} ({out[p.stem].name} and {p.name}); keep one")
        out[p.stem] = p
    return out


def load(root: Path) -> Dataset:
    """Load a ``posed_images`` dataset folder.

    Args:
        root: folder holding ``images/`` and ``cameras/``.

    Returns:
        Dataset of format ``"posed_images"``; frames are named by file stem, have no depth and no split.

    Raises:
        DatasetError: missing folders, an image without a camera file (or the reverse), or a malformed
            camera file.
    """
    root = Path(root)
    image_dir, camera_dir = root / "images", root / "cameras"
    for d in (image_dir, camera_dir):
        if not d.is_dir():
            raise DatasetError(
                f"{d} not found: a posed_images dataset needs images/NNNN.jpg and cameras/NNNN.txt under {root}"
            )
    images = _files_by_stem(image_dir, IMAGE_SUFFIXES)
    cameras = _files_by_stem(camera_dir, (".txt",))
    for stem, p in images.items():
        if stem not in cameras:
            raise DatasetError(f"image {p} has no camera file; expected {camera_dir / (stem + '.txt')}")
    for stem, p in cameras.items():
        if stem not in images:
            raise DatasetError(
                f"camera file {p} has no image; expected {image_dir / stem}.<{'|'.join(s[1:] for s in IMAGE_SUFFIXES)}>"
            )
    frames = []
    for stem in sorted(images):
        camera, T = read_camera_file(cameras[stem])
        frames.append(Frame(name=stem, image_path=images[stem], camera=camera, T_world_from_cam=T))
    return Dataset(root=root, format=FORMAT, frames=frames, meta={})
