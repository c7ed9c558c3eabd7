"""Outcome of a query: LOCALIZED, or FAILED with a code (for programs: /diagnostics ``reason_code``, the ``code``
of ``reloc eval`` records, tests) and a message (for people: what happened and what to do)."""

from __future__ import annotations

import enum

__all__ = ["Status", "FailureCode"]


class Status(str, enum.Enum):
    LOCALIZED = "LOCALIZED"
    FAILED = "FAILED"


class FailureCode(str, enum.Enum):
    """Why a query was not localized (or not published). Values are stable strings."""

    BAD_INPUT = "bad_input"  # the image does not match its camera (size)
    EMPTY_MAP = "empty_map"  # retrieval found no keyframe
    FEW_KEYPOINTS = "few_keypoints"  # too dark, blurred or textureless
    FEW_MATCHES = "few_matches"  # fewer 2D-3D matches than min_matches
    NO_POSE = "no_pose"  # RANSAC (PnP, or the 2D-2D method) found no pose
    FEW_INLIERS = "few_inliers"  # min_inliers
    LOW_INLIER_RATIO = "low_inlier_ratio"  # min_inlier_ratio
    REPROJECTION = "reprojection"  # max_median_reproj_px
    UNCERTAIN = "uncertain"  # max_position_sigma_m
    SMALL_COVERAGE = "small_coverage"  # min_inlier_coverage: matches on one small patch
    IMPLAUSIBLE = "implausible_pose"  # max_keyframe_distance_ratio
    EPIPOLAR = "epipolar"  # epipolar_check: the essential matrices disagree with the PnP orientation
    AMBIGUOUS = "ambiguous"  # a second pose among the correspondences the pose leaves out
    AMBIGUOUS_PLACE = "ambiguous_place"  # another place among the retrieved keyframes explains the image
    UNCONFIRMED = "unconfirmed"  # tracker: the place lacks support or dominance
    NEEDS_MOTION = "needs_motion"  # tracker: consistent, but not yet over enough motion
    INCONSISTENT = "inconsistent"  # tracker: a new place, against the best-supported one
