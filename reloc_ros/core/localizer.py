"""The localizer: image -> features -> retrieval -> matching -> aggregation -> PnP -> gated result.

A result always has a status: LOCALIZED, or FAILED with the reason. A failure never carries a pose.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reloc_ros.core import gates, lowlight
from reloc_ros.core.aggregation import Correspondences, aggregate_correspondences
from reloc_ros.core.aliases import lookalike_poses, unique_place
from reloc_ros.core.camera import Camera
from reloc_ros.core.config import check_fields, setting
from reloc_ros.core.features import ExtractorError, FeatureExtractor, Features
from reloc_ros.core.geometry import invert_T, pose_errors, rotation_error_deg
from reloc_ros.core.mapdb import POINT_SOURCES, MapDatabase, check_extractor, extractor_for_map  # noqa: F401
from reloc_ros.core.lighterglue import MATCHERS, LighterGlueMatcher, default_matcher_path
from reloc_ros.core.matching import PRECISIONS as MATCHING_PRECISIONS
from reloc_ros.core.matching import KeyframeDescriptors, KeyframeMatcher
from reloc_ros.core.plausibility import inlier_coverage
from reloc_ros.core.quality import measure as measure_image
from reloc_ros.core.pnp import PnPConfig, refine_pnp, reprojection_errors, solve_pnp
from reloc_ros.core.relpose2d2d import METHODS, KeyframeView, RelPoseConfig, average_rotations, estimate_line, \
    pose_without_3d
from reloc_ros.core.retrieval import GlobalIndex, PosePrior
from reloc_ros.core.status import FailureCode, Status

__all__ = ["Status", "FailureCode", "LocalizerConfig", "LocalizationResult", "Localizer", "KeyframeMatches",
           "extractor_for_map", "config_from_dict", "keypoint_confidence_factor", "image_quality_factor"]


# The covariance model per point source (Localizer._covariance, docs/RESULTS.md "Covariance calibration"):
# PNP_COVARIANCE_SCALE multiplies the reprojection term, MAP_POINT_SIGMA_REL is the 1-sigma map-point error relative
# to depth of the map term. Depth-image maps: fitted on the tuning scenes (median and mean position NEES of the
# correct poses near a calibrated 2.37 / 3); the reprojection term alone was 2x overconfident on every scene (4x before
# the pose polish, pnp_polish_px), and a
# map term that grows with depth made the deep hall 5x too conservative. Triangulated and network-depth maps:
# fitted on the training scene train_100 (mean NEES 3).
PNP_COVARIANCE_SCALE = {"depth": 2.0, "triangulate": 1.0, "learned": 1.0}
MAP_POINT_SIGMA_REL = {"depth": 0.001, "triangulate": 0.013, "learned": 0.13}
# Triangulated maps that record their own point uncertainty (MapDatabase.point_sigma_rel: the median over the points of
# their triangulation covariance's 1-sigma over distance) use this multiple of it instead of the constant above, which
# was fitted on a map of short baselines and makes maps of good geometry far too conservative (Strecha: position NEES
# 0.03-0.05 with 0.013, 0.8-1.6 with this). The smallest multiple that leaves no triangulated robot map of the tuning
# scenes overconfident (0.5 fitted their mean NEES best but left one at a mean of 4.8, and a map built from the office
# bags at 8.9); docs/RESULTS.md "Covariance calibration".
TRIANGULATED_SIGMA_SCALE = 1.0
# Median inlier reprojection error (px) above which a pose is FAILED, per point source: the depth head's points are
# off by ~12 % of their depth, so correct poses from them reproject 4-5 px; with the epipolar check guarding the
# orientation, 5 px for them localized 475 instead of 386 of the 720 tuning queries, 47 instead of 35 of them
# outside (0.5 m, 5 deg) (docs/RESULTS.md "Monocular maps"). Triangulated maps (posed images without depth): 5 px
# localized Strecha's dusk queries (9 px motion blur: correct poses at 4.0-4.4 px) 46 instead of 36 of 48, the
# corridor tuning scenes tc1 / tc2 172 / 165 instead of 141 / 111 of 300, with no more poses outside (0.5 m, 5 deg)
# anywhere (docs/RESULTS.md "Robustness to degraded queries").
MAX_MEDIAN_REPROJ_PX = {"depth": 4.0, "triangulate": 5.0, "learned": 5.0}
# Keypoint confidence (Localizer._covariance): per extractor, (reference score, exponent). An image whose keypoints
# the detector is unsure of (the median detection score of all its keypoints below the reference: night, deep dusk)
# localizes with errors its residuals do not show (correct night poses on the tuning scenes were NEES ~8 with the
# day model): the reprojection term is multiplied by (reference / median score) ** exponent. Fitted on the tuning
# scenes, day and night (docs/RESULTS.md "Covariance calibration"; day images' median scores are ~0.05-0.07, night
# ones 0.01-0.015). SIFT's responses are on another scale: no factor.
DETECTION_SCORE_COVARIANCE = {"learned": (0.02, 2.0)}
# An image enhanced for low light (LocalizerConfig.low_light_brightness) hides its noise from the detector's scores:
# its keypoint-confidence factor is at least this (> 1, so the place check always runs on it). Fitted on the tuning
# scenes' night queries (--degrade night): the position NEES of correct poses median 3.1-3.5 with 2, 2.0-2.4 with 3
# (chi-square 3 dof: 2.37); docs/RESULTS.md "Robustness to degraded queries"
LOW_LIGHT_COVARIANCE_FACTOR = 3.0
# Blur (Localizer._covariance): an image less sharp than the reference (core/quality.py: 0.85-0.88 for sharp VGA
# images, 0.57 for 15 px of motion blur) localizes with errors its residuals do not show either (correct poses of
# blurred tuning queries: NEES medians 3.6-13 under the sharp images' model): the reprojection term is multiplied by
# max(1, reference / sharpness) ** exponent, or by the keypoint-confidence factor when that is larger. Fitted on the
# tuning scenes, sharp, blurred and dusk (docs/RESULTS.md "Covariance calibration").
BLUR_COVARIANCE = (0.75, 8.0)
# Darkness: an image whose median grey level (core/quality.py measure) is below the reference (dusk without
# auto-exposure: 0.06-0.11) has its keypoints placed under noise relative to a faint contrast (correct dusk poses on
# the tuning scenes: NEES medians 5.2 / 5.7 with the blur factor alone, 2.7 / 2.7 with this); same form and fit.
DARK_COVARIANCE = (0.15, 2.0)
# The two image-quality factors are at most this (sharpness 0.5, brightness 0.03: night): beyond, the measures say
# little about the keypoints (a frame mostly black, pure noise), and the place check and the gates judge the pose.
MAX_IMAGE_QUALITY_FACTOR = 25.0


def image_quality_factor(sharpness: float, brightness: float, blur: tuple = BLUR_COVARIANCE,
                         dark: tuple = DARK_COVARIANCE) -> float:
    """The covariance factor of an image's blur and darkness (core/quality.py ``measure``): the larger of
    ``max(1, reference / value) ** exponent`` for the two, each at most MAX_IMAGE_QUALITY_FACTOR; a NaN measure or a
    reference of 0 contributes 1. ``blur`` / ``dark``: (reference, exponent), BLUR_ / DARK_COVARIANCE by default
    (tools/fit_covariance.py fits them with this function)."""
    f = 1.0
    for value, (reference, exponent) in ((sharpness, blur), (brightness, dark)):
        if np.isfinite(value) and reference > 0:
            f = max(f, min(MAX_IMAGE_QUALITY_FACTOR, keypoint_confidence_factor(value, reference, exponent)))
    return f


def keypoint_confidence_factor(median_score: float, reference: float, exponent: float) -> float:
    """``max(1, reference / median_score) ** exponent``: DETECTION_SCORE_COVARIANCE's factor (tools/fit_covariance.py
    fits it with the same function)."""
    return float(max(1.0, reference / max(median_score, 1e-6)) ** exponent)

# Pixel thresholds (ransac_reproj_px, the median-reprojection gate, guided_radius_px) are pixels of an image whose
# longer side is at most this; on larger images they scale with the longer side (a 4000x3000 image: x3.9), since
# keypoint noise grows with the resolution (a 4000x3000 query with correct poses failed at 4.2 px > 4 px).
REFERENCE_SIDE_PX = 1024
MIN_KEYFRAME_MATCHES = 10  # a retrieved keyframe with fewer matches does not count as contributing
# The place check leaves out matched keyframes of which at least this fraction of the matches (and min_inliers)
# reproject within the RANSAC threshold under the pose: they show the pose's own place, even from > 1 m away.
PLACE_SUPPORT_FRACTION = 0.5
# ... and a rival pose closer to the pose than this fraction of its median inlier depth (and 5 deg) is the same place:
# Strecha castle (depths ~35 m), a solve 1.16 m / 1.9 deg off from far keyframes; indoors (depths 2-5 m) the
# ambiguity_min_dist_m of 0.25 m decides as before
PLACE_MIN_DEPTH_FRACTION = 0.05
EPIPOLAR_CHECK_MODES = ("auto", "always", "never")  # LocalizerConfig.epipolar_check
RELPOSE_CHECK = RelPoseConfig()  # essential-matrix settings of the epipolar check (the 2D-2D method's)


@dataclass
class LocalizerConfig:
    """The localizer's settings. Each is declared with its documentation and valid range (core/config.py); the
    node's parameters, config/localizer.yaml and the README's table are generated from them."""

    method: str = setting("pnp", '"pnp": 2D-3D matches + PnP; "retrieval": the top-1 keyframe\'s pose (coarse, '
                          'ablation); "2d2d": essential matrices against the top-K keyframes, no map 3D '
                          "(core/relpose2d2d.py)", choices=METHODS, param=None)
    top_k: int = setting(5, "keyframes retrieved per query", 1, 200)
    tracked_top_k: int = setting(3, "> 0: keyframes retrieved (from the pose window) when the prior is the "
                                 "odometry prediction of a place the tracker accepted (with its publish gate on, "
                                 "track_publish_gate_sigma > 0), instead of top_k: fewer candidates where odometry "
                                 "already says where the camera is, and the gate checks the pose against it; not "
                                 "for a dim or noisy image (keypoint-confidence factor above 1), whose weaker "
                                 "matches need top_k's keyframes (a 3-session office map at night: 8 poses 0.22 m / "
                                 "5.1-5.5 deg off published from 3 keyframes, none from 5); 0 = top_k", 0, 200)
    ratio: float = setting(0.0, "Lowe ratio test for matching (0 = the map's extractor's own: SIFT 0.8, learned 0.9)",
                           0.0, 1.0)
    mutual: bool = setting(True, "require mutual nearest neighbours", param=None)
    matcher: str = setting("mnn", '"mnn": mutual nearest neighbours of the descriptors (fast); "lighterglue": '
                           "XFeat's learned matcher (learned maps only) on the first lighterglue_keyframes retrieved "
                           "keyframes, the rest by mnn (more correct matches on wide baselines; +0.2 s per keyframe "
                           "at 640x480 on 2 cores, and on Strecha it lowered the median error on one scene of three: "
                           "docs/precision.md)", choices=MATCHERS)
    lighterglue_keyframes: int = setting(1, "matcher lighterglue: this many of the retrieved keyframes (best "
                                         "first) are matched by it", 1, 200)
    max_query_keypoints: int = setting(0, "> 0: match only the strongest this many query keypoints (matching cost "
                                       "is linear in it; 1000: 43.0 instead of 54.3 ms p50 in the bench, but on "
                                       "Strecha castle 10 instead of 18 of 22 within 5 cm, its median 0.037 -> "
                                       "0.051 m, "
                                       "docs/performance.md); 0: all the extractor gives", 0, None)
    tracked_max_query_keypoints: int = setting(1000, "> 0: with the prior of tracked_top_k (an accepted place's "
                                               "odometry prediction, an image that is not dim or noisy), match only "
                                               "the strongest this many query keypoints (bench, tracked frames: "
                                               "41.0 -> 35.5 ms p50; the node at 30 Hz handles 13 % more frames; "
                                               "cold starts: 0 wrong as with all; never more than "
                                               "max_query_keypoints when that is set); 0: as max_query_keypoints",
                                               0, None)
    max_map_keypoints: int = setting(1000, "> 0: per keyframe, match only the strongest this many keypoints that "
                                     "have 3D (fixed when the Localizer is made; matching cost is linear in it); 0: "
                                     "all of them", 0, None, param=None)
    aggregation: bool = setting(True, "merge 2D-3D matches of all top-K keyframes (DeViLoc; False: best single "
                                "keyframe)")
    agg_cell_px: float = setting(0.0, "quantisation cell for aggregation (0: by query keypoint)", 0.0, None,
                                 param=None)
    agg_rel_tol: float = setting(0.05, "3D points agree within this fraction of their viewing distance", 0.0, None,
                                 param=None)
    min_matches: int = setting(12, "fewer 2D-3D matches: FAILED", 4, 100_000)
    pnp_backend: str = setting("poselib", "PnP RANSAC implementation", choices=("poselib", "opencv"), param=None)
    ransac_reproj_px: float = setting(8.0, "PnP RANSAC inlier threshold (pixels of an image up to 1024 px wide or "
                                      "high; scaled by the longer side / 1024 above that, like every pixel "
                                      "threshold)", 0.0, 100.0, min_exclusive=True)
    pnp_polish_px: float = setting(3.0, "> 0: after RANSAC, refine the pose on the correspondences within this many "
                                   "pixels only (the inliers the gates count and the covariance stay those within "
                                   "ransac_reproj_px): near-miss matches (a neighbouring keypoint, "
                                   "3-6 px off) no longer pull the pose; Strecha median errors halved "
                                   "(docs/precision.md); 0 = off", 0.0, 100.0)
    ransac_iterations: int = setting(10000, "PnP RANSAC iteration cap", 10, 1_000_000)
    min_inliers: int = setting(15, "fewer PnP inliers: FAILED", 4, 100_000)
    min_inlier_ratio: float = setting(0.10, "inliers / matches below this: FAILED (PNLP's 10 % rule)", 0.0, 1.0)
    max_median_reproj_px: float = setting(-1.0, "median inlier reprojection error (px) above this: FAILED; < 0 = "
                                          "the default for the map's point source (depth 4, triangulate and "
                                          "learned 5); not 0", -1.0, 100.0)
    max_position_sigma_m: float = setting(2.0, "position std-dev (from the covariance) above this: FAILED", 0.0, 1e6,
                                          min_exclusive=True)
    ambiguity_ratio: float = setting(0.5, "> 0: FAILED when the correspondences the pose leaves out support a "
                                     "second, distinct pose with at least this fraction of its inliers (repeated "
                                     "structure); 0 disables the check", 0.0, None, param=None)
    ambiguity_min_dist_m: float = setting(0.25, "two poses closer than this (and 5 deg) are the same hypothesis",
                                          0.0, None, param=None)
    # The place check: a whole view repeated elsewhere often has all of the retrieval's top-k at the look-alike.
    ambiguity_top_k: int = setting(20, "> 0: the place check looks for another place among this many retrieved "
                                   "keyframes (globally, without the prior): those farther than ambiguity_place_m "
                                   "from the pose (at most ambiguity_place_keyframes of them) are matched and solved "
                                   "on their own; a pose there with at least ambiguity_place_ratio x the inliers is "
                                   "FAILED 'ambiguous place', a weaker one widens the covariance to cover it; 0 = off",
                                   0, None, param=None)
    ambiguity_place_ratio: float = setting(0.2, "see ambiguity_top_k (at the office scene's look-alike 3.6 m away "
                                           "the wrong poses' rivals had 0.25-0.49 x their inliers, a correct pose's "
                                           "0.37 x: single images cannot tell)", 0.0, None, param=None)
    ambiguity_place_m: float = setting(1.0, "keyframes farther than this from the pose may show another place",
                                       0.0, None, param=None)
    ambiguity_place_keyframes: int = setting(5, "at most this many of them are matched (most similar first)", 1,
                                             None, param=None)
    ambiguity_place_facing_deg: float = setting(90.0, "> 0: retrieved keyframes within 1 m of the pose "
                                                "(ambiguity_place_m) whose viewing direction is more than this many "
                                                "degrees from the pose's also show another place (a look-alike seen "
                                                "the other way round 0.7 m away), solved as a group of their own "
                                                "(up to 5 keyframes, ambiguity_place_keyframes); 0 = distance only "
                                                "(on the benchmark 90 FAILED storage's one wrong single image at "
                                                "-2.7 points of recall there, -4.4 on the corridor)", 0.0, 180.0)
    ambiguity_place_trust_map: bool = setting(True, "skip the place check for a pose whose supporting keyframes "
                                              "have no look-alike in the map (the map's look-alike analysis, "
                                              "reloc_ros/core/aliases.py), unless the image is dim or noisy (its "
                                              "keypoint-confidence factor above 1); maps without the analysis are "
                                              "always checked")
    ambiguity_place_tracked: bool = setting(False, "run the place check also when the prior is the odometry "
                                            "prediction of a place the tracker accepted (with its publish gate on); "
                                            "false: skipped there, since a rival outside the prior's pose window is "
                                            "ignored anyway and the tracker's publish gate checks each pose against "
                                            "the prediction (~12 ms per frame on maps with many look-alikes)")
    ambiguity_lookalike_ratio: float = setting(1.0, "> 0: a pose localized without a prior is FAILED 'ambiguous "
                                               "place' when the map's own look-alikes of the keyframes that support "
                                               "it (the look-alike analysis: the inliers of each keyframe's view at "
                                               "its look-alike, averaged with the weights of the keyframes' matches "
                                               "that fit the pose) reach this many times the pose's inliers: the "
                                               "image holds no more evidence for its place than the map's look-alike "
                                               "does. The place tracker still weighs the pose and publishes it once "
                                               "motion has ruled the look-alike out. Benchmark: the corridor's 16 "
                                               "wrong single images 1.19-10.8 x (its correct ones 0-6.9 x), the "
                                               "other scenes' poses 0.93 x at most but three office images "
                                               "(1.04-1.42 x); 0 = off", 0.0, None)
    epipolar_check: str = setting("auto", "FAILED when the essential matrices of the image with its retrieved "
                                  "keyframes (no map 3D involved) agree on a camera orientation more than "
                                  "epipolar_max_rot_deg from the PnP pose's (the map's 3D points fit a wrong pose); "
                                  "auto = on for maps of learned points (--points learned), whose shape errors can "
                                  "make PnP choose the wrong one of a near-planar view's two poses (not on/off: YAML "
                                  "and ROS read those as booleans)", choices=EPIPOLAR_CHECK_MODES)
    epipolar_max_rot_deg: float = setting(5.0, "tolerance of epipolar_check (deg; also the width of its rotation "
                                          "clusters)", 0.0, 180.0, min_exclusive=True)
    epipolar_max_keyframes: int = setting(5, "epipolar_check looks at this many retrieved keyframes (most matches "
                                          "first), one five-point RANSAC each (~6 ms on 2 cores)", 1, 1000)
    min_inlier_coverage: float = setting(0.1, "a pose whose PnP inliers cover less than this fraction of the image "
                                         "(convex hull) is FAILED: matches on one small patch, e.g. a picture that "
                                         "also hangs elsewhere; 0 = no check", 0.0, 1.0)
    max_keyframe_distance_ratio: float = setting(0.9, "a pose farther from every matched keyframe than this x the "
                                                 "median inlier depth is FAILED (a view change of > ~42 deg, across "
                                                 "which local descriptors do not match: a wrong pose); 0 = no check",
                                                 0.0, 100.0)
    covariance_scale: float = setting(1.0, "multiplies the published covariance (calibration)", 0.0, 1e6,
                                      min_exclusive=True)
    guided_radius_px: float = setting(0.0, "> 0 (e.g. 4): refine a localized pose by guided matching: the matched "
                                      "keyframes' points projected with it, each matched to the most similar "
                                      "keypoint within this radius (px), PnP again; the refined pose replaces it when "
                                      "it has more inliers and lies within 0.25 m (ambiguity_min_dist_m) / 5 deg, "
                                      "so what localizes does not change, only the precision (synthetic R@5cm +0.75 "
                                      "points, "
                                      "+8 ms at 640x480 on 2 cores); 0 = off", 0.0, 100.0)
    map_point_sigma_rel: float = setting(-1.0, "1-sigma map-point error as a fraction of depth, added to the "
                                         "covariance per contributing keyframe; < 0 = the default for the map's "
                                         "point source (depth 0.001, triangulate 0.013, learned 0.13; a triangulated "
                                         "map that records its point uncertainty, shown by `reloc map info`: "
                                         "that)", -1.0, 10.0)
    prior_sigma_m: float = setting(5.0, "std-dev (m) of a pose prior (last good pose) used to re-rank retrieval",
                                   0.0, 1e6, min_exclusive=True)
    blas_threads: int = setting(1, "> 0: limit the process's BLAS (numpy matching) to this many threads when a "
                                "localizer first extracts or localizes (not when it is made): OpenBLAS threads "
                                "busy-wait after each call and starve ONNX Runtime's (docs/performance.md); 0: leave "
                                "it", 0, None, param=None)
    matching_precision: str = setting("float32", "similarities of the descriptor matching: float32, or int8 "
                                      "(quantised descriptors, one integer GEMM: ~1.6x faster matching on 2 cores; "
                                      "6 % of the matches differ: on the benchmark 2 more single images localized "
                                      "wrong, none published by the tracker with odometry, and Strecha's median "
                                      "errors 10-18 % larger; docs/RESULTS.md 'Performance and latency')",
                                      choices=MATCHING_PRECISIONS)
    matching_threads: int = setting(2, "threads (of a pool that sleeps when idle) that split the query's descriptor "
                                    "matching: 20 -> 11 ms for 2000 query x 5 x 1000 map descriptors on 2 cores; "
                                    "identical matches (KeyframeMatcher)", 1, 64, param=None)
    low_light_brightness: float = setting(0.0, "> 0: an image whose median grey level (0-1) is below this is "
                                          "enhanced before extraction (light sources suppressed, denoised, CLAHE: "
                                          "reloc_ros/core/lowlight.py), and counts as dim for the covariance and the "
                                          "place check; 0 = never. Only with a map whose night images were built "
                                          "with the same rule (reloc map build --low-light-brightness, e.g. 0.06): "
                                          "on daylight maps it published wrong poses at night (docs/robustness.md)",
                                          0.0, 1.0)

    def __post_init__(self):
        """Refuse values the pipeline cannot run with, naming the field and its valid range."""
        check_fields(self)
        if self.max_median_reproj_px == 0:
            raise ValueError(f"LocalizerConfig.max_median_reproj_px = {self.max_median_reproj_px!r}: it must be > 0 "
                             "(pixels), or < 0 for the map's default")


def config_from_dict(cls, d: dict | None, also: tuple = ()):
    """Build a config dataclass from a dict; unknown keys are an error that names the closest valid key of each
    (among the fields and ``also``, other names the caller accepts), or, when one has none, lists the valid ones."""
    import difflib

    d = dict(d or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        hints = {k: m[0] for k in unknown if (m := difflib.get_close_matches(k, sorted(names | set(also)), n=1))}
        what = f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
        if len(hints) == len(unknown):  # every key a typo of a valid one: say which, not the whole list
            fix = ", ".join(f"{v!r}" + (f" for {k!r}" if len(unknown) > 1 else "") for k, v in hints.items())
            raise ValueError(f"{what} (did you mean {fix}?)")
        more = f", and with --track {', '.join(sorted(also))}" if also else ""
        raise ValueError(f"{what} of the {cls.__name__}; valid settings: {', '.join(sorted(names))}{more}")
    return cls(**d)


@dataclass
class LocalizationResult:
    """Outcome of one query.

    Attributes:
        status: LOCALIZED or FAILED.
        reason: why it failed, for people ("" when localized).
        code: why it failed, for programs (None when localized).
        T_map_from_cam: 4x4 camera pose in the map frame, None unless LOCALIZED.
        covariance: 6x6 (x, y, z, rot x, rot y, rot z) in the map frame, None unless LOCALIZED.
        num_matches: 2D-3D correspondences given to PnP.
        num_inliers: PnP inliers.
        median_reproj_px: median reprojection error of the inliers.
        candidates: retrieved keyframe indices, best first.
        keyframes_used: candidates that contributed at least ``MIN_KEYFRAME_MATCHES`` matches.
        coarse_T_map_from_cam: pose of the best retrieved keyframe (a coarse fallback, never a localization).
        inlier_xyz: ``[I x 3]`` map points of the inliers (for visualisation).
        timings_ms: per-stage wall time.
        hypotheses: FAILED ``ambiguous`` / ``ambiguous place`` only: ``[(T_map_from_cam, inliers)]`` of the
            poses the image supports (two; for ``ambiguity_lookalike_ratio`` the pose and the map's look-alikes of
            it, with the look-alike's inliers in the map's analysis), the better first (never published; the place
            tracker weighs them with motion, see reloc_ros/core/tracking.py).
        measurement_covariance: LOCALIZED with a keypoint-confidence factor above 1 only (DETECTION_SCORE_COVARIANCE):
            ``covariance`` without that factor. The place tracker weighs and gates poses with it (see
            :attr:`tracking_covariance`): the factor makes the published covariance honest for its consumers, but
            in the tracker's publish gate it would widen the window for the very night poses whose errors even the
            widened covariance underestimates (a 3-session office map's night run: 12 poses 0.25 m / 5-7 deg off
            published instead of 0).
        covariance_factor: the image's factor of the reprojection term (>= 1; the largest of the keypoint-confidence,
            blur and darkness factors: DETECTION_SCORE_COVARIANCE, BLUR_COVARIANCE, DARK_COVARIANCE), set once its
            features are known; the node reports it in /diagnostics.
        lookalike_free: LOCALIZED only: the keyframes whose matches support the pose have no look-alike elsewhere
            in the map (core/aliases.py), so the place tracker asks for less motion before it publishes the place
            (``track_min_motion_lookalike_free_m``); False when the map has no look-alike analysis.
        lookalike_poses: LOCALIZED and not ``lookalike_free``: the camera poses at which the map's look-alikes of
            those keyframes would show this view (``[4 x 4]`` each, one per place; core/aliases.py), which the place
            tracker localizes the next images at too; None when the map does not record where its look-alikes are.
        low_light: the image was darker than ``low_light_brightness`` and enhanced before extraction
            (core/lowlight.py); the node reports it in /diagnostics.
        held: FAILED by ``ambiguity_lookalike_ratio`` only: the LOCALIZED result the image gave before (its pose
            and look-alikes). Never published as a single image; the place tracker weighs it like any pose and
            publishes it once motion has ruled the look-alikes out (the node and ``reloc eval --track``).
    """

    status: Status
    reason: str = ""
    code: FailureCode | None = None
    T_map_from_cam: np.ndarray | None = None
    covariance: np.ndarray | None = None
    num_matches: int = 0
    num_inliers: int = 0
    median_reproj_px: float = float("nan")
    candidates: list = field(default_factory=list)
    keyframes_used: int = 0
    coarse_T_map_from_cam: np.ndarray | None = None
    inlier_xyz: np.ndarray | None = None
    timings_ms: dict = field(default_factory=dict)
    hypotheses: list = field(default_factory=list)
    measurement_covariance: np.ndarray | None = None
    covariance_factor: float = 1.0
    lookalike_free: bool = False
    lookalike_poses: list | None = None
    low_light: bool = False
    held: LocalizationResult | None = None

    @property
    def tracking_covariance(self) -> np.ndarray | None:
        """The covariance the place tracker uses: :attr:`measurement_covariance` when there is one, else
        :attr:`covariance`."""
        return self.covariance if self.measurement_covariance is None else self.measurement_covariance

    @property
    def ok(self) -> bool:
        return self.status == Status.LOCALIZED

    def fail(self, code: FailureCode, reason: str) -> "LocalizationResult":
        """Mark FAILED with ``code`` and ``reason``; a failure carries no pose."""
        self.status, self.code, self.reason = Status.FAILED, code, reason
        self.T_map_from_cam = self.covariance = self.inlier_xyz = None
        return self


def pixel_scale(size: tuple[int, int]) -> float:
    """How much the pixel thresholds grow for an image of ``size`` (w, h): 1 up to REFERENCE_SIDE_PX, else the
    longer side over it."""
    return max(1.0, max(size) / REFERENCE_SIDE_PX)


def _main_point_source(db: MapDatabase) -> str:
    """The point source most of the map's 3D points come from (``depth`` for a map without 3D points)."""
    src = np.asarray(db.point_source)
    counts = {name: int((src == code).sum()) for name, code in POINT_SOURCES.items() if name != "none"}
    return max(counts, key=counts.get) if any(counts.values()) else "depth"


