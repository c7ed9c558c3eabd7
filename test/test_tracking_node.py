"""The place tracker in the real node (in process, real rclpy and messages; the tracker's own unit tests are in
test_tracking.py): a place is published only when confirmed by motion and dominant, so a pose that jumps against
odometry is FAILED, a robot carried elsewhere is accepted again once its new place dominates, and ``~/relocalize``
starts over from a cold start. Also the inlier-coverage gate."""

from __future__ import annotations

import numpy as np
import pytest

from reloc_ros.core.geometry import invert_T, make_T, random_rotation, so3_exp


# --------------------------------------------------------------------------------------------------
# the node, in process (real rclpy, real messages): odometry on /tf, images of the textured plane
from ros_helpers import ShmJanitor  # noqa: E402

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
try:
    import tf2_msgs.msg  # noqa: F401
except ImportError:
    pytest.skip("tf2_msgs is not importable: build it with `python tools/build_tf2_msgs.py`", allow_module_level=True)

import test_node_inprocess as tni  # noqa: E402  (plane map, renderer, harness and ROS env of the in-process tests)
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from reloc_ros.ros import conversions as conv  # noqa: E402

NS = 1_000_000_000
plane_map = tni.plane_map  # the module-scoped fixture


@pytest.fixture(scope="module", autouse=True)
def _clean_shared_memory():
    janitor = ShmJanitor()
    yield
    janitor.cleanup()


def _diag_of(h, stamp):
    """The node's diagnostics (key -> value) that report the frame at ``stamp`` done, or None (not yet)."""
    for s in reversed(h.diags):
        d = {kv.key: kv.value for kv in s.values}
        if d.get("last_done_stamp_ns") == str(stamp):
            return d
    return None


def _done(h, stamp, what):
    """Wait until the frame at ``stamp`` is done; its diagnostics."""
    h.wait(lambda: _diag_of(h, stamp) is not None, what)
    return _diag_of(h, stamp)


def _start(h):
    """The camera mount on /tf_static; wait until the node's image and TF subscriptions matched."""
    h.pub_tf_static.publish(TFMessage(transforms=[conv.transform_stamped(tni.T_BASE_CAM, "base_link",
                                                                         "camera_optical", 0)]))
    h.wait(lambda: h.pub_image.get_subscription_count() > 0 and h.pub_tf.get_subscription_count() > 0, "matching")


