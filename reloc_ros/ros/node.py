"""``reloc_node``: the relocalization node (an rclpy lifecycle node).

Lifecycle: ``configure`` loads the map (and model), creates publishers, TF and the service; ``activate``
subscribes and starts the workers; ``deactivate`` / ``cleanup`` undo that. With ``autostart`` (default) the node
configures and activates itself, so it also runs standalone: ``reloc_node --ros-args -p map_path:=MAP``.

Threads: the executor thread runs all callbacks, which only store messages (never wait on inference); the
newest image goes to the workers (ros/frame_worker.py: one, or two pipelined stages), which run a frame's steps
(ros/frame_processor.py). Map reloads run in their own thread (ros/map_holder.py); a frame extracted with the
extractor of a map replaced since is dropped (counted), never matched against the new map.

Frames (REP-105): with odometry (``tf_mode: map_odom``) the node publishes
``T_map_from_odom = T_map_from_cam @ inv(T_odom_from_base(t_image) @ T_base_from_cam)``; without
(``map_base``) ``T_map_from_base``. A FAILED result is never published as a pose or TF.

Which poses are published and each frame's retrieval prior: the place tracker (:mod:`reloc_ros.core.tracking`,
the same code ``reloc eval --track`` runs): a place is published only once its poses were consistent over enough
motion (odometry, else the pose sequence itself) and no other place comes close.

Run ``reloc_node --help`` for parameters and topics.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback

import numpy as np
import rclpy
import rclpy.exceptions
import rclpy.parameter
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from reloc_ros.core.localizer import Localizer
from reloc_ros.core.matching import int8_unavailable
from reloc_ros.core.retrieval import PosePrior
from reloc_ros.core.tracking import PlaceTracker
from reloc_ros.ros import conversions as conv
from reloc_ros.ros.camera_info import CameraInfoSync
from reloc_ros.ros.diagnostics import FrameStats, clock_warning, diagnostic_array
from reloc_ros.ros.frame_processor import FrameProcessor, NodeState
from reloc_ros.ros.frame_tf import FrameTransforms
from reloc_ros.ros.frame_worker import Frame, FrameWorkers
from reloc_ros.ros.map_holder import MapHolder
from reloc_ros.ros.outputs import Outputs
from reloc_ros.ros.parameters import NODE_NAME, PARAMETERS, PARAMS_BY_NAME, RELOAD_PARAMS, TRACKER_FIELDS, coerce, \
    localizer_config_from, node_config_from, tracker_config_from, unknown_parameters, usage, validate_all
from reloc_ros.ros.tf_buffer import TfClient, TfUnavailableError

__all__ = ["RelocNode", "main", "PARAMETERS", "NODE_NAME"]

NS = 1_000_000_000

_RELIABLE_10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


class RelocNode(LifecycleNode):
    """The relocalization lifecycle node (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.RLock()
        self._ready = False
        self._restoring = None  # the thread setting map_path & co. back after a failed reload (_reload_failed)
        self._p: dict = {}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                name=spec.name, type=_PARAM_TYPES[type(spec.default)], description=spec.description,
                additional_constraints=spec.range_text(), dynamic_typing=isinstance(spec.default, float)))
        self._p = {s.name: coerce(s.name, self.get_parameter(s.name).value) for s in PARAMETERS}
        self._cfg = node_config_from(self._p)  # the node's own settings, typed (replaced whenever one changes)
        self.unknown_parameters = []  # given with -p / --params-file but not ours: reported with the closest name
        for name, message in unknown_parameters(getattr(self, "_parameter_overrides", {})):
            self.unknown_parameters.append(name)
            self.get_logger().error(message)

        self.stats = FrameStats()
        self._map = MapHolder(self._lock, self.get_logger())
        self._state_label = "unconfigured"
        self._tf: TfClient | None = None
        self._tf_unavailable = ""
        self._out = Outputs()
        self._subs: list = []
        self._srv = None
        self._tf_timer = None
        self._cameras = CameraInfoSync()
        self._last_accepted_ns: int | None = None  # stamp of the last image taken (max_rate_hz)
        # wrong-pose protection and priors (thread-safe: callbacks reset it, the localizing worker updates it)
        self._tracker = PlaceTracker(tracker_config_from(self._p))
        self._ftf = FrameTransforms(lambda: (self._tf, self._tf_unavailable))  # a frame's TF at its stamp
        self._done_stamp_ns: int | None = None  # stamp of the last frame fully handled (published or reported)
        self._steps = FrameProcessor(NodeState(
            lock=self._lock, stats=self.stats, tracker=self._tracker, cameras=self._cameras, transforms=self._ftf,
            outputs=self._out, params=lambda: self._cfg, localizer=lambda: (self._map.localizer, self._map.error),
            tf_client=lambda: self._tf, camera_info_topic=self.resolve_topic_name("camera_info"),
            on_reset=self._forget_rate_limit), self.get_logger())
        self._frames = FrameWorkers(self._steps.process, self._steps.extract, self._steps.localize, self._frame_done,
                                    self._steps.internal_error, lambda: self.context.ok())
        self._steps.workers = self._frames
        self._autostart_timer = None

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", _RELIABLE_10)
        self._diag_timer = None
        self._restart_diag_timer()
        self._ready = True

    # =============================================================================================
    # parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Refuse a value with the reason, never accept one the localizer or tracker would then refuse."""
        why = validate_all(self._p if self._ready else {}, {p.name: p.value for p in params})
        if why and not self._ready and [p.name for p in params] == ["map_path"] and self._managed_start():
            # under a lifecycle manager (autostart false) the node stays up, unconfigured, as Nav2's nodes do: its
            # configure fails with the reason until map_path names a map (it can be set at runtime)
            self.get_logger().error(f"{why}: the node stays unconfigured; configure fails until map_path names a map")
            return SetParametersResult(successful=True)
        loc = self._localizer if self._ready else None
        if why is None and loc is not None and any(p.name == "matcher" and p.value == "lighterglue" for p in params):
            why = loc.lighterglue_unsupported()
        if why is None and any(p.name == "matching_precision" and p.value == "int8" for p in params):
            why = int8_unavailable()
        return SetParametersResult(successful=why is None, reason=why or "")

    def _managed_start(self) -> bool:
        """Whether the node was started with ``autostart`` false (for a lifecycle manager)."""
        ov = getattr(self, "_parameter_overrides", {}).get("autostart")
        return ov is not None and ov.value is False

    def _on_parameters_set(self, params) -> None:
        if not self._ready:
            return
        changed = {p.name: coerce(p.name, p.value) for p in params if p.name in PARAMS_BY_NAME}
        with self._lock:
            self._p.update(changed)
            self._cfg = node_config_from(self._p)
            loc = self._localizer
        if loc is not None:
            loc.config = localizer_config_from(self._p, loc.config)  # one attribute swap: the worker sees old or new
            if "low_light_brightness" in changed and (mismatch := loc.low_light_mismatch()):
                self.get_logger().warning(f"low_light_brightness={changed['low_light_brightness']:g}: {mismatch}")
        if any(k in changed for k in TRACKER_FIELDS):
            self._tracker.config = tracker_config_from(self._p)
        if "diagnostics_rate_hz" in changed:
            self._restart_diag_timer()
        if "tf_publish_rate_hz" in changed and self._state_label == "active":
            self._restart_tf_timer()
        if "pipeline" in changed and self._state_label == "active":
            self.get_logger().info(f"pipeline={self._cfg.pipeline} applies at the next activation")
        if any(k in changed for k in RELOAD_PARAMS) and self._restoring != threading.get_ident():
            want = {k: self._p[k] for k in RELOAD_PARAMS}
            if self._state_label in ("inactive", "active") and (want != self._loaded or self._map.changed_on_disk()):
                self._start_reload(want)  # the same map_path again reloads a map changed on disk (map update)
            elif self._state_label in ("inactive", "active") and "map_path" in changed:
                if self._map.cancel():  # set back to the map in use while another one was loading: that one is dropped
                    self.get_logger().info(f"map_path {want['map_path']!r}: back to the map in use; the map being "
                                           "loaded is dropped")
                else:
                    self.get_logger().info(f"map_path {want['map_path']!r}: the map on disk is the one in use, "
                                           "nothing to reload")
            elif self._state_label == "unconfigured" and self._cfg.autostart and self._autostart_timer is None:
                # A map given after a failed start: configure and activate from the executor thread.
                self._restart_timer("_autostart_timer", 100.0, self._autostart_once, steady=True)  # sim time too
        frames = ("tf_mode", "pose_frame", "map_frame", "odom_frame", "base_frame", "camera_frame", "base_from_camera")
        if any(k in changed for k in frames):
            self._out.reset()  # stop republishing a transform computed with the old frames
            self.get_logger().info(f"frames: tf_mode={self._cfg.tf_mode} pose_frame={self._cfg.pose_frame}")

    # =============================================================================================
    # map loading (ros/map_holder.py)
    @property
    def _localizer(self) -> Localizer | None:
        return self._map.localizer

    @property
    def _loaded(self) -> dict:
        return self._map.loaded

    def _start_reload(self, want: dict) -> None:
        self._map.reload(want, localizer_config_from(self._p), self._map_swapped, self._reload_failed)

    def _map_swapped(self) -> None:
        self._out.reset()  # the new map may have another origin
        self._tracker.reset()  # places of the old map mean nothing in the new one
        self._publish_map()
        self._publish_diagnostics()

    def _reload_failed(self, loaded: dict, newest: bool) -> None:
        """Set map_path / model_path / inference_provider back to what is loaded: the parameters then name the map
        in use, and the next configure loads it again."""
        if newest and loaded.get("map_path"):
            with self._lock:
                self._p.update(loaded)
                self._cfg = node_config_from(self._p)
            # setting them back is not a request to reload (the folder may hold the map that failed); only this
            # thread's call is meant: the parameter callbacks run in the caller's thread
            self._restoring = threading.get_ident()
            try:
                self.set_parameters([rclpy.parameter.Parameter(k, value=v) for k, v in loaded.items()])
            finally:
                self._restoring = None
        self._publish_diagnostics()

    # =============================================================================================
    # lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if not self._map.load_now({k: self._p[k] for k in RELOAD_PARAMS}, localizer_config_from(self._p)):
                self._publish_diagnostics()
                return TransitionCallbackReturn.FAILURE
            self._out.create(self, _RELIABLE_10, _LATCHED)
            try:
                self._tf = TfClient(self)
                self._tf_unavailable = ""
                self.get_logger().info(f"TF backend: {self._tf.backend}")
            except TfUnavailableError as e:
                self._tf = None
                self._tf_unavailable = str(e)
                self.get_logger().warning(f"TF disabled: {e}")
            self._srv = self.create_service(Trigger, "~/relocalize", self._on_relocalize)
            self._publish_map()
            self._state_label = "inactive"
            self._publish_diagnostics()
            return TransitionCallbackReturn.SUCCESS
        except Exception:
            self.get_logger().error("configure failed:\n" + traceback.format_exc())
            return TransitionCallbackReturn.ERROR

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._subs = [
                self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data),
                self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data),
                self.create_subscription(PoseWithCovarianceStamped, "/initialpose", self._on_initialpose, _RELIABLE_10),
            ]
            self._frames.start(self._cfg.pipeline)
            self._state_label = "active"
            self._restart_tf_timer()
            self._publish_diagnostics()
            self.get_logger().info(f"active: localizing images from {self.resolve_topic_name('image')} "
                                   f"({'pipelined' if self._frames.handover is not None else 'one worker'})")
            return super().on_activate(state)
        except Exception:
            self.get_logger().error("activate failed:\n" + traceback.format_exc())
            return TransitionCallbackReturn.ERROR

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._state_label = "inactive"
        self._publish_diagnostics()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._teardown("unconfigured")

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._teardown("finalized")

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._teardown("unconfigured")

    def _teardown(self, label: str) -> TransitionCallbackReturn:
        self._stop_active()
        self._destroy_configured()
        self._state_label = label
        self._publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def _stop_active(self) -> None:
        self._frames.stop()
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        self._restart_timer("_tf_timer", 0.0, None)

    def _destroy_configured(self) -> None:
        # cleanup forgets what the frames so far taught: the places, the path and TF stamps sent, the last image
        # stamp (a configure after it starts like a first start, e.g. a recording played again from its start)
        self._tracker.reset()
        self._out.reset(tf_stamps=True)
        self._steps.last_stamp_ns = None
        self._cameras.clear()  # a CameraInfo of before is not the calibration of what comes next
        self._out.destroy(self)
        if self._tf is not None:
            self._tf.destroy()
            self._tf = None
        if self._srv is not None:
            self.destroy_service(self._srv)
            self._srv = None
        self._map.clear()

    def autostart(self) -> bool:
        """Configure and activate when the ``autostart`` parameter is true; True when the node is active."""
        if self._cfg.autostart and self._state_label == "unconfigured":
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
        return self._state_label == "active"

    def shutdown_worker(self) -> None:
        """Stop the worker threads (called before the node is destroyed)."""
        self._stop_active()

    def _autostart_once(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        self.autostart()

    def _restart_timer(self, attr: str, rate_hz: float, callback, steady: bool = False) -> None:
        """(Re)create the timer held in ``attr`` at ``rate_hz`` (none when <= 0); ``steady``: on the steady clock,
        not the node's (which stands still under use_sim_time until /clock arrives)."""
        if getattr(self, attr) is not None:
            self.destroy_timer(getattr(self, attr))
        clock = rclpy.clock.Clock(clock_type=rclpy.clock.ClockType.STEADY_TIME) if steady else None
        setattr(self, attr, self.create_timer(1.0 / rate_hz, callback, clock=clock) if rate_hz > 0 else None)

    def _restart_diag_timer(self) -> None:
        # steady: /diagnostics must go on when the clock does not (use_sim_time and no /clock is itself a fault)
        self._restart_timer("_diag_timer", float(self._cfg.diagnostics_rate_hz), self._publish_diagnostics,
                            steady=True)

    def _restart_tf_timer(self) -> None:
        self._restart_timer("_tf_timer", float(self._cfg.tf_publish_rate_hz), self._republish_tf)

    # =============================================================================================
    # callbacks (executor thread; never wait on inference)
    def _on_image(self, msg: Image) -> None:
        stamp = conv.stamp_to_ns(msg.header.stamp)
        self._check_clock(stamp)
        with self._lock:
            self.stats.received += 1
            if self.stats.first_image_wall is None:
                self.stats.first_image_wall = time.monotonic()
            rate = self._cfg.max_rate_hz
            last = self._last_accepted_ns
            if rate > 0 and last is not None and 0 <= stamp - last < NS / rate:
                self.stats.rate_skipped += 1
                return
            self._last_accepted_ns = stamp
        self._frames.put(Frame(msg, stamp, time.monotonic()))

    def _check_clock(self, stamp_ns: int) -> None:
        """Report image stamps far from the node's clock (see :func:`reloc_ros.ros.diagnostics.clock_warning`)."""
        why = clock_warning((self.get_clock().now().nanoseconds - stamp_ns) / NS,
                            bool(self.get_parameter("use_sim_time").value))
        if why or self.stats.clock_warning:
            with self._lock:
                self.stats.clock_warning = why
        if why:
            self.get_logger().warning(why, throttle_duration_sec=10.0)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._cameras.add(conv.stamp_to_ns(msg.header.stamp), msg)

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        p = self._cfg
        T_base_from_cam = self._ftf.base_from_camera_param(p.base_from_camera)
        if T_base_from_cam is None:
            T_base_from_cam = self._ftf.last_T_base_from_cam  # from TF, as last used by the worker
        try:
            pos, sigma = conv.initialpose_position(msg, p.map_frame, T_base_from_cam)
        except ValueError as e:
            self._initialpose_ignored(f"/initialpose ignored: {e}")
            return
        sigma = sigma if sigma > 1e-3 else self._tracker.config.prior_sigma_m
        self._tracker.set_initial_pose(PosePrior(position=pos, sigma_m=max(sigma, 0.1)))
        self.get_logger().info(f"prior from /initialpose at {np.round(pos, 2).tolist()} (sigma {sigma:.2f} m)")

    def _initialpose_ignored(self, why: str) -> None:
        with self._lock:
            self.stats.initialpose_ignored += 1
            self.stats.last_initialpose_error = why
        self.get_logger().warning(why)

    def _on_relocalize(self, request, response):
        self._tracker.relocalize()
        response.success = True
        response.message = ("the places are forgotten and the next frame is localized without a prior; a pose is "
                            "published again once its place is confirmed by motion")
        self.get_logger().info("relocalize requested: " + response.message)
        return response

    def _republish_tf(self, only_new: bool = False) -> None:
        self._out.republish(self._tf, self.get_clock().now().nanoseconds, self._cfg.transform_tolerance, only_new)

    # =============================================================================================
    # worker threads (ros/frame_worker.py) running a frame's steps (ros/frame_processor.py)
    def _frame_done(self, frame: Frame) -> None:
        with self._lock:
            self._done_stamp_ns = frame.stamp_ns
        if self._cfg.tf_publish_rate_hz > 0:  # a new transform: future-dated at once, not at the next timer tick
            self._republish_tf(only_new=True)
        self._publish_diagnostics()

    def _forget_rate_limit(self) -> None:
        with self._lock:
            self._last_accepted_ns = None

    def _publish_map(self) -> None:
        """The latched map outputs: ~/map_points and ~/map_keyframes."""
        loc = self._localizer
        if loc is not None:
            stamp = self.get_clock().now().nanoseconds
            self._out.map_points(loc.db.valid_points(), int(self._cfg.map_points_max), self._cfg.map_frame, stamp)
            marks = loc.db.alias_inliers
            self._out.map_keyframes(loc.db.centers, None if marks is None else marks > 0, self._cfg.map_frame, stamp)

    # ---------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        try:
            self._diag_pub.publish(self._diagnostics())
        except Exception:  # publisher destroyed during shutdown
            pass

    def _diagnostics(self) -> DiagnosticArray:
        with self._lock:
            s = self.stats
            values = {
                "lifecycle_state": self._state_label,
                "last_done_stamp_ns": self._done_stamp_ns if self._done_stamp_ns is not None else "",
                "map_error": self._map.error,
                "map_path": self._loaded["map_path"],
                "map_keyframes": len(self._localizer.db) if self._localizer is not None else 0,
                **s.frame_values(),
                **self._frames.values(self._cfg.pipeline),
                "frames_dropped": self._frames.dropped + s.stale_dropped,
                "queue_camera_infos": len(self._cameras),
                "path_length": self._out.path_length,
                "unknown_parameters": ", ".join(self.unknown_parameters),
                "tf": self._tf.backend if self._tf is not None else (self._tf_unavailable or "not configured"),
                "tf_bad_transforms": getattr(self._tf, "bad_transforms", ""),  # invalid /tf entries ignored
                "tf_last_bad_transform": getattr(self._tf, "last_bad_transform", ""),
            }
            level, message = s.level_and_message(self._localizer is not None, self._state_label, self._map.error)
        return diagnostic_array(f"{self.get_name()}: relocalization", self.get_fully_qualified_name(), level, message,
                                values, self.get_clock().now().to_msg())

    @property
    def lifecycle_state(self) -> str:
        return self._state_label


# =================================================================================================
def _split_args(argv: list[str]) -> list[str]:
    """The arguments before ``--ros-args`` (ROS arguments are rclpy's business)."""
    return argv[: argv.index("--ros-args")] if "--ros-args" in argv else list(argv)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``reloc_node``. ``-h`` / ``--help`` prints usage without initialising ROS."""
    argv = list(sys.argv[1:] if args is None else args)
    user = _split_args(argv)
    if "-h" in user or "--help" in user:
        sys.stdout.write(usage())
        return 0
    unknown = [a for a in user if a not in ("--", )]
    if unknown:
        sys.stderr.write(f"reloc_node: unknown arguments {unknown} (ROS arguments go after --ros-args)\n\n" + usage())
        return 2
    try:
        rclpy.init(args=[sys.argv[0]] + argv)
    except _rclpy.RCLError as e:  # e.g. --params-file that does not exist or is not YAML
        why = str(e).split("Error:")[0].strip().rstrip(".,")
        sys.stderr.write(f"reloc_node: cannot start: {why} (check the --ros-args arguments: the file after "
                         f"--params-file must exist and be YAML)\n")
        return 2
    node = None
    rc = 0
    try:
        node = RelocNode()
        node.autostart()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (rclpy.exceptions.InvalidParameterValueException, rclpy.exceptions.InvalidParameterTypeException) as e:
        # rclpy words a value error "Invalid parameter value (V) for parameter. Reason: R: NAME"; our R names the
        # parameter and its range already
        msg = str(e)
        if isinstance(e, rclpy.exceptions.InvalidParameterValueException) and "Reason: " in msg:
            msg = msg.split("Reason: ", 1)[1].rsplit(": ", 1)[0]
        sys.stderr.write(f"reloc_node: invalid parameter: {msg}\n")
        rc = 2
    finally:
        if node is not None:
            node.shutdown_worker()
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
