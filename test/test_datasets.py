"""Tests of the dataset loaders on tiny datasets written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import (
    invert_T,
    make_T,
    matrix_from_quat,
    quat_from_matrix,
    random_rotation,
    rotation_error_deg,
)
from reloc_ros.datasets import DatasetError, load_dataset, load_depth, load_image

W, H = 64, 48


def _write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    return make_T(random_rotation(rng), rng.uniform(-5, 5, 3))


# ==================================================================================================
# posed_images
# ==================================================================================================
K_POSED = np.array([[50.0, 0.0, 31.5], [0.0, 51.0, 23.5], [0.0, 0.0, 1.0]])


def _write_camera_file(path: Path, T: np.ndarray, K: np.ndarray = K_POSED, size=(W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["# K, R_world_from_cam, camera centre, width height"]
    rows += [" ".join(f"{v:.17g}" for v in r) for r in K]
    rows += [" ".join(f"{v:.17g}" for v in r) for r in T[:3, :3]]
    rows += [" ".join(f"{v:.17g}" for v in T[:3, 3])]
    rows += [f"{size[0]} {size[1]}"]
    path.write_text("\n".join(rows) + "\n")


def _make_posed(root: Path, n: int = 10, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    poses = {}
    for i in range(n):
        stem = f"{i:04d}"
        T = _random_pose(rng)
        _write_image(root / "images" / f"{stem}.{'jpg' if i % 2 else 'png'}", i)
        _write_camera_file(root / "cameras" / f"{stem}.txt", T)
        poses[stem] = T
    return poses


def test_posed_images_round_trip(tmp_path):
    poses = _make_posed(tmp_path)
    ds = load_dataset(tmp_path, "posed_images")
    assert ds.format == "posed_images"
    assert [f.name for f in ds.frames] == sorted(poses)
    for f in ds.frames:
        np.testing.assert_allclose(f.T_world_from_cam, poses[f.name], atol=1e-9)
        assert f.camera == Camera(W, H, 50.0, 51.0, 31.5, 23.5)
        assert f.depth_path is None and f.split is None and f.timestamp is None
        assert f.image_path.stem == f.name
    assert ds.frames[1].image_path.suffix == ".jpg" and ds.frames[0].image_path.suffix == ".png"
    assert load_image(ds.frames[0]).shape == (H, W, 3)
    assert not ds.has_depth and not ds.has_split


def test_split_map_every(tmp_path):
    _make_posed(tmp_path, n=10)
    ds = load_dataset(tmp_path, "posed_images")
    mapping, queries = ds.split(map_every=4)
    assert [f.name for f in mapping] == ["0000", "0004", "0008"]
    assert [f.name for f in queries] == ["0001", "0002", "0003", "0005", "0006", "0007", "0009"]
    with pytest.raises(DatasetError, match="no map/query split of its own; pass --map-every"):
        ds.split()


def test_posed_images_missing_camera_file(tmp_path):
    _make_posed(tmp_path, n=3)
    (tmp_path / "cameras" / "0001.txt").unlink()
    with pytest.raises(DatasetError, match=r"0001\.jpg has no camera file; expected .*cameras/0001\.txt"):
        load_dataset(tmp_path, "posed_images")


def test_posed_images_camera_without_image(tmp_path):
    _make_posed(tmp_path, n=3)
    (tmp_path / "images" / "0002.png").unlink()
    with pytest.raises(DatasetError, match=r"camera file .*0002\.txt has no image"):
        load_dataset(tmp_path, "posed_images")


def test_posed_images_bad_number_of_values(tmp_path):
    _make_posed(tmp_path, n=2)
    path = tmp_path / "cameras" / "0001.txt"
    lines = path.read_text().splitlines()
    lines[5] = "0.1 0.2"  # row 2 of R with 2 values
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"0001\.txt:6: expected 3 numbers \(row 2 of R_world_from_cam\), got 2"):
        load_dataset(tmp_path, "posed_images")


def test_posed_images_not_a_number_and_missing_lines(tmp_path):
    _make_posed(tmp_path, n=2)
    path = tmp_path / "cameras" / "0000.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + ["50 0 x"] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=r"0000\.txt:2: expected numbers \(row 1 of K\), got '50 0 x'"):
        load_dataset(tmp_path, "posed_images")
    path.write_text("\n".join(lines[:-1]) + "\n")  # no size line
    with pytest.raises(DatasetError, match=r"0000\.txt: expected 8 data lines .* found 7"):
        load_dataset(tmp_path, "posed_images")


def test_posed_images_rejects_non_rotation(tmp_path):
    _make_posed(tmp_path, n=2)
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, 1.0, 1.01])
    _write_camera_file(tmp_path / "cameras" / "0001.txt", T)
    with pytest.raises(DatasetError, match=r"0001\.txt:5-7: the 3x3 rotation is not orthonormal"):
        load_dataset(tmp_path, "posed_images")
    T[:3, :3] = np.diag([1.0, 1.0, -1.0])
    _write_camera_file(tmp_path / "cameras" / "0001.txt", T)
    with pytest.raises(DatasetError, match=r"0001\.txt.*det\(R\) < 0"):
        load_dataset(tmp_path, "posed_images")


def test_posed_images_slightly_non_orthonormal_is_projected(tmp_path):
    _make_posed(tmp_path, n=1)
    T = _random_pose(np.random.default_rng(5))
    T_noisy = T.copy()
    T_noisy[:3, :3] = np.round(T[:3, :3], 6)  # 6 digits like the Strecha files
    _write_camera_file(tmp_path / "cameras" / "0000.txt", T_noisy)
    R = load_dataset(tmp_path, "posed_images").frames[0].T_world_from_cam[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert rotation_error_deg(R, T[:3, :3]) < 1e-3


def test_posed_images_missing_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"cameras not found: a posed_images dataset needs"):
        load_dataset(tmp_path, "posed_images")


# ==================================================================================================
# load_dataset
# ==================================================================================================
def test_load_dataset_unknown_format_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"unknown dataset format 'kitti'; choose one of \['7scenes', 'colmap'"):
        load_dataset(tmp_path, "kitti")
    with pytest.raises(DatasetError, match=r"dataset folder not found: .*nope"):
        load_dataset(tmp_path / "nope", "tum")


# ==================================================================================================
# 7-Scenes
# ==================================================================================================
def _write_pose(path: Path, T: np.ndarray) -> None:
    path.write_text("\n".join("\t".join(f"{v:.17e}" for v in row) + "\t" for row in T) + "\n")


def _make_7scenes(root: Path, seqs=(1, 2, 3), n: int = 4, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    poses = {}
    for s in seqs:
        d = root / f"seq-{s:02d}"
        for i in range(n):
            stem = f"frame-{i:06d}"
            _write_image(d / f"{stem}.color.png", i)
            depth = np.full((H, W), 1500, np.uint16)
            depth[0, 0] = 65535
            depth[0, 1] = 0
            cv2.imwrite(str(d / f"{stem}.depth.png"), depth)
            T = _random_pose(rng)
            _write_pose(d / f"{stem}.pose.txt", T)
            poses[f"seq-{s:02d}/{stem}"] = T
    return poses


def test_7scenes_basic_split_and_defaults(tmp_path):
    poses = _make_7scenes(tmp_path)
    (tmp_path / "TrainSplit.txt").write_text("sequence1\nseq-03\n")
    (tmp_path / "TestSplit.txt").write_text("sequence2\n\n")
    ds = load_dataset(tmp_path, "7scenes")
    assert ds.format == "7scenes"
    assert [f.name for f in ds.frames] == sorted(poses)
    for f in ds.frames:
        np.testing.assert_allclose(f.T_world_from_cam, poses[f.name], atol=1e-9)
        assert f.sequence == f.name.split("/")[0]
        assert f.camera == Camera(640, 480, 585.0, 585.0, 320.0, 240.0)
        assert f.depth_scale == 0.001 and f.depth_path.name == f.name.split("/")[1] + ".depth.png"
        assert f.timestamp is None
    mapping, queries = ds.split()
    assert {f.sequence for f in mapping} == {"seq-01", "seq-03"} and len(mapping) == 8
    assert {f.sequence for f in queries} == {"seq-02"} and len(queries) == 4
    assert ds.meta["skipped_invalid_pose"] == 0
    assert ds.meta["sequence_labels"] == {}
    assert ds.has_depth and ds.has_split


def test_7scenes_depth_is_metres_with_invalid_zeroed(tmp_path):
    _make_7scenes(tmp_path, seqs=(1,), n=1)
    ds = load_dataset(tmp_path, "7scenes")
    d = load_depth(ds.frames[0])
    assert d.dtype == np.float32 and d.shape == (H, W)
    assert d[0, 0] == 0.0 and d[0, 1] == 0.0  # 65535 and 0 are invalid
    assert d[5, 5] == pytest.approx(1.5)
    assert np.count_nonzero(d) == H * W - 2


def test_7scenes_camera_yaml_times_labels(tmp_path):
    _make_7scenes(tmp_path, seqs=(1, 2, 3), n=3)
    cam = {"width": W, "height": H, "fx": 40.0, "fy": 41.0, "cx": 31.5, "cy": 23.5,
           "distortion_model": "plumb_bob", "dist": [0.1, -0.01, 0.0, 0.0, 0.0]}
    (tmp_path / "camera.yaml").write_text(yaml.safe_dump(cam))
    (tmp_path / "seq-02" / "times.txt").write_text(
        "# frame seconds\nframe-000000 0.000000\nframe-000001 0.033333\nframe-000002 0.066667\n")
    (tmp_path / "sequences.yaml").write_text(
        "seq-01: mapping\nseq-02: query_same_light\nseq-03: query_light_change\n")
    ds = load_dataset(tmp_path, "7scenes")
    assert ds.frames[0].camera == Camera.from_dict(cam)
    assert ds.frames[0].camera.dist == (0.1, -0.01, 0.0, 0.0, 0.0)
    assert ds.meta["sequence_labels"] == {
        "seq-01": "mapping", "seq-02": "query_same_light", "seq-03": "query_light_change"}
    assert ds.by_name("seq-02/frame-000001").timestamp == pytest.approx(0.033333)
    assert ds.by_name("seq-02/frame-000000").timestamp == 0.0
    assert ds.by_name("seq-01/frame-000001").timestamp is None
    assert not ds.has_split  # no TrainSplit / TestSplit


def test_7scenes_invalid_pose_skipped_and_depth_optional(tmp_path):
    _make_7scenes(tmp_path, seqs=(1,), n=4)
    d = tmp_path / "seq-01"
    (d / "frame-000001.pose.txt").write_text("inf inf inf inf\n" * 4)
    (d / "frame-000002.pose.txt").write_text("-1.#IND0000e+000 " * 4 + "\n" + "0 0 0 0\n" * 2 + "0 0 0 1\n")
    (d / "frame-000003.depth.png").unlink()
    ds = load_dataset(tmp_path, "7scenes")
    assert [f.name for f in ds.frames] == ["seq-01/frame-000000", "seq-01/frame-000003"]
    assert ds.meta["skipped_invalid_pose"] == 2
    assert ds.by_name("seq-01/frame-000003").depth_path is None
    assert not ds.has_depth


def test_7scenes_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"no seq-XX folders found"):
        load_dataset(tmp_path, "7scenes")
    _make_7scenes(tmp_path, seqs=(1,), n=2)
    pose = tmp_path / "seq-01" / "frame-000001.pose.txt"
    good = pose.read_text()
    pose.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    with pytest.raises(DatasetError, match=r"frame-000001\.pose\.txt: expected 16 numbers \(4x4 matrix"):
        load_dataset(tmp_path, "7scenes")
    pose.write_text("1 0 0 0\n0 1 0 zero\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"frame-000001\.pose\.txt:2: expected numbers"):
        load_dataset(tmp_path, "7scenes")
    pose.write_text(good)
    (tmp_path / "TrainSplit.txt").write_text("sequence1\nsequence7\n")
    with pytest.raises(DatasetError, match=r"TrainSplit\.txt:2: sequence 'sequence7' has no folder seq-07"):
        load_dataset(tmp_path, "7scenes")
    (tmp_path / "TrainSplit.txt").write_text("sequence1\n")
    (tmp_path / "TestSplit.txt").write_text("seq-01\n")
    with pytest.raises(DatasetError, match=r"seq-01 is listed in both TrainSplit\.txt and TestSplit\.txt"):
        load_dataset(tmp_path, "7scenes")
    (tmp_path / "TestSplit.txt").write_text("")
    (tmp_path / "seq-01" / "times.txt").write_text("frame-000000 0.0\nframe-000001\n")
    with pytest.raises(DatasetError, match=r"times\.txt:2: expected '<frame stem> <seconds>'"):
        load_dataset(tmp_path, "7scenes")
    (tmp_path / "seq-01" / "times.txt").write_text("frame-000000 0.0\n")
    with pytest.raises(DatasetError, match=r"times\.txt: no timestamp for frame frame-000001"):
        load_dataset(tmp_path, "7scenes")
    (tmp_path / "seq-01" / "times.txt").unlink()
    (tmp_path / "camera.yaml").write_text("width: 64\nheight: 48\nfx: 40\n")
    with pytest.raises(DatasetError, match=r"camera\.yaml: missing key\(s\) fy, cx, cy"):
        load_dataset(tmp_path, "7scenes")
    (tmp_path / "camera.yaml").unlink()
    pose.unlink()
    with pytest.raises(DatasetError, match=r"frame-000001\.color\.png has no pose file"):
        load_dataset(tmp_path, "7scenes")


# ==================================================================================================
# TUM RGB-D
# ==================================================================================================
def _make_tum(root: Path, rgb_times, depth_times, gt_rows) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rgb_lines = ["# color images", "# file: 'x.bag'", "# timestamp filename"]
    for i, t in enumerate(rgb_times):
        _write_image(root / "rgb" / f"{t:.6f}.png", i)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    depth_lines = ["# depth maps"]
    for t in depth_times:
        (root / "depth").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "depth" / f"{t:.6f}.png"), np.full((H, W), 5000, np.uint16))
        depth_lines.append(f"{t:.6f} depth/{t:.6f}.png")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    gt_lines = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    gt_lines += [" ".join(f"{v:.9f}" for v in row) for row in gt_rows]
    (root / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")


def test_tum_association_and_interpolation(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    # Rotation about z by 0 deg at t=1.0 and 90 deg at t=1.1 (xyzw order in the file). The gt samples are
    # 0.1 s apart so that t=1.05 lies within MAX_GT_GAP of both.
    s = np.sqrt(0.5)
    gt = [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
          [1.1, 2.0, 4.0, -6.0, 0.0, 0.0, s, s]]
    _make_tum(root, rgb_times=[0.5, 1.0, 1.05, 1.09, 1.2], depth_times=[0.51, 1.01, 1.065, 1.12, 1.19],
              gt_rows=gt)
    ds = load_dataset(root, "tum")
    # 0.5 and 1.2 lie outside the gt range; 1.09 has no depth within 0.02 s (nearest 1.065, 0.025 s away).
    assert [f.name for f in ds.frames] == ["1.000000", "1.050000"]
    assert ds.meta["skipped_no_depth"] == 1 and ds.meta["skipped_no_groundtruth"] == 2
    f0, f1 = ds.frames
    assert f0.depth_path.name == "1.010000.png" and f1.depth_path.name == "1.065000.png"
    assert f1.timestamp == 1.05 and f1.depth_scale == pytest.approx(1 / 5000)
    np.testing.assert_allclose(f0.T_world_from_cam, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(f1.T_world_from_cam[:3, 3], [1.0, 2.0, -3.0], atol=1e-9)
    # Slerp halfway: rotation of 45 deg about z.
    c = np.cos(np.pi / 4)
    np.testing.assert_allclose(f1.T_world_from_cam[:3, :3], [[c, -c, 0], [c, c, 0], [0, 0, 1]], atol=1e-9)
    np.testing.assert_allclose(quat_from_matrix(f1.T_world_from_cam[:3, :3], "xyzw"),
                               [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)], atol=1e-9)
    assert f0.camera == Camera(640, 480, 517.3, 516.5, 318.6, 255.3, "plumb_bob",
                               (0.2624, -0.9531, -0.0054, 0.0026, 1.1633))
    assert ds.meta["camera_source"] == "TUM freiburg1 defaults"
    assert not ds.has_split and ds.has_depth
    assert load_depth(f0)[3, 3] == pytest.approx(1.0)


def test_tum_xyzw_order_and_gap(tmp_path):
    # A general rotation: the loader must read qx qy qz qw, not qw qx qy qz.
    rng = np.random.default_rng(3)
    R = random_rotation(rng)
    q = quat_from_matrix(R, "xyzw")
    gt = [[10.0, 1, 2, 3, *q], [10.05, 1, 2, 3, *q], [11.0, 1, 2, 3, *q]]
    root = tmp_path / "rgbd_dataset_freiburg3_long_office_household"
    _make_tum(root, rgb_times=[10.0, 10.02, 10.5], depth_times=[10.0, 10.02, 10.5], gt_rows=gt)
    ds = load_dataset(root, "tum")
    # 10.5 lies 0.45 s from the nearest gt sample (> 0.1 s): dropped.
    assert [f.name for f in ds.frames] == ["10.000000", "10.020000"]
    assert ds.meta["skipped_no_groundtruth"] == 1
    for f in ds.frames:
        np.testing.assert_allclose(f.T_world_from_cam[:3, :3], R, atol=1e-9)
    assert ds.frames[0].camera == Camera(640, 480, 535.4, 539.2, 320.1, 247.6)


def test_tum_camera_yaml_and_ros_default(tmp_path):
    gt = [[0.45, 0, 0, 0, 0, 0, 0, 1], [0.55, 0, 0, 0, 0, 0, 0, 1]]
    root = tmp_path / "my_sequence"
    _make_tum(root, [0.5], [0.5], gt)
    assert load_dataset(root, "tum").frames[0].camera == Camera(640, 480, 525.0, 525.0, 319.5, 239.5)
    (root / "camera.yaml").write_text("width: 64\nheight: 48\nfx: 30\nfy: 31\ncx: 32\ncy: 24\n")
    ds = load_dataset(root, "tum")
    assert ds.frames[0].camera == Camera(64, 48, 30.0, 31.0, 32.0, 24.0)
    assert ds.meta["camera_source"].endswith("camera.yaml")


def test_tum_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"rgb\.txt not found: a TUM RGB-D sequence folder holds"):
        load_dataset(tmp_path, "tum")
    gt = [[0.0, 0, 0, 0, 0, 0, 0, 1], [1.0, 0, 0, 0, 0, 0, 0, 1]]
    _make_tum(tmp_path, [0.5], [0.5], gt)
    (tmp_path / "groundtruth.txt").write_text("# gt\n0.0 0 0 0 0 0 0 1\n1.0 0 0 0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"groundtruth\.txt:3: expected 8 numbers \(timestamp tx ty tz qx qy qz qw"):
        load_dataset(tmp_path, "tum")
    (tmp_path / "groundtruth.txt").write_text("0.0 0 0 0 0 0 0 0\n")
    with pytest.raises(DatasetError, match=r"groundtruth\.txt:1: expected finite values and a non-zero quaternion"):
        load_dataset(tmp_path, "tum")
    (tmp_path / "groundtruth.txt").write_text("5.0 0 0 0 0 0 0 1\n6.0 0 0 0 0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"no usable frames .* check that the timestamps"):
        load_dataset(tmp_path, "tum")
    (tmp_path / "rgb.txt").write_text("0.5 rgb/missing.png\n")
    with pytest.raises(DatasetError, match=r"rgb\.txt:1: file .*missing\.png not found"):
        load_dataset(tmp_path, "tum")
    (tmp_path / "rgb.txt").write_text("0.5\n")
    with pytest.raises(DatasetError, match=r"rgb\.txt:1: expected 'timestamp filename'"):
        load_dataset(tmp_path, "tum")


# ==================================================================================================
# COLMAP
# ==================================================================================================
def _write_colmap(root: Path, poses: dict[str, np.ndarray], cameras_txt: str, model_sub: str = "sparse/0",
                  points: bool = True) -> None:
    model = root / model_sub
    model.mkdir(parents=True, exist_ok=True)
    (model / "cameras.txt").write_text("# Camera list with one line of data per camera:\n" + cameras_txt)
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, (name, T_world_from_cam) in enumerate(poses.items(), start=1):
        T_cam_from_world = invert_T(T_world_from_cam)
        q = quat_from_matrix(T_cam_from_world[:3, :3], "wxyz")
        t = T_cam_from_world[:3, 3]
        cam_id = 1 if i % 2 else 2
        lines.append(f"{i} " + " ".join(f"{v:.17g}" for v in (*q, *t)) + f" {cam_id} {name}")
        lines.append("10.5 20.5 1 30.0 40.0 -1" if i == 1 else "")
        _write_image(root / "images" / name, i)
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    if points:
        (model / "points3D.txt").write_text(
            "# 3D point list\n1 0.5 1.5 2.5 255 0 0 0.3 1 0\n7 -1 -2 -3 0 255 0 0.1 1 1 2 0\n")


CAMS = ("1 PINHOLE 64 48 50 51 32 24\n"
        "2 SIMPLE_RADIAL 64 48 45 32.5 24.5 -0.02\n")


def test_colmap_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    names = ["a.jpg", "b.png", "sub/c.jpg", "sub/d.e.jpg"]
    poses = {n: _random_pose(rng) for n in names}
    _write_colmap(tmp_path, poses, CAMS)
    ds = load_dataset(tmp_path, "colmap")
    assert ds.format == "colmap"
    assert [f.name for f in ds.frames] == ["a", "b", "sub/c", "sub/d.e"]
    for f, name in zip(ds.frames, names):
        np.testing.assert_allclose(f.T_world_from_cam, poses[name], atol=1e-9)
        assert f.image_path == tmp_path / "images" / name
        assert f.split is None and f.depth_path is None
    # COLMAP pixel centres are at +0.5: cx, cy shift by -0.5 into the OpenCV convention.
    assert ds.by_name("a").camera == Camera(64, 48, 50.0, 51.0, 31.5, 23.5)
    assert ds.by_name("b").camera == Camera(64, 48, 45.0, 45.0, 32.0, 24.0, "plumb_bob", (-0.02, 0, 0, 0, 0))
    pts = ds.meta["points3D"]
    np.testing.assert_array_equal(pts["ids"], [1, 7])
    np.testing.assert_allclose(pts["xyz"], [[0.5, 1.5, 2.5], [-1, -2, -3]])
    assert ds.meta["model_dir"] == str(tmp_path / "sparse/0")


def test_colmap_projection_convention(tmp_path):
    """A world point projects with the loaded camera + pose where COLMAP's convention says it does."""
    T_cam_from_world = make_T(matrix_from_quat([0.9, 0.1, -0.2, 0.3], "wxyz"), [0.1, -0.2, 2.0])
    _write_colmap(tmp_path, {"a.jpg": invert_T(T_cam_from_world)}, "1 PINHOLE 64 48 50 51 32 24\n",
                  model_sub=".", points=False)
    ds = load_dataset(tmp_path, "colmap")
    X_world = np.array([0.3, -0.1, 1.0])
    # COLMAP: x_cam = R X + t, u = fx x/z + cx (pixel-corner origin); ours: u_colmap - 0.5.
    x = T_cam_from_world[:3, :3] @ X_world + T_cam_from_world[:3, 3]
    uv_colmap = np.array([50 * x[0] / x[2] + 32, 51 * x[1] / x[2] + 24])
    f = ds.frames[0]
    x_ours = invert_T(f.T_world_from_cam)[:3, :3] @ X_world + invert_T(f.T_world_from_cam)[:3, 3]
    uv, valid = f.camera.project(x_ours[None])
    assert valid[0]
    np.testing.assert_allclose(uv[0], uv_colmap - 0.5, atol=1e-9)
    assert "points3D" not in ds.meta and ds.meta["model_dir"] == str(tmp_path)


