"""The node's counters and its ``/diagnostics`` status: one DiagnosticStatus with a level, a one-line message and
key-value pairs (status, reason and reason_code of the last frame, counters, latencies, per-stage timings)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["FrameStats", "clock_warning", "diagnostic_array"]

CLOCK_SKEW_WARN_S = 10.0  # image stamps this far from the node's clock: bag replay without use_sim_time?


def clock_warning(skew_s: float, use_sim_time: bool) -> str:
    """Why image stamps ``skew_s`` seconds behind the node's clock are a problem ('' when they are close): a bag
    replayed without ``use_sim_time`` (map->odom would go out in wall time against odometry in bag time), or sim
    time without ``/clock``."""
    if abs(skew_s) <= CLOCK_SKEW_WARN_S:
        return ""
    if use_sim_time:
        return (f"image stamps are {skew_s:+.1f} s from the node's clock (use_sim_time true): is /clock published "
                "(`ros2 bag play --clock`)?")
    return (f"image stamps are {skew_s:+.1f} s from the node's clock: replaying a bag? Start the node with "
            "-p use_sim_time:=true and play the bag with --clock, else TF goes out in the wrong time")


@dataclass
class FrameStats:
    """What the node counts (under its lock)."""

    received: int = 0
    processed: int = 0
    localized: int = 0
    failed: int = 0
    rate_skipped: int = 0
    out_of_order: int = 0
    input_errors: int = 0
    tf_errors: int = 0
    resets: int = 0
    odom_rejected: int = 0  # LOCALIZED poses the tracker did not publish
    odom_recovered: int = 0  # times the accepted place changed (kidnapping, or recovery from an ambiguous start)
    odom_hypotheses: int = 0  # place hypotheses the tracker keeps
    odom_prior_releases: int = 0  # times the odometry prior was dropped after odom_prior_release_after failures
    track_probes: int = 0  # extra localizations at a look-alike place (the tracker's probes after an ambiguous image)
    stale_dropped: int = 0  # extracted frames dropped because the map was replaced before stage 2 finished them
    initialpose_ignored: int = 0  # /initialpose messages refused (bad quaternion, wrong frame)
    last_initialpose_error: str = ""
    odom_check: str = ""  # last tracker decision: "off", "ok by odometry (...)", "rejected (...)", ...
    last_status: str = "waiting for images"
    last_reason: str = ""
    last_code: str = ""  # FailureCode value of the last FAILED frame
    last_input_error: str = ""
    last_tf_error: str = ""
    last_prior: str = ""  # prior of the last frame: none, initialpose, odometry or last_pose
    clock_warning: str = ""  # image stamps far from the node's clock (use_sim_time?)
    first_image_wall: float | None = None  # time.monotonic() of the first image (CameraInfo waits count from it)
    num_inliers: int = 0
    covariance_factor: float = 1.0  # the last frame's factor of the covariance (>= 1: detection scores, blur, dark)
    low_light: bool = False  # the last frame was enhanced for low light (LocalizerConfig.low_light_brightness)
    num_matches: int = 0
    keyframes_retrieved: int = 0  # candidates of the last frame (top_k; tracked_top_k with an accepted place's prior)
    timings_ms: dict = field(default_factory=dict)
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    done_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))

    def record_result(self, res, prior_src: str) -> None:
        """A frame's localization result (after the tracker's decision)."""
        self.processed += 1
        self.last_prior = prior_src
        self.num_inliers, self.num_matches = res.num_inliers, res.num_matches
        self.keyframes_retrieved = len(res.candidates)
        self.covariance_factor = float(res.covariance_factor)
        self.low_light = bool(res.low_light)
        self.timings_ms = dict(res.timings_ms)
        self.last_status, self.last_reason = res.status.value, res.reason
        self.last_code = res.code.value if res.code is not None else ""
        self.last_input_error = ""
        if res.ok:
            self.localized += 1
        else:
            self.failed += 1

    def record_tracking(self, d, enabled: bool, no_odometry: str) -> None:
        """The place tracker's decision ``d`` (a TrackDecision) on a LOCALIZED result; ``no_odometry``: why it had
        no odometry ('' when it had)."""
        self.odom_hypotheses = d.hypotheses
        basis = "odometry" if d.odometry else f"pose sequence (no odometry: {no_odometry})"
        if not enabled:
            self.odom_check = "off"
        elif d.accepted and d.switched:
            self.odom_recovered += 1
            self.odom_check = d.reason
        elif d.accepted:
            self.odom_check = (f"ok by {basis} ({d.jump_m:.2f} m / {d.jump_deg:.1f} deg; support {d.support:.1f}, "
                               f"next place {d.rival:.1f})")
        else:
            self.odom_rejected += 1
            self.odom_check = f"rejected ({basis})"

    def frame_values(self) -> dict:
        """The key-value pairs about frames: the last one's outcome, counters, rate, latency, stage timings."""
        lat = np.array(self.latency_ms) if self.latency_ms else np.zeros(0)
        done = list(self.done_times)
        rate = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        values = {
            "status": self.last_status,
            "reason": self.last_reason,
            "reason_code": self.last_code,
            "prior": self.last_prior,
            "input_error": self.last_input_error,
            "tf_error": self.last_tf_error,
            "num_inliers": self.num_inliers,
            "num_matches": self.num_matches,
            "keyframes_retrieved": self.keyframes_retrieved,
            "covariance_factor": round(self.covariance_factor, 3),  # > 1: unsure keypoints, blurred or dark image
            "low_light": self.low_light,  # the last frame was enhanced for low light (low_light_brightness)
            "frames_received": self.received,
            "frames_processed": self.processed,
            "frames_localized": self.localized,
            "frames_failed": self.failed,
            "frames_dropped_stale": self.stale_dropped,  # extracted for a map replaced since
            "frames_rate_skipped": self.rate_skipped,
            "frames_out_of_order": self.out_of_order,
            "input_errors": self.input_errors,
            "tf_errors": self.tf_errors,
            "resets": self.resets,
            "initialpose_ignored": self.initialpose_ignored,
            "initialpose_error": self.last_initialpose_error,
            "odom_check": self.odom_check,
            "odom_rejected": self.odom_rejected,
            "odom_recovered": self.odom_recovered,
            "odom_prior_releases": self.odom_prior_releases,
            "odom_hypotheses": self.odom_hypotheses,
            "track_probes": self.track_probes,
            "output_rate_hz": round(rate, 3),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else "",
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else "",
            "clock_warning": self.clock_warning,
        }
        for k, v in self.timings_ms.items():
            values[f"{k}_ms"] = round(float(v), 2)
        return values

    def level_and_message(self, has_map: bool, state_label: str, map_error: str) -> tuple[bytes, str]:
        """The status level and its one-line message: errors first (no map, bad input), then warnings."""
        if not has_map and state_label != "finalized":
            return DiagnosticStatus.ERROR, (map_error or f"{state_label}: no map loaded")
        if self.last_status == "INPUT_ERROR":
            return DiagnosticStatus.ERROR, self.last_input_error
        if map_error:
            return DiagnosticStatus.WARN, map_error
        if self.last_status == "FAILED":
            return DiagnosticStatus.WARN, f"FAILED: {self.last_reason}"
        if self.clock_warning:
            return DiagnosticStatus.WARN, f"{self.last_status}; {self.clock_warning}"
        if self.last_status == "LOCALIZED":
            return DiagnosticStatus.OK, f"LOCALIZED ({self.num_inliers} inliers)"
        return DiagnosticStatus.OK, self.last_status


def diagnostic_array(name: str, hardware_id: str, level: bytes, message: str, values: dict,
                     stamp) -> DiagnosticArray:
    """One DiagnosticStatus in a DiagnosticArray stamped ``stamp`` (builtin_interfaces/Time)."""
    st = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    arr = DiagnosticArray(status=[st])
    arr.header.stamp = stamp
    return arr