def _publish_odom(h, T_odom_base, stamp):
    """odom -> base_link just before and after ``stamp`` (the node interpolates at the image stamp)."""
    for t in (stamp - NS // 20, stamp + NS // 20):
        h.pub_tf.publish(TFMessage(transforms=[conv.transform_stamped(T_odom_base, "odom", "base_link", t)]))


def _drive_along_plane(h, xs, first_stamp_s, T_map_odom):
    """The camera at ``tni._pose(x, -0.3, x, 0.1)`` for each x, odometry on /tf from ``T_map_odom``, one image per
    second of stamps from ``first_stamp_s``: [(x, the frame's diagnostics)] once each frame is done."""
    out = []
    for k, x in enumerate(xs):
        T_cam = tni._pose(x, -0.3, x, 0.1)
        stamp = (first_stamp_s + k) * NS
        _publish_odom(h, invert_T(T_map_odom) @ T_cam @ invert_T(tni.T_BASE_CAM), stamp)
        h.send(tni._render(tni._texture(), T_cam), stamp)
        out.append((x, _done(h, stamp, f"frame {k}")))
    return out


def test_node_rejects_a_jump_against_odometry_and_recovers(plane_map):
    h = tni.Harness(dict(map_path=str(plane_map["map"]), tf_mode="map_odom", pose_frame="camera",
                         tf_publish_rate_hz=0.0, odom_jump_max_m=0.3, odom_jump_max_deg=10.0, odom_accept_after=2,
                         odom_dominance=1.5, odom_memory=3.0, odom_prior_release_after=2,
                         track_min_motion_m=0.0, track_min_motion_deg=0.0))  # motion: the next test
    try:
        _start(h)
        T_map_odom = make_T(so3_exp([0, 0, 0.2]), [0.3, -0.1, 0.0])
        T_A = tni._pose(-0.45, -0.4, -0.1, -0.1)
        T_B = tni._pose(0.45, 0.4, 0.1, 0.1)  # 1.2 m from A
        T_odom_base_A = invert_T(T_map_odom) @ T_A @ invert_T(tni.T_BASE_CAM)

        def frame(T_cam_true, T_odom_base, stamp):
            _publish_odom(h, T_odom_base, stamp)
            h.send(tni._render(plane_map["tex"], T_cam_true), stamp)
            return _done(h, stamp, f"the frame at {stamp / NS:.0f} s")

        # start: place A must be confirmed first (support 1, 1.67, 2.11 with memory 3: the third is published)
        for k in range(2):
            d = frame(T_A, T_odom_base_A, (100 + k) * NS)
            assert d["status"] == "FAILED" and "not yet confirmed" in d["reason"], d
        d = frame(T_A, T_odom_base_A, 102 * NS)
        assert d["status"] == "LOCALIZED" and d["odom_hypotheses"] == "1", d
        h.wait(lambda: len(h.poses) == 1, "the first pose")
        # kidnapped to B: odometry still says A; the (correct) poses of B jump 1.2 m against it. The prior is the
        # pose odometry predicts from the accepted place A; after 2 frames not accepted with it, it is released.
        d = frame(T_B, T_odom_base_A, 103 * NS)
        assert d["status"] == "FAILED" and "inconsistent with odometry" in d["reason"], d
        assert d["prior"] == "odometry" and d["odom_prior_releases"] == "0", d
        # the accepted place's prediction: tracked_top_k keyframes of its pose window, not top_k
        assert int(d["keyframes_retrieved"]) <= 3, d
        d = frame(T_B, T_odom_base_A, 104 * NS)
        assert d["status"] == "FAILED" and "not yet confirmed" in d["reason"] and d["odom_rejected"] == "4", d
        assert d["prior"] == "odometry" and d["odom_prior_releases"] == "1", d
        d = frame(T_B, T_odom_base_A, 105 * NS)  # B outweighs the decayed A now
        assert d["status"] == "LOCALIZED" and d["odom_recovered"] == "1" and "place changed" in d["odom_check"], d
        assert d["prior"] == "last_pose", d  # released: not the odometry prior
        assert int(d["keyframes_retrieved"]) == 5, d  # top_k: a position prior is not a tracked one
        h.wait(lambda: len(h.poses) == 2, "the pose after recovery")
        assert [conv.stamp_to_ns(p.header.stamp) for p in h.poses] == [102 * NS, 105 * NS]
        err = np.linalg.norm(conv.T_from_pose(h.poses[-1].pose)[:3, 3] - T_B[:3, 3])
        assert err < 0.05, err
        # map->odom was never published from a rejected pose
        stamps = {conv.stamp_to_ns(t.header.stamp) for t in h.tf if t.child_frame_id == "odom"}
        assert stamps == {102 * NS, 105 * NS}, stamps

        # ~/relocalize: the places are forgotten; back at A (odometry still at A's) the place is confirmed anew
        d = frame(T_A, T_odom_base_A, 106 * NS)
        assert d["status"] == "FAILED" and d["prior"] == "odometry", d  # B accepted: the prior is back
        cli = h.helper.create_client(Trigger, "/reloc_node/relocalize")
        h.wait(lambda: cli.service_is_ready(), "the relocalize service")
        fut = cli.call_async(Trigger.Request())
        h.wait(lambda: fut.done(), "the relocalize response")
        assert fut.result().success
        d = frame(T_A, T_odom_base_A, 107 * NS)
        assert d["status"] == "FAILED" and d["prior"] == "none" and "not yet confirmed" in d["reason"], d
        d = frame(T_A, T_odom_base_A, 108 * NS)  # support 1.67 < 2 (memory 3)
        assert d["status"] == "FAILED" and "not yet confirmed" in d["reason"], d
        d = frame(T_A, T_odom_base_A, 109 * NS)
        assert d["status"] == "LOCALIZED" and d["odom_rejected"] == "7", d
        h.wait(lambda: len(h.poses) == 3, "the pose after ~/relocalize")
    finally:
        h.close()


def test_node_publishes_a_place_only_after_the_robot_moved(plane_map):
    """Default tracker settings (1 m of travel or 30 deg of turn). With odometry: 4 frames standing at A, all
    LOCALIZED by the localizer and FAILED by the tracker; then the robot drives towards B (0.3 m a frame, odometry
    consistent): the first pose goes out once the support spans >= 1 m (1.2 m). Without odometry (tf_mode map_base, no
    odom on /tf) the same by the pose sequence itself."""
    for with_odom in (True, False):
        h = tni.Harness(dict(map_path=str(plane_map["map"]), tf_mode="map_odom" if with_odom else "map_base",
                             pose_frame="camera", tf_publish_rate_hz=0.0, odom_jump_max_m=0.5,
                             tf_timeout=0.05))
        try:
            _start(h)
            T_map_odom = make_T(so3_exp([0, 0, 0.2]), [0.3, -0.1, 0.0])
            xs = [-0.5] * 4 + [-0.2, 0.1, 0.4, 0.7, 0.8]  # 4 frames at A, then 0.3 m a frame along x
            published_at = None
            for k, x in enumerate(xs):
                T_cam = tni._pose(x, -0.3, x, 0.1)
                stamp = (300 + k) * NS
                if with_odom:
                    T_odom_base = invert_T(T_map_odom) @ T_cam @ invert_T(tni.T_BASE_CAM)
                    _publish_odom(h, T_odom_base, stamp)
                h.send(tni._render(plane_map["tex"], T_cam), stamp)
                d = _done(h, stamp, f"frame {k}")
                travel = x + 0.5
                if travel < 1.0:
                    assert d["status"] == "FAILED" and "not yet confirmed" in d["reason"], (with_odom, k, d)
                    assert d["reason_code"] in ("unconfirmed", "needs_motion"), (with_odom, k, d)
                    basis = "odometry" if with_odom else "pose sequence"
                    assert basis in d["reason"] or k < 5, (with_odom, k, d)
                elif published_at is None:
                    assert d["status"] == "LOCALIZED", (with_odom, k, d)
                    published_at = k
            assert published_at == 7, published_at  # 4 x 0.3 m = 1.2 m after the 4 standing frames
            h.wait(lambda: len(h.poses) == len(xs) - published_at, "the published poses")
            for ps, x in zip(h.poses, xs[published_at:]):
                assert np.linalg.norm(conv.T_from_pose(ps.pose)[:3, 3] - tni._pose(x, -0.3, x, 0.1)[:3, 3]) < 0.05
        finally:
            h.close()


# --------------------------------------------------------------------------------------------------
# inlier coverage: matches on one small patch (a picture that also hangs elsewhere) are not a localization
def test_inlier_coverage_of_spread_and_clustered_points():
    from reloc_ros.core.camera import Camera
    from reloc_ros.core.plausibility import inlier_coverage

    cam = Camera(640, 480, 500.0, 500.0, 319.5, 239.5)
    rng = np.random.default_rng(3)
    uv_full = rng.uniform([0, 0], [640, 480], (300, 2))
    uv_patch = rng.uniform([300, 200], [364, 248], (300, 2))  # 64 x 48 px: 1 % of the image
    for uv, lo, hi in ((uv_full, 0.8, 1.0), (uv_patch, 0.005, 0.011)):
        z = rng.uniform(2, 6, len(uv))
        xyz_cam = np.c_[(uv - [cam.cx, cam.cy]) / [cam.fx, cam.fy] * z[:, None], z]
        T_map_cam = make_T(random_rotation(rng), rng.normal(size=3))
        xyz_map = xyz_cam @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]
        assert lo <= inlier_coverage(xyz_map, T_map_cam, cam) <= hi
    assert inlier_coverage(np.zeros((2, 3)), np.eye(4), cam) == 0.0


