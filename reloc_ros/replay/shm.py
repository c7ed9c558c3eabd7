"""Fast DDS shared-memory files (``/dev/shm/fastdds_*``, ``/dev/shm/sem.fastdds_*``) that ROS processes leave.

Fast DDS does not unlink the named mutexes of its shared-memory ports at exit, a killed process leaves its
segments, and a process keeps the ports of a shut-down context mapped until it exits. :class:`ShmCleanup`
removes the files that appeared since it was made and that no live process maps or holds open (with
``include_own``: none but this process, for use at exit); a port's named mutex counts as used while its port is.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ShmCleanup", "fastdds_files", "shm_used_by"]

SHM_DIR = Path("/dev/shm")


def fastdds_files() -> set[str]:
    """Names of the Fast DDS files under /dev/shm."""
    try:
        return {p.name for p in SHM_DIR.iterdir() if "fastdds" in p.name}
    except OSError:
        return set()


def shm_used_by(pid: int) -> set[str]:
    """Names under /dev/shm that a live process maps or holds open (as far as /proc lets us read)."""
    names: set[str] = set()
    proc = Path(f"/proc/{pid}")
    try:
        for line in (proc / "maps").read_text().splitlines():
            if "/dev/shm/" in line:
                names.add(line.rsplit("/dev/shm/", 1)[1].split(" ")[0])
        for fd in (proc / "fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("/dev/shm/"):
                names.add(target[len("/dev/shm/"):])
    except OSError:
        pass  # the process ended, or is not ours to read
    return names


def _users() -> dict[str, set[int]]:
    """{name under /dev/shm: pids of live processes that map it or hold it open}."""
    users: dict[str, set[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for name in shm_used_by(int(proc.name)):
                users.setdefault(name, set()).add(int(proc.name))
    return users


class ShmCleanup:
    """Remembers the Fast DDS files present when made; :meth:`cleanup` removes the new ones nobody uses."""

    def __init__(self):
        self.before = fastdds_files()

    def cleanup(self, include_own: bool = False) -> list[str]:
        """Remove new files no live process uses (``include_own``: ignore this process's own use); their names."""
        new = fastdds_files() - self.before
        if not new:
            return []
        users, me, removed = _users(), os.getpid(), []
        for name in sorted(new):
            # a port's named mutex (sem.fastdds_portN_mutex) is in use while its port (fastdds_portN*) is
            base = name.removeprefix("sem.").removesuffix("_mutex")
            pids = set().union(*[who for used, who in users.items()
                                 if used in (name, base) or used.startswith(base + "_")])
            if include_own:
                pids.discard(me)
            if pids:
                continue
            try:
                (SHM_DIR / name).unlink()
                removed.append(name)
            except OSError:
                pass  # removed by its owner meanwhile
        return removed
