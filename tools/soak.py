#!/usr/bin/env python3
"""Soak: drive ``reloc_node`` (its own process) at 30 Hz with a synthetic query run for N minutes and report
what a long run does to it.

    python tools/soak.py --minutes 10 --json soak.json          # the 10-minute soak (nice it on shared machines)
    python tools/soak.py --seconds 60                            # what test/test_node_soak.py runs

Without ``--dataset``/``--map`` it generates a small synthetic ``office`` scene (mapping run -> SIFT map; the two
query runs are the stream) in ``--work``. The query frames are played in a loop, stamped with the wall clock
(like a live camera), with odometry on ``/tf`` (``odom -> base_link`` = ground truth, so the odometry check
sees a consistent robot) and a static ``base_link -> camera_optical``.

Reported (printed as a table and written as JSON): node RSS over time and its slope after the warm-up (MB/min),
threads and open file descriptors, the node's queue sizes (worker queue of one, CameraInfo buffer, path),
frames published / received / processed / dropped (newest-frame-wins) / lost in transport, poses published and
how many are wrong against ground truth (> 0.5 m or 5 deg), the node's exit code, and the Fast DDS files in
/dev/shm that the node and this process used and that were left after both closed (reported, then removed).

Every ROS process runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, its own ROS_DOMAIN_ID and a temporary
ROS_LOG_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from reloc_ros.replay.ros_process import NodeProcess, ros_env, use_ros_env
from reloc_ros.replay.shm import SHM_DIR as SHM
from reloc_ros.replay.shm import shm_used_by

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000


# --------------------------------------------------------------------------------------------------
# process and /dev/shm accounting
def proc_status(pid: int) -> dict:
    """RSS (MB), threads and open file descriptors of a live process ({} when it is gone)."""
    try:
        st = {k: v.strip() for k, v in (ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text()
                                        .splitlines() if ":" in ln)}
        return {"rss_mb": int(st["VmRSS"].split()[0]) / 1024.0, "threads": int(st["Threads"]),
                "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    except (OSError, KeyError, ValueError):
        return {}


def shm_files_used_by(pid: int) -> set[str]:
    """The Fast DDS files under /dev/shm that a process maps or holds open."""
    return {n for n in shm_used_by(pid) if "fastdds" in n}


def shm_related(names: set[str]) -> set[str]:
    """The files of ``names`` plus their semaphores / lock files (``sem.X``, ``X_el``, ...)."""
    try:
        present = {p.name for p in SHM.iterdir()}
    except OSError:
        return set()
    out = set()
    for p in present:
        base = p[len("sem."):] if p.startswith("sem.") else p
        if any(base == n or base.startswith(n) or n.startswith(base) for n in names):
            out.add(p)
    return out


def shm_in_use_by_others(names: set[str]) -> set[str]:
    """Those of ``names`` that a live process other than this one maps or holds open."""
    busy = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            used = shm_files_used_by(int(proc.name))
            for n in names:
                base = n.removeprefix("sem.")
                if any(base.startswith(u) or u.startswith(base) for u in used):
                    busy.add(n)
    return busy


def linear_slope(t_s: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y over t (per second); nan with fewer than 3 samples."""
    if len(t_s) < 3 or np.ptp(t_s) <= 0:
        return float("nan")
    return float(np.polyfit(t_s, y, 1)[0])


# --------------------------------------------------------------------------------------------------
def prepare(work: Path, n_map: int, n_query: int, env: dict) -> tuple[Path, Path]:
    """A synthetic office scene and a SIFT map of its mapping run (reused when already in ``work``)."""
    from reloc_ros.pipelines.build_map import build_or_reuse_map
    from reloc_ros.core.features import create_extractor
    from reloc_ros.datasets import load_dataset, synthetic

    data, _ = synthetic.generate_or_reuse("office", work / "office", n_map=n_map, n_query=n_query, seed=0,
                                          workers=1, progress=False)
    map_dir = work / "map"
    map_frames = load_dataset(data, "7scenes").split(None)[0]
    build_or_reuse_map(map_frames, create_extractor("sift"), "depth", map_dir, info={"command": "tools/soak.py"},
                       show_progress=False)
    return data, map_dir