def test_node_fails_a_pose_supported_by_one_small_patch(plane_map):
    """Only a patch of the mapped plane is visible (the rest is another texture): PnP finds the right pose from
    it, but the inliers cover ~6 % of the image: FAILED with min_inlier_coverage 0.1, LOCALIZED with 0."""
    h = tni.Harness(dict(map_path=str(plane_map["map"]), tf_mode="none", pose_frame="camera",
                         odom_jump_max_m=0.0, min_inlier_coverage=0.1))
    try:
        h.wait(lambda: h.pub_image.get_subscription_count() > 0, "matching")
        T = tni._query(60)
        img = tni._render(tni._texture(seed=99), T)
        full = tni._render(plane_map["tex"], T)
        y0, x0 = tni.CAM.height // 2 - 30, tni.CAM.width // 2 - 40
        img[y0:y0 + 60, x0:x0 + 80] = full[y0:y0 + 60, x0:x0 + 80]  # 80 x 60 px of the map: 6 % of the image
        h.send(img, 200 * NS)
        d = _done(h, 200 * NS, "the patch frame")
        assert d["status"] == "FAILED" and "min_inlier_coverage" in d["reason"], d
        assert d["reason_code"] == "small_coverage", d
        assert not h.poses
        assert h.node.set_parameters([rclpy.parameter.Parameter("min_inlier_coverage", value=0.0)])[0].successful
        h.send(img, 201 * NS)
        d = _done(h, 201 * NS, "the patch frame without the check")
        assert d["status"] == "LOCALIZED", d  # the patch alone does give a pose: the check is what rejects it
        h.wait(lambda: h.poses, "the pose")
        # roughly right (0.2 m off here: a small planar patch constrains the pose poorly)
        assert np.linalg.norm(conv.T_from_pose(h.poses[-1].pose)[:3, 3] - T[:3, 3]) < 0.5
    finally:
        h.close()


