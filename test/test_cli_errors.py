"""Bad paths and malformed files give one-line errors that say what is wrong (exit code 2, no traceback)."""

import re

import pytest

from reloc_ros.cli.main import main


def _tiny_posed_images(root, n):
    """A posed_images dataset of ``n`` black 64x48 images (valid files, nothing to extract)."""
    import cv2
    import numpy as np

    (root / "images").mkdir()
    (root / "cameras").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"{i:04d}.png"), np.zeros((48, 64, 3), np.uint8))
        (root / "cameras" / f"{i:04d}.txt").write_text(
            "# K R C wh\n50 0 32\n0 50 24\n0 0 1\n1 0 0\n0 1 0\n0 0 1\n0 0 0\n64 48\n")


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_missing_dataset(capsys, tmp_path):
    code, err = _run(capsys, ["-q", "map", "build", "--dataset", str(tmp_path / "nope"), "--format", "posed_images",
                              "--map-every", "4", "--out", str(tmp_path / "m")])
    assert code == 2 and "dataset folder not found" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_map(capsys, tmp_path):
    (tmp_path / "ds" / "images").mkdir(parents=True)
    code, err = _run(capsys, ["-q", "eval", "--map", str(tmp_path / "nomap"), "--dataset", str(tmp_path / "ds"),
                              "--format", "posed_images", "--map-every", "4"])
    assert code == 2 and "map directory not found" in err and "reloc map build" in err


def test_no_split_without_map_every(capsys, tmp_path):
    _tiny_posed_images(tmp_path, 3)
    code, err = _run(capsys, ["-q", "map", "build", "--dataset", str(tmp_path), "--format", "posed_images",
                              "--out", str(tmp_path / "m")])
    assert code == 2 and "--map-every" in err


