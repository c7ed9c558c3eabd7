"""The node's parameters: one table with defaults, ranges and descriptions, and their validation.

Pure Python (no rclpy), so the launch-file test, ``reloc_node --help`` and unit tests read the same table the
node declares. Defaults here equal ``config/localizer.yaml`` (a test checks that).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

__all__ = ["ParamSpec", "PARAMETERS", "PARAMS_BY_NAME", "LOCALIZER_FIELDS", "RELOAD_PARAMS", "validate",
           "validate_all", "coerce", "unknown_parameters",
           "parse_base_from_camera", "localizer_config_from", "tracker_config_from", "TRACKER_FIELDS", "TOPICS", "SERVICES", "usage"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter.

    Attributes:
        name: ROS parameter name.
        default: default value (its Python type is the ROS type: str, int, float or bool).
        description: what it does (shown by ``reloc_node --help`` and ``ros2 param describe``).
        min, max: inclusive range for numbers (None: unbounded); ``min_exclusive``: the minimum itself is refused.
        choices: allowed values of a string parameter.
        config_field: the :class:`~reloc_ros.core.localizer.LocalizerConfig` field it sets, if any.
        tracker_field: the :class:`~reloc_ros.core.tracking.TrackerConfig` field it sets, if any.
    """

    name: str
    default: object
    description: str
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple = ()
    config_field: str | None = None
    tracker_field: str | None = None

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "int", float: "double", str: "string"}[type(self.default)]

    def range_text(self) -> str:
        if self.choices:
            return "one of " + "|".join(self.choices)
        if self.min is None and self.max is None:
            return ""
        lo = "" if self.min is None else f"{'(' if self.min_exclusive else '['}{self.min:g}"
        hi = "" if self.max is None else f"{self.max:g}]"
        return f"{lo or '(-inf'}, {hi or 'inf)'}"


