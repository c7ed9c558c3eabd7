"""Replay a recorded run (rosbag2) against a map and score it: the check before trusting the localizer on a robot.

Modules:
    run       :class:`ReplayRun` (what a replay produced) and :func:`frame_record` (one scored frame)
    offline   :func:`replay_offline`: every image through the :class:`~reloc_ros.core.localizer.Localizer`,
              as fast as possible, ground truth interpolated at the image stamps (no ROS needed)
    live      :func:`replay_live`: ``reloc_node`` in a subprocess, the bag played into it at the recorded rate
              with ``/clock`` (rclpy), its ``~/pose`` and ``/diagnostics`` recorded and scored
    report    summary (the keys of ``reloc eval``), Markdown, PNG plots, TUM trajectories for ``evo``
    ros_process  the ROS environment of the replay's processes and ``reloc_node`` in a subprocess (also used by
              tools/soak.py and the tests)
    shm       removal of the Fast DDS shared-memory files that ROS processes leave in /dev/shm

The command line is ``reloc eval-bag`` (reloc_ros/cli/replay_cmd.py); user docs in docs/replay.md.
"""

from reloc_ros.replay.run import ReplayRun, frame_record

__all__ = ["ReplayRun", "frame_record"]
