"""Global-head stage with mined hard negatives: ``reloc train --config config/train_relocnet_global.yaml``.

The first training run (``train.py``) draws triplets at random: a batch of 8 images rarely holds two views of one
corridor that look alike but see different walls, so the head never learns to tell them apart, and retrieval in
repeated structure returns the look-alike (docs/RESULTS.md, "Odometry prior and repeated structure"). This
stage continues from a finished checkpoint and trains the global head alone on *mined* negatives:

* The encoder and local head are frozen, so the global head's input (the dense 64-d descriptors at 1/8) is
  computed once per training frame and kept in memory (float16, 0.6 MB per 640 x 480 frame); a step then costs
  only the head.
* Every ``refresh`` steps the descriptors of all frames are recomputed with the current head and, per frame, the
  most similar frames that must *not* be retrieved are listed: same scene without frustum overlap (look-alikes),
  and other scenes.
* A step takes ``anchors`` frames, a positive each (frustum overlap 0.3-0.95, any run or lighting) and one mined
  negative each (same scene with probability ``same_scene_fraction``), and applies the batch-hard triplet loss of
  ``train.py`` (margin on cosine similarity) to the whole batch.

Only ``global_head.*`` weights change: keypoints, local descriptors and depth stay bit-identical to the
input checkpoint (checked at the end). Resumable from ``out_dir/last.pt`` (batches depend on (seed, step)).
Validation as in ``train.py`` (retrieval recall on the val scenes) before and after.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from reloc_ros.model.data import SceneSet
from reloc_ros.model.losses import triplet_loss
from reloc_ros.model.weights import load_checkpoint, save_checkpoint

__all__ = ["default_config", "main", "mine_negatives"]

default_config = {
    "stage": "global_hard_negatives",
    "seed": 0,
    "init_checkpoint": "models/checkpoints/relocnet_depth/final.pt",  # the finished network to continue from
    "out_dir": "models/checkpoints/relocnet_global",
    "threads": 2,
    "device": "auto",
    "data": {
        "root": "models/checkpoints/synth",  # the training scenes of train.py (rendered there if missing)
        "train_scenes": 24,
        "val_scenes": 3,
        "n_map": 60,
        "n_query": 20,
        "stride": 10,
        "size_hw": [480, 640],
        "render_workers": 1,
    },
    "train": {
        "steps": 600,
        "anchors": 12,  # anchors per step; the batch holds anchors + positives + mined negatives
        "lr": 1e-4,  # AdamW, cosine decay to 10 %
        "weight_decay": 1e-4,
        "margin": 0.1,
        "refresh": 100,  # re-mine the negatives every this many steps
        "mined": 5,  # the negative is drawn from this many most similar wrong frames
        "same_scene_fraction": 0.5,  # probability that an anchor's negative comes from its own scene
        "negative_max_overlap": 0.02,  # same-scene frames overlapping less than this are negatives
        "positive_overlap": [0.3, 0.95],
        "log_every": 50,
        "checkpoint_every": 100,
    },
}


@torch.no_grad()
def _descriptor_maps(net, data: SceneSet, device, batch: int = 8) -> list[torch.Tensor]:
    """Per scene, the frozen local descriptors ``[F x 64 x H/8 x W/8]`` (float16, CPU) of all its frames."""
    net.eval()
    out = []
    for sc in data.scenes:
        maps = []
        for i in range(0, len(sc), batch):
            x = torch.from_numpy(sc.grey[i:i + batch][:, None].astype(np.float32) / 255.0).to(device)
            maps.append(net(x, heads=("local",))["descriptors"].half().cpu())
        out.append(torch.cat(maps))
    return out


@torch.no_grad()
def _global(head, maps: list[torch.Tensor], device, batch: int = 32) -> list[np.ndarray]:
    was = head.training
    head.eval()
    out = [torch.cat([head(m[i:i + batch].float().to(device))["global_descriptor"].cpu()
                      for i in range(0, len(m), batch)]).numpy() for m in maps]
    head.train(was)
    return out


def _symmetric(ov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(ov, ov.T), np.minimum(ov, ov.T)


def mine_negatives(G: list[np.ndarray], overlaps: list[np.ndarray], n: int, max_overlap: float):
    """Per scene ``s`` and frame ``f``: the ``n`` most similar same-scene frames that overlap ``f`` by less than
    ``max_overlap`` (``same[s][f]``, -1 where there are fewer) and the ``n`` most similar frames of other scenes
    (``other[s][f]``: global frame numbers over all scenes)."""
    sizes = np.array([len(g) for g in G])
    start = np.concatenate([[0], np.cumsum(sizes)])
    allG = np.concatenate(G)
    same, other = [], []
    for s, g in enumerate(G):
        ovmax, _ = _symmetric(overlaps[s])
        S = g @ g.T
        bad = ovmax >= max_overlap
        np.fill_diagonal(bad, True)
        S[bad] = -np.inf
        top = np.argsort(-S, axis=1, kind="stable")[:, :n]
        top[np.take_along_axis(S, top, 1) == -np.inf] = -1
        same.append(top)
        So = g @ allG.T
        So[:, start[s]:start[s + 1]] = -np.inf
        other.append(np.argsort(-So, axis=1, kind="stable")[:, :n])
    return same, other, start


def _batch(rng, data: SceneSet, same, other, start, tc) -> list[tuple[int, int]]:
    """anchors + positives + negatives as (scene, frame)."""
    anchors, positives, negatives = [], [], []
    lo, hi = tc["positive_overlap"]
    owner = np.repeat(np.arange(len(data.scenes)), np.diff(start))
    for _ in range(1000 * int(tc["anchors"])):
        if len(anchors) == tc["anchors"]:
            break
        s = int(rng.integers(len(data.scenes)))
        _, ovmin = _symmetric(data.scenes[s].overlap)
        a = int(rng.integers(len(data.scenes[s])))
        cand = np.flatnonzero((ovmin[a] >= lo) & (ovmin[a] <= hi))
        cand = cand[cand != a]
        if not len(cand):
            continue
        anchors.append((s, a))
        positives.append((s, int(rng.choice(cand))))
        mined_same = same[s][a][same[s][a] >= 0]
        if len(mined_same) and rng.random() < tc["same_scene_fraction"]:
            negatives.append((s, int(rng.choice(mined_same))))
        else:
            j = int(rng.choice(other[s][a]))
            negatives.append((int(owner[j]), j - int(start[owner[j]])))
    if len(anchors) < tc["anchors"]:
        raise ValueError(f"found only {len(anchors)} of {tc['anchors']} anchors with a positive (frustum overlap "
                         f"{lo}-{hi}) in 1000 tries each: render denser runs (data.stride) or widen "
                         "train.positive_overlap")
    return anchors + positives + negatives


def main(cfg: dict) -> Path:
    """Run the stage as configured (``cfg``: ``default_config`` merged with the YAML); returns ``final.pt``."""
    from reloc_ros.model.train import _log, _negative_mask, evaluate, load_scenes, prepare_run, resume

    out_dir, device = prepare_run(cfg)
    seed, dc, tc = int(cfg["seed"]), cfg["data"], cfg["train"]
    t0 = time.perf_counter()
    train, val = load_scenes(dc, seed)

    net, ckpt, step = resume(out_dir)
    if net is None:
        net, _ = load_checkpoint(cfg["init_checkpoint"])
    net = net.to(device).requires_grad_(False)
    head = net.global_head.requires_grad_(True)
    maps = _descriptor_maps(net, train, device)
    _log(out_dir, {"event": "data", "train_frames": len(train), "val_frames": len(val),
                   "seconds": round(time.perf_counter() - t0, 1)})
    if ckpt is None:
        _log(out_dir, {"event": "init", "checkpoint": str(cfg["init_checkpoint"]), **evaluate(net, val, device)})

    opt = torch.optim.AdamW(head.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    if ckpt is not None and ckpt.get("optimizer"):
        opt.load_state_dict(ckpt["optimizer"])
    steps = int(tc["steps"])
    overlaps = [sc.overlap for sc in train.scenes]
    mined, acc = None, {}
    head.train()
    while step < steps:
        if mined is None or step % tc["refresh"] == 0:
            mined = mine_negatives(_global(head, maps, device), overlaps, int(tc["mined"]),
                                   tc["negative_max_overlap"])
        rng = np.random.default_rng([seed, step])
        for g in opt.param_groups:  # cosine decay to 10 %
            g["lr"] = tc["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        items = _batch(rng, train, *mined, tc)
        A = int(tc["anchors"])
        positive_of = torch.tensor(list(range(A, 2 * A)) + list(range(A)) + [-1] * A, device=device)
        x = torch.stack([maps[s][f] for s, f in items]).float().to(device)
        loss, stats = triplet_loss(head(x)["global_descriptor"], positive_of,
                                   _negative_mask(items, train, tc["negative_max_overlap"]).to(device),
                                   tc["margin"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
        opt.step()
        step += 1
        for k, v in {"loss": float(loss.detach()), **stats}.items():
            acc.setdefault(k, []).append(v)
        if step % tc["log_every"] == 0 or step == steps:
            _log(out_dir, {"step": step, "lr": opt.param_groups[0]["lr"],
                           "elapsed_min": round((time.perf_counter() - t0) / 60, 1),
                           **{k: round(float(np.mean(v)), 4) for k, v in acc.items()}})
            acc = {}
        if step % tc["checkpoint_every"] == 0 or step == steps:
            save_checkpoint(out_dir / "last.pt", net, opt, step, {"config": json.dumps(cfg, sort_keys=True)})
    # everything but the global head must be the input checkpoint's, bit for bit (a fresh copy: ``net`` may be
    # the very object loaded from it)
    ref = load_checkpoint(cfg["init_checkpoint"])[0].state_dict()
    changed = [k for k, v in net.state_dict().items()
               if not k.startswith("global_head.") and not torch.equal(v.cpu(), ref[k])]
    if changed:
        raise RuntimeError(f"weights outside the global head changed: {changed[:5]}")
    metrics = evaluate(net, val, device)
    final = out_dir / "final.pt"
    save_checkpoint(final, net, None, step, {"config": json.dumps(cfg, sort_keys=True), **metrics})
    _log(out_dir, {"event": "done", "step": step, "checkpoint": str(final),
                   "minutes": round((time.perf_counter() - t0) / 60, 1), **metrics})
    return final