PARAMETERS: tuple[ParamSpec, ...] = (
    # -- map and model ------------------------------------------------------------------------------
    ParamSpec("map_path", "", "map directory (built with `reloc map build`); setting it at runtime loads that map "
              "in the background, keeping the current one until the new one loaded cleanly"),
    ParamSpec("model_path", "", "model file of a learned extractor ('' = the extractor recorded in the map, "
              "e.g. SIFT)"),
    ParamSpec("inference_provider", "cpu", "ONNX Runtime provider for the learned model",
              choices=("cpu", "cuda", "tensorrt")),
    # -- localizer (LocalizerConfig) ------------------------------------------------------------------
    ParamSpec("top_k", 5, "keyframes retrieved per query", 1, 200, config_field="top_k"),
    ParamSpec("ratio", 0.0, "Lowe ratio test for matching (0 = the map's extractor's own: SIFT 0.8, learned 0.9)",
              0.0, 1.0, config_field="ratio"),
    ParamSpec("aggregation", True, "merge 2D-3D matches of all top-K keyframes (False: best single keyframe)",
              config_field="aggregation"),
    ParamSpec("ransac_reproj_px", 8.0, "PnP RANSAC inlier threshold (pixels of an image up to 1024 px wide or high; scaled by the longer side / "
              "1024 above that, like every pixel threshold)", 0.0, 100.0, min_exclusive=True,
              config_field="ransac_reproj_px"),
    ParamSpec("ransac_iterations", 10000, "PnP RANSAC iteration cap", 10, 1_000_000,
              config_field="ransac_iterations"),
    ParamSpec("min_matches", 12, "fewer 2D-3D matches: FAILED", 4, 100_000, config_field="min_matches"),
    ParamSpec("min_inliers", 15, "fewer PnP inliers: FAILED", 4, 100_000, config_field="min_inliers"),
    ParamSpec("min_inlier_ratio", 0.10, "inliers / matches below this: FAILED", 0.0, 1.0,
              config_field="min_inlier_ratio"),
    ParamSpec("max_median_reproj_px", -1.0, "median inlier reprojection error (px) above this: FAILED; < 0 = the "
              "default for the map's point source (depth and triangulate 4, learned 5)", -1.0, 100.0,
              config_field="max_median_reproj_px"),
    ParamSpec("epipolar_check", "auto", "FAILED when the essential matrices of the image with its retrieved "
              "keyframes agree on a camera orientation more than epipolar_max_rot_deg from the PnP pose's (the map's "
              "3D points fit a wrong pose); auto = on for maps of learned points (--points learned)",
              choices=("auto", "always", "never"), config_field="epipolar_check"),
    ParamSpec("epipolar_max_rot_deg", 5.0, "tolerance of epipolar_check (deg)", 0.0, 180.0, min_exclusive=True,
              config_field="epipolar_max_rot_deg"),
    ParamSpec("epipolar_max_keyframes", 5, "epipolar_check looks at this many retrieved keyframes (most matches "
              "first), one five-point RANSAC each (~6 ms on 2 cores)", 1, 1000, config_field="epipolar_max_keyframes"),
    ParamSpec("max_position_sigma_m", 2.0, "position std-dev (from the covariance) above this: FAILED", 0.0, 1e6,
              min_exclusive=True, config_field="max_position_sigma_m"),
    ParamSpec("max_keyframe_distance_ratio", 0.9, "a pose farther from every matched keyframe than this x the "
              "median inlier depth is FAILED (a view change of > ~42 deg: a wrong pose); 0 = no check", 0.0, 100.0,
              config_field="max_keyframe_distance_ratio"),
    ParamSpec("covariance_scale", 1.0, "multiplies the published covariance (calibration)", 0.0, 1e6,
              min_exclusive=True, config_field="covariance_scale"),
    ParamSpec("map_point_sigma_rel", -1.0, "1-sigma map-point error as a fraction of depth, added to the covariance "
              "per contributing keyframe; < 0 = the default for the map's point source (depth 0.001, triangulate "
              "0.013, learned 0.13)", -1.0, 10.0, config_field="map_point_sigma_rel"),
    ParamSpec("guided_radius_px", 0.0, "> 0 (e.g. 4): refine a localized pose by guided matching: the matched "
              "keyframes' points projected with it, each matched to the most similar keypoint within this radius "
              "(px), PnP again; what localizes does not change, only the precision (synthetic R@5cm +0.75 points, "
              "+8 ms at 640x480 on 2 cores); 0 = off",
              0.0, 100.0, config_field="guided_radius_px"),
    ParamSpec("prior_sigma_m", 5.0, "std-dev (m) of a pose prior (last good pose) used to re-rank retrieval",
              0.0, 1e6, min_exclusive=True, config_field="prior_sigma_m", tracker_field="prior_sigma_m"),
    # -- node behaviour -------------------------------------------------------------------------------
    ParamSpec("use_prior", True, "use the last accepted pose (or odometry's prediction from it) as a retrieval prior "
              "for the next frame", tracker_field="use_prior"),
    ParamSpec("prior_timeout_s", 10.0, "a last accepted pose older than this (image time) is not used as a prior",
              0.0, 1e6, tracker_field="prior_timeout_s"),
    ParamSpec("max_rate_hz", 0.0, "localize at most this often (image time); 0 = as fast as the worker can",
              0.0, 1000.0),
    ParamSpec("pipeline", False, "two worker threads: feature extraction of the newest frame runs while retrieval, "
              "matching and PnP of the previous one run (a hand-over of one between them, newest wins, replaced "
              "frames counted as dropped); false: one worker does all of it per frame. Off by default: on a "
              "2-core CPU both stages compete for the same cores (30 Hz VGA: same output rate, +40 ms latency); "
              "worth it when the encoder runs on a GPU. Applies at activation"),
    ParamSpec("camera_info_timeout", 5.0, "seconds to wait for a CameraInfo before reporting an error",
              0.0, 3600.0, min_exclusive=True),
    ParamSpec("camera_info_tolerance", 0.005, "a CameraInfo matches an image when their stamps differ by at most "
              "this (s); otherwise the latest CameraInfo is used", 0.0, 10.0),
    ParamSpec("time_jump_reset_s", 1.0, "an image stamp going back by more than this (s) resets state (bag loop); "
              "smaller steps back are dropped as out of order", 0.0, 1e6),
    # -- wrong-pose protection (reloc_ros/core/plausibility.py, reloc_ros/core/tracking.py) -----------
    ParamSpec("min_inlier_coverage", 0.1, "a pose whose PnP inliers cover less than this fraction of the image "
              "(convex hull) is FAILED: matches on one small patch, e.g. a picture that also hangs elsewhere; "
              "0 = no check", 0.0, 1.0, config_field="min_inlier_coverage"),
    ParamSpec("odom_jump_max_m", 0.5, "place tracker (reloc_ros/core/tracking.py): poses whose map->odom agree "
              "within this (m; without odometry: consecutive poses, plus track_max_speed_mps x the time between "
              "them) support the same place hypothesis; a pose is published only when its place is the best "
              "supported by far and confirmed by motion; 0 = every LOCALIZED pose is published (not safe)",
              0.0, 1e6, tracker_field="max_m"),
    ParamSpec("odom_jump_max_deg", 10.0, "same, for the rotation (deg)", 0.0, 180.0, min_exclusive=True,
              tracker_field="max_deg"),
    ParamSpec("odom_accept_after", 5, "support a place needs before its poses are published (consistent poses, "
              "decayed by odom_memory): after start, a bag loop, ~/relocalize or a new map", 1, 1000,
              tracker_field="accept_after"),
    ParamSpec("odom_dominance", 1.5, "a place's poses are published only when its support is at least this many "
              "times that of any other place (repeated structure: an identical door, a symmetric corridor)",
              1.0, 1000.0, tracker_field="dominance"),
    ParamSpec("odom_memory", 50.0, "support decays by 1 - 1/odom_memory per localized frame (about the frames "
              "remembered; a robot carried elsewhere is accepted at its new place after ~0.9 x this many)",
              1.0, 1e6, tracker_field="memory"),
    ParamSpec("track_min_motion_m", 1.0, "a place is accepted only when its consistent poses were gathered over at "
              "least this much travel (m, by odometry, else by the poses) or track_min_motion_deg of turn: an alias "
              "seen from a robot that has not moved is consistent too. After a cold start the robot must move this "
              "far (or turn) before the first pose is published, unless /initialpose is given", 0.0, 1e6,
              tracker_field="min_motion_m"),
    ParamSpec("track_min_motion_deg", 60.0, "same, turn (deg)", 0.0, 360.0, tracker_field="min_motion_deg"),
    ParamSpec("track_max_speed_mps", 1.5, "without odometry: the fastest plausible camera speed (m/s); consecutive "
              "poses farther apart than odom_jump_max_m + this x their time difference belong to different places",
              0.0, 1e3, tracker_field="max_speed_mps"),
    ParamSpec("track_max_turn_dps", 90.0, "without odometry: the fastest plausible turn (deg/s), same use",
              0.0, 1e4, tracker_field="max_turn_dps"),
    ParamSpec("track_timeout_s", 1.0, "without odometry: a place not supported for this long (image time) is "
              "forgotten (its poses can no longer be linked)", 0.0, 1e6, min_exclusive=True,
              tracker_field="track_timeout_s"),
    ParamSpec("odom_prior_sigma_m", 0.5, "with odometry and an accepted place, the camera pose odometry predicts "
              "from it is the next frame's prior: retrieval takes the keyframes within 3 sigma of it (m) and "
              "odom_prior_sigma_deg, and a second pose outside them does not make the result ambiguous "
              "(repeated structure); 0 = off (the last good pose, prior_sigma_m, is the prior)", 0.0, 1e6,
              tracker_field="odom_prior_sigma_m"),
    ParamSpec("odom_prior_sigma_deg", 10.0, "same, viewing direction (deg)", 0.0, 180.0, min_exclusive=True,
              tracker_field="odom_prior_sigma_deg"),
    ParamSpec("odom_prior_release_after", 3, "after this many frames in a row not accepted with the odometry "
              "prior, frames are localized without it until a pose is accepted again (a robot carried "
              "elsewhere)", 1, 1000000, tracker_field="odom_prior_release_after"),
    # -- frames and TF --------------------------------------------------------------------------------
    ParamSpec("map_frame", "map", "frame of the map (and of published poses)"),
    ParamSpec("odom_frame", "odom", "odometry frame (REP-105)"),
    ParamSpec("base_frame", "base_link", "robot base frame (REP-105)"),
    ParamSpec("camera_frame", "", "camera optical frame; '' = the image's header.frame_id"),
    ParamSpec("base_from_camera", "", "'' = base->camera from TF; or 'x y z qx qy qz qw': the camera optical "
              "frame's pose in the base frame (T_base_from_camera)"),
    ParamSpec("tf_mode", "map_odom", "map_odom: publish map->odom (REP-105); map_base: map->base_frame "
              "(no odometry); none: no TF", choices=("map_odom", "map_base", "none")),
    ParamSpec("pose_frame", "base", "the body whose pose ~/pose* carry: base (base_frame, for Nav2 / "
              "robot_localization) or camera (the optical frame)", choices=("base", "camera")),
    ParamSpec("tf_publish_rate_hz", 20.0, "republish the last map->odom at this rate, stamped now + "
              "transform_tolerance (0: only when a new pose arrives)", 0.0, 1000.0),
    ParamSpec("transform_tolerance", 0.1, "seconds the republished TF is future-dated (AMCL-style)", 0.0, 10.0),
    ParamSpec("tf_timeout", 0.2, "seconds to wait for odom / camera TF at the image stamp", 0.0, 10.0),
    # -- outputs --------------------------------------------------------------------------------------
    ParamSpec("publish_coarse", False, "on failure, publish the best retrieved keyframe's pose on ~/pose_coarse "
              "(never on ~/pose or TF)"),
    ParamSpec("coarse_sigma_m", 2.0, "position std-dev (m) of ~/pose_coarse", 0.0, 1e6, min_exclusive=True),
    ParamSpec("coarse_sigma_rad", 0.5, "rotation std-dev (rad) of ~/pose_coarse", 0.0, 1e3, min_exclusive=True),
    ParamSpec("publish_markers", True, "publish ~/markers (matched map points, retrieved keyframes)"),
    ParamSpec("path_max_length", 1000, "poses kept in ~/path", 0, 1_000_000),
    ParamSpec("map_points_max", 200000, "at most this many points in the latched ~/map_points", 0, 100_000_000),
    ParamSpec("diagnostics_rate_hz", 1.0, "periodic /diagnostics rate (each frame also publishes)", 0.0, 100.0),
    # -- lifecycle ------------------------------------------------------------------------------------
    ParamSpec("autostart", True, "configure and activate at start (False: wait for lifecycle transitions)"),
)

