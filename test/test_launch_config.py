"""Keep the launch file, parameter file, RViz config and setup.py honest against the node.

``launch_ros`` is not installable here, so the launch file is parsed with ``ast`` (never executed): its
arguments, parameter overrides, remappings and package / executable names must agree with what the node
declares (its parameter table) and with setup.py's console scripts; RViz must show topics the node publishes.
"""

import ast
import re
from pathlib import Path

import yaml

from reloc_ros.ros.parameters import PARAMETERS, PARAMS_BY_NAME, TOPICS, usage

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "localize.launch.py"
PARAMS_YAML = REPO / "config" / "localizer.yaml"
RVIZ = REPO / "config" / "reloc.rviz"
NODE_NAME = "reloc_node"


def _tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _module_constants(tree) -> dict:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def _value(node, consts):
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    return ast.literal_eval(node)


def _kw(call, key):
    return next((k.value for k in call.keywords if k.arg == key), None)


def _launch_config_names(node):
    """Names X of ``LaunchConfiguration("X")`` inside an AST node."""
    return {c.args[0].value for c in _calls(node, "LaunchConfiguration")
            if c.args and isinstance(c.args[0], ast.Constant)}


def _setup_py():
    tree = ast.parse((REPO / "setup.py").read_text())
    consts = _module_constants(tree)
    setup = _calls(tree, "setup")[0]
    name = _value(_kw(setup, "name"), consts)
    eps = ast.literal_eval(_kw(setup, "entry_points"))
    scripts = dict(s.replace(" ", "").split("=", 1) for s in eps["console_scripts"])
    return name, scripts


def _reloc_node_call(tree):
    consts = _module_constants(tree)
    exe = consts.get("EXECUTABLE", "reloc_node")
    nodes = [c for c in _calls(tree, "Node") if _value(_kw(c, "executable"), consts) == exe]
    assert len(nodes) == 1, "the launch file must start reloc_node exactly once"
    return nodes[0], consts


def test_launch_file_is_valid_python_with_entry_point():
    tree = _tree()
    fns = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in fns
    imports = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {"launch", "launch_ros"} <= imports


def test_package_and_executable_match_setup_py():
    name, scripts = _setup_py()
    node, consts = _reloc_node_call(_tree())
    assert _value(_kw(node, "package"), consts) == name
    exe = _value(_kw(node, "executable"), consts)
    assert exe in scripts, f"executable {exe} is not a console script of setup.py ({sorted(scripts)})"
    assert scripts[exe] == "reloc_ros.ros.node:main"
    assert _value(_kw(node, "name"), consts) == NODE_NAME
    import pytest
    pytest.importorskip("rclpy", reason="rclpy not installed: cannot import the node module")
    from reloc_ros.ros import node as node_module  # the entry point exists and names itself the same
    assert node_module.NODE_NAME == NODE_NAME and callable(node_module.main)


def test_launch_arguments_are_declared_and_used():
    tree = _tree()
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    expected = {"map", "model", "params_file", "namespace", "use_sim_time", "image", "camera_info", "rviz",
                "autostart", "tf_mode", "rviz_config", "fastdds_profile"}
    assert expected <= declared, f"missing launch arguments: {expected - declared}"
    used = _launch_config_names(tree)
    assert declared == used, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"
    for c in _calls(tree, "DeclareLaunchArgument"):
        assert _kw(c, "description") is not None, f"argument {c.args[0].value} has no description"


def test_parameter_overrides_and_remappings_match_the_node():
    node, consts = _reloc_node_call(_tree())
    tree = _tree()
    # parameter names set in the launch file: keys of dict literals and subscripted `overrides[...] =`
    names = set()
    for d in [n for n in ast.walk(tree) if isinstance(n, ast.Dict)]:
        names |= {k.value for k in d.keys if isinstance(k, ast.Constant)}
    for sub in [n for n in ast.walk(tree) if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store)]:
        if isinstance(sub.slice, ast.Constant):
            names.add(sub.slice.value)
    ros_builtin = {"use_sim_time"}
    unknown = names - set(PARAMS_BY_NAME) - ros_builtin
    assert not unknown, f"launch file sets parameters the node does not declare: {unknown}"
    assert {"map_path", "model_path", "tf_mode"} <= names
    # the params file argument is passed to the node
    assert "params_file" in _launch_config_names(_kw(node, "parameters"))
    # remappings: from-names are the node's relative input topics
    remaps = _kw(node, "remappings")
    froms = {e.elts[0].value for e in remaps.elts}
    assert froms == {"image", "camera_info"}
    assert froms <= set(TOPICS["subscribes"])


