import numpy as np
import pytest

from reloc_ros.core.aggregation import aggregate_correspondences
from reloc_ros.core.geometry import make_T
from reloc_ros.core.matching import match_mutual_nn
from reloc_ros.core.retrieval import GlobalIndex, PosePrior, build_index


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mutual_nn_ratio_recovers_permutation():
    rng = np.random.default_rng(0)
    ref = _unit(rng.normal(size=(300, 64)).astype(np.float32))
    perm = rng.permutation(300)[:200]
    q = _unit(ref[perm] + 0.05 * rng.normal(size=(200, 64)).astype(np.float32))
    m, s = match_mutual_nn(q, ref, ratio=0.8)
    assert len(m) >= 190
    assert np.mean(perm[m[:, 0]] == m[:, 1]) == 1.0
    assert np.all((s >= 0) & (s <= 1))


def test_ratio_test_rejects_ambiguous():
    rng = np.random.default_rng(1)
    ref = _unit(rng.normal(size=(2, 32))).astype(np.float32)
    a = _unit(ref[:1] + ref[1:] + 1e-3 * rng.normal(size=(1, 32))).astype(np.float32)
    m, _ = match_mutual_nn(a, ref, ratio=0.8)
    assert len(m) == 0  # equally close to two references: ambiguous
    m, _ = match_mutual_nn(a, ref, ratio=1.0, mutual=False)
    assert len(m) == 1


def test_matching_empty_inputs():
    m, s = match_mutual_nn(np.zeros((0, 8), np.float32), np.ones((5, 8), np.float32))
    assert m.shape == (0, 2) and s.shape == (0,)


def test_float16_descriptors_match_exactly_as_float32():
    """Float16 descriptors (a loaded map keeps them so) give bit-identical matches and scores to their float32
    values, in the reference and in the batched matcher; the stores keep float16 without converting or copying."""
    from reloc_ros.core.matching import KeyframeDescriptors, KeyframeMatcher

    rng = np.random.default_rng(3)
    world = _unit(rng.normal(size=(1200, 64)))
    kfs16 = [_unit(world[rng.choice(1200, m, replace=False)] + 0.05 * rng.normal(size=(m, 64))).astype(np.float16)
             for m in (0, 1, 2, 260, 400, 33)]
    kfs32 = [k.astype(np.float32) for k in kfs16]
    q = _unit(world[rng.choice(1200, 900, replace=False)] + 0.05 * rng.normal(size=(900, 64))).astype(np.float32)
    q[11] = q[5]  # an exact tie in a column maximum
    s16, s32 = KeyframeDescriptors(kfs16), KeyframeDescriptors(kfs32)
    assert s16.desc.dtype == np.float16 and s32.desc.dtype == np.float32 and s16.nbytes < s32.nbytes
    flat = np.concatenate(kfs16)
    offs = np.cumsum([0] + [len(k) for k in kfs16])
    assert KeyframeDescriptors.from_flat(flat, offs).desc is flat  # float16 kept as it is: no copy
    assert KeyframeDescriptors.from_flat(flat, offs, np.float32).desc.dtype == np.float32
    for ratio, mutual, block in ((0.8, True, 1024), (0.9, False, 128), (1.0, True, 50)):
        cand = [3, 4, 5, 0, 1, 2]
        got16 = KeyframeMatcher(s16, ratio, mutual, block_rows=block).match(q, cand)
        got32 = KeyframeMatcher(s32, ratio, mutual, block_rows=block).match(q, cand)
        n = 0
        for k, (m16, c16), (m32, c32) in zip(cand, got16, got32):
            assert np.array_equal(m16, m32) and np.array_equal(c16, c32), k  # bit for bit
            r16, rc16 = match_mutual_nn(q, kfs16[k], ratio, mutual)
            r32, rc32 = match_mutual_nn(q, kfs32[k], ratio, mutual)
            assert np.array_equal(r16, r32) and np.array_equal(rc16, rc32)
            assert np.array_equal(m16, r32) and np.array_equal(c16, rc32)
            n += len(m16)
        assert n >= 200  # not vacuous
    # a store over chosen rows of a bigger array (the map's, with keypoints without 3D left out): no copy,
    # the same descriptors and the same matches as a store of the copied rows
    big = np.concatenate([flat, _unit(rng.normal(size=(300, 64))).astype(np.float16)])
    perm = rng.permutation(len(big))
    big = big[perm]  # flat's rows scattered among others
    rows = np.argsort(perm)[:len(flat)]  # big[rows] == flat
    s_rows = KeyframeDescriptors.from_flat(big, offs, rows=rows)
    assert s_rows.desc is big and s_rows.desc.dtype == np.float16
    assert all(np.array_equal(s_rows.get(k), kfs16[k]) for k in range(len(kfs16)))
    for (m_a, c_a), (m_b, c_b) in zip(KeyframeMatcher(s_rows).match(q, [4, 1, 3]),
                                      KeyframeMatcher(s16).match(q, [4, 1, 3])):
        assert np.array_equal(m_a, m_b) and np.array_equal(c_a, c_b)
    with pytest.raises(ValueError, match="offsets end"):
        KeyframeDescriptors.from_flat(big, offs, rows=rows[:-1])
    with pytest.raises(ValueError, match="rows must index"):
        KeyframeDescriptors.from_flat(big, [0, 2], rows=[0, len(big)])
    for bad in (np.int8, "nonsense", np.float64):
        with pytest.raises(ValueError, match="dtype must be"):
            KeyframeDescriptors(kfs16, bad)


