"""The ROS processes of the live replay (also used by the soak tool and the tests): their environment and
``reloc_node`` in a subprocess.

Every such process stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in a domain of its own
(``ROS_DOMAIN_ID``), logs into a temporary ``ROS_LOG_DIR`` and uses the shared-memory Fast DDS profile for VGA
images (config/fastdds_shm.xml). :func:`ros_env` makes that environment (for the subprocesses),
:func:`use_ros_env` applies it to this process (right before ``rclpy.init``: rcl reads it then).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["ROS_KEYS", "NodeProcess", "ros_env", "use_ros_env"]

REPO = Path(__file__).resolve().parents[2]  # the folder holding this reloc_ros
ROS_KEYS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR", "FASTDDS_DEFAULT_PROFILES_FILE")


def ros_env(domain_id: int | None = None, log_prefix: str = "reloc_ros_log_", keep: bool = False,
            root: Path = REPO) -> dict:
    """``os.environ`` for a set of ROS processes that talk only to each other (no side effects).

    Args:
        domain_id: ROS_DOMAIN_ID (None: one derived from the pid, 1..200).
        log_prefix: prefix of the temporary ROS_LOG_DIR.
        keep: keep a ROS_LOG_DIR and a FASTDDS_DEFAULT_PROFILES_FILE that the environment already names.
        root: the source tree whose ``config/fastdds_shm.xml`` to use and that goes first on PYTHONPATH (the
            nodes started with this environment import its reloc_ros).
    """
    profile = Path(root) / "config" / "fastdds_shm.xml"
    env = dict(os.environ)
    env.pop("ROS_LOCALHOST_ONLY", None)  # ignored by this ROS version; do not pretend otherwise
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else os.getpid() % 200 + 1)
    if not (keep and "ROS_LOG_DIR" in env):
        env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix=log_prefix)
    if not (keep and "FASTDDS_DEFAULT_PROFILES_FILE" in env) and profile.is_file():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                       if p and p != str(root)])
    return env


def use_ros_env(env: dict) -> None:
    """Apply the ROS variables of a :func:`ros_env` to this process (before its rclpy context starts)."""
    for k in ROS_KEYS:
        if k in env:
            os.environ[k] = env[k]
    os.environ.pop("ROS_LOCALHOST_ONLY", None)


class NodeProcess:
    """``reloc_node`` in a subprocess (``python -m reloc_ros.ros.node``), its output in a log file;
    :meth:`stop` always ends it."""

    def __init__(self, env: dict, ros_args: list[str], log_path: Path, cwd: Path | None = None):
        self.log_path = Path(log_path)
        self.has_params_file = "--params-file" in ros_args  # a refused setting may come from it (eval-bag --config)
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "reloc_ros.ros.node", "--ros-args", *ros_args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=None if cwd is None else str(cwd))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """What the node wrote so far."""
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def tail(self, n: int = 3000) -> str:
        return self.log()[-n:]

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (clean shutdown, ``timeout`` s), then SIGTERM, then SIGKILL; returns the exit code."""
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
