"""Offline replay: every image of a bag through the Localizer in this process, as fast as it goes."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from reloc_ros.core.degrade import degrade
from reloc_ros.core.localizer import Localizer, LocalizerConfig
from reloc_ros.datasets.base import DatasetError
from reloc_ros.datasets.rosbag import BagTopics, iter_bag_images, read_ground_truth
from reloc_ros.progress import progress_bar
from reloc_ros.replay.run import ReplayRun, frame_record

log = logging.getLogger(__name__)

__all__ = ["replay_offline"]


def replay_offline(map_path: Path, bag: Path, topics: BagTopics = BagTopics(),
                   config: LocalizerConfig = LocalizerConfig(), every: int = 1,
                   show_progress: bool = True, model: Path | None = None,
                   degradation: dict | None = None) -> ReplayRun:
    """Localize every ``every``-th image of ``bag`` against ``map_path`` (no pose prior: each image on its own);
    ``model``: the learned map's ONNX file when it is not the shipped one; ``degradation``: {"presets", "seed"}
    applied to every image before it is localized (core/degrade.py, seeded per image by its index).

    Ground truth is interpolated at each image stamp; images without ground truth are skipped and counted.

    Raises:
        DatasetError: unusable bag (missing topics, no camera_info, no ground truth).
        MapError / ExtractorError: unusable map.
    """
    gt = read_ground_truth(bag, topics)
    loc = Localizer.from_map(map_path, config, **({"model_path": model} if model else {}))
    if mismatch := loc.low_light_mismatch():
        log.warning("reloc: warning: %s (--config)", mismatch)
    run = ReplayRun("offline", str(bag), str(map_path), gt=gt)
    no_gt = low_light = held = 0
    t0 = time.perf_counter()
    for item in progress_bar(iter_bag_images(bag, topics, gt=gt, every=every), "replay", show_progress):
        if item.T_world_from_cam is None:
            no_gt += 1
            continue
        image = item.image
        if degradation:
            image = degrade(image, tuple(degradation["presets"]), degradation["seed"], f"frame-{item.index:06d}")
        res = loc.localize(image, item.camera)
        low_light += res.low_light
        held += res.held is not None  # FAILED as no stronger than the map's look-alike (ambiguity_lookalike_ratio)
        run.records.append(frame_record(f"frame-{item.index:06d}", item.stamp_ns, item.T_world_from_cam, res.ok,
                                        res.status.value, res.reason, res.T_map_from_cam, res.covariance,
                                        res.timings_ms, res.num_matches, res.num_inliers,
                                        res.code.value if res.code is not None else ""))
    if not run.records:
        raise DatasetError(f"{bag}: no image has ground truth ({no_gt} without); check --gt-topic / --gt-frame")
    run.stats = {"images_with_gt": len(run.records), "no_gt": no_gt, "every": every, "lookalike_held": held,
                 "wall_s": round(time.perf_counter() - t0, 2)}
    if config.low_light_brightness > 0:
        run.stats["low_light_images"] = low_light  # enhanced before extraction (LocalizerConfig.low_light_brightness)
    if degradation:
        run.stats["degradation"] = "+".join(degradation["presets"]) + f" (seed {degradation['seed']})"
    return run
