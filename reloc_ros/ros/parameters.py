"""The node's parameters, derived from the config dataclasses (LocalizerConfig, TrackerConfig and NodeConfig
here), whose fields carry each setting's documentation and range (core/config.py); and their validation.

Pure Python (no rclpy), so the launch-file test, ``reloc_node --help`` and unit tests read the same parameters the
node declares. ``config/localizer.yaml`` and the README's table are generated from them (tools/gen_param_docs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from reloc_ros.core.config import Setting, check_fields, setting, settings_of

__all__ = ["ParamSpec", "NodeConfig", "PARAMETERS", "PARAMS_BY_NAME", "LOCALIZER_FIELDS", "TRACKER_FIELDS",
           "NODE_NAME", "is_ros_builtin", "RELOAD_PARAMS", "validate", "validate_all", "coerce", "unknown_parameters",
           "parse_base_from_camera",
           "localizer_config_from", "tracker_config_from", "node_config_from", "TOPICS", "SERVICES", "usage"]


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter, derived from a config field's :class:`~reloc_ros.core.config.Setting`.

    Attributes:
        name: ROS parameter name.
        default: default value (its Python type is the ROS type: str, int, float or bool).
        setting: the field's documentation and range.
        config_field: the :class:`~reloc_ros.core.localizer.LocalizerConfig` field it sets, if any.
        tracker_field: the :class:`~reloc_ros.core.tracking.TrackerConfig` field it sets, if any.
    """

    name: str
    default: object
    setting: Setting
    config_field: str | None = None
    tracker_field: str | None = None

    @property
    def description(self) -> str:
        return self.setting.doc

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "int", float: "double", str: "string"}[type(self.default)]

    def range_text(self) -> str:
        return self.setting.range_text()


@dataclass
class NodeConfig:
    """The node's own settings (the localizer's and the tracker's are in LocalizerConfig and TrackerConfig)."""

    # -- map and model
    map_path: str = setting("", "map directory (built with `reloc map build`); setting it at runtime loads that map "
                            "in the background, keeping the current one until the new one loaded cleanly; setting "
                            "the same folder again reloads it when the map there changed (`reloc map update`)")
    model_path: str = setting("", "model file of a learned extractor ('' = the extractor recorded in the map, "
                              "e.g. SIFT)")
    inference_provider: str = setting("cpu", "ONNX Runtime provider for the learned model",
                                      choices=("cpu", "cuda", "tensorrt"))
    # -- node behaviour
    max_rate_hz: float = setting(0.0, "localize at most this often (image time); 0 = as fast as the worker can",
                                 0.0, 1000.0)
    pipeline: bool = setting(False, "two worker threads: feature extraction of the newest frame runs while "
                             "retrieval, matching and PnP of the previous one run (a hand-over of one between them, "
                             "newest wins, replaced frames counted as dropped); false: one worker does all of it per "
                             "frame. Off by default: on a 2-core CPU both stages compete for the same cores (30 Hz "
                             "VGA: same output rate, +40 ms latency); worth it when the encoder runs on a GPU. "
                             "Applies at activation")
    camera_info_timeout: float = setting(5.0, "seconds to wait for a CameraInfo before reporting an error",
                                         0.0, 3600.0, min_exclusive=True)
    camera_info_tolerance: float = setting(0.005, "a CameraInfo matches an image when their stamps differ by at "
                                           "most this (s); otherwise the latest CameraInfo is used", 0.0, 10.0)
    time_jump_reset_s: float = setting(1.0, "an image stamp going back by more than this (s) resets state (bag "
                                       "loop); smaller steps back are dropped as out of order", 0.0, 1e6)
    # -- frames and TF
    map_frame: str = setting("map", "frame of the map (and of published poses)")
    odom_frame: str = setting("odom", "odometry frame (REP-105)")
    base_frame: str = setting("base_link", "robot base frame (REP-105)")
    camera_frame: str = setting("", "camera optical frame; '' = the image's header.frame_id")
    base_from_camera: str = setting("", "'' = base->camera from TF; or 'x y z qx qy qz qw': the camera optical "
                                    "frame's pose in the base frame (T_base_from_camera)")
    tf_mode: str = setting("map_odom", "map_odom: publish map->odom (REP-105); map_base: map->base_frame (no "
                           "odometry); none: no TF", choices=("map_odom", "map_base", "none"))
    pose_frame: str = setting("base", "the body whose pose ~/pose* carry: base (base_frame, for Nav2 / "
                              "robot_localization) or camera (the optical frame)", choices=("base", "camera"))
    tf_publish_rate_hz: float = setting(20.0, "republish the last transform (map->odom; map->base_frame with "
                                        "tf_mode map_base) at this rate, stamped now + transform_tolerance (0: only "
                                        "when a new pose arrives)", 0.0, 1000.0)
    transform_tolerance: float = setting(0.1, "seconds the republished TF is future-dated (AMCL-style)", 0.0, 10.0)
    tf_timeout: float = setting(0.2, "seconds to wait for odom / camera TF at the image stamp", 0.0, 10.0)
    # -- outputs
    publish_coarse: bool = setting(False, "on failure, publish the best retrieved keyframe's pose on ~/pose_coarse "
                                   "(never on ~/pose or TF)")
    coarse_sigma_m: float = setting(2.0, "position std-dev (m) of ~/pose_coarse", 0.0, 1e6, min_exclusive=True)
    coarse_sigma_rad: float = setting(0.5, "rotation std-dev (rad) of ~/pose_coarse", 0.0, 1e3, min_exclusive=True)
    publish_markers: bool = setting(True, "publish ~/markers (matched map points, retrieved keyframes)")
    path_max_length: int = setting(1000, "poses kept in ~/path", 0, 1_000_000)
    map_points_max: int = setting(200000, "at most this many points in the latched ~/map_points", 0, 100_000_000)
    diagnostics_rate_hz: float = setting(1.0, "periodic /diagnostics rate (each frame also publishes)", 0.0, 100.0)
    # -- lifecycle
    autostart: bool = setting(True, "configure and activate at start (False: wait for lifecycle transitions, e.g. "
                              "under Nav2's lifecycle manager)")

    def __post_init__(self):
        check_fields(self)