def test_int8_matching_agrees_with_float32_within_its_rounding():
    """matching_precision int8: the same keyframes' matches as float32 up to the borderline decisions, scores within
    the quantisation error, padded keyframes handled, and a bad precision refused; the localizer swaps its matcher
    when the configuration asks for the other precision."""
    from reloc_ros.core.matching import Int8Product, KeyframeDescriptors, KeyframeMatcher

    rng = np.random.default_rng(5)
    world = _unit(rng.normal(size=(3000, 64)))
    kfs = [_unit(world[rng.choice(3000, m, replace=False)] + 0.08 * rng.normal(size=(m, 64))).astype(np.float16)
           for m in (700, 1000, 2, 350)]
    q = _unit(world[rng.choice(3000, 1500, replace=False)] + 0.08 * rng.normal(size=(1500, 64))).astype(np.float32)
    store = KeyframeDescriptors(kfs)
    cand = [1, 0, 2, 3]
    for threads in (1, 2):
        f32 = KeyframeMatcher(store, 0.9, threads=threads).match(q, cand)
        i8 = KeyframeMatcher(store, 0.9, threads=threads, precision="int8").match(q, cand)
        common = total = 0
        for (ma, ca), (mb, cb) in zip(f32, i8):
            a, b = {tuple(r): c for r, c in zip(ma, ca)}, {tuple(r): c for r, c in zip(mb, cb)}
            shared = a.keys() & b.keys()
            common, total = common + len(shared), total + max(len(a), len(b))
            assert all(abs(a[k] - b[k]) < 0.05 for k in shared)
            assert all(r[1] < len(kfs[cand[j]]) for j, (m, _) in enumerate(i8) for r in m)  # no padded column
        assert total >= 800 and common >= 0.9 * total, (common, total)
    p = Int8Product()
    x = _unit(rng.normal(size=(50, 64)))
    sim = p.similarity(p.product(p.query(x), p.reference(x)))
    assert np.abs(sim - x @ x.T).max() < 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        KeyframeMatcher(store, precision="float16")


def test_aggregation_merges_agreeing_and_drops_disagreeing_points():
    # Query keypoint 0 seen in 3 keyframes: two agree (near (0,0,10)), one is a wrong match far away.
    uv = np.array([[10.0, 10.0]] * 3 + [[50.0, 50.0]])
    q = np.array([0, 0, 0, 1])
    xyz = np.array([[0.0, 0.0, 10.0], [0.1, 0.0, 10.0], [5.0, 5.0, 3.0], [1.0, 1.0, 8.0]])
    conf = np.array([0.9, 0.3, 0.5, 0.7])
    centers = np.zeros((4, 3))
    c = aggregate_correspondences(uv, q, xyz, conf, centers, rel_tol=0.05)
    assert len(c) == 2
    i0 = int(np.flatnonzero(c.query_idx == 0)[0])
    # confidence-weighted mean of the two agreeing points
    assert np.allclose(c.xyz[i0], (0.9 * xyz[0] + 0.3 * xyz[1]) / 1.2)
    assert c.support[i0] == 2 and np.isclose(c.conf[i0], 1.2)
    i1 = int(np.flatnonzero(c.query_idx == 1)[0])
    assert np.allclose(c.xyz[i1], xyz[3]) and c.support[i1] == 1


def test_aggregation_quantisation_cell():
    uv = np.array([[10.2, 10.1], [10.6, 10.3], [30.0, 30.0]])
    c = aggregate_correspondences(uv, np.array([0, 1, 2]), np.array([[0, 0, 5.0], [0, 0, 5.01], [1, 1, 5]]),
                                  np.ones(3), np.zeros((3, 3)), cell_px=4.0)
    assert len(c) == 2


