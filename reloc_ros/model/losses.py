"""Training losses: global triplet loss, depth losses (dense or sparse targets), local-head distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["triplet_loss", "depth_loss", "distillation_loss"]


def triplet_loss(desc_BD: torch.Tensor, positive_of: torch.Tensor, negative_mask_BB: torch.Tensor,
                 margin: float = 0.1) -> tuple[torch.Tensor, dict]:
    """Batch-hard triplet loss on cosine similarity: ``relu(margin - s(a, p) + max_n s(a, n))``.

    Args:
        desc_BD: ``[B x D]`` unit-norm global descriptors of all images in the batch.
        positive_of: ``[B]`` index of each image's positive (-1: not an anchor).
        negative_mask_BB: ``[B x B]`` bool, True where image j is a valid negative for image i
            (another scene, or the same scene without frustum overlap).

    Returns:
        (loss, stats) with ``stats`` = {"triplet_active": fraction of violated triplets, "pos_sim", "neg_sim"}.
    """
    sim = desc_BD @ desc_BD.t()
    anchors = torch.nonzero(positive_of >= 0).flatten()
    anchors = anchors[negative_mask_BB[anchors].any(1)]
    if len(anchors) == 0:
        zero = desc_BD.sum() * 0
        return zero, {"triplet_active": 0.0, "pos_sim": 0.0, "neg_sim": 0.0}
    s_pos = sim[anchors, positive_of[anchors]]
    s_neg = sim[anchors].masked_fill(~negative_mask_BB[anchors], -2.0).amax(1)
    viol = F.relu(margin - s_pos + s_neg)
    stats = {"triplet_active": float((viol.detach() > 0).float().mean()), "pos_sim": float(s_pos.detach().mean()),
             "neg_sim": float(s_neg.detach().mean())}
    return viol.mean(), stats


def depth_loss(log_depth_pred: torch.Tensor, conf_pred: torch.Tensor, depth_gt: torch.Tensor,
               si_weight: float = 1.0, l1_weight: float = 1.0, conf_weight: float = 0.1, si_lambda: float = 0.85,
               conf_tol: float = 0.1) -> tuple[torch.Tensor, dict]:
    """Scale-invariant log loss + metric L1 (on log depth) + confidence BCE, on valid (> 0) target pixels.

    Works for dense targets (rendered / sensor depth) and sparse ones (triangulated points splatted with
    :func:`reloc_ros.model.data.splat_sparse_depth`): only pixels with a target count.

    Args:
        log_depth_pred, conf_pred: ``[B x 1 x h x w]`` predicted log-depth and confidence in (0, 1).
        depth_gt: ``[B x 1 x h x w]`` target depth in metres, 0 where unknown.
        conf_tol: the confidence target is 1 where ``|log pred - log gt| < conf_tol`` (about 10 %), else 0.

    Returns:
        (loss, stats) with stats "si", "l1_log", "abs_rel", "conf_bce", "valid".
    """
    valid = depth_gt > 0
    n_img = valid.flatten(1).sum(1)
    if int(n_img.sum()) == 0:
        zero = log_depth_pred.sum() * 0
        return zero, {"si": 0.0, "l1_log": 0.0, "abs_rel": 0.0, "conf_bce": 0.0, "valid": 0.0}
    diff = torch.where(valid, log_depth_pred - torch.log(depth_gt.clamp_min(1e-6)), torch.zeros_like(depth_gt))
    n = n_img.clamp_min(1).float()
    mean = diff.flatten(1).sum(1) / n
    mean_sq = (diff ** 2).flatten(1).sum(1) / n
    has = n_img > 0
    si = (mean_sq - si_lambda * mean ** 2)[has].clamp_min(0).mean()
    l1 = diff.abs()[valid].mean()
    target = (diff.abs() < conf_tol).float().detach()
    conf = conf_pred.clamp(1e-4, 1 - 1e-4)
    bce = F.binary_cross_entropy(conf[valid], target[valid])
    loss = si_weight * si + l1_weight * l1 + conf_weight * bce
    with torch.no_grad():
        abs_rel = (torch.exp(diff.abs()[valid]) - 1).mean()
    return loss, {"si": float(si.detach()), "l1_log": float(l1.detach()), "abs_rel": float(abs_rel),
                  "conf_bce": float(bce.detach()), "valid": float(valid.float().mean())}


def distillation_loss(student: dict, teacher: dict, kp_weight: float = 1.0, desc_weight: float = 1.0,
                      rel_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Keep the local head close to XFeat (the teacher): KL of the 65-way keypoint distributions,
    1 - cosine of the descriptors, L1 of the reliability maps. All maps at 1/8 resolution."""
    t_logp = F.log_softmax(teacher["keypoint_logits"], dim=1)
    s_logp = F.log_softmax(student["keypoint_logits"], dim=1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(1).mean()
    cos = 1 - (student["descriptors"] * teacher["descriptors"]).sum(1).mean()
    rel = (student["reliability"] - teacher["reliability"]).abs().mean()
    loss = kp_weight * kl + desc_weight * cos + rel_weight * rel
    return loss, {"kd_kl": float(kl.detach()), "kd_cos": float(cos.detach()), "kd_rel": float(rel.detach())}