# --------------------------------------------------------------------------------------------------
# an ambiguous start: the node notes both places and probes the look-alike (core/tracking.py, max_probes)
@pytest.fixture(scope="module")
def twin_map(plane_map, tmp_path_factory):
    """The plane map plus copies of its two keyframes at x = -0.6, moved 3 m along x with their points left of
    x = 0: the texture there repeats 3 m away (as doors do in a corridor). (With all their points, which cover
    x in [-1.2, 1.3], the copies would explain most of every view along the test's path.)"""
    from reloc_ros.core.mapdb import Keyframe, MapDatabase

    db = MapDatabase.load(plane_map["map"])
    shift = make_T(np.eye(3), [3.0, 0.0, 0.0])
    kfs = []
    for i in range(len(db)):
        sl = db.keyframe_slice(i)
        kf = (db.names[i], db.T_map_from_cam[i], db.cameras[i], db.keypoints[sl], db.descriptors[sl], db.scores[sl],
              db.points3d[sl], db.point_source[sl], db.point_conf[sl], db.global_desc[i])
        kfs.append(Keyframe(*kf))
        if abs(db.centers[i][0] + 0.6) < 1e-6:
            keep = kf[6][:, 0] < 0.0  # the copy keeps the points of the repeated texture only
            kp, desc, score, xyz, src, conf = (a[keep] for a in kf[3:9])
            kfs.append(Keyframe(db.names[i] + "_twin", shift @ db.T_map_from_cam[i], kf[2], kp, desc, score,
                                (xyz + np.float32([3.0, 0.0, 0.0])).astype(np.float32), src, conf, kf[9]))
    out = tmp_path_factory.mktemp("twin") / "map"
    MapDatabase.from_keyframes(kfs, db.extractor_identity, db.extractor_state).save(out)
    return out


def _assert_published_within(h, x_min: float, x_max: float) -> None:
    """At least one pose was published, and every one lies between x_min and x_max along the plane."""
    h.wait(lambda: len(h.poses) >= 1, "the published poses")
    for ps in h.poses:
        x = conv.T_from_pose(ps.pose)[0, 3]
        assert x_min <= x <= x_max, x


def test_node_probes_the_look_alike_of_an_ambiguous_start_and_publishes_no_pose_there(twin_map):
    """Started where the texture repeats 3 m away, the node's images are FAILED 'ambiguous place' with both poses;
    the tracker keeps both places and, as the robot drives on to where the texture is unique, the node localizes
    each image at the look-alike too (a probe in a pose window around odometry's prediction of it: counted in
    /diagnostics 'track_probes'). No pose is published at the look-alike; the true place is published once the
    look-alike is refuted over track_min_motion_m of travel."""
    h = tni.Harness(dict(map_path=str(twin_map), tf_mode="map_odom", pose_frame="camera", tf_publish_rate_hz=0.0,
                         odom_jump_max_m=0.5, track_min_motion_m=0.3, tf_timeout=0.05))
    try:
        _start(h)
        T_map_odom = make_T(so3_exp([0, 0, 0.2]), [0.3, -0.1, 0.0])
        first_pose, probes_before = None, 0
        for x, d in _drive_along_plane(h, np.linspace(-0.6, 1.4, 21), 400, T_map_odom):
            if x < 0.75:  # the twin keyframes' points cover what the camera sees: both places fit
                assert d["status"] == "FAILED" and d["reason_code"] in ("ambiguous", "ambiguous_place"), (x, d)
                assert int(d["odom_hypotheses"]) >= 2, (x, d)  # both places kept
            if d["status"] == "LOCALIZED" and first_pose is None:
                first_pose, probes_before = x, int(d["track_probes"])
        assert first_pose is not None and first_pose >= 0.8 + 0.3 - 1e-6, first_pose  # refuted over 0.3 m
        assert probes_before >= 1, probes_before
        _assert_published_within(h, first_pose - 0.05, 1.45)  # at the true place (the look-alike is 3 m further)
    finally:
        h.close()


