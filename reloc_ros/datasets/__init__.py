"""Dataset loaders. Each format module exposes ``load(root: Path) -> Dataset``.

Formats:
    posed_images: ``images/NNNN.jpg`` + ``cameras/NNNN.txt`` (the Strecha layout, see ../shared/data/strecha).
    7scenes: Microsoft 7-Scenes layout (``seq-XX/frame-NNNNNN.{color.png,depth.png,pose.txt}``,
        TrainSplit.txt / TestSplit.txt); also the layout written by ``reloc data synth``.
    tum: TUM RGB-D (rgb.txt, depth.txt, groundtruth.txt).
    colmap: COLMAP text model (cameras.txt, images.txt, points3D.txt) with an image folder.
    rosbag: a rosbag2 directory (mcap or sqlite3) with images, camera_info and ground-truth poses (default topics;
        ``reloc map build --format rosbag --bag BAG`` takes the topic options).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from reloc_ros.datasets.base import Dataset, DatasetError, Frame, load_depth, load_image

FORMATS = {
    "posed_images": "reloc_ros.datasets.posed_images",
    "7scenes": "reloc_ros.datasets.sevenscenes",
    "tum": "reloc_ros.datasets.tum",
    "colmap": "reloc_ros.datasets.colmap",
    "rosbag": "reloc_ros.datasets.rosbag",
}

__all__ = ["FORMATS", "Dataset", "DatasetError", "Frame", "load_dataset", "load_depth", "load_image"]


def load_dataset(root, fmt: str) -> Dataset:
    """Load a dataset folder in format ``fmt`` (one of :data:`FORMATS`).

    Raises:
        DatasetError: unknown format, missing folder, or malformed files (the message names the file).
    """
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {sorted(FORMATS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    module = importlib.import_module(FORMATS[fmt])
    return module.load(root)
