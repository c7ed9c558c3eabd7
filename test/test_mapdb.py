"""Map database: save/load round trip, atomic replacement, and refusal of corrupt or mismatched maps."""

import os

import faiss
import numpy as np
import pytest
import yaml

from reloc_ros.core.camera import Camera
from reloc_ros.core.geometry import look_at
from reloc_ros.core.localizer import Localizer, LocalizerConfig, check_extractor, extractor_for_map
from reloc_ros.core.mapdb import FORMAT_VERSION, Keyframe, MapDatabase, MapError
from reloc_ros.core.sift import SiftVladExtractor


def _random_db(rng, n_kf=4, n_kp=50):
    cam = Camera(640, 480, 500, 500, 319.5, 239.5)
    kfs = []
    for i in range(n_kf):
        pts = rng.normal(size=(n_kp, 3)).astype(np.float32)
        pts[::3] = np.nan
        d = rng.normal(size=(n_kp, 128)).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        g = rng.normal(size=64 * 128).astype(np.float32)
        kfs.append(Keyframe(f"kf{i}", look_at([i, 0, 1], [i, 5, 1]), cam,
                            rng.uniform(0, 480, (n_kp, 2)).astype(np.float32), d,
                            rng.uniform(size=n_kp).astype(np.float32), pts,
                            np.where(np.isfinite(pts[:, 0]), 2, 0).astype(np.uint8),
                            rng.uniform(size=n_kp).astype(np.float32), g / np.linalg.norm(g)))
    ex = SiftVladExtractor()
    ex._set_vocab(rng.normal(size=(64, 128)).astype(np.float32))
    return MapDatabase.from_keyframes(kfs, ex.identity(), ex.state(), {"points": "triangulate"}), ex


def test_round_trip(tmp_path):
    db, ex = _random_db(np.random.default_rng(0))
    db.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["global.faiss", "keyframes.h5", "manifest.yaml",
                                                                 "points.ply"]
    db2 = MapDatabase.load(tmp_path / "m")
    assert db2.names == db.names
    assert np.allclose(db2.T_map_from_cam, db.T_map_from_cam)
    assert np.array_equal(db2.kp_offsets, db.kp_offsets)
    assert db2.descriptors.dtype == np.float16  # as stored: no conversion at load
    assert np.array_equal(db2.descriptors, db.descriptors.astype(np.float16))
    assert np.array_equal(np.isnan(db2.points3d), np.isnan(db.points3d))
    assert np.allclose(db2.points3d[np.isfinite(db2.points3d)], db.points3d[np.isfinite(db.points3d)])
    assert db2.index.ntotal == 4 and db2.manifest["format_version"] == FORMAT_VERSION
    assert db2.manifest["counts"]["points"]["triangulate"] == int(np.isfinite(db.points3d[:, 0]).sum())
    ex2 = extractor_for_map(db2)
    assert np.array_equal(ex2.vocab, ex.vocab)
    Localizer(db2, ex2)  # accepted


def test_existing_map_needs_overwrite_and_failed_build_keeps_old(tmp_path):
    rng = np.random.default_rng(1)
    db, _ = _random_db(rng)
    db.save(tmp_path / "m")
    with pytest.raises(MapError, match="--overwrite"):
        db.save(tmp_path / "m")
    db_new, _ = _random_db(rng, n_kf=6)

    class Boom(RuntimeError):
        pass

    import reloc_ros.core.mapdb as mapdb

    orig = mapdb._write_ply

    def failing(*a, **k):
        raise Boom("interrupted")

    mapdb._write_ply = failing
    try:
        with pytest.raises(Boom):
            db_new.save(tmp_path / "m", overwrite=True)
    finally:
        mapdb._write_ply = orig
    assert len(MapDatabase.load(tmp_path / "m")) == 4  # old map intact
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp dir left behind
    db_new.save(tmp_path / "m", overwrite=True)
    assert len(MapDatabase.load(tmp_path / "m")) == 6


