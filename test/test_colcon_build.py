"""The ROS workspace path: `colcon build` of the package, then the installed executables run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG_ITEMS = ["setup.py", "setup.cfg", "package.xml", "resource", "reloc_ros", "launch", "config", "models"]


@pytest.fixture(scope="module")
def install_space(tmp_path_factory):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.fail(f"colcon not found next to {sys.executable}: install colcon-common-extensions (make venv does)")
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "reloc_ros"
    src.mkdir(parents=True)
    for item in PKG_ITEMS:
        p = REPO / item
        if p.is_dir():
            shutil.copytree(p, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "checkpoints"))
        else:
            shutil.copy2(p, src / item)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(Path(sys.executable).parents[1]))
    r = subprocess.run([str(colcon), "build", "--base-paths", "src"], cwd=ws, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return ws / "install" / "reloc_ros"


def test_install_space_layout(install_space):
    share = install_space / "share" / "reloc_ros"
    for d in ("launch", "config", "models"):
        assert (share / d).is_dir(), f"missing share/reloc_ros/{d}"
    assert (share / "launch" / "localize.launch.py").is_file()
    assert (share / "config" / "localizer.yaml").is_file()
    assert len(list((share / "models").glob("*.onnx"))) == 1 and (share / "models" / "SHA256SUMS").is_file()
    assert (share / "package.xml").is_file()
    assert (install_space / "share" / "ament_index" / "resource_index" / "packages" / "reloc_ros").is_file()


@pytest.mark.parametrize("exe, expect", [("reloc", "map"), ("reloc_node", "reloc_node")])
def test_installed_executables_run(install_space, exe, expect):
    path = install_space / "lib" / "reloc_ros" / exe
    assert path.is_file(), f"{path} not installed"
    site = next((install_space / "lib").glob("python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([str(path), "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert expect in r.stdout
    # the installed copy is used, not the source tree
    r = subprocess.run([sys.executable, "-c", "import reloc_ros; print(reloc_ros.__file__)"], env=env,
                       capture_output=True, text=True, cwd="/", timeout=60)
    assert str(install_space) in r.stdout