def test_unknown_extractor_and_bad_config(capsys, tmp_path):
    _tiny_posed_images(tmp_path, 4)
    code, err = _run(capsys, ["-q", "map", "build", "--dataset", str(tmp_path), "--format", "posed_images",
                              "--map-every", "2", "--extractor", "orb", "--out", str(tmp_path / "m")])
    assert code == 2 and "unknown extractor 'orb'" in err
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("top_k: 3\nbogus_key: 1\n")
    code, err = _run(capsys, ["-q", "eval", "--map", str(tmp_path / "m"), "--dataset", str(tmp_path),
                              "--format", "posed_images", "--map-every", "2", "--config", str(cfg)])
    assert code == 2 and "unknown setting 'bogus_key' of the LocalizerConfig; valid settings: " in err, err
    cfg.write_text("ambiguity_lookalike_ration: 1\ntrack_min_motion: 0.5\n")  # typos: the closest key is named
    code, err = _run(capsys, ["-q", "eval", "--map", str(tmp_path / "m"), "--dataset", str(tmp_path),
                              "--format", "posed_images", "--map-every", "2", "--config", str(cfg), "--track"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'ambiguity_lookalike_ratio' for 'ambiguity_lookalike_ration'" in err, err
    assert "'track_min_motion_m' for 'track_min_motion'" in err and "valid settings" not in err, err  # no list
    assert err.startswith(f"reloc: error: {cfg}: "), err  # which file
    # an option out of range is named as typed, not as the config field behind it
    common = ["-q", "eval", "--map", str(tmp_path / "m"), "--dataset", str(tmp_path), "--format", "posed_images",
              "--map-every", "2"]
    for option, extra in (("--top-k", []), ("--lighterglue-keyframes", ["--matcher", "lighterglue"])):
        code, err = _run(capsys, common + extra + [option, "0"])
        assert code == 2 and f"{option} 0 is out of range [1, 200]" in err and "LocalizerConfig" not in err, err
    # an option that would have no effect is refused, not ignored
    code, err = _run(capsys, common + ["--lighterglue-keyframes", "2"])
    assert code == 2 and "applies with --matcher lighterglue" in err, err


def test_bad_format_choice(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--map", "x", "--dataset", "y", "--format", "kitti"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_depth_scale_needs_learned_points(capsys, tmp_path):
    _tiny_posed_images(tmp_path, 4)
    code, err = _run(capsys, ["-q", "map", "build", "--dataset", str(tmp_path), "--format", "posed_images",
                              "--map-every", "2", "--points", "triangulate", "--depth-scale", "fit",
                              "--out", str(tmp_path / "m")])
    assert code == 2 and "--depth-scale applies to --points learned only" in err
    assert not (tmp_path / "m").exists()


def test_eval_of_a_rosbag_points_to_eval_bag(capsys, tmp_path):
    code, err = _run(capsys, ["-q", "eval", "--map", str(tmp_path), "--dataset", str(tmp_path), "--format", "rosbag"])
    assert code == 2 and "reloc eval-bag --map MAP --bag BAG" in err and "Traceback" not in err



def test_track_start_spacing_is_refused_before_any_work(capsys, tmp_path):
    """`--starts-every 0` is refused in one line before the map is even looked at (it used to come after the whole
    single-image evaluation)."""
    code, err = _run(capsys, ["-q", "eval", "--map", str(tmp_path / "nomap"), "--dataset", str(tmp_path / "nods"),
                              "--format", "7scenes", "--track", "--starts-every", "0"])
    assert code == 2 and "--starts-every and --track-frames must be >= 1 (got 0 and 150)" in err
    assert "map directory not found" not in err and len(err.strip().splitlines()) == 1


def test_track_settings_are_refused_before_any_work_under_their_own_names(capsys, tmp_path):
    """A tracker setting out of range in --config is refused before the map is looked at (it used to come after the
    whole single-image evaluation), named as written in the file, not as the config field behind it."""
    cfg = tmp_path / "track.yaml"
    cfg.write_text("track_publish_max_sigma_deg: -1\n")
    code, err = _run(capsys, ["-q", "eval", "--map", str(tmp_path / "nomap"), "--dataset", str(tmp_path / "nods"),
                              "--format", "7scenes", "--track", "--config", str(cfg)])
    assert code == 2 and f"{cfg}: track_publish_max_sigma_deg=-1 is out of range [0, 180]" in err, err
    assert "TrackerConfig" not in err and "map directory not found" not in err and len(err.strip().splitlines()) == 1


def test_eval_bag_start_frame_is_live_only(capsys, tmp_path):
    """`--start-frame` without `--live` is refused in one line (offline, it would be ignored: every image is
    localized on its own)."""
    code, err = _run(capsys, ["-q", "eval-bag", "--map", str(tmp_path), "--bag", str(tmp_path / "nobag"),
                              "--start-frame", "150"])
    assert code == 2 and "--start-frame applies with --live" in err and len(err.strip().splitlines()) == 1, err


def test_track_odometry_needs_a_generated_scene(tmp_path):
    """`reloc eval --track` replays the generator's odometry: a dataset without scene.yaml is refused with a line
    naming --no-odometry."""
    import numpy as np

    from reloc_ros.datasets.synthetic.writer import SynthError, run_odometry

    with pytest.raises(SynthError, match="--no-odometry"):
        run_odometry(tmp_path, "seq-02", np.tile(np.eye(4), (3, 1, 1)))


def test_map_build_input_options(capsys, tmp_path):
    """`--dataset DIR --format F` or `--bag BAG` (format optional): no input, or both kinds, is one line."""
    code, err = _run(capsys, ["-q", "map", "build", "--out", str(tmp_path / "m")])
    assert code == 2 and "--dataset DIR --format F, or --bag BAG" in err
    code, err = _run(capsys, ["-q", "map", "build", "--bag", str(tmp_path), "--format", "7scenes", "--out",
                              str(tmp_path / "m")])
    assert code == 2 and "--bag reads a rosbag2" in err and len(err.strip().splitlines()) == 1
    code, err = _run(capsys, ["-q", "map", "build", "--bag", str(tmp_path / "nobag"), "--out", str(tmp_path / "m")])
    assert code == 2 and "nobag" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_model_error_names_the_cli_option(capsys, tmp_path):
    _tiny_posed_images(tmp_path, 4)
    code, err = _run(capsys, ["-q", "map", "build", "--dataset", str(tmp_path), "--format", "posed_images",
                              "--map-every", "2", "--model", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "m")])
    assert code == 2 and "--model" in err and "none.onnx" in err, err


def test_eval_bag_has_no_depth_topic(capsys):
    """Queries use no depth: the option exists only for map building."""
    with pytest.raises(SystemExit):
        main(["eval-bag", "--map", "m", "--bag", "b", "--depth-topic", "/d"])
    assert "unrecognized arguments: --depth-topic" in capsys.readouterr().err


def test_synth_without_its_extra_is_one_line(tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.modules['skimage'] = None; from reloc_ros.cli.main import main; "
            f"sys.exit(main(['data', 'synth', '--scene', 'office', '--out', {str(tmp_path / 's')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-1500:]
    assert "pip install -e '.[synth]'" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_map_build_and_map_info_report_the_same_counts(tmp_path, capsys):
    from reloc_ros.datasets.synthetic import generate

    generate("office", tmp_path / "s", n_map=6, n_query=1, seed=1, stride=30, workers=1, progress=False)
    assert main(["-q", "map", "build", "--dataset", str(tmp_path / "s"), "--format", "7scenes", "--extractor", "sift",
                 "--out", str(tmp_path / "m")]) == 0
    built = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["map", "info", str(tmp_path / "m")]) == 0
    lines = capsys.readouterr().out.splitlines()
    info = lines[0]
    counts = built.split(": ", 1)[1].rsplit(", ", 1)[0]  # "N keyframes, K keypoints, P with a 3D point (depth)"
    assert "with a 3D point (depth)" in counts and info.endswith(counts), (built, info)
    # then labelled lines, not the whole manifest (that takes --manifest)
    labels = [ln.split(":", 1)[0] for ln in lines[2:-1]]
    assert labels == ["extractor", "map frame", "created", "built by", "files"], lines
    assert lines[2].split()[1] == "sift" and "--extractor sift" in lines[5], lines
    assert main(["map", "info", "--manifest", str(tmp_path / "m")]) == 0
    full = capsys.readouterr().out
    assert re.search(r"^  keyframes.h5: [0-9a-f]{64}$", full, re.M) and len(full.splitlines()) > 2 * len(lines), full
    # under a keyframe budget the same line says what the budget kept
    assert main(["-q", "map", "build", "--dataset", str(tmp_path / "s"), "--format", "7scenes", "--extractor", "sift",
                 "--out", str(tmp_path / "m4"), "--max-keyframes", "4"]) == 0
    built = capsys.readouterr().out.strip().splitlines()[-1]
    assert built.startswith(f"map written to {tmp_path / 'm4'}: 4 keyframes") and built.endswith(
        "; the keyframe budget (--max-keyframes 4) kept 4 of 6"), built


def test_eval_bag_degrade_is_offline_only(capsys, tmp_path):
    code, err = _run(capsys, ["eval-bag", "--map", str(tmp_path), "--bag", str(tmp_path), "--live", "--degrade",
                              "dusk"])
    assert code == 2 and "--degrade works offline" in err and len(err.strip().splitlines()) == 1


def test_global_quiet_flag_reaches_the_scene_generator(tmp_path, capsys):
    """`reloc -q data synth ...` (the -q every other command takes) generates quietly instead of failing with
    "unrecognized arguments: --scene"."""
    out = tmp_path / "s"
    code = main(["-q", "data", "synth", "--scene", "office", "--out", str(out), "--n-map", "4", "--n-query", "2"])
    err = capsys.readouterr().err
    assert code == 0, err[-1500:]
    assert (out / "TrainSplit.txt").exists() and "unrecognized" not in err


def test_analyse_of_a_map_this_user_may_not_write(capsys, tmp_path, monkeypatch):
    """`reloc map analyse` rewrites the map in place: a map (or folder) that may not be written is refused in one line
    before the work (a new user's trial got a PermissionError traceback after it), and the map is left as it was."""
    import os

    from map_helpers import random_map

    m = random_map(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in m.iterdir() if p.is_file()}
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if mode == os.W_OK else real(p, mode, *a, **k))
    code, err = _run(capsys, ["map", "analyse", str(m)])
    assert code == 2 and "not writable" in err and "work on a copy" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in m.iterdir() if p.is_file()} == before
