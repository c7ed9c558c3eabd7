"""The node's worker threads: frames from the ROS callbacks to inference and back, newest frame wins.

Without the pipeline one worker takes the newest frame and does all of it (``process``). With it, stage 1
(``extract``) prepares and extracts the newest frame while stage 2 (``localize``) localizes the newest extracted one;
a hand-over of one between them (newest wins, replaced frames counted as dropped). Nothing here knows what a frame
holds: the node passes the steps in. No rclpy (the node passes its context check).
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from reloc_ros.ros.frame_slot import HandOver, LatestSlot

__all__ = ["Frame", "FrameWorkers"]


@dataclass
class Frame:
    """An image as received, with the TF looked up for its stamp."""

    msg: Any  # sensor_msgs/Image
    stamp_ns: int
    t_recv: float  # time.monotonic() at reception
    tf: dict = field(default_factory=dict)  # (target, source) -> 4x4 looked up at the stamp (each looked up once)


class _ShuttingDown(Exception):
    """Ends a worker: a frame failed because the node is shutting down (not a frame error)."""


class FrameWorkers:
    """The worker threads of the node (see the module docstring).

    Args:
        process: pipeline off: a whole frame.
        extract: pipeline stage 1: a frame -> work for stage 2 (an object with ``frame`` and ``t_handed``), or None
            when the frame ends there.
        localize: pipeline stage 2: the work of stage 1.
        done: called with every frame once it is finished (in frame order).
        internal_error: called with the traceback (its last 3 frames, and whole) of an exception a step raised
            (the frame then ends).
        running: False when the node is shutting down (an exception then ends the worker quietly).
    """

    def __init__(self, process: Callable, extract: Callable, localize: Callable, done: Callable,
                 internal_error: Callable[[str, str], None], running: Callable[[], bool]):
        self._process, self._extract, self._localize = process, extract, localize
        self._done, self._internal_error, self._running = done, internal_error, running
        self.slot = LatestSlot()  # callbacks -> the worker (pipeline: stage 1)
        self.handover: HandOver | None = None  # pipeline stage 1 -> stage 2
        self.threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def values(self, pipeline_param: bool) -> dict:
        """The /diagnostics key-value pairs of the queues (``pipeline``: running, else the parameter's next)."""
        h = self.handover
        return {"frames_dropped_handover": h.dropped if h is not None else 0,  # replaced before stage 2
                "queue_frames": self.slot.pending,  # the worker's (pipeline: stage 1's) queue of one
                "queue_extracted": h.pending if h is not None else 0,  # stage 2's queue of one
                "pipeline": h is not None if self.threads else pipeline_param}

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self, pipeline: bool) -> None:
        self._stop.clear()
        self.slot = LatestSlot()
        if pipeline:
            self.handover = HandOver()
            loops = {"reloc_extract": self._extract_loop, "reloc_localize": self._localize_loop}
        else:
            self.handover = None
            loops = {"reloc_worker": self._worker_loop}
        self.threads = [threading.Thread(target=self._run_loop, args=(loop,), name=name, daemon=True)
                        for name, loop in loops.items()]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self.slot.close()
        if self.handover is not None:
            self.handover.close()
        for t in self.threads:
            t.join(timeout=10.0)
        self.threads = []

    def put(self, frame: Frame) -> None:
        """A new frame from the callbacks; an older one not yet started is dropped (counted)."""
        self.slot.put(frame)

    @property
    def dropped(self) -> int:
        """Frames dropped in the queues (the slot and the hand-over)."""
        return self.slot.dropped + (self.handover.dropped if self.handover is not None else 0)

    def settle(self) -> None:
        """Pipeline stage 1, before it reports a frame's end or resets state: wait until stage 2 finished the frames
        handed to it, so that reports stay in frame order and a reset hits no frame in flight (no-op without the
        pipeline)."""
        handover = self.handover
        if handover is None:
            return
        while not handover.wait_idle(0.2) and not self._stop.is_set():
            pass

    # ---------------------------------------------------------------------------------------------
    def _run_loop(self, loop) -> None:
        try:
            loop()
        except _ShuttingDown:
            pass

    def _worker_loop(self) -> None:
        """pipeline false: the newest frame, start to end, in one thread."""
        slot = self.slot
        while not self._stop.is_set():
            frame = slot.get(timeout=0.2)
            if frame is None:
                continue
            self._safely(self._process, frame)
            self._done(frame)

    def _extract_loop(self) -> None:
        """Pipeline stage 1: the newest frame -> checks, CameraInfo, image, features -> the hand-over to stage 2."""
        slot, handover = self.slot, self.handover
        while not self._stop.is_set():
            frame = slot.get(timeout=0.2)
            if frame is None:
                continue
            work = self._safely(self._extract, frame, settle=True)
            if work is None:
                self._done(frame)  # it ended here, reported after stage 2 finished the frames before it
                continue
            work.t_handed = time.monotonic()
            handover.put(work)  # an extracted frame stage 2 has not started yet is replaced and counted as dropped

    def _localize_loop(self) -> None:
        """Pipeline stage 2: the newest extracted frame -> retrieval, matching, PnP -> tracking, publishing."""
        handover = self.handover
        while not self._stop.is_set():
            work = handover.get(timeout=0.2)
            if work is None:
                continue
            try:
                self._safely(self._localize, work)
                self._done(work.frame)
            finally:
                handover.task_done()

    def _safely(self, step, item, settle: bool = False):
        """``step(item)``; an exception is reported as the frame's internal error (after :meth:`settle` when
        ``settle``) and gives None, or ends the worker when the node is shutting down (Ctrl-C shuts the context
        down under the workers: not a frame error)."""
        try:
            return step(item)
        except Exception:
            if self._stop.is_set() or not self._running():
                raise _ShuttingDown from None
            if settle:
                self.settle()
            self._internal_error(traceback.format_exc(limit=3), traceback.format_exc())
            return None