def test_node_looks_at_the_maps_look_alike_of_a_new_place_and_publishes_it_after_less_motion(twin_map, tmp_path):
    """The twin map with its look-alike analysis (`reloc map analyse`): the images from x = 0.8 on are unique, but
    solved from keyframes that see the repeated texture, so the map knows a look-alike 3 m away and says where it is
    (LocalizationResult.lookalike_poses). The node localizes each new image there too (probes, counted in
    /diagnostics 'track_probes'); the images do not fit there, so the place is published after
    track_min_motion_lookalike_free_m (0.25 m) instead of track_min_motion_m (1 m, the default here), and at the
    true place. (Without the analysis the same drive of 0.6 m publishes nothing: the unit tests.)"""
    import shutil

    from reloc_ros.cli.main import main as reloc_main

    m = tmp_path / "twin"
    shutil.copytree(twin_map, m)
    assert reloc_main(["-q", "map", "analyse", str(m)]) == 0
    h = tni.Harness(dict(map_path=str(m), tf_mode="map_odom", pose_frame="camera", tf_publish_rate_hz=0.0,
                         odom_jump_max_m=0.5, tf_timeout=0.05))
    try:
        _start(h)
        T_map_odom = make_T(so3_exp([0, 0, 0.2]), [0.3, -0.1, 0.0])
        first_pose, probes = None, 0
        seen = []
        for x, d in _drive_along_plane(h, np.linspace(0.9, 1.45, 12), 600, T_map_odom):
            seen.append((round(x, 2), d["status"], d["reason_code"], d["track_probes"]))
            assert d["status"] == "LOCALIZED" or d["reason_code"] in ("needs_motion", "unconfirmed"), seen
            if d["status"] == "LOCALIZED" and first_pose is None:
                first_pose, probes = x, int(d["track_probes"])
        # 5 consistent poses over 0.25 m of travel (the camera moves ~0.07 m per step of 0.05 in x)
        assert first_pose is not None and 1.05 <= first_pose <= 1.25, seen
        assert probes >= 4, seen  # the look-alike was looked at, and not found
        _assert_published_within(h, first_pose - 0.05, 1.5)  # at the true place (the look-alike is 3 m further)
    finally:
        h.close()


