"""Dataset abstraction shared by all loaders: posed frames with intrinsics and optional depth."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from reloc_ros.core.camera import Camera

__all__ = ["Frame", "Dataset", "DatasetError", "load_image", "load_depth", "evenly_spaced"]


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message says which file and what is wrong."""


@dataclass
class Frame:
    """One posed image.

    Attributes:
        name: unique name inside the dataset (e.g. ``seq-01/frame-000010`` or ``0004``); frames sort by it.
        image_path: colour or grey image file.
        camera: intrinsics of the image as stored on disk.
        T_world_from_cam: 4x4 pose of the camera optical frame in the dataset's world frame.
        depth_path: optional depth image registered to ``image_path`` (same size).
        depth_scale: metres per stored depth unit (7-Scenes 0.001, TUM 1/5000, float images 1.0).
        timestamp: seconds, when the dataset has them.
        split: ``"map"``, ``"query"`` or ``None`` (the dataset has no split of its own).
        sequence: the sequence / run name the frame belongs to.
    """

    name: str
    image_path: Path
    camera: Camera
    T_world_from_cam: np.ndarray
    depth_path: Path | None = None
    depth_scale: float = 1.0
    timestamp: float | None = None
    split: str | None = None
    sequence: str = ""


@dataclass
class Dataset:
    """Frames of one dataset, sorted by name, and how they split into map and queries."""

    root: Path
    format: str
    frames: list[Frame] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # format-specific extras, e.g. {"sequence_labels": {"seq-02": "query_light_change"}}

    def __post_init__(self):
        self.frames = sorted(self.frames, key=lambda f: f.name)
        if not self.frames:
            raise DatasetError(f"{self.root}: no frames found for format {self.format!r}")

    @property
    def has_depth(self) -> bool:
        return all(f.depth_path is not None for f in self.frames)

    @property
    def has_split(self) -> bool:
        return any(f.split is not None for f in self.frames)

    def split(self, map_every: int | None = None) -> tuple[list[Frame], list[Frame]]:
        """(map frames, query frames).

        Args:
            map_every: when given, every N-th frame by sorted name (0, N, 2N, ...) is a map frame and the rest
                are queries. Otherwise the dataset's own split is used (7-Scenes / synthetic: TrainSplit.txt
                and TestSplit.txt).

        Raises:
            DatasetError: no ``map_every`` and the dataset has no split of its own.
        """
        if map_every is not None:
            if map_every < 2:
                raise DatasetError(f"--map-every must be >= 2 (got {map_every}): every image would be a map image")
            mapping = [f for i, f in enumerate(self.frames) if i % map_every == 0]
            queries = [f for i, f in enumerate(self.frames) if i % map_every != 0]
            return mapping, queries
        if not self.has_split:
            raise DatasetError(
                f"{self.root}: format {self.format!r} has no map/query split of its own; pass --map-every N"
            )
        return [f for f in self.frames if f.split == "map"], [f for f in self.frames if f.split == "query"]

    def by_name(self, name: str) -> Frame:
        for f in self.frames:
            if f.name == name:
                return f
        raise KeyError(name)


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """Indices of at most ``k`` evenly spaced items of ``n`` (first and last included; all when ``n <= k``)."""
    if n <= 0 or k <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))


def check_image_size(frame: Frame, size: tuple[int, int], then: str = "") -> None:
    """DatasetError when ``frame``'s image, ``size`` (w, h), is not the size its camera describes (``then``: what
    the message adds)."""
    if tuple(size) != frame.camera.size:
        raise DatasetError(f"{frame.image_path} is {size[0]}x{size[1]} but its camera says "
                           f"{frame.camera.width}x{frame.camera.height}{then}")


def load_image(frame_or_path, gray: bool = False) -> np.ndarray:
    """Read an image as RGB ``[H x W x 3] uint8`` (or ``[H x W]`` grey).

    Raises:
        DatasetError: the file is missing or not a readable image.
    """
    path = Path(getattr(frame_or_path, "image_path", frame_or_path))
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot decode image {path} (truncated or not an image?)")
    return img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_depth(frame: Frame) -> np.ndarray:
    """Metric depth ``[H x W] float32`` of a frame; invalid pixels (0, 65535, NaN, inf) are set to 0.

    Raises:
        DatasetError: the frame has no depth or the file cannot be read.
    """
    if frame.depth_path is None:
        raise DatasetError(f"frame {frame.name} has no depth image")
    path = Path(frame.depth_path)
    if not path.is_file():
        raise DatasetError(f"depth file not found: {path}")
    if path.suffix == ".npy":
        d = np.load(path, allow_pickle=False).astype(np.float32) * np.float32(frame.depth_scale)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DatasetError(f"cannot decode depth image {path}")
        if raw.ndim != 2:
            raise DatasetError(f"depth image {path} has {raw.shape[2]} channels, expected 1")
        invalid = raw == 65535 if raw.dtype == np.uint16 else np.zeros(raw.shape, bool)
        d = raw.astype(np.float32) * np.float32(frame.depth_scale)
        d[invalid] = 0.0
    d[~np.isfinite(d)] = 0.0
    d[d < 0] = 0.0
    return d
