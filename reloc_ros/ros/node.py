"""``reloc_node``: the relocalization node (an rclpy lifecycle node).

Lifecycle: ``configure`` loads the map (and model), creates publishers, TF and the service; ``activate``
subscribes and starts the workers; ``deactivate`` / ``cleanup`` undo that. With ``autostart`` (default) the node
configures and activates itself, so it also runs standalone: ``reloc_node --ros-args -p map_path:=MAP``.

Threads: the executor thread runs all callbacks, which only store messages (never wait on inference); the
newest image goes to the workers through a queue of one (older images not yet started are dropped and counted).
With ``pipeline`` (off by default) two workers overlap: stage 1 converts the newest image, finds its CameraInfo and
extracts its features; stage 2 takes the newest extracted frame (a second queue of one, same counting), chooses
the prior, runs retrieval, matching and PnP, checks odometry, looks up TF at the image stamp and publishes. Without
it one worker does all of that per frame. Map reloads run in their own thread; a frame extracted with the
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
from dataclasses import dataclass

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

from reloc_ros.core.camera import Camera
from reloc_ros.core.features import Features
from reloc_ros.core.geometry import invert_T
from reloc_ros.core.localizer import LocalizationResult, Localizer, extractor_for_map
from reloc_ros.core.mapdb import MapDatabase
from reloc_ros.core.retrieval import PosePrior
from reloc_ros.core.tracking import PlaceTracker
from reloc_ros.ros import conversions as conv
from reloc_ros.ros.camera_info import CameraInfoError, CameraInfoSync, check_image_size
from reloc_ros.ros.diagnostics import FrameStats, diagnostic_array
from reloc_ros.ros.frame_tf import FrameTransforms
from reloc_ros.ros.frame_worker import Frame, FrameWorkers
from reloc_ros.ros.image_conversion import ImageConversionError, image_msg_to_localizer_input
from reloc_ros.ros.outputs import Outputs
from reloc_ros.ros.parameters import PARAMETERS, PARAMS_BY_NAME, RELOAD_PARAMS, TRACKER_FIELDS, coerce, \
    localizer_config_from, tracker_config_from, unknown_parameters, usage, validate_all
from reloc_ros.ros.tf_buffer import TfClient, TfError, TfUnavailableError

__all__ = ["RelocNode", "main", "PARAMETERS", "NODE_NAME"]

NODE_NAME = "reloc_node"
NS = 1_000_000_000

_RELIABLE_10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
_CLOCK_SKEW_WARN_S = 10.0  # image stamps this far from the node's clock: bag replay without use_sim_time?
_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


@dataclass
class _Work:
    """A frame extracted by pipeline stage 1, handed to stage 2."""

    frame: Frame
    localizer: Localizer  # whose extractor made ``features``: stage 2 drops the work when the map changed since
    camera: Camera
    features: Features
    extract_ms: float
    t_handed: float = 0.0  # time.monotonic() when handed over


class RelocNode(LifecycleNode):
    """The relocalization lifecycle node (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.RLock()
        self._ready = False
        self._p: dict = {}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        for spec in PARAMETERS:
            desc = ParameterDescriptor(name=spec.name, type=_PARAM_TYPES[type(spec.default)],
                                       description=spec.description, additional_constraints=spec.range_text(),
                                       dynamic_typing=isinstance(spec.default, float))
            self.declare_parameter(spec.name, spec.default, desc)
        self._p = {s.name: coerce(s.name, self.get_parameter(s.name).value) for s in PARAMETERS}
        self.unknown_parameters = []  # given with -p / --params-file but not ours: reported with the closest name
        for name, message in unknown_parameters(getattr(self, "_parameter_overrides", {})):
            self.unknown_parameters.append(name)
            self.get_logger().error(message)

        self.stats = FrameStats()
        self._localizer: Localizer | None = None
        self._loaded = {"map_path": "", "model_path": "", "inference_provider": ""}
        self._map_error = ""
        self._reload_gen = 0
        self._state_label = "unconfigured"
        self._tf: TfClient | None = None
        self._tf_unavailable = ""
        self._out = Outputs()
        self._subs: list = []
        self._srv = None
        self._tf_timer = None
        self._frames = FrameWorkers(self._process, self._extract, self._localize_work, self._frame_done,
                                    self._internal_error, lambda: self.context.ok())
        # state reset on a time jump
        self._cameras = CameraInfoSync()
        self._first_image_wall: float | None = None
        self._last_stamp_ns: int | None = None
        self._last_accepted_ns: int | None = None
        # wrong-pose protection and priors (thread-safe: callbacks reset it, the localizing worker updates it)
        self._tracker = PlaceTracker(tracker_config_from(self._p))
        self._ftf = FrameTransforms(lambda: (self._tf, self._tf_unavailable))  # a frame's TF at its stamp
        self._done_stamp_ns: int | None = None  # stamp of the last frame fully handled (published or reported)
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
        return SetParametersResult(successful=why is None, reason=why or "")

    def _on_parameters_set(self, params) -> None:
        if not self._ready:
            return
        changed = {p.name: coerce(p.name, p.value) for p in params if p.name in PARAMS_BY_NAME}
        with self._lock:
            self._p.update(changed)
            loc = self._localizer
        if loc is not None:
            loc.config = localizer_config_from(self._p, loc.config)  # one attribute swap: the worker sees old or new
        if any(k in changed for k in TRACKER_FIELDS):
            self._tracker.config = tracker_config_from(self._p)
        if "diagnostics_rate_hz" in changed:
            self._restart_diag_timer()
        if "tf_publish_rate_hz" in changed and self._state_label == "active":
            self._restart_tf_timer()
        if "pipeline" in changed and self._state_label == "active":
            self.get_logger().info(f"pipeline={self._p['pipeline']} applies at the next activation")
        if any(k in changed for k in RELOAD_PARAMS):
            want = {k: self._p[k] for k in RELOAD_PARAMS}
            if self._state_label in ("inactive", "active") and want != self._loaded:
                self._start_reload(want)
            elif self._state_label == "unconfigured" and self._p["autostart"] and self._autostart_timer is None:
                # A map given after a failed start: configure and activate from the executor thread.
                self._autostart_timer = self.create_timer(0.01, self._autostart_once)
        frames = ("tf_mode", "pose_frame", "map_frame", "odom_frame", "base_frame", "camera_frame", "base_from_camera")
        if any(k in changed for k in frames):
            self._out.reset()  # stop republishing a transform computed with the old frames
            self.get_logger().info(f"frames: tf_mode={self._p['tf_mode']} pose_frame={self._p['pose_frame']}")

    # =============================================================================================
    # map loading
    def _load_localizer(self, want: dict) -> Localizer:
        """Load the map and the extractor recorded in it (a learned one gets model_path and provider)."""
        if not want["map_path"]:
            raise ValueError("map_path is empty: set it (-p map_path:=DIR, a map built with `reloc map build`)")
        t0 = time.perf_counter()
        db = MapDatabase.load(want["map_path"])
        name = db.extractor_identity.get("name", "")
        kwargs = {}
        if name == "sift":
            if want["model_path"]:
                self.get_logger().warning(f"map {want['map_path']} was built with SIFT: model_path "
                                          f"{want['model_path']!r} is not used")
        else:
            kwargs["provider"] = want["inference_provider"]
            if want["model_path"]:
                kwargs["model_path"] = want["model_path"]
        loc = Localizer(db, extractor_for_map(db, **kwargs), localizer_config_from(self._p))
        self.get_logger().info(f"loaded map {want['map_path']} ({len(db)} keyframes, {len(db.valid_points())} "
                               f"points, extractor {name}) in {time.perf_counter() - t0:.2f} s")
        return loc

    def _restore_loaded(self, loaded: dict) -> None:
        """Set map_path / model_path / inference_provider back to what is loaded (a failed reload): the parameters
        then name the map in use, and the next configure loads it again."""
        if not loaded.get("map_path"):
            return
        with self._lock:
            self._p.update(loaded)
        self.set_parameters([rclpy.parameter.Parameter(k, value=v) for k, v in loaded.items()])

    def _start_reload(self, want: dict) -> None:
        with self._lock:
            self._reload_gen += 1
            gen = self._reload_gen
        self.get_logger().info(f"loading map {want['map_path']} in the background (current map stays until then)")
        threading.Thread(target=self._reload, args=(want, gen), name="reloc_map_reload", daemon=True).start()

    def _reload(self, want: dict, gen: int) -> None:
        try:
            loc = self._load_localizer(want)
        except Exception as e:  # MapError, ExtractorError, OSError, ...
            with self._lock:
                current = gen == self._reload_gen
                loaded = dict(self._loaded)
            msg = (f"reloading {want['map_path']!r} failed, keeping {loaded['map_path']!r} (the parameters "
                   f"{', '.join(RELOAD_PARAMS)} are set back to it): {e}")
            if current:
                with self._lock:
                    self._map_error = msg
                self._restore_loaded(loaded)
            self.get_logger().error(msg)
            self._publish_diagnostics()
            return
        with self._lock:
            if gen != self._reload_gen:
                return  # a newer request superseded this one
            self._localizer = loc
            self._loaded = dict(want)
            self._map_error = ""
        self._out.reset()  # the new map may have another origin
        self._tracker.reset()  # places of the old map mean nothing in the new one
        self._publish_map_points()
        self._publish_diagnostics()

    # =============================================================================================
    # lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            want = {k: self._p[k] for k in RELOAD_PARAMS}
            try:
                loc = self._load_localizer(want)
            except Exception as e:
                self._map_error = f"cannot load map: {e}"
                self.get_logger().error(self._map_error)
                self._publish_diagnostics()
                return TransitionCallbackReturn.FAILURE
            with self._lock:
                self._localizer, self._loaded, self._map_error = loc, want, ""
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
            self._publish_map_points()
            self._state_label = "inactive"
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
            self._frames.start(self._p["pipeline"])
            self._state_label = "active"
            self._restart_tf_timer()
            self.get_logger().info(f"active: localizing images from {self.resolve_topic_name('image')} "
                                   f"({'pipelined' if self._handover is not None else 'one worker'})")
            return super().on_activate(state)
        except Exception:
            self.get_logger().error("activate failed:\n" + traceback.format_exc())
            return TransitionCallbackReturn.ERROR

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._state_label = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._destroy_configured()
        self._state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._destroy_configured()
        self._state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self._destroy_configured()
        self._state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _stop_active(self) -> None:
        self._frames.stop()
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self._tf_timer is not None:
            self.destroy_timer(self._tf_timer)
            self._tf_timer = None

    def _destroy_configured(self) -> None:
        self._out.destroy(self)
        if self._tf is not None:
            self._tf.destroy()
            self._tf = None
        if self._srv is not None:
            self.destroy_service(self._srv)
            self._srv = None
        with self._lock:
            self._localizer = None
            self._loaded = {"map_path": "", "model_path": "", "inference_provider": ""}

    def autostart(self) -> bool:
        """Configure and activate when the ``autostart`` parameter is true; True when the node is active."""
        if self._p["autostart"] and self._state_label == "unconfigured":
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

    def _restart_diag_timer(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        rate = float(self._p.get("diagnostics_rate_hz", 1.0))
        if rate > 0:
            self._diag_timer = self.create_timer(1.0 / rate, self._publish_diagnostics)

    def _restart_tf_timer(self) -> None:
        if self._tf_timer is not None:
            self.destroy_timer(self._tf_timer)
            self._tf_timer = None
        rate = float(self._p["tf_publish_rate_hz"])
        if rate > 0:
            self._tf_timer = self.create_timer(1.0 / rate, self._republish_tf)

    # =============================================================================================
    # callbacks (executor thread; never wait on inference)
    def _on_image(self, msg: Image) -> None:
        stamp = conv.stamp_to_ns(msg.header.stamp)
        self._check_clock(stamp)
        with self._lock:
            self.stats.received += 1
            if self._first_image_wall is None:
                self._first_image_wall = time.monotonic()
            rate = self._p["max_rate_hz"]
            last = self._last_accepted_ns
            if rate > 0 and last is not None and 0 <= stamp - last < NS / rate:
                self.stats.rate_skipped += 1
                return
            self._last_accepted_ns = stamp
        self._frames.put(Frame(msg, stamp, time.monotonic()))

    def _check_clock(self, stamp_ns: int) -> None:
        """Report image stamps far from the node's clock: a bag replayed without ``use_sim_time`` (map->odom would
        go out in wall time against odometry in bag time), or sim time without ``/clock``."""
        now = self.get_clock().now().nanoseconds
        skew = (now - stamp_ns) / NS
        if abs(skew) <= _CLOCK_SKEW_WARN_S:
            if self.stats.clock_warning:
                with self._lock:
                    self.stats.clock_warning = ""
            return
        sim = self.get_parameter("use_sim_time").value
        if sim:
            why = (f"image stamps are {skew:+.1f} s from the node's clock (use_sim_time true): is /clock published "
                   "(`ros2 bag play --clock`)?")
        else:
            why = (f"image stamps are {skew:+.1f} s from the node's clock: replaying a bag? Start the node with "
                   "-p use_sim_time:=true and play the bag with --clock, else TF goes out in the wrong time")
        with self._lock:
            self.stats.clock_warning = why
        self.get_logger().warning(why, throttle_duration_sec=10.0)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._cameras.add(conv.stamp_to_ns(msg.header.stamp), msg)

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        p = self._p
        frame = msg.header.frame_id.lstrip("/")
        try:
            T = conv.T_from_pose(msg.pose.pose)
        except ValueError as e:
            self._initialpose_ignored(f"/initialpose ignored: {e}")
            return
        if frame and frame != p["map_frame"]:
            self._initialpose_ignored(f"/initialpose ignored: it is in frame {frame!r}, not the map frame "
                                      f"{p['map_frame']!r} (set the fixed frame of RViz to it)")
            return
        cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)
        if not np.all(np.isfinite(cov)) or not np.all(np.isfinite(T)):
            self._initialpose_ignored("/initialpose ignored: its position or covariance has non-finite values")
            return
        sigma = float(np.sqrt(max(cov[0, 0], cov[1, 1], cov[2, 2], 0.0)))
        sigma = sigma if sigma > 1e-3 else p["prior_sigma_m"]
        # The pose is the base's (RViz "2D Pose Estimate"); the prior is the camera centre's.
        T_base_from_cam = self._ftf.base_from_camera_param(p["base_from_camera"])
        if T_base_from_cam is None:
            T_base_from_cam = self._ftf.last_T_base_from_cam  # from TF, as last used by the worker
        pos = (T @ T_base_from_cam)[:3, 3] if T_base_from_cam is not None else T[:3, 3]
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

    def _republish_tf(self) -> None:
        self._out.republish(self._tf, self.get_clock().now().nanoseconds, self._p["transform_tolerance"])

    # =============================================================================================
    # worker threads. pipeline false: one worker (_worker_loop) does a whole frame (_process). pipeline true:
    # stage 1 (_extract_loop) prepares and extracts the newest frame while stage 2 (_localize_loop) localizes the
    # newest extracted one. Both modes share the checks before (_prepare) and the report after (_report).
    @property
    def _slot(self):
        return self._frames.slot

    @property
    def _handover(self):
        return self._frames.handover

    @property
    def _workers(self) -> list:
        return self._frames.threads

    def _internal_error(self, short: str, full: str) -> None:
        with self._lock:
            self.stats.input_errors += 1
            self.stats.last_status = "INPUT_ERROR"
            self.stats.last_input_error = "internal error: " + short
        self.get_logger().error("frame processing failed:\n" + full)

    def _frame_done(self, frame: Frame) -> None:
        with self._lock:
            self._done_stamp_ns = frame.stamp_ns
        self._publish_diagnostics()

    def _input_error(self, what: str) -> None:
        with self._lock:
            self.stats.input_errors += 1
            self.stats.last_input_error = what
            self.stats.last_status = "INPUT_ERROR"
        self.get_logger().error(what, throttle_duration_sec=5.0)

    def _reset_state(self, why: str) -> None:
        with self._lock:
            self.stats.resets += 1
            self._last_accepted_ns = None
        self._tracker.reset()
        self._out.reset(tf_stamps=True)
        if self._tf is not None:
            self._tf.clear()
        self.get_logger().warning(f"state reset: {why}")

    def _choose_prior(self, frame: Frame) -> tuple[PosePrior | None, str]:
        """The retrieval prior of the next frame and where it comes from (none, initialpose, odometry, last_pose);
        odometry is looked up only when the tracker can use it (an accepted place with odometry)."""
        T_odom = None
        if self._p["use_prior"] and self._tracker.accepted_map_from_odom() is not None:
            try:
                T_odom = self._ftf.odom_from_cam(frame, self._p)
            except TfError:
                T_odom = None
        return self._tracker.choose_prior(frame.stamp_ns, T_odom)

    def _process(self, frame: Frame) -> None:
        """pipeline false: a whole frame."""
        p = dict(self._p)
        ready = self._prepare(frame, p)
        if ready is None:
            return
        loc, cam, image = ready
        prior, prior_src = self._choose_prior(frame)
        res = loc.localize(image, cam, prior)
        self._report(res, frame, loc, p, prior_src)

    def _extract(self, frame: Frame) -> _Work | None:
        """Pipeline stage 1 of a frame: :meth:`_prepare`, then the map's extractor. None when the frame ends here."""
        ready = self._prepare(frame, dict(self._p))
        if ready is None:
            return None
        loc, cam, image = ready
        t0 = time.perf_counter()
        feats = loc.extractor.extract(image)
        if feats.global_desc is None:  # part of extraction (Localizer.localize would compute it in stage 2)
            feats.global_desc = loc.extractor.describe_global(feats)
        return _Work(frame, loc, cam, feats, extract_ms=(time.perf_counter() - t0) * 1000.0)

    def _localize_work(self, work: _Work) -> None:
        """Pipeline stage 2 of a frame: localization with the features of stage 1 and the prior of now, then
        :meth:`_report`. A frame extracted for a map that has been replaced since is dropped (and counted)."""
        handover_ms = (time.monotonic() - work.t_handed) * 1000.0
        p = dict(self._p)
        if self._dropped_stale(work):
            return
        prior, prior_src = self._choose_prior(work.frame)
        res = work.localizer.localize(None, work.camera, prior, features=work.features)
        if self._dropped_stale(work):  # replaced while localizing: the pose is in the old map's frame
            return
        t = res.timings_ms  # extraction as measured in stage 1; total = extraction + stage 2's localization
        t["total"] = t.get("total", 0.0) - t.get("extract", 0.0) + work.extract_ms
        t["extract"] = work.extract_ms
        t["handover_wait"] = handover_ms
        self._report(res, work.frame, work.localizer, p, prior_src)

    def _dropped_stale(self, work: _Work) -> bool:
        """True, counted as dropped, when ``work`` was extracted with another map's extractor than the current."""
        with self._lock:
            if work.localizer is self._localizer:
                return False
            self.stats.stale_dropped += 1
        self.get_logger().info("dropped a frame extracted before the map was replaced", throttle_duration_sec=5.0)
        return True

    def _prepare(self, frame: Frame, p: dict) -> tuple[Localizer, Camera, np.ndarray] | None:
        """What a frame needs before feature extraction: its stamp in order (a jump back resets state), the map, its
        camera (CameraInfo) and image. None when the frame ends here (counted or reported as an input error)."""
        stamp = frame.stamp_ns
        last = self._last_stamp_ns
        if last is not None and stamp < last:
            self._frames.settle()
            if last - stamp > p["time_jump_reset_s"] * NS:
                self._reset_state(f"image time jumped back by {(last - stamp) / NS:.2f} s (bag loop?)")
            else:
                with self._lock:
                    self.stats.out_of_order += 1
                return None
        self._last_stamp_ns = stamp
        loc = self._localizer
        if loc is None:
            self._frames.settle()
            self._input_error(self._map_error or "no map loaded")
            return None
        try:
            cam = self._cameras.wait(stamp, self._first_image_wall or time.monotonic(), p["camera_info_timeout"],
                                     p["camera_info_tolerance"], self.resolve_topic_name("camera_info"),
                                     lambda: self._frames.stopping)
            image = image_msg_to_localizer_input(frame.msg)
            check_image_size(cam, image.shape[1], image.shape[0])
        except (ImageConversionError, CameraInfoError) as e:
            self._frames.settle()
            self._input_error(str(e))
            return None
        return loc, cam, image

    def _report(self, res: LocalizationResult, frame: Frame, loc: Localizer, p: dict, prior_src: str) -> None:
        """The end of a localized frame (both modes): odometry check, statistics, publication and latency."""
        if res.ok:
            self._track(res, frame, p)
        if not res.ok and self._tracker.note_failure(prior_src):
            with self._lock:
                self.stats.odom_prior_releases += 1
            self.get_logger().info(f"{p['odom_prior_release_after']} frames in a row not localized at the place "
                                   "odometry predicts: localizing without the odometry prior until a pose is "
                                   "accepted again", throttle_duration_sec=5.0)
        with self._lock:
            s = self.stats
            s.processed += 1
            s.last_prior = prior_src
            s.num_inliers, s.num_matches = res.num_inliers, res.num_matches
            s.timings_ms = dict(res.timings_ms)
            s.last_status, s.last_reason = res.status.value, res.reason
            s.last_code = res.code.value if res.code is not None else ""
            s.last_input_error = ""
            if res.ok:
                s.localized += 1
            else:
                s.failed += 1
        if res.ok:
            self._publish_result(res, frame, p)
        elif p["publish_coarse"] and res.coarse_T_map_from_cam is not None:
            self._publish_coarse(res, frame, p)
        if p["publish_markers"]:
            self._publish_markers(res, loc, frame.stamp_ns, p)
        with self._lock:
            self.stats.latency_ms.append((time.monotonic() - frame.t_recv) * 1000.0)
            self.stats.done_times.append(time.monotonic())

    def _track(self, res: LocalizationResult, frame: Frame, p: dict) -> None:
        """Turn a LOCALIZED result FAILED unless the place tracker accepts it (see :mod:`reloc_ros.core.tracking`):
        checked against odometry when odom->base exists at the stamp, else against the pose sequence."""
        try:
            T_odom_from_cam = self._ftf.odom_from_cam(frame, p)
            no_odom = ""
        except TfError as e:
            T_odom_from_cam, no_odom = None, str(e)
        d = self._tracker.update(frame.stamp_ns, res.T_map_from_cam, T_odom_from_cam)
        basis = "odometry" if d.odometry else f"pose sequence (no odometry: {no_odom})"
        with self._lock:
            s = self.stats
            s.odom_hypotheses = d.hypotheses
            if not self._tracker.config.enabled:
                s.odom_check = "off"
            elif d.accepted and d.switched:
                s.odom_recovered += 1
                s.odom_check = d.reason
            elif d.accepted:
                s.odom_check = (f"ok by {basis} ({d.jump_m:.2f} m / {d.jump_deg:.1f} deg; support {d.support:.1f}, "
                                f"next place {d.rival:.1f})")
            else:
                s.odom_rejected += 1
                s.odom_check = f"rejected ({basis})"
        if d.accepted and d.switched:
            self.get_logger().warning(d.reason)
        if not d.accepted:
            res.fail(d.code, d.reason)

    # ---------------------------------------------------------------------------------------------
    def _tf_error(self, what: str) -> None:
        with self._lock:
            self.stats.tf_errors += 1
            self.stats.last_tf_error = what
        self.get_logger().warning(what, throttle_duration_sec=5.0)

    def _publish_result(self, res: LocalizationResult, frame: Frame, p: dict) -> None:
        stamp = frame.stamp_ns
        map_frame = p["map_frame"]
        T_map_from_cam = res.T_map_from_cam
        T_base_from_cam = None
        if p["pose_frame"] == "base" or p["tf_mode"] != "none":
            try:
                T_base_from_cam = self._ftf.base_from_cam(frame, p)
            except TfError as e:
                self._tf_error(f"localized, but base->camera is unavailable: {e}")
        if p["pose_frame"] == "base":
            if T_base_from_cam is None:
                return  # reported above; never publish the camera pose as if it were the base's
            T_cam_from_base = invert_T(T_base_from_cam)
            T_pose = T_map_from_cam @ T_cam_from_base
            cov = conv.covariance_of_composed(res.covariance, T_map_from_cam, T_cam_from_base)
        else:
            T_pose, cov = T_map_from_cam, res.covariance

        self._out.pose(T_pose, cov, map_frame, stamp, p["path_max_length"])

        if p["tf_mode"] == "none" or T_base_from_cam is None or self._tf is None:
            return
        T_map_from_base = T_map_from_cam @ invert_T(T_base_from_cam)
        if p["tf_mode"] == "map_base":
            T, parent, child = T_map_from_base, map_frame, p["base_frame"]
        else:
            try:
                T_odom_from_base = self._ftf.lookup(frame, p["odom_frame"], p["base_frame"], p["tf_timeout"])
            except TfError as e:
                self._tf_error(f"localized, but no odom->base at the image stamp (map->odom not updated): {e}")
                return
            T, parent, child = T_map_from_base @ invert_T(T_odom_from_base), map_frame, p["odom_frame"]
        self._out.send_transform(self._tf, T, parent, child, stamp)

    def _publish_coarse(self, res: LocalizationResult, frame: Frame, p: dict) -> None:
        cov = np.diag([p["coarse_sigma_m"] ** 2] * 3 + [p["coarse_sigma_rad"] ** 2] * 3)
        T = res.coarse_T_map_from_cam
        if p["pose_frame"] == "base":
            try:
                T = T @ invert_T(self._ftf.base_from_cam(frame, p))
            except TfError:
                return
        self._out.coarse(T, cov, p["map_frame"], frame.stamp_ns)

    def _publish_markers(self, res: LocalizationResult, loc: Localizer, stamp: int, p: dict) -> None:
        centers = loc.db.centers
        kfs = centers[[k for k in res.candidates if 0 <= k < len(centers)]]
        self._out.markers(res.inlier_xyz, kfs, res.ok, p["map_frame"], stamp)

    def _publish_map_points(self) -> None:
        loc = self._localizer
        if loc is not None:
            self._out.map_points(loc.db.valid_points(), int(self._p["map_points_max"]), self._p["map_frame"],
                                 self.get_clock().now().nanoseconds)

    # ---------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        try:
            self._diag_pub.publish(self._diagnostics())
        except Exception:  # publisher destroyed during shutdown
            pass

    def _diagnostics(self) -> DiagnosticArray:
        with self._lock:
            s, frames = self.stats, self._frames
            handover = frames.handover
            values = {
                "lifecycle_state": self._state_label,
                "last_done_stamp_ns": self._done_stamp_ns if self._done_stamp_ns is not None else "",
                "map_error": self._map_error,
                "map_path": self._loaded["map_path"],
                "map_keyframes": len(self._localizer.db) if self._localizer is not None else 0,
                **s.frame_values(),
                "frames_dropped": frames.dropped + s.stale_dropped,
                "frames_dropped_handover": handover.dropped if handover is not None else 0,  # replaced before stage 2
                "queue_frames": frames.slot.pending,  # the worker's (pipeline: stage 1's) queue of one
                "queue_extracted": handover.pending if handover is not None else 0,  # stage 2's queue of one
                "pipeline": handover is not None if frames.threads else self._p["pipeline"],  # running, else next
                "queue_camera_infos": len(self._cameras),
                "path_length": self._out.path_length,
                "unknown_parameters": ", ".join(self.unknown_parameters),
                "tf": self._tf.backend if self._tf is not None else (self._tf_unavailable or "not configured"),
                "tf_bad_transforms": getattr(self._tf, "bad_transforms", ""),  # invalid /tf entries ignored
                "tf_last_bad_transform": getattr(self._tf, "last_bad_transform", ""),
            }
            level, message = s.level_and_message(self._localizer is not None, self._state_label, self._map_error)
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
        sys.stderr.write(f"reloc_node: invalid parameter: {e}\n")
        rc = 2
    finally:
        if node is not None:
            node.shutdown_worker()
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
