"""One source of configuration: each setting is a dataclass field with its documentation and range
(reloc_ros/core/config.py); the configs validate themselves from it, and the node's parameters are derived from
the fields (no second table). Pure Python: no rclpy."""

from __future__ import annotations

from dataclasses import fields

import pytest

from reloc_ros.core.config import settings_of
from reloc_ros.core.localizer import LocalizerConfig
from reloc_ros.core.tracking import TrackerConfig
from reloc_ros.ros.parameters import PARAMETERS, NodeConfig, localizer_config_from, node_config_from, \
    tracker_config_from, validate_all

CONFIGS = (LocalizerConfig, TrackerConfig, NodeConfig)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_a_documented_setting(cls):
    assert [f.name for f in fields(cls)] == [name for name, _, _ in settings_of(cls)]
    for name, default, st in settings_of(cls):
        assert len(st.doc) > 10, name
        assert st.why_not(name, default) is None, (name, default)


def _out_of_range(st, default):
    if st.choices:
        return "no_such_choice"
    if st.max is not None:
        return type(default)(st.max) + 1
    if st.min is not None:
        return st.min - 1 if isinstance(default, int) else st.min - 0.5
    return None


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_each_config_refuses_values_outside_its_settings(cls):
    checked = 0
    for name, default, st in settings_of(cls):
        bad = _out_of_range(st, default)
        if bad is None or isinstance(default, bool):
            continue
        with pytest.raises(ValueError, match=f"{cls.__name__}.{name}"):
            cls(**{name: bad})
        checked += 1
    assert checked >= 5


def test_node_parameters_are_the_config_fields():
    """Every parameter is a field of one of the configs, with the field's default, range and text; every field
    that is a parameter appears once (prior_sigma_m sets the localizer's and the tracker's)."""
    by_cls = {c: {n: (d, st) for n, d, st in settings_of(c)} for c in CONFIGS}
    seen = set()
    for p in PARAMETERS:
        sources = []
        if p.config_field:
            sources.append(by_cls[LocalizerConfig][p.config_field])
        if p.tracker_field:
            sources.append(by_cls[TrackerConfig][p.tracker_field])
        if not sources:
            sources.append(by_cls[NodeConfig][p.name])
        for default, st in sources:
            assert (p.default, p.setting) == (default, st), p.name
        seen.add(p.name)
    assert len(seen) == len(PARAMETERS)
    expected = {st.param or n for c in (LocalizerConfig, TrackerConfig) for n, _, st in settings_of(c)
                if st.param is not None} | {n for n, _, _ in settings_of(NodeConfig)}
    assert seen == expected


def test_parameter_validation_builds_the_configs():
    """Values that pass their own range but not the config (max_median_reproj_px 0) are refused by building it;
    a parameter change reaches the config field it names."""
    assert "max_median_reproj_px" in validate_all({}, {"max_median_reproj_px": 0.0})
    assert validate_all({}, {"top_k": 201}) and validate_all({}, {"top_k": 200}) is None
    assert localizer_config_from({"top_k": 7}).top_k == 7
    assert tracker_config_from({"track_min_motion_m": 2.5}).min_motion_m == 2.5
    assert localizer_config_from({"prior_sigma_m": 3.0}).prior_sigma_m == 3.0
    assert tracker_config_from({"prior_sigma_m": 3.0}).prior_sigma_m == 3.0
    # the node reads its own settings as attributes of a NodeConfig built from the same values
    cfg = node_config_from({"tf_mode": "map_base", "top_k": 7, "camera_info_timeout": 2.0})
    assert (cfg.tf_mode, cfg.camera_info_timeout, cfg.map_frame) == ("map_base", 2.0, "map")
    assert "tf_publish_rate_hz" in validate_all({}, {"tf_publish_rate_hz": -1.0})