def test_the_map_finds_its_own_look_alikes_and_the_localizer_says_where_there_are_none(plane_map, twin_map, tmp_path):
    """core/aliases.py: every keyframe localized against the rest of the map. On the plane map every view is unique
    (no keyframe marked); on the twin map the keyframes that see the texture repeated 3 m away (at x = -0.6 and
    x = 0: both places fit their views, as the node test above finds for images up to x = 0.75) and the copies are
    marked, those at x = 0.6 not. `reloc map analyse` stores the result (a map saved without it loads with None:
    the tracker's full motion rule everywhere); a localized image whose supporting keyframes are unmarked is
    lookalike_free (every image on the plane map), one at the repeated texture is not (the twin map; on that small
    map every image's supporting keyframes include one that sees the repeated texture). The place check is skipped
    for a look-alike-free pose and runs for the others, and on maps without the analysis."""
    import shutil

    from reloc_ros.cli.main import main as reloc_main
    from reloc_ros.core.aliases import mark_aliases
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.mapdb import MapDatabase, extractor_for_map

    plain = MapDatabase.load(plane_map["map"])
    assert plain.alias_inliers is None
    rep = mark_aliases(plain, extractor_for_map(plain))
    assert rep.fraction == 0.0 and not rep.direct.any(), rep.alias_inliers

    copy = tmp_path / "twin"
    shutil.copytree(twin_map, copy)
    assert reloc_main(["map", "analyse", str(copy)]) == 0
    db = MapDatabase.load(copy)
    twins = {i for i, n in enumerate(db.names) if n.endswith("_twin")}
    seeing = {i for i in range(len(db)) if i not in twins and db.centers[i][0] < 0.3}
    marked = set(np.flatnonzero(db.alias_inliers > 0).tolist())
    assert len(twins) == 2 and len(seeing) == 4 and marked == twins | seeing, (marked, twins, seeing)
    assert db.alias_inliers[sorted(marked)].min() >= 15
    assert db.manifest["aliases"]["keyframes_with_lookalike"] == 6
    # where each look-alike is: a marked keyframe's view is seen 3 m away along x (the twin at +3 m, the original
    # seen from a twin at -3 m); the transform moves the keyframe's camera there within a few centimetres
    rel = db.alias_relation
    assert rel.shape == (len(db), 2, 4, 4) and not np.isfinite(rel[sorted(set(range(len(db))) - marked)]).any()
    for k in sorted(marked):
        moved = [W @ db.T_map_from_cam[k] for W in rel[k] if np.all(np.isfinite(W))]
        assert moved, k
        dx = [P[:3, 3] - db.T_map_from_cam[k][:3, 3] for P in moved]
        want = -3.0 if k in twins else 3.0
        assert any(abs(d[0] - want) < 0.1 and np.linalg.norm(d[1:]) < 0.1 for d in dx), (k, dx)

    tex = tni._texture()
    # no ambiguity checks: the pose at the twin
    cfg = LocalizerConfig(ambiguity_top_k=0, ambiguity_ratio=0.0, ambiguity_lookalike_ratio=0.0)
    for m, x, free in ((plain, 1.0, True), (db, -0.6, False)):
        res = Localizer(m, extractor_for_map(m), cfg).localize(tni._render(tex, tni._pose(x, -0.3, x, 0.1)), tni.CAM)
        assert res.ok and res.lookalike_free == free, (x, res.status, res.reason, res.lookalike_free)
        if not free:  # the tracker is told where the look-alike would show this view: about 3 m along x
            assert res.lookalike_poses and any(abs(abs(P[0, 3] - res.T_map_from_cam[0, 3]) - 3.0) < 0.2
                                               for P in res.lookalike_poses), res.lookalike_poses
    # the place check (ambiguity_place_trust_map, default on) is skipped where the map knows no look-alike, and runs
    # where it does: the twin map's image at the repeated texture is FAILED 'ambiguous place' as without the analysis
    cfg = LocalizerConfig(ambiguity_ratio=0.0)
    assert cfg.ambiguity_place_trust_map and cfg.ambiguity_top_k > 0
    res = Localizer(plain, extractor_for_map(plain), cfg).localize(tni._render(tex, tni._pose(1.0, -0.3, 1.0, 0.1)),
                                                                   tni.CAM)
    assert res.ok and res.timings_ms["place_check"] == 0.0, res.timings_ms
    # ... but not for an image whose keypoints are weak (a night image: keypoint-confidence factor above 1)
    dim = Localizer(plain, extractor_for_map(plain), cfg)
    dim.detection_score_factor = lambda features, image_quality=True: 2.0
    res = dim.localize(tni._render(tex, tni._pose(1.0, -0.3, 1.0, 0.1)), tni.CAM)
    assert res.ok and res.timings_ms["place_check"] > 0.0 and res.covariance_factor == 2.0, res.timings_ms
    for m in (db, MapDatabase.load(twin_map)):  # with the analysis (marked keyframes) and without any
        res = Localizer(m, extractor_for_map(m), cfg).localize(tni._render(tex, tni._pose(-0.6, -0.3, -0.6, 0.1)),
                                                               tni.CAM)
        assert res.code is not None and res.code.value == "ambiguous_place", (res.status, res.reason)
        assert res.timings_ms["place_check"] > 0.0
    # an accepted place's odometry prediction (a tracked prior): the look-alike 3 m away lies outside its window,
    # so the place check could only find it to drop it; it is skipped (ambiguity_place_tracked false, the default)
    # and the pose is the one it gives when it runs (true)
    from reloc_ros.core.retrieval import PosePrior

    T = tni._pose(-0.6, -0.3, -0.6, 0.1)
    img = tni._render(tex, T)
    prior = PosePrior(T[:3, 3] + [0.03, 0.0, 0.0], 0.5, T[:3, :3], 10.0, tracked=True)
    poses = []
    for check in (False, True):
        loc = Localizer(db, extractor_for_map(db), LocalizerConfig(ambiguity_ratio=0.0, ambiguity_place_tracked=check))
        res = loc.localize(img, tni.CAM, prior)
        assert res.ok and (res.timings_ms["place_check"] > 0.0) == check, (check, res.reason, res.timings_ms)
        assert np.linalg.norm(res.T_map_from_cam[:3, 3] - T[:3, 3]) < 0.05
        poses.append(res.T_map_from_cam)
    np.testing.assert_allclose(poses[0], poses[1], atol=1e-9)


