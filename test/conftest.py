"""Test-wide settings: every ROS process started by the tests stays on this machine (see ENVIRONMENT.md)."""

import os
import tempfile

# Set before anything imports rclpy. Child processes inherit these.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="reloc_ros_test_log_"))