def _median_depth(xyz_N3: np.ndarray, T_cam_from_world: np.ndarray) -> float:
    """Median depth (camera z) of map points ``xyz_N3`` seen from the pose ``T_cam_from_world``."""
    return float(np.median((xyz_N3 @ T_cam_from_world[:3, :3].T + T_cam_from_world[:3, 3])[:, 2]))


def _strongest_with_3d(db: MapDatabase, cap: int) -> np.ndarray:
    """``[N] bool``: the keypoints with a 3D point, at most ``cap`` per keyframe (the highest detector scores;
    ``cap`` 0: all). Measured on the synthetic benchmark maps (2000 keypoints per keyframe, all with depth): 1000 per
    keyframe halves matching at unchanged recall (docs/performance.md)."""
    has = np.isfinite(db.points3d[:, 0])
    if cap <= 0:
        return has
    kf_of = np.repeat(np.arange(len(db)), np.diff(db.kp_offsets))
    if len(has) == 0 or np.bincount(kf_of[has], minlength=len(db)).max(initial=0) <= cap:
        return has  # no keyframe over the cap: no sort (a 10k-keyframe map sets up ~1 s faster)
    idx = np.flatnonzero(has)
    idx = idx[np.lexsort((-np.asarray(db.scores)[idx], kf_of[idx]))]  # by keyframe, strongest first
    kf = kf_of[idx]
    rank = np.arange(len(idx)) - np.searchsorted(kf, kf, side="left")
    keep = np.zeros_like(has)
    keep[idx[rank < cap]] = True
    return keep


