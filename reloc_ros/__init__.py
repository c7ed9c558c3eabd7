"""reloc_ros: real-time visual relocalization for ROS 2 robots.

The core (``reloc_ros.core``) is pure Python (numpy / OpenCV / faiss) and never imports ROS;
``reloc_ros.ros`` is the only layer that knows ROS messages.
"""

__version__ = "0.1.0"
