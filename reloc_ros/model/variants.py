"""Model variants for the ablation (`reloc ablate`): fine-tuned from the shipped checkpoint, never shipped.

Usage::

    python -m reloc_ros.model.variants --config config/train_variants.yaml     # fine-tune all arms, then export

Arms (all trained in lockstep in one process, on the same batches, for the same wall-clock budget and steps;
the encoder and the local head stay exactly the shipped model's, so one encoder forward pass serves all arms):

* ``global_rgb``: the shipped global head fine-tuned further with the triplet loss (the control of 6).
* ``depth_aware_global`` (variant 6, Piasco et al., ICRA 2019, "Learning scene geometry for visual
  localization in challenging conditions"): the shipped global head plus a second small CNN that describes the
  *predicted* depth map (the shipped depth head's log-depth, frozen): 3 strided 3x3 convs -> GeM -> linear ->
  L2; the final descriptor concatenates the image descriptor (256) and ``gain`` x the depth descriptor (64)
  and is renormalised (320-d). Depth is needed only in training (here it is not needed at all: the input is the
  network's own prediction).
* ``depth_sparse`` / ``depth_sparse_dense`` (variant 7, the depth supervision of MicKey with Depth Anything,
  Jain and Verma 2024): a depth head re-initialised (same seed in both arms) and trained on
  - ``depth_sparse``: sparse depth only, what posed images give without a depth source: ``sparse_points``
    random pixels per image (at the head's 1/4 resolution) with their rendered depth times log-normal noise
    (``sparse_noise``, simulating triangulation error), i.e. *without* the extra supervision;
  - ``depth_sparse_dense``: the same sparse targets *plus* the dense rendered depth averaged to the head's
    resolution (the extra source, as MicKey adds an external depth model's patch-averaged depth).
  The depth head is re-initialised because the shipped one was already trained on dense depth: fine-tuning it
  "without" dense depth would not be without it.

Outputs (``out_dir``, git-ignored): ``<arm>.pt`` (weights only), ``log.jsonl``, ``summary.json`` (validation
retrieval recall and depth AbsRel per arm on the ``val_*`` scenes), and one ONNX per arm in ``onnx_dir``
(the shipped network with that arm's head swapped in), selectable with ``reloc map build --model`` /
``reloc ablate``. The variant-6 ONNX has a 320-d global descriptor (``global_dim`` metadata); the PyTorch
reference backend refuses it (its ``conf`` metadata names the extra branch).
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
import torch.nn as nn
import torch.nn.functional as F
import yaml

from reloc_ros.model.data import SceneSet, ensure_scenes, photometric
from reloc_ros.model.heads import DepthHead
from reloc_ros.model.losses import depth_loss, triplet_loss
from reloc_ros.model.network import RelocNet
from reloc_ros.model.train import (_depth_ratio_errors, _log, _merge, _negative_mask, _optimizer_step,
                                   _retrieval_hits, _sparse_target, _to_tensor)
from reloc_ros.model.weights import load_checkpoint

__all__ = ["ARMS", "DepthGlobalBranch", "DepthAwareRelocNet", "default_config", "load_config", "main",
           "build_arm_network", "onnx_name"]

ARMS = ("global_rgb", "depth_aware_global", "depth_sparse", "depth_sparse_dense")

default_config = {
    "seed": 0,
    "checkpoint": "models/checkpoints/relocnet/final.pt",  # starting point: the first stage of the shipped run
    #   (the published ablation variants were fine-tuned from it, before the depth and global-head stages)
    "out_dir": "models/checkpoints/variants",  # <arm>.pt, log.jsonl, summary.json
    "onnx_dir": "models/checkpoints/variants",  # relocnet_<arm>.onnx (never models/: not shipped)
    "threads": 1,  # torch CPU threads
    "arms": list(ARMS),  # which arms to train
    "minutes": 20.0,  # wall-clock budget of the fine-tuning loop (all arms together, lockstep)
    "max_steps": 100000,  # step cap (the budget usually ends first)
    "data": {
        "root": "models/checkpoints/synth",  # the shipped training run's rendered train_* / val_* scenes
        "train_scenes": 24,
        "val_scenes": 3,
        "n_map": 60,
        "n_query": 20,
        "stride": 10,
        "size_hw": [480, 640],  # the inference resolution (metric depth depends on the pixel scale)
        "photometric": 1.0,
    },
    "train": {
        "pairs": 4,  # anchor/positive pairs per batch (8 images)
        "pairs_per_scene": 2,
        "lr_global": 1e-4,  # global head (both global arms)
        "lr_branch": 1e-3,  # the depth-descriptor branch of variant 6
        "lr_depth": 1e-3,  # re-initialised depth heads of variant 7
        "weight_decay": 1e-4,
        "margin": 0.1,
        "negative_max_overlap": 0.02,
        "sparse_points": 500,  # simulated triangulated points per image (at 1/4 resolution: 160 x 120 cells)
        "sparse_noise": 0.02,  # log-normal sigma of their depth error
        "log_every": 20,
        "checkpoint_every": 100,
    },
    "branch": {"width": 64, "dim": 64, "gain": 0.5},  # variant 6's depth CNN: channels, output dim, initial gain
}


def load_config(path: str | Path | None) -> dict:
    """``default_config`` updated by a YAML file (unknown keys are an error listing the valid ones)."""
    cfg = _merge(default_config, (yaml.safe_load(Path(path).read_text()) if path else {}) or {})
    bad = [a for a in cfg["arms"] if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arms {bad}; valid: {list(ARMS)}")
    return cfg


# ----------------------------------------------------------------------------------------------------------
# variant 6: a global descriptor of the predicted depth map
# ----------------------------------------------------------------------------------------------------------
class DepthGlobalBranch(nn.Module):
    """Describe a predicted depth map: ``[B x 1 x h x w]`` log-depth -> ``[B x dim]`` unit-norm descriptor.

    Three strided 3x3 conv + BN + ReLU blocks (1/4 -> 1/32 of the image), GeM pooling (p = 3), linear, L2.
    The input is centred on log(3 m) (the depth head's initial value).
    """

    def __init__(self, width: int = 64, dim: int = 64):
        super().__init__()
        chans = [1, width // 4, width // 2, width]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.cnn = nn.Sequential(*layers)
        self.gem_p = nn.Parameter(torch.tensor(3.0))
        self.fc = nn.Linear(width, dim)

    def forward(self, log_depth: torch.Tensor) -> torch.Tensor:
        y = self.cnn(log_depth - math.log(3.0))
        p = self.gem_p.clamp(1.0, 8.0)
        pooled = y.clamp_min(1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
        return F.normalize(self.fc(pooled), dim=1)


def _depth_aware(g_image: torch.Tensor, gain: torch.Tensor, branch: DepthGlobalBranch,
                 log_depth: torch.Tensor) -> torch.Tensor:
    """Variant 6's descriptor ``L2([g_image, gain * branch(log_depth)])``."""
    return F.normalize(torch.cat([g_image, gain * branch(log_depth)], dim=1), dim=1)


class DepthAwareRelocNet(RelocNet):
    """RelocNet whose global descriptor is ``L2([g_image, gain * g_depth])`` (variant 6; 256 + ``dim`` d).

    The depth descriptor is computed from the network's own depth prediction; every other output is unchanged.
    """

    def __init__(self, conf: dict | None = None, branch: dict | None = None):
        super().__init__(conf)
        b = {**default_config["branch"], **(branch or {})}
        self.branch_conf = b
        self.depth_branch = DepthGlobalBranch(b["width"], b["dim"])
        self.gain = nn.Parameter(torch.tensor(float(b["gain"])))

    def combine(self, g_image: torch.Tensor, log_depth: torch.Tensor) -> torch.Tensor:
        return _depth_aware(g_image, self.gain, self.depth_branch, log_depth)

    def forward(self, image: torch.Tensor, heads: tuple[str, ...] = ("local", "global", "depth")) -> dict:
        want = tuple(heads) + (("depth",) if "global" in heads and "depth" not in heads else ())
        out = super().forward(image, want)
        if "global" in heads:
            out["global_descriptor"] = self.combine(out["global_descriptor"], out["log_depth"])
        return out

    @property
    def global_dim(self) -> int:
        return self.conf["global"]["dim"] + self.branch_conf["dim"]


# ----------------------------------------------------------------------------------------------------------
# building and exporting the arms
# ----------------------------------------------------------------------------------------------------------
def onnx_name(arm: str) -> str:
    return f"relocnet_{arm}.onnx"


def build_arm_network(base: RelocNet, arm: str, state: dict, branch: dict | None = None) -> RelocNet:
    """The shipped network with ``arm``'s trained head(s) (``state``: the arm's state dicts) swapped in."""
    if arm == "depth_aware_global":
        net = DepthAwareRelocNet(base.conf, branch)
        net.load_state_dict(base.state_dict(), strict=False)
        net.global_head.load_state_dict(state["global_head"], strict=True)
        net.depth_branch.load_state_dict(state["depth_branch"], strict=True)
        with torch.no_grad():
            net.gain.copy_(state["gain"])
        return net.eval()
    net = copy.deepcopy(base)
    if arm == "global_rgb":
        net.global_head.load_state_dict(state["global_head"], strict=True)
    elif arm in ("depth_sparse", "depth_sparse_dense"):
        net.depth_head.load_state_dict(state["depth_head"], strict=True)
    else:
        raise ValueError(f"unknown arm {arm!r}; valid: {list(ARMS)}")
    return net.eval()


def export_arm(net: RelocNet, arm: str, out: Path, extra: dict) -> Path:
    """ONNX of an arm's network with metadata naming the variant (and, for variant 6, its 320-d descriptor)."""
    from reloc_ros.model.export import check_parity, export_onnx, model_metadata

    meta = model_metadata(net, {"variant": arm, "variant_note": "ablation variant, not shipped", **extra})
    if isinstance(net, DepthAwareRelocNet):
        meta["global_dim"] = str(net.global_dim)
        # RelocNet(conf) rejects the unknown key: the PyTorch reference backend cannot silently drop the branch.
        meta["conf"] = json.dumps({**net.conf, "depth_aware_global": net.branch_conf}, sort_keys=True)
    export_onnx(net, out, meta)
    worst = check_parity(net, out)
    if max(worst.values()) > 1e-3:
        raise RuntimeError(f"{out}: PyTorch / ONNX Runtime disagree: {worst}")
    return out


# ----------------------------------------------------------------------------------------------------------
# fine-tuning (all arms in lockstep)
# ----------------------------------------------------------------------------------------------------------
class _Arms(nn.Module):
    """The trainable parts of every arm (the shipped encoder, local head and depth head stay frozen)."""

    def __init__(self, base: RelocNet, arms: list[str], branch: dict, seed: int):
        super().__init__()
        self.names = list(arms)
        if "global_rgb" in arms:
            self.global_rgb = copy.deepcopy(base.global_head)
        if "depth_aware_global" in arms:
            self.global_da = copy.deepcopy(base.global_head)
            torch.manual_seed(seed)
            self.branch = DepthGlobalBranch(branch["width"], branch["dim"])
            self.gain = nn.Parameter(torch.tensor(float(branch["gain"])))
        d = base.conf["depth"]
        for arm in ("depth_sparse", "depth_sparse_dense"):
            if arm in arms:
                torch.manual_seed(seed)  # identical initialisation in both arms
                setattr(self, arm, DepthHead(width=d["width"], min_depth=d["min_depth"], max_depth=d["max_depth"],
                                             init_depth=d["init_depth"]))

    def state_of(self, arm: str) -> dict:
        if arm == "global_rgb":
            return {"global_head": self.global_rgb.state_dict()}
        if arm == "depth_aware_global":
            return {"global_head": self.global_da.state_dict(), "depth_branch": self.branch.state_dict(),
                    "gain": self.gain.detach().clone()}
        return {"depth_head": getattr(self, arm).state_dict()}


@torch.no_grad()
def _validate(base: RelocNet, arms: _Arms, val: SceneSet, min_overlap: float = 0.2) -> dict:
    """Retrieval recall@1/@5 (query runs vs mapping run) per global arm and depth AbsRel / delta<1.25 per
    depth arm, with the shipped network's figures as ``shipped``."""
    base.eval()
    arms.eval()
    g_names = ["shipped"] + [a for a in ("global_rgb", "depth_aware_global") if a in arms.names]
    d_names = ["shipped"] + [a for a in ("depth_sparse", "depth_sparse_dense") if a in arms.names]
    hits = {n: [0, 0] for n in g_names}
    rel = {n: [] for n in d_names}
    d125 = {n: [] for n in d_names}
    n_q = 0
    for sc in val.scenes:
        G = {n: [] for n in g_names}
        D = {n: [] for n in d_names}
        for i in range(0, len(sc), 8):
            x = _to_tensor([g.astype(np.float32) / 255.0 for g in sc.grey[i:i + 8]], "cpu")
            pyr = base.backbone(x)
            desc = base.local(pyr["x"], pyr["f8"])["descriptors"]
            dep = base.depth_head(pyr)
            G["shipped"].append(base.global_head(desc)["global_descriptor"])
            D["shipped"].append(dep["depth"][:, 0])
            if "global_rgb" in arms.names:
                G["global_rgb"].append(arms.global_rgb(desc)["global_descriptor"])
            if "depth_aware_global" in arms.names:
                G["depth_aware_global"].append(_depth_aware(arms.global_da(desc)["global_descriptor"], arms.gain,
                                                            arms.branch, dep["log_depth"]))
            for a in d_names[1:]:
                D[a].append(getattr(arms, a)(pyr)["depth"][:, 0])
        for n in d_names:
            e_rel, e_d125 = _depth_ratio_errors(torch.cat(D[n]).numpy(), sc.depth)
            rel[n].append(e_rel)
            d125[n].append(e_d125)
        for n in g_names:  # the same figures as reloc_ros.model.train.evaluate
            h1, h5, nq = _retrieval_hits(sc, torch.cat(G[n]).numpy(), min_overlap)
            hits[n][0] += h1
            hits[n][1] += h5
        n_q += nq
    out = {}
    for n in g_names:
        out.setdefault(n, {}).update({"val_recall@1": hits[n][0] / max(n_q, 1), "val_recall@5": hits[n][1] / max(n_q, 1)})
    for n in d_names:
        out.setdefault(n, {}).update({"val_depth_absrel": float(np.concatenate(rel[n]).mean()),
                                      "val_depth_d1.25": float(np.concatenate(d125[n]).mean())})
    return out


def main(config_path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Fine-tune the configured arms for ``minutes``, validate, export one ONNX per arm; returns the summary."""

    cfg = _merge(load_config(config_path), overrides or {})
    out_dir, onnx_dir = Path(cfg["out_dir"]), Path(cfg["onnx_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(cfg["threads"]))
    seed, dc, tc = int(cfg["seed"]), cfg["data"], cfg["train"]
    t0 = time.perf_counter()
    root = Path(dc["root"])
    train = SceneSet(ensure_scenes(root, [f"train_{i:03d}" for i in range(dc["train_scenes"])], dc["n_map"],
                                   dc["n_query"], dc["stride"], seed), tuple(dc["size_hw"]))
    val = SceneSet(ensure_scenes(root, [f"val_{i:03d}" for i in range(dc["val_scenes"])], dc["n_map"],
                                 dc["n_query"], dc["stride"], seed + 1000), tuple(dc["size_hw"]))
    _log(out_dir, {"event": "data", "train_frames": len(train), "val_frames": len(val),
                   "seconds": round(time.perf_counter() - t0, 1)})

    base, _ = load_checkpoint(Path(cfg["checkpoint"]))
    base.eval().requires_grad_(False)
    arms = _Arms(base, cfg["arms"], cfg["branch"], seed)
    groups = []
    if "global_rgb" in arms.names:
        groups.append({"params": list(arms.global_rgb.parameters()), "lr": tc["lr_global"]})
    if "depth_aware_global" in arms.names:
        groups.append({"params": list(arms.global_da.parameters()), "lr": tc["lr_global"]})
        groups.append({"params": list(arms.branch.parameters()) + [arms.gain], "lr": tc["lr_branch"]})
    for a in ("depth_sparse", "depth_sparse_dense"):
        if a in arms.names:
            groups.append({"params": list(getattr(arms, a).parameters()), "lr": tc["lr_depth"]})
    opt = torch.optim.AdamW(groups, weight_decay=tc["weight_decay"])
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]

    budget_s = float(cfg["minutes"]) * 60.0
    t_train = time.perf_counter()
    step, acc, t_last = 0, {}, time.perf_counter()
    while step < int(cfg["max_steps"]):
        frac = (time.perf_counter() - t_train) / budget_s
        if frac >= 1.0:
            break
        for g in opt.param_groups:  # cosine decay to 10 % over the wall-clock budget
            g["lr"] = g["base_lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        rng = np.random.default_rng([seed, step])
        arms.train()
        pairs = train.sample_pairs(rng, tc["pairs"], tc["pairs_per_scene"])
        items = [(s, a) for s, a, _ in pairs] + [(s, p) for s, _, p in pairs]
        P = len(pairs)
        positive_of = torch.tensor(list(range(P, 2 * P)) + list(range(P)))
        neg = _negative_mask(items, train, tc["negative_max_overlap"])
        x = _to_tensor([photometric(train.scenes[s].grey[f], rng, dc["photometric"]) for s, f in items], "cpu")
        dense = np.stack([train.scenes[s].depth[f] for s, f in items])
        sparse = torch.from_numpy(_sparse_target(dense, tc["sparse_points"], rng, tc["sparse_noise"]))[:, None]
        dense = torch.from_numpy(dense)[:, None]
        with torch.no_grad():
            pyr = base.backbone(x)
            desc = base.local(pyr["x"], pyr["f8"])["descriptors"]
            log_depth = base.depth_head(pyr)["log_depth"] if "depth_aware_global" in arms.names else None
        loss, stats = 0.0, {}
        if "global_rgb" in arms.names:
            lg, sg = triplet_loss(arms.global_rgb(desc)["global_descriptor"], positive_of, neg, tc["margin"])
            loss = loss + lg
            stats.update({"rgb_triplet": float(lg.detach()), "rgb_pos": sg["pos_sim"], "rgb_neg": sg["neg_sim"]})
        if "depth_aware_global" in arms.names:
            g = _depth_aware(arms.global_da(desc)["global_descriptor"], arms.gain, arms.branch, log_depth)
            lg, sg = triplet_loss(g, positive_of, neg, tc["margin"])
            loss = loss + lg
            stats.update({"da_triplet": float(lg.detach()), "da_pos": sg["pos_sim"], "da_neg": sg["neg_sim"],
                          "da_gain": float(arms.gain.detach())})
        for a in ("depth_sparse", "depth_sparse_dense"):
            if a not in arms.names:
                continue
            out = getattr(arms, a)(pyr)
            ld, sd = depth_loss(out["log_depth"], out["depth_confidence"], sparse)
            if a == "depth_sparse_dense":
                ld2, sd2 = depth_loss(out["log_depth"], out["depth_confidence"], dense)
                ld = ld + ld2
                sd = sd2  # report the dense AbsRel of the batch
            else:
                with torch.no_grad():
                    _, sd = depth_loss(out["log_depth"], out["depth_confidence"], dense)
            loss = loss + ld
            stats.update({f"{a}_loss": float(ld.detach()), f"{a}_absrel": sd["abs_rel"]})
        _optimizer_step(opt, loss, arms.parameters())
        step += 1
        for k, v in stats.items():
            acc.setdefault(k, []).append(v)
        if step % tc["log_every"] == 0:
            now = time.perf_counter()
            rec = {"step": step, "s_per_step": round((now - t_last) / tc["log_every"], 3),
                   "elapsed_min": round((now - t_train) / 60, 1)}
            rec.update({k: round(float(np.mean(v)), 4) for k, v in acc.items()})
            _log(out_dir, rec)
            acc, t_last = {}, now
        if step % tc["checkpoint_every"] == 0:
            _save_arms(out_dir, arms, step, cfg)
    minutes = (time.perf_counter() - t_train) / 60.0
    _save_arms(out_dir, arms, step, cfg)
    metrics = _validate(base, arms, val)
    summary = {"event": "done", "steps": step, "train_minutes": round(minutes, 1), "threads": cfg["threads"],
               "validation": metrics, "onnx": {}}
    for arm in arms.names:
        net = build_arm_network(base, arm, arms.state_of(arm), cfg["branch"])
        path = export_arm(net, arm, onnx_dir / onnx_name(arm),
                          {"train_steps": step, "train_minutes": round(minutes, 1),
                           "train_from": str(cfg["checkpoint"])})
        summary["onnx"][arm] = str(path)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    _log(out_dir, summary)
    return summary


def _save_arms(out_dir: Path, arms: _Arms, step: int, cfg: dict) -> None:
    for arm in arms.names:
        tmp = out_dir / f"{arm}.pt.tmp"
        torch.save({"arm": arm, "step": int(step), "state": arms.state_of(arm),
                    "config": json.dumps(cfg, sort_keys=True)}, tmp)
        tmp.replace(out_dir / f"{arm}.pt")


def export_from_checkpoints(config_path: str | Path | None = None) -> dict:
    """Export the ONNX files from saved ``<arm>.pt`` files (e.g. after an interrupted run)."""
    cfg = load_config(config_path)
    base, _ = load_checkpoint(Path(cfg["checkpoint"]))
    out = {}
    for arm in cfg["arms"]:
        ck = torch.load(Path(cfg["out_dir"]) / f"{arm}.pt", map_location="cpu", weights_only=True)
        net = build_arm_network(base.eval(), arm, ck["state"], cfg["branch"])
        out[arm] = str(export_arm(net, arm, Path(cfg["onnx_dir"]) / onnx_name(arm), {"train_steps": ck["step"]}))
    return out


def _cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fine-tune and export the ablation's model variants")
    ap.add_argument("--config", type=Path, default=None, help="YAML overrides of default_config")
    ap.add_argument("--export-only", action="store_true", help="export ONNX files from saved <arm>.pt files")
    args = ap.parse_args(argv)
    if args.export_only:
        print(json.dumps(export_from_checkpoints(args.config), indent=2))
    else:
        main(args.config)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
