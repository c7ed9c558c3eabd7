"""The performance work: batched matching equals the reference, index auto-selection, `reloc bench --quick`."""

import json

import numpy as np
import pytest

from reloc_ros.core.matching import KeyframeDescriptors, KeyframeMatcher, match_mutual_nn
from reloc_ros.core.retrieval import AUTO_FLAT_MAX, build_index, index_kind, resolve_index_kind


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _scene(seed=0, D=64):
    """Query descriptors and keyframes of different sizes (0, 1, 2, ... points), partly true correspondences,
    with duplicated query rows (exact similarity ties) and fp16-representable values (as a loaded map)."""
    rng = np.random.default_rng(seed)
    world = _unit(rng.normal(size=(900, D)))
    sizes = [0, 1, 2, 37, 300, 520, 41]
    kfs = [_unit(world[rng.choice(900, m, replace=False)] + 0.03 * rng.normal(size=(m, D))).astype(np.float16)
           for m in sizes]
    q = _unit(world[rng.choice(900, 700, replace=False)] + 0.03 * rng.normal(size=(700, D)))
    q[10] = q[3]  # duplicates: ties in a column's maximum
    q[500] = q[3]
    return q, [k.astype(np.float32) for k in kfs]


@pytest.mark.parametrize("ratio,mutual,block,dtype,threads", [
    (0.8, True, 1024, np.float32, 1), (0.8, True, 64, np.float16, 1), (0.95, False, 100, np.float32, 1),
    (1.0, True, 7, np.float16, 1), (0.8, True, 1024, np.float32, 2), (0.8, True, 64, np.float16, 3),
    (0.95, False, 100, np.float32, 2)])
def test_batched_matcher_equals_reference(ratio, mutual, block, dtype, threads):
    """Also split over threads (700 query rows: 2 parts of >= 256; the duplicated query rows 3 and 500 fall in
    different parts, so the mutual check's tie rule is exercised across them)."""
    q, kfs = _scene()
    store = KeyframeDescriptors(kfs, dtype)  # fp16 holds these (fp16-representable, as a loaded map) exactly
    assert store.desc.dtype == dtype
    matcher = KeyframeMatcher(store, ratio, mutual, block_rows=block, threads=threads)
    for cand in ([4, 5, 3, 6, 2], [0, 1, 4], [5], list(range(len(kfs)))):
        got = matcher.match(q, cand)
        total = 0
        for k, (m, s) in zip(cand, got):
            m_ref, s_ref = match_mutual_nn(q, kfs[k], ratio, mutual)
            assert np.array_equal(m, m_ref), (k, len(m), len(m_ref))
            assert np.array_equal(s, s_ref)
            assert m.dtype == np.int64 and s.dtype == np.float32
            total += len(m)
        if 4 in cand:
            assert total >= 100  # the scene has true correspondences: the comparison is not vacuous
    # no query keypoints
    assert all(len(m) == 0 for m, _ in matcher.match(q[:0], [4, 5]))
    matcher.close()
    with pytest.raises(ValueError, match="threads"):
        KeyframeMatcher(store, threads=0)


def test_store_layout_and_zero_copy():
    rng = np.random.default_rng(1)
    kfs = [_unit(rng.normal(size=(20, 8))), _unit(rng.normal(size=(0, 8))), _unit(rng.normal(size=(5, 8)))]
    store = KeyframeDescriptors(kfs)
    assert store.desc.dtype == np.float32 and len(store) == 3
    assert [store.count(k) for k in range(3)] == [20, 0, 5]
    assert np.array_equal(store.get(2), kfs[2]) and store.get(1).shape == (0, 8)
    flat = np.concatenate(kfs)
    assert np.shares_memory(KeyframeDescriptors.from_flat(flat, [0, 20, 20, 25]).desc, flat)  # no copy
    with pytest.raises(ValueError, match="offsets end"):
        KeyframeDescriptors.from_flat(flat, [0, 20, 24])