def limit_blas_threads(n: int) -> None:
    """Limit the BLAS libraries loaded in this process (numpy's OpenBLAS) to ``n`` threads, process-wide.

    On a 2-core CPU, OpenBLAS's worker threads keep spinning after each matrix product and take the cores from
    ONNX Runtime's threads: measured with ``reloc bench``, the encoder took 63 ms instead of 25 ms and a whole
    640x480 query 121 ms instead of 71 ms; single-threaded matching itself was faster too (38 vs 51 ms).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")


_blas_limit_applied: int | None = None  # the limit the first localization applied to this process


def _apply_blas_limit(n: int) -> None:
    """``blas_threads`` takes effect when a localizer first localizes (not when one is made: making a Localizer
    to inspect a map changes nothing in the process); applied again only when the setting changes."""
    global _blas_limit_applied
    if n > 0 and n != _blas_limit_applied:
        limit_blas_threads(n)
        _blas_limit_applied = n


class KeyframeMatches(NamedTuple):
    """The matches of the query with one retrieved keyframe."""

    keyframe: int
    matches: np.ndarray  # [M x 2] (query keypoint, keyframe point)
    similarities: np.ndarray  # [M]


class _Query(NamedTuple):
    """The query's undistorted keypoints and the descriptors that take part in matching (``sel``: their rows in
    the features; None: all)."""

    kpts_ideal: np.ndarray
    desc: np.ndarray
    sel: np.ndarray | None


class _Solved(NamedTuple):
    """PnP on the query's correspondences: the RANSAC result (None when too few), how many matches it had."""

    pnp: object
    num_matches: int
    corr: Correspondences | None


