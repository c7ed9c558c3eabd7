"""rosbag2 (mcap) output of the synthetic generator, read back with rosbags and deserialized with rclpy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from reloc_ros.core.geometry import invert_T, make_T, matrix_from_quat
from reloc_ros.datasets.synthetic import generate
from reloc_ros.datasets.synthetic.bag import TOPICS
from reloc_ros.datasets.synthetic.trajectory import mount_T_base_from_cam
from reloc_ros.datasets.synthetic.writer import DEFAULT_CAMERA

N_MAP, N_QUERY = 10, 4
CAM = DEFAULT_CAMERA.scaled(0.5)
TYPES = {
    TOPICS["image"]: "sensor_msgs/msg/Image",
    TOPICS["camera_info"]: "sensor_msgs/msg/CameraInfo",
    TOPICS["depth"]: "sensor_msgs/msg/Image",
    TOPICS["clock"]: "rosgraph_msgs/msg/Clock",
    TOPICS["tf"]: "tf2_msgs/msg/TFMessage",
    TOPICS["tf_static"]: "tf2_msgs/msg/TFMessage",
    TOPICS["ground_truth"]: "geometry_msgs/msg/PoseStamped",
}


@pytest.fixture(scope="module")
def synth_bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_bag") / "corridor"
    generate("corridor", out, n_map=N_MAP, n_query=N_QUERY, seed=1, bag=True, camera=CAM, workers=1, progress=False)
    return out


def _read_bag(bag_dir: Path) -> dict[str, list[tuple[int, bytes]]]:
    from rosbags.rosbag2 import Reader

    meta = yaml.safe_load((bag_dir / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["relative_file_paths"][0].endswith(".mcap")
    msgs: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(bag_dir) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TYPES
        static = [c for c in reader.connections if c.topic == TOPICS["tf_static"]][0]
        assert static.ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
        for conn, t, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append((t, bytes(raw)))
    return msgs


def _T_from_pose(position, orientation) -> np.ndarray:
    return make_T(matrix_from_quat([orientation.x, orientation.y, orientation.z, orientation.w], "xyzw"),
                  [position.x, position.y, position.z])


def _T_from_transform(tr) -> np.ndarray:
    return _T_from_pose(tr.translation, tr.rotation)


def test_bag_layout_and_rosbags_contents(synth_bag):
    from reloc_ros.datasets.synthetic.bag import get_ros2_typestore

    ts = get_ros2_typestore()
    cam_yaml = yaml.safe_load((synth_bag / "camera.yaml").read_text())
    assert sorted(p.name for p in (synth_bag / "bags").iterdir()) == ["mapping", "query_1", "query_2"]
    runs = (("mapping", "seq-01", N_MAP), ("query_1", "seq-02", N_QUERY), ("query_2", "seq-03", N_QUERY))
    for bag_name, seq, n in runs:
        msgs = _read_bag(synth_bag / "bags" / bag_name)
        counts = {topic: len(v) for topic, v in msgs.items()}
        assert counts == {TOPICS["image"]: n, TOPICS["camera_info"]: n, TOPICS["clock"]: n, TOPICS["tf"]: n,
                          TOPICS["ground_truth"]: n, TOPICS["tf_static"]: 1, TOPICS["depth"]: n}
        times = [ln.split() for ln in (synth_bag / seq / "times.txt").read_text().splitlines()]
        t_files = [int(round(float(t) * 1e9)) for _, t in times]

        def stamps(topic, get):
            out = []
            for t_bag, raw in msgs[topic]:
                m = ts.deserialize_cdr(raw, TYPES[topic])
                st = get(m)
                out.append(st.sec * 1_000_000_000 + st.nanosec)
                assert out[-1] == t_bag  # bag time = message stamp (sim time)
            return out

        s_img = stamps(TOPICS["image"], lambda m: m.header.stamp)
        assert s_img == t_files
        assert stamps(TOPICS["camera_info"], lambda m: m.header.stamp) == s_img
        assert stamps(TOPICS["depth"], lambda m: m.header.stamp) == s_img
        for k in (0, n - 1):  # the depth messages carry the depth PNGs' millimetres, registered to the image
            d = ts.deserialize_cdr(msgs[TOPICS["depth"]][k][1], TYPES[TOPICS["depth"]])
            assert (d.encoding, d.header.frame_id, d.step) == ("16UC1", "camera_optical", 2 * d.width)
            mm = np.frombuffer(bytes(d.data), "<u2").reshape(d.height, d.width)
            png = cv2.imread(str(synth_bag / seq / f"frame-{k:06d}.depth.png"), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(mm, png) and (mm > 0).mean() > 0.5
        assert stamps(TOPICS["ground_truth"], lambda m: m.header.stamp) == s_img
        assert stamps(TOPICS["clock"], lambda m: m.clock) == s_img
        assert stamps(TOPICS["tf"], lambda m: m.transforms[0].header.stamp) == s_img
        assert np.allclose(np.diff(s_img), 1e9 / 30, atol=1)
        for _, raw in msgs[TOPICS["tf"]]:
            m = ts.deserialize_cdr(raw, TYPES[TOPICS["tf"]])
            assert [(x.header.frame_id, x.child_frame_id) for x in m.transforms] == [("odom", "base_link")]
            assert all(x.header.frame_id != "map" for x in m.transforms)
        (_, raw), = msgs[TOPICS["tf_static"]]
        st = ts.deserialize_cdr(raw, TYPES[TOPICS["tf_static"]])
        assert [(x.header.frame_id, x.child_frame_id) for x in st.transforms] == [("base_link", "camera_optical")]
        mount = _T_from_transform(st.transforms[0].transform)
        assert np.allclose(mount, mount_T_base_from_cam(), atol=1e-9)
        info = ts.deserialize_cdr(msgs[TOPICS["camera_info"]][0][1], TYPES[TOPICS["camera_info"]])
        K = np.array([[cam_yaml["fx"], 0, cam_yaml["cx"]], [0, cam_yaml["fy"], cam_yaml["cy"]], [0, 0, 1]])
        assert np.allclose(np.asarray(info.k).reshape(3, 3), K)
        assert info.distortion_model == "plumb_bob" and np.allclose(info.d, 0) and len(info.d) == 5
        assert np.allclose(np.asarray(info.p).reshape(3, 4)[:, :3], K)
        assert np.allclose(np.asarray(info.r), np.eye(3).ravel())
        assert (info.width, info.height) == (cam_yaml["width"], cam_yaml["height"])
        assert info.header.frame_id == "camera_optical"


def test_gt_mount_odometry_consistency(synth_bag):
    """gt camera pose = pose.txt; odom starts at the true base pose; T_map_from_base * mount = camera pose."""
    from reloc_ros.datasets.synthetic.bag import get_ros2_typestore

    ts = get_ros2_typestore()
    msgs = _read_bag(synth_bag / "bags" / "mapping")
    mount = mount_T_base_from_cam()
    gt = [_T_from_pose(m.pose.position, m.pose.orientation)
          for m in (ts.deserialize_cdr(raw, TYPES[TOPICS["ground_truth"]]) for _, raw in msgs[TOPICS["ground_truth"]])]
    odom = [_T_from_transform(ts.deserialize_cdr(raw, TYPES[TOPICS["tf"]]).transforms[0].transform)
            for _, raw in msgs[TOPICS["tf"]]]
    for k in range(N_MAP):
        pose_txt = np.loadtxt(synth_bag / "seq-01" / f"frame-{k:06d}.pose.txt")
        assert np.allclose(gt[k], pose_txt, atol=1e-6)
        T_map_from_base = gt[k] @ invert_T(mount)
        assert np.allclose(T_map_from_base @ mount, gt[k], atol=1e-9)
        assert abs(T_map_from_base[2, 3]) < 0.3  # base_link near the floor, z up (REP-103)
        assert T_map_from_base[:3, 2] @ [0, 0, 1] > 0.98
    assert np.allclose(odom[0], gt[0] @ invert_T(mount), atol=1e-6)  # odom starts at the true base pose
    drift = [np.linalg.norm((o @ mount)[:3, 3] - g[:3, 3]) for o, g in zip(odom, gt)]
    travelled = sum(np.linalg.norm(gt[k + 1][:3, 3] - gt[k][:3, 3]) for k in range(N_MAP - 1))
    assert 0 < drift[-1] < 0.05 * travelled


def test_rclpy_deserialization(synth_bag):
    """The raw CDR bytes deserialize into the real ROS 2 message classes with the right values."""
    serialization = pytest.importorskip("rclpy.serialization")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    geometry_msgs = pytest.importorskip("geometry_msgs.msg")
    rosgraph_msgs = pytest.importorskip("rosgraph_msgs.msg")
    msgs = _read_bag(synth_bag / "bags" / "query_2")
    for k, (_, raw) in enumerate(msgs[TOPICS["image"]]):
        img = serialization.deserialize_message(raw, sensor_msgs.Image)
        assert (img.encoding, img.header.frame_id, img.is_bigendian) == ("rgb8", "camera_optical", 0)
        assert (img.width, img.height, img.step) == (CAM.width, CAM.height, 3 * CAM.width)
        png = cv2.cvtColor(cv2.imread(str(synth_bag / "seq-03" / f"frame-{k:06d}.color.png")), cv2.COLOR_BGR2RGB)
        data = np.frombuffer(bytes(img.data), np.uint8).reshape(img.height, img.width, 3)
        assert np.array_equal(data, png)
    for k, (_, raw) in enumerate(msgs[TOPICS["ground_truth"]]):
        ps = serialization.deserialize_message(raw, geometry_msgs.PoseStamped)
        assert ps.header.frame_id == "map"
        pose_txt = np.loadtxt(synth_bag / "seq-03" / f"frame-{k:06d}.pose.txt")
        assert np.allclose(_T_from_pose(ps.pose.position, ps.pose.orientation), pose_txt, atol=1e-6)
    info = serialization.deserialize_message(msgs[TOPICS["camera_info"]][0][1], sensor_msgs.CameraInfo)
    assert np.allclose(np.asarray(info.k).reshape(3, 3), CAM.K) and info.distortion_model == "plumb_bob"
    clock = serialization.deserialize_message(msgs[TOPICS["clock"]][0][1], rosgraph_msgs.Clock)
    assert clock.clock.sec == msgs[TOPICS["clock"]][0][0] // 1_000_000_000


def test_rclpy_tf_deserialization(synth_bag):
    serialization = pytest.importorskip("rclpy.serialization")
    tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not installed (tools/build_tf2_msgs.py)")
    msgs = _read_bag(synth_bag / "bags" / "mapping")
    (_, raw), = msgs[TOPICS["tf_static"]]
    st = serialization.deserialize_message(raw, tf2_msgs.TFMessage)
    assert np.allclose(_T_from_transform(st.transforms[0].transform), mount_T_base_from_cam(), atol=1e-9)
    for _, raw in msgs[TOPICS["tf"]]:
        m = serialization.deserialize_message(raw, tf2_msgs.TFMessage)
        assert [(t.header.frame_id, t.child_frame_id) for t in m.transforms] == [("odom", "base_link")]
