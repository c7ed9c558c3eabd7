"""What the node publishes: poses, the path, RViz markers, the latched map points and the map -> odom (or
map -> base) transform, with its periodic republication. The node decides what goes out; this module only sends it.

QoS is the caller's: :meth:`Outputs.create` takes the profiles (ros2 demos style).
"""

from __future__ import annotations

import collections
import threading

import numpy as np
from geometry_msgs.msg import Point, PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from reloc_ros.ros import conversions as conv

__all__ = ["Outputs"]


class Outputs:
    """The node's publishers and the state of what it published (path, last map -> odom, TF stamps sent)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pubs: dict = {}
        self._path = Path()
        self._transform: tuple | None = None  # (T, parent, child): the last map -> odom (or map -> base)
        self._unrepublished = False  # the last transform was sent at its image stamp only
        self._last_republished_ns = -1  # newest stamp of a periodic republication
        self._sent_stamps: collections.deque = collections.deque(maxlen=256)  # stamps we sent on /tf

    def create(self, node, qos_reliable, qos_latched) -> None:
        self._pubs = {
            "pose": node.create_publisher(PoseStamped, "~/pose", qos_reliable),
            "pose_cov": node.create_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", qos_reliable),
            "pose_coarse": node.create_publisher(PoseWithCovarianceStamped, "~/pose_coarse", qos_reliable),
            "path": node.create_publisher(Path, "~/path", qos_reliable),
            "markers": node.create_publisher(MarkerArray, "~/markers", qos_reliable),
            "map_points": node.create_publisher(PointCloud2, "~/map_points", qos_latched),
            "map_keyframes": node.create_publisher(MarkerArray, "~/map_keyframes", qos_latched),
        }

    def destroy(self, node) -> None:
        for p in self._pubs.values():
            node.destroy_publisher(p)
        self._pubs = {}

    def reset(self, tf_stamps: bool = False) -> None:
        """Forget the path and the last transform (a new map, new frames); with ``tf_stamps`` also the stamps sent
        (a time jump back)."""
        with self._lock:
            self._transform = None
            self._path = Path()
            if tf_stamps:
                self._last_republished_ns = -1
                self._sent_stamps.clear()

    @property
    def path_length(self) -> int:
        return len(self._path.poses)

    # ---------------------------------------------------------------------------------------------
    def pose(self, T_pose: np.ndarray, cov: np.ndarray, frame: str, stamp: int, path_max: int) -> None:
        """``~/pose``, ``~/pose_with_covariance`` and the path (at most ``path_max`` poses)."""
        ps = conv.pose_stamped(T_pose, frame, stamp)
        self._pubs["pose"].publish(ps)
        self._pubs["pose_cov"].publish(conv.pose_with_covariance_stamped(T_pose, cov, frame, stamp))
        with self._lock:
            self._path.header = conv.header(frame, stamp)
            self._path.poses.append(ps)
            if len(self._path.poses) > path_max:
                del self._path.poses[: len(self._path.poses) - path_max]
            if not _subscribed(self._pubs["path"]):  # 1000 poses cost ~2.7 ms a frame to send: only for a viewer
                return
            path = Path(header=self._path.header, poses=list(self._path.poses))
        self._pubs["path"].publish(path)

    def coarse(self, T: np.ndarray, cov: np.ndarray, frame: str, stamp: int) -> None:
        self._pubs["pose_coarse"].publish(conv.pose_with_covariance_stamped(T, cov, frame, stamp))

    def markers(self, inlier_xyz: np.ndarray | None, keyframe_centers: np.ndarray, localized: bool, frame: str,
                stamp: int) -> None:
        """The matched map points (green) and the retrieved keyframes (orange, red when the frame failed), while
        someone (RViz) subscribes."""
        if not _subscribed(self._pubs.get("markers")):
            return
        hdr = conv.header(frame, stamp)
        pts = Marker(header=hdr, ns="matched_points", id=0)
        if localized and inlier_xyz is not None and len(inlier_xyz):
            pts.type, pts.action = Marker.POINTS, Marker.ADD
            pts.scale.x = pts.scale.y = 0.03
            pts.color = ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0)
            pts.pose.orientation.w = 1.0
            pts.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in np.asarray(inlier_xyz)[:2000]]
        else:
            pts.action = Marker.DELETE
        kfs = Marker(header=hdr, ns="retrieved_keyframes", id=0)
        if len(keyframe_centers):
            kfs.type, kfs.action = Marker.SPHERE_LIST, Marker.ADD
            kfs.scale.x = kfs.scale.y = kfs.scale.z = 0.08
            kfs.color = ColorRGBA(r=1.0, g=0.6, b=0.0, a=0.9) if localized else ColorRGBA(r=0.9, g=0.1, b=0.1, a=0.9)
            kfs.pose.orientation.w = 1.0
            kfs.points = [Point(x=float(c[0]), y=float(c[1]), z=float(c[2])) for c in keyframe_centers]
        else:
            kfs.action = Marker.DELETE
        self._pubs["markers"].publish(MarkerArray(markers=[pts, kfs]))

    def map_points(self, xyz: np.ndarray, n_max: int, frame: str, stamp: int) -> None:
        """The latched ``~/map_points`` (at most ``n_max``, evenly picked); nothing before :meth:`create`."""
        pub = self._pubs.get("map_points")
        if pub is None:
            return
        if len(xyz) > n_max:
            xyz = xyz[np.linspace(0, len(xyz) - 1, n_max).astype(np.int64)]
        pub.publish(conv.pointcloud2_xyz(xyz, frame, stamp))

    def map_keyframes(self, centers: np.ndarray, lookalike: np.ndarray | None, frame: str, stamp: int) -> None:
        """The latched ``~/map_keyframes``: the map's keyframe positions, those with a look-alike elsewhere in the map
        (``lookalike``, core/aliases.py; None: not analysed) in magenta, the others in blue: after a cold start the
        robot needs more motion among the magenta ones (docs/robot_guide.md)."""
        pub = self._pubs.get("map_keyframes")
        if pub is None:
            return
        hdr = conv.header(frame, stamp)
        marked = np.zeros(len(centers), bool) if lookalike is None else np.asarray(lookalike, bool)
        out = []
        for ns, sel, color in (("keyframes", ~marked, ColorRGBA(r=0.2, g=0.5, b=1.0, a=0.8)),
                               ("keyframes_with_lookalike", marked, ColorRGBA(r=0.9, g=0.1, b=0.8, a=0.9))):
            m = Marker(header=hdr, ns=ns, id=0)
            if sel.any():
                m.type, m.action = Marker.SPHERE_LIST, Marker.ADD
                m.scale.x = m.scale.y = m.scale.z = 0.06
                m.color = color
                m.pose.orientation.w = 1.0
                m.points = [Point(x=float(c[0]), y=float(c[1]), z=float(c[2])) for c in np.asarray(centers)[sel]]
            else:
                m.action = Marker.DELETE
            out.append(m)
        pub.publish(MarkerArray(markers=out))

    # ---------------------------------------------------------------------------------------------
    def send_transform(self, tf, T: np.ndarray, parent: str, child: str, stamp: int) -> int:
        """Send ``parent -> child`` at ``stamp`` and keep it for :meth:`republish`. At the image stamp (exact for
        data of that time); if a future-dated republication already used this stamp, 1 ns later, so that tf2 does
        not drop the new value as repeated data. Returns the stamp sent."""
        with self._lock:
            self._transform = (T, parent, child)
            self._unrepublished = True
        return self._send(tf, T, parent, child, stamp)

    def republish(self, tf, now_ns: int, tolerance_s: float, only_new: bool = False) -> None:
        """The last transform again, stamped ``now + tolerance`` (AMCL-style), unless the clock has not moved.

        ``only_new``: only if the last transform has not been republished yet. The node calls it so right after a
        frame: a new transform goes out at its (older) image stamp, and until the next periodic republication the
        newest stamp on /tf (an earlier future-dated one) would still carry the previous value."""
        stamp = now_ns + int(tolerance_s * 1e9)
        with self._lock:  # the timer and the frame worker both call this
            m = self._transform
            if m is None or tf is None or (only_new and not self._unrepublished):
                return
            if stamp <= self._last_republished_ns or stamp in self._sent_stamps:
                return  # clock paused (sim time): nothing new to say
            self._last_republished_ns = stamp
            self._unrepublished = False
        self._send(tf, *m, stamp)

    def _send(self, tf, T: np.ndarray, parent: str, child: str, stamp: int) -> int:
        with self._lock:
            while stamp in self._sent_stamps:
                stamp += 1
            self._sent_stamps.append(stamp)
        tf.send([conv.transform_stamped(T, parent, child, stamp)])
        return stamp


def _subscribed(pub) -> bool:
    """Whether a publisher has a subscriber (the frame's visualisation is built and sent only then)."""
    try:
        return pub is not None and pub.get_subscription_count() > 0
    except Exception:  # noqa: BLE001 - a publisher destroyed during shutdown
        return False
