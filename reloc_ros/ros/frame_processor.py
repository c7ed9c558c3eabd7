"""A frame's steps, from the image message to what is published: the checks before extraction, extraction,
localization with the prior of now, the place tracker's decision, statistics and publication.

Both threading modes of :class:`~reloc_ros.ros.frame_worker.FrameWorkers` run these steps: without the pipeline
:meth:`FrameProcessor.process` does a whole frame; with it :meth:`FrameProcessor.extract` (stage 1) and
:meth:`FrameProcessor.localize` (stage 2) split it. The node owns the state shared with its callbacks (the
localizer, the tracker, the CameraInfo queue, the statistics) and hands it in; nothing here creates ROS entities.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from reloc_ros.core.camera import Camera, CameraInfoError, check_image_size
from reloc_ros.core.features import Features
from reloc_ros.core.geometry import invert_T
from reloc_ros.core.image_decoding import ImageConversionError
from reloc_ros.core.localizer import LocalizationResult, Localizer
from reloc_ros.core.retrieval import PosePrior
from reloc_ros.core.tf_buffer import TfError
from reloc_ros.core.tracking import PlaceTracker, run_probes
from reloc_ros.ros import conversions as conv
from reloc_ros.ros.camera_info import CameraInfoSync
from reloc_ros.ros.diagnostics import FrameStats
from reloc_ros.ros.frame_tf import FrameTransforms
from reloc_ros.ros.frame_worker import Frame, FrameWorkers
from reloc_ros.ros.image_conversion import image_msg_to_localizer_input
from reloc_ros.ros.outputs import Outputs
from reloc_ros.ros.parameters import NodeConfig

__all__ = ["FrameProcessor", "Work"]

NS = 1_000_000_000


@dataclass
class Work:
    """A frame extracted by pipeline stage 1, handed to stage 2."""

    frame: Frame
    localizer: Localizer  # whose extractor made ``features``: stage 2 drops the work when the map changed since
    camera: Camera
    features: Features
    extract_ms: float
    t_handed: float = 0.0  # time.monotonic() when handed over


@dataclass
class NodeState:
    """What the node shares with the frame steps (read at each use: the node may replace the localizer)."""

    lock: object  # the node's RLock, guarding stats and the localizer
    stats: FrameStats
    tracker: PlaceTracker
    cameras: CameraInfoSync
    transforms: FrameTransforms
    outputs: Outputs
    params: Callable[[], NodeConfig]  # the node's current settings (the tracker's are in tracker.config)
    localizer: Callable[[], tuple]  # (Localizer or None, why there is none)
    tf_client: Callable[[], object]  # the TF client or None
    camera_info_topic: str  # resolved once (remappings are fixed when the node is made)
    on_reset: Callable[[], None]  # a time jump back reset the state: the node forgets its rate limiting


class FrameProcessor:
    """The steps of a frame (see the module docstring). ``workers`` is set by the node once they exist."""

    def __init__(self, state: NodeState, logger):
        self.s = state
        self.log = logger
        self.workers: FrameWorkers | None = None
        self.last_stamp_ns: int | None = None  # stamp of the last frame taken (frames older than it are late)

    # ---------------------------------------------------------------------------------------------
    # the steps the workers call
    def process(self, frame: Frame) -> None:
        """pipeline false: a whole frame."""
        p = self.s.params()
        ready = self._prepare(frame, p)
        if ready is None:
            return
        loc, cam, image = ready
        prior, prior_src = self._choose_prior(frame, p)
        t0 = time.perf_counter()
        feats = loc.extract(image)
        res = loc.localize_features(feats, cam, prior, {"extract": (time.perf_counter() - t0) * 1000.0}, t0)
        self._report(res, frame, loc, p, prior_src, feats, cam)

    def extract(self, frame: Frame) -> Work | None:
        """Pipeline stage 1: :meth:`_prepare`, then the map's extractor. None when the frame ends here."""
        ready = self._prepare(frame, self.s.params())
        if ready is None:
            return None
        loc, cam, image = ready
        t0 = time.perf_counter()
        feats = loc.extract(image)  # with the global descriptor
        return Work(frame, loc, cam, feats, extract_ms=(time.perf_counter() - t0) * 1000.0)

    def localize(self, work: Work) -> None:
        """Pipeline stage 2: localization with the features of stage 1 and the prior of now, then :meth:`_report`.
        A frame extracted for a map that has been replaced since is dropped (and counted)."""
        handover_ms = (time.monotonic() - work.t_handed) * 1000.0
        p = self.s.params()
        if self._dropped_stale(work):
            return
        prior, prior_src = self._choose_prior(work.frame, p)
        res = work.localizer.localize_features(work.features, work.camera, prior)
        if self._dropped_stale(work):  # replaced while localizing: the pose is in the old map's frame
            return
        t = res.timings_ms  # extraction as measured in stage 1; total = extraction + stage 2's localization
        t["total"] = t.get("total", 0.0) - t.get("extract", 0.0) + work.extract_ms
        t["extract"] = work.extract_ms
        t["handover_wait"] = handover_ms
        self._report(res, work.frame, work.localizer, p, prior_src, work.features, work.camera)

    def internal_error(self, short: str, full: str) -> None:
        """A step raised (a bug): counted as an input error, the traceback logged; the workers go on."""
        with self.s.lock:
            self.s.stats.input_errors += 1
            self.s.stats.last_status = "INPUT_ERROR"
            self.s.stats.last_input_error = "internal error: " + short
        self.log.error("frame processing failed:\n" + full)

    def input_error(self, what: str) -> None:
        with self.s.lock:
            self.s.stats.input_errors += 1
            self.s.stats.last_input_error = what
            self.s.stats.last_status = "INPUT_ERROR"
        self.log.error(what, throttle_duration_sec=5.0)

    # ---------------------------------------------------------------------------------------------
    def _settle(self) -> None:
        if self.workers is not None:
            self.workers.settle()

    def _dropped_stale(self, work: Work) -> bool:
        """True, counted as dropped, when ``work`` was extracted with another map's extractor than the current."""
        with self.s.lock:
            if work.localizer is self.s.localizer()[0]:
                return False
            self.s.stats.stale_dropped += 1
        self.log.info("dropped a frame extracted before the map was replaced", throttle_duration_sec=5.0)
        return True

    def _reset_state(self, why: str) -> None:
        with self.s.lock:
            self.s.stats.resets += 1
        self.s.on_reset()
        self.s.tracker.reset()
        self.s.outputs.reset(tf_stamps=True)
        tf = self.s.tf_client()
        if tf is not None:
            tf.clear()
        self.log.warning(f"state reset: {why}")

    def _prepare(self, frame: Frame, p: NodeConfig) -> tuple[Localizer, Camera, np.ndarray] | None:
        """What a frame needs before feature extraction: its stamp in order (a jump back resets state), the map, its
        camera (CameraInfo) and image. None when the frame ends here (counted or reported as an input error)."""
        stamp, last = frame.stamp_ns, self.last_stamp_ns
        if stamp <= 0:
            self._settle()
            self.input_error("image header.stamp is 0: the camera driver does not stamp its images (or it is a "
                             "simulator's very first frame); the node needs the capture time (for odometry, TF and "
                             "the tracker): fix the driver's stamps")
            return None
        if last is not None and stamp < last:
            self._settle()
            if last - stamp > p.time_jump_reset_s * NS:
                self._reset_state(f"image time jumped back by {(last - stamp) / NS:.2f} s (bag loop?)")
            else:
                with self.s.lock:
                    self.s.stats.out_of_order += 1
                return None
        self.last_stamp_ns = stamp
        loc, why = self.s.localizer()
        if loc is None:
            self._settle()
            self.input_error(why or "no map loaded")
            return None
        try:
            cam = self.s.cameras.wait(stamp, self.s.stats.first_image_wall or time.monotonic(),
                                      p.camera_info_timeout, p.camera_info_tolerance, self.s.camera_info_topic,
                                      lambda: self.workers is not None and self.workers.stopping)
            image = image_msg_to_localizer_input(frame.msg)
            check_image_size(cam, image.shape[1], image.shape[0])
        except (ImageConversionError, CameraInfoError) as e:
            self._settle()
            self.input_error(str(e))
            return None
        return loc, cam, image

    def _choose_prior(self, frame: Frame, p: NodeConfig) -> tuple[PosePrior | None, str]:
        """The retrieval prior of the frame and where it comes from (none, initialpose, odometry, last_pose);
        odometry is looked up only when the tracker can use it (an accepted place with odometry)."""
        T_odom = None
        if self.s.tracker.config.use_prior and self.s.tracker.accepted_map_from_odom() is not None:
            try:
                T_odom = self.s.transforms.odom_from_cam(frame, p)
            except TfError:
                T_odom = None
        return self.s.tracker.choose_prior(frame.stamp_ns, T_odom)

    def _report(self, res: LocalizationResult, frame: Frame, loc: Localizer, p: NodeConfig, prior_src: str,
                features=None, cam: Camera | None = None) -> None:
        """The end of a localized frame (both modes): the tracker's decision, statistics, publication, latency."""
        odom = _Odometry(self.s.transforms, frame, p)
        if res.ok:
            self._track(res, frame, odom)
        elif res.held is not None and self.s.tracker.weighs_held:
            # no stronger than the map's own look-alike (ambiguity_lookalike_ratio): never published as a single
            # image, but the tracker weighs its pose, and publishes it once motion has ruled the look-alike out
            self._track(res.held, frame, odom)
            if res.held.ok:
                res = res.held
        elif res.hypotheses:  # an ambiguous image: both places gather support while none is accepted
            self.s.tracker.note_ambiguous(frame.stamp_ns, res.hypotheses, odom.T)
            with self.s.lock:
                self.s.stats.odom_hypotheses = self.s.tracker.hypotheses
        if features is not None and cam is not None:
            self._probe(loc, features, cam, frame, odom)
        if not res.ok and self.s.tracker.note_failure(prior_src):
            with self.s.lock:
                self.s.stats.odom_prior_releases += 1
            self.log.info(f"{self.s.tracker.config.odom_prior_release_after} frames in a row not localized at the "
                          "place odometry predicts: localizing without the odometry prior until a pose is accepted "
                          "again",
                          throttle_duration_sec=5.0)
        with self.s.lock:
            self.s.stats.record_result(res, prior_src)
        if res.ok:
            self._publish_result(res, frame, p)
        elif p.publish_coarse and res.coarse_T_map_from_cam is not None:
            self._publish_coarse(res, frame, p)
        if p.publish_markers:
            centers = loc.db.centers
            kfs = centers[[k for k in res.candidates if 0 <= k < len(centers)]]
            self.s.outputs.markers(res.inlier_xyz, kfs, res.ok, p.map_frame, frame.stamp_ns)
        with self.s.lock:
            self.s.stats.latency_ms.append((time.monotonic() - frame.t_recv) * 1000.0)
            self.s.stats.done_times.append(time.monotonic())

    def _track(self, res: LocalizationResult, frame: Frame, odom: "_Odometry") -> None:
        """Turn a LOCALIZED result FAILED unless the place tracker accepts it (see :mod:`reloc_ros.core.tracking`):
        checked against odometry when odom->base exists at the stamp, else against the pose sequence."""
        tracker = self.s.tracker
        if odom.T is None and odom.expected and tracker.config.enabled:  # e.g. a camera_frame TF does not know
            self._tf_error(f"no odometry at the image stamp ({odom.why_none}); tf_mode map_odom expects odom -> "
                           "base -> camera: the place tracker checks the pose sequence instead")
        d = tracker.update(frame.stamp_ns, res.T_map_from_cam, odom.T, res.tracking_covariance, res.lookalike_free,
                           res.lookalike_poses, res.covariance)
        with self.s.lock:
            self.s.stats.record_tracking(d, tracker.config.enabled, odom.why_none)
        if d.accepted and d.switched:
            self.log.warning(d.reason)
        if not d.accepted:
            res.fail(d.code, d.reason)

    def _probe(self, loc: Localizer, features, cam: Camera, frame: Frame, odom: "_Odometry") -> None:
        """The tracker's probes (:func:`reloc_ros.core.tracking.run_probes`): before a place is accepted, after an
        ambiguous image or at the map's look-alikes of the place, the same features localized again in a pose window
        at the look-alike place; never published. Odometry is looked up only when there is something to probe."""
        tracker = self.s.tracker
        if not tracker.probing:
            return

        def localize(prior):
            r = loc.localize_features(features, cam, prior)
            return (r.T_map_from_cam, r.tracking_covariance) if r.ok else None

        n = run_probes(tracker, frame.stamp_ns, odom.T, localize)
        with self.s.lock:
            self.s.stats.track_probes += n

    # ---------------------------------------------------------------------------------------------
    def _tf_error(self, what: str) -> None:
        with self.s.lock:
            self.s.stats.tf_errors += 1
            self.s.stats.last_tf_error = what
        self.log.warning(what, throttle_duration_sec=5.0)

    def _publish_result(self, res: LocalizationResult, frame: Frame, p: NodeConfig) -> None:
        """The pose (camera or base, REP-105) and the map -> odom (or map -> base) transform of an accepted result."""
        stamp, map_frame, T_map_from_cam = frame.stamp_ns, p.map_frame, res.T_map_from_cam
        T_base_from_cam = None
        if p.pose_frame == "base" or p.tf_mode != "none":
            try:
                T_base_from_cam = self.s.transforms.base_from_cam(frame, p)
            except TfError as e:
                self._tf_error(f"localized, but base->camera is unavailable: {e}")
        if p.pose_frame == "base":
            if T_base_from_cam is None:
                return  # reported above; never publish the camera pose as if it were the base's
            T_cam_from_base = invert_T(T_base_from_cam)
            T_pose = T_map_from_cam @ T_cam_from_base
            cov = conv.covariance_of_composed(res.covariance, T_map_from_cam, T_cam_from_base)
        else:
            T_pose, cov = T_map_from_cam, res.covariance
        self.s.outputs.pose(T_pose, cov, map_frame, stamp, p.path_max_length)

        tf = self.s.tf_client()
        if p.tf_mode == "none" or T_base_from_cam is None or tf is None:
            return
        T_map_from_base = T_map_from_cam @ invert_T(T_base_from_cam)
        if p.tf_mode == "map_base":
            T, child = T_map_from_base, p.base_frame
        else:
            try:
                T_odom_from_base = self.s.transforms.lookup(frame, p.odom_frame, p.base_frame, p.tf_timeout)
            except TfError as e:
                self._tf_error(f"localized, but no odom->base at the image stamp (map->odom not updated): {e}")
                return
            T, child = T_map_from_base @ invert_T(T_odom_from_base), p.odom_frame
        self.s.outputs.send_transform(tf, T, map_frame, child, stamp)

    def _publish_coarse(self, res: LocalizationResult, frame: Frame, p: NodeConfig) -> None:
        cov = np.diag([p.coarse_sigma_m ** 2] * 3 + [p.coarse_sigma_rad ** 2] * 3)
        T = res.coarse_T_map_from_cam
        if p.pose_frame == "base":
            try:
                T = T @ invert_T(self.s.transforms.base_from_cam(frame, p))
            except TfError:
                return
        self.s.outputs.coarse(T, cov, p.map_frame, frame.stamp_ns)


class _Odometry:
    """The camera's odometry pose at a frame's stamp (odom -> base -> camera), looked up once on first use: ``T``
    (None when TF has none) and ``why_none`` ('' when there is one)."""

    def __init__(self, transforms: FrameTransforms, frame: Frame, p: NodeConfig):
        self._args = (transforms, frame, p)

    @functools.cached_property
    def _lookup(self) -> tuple[np.ndarray | None, str]:
        transforms, frame, p = self._args
        try:
            return transforms.odom_from_cam(frame, p), ""
        except TfError as e:
            return None, str(e)

    @property
    def T(self) -> np.ndarray | None:
        return self._lookup[0]

    @property
    def why_none(self) -> str:
        return self._lookup[1]

    @property
    def expected(self) -> bool:
        """Whether the node expects odometry (``tf_mode`` map_odom)."""
        return self._args[2].tf_mode == "map_odom"
