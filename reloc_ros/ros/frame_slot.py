"""A queue of one for a worker thread: the newest item wins, replaced items are counted as dropped."""

from __future__ import annotations

import threading

__all__ = ["LatestSlot"]


class LatestSlot:
    """Hand the newest item from producers (ROS callbacks) to one consumer (the inference worker).

    ``put`` never blocks; an item not yet taken when a newer one arrives is dropped and counted.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0

    def put(self, item) -> bool:
        """Store ``item``; returns True when it replaced (dropped) an older one."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None):
        """The newest item, waiting up to ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Items waiting (0 or 1)."""
        return int(self._item is not None)