def load_stream(dataset: Path, fmt: str):
    """Query frames as (Image, CameraInfo, T_world_from_cam) with the messages built once."""
    from sensor_msgs.msg import CameraInfo

    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.base import load_image
    from reloc_ros.ros.image_conversion import numpy_to_image

    _, queries = load_dataset(dataset, fmt).split(None)
    if not queries:
        raise RuntimeError(f"{dataset} has no query frames")
    out = []
    for f in queries:
        cam = f.camera
        info = CameraInfo(width=cam.width, height=cam.height, k=cam.K.reshape(9).tolist(), distortion_model="plumb_bob",
                          d=[0.0] * 5)
        out.append((numpy_to_image(load_image(f), "rgb8"), info, np.asarray(f.T_world_from_cam, np.float64)))
    return out


class Driver:
    """This process's side: publishes the stream, records diagnostics and poses."""

    def __init__(self, T_base_cam: np.ndarray):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from reloc_ros.core.geometry import invert_T
        from reloc_ros.ros import conversions as conv

        self.rclpy, self.conv, self.TFMessage = rclpy, conv, TFMessage
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        n = self.node = rclpy.create_node("reloc_soak_driver", context=self.ctx)
        self.pub_image = n.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.pub_info = n.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
        self.pub_tf = n.create_publisher(TFMessage, "/tf",
                                         QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_tf_static = n.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.lock = threading.Lock()
        self.diag: dict = {}
        self.n_diag = 0
        self.poses: list[tuple[int, np.ndarray]] = []
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)
        n.create_subscription(PoseStamped, "/reloc_node/pose", self._on_pose, 50)
        self.T_cam_base = invert_T(T_base_cam)
        self.pub_tf_static.publish(TFMessage(transforms=[conv.transform_stamped(T_base_cam, "base_link",
                                                                               "camera_optical", 0)]))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            while self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # the context was shut down while spinning
            pass

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name.startswith("reloc_node"):
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}
                    self.diag["_message"] = st.message
                    self.n_diag += 1

    def _on_pose(self, msg):
        with self.lock:
            self.poses.append((self.conv.stamp_to_ns(msg.header.stamp), self.conv.T_from_pose(msg.pose)))

    def last_diag(self) -> dict:
        with self.lock:
            return dict(self.diag)

    def publish(self, image, info, T_odom_cam: np.ndarray, stamp_ns: int) -> None:
        conv = self.conv
        hdr = conv.header("camera_optical", stamp_ns)
        T_odom_base = T_odom_cam @ self.T_cam_base
        self.pub_tf.publish(self.TFMessage(transforms=[conv.transform_stamped(T_odom_base, "odom", "base_link",
                                                                              stamp_ns)]))
        info.header = hdr
        self.pub_info.publish(info)
        image.header = hdr
        self.pub_image.publish(image)

    def close(self):
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)
        self.thread.join(timeout=5)