def test_retrieval_with_prior_reranks():
    rng = np.random.default_rng(2)
    G = _unit(rng.normal(size=(50, 16)).astype(np.float32))
    centers = np.c_[np.arange(50.0), np.zeros(50), np.zeros(50)]
    gi = GlobalIndex(build_index(G), centers)
    ids, sims = gi.search(G[7], 3)
    assert ids[0] == 7 and sims[0] > 0.99
    # A query similar to keyframes 7 and 40 equally; the prior near x=40 picks 40 first.
    q = _unit((G[7] + G[40])[None])[0]
    ids, _ = gi.search(q, 2, PosePrior(np.array([40.0, 0, 0]), sigma_m=2.0))
    assert ids[0] == 40
    for kind in ("hnsw", "ivf"):
        ids, _ = GlobalIndex(build_index(G, kind), centers).search(G[3], 1)
        assert ids[0] == 3


def test_retrieval_pose_window_of_an_odometry_prior():
    """Repeated structure: keyframes 3 m apart with identical descriptors, both viewing directions. A prior with a
    rotation (a pose predicted by odometry) takes the keyframes within 3 sigma in position and viewing direction,
    ranked by similarity; the most similar keyframes elsewhere are not candidates; an empty window falls back to
    the position re-ranking."""
    from reloc_ros.core.geometry import so3_exp

    rng = np.random.default_rng(3)
    door = _unit(rng.normal(size=(1, 16)).astype(np.float32))[0]
    other = _unit(rng.normal(size=(1, 16)).astype(np.float32))[0]
    xs = np.arange(0.0, 30.0, 0.5)  # keyframes every 0.5 m, looking +x (even) or -x (odd)
    n = len(xs)
    centers = np.c_[xs, np.zeros(n), np.ones(n)]
    R_fwd = so3_exp([0.0, np.pi / 2, 0.0])  # optical axis (z) along +x
    R_back = so3_exp([0.0, -np.pi / 2, 0.0])
    rots = np.stack([R_fwd if i % 2 == 0 else R_back for i in range(n)])
    # every 3 m (6 keyframes) the same view of a door; the others see something else
    G = _unit(np.stack([door if i % 6 == 0 else other + 0.3 * rng.normal(size=16) for i in range(n)])
              .astype(np.float32))
    q = door
    gi = GlobalIndex(build_index(G), centers, rots, G)
    ids, _ = gi.search(q, 3)  # no prior: every door keyframe looks the same
    assert set(ids) <= set(range(0, n, 6))
    prior = PosePrior(np.array([12.1, 0.0, 1.0]), sigma_m=0.5, rotation=R_fwd, sigma_deg=10.0)
    ids, sims = gi.search(q, 5, prior)
    assert ids[0] == 24, ids  # x = 12.0, the door at the predicted place
    assert np.all(np.abs(centers[ids, 0] - 12.1) <= 1.5) and np.all(ids % 2 == 0), ids  # window: 1.5 m, forward
    assert sorted(centers[ids, 0]) == [11.0, 12.0, 13.0] and np.isclose(sims[0], 1.0, atol=1e-5)  # 10.6-13.6 m
    # the same position looking back: other keyframes
    ids, _ = gi.search(q, 5, PosePrior(prior.position, 0.5, R_back, 10.0))
    assert np.all(ids % 2 == 1), ids
    assert prior.rules_out(make_T(R_back, [12.1, 0, 1])) and not prior.rules_out(make_T(R_fwd, [12.5, 0, 1]))
    assert prior.rules_out(make_T(R_fwd, [15.1, 0, 1]))
    # nothing in the window (off the map): the position re-ranking over the most similar keyframes
    far = PosePrior(np.array([100.0, 0, 1]), sigma_m=0.5, rotation=R_fwd, sigma_deg=10.0)
    ids, _ = gi.search(q, 2, far)
    assert len(ids) == 2 and set(ids) <= set(range(0, n, 6))
    # the slab lookup finds exactly the keyframes a brute-force window finds (random 2-D layout, random priors)
    rng = np.random.default_rng(5)
    m = 3000
    C = np.c_[rng.uniform(0, 60, m), rng.uniform(0, 20, m), np.full(m, 1.2)]
    Rs = np.stack([so3_exp([0.0, a, 0.0]) for a in rng.uniform(-np.pi, np.pi, m)])
    Gr = _unit(rng.normal(size=(m, 16)).astype(np.float32))
    gr = GlobalIndex(build_index(Gr), C, Rs, Gr)
    for i in rng.integers(0, m, 20):
        p = PosePrior(C[i] + rng.normal(0, 0.3, 3), sigma_m=0.5, rotation=Rs[i], sigma_deg=10.0)
        ids, sims = gr.search(Gr[i], m, p)
        d = np.linalg.norm(C - p.position, axis=1)
        want = np.flatnonzero((d <= 1.5) & (p.viewing_angle_deg(Rs) <= 30.0))
        assert sorted(ids.tolist()) == want.tolist() and np.all(np.diff(sims) <= 0)
    # without the keyframes' rotations the rotation is ignored: the position re-ranking of the 4 k most similar
    # keyframes (door keyframes, in faiss' order among equals), which need not include the one at 12 m
    ids, _ = GlobalIndex(build_index(G), centers).search(q, 1, prior)
    assert ids[0] % 6 == 0


