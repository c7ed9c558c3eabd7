"""Place tracking: which single-image poses may be published, and the prior of the next frame.

Pure numpy (no ROS): the node (:mod:`reloc_ros.ros.node`) and ``reloc eval --track`` run this same code.

Why. A single image can look exactly like another place (identical doors, a corridor that looks the same both ways,
a whole view repeated 3.6 m away). The localizer refuses what it can see is ambiguous, but a view whose look-alike
is the only one retrieved gives a confident wrong pose, and it gives it again on the next frame: an alias seen from
a robot that has not moved is perfectly consistent. Consistency without motion is no evidence. So poses are
grouped into place hypotheses, and a place is published only when its support was gathered over enough motion for
an alias to have disagreed.

Hypotheses. Every LOCALIZED camera pose ``T_map_from_cam`` supports the place whose prediction it matches, or
starts a new one:

- with odometry (``T_odom_from_cam`` at the image stamp) a place is a ``T_map_from_odom``; its prediction is
  ``T_map_from_odom @ T_odom_from_cam``, matched within ``max_m`` / ``max_deg``;
- without odometry a place is a track of poses; its prediction is its last pose, matched within
  ``max_m + max_speed_mps * dt`` / ``max_deg + max_turn_dps * dt``, and a track not continued for
  ``track_timeout_s`` is dropped.

Support counts consistent poses and decays by ``1 - 1/memory`` per localized frame. A place is ACCEPTED (its poses
published) when it is the best supported, has at least ``accept_after`` of support and ``dominance`` times any
other place's, and its supporting poses span at least ``min_motion_m`` of travel or ``min_motion_deg`` of turn
(measured by odometry, else by the poses themselves). Where the map knows no look-alike (core/aliases.py: every
pose of the place was solved from keyframes whose view the map fits nowhere else, and no image showed the place to
look like another) the motion only has to rule out a wrong pose repeated by a robot standing still:
``free_motion_m`` / ``free_motion_deg`` (0.25 m / 15 deg) suffice. The same holds where the map knows the place's
look-alikes and where they are (``LocalizationResult.lookalike_poses``) and looking there found none of them: each
becomes a rival place without support of its own, the next images are localized there too (probes, below), and if
no probe finds it after ``accept_after`` looks, the shorter motion suffices; a probe that finds it makes it a rival
like any other. Once accepted, a place's poses are published
while it leads; another place takes over only by meeting the same rule (a robot carried elsewhere: after about
``memory`` frames).

Look-alikes seen together. Motion does not refute every alias: along a corridor that repeats every 3 m, or one
that looks the same both ways, the look-alike stays consistent with odometry for as long as the structure repeats,
and the images may favour it for a metre (the benchmark corridor on a 3-session map: 122 wrong poses published from
2 of 12 starts). What the localizer does see is an image that fits two places (FAILED ``ambiguous`` /
``ambiguous place``, with both poses in ``hypotheses``). Before a place is accepted, :meth:`PlaceTracker.note_ambiguous`
makes both places rivals: the weaker is credited with the stronger's support so far (the images behind it never
looked at the other place), and from then on :meth:`PlaceTracker.probes` asks the caller to localize each image also
in a pose window around odometry's prediction of the rival that image's own result did not support (at most
``max_probes``); a probe that localizes there supports the rival (:meth:`PlaceTracker.update_probe`). A place with
rivals is accepted only with ``rival_dominance`` (3) times each rival's support, or once that rival has gone
unsupported over ``min_motion_m`` / ``min_motion_deg`` of odometry. In a place that truly looks the same two ways
nothing is published until the robot sees what is unique (or is given ``/initialpose``): no pose rather than a
wrong one.

What the robot must do after a cold start: move ``min_motion_m`` (default 1 m) or turn ``min_motion_deg``
(default 60 deg) while localizing (0.25 m or 15 deg where the map has no look-alike, or its look-alikes were looked
at and not found), or be given
``/initialpose`` (the next pose within 3 sigma of it is accepted); where the view repeats (an ambiguous start),
drive on until the look-alike stops fitting for that distance.

Priors (the first that applies, per frame): none, once, after :meth:`PlaceTracker.relocalize`; the initial pose;
with odometry and an accepted place, the camera pose odometry predicts from it (a pose window: ``odom_prior_*``),
released after ``odom_prior_release_after`` frames in a row that were not accepted with it; the last accepted
pose (``prior_sigma_m`` within ``prior_timeout_s``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from reloc_ros.core.config import check_fields, setting
from reloc_ros.core.geometry import invert_T, pose_errors, so3_exp, so3_log
from reloc_ros.core.retrieval import PosePrior
from reloc_ros.core.status import FailureCode

__all__ = ["TrackerConfig", "TrackDecision", "PlaceTracker", "run_probes"]

NS = 1_000_000_000
# The publish gate's model of the place's prediction (odometry since the place's last pose): a floor, plus drift
# per metre travelled (the generator's odometry: 0.5-1.5 % scale error and a yaw bias) and per degree turned.
PREDICT_SIGMA_M, PREDICT_SIGMA_DEG = 0.03, 1.0
DRIFT_M_PER_M, DRIFT_DEG_PER_M, DRIFT_DEG_PER_DEG = 0.03, 1.0, 0.02


@dataclass
class TrackerConfig:
    """Settings of :class:`PlaceTracker`, each with its node parameter (``odom_*``, ``track_*``, ``prior_*``,
    ``use_prior``), documentation and range (core/config.py)."""

    max_m: float = setting(0.5, "place tracker (reloc_ros/core/tracking.py): poses whose map->odom agree within this "
                           "(m; without odometry: consecutive poses, plus track_max_speed_mps x the time between "
                           "them) support the same place hypothesis; a pose is published only when its place is the "
                           "best supported by far and confirmed by motion; 0 = every LOCALIZED pose is published "
                           "(not safe)", 0.0, 1e6, param="odom_jump_max_m")
    max_deg: float = setting(10.0, "same, for the rotation (deg)", 0.0, 180.0, min_exclusive=True,
                             param="odom_jump_max_deg")
    publish_gate_sigma: float = setting(4.0, "with odometry and an accepted place: a pose is published only within "
                                        "this many standard deviations of the place's prediction (the pose's own "
                                        "covariance plus odometry drift since the place's last pose, per axis); "
                                        "further off it is withheld as an outlier and does not move the place "
                                        "(night images: runs of poses 0.3 m / 7 deg off with 2 cm sigmas); 0 = off",
                                        0.0, 1000.0, param="track_publish_gate_sigma")
    publish_max_sigma_deg: float = setting(2.5, "a pose (of an accepted place) whose published covariance gives a "
                                           "rotation sigma above this (deg, its largest axis) is withheld: at half "
                                           "the 5 deg that count a pose wrong it is too uncertain to act on (night "
                                           "corridor poses 5.6-9.4 deg off with sigmas of 3.3-29 deg, published by "
                                           "two-session maps); its place stays accepted; 0 = off", 0.0, 180.0,
                                           param="track_publish_max_sigma_deg")
    accept_after: int = setting(5, "support a place needs before its poses are published (consistent poses, "
                                "decayed by odom_memory): after start, a bag loop, ~/relocalize or a new map", 1, 1000,
                                param="odom_accept_after")
    dominance: float = setting(1.5, "a place's poses are published only when its support is at least this many "
                               "times that of any other place (repeated structure: an identical door, a symmetric "
                               "corridor)", 1.0, 1000.0, param="odom_dominance")
    memory: float = setting(50.0, "support decays by 1 - 1/odom_memory per localized frame (about the frames "
                            "remembered; a robot carried elsewhere is accepted at its new place after ~0.9 x this "
                            "many)", 1.0, 1e6, param="odom_memory")
    # Not 30 deg: in the benchmark corridor (light change) a look-alike 3 m away stayed consistent through a 47 deg
    # turn at one spot; the tuning scenes had no such case (docs/RESULTS.md "Trust").
    min_motion_m: float = setting(1.0, "a place is accepted only when its consistent poses were gathered over at "
                                  "least this much travel (m, by odometry, else by the poses) or track_min_motion_deg "
                                  "of turn: an alias seen from a robot that has not moved is consistent too. After a "
                                  "cold start the robot must move this far (or turn) before the first pose is "
                                  "published, unless /initialpose is given", 0.0, 1e6, param="track_min_motion_m")
    min_motion_deg: float = setting(60.0, "same, turn (deg)", 0.0, 360.0, param="track_min_motion_deg")
    # Where the map knows no look-alike, motion guards only against a wrong pose repeated by a robot standing
    # still; 5 consistent poses over a short stretch settle that.
    free_motion_m: float = setting(0.25, "instead of track_min_motion_m for a place whose every pose was solved from "
                                   "keyframes without a look-alike elsewhere in the map (the map's look-alike "
                                   "analysis, `reloc map analyse`; maps without it always need the full motion) and "
                                   "that no image showed to look like another place; also for a place whose "
                                   "look-alikes the map locates and the probes there did not find (each looked at "
                                   "odom_accept_after times)", 0.0, 1e6,
                                   param="track_min_motion_lookalike_free_m")
    free_motion_deg: float = setting(15.0, "same, turn (deg)", 0.0, 360.0,
                                     param="track_min_motion_lookalike_free_deg")
    max_speed_mps: float = setting(1.5, "without odometry: the fastest plausible camera speed (m/s); consecutive "
                                   "poses farther apart than odom_jump_max_m + this x their time difference belong "
                                   "to different places", 0.0, 1e3, param="track_max_speed_mps")
    max_turn_dps: float = setting(90.0, "without odometry: the fastest plausible turn (deg/s), same use", 0.0, 1e4,
                                  param="track_max_turn_dps")
    # 1 s: the jump tolerance grows with the gap; after 1.3 s a flipped look-alike 2.7 m away passed as the same track
    track_timeout_s: float = setting(1.0, "without odometry: a place not supported for this long (image time) is "
                                     "forgotten (its poses can no longer be linked)", 0.0, 1e6, min_exclusive=True)
    max_hypotheses: int = setting(8, "the weakest places beyond this many are dropped", 1, None, param=None)
    max_probes: int = setting(1, "before a place is accepted: when an image was ambiguous between two places (the "
                              "localizer's 'ambiguous' / 'ambiguous place' results), the next images are also "
                              "localized at the place of the two that the image's own result did not support "
                              "(a pose window around its prediction), at most this many extra localizations per "
                              "image, so that both places gather support and neither is accepted until one "
                              "dominates (a corridor that repeats every 3 m: motion along it keeps the look-alike "
                              "consistent); also at the map's known look-alikes of a new place (`reloc map analyse`), "
                              "which it then needs only track_min_motion_lookalike_free_m to be accepted if none is "
                              "found there; 0 = off", 0, 8, param="track_max_probes")
    rival_dominance: float = setting(3.0, "a place that an image showed to look like another (an ambiguous result) is "
                                     "accepted only with at least this many times that place's support, or once that "
                                     "place has gone unsupported over track_min_motion_m / track_min_motion_deg of "
                                     "odometry: the images that favour a look-alike can go on doing so for a metre",
                                     1.0, 1000.0, param="track_rival_dominance")
    probe_min_share: float = setting(0.2, "a rival place is probed only while its support is at least this share "
                                     "of the leading place's", 0.0, 1.0, param=None)
    use_prior: bool = setting(True, "use the last accepted pose (or odometry's prediction from it) as a retrieval "
                              "prior for the next frame")
    prior_sigma_m: float = setting(5.0, "std-dev (m) of a pose prior (last good pose) used to re-rank retrieval",
                                   0.0, 1e6, min_exclusive=True)  # the same parameter sets LocalizerConfig's
    prior_timeout_s: float = setting(10.0, "a last accepted pose older than this (image time) is not used as a prior",
                                     0.0, 1e6)
    odom_prior_sigma_m: float = setting(0.5, "with odometry and an accepted place, the camera pose odometry predicts "
                                        "from it is the next frame's prior: retrieval takes the keyframes within 3 "
                                        "sigma of it (m) and odom_prior_sigma_deg, and a second pose outside them "
                                        "does not make the result ambiguous (repeated structure); 0 = off (the last "
                                        "good pose, prior_sigma_m, is the prior)", 0.0, 1e6)
    odom_prior_sigma_deg: float = setting(10.0, "same, viewing direction (deg)", 0.0, 180.0, min_exclusive=True)
    odom_prior_release_after: int = setting(3, "after this many frames in a row not accepted with the odometry "
                                            "prior, frames are localized without it until a pose is accepted again "
                                            "(a robot carried elsewhere)", 1, 1_000_000)

    def __post_init__(self):
        check_fields(self)

    @property
    def enabled(self) -> bool:
        return self.max_m > 0


@dataclass
class TrackDecision:
    """Outcome of :meth:`PlaceTracker.update` for one LOCALIZED pose.

    Attributes:
        accepted: the pose may be published.
        reason: why not ("" when accepted), or a note when the accepted place changed.
        code: why not, for programs (None when accepted).
        switched: the accepted place changed with this pose.
        jump_m, jump_deg: difference to the prediction of the place it supports (0 for a new place).
        support: that place's support after this pose; rival: the largest support of any other place.
        motion_m, motion_deg: travel and turn the place's support spans.
        hypotheses: places kept.
        odometry: the pose was checked with odometry (else against the pose sequence).
        withheld: a pose of the accepted place that is not published: "publish_gate" (off odometry's prediction)
            or "uncertain" (``publish_max_sigma_deg``); "" otherwise.
    """

    accepted: bool
    reason: str = ""
    code: FailureCode | None = None
    switched: bool = False
    jump_m: float = 0.0
    jump_deg: float = 0.0
    support: float = 0.0
    rival: float = 0.0
    motion_m: float = 0.0
    motion_deg: float = 0.0
    hypotheses: int = 0
    odometry: bool = False
    withheld: str = ""


@dataclass(eq=False)  # compared by identity
class _Place:
    uid: int
    support: float
    T_last: np.ndarray  # last supporting camera pose (map)
    t_last_ns: int
    T_map_from_odom: np.ndarray | None  # with odometry
    T_ref: np.ndarray  # first supporting pose, in odom when motion_in_odom, else in the map
    motion_in_odom: bool
    T_odom_last: np.ndarray | None = None  # odometry at the place's last supporting pose (the publish gate)
    motion_m: float = 0.0
    motion_deg: float = 0.0
    rivals: set = field(default_factory=set)  # uids of places one image supported together with this one
    lookalike_free: bool = False  # every supporting pose was solved from keyframes without a look-alike in the map
    # every supporting pose was look-alike free or came with where the map's look-alikes of it are
    lookalikes_known: bool = False
    map_rival: bool = False  # made at the map's look-alike of another place (not by a pose of its own)
    probed: int = 0  # probes run at this place
    hits: int = 0  # probes that localized here


@dataclass
class _PriorState:
    initial: PosePrior | None = None  # /initialpose
    ignore_once: bool = False  # ~/relocalize
    last_good: tuple | None = None  # (stamp_ns, camera centre [3]) of the last accepted pose
    odom_failures: int = 0  # frames in a row not accepted with the odometry prior
    releases: int = 0  # times the odometry prior was released


class PlaceTracker:
    """See the module docstring. Thread-safe: callbacks may reset it while a worker updates it."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._lock = threading.RLock()
        self._uid = 0
        self.rejected = 0  # poses not published
        self.switches = 0  # times the accepted place changed
        self._prior = _PriorState()
        self.reset()

    # ----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every place and prior (a new map, a time jump back): the next place needs evidence again."""
        with self._lock:
            self._places: list[_Place] = []
            self._accepted_uid: int | None = None
            self._trust: PosePrior | None = None
            releases = self._prior.releases
            self._prior = _PriorState(releases=releases)

    def relocalize(self) -> None:
        """``~/relocalize``: forget the places and priors; the next frame is localized without a prior. The place
        found then is published under the same rule as after a cold start (never trusted blindly)."""
        with self._lock:
            self.reset()
            self._prior.ignore_once = True

    def set_initial_pose(self, prior: PosePrior) -> None:
        """``/initialpose``: forget the places; the prior guides retrieval, and the next pose within 3 sigma of it
        is accepted at once (the operator vouches for the place). A pose outside it follows the cold-start rule."""
        with self._lock:
            self.reset()
            self._prior.initial = prior
            self._trust = prior

    @property
    def has_accepted_place(self) -> bool:
        with self._lock:
            return self._leader_accepted() is not None

    @property
    def hypotheses(self) -> int:
        with self._lock:
            return len(self._places)

    @property
    def weighs_held(self) -> bool:
        """Whether a pose the localizer held back as no stronger than the map's own look-alike
        (``LocalizationResult.held``) goes to :meth:`update`: only while the tracker is on, since with it off every
        pose :meth:`update` sees is published, and a held one must not be."""
        return self.config.enabled

    @property
    def prior_releases(self) -> int:
        return self._prior.releases

    def places(self, stamp_ns: int, T_odom_from_cam: np.ndarray | None = None) -> list[tuple[float, np.ndarray, int]]:
        """The places held, strongest first, as ``(support, camera pose, stamp_ns)``: the pose the place predicts
        at ``stamp_ns`` (with odometry), else its last supporting pose and that pose's stamp (for ``reloc eval
        --track``'s account of a start that published nothing: which place the images favoured)."""
        with self._lock:
            out = []
            for h in self._places:
                pred = self._predict(h, stamp_ns, T_odom_from_cam) if T_odom_from_cam is not None else None
                out.append((h.support, pred[0], int(stamp_ns)) if pred is not None
                           else (h.support, h.T_last, h.t_last_ns))
            return out

    def _leader_accepted(self) -> _Place | None:
        if self._accepted_uid is None or not self._places or self._places[0].uid != self._accepted_uid:
            return None
        return self._places[0]

    # ----------------------------------------------------------------------------------------------
    def choose_prior(self, stamp_ns: int, T_odom_from_cam: np.ndarray | None) -> tuple[PosePrior | None, str]:
        """The retrieval prior of the frame at ``stamp_ns`` and its source: none, initialpose, odometry, last_pose.

        Args:
            T_odom_from_cam: odometry of the camera at the stamp, None when there is none.
        """
        cfg = self.config
        with self._lock:
            ps = self._prior
            if ps.ignore_once:
                ps.ignore_once = False
                return None, "none"
            if ps.initial is not None:
                return ps.initial, "initialpose"
            if not cfg.use_prior:
                return None, "none"
            place = self._leader_accepted()
            if (T_odom_from_cam is not None and place is not None and place.T_map_from_odom is not None
                    and cfg.odom_prior_sigma_m > 0 and cfg.enabled and ps.odom_failures < cfg.odom_prior_release_after):
                T = place.T_map_from_odom @ T_odom_from_cam
                return PosePrior(position=T[:3, 3].copy(), sigma_m=cfg.odom_prior_sigma_m, rotation=T[:3, :3].copy(),
                                 # the localizer's lighter work on tracked frames relies on the publish gate
                                 sigma_deg=cfg.odom_prior_sigma_deg, tracked=cfg.publish_gate_sigma > 0), "odometry"
            if ps.last_good is not None:
                t, pos = ps.last_good
                if 0 <= stamp_ns - t <= cfg.prior_timeout_s * NS:
                    return PosePrior(position=pos.copy(), sigma_m=cfg.prior_sigma_m), "last_pose"
        return None, "none"

    def note_failure(self, prior_src: str) -> bool:
        """A frame with prior ``prior_src`` gave no accepted pose. True when this released the odometry prior."""
        with self._lock:
            if prior_src != "odometry":
                return False
            ps = self._prior
            ps.odom_failures += 1
            if ps.odom_failures == self.config.odom_prior_release_after:
                ps.releases += 1
                return True
            return False

    # ----------------------------------------------------------------------------------------------
    def update(self, stamp_ns: int, T_map_from_cam: np.ndarray, T_odom_from_cam: np.ndarray | None = None,
               covariance: np.ndarray | None = None, lookalike_free: bool = False,
               lookalike_poses: list | None = None, published_covariance: np.ndarray | None = None) -> TrackDecision:
        """Decide on one LOCALIZED camera pose (call :meth:`note_failure` for frames without one).

        Args:
            stamp_ns: the image stamp.
            T_map_from_cam: the localized pose.
            T_odom_from_cam: odometry of the camera at the stamp (odom -> base -> camera), None without odometry.
            covariance: the pose's 6x6 covariance (position m, rotation rad), for the publish gate (None: no gate).
            lookalike_free: the pose was solved from keyframes without a look-alike in the map
                (``LocalizationResult.lookalike_free``): a place all of whose poses are needs only
                ``free_motion_m`` / ``free_motion_deg``.
            lookalike_poses: where the map's look-alikes of those keyframes would show this view
                (``LocalizationResult.lookalike_poses``; None: unknown). Before a place is accepted, each becomes a
                rival of the place that is probed (:meth:`probes`); a place whose every pose was
                look-alike free or came with its look-alikes, none of which the probes found, needs only
                ``free_motion_m`` / ``free_motion_deg`` as well.
            published_covariance: the covariance the pose would be published with
                (``LocalizationResult.covariance``; default ``covariance``): a pose whose rotation sigma in it
                exceeds ``publish_max_sigma_deg`` is not published (its place is accepted all the same).
        """
        with self._lock:
            d = self._update(int(stamp_ns), np.asarray(T_map_from_cam, np.float64), T_odom_from_cam, covariance,
                             bool(lookalike_free), lookalike_poses)
            if d.accepted and self.config.enabled:
                why = self._too_uncertain(covariance if published_covariance is None else published_covariance)
                if why:
                    d.accepted, d.code, d.reason, d.withheld = False, FailureCode.UNCERTAIN, why, "uncertain"
            if d.accepted:
                self._prior.last_good = (int(stamp_ns), np.asarray(T_map_from_cam)[:3, 3].copy())
                self._prior.initial = None
                self._prior.odom_failures = 0
            else:
                self.rejected += 1
            return d

    def _too_uncertain(self, covariance: np.ndarray | None) -> str:
        """Why a pose with this published covariance is withheld (``publish_max_sigma_deg``), or ''."""
        lim = self.config.publish_max_sigma_deg
        c = _usable(covariance)
        if lim <= 0 or c is None:
            return ""
        sigma = float(np.degrees(np.sqrt(max(float(np.linalg.eigvalsh(c[3:, 3:]).max()), 0.0))))
        if sigma <= lim:
            return ""
        return (f"withheld: its rotation sigma is {sigma:.1f} deg (> track_publish_max_sigma_deg {lim:g}): too "
                "uncertain to act on; the place stays accepted")

    def _predict(self, h: _Place, stamp_ns: int, T_odom: np.ndarray | None):
        """(predicted pose, tolerance m, tolerance deg) of place ``h`` at ``stamp_ns``, or None (cannot predict)."""
        cfg = self.config
        if T_odom is not None and h.T_map_from_odom is not None:
            return h.T_map_from_odom @ T_odom, cfg.max_m, cfg.max_deg
        dt = (stamp_ns - h.t_last_ns) / NS
        if dt < 0 or dt > cfg.track_timeout_s:
            return None
        return h.T_last, cfg.max_m + cfg.max_speed_mps * dt, cfg.max_deg + cfg.max_turn_dps * dt

    def _gated(self, h: _Place, T_odom: np.ndarray, jump_m: float, jump_deg: float,
               covariance: np.ndarray | None) -> str:
        """Why a pose of the accepted place ``h`` is withheld by the publish gate ('' when it passes)."""
        cfg = self.config
        if cfg.publish_gate_sigma <= 0 or covariance is None or h.T_odom_last is None:
            return ""
        sp_m, sp_deg, s_m, s_deg = _sigmas(h, T_odom, covariance)
        lim_m = cfg.publish_gate_sigma * float(np.hypot(s_m, sp_m))
        lim_deg = cfg.publish_gate_sigma * float(np.hypot(s_deg, sp_deg))
        if jump_m <= lim_m and jump_deg <= lim_deg:
            return ""
        return (f"withheld: {jump_m:.2f} m / {jump_deg:.1f} deg from what odometry predicts for the accepted place, "
                f"beyond {cfg.publish_gate_sigma:g} sigma ({lim_m:.2f} m / {lim_deg:.1f} deg with the pose's "
                "covariance): an outlier")

    def _update(self, stamp_ns: int, T: np.ndarray, T_odom: np.ndarray | None,
                covariance: np.ndarray | None = None, lookalike_free: bool = False,
                lookalike_poses: list | None = None) -> TrackDecision:
        cfg = self.config
        has_odom = T_odom is not None
        if not cfg.enabled:
            return TrackDecision(True, odometry=has_odom)
        covariance = _usable(covariance)
        best = self._match(T, stamp_ns, T_odom)
        if best is not None and has_odom and self._leader_accepted() is best[1]:
            why = self._gated(best[1], T_odom, best[2], best[3], covariance)
            if why:  # an outlier of the accepted place: neither published nor allowed to move the place
                h = best[1]
                return TrackDecision(False, why, FailureCode.INCONSISTENT, False, best[2], best[3], h.support,
                                     max((x.support for x in self._places if x is not h), default=0.0),
                                     h.motion_m, h.motion_deg, len(self._places), True, "publish_gate")
        self._decay()
        h, jump_m, jump_deg = self._support(best, T, stamp_ns, T_odom, covariance, 1.0, lookalike_free,
                                            lookalike_poses is not None)
        trusted = self._trust is not None and not self._trust.rules_out(T)
        if trusted:  # the operator said where the robot is
            self._places = [h]
            h.support = max(h.support, float(cfg.accept_after))
        self._trust = None
        keep = [h]
        if lookalike_poses and not trusted and cfg.max_probes > 0 and self._leader_accepted() is None:
            keep += self._map_rivals(h, lookalike_poses, stamp_ns, T_odom)
        self._prune(keep, stamp_ns)
        rival = max((x.support for x in self._places if x is not h), default=0.0)
        d = TrackDecision(False, "", None, False, jump_m, jump_deg, h.support, rival, h.motion_m, h.motion_deg,
                          len(self._places), has_odom)
        need_m, need_deg = self._motion_needed(h)
        moved = h.motion_m >= need_m or h.motion_deg >= need_deg or h.uid == self._accepted_uid or trusted
        leads = (self._places[0] is h and h.support >= cfg.accept_after and h.support >= cfg.dominance * rival
                 and all(h.support >= cfg.rival_dominance * x.support or self._refuted(x, T_odom)
                         for x in self._rivals_of(h)))
        if leads and moved:
            d.accepted = True
            if self._accepted_uid is not None and self._accepted_uid != h.uid:
                self.switches += 1
                d.switched = True
                d.reason = (f"the accepted place changed: {h.support:.1f} consistent poses over {h.motion_m:.2f} m / "
                            f"{h.motion_deg:.0f} deg now outweigh the previous place ({rival:.1f})")
            self._accepted_uid = h.uid
            return d
        basis = "odometry" if has_odom else "the pose sequence"
        if leads:
            d.code = FailureCode.NEEDS_MOTION
            d.reason = (f"place not yet confirmed by motion: its {h.support:.1f} consistent poses span "
                        f"{h.motion_m:.2f} m / {h.motion_deg:.0f} deg ({basis}); it needs {need_m:g} m or "
                        f"{need_deg:g} deg: move the robot, or give /initialpose")
        elif best is None and self._places[0] is not h:
            lead = self._places[0]
            pred = self._predict(lead, stamp_ns, T_odom)
            far = "" if pred is None else "%.2f m / %.1f deg " % pose_errors(T, pred[0])
            d.code = FailureCode.INCONSISTENT
            d.reason = (f"inconsistent with {basis}: a new place {far}from the best-supported one "
                        f"({lead.support:.1f} poses); it needs {cfg.accept_after} and {cfg.dominance:g}x any other's "
                        f"support over {cfg.min_motion_m:g} m or {cfg.min_motion_deg:g} deg of motion")
        else:
            d.code = FailureCode.UNCONFIRMED
            d.reason = (f"place not yet confirmed ({basis}): {h.support:.1f} consistent poses, another place "
                        f"{rival:.1f}; it needs {cfg.accept_after} and {cfg.dominance:g}x any other's support")
        return d

    def _motion_needed(self, h: _Place) -> tuple[float, float]:
        """(m, deg) of travel or turn place ``h`` needs before it is accepted: less where the map knows no
        look-alike of any of its poses' keyframes and no image showed it to look like another place, or where it
        knows where they are and the probes there found none of them (each probed ``accept_after`` times)."""
        cfg = self.config
        free = min(cfg.free_motion_m, cfg.min_motion_m), min(cfg.free_motion_deg, cfg.min_motion_deg)
        if h.lookalike_free and not h.rivals:
            return free
        rivals = self._rivals_of(h)
        if (h.lookalikes_known and h.rivals and len(rivals) == len(h.rivals)
                and all(x.map_rival and x.hits == 0 and x.probed >= cfg.accept_after for x in rivals)):
            return free
        return cfg.min_motion_m, cfg.min_motion_deg

    def _map_rivals(self, h: _Place, poses: list, stamp_ns: int, T_odom: np.ndarray | None) -> list[_Place]:
        """The places at the map's look-alikes of a pose of ``h`` (``poses``: where they would show the image),
        made rivals of ``h`` with no support of their own: :meth:`probes` localizes the next images there. Without
        odometry such a place's prediction is where the look-alike would show the latest image."""
        out = []
        for P in poses:
            P = np.asarray(P, np.float64)
            best = self._match(P, stamp_ns, T_odom)
            if best is not None and best[1] is h:
                continue  # the look-alike is within this place's own tolerance: nothing to tell apart
            if best is None:  # a new place, no support of its own
                r = self._support(None, P, stamp_ns, T_odom, None, 0.0)[0]
                r.map_rival = True
            else:
                r = best[1]
                if T_odom is None and r.map_rival and r.hits == 0:
                    r.T_last, r.t_last_ns = P, stamp_ns
            h.rivals.add(r.uid)
            r.rivals.add(h.uid)
            out.append(r)
        return out

    def _refuted(self, rival: _Place, T_odom: np.ndarray | None) -> bool:
        """With odometry: ``rival`` (a look-alike place) has not been supported while the robot travelled
        ``min_motion_m`` or turned ``min_motion_deg`` (its probes failed, other images went elsewhere)."""
        if T_odom is None or rival.T_odom_last is None:
            return False
        m, r = pose_errors(T_odom, rival.T_odom_last)
        return m >= self.config.min_motion_m or r >= self.config.min_motion_deg

    def _match(self, T: np.ndarray, stamp_ns: int, T_odom: np.ndarray | None):
        """(score, place, metres, degrees) of the place whose prediction ``T`` matches best, or None."""
        best = None
        for h in self._places:
            pred = self._predict(h, stamp_ns, T_odom)
            if pred is None:
                continue
            dt, dr = pose_errors(T, pred[0])
            if dt <= pred[1] and dr <= pred[2]:
                score = dt / pred[1] + dr / max(pred[2], 1e-9)
                if best is None or score < best[0]:
                    best = (score, h, float(dt), float(dr))
        return best

    def _decay(self) -> None:
        keep = 1.0 - 1.0 / max(self.config.memory, 1.0)
        for h in self._places:
            h.support *= keep

    def _support(self, best, T: np.ndarray, stamp_ns: int, T_odom: np.ndarray | None,
                 covariance: np.ndarray | None, weight: float, lookalike_free: bool = False,
                 lookalikes_known: bool = False) -> tuple[_Place, float, float]:
        """Pose ``T`` supports the place of ``best`` (:meth:`_match`) by ``weight``, or starts a new place.
        (place, metres, degrees from its prediction)."""
        has_odom = T_odom is not None
        if best is None:
            self._uid += 1
            h = _Place(self._uid, weight, T, stamp_ns, T @ invert_T(T_odom) if has_odom else None,
                       T_odom if has_odom else T, has_odom, T_odom_last=T_odom if has_odom else None,
                       lookalike_free=lookalike_free, lookalikes_known=lookalike_free or lookalikes_known)
            self._places.append(h)
            return h, 0.0, 0.0
        _, h, jump_m, jump_deg = best
        h.support += weight
        h.lookalike_free = h.lookalike_free and lookalike_free
        h.lookalikes_known = h.lookalikes_known and (lookalike_free or lookalikes_known)
        h.T_last, h.t_last_ns = T, stamp_ns
        if has_odom:  # follow the pose (odometry drifts slowly), as far as its covariance says it knows better
            h.T_map_from_odom = _follow(h, T, T_odom, covariance)
            h.T_odom_last = T_odom
            if not h.motion_in_odom:  # odometry came after the place's first poses (TF late after a start or a
                # bag loop): its motion is measured by odometry from here on, what the poses showed is kept
                h.motion_in_odom, h.T_ref = True, T_odom
        if h.motion_in_odom == has_odom:
            m, r = pose_errors(T_odom if has_odom else T, h.T_ref)
            h.motion_m, h.motion_deg = max(h.motion_m, m), max(h.motion_deg, r)
        return h, jump_m, jump_deg

    # ----------------------------------------------------------------------------------------------
    # ambiguous images: both places gather support (see TrackerConfig.max_probes)
    def note_ambiguous(self, stamp_ns: int, hypotheses: list, T_odom_from_cam: np.ndarray | None = None) -> None:
        """An image the localizer found ambiguous (FAILED ``ambiguous`` / ``ambiguous place``, its ``hypotheses``:
        ``[(T_map_from_cam, inliers)]``, the better first). Before a place is accepted, each pose supports its place
        (or starts one) by its share of the inliers, and the two places become rivals: the weaker is credited with the
        stronger's support (the images that supported one so far did not look at the other), and :meth:`probes`
        asks for the one an image's own result does not support to be checked too. Nothing is published."""
        cfg = self.config
        with self._lock:
            if not cfg.enabled or cfg.max_probes <= 0 or len(hypotheses) < 2 or self._leader_accepted() is not None:
                return
            stamp_ns = int(stamp_ns)
            inliers = [max(int(n), 1) for _, n in hypotheses]
            self._decay()
            places = []
            for (T, _), n in zip(hypotheses, inliers):
                T = np.asarray(T, np.float64)
                h, _, _ = self._support(self._match(T, stamp_ns, T_odom_from_cam), T, stamp_ns, T_odom_from_cam,
                                        None, n / sum(inliers))
                places.append(h)
            for a in places:
                for b in places:
                    if b is not a and b.uid not in a.rivals:
                        # newly found to look alike: what supported one so far (images in which the other place
                        # was not looked at) supports the other as much
                        a.rivals.add(b.uid)
                        a.support = max(a.support, b.support)
            self._prune(places, stamp_ns)

    @property
    def probing(self) -> bool:
        """Whether :meth:`probes` can ask for anything: no place accepted, and the leading place has a rival
        (callers skip the odometry lookup otherwise)."""
        with self._lock:
            return bool(self.config.enabled and self.config.max_probes > 0 and self._places
                        and self._leader_accepted() is None and self._rivals_of(self._places[0]))

    def _rivals_of(self, h: _Place) -> list[_Place]:
        return [x for x in self._places if x.uid in h.rivals]

    def probes(self, stamp_ns: int, T_odom_from_cam: np.ndarray | None = None) -> list[tuple[int, PosePrior]]:
        """The places to localize the image at ``stamp_ns`` at as well (after its own result went to
        :meth:`update`, :meth:`note_failure` or :meth:`note_ambiguous`), each as (place id, pose-window prior around
        its prediction): before a place is accepted, the leading place and its rivals that this image did not
        support, at most ``max_probes``, the best supported first. Feed each result to :meth:`update_probe`."""
        cfg = self.config
        with self._lock:
            if not self.probing:
                return []
            stamp_ns = int(stamp_ns)
            lead = self._places[0]
            out = []
            # the best supported first; the map's look-alikes not yet found (no support) the least probed first
            for h in [lead] + sorted(self._rivals_of(lead), key=lambda x: (-x.support, x.probed)):
                unfound = h.map_rival and h.hits == 0  # a look-alike of the map, not yet seen by any image
                if (h.t_last_ns == stamp_ns and not unfound) or (
                        h is not lead and not unfound and h.support < cfg.probe_min_share * lead.support):
                    continue
                pred = self._predict(h, stamp_ns, T_odom_from_cam)
                if pred is None:
                    continue
                h.probed += 1
                T = pred[0]
                out.append((h.uid, PosePrior(position=T[:3, 3].copy(), sigma_m=max(cfg.odom_prior_sigma_m, 1e-3),
                                             rotation=T[:3, :3].copy(), sigma_deg=cfg.odom_prior_sigma_deg)))
                if len(out) >= cfg.max_probes:
                    break
            return out

    def update_probe(self, uid: int, stamp_ns: int, T_map_from_cam: np.ndarray,
                     T_odom_from_cam: np.ndarray | None = None, covariance: np.ndarray | None = None) -> bool:
        """A LOCALIZED result of a probe (:meth:`probes`) of place ``uid``: it supports that place when it matches
        the place's prediction better than any other place's (True), else nothing happens (a window near the image's
        own place can return that place's pose). Never published."""
        with self._lock:
            h = next((x for x in self._places if x.uid == uid), None)
            if h is None:
                return False
            stamp_ns = int(stamp_ns)
            T = np.asarray(T_map_from_cam, np.float64)
            best = self._match(T, stamp_ns, T_odom_from_cam)
            if best is None or best[1] is not h:  # not there, or another place (the image's own) explains it better
                return False
            h.hits += 1
            self._support(best, T, stamp_ns, T_odom_from_cam, _usable(covariance), 1.0)
            self._places.sort(key=lambda x: -x.support)
            return True

    def _prune(self, keep: list[_Place], stamp_ns: int) -> None:
        """Drop faded places, tracks past their timeout and the weakest beyond ``max_hypotheses``; the places of
        ``keep`` (just supported) stay."""
        cfg = self.config

        def alive(x: _Place) -> bool:
            if any(x is h for h in keep):
                return True
            if x.map_rival and x.hits == 0:  # a look-alike being checked: kept while a place it is the rival of is
                return any(x.uid in y.rivals and y.support >= 0.05 for y in self._places)
            if x.support < 0.05:
                return False
            # a track without odometry cannot be continued after its timeout
            return x.T_map_from_odom is not None or (stamp_ns - x.t_last_ns) <= cfg.track_timeout_s * NS

        self._places = sorted((x for x in self._places if alive(x)), key=lambda x: -x.support)
        del self._places[cfg.max_hypotheses:]
        for h in keep:  # dropped as the weakest: it cannot be accepted, but it stays
            if not any(x is h for x in self._places):
                self._places.append(h)

    def accepted_map_from_odom(self) -> np.ndarray | None:
        """``T_map_from_odom`` of the accepted place while it leads and has odometry, else None."""
        with self._lock:
            p = self._leader_accepted()
            return None if p is None or p.T_map_from_odom is None else p.T_map_from_odom.copy()


def _sigmas(h: _Place, T_odom: np.ndarray, covariance: np.ndarray) -> tuple[float, float, float, float]:
    """(prediction sigma m, deg; pose sigma m, deg), per axis: the prediction of place ``h`` at ``T_odom`` (odometry
    drift since its last pose) and the pose's covariance."""
    travel, turn = pose_errors(T_odom, h.T_odom_last)
    sp_m = PREDICT_SIGMA_M + DRIFT_M_PER_M * travel
    sp_deg = PREDICT_SIGMA_DEG + DRIFT_DEG_PER_M * travel + DRIFT_DEG_PER_DEG * turn
    s_m = float(np.sqrt(max(np.trace(covariance[:3, :3]), 0.0) / 3.0))
    s_deg = float(np.degrees(np.sqrt(max(np.trace(covariance[3:, 3:]), 0.0) / 3.0)))
    return sp_m, sp_deg, s_m, s_deg


def _follow(h: _Place, T: np.ndarray, T_odom: np.ndarray, covariance: np.ndarray | None) -> np.ndarray:
    """The place's new ``T_map_from_odom`` after pose ``T``: the camera pose moved from the place's prediction towards
    ``T`` by the weights of the two uncertainties (all the way without a covariance or a previous pose)."""
    if covariance is None or h.T_odom_last is None:
        return T @ invert_T(T_odom)
    sp_m, sp_deg, s_m, s_deg = _sigmas(h, T_odom, covariance)
    w_m = sp_m ** 2 / (sp_m ** 2 + s_m ** 2)
    w_r = sp_deg ** 2 / (sp_deg ** 2 + s_deg ** 2)
    P = h.T_map_from_odom @ T_odom
    B = np.eye(4)
    B[:3, :3] = P[:3, :3] @ so3_exp(w_r * so3_log(P[:3, :3].T @ T[:3, :3]))
    B[:3, 3] = P[:3, 3] + w_m * (T[:3, 3] - P[:3, 3])
    return B @ invert_T(T_odom)


def run_probes(tracker: PlaceTracker, stamp_ns: int, T_odom_from_cam: np.ndarray | None, localize) -> int:
    """The probes of the image at ``stamp_ns`` (:meth:`PlaceTracker.probes`), as the node and ``reloc eval --track``
    run them: ``localize(prior)`` localizes the image's features again with that prior and returns
    ``(T_map_from_cam, covariance)`` or None (FAILED); each pose goes to :meth:`PlaceTracker.update_probe`.
    Returns the number of probes run."""
    asked = tracker.probes(stamp_ns, T_odom_from_cam)
    for uid, prior in asked:
        out = localize(prior)
        if out is not None:
            tracker.update_probe(uid, stamp_ns, out[0], T_odom_from_cam, out[1])
    return len(asked)


def _usable(covariance: np.ndarray | None) -> np.ndarray | None:
    """A covariance that says something, else None (no gate and no weighting from non-finite values)."""
    if covariance is None or not np.all(np.isfinite(covariance)):
        return None
    return np.asarray(covariance)