def test_refuses_to_overwrite_non_map(tmp_path):
    (tmp_path / "notamap").mkdir()
    (tmp_path / "notamap" / "precious.txt").write_text("x")
    db, _ = _random_db(np.random.default_rng(2))
    for overwrite in (False, True):  # the same answer either way: not "pass --overwrite", then "refusing"
        with pytest.raises(MapError, match="holds files that are not a reloc_ros map: write the map to a new or empty"):
            db.save(tmp_path / "notamap", overwrite=overwrite)
    assert (tmp_path / "notamap" / "precious.txt").exists()
    (tmp_path / "empty").mkdir()  # a folder made for the map: no --overwrite needed
    db.save(tmp_path / "empty")
    assert len(MapDatabase.load(tmp_path / "empty")) == len(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notamap"]  # no temp dir left behind


def test_replacing_a_map_keeps_the_owners_files_in_its_folder(tmp_path):
    """A map folder may hold its owner's notes and photos: `map build --overwrite`, `map update`, `map merge
    --overwrite` and `map analyse` replace the map's own files and keep the rest, content and all."""
    rng = np.random.default_rng(4)
    db, _ = _random_db(rng)
    m = db.save(tmp_path / "m")
    (m / "README_robot.txt").write_text("calibrated 2026-12-01")
    (m / "photos").mkdir()
    (m / "photos" / "p.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (m / "latest").symlink_to("photos")
    db_new, _ = _random_db(rng, n_kf=6)
    db_new.save(m, overwrite=True)
    assert len(MapDatabase.load(m)) == 6
    assert (m / "README_robot.txt").read_text() == "calibrated 2026-12-01"
    assert (m / "photos" / "p.jpg").read_bytes() == b"\xff\xd8 not really a jpeg"
    assert (m / "latest").is_symlink() and (m / "latest" / "p.jpg").is_file()
    db_new.save(m, overwrite=True, write_ply=False)  # a map file the new map does not have is the map's: not kept
    assert not (m / "points.ply").exists() and (m / "README_robot.txt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    # the owner's files are moved, not copied: same inode, same owner; a private folder stays private
    ino = (m / "photos" / "p.jpg").stat().st_ino
    m.chmod(0o700)
    db.save(m, overwrite=True)
    assert (m / "photos" / "p.jpg").stat().st_ino == ino and (m.stat().st_mode & 0o777) == 0o700
    # a map folder reached through a symlink: the folder it points to is replaced, the link stays a link
    (tmp_path / "current").symlink_to("m")
    db_new.save(tmp_path / "current", overwrite=True)
    assert (tmp_path / "current").is_symlink() and len(MapDatabase.load(m)) == 6
    assert (m / "README_robot.txt").read_text() == "calibrated 2026-12-01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "m"]


def test_a_killed_swap_never_costs_the_owner_files(tmp_path):
    """A temporary folder of a process that no longer exists is deleted by the next write only when it holds nothing
    but map files (a map half written); one that holds other files (the old map folder of a swap killed before its
    owner's files moved over) gives them to the map's folder; a folder that merely looks like one is not touched."""
    db, _ = _random_db(np.random.default_rng(5))
    db.save(tmp_path / "m")
    dead = 999_999_999  # no such process
    half = tmp_path / f".m.tmp-{dead}-abcd1234"
    half.mkdir()
    (half / "keyframes.h5").write_bytes(b"half")
    swapped = tmp_path / f".m.tmp-{dead}-efgh5678"
    swapped.mkdir()
    (swapped / "manifest.yaml").write_text("old map")
    (swapped / "notes.txt").write_text("mine")
    lookalike = tmp_path / f".m.tmp-{dead}-mine"  # not mkdtemp's 8 characters
    lookalike.mkdir()
    db.save(tmp_path / "m", overwrite=True)
    assert not half.exists() and not swapped.exists() and lookalike.is_dir()
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"  # moved into the map's folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("m.previous-")]
    # where the file system has no RENAME_EXCHANGE the swap is two renames: killed between them, the map's path is
    # empty and the old map waits as .m.old-PID; the next write puts it back first (then replaces it as asked)
    os.rename(tmp_path / "m", tmp_path / f".m.old-{dead}")
    (tmp_path / f".m.old-{dead}" / "more.txt").write_text("also mine")
    with pytest.raises(MapError, match="--overwrite"):  # the map is back, so this write needs --overwrite
        db.save(tmp_path / "m")
    assert len(MapDatabase.load(tmp_path / "m")) == len(db) and (tmp_path / "m" / "more.txt").is_file()


@pytest.fixture
def saved(tmp_path):
    db, _ = _random_db(np.random.default_rng(3))
    return db.save(tmp_path / "m")


def _edit_manifest(path, fn):
    m = yaml.safe_load((path / "manifest.yaml").read_text())
    fn(m)
    (path / "manifest.yaml").write_text(yaml.safe_dump(m))


def test_missing_and_not_a_map(tmp_path):
    with pytest.raises(MapError, match="not found"):
        MapDatabase.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapError, match="no manifest.yaml"):
        MapDatabase.load(tmp_path / "empty")


def test_newer_format_refused(saved):
    _edit_manifest(saved, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(MapError, match="newer than this reloc_ros"):
        MapDatabase.load(saved)


def test_corrupt_file_refused_by_hash(saved):
    data = bytearray((saved / "keyframes.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (saved / "keyframes.h5").write_bytes(bytes(data))
    with pytest.raises(MapError, match="sha256"):
        MapDatabase.load(saved)


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_hash_catches_what_the_reader_cannot(saved):
    """One bit flipped inside the descriptor data or the index's vectors leaves a file every reader accepts: only
    the sha256 check refuses it (and it stays on by default)."""
    import h5py

    with h5py.File(saved / "keyframes.h5", "r") as f:
        off = f["descriptors"].id.get_offset()
    assert off is not None  # contiguous dataset: the bit lands in a descriptor
    _flip_byte(saved / "keyframes.h5", off + 10)
    with pytest.raises(MapError, match="keyframes.h5 does not match the sha256"):
        MapDatabase.load(saved)
    assert len(MapDatabase.load(saved, verify=False)) == 4  # the reader alone would have taken it

    db, _ = _random_db(np.random.default_rng(3))
    m2 = db.save(saved.parent / "m2")
    size = (m2 / "global.faiss").stat().st_size
    _flip_byte(m2 / "global.faiss", size - 100)  # inside the stored vectors
    with pytest.raises(MapError, match="global.faiss does not match the sha256"):
        MapDatabase.load(m2)
    assert len(MapDatabase.load(m2, verify=False)) == 4


def test_map_hash_chunking(tmp_path):
    """The chunked sha256 (maps and models) equals hashlib over the whole file (sizes around the chunk boundary,
    empty)."""
    import hashlib

    from reloc_ros.core.features import sha256_file

    rng = np.random.default_rng(0)
    for n in (0, 1, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7):
        f = tmp_path / f"f{n}"
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        f.write_bytes(data)
        want = hashlib.sha256(data).hexdigest()
        assert sha256_file(f) == want
        assert sha256_file(f, chunk=4096) == want


def test_loaded_descriptors_stay_float16_and_match_exactly(tmp_path):
    """A loaded map keeps the file's float16 descriptors (no conversion, half the memory); the localizer keeps
    them float16 (the map's own array when every keypoint has 3D), and matching them gives bit-identical matches and
    scores to float32 descriptors."""
    from reloc_ros.core.matching import KeyframeDescriptors, KeyframeMatcher, match_mutual_nn

    db, ex = _random_db(np.random.default_rng(4), n_kf=6, n_kp=300)
    db.save(tmp_path / "m")
    db2 = MapDatabase.load(tmp_path / "m")
    assert db2.descriptors.dtype == np.float16 and db2.descriptors.flags.c_contiguous
    assert np.array_equal(db2.descriptors, db.descriptors.astype(np.float16))
    desc32 = db2.descriptors.astype(np.float32)  # the values the old loader held

    loc = Localizer(db2, ex, LocalizerConfig(max_map_keypoints=0))
    store = loc._kf_desc
    assert store.desc.dtype == np.float16 and store.nbytes < desc32.nbytes
    has = np.isfinite(db2.points3d[:, 0])  # the localizer matches the keypoints with 3D only

    rng = np.random.default_rng(5)
    picks = rng.choice(np.flatnonzero(has), 800, replace=False)
    q = desc32[picks] + 0.05 * rng.normal(size=(800, desc32.shape[1])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[7] = q[3]  # an exact tie for the mutual check
    cand = [3, 0, 5, 1]
    ref32 = KeyframeDescriptors.from_flat(desc32[has], store.offsets)
    assert ref32.desc.dtype == np.float32
    got16 = loc._matcher.match(q, cand)
    got32 = KeyframeMatcher(ref32, loc.match_ratio, loc.config.mutual).match(q, cand)
    total = 0
    for k, (m16, s16), (m32, s32) in zip(cand, got16, got32):
        m_ref, s_ref = match_mutual_nn(q, ref32.get(k), loc.match_ratio, loc.config.mutual)
        assert np.array_equal(m16, m32) and np.array_equal(m16, m_ref)
        assert np.array_equal(s16, s32) and np.array_equal(s16, s_ref)  # bit for bit
        m_h, s_h = match_mutual_nn(q, store.get(k), loc.match_ratio, loc.config.mutual)  # float16 input
        assert np.array_equal(m_h, m_ref) and np.array_equal(s_h, s_ref)
        total += len(m16)
    assert total >= 300  # the comparison is not vacuous
    # ... and it would notice similarities computed in float16 (the scores change):
    S16 = (q[:50].astype(np.float16) @ store.get(3)[:50].T).astype(np.float32)
    assert not np.array_equal(S16, q[:50] @ ref32.get(3)[:50].T)

    # matching_precision int8 set on the running localizer (the node's parameter): a new matcher of that precision
    # whose matches mostly agree; back to float32: the bit-identical matches again
    from dataclasses import replace

    loc.config = replace(loc.config, matching_precision="int8")
    assert loc._matcher.precision == "int8"
    got8 = loc._matcher.match(q, cand)
    agree = sum(len({tuple(r) for r in a[0]} & {tuple(r) for r in b[0]}) for a, b in zip(got8, got16))
    assert agree >= 0.9 * total
    loc.config = replace(loc.config, matching_precision="float32")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(loc._matcher.match(q, cand), got16))

    db2.points3d[~has] = 0.0  # every keypoint with 3D: the store is the map's own array, no copy
    assert np.shares_memory(Localizer(db2, ex)._kf_desc.desc, db2.descriptors)


def test_float16_keyframes_stay_float16(tmp_path):
    """A map made from float16 keyframe descriptors (e.g. tiled from a loaded map) stays float16 and round-trips
    exactly; float32 keyframes give a float32 map that is stored as float16."""
    db, _ = _random_db(np.random.default_rng(6))
    assert db.descriptors.dtype == np.float32
    db.save(tmp_path / "a")
    a = MapDatabase.load(tmp_path / "a")
    kfs = [Keyframe(a.names[i], a.T_map_from_cam[i], a.cameras[i], a.keypoints[s], a.descriptors[s], a.scores[s],
                    a.points3d[s], a.point_source[s], a.point_conf[s], a.global_desc[i])
           for i, s in ((i, a.keyframe_slice(i)) for i in range(len(a)))]
    b = MapDatabase.from_keyframes(kfs, a.extractor_identity, a.extractor_state)
    assert b.descriptors.dtype == np.float16 and np.array_equal(b.descriptors, a.descriptors)
    b.save(tmp_path / "b")
    assert np.array_equal(MapDatabase.load(tmp_path / "b").descriptors, a.descriptors)
    assert len({id(c) for c in a.cameras}) == 1  # one shared (frozen) Camera for identical intrinsics


def test_truncated_h5_refused(saved):
    data = (saved / "keyframes.h5").read_bytes()
    (saved / "keyframes.h5").write_bytes(data[: len(data) // 3])
    _edit_manifest(saved, lambda m: m["files"].pop("keyframes.h5"))  # skip the hash: reach the reader
    with pytest.raises(MapError, match="truncated or corrupt"):
        MapDatabase.load(saved, verify=False)


def test_index_count_mismatch_refused(saved):
    idx = faiss.IndexFlatIP(64 * 128)
    idx.add(np.zeros((3, 64 * 128), np.float32))
    faiss.write_index(idx, str(saved / "global.faiss"))
    _edit_manifest(saved, lambda m: m["files"].pop("global.faiss"))
    with pytest.raises(MapError, match="3 descriptors but keyframes.h5 has 4"):
        MapDatabase.load(saved, verify=False)


def test_missing_file_refused(saved):
    (saved / "global.faiss").unlink()
    with pytest.raises(MapError, match="missing global.faiss"):
        MapDatabase.load(saved)


def test_other_extractor_refused(saved):
    db = MapDatabase.load(saved)
    other = SiftVladExtractor(n_features=500)
    other.load_state(db.extractor_state)
    with pytest.raises(MapError, match="another extractor.*n_features"):
        check_extractor(db, other)
    _edit_manifest(saved, lambda m: m["extractor"].update(name="learned", weights_sha256="abc"))
    db = MapDatabase.load(saved, verify=False)
    with pytest.raises(Exception, match="unknown extractor|another extractor"):
        extractor_for_map(db)


def test_sigkill_mid_build_leaves_old_map_intact(tmp_path):
    """A `reloc map build --overwrite` killed with SIGKILL mid-build leaves the existing map loadable and
    unchanged; the next build cleans the dead build's temporary directory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import cv2

    rng = np.random.default_rng(7)
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "cameras").mkdir()
    for i in range(40):
        img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640), dtype=np.uint8), (0, 0), 1.5)
        cv2.imwrite(str(ds / "images" / f"{i:04d}.png"), img)
        (ds / "cameras" / f"{i:04d}.txt").write_text(
            f"# K R C wh\n500 0 319.5\n0 500 239.5\n0 0 1\n1 0 0\n0 1 0\n0 0 1\n{0.1 * i} 0 0\n640 480\n")
    cmd = [sys.executable, "-m", "reloc_ros.cli.main", "-q", "map", "build", "--dataset", str(ds), "--format",
           "posed_images", "--map-every", "2", "--out", str(tmp_path / "m"),
           "--matcher", "mnn"]  # the atomic write is under test, not the matching (lighterglue: 190 pairs, minutes)
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    before = MapDatabase.load(tmp_path / "m")
    assert before.extractor_identity["name"] == "learned"  # the default extractor of `reloc map build`
    manifest_before = (tmp_path / "m" / "manifest.yaml").read_text()
    proc = subprocess.Popen(cmd + ["--overwrite"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".m.tmp-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)  # wait until the build has created its temporary directory
    assert proc.poll() is None, "the build finished before it could be killed: make the dataset larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(tmp_path.glob(".m.tmp-*")), "the killed build should have left its temporary directory"
    after = MapDatabase.load(tmp_path / "m")  # verifies every file's sha256
    assert (tmp_path / "m" / "manifest.yaml").read_text() == manifest_before
    assert after.names == before.names
    subprocess.run(cmd + ["--overwrite"], check=True, capture_output=True, timeout=300)
    assert not list(tmp_path.glob(".m.tmp-*"))  # the dead build's directory was cleaned
    assert len(MapDatabase.load(tmp_path / "m")) == len(before)


def test_map_load_bench_reports_time_and_memory(tmp_path):
    """`reloc bench --scaling`'s map-load study (tiling a real map's keyframes, loading in a fresh process) runs on
    float16 maps and reports times, peak and held RSS and the descriptor dtype."""
    from reloc_ros.experiments.bench import _map_load_scaling, format_scaling

    db, _ = _random_db(np.random.default_rng(8))
    src = db.save(tmp_path / "src")
    rows = _map_load_scaling(src, [9], kp=20, seed=0, progress=False)
    (r,) = rows
    assert r["keyframes"] == 9 and r["keypoints_per_keyframe"] == 20 and r["descriptor_dtype"] == "float16"
    assert r["load_s"] > 0 and r["localizer_setup_s"] > 0
    assert 0 < r["peak_rss_after_load_mb"] <= r["peak_rss_mb"] and 0 < r["rss_with_localizer_mb"] <= r["peak_rss_mb"]
    assert len(r["loadavg_before"]) == 3
    table = format_scaling({"retrieval": [], "map_load": rows, "matching": []})
    assert "| 9 | 20 |" in table and "RSS with localizer MB" in table


def test_saved_maps_are_readable_by_other_users(tmp_path):
    """A map is built in a private temporary directory and renamed: its folder must still be 0755 and its files
    0644 under the usual umask (a node running as another user loads it)."""
    import os
    import stat

    from map_helpers import random_map

    import shutil
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="reloc_perm_"))  # pytest's tmp_path is 0700: another user cannot enter it
    os.chmod(base, 0o755)
    old = os.umask(0o022)
    try:
        out = random_map(base / "map")
    finally:
        os.umask(old)
    request_cleanup = shutil.rmtree
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes and all(m == 0o644 for m in modes.values()), modes
    if os.geteuid() == 0 and hasattr(os, "fork"):  # load it as another user
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                from reloc_ros.core.mapdb import MapDatabase
                code = 0 if len(MapDatabase.load(out)) > 0 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, "a map could not be loaded as user nobody"
    request_cleanup(base)


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    from reloc_ros.demo import main as demo_main

    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert demo_main(["--out", str(mine)]) == 2
    assert (mine / "thesis.tex").read_text() == "precious"


def test_build_key_reuses_only_a_map_of_the_same_inputs(tmp_path):
    """A map records the build key of its inputs; build_or_reuse_map reuses it only when they are the same (the
    extractor's settings, the points, the frames) and rebuilds otherwise."""
    from reloc_ros.pipelines.build_map import build_or_reuse_map, map_build_key
    from reloc_ros.core.features import create_extractor
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.synthetic import generate_or_reuse

    data, reused = generate_or_reuse("office", tmp_path / "s", n_map=8, n_query=2, seed=3, stride=20, workers=1,
                                     progress=False)
    assert not reused
    again, reused = generate_or_reuse("office", tmp_path / "s", n_map=8, n_query=2, seed=3, stride=20, workers=1,
                                      progress=False)
    assert reused and again == data
    frames = load_dataset(data, "7scenes").split(None)[0]
    sift = create_extractor("sift")
    db, reused = build_or_reuse_map(frames, sift, "depth", tmp_path / "m", show_progress=False)
    assert not reused and db.manifest["build"]["key"] == map_build_key(frames, sift, "depth")
    _, reused = build_or_reuse_map(frames, sift, "depth", tmp_path / "m", show_progress=False)
    assert reused
    for other in ((frames[:-1], sift, "depth"), (frames, create_extractor("sift", n_features=500), "depth"),
                  (frames, sift, "triangulate")):
        assert map_build_key(*other) != db.manifest["build"]["key"]
    _, reused = build_or_reuse_map(frames[:-1], sift, "depth", tmp_path / "m", show_progress=False)
    assert not reused
    # another seed is another scene: generated again in place
    _, reused = generate_or_reuse("office", tmp_path / "s", n_map=8, n_query=2, seed=4, stride=20, workers=1,
                                  progress=False)
    assert not reused