def run(args) -> dict:
    env = ros_env(log_prefix="reloc_soak_log_", root=REPO)  # this process's (before rclpy is imported) and the node's
    use_ros_env(env)
    duration = args.seconds if args.seconds else args.minutes * 60.0
    work = Path(args.work or tempfile.mkdtemp(prefix="reloc_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if args.dataset and args.map:
        dataset, map_dir = Path(args.dataset), Path(args.map)
    else:
        dataset, map_dir = prepare(work, args.n_map, args.n_query, env)
    stream = load_stream(dataset, args.format)
    prep_s = time.monotonic() - t0
    print(f"soak: {len(stream)} query frames, map {map_dir}, prepared in {prep_s:.1f} s; running {duration:.0f} s "
          f"at {args.rate:g} Hz (ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']})", flush=True)

    from reloc_ros.core.geometry import T_from_pos_quat, pose_errors

    T_base_cam = T_from_pos_quat([0.1, 0.0, 1.25], [-0.5, 0.5, -0.5, 0.5], "xyzw")  # optical frame, looking ahead
    log_path = work / "reloc_node.log"
    node = NodeProcess(env, ["--params-file", str(REPO / "config" / "localizer.yaml"), "-p", f"map_path:={map_dir}",
                             "-p", "diagnostics_rate_hz:=2.0",
                             *[a for kv in args.node_param or [] for a in ("-p", kv)],  # e.g. path_max_length:=100
                             "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"],
                       log_path, cwd=REPO)
    driver = Driver(T_base_cam)
    samples, shm_node, shm_self = [], set(), set()
    published, gt = 0, {}
    result: dict = {"duration_s": duration, "rate_hz": args.rate, "frames_in_stream": len(stream)}
    try:
        deadline = time.monotonic() + 120.0
        while driver.pub_image.get_subscription_count() == 0 or driver.pub_tf.get_subscription_count() == 0:
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"reloc_node did not come up (exit code {node.proc.poll()}); log: {log_path}")
            time.sleep(0.05)
        start = time.monotonic()
        next_sample = start
        k = 0
        while True:
            now = time.monotonic()
            if now - start >= duration:
                break
            if now >= next_sample:
                st = proc_status(node.proc.pid)
                d = driver.last_diag()
                samples.append({"t_s": now - start, **st, "published": published, **{
                    key: d.get(key, "") for key in ("frames_received", "frames_processed", "frames_dropped",
                                                    "frames_localized", "frames_failed", "queue_frames",
                                                    "queue_camera_infos", "path_length", "latency_p50_ms")}})
                shm_node |= shm_files_used_by(node.proc.pid)
                shm_self |= shm_files_used_by(os.getpid())
                next_sample += 1.0
            t_next = start + k / args.rate
            if t_next > now:
                time.sleep(min(t_next - now, 0.005))  # pacing the stream at the camera rate
                continue
            image, info, T_world_cam = stream[k % len(stream)]
            stamp = time.time_ns()
            driver.publish(image, info, T_world_cam, stamp)
            gt[stamp] = T_world_cam
            published += 1
            k += 1
        time.sleep(2.0)  # the last frame in flight
        result["final_diagnostics"] = driver.last_diag()
        result["node_alive_at_end"] = node.alive()
        shm_node |= shm_files_used_by(node.proc.pid)
        shm_self |= shm_files_used_by(os.getpid())
    finally:
        node.stop(timeout=30.0)
        driver.close()
    result["node_exit_code"] = node.proc.returncode
    text = log_path.read_text(errors="replace")
    result["node_log_tracebacks"] = text.count("Traceback")
    result["node_log"] = str(log_path)

    # /dev/shm after the node exited and this process closed its context: Fast DDS removes each participant's
    # segments; its port files (shared rendezvous files of a domain's ports) may stay. Reported, then removed
    # (unless another live process uses them).
    time.sleep(1.0)
    left = shm_related(shm_node | shm_self)
    left -= shm_in_use_by_others(left)
    result["shm_files_used"] = {"node": len(shm_node), "driver": len(shm_self)}
    result["shm_left_after_run"] = sorted(left)
    result["shm_left_segments"] = sorted(n for n in left if "fastdds_port" not in n)
    for name in left:
        try:
            (SHM / name).unlink()
        except OSError:
            pass

    # figures
    t = np.array([s["t_s"] for s in samples if "rss_mb" in s])
    rss = np.array([s["rss_mb"] for s in samples if "rss_mb" in s])
    t_warm = min(args.warmup_s, 0.5 * duration)
    warm = t >= t_warm
    result["rss_mb"] = {"start": float(rss[0]) if len(rss) else None, "end": float(rss[-1]) if len(rss) else None,
                        "max": float(rss.max()) if len(rss) else None,
                        "slope_mb_per_min_after_warmup": linear_slope(t[warm], rss[warm]) * 60.0,
                        "warmup_s": float(t_warm)}
    for key in ("threads", "fds"):  # thread pools start on the first frames: growth after warm-up is a leak
        v = [s[key] for s in samples if key in s]
        vw = [s[key] for s in samples if key in s and s["t_s"] >= t_warm]
        result[key] = ({"min": min(v), "max": max(v), "min_after_warmup": min(vw or v),
                        "max_after_warmup": max(vw or v)} if v else {})
    for key in ("queue_frames", "queue_camera_infos", "path_length"):
        v = [int(s[key]) for s in samples if str(s.get(key, "")).isdigit()]
        result[f"max_{key}"] = max(v) if v else None
    d = result["final_diagnostics"]
    num = {k: int(d[k]) for k in ("frames_received", "frames_processed", "frames_dropped", "frames_localized",
                                   "frames_failed", "frames_rate_skipped", "frames_out_of_order", "input_errors",
                                   "tf_errors", "odom_rejected", "resets") if str(d.get(k, "")).isdigit()}
    result["frames"] = {"published": published, **num,
                        "lost_in_transport": published - num.get("frames_received", 0)}
    with driver.lock:
        poses = list(driver.poses)
    errs = np.array([pose_errors(T @ T_base_cam, gt[s]) for s, T in poses if s in gt]).reshape(-1, 2)
    wrong = int(np.sum((errs[:, 0] > 0.5) | (errs[:, 1] > 5.0))) if len(errs) else 0
    result["poses"] = {"published": len(poses), "wrong_gt_0.5m_5deg": wrong,
                       "median_t_m": float(np.median(errs[:, 0])) if len(errs) else None,
                       "output_rate_hz": len(poses) / duration}
    result["latency_p50_ms"] = d.get("latency_p50_ms")
    result["latency_p95_ms"] = d.get("latency_p95_ms")
    result["samples"] = samples
    return result


def print_report(r: dict) -> None:
    f, p, rss = r["frames"], r["poses"], r["rss_mb"]
    rows = [
        ("duration", f"{r['duration_s']:.0f} s at {r['rate_hz']:g} Hz"),
        ("node RSS", f"{rss['start']:.1f} -> {rss['end']:.1f} MB (max {rss['max']:.1f}); slope after "
                     f"{rss['warmup_s']:.0f} s warm-up: {rss['slope_mb_per_min_after_warmup']:+.3f} MB/min"),
        ("threads / fds", f"{r['threads'].get('min')}-{r['threads'].get('max')} / {r['fds'].get('min')}-"
                          f"{r['fds'].get('max')} (after warm-up {r['threads'].get('min_after_warmup')}-"
                          f"{r['threads'].get('max_after_warmup')} / {r['fds'].get('min_after_warmup')}-"
                          f"{r['fds'].get('max_after_warmup')})"),
        ("queues (max)", f"frames {r['max_queue_frames']}, camera infos {r['max_queue_camera_infos']}, "
                         f"path {r['max_path_length']}"),
        ("frames", f"published {f['published']}, received {f.get('frames_received')}, processed "
                   f"{f.get('frames_processed')}, dropped (newest wins) {f.get('frames_dropped')}, lost in transport "
                   f"{f['lost_in_transport']}"),
        ("results", f"localized {f.get('frames_localized')}, failed {f.get('frames_failed')}, input errors "
                    f"{f.get('input_errors')}, TF errors {f.get('tf_errors')}, odometry rejections "
                    f"{f.get('odom_rejected')}"),
        ("poses", f"{p['published']} published ({p['output_rate_hz']:.2f} Hz), wrong (> 0.5 m / 5 deg) "
                  f"{p['wrong_gt_0.5m_5deg']}, median error {p['median_t_m']} m"),
        ("latency", f"p50 {r['latency_p50_ms']} ms, p95 {r['latency_p95_ms']} ms (receipt to publication)"),
        ("node exit", f"code {r['node_exit_code']}, tracebacks in log {r['node_log_tracebacks']}"),
        ("/dev/shm", f"files used: node {r['shm_files_used']['node']}, driver {r['shm_files_used']['driver']}; "
                     f"left after the run: {len(r['shm_left_after_run'])} {r['shm_left_after_run']} (removed), "
                     f"of which participant segments: {len(r['shm_left_segments'])}"),
    ]
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{w}}  {b}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, default=10.0, help="soak duration (default 10 min)")
    g.add_argument("--seconds", type=float, default=None, help="soak duration in seconds (overrides --minutes)")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    ap.add_argument("--warmup-s", type=float, default=20.0, help="RSS slope is fitted after this (s)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated scene, map and node log")
    ap.add_argument("--dataset", type=Path, default=None, help="an existing dataset (with --map) instead")
    ap.add_argument("--format", default="7scenes", help="format of --dataset")
    ap.add_argument("--map", type=Path, default=None, help="map of --dataset")
    ap.add_argument("--n-map", type=int, default=40, help="mapping frames of the generated scene")
    ap.add_argument("--n-query", type=int, default=30, help="frames of each generated query run")
    ap.add_argument("--json", type=Path, default=None, help="write the report (with per-second samples) here")
    ap.add_argument("--node-param", action="append", metavar="NAME:=VALUE",
                    help="extra node parameter, repeatable (e.g. path_max_length:=100)")
    args = ap.parse_args(argv)
    if (args.dataset is None) != (args.map is None):
        ap.error("--dataset and --map go together")
    if not (args.rate > 0 and (args.seconds or args.minutes) > 0):
        ap.error("--rate and the duration must be > 0")
    r = run(args)
    print_report(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))
    ok = r["node_exit_code"] == 0 and not r["shm_left_segments"] and r["node_log_tracebacks"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