def test_index_auto_selection_and_recall():
    assert resolve_index_kind("auto", AUTO_FLAT_MAX) == "flat"
    assert resolve_index_kind("auto", AUTO_FLAT_MAX + 1) == "ivf"
    assert resolve_index_kind("ivf", 10) == "ivf"
    with pytest.raises(ValueError, match="choose one of"):
        resolve_index_kind("lsh", 10)
    rng = np.random.default_rng(2)
    centres = _unit(rng.normal(size=(60, 128)))
    X = _unit(centres[rng.integers(0, 60, 6000)] + 0.08 * rng.normal(size=(6000, 128)))
    Q = _unit(X[rng.choice(6000, 100, replace=False)] + 0.05 * rng.normal(size=(100, 128)))
    assert index_kind(build_index(X, "auto")) == "flat"
    _, exact = build_index(X, "flat").search(Q, 10)
    for kind in ("hnsw", "ivf"):
        index = build_index(X, kind)
        assert index_kind(index) == kind
        _, ids = index.search(Q, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
        assert recall >= 0.9, (kind, recall)


def test_bench_quick_writes_json(tmp_path, capsys):
    from reloc_ros.cli.main import main

    out = tmp_path / "bench.json"
    assert main(["-q", "bench", "--quick", "--int8", "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    e2e = r["end_to_end_ms"]
    assert 0 < e2e["p50"] <= e2e["p95"]
    for stage in ("convert", "preprocess", "encoder", "postprocess", "retrieval", "matching", "pnp"):
        assert r["stages_ms"][stage] >= 0
    assert r["stages_ms"]["encoder"] > 0 and r["stages_ms"]["matching"] > 0
    ratio = r["sift_end_to_end_ms"]["p50"] / e2e["p50"]
    assert r["speedup_vs_sift"] == pytest.approx(ratio)
    assert {"learned ort-cpu 640x480", "sift 640x480", "learned ort-cpu 320x240", "sift 320x240"} <= set(r["variants"])
    for v in r["variants"].values():
        assert v["queries"] == r["scene"]["queries"] > 0
        assert 0 <= v["recall"]["50cm_5deg"] <= 100
    # the learned pipeline at 640x480 localizes office queries (one that silently broke would not)
    assert r["variants"]["learned ort-cpu 640x480"]["recall"]["50cm_5deg"] > 0
    assert r["variants"]["learned ort-cpu-int8 640x480"]["recall"]["50cm_5deg"] > 0  # the INT8 copy (--int8) too
    # after the tracker accepted a place: odometry's pose window, tracked_top_k keyframes instead of top_k
    tracked = r["variants"]["learned ort-cpu tracked 640x480"]
    assert tracked["recall"]["50cm_5deg"] > 0 and tracked["keyframes_retrieved"] <= 3, tracked
    assert r["variants"]["learned ort-cpu 640x480"]["keyframes_retrieved"] == 5
    assert "speed-up" in capsys.readouterr().out


def test_blas_threads_limited_for_the_localizer():
    """The localizer limits numpy's BLAS to one thread (OpenBLAS spinning starves ONNX Runtime on 2 cores)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from reloc_ros.core.localizer import LocalizerConfig, limit_blas_threads

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas, "numpy has no BLAS that threadpoolctl can see"
    before = {i["filepath"]: i["num_threads"] for i in blas}
    try:
        limit_blas_threads(1)
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    finally:
        for path, n in before.items():
            threadpool_limits(limits={path: n})
    assert LocalizerConfig().blas_threads == 1
    with pytest.raises(ValueError, match="blas_threads"):
        LocalizerConfig(blas_threads=-1)


def test_blas_limit_applies_at_the_first_localization_not_at_construction(tmp_path):
    """Making a Localizer (e.g. to inspect a map) leaves the process's BLAS alone; localizing applies blas_threads."""
    import reloc_ros.core.localizer as localizer_mod
    from threadpoolctl import threadpool_info, threadpool_limits

    from reloc_ros.core.features import create_extractor
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.base import load_image
    from reloc_ros.datasets.synthetic import generate
    from reloc_ros.pipelines.build_map import build_map

    generate("office", tmp_path / "s", n_map=6, n_query=1, seed=2, stride=30, workers=1, progress=False)
    map_frames, queries = load_dataset(tmp_path / "s", "7scenes").split(None)
    ex = create_extractor("sift")
    db = build_map(map_frames, ex, "depth", tmp_path / "m", show_progress=False)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    before = {i["filepath"]: i["num_threads"] for i in blas}
    try:
        threadpool_limits(limits=2, user_api="blas")
        localizer_mod._blas_limit_applied = None
        loc = localizer_mod.Localizer(db, ex, localizer_mod.LocalizerConfig(blas_threads=1))
        assert all(i["num_threads"] == 2 for i in threadpool_info() if i["user_api"] == "blas")
        loc.localize(load_image(queries[0]), queries[0].camera)
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    finally:
        for path, n in before.items():
            threadpool_limits(limits={path: n})
        localizer_mod._blas_limit_applied = None
