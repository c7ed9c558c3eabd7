"""Benchmarks (`reloc bench`): pipeline latency per stage, learned vs the SIFT baseline in one run, and scaling.

    reloc bench [--json FILE] [--quick] [--work DIR]        # the embedded synthetic office scene, 640x480 + 320x240
    reloc bench --scaling [--scaling-max N] [--json FILE]   # retrieval / map load / matching against size

Default run: the synthetic ``office`` scene is generated (small) into ``--work`` (reused when it is already there,
else a temporary folder), one map per extractor is built from its mapping run (depth points), and every query frame
is localized by each variant in turn (learned and SIFT interleaved, so a loaded CPU slows both alike). Stages:
``convert`` (message buffer -> array), ``preprocess``, ``encoder``, ``postprocess`` (learned) or ``extract`` (SIFT:
detection, description, VLAD), ``retrieval``, ``matching``, ``aggregation``, ``pnp``, ``gates`` (the rest of
``Localizer.localize``: ambiguity check, covariance). Publishing is the node's cost (``/diagnostics``), not here.

``--scaling``: (1) retrieval time, index memory and recall@10 (against exact search) for 1k ... 1M keyframes, flat
vs IVF vs HNSW; the database holds real global descriptors of the generated scene (frames and photometric /
geometric augmentations of them), mixed pairwise and perturbed, the queries are held-out query-run descriptors,
perturbed; (2) map load time and memory (load + localizer set-up, in a fresh process) against keyframes;
(3) matching cost against query keypoints, reference vs the batched matcher.

A benchmark prints tables and writes JSON; it is never a test. Timings depend on what else runs on the machine:
the JSON records the load average.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["BenchConfig", "run_pipeline_bench", "run_scaling_bench", "format_pipeline", "format_scaling", "main"]

STAGES_LEARNED = ("convert", "preprocess", "encoder", "postprocess", "quality", "retrieval", "matching", "aggregation",
                  "pnp", "gates")
STAGES_SIFT = ("convert", "extract", "quality", "retrieval", "matching", "aggregation", "pnp", "gates")
LOCALIZER_STAGES = ("retrieval", "matching", "aggregation", "pnp")  # timed by Localizer.localize itself
SCALING_SIZES = (1_000, 10_000, 100_000, 1_000_000)
MAP_LOAD_SIZES = (1_000, 10_000)


@dataclass
class BenchConfig:
    quick: bool = False  # a small scene and few repetitions (a smoke run, figures are rough; 5 queries: with 3 the
    # learned 640x480 row localized none once the place check also saw the office's look-alike 3.6 m away)
    n_map: int = 60  # mapping-run frames of the generated scene
    n_query: int = 51  # frames per query run (two runs): 100 timed queries per variant after the warm-up
    warmup: int = 2  # first queries of each variant not counted
    resolutions: tuple = ((640, 480), (320, 240))  # query image sizes (the map is built at 640x480)
    scaling_max: int = 100_000  # largest retrieval database in --scaling (1M x 256 fp32 = 1 GB)
    scaling_queries: int = 200  # queries per retrieval size
    map_load_kp: int = 500  # keypoints per keyframe in the map-load study (the strongest of the real keyframes)
    seed: int = 0
    int8: bool = False  # also an INT8 copy of the learned model (reloc quantize, calibrated on the map images)

    @classmethod
    def quick_config(cls) -> "BenchConfig":
        return cls(quick=True, n_map=12, n_query=3, warmup=1, scaling_max=10_000, scaling_queries=50,
                   map_load_kp=200)


# -----------------------------------------------------------------------------------------------------------------
# scene and maps (cached in the work folder)
# -----------------------------------------------------------------------------------------------------------------
def prepare(work: Path, cfg: BenchConfig, extractors=("learned", "sift"), resolutions=None,
            progress: bool = True) -> dict:
    """Generate the office scene and build one map per extractor and resolution in ``work`` (reused when there).
    A lower resolution's map is built with the extractor's ``max_side`` at that size, so its queries run the
    network / SIFT at that size against keyframes described at the same scale."""
    resolutions = cfg.resolutions if resolutions is None else resolutions
    from reloc_ros.pipelines.build_map import build_or_reuse_map
    from reloc_ros.core.features import create_extractor
    from reloc_ros.datasets import load_dataset
    from reloc_ros.datasets.synthetic import generate_or_reuse

    work.mkdir(parents=True, exist_ok=True)
    scene, reused = generate_or_reuse("office", work / "scene", n_map=cfg.n_map, n_query=cfg.n_query, seed=cfg.seed,
                                      progress=False)
    if progress:
        print(f"{'reused' if reused else 'generated'} the office scene ({cfg.n_map} mapping + 2 x {cfg.n_query} "
              f"query frames) in {scene}")
    ds = load_dataset(scene, "7scenes")
    map_frames, queries = ds.split()
    maps = {}  # (extractor, "WxH") -> map built from the mapping run at that resolution
    fresh = not reused
    full = max(map_frames[0].camera.size)
    for name in extractors:
        for W, H in resolutions:
            side = max(W, H)
            out = work / f"map_{name}_{side}"
            params = {} if side >= full else {"max_side": side}
            _, map_reused = build_or_reuse_map(map_frames, create_extractor(name, **params), "depth", out,
                                               info={"command": "reloc bench"}, show_progress=False)
            fresh = fresh or not map_reused
            if progress and not map_reused:
                print(f"built the {name} map at {W}x{H} ({len(map_frames)} keyframes, depth points)")
            maps[(name, f"{W}x{H}")] = out
    int8 = _prepare_int8(work, map_frames, maps, progress) if cfg.int8 else None
    return {"dataset": ds, "map_frames": map_frames, "queries": queries, "maps": maps, "fresh": fresh,
            "int8_model": int8}


def _prepare_int8(work: Path, map_frames, maps: dict, progress: bool) -> Path:
    """An INT8 copy of the shipped model calibrated on 16 map images, and its 640x480 map (both reused while the
    shipped model is the one they were made from)."""
    from reloc_ros.pipelines.build_map import build_or_reuse_map
    from reloc_ros.core.learned import LearnedExtractor
    from reloc_ros.datasets import load_image
    from reloc_ros.datasets.base import evenly_spaced
    from reloc_ros.model.quantize import quantize_model

    model = work / "int8" / "relocnet_int8.onnx"
    shipped = LearnedExtractor(outputs="query").model_sha256
    if not model.is_file() or \
            LearnedExtractor(model_path=model, outputs="query").metadata.get("quantized_from") != shipped:
        if progress:
            print("quantizing the learned model (INT8, calibrated on 16 map images)")
        quantize_model(None, model, [load_image(map_frames[i]) for i in evenly_spaced(len(map_frames), 16)])
    out = work / "map_learned-int8_640"
    build_or_reuse_map(map_frames, LearnedExtractor(model_path=model), "depth", out,
                       info={"command": "reloc bench --int8"}, show_progress=False)
    maps[("learned-int8", "640x480")] = out
    return model


# -----------------------------------------------------------------------------------------------------------------
# pipeline latency
# -----------------------------------------------------------------------------------------------------------------
def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _localize_timed(localizer, buf: bytes, shape: tuple, camera, prior=None) -> tuple[dict, object]:
    """One query as the node runs it: message buffer -> array -> features -> localize (with ``prior``, e.g. an
    accepted place's odometry prediction); per-stage ms."""
    from reloc_ros.core.learned import LearnedExtractor, preprocess
    from reloc_ros.core.quality import measure as measure_image

    extractor = localizer.extractor
    t = {}
    t0 = time.perf_counter()
    img = np.frombuffer(buf, np.uint8).reshape(shape)
    t["convert"] = _ms(t0)
    if isinstance(extractor, LearnedExtractor):
        t1 = time.perf_counter()
        x, sx, sy = preprocess(img, extractor.max_side)
        t["preprocess"] = _ms(t1)
        t1 = time.perf_counter()
        out = extractor.network(x)
        t["encoder"] = _ms(t1)
        t1 = time.perf_counter()
        feats = extractor.postprocess(out, sx, sy, (shape[1], shape[0]))
        t["postprocess"] = _ms(t1)
    else:
        t1 = time.perf_counter()
        feats = extractor.extract(img)
        if feats.global_desc is None:
            feats.global_desc = extractor.describe_global(feats)
        t["extract"] = _ms(t1)
    t1 = time.perf_counter()  # what Localizer.extract adds: the covariance's image measures (core/quality.py)
    feats.sharpness, feats.brightness = measure_image(img)
    t["quality"] = _ms(t1)
    t1 = time.perf_counter()
    res = localizer.localize(img, camera, prior, features=feats)
    loc_ms = _ms(t1)
    for k in LOCALIZER_STAGES:
        t[k] = float(res.timings_ms.get(k, 0.0))
    t["gates"] = max(0.0, loc_ms - sum(t[k] for k in LOCALIZER_STAGES))
    t["end_to_end"] = _ms(t0)
    return t, res


def _tracked_prior(T_world_from_cam: np.ndarray, i: int):
    """The prior of a frame after the node's tracker accepted a place: odometry's prediction of the camera pose
    (here the true pose moved by 3 cm and 1 deg, odometry's drift over about a metre), with the tracker's default
    pose window (``track_odom_prior_sigma_m`` / ``_deg``)."""
    from reloc_ros.core.geometry import so3_exp
    from reloc_ros.core.retrieval import PosePrior
    from reloc_ros.core.tracking import TrackerConfig

    rng = np.random.default_rng(i)
    d = rng.normal(size=3)
    w = rng.normal(size=3)
    T = np.asarray(T_world_from_cam, np.float64)
    tc = TrackerConfig()
    return PosePrior(position=T[:3, 3] + 0.03 * d / np.linalg.norm(d), sigma_m=tc.odom_prior_sigma_m,
                     rotation=so3_exp(np.radians(1.0) * w / np.linalg.norm(w)) @ T[:3, :3],
                     sigma_deg=tc.odom_prior_sigma_deg, tracked=True)


def _variants(cfg: BenchConfig, maps: dict, int8_model: Path | None = None) -> list[dict]:
    """(name, map, resolution, ``extractor_for_map`` keyword arguments) of every variant this machine can run."""
    import onnxruntime as ort

    out = []
    for W, H in cfg.resolutions:
        res = f"{W}x{H}"
        out.append({"name": f"learned ort-cpu {res}", "extractor": "learned", "backend": "ort-cpu", "size": (W, H),
                    "map": maps[("learned", res)], "extractor_kwargs": {"provider": "cpu"}})
        out.append({"name": f"sift {res}", "extractor": "sift", "backend": "opencv", "size": (W, H),
                    "map": maps[("sift", res)], "extractor_kwargs": {}})
        if int8_model is not None and ("learned-int8", res) in maps:
            out.append({"name": f"learned ort-cpu-int8 {res}", "extractor": "learned", "backend": "ort-cpu-int8",
                        "size": (W, H), "map": maps[("learned-int8", res)],
                        "extractor_kwargs": {"provider": "cpu", "model_path": int8_model}})
    full = cfg.resolutions[0]
    res = f"{full[0]}x{full[1]}"
    map_l = maps[("learned", res)]
    # the frames after the tracker accepted a place (most of a robot's frames): the prior is odometry's prediction
    out.append({"name": f"learned ort-cpu tracked {res}", "extractor": "learned", "backend": "ort-cpu",
                "size": full, "map": map_l, "extractor_kwargs": {"provider": "cpu"}, "tracked": True})
    if cfg.quick:
        return out
    out.append({"name": f"learned ort-cpu tracked all-keypoints {res}", "extractor": "learned",
                "backend": "ort-cpu", "size": full, "map": map_l, "extractor_kwargs": {"provider": "cpu"},
                "tracked": True, "config": {"tracked_max_query_keypoints": 0}})
    out.append({"name": f"learned ort-cpu q1000 {res}", "extractor": "learned", "backend": "ort-cpu", "size": full,
                "map": map_l, "extractor_kwargs": {"provider": "cpu"}, "config": {"max_query_keypoints": 1000}})
    out.append({"name": f"learned ort-cpu match-int8 {res}", "extractor": "learned", "backend": "ort-cpu",
                "size": full, "map": map_l, "extractor_kwargs": {"provider": "cpu"},
                "config": {"matching_precision": "int8"}})
    out.append({"name": f"learned ort-cpu-nospin {res}", "extractor": "learned", "backend": "ort-cpu-nospin",
                "size": full, "map": map_l, "extractor_kwargs": {"provider": "cpu", "allow_spinning": False}})
    avail = ort.get_available_providers()
    for prov, ep in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
        if ep in avail:
            out.append({"name": f"learned ort-{prov} {res}", "extractor": "learned", "backend": f"ort-{prov}",
                        "size": full, "map": map_l, "extractor_kwargs": {"provider": prov}})
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for dev in devices:
            out.append({"name": f"learned torch-{dev} {res}", "extractor": "learned", "backend": f"torch-{dev}",
                        "size": full, "map": map_l, "extractor_kwargs": {"backend": "torch", "device": dev}})
    return out


def _at_size(img: np.ndarray, camera, size: tuple) -> tuple[bytes, tuple, object]:
    """A query image as the message buffer of a camera with ``size`` (W, H): (buffer, array shape, camera)."""
    if tuple(size) != camera.size:
        img, camera = cv2.resize(img, tuple(size), interpolation=cv2.INTER_AREA), camera.resized(*size)
    return img.tobytes(), img.shape, camera


def run_pipeline_bench(work: Path, cfg: BenchConfig, progress: bool = True) -> dict:
    """Localize the scene's query frames with every variant (interleaved); per-stage and end-to-end latency."""
    from reloc_ros.core.geometry import pose_errors
    from reloc_ros.core.localizer import Localizer, LocalizerConfig, config_from_dict, extractor_for_map
    from reloc_ros.core.mapdb import MapDatabase
    from reloc_ros.core.metrics import recall
    from reloc_ros.datasets import load_image

    prep = prepare(work, cfg, progress=progress)
    queries = prep["queries"]
    variants = _variants(cfg, prep["maps"], prep["int8_model"])
    dbs = {}  # map folder -> the loaded map, shared by the variants that use it (read-only)
    for v in variants:
        if v["map"] not in dbs:
            dbs[v["map"]] = MapDatabase.load(v["map"])
        db = dbs[v["map"]]
        v["localizer"] = Localizer(db, extractor_for_map(db, **v["extractor_kwargs"]),
                                   config_from_dict(LocalizerConfig, v.get("config")))
        v["rows"], v["t_err"], v["r_err"], v["kf"] = [], [], [], []
    if progress:
        print(f"localizing {len(queries)} query frames with {len(variants)} variants (interleaved)")
    load_before = os.getloadavg()
    for qi, f in enumerate(queries):
        img_full = load_image(f)
        scaled = {tuple(size): _at_size(img_full, f.camera, size) for size in cfg.resolutions}
        for v in variants:
            prior = _tracked_prior(f.T_world_from_cam, qi) if v.get("tracked") else None
            t, res = _localize_timed(v["localizer"], *scaled[tuple(v["size"])], prior)
            if qi < cfg.warmup:
                continue
            v["rows"].append(t)
            v["kf"].append(len(res.candidates))
            dt, dr = pose_errors(res.T_map_from_cam, f.T_world_from_cam) if res.ok else (np.inf, np.inf)
            v["t_err"].append(dt)
            v["r_err"].append(dr)
    load_after = os.getloadavg()
    results = {}
    for v in variants:
        rows = v["rows"]
        stages = STAGES_LEARNED if v["extractor"] == "learned" else STAGES_SIFT
        e2e = np.array([r["end_to_end"] for r in rows])
        rec = recall(v["t_err"], v["r_err"])  # failures count as misses
        results[v["name"]] = {
            "extractor": v["extractor"], "backend": v["backend"], "resolution": f"{v['size'][0]}x{v['size'][1]}",
            "config": v.get("config", {}),
            "queries": len(rows),
            "end_to_end_ms": {"p50": float(np.median(e2e)), "p95": float(np.percentile(e2e, 95))},
            "stages_ms": {s: float(np.median([r[s] for r in rows])) for s in stages},
            "keyframes_retrieved": float(np.median(v["kf"])),  # top_k; tracked_top_k with a tracked prior
            "recall": {k: rec[k] for k in ("50cm_5deg", "25cm_2deg")}}
    main_res = f"{cfg.resolutions[0][0]}x{cfg.resolutions[0][1]}"
    learned, sift = results[f"learned ort-cpu {main_res}"], results[f"sift {main_res}"]
    speedup = {f"{W}x{H}": results[f"sift {W}x{H}"]["end_to_end_ms"]["p50"]
               / results[f"learned ort-cpu {W}x{H}"]["end_to_end_ms"]["p50"] for W, H in cfg.resolutions}
    return {"config": asdict(cfg), "scene": {"name": "office", "queries": len(queries) - cfg.warmup,
                                             "map_keyframes": len(prep["map_frames"])},
            "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after},
            "end_to_end_ms": learned["end_to_end_ms"], "stages_ms": learned["stages_ms"],
            "sift_end_to_end_ms": sift["end_to_end_ms"], "speedup_vs_sift": speedup[main_res],
            "speedup_vs_sift_by_resolution": speedup, "variants": results}


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: header, separator, one line per row of formatted cells."""
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(cells) + " |" for cells in rows])


def format_pipeline(r: dict) -> str:
    stages = list(STAGES_LEARNED) + ["extract"]
    head = ["variant", "queries", "e2e p50", "e2e p95", "R@50cm_5deg", "R@25cm_2deg"] + stages
    lines = _table(head, [[name, f"{v['queries']}", f"{v['end_to_end_ms']['p50']:.1f}",
                           f"{v['end_to_end_ms']['p95']:.1f}", f"{v['recall']['50cm_5deg']:.1f}",
                           f"{v['recall']['25cm_2deg']:.1f}"]
                          + [f"{v['stages_ms'][s]:.1f}" if s in v["stages_ms"] else "" for s in stages]
                          for name, v in r["variants"].items()])
    sp = ", ".join(f"{k} {x:.2f}x" for k, x in r["speedup_vs_sift_by_resolution"].items())
    la = r["machine"]
    lines.append(f"\nspeed-up of learned (ONNX Runtime CPU) over SIFT, end-to-end p50: {sp}; load average "
                 f"{la['loadavg_before'][0]:.1f} -> {la['loadavg_after'][0]:.1f} on {la['cpus']} CPUs")
    return "\n".join(lines)


# -----------------------------------------------------------------------------------------------------------------
# scaling
# -----------------------------------------------------------------------------------------------------------------
def _augment(img: np.ndarray, i: int) -> np.ndarray:
    """The i-th photometric / geometric variant of an image (same size)."""
    H, W = img.shape[:2]
    if i == 0:
        return img
    if i == 1:
        return np.ascontiguousarray(img[:, ::-1])
    if i == 2:
        return cv2.convertScaleAbs(img, alpha=0.6, beta=10)
    if i == 3:
        return cv2.GaussianBlur(img, (7, 7), 2.0)
    if i == 4:
        return cv2.resize(img[H // 8:H - H // 8, W // 8:W - W // 8], (W, H), interpolation=cv2.INTER_LINEAR)
    if i == 5:
        return cv2.warpAffine(img, cv2.getRotationMatrix2D((W / 2, H / 2), 8.0, 1.0), (W, H),
                              borderMode=cv2.BORDER_REFLECT)
    return cv2.convertScaleAbs(img, alpha=1.3, beta=-20)


N_AUGMENT = 7


def _global_pool(frames, extractor, n_aug: int) -> np.ndarray:
    from reloc_ros.datasets import load_image

    g = []
    for f in frames:
        img = load_image(f)
        for i in range(n_aug):
            g.append(extractor.extract(_augment(img, i)).global_desc)
    return np.stack(g).astype(np.float32)


def _synth_db(pool: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.35) -> np.ndarray:
    """``[n x G]`` unit descriptors: convex mixtures of two real descriptors plus a perturbation of relative
    size ``noise`` (against the spread of the real pool), renormalised."""
    G = pool.shape[1]
    spread = float(np.sqrt(np.mean(np.sum((pool - pool.mean(0)) ** 2, axis=1)) / G))
    out = np.empty((n, G), np.float32)
    for s in range(0, n, 65536):
        m = min(n, s + 65536) - s
        a, b = rng.integers(0, len(pool), m), rng.integers(0, len(pool), m)
        w = rng.uniform(0.5, 1.0, (m, 1)).astype(np.float32)
        x = w * pool[a] + (1 - w) * pool[b] + rng.normal(0, noise * spread, (m, G)).astype(np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _retrieval_scaling(pool_map: np.ndarray, pool_query: np.ndarray, sizes, n_queries: int, seed: int,
                       progress: bool) -> list[dict]:
    import faiss

    from reloc_ros.core.retrieval import build_index, resolve_index_kind

    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        X = _synth_db(pool_map, n, rng)
        Q = _synth_db(pool_query, n_queries, rng, noise=0.2)
        exact = None
        for kind in ("flat", "ivf", "hnsw"):
            if progress:
                print(f"  retrieval: {n} keyframes, {kind}")
            t0 = time.perf_counter()
            index = build_index(X, kind)
            build_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as td:
                faiss.write_index(index, str(Path(td) / "i.faiss"))
                mem = (Path(td) / "i.faiss").stat().st_size
            ids, ts = [], []
            for q in Q:
                t1 = time.perf_counter()
                _, I = index.search(q[None], 10)
                ts.append(_ms(t1))
                ids.append(I[0])
            ids = np.stack(ids)
            if kind == "flat":
                exact = ids
            recall = float(np.mean([len(set(a) & set(b)) / 10.0 for a, b in zip(ids, exact)]))
            rows.append({"keyframes": n, "index": kind, "auto": resolve_index_kind("auto", n) == kind,
                         "build_s": build_s, "search_ms_p50": float(np.median(ts)),
                         "search_ms_p95": float(np.percentile(ts, 95)), "index_mb": mem / 2**20,
                         "recall_at_10": recall})
            del index
        del X
    return rows


def _rss_mb() -> float:
    """Resident set size of this process now (``VmRSS``), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _map_load_child(path: str, conn) -> None:
    """Runs in a spawned process: load a map and set up a localizer, as the node does at start-up; report times
    and memory: the peak RSS (``ru_maxrss``) after the load and after the set-up, and the RSS the process keeps
    holding the map and the localizer (what the node's memory is with this map, before any query)."""
    import gc

    from reloc_ros.core.localizer import Localizer, extractor_for_map
    from reloc_ros.core.mapdb import MapDatabase

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    db = MapDatabase.load(path)
    t_load = time.perf_counter() - t0
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ex = extractor_for_map(db)
    t1 = time.perf_counter()
    loc = Localizer(db, ex)
    t_setup = time.perf_counter() - t1
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gc.collect()
    conn.send({"load_s": t_load, "localizer_setup_s": t_setup, "peak_rss_mb": rss1 / 1024,
               "rss_growth_mb": (rss1 - rss0) / 1024, "peak_rss_after_load_mb": rss_load / 1024,
               "rss_with_localizer_mb": _rss_mb(), "descriptor_dtype": str(db.descriptors.dtype),
               "descriptor_store_mb": loc._kf_desc.nbytes / 2**20})
    conn.close()


def _write_big_map(src, n: int, kp: int, out: Path, seed: int) -> None:
    """A map of ``n`` keyframes made by tiling a real (loaded) map's keyframes (their ``kp`` strongest keypoints),
    each copy shifted so that the camera centres differ."""
    from reloc_ros.core.mapdb import Keyframe, MapDatabase

    rng = np.random.default_rng(seed)
    G = src.global_desc
    kfs = []
    for i in range(n):
        j = i % len(src)
        s = src.keyframe_slice(j)
        sel = slice(s.start, min(s.stop, s.start + kp))
        T = src.T_map_from_cam[j].copy()
        T[:3, 3] += np.array([20.0 * (i // len(src)), 0.0, 0.0])
        g = G[j] + rng.normal(0, 0.01, G.shape[1]).astype(np.float32)
        kfs.append(Keyframe(f"kf{i:07d}", T, src.cameras[j], src.keypoints[sel], src.descriptors[sel],
                            src.scores[sel], src.points3d[sel] + T[:3, 3] - src.T_map_from_cam[j][:3, 3],
                            src.point_source[sel], src.point_conf[sel], g / np.linalg.norm(g)))
    db = MapDatabase.from_keyframes(kfs, src.extractor_identity, src.extractor_state, {"command": "reloc bench"})
    db.save(out, overwrite=True, index_kind="auto", write_ply=False)


def _map_load_scaling(src_map: Path, sizes, kp: int, seed: int, progress: bool) -> list[dict]:
    import multiprocessing as mp

    from reloc_ros.core.mapdb import MapDatabase

    src = MapDatabase.load(src_map)  # once: every size tiles its keyframes
    rows = []
    ctx = mp.get_context("spawn")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="reloc_bench_map_") as td:
            out = Path(td) / "map"
            if progress:
                print(f"  map load: writing a {n}-keyframe map ({kp} keypoints each)")
            t0 = time.perf_counter()
            _write_big_map(src, n, kp, out, seed)
            write_s = time.perf_counter() - t0
            size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_map_load_child, args=(str(out), child))
            loadavg = os.getloadavg()  # the map was just written: its files are in the page cache (a warm load)
            proc.start()
            r = parent.recv()
            proc.join()
            rows.append({"keyframes": n, "keypoints_per_keyframe": kp, "disk_mb": size_mb, "write_s": write_s, **r,
                         "loadavg_before": loadavg})
    return rows


def _matching_scaling(db, extractor, queries, reps: int) -> list[dict]:
    """Query keypoints 500 ... 2000 against the top-5 keyframes of a real (loaded) learned map: reference vs
    batched (default block, and blocks of 256 rows and of all rows)."""
    from reloc_ros.core.localizer import Localizer
    from reloc_ros.core.matching import KeyframeMatcher, match_mutual_nn
    from reloc_ros.datasets import load_image

    loc = Localizer(db, extractor)
    best = None  # the query (of up to 5) whose best keyframe is most similar: a typical, well-matched query
    for f in queries[:: max(1, len(queries) // 5)]:
        feats = loc.extractor.extract(load_image(f))
        cand, sims = loc.index.search(feats.global_desc, 5)
        if best is None or sims[0] > best[2]:
            best = (feats, cand, sims[0])
    feats, cand, _ = best
    store = loc._kf_desc
    rows = []
    for n in (500, 1000, 1500, 2000):
        q = feats.descriptors[:n]
        t_ref, t_new, t_256, t_all = [], [], [], []
        m256, mall = KeyframeMatcher(store, block_rows=256), KeyframeMatcher(store, block_rows=len(q))
        for _ in range(reps):  # interleaved: a busy machine slows all variants alike
            t0 = time.perf_counter()
            ref = [match_mutual_nn(q, store.get(k)) for k in cand]
            t_ref.append(_ms(t0))
            for matcher, ts in ((loc._matcher, t_new), (m256, t_256), (mall, t_all)):
                t0 = time.perf_counter()
                new = matcher.match(q, cand)
                ts.append(_ms(t0))
        same = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(ref, new))
        rows.append({"query_keypoints": len(q), "keyframes": len(cand),
                     "map_keypoints": int(sum(store.count(k) for k in cand)),
                     "reference_ms_p50": float(np.median(t_ref)), "batched_ms_p50": float(np.median(t_new)),
                     "batched_block256_ms_p50": float(np.median(t_256)),
                     "batched_one_block_ms_p50": float(np.median(t_all)),
                     "matches": int(sum(len(m) for m, _ in new)), "identical": bool(same)})
    return rows


def run_scaling_bench(work: Path, cfg: BenchConfig, progress: bool = True) -> dict:
    from reloc_ros.core.localizer import extractor_for_map
    from reloc_ros.core.mapdb import MapDatabase

    full = cfg.resolutions[0]
    prep = prepare(work, cfg, extractors=("learned",), resolutions=[full], progress=progress)
    map_l = prep["maps"][("learned", f"{full[0]}x{full[1]}")]
    db = MapDatabase.load(map_l)
    ex = extractor_for_map(db)
    n_aug = 3 if cfg.quick else N_AUGMENT
    if progress:
        print(f"global descriptors of {len(prep['map_frames']) + len(prep['queries'])} frames x {n_aug} variants")
    pool_path = work / f"global_pool_{n_aug}.npz"  # cached with the scene: extraction is the slow part here
    if pool_path.is_file() and not prep["fresh"]:
        with np.load(pool_path) as z:
            pool_map, pool_query = z["map"], z["query"]
    else:
        pool_map = _global_pool(prep["map_frames"], ex, n_aug)
        pool_query = _global_pool(prep["queries"], ex, n_aug)
        np.savez(pool_path, map=pool_map, query=pool_query)
    sizes = [n for n in SCALING_SIZES if n <= cfg.scaling_max] or [cfg.scaling_max]
    load_before = os.getloadavg()
    retrieval = _retrieval_scaling(pool_map, pool_query, sizes, cfg.scaling_queries, cfg.seed, progress)
    load_sizes = [n for n in MAP_LOAD_SIZES if n <= cfg.scaling_max] or [min(MAP_LOAD_SIZES)]
    map_load = _map_load_scaling(map_l, load_sizes, cfg.map_load_kp, cfg.seed, progress)
    matching = _matching_scaling(db, ex, prep["queries"], 3 if cfg.quick else 10)
    return {"config": asdict(cfg), "global_pool": {"map": len(pool_map), "query": len(pool_query)},
            "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
            "retrieval": retrieval, "map_load": map_load, "matching": matching}


def format_scaling(r: dict) -> str:
    retrieval = _table(
        ["keyframes", "index", "auto", "build s", "search p50 ms", "p95 ms", "index MB", "recall@10"],
        [[f"{x['keyframes']}", x["index"], "*" if x["auto"] else "", f"{x['build_s']:.1f}",
          f"{x['search_ms_p50']:.3f}", f"{x['search_ms_p95']:.3f}", f"{x['index_mb']:.1f}",
          f"{x['recall_at_10']:.3f}"] for x in r["retrieval"]])
    map_load = _table(
        ["keyframes", "kp/keyframe", "disk MB", "load s", "localizer set-up s", "total s", "peak RSS MB",
         "RSS with localizer MB", "load avg"],
        [[f"{x['keyframes']}", f"{x['keypoints_per_keyframe']}", f"{x['disk_mb']:.0f}", f"{x['load_s']:.2f}",
          f"{x['localizer_setup_s']:.2f}", f"{x['load_s'] + x['localizer_setup_s']:.2f}", f"{x['peak_rss_mb']:.0f}",
          f"{x['rss_with_localizer_mb']:.0f}", f"{x['loadavg_before'][0]:.1f}"] for x in r["map_load"]])
    matching = _table(
        ["query kp", "keyframes", "map kp", "reference ms", "localizer's matcher ms (its defaults)",
         "256-row blocks, 1 thread", "one block, 1 thread", "matches", "identical"],
        [[f"{x['query_keypoints']}", f"{x['keyframes']}", f"{x['map_keypoints']}", f"{x['reference_ms_p50']:.1f}",
          f"{x['batched_ms_p50']:.1f}", f"{x['batched_block256_ms_p50']:.1f}", f"{x['batched_one_block_ms_p50']:.1f}",
          f"{x['matches']}", f"{x['identical']}"] for x in r["matching"]])
    return "\n".join(retrieval + [""] + map_load + [""] + matching)


# -----------------------------------------------------------------------------------------------------------------
def main(work: Path | None, json_path: Path | None, quick: bool = False, scaling: bool = False,
         scaling_max: int | None = None, progress: bool = True, int8: bool = False) -> dict:
    """Run the pipeline benchmark (or the scaling study), print the table, write JSON; returns the results."""
    cfg = BenchConfig.quick_config() if quick else BenchConfig()
    cfg.int8 = int8
    if scaling_max is not None:
        if scaling_max < 100:
            raise ValueError(f"--scaling-max must be >= 100, got {scaling_max}")
        cfg.scaling_max = int(scaling_max)
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="reloc_bench_")
        work = Path(tmp.name)
    try:
        if scaling:
            result = {"scaling": run_scaling_bench(Path(work), cfg, progress)}
            print(format_scaling(result["scaling"]))
        else:
            result = run_pipeline_bench(Path(work), cfg, progress)
            print(format_pipeline(result))
    finally:
        if tmp is not None:
            tmp.cleanup()
    if json_path is not None:
        from reloc_ros.pipelines.evaluate import write_json

        write_json(Path(json_path), result)
    return result