def test_a_single_image_no_stronger_than_the_maps_own_look_alike_is_ambiguous(twin_map, tmp_path):
    """ambiguity_lookalike_ratio (default 1): the image at x = -0.6 is solved from keyframes whose view the map fits
    3 m away with more inliers (the map's analysis) than the image has at its pose: without a prior it is FAILED
    'ambiguous place' with both poses for the tracker (its own, and the look-alike's 3 m along x), even with the place
    check off; with the check off (0) it is LOCALIZED; with a pose window at the true place (a probe, the initial
    pose) it is LOCALIZED there. An image whose pose rests mostly on keyframes without a look-alike (x = 1.0, the
    unique end) stays LOCALIZED."""
    import shutil

    from reloc_ros.cli.main import main as reloc_main
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.mapdb import MapDatabase, extractor_for_map
    from reloc_ros.core.retrieval import PosePrior

    m = tmp_path / "twin"
    shutil.copytree(twin_map, m)
    assert reloc_main(["-q", "map", "analyse", str(m)]) == 0
    db = MapDatabase.load(m)
    tex = tni._texture()
    T = tni._pose(-0.6, -0.3, -0.6, 0.1)
    img = tni._render(tex, T)

    def loc(**kw):
        return Localizer(db, extractor_for_map(db), LocalizerConfig(ambiguity_top_k=0, ambiguity_ratio=0.0, **kw))

    res = loc().localize(img, tni.CAM)
    assert res.code is not None and res.code.value == "ambiguous_place", (res.status, res.reason)
    assert res.reason.startswith("the map fits this view as well 3.0 m /") and res.T_map_from_cam is None, res.reason
    xs = sorted(P[0, 3] for P, _ in res.hypotheses)
    assert len(xs) == 2 and abs(xs[0] - T[0, 3]) < 0.1 and abs(xs[1] - xs[0] - 3.0) < 0.2, xs
    assert res.hypotheses[0][1] >= res.hypotheses[1][1]  # the better first
    off = loc(ambiguity_lookalike_ratio=0.0).localize(img, tni.CAM)
    assert off.ok and not off.lookalike_free, (off.status, off.reason)
    window = PosePrior(T[:3, 3] + [0.03, 0.0, 0.0], 0.5, T[:3, :3], 10.0)
    res = loc().localize(img, tni.CAM, window)
    assert res.ok and np.linalg.norm(res.T_map_from_cam[:3, 3] - T[:3, 3]) < 0.05, (res.status, res.reason)
    res = loc().localize(tni._render(tex, tni._pose(1.0, -0.3, 1.0, 0.1)), tni.CAM)
    assert res.ok and not res.lookalike_free, (res.status, res.reason)


def test_node_never_publishes_a_single_image_no_stronger_than_the_maps_look_alike(twin_map, tmp_path):
    """ambiguity_lookalike_ratio in the node, on the analysed twin map: the image at x = 1.4 rests on keyframes whose
    view the map fits 3 m away with more inliers than the image has (128). Tracker off: FAILED 'ambiguous place',
    nothing published; the parameter set to 0 at run time, the same image is published. Tracker on, driving from
    there back along the plane: the first image is FAILED as well, but the tracker weighs its pose (the place it
    supports, the look-alike probed), and every pose published is at the true place."""
    import shutil

    from rclpy.parameter import Parameter

    from reloc_ros.cli.main import main as reloc_main

    m = tmp_path / "twin"
    shutil.copytree(twin_map, m)
    assert reloc_main(["-q", "map", "analyse", str(m)]) == 0
    common = dict(map_path=str(m), pose_frame="camera", tf_publish_rate_hz=0.0, tf_timeout=0.05, ambiguity_top_k=0)
    T = tni._pose(1.4, -0.3, 1.4, 0.1)

    def held(d):
        return (d["status"] == "FAILED" and d["reason_code"] == "ambiguous_place"
                and d["reason"].startswith("the map fits this view as well"))

    h = tni.Harness(dict(common, tf_mode="none", odom_jump_max_m=0.0))
    try:
        h.send(tni._render(tni._texture(), T), 100 * NS)
        d = _done(h, 100 * NS, "the image")
        assert held(d) and not h.poses, (d["status"], d["reason_code"], d["reason"])
        assert h.node.set_parameters([Parameter("ambiguity_lookalike_ratio", value=0.0)])[0].successful
        h.send(tni._render(tni._texture(), T), 101 * NS)
        d = _done(h, 101 * NS, "the same image with the rule off")
        assert d["status"] == "LOCALIZED", (d["status"], d["reason"])
        _assert_published_within(h, 1.35, 1.45)
    finally:
        h.close()
    h = tni.Harness(dict(common, tf_mode="map_odom", odom_jump_max_m=0.5, track_min_motion_m=0.3))
    try:
        _start(h)
        drive = _drive_along_plane(h, np.linspace(1.4, 0.4, 11), 400, make_T(so3_exp([0, 0, 0.2]), [0.3, -0.1, 0.0]))
        d = drive[0][1]
        # the held pose starts a place whose look-alike (where the map says it is) is probed from this image on,
        # and not found in 5 looks (as ambiguous hypotheses alone it would be credited the place's support instead)
        assert held(d) and int(d["track_probes"]) == 1, (d["status"], d["reason"], d["track_probes"])
        assert int(drive[-1][1]["track_probes"]) >= 5, [(x, e["status"], e["track_probes"]) for x, e in drive]
        _assert_published_within(h, 0.35, 1.45)
    finally:
        h.close()


