"""ament_python package reloc_ros (also pip-installable into a plain venv)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "reloc_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["reloc_ros", "reloc_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
        ("share/" + package_name + "/models", glob("models/*.onnx") + glob("models/*.md") + ["models/SHA256SUMS"]),
        ("share/" + package_name + "/models/matchers", glob("models/matchers/*.onnx") + ["models/matchers/SHA256SUMS"]),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "faiss-cpu>=1.7.4",
        "h5py>=3.8",
        "pyyaml>=6",
        "transforms3d>=0.4.1",
        "poselib>=2.0",
        "rosbags>=0.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "threadpoolctl>=3.1",
    ],
    extras_require={
        "cpu": ["onnxruntime>=1.17", "onnx>=1.16"],
        "gpu": ["onnxruntime-gpu>=1.17", "onnx>=1.16"],
        "train": ["torch==2.13.0", "onnx>=1.16"],
        "synth": ["scikit-image>=0.22"],
        "ros": [
            "ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-sensor-msgs", "ros-geometry-msgs", "ros-nav-msgs",
            "ros-visualization-msgs", "ros-diagnostic-msgs", "ros-std-msgs", "ros-std-srvs",
        ],
        "test": ["pytest>=7", "hypothesis>=6"],
    },
    zip_safe=True,
    maintainer="reloc_ros maintainers",
    maintainer_email="reloc-ros@example.com",
    description="Real-time visual relocalization for ROS 2: learned retrieval + local features + PnP",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "reloc = reloc_ros.cli.main:main",
            "reloc_node = reloc_ros.ros.node:main",
        ],
    },
)
