"""The ``--config`` files of ``reloc eval`` and ``reloc eval-bag``: a YAML mapping of settings, or the node's own
ROS 2 parameters file (``config/localizer.yaml``: ``/**/reloc_node: ros__parameters: {...}``), so that a robot's
parameters can be evaluated offline as they are.

Which keys apply where: the localizer's settings (``LocalizerConfig``: every node parameter that configures the
localizer, and the evaluation-only ones such as ``max_map_keypoints``), the place tracker's (``track_*`` /
``odom_*`` node parameters: ``reloc eval --track``), and the node's own (frames, topics, rates, ``map_path``: no
offline meaning). Pure Python, no rclpy.
"""

from __future__ import annotations

from pathlib import Path

from reloc_ros.ros.parameters import LOCALIZER_FIELDS, NODE_NAME, PARAMS_BY_NAME, TRACKER_FIELDS, is_ros_builtin

__all__ = ["SettingsFile", "read_settings_file"]


class SettingsFile:
    """The settings of a ``--config`` file.

    Attributes:
        path: the file.
        values: setting -> value (for a parameters file, its reloc_node entries merged in file order).
        params_file: it is a ROS 2 parameters file (``ros__parameters``), e.g. the node's config/localizer.yaml.
    """

    def __init__(self, path: Path, values: dict, params_file: bool):
        self.path, self.values, self.params_file = Path(path), dict(values), params_file

    def node_only(self) -> list[str]:
        """The keys that are node parameters configuring neither the localizer nor the tracker (no meaning
        offline)."""
        node = set(PARAMS_BY_NAME) - set(LOCALIZER_FIELDS) - set(TRACKER_FIELDS) - {"model_path"}
        return sorted(k for k in self.values if k in node or is_ros_builtin(k))

    def model_path(self, given: Path | None) -> Path | None:
        """The network file to use: ``given`` (the command's --model, which wins, with a note when the file says
        otherwise), else the file's ``model_path`` when set (taken out of the settings either way).

        Raises:
            ValueError: the file's model_path is not a string or names no file.
        """
        value = self.values.pop("model_path", "") or ""
        if not isinstance(value, str):
            raise ValueError(f"{self.path}: model_path must be a string (a file), got {value!r}")
        if not value:
            return given
        if given is not None:
            if Path(given).resolve() != Path(value).resolve():
                self.note(f"--model {given} is used, not the file's model_path {value}")
            return given
        if not Path(value).is_file():
            raise ValueError(f"{self.path}: model_path {value} is not a file: give the ONNX file the map was built "
                             "with, or '' for the extractor the map records")
        return Path(value)

    def overridden(self, key: str, option: str, value) -> None:
        """A command-line option that sets ``key`` too: the option wins; say so when the file said otherwise."""
        if value is not None and key in self.values and self.values[key] != value:
            self.note(f"{option} {value} is used, not the file's {key} {self.values[key]!r}")

    def refuse_unknown(self, known) -> None:
        """ValueError for keys that are no setting at all (among ``known`` and the node's parameters): the
        closest valid name, as for the node's own parameters."""
        import difflib

        names = set(known) | set(PARAMS_BY_NAME)
        unknown = sorted(k for k in self.values if k not in names and not is_ros_builtin(k))
        if unknown:
            hints = [m[0] for k in unknown if (m := difflib.get_close_matches(k, sorted(names), n=1))]
            hint = f" (did you mean {', '.join(map(repr, hints))}?)" if hints else ""
            raise ValueError(f"{self.path}: unknown setting{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}{hint}")

    def not_node_parameters(self) -> list[str]:
        """The keys that are no parameter of the node (evaluation-only settings such as max_map_keypoints, or
        unknown)."""
        return sorted(k for k in self.values if k not in PARAMS_BY_NAME and not is_ros_builtin(k))

    def tracker_keys(self) -> list[str]:
        """The keys that set the place tracker (its node parameter names)."""
        return sorted(k for k in self.values if k in TRACKER_FIELDS)

    def drop(self, keys, why: str) -> None:
        """Remove ``keys``; those set to something else than the node's default are named on stderr in one line
        (``why``: why they do not apply). The node's own file, unchanged, passes without a word."""
        dropped = {k: self.values.pop(k) for k in keys if k in self.values}
        changed = [f"{k} {_short(v)}" for k, v in dropped.items()
                   if v != (PARAMS_BY_NAME[k].default if k in PARAMS_BY_NAME else False)]
        if changed:
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            self.note(f"not used ({why}): {', '.join(changed[:6])}{more}")

    def note(self, text: str) -> None:
        import sys

        print(f"reloc: note: {self.path}: {text}", file=sys.stderr)


def read_settings_file(path) -> SettingsFile:
    """Read a ``--config`` file: a mapping of settings, or a ROS 2 parameters file whose entries for reloc_node
    (``/**``, ``/**/reloc_node``, ``reloc_node``, ``/ns/reloc_node``) are merged in file order.

    Raises:
        ValueError: not readable, not YAML, not a mapping, or a parameters file without an entry for reloc_node;
            one line that says what to do.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())}); it should map settings to values, "
                         "e.g. `top_k: 3`, or be a ROS 2 parameters file like config/localizer.yaml") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings to values (e.g. `top_k: 3`), got a "
                         f"{type(data).__name__}")
    entries = {k: v for k, v in data.items() if isinstance(v, dict) and "ros__parameters" in v}
    if not entries:
        return SettingsFile(path, data, False)
    values: dict = {}
    used = [k for k in entries if _for_this_node(str(k))]
    if not used:
        raise ValueError(f"{path}: a ROS 2 parameters file without an entry for {NODE_NAME} (it has "
                         f"{', '.join(map(str, entries))}); use `/**/{NODE_NAME}:` as config/localizer.yaml does")
    for k in used:
        params = entries[k]["ros__parameters"] or {}
        if not isinstance(params, dict):
            raise ValueError(f"{path}: {k}: ros__parameters must be a mapping of parameters to values")
        values.update(params)
    return SettingsFile(path, values, True)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _for_this_node(key: str) -> bool:
    """Whether a parameters file's node key applies to reloc_node (in any namespace)."""
    name = key.rstrip("/").rsplit("/", 1)[-1]
    return name in ("**", NODE_NAME)