def test_localizer_refuses_ambiguous_pose_unless_prior_decides():
    """Two copies of a point pattern 2 m apart (repeated structure): PnP finds one copy; the second
    hypothesis makes the result FAILED(ambiguous) unless a tight prior rules the other copy out."""
    from reloc_ros.core.aggregation import Correspondences
    from reloc_ros.core.geometry import invert_T
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.pnp import PnPConfig, solve_pnp

    rng = np.random.default_rng(5)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    uv = rng.uniform([0, 0], [640, 480], size=(120, 2))
    z = rng.uniform(3, 6, 120)
    X = np.c_[(uv - [319.5, 239.5]) / 500.0 * z[:, None], z]  # camera at the origin = map frame
    # half the observations see the true points, the other half a copy shifted 2 m along x
    X_alias = X + [2.0, 0.0, 0.0]
    uv_all = np.r_[uv[:70], uv[70:]]
    xyz_all = np.r_[X[:70], X_alias[70:]]
    corr = Correspondences(uv_all, xyz_all, np.ones(120), np.arange(120), np.ones(120, np.int64))
    loc = Localizer.__new__(Localizer)
    loc.config = LocalizerConfig(ambiguity_ratio=0.5, min_inliers=15)
    pnp = solve_pnp(corr.uv, corr.xyz, K, (640, 480), PnPConfig(reproj_px=2.0))
    assert pnp.success and pnp.num_inliers == 70
    alt = loc._second_hypothesis(corr, pnp, K, (640, 480), None)
    assert alt is not None and alt[0] == 50 and abs(alt[1] - 2.0) < 1e-3
    from reloc_ros.core.retrieval import PosePrior

    c_main = invert_T(pnp.T_cam_from_world)[:3, 3]
    assert loc._second_hypothesis(corr, pnp, K, (640, 480), PosePrior(c_main, sigma_m=0.3)) is None
    assert loc._second_hypothesis(corr, pnp, K, (640, 480), PosePrior(c_main, sigma_m=5.0)) is not None
    loc.config = LocalizerConfig(ambiguity_ratio=0.8, min_inliers=15)  # 50 < 0.8 * 70: not ambiguous enough
    assert loc._second_hypothesis(corr, pnp, K, (640, 480), None) is None


def test_second_hypothesis_is_found_among_many_wrong_matches():
    """The ambiguity search runs only as many RANSAC iterations as finding a pose with the needed support takes;
    a copy seen by 50 of 350 leftover correspondences (300 wrong matches) is still found, every time."""
    from reloc_ros.core.aggregation import Correspondences
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.pnp import PnPConfig, solve_pnp

    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    for seed in range(5):
        rng = np.random.default_rng(seed)
        uv = rng.uniform([0, 0], [640, 480], size=(120, 2))
        z = rng.uniform(3, 6, 120)
        X = np.c_[(uv - [319.5, 239.5]) / 500.0 * z[:, None], z]
        wrong_uv = rng.uniform([0, 0], [640, 480], size=(300, 2))
        wrong_xyz = np.c_[rng.uniform(-3, 3, (300, 2)), rng.uniform(3, 6, 300)]
        uv_all = np.r_[uv, wrong_uv]
        xyz_all = np.r_[X[:70], X[70:] + [2.0, 0.0, 0.0], wrong_xyz]
        n = len(uv_all)
        corr = Correspondences(uv_all, xyz_all, np.ones(n), np.arange(n), np.ones(n, np.int64))
        loc = Localizer.__new__(Localizer)
        loc.config = LocalizerConfig(ambiguity_ratio=0.5, min_inliers=15, ransac_reproj_px=2.0)
        pnp = solve_pnp(corr.uv, corr.xyz, K, (640, 480), PnPConfig(reproj_px=2.0))
        assert pnp.success and pnp.num_inliers >= 70
        alt = loc._second_hypothesis(corr, pnp, K, (640, 480), None)
        assert alt is not None and alt[0] >= 50 and abs(alt[1] - 2.0) < 0.05, (seed, alt)


