"""Odometry consistency: a new pose that jumps against odometry since the last accepted pose is not trusted.

Pure numpy (no rclpy), used by the node. The state is the ``T_map_from_odom`` of the last accepted pose. A new
camera pose ``T_map_from_cam`` (with odometry ``T_odom_from_cam`` at the same stamp) is compared with the pose that
state predicts, ``T_map_from_odom_ref @ T_odom_from_cam``: a difference above ``max_m`` or ``max_deg`` rejects it.

Kidnapping: a robot carried elsewhere (or an odometry reset) makes every later, correct pose jump. Rejected
poses that agree with each other (their own ``T_map_from_odom`` predicts the next one within the thresholds) are
counted; after ``accept_after`` of them in a row the pose is accepted and becomes the new reference. A single
wrong pose from repeated structure rarely repeats identically, so it stays rejected. :meth:`reset` (the
``~/relocalize`` service, ``/initialpose``, a time jump back, a new map) makes the next pose be accepted as is.
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
        reason: why it was rejected ("" when accepted), or a note when accepted after a streak.
        jump_m, jump_deg: difference to the odometry prediction (0 without a reference).
        streak: consecutive mutually consistent rejections so far (0 after an acceptance).
    """

    accepted: bool
    reason: str = ""
    jump_m: float = 0.0
    jump_deg: float = 0.0
    streak: int = 0


class OdomGate:
    """See the module docstring.

    Args:
        max_m: largest accepted position difference (m) to the odometry prediction; 0 disables the gate.
        max_deg: largest accepted rotation difference (deg).
        accept_after: consecutive mutually consistent rejected poses after which one is accepted (kidnapping).
    """

    def __init__(self, max_m: float = 0.5, max_deg: float = 10.0, accept_after: int = 5):
        self.max_m, self.max_deg, self.accept_after = float(max_m), float(max_deg), int(accept_after)
        self.rejected = 0  # total rejections
        self.reset()

    @property
    def enabled(self) -> bool:
        return self.max_m > 0

    def reset(self) -> None:
        """Forget the reference: the next pose is accepted without a check."""
        self._ref_map_from_odom: np.ndarray | None = None
        self._streak_map_from_odom: np.ndarray | None = None
        self._streak = 0

    def configure(self, max_m: float, max_deg: float, accept_after: int) -> None:
        self.max_m, self.max_deg, self.accept_after = float(max_m), float(max_deg), int(accept_after)

    def _within(self, T_a: np.ndarray, T_b: np.ndarray) -> tuple[bool, float, float]:
        dt, dr = pose_errors(T_a, T_b)
        return bool(dt <= self.max_m and dr <= self.max_deg), float(dt), float(dr)

    def check(self, T_map_from_cam: np.ndarray, T_odom_from_cam: np.ndarray) -> GateDecision:
        """Decide on one pose; an accepted pose becomes the reference.

        Args:
            T_map_from_cam: the localized camera pose.
            T_odom_from_cam: odometry (odom -> base at the image stamp, composed with base -> camera).
        """
        T_map_from_odom = T_map_from_cam @ invert_T(T_odom_from_cam)
        if not self.enabled or self._ref_map_from_odom is None:
            self._accept(T_map_from_odom)
            return GateDecision(True)
        ok, dt, dr = self._within(T_map_from_cam, self._ref_map_from_odom @ T_odom_from_cam)
        if ok:
            self._accept(T_map_from_odom)
            return GateDecision(True, jump_m=dt, jump_deg=dr)
        self.rejected += 1
        same = (self._streak_map_from_odom is not None
                and self._within(T_map_from_cam, self._streak_map_from_odom @ T_odom_from_cam)[0])
        self._streak = self._streak + 1 if same else 1
        self._streak_map_from_odom = T_map_from_odom
        if self._streak >= self.accept_after:
            n = self._streak
            self._accept(T_map_from_odom)
            return GateDecision(True, f"accepted after {n} consistent poses that jumped {dt:.2f} m / {dr:.1f} deg "
                                      "against odometry (robot moved without odometry?)", dt, dr, n)
        return GateDecision(False, f"inconsistent with odometry: jumps {dt:.2f} m / {dr:.1f} deg against the last "
                                   f"accepted pose (limits {self.max_m:g} m / {self.max_deg:g} deg; "
                                   f"{self._streak}/{self.accept_after} consistent rejections before accepting, "
                                   "or call ~/relocalize)", dt, dr, self._streak)

    def _accept(self, T_map_from_odom: np.ndarray) -> None:
        self._ref_map_from_odom = T_map_from_odom
        self._streak_map_from_odom = None
        self._streak = 0