class _Pose(NamedTuple):
    """A PnP pose with what the gates and the result need."""

    pnp: object
    T_map_from_cam: np.ndarray
    inlier_xyz: np.ndarray
    z_med: float
    cov: np.ndarray
    num_inliers: int
    cov_measurement: np.ndarray | None  # cov without the keypoint-confidence factor, when that is above 1

    @classmethod
    def of(cls, pnp, corr: Correspondences, n_keyframes: int, loc: "Localizer") -> "_Pose":
        xyz = corr.xyz[pnp.inliers]
        z_med = _median_depth(xyz, pnp.T_cam_from_world)
        plain = loc._covariance(pnp.covariance, z_med, n_keyframes, score_factor=1.0) if loc._score_factor > 1 else None
        return cls(pnp, invert_T(pnp.T_cam_from_world), xyz, z_med,
                   loc._covariance(pnp.covariance, z_med, n_keyframes), pnp.num_inliers, plain)


def _sure_tracked(prior: PosePrior | None, dim: bool) -> bool:
    """A frame whose prior is an accepted place's odometry prediction and whose image is not dim or noisy: the
    frames ``tracked_top_k`` and ``tracked_max_query_keypoints`` apply to."""
    return prior is not None and prior.tracked and not dim


class Localizer:
    """Localize single images against a map.

    Args:
        db: a loaded :class:`MapDatabase`.
        extractor: the extractor the map was built with (see :func:`extractor_for_map`).
        config: thresholds and switches.
    """

    _px_scale = 1.0  # pixel thresholds' scale for the query being localized (REFERENCE_SIDE_PX); set per query
    _score_factor = 1.0  # the query's keypoint-confidence factor of the covariance (DETECTION_SCORE_COVARIANCE)
    _dim = False  # that factor without blur is above 1 (the place check runs on the image)

    def __init__(self, db: MapDatabase, extractor: FeatureExtractor, config: LocalizerConfig = LocalizerConfig()):
        check_extractor(db, extractor)
        self.db = db
        self.extractor = extractor
        self._lighterglue = None
        self.config = config  # the property below: loads the learned matcher when config.matcher asks for it
        self.index = GlobalIndex(db.index, db.centers, db.T_map_from_cam[:, :3, :3], db.global_desc)
        self._point_source = _main_point_source(db)
        self._map_sigma_rel = self.default_map_point_sigma_rel(db, self._point_source)  # map_point_sigma_rel < 0
        # Per keyframe: only keypoints with a 3D point take part in matching. Their descriptors go into one
        # contiguous store (fp16 when lossless) made once; the matcher's buffers are reused by every query.
        has = _strongest_with_3d(db, config.max_map_keypoints)
        if has.all():  # no copies of the map's arrays (a depth-built map: every keypoint has 3D)
            offsets, xyz, conf, uv = db.kp_offsets, db.points3d, db.point_conf, db.keypoints
        else:
            offsets = np.concatenate([[0], np.cumsum(has)])[db.kp_offsets]  # kept rows before each keyframe
            rows = np.flatnonzero(has)  # np.take: 10x faster than boolean indexing of [N x D] arrays
            xyz, conf, uv = (np.take(a, rows, axis=0) for a in (db.points3d, db.point_conf, db.keypoints))
        split = np.asarray(offsets)[1:-1]  # per-keyframe views into one array each
        self._kf_xyz = np.split(np.asarray(xyz, np.float64), split)
        self._kf_conf = np.split(np.maximum(conf, 1e-3).astype(np.float64), split)
        self._kf_uv = np.split(np.asarray(uv), split)  # ideal pixels of the same keypoints (epipolar check)
        # the map's descriptors as stored (fp16 maps stay fp16), never copied: a subset is indexed by ``rows``
        self._kf_desc = KeyframeDescriptors.from_flat(db.descriptors, offsets, rows=None if has.all() else rows)
        self._matcher = self._new_matcher(config)

    def _new_matcher(self, config: LocalizerConfig) -> KeyframeMatcher:
        return KeyframeMatcher(self._kf_desc, self.match_ratio, config.mutual, threads=config.matching_threads,
                               precision=config.matching_precision)

    @property
    def config(self) -> LocalizerConfig:
        return self._config

    @config.setter
    def config(self, config: LocalizerConfig) -> None:
        """A new configuration (the node swaps it while running); matcher 'lighterglue' loads the learned matcher
        first (ExtractorError when this map's features are not the learned extractor's: the config is not taken)."""
        if config.matcher == "lighterglue" and self._lighterglue is None:
            why = self.lighterglue_unsupported()
            if why:
                raise ExtractorError(why)
            self._lighterglue = LighterGlueMatcher(threads=config.matching_threads)
        matcher = getattr(self, "_matcher", None)  # None while __init__ runs
        if matcher is not None and (matcher.precision, matcher.threads) != (config.matching_precision,
                                                                              config.matching_threads):
            # not closed here: a localizing thread may be matching with it; its pool stops when it is collected
            self._matcher = self._new_matcher(config)
        self._config = config

    def lighterglue_unsupported(self) -> str | None:
        """Why matcher 'lighterglue' cannot be used with this map (its features, or no matcher file), or None."""
        if self.extractor.name != "learned" or self.db.descriptors.shape[1] != 64:
            return (f"matcher 'lighterglue' matches the learned extractor's features; this map's extractor is "
                    f"{self.extractor.name}: use matcher 'mnn'")
        try:
            default_matcher_path()
        except ExtractorError as e:
            return str(e)
        return None

    def low_light_mismatch(self) -> str | None:
        """A one-line warning when the map's images were prepared for low light differently from how this
        localizer prepares queries (``MapDatabase.low_light_brightness`` vs ``low_light_brightness``), else None."""
        m, q = self.db.low_light_brightness, self.config.low_light_brightness
        if not self.db.low_light_keyframes:
            m = 0.0  # a rule but no keyframe that dark: a daylight map
        if m == q:
            return None
        return (f"{self.db.low_light_keyframes} of the map's keyframes were enhanced for low light (darker than "
                f"{m:g}) but low_light_brightness is {q:g}: set it to {m:g} so that dark queries are prepared like "
                "them" if m > 0 else
                f"low_light_brightness is {q:g} but the map has no keyframe enhanced for low light: enhanced night "
                "queries against a day map published wrong poses in the benchmark, and against night keyframes "
                "extracted as they are they localize worse; build the map's night sessions with "
                f"--low-light-brightness {q:g} or set low_light_brightness to 0 (docs/robustness.md)")

    @property
    def match_ratio(self) -> float:
        """The Lowe ratio in use: ``config.ratio``, or the extractor's ``MATCH_RATIO`` when that is 0."""
        return self.config.ratio if self.config.ratio > 0 else float(self.extractor.MATCH_RATIO)

    @classmethod
    def from_map(cls, map_path, config: LocalizerConfig = LocalizerConfig(), **extractor_kwargs) -> "Localizer":
        db = MapDatabase.load(Path(map_path))
        return cls(db, extractor_for_map(db, **extractor_kwargs), config)

    # ---------------------------------------------------------------------------------------------
    def extract(self, image: np.ndarray) -> Features:
        """The map's extractor on ``image`` (uint8 RGB or grey), with the global descriptor: what
        :meth:`localize_features` takes (the node's pipeline extracts in one thread and localizes in another)."""
        _apply_blas_limit(self.config.blas_threads)
        features = lowlight.extract(self.extractor, image, self.config.low_light_brightness)
        # of the image as the camera gave it: the covariance's blur and darkness factors
        features.sharpness, features.brightness = measure_image(image)
        if features.global_desc is None:
            features.global_desc = self.extractor.describe_global(features)
        return features

    def localize(self, image: np.ndarray, camera: Camera, prior: PosePrior | None = None,
                 features: Features | None = None) -> LocalizationResult:
        """Localize one image: :meth:`extract`, then :meth:`localize_features`.

        Args:
            image: ``[H x W x 3] uint8`` RGB or ``[H x W] uint8`` grey, as delivered by the camera.
            camera: its intrinsics (size must equal the image's).
            prior: optional rough pose: retrieval re-ranking (position) or a pose window (with a rotation), and
                the ambiguity check's tie-breaker.
            features: precomputed features of ``image`` (skips extraction).
        """
        t0 = time.perf_counter()
        if image is not None and (image.shape[1], image.shape[0]) != camera.size:
            res = LocalizationResult(Status.FAILED, f"image is {image.shape[1]}x{image.shape[0]} but the camera "
                                     f"info says {camera.width}x{camera.height}", FailureCode.BAD_INPUT)
            return self._finish(res, t0)
        if features is None:
            features = self.extract(image)
        return self.localize_features(features, camera, prior, {"extract": _ms(t0)}, t0)

    def localize_features(self, features: Features, camera: Camera, prior: PosePrior | None = None,
                          timings: dict | None = None, t0: float | None = None) -> LocalizationResult:
        """Localize an image from its features (:meth:`extract`): retrieve -> match -> correspondences -> solve ->
        gates -> refine. ``timings`` / ``t0``: stage times so far and the start of the whole query (the result's
        ``timings_ms`` continues them; ``total`` counts from ``t0``)."""
        cfg = self.config
        t = timings if timings is not None else {}
        t0 = time.perf_counter() if t0 is None else t0
        _apply_blas_limit(cfg.blas_threads)
        self._px_scale = pixel_scale(camera.size)
        # dim or noisy (the factor without blur and darkness above 1): the place check runs even where the map knows
        # no look-alike; the covariance takes the image-quality factor too
        dim_factor = self.detection_score_factor(features, image_quality=False)
        self._dim = dim_factor > 1.0
        self._score_factor = max(dim_factor, image_quality_factor(features.sharpness, features.brightness))
        if features.global_desc is None:  # features from elsewhere than extract()
            features.global_desc = self.extractor.describe_global(features)

        t1 = time.perf_counter()
        cand, _ = self.index.search(features.global_desc, self.retrieval_k(prior, self._dim), prior)
        t["retrieval"] = _ms(t1)
        res = LocalizationResult(Status.FAILED, candidates=cand.tolist(), timings_ms=t,
                                 covariance_factor=self._score_factor, low_light=features.low_light)
        if len(cand) == 0:
            return self._finish(res.fail(FailureCode.EMPTY_MAP, "no candidates: the map is empty"), t0)
        res.coarse_T_map_from_cam = self.db.T_map_from_cam[cand[0]].copy()
        if len(features) < 4:
            return self._finish(res.fail(FailureCode.FEW_KEYPOINTS, f"too few keypoints in the image "
                                         f"({len(features)}): too dark, blurred or textureless?"), t0)
        if cfg.method != "pnp":  # the seed methods without 2D-3D matches (they match all keyframe keypoints)
            return self._finish(self._localize_without_pnp(res, features, camera), t0)

        t2 = time.perf_counter()
        q = self._query(features, camera, self.query_keypoints(prior, self._dim))
        n_lg = cfg.lighterglue_keyframes if cfg.matcher == "lighterglue" else 0
        per_kf = self._match_lighterglue(q, cand[:n_lg], camera.size) + self._match(q.desc, q.sel, cand[n_lg:])
        t["matching"] = _ms(t2)
        solved = self._solve(per_kf, q.kpts_ideal, camera, t)
        res.num_matches = solved.num_matches
        if solved.num_matches < cfg.min_matches:
            return self._finish(res.fail(FailureCode.FEW_MATCHES, f"too few matches ({solved.num_matches} < "
                                         f"min_matches {cfg.min_matches})"), t0)
        if solved.pnp is None or not solved.pnp.success:
            return self._finish(res.fail(FailureCode.NO_POSE, "PnP RANSAC found no pose"), t0)
        pnp, corr = solved.pnp, solved.corr
        res.num_inliers = pnp.num_inliers
        res.median_reproj_px = float(np.median(pnp.reproj_px[pnp.inliers]))
        used = [e.keyframe for e in per_kf if len(e.matches) >= MIN_KEYFRAME_MATCHES]  # candidates that contributed
        res.keyframes_used = len(used) if cfg.aggregation else 1
        pose = _Pose.of(pnp, corr, res.keyframes_used, self)
        n_inl = pose.num_inliers  # of the pose the gates judge (a refinement below may change res.num_inliers)
        rival = []  # the place check's other place, when it runs (it widens the covariance of a pose it lets pass)
        second = []  # the second hypothesis among the correspondences, when that check runs
        support = []  # (pose, its supporting keyframes) when the place check looked them up
        failure = gates.first_failure(self._gate_chain(res, pose, solved, per_kf, q, used or list(cand), features,
                                                       camera, prior, t, rival, second, support))
        if failure is not None:
            other = {FailureCode.AMBIGUOUS: second, FailureCode.AMBIGUOUS_PLACE: rival}.get(failure[0])
            res.fail(*failure)
            if other and other[0] is not None:
                res.hypotheses = [(pose.T_map_from_cam, int(n_inl)), (other[0][-1], int(other[0][0]))]
            return self._finish(res, t0)
        res.status = Status.LOCALIZED
        if cfg.guided_radius_px > 0:  # refine the accepted pose; the gates above judged the first matches
            t5 = time.perf_counter()
            pose = self._refined(pose, res, per_kf, features, q.kpts_ideal, camera)
            t["guided"] = _ms(t5)
        covs = [pose.cov, pose.cov_measurement]
        r = rival[0] if rival else None
        if r is not None:  # weaker evidence for another place: cover it
            widen = r[0] / (r[0] + n_inl) * np.outer(r[3], r[3])
            for c in [c for c in covs if c is not None]:
                c[:3, :3] += widen  # the _Pose's own arrays: made for this query, used no further
        res.T_map_from_cam, res.inlier_xyz = pose.T_map_from_cam, pose.inlier_xyz
        res.covariance, res.measurement_covariance = covs
        if self.db.alias_inliers is not None:
            # supporting keyframe -> its matches that fit the pose
            counts = (support[0][1] if support and support[0][0] is res.T_map_from_cam  # the pose was not refined
                      else self._support_counts({int(e.keyframe): e for e in per_kf}, q.kpts_ideal, camera.K,
                                                res.T_map_from_cam))
            res.lookalike_free = unique_place(self.db.alias_inliers, counts)
            if not res.lookalike_free:
                res.lookalike_poses = lookalike_poses(self.db.alias_relation, self.db.alias_inliers, counts,
                                                      res.T_map_from_cam)
                if prior is None and cfg.ambiguity_lookalike_ratio > 0:
                    self._lookalike_check(res, counts)
        return self._finish(res, t0)

    def _lookalike_check(self, res: LocalizationResult, support: dict[int, int]) -> None:
        """FAILED 'ambiguous place' when the map's own look-alikes of the keyframes that support the pose
        (``support``: keyframe -> its matches that fit the pose), their inliers in the map's analysis averaged with
        those weights, reach ``ambiguity_lookalike_ratio`` x the pose's inliers (see the setting); the hypotheses are
        the pose and the look-alike poses (the place tracker weighs them as for any ambiguous image). Only without a
        prior: a pose window (a probe at a rival, the initial pose, an accepted place) says which place is meant."""
        ratio = self.config.ambiguity_lookalike_ratio
        if not support:
            return
        ks = np.fromiter(support, np.int64)
        w = np.fromiter(support.values(), np.float64)
        lookalike = int(round(float(w @ self.db.alias_inliers[ks]) / float(w.sum())))
        if lookalike < ratio * max(res.num_inliers, 1):
            return
        T, n = res.T_map_from_cam, int(res.num_inliers)
        held = copy.copy(res)  # fail() below replaces the attributes of res, not the arrays they held
        others = res.lookalike_poses or []
        where = (" {:.1f} m / {:.0f} deg away".format(*min(pose_errors(P, T) for P in others)) if others
                 else " elsewhere")
        res.fail(FailureCode.AMBIGUOUS_PLACE, f"the map fits this view as well{where}: its look-alikes had {lookalike} "
                 f"inliers, this pose {n} (ambiguity_lookalike_ratio {ratio:g})")
        res.hypotheses = sorted([(T, n)] + [(P, lookalike) for P in others], key=lambda h: -h[1]) if others else []
        res.held = held

    def retrieval_k(self, prior: PosePrior | None, dim: bool = False) -> int:
        """Keyframes to retrieve for a query with ``prior``: ``tracked_top_k`` for the odometry prediction of an
        accepted place (unless 0) when the image is not ``dim`` (keypoint-confidence factor above 1), else
        ``top_k``."""
        cfg = self.config
        return cfg.tracked_top_k if cfg.tracked_top_k > 0 and _sure_tracked(prior, dim) else cfg.top_k

    def query_keypoints(self, prior: PosePrior | None, dim: bool = False) -> int:
        """The strongest query keypoints matched (0: all): ``tracked_max_query_keypoints`` (when set) for the
        odometry prediction of an accepted place and an image that is not ``dim``, but never more than
        ``max_query_keypoints`` (when set); else ``max_query_keypoints``."""
        cfg = self.config
        if cfg.tracked_max_query_keypoints > 0 and _sure_tracked(prior, dim):
            t = cfg.tracked_max_query_keypoints
            return min(t, cfg.max_query_keypoints) if cfg.max_query_keypoints > 0 else t
        return cfg.max_query_keypoints

    def _query(self, features: Features, camera: Camera, limit: int | None = None) -> "_Query":
        """The query's undistorted keypoints and the descriptors that take part in matching (the strongest
        ``limit``, default ``max_query_keypoints``; 0: all)."""
        desc, sel = features.descriptors, None
        limit = self.config.max_query_keypoints if limit is None else limit
        if 0 < limit < len(desc):
            sel = np.sort(np.argsort(-features.scores, kind="stable")[:limit])
            desc = desc[sel]
        return _Query(camera.undistort_points(features.keypoints), desc, sel)

    def _solve(self, per_kf: list, kpts_ideal: np.ndarray, camera: Camera, t: dict) -> "_Solved":
        """PnP on the aggregated correspondences of all candidates (DeViLoc), or on the best single keyframe's
        (``aggregation`` off, PNLP)."""
        t3 = time.perf_counter()
        K = camera.K
        if self.config.aggregation:
            corr = self._aggregate(per_kf, kpts_ideal)
            t["aggregation"] = _ms(t3)
            t4 = time.perf_counter()
            best = self._pnp(corr, K, camera.size)
            t["pnp"] = _ms(t4)
        else:
            t["aggregation"] = 0.0
            best = None
            for e in per_kf:  # best single keyframe by inlier count (PNLP)
                cand_res = self._pnp(self._aggregate([e], kpts_ideal), K, camera.size)
                if best is None or _inliers(cand_res[0]) > _inliers(best[0]):
                    best = cand_res
            t["pnp"] = _ms(t3)
        return _Solved(*best) if best is not None else _Solved(None, 0, None)

    def _gate_chain(self, res: LocalizationResult, pose: "_Pose", solved: "_Solved", per_kf: list, q: "_Query",
                    near: list, features: Features, camera: Camera, prior: PosePrior | None, t: dict,
                    rival: list, second: list, support: list) -> list:
        """The gates (core/gates.py) of a PnP pose, in order of cost, as thunks for :func:`gates.first_failure`.
        The place check's rival (or None) is appended to ``rival`` when it runs, the second hypothesis (or None) to
        ``second``, (pose, supporting keyframes) to ``support`` when the place check looked them up."""
        cfg, n_inl = self.config, pose.num_inliers
        T = pose.T_map_from_cam
        pos_sigma = float(np.sqrt(max(np.trace(pose.cov[:3, :3]), 0.0))) if np.all(np.isfinite(pose.cov)) else np.inf

        def place_check():
            if prior is not None and prior.tracked and not cfg.ambiguity_place_tracked:
                rival.append(None)  # an accepted place's odometry window: the tracker's publish gate decides
                t["place_check"] = 0.0
                return None
            # the map's analysis speaks for its own views: a dim or noisy image (keypoint-confidence factor > 1,
            # blur aside) mismatches in ways no keyframe view does, so it is checked (night images on a 2-session
            # hall map: 4 more wrong poses without this condition)
            if cfg.ambiguity_place_trust_map and self.db.alias_inliers is not None and not self._dim:
                support.append((T, self._support_counts({int(e.keyframe): e for e in per_kf}, q.kpts_ideal, camera.K,
                                                        T)))
                if unique_place(self.db.alias_inliers, support[0][1]):  # the map fits these views nowhere else
                    rival.append(None)
                    t["place_check"] = 0.0
                    return None
            n_lg = cfg.lighterglue_keyframes if cfg.matcher == "lighterglue" else 0
            matched = {int(e.keyframe): e for e in per_kf[n_lg:]}  # mutual-NN matches made already
            rival.append(self._rival_place(features, q.desc, q.sel, q.kpts_ideal, camera.K, camera.size, T, n_inl,
                                           prior, t, matched, pose.z_med) if cfg.ambiguity_top_k > 0 else None)
            return gates.ambiguous_place(rival[0], n_inl, cfg.ambiguity_place_ratio)

        def second_hypothesis():
            second.append(self._second_hypothesis(solved.corr, solved.pnp, camera.K, camera.size, prior))
            return gates.ambiguous(second[0], n_inl)

        return [
            lambda: gates.few_inliers(n_inl, cfg.min_inliers),
            lambda: gates.low_inlier_ratio(n_inl, solved.num_matches, cfg.min_inlier_ratio),
            lambda: gates.reprojection(res.median_reproj_px, self.max_median_reproj_px()),
            lambda: gates.uncertain(pos_sigma, cfg.max_position_sigma_m),
            lambda: gates.small_coverage(inlier_coverage(pose.inlier_xyz, T, camera), cfg.min_inlier_coverage)
            if cfg.min_inlier_coverage > 0 else None,
            lambda: gates.implausible(self._keyframe_distance_ratio(T, pose.z_med, near),
                                      cfg.max_keyframe_distance_ratio),
            lambda: gates.epipolar(self._epipolar_disagreement(per_kf, q.kpts_ideal, camera.K, T, t),
                                   cfg.epipolar_max_rot_deg) if self.epipolar_check_on else None,
            second_hypothesis if cfg.ambiguity_ratio > 0 else lambda: None,
            place_check,
        ]

    def _refined(self, pose: "_Pose", res: LocalizationResult, per_kf: list, features: Features,
                 kpts_ideal: np.ndarray, camera: Camera) -> "_Pose":
        """Guided matching from an accepted pose (``guided_radius_px``): the refined pose when it is the same
        hypothesis, else the pose as it was."""
        refined = self._guided(pose.pnp, per_kf, features, kpts_ideal, camera.K, camera.size)
        if refined is None:
            return pose
        g, gcorr = refined
        new = _Pose.of(g, gcorr, res.keyframes_used, self)
        if not self._one_hypothesis(*pose_errors(new.T_map_from_cam, pose.T_map_from_cam)):
            return pose  # another pose, not a refinement
        res.num_inliers = g.num_inliers
        res.median_reproj_px = float(np.median(g.reproj_px[g.inliers]))
        return new

    # ---------------------------------------------------------------------------------------------
    def _match(self, desc_q: np.ndarray, sel: np.ndarray | None, keyframes) -> list:
        """``[(keyframe, matches [M x 2] (query keypoint, keyframe point), similarities [M])]`` per keyframe;
        ``sel``: the query keypoints ``desc_q`` holds (None: all)."""
        self._matcher.ratio, self._matcher.mutual = self.match_ratio, self.config.mutual
        per_kf = []
        for k, (m, s) in zip(keyframes, self._matcher.match(desc_q, keyframes)):
            if sel is not None:
                m[:, 0] = sel[m[:, 0]]
            per_kf.append(KeyframeMatches(k, m, s))
        return per_kf

    def _match_lighterglue(self, q: "_Query", keyframes, size: tuple[int, int]) -> list:
        """:meth:`_match`'s result for ``keyframes`` by LighterGlue: the query keypoints of ``q`` against each
        keyframe's keypoints that have 3D; similarities are match probabilities."""
        uv_q = q.kpts_ideal if q.sel is None else q.kpts_ideal[q.sel]
        per_kf = []
        for k in keyframes:
            m, s = self._lighterglue.match(uv_q, q.desc, size, self._kf_uv[k], self._kf_desc.get(k),
                                           self.db.cameras[k].size)
            if q.sel is not None:
                m[:, 0] = q.sel[m[:, 0]]
            per_kf.append(KeyframeMatches(k, m, s))
        return per_kf

    def _rival_place(self, features: Features, desc_q, sel, kpts_ideal, K, size, T_map_from_cam: np.ndarray,
                     n_inliers: int, prior: PosePrior | None, timings: dict, matched: dict | None = None,
                     z_med: float = 0.0):
        """(inliers, metres, degrees, position offset [3], T_map_from_cam) of the best pose at another place than
        ``T_map_from_cam``, from the retrieved keyframes far from it (``ambiguity_top_k``, ``ambiguity_place_m``)
        or, with ``ambiguity_place_facing_deg``, close by and looking away, or None. A whole view repeated
        elsewhere (a look-alike room 3.6 m away, the same corridor both ways) often has all of the top-k at one of
        the two places: the keyframes of the other one are further down the retrieval list. The far keyframes and
        those facing away are solved as two groups, each with its own ``ambiguity_place_keyframes`` slots: mixed,
        the keyframes facing away took the slots of a look-alike further away. A prior that rules out the other
        pose (and not this one) settles it: None. ``matched``: keyframe -> :meth:`_match` result of this query
        made already (reused: a keyframe's matches do not depend on the others matched with it). Matched keyframes
        whose matches support the pose (:meth:`_supporting`) show its own place and are left out. A pose closer than
        :data:`PLACE_MIN_DEPTH_FRACTION` x ``z_med`` (the pose's median inlier depth) and 5 deg is the same place
        (a weak solve from keyframes 30 m away), not another one."""
        cfg = self.config
        t0 = time.perf_counter()
        try:
            ids, _ = self.index.search(features.global_desc, cfg.ambiguity_top_k, None)
            matched = dict(matched or {})
            ids = ids[~np.isin(ids, self._supporting(matched, kpts_ideal, K, T_map_from_cam))]
            groups = [g[:cfg.ambiguity_place_keyframes] for g in self._other_places(ids, T_map_from_cam)]
            todo = list(dict.fromkeys(int(k) for g in groups for k in g if int(k) not in matched))
            if todo:  # all groups' keyframes in one matcher call (the same matches as one call per group)
                matched.update(zip(todo, self._match(desc_q, sel, todo)))
                same = self._supporting({k: matched[k] for k in todo}, kpts_ideal, K, T_map_from_cam)
                groups = [g for g in (g[~np.isin(g, same)] for g in groups) if len(g)]
            best = None
            for group in groups:
                alt = self._solve_rival(group, kpts_ideal, K, size, T_map_from_cam, n_inliers, prior, matched,
                                        PLACE_MIN_DEPTH_FRACTION * z_med)
                if alt is not None and (best is None or alt[0] > best[0]):
                    best = alt  # (no early exit on a failing rival: the best one goes to the tracker as hypothesis)
            return best
        finally:
            timings["place_check"] = _ms(t0)

    def _supporting(self, matched: dict, kpts_ideal: np.ndarray, K: np.ndarray, T_map_from_cam: np.ndarray) -> list:
        """The keyframes among ``matched`` (keyframe -> its matches with the query) whose matches support the pose:
        at least ``min_inliers`` and :data:`PLACE_SUPPORT_FRACTION` of them reproject within the RANSAC threshold.
        They show the pose's own place, however far they are (a keyframe 1.2 m behind the camera in a corridor):
        the place check does not spend its slots on them."""
        return list(self._support_counts(matched, kpts_ideal, K, T_map_from_cam))

    def _support_counts(self, matched: dict, kpts_ideal: np.ndarray, K: np.ndarray,
                        T_map_from_cam: np.ndarray) -> dict[int, int]:
        """:meth:`_supporting`'s keyframes, each with its matches that reproject within the RANSAC threshold."""
        cfg = self.config
        T_cam_from_map = invert_T(T_map_from_cam)
        out = {}
        for k, e in matched.items():
            n = len(e.matches)
            if n < cfg.min_inliers:
                continue
            err = reprojection_errors(T_cam_from_map, K, kpts_ideal[e.matches[:, 0]], self._kf_xyz[k][e.matches[:, 1]])
            good = int(np.count_nonzero(err <= cfg.ransac_reproj_px * self._px_scale))
            if good >= cfg.min_inliers and good >= PLACE_SUPPORT_FRACTION * n:
                out[int(k)] = good
        return out

    def _solve_rival(self, ids: np.ndarray, kpts_ideal, K, size, T_map_from_cam: np.ndarray, n_inliers: int,
                     prior: PosePrior | None, matched: dict, same_place_m: float = 0.0):
        """:meth:`_rival_place`'s result for one group of keyframes solved together (``matched``: keyframe -> its
        matches with the query, for every keyframe of the group), or None."""
        cfg = self.config
        corr = self._aggregate([matched[int(k)] for k in ids], kpts_ideal)
        # a rival below a tenth of the pose's inliers would neither fail it nor widen its covariance much
        need = max(cfg.min_inliers, int(np.ceil(0.1 * n_inliers)))
        if len(corr) < max(4, cfg.min_matches, need):  # inliers are a subset of the correspondences
            return None
        alt = solve_pnp(corr.uv, corr.xyz, K, size, self._bounded_pnp_config(need, len(corr)))
        if not alt.success or alt.num_inliers < need:
            return None
        T_alt = invert_T(alt.T_cam_from_world)
        dt, dr = pose_errors(T_alt, T_map_from_cam)
        if self._one_hypothesis(dt, dr, same_place_m):
            return None
        if prior is not None and not prior.rules_out(T_map_from_cam) and prior.rules_out(T_alt):
            return None
        return alt.num_inliers, dt, dr, T_alt[:3, 3] - T_map_from_cam[:3, 3], T_alt

    def _other_places(self, keyframes: np.ndarray, T_map_from_cam: np.ndarray) -> list[np.ndarray]:
        """The groups of ``keyframes`` (in their order) that may show another place than the pose, each non-empty:
        those farther than ``ambiguity_place_m``, and with ``ambiguity_place_facing_deg`` the others looking more
        than that many degrees away from the pose's direction."""
        cfg = self.config
        far = np.linalg.norm(self.db.centers[keyframes] - T_map_from_cam[:3, 3], axis=1) > cfg.ambiguity_place_m
        groups = [keyframes[far]]
        if cfg.ambiguity_place_facing_deg > 0:
            z = self.db.T_map_from_cam[keyframes, :3, 2] @ T_map_from_cam[:3, 2]
            groups.append(keyframes[~far & (z < np.cos(np.radians(cfg.ambiguity_place_facing_deg)))])
        return [g for g in groups if len(g)]

    def _aggregate(self, per_kf, kpts_ideal) -> Correspondences:
        cfg = self.config
        q, xyz, conf, ctr = [], [], [], []
        for k, m, s in per_kf:
            if len(m) == 0:
                continue
            q.append(m[:, 0])
            xyz.append(self._kf_xyz[k][m[:, 1]])
            conf.append(s.astype(np.float64) * self._kf_conf[k][m[:, 1]] + 1e-6)
            ctr.append(np.repeat(self.db.centers[k][None], len(m), axis=0))
        if not q:
            return aggregate_correspondences(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros((0, 3)),
                                             np.zeros(0), np.zeros((0, 3)))
        q = np.concatenate(q)
        return aggregate_correspondences(kpts_ideal[q], q, np.concatenate(xyz), np.concatenate(conf),
                                         np.concatenate(ctr), cfg.agg_cell_px, cfg.agg_rel_tol)

    def _pnp(self, corr: Correspondences, K, size):
        cfg = self.config
        if len(corr) < max(4, cfg.min_matches):
            return None, len(corr), corr
        return solve_pnp(corr.uv, corr.xyz, K, size, self._pnp_config()), len(corr), corr

    def _bounded_pnp_config(self, need: int, n: int) -> PnPConfig:
        """The PnP settings for a search where only a pose with >= ``need`` of ``n`` correspondences as inliers
        matters: RANSAC needs no more iterations than it takes to draw a minimal (3-point) sample of its inliers with
        the PnP confidence (10-15 ms less per query where most correspondences are wrong matches, e.g. Strecha)."""
        pcfg = self._pnp_config()
        p_sample = (need / max(n, 1)) ** 3
        enough = np.log(1 - pcfg.confidence) / np.log1p(-p_sample) if p_sample < 1 else 1.0
        pcfg.max_iterations = int(min(pcfg.max_iterations, max(100, np.ceil(enough))))
        return pcfg

    def _pnp_config(self) -> PnPConfig:
        cfg = self.config
        return PnPConfig(backend=cfg.pnp_backend, reproj_px=cfg.ransac_reproj_px * self._px_scale,
                         max_iterations=cfg.ransac_iterations, polish_px=cfg.pnp_polish_px * self._px_scale)

    def _guided(self, pnp, per_kf, features: Features, kpts_ideal: np.ndarray, K: np.ndarray, size):
        """Guided matching (``guided_radius_px``): the points of the contributing keyframes, projected with the
        PnP pose, each matched to the most similar query keypoint within the radius (at least as similar as the
        weakest tenth of the first matches), then PnP again on those correspondences. (pnp, correspondences), or
        None when that does not give more inliers. Query keypoints are looked up in a pixel grid (the detector's
        NMS keeps them apart), so the cost is a few milliseconds."""
        cfg = self.config
        R, tv = pnp.T_cam_from_world[:3, :3], pnp.T_cam_from_world[:3, 3]
        desc_q = np.asarray(features.descriptors, np.float32)
        used = [(k, m) for k, m, _ in per_kf if len(m) >= MIN_KEYFRAME_MATCHES]
        if not used or len(kpts_ideal) == 0:
            return None
        dm_of = {k: self._kf_desc.get(k) for k, _ in used}  # gathered once (a copy when the store has row indices)
        first = np.concatenate([np.einsum("nd,nd->n", desc_q[m[:, 0]], dm_of[k][m[:, 1]].astype(np.float32))
                                for k, m in used])
        floor = float(np.percentile(first, 10))
        w, h = size
        grid = np.full((h, w), -1, np.int32)  # query keypoint index per pixel
        kxy = np.round(kpts_ideal).astype(np.int64)
        inside = (kxy[:, 0] >= 0) & (kxy[:, 0] < w) & (kxy[:, 1] >= 0) & (kxy[:, 1] < h)
        grid[kxy[inside, 1], kxy[inside, 0]] = np.flatnonzero(inside)
        r = float(cfg.guided_radius_px) * self._px_scale
        ri = int(np.ceil(r))
        dx, dy = np.meshgrid(np.arange(-ri, ri + 1), np.arange(-ri, ri + 1))
        disk = dx * dx + dy * dy <= (r + 0.5) ** 2
        dx, dy = dx[disk], dy[disk]
        q_all, xyz_all, conf_all, ctr_all = [], [], [], []
        for k, _ in used:
            X = self._kf_xyz[k]
            Xc = X @ R.T + tv
            z = Xc[:, 2]
            ok = np.isfinite(Xc).all(axis=1) & (z > 1e-3)
            idx = np.flatnonzero(ok)
            uv = Xc[idx, :2] / z[idx, None] * (K[0, 0], K[1, 1]) + (K[0, 2], K[1, 2])
            keep = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            idx, uv = idx[keep], uv[keep]
            if len(idx) == 0:
                continue
            px = np.clip(np.round(uv[:, 0]).astype(np.int64)[:, None] + dx[None], 0, w - 1)
            py = np.clip(np.round(uv[:, 1]).astype(np.int64)[:, None] + dy[None], 0, h - 1)
            cand = grid[py, px]  # [P x O] query keypoint or -1
            pi, oi = np.nonzero(cand >= 0)
            qi = cand[pi, oi]
            close = np.sum((kpts_ideal[qi] - uv[pi]) ** 2, axis=1) <= r * r
            pi, qi = pi[close], qi[close]
            if len(pi) == 0:
                continue
            sims = np.einsum("nd,nd->n", dm_of[k][idx[pi]].astype(np.float32), desc_q[qi])
            order = np.lexsort((-sims, pi))  # per projected point, the most similar keypoint first
            _, firsts = np.unique(pi[order], return_index=True)
            sel = order[firsts]
            sel = sel[sims[sel] >= floor]
            if len(sel) == 0:
                continue
            pts = idx[pi[sel]]
            q_all.append(qi[sel])
            xyz_all.append(X[pts])
            conf_all.append(sims[sel].astype(np.float64) * self._kf_conf[k][pts] + 1e-6)
            ctr_all.append(np.repeat(self.db.centers[k][None], len(sel), axis=0))
        if not q_all:
            return None
        q = np.concatenate(q_all)
        corr = aggregate_correspondences(kpts_ideal[q], q, np.concatenate(xyz_all), np.concatenate(conf_all),
                                         np.concatenate(ctr_all), cfg.agg_cell_px, cfg.agg_rel_tol)
        if len(corr) < max(4, cfg.min_matches):
            return None
        refined = refine_pnp(corr.uv, corr.xyz, K, size, pnp.T_cam_from_world, self._pnp_config())
        if not refined.success or refined.num_inliers <= pnp.num_inliers:
            return None
        return refined, corr

    def _one_hypothesis(self, dt: float, dr: float, min_dist_m: float = 0.0) -> bool:
        """Two poses ``dt`` metres and ``dr`` degrees apart are one hypothesis: closer than ``ambiguity_min_dist_m``
        (or ``min_dist_m`` when that is larger) and 5 deg."""
        return dt < max(self.config.ambiguity_min_dist_m, min_dist_m) and dr < 5.0

    @property
    def epipolar_check_on(self) -> bool:
        """Whether the epipolar check runs: ``epipolar_check`` "always", or "auto" on a map of learned points."""
        mode = self.config.epipolar_check
        return mode == "always" or (mode == "auto" and self._point_source == "learned")

    def _epipolar_disagreement(self, per_kf, kpts_ideal, K, T_map_from_cam, timings: dict | None = None
                               ) -> tuple[float, int] | None:
        """(degrees, keyframes) when the query's relative poses to its retrieved keyframes agree on an orientation
        that is more than ``epipolar_max_rot_deg`` from the pose's, else None.

        Each keyframe with enough matches gives an essential matrix (five-point RANSAC on all its matches) and so
        an orientation of the query that does not depend on the map's 3D points. The orientations are grouped:
        the group with the most essential-matrix inliers (within the tolerance of one of them) decides, when it
        holds at least half of all inliers (and twice one keyframe's minimum). No decision (too few matches, no
        parallax, or a split vote) passes.
        On the generated tuning corridors with learned-depth maps, PnP poses ~0.35 m / 15 deg off (a near-planar
        wall: two poses explain its points) were refused while the essential matrices gave the right orientation
        within ~2 deg (docs/RESULTS.md "Monocular maps"). Cost: one five-point RANSAC per keyframe, ~30 ms per
        query for 5 keyframes on a 2-core CPU (``timings["epipolar"]``)."""
        t0 = time.perf_counter()
        try:
            return self._epipolar_vote(per_kf, kpts_ideal, K, T_map_from_cam)
        finally:
            if timings is not None:
                timings["epipolar"] = _ms(t0)

    def _epipolar_vote(self, per_kf, kpts_ideal, K, T_map_from_cam) -> tuple[float, int] | None:
        tol = self.config.epipolar_max_rot_deg
        lines = []
        ranked = sorted(per_kf, key=lambda e: -len(e[1]))[:self.config.epipolar_max_keyframes]
        for k, m, _ in ranked:
            if len(m) < RELPOSE_CHECK.min_matches:
                continue
            view = KeyframeView(int(k), self.db.T_map_from_cam[k], self.db.cameras[k].K, self._kf_uv[k][m[:, 1]],
                                kpts_ideal[m[:, 0]])
            est = estimate_line(view, K, RELPOSE_CHECK)
            if est.ok:
                lines.append(est)
        if not lines:
            return None
        R = [e.R_map_from_q for e in lines]
        n = np.array([e.num_inliers for e in lines], np.float64)
        close = np.array([[rotation_error_deg(a, b) < tol for b in R] for a in R])
        support = close @ n
        best = int(np.argmax(support))
        if support[best] < max(0.5 * n.sum(), 2 * RELPOSE_CHECK.min_inliers):
            return None
        members = np.flatnonzero(close[best])
        R_epi = average_rotations([R[i] for i in members], n[members])
        d = rotation_error_deg(R_epi, T_map_from_cam[:3, :3])
        return (d, len(members)) if d > tol else None

    def _second_hypothesis(self, corr: Correspondences, pnp, K, size, prior: PosePrior | None):
        """(inliers, metres, degrees, T_map_from_cam) of a distinct pose supported by the correspondences ``pnp`` left
        out, or None. Repeated structure (tiled walls, identical doors) lets PnP find a consistent pose one period away
        from the true one; then both poses have strong support and neither can be trusted, unless a prior
        rules the second one out (it lies beyond 3 sigma of the prior while the first lies within)."""
        cfg = self.config
        rest = ~pnp.inliers
        need = max(cfg.min_inliers, int(np.ceil(cfg.ambiguity_ratio * pnp.num_inliers)))
        if rest.sum() < need:
            return None
        alt = solve_pnp(corr.uv[rest], corr.xyz[rest], K, size, self._bounded_pnp_config(need, int(rest.sum())))
        if not alt.success or alt.num_inliers < need:
            return None
        T_main, T_alt = invert_T(pnp.T_cam_from_world), invert_T(alt.T_cam_from_world)
        dt, dr = pose_errors(T_alt, T_main)
        if self._one_hypothesis(dt, dr):
            return None
        if prior is not None and not prior.rules_out(T_main) and prior.rules_out(T_alt):
            return None
        return alt.num_inliers, dt, dr, T_alt

    def _keyframe_distance_ratio(self, T_map_from_cam: np.ndarray, z_med: float, keyframes: list) -> float:
        """Distance from the pose to the nearest of ``keyframes``, over the median inlier depth ``z_med``."""
        d = np.linalg.norm(self.db.centers[keyframes] - T_map_from_cam[:3, 3], axis=1)
        return float(np.min(d)) / max(z_med, 1e-6)

    def max_median_reproj_px(self) -> float:
        """The median-reprojection gate in use for the current query: the config's, else the map's point-source
        default, scaled to the query's resolution (REFERENCE_SIDE_PX)."""
        v = self.config.max_median_reproj_px
        return (v if v > 0 else MAX_MEDIAN_REPROJ_PX[self._point_source]) * self._px_scale

    @staticmethod
    def default_map_point_sigma_rel(db: MapDatabase, point_source: str) -> float:
        """What ``map_point_sigma_rel`` < 0 (the default) means for this map: its own point uncertainty times
        TRIANGULATED_SIGMA_SCALE for a triangulated map that records one, else MAP_POINT_SIGMA_REL of its points."""
        if point_source == "triangulate" and db.point_sigma_rel is not None:
            return TRIANGULATED_SIGMA_SCALE * db.point_sigma_rel
        return MAP_POINT_SIGMA_REL[point_source]

    def map_point_sigma_rel(self) -> float:
        """The relative map-point error used by the covariance: the config's, else the map's default."""
        return self.config.map_point_sigma_rel if self.config.map_point_sigma_rel >= 0 else self._map_sigma_rel

    def detection_score_factor(self, features: Features, image_quality: bool = True) -> float:
        """The covariance's keypoint-confidence factor for an image's features: the largest of the detection scores'
        (DETECTION_SCORE_COVARIANCE), the low-light floor (LOW_LIGHT_COVARIANCE_FACTOR) and, unless
        ``image_quality`` is False, the blur and darkness factors (BLUR_COVARIANCE, DARK_COVARIANCE); >= 1."""
        f = LOW_LIGHT_COVARIANCE_FACTOR if features.low_light else 1.0
        ref = DETECTION_SCORE_COVARIANCE.get(self.db.extractor_identity.get("name"))
        if ref is not None and len(features):
            f = max(f, keypoint_confidence_factor(float(np.median(features.scores)), *ref))
        return max(f, image_quality_factor(features.sharpness, features.brightness)) if image_quality else f

    def _covariance(self, pnp_cov: np.ndarray, z_med: float, n_keyframes: int,
                    score_factor: float | None = None) -> np.ndarray:
        """Pose covariance: the reprojection term of PnP (scaled per point source, PNP_COVARIANCE_SCALE) plus a
        map term.

        The reprojection term ``sigma^2 (J^T J)^-1`` shrinks like 1/inliers, but the errors of map points are
        not independent: the points of one keyframe share its depth-scale error and its pose error. The map
        term models them as one independent random offset per contributing keyframe, of 1-sigma
        ``map_point_sigma_rel`` x the median inlier depth: position variance ``(rho z)^2 / n_keyframes`` per
        axis. ``rho`` and the scale per point source were fitted on generated tuning and training scenes (never
        the benchmark scenes), see docs/RESULTS.md "Covariance calibration". The reprojection term also grows for
        images whose keypoints the detector is unsure of (DETECTION_SCORE_COVARIANCE: ``score_factor``, by default
        the query's).
        """
        f = self._score_factor if score_factor is None else score_factor
        cov = pnp_cov * (PNP_COVARIANCE_SCALE[self._point_source] * f)
        rho = self.map_point_sigma_rel()
        if rho > 0 and np.all(np.isfinite(cov)):
            cov[:3, :3] += np.eye(3) * (rho * z_med) ** 2 / max(n_keyframes, 1)
        return cov * self.config.covariance_scale

    def _localize_without_pnp(self, res: LocalizationResult, features: Features,
                              camera: Camera) -> LocalizationResult:
        """``method`` "retrieval" or "2d2d" (see :func:`reloc_ros.core.relpose2d2d.pose_without_3d`); the
        position-uncertainty gate applies to both."""
        cfg = self.config
        out = pose_without_3d(self.db, cfg.method, features, camera, res.candidates, self.match_ratio, cfg.mutual,
                              timings=res.timings_ms)
        res.num_matches, res.num_inliers = out.num_matches, out.num_inliers
        if not out.success:
            res.fail(FailureCode.NO_POSE, f"{cfg.method}: {out.reason}")
            return res
        cov = out.covariance * cfg.covariance_scale
        pos_sigma = float(np.sqrt(max(np.trace(cov[:3, :3]), 0.0)))
        if pos_sigma > cfg.max_position_sigma_m:
            res.fail(FailureCode.UNCERTAIN,
                     f"position uncertainty {pos_sigma:.2f} m > max_position_sigma_m {cfg.max_position_sigma_m}")
            return res
        res.status = Status.LOCALIZED
        res.T_map_from_cam = out.T_map_from_cam
        res.covariance = cov
        return res

    @staticmethod
    def _finish(res: LocalizationResult, t0: float) -> LocalizationResult:
        res.timings_ms["total"] = _ms(t0)
        return res


def _inliers(pnp) -> int:
    return pnp.num_inliers if pnp is not None and pnp.success else -1


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
