"""The node's map: the loaded :class:`~reloc_ros.core.localizer.Localizer`, what it was loaded from, the last load
error, and reloads in a background thread (the current map stays in use until the new one is ready; a failed
reload keeps it). No rclpy: the node passes its logger and what to do after a reload.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from reloc_ros.core.localizer import Localizer, LocalizerConfig, extractor_for_map
from reloc_ros.core.mapdb import MapDatabase
from reloc_ros.ros.parameters import RELOAD_PARAMS

__all__ = ["MapHolder", "load_localizer"]


def load_localizer(want: dict, config: LocalizerConfig, log) -> Localizer:
    """Load the map ``want["map_path"]`` and the extractor recorded in it (a learned one gets ``model_path`` and
    ``inference_provider``). Raises ValueError (no path), MapError, ExtractorError, OSError."""
    if not want["map_path"]:
        raise ValueError("map_path is empty: set it (-p map_path:=DIR, a map built with `reloc map build`)")
    t0 = time.perf_counter()
    db = MapDatabase.load(want["map_path"])
    name = db.extractor_identity.get("name", "")
    kwargs = {}
    if name == "sift":
        if want["model_path"]:
            log.warning(f"map {want['map_path']} was built with SIFT: model_path {want['model_path']!r} is not used")
    else:
        kwargs["provider"] = want["inference_provider"]
        if want["model_path"]:
            kwargs["model_path"] = want["model_path"]
    loc = Localizer(db, extractor_for_map(db, **kwargs), config)
    sessions = db.manifest.get("sessions") or []
    log.info(f"loaded map {want['map_path']} ({len(db)} keyframes, {len(db.valid_points())} points, extractor "
             f"{name}{f', {len(sessions)} sessions' if sessions else ''}, {db.nbytes / 2**20:.0f} MiB of "
             f"map arrays) in {time.perf_counter() - t0:.2f} s")
    if mismatch := loc.low_light_mismatch():
        log.warning(f"map {want['map_path']}: {mismatch}")
    if db.alias_inliers is None:
        log.info(f"map {want['map_path']} has no look-alike analysis: after a cold start every place needs "
                 f"track_min_motion_m of travel (or the turn) before it is published; `reloc map analyse "
                 f"{want['map_path']}` adds it (places without a look-alike then need "
                 "track_min_motion_lookalike_free_m)")
    elif db.alias_relation is None:
        log.info(f"map {want['map_path']}: {int((db.alias_inliers > 0).sum())} of {len(db)} keyframes have a "
                 "look-alike elsewhere in the map (their places need track_min_motion_m after a cold start; "
                 f"`reloc map analyse {want['map_path']}` records where the look-alikes are, so that the node can "
                 "look there and need less motion where they are not)")
    else:
        log.info(f"map {want['map_path']}: {int((db.alias_inliers > 0).sum())} of {len(db)} keyframes have a "
                 "look-alike elsewhere in the map (after a cold start their places need track_min_motion_m unless "
                 "the look-alikes are looked at and not found)")
    return loc


class MapHolder:
    """Args:
        lock: the node's lock (guards the localizer, ``loaded`` and ``error``).
        log: the node's logger.
    """

    def __init__(self, lock, log):
        self._lock, self._log = lock, log
        self.localizer: Localizer | None = None
        self.loaded = dict.fromkeys(RELOAD_PARAMS, "")  # what the localizer was loaded from
        self.error = ""  # why the last load failed ('' after a success)
        self._gen = 0  # reload requests: only the newest one's result counts
        self._stamp: tuple | None = None  # the loaded map's manifest on disk when it was loaded (map_stamp)
        self._pending = False  # a reload is running

    def load_now(self, want: dict, config: LocalizerConfig) -> bool:
        """Load in this thread (configure); on failure the error is kept and False returned."""
        stamp = map_stamp(want["map_path"])
        try:
            loc = load_localizer(want, config, self._log)
        except Exception as e:
            self.error = f"cannot load map: {e}"
            self._log.error(self.error)
            return False
        with self._lock:
            self.localizer, self.loaded, self.error, self._stamp = loc, dict(want), "", stamp
        return True

    def cancel(self) -> bool:
        """Drop a reload still running (its map is not swapped in); True when there was one."""
        with self._lock:
            pending = self._pending
            self._gen += 1
            self._pending = False
        return pending

    def changed_on_disk(self) -> bool:
        """Whether the loaded map's folder now holds another map than the one loaded (e.g. `reloc map update`)."""
        with self._lock:
            path, stamp = self.loaded.get("map_path"), self._stamp
        return bool(path) and map_stamp(path) != stamp

    def clear(self) -> None:
        """Forget the map (cleanup); a reload still running is dropped when it finishes."""
        with self._lock:
            self._gen += 1
            self._pending = False
            self.localizer = None
            self.loaded = dict.fromkeys(RELOAD_PARAMS, "")
            self._stamp = None

    def reload(self, want: dict, config: LocalizerConfig, swapped: Callable[[], None],
               failed: Callable[[dict, bool], None]) -> None:
        """Load ``want`` in a background thread and swap it in, then call ``swapped()``. On failure the current map
        stays and ``failed(loaded, newest)`` is called (``newest``: no later request was made since)."""
        with self._lock:
            self._gen += 1
            gen = self._gen
            self._pending = True
        self._log.info(f"loading map {want['map_path']} in the background (current map stays until then)")
        threading.Thread(target=self._reload, args=(want, config, gen, swapped, failed), name="reloc_map_reload",
                         daemon=True).start()

    def _reload(self, want: dict, config: LocalizerConfig, gen: int, swapped, failed) -> None:
        stamp = map_stamp(want["map_path"])
        try:
            loc = load_localizer(want, config, self._log)
        except Exception as e:  # MapError, ExtractorError, OSError, ...
            with self._lock:
                newest = gen == self._gen
                if newest:
                    self._pending = False
                loaded = dict(self.loaded)
                msg = (f"reloading {want['map_path']!r} failed, keeping {loaded['map_path']!r} (the parameters "
                       f"{', '.join(RELOAD_PARAMS)} are set back to it): {e}")
                if newest:
                    self.error = msg
            self._log.error(msg)
            failed(loaded, newest)
            return
        with self._lock:
            if gen != self._gen:
                return  # a newer request (or a cleanup, or a revert) superseded this one
            self.localizer, self.loaded, self.error, self._stamp = loc, dict(want), "", stamp
            self._pending = False
        swapped()


def map_stamp(path) -> tuple | None:
    """(inode, mtime, size) of a map folder's manifest: a map replaced on disk (atomically, by `reloc map build
    --overwrite` / `update` / `analyse`) has another; None when there is none."""
    try:
        st = os.stat(Path(path) / "manifest.yaml")
    except (OSError, TypeError, ValueError):
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