def test_default_params_file_exists_and_equals_the_parameter_table():
    tree = _tree()
    src = LAUNCH.read_text()
    assert '"config", "localizer.yaml"' in src and '"config", "reloc.rviz"' in src
    assert '"config", "fastdds_shm.xml"' in src
    data = yaml.safe_load(PARAMS_YAML.read_text())
    assert list(data) == [f"/**/{NODE_NAME}"], "use the /**/node_name: key form (namespaces)"
    params = data[f"/**/{NODE_NAME}"]["ros__parameters"]
    assert set(params) == {p.name for p in PARAMETERS}, (
        f"yaml vs node: only in yaml {set(params) - set(PARAMS_BY_NAME)}, "
        f"only in node {set(PARAMS_BY_NAME) - set(params)}")
    for p in PARAMETERS:
        v = params[p.name]
        assert type(v) is type(p.default), f"{p.name}: yaml type {type(v).__name__} vs {type(p.default).__name__}"
        assert v == p.default, f"{p.name}: yaml {v!r} vs node default {p.default!r}"
    assert tree is not None


def test_fastdds_profile_has_a_16mib_shm_segment():
    xml = (REPO / "config" / "fastdds_shm.xml").read_text()
    import xml.etree.ElementTree as ET
    root = ET.fromstring(xml)
    ns = {"d": "http://www.eprosima.com"}
    shm = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.findtext("d:type", namespaces=ns) == "SHM"]
    assert shm and int(shm[0].findtext("d:segment_size", namespaces=ns)) >= 16 * 1024 * 1024
    part = root.find(".//d:participant", ns)
    assert part.get("is_default_profile") == "true"
    ids = {e.text for e in part.iterfind(".//d:userTransports/d:transport_id", ns)}
    assert shm[0].findtext("d:transport_id", namespaces=ns) in ids


def _rviz_topics(node, out):
    if isinstance(node, dict):
        t = node.get("Topic")
        if isinstance(t, dict) and "Value" in t:
            out.append((node.get("Class", ""), t["Value"], t.get("Durability Policy")))
        for v in node.values():
            _rviz_topics(v, out)
    elif isinstance(node, list):
        for v in node:
            _rviz_topics(v, out)
    return out


def test_rviz_config_shows_what_the_node_publishes():
    cfg = yaml.safe_load(RVIZ.read_text())
    topics = _rviz_topics(cfg, [])
    published = {("/" + NODE_NAME + t[1:]) if t.startswith("~/") else t for t in TOPICS["publishes"]}
    tree = _tree()
    image_default = next(_kw(c, "default_value").value for c in _calls(tree, "DeclareLaunchArgument")
                         if c.args[0].value == "image")
    allowed = published | {"/initialpose", image_default}
    for cls, topic, _ in topics:
        assert topic in allowed, f"RViz display {cls} shows {topic}, which nobody in this launch publishes"
    shown = {t for _, t, _ in topics}
    for want in ("/reloc_node/pose", "/reloc_node/path", "/reloc_node/markers", "/reloc_node/map_points",
                 "/reloc_node/map_keyframes",
                 "/reloc_node/pose_with_covariance", image_default):
        assert want in shown, f"RViz config lacks {want}"
    classes = {d["Class"] for d in cfg["Visualization Manager"]["Displays"]}
    assert "rviz_default_plugins/TF" in classes and "rviz_default_plugins/Image" in classes
    for topic in ("/reloc_node/map_points", "/reloc_node/map_keyframes"):
        latched = [d for _, t, d in topics if t == topic]
        assert latched == ["Transient Local"], f"{topic} is latched: RViz must subscribe TRANSIENT_LOCAL"
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == PARAMS_BY_NAME["map_frame"].default


def test_help_text_lists_every_parameter():
    text = usage()
    for p in PARAMETERS:
        assert re.search(rf"^  {re.escape(p.name)} \(", text, re.M), p.name


def test_params_file_and_readme_table_are_generated_from_the_parameter_table():
    """config/localizer.yaml and the README's parameter table are written by tools/gen_param_docs.py from
    reloc_ros/ros/parameters.py: this fails when one was edited by hand or the table changed without a re-run."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "tools" / "gen_param_docs.py"), "--check"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_example_nav2_and_ekf_configs_name_the_node_and_its_topic():
    """config/ekf_reloc.yaml fuses the node's ~/pose_with_covariance (absolute x, y, yaw) in the map frame;
    config/nav2_lifecycle_reloc.yaml lists the node for Nav2's lifecycle manager (docs/robot_guide.md)."""
    ekf = yaml.safe_load((REPO / "config" / "ekf_reloc.yaml").read_text())
    (p,) = [v["ros__parameters"] for v in ekf.values()]
    assert p["pose0"] == f"/{NODE_NAME}/pose_with_covariance" and "~/pose_with_covariance" in TOPICS["publishes"]
    assert p["world_frame"] == p["map_frame"] == PARAMS_BY_NAME["map_frame"].default
    assert p["odom_frame"] == PARAMS_BY_NAME["odom_frame"].default
    assert p["base_link_frame"] == PARAMS_BY_NAME["base_frame"].default
    assert len(p["pose0_config"]) == 15 and p["pose0_config"][:2] == [True, True] and p["pose0_config"][5]
    assert p["pose0_differential"] is False
    lm = yaml.safe_load((REPO / "config" / "nav2_lifecycle_reloc.yaml").read_text())
    (q,) = [v["ros__parameters"] for v in lm.values()]
    assert NODE_NAME in q["node_names"] and q["autostart"] is True
    assert "autostart" in PARAMS_BY_NAME
