"""Odometry consistency with several hypotheses: a pose is published only when the place it belongs to is, by
far, the best-supported one.

Pure numpy (no rclpy), used by the node. Every localized camera pose ``T_map_from_cam`` with odometry
``T_odom_from_cam`` at the same stamp implies a ``T_map_from_odom``. Poses of one true place, seen while the robot
moves, imply (nearly) the same ``T_map_from_odom``; a wrong pose from repeated structure (an identical door one
period away, a corridor that looks the same in both directions) implies another one. The gate keeps up to
``max_hypotheses`` such hypotheses, each with a support that counts its consistent poses and decays by
``1 - 1/memory`` with every localized frame:

- a pose supports the hypothesis whose prediction ``T_map_from_odom @ T_odom_from_cam`` lies within ``max_m`` and
  ``max_deg`` of it (the closest; that hypothesis then follows the pose, so slow odometry drift is tracked), or it
  starts a new hypothesis;
- it is accepted (published) only when its hypothesis is the best supported, has at least ``accept_after`` of
  support, and at least ``dominance`` times the support of any other hypothesis.

So a single wrong pose never gets published, a streak of wrong poses only when it outweighs the true place, and a
start in an ambiguous place waits until one place dominates. Kidnapping (the robot carried elsewhere, or an
odometry reset) is a new hypothesis that takes over once the old one's support has decayed: with ``memory`` 50 and
``dominance`` 1.5 after about 45 localized frames (2-3 s at the node's rate) - ``~/relocalize`` or
``/initialpose`` is immediate. Measured on the synthetic benchmark runs with replayed odometry: docs/RESULTS.md
"Multi-hypothesis odometry gate". :meth:`reset` forgets every hypothesis (a new map, a time jump back);
``reset(trust_next=True)`` (``~/relocalize``, ``/initialpose``) also accepts the next pose as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reloc_ros.core.geometry import invert_T, pose_errors

__all__ = ["OdomGate", "GateDecision"]


@dataclass
class GateDecision:
    """Outcome of :meth:`OdomGate.check`.

    Attributes:
        accepted: the pose may be published.
        reason: why it was rejected ("" when accepted), or a note when the accepted place changed.
        jump_m, jump_deg: difference to the prediction of the hypothesis the pose supports (0 for a new one).
        support: that hypothesis' support after this pose.
        rival: the largest support of any other hypothesis.
        hypotheses: how many hypotheses the gate keeps.
    """

    accepted: bool
    reason: str = ""
    jump_m: float = 0.0
    jump_deg: float = 0.0
    support: float = 0.0
    rival: float = 0.0
    hypotheses: int = 0


@dataclass(eq=False)  # compared by identity
class _Hypothesis:
    T_map_from_odom: np.ndarray
    support: float
    uid: int


class OdomGate:
    """See the module docstring.

    Args:
        max_m: largest position difference (m) of a pose to a hypothesis' prediction; 0 disables the gate.
        max_deg: largest rotation difference (deg).
        accept_after: support a hypothesis needs before its poses are published.
        dominance: how many times the support of every other hypothesis the published one needs.
        memory: support decays by ``1 - 1/memory`` per localized frame (about the number of frames it remembers).
        max_hypotheses: the weakest hypotheses beyond this many are dropped.
    """

    def __init__(self, max_m: float = 0.5, max_deg: float = 10.0, accept_after: int = 5, dominance: float = 1.5,
                 memory: float = 50.0, max_hypotheses: int = 8):
        self.configure(max_m, max_deg, accept_after, dominance, memory)
        self.max_hypotheses = int(max_hypotheses)
        self.rejected = 0  # total rejections
        self.switches = 0  # times the accepted place changed (kidnapping, or recovery from a wrong start)
        self._uid = 0
        self.reset()

    @property
    def enabled(self) -> bool:
        return self.max_m > 0

    def reset(self, trust_next: bool = False) -> None:
        """Forget every hypothesis; with ``trust_next`` the next pose is accepted as is and starts a confirmed one."""
        self._hyps: list[_Hypothesis] = []
        self._accepted_uid: int | None = None
        self._trust_next = bool(trust_next)

    def accepted_map_from_odom(self) -> np.ndarray | None:
        """``T_map_from_odom`` of the accepted place while it still leads (the place whose poses are published), else
        None: with odometry it predicts the next camera pose (the node's odometry prior)."""
        if self._accepted_uid is None or not self._hyps or self._hyps[0].uid != self._accepted_uid:
            return None
        return self._hyps[0].T_map_from_odom.copy()

    def configure(self, max_m: float, max_deg: float, accept_after: int, dominance: float = 1.5,
                  memory: float = 50.0) -> None:
        self.max_m, self.max_deg = float(max_m), float(max_deg)
        self.accept_after, self.dominance, self.memory = int(accept_after), float(dominance), float(memory)

    def _closest(self, T_map_from_cam: np.ndarray, T_odom_from_cam: np.ndarray):
        best = None
        for h in self._hyps:
            dt, dr = pose_errors(T_map_from_cam, h.T_map_from_odom @ T_odom_from_cam)
            if dt <= self.max_m and dr <= self.max_deg:
                score = dt / self.max_m + dr / max(self.max_deg, 1e-9)
                if best is None or score < best[0]:
                    best = (score, h, float(dt), float(dr))
        return best

    def check(self, T_map_from_cam: np.ndarray, T_odom_from_cam: np.ndarray) -> GateDecision:
        """Decide on one localized pose.

        Args:
            T_map_from_cam: the localized camera pose.
            T_odom_from_cam: odometry (odom -> base at the image stamp, composed with base -> camera).
        """
        T_map_from_odom = T_map_from_cam @ invert_T(T_odom_from_cam)
        if not self.enabled:
            return GateDecision(True)
        found = self._closest(T_map_from_cam, T_odom_from_cam)
        keep = 1.0 - 1.0 / max(self.memory, 1.0)
        for h in self._hyps:
            h.support *= keep
        if found is None:
            self._uid += 1
            h, dt, dr = _Hypothesis(T_map_from_odom, 1.0, self._uid), 0.0, 0.0
            self._hyps.append(h)
        else:
            _, h, dt, dr = found
            h.T_map_from_odom = T_map_from_odom  # follow the pose: odometry drifts slowly
            h.support += 1.0
        if self._trust_next:  # the operator said where the robot is
            self._trust_next = False
            self._hyps = [h]
            h.support = max(h.support, float(self.accept_after))
        self._hyps = sorted((x for x in self._hyps if x.support >= 0.05 or x is h), key=lambda x: -x.support)
        del self._hyps[self.max_hypotheses:]
        if not any(x is h for x in self._hyps):  # dropped as the weakest: it cannot be accepted
            self._hyps.append(h)
        rival = max((x.support for x in self._hyps if x is not h), default=0.0)
        d = GateDecision(False, "", dt, dr, h.support, rival, len(self._hyps))
        if h.support >= self.accept_after and h.support >= self.dominance * rival and self._hyps[0] is h:
            d.accepted = True
            if self._accepted_uid is not None and self._accepted_uid != h.uid:
                self.switches += 1
                d.reason = (f"the accepted place changed: {h.support:.1f} consistent poses now outweigh the previous "
                            f"place ({rival:.1f}); robot moved without odometry, or the start was ambiguous?")
            self._accepted_uid = h.uid
            return d
        self.rejected += 1
        if found is None and self._hyps and self._hyps[0] is not h:
            d.reason = (f"inconsistent with odometry: a new place, {self._jump_to_best(T_map_from_cam, T_odom_from_cam)}"
                        f" from the best-supported one ({self._hyps[0].support:.1f} poses); it needs "
                        f"{self.accept_after} and {self.dominance:g}x any other's support (limits {self.max_m:g} m / "
                        f"{self.max_deg:g} deg; or call ~/relocalize)")
        else:
            d.reason = (f"not yet confirmed by odometry: this place has {h.support:.1f} consistent poses, another "
                        f"{rival:.1f}; it needs {self.accept_after} and {self.dominance:g}x any other's support "
                        f"(or call ~/relocalize)")
        return d

    def _jump_to_best(self, T_map_from_cam: np.ndarray, T_odom_from_cam: np.ndarray) -> str:
        dt, dr = pose_errors(T_map_from_cam, self._hyps[0].T_map_from_odom @ T_odom_from_cam)
        return f"{dt:.2f} m / {dr:.1f} deg"