def test_a_dim_image_on_a_tracked_frame_is_matched_against_top_k_keyframes(plane_map):
    """tracked_top_k (3) applies to an accepted place's odometry prior only for images whose keypoints are sure: a dim
    or noisy one (keypoint-confidence factor above 1) keeps top_k's 5 keyframes (on a 3-session office map at night,
    3 keyframes gave poses 0.22 m / 5.5 deg off that the tracker published)."""
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.mapdb import MapDatabase, extractor_for_map
    from reloc_ros.core.retrieval import PosePrior

    db = MapDatabase.load(plane_map["map"])
    T = tni._pose(0.0, 0.0, 0.0, 0.0)
    tracked = PosePrior(T[:3, 3], 5.0, T[:3, :3], 90.0, tracked=True)  # a window around every keyframe
    img = tni._render(tni._texture(), T)
    counts = []
    for factor in (1.0, 2.0):
        loc = Localizer(db, extractor_for_map(db), LocalizerConfig())
        loc.detection_score_factor = lambda features, image_quality=True, f=factor: f
        assert loc.retrieval_k(tracked, dim=factor > 1.0) == (3 if factor == 1.0 else 5)
        res = loc.localize(img, tni.CAM, tracked)
        assert res.ok, res.reason
        counts.append(len(res.candidates))
    assert counts == [3, 5], counts


def test_tracked_frames_match_their_strongest_query_keypoints(plane_map):
    """tracked_max_query_keypoints: with an accepted place's odometry prior an image's strongest N keypoints are
    matched (and so at most N correspondences); without a prior, or for a dim image, all of them."""
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.mapdb import MapDatabase, extractor_for_map
    from reloc_ros.core.retrieval import PosePrior

    db = MapDatabase.load(plane_map["map"])
    T = tni._pose(0.0, 0.0, 0.0, 0.0)
    tracked = PosePrior(T[:3, 3], 5.0, T[:3, :3], 90.0, tracked=True)
    img = tni._render(tni._texture(), T)
    loc = Localizer(db, extractor_for_map(db), LocalizerConfig(tracked_max_query_keypoints=100))
    feats = loc.extract(img)
    assert len(feats) > 300, len(feats)
    assert (loc.query_keypoints(tracked), loc.query_keypoints(None), loc.query_keypoints(tracked, dim=True)) == \
        (100, 0, 0)
    # a cap on every frame (max_query_keypoints) is never exceeded on tracked frames either
    for m, want in ((60, 60), (500, 100)):
        capped = Localizer(db, extractor_for_map(db), LocalizerConfig(tracked_max_query_keypoints=100,
                                                                      max_query_keypoints=m))
        assert (capped.query_keypoints(tracked), capped.query_keypoints(None)) == (want, m)
    few = loc.localize(img, tni.CAM, tracked, features=feats)
    every = Localizer(db, extractor_for_map(db), LocalizerConfig()).localize(img, tni.CAM, tracked, features=feats)
    assert few.ok and every.ok, (few.reason, every.reason)
    assert few.candidates == every.candidates and 0 < few.num_matches <= 100 < every.num_matches, \
        (few.num_matches, every.num_matches)
