"""Synthetic RGB-D benchmark generator: determinism, exact ground truth, folder format, paths, lighting."""

from __future__ import annotations

import filecmp
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import invert_T, look_at
from reloc_ros.datasets.synthetic import SCENES, SceneError, generate, make_scene, render
from reloc_ros.datasets.synthetic.cli import main as synth_main
from reloc_ros.datasets.synthetic.lighting import run_setups
from reloc_ros.datasets.synthetic.renderer import Renderer
from reloc_ros.datasets.synthetic.trajectory import (FRAME_RATE_HZ, BODY_RADIUS_M, FreeSpace, mount_T_base_from_cam,
                                                     plan_runs, simulate_odometry)
from reloc_ros.datasets.synthetic.writer import DEFAULT_CAMERA

SMALL_CAM = DEFAULT_CAMERA.scaled(0.5)  # 320 x 240, same field of view
TINY_CAM = DEFAULT_CAMERA.scaled(0.25)  # 160 x 120
N_MAP, N_QUERY = 12, 6


@pytest.fixture(scope="module")
def office_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "office"
    generate("office", out, n_map=N_MAP, n_query=N_QUERY, seed=3, camera=SMALL_CAM, workers=1, progress=False)
    return out


# --------------------------------------------------------------------------------------------------
def _read_rgb(p: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _read_depth(p: Path) -> np.ndarray:
    d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert d.dtype == np.uint16 and d.ndim == 2
    return d.astype(np.float32) / 1000.0


def _read_pose(p: Path) -> np.ndarray:
    return np.loadtxt(p).reshape(4, 4)


def _sample(img: np.ndarray, uv_N2: np.ndarray, interp: int) -> np.ndarray:
    """``cv2.remap`` at N points (maps reshaped to rows of 1024: remap limits each side to < 32767)."""
    n = len(uv_N2)
    if n == 0:
        return np.zeros((0, *img.shape[2:]), img.dtype)
    m = np.zeros((-(-n // 1024) * 1024, 2), np.float32)
    m[:n] = uv_N2
    out = cv2.remap(img, m[:, 0].reshape(-1, 1024), m[:, 1].reshape(-1, 1024), interp)
    return out.reshape(-1, *img.shape[2:])[:n]


def _reproject_check(rgb_a, depth_a, T_a, rgb_b, depth_b, T_b, cam: Camera):
    """Warp frame A's pixels into B with A's depth.

    Returns:
        colour abs differences in [0, 1] and relative depth errors on co-visible pixels, co-visible fraction.
    """
    H, W = depth_a.shape
    v, u = np.mgrid[0:H, 0:W]
    valid = depth_a > 0
    pts_a = cam.backproject(np.stack([u[valid], v[valid]], 1), depth_a[valid])
    T_b_from_a = invert_T(T_b) @ T_a
    pts_b = pts_a @ T_b_from_a[:3, :3].T + T_b_from_a[:3, 3]
    uv_b, front = cam.project(pts_b)
    inside = front & cam.in_image(uv_b, margin=1.0)
    uv = uv_b[inside].astype(np.float32)
    z_pred = pts_b[inside, 2].astype(np.float32)
    z_b = _sample(depth_b, uv, cv2.INTER_NEAREST)
    # Co-visible: B sees the same surface (no occlusion) - depth agreement, also in a 3x3 neighbourhood
    # (excludes depth edges where bilinear colour sampling mixes surfaces).
    zmin = cv2.erode(depth_b, np.ones((3, 3), np.uint8))
    zmax = cv2.dilate(depth_b, np.ones((3, 3), np.uint8))
    n_lo = _sample(zmin, uv, cv2.INTER_NEAREST)
    n_hi = _sample(zmax, uv, cv2.INTER_NEAREST)
    rel = np.abs(z_b - z_pred) / z_pred
    covis = (rel < 0.02) & (np.abs(n_hi - n_lo) < 0.02 * z_pred) & (z_b > 0)
    col_b = _sample(rgb_b.astype(np.float32), uv, cv2.INTER_LINEAR)
    col_a = rgb_a[valid][inside].astype(np.float32)
    diff = np.abs(col_b - col_a)[covis] / 255.0
    return diff, rel[covis], float(covis.sum()) / max(int(valid.sum()), 1)


# --------------------------------------------------------------------------------------------------
def test_scene_names_and_errors():
    assert set(SCENES) == {"office", "corridor", "hall", "storage"}
    for name in SCENES:
        s = make_scene(name, 0)
        assert s.archetype == name and len(s.quads) > 50 and s.lamps
        assert all(q.hi[0] > q.lo[0] and q.hi[1] > q.lo[1] for q in s.quads)
    t0, t1 = make_scene("train_000", 0), make_scene("train_001", 0)
    assert t0.archetype in SCENES and (t0.floor_rect != t1.floor_rect or len(t0.quads) != len(t1.quads))
    with pytest.raises(SceneError, match="office, corridor, hall, storage"):
        make_scene("kitchen", 0)


def test_render_deterministic_and_seed_dependent():
    T = look_at((2.0, 2.0, 1.3), (6.0, 4.0, 1.2))
    rgb1, d1 = render(make_scene("office", 0), T, TINY_CAM)
    rgb2, d2 = render(make_scene("office", 0), T, TINY_CAM)
    assert np.array_equal(rgb1, rgb2) and np.array_equal(d1, d2)
    rgb3, _ = render(make_scene("office", 1), T, TINY_CAM)
    assert not np.array_equal(rgb1, rgb3)
    assert np.array_equal(render("office", T, TINY_CAM)[0], rgb1)  # a name means seed 0
    assert rgb1.dtype == np.uint8 and rgb1.shape == (120, 160, 3) and d1.dtype == np.float32
    assert (d1 > 0).all() and d1.max() < 15.0  # closed room: every ray hits a surface


def test_generate_deterministic_across_workers(tmp_path, office_dir):
    """Same seed -> byte-identical files, whether rendered in-process or by 2 worker processes."""
    out = tmp_path / "again"
    generate("office", out, n_map=N_MAP, n_query=N_QUERY, seed=3, camera=SMALL_CAM, workers=2, progress=False)
    for seq in ("seq-01", "seq-02", "seq-03"):
        names = sorted(p.name for p in (office_dir / seq).iterdir())
        assert names == sorted(p.name for p in (out / seq).iterdir())
        _, mismatch, errors = filecmp.cmpfiles(office_dir / seq, out / seq, names, shallow=False)
        assert not mismatch and not errors, (seq, mismatch[:3])


def test_depth_and_pose_are_exact_clean_render():
    """Rendered depth + poses reproject one view onto another with matching colours (same light, no noise)."""
    scene = make_scene("storage", 0)
    r = Renderer(scene)
    light = run_setups(scene, 0)[0]["mapping"]
    runs = plan_runs(scene, {"mapping": 300}, seed=0)
    Ts = runs["mapping"].T_world_from_cam
    for a, b in ((40, 46), (150, 160)):
        rgb_a, d_a = r.render(Ts[a], SMALL_CAM, light)
        rgb_b, d_b = r.render(Ts[b], SMALL_CAM, light)
        diff, rel, frac = _reproject_check(rgb_a, d_a, Ts[a], rgb_b, d_b, Ts[b], SMALL_CAM)
        assert frac > 0.3, f"too few co-visible pixels ({frac:.2f}) for frames {a}, {b}"
        assert np.median(rel) < 1e-3
        assert np.median(diff) < 3 / 255, np.median(diff) * 255
        assert np.mean(diff) < 8 / 255


def test_depth_and_pose_are_exact_written_files(office_dir):
    """The same check on the written PNG / pose files of the mapping run (mild sensor noise, mm depth)."""
    cam = Camera.from_dict(yaml.safe_load((office_dir / "camera.yaml").read_text()))
    seq = office_dir / "seq-01"
    checked = 0
    for a, b in ((0, 2), (5, 8)):
        fa, fb = (seq / f"frame-{k:06d}" for k in (a, b))

        def load(stem: Path):
            return (_read_rgb(stem.with_name(stem.name + ".color.png")),
                    _read_depth(stem.with_name(stem.name + ".depth.png")),
                    _read_pose(stem.with_name(stem.name + ".pose.txt")))

        (rgb_a, d_a, T_a), (rgb_b, d_b, T_b) = load(fa), load(fb)
        diff, rel, frac = _reproject_check(rgb_a, d_a, T_a, rgb_b, d_b, T_b, cam)
        if frac < 0.2:
            continue
        checked += 1
        assert np.median(rel) < 2e-3
        assert np.median(diff) < 3 / 255, np.median(diff) * 255
    assert checked >= 1


def test_folder_layout(office_dir):
    root = office_dir
    cam = yaml.safe_load((root / "camera.yaml").read_text())
    assert set(cam) == {"width", "height", "fx", "fy", "cx", "cy", "distortion_model", "dist"}
    assert (cam["width"], cam["height"]) == (320, 240) and cam["distortion_model"] == "none" and cam["dist"] == []
    assert cam["cx"] == pytest.approx(159.5) and cam["fx"] == pytest.approx(262.5)
    assert (root / "TrainSplit.txt").read_text().split() == ["sequence1"]
    assert (root / "TestSplit.txt").read_text().split() == ["sequence2", "sequence3"]
    assert yaml.safe_load((root / "sequences.yaml").read_text()) == {
        "seq-01": "mapping", "seq-02": "query_same_light", "seq-03": "query_light_change"}
    meta = yaml.safe_load((root / "scene.yaml").read_text())
    assert meta["scene"] == "office" and meta["seed"] == 3 and meta["generator_version"]
    assert meta["frame_counts"] == {"seq-01": N_MAP, "seq-02": N_QUERY, "seq-03": N_QUERY}
    assert {"light", "sensor"} <= set(meta["runs"]["seq-03"])
    assert sorted(p.name for p in root.iterdir()) == sorted(["camera.yaml", "TrainSplit.txt", "TestSplit.txt",
                                                             "sequences.yaml", "scene.yaml", "seq-01", "seq-02",
                                                             "seq-03"])
    prev_end = -np.inf
    for seq, n in (("seq-01", N_MAP), ("seq-02", N_QUERY), ("seq-03", N_QUERY)):
        d = root / seq
        files = sorted(p.name for p in d.iterdir())
        expected = sorted([f"frame-{k:06d}.{s}" for k in range(n) for s in ("color.png", "depth.png", "pose.txt")]
                          + ["times.txt"])
        assert files == expected
        lines = [ln.split() for ln in (d / "times.txt").read_text().splitlines()]
        assert [ln[0] for ln in lines] == [f"frame-{k:06d}" for k in range(n)]
        t = np.array([float(ln[1]) for ln in lines])
        assert np.allclose(np.diff(t), 1.0 / FRAME_RATE_HZ, atol=1e-6)
        assert t[0] > prev_end
        if seq == "seq-01":
            assert t[0] == 1000.0
        prev_end = t[-1]
        for k in (0, n - 1):
            T = _read_pose(d / f"frame-{k:06d}.pose.txt")
            R = T[:3, :3]
            assert np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
            assert np.allclose(T[3], [0, 0, 0, 1])
            assert 0.9 < T[2, 3] < 1.7  # camera height
            assert abs(np.degrees(np.arcsin(R[2, 2]))) < 20  # optical axis close to horizontal
            raw = (d / f"frame-{k:06d}.pose.txt").read_text().split()
            assert len(raw) == 16 and all(len(v.split(".")[1]) == 9 for v in raw)
            rgb = cv2.imread(str(d / f"frame-{k:06d}.color.png"), cv2.IMREAD_UNCHANGED)
            assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
            depth = cv2.imread(str(d / f"frame-{k:06d}.depth.png"), cv2.IMREAD_UNCHANGED)
            assert depth.shape == (240, 320) and depth.dtype == np.uint16 and depth.max() > 500


def test_loads_with_7scenes_loader(office_dir):
    from reloc_ros.datasets import load_dataset

    ds = load_dataset(office_dir, "7scenes")
    mapping, queries = ds.split()
    assert len(mapping) == N_MAP and len(queries) == 2 * N_QUERY
    assert ds.meta["sequence_labels"]["seq-03"] == "query_light_change"


def test_query_paths_differ_but_cover_the_same_area():
    for name in ("office", "corridor"):
        scene = make_scene(name, 0)
        runs = plan_runs(scene, {"mapping": 1000, "query_same_light": 500, "query_light_change": 500}, seed=0)
        p_map = runs["mapping"].T_world_from_base[:, :2, 3]
        fs = FreeSpace.from_scene(scene)
        for q in ("query_same_light", "query_light_change"):
            tr = runs[q]
            p_q = tr.T_world_from_base[:, :2, 3]
            dist = np.linalg.norm(p_q[:, None] - p_map[None], axis=2).min(axis=1)
            assert np.median(dist) > 0.05 and dist.mean() > 0.08, f"{name}/{q} follows the mapping path"
            assert np.percentile(dist, 95) < 1.5, f"{name}/{q} leaves the mapped area"
            assert fs.at(p_q).min() >= BODY_RADIUS_M - 0.05  # never inside furniture / walls
            assert 0.3 < tr.mean_speed_mps < 1.2
        # same area: bounding boxes overlap for the most part
        lo_m, hi_m = p_map.min(0), p_map.max(0)
        p_q = runs["query_light_change"].T_world_from_base[:, :2, 3]
        inter = np.clip(np.minimum(hi_m, p_q.max(0)) - np.maximum(lo_m, p_q.min(0)), 0, None).prod()
        assert inter > 0.5 * np.prod(p_q.max(0) - p_q.min(0))
        cam_z = runs["mapping"].T_world_from_cam[:, 2, 3]
        assert 1.0 <= cam_z.min() and cam_z.max() <= 1.6


def test_mount_composition_and_odometry_drift():
    scene = make_scene("office", 0)
    tr = plan_runs(scene, {"mapping": 1000}, seed=0)["mapping"]
    mount = mount_T_base_from_cam()
    assert np.allclose(tr.T_world_from_base @ mount, tr.T_world_from_cam, atol=1e-12)
    # REP-103 base: z up; optical camera looks along base x (forward), slightly down.
    assert np.allclose(mount[:3, 2] @ [1.0, 0.0, 0.0], np.cos(np.radians(3.0)))
    odom = simulate_odometry(tr.T_world_from_base, np.random.default_rng(0))
    assert np.allclose(odom[0], tr.T_world_from_base[0])
    travelled = np.linalg.norm(np.diff(tr.T_world_from_base[:, :3, 3], axis=0), axis=1).sum()
    err = np.linalg.norm(odom[:, :3, 3] - tr.T_world_from_base[:, :3, 3], axis=1)
    assert err[-1] > 1e-3, "odometry has no drift"
    assert err.max() < 0.05 * travelled
    assert np.allclose(odom[:, 2, 3], tr.T_world_from_base[:, 2, 3], atol=1e-9)  # height stays exact


def test_stride_subsamples_the_30hz_trajectory():
    scene = make_scene("corridor", 0)
    full = plan_runs(scene, {"mapping": 30}, seed=0, stride=1)["mapping"]
    sub = plan_runs(scene, {"mapping": 10}, seed=0, stride=3)["mapping"]
    assert np.allclose(np.diff(sub.times_s), 0.1) and sub.times_s[0] == 1000.0
    assert np.allclose(np.diff(full.times_s), 1 / 30)


def test_light_change_differs(office_dir):
    scene = make_scene("office", 3)
    lights, sensors = run_setups(scene, 3)
    assert lights["query_same_light"] == lights["mapping"]
    assert sensors["query_light_change"].read_noise > sensors["query_same_light"].read_noise
    assert sensors["query_light_change"].blur_sigma > 0
    # Same view under both lights: darker and warmer.
    r = Renderer(scene)
    T = look_at((2.0, 2.0, 1.3), (6.0, 4.5, 1.2))
    a = r.render(T, SMALL_CAM, lights["mapping"])[0].reshape(-1, 3).astype(float).mean(axis=0)
    b = r.render(T, SMALL_CAM, lights["query_light_change"])[0].reshape(-1, 3).astype(float).mean(axis=0)
    assert b.mean() < 0.85 * a.mean()
    assert b[0] / b[2] > 1.1 * a[0] / a[2]
    # The written runs: the light-change run is darker on average.
    lum = {seq: np.mean([_read_rgb(p).mean() for p in sorted((office_dir / seq).glob("*.color.png"))])
           for seq in ("seq-01", "seq-03")}
    assert lum["seq-03"] < 0.9 * lum["seq-01"]


def test_cli_errors(tmp_path, capsys):
    assert synth_main(["--scene", "kitchen", "--out", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "unknown scene 'kitchen'" in err and "office, corridor, hall, storage" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("keep me")
    assert synth_main(["--scene", "office", "--out", str(busy), "--n-map", "2", "--n-query", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert synth_main(["--scene", "office", "--out", str(busy), "--overwrite", "--n-map", "2", "--n-query", "1"]) == 2
    assert "refusing" in capsys.readouterr().err and (busy / "x.txt").exists()
    assert synth_main(["--scene", "office", "--out", str(tmp_path / "n"), "--n-map", "0"]) == 2


def test_cli_writes_and_overwrites(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["--scene", "corridor", "--out", str(out), "--n-map", "2", "--n-query", "1", "--workers", "1"]
    assert synth_main(args) == 0
    assert "[synth]" in capsys.readouterr().err  # progress on stderr
    assert synth_main(args + ["--quiet"]) == 2  # not empty
    assert synth_main(args + ["--quiet", "--overwrite"]) == 0
    assert len(list((out / "seq-01").glob("*.color.png"))) == 2
    assert not list(tmp_path.glob(".o.tmp-*"))
