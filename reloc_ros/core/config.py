"""Configuration fields that carry their own documentation and valid range: the one source of truth.

A config dataclass (``LocalizerConfig``, ``TrackerConfig``, the node's ``NodeConfig``) declares each setting with
:func:`setting`; from the field's metadata come its validation (:func:`check_fields`, called by the dataclass),
the node's ROS parameter (name, type, default, description, range: reloc_ros/ros/parameters.py), the YAML defaults
in config/ and the README's parameter table (tools/gen_param_docs.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import MISSING, dataclass, field, fields

import numpy as np

__all__ = ["setting", "Setting", "settings_of", "check_fields", "digest"]


@dataclass(frozen=True)
class Setting:
    """The metadata of one setting.

    Attributes:
        doc: what it does (the parameter's description).
        min, max: inclusive range for numbers (None: unbounded); ``min_exclusive``: the minimum itself is refused.
        choices: allowed values of a string setting.
        param: the node's ROS parameter name ('' = the field name; None = not a node parameter).
    """

    doc: str
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple = ()
    param: str | None = ""

    def range_text(self) -> str:
        if self.choices:
            return "one of " + "|".join(self.choices)
        if self.min is None and self.max is None:
            return ""
        # one-sided ranges in words: "[0, inf)" made users write `inf` in YAML, which is not a number there
        if self.max is None:
            return f"{'>' if self.min_exclusive else '>='} {self.min:g}"
        if self.min is None:
            return f"<= {self.max:g}"
        return f"{'(' if self.min_exclusive else '['}{self.min:g}, {self.max:g}]"

    def why_not(self, name: str, value, sep: str = "=") -> str | None:
        """Why ``value`` is outside this setting's choices or range, or None. ``sep`` joins name and value in the
        message ("=" for a config field, " " for a command-line option: "--top-k 0 is out of range ...")."""
        if self.choices and value not in self.choices:
            return f"{name} must be one of {', '.join(self.choices)}, got {value!r}"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (self.min is not None
                                                                               or self.max is not None):
            if not math.isfinite(value):
                return f"{name} must be finite, got {value!r}"
            if (self.min is not None and (value < self.min or (self.min_exclusive and value == self.min))) or \
                    (self.max is not None and value > self.max):
                return f"{name}{sep}{value!r} is out of range {self.range_text()}"
        return None


def setting(default, doc: str, min: float | None = None, max: float | None = None, *, min_exclusive: bool = False,
            choices: tuple = (), param: str | None = ""):
    """A dataclass field with its :class:`Setting` metadata (``param=None``: not a node parameter)."""
    return field(default=default, metadata={"setting": Setting(doc, min, max, min_exclusive, tuple(choices), param)})


def settings_of(cls) -> list[tuple[str, object, Setting]]:
    """(field name, default, Setting) of each field of the dataclass ``cls`` declared with :func:`setting`."""
    return [(f.name, f.default if f.default is not MISSING else f.default_factory(), f.metadata["setting"])
            for f in fields(cls) if "setting" in f.metadata]


def _type_error(name: str, annotation, value) -> str | None:
    """Why ``value`` is not of the field's declared type (bool, int, float, str: true/false, an integer, a number, a
    string), or None (other declared types are not checked here)."""
    t = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if t == "bool":
        ok, kind = isinstance(value, (bool, np.bool_)), "true or false"
    elif t == "int":
        ok, kind = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)), "an integer"
    elif t == "float":
        ok, kind = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)), "a number"
    elif t == "str":
        ok, kind = isinstance(value, str), "a string"
    else:
        return None
    return None if ok else f"{name} must be {kind}, got {value!r}"


def check_fields(obj) -> None:
    """Raise ValueError naming ``Class.field`` for the first value of the wrong kind (a YAML ``abc``, ``true`` or an
    empty entry where a number belongs) or outside its setting's choices or range."""
    for f in fields(obj):
        s = f.metadata.get("setting")
        if s is None:
            continue
        name, value = f"{type(obj).__name__}.{f.name}", getattr(obj, f.name)
        if (why := _type_error(name, f.type, value)) or (why := s.why_not(name, value)):
            raise ValueError(why)


def digest(obj) -> str:
    """A short stable digest of a JSON-able description (a build key: the inputs and configuration of a generated
    scene or a built map)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
