"""Posed images from a rosbag2 recording (mcap or sqlite3), read with the pure-Python ``rosbags`` package.

What a bag must hold:

- images (``sensor_msgs/Image``; rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, 32FC1) on ``image_topic``;
- ``sensor_msgs/CameraInfo`` on ``camera_info_topic`` (default: ``camera_info`` beside the image topic,
  e.g. ``/camera/image_raw`` -> ``/camera/camera_info``), matched to images by stamp (else the latest before);
- ground truth, either a pose topic (``geometry_msgs/PoseStamped``, ``PoseWithCovarianceStamped`` or
  ``nav_msgs/Odometry``: the pose of the camera optical frame; default ``/ground_truth/camera_pose`` as
  ``reloc data synth --bag`` writes it) or, with ``gt_frame``, the TF chain (``/tf`` + ``/tf_static``) from
  that frame to the image's ``header.frame_id``;
- optionally depth images (16UC1 millimetres or 32FC1 metres, registered to the colour images) on ``depth_topic``.

Ground truth is interpolated at each image stamp (linear position, slerp rotation); an image whose stamp is
outside the ground truth's time span, or in a gap longer than ``max_gt_gap_s``, has no ground truth and is
skipped (counted in ``meta["skipped_no_gt"]``).

:func:`iter_bag_images` streams images with their camera, stamp and ground truth (replay); :func:`load` makes a
:class:`~reloc_ros.datasets.base.Dataset` (map building) whose image and depth files are decoded into a temporary
folder that lives as long as the Dataset or any of its frames.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import T_from_pos_quat, make_T, matrix_from_quat, quat_from_matrix, slerp
from reloc_ros.datasets.base import Dataset, DatasetError, Frame
from reloc_ros.core.camera import CameraInfoError, camera_from_info
from reloc_ros.core.image_decoding import ImageConversionError, decode_image, decode_to_localizer_input
from reloc_ros.core.tf_buffer import TfError, TransformBuffer

__all__ = ["BagTopics", "BagImage", "Trajectory", "load", "load_bag", "iter_bag_images", "read_ground_truth",
           "bag_dir", "open_reader", "require_topic", "require_camera_topics", "DEFAULT_IMAGE_TOPIC",
           "DEFAULT_GT_TOPIC"]

FORMAT = "rosbag"
NS = 1_000_000_000
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_GT_TOPIC = "/ground_truth/camera_pose"
IMAGE_TYPE = "sensor_msgs/msg/Image"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry")


@dataclass
class BagTopics:
    """Which topics of a bag hold what."""

    image: str = DEFAULT_IMAGE_TOPIC  # sensor_msgs/Image
    camera_info: str | None = None  # sensor_msgs/CameraInfo; None: "camera_info" beside the image topic
    depth: str | None = None  # optional depth images registered to the colour images
    gt_topic: str = DEFAULT_GT_TOPIC  # pose of the camera optical frame (PoseStamped / ...WithCovariance / Odometry)
    gt_frame: str | None = None  # when set: ground truth from TF, T_{gt_frame}_from_{image frame_id}
    max_gt_gap_s: float = 0.5  # no ground truth inside a gap between two samples longer than this
    camera_info_tolerance_s: float = 0.005  # a CameraInfo matches an image within this stamp difference

    def __post_init__(self):
        # a bag stores fully qualified names: a relative name resolves in the root namespace, as for a node there
        for name in ("image", "camera_info", "depth", "gt_topic"):
            v = getattr(self, name)
            if v and not v.startswith(("/", "~")):
                setattr(self, name, "/" + v)

    @property
    def info_topic(self) -> str:
        if self.camera_info:
            return self.camera_info
        return self.image.rsplit("/", 1)[0] + "/camera_info"


@dataclass
class Trajectory:
    """Time-stamped poses ``T_world_from_body`` (sorted by stamp), interpolated on request."""

    stamps_ns: np.ndarray  # [N] int64
    poses: np.ndarray  # [N x 4 x 4]
    frame: str = ""
    max_gap_ns: int = NS // 2

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def at(self, t_ns: int) -> np.ndarray | None:
        """The pose at ``t_ns`` (linear / slerp between the two neighbouring samples), None outside the data."""
        s = self.stamps_ns
        i = int(np.searchsorted(s, t_ns))
        if i < len(s) and s[i] == t_ns:
            return self.poses[i].copy()
        if i == 0 or i == len(s) or s[i] - s[i - 1] > self.max_gap_ns:
            return None
        a = (t_ns - s[i - 1]) / (s[i] - s[i - 1])
        A, B = self.poses[i - 1], self.poses[i]
        q = slerp(quat_from_matrix(A[:3, :3], "xyzw"), quat_from_matrix(B[:3, :3], "xyzw"), a)
        return make_T(matrix_from_quat(q, "xyzw"), (1.0 - a) * A[:3, 3] + a * B[:3, 3])


@dataclass
class BagImage:
    """One image of a bag with what belongs to it."""

    index: int  # position among the bag's images (0-based, in stamp order of recording)
    stamp_ns: int  # header stamp
    frame_id: str
    image: np.ndarray  # [H x W x 3] uint8 RGB or [H x W] uint8 grey (the localizer's input)
    camera: Camera
    T_world_from_cam: np.ndarray | None  # ground truth interpolated at the stamp (None: none there)
    depth_m: np.ndarray | None = None  # [H x W] float32 metres (depth topic only)


# --------------------------------------------------------------------------------------------------
def bag_dir(path) -> Path:
    """The rosbag2 directory of ``path`` (the directory itself, or the one holding a given .mcap / .db3 file)."""
    p = Path(path)
    if p.is_file() and (p.parent / "metadata.yaml").is_file():
        return p.parent  # a .mcap / .db3 file inside its bag directory
    if not p.exists():
        raise DatasetError(f"bag not found: {p} (give the rosbag2 directory, the one holding metadata.yaml)")
    if not (p / "metadata.yaml").is_file():
        raise DatasetError(f"{p} is not a rosbag2 directory (no metadata.yaml); give the folder `ros2 bag record` "
                           "wrote")
    return p


def open_reader(path: Path):
    """An open ``rosbags`` reader of a bag directory (close it after use)."""
    from rosbags.rosbag2 import Reader

    try:
        r = Reader(path)
        r.open()
    except Exception as e:  # rosbags raises its own error types for unreadable metadata / storage
        raise DatasetError(f"cannot read bag {path}: {e}") from None
    return r


def _typestore():
    from reloc_ros.datasets.synthetic.bag import get_ros2_typestore

    return get_ros2_typestore()


def require_topic(topics: dict, topic: str, types: tuple[str, ...], what: str, hint: str) -> None:
    """Refuse a bag without ``topic`` of one of ``types``: the error lists the bag's topics and the ``hint``."""
    listed = ", ".join(f"{t} ({m.rsplit('/', 1)[-1]})" for t, m in sorted(topics.items())) or "none"
    if topic not in topics:
        raise DatasetError(f"the bag has no {what} topic {topic!r}; {hint}. Topics in the bag: {listed}")
    if topics[topic] not in types:
        raise DatasetError(f"topic {topic!r} is {topics[topic]}, not {' / '.join(types)} ({what}); {hint}")


