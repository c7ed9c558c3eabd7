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
import time
import zlib
from pathlib import Path

from reloc_ros.replay import ros_process
from reloc_ros.replay.ros_process import use_ros_env
from reloc_ros.replay.shm import ShmCleanup

REPO = Path(__file__).resolve().parents[1]


_ENVS: dict[str, dict] = {}


def ros_env(salt: str) -> dict:
    """The environment of one test module's ROS processes (computed once per salt; no side effects).

    The domain id is derived from the pid and ``salt`` (e.g. the module name), so concurrent test runs and
    modules do not see each other. Valid ids with Fast DDS's default ports: 0..232.
    """
    if salt not in _ENVS:
        _ENVS[salt] = ros_process.ros_env((os.getpid() + zlib.crc32(salt.encode())) % 200 + 1,
                                          f"reloc_ros_log_{salt}_", root=REPO)
    return _ENVS[salt]


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
class NodeProcess(ros_process.NodeProcess):
    """``reloc_node`` in a subprocess (``python -m reloc_ros.ros.node``) started in the repository, its output in
    a log file."""

    def __init__(self, env: dict, ros_args: list[str], log_path: Path):
        super().__init__(env, ros_args, log_path, cwd=REPO)


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