RELOAD_PARAMS = ("map_path", "model_path", "inference_provider")


def _derive_parameters() -> tuple[ParamSpec, ...]:
    """The node's parameters from the config dataclasses: the map and model, the localizer's, the tracker's (one
    parameter may set a field of both, e.g. prior_sigma_m: same default and range), then the node's others."""
    from reloc_ros.core.localizer import LocalizerConfig
    from reloc_ros.core.tracking import TrackerConfig

    node = {name: (default, st) for name, default, st in settings_of(NodeConfig)}
    out: dict[str, ParamSpec] = {n: ParamSpec(n, *node.pop(n)) for n in RELOAD_PARAMS}
    for cls, key in ((LocalizerConfig, "config_field"), (TrackerConfig, "tracker_field")):
        for field_name, default, st in settings_of(cls):
            if st.param is None:
                continue
            name = st.param or field_name
            if name in out:  # one parameter, two configs
                prev = out[name]
                if (prev.default, prev.setting.range_text()) != (default, st.range_text()):
                    raise AssertionError(f"parameter {name}: {cls.__name__}.{field_name} disagrees with "
                                         f"{prev.config_field or prev.tracker_field}")
                out[name] = replace(prev, **{key: field_name})
            else:
                out[name] = ParamSpec(name, default, st, **{key: field_name})
    out.update({n: ParamSpec(n, d, st) for n, (d, st) in node.items()})
    return tuple(out.values())


PARAMETERS: tuple[ParamSpec, ...] = _derive_parameters()
PARAMS_BY_NAME = {p.name: p for p in PARAMETERS}
NODE_NAME = "reloc_node"  # the node's default name (launch file, live replay, parameters files)
LOCALIZER_FIELDS = {p.name: p.config_field for p in PARAMETERS if p.config_field}
TRACKER_FIELDS = {p.name: p.tracker_field for p in PARAMETERS if p.tracker_field}

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
        "~/path": "nav_msgs/Path (the last path_max_length poses; sent only while subscribed, e.g. by RViz)",
        "~/markers": "visualization_msgs/MarkerArray (matched map points, retrieved keyframes; sent only while "
                     "subscribed)",
        "~/map_points": "sensor_msgs/PointCloud2 (latched, TRANSIENT_LOCAL)",
        "~/map_keyframes": "visualization_msgs/MarkerArray (latched): keyframe positions, magenta where the map has a "
                           "look-alike (the robot needs more motion there after a cold start)",
        "/tf": "map->odom (tf_mode map_odom) or map->base_frame (tf_mode map_base)",
        "/diagnostics": "diagnostic_msgs/DiagnosticArray (status, reason, inliers, drops, latency)",
    },
}
SERVICES = {"~/relocalize": "std_srvs/Trigger: forget the accepted place; the next frame ignores any prior "
                             "(a cold start)"}


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
    if want in (int, float) and not np.isfinite(value):
        return f"{name} must be finite, got {value!r}"
    why = spec.setting.why_not(name, value)
    if why:
        return why
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
    own (:func:`validate`), then the configurations they make (LocalizerConfig, TrackerConfig, NodeConfig) are built,
    so that no value is accepted that the localizer, the tracker or the node would then refuse."""
    for name, value in changes.items():
        why = validate(name, value)
        if why:
            return why
    candidate = {**current, **{k: coerce(k, v) for k, v in changes.items() if k in PARAMS_BY_NAME}}
    try:
        localizer_config_from(candidate)
        tracker_config_from(candidate)
        node_config_from(candidate)
    except (ValueError, TypeError) as e:
        return str(e)
    return None


def is_ros_builtin(name: str) -> bool:
    """A parameter every ROS 2 node has, not one of ours (``use_sim_time``, QoS overrides, ...)."""
    return name in ("use_sim_time", "start_type_description_service") or name.startswith("qos_overrides")


def unknown_parameters(given) -> list[tuple[str, str]]:
    """(name, message) for each parameter in ``given`` (names set with -p or --params-file) that the node does not
    have, the message naming the closest one (a typo such as ``topk`` would otherwise be ignored without a word)."""
    import difflib

    ours = [s.name for s in PARAMETERS]
    out = []
    for name in sorted(n for n in given if n not in ours and not is_ros_builtin(n)):
        close = difflib.get_close_matches(name, ours, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "`reloc_node --help` lists the parameters"
        out.append((name, f"unknown parameter {name!r} is ignored: {hint}"))
    return out


def localizer_config_from(values: dict, base=None):
    """A LocalizerConfig with the fields set by the parameters in ``values`` (others from ``base``)."""
    from reloc_ros.core.localizer import LocalizerConfig

    base = base if base is not None else LocalizerConfig()
    return replace(base, **{f: values[p] for p, f in LOCALIZER_FIELDS.items() if p in values})


def node_config_from(values: dict) -> NodeConfig:
    """The NodeConfig of the parameters in ``values`` (the others at their defaults): the node reads its own
    settings as attributes of it, never by name from a dict."""
    return NodeConfig(**{f.name: values[f.name] for f in fields(NodeConfig) if f.name in values})


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