PARAMS_BY_NAME = {p.name: p for p in PARAMETERS}
LOCALIZER_FIELDS = {p.name: p.config_field for p in PARAMETERS if p.config_field}
TRACKER_FIELDS = {p.name: p.tracker_field for p in PARAMETERS if p.tracker_field}
RELOAD_PARAMS = ("map_path", "model_path", "inference_provider")

# Topic names relative to the node (remap them); "~/" = private.
TOPICS = {
    "subscribes": {
        "image": "sensor_msgs/Image (SensorDataQoS): the camera images",
        "camera_info": "sensor_msgs/CameraInfo (SensorDataQoS): intrinsics, matched to images by stamp",
        "/initialpose": "geometry_msgs/PoseWithCovarianceStamped: a retrieval prior (e.g. RViz 2D Pose Estimate)",
        "/tf, /tf_static": "tf2_msgs/TFMessage: odom->base and base->camera",
    },
    "publishes": {
        "~/pose": "geometry_msgs/PoseStamped",
        "~/pose_with_covariance": "geometry_msgs/PoseWithCovarianceStamped (for robot_localization / Nav2)",
        "~/pose_coarse": "geometry_msgs/PoseWithCovarianceStamped (only with publish_coarse)",
        "~/path": "nav_msgs/Path",
        "~/markers": "visualization_msgs/MarkerArray (matched map points, retrieved keyframes)",
        "~/map_points": "sensor_msgs/PointCloud2 (latched, TRANSIENT_LOCAL)",
        "/tf": "map->odom (tf_mode map_odom) or map->base_frame (tf_mode map_base)",
        "/diagnostics": "diagnostic_msgs/DiagnosticArray (status, reason, inliers, drops, latency)",
    },
}
SERVICES = {"~/relocalize": "std_srvs/Trigger: forget the accepted place; the next frame ignores any prior (a cold start)"}


