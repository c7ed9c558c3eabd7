"""The package's layers: nothing below ros/ (core/, datasets/, model/) knows ROS.

core/ is the pure method (numpy, OpenCV, faiss, ONNX Runtime), datasets/ reads data (bags included, through the
pure message decoders in core/), model/ trains and exports the network. Only ros/, the pipelines, replay/, the
CLI and tools may import rclpy, ROS message packages or reloc_ros.ros. Checked on the source (every import
statement, also those inside functions) and at run time (importing every pure module loads no ROS module).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "reloc_ros"
PURE = ("core", "datasets", "model")
# ROS client libraries, message packages and ROS-only helpers
FORBIDDEN = ("reloc_ros.ros", "rclpy", "rosidl", "rosbag2_py", "tf2_ros", "tf2_msgs", "cv_bridge", "sensor_msgs",
             "geometry_msgs", "std_msgs", "nav_msgs", "builtin_interfaces", "diagnostic_msgs", "lifecycle_msgs",
             "visualization_msgs", "rcl_interfaces")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


def _pure_files() -> list[Path]:
    return sorted(p for d in PURE for p in (PKG / d).rglob("*.py"))


def test_pure_layers_import_no_ros():
    bad = [f"{p.relative_to(PKG.parent)}:{line}: import {mod}" for p in _pure_files() for line, mod in _imports(p)
           if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN)]
    assert len(_pure_files()) > 30
    assert not bad, "pure layers import ROS:\n" + "\n".join(bad)


def test_pure_layers_use_no_relative_imports_upwards():
    """Relative imports would hide a dependency from the check above: the package uses absolute ones."""
    rel = [f"{p.relative_to(PKG.parent)}:{line}" for p in _pure_files() for line, mod in _imports(p)
           if mod.startswith(".")]
    assert not rel, rel


@pytest.mark.parametrize("layer", ["core", "datasets"])
def test_importing_a_pure_layer_loads_no_ros(layer):
    mods = sorted(f"reloc_ros.{layer}." + ".".join(p.relative_to(PKG / layer).with_suffix("").parts)
                  for p in (PKG / layer).rglob("*.py") if p.name != "__init__.py")
    code = ("import sys, importlib\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m.startswith('reloc_ros.ros'))\n"
            "print(' '.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing reloc_ros.{layer} loaded: {out.stdout.strip()}"
