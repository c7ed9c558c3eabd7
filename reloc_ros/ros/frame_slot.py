"""Queues of one between threads: the newest item wins, replaced items are counted as dropped.

:class:`LatestSlot` hands frames from the ROS callbacks to the (first) worker; :class:`HandOver` hands extracted
frames from the first pipeline stage to the second and also tells the producer when the consumer is idle.
"""

from __future__ import annotations

import threading

__all__ = ["LatestSlot", "HandOver"]


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


class HandOver(LatestSlot):
    """A :class:`LatestSlot` between two pipeline stages whose consumer reports when it finished an item.

    The consumer calls :meth:`task_done` after each item :meth:`get` gave it; the producer can then
    :meth:`wait_idle` until nothing is waiting and nothing is being worked on (to keep what it reports in order
    after the consumer's reports, or to reset state no item in flight depends on).
    """

    def __init__(self):
        super().__init__()
        self._busy = False

    def put(self, item) -> bool:
        with self._cond:
            replaced = super().put(item)
            self._cond.notify_all()  # the consumer's get() and a wait_idle() may both wait on the condition
            return replaced

    def get(self, timeout: float | None = None):
        with self._cond:
            item = super().get(timeout)
            self._busy = item is not None
            return item

    def task_done(self) -> None:
        """The consumer finished the item it took last."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no item is waiting or being worked on (or the hand-over is closed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or (self._item is None and not self._busy), timeout)