def parse_base_from_camera(text: str) -> np.ndarray | None:
    """``T_base_from_camera`` from ``'x y z qx qy qz qw'`` (commas allowed), None for ''.

    Raises:
        ValueError: not 7 finite numbers, or a zero quaternion.
    """
    from reloc_ros.core.geometry import T_from_pos_quat

    s = str(text).replace(",", " ").strip()
    if not s:
        return None
    try:
        vals = [float(v) for v in s.split()]
    except ValueError:
        vals = []
    if len(vals) != 7 or not all(np.isfinite(vals)):
        raise ValueError(f"base_from_camera must be '' or 7 numbers 'x y z qx qy qz qw', got {text!r}")
    return T_from_pos_quat(vals[:3], vals[3:], "xyzw")


def validate(name: str, value) -> str | None:
    """Why ``value`` is refused for parameter ``name``, or None when it is acceptable."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    want = type(spec.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        return f"{name} must be a {spec.type_name}, got {type(value).__name__} {value!r}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if want in (int, float):
        if not np.isfinite(value):
            return f"{name} must be finite, got {value!r}"
        if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
            return f"{name}={value!r} is out of range {spec.range_text()}"
        if spec.max is not None and value > spec.max:
            return f"{name}={value!r} is out of range {spec.range_text()}"
    if name == "base_from_camera":
        try:
            parse_base_from_camera(value)
        except ValueError as e:
            return str(e)
    if name == "map_path" and value:
        p = Path(value).expanduser()
        if not p.is_dir():
            return f"map_path {value!r} is not a directory (build a map with `reloc map build ... --out DIR`)"
        if not (p / "manifest.yaml").is_file():
            return f"map_path {value!r} has no manifest.yaml: not a reloc_ros map"
    if name == "model_path" and value and not Path(value).expanduser().is_file():
        return f"model_path {value!r} does not exist"
    for frame in ("map_frame", "odom_frame", "base_frame"):
        if name == frame and not str(value).strip("/"):
            return f"{name} must not be empty"
    return None


def coerce(name: str, value):
    """An int given for a double parameter, as a float (ROS sends ``-p x:=1`` as an integer)."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is not None and isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def validate_all(current: dict, changes: dict) -> str | None:
    """Why the parameter ``changes`` (name -> value) are refused on top of ``current``, or None: each value on its
    own (:func:`validate`), then the configurations they make (LocalizerConfig, TrackerConfig) are built, so that no
    value is accepted that the localizer or the tracker would then refuse."""
    for name, value in changes.items():
        why = validate(name, value)
        if why:
            return why
    candidate = {**current, **{k: coerce(k, v) for k, v in changes.items() if k in PARAMS_BY_NAME}}
    try:
        localizer_config_from(candidate)
        tracker_config_from(candidate)
    except (ValueError, TypeError) as e:
        return str(e)
    return None