def require_camera_topics(topics_in_bag: dict, topics: "BagTopics") -> None:
    """Refuse a bag without the image topic or its camera_info topic (see :func:`require_topic`)."""
    require_topic(topics_in_bag, topics.image, (IMAGE_TYPE,), "image", "pass --image-topic TOPIC")
    infos = sorted(t for t, m in topics_in_bag.items() if m == INFO_TYPE)
    require_topic(topics_in_bag, topics.info_topic, (INFO_TYPE,), "camera_info",
                  f"pass --camera-info-topic {infos[0]}" if len(infos) == 1 else
                  f"pass --camera-info-topic TOPIC (one of {', '.join(infos)})" if infos else
                  "record the camera's camera_info topic with the images (the intrinsics are needed)")


def _stamp(h) -> int:
    return int(h.stamp.sec) * NS + int(h.stamp.nanosec)


def _pose_T(p) -> np.ndarray:
    q = np.array([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w], np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise DatasetError("a ground-truth pose has a zero or non-finite quaternion")
    return T_from_pos_quat(np.array([p.position.x, p.position.y, p.position.z], np.float64), q / n, "xyzw")


def _messages(r, topics: list[str]):
    ts = _typestore()
    conns = [c for c in r.connections if c.topic in topics]
    for c, t, raw in r.messages(connections=conns):
        yield c.topic, t, ts.deserialize_cdr(raw, c.msgtype), c.msgtype


# --------------------------------------------------------------------------------------------------
def read_ground_truth(path, topics: BagTopics = BagTopics(), camera_frame: str | None = None) -> Trajectory:
    """The ground-truth trajectory of a bag (from the pose topic, or from TF with ``topics.gt_frame``).

    Args:
        camera_frame: with ``gt_frame``, the frame whose poses to return (default: the first image's frame_id).

    Raises:
        DatasetError: no ground-truth topic / TF chain, or no sample; the message says which option to use.
    """
    bag = bag_dir(path)
    r = open_reader(bag)
    try:
        return _ground_truth(r, bag, topics, camera_frame)
    finally:
        r.close()


def _ground_truth(r, bag: Path, topics: BagTopics, camera_frame: str | None = None) -> Trajectory:
    """:func:`read_ground_truth` from an open reader."""
    tops = {c.topic: c.msgtype for c in r.connections}
    gap = int(topics.max_gt_gap_s * NS)
    if topics.gt_frame:
        return _gt_from_tf(r, tops, topics, camera_frame, gap)
    require_topic(tops, topics.gt_topic, POSE_TYPES, "ground-truth pose", "pass --gt-topic TOPIC (the camera "
                  "optical frame's pose) or --gt-frame FRAME (ground truth from TF)")
    stamps, poses, frame = [], [], ""
    for _, _, msg, mtype in _messages(r, [topics.gt_topic]):
        pose = msg.pose.pose if mtype != POSE_TYPES[0] else msg.pose
        stamps.append(_stamp(msg.header))
        poses.append(_pose_T(pose))
        frame = msg.header.frame_id
    if not stamps:
        raise DatasetError(f"{bag}: ground-truth topic {topics.gt_topic} has no messages")
    order = np.argsort(stamps, kind="stable")
    return Trajectory(np.asarray(stamps, np.int64)[order], np.stack(poses)[order], frame, gap)


def _gt_from_tf(r, tops: dict, topics: BagTopics, camera_frame: str | None, gap: int) -> Trajectory:
    present = [t for t in ("/tf", "/tf_static") if t in tops]
    if not present:
        raise DatasetError(f"--gt-frame {topics.gt_frame} needs /tf (and /tf_static) in the bag; it has neither. "
                           f"Topics: {', '.join(sorted(tops))}")
    frame = camera_frame or (_first_frame_id(r, topics.image) if topics.image in tops else None)
    if not frame:
        raise DatasetError(f"--gt-frame: no image on {topics.image} to take the camera frame from")
    buf = TransformBuffer(cache_time_s=1e9, jump_back_reset_s=1e9)
    dynamic_stamps = set()
    for topic, _, msg, _ in _messages(r, present):
        for t in msg.transforms:
            try:
                buf.set_transform_msg(t, static=(topic == "/tf_static"))
            except TfError as e:
                raise DatasetError(f"bad transform in {topic}: {e}") from None
            if topic == "/tf":
                dynamic_stamps.add(_stamp(t.header))
    stamps = sorted(dynamic_stamps) or [0]
    out_s, out_T, err = [], [], None
    for s in stamps:
        try:
            out_T.append(buf.lookup(topics.gt_frame, frame, s))
            out_s.append(s)
        except TfError as e:
            err = e
    if not out_s:
        raise DatasetError(f"no TF chain from {topics.gt_frame!r} to the camera frame {frame!r} in the bag: {err}")
    return Trajectory(np.asarray(out_s, np.int64), np.stack(out_T), topics.gt_frame, gap)


def _first_frame_id(r, topic: str) -> str | None:
    msgs = _messages(r, [topic])
    try:
        return next(msgs)[2].header.frame_id
    except StopIteration:
        return None
    finally:
        msgs.close()


def _read_infos(r, topic: str) -> tuple[np.ndarray, list]:
    stamps, msgs = [], []
    for _, _, msg, _ in _messages(r, [topic]):
        stamps.append(_stamp(msg.header))
        msgs.append(msg)
    return np.asarray(stamps, np.int64), msgs


class _CameraLookup:
    """Image stamp -> Camera (CameraInfo of the same stamp within a tolerance, else the latest before)."""

    def __init__(self, stamps: np.ndarray, msgs: list, tol_ns: int):
        order = np.argsort(stamps, kind="stable")
        self.stamps, self.msgs, self.tol = stamps[order], [msgs[i] for i in order], tol_ns
        self._cache: dict[int, Camera] = {}

    def __call__(self, t_ns: int) -> Camera:
        s = self.stamps
        i = int(np.searchsorted(s, t_ns))
        near = [j for j in (i - 1, i) if 0 <= j < len(s)]
        j = min(near, key=lambda k: abs(int(s[k]) - t_ns))
        if abs(int(s[j]) - t_ns) > self.tol:
            j = max(i - 1, 0)
        if j not in self._cache:
            try:
                self._cache[j] = camera_from_info(self.msgs[j])
            except CameraInfoError as e:
                raise DatasetError(f"CameraInfo at {int(s[j]) / NS:.3f} s: {e}") from None
        return self._cache[j]


def _depth_m(msg) -> np.ndarray:
    arr = decode_image(msg)
    if msg.encoding in ("16UC1", "mono16"):
        d = arr.astype(np.float32) * np.float32(0.001)
        d[arr == 65535] = 0.0
    elif msg.encoding == "32FC1":
        d = np.array(arr, np.float32)
    else:
        raise DatasetError(f"depth image encoding {msg.encoding!r} is not supported: use 16UC1 (mm) or 32FC1 (m)")
    d[~np.isfinite(d) | (d < 0)] = 0.0
    return d


# --------------------------------------------------------------------------------------------------
def iter_bag_images(path, topics: BagTopics = BagTopics(), gt: Trajectory | None = None,
                    every: int = 1) -> Iterator[BagImage]:
    """Stream a bag's images (every ``every``-th) with their camera, ground truth and (optional) depth.

    Args:
        gt: the ground truth (default: :func:`read_ground_truth`); images without ground truth get None.

    Raises:
        DatasetError: missing image / camera_info topic, no CameraInfo message, unsupported encoding.
    """
    bag = bag_dir(path)
    r = open_reader(bag)
    try:
        tops = {c.topic: c.msgtype for c in r.connections}
        require_camera_topics(tops, topics)
        if topics.depth:
            require_topic(tops, topics.depth, (IMAGE_TYPE,), "depth image",
                          "pass --depth-topic TOPIC or leave it out")
        gt = gt if gt is not None else _ground_truth(r, bag, topics)
        stamps, infos = _read_infos(r, topics.info_topic)
        if not infos:
            raise DatasetError(f"{bag}: camera_info topic {topics.info_topic} has no messages; record it with the "
                               "images")
        camera_at = _CameraLookup(stamps, infos, int(topics.camera_info_tolerance_s * NS))
        depths: dict[int, np.ndarray] = {}
        pending: list = []  # images waiting for their depth (depth may come after the image)
        index = 0
        for topic, _, msg, _ in _messages(r, [topics.image] + ([topics.depth] if topics.depth else [])):
            if topic == topics.depth:
                depths[_stamp(msg.header)] = _depth_m(msg)
                while len(depths) > 16:  # depth of skipped (or never recorded) images
                    depths.pop(min(depths))
                yield from _release(pending, depths, wait=True)
                continue
            if index % every == 0:
                t = _stamp(msg.header)
                try:
                    img = decode_to_localizer_input(msg)
                except ImageConversionError as e:
                    raise DatasetError(f"image on {topics.image} at {t / NS:.3f} s: {e}") from None
                item = BagImage(index, t, msg.header.frame_id, np.array(img), camera_at(t), gt.at(t))
                if topics.depth:
                    pending.append(item)
                    yield from _release(pending, depths, wait=True)
                else:
                    yield item
            index += 1
        yield from _release(pending, depths, wait=False)
    finally:
        r.close()
    if index == 0:
        raise DatasetError(f"{bag}: image topic {topics.image} has no messages")


def _release(pending: list, depths: dict, wait: bool) -> Iterator[BagImage]:
    """Yield pending images whose depth arrived (all of them when ``wait`` is False; no depth = None)."""
    while pending:
        item = pending[0]
        if item.stamp_ns in depths:
            item.depth_m = depths.pop(item.stamp_ns)
        elif wait and len(pending) < 8:
            return
        pending.pop(0)
        yield item


# --------------------------------------------------------------------------------------------------
def load_bag(path, topics: BagTopics = BagTopics(), every: int = 1) -> Dataset:
    """A Dataset of a bag's posed images (map building): images (and depth) are decoded into a temporary
    folder that is removed once neither the returned Dataset nor any of its frames is referenced (or at exit).

    Frames are named ``frame-NNNNNN`` by their index among the bag's images and carry the image stamp as
    ``timestamp``; the bag has no map/query split of its own. ``meta`` holds ``skipped_no_gt``, ``bag``,
    ``topics`` and ``gt_source``.

    Raises:
        DatasetError: see :func:`iter_bag_images` and :func:`read_ground_truth`; no image with ground truth.
    """
    bag = bag_dir(path)
    r = open_reader(bag)
    try:  # what else the bag has: a depth topic the command was not given (map build says so)
        others = sorted(c.topic for c in r.connections if c.msgtype == IMAGE_TYPE and c.topic not in
                        (topics.image, topics.depth))
    finally:
        r.close()
    cache = Path(tempfile.mkdtemp(prefix="reloc_bag_"))
    try:
        frames, skipped = [], 0
        for item in iter_bag_images(bag, topics, every=every):
            if item.T_world_from_cam is None:
                skipped += 1
                continue
            name = f"frame-{item.index:06d}"
            img_path = cache / f"{name}.png"
            bgr = item.image if item.image.ndim == 2 else cv2.cvtColor(item.image, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(img_path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            depth_path = None
            if item.depth_m is not None:
                depth_path = cache / f"{name}.depth.npy"
                np.save(depth_path, item.depth_m, allow_pickle=False)
            frames.append(Frame(name=name, image_path=img_path, camera=item.camera,
                                T_world_from_cam=item.T_world_from_cam, depth_path=depth_path, depth_scale=1.0,
                                timestamp=item.stamp_ns / NS, sequence=bag.name))
        if not frames:
            raise DatasetError(f"{bag}: no image has ground truth ({skipped} images outside the ground truth's "
                               "time span or in its gaps); check --gt-topic / --gt-frame")
    except BaseException:
        shutil.rmtree(cache, ignore_errors=True)
        raise
    holder = _CacheDir(cache)
    for f in frames:
        f.cache_dir = holder  # the files live as long as any frame (or the Dataset) that refers to them
    source = f"tf:{topics.gt_frame}" if topics.gt_frame else topics.gt_topic
    return Dataset(root=bag, format=FORMAT, frames=frames,
                   meta={"skipped_no_gt": skipped, "bag": str(bag), "gt_source": source, "image_cache": holder,
                         "other_image_topics": others,
                         "topics": {"image": topics.image, "camera_info": topics.info_topic, "depth": topics.depth}})


class _CacheDir:
    """A temporary folder removed when the last object holding this goes away (or at exit)."""

    def __init__(self, path: Path):
        self.path = path
        weakref.finalize(self, shutil.rmtree, str(path), True)


def load(root: Path) -> Dataset:
    """:func:`load_bag` with the default topics (``load_dataset(path, "rosbag")``)."""
    return load_bag(root)