@pytest.mark.parametrize("line, model, dist", [
    ("RADIAL 64 48 45 32 24 0.1 -0.05", "plumb_bob", (0.1, -0.05, 0, 0, 0)),
    ("OPENCV 64 48 45 46 32 24 0.1 -0.05 0.001 0.002", "plumb_bob", (0.1, -0.05, 0.001, 0.002, 0)),
    ("FULL_OPENCV 64 48 45 46 32 24 0.1 -0.05 0.001 0.002 0.01 0.02 0.03 0.04", "rational_polynomial",
     (0.1, -0.05, 0.001, 0.002, 0.01, 0.02, 0.03, 0.04)),
    ("OPENCV_FISHEYE 64 48 45 46 32 24 0.1 -0.05 0.01 0.02", "equidistant", (0.1, -0.05, 0.01, 0.02)),
    ("SIMPLE_PINHOLE 64 48 45 32 24", "none", ()),
])
def test_colmap_camera_models(tmp_path, line, model, dist):
    _write_colmap(tmp_path, {"a.jpg": np.eye(4)}, f"1 {line}\n2 PINHOLE 64 48 1 1 1 1\n", points=False)
    cam = load_dataset(tmp_path, "colmap").frames[0].camera
    assert cam.distortion_model == model
    np.testing.assert_allclose(cam.dist, dist)
    assert (cam.cx, cam.cy) == (31.5, 23.5) and cam.fx == 45.0


