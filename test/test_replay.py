"""Bag replay: maps from rosbag2, offline and live (reloc_node) replay of the same bag, the report, bad bags.

One small synthetic office scene with bags (``reloc data synth --bag``): a map is built FROM THE MAPPING BAG and
another from the same frames as a dataset folder (learned extractor, learned-depth points: the fastest here);
the first query bag is replayed offline (Localizer) and live (``reloc eval-bag --live`` in a subprocess, which
starts ``reloc_node`` itself and plays the bag into it with /clock).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import REPO, ShmJanitor, configure_ros_env

ENV = configure_ros_env("test_replay")

from reloc_ros.cli.main import main as reloc  # noqa: E402
from reloc_ros.datasets import load_dataset, load_depth, load_image  # noqa: E402
from reloc_ros.datasets.rosbag import BagTopics, load_bag, read_ground_truth  # noqa: E402
from reloc_ros.datasets.synthetic import generate  # noqa: E402
from reloc_ros.datasets.synthetic.bag import TOPICS, get_ros2_typestore  # noqa: E402

N_MAP, N_QUERY = 24, 8
ABS_SLACK_M, ABS_SLACK_DEG = 0.02, 0.3  # "within 2x" plus this, so that 4 mm vs 9 mm does not fail


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    t0 = time.perf_counter()
    data = generate("office", root / "office", n_map=N_MAP, n_query=N_QUERY, seed=0, bag=True, workers=1,
                    progress=False)
    common = ["--extractor", "learned", "--points", "learned"]
    assert reloc(["-q", "map", "build", "--format", "rosbag", "--bag", str(data / "bags" / "mapping"), *common,
                  "--out", str(root / "map_bag")]) == 0
    assert reloc(["-q", "map", "build", "--format", "7scenes", "--dataset", str(data), *common,
                  "--out", str(root / "map_folder")]) == 0
    print(f"\nreplay scene + 2 maps: {time.perf_counter() - t0:.1f} s")
    return {"root": root, "data": data, "query": data / "bags" / "query_1"}


def _offline(scene, map_name: str) -> dict:
    """``reloc eval-bag`` (offline) of the first query bag against a map of the scene (once per map)."""
    out = scene["root"] / f"offline_{map_name}.json"
    if not out.exists():
        assert reloc(["-q", "eval-bag", "--map", str(scene["root"] / map_name), "--bag", str(scene["query"]),
                      "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _localized_medians(report: dict) -> np.ndarray:
    errs = [(r["t_err"], r["r_err"]) for r in report["records"] if r["ok"]]
    assert errs, f"nothing localized: {[r['reason'] for r in report['records']]}"
    return np.median(np.array(errs), axis=0)


# --------------------------------------------------------------------------------------------------
def test_bag_dataset_equals_folder_and_tf_ground_truth(scene, tmp_path):
    bag_ds = load_bag(scene["data"] / "bags" / "mapping")

    folder = load_dataset(scene["data"], "7scenes").split()[0]
    assert len(bag_ds.frames) == len(folder) == N_MAP
    for a, b in zip(bag_ds.frames, folder):
        np.testing.assert_allclose(a.T_world_from_cam, b.T_world_from_cam, atol=1e-6)
        assert a.camera.K.tolist() == b.camera.K.tolist()
    assert np.array_equal(load_image(bag_ds.frames[-1]), load_image(folder[-1]))
    # a depth topic (16UC1 millimetres, the synthetic bag's) gives every frame its depth image
    depth_ds = load_bag(scene["data"] / "bags" / "mapping", BagTopics(depth=TOPICS["depth"]))
    assert all(f.depth_path is not None for f in depth_ds.frames)
    np.testing.assert_allclose(load_depth(depth_ds.frames[5]), load_depth(folder[5]), atol=1e-6)
    # the same bag in sqlite3 storage reads the same
    db3 = load_bag(_copy_bag(scene["data"] / "bags" / "mapping", tmp_path / "db3", lambda t: True, "SQLITE3"))
    assert [f.timestamp for f in db3.frames] == [f.timestamp for f in bag_ds.frames]
    assert np.array_equal(load_image(db3.frames[3]), load_image(bag_ds.frames[3]))
    # ground truth from the TF chain odom -> base_link -> camera_optical: drifting odometry, so only the
    # frame-to-frame motion agrees with the ground-truth topic (within the 0.5-1.5 % scale drift)
    tf_gt = read_ground_truth(scene["query"], BagTopics(gt_frame="odom"))
    gt = read_ground_truth(scene["query"])
    assert len(tf_gt) == len(gt) == N_QUERY
    step_tf = np.linalg.norm(np.diff(tf_gt.poses[:, :3, 3], axis=0), axis=1)
    step_gt = np.linalg.norm(np.diff(gt.poses[:, :3, 3], axis=0), axis=1)
    np.testing.assert_allclose(step_tf, step_gt, rtol=0.05, atol=1e-3)
    # interpolation half-way between two samples lies between them
    mid = gt.at((int(gt.stamps_ns[0]) + int(gt.stamps_ns[1])) // 2)
    np.testing.assert_allclose(mid[:3, 3], gt.poses[:2, :3, 3].mean(axis=0), atol=1e-9)
    assert gt.at(int(gt.stamps_ns[0]) - 1) is None


def test_map_from_bag_localizes_like_map_from_folder(scene):
    a = _offline(scene, "map_bag")
    b = _offline(scene, "map_folder")
    assert a["queries"] == b["queries"] == N_QUERY
    assert a["localized"] >= N_QUERY // 2, a["records"]
    assert abs(a["localized"] - b["localized"]) <= 1
    ma, mb = _localized_medians(a), _localized_medians(b)
    assert ma[0] <= 1.2 * mb[0] + 0.005 and mb[0] <= 1.2 * ma[0] + 0.005, (ma, mb)
    assert ma[1] <= 1.2 * mb[1] + 0.1 and mb[1] <= 1.2 * ma[1] + 0.1, (ma, mb)
    print(f"\nmap from bag vs folder, median (m, deg) of localized: {ma.round(4)} vs {mb.round(4)}, "
          f"localized {a['localized']} vs {b['localized']} / {N_QUERY}")


def test_int8_copy_from_a_bag_builds_and_replays(scene, tmp_path, capsys):
    """`reloc quantize` calibrated on the mapping bag, a map from the bag with it, `eval-bag --model` with it; the
    map refuses the shipped model and says which file it was built with."""
    pytest.importorskip("onnx", reason="quantization needs onnx (pip install .[cpu])")
    bag, model, m = scene["data"] / "bags" / "mapping", tmp_path / "int8.onnx", tmp_path / "map_int8"
    assert reloc(["-q", "quantize", "--dataset", str(bag), "--format", "rosbag", "--images", "8",
                  "--out", str(model)]) == 0
    assert reloc(["-q", "map", "build", "--format", "rosbag", "--bag", str(bag), "--extractor", "learned",
                  "--points", "learned", "--model", str(model), "--out", str(m)]) == 0
    capsys.readouterr()
    assert reloc(["-q", "eval-bag", "--map", str(m), "--bag", str(scene["query"])]) == 2
    assert f"--model {model}" in capsys.readouterr().err
    out = tmp_path / "int8.json"
    assert reloc(["-q", "eval-bag", "--map", str(m), "--bag", str(scene["query"]), "--model", str(model),
                  "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["localized"] >= report["queries"] // 2, [r["reason"] for r in report["records"]]


def test_offline_and_live_replay_agree(scene, tmp_path):
    offline = _offline(scene, "map_bag")
    # the images FAILED as no stronger than the map's look-alike are counted, as their reason says
    held = sum((r.get("reason") or "").startswith("the map fits this view as well") for r in offline["records"])
    assert offline["replay"]["lookalike_held"] == held, offline["replay"]
    out = tmp_path / "live"
    # the node's own parameters file as a robot would have it (8 frames: compare every localization, without the
    # tracker's confirmation at start), given as --config: without its settings the node would publish nothing yet
    params = _node_params_file(tmp_path, odom_accept_after=1, track_min_motion_m=0.0)
    janitor = ShmJanitor()
    t0 = time.perf_counter()
    scratch = tmp_path / "tmpdir"  # the command's temporary files (the node's log, the parameters it wrote)
    scratch.mkdir()
    # rate 0.1: the 30 Hz bag plays at 3 Hz, so the node (a few hundred ms a frame here) handles most frames
    r = subprocess.run([sys.executable, "-m", "reloc_ros.cli.main", "-q", "eval-bag", "--live", "--rate", "0.1",
                        "--map", str(scene["root"] / "map_bag"), "--bag", str(scene["query"]), "--out", str(out),
                        "--domain-id", ENV["ROS_DOMAIN_ID"], "--config", str(params)],
                       env={**ENV, "TMPDIR": str(scratch)}, capture_output=True, text=True, timeout=240,
                       cwd=str(REPO))
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # a run that went well leaves nothing of its own behind (DDS keeps a one-line session file, .ses, for the machine)
    assert not [p for p in scratch.iterdir() if p.name != ".ses"], list(scratch.iterdir())
    live = json.loads((out / "report.json").read_text())
    assert live["mode"] == "live" and live["replay"]["images_sent"] == live["replay"]["frames_received"] == N_QUERY
    assert live["queries"] >= 3 and live["localized"] >= live["queries"] // 2, live["replay"]
    m_live, m_off = _localized_medians(live), _localized_medians(offline)
    assert m_live[0] <= 2 * m_off[0] + ABS_SLACK_M and m_live[1] <= 2 * m_off[1] + ABS_SLACK_DEG, (m_live, m_off)
    assert m_off[0] <= 2 * m_live[0] + ABS_SLACK_M and m_off[1] <= 2 * m_live[1] + ABS_SLACK_DEG, (m_live, m_off)
    assert all(r["timings_ms"]["end_to_end"] > 0 for r in live["records"])
    # the report: same keys as `reloc eval`, plots, TUM trajectories with one line per estimate
    for k in ("queries", "localized", "failures", "median_t_m", "median_r_deg", "recall", "latency_ms"):
        assert k in live
    for png in ("trajectory.png", "error_over_time.png", "error_cdf.png", "latency.png"):
        assert (out / png).stat().st_size > 5000, png
    est = [ln for ln in (out / "trajectory_est.tum").read_text().splitlines() if not ln.startswith("#")]
    assert len(est) == live["localized"] and len(est[0].split()) == 8
    assert "| live" in (out / "summary.md").read_text()
    # Fast DDS ports' named mutexes (sem.*) are shared by every Fast DDS process on the machine: only the
    # segments and ports can be attributed to this replay
    left = [f for f in janitor.cleanup() if not f.startswith("sem.")]
    assert not left, f"shared-memory files left behind by the live replay: {left}"
    print(f"\nlive replay {wall:.1f} s: handled {live['queries']} / {N_QUERY}, median (m, deg) live {m_live.round(4)} "
          f"vs offline {m_off.round(4)}")


def _node_params_file(tmp_path, **values) -> Path:
    """config/localizer.yaml (the node's ROS 2 parameters file) with ``values`` changed."""
    import yaml

    data = yaml.safe_load((REPO / "config" / "localizer.yaml").read_text())
    data["/**/reloc_node"]["ros__parameters"].update(values)
    path = tmp_path / "robot_params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_nodes_parameters_file_serves_as_config(scene, tmp_path, capsys):
    """`reloc eval --config` and `eval-bag --config` read the node's own parameters file: the localizer's settings
    are used, the tracker's with --track, the node's frames, topics and rates are left out with a one-line note;
    what cannot apply is refused before any work."""
    # the node's own file unchanged: used as it is, without a word
    common = ["-q", "eval", "--map", str(scene["root"] / "map_folder"), "--dataset", str(scene["data"]),
              "--format", "7scenes", "--config"]
    out = tmp_path / "eval.json"
    assert reloc(common + [str(REPO / "config" / "localizer.yaml"), "--json", str(out)]) == 0
    assert "note" not in capsys.readouterr().err
    # changed: what does not apply here is named with its value, once
    params = _node_params_file(tmp_path, top_k=2, track_min_motion_m=0.0, track_min_motion_deg=0.0,
                               tf_mode="map_base")
    common.append(str(params))
    assert reloc(common + ["--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "not used (the node's frames, topics, rates and map: no offline meaning): tf_mode 'map_base'\n" in err, err
    assert ("not used (the place tracker's settings: they apply with --track): track_min_motion_deg 0.0, "
            "track_min_motion_m 0.0\n") in err, err
    assert json.loads(out.read_text())["config"]["top_k"] == 2
    # the command line wins over the file, and says so
    assert reloc(common + ["--top-k", "4", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["top_k"] == 4
    assert "--top-k 4 is used, not the file's top_k 2" in capsys.readouterr().err
    assert reloc(common + ["--track", "--starts-every", "4", "--track-frames", "6", "--json", str(out)]) == 0
    tr = json.loads(out.read_text())["track"]  # the file's motion rule off: these short starts publish
    assert tr["config"]["min_motion_m"] == 0.0 and tr["published"] > 0 and tr["published_wrong"] == 0, tr
    err = capsys.readouterr().err
    assert "place tracker's settings" not in err and "tf_mode map_base: --track replays" in err, err
    # eval-bag offline: the localizer's settings; the tracker's are noted as not used (no tracker offline)
    assert reloc(["-q", "eval-bag", "--map", str(scene["root"] / "map_bag"), "--bag", str(scene["query"]),
                  "--config", str(params), "--json", str(out)]) == 0
    assert "offline replay localizes each image on its own" in capsys.readouterr().err
    # refused before any work: an evaluation-only setting for the live node; a file for another node
    plain = tmp_path / "plain.yaml"
    live = ["-q", "eval-bag", "--live", "--map", str(scene["root"] / "map_bag"), "--bag", str(scene["query"]),
            "--config", str(plain), "--domain-id", ENV["ROS_DOMAIN_ID"]]
    plain.write_text("max_map_keypoints: 500\ntop_k: 3\n")
    assert reloc(live) == 2
    err = capsys.readouterr().err
    assert "not node parameters, which the live node cannot take: max_map_keypoints" in err, err
    plain.write_text("top_kk: 3\n")  # a typo: named as offline
    assert reloc(live) == 2
    assert "unknown setting 'top_kk' (did you mean 'top_k'?)" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text("/other_node:\n  ros__parameters:\n    top_k: 3\n")
    assert reloc(common[:-1] + [str(other)]) == 2
    err = capsys.readouterr().err
    assert "without an entry for reloc_node (it has /other_node)" in err and len(err.strip().splitlines()) == 1, err


def test_live_replay_starts_in_the_middle_of_the_bag(scene, tmp_path):
    """`eval-bag --live --start-frame 4`: the node starts cold at the 5th image (what was recorded before is not
    played); with the default tracker nothing it sees in 4 frames (0.13 s of motion) may be published."""
    out = tmp_path / "live.json"
    r = subprocess.run([sys.executable, "-m", "reloc_ros.cli.main", "-q", "eval-bag", "--live", "--rate", "0.1",
                        "--start-frame", "4", "--map", str(scene["root"] / "map_bag"), "--bag", str(scene["query"]),
                        "--json", str(out), "--domain-id", ENV["ROS_DOMAIN_ID"]],
                       env=ENV, capture_output=True, text=True, timeout=240, cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    live = json.loads(out.read_text())
    assert live["replay"]["images_sent"] == N_QUERY - 4, live["replay"]
    assert live["replay"]["start_frame"] == 4 and live["replay"]["first_pose_s"] is None, live["replay"]
    # records are named by the image's index in the bag, as `reloc eval` names the dataset's frames
    assert min(int(x["name"].split("-")[-1]) for x in live["records"]) >= 4, [x["name"] for x in live["records"]]
    assert live["localized"] == 0 and live["localized_wrong"] == 0, [x["reason"] for x in live["records"]]
    assert any("not yet confirmed" in x["reason"] for x in live["records"]), [x["reason"] for x in live["records"]]
    from reloc_ros.datasets.base import DatasetError
    from reloc_ros.replay.live import _playlist

    pl = _playlist(scene["query"], BagTopics())
    times = [t for t, topic, _ in pl.messages() if topic == TOPICS["image"]]
    assert pl.image_time(TOPICS["image"], 4) == times[4]
    with pytest.raises(DatasetError, match="past the last image"):
        pl.image_time(TOPICS["image"], N_QUERY)


def test_live_replay_with_a_bad_node_argument_is_one_line(scene):
    """A parameter the node refuses at start-up reaches the user as the node's own one line, not its log."""
    r = subprocess.run([sys.executable, "-m", "reloc_ros.cli.main", "-q", "eval-bag", "--live", "--map",
                        str(scene["root"] / "map_bag"), "--bag", str(scene["query"]), "--domain-id", ENV["ROS_DOMAIN_ID"],
                        "--node-arg=-p", "--node-arg=tracked_top_k:=-1"],
                       env=ENV, capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        "reloc: error: reloc_node: invalid parameter: tracked_top_k=-1 is out of range [0, 200] (the node's "
        "arguments: --node-arg, --model)"], r.stderr


def test_eval_track_cold_starts_on_the_scene(scene, tmp_path, capsys):
    """`reloc eval --track` replays each query run from cold starts through the node's tracker, with the bags'
    odometry and without: 8-frame runs (0.27 s of motion) are too short for the motion rule, so no start publishes
    a pose, every start is counted, and the plain evaluation's localized_wrong is reported alongside."""
    for extra in ([], ["--no-odometry"]):
        out = tmp_path / f"track{len(extra)}.json"
        assert reloc(["-q", "eval", "--map", str(scene["root"] / "map_folder"), "--dataset", str(scene["data"]),
                      "--format", "7scenes", "--track", "--starts-every", "4", "--track-frames", "6",
                      "--json", str(out), *extra]) == 0
        res = json.loads(out.read_text())
        tr = res["track"]
        assert isinstance(res["localized_wrong"], int) and res["localized_wrong"] <= res["localized"]
        held = res["lookalike_held"]  # FAILED by ambiguity_lookalike_ratio, each with the pose the tracker weighs
        assert held["count"] == sum("held" in r for r in res["records"]) >= held["correct"] >= 0, held
        assert held["count"] + res["localized"] <= res["queries"]
        assert tr["odometry"] == (not extra) and tr["starts"] == 4 and tr["frames"] == 2 * (6 + 4), tr
        assert tr["published"] == 0 and tr["published_wrong"] == 0 and tr["starts_without_pose"] == 4, tr
        assert set(tr["time_to_first_pose_s"]) == {"p50", "p95"}
        assert isinstance(tr["probes"], int) and tr["probes"] >= 0  # look-alike probes (none without ambiguity)
        assert tr["withheld"]["uncertain"]["poses"] == tr["withheld"]["publish_gate"]["poses"] == 0, tr  # no place
    assert "cold starts through the place tracker" in capsys.readouterr().out
    # the tracker's settings come from --config under their node parameter names: without the motion rule the
    # same starts publish
    cfg = tmp_path / "no_motion.yaml"
    cfg.write_text("track_min_motion_m: 0.0\ntrack_min_motion_deg: 0.0\n")
    out = tmp_path / "track_cfg.json"
    assert reloc(["-q", "eval", "--map", str(scene["root"] / "map_folder"), "--dataset", str(scene["data"]),
                  "--format", "7scenes", "--track", "--starts-every", "4", "--track-frames", "6", "--config",
                  str(cfg), "--json", str(out)]) == 0
    tr = json.loads(out.read_text())["track"]
    assert tr["config"]["min_motion_m"] == 0.0 and tr["published"] > 0 and tr["published_wrong"] == 0, tr
    assert 0 <= tr["published_within_5cm_5deg"] <= tr["published"], tr

    # without --track they are refused, in one line
    assert reloc(["-q", "eval", "--map", str(scene["root"] / "map_folder"), "--dataset", str(scene["data"]),
                  "--format", "7scenes", "--config", str(cfg)]) == 2
    assert "apply with --track" in capsys.readouterr().err


def test_track_summary_counts_what_was_published():
    """The cold-start summary's counts, from known published poses: precise, correct but not precise, wrong."""
    from reloc_ros.pipelines.evaluate import _track_summary

    def pose(t, r, dt):
        return {"t_err": t, "r_err": r, "dt_s": dt, "nees_position": 1.0, "name": "f", "num_inliers": 50}

    starts = [{"sequence": "a", "start": 0, "frames": 10,
               "published": [pose(0.01, 0.5, 1.0), pose(0.2, 1.0, 1.1), pose(0.04, 6.0, 1.2)],
               "withheld": [{**pose(0.3, 7.0, 1.3), "why": "uncertain"}, {**pose(0.02, 1.0, 1.4), "why": "uncertain"},
                            {**pose(0.9, 1.0, 1.5), "why": "publish_gate"}]},
              {"sequence": "a", "start": 10, "frames": 4, "published": [], "withheld": [],
               "places_at_end": {"true": 3.0, "other": 4.5}},  # the images favoured a look-alike
              {"sequence": "b", "start": 0, "frames": 6, "published": [], "withheld": [],
               "places_at_end": {"true": 4.0, "other": 1.0}}]
    s = _track_summary(starts)
    assert (s["published"], s["published_within_5cm_5deg"], s["published_wrong"], s["starts_without_pose"]) == \
        (3, 1, 1, 2), s
    assert s["starts_without_pose_lookalike_led"] == 1 and [(d["sequence"], d["support_other_place"])
                                                            for d in s["starts_without_pose_detail"]] == \
        [("a", 4.5), ("b", 1.0)], s
    assert s["withheld"] == {"publish_gate": {"poses": 1, "wrong": 1, "within_5cm_5deg": 0},
                             "uncertain": {"poses": 2, "wrong": 1, "within_5cm_5deg": 1}}, s
    assert s["frames"] == 20 and s["starts_without_pose_frames"] == [4, 6] and s["time_to_first_pose_s"]["p50"] == 1.0


# --------------------------------------------------------------------------------------------------
def _copy_bag(src: Path, dst: Path, keep, storage: str = "MCAP") -> Path:
    """A copy of ``src`` with only the topics for which ``keep(topic)`` holds."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    ts = get_ros2_typestore()
    with Reader(src) as r, Writer(dst, version=8, storage_plugin=getattr(StoragePlugin, storage)) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections if keep(c.topic)}
        for c, t, raw in r.messages():
            if c.id in conns:
                w.write(conns[c.id], t, raw)
    return dst


@pytest.mark.parametrize("case, expected", [
    ("no_camera_info", "camera_info"),
    ("no_ground_truth", "--gt-frame"),
    ("missing_image_topic", "no image topic '/nope'"),
    ("wrong_camera_info_topic", "pass --camera-info-topic /camera/camera_info. Topics in the bag"),
    ("not_a_bag", "not a rosbag2 directory"),
    ("no_tf_chain", "no TF chain from 'world'"),
])
def test_bad_bags_give_clear_errors(scene, tmp_path, capsys, case, expected):
    q = scene["query"]
    extra = []
    if case == "no_camera_info":
        bag = _copy_bag(q, tmp_path / "b", lambda t: "camera_info" not in t)
    elif case == "no_ground_truth":
        bag = _copy_bag(q, tmp_path / "b", lambda t: t != "/ground_truth/camera_pose")
    elif case == "missing_image_topic":
        bag, extra = q, ["--image-topic", "nope"]  # relative: resolved in the root namespace
    elif case == "wrong_camera_info_topic":
        bag, extra = q, ["--camera-info-topic", "/camera/info"]
    elif case == "not_a_bag":
        bag = scene["data"]
    else:
        bag, extra = q, ["--gt-frame", "world"]
    for cmd in (["eval-bag", "--map", str(scene["root"] / "map_bag")],
                ["map", "build", "--format", "rosbag", "--out", str(tmp_path / "m")]):
        rc = reloc(["-q", *cmd, "--bag", str(bag), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


def test_offline_replay_with_the_low_light_mode_counts_and_warns(scene, tmp_path, capsys, caplog):
    """`reloc eval-bag --config` with low_light_brightness on a daylight map: the warning `reloc eval` gives, and the
    count of enhanced images (all of them, degraded to night)."""
    import logging

    cfg = tmp_path / "ll.yaml"
    cfg.write_text("low_light_brightness: 0.06\n")
    with caplog.at_level(logging.WARNING):
        assert reloc(["-q", "eval-bag", "--map", str(scene["root"] / "map_bag"), "--bag", str(scene["query"]),
                      "--degrade", "night", "--config", str(cfg)]) == 0
    assert "the map has no keyframe enhanced for low light" in caplog.text
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("replay: images_with_gt"))
    stats = dict(kv.split(" ", 1) for kv in line[len("replay: "):].split(", "))
    from reloc_ros.core.degrade import degrade
    from reloc_ros.core.lowlight import brightness
    from reloc_ros.datasets.rosbag import iter_bag_images

    dark = sum(brightness(degrade(it.image, ("night",), 0, f"frame-{it.index:06d}")) < 0.06
               for it in iter_bag_images(scene["query"], BagTopics()))
    assert int(stats["low_light_images"]) == dark > 0, line
