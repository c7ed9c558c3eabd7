"""Helpers for tests that run real ROS 2 processes on this machine.

Every ROS process (the test itself and the nodes it starts) gets: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
(no discovery traffic off the machine), its own ``ROS_DOMAIN_ID`` (from the pid and a per-module salt), a
temporary ``ROS_LOG_DIR`` and the shared-memory Fast DDS profile (16 MiB segments, for VGA images).
Call :func:`configure_ros_env` at import time of a test module and :func:`use_ros_env` again right before
``rclpy.init`` (another module imported later may have applied its own environment).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from reloc_ros.replay.shm import ShmCleanup

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "config" / "fastdds_shm.xml"


_ENVS: dict[str, dict] = {}
_ROS_KEYS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR", "FASTDDS_DEFAULT_PROFILES_FILE")


def ros_env(salt: str) -> dict:
    """The environment of one test module's ROS processes (computed once per salt; no side effects).

    The domain id is derived from the pid and ``salt`` (e.g. the module name), so concurrent test runs and
    modules do not see each other. Valid ids with Fast DDS's default ports: 0..232.
    """
    if salt not in _ENVS:
        env = dict(os.environ)
        env.pop("ROS_LOCALHOST_ONLY", None)  # ignored by this ROS version; do not pretend otherwise
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env["ROS_DOMAIN_ID"] = str((os.getpid() + zlib.crc32(salt.encode())) % 200 + 1)
        env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix=f"reloc_ros_log_{salt}_")
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                           if p and p != str(REPO)])
        _ENVS[salt] = env
    return _ENVS[salt]


def use_ros_env(env: dict) -> None:
    """Apply a :func:`ros_env` to this process. Call it right before ``rclpy.init``: rcl reads the domain id
    then, and pytest imports every test module (each with its own environment) before running any."""
    for k in _ROS_KEYS:
        os.environ[k] = env[k]
    os.environ.pop("ROS_LOCALHOST_ONLY", None)


def configure_ros_env(salt: str) -> dict:
    """:func:`ros_env` applied to this process at once (module import time, before rclpy is imported)."""
    env = ros_env(salt)
    use_ros_env(env)
    return env


# --------------------------------------------------------------------------------------------------
# The Fast DDS /dev/shm janitor of the replay tools, used by every test that starts ROS processes.
ShmJanitor = ShmCleanup


_SESSION_JANITOR = ShmJanitor()  # this test process's leftovers, removed at exit
atexit.register(_SESSION_JANITOR.cleanup, include_own=True)


# --------------------------------------------------------------------------------------------------
class NodeProcess:
    """``reloc_node`` in a subprocess (``python -m reloc_ros.ros.node``), its output in a log file."""

    def __init__(self, env: dict, ros_args: list[str], log_path: Path):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "reloc_ros.ros.node", "--ros-args", *ros_args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (clean shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
        return self.proc.returncode


def wait_until(predicate, timeout: float, spin=None, what: str = "condition") -> None:
    """Call ``spin()`` (e.g. one executor iteration) until ``predicate()`` holds; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        if spin is not None:
            spin()
        else:
            time.sleep(0.01)