def test_colmap_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"no COLMAP text model \(cameras\.txt \+ images\.txt\)"):
        load_dataset(tmp_path, "colmap")
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "cameras.bin").write_bytes(b"\0")
    with pytest.raises(DatasetError, match=r"binary COLMAP model; convert it with 'colmap model_converter"):
        load_dataset(tmp_path, "colmap")
    poses = {"a.jpg": np.eye(4), "b.jpg": np.eye(4)}
    _write_colmap(tmp_path, poses, "1 THIN_PRISM_FISHEYE 64 48 1 2 3 4 5 6 7 8 9 10 11 12\n2 PINHOLE 64 48 1 1 1 1\n")
    with pytest.raises(DatasetError, match=r"cameras\.txt:2: unsupported COLMAP camera model 'THIN_PRISM_FISHEYE'; "
                                           r"supported: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL"):
        load_dataset(tmp_path, "colmap")
    _write_colmap(tmp_path, poses, "1 PINHOLE 64 48 50 51 32\n2 PINHOLE 64 48 1 1 1 1\n")
    with pytest.raises(DatasetError, match=r"cameras\.txt:2: expected 4 numbers \(parameters of a PINHOLE camera"):
        load_dataset(tmp_path, "colmap")
    _write_colmap(tmp_path, poses, CAMS)
    images_txt = tmp_path / "sparse" / "0" / "images.txt"
    lines = images_txt.read_text().splitlines()
    images_txt.write_text("\n".join(lines[:3] + [lines[3], lines[5]]) + "\n")  # points line of image 1 missing
    with pytest.raises(DatasetError, match=r"images\.txt:5: expected the 2D points line of image a\.jpg"):
        load_dataset(tmp_path, "colmap")
    images_txt.write_text("\n".join(lines[:3] + ["1 1 0 0 0 0 0 1 a.jpg", ""]) + "\n")
    with pytest.raises(DatasetError, match=r"images\.txt:4: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'"):
        load_dataset(tmp_path, "colmap")
    images_txt.write_text("\n".join(lines[:3] + ["1 0 0 0 0 0 0 1 1 a.jpg", ""]) + "\n")
    with pytest.raises(DatasetError, match=r"images\.txt:4: invalid quaternion"):
        load_dataset(tmp_path, "colmap")
    images_txt.write_text("\n".join(lines[:3] + ["1 1 0 0 0 0 0 1 9 a.jpg", ""]) + "\n")
    with pytest.raises(DatasetError, match=r"image a\.jpg \(IMAGE_ID 1\) uses CAMERA_ID 9, which is not in cameras"):
        load_dataset(tmp_path, "colmap")
    images_txt.write_text("\n".join(lines[:3] + ["1 1 0 0 0 0 0 1 1 zz.jpg", ""]) + "\n")
    with pytest.raises(DatasetError, match=r"image zz\.jpg \(IMAGE_ID 1\) not found at .*images/zz\.jpg"):
        load_dataset(tmp_path, "colmap")
