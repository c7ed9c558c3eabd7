"""A pure-Python TF buffer (no ROS needed): a tree of frames, a time-stamped history per edge with linear /
spherical interpolation, static edges, and lookups along the frame chain through the common ancestor, with tf2's
semantics (``stamp 0`` = latest common time; no extrapolation: a time outside an edge's history is an error that
says whether the data is stale or missing).

The node feeds it from ``/tf`` and ``/tf_static`` (:class:`reloc_ros.ros.tf_buffer.TfClient`); bag readers feed
it from the bag's TF messages.

Naming: ``lookup(target, source, t)`` returns ``T_target_from_source`` (tf2's ``lookup_transform``).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from reloc_ros.core.geometry import make_T, matrix_from_quat, quat_from_matrix, slerp

__all__ = ["TfError", "TfLookupError", "TfExtrapolationError", "TransformBuffer"]

NS = 1_000_000_000


class TfError(RuntimeError):
    """A transform that cannot be looked up (the message names the frames and the reason)."""


class TfLookupError(TfError):
    """A frame is unknown, or the two frames are not connected."""


class TfExtrapolationError(TfError):
    """The requested time lies outside the data of an edge of the chain (stale, missing or future data).

    Attributes:
        too_old: True when the time is before the oldest data kept (waiting cannot help).
    """

    def __init__(self, msg: str, too_old: bool = False):
        super().__init__(msg)
        self.too_old = too_old


@dataclass
class _Edge:
    parent: str
    static: bool
    times: list = field(default_factory=list)  # ns, sorted
    trans: list = field(default_factory=list)  # [3] arrays
    quats: list = field(default_factory=list)  # [4] xyzw arrays

    def latest(self) -> int:
        return self.times[-1]

    def at(self, t_ns: int, child: str) -> np.ndarray:
        """``T_parent_from_child`` at ``t_ns`` (0: latest)."""
        if self.static or t_ns == 0:
            i = len(self.times) - 1
            return make_T(matrix_from_quat(self.quats[i], "xyzw"), self.trans[i])
        t0, t1 = self.times[0], self.times[-1]
        if t_ns > t1:
            raise TfExtrapolationError(
                f"{self.parent} -> {child}: requested time {t_ns / NS:.3f} s is {(t_ns - t1) / NS:.3f} s after the "
                f"newest data ({t1 / NS:.3f} s): data is stale or late (is it still being published?)")
        if t_ns < t0:
            raise TfExtrapolationError(
                f"{self.parent} -> {child}: requested time {t_ns / NS:.3f} s is {(t0 - t_ns) / NS:.3f} s before the "
                f"oldest data ({t0 / NS:.3f} s): older than the buffer's cache", too_old=True)
        i = bisect.bisect_left(self.times, t_ns)
        if self.times[i] == t_ns:
            return make_T(matrix_from_quat(self.quats[i], "xyzw"), self.trans[i])
        ta, tb = self.times[i - 1], self.times[i]
        a = (t_ns - ta) / (tb - ta)
        p = (1.0 - a) * self.trans[i - 1] + a * self.trans[i]
        q = slerp(self.quats[i - 1], self.quats[i], a)
        return make_T(matrix_from_quat(q, "xyzw"), p)


class TransformBuffer:
    """A thread-safe TF tree with per-edge history.

    Args:
        cache_time_s: dynamic data older than this (relative to each edge's newest sample) is dropped.
        jump_back_reset_s: a sample older than its edge's newest by more than this means time jumped back
            (a bag loop): the edge's history is cleared first (tf2_ros clears the whole buffer then).
    """

    def __init__(self, cache_time_s: float = 10.0, jump_back_reset_s: float = 1.0):
        self.cache_ns = int(cache_time_s * NS)
        self.jump_ns = int(jump_back_reset_s * NS)
        self.jumps_back = 0
        self._edges: dict[str, _Edge] = {}
        self._cond = threading.Condition()

    # ---------------------------------------------------------------------------------------------
    def set_transform(self, T_parent_from_child: np.ndarray, parent: str, child: str, stamp_ns: int,
                      static: bool = False) -> None:
        """Add one sample of edge ``parent -> child``."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise TfError(f"invalid transform {parent!r} -> {child!r}: frame ids must be non-empty and differ")
        T = np.asarray(T_parent_from_child, np.float64)
        if not np.all(np.isfinite(T)):
            raise TfError(f"non-finite transform {parent} -> {child} ignored")
        q = quat_from_matrix(T[:3, :3], "xyzw")
        self._insert(parent, child, int(stamp_ns), T[:3, 3].copy(), q, static)

    def set_transform_msg(self, msg, static: bool = False) -> None:
        """Add a ``geometry_msgs/TransformStamped``."""
        tr, r = msg.transform.translation, msg.transform.rotation
        q = np.array([r.x, r.y, r.z, r.w], np.float64)
        n = np.linalg.norm(q)
        parent, child = msg.header.frame_id.lstrip("/"), msg.child_frame_id.lstrip("/")
        if not parent or not child or parent == child:
            raise TfError(f"invalid transform {parent!r} -> {child!r}: frame ids must be non-empty and differ")
        p = np.array([tr.x, tr.y, tr.z], np.float64)
        if not np.all(np.isfinite(q)) or n < 1e-9 or not np.all(np.isfinite(p)):
            raise TfError(f"invalid transform {parent} -> {child} (non-finite values or zero quaternion) ignored")
        stamp = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
        self._insert(parent, child, stamp, p, q / n, static)

    def _insert(self, parent, child, stamp, p, q, static) -> None:
        with self._cond:
            e = self._edges.get(child)
            if e is None or e.parent != parent or e.static != static:
                e = self._edges[child] = _Edge(parent, static)
            if static:
                e.times, e.trans, e.quats = [stamp], [p], [q]
            else:
                if e.times and stamp < e.times[-1] - self.jump_ns:
                    self.jumps_back += 1
                    e.times, e.trans, e.quats = [], [], []
                i = bisect.bisect_left(e.times, stamp)
                if i < len(e.times) and e.times[i] == stamp:
                    e.trans[i], e.quats[i] = p, q
                else:
                    e.times.insert(i, stamp)
                    e.trans.insert(i, p)
                    e.quats.insert(i, q)
                cut = bisect.bisect_left(e.times, e.times[-1] - self.cache_ns)
                if cut > 0:
                    del e.times[:cut], e.trans[:cut], e.quats[:cut]
            self._cond.notify_all()

    def clear(self, keep_static: bool = True) -> None:
        """Forget dynamic data (after a time jump backwards, e.g. a bag loop); static edges stay by default."""
        with self._cond:
            self._edges = {c: e for c, e in self._edges.items() if keep_static and e.static}

    def frames(self) -> list[str]:
        with self._cond:
            return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    # ---------------------------------------------------------------------------------------------
    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            nxt = self._edges[chain[-1]].parent
            if nxt in chain or len(chain) > 1000:
                raise TfLookupError(f"the TF tree has a loop through {nxt!r}")
            chain.append(nxt)
        return chain

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """``T_target_from_source`` at ``stamp_ns`` (0: the latest time at which the whole chain has data).

        Raises:
            TfLookupError: a frame is unknown or the frames are in different trees.
            TfExtrapolationError: the time is outside an edge's data (stale / future / too old).
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._cond:
            if target == source:
                return np.eye(4)
            known = set(self._edges) | {e.parent for e in self._edges.values()}
            for f in (target, source):
                if f not in known:
                    shown = ", ".join(sorted(known)) if known else "none (no TF received)"
                    raise TfLookupError(f"frame {f!r} does not exist in TF (known frames: {shown})")
            up_s, up_t = self._chain(source), self._chain(target)
            in_t = {f: i for i, f in enumerate(up_t)}
            common = next((i for i, f in enumerate(up_s) if f in in_t), None)
            if common is None:
                raise TfLookupError(f"frames {target!r} and {source!r} are not connected: trees rooted at "
                                    f"{up_t[-1]!r} and {up_s[-1]!r} (is a transform between them published?)")
            path_s, path_t = up_s[:common], up_t[:in_t[up_s[common]]]
            t = int(stamp_ns)
            if t == 0:
                dyn = [self._edges[f].latest() for f in path_s + path_t if not self._edges[f].static]
                t = min(dyn) if dyn else 0
            T_anc_from_source = np.eye(4)
            for f in path_s:
                T_anc_from_source = self._edges[f].at(t, f) @ T_anc_from_source
            T_anc_from_target = np.eye(4)
            for f in path_t:
                T_anc_from_target = self._edges[f].at(t, f) @ T_anc_from_target
        return np.linalg.solve(T_anc_from_target, T_anc_from_source)

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TfError:
            return False

    def wait_for(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> np.ndarray:
        """:meth:`lookup`, waiting up to ``timeout_s`` for the data to arrive; raises the last error."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            while True:
                try:
                    return self.lookup(target, source, stamp_ns)
                except TfExtrapolationError as e:
                    # Data older than the request: wait for newer data; older than the cache: give up now.
                    if e.too_old:
                        raise
                    err = e
                except TfLookupError as e:
                    err = e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise err
                self._cond.wait(min(left, 0.05))
