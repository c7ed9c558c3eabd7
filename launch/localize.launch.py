"""Launch the relocalization node (and optionally RViz).

    ros2 launch reloc_ros localize.launch.py map:=/maps/office image:=/camera/image_raw \
        camera_info:=/camera/camera_info [use_sim_time:=true] [rviz:=true]

Arguments:
    map            map directory built with `reloc map build` (sets the map_path parameter)
    model          learned model file ('' = the extractor recorded in the map, e.g. SIFT)
    params_file    node parameters (default: share/reloc_ros/config/localizer.yaml)
    namespace      namespace of the node (its topics become /<namespace>/reloc_node/...)
    use_sim_time   use /clock (bag replay)
    image          image topic remapped onto the node's `image` input
    camera_info    camera info topic remapped onto the node's `camera_info` input
    fastdds_profile Fast DDS XML profile (shared memory with 16 MiB segments for VGA images); give the camera
                   driver / bag player the same FASTDDS_DEFAULT_PROFILES_FILE
    rviz           start RViz with config/reloc.rviz
    autostart      true: the node configures and activates itself (standalone); false: it waits for lifecycle
                   transitions - use false under Nav2's lifecycle_manager (add reloc_node to its node_names), whose
                   configure would otherwise find the node already active and fail
    tf_mode        map_odom (odometry on TF: the node publishes map -> odom), map_base (no odometry: map ->
                   base_link) or none (no TF, e.g. when robot_localization or AMCL publishes map -> odom);
                   '' (default) keeps the params file's value (map_odom in config/localizer.yaml)
    rviz_config    RViz config file (default: share/reloc_ros/config/reloc.rviz)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "reloc_ros"
EXECUTABLE = "reloc_node"
NODE_NAME = "reloc_node"


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    default_params = os.path.join(share, "config", "localizer.yaml")
    default_rviz = os.path.join(share, "config", "reloc.rviz")
    default_profile = os.path.join(share, "config", "fastdds_shm.xml")

    use_sim_time = LaunchConfiguration("use_sim_time")
    args = [
        DeclareLaunchArgument("map", default_value="", description="map directory (reloc map build --out)"),
        DeclareLaunchArgument("model", default_value="", description="learned model file ('' = as in the map)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameter YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="input image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="input camera info topic"),
        DeclareLaunchArgument("fastdds_profile", default_value=default_profile,
                              description="Fast DDS profile (SHM transport with 16 MiB segments)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at start; false under Nav2's lifecycle_manager"),
        DeclareLaunchArgument("rviz_config", default_value=default_rviz, description="RViz config file"),
        DeclareLaunchArgument("tf_mode", default_value="",
                              description="map_odom | map_base (no odometry) | none; '' = the params file's"),
    ]
    env = [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )
    return LaunchDescription(args + env + [OpaqueFunction(function=_reloc_node), rviz])


def _reloc_node(context):
    """The node; map / model / tf_mode override the params file only when given (an empty argument keeps the
    file's)."""
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1"),
                 "autostart": LaunchConfiguration("autostart").perform(context).lower() in ("true", "1")}
    map_path = LaunchConfiguration("map").perform(context)
    model_path = LaunchConfiguration("model").perform(context)
    if map_path:
        overrides["map_path"] = map_path
    if model_path:
        overrides["model_path"] = model_path
    tf_mode = LaunchConfiguration("tf_mode").perform(context)
    if tf_mode:  # the node checks the value at start and says what it accepts
        overrides["tf_mode"] = tf_mode
    node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
    )
    return [node]
