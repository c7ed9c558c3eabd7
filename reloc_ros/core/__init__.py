"""Localization core: geometry, cameras, features, map database, retrieval, matching, PnP.

Nothing in this package imports rclpy or ROS messages.
"""