def unknown_parameters(given) -> list[tuple[str, str]]:
    """(name, message) for each parameter in ``given`` (names set with -p or --params-file) that the node does not
    have, the message naming the closest one (a typo such as ``topk`` would otherwise be ignored without a word)."""
    import difflib

    ours = [s.name for s in PARAMETERS]
    known = set(ours) | {"use_sim_time", "start_type_description_service"}
    out = []
    for name in sorted(n for n in given if n not in known and not n.startswith("qos_overrides.")):
        close = difflib.get_close_matches(name, ours, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "`reloc_node --help` lists the parameters"
        out.append((name, f"unknown parameter {name!r} is ignored: {hint}"))
    return out


def localizer_config_from(values: dict, base=None):
    """A LocalizerConfig with the fields set by the parameters in ``values`` (others from ``base``)."""
    from dataclasses import replace

    from reloc_ros.core.localizer import LocalizerConfig

    base = base if base is not None else LocalizerConfig()
    valid = {f.name for f in fields(LocalizerConfig)}
    kw = {}
    for pname, field_name in LOCALIZER_FIELDS.items():
        if pname in values:
            if field_name not in valid:  # pragma: no cover - guarded by a test
                raise ValueError(f"parameter {pname} maps to unknown LocalizerConfig field {field_name}")
            kw[field_name] = values[pname]
    return replace(base, **kw)


def tracker_config_from(values: dict):
    """The TrackerConfig set by the parameters in ``values`` (the others at their defaults)."""
    from reloc_ros.core.tracking import TrackerConfig

    return TrackerConfig(**{f: values[p] for p, f in TRACKER_FIELDS.items() if p in values})


def usage(prog: str = "reloc_node") -> str:
    """The text of ``reloc_node --help``."""
    lines = [
        f"usage: {prog} [-h] [--ros-args [-p name:=value ...] [--params-file FILE] [-r from:=to ...]]",
        "",
        "Visual relocalization node (rclpy lifecycle node): localizes camera images against a prebuilt map and",
        "publishes the pose, map->odom TF and diagnostics. Failed localizations are never published as poses.",
        "",
        "example:",
        f"  {prog} --ros-args --params-file config/localizer.yaml -p map_path:=/maps/office \\",
        "      -r image:=/camera/image_raw -r camera_info:=/camera/camera_info",
        "",
        "subscribed topics:",
    ]
    lines += [f"  {k:<24} {v}" for k, v in TOPICS["subscribes"].items()]
    lines += ["", "published topics:"]
    lines += [f"  {k:<24} {v}" for k, v in TOPICS["publishes"].items()]
    lines += ["", "services:"]
    lines += [f"  {k:<24} {v}" for k, v in SERVICES.items()]
    lines += ["  (plus the lifecycle services ~/change_state, ~/get_state, ...)", "", "parameters (default; range):"]
    for p in PARAMETERS:
        rng = p.range_text()
        lines.append(f"  {p.name} ({p.type_name}, default {p.default!r}{'; ' + rng if rng else ''})")
        lines.append(f"      {p.description}")
    return "\n".join(lines) + "\n"
