"""The ROS 2 layer (the only part of reloc_ros that imports rclpy or ROS messages).

Modules, one responsibility each:
    node              ``reloc_node``: lifecycle, parameters, subscriptions, services (entry ``reloc_ros.ros.node:main``)
    frame_processor   a frame's steps: checks, extraction, localization, the tracker's decision, publication
    frame_worker      the worker threads (one, or two pipelined stages); frame_slot: their queues of one
    map_holder        the loaded map and its background reloads
    outputs           publishers, the path and the map->odom republication
    diagnostics       counters and the /diagnostics status
    camera_info       the CameraInfo of each image (CameraInfoSync)
    frame_tf          a frame's TF lookups at its stamp
    tf_buffer         TF client (tf2_ros, or the core buffer over /tf and /tf_static) and broadcasting
    parameters        NodeConfig, the node parameters derived from the configs, validation, ``--help`` (no rclpy)
    image_conversion  sensor_msgs/Image <-> numpy (cv_bridge when it works, else core.image_decoding)
    conversions       poses, transforms, covariances, stamps, point clouds, /initialpose <-> messages
"""
