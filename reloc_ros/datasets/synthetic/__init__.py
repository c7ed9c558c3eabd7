"""Deterministic synthetic indoor RGB-D relocalization benchmark (the project's own data).

Scenes of textured axis-aligned rooms and boxes (photos from scikit-image + procedural textures), rendered by a
vectorised numpy ray caster with exact z-depth and poses, baked lighting with shadows, sensor noise; a mapping
run and two query runs (same light / changed light) along different paths; written in the 7-Scenes layout and,
optionally, as rosbag2 (mcap) recordings with odometry TF and ground truth.

Example::

    from reloc_ros.datasets.synthetic import generate
    generate("office", Path("data/synth/office"), n_map=300, n_query=150, bag=True)

Command line: ``reloc data synth --scene office --out data/synth/office [--bag]`` (see :mod:`.cli`).
"""

from reloc_ros.datasets.synthetic.lighting import LightSetup, SensorModel, run_setups
from reloc_ros.datasets.synthetic.renderer import Renderer, render
from reloc_ros.datasets.synthetic.scene import SCENES, Scene, SceneError, make_scene
from reloc_ros.datasets.synthetic.trajectory import mount_T_base_from_cam, plan_runs
from reloc_ros.datasets.synthetic.writer import (DEFAULT_CAMERA, DEFAULT_N_MAP, DEFAULT_N_QUERY, GENERATOR_VERSION,
                                                 RUNS, SynthError, generate, generate_or_reuse, scene_build_key)

__all__ = [
    "generate_or_reuse",
    "scene_build_key",
    "SCENES", "make_scene", "render", "generate", "Scene", "SceneError", "SynthError", "Renderer", "LightSetup",
    "SensorModel", "run_setups", "plan_runs", "mount_T_base_from_cam", "DEFAULT_CAMERA", "DEFAULT_N_MAP",
    "DEFAULT_N_QUERY", "GENERATOR_VERSION", "RUNS",
]
