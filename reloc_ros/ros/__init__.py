"""The ROS 2 layer (the only part of reloc_ros that imports rclpy or ROS messages).

Modules, one responsibility each:
    node              ``reloc_node``: the lifecycle node (entry point ``reloc_ros.ros.node:main``)
    parameters        the node's parameter table, validation and ``--help`` text (no rclpy)
    image_conversion  sensor_msgs/Image <-> numpy, to the localizer's uint8 RGB / grey input
    camera_info       sensor_msgs/CameraInfo -> core Camera
    tf_buffer         TF lookups (tf2_ros, or an own buffer over /tf and /tf_static) and broadcasting
    conversions       poses, transforms, covariances, stamps and point clouds <-> messages
    frame_slot        the worker's queue of one (newest frame wins, drops counted)
"""