def test_the_place_check_counts_far_keyframes_and_optionally_those_facing_away(tmp_path):
    """Keyframes 0-3 at x = 0, 1, 2, 3 m looking along +y (map_helpers.random_map). For a pose at x = 0.2 looking
    along +y, only keyframes farther than ambiguity_place_m (1 m) may show another place; with
    ambiguity_place_facing_deg 90, a pose looking the other way (-y) finds every keyframe another place, however
    close (the flipped look-alike 0.7 m away that the distance alone let through), the close ones as a second group."""
    from map_helpers import random_map

    from reloc_ros.core.geometry import look_at
    from reloc_ros.core.localizer import Localizer, LocalizerConfig
    from reloc_ros.core.mapdb import MapDatabase

    db = MapDatabase.load(random_map(tmp_path / "m"))
    loc = Localizer.__new__(Localizer)
    loc.db = db
    ids = np.arange(4)
    same = look_at([0.2, 0, 1], [0.2, 5, 1])
    flipped = look_at([0.2, 0, 1], [0.2, -5, 1])
    groups = lambda T: [g.tolist() for g in loc._other_places(ids, T)]  # noqa: E731
    loc.config = LocalizerConfig(ambiguity_place_facing_deg=0.0)
    assert groups(same) == [[2, 3]]
    assert groups(flipped) == [[2, 3]]  # off: distance only
    loc.config = LocalizerConfig(ambiguity_place_facing_deg=90.0)
    assert groups(same) == [[2, 3]]
    # the close keyframes facing away are a group of their own (their own slots, solved on their own)
    assert groups(flipped) == [[2, 3], [0, 1]]


def test_the_place_check_leaves_out_keyframes_that_support_the_pose():
    """A retrieved keyframe whose matches reproject under the pose shows the pose's own place, however far it is
    (a keyframe 1.2 m behind the camera in a corridor): the place check does not spend its slots on it. Keyframes
    whose points fit the pose less than PLACE_SUPPORT_FRACTION of the time (a look-alike 3 m away), or that have
    fewer than min_inliers matches, stay candidates."""
    from reloc_ros.core.geometry import look_at
    from reloc_ros.core.localizer import PLACE_SUPPORT_FRACTION, KeyframeMatches, Localizer, LocalizerConfig

    rng = np.random.default_rng(2)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    T = look_at([0, 0, 0], [0, 0, 5])  # camera at the origin looking along +z
    uv = rng.uniform([0, 0], [640, 480], size=(400, 2))
    depth = rng.uniform(2, 6, size=400)
    rays = np.c_[(uv - K[:2, 2]) / K[0, 0], np.ones(400)]
    xyz = (T[:3, :3] @ (rays * depth[:, None]).T).T + T[:3, 3]  # points that project to uv under T
    shifted = xyz + np.array([3.0, 0, 0])  # the same structure 3 m along x: a look-alike's points

    def kf(points, n):
        return KeyframeMatches(0, np.stack([np.arange(n), np.arange(n)], axis=1), np.ones(n, np.float32)), points

    frac = PLACE_SUPPORT_FRACTION
    mixed = np.where((np.arange(400) < int(0.8 * frac * 400))[:, None], xyz, shifted)  # below the fraction
    enough = np.where((np.arange(400) < int(1.2 * frac * 400))[:, None], xyz, shifted)  # above it
    cases = {10: kf(xyz, 200), 11: kf(shifted, 200), 12: kf(mixed, 400), 13: kf(enough, 400), 14: kf(xyz, 10)}
    loc = Localizer.__new__(Localizer)
    loc.config = LocalizerConfig()
    loc._kf_xyz = {k: pts for k, (_, pts) in cases.items()}
    matched = {k: e._replace(keyframe=k) for k, (e, _) in cases.items()}
    assert sorted(loc._supporting(matched, uv, K, T)) == [10, 13]
    # the same keyframes under the look-alike's pose: the shifted ones support it instead
    T_alias = T.copy()
    T_alias[:3, 3] += [3.0, 0, 0]
    assert sorted(loc._supporting(matched, uv, K, T_alias)) == [11, 12]
