"""Writes a synthetic scene's runs as a 7-Scenes-style folder (and optionally rosbag2 recordings).

Layout of ``out/``::

    camera.yaml            width, height, fx, fy, cx, cy, distortion_model: none, dist: []
    TrainSplit.txt         sequence1                       (the mapping run)
    TestSplit.txt          sequence2, sequence3            (the query runs)
    sequences.yaml         seq-01: mapping, seq-02: query_same_light, seq-03: query_light_change
    scene.yaml             scene, seed, generator version, frame counts, light / sensor per run, mount, ...
    seq-XX/frame-NNNNNN.color.png   RGB (a normal PNG)
    seq-XX/frame-NNNNNN.depth.png   uint16 millimetres of z-depth, 0 = invalid / no hit
    seq-XX/frame-NNNNNN.pose.txt    4x4 T_world_from_cam of the camera optical frame ('%.9f')
    seq-XX/times.txt                "frame-NNNNNN <seconds>" (30 Hz; seq-01 starts at 1000 s)
    bags/{mapping,query_1,query_2}/ rosbag2 mcap (with ``bag=True``; see :mod:`.bag`)

The folder is built beside ``out`` under a temporary name and renamed when complete.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from reloc_ros.core.camera import Camera
from reloc_ros.core.config import digest
from reloc_ros.datasets.synthetic.lighting import LightSetup, SensorModel, session_setups
from reloc_ros.datasets.synthetic.renderer import Renderer, _quantize, apply_sensor
from reloc_ros.datasets.synthetic.scene import Scene, make_scene, scene_rng
from reloc_ros.datasets.synthetic.sessions import SESSIONS, apply_session, check_session, session_seed
from reloc_ros.datasets.synthetic.trajectory import FRAME_RATE_HZ, MOUNT, Trajectory, plan_runs, simulate_odometry

__all__ = ["generate", "generate_or_reuse", "scene_build_key", "DEFAULT_CAMERA", "DEFAULT_N_MAP", "DEFAULT_N_QUERY", "RUNS", "GENERATOR_VERSION",
           "SynthError", "write_frame_files", "run_odometry"]

GENERATOR_VERSION = "1.0.0"
DEFAULT_CAMERA = Camera(640, 480, 525.0, 525.0, 319.5, 239.5)
DEFAULT_N_MAP = 1000  # 33 s at 30 Hz: the mapping tour forwards then backwards
DEFAULT_N_QUERY = 500  # 17 s at 30 Hz per query run
# (sequence folder, run name, bag folder)
RUNS = (("seq-01", "mapping", "mapping"), ("seq-02", "query_same_light", "query_1"),
        ("seq-03", "query_light_change", "query_2"))
_DEPTH_MAX_MM = 65535


class SynthError(RuntimeError):
    """The output folder cannot be written (exists and is not empty, ...)."""


@dataclass
class _Job:
    """What a worker needs to render and write frames (sent once to every worker process)."""

    renderer: Renderer
    camera: Camera
    lights: dict[str, LightSetup]
    sensors: dict[str, SensorModel]
    trajs: dict[str, Trajectory]
    root: Path
    seed: int
    png_level: int = 1


_JOB: _Job | None = None  # set only inside worker processes (and for the in-process path) by _init_worker


def _init_worker(job: _Job | None, tune_process: bool = False) -> None:
    """Install the job of this process; ``tune_process`` (worker processes only): one OpenCV thread, and
    glibc malloc keeps freed memory instead of returning it (avoids ~10 ms/frame of page faults)."""
    global _JOB
    if tune_process:
        cv2.setNumThreads(1)
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
            libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass
    _JOB = job


def write_frame_files(seq_dir: Path, k: int, rgb_HW3: np.ndarray, depth_HW: np.ndarray, T_world_from_cam: np.ndarray,
                      png_level: int = 1) -> None:
    """Write ``frame-k.{color.png, depth.png, pose.txt}`` (RGB in, PNG stored BGR as usual).

    Depth: z in metres -> uint16 millimetres, 0 where invalid or beyond 65.535 m.
    """
    stem = seq_dir / f"frame-{k:06d}"
    # Fast lossless PNG: zlib level 1 with the "sub" row filter (about 2x faster than adaptive filtering).
    params = [cv2.IMWRITE_PNG_COMPRESSION, png_level, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    if not cv2.imwrite(f"{stem}.color.png", cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"cannot write {stem}.color.png")
    mm = np.rint(np.nan_to_num(depth_HW, nan=0.0, posinf=0.0, neginf=0.0) * np.float32(1000.0))
    mm[(mm > _DEPTH_MAX_MM) | (mm < 0)] = 0
    if not cv2.imwrite(f"{stem}.depth.png", mm.astype(np.uint16), params):
        raise OSError(f"cannot write {stem}.depth.png")
    with open(f"{stem}.pose.txt", "w") as f:
        for row in np.asarray(T_world_from_cam, np.float64):
            f.write(" ".join(f"{v:.9f}" for v in row) + "\n")


def _frame_rng(seed: int, run_index: int, k: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 7919, run_index, k])


def _render_task(task: tuple[int, str, str, int]) -> int:
    run_index, run, seq, k = task
    job = _JOB
    assert job is not None, "worker not initialised"
    T = job.trajs[run].T_world_from_cam[k]
    rgb_f, depth, _ = job.renderer.render_linear(T, job.camera, job.lights[run])
    rgb_f = apply_sensor(rgb_f, job.sensors[run], _frame_rng(job.seed, run_index, k))
    write_frame_files(job.root / seq, k, _quantize(rgb_f), depth, T, job.png_level)
    return 1


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"output folder {out} is not empty; choose a new folder or pass --overwrite")
        if not (out / "scene.yaml").is_file():
            raise SynthError(
                f"output folder {out} is not empty and does not look like a synthetic dataset (no scene.yaml); "
                "refusing to delete it even with --overwrite: choose a new or empty folder"
            )


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def scene_build_key(scene: str, n_map: int = DEFAULT_N_MAP, n_query: int = DEFAULT_N_QUERY, seed: int = 0,
                    bag: bool = False, stride: int = 1, camera: Camera | None = None,
                    speed_mps: float | None = None, session: int = 0) -> str:
    """The digest of everything a generated scene depends on (recorded in its scene.yaml as ``build_key``)."""
    cam = camera or DEFAULT_CAMERA
    extra = {"session": int(session)} if session else {}  # session 0 keeps the keys of scenes made before sessions
    return digest({**extra, "generator_version": GENERATOR_VERSION, "scene": scene, "n_map": int(n_map),
                   "n_query": int(n_query), "seed": int(seed), "bag": bool(bag), "stride": int(stride),
                   "camera": [cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, cam.distortion_model,
                              list(cam.dist)], "speed_mps": speed_mps})


def generate_or_reuse(scene: str, out: Path, **kwargs) -> tuple[Path, bool]:
    """The scene at ``out`` when its scene.yaml records the build key of these arguments (:func:`generate`'s),
    else generated there (replacing a generated scene of other arguments; any other folder is refused).
    Returns (out, reused). The one way drivers (bench, ablate, tools) reuse generated scenes."""
    keys = ("n_map", "n_query", "seed", "bag", "stride", "camera", "speed_mps", "session")
    key = scene_build_key(scene, **{k: kwargs[k] for k in keys if k in kwargs})
    try:
        if yaml.safe_load((Path(out) / "scene.yaml").read_text()).get("build_key") == key:
            return Path(out), True
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return generate(scene, out, overwrite=True, **kwargs), False


def generate(scene: str, out: Path, n_map: int = DEFAULT_N_MAP, n_query: int = DEFAULT_N_QUERY, seed: int = 0,
             bag: bool = False, stride: int = 1, *, camera: Camera | None = None, workers: int | None = None,
             overwrite: bool = False, progress: bool = True, speed_mps: float | None = None, session: int = 0) -> Path:
    """Generate the mapping run and two query runs of a synthetic scene.

    Args:
        scene: a name of :data:`~reloc_ros.datasets.synthetic.SCENES` or a training name ``train_*``.
        out: output folder (created; must be absent or empty unless ``overwrite``).
        n_map: frames of the mapping run (default 1000 = 33 s at 30 Hz; the tour is driven both ways).
        n_query: frames of each query run (default 500 = 17 s).
        seed: seeds the scene details, paths, lights, sensor noise and odometry drift.
        bag: also write rosbag2 (mcap) recordings under ``out/bags/`` (about 1.5 MB per VGA frame: colour, depth, poses).
        stride: keep every ``stride``-th frame of the 30 Hz trajectory (the run lasts ``stride`` times longer).
        camera: intrinsics (default 640x480, f = 525, principal point (319.5, 239.5)).
        workers: rendering processes (default: min(2, CPU count)); 1 renders in this process.
        overwrite: replace an existing synthetic dataset folder (one with a scene.yaml).
        progress: print progress to stderr.
        speed_mps: nominal carrier speed (default :data:`~.trajectory.NOMINAL_SPEED_MPS`).
        session: another visit to the same scene in the same world frame (:mod:`.sessions`: 1 evening with
            furniture moved, 2 night); 0 (default) is the scene as built.

    Returns:
        ``out``.

    Raises:
        SceneError: unknown scene name. SynthError: the output folder cannot be used. ValueError: bad counts.
    """
    t_start = time.perf_counter()
    out = Path(out)
    if n_map < 1 or n_query < 1:
        raise ValueError(f"n_map and n_query must be >= 1 (got {n_map}, {n_query})")
    if stride < 1:
        raise ValueError(f"stride must be >= 1 (got {stride})")
    camera = camera or DEFAULT_CAMERA
    check_session(session)
    sc: Scene = make_scene(scene, seed)  # validates the name before touching the disk
    _prepare_out(out, overwrite)
    sc, changes = apply_session(sc, session, seed)
    run_seed = session_seed(seed, session)  # trajectories, sensor noise and odometry of this visit
    workers = max(1, min(2, os.cpu_count() or 1)) if workers is None else max(1, int(workers))

    _log(f"[synth] scene {scene!r} (seed {seed}{f', session {session}' if session else ''}): {len(sc.quads)} "
         f"quads, {len(sc.textures)} textures", progress)
    lights, sensors = session_setups(sc, session, seed)
    counts = {"mapping": n_map, "query_same_light": n_query, "query_light_change": n_query}
    kw = {} if speed_mps is None else {"speed_mps": speed_mps}
    trajs = plan_runs(sc, counts, run_seed, stride, **kw)
    renderer = Renderer(sc)
    for run in counts:  # bake light maps before forking: workers inherit them
        renderer.lightmaps(lights[run])
    t_setup = time.perf_counter() - t_start

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_meta_files(tmp, camera)
        for seq, run, _ in RUNS:
            (tmp / seq).mkdir()
            with open(tmp / seq / "times.txt", "w") as f:
                for k, t_ns in enumerate(trajs[run].times_ns):
                    f.write(f"frame-{k:06d} {int(t_ns) // 1_000_000_000}.{int(t_ns) % 1_000_000_000:09d}\n")

        job = _Job(renderer, camera, lights, sensors, trajs, tmp, run_seed)
        tasks = [(i, run, seq, k) for i, (seq, run, _) in enumerate(RUNS) for k in range(counts[run])]
        t0 = time.perf_counter()
        done = 0
        step = max(1, len(tasks) // 20)
        if workers == 1:
            prev = _JOB
            _init_worker(job)
            try:
                for task in tasks:
                    done += _render_task(task)
                    if done % step == 0:
                        _progress(done, len(tasks), t0, progress)
            finally:
                _init_worker(prev)
        else:
            # "spawn": fresh interpreters; forking a process whose BLAS / OpenCV thread pools are running can
            # deadlock the children. The job (scene, atlas, baked light maps) is pickled once per worker.
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(job, True)) as pool:
                for r in pool.imap_unordered(_render_task, tasks, chunksize=4):
                    done += r
                    if done % step == 0:
                        _progress(done, len(tasks), t0, progress)
        t_render = time.perf_counter() - t0

        t_bag = 0.0
        if bag:
            from reloc_ros.datasets.synthetic.bag import write_run_bag

            tb = time.perf_counter()
            for seq, run, bag_name in RUNS:
                tr = trajs[run]
                odom = simulate_odometry(tr.T_world_from_base, scene_rng(sc.name, run_seed, f"odom_{run}"))
                paths = [tmp / seq / f"frame-{k:06d}.color.png" for k in range(len(tr))]
                depths = [tmp / seq / f"frame-{k:06d}.depth.png" for k in range(len(tr))]
                write_run_bag(tmp / "bags" / bag_name, paths, tr.times_ns, camera, tr.T_world_from_cam, odom,
                              tr.T_base_from_cam, depth_paths=depths)
                _log(f"[synth] wrote bag {bag_name} ({len(tr)} frames)", progress)
            t_bag = time.perf_counter() - tb

        timing = {"setup_s": round(t_setup, 2), "render_write_s": round(t_render, 2), "bags_s": round(t_bag, 2),
                  "frames": len(tasks), "ms_per_frame": round(1000 * t_render / max(len(tasks), 1), 1),
                  "workers": workers}
        key = scene_build_key(scene, n_map, n_query, seed, bag, stride, camera, speed_mps, session)
        _write_scene_yaml(tmp, sc, seed, camera, stride, counts, trajs, lights, sensors, bag, timing, key,
                          session, changes)
        if out.exists():
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(f"[synth] {out}: {len(tasks)} frames in {time.perf_counter() - t_start:.1f} s "
         f"(setup {t_setup:.1f} s, render+write {t_render:.1f} s = {timing['ms_per_frame']} ms/frame"
         f"{f', bags {t_bag:.1f} s' if bag else ''})", progress)
    return out


def _progress(done: int, total: int, t0: float, progress: bool) -> None:
    el = time.perf_counter() - t0
    eta = el / done * (total - done)
    _log(f"[synth] {done}/{total} frames ({done / max(el, 1e-9):.1f} fps, ETA {eta:.0f} s)", progress)


def _write_meta_files(root: Path, camera: Camera) -> None:
    cam = {"width": int(camera.width), "height": int(camera.height), "fx": float(camera.fx), "fy": float(camera.fy),
           "cx": float(camera.cx), "cy": float(camera.cy), "distortion_model": "none", "dist": []}
    (root / "camera.yaml").write_text(yaml.safe_dump(cam, sort_keys=False))
    (root / "TrainSplit.txt").write_text("sequence1\n")
    (root / "TestSplit.txt").write_text("sequence2\nsequence3\n")
    (root / "sequences.yaml").write_text(yaml.safe_dump({seq: run for seq, run, _ in RUNS}, sort_keys=False))


def _write_scene_yaml(root, sc: Scene, seed, camera, stride, counts, trajs, lights, sensors, bag, timing,
                      build_key: str, session: int = 0, changes: dict | None = None) -> None:
    runs = {}
    for seq, run, bag_name in RUNS:
        tr = trajs[run]
        runs[seq] = {
            "label": run,
            "frames": int(counts[run]),
            "t_start_s": float(tr.times_ns[0] / 1e9),
            "t_end_s": float(tr.times_ns[-1] / 1e9),
            "path_length_m": round(float(tr.path_length_m), 3),
            "mean_speed_mps": round(float(tr.mean_speed_mps), 3),
            "camera_height_m": [round(float(tr.T_world_from_cam[:, 2, 3].min()), 3),
                                round(float(tr.T_world_from_cam[:, 2, 3].max()), 3)],
            "light": lights[run].to_dict(),
            "sensor": sensors[run].to_dict(),
            "bag": f"bags/{bag_name}" if bag else None,
        }
    meta = {
        "scene": sc.name,
        "seed": int(seed),
        "generator": "reloc_ros.datasets.synthetic",
        "generator_version": GENERATOR_VERSION,
        "build_key": build_key,  # scene_build_key(): generate_or_reuse() reuses the scene only when it matches
        **({"session": int(session), "session_name": SESSIONS[session], "session_changes": changes}
           if session else {}),
        "archetype": sc.archetype,
        "world_frame": "map: REP-103, metres, z up, floor at z = 0",
        "frame_rate_hz": FRAME_RATE_HZ,
        "stride": int(stride),
        "frame_counts": {seq: int(counts[run]) for seq, run, _ in RUNS},
        "camera": camera.to_dict(),
        "depth": {"format": "png uint16", "unit": "mm", "invalid": 0, "kind": "z-depth of the optical frame"},
        "pose": "frame-NNNNNN.pose.txt = 4x4 T_world_from_cam, camera optical frame (x right, y down, z forward)",
        "mount": {"parent": "base_link", "child": "camera_optical", **{k: float(v) for k, v in MOUNT.items()},
                  "T_base_from_cam": [[round(float(v), 9) for v in row] for row in trajs["mapping"].T_base_from_cam]},
        "runs": runs,
        "scene_summary": sc.summary(),
        "timing": timing,
    }
    (root / "scene.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def run_odometry(dataset_dir: Path, sequence: str, T_world_from_cam_N44: np.ndarray) -> np.ndarray:
    """``[N x 4 x 4] T_odom_from_cam`` of a generated run: the odometry its bag carries (``odom -> base_link``, the
    same drift model and seed as :func:`generate`), composed with the mount. For replaying a run's query frames
    through the place tracker as the node sees them (``reloc eval --track``).

    Args:
        dataset_dir: a folder written by :func:`generate` (it has ``scene.yaml``).
        sequence: ``seq-02`` ...; T_world_from_cam_N44: the run's ground-truth camera poses, every frame in order.

    Raises:
        SynthError: not a generated scene, or an unknown sequence.
    """
    meta_path = Path(dataset_dir) / "scene.yaml"
    if not meta_path.is_file():
        raise SynthError(f"{dataset_dir} has no scene.yaml: odometry can only be replayed for scenes made by "
                         "`reloc data synth` (use --no-odometry for other datasets)")
    meta = yaml.safe_load(meta_path.read_text())
    runs = {seq: run for seq, run, _ in RUNS}
    if sequence not in runs:
        raise SynthError(f"{dataset_dir}: unknown sequence {sequence!r} (have {sorted(runs)})")
    from reloc_ros.core.geometry import invert_T
    from reloc_ros.datasets.synthetic.trajectory import mount_T_base_from_cam

    T_base_from_cam = mount_T_base_from_cam()
    T_world_from_base = np.asarray(T_world_from_cam_N44, np.float64) @ invert_T(T_base_from_cam)
    seed = session_seed(int(meta["seed"]), int(meta.get("session", 0)))
    odom = simulate_odometry(T_world_from_base, scene_rng(str(meta["scene"]), seed, f"odom_{runs[sequence]}"))
    return odom @ T_base_from_cam
