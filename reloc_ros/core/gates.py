"""The gates a PnP pose must pass before it is LOCALIZED, in order of cost: each returns the (FailureCode, reason)
of its failure or None. :func:`first_failure` runs them lazily in order (the expensive ones, which match or solve
again, only when the cheap ones passed). The localizer assembles the chain (Localizer._gate_chain); the figures
behind each threshold are in docs/RESULTS.md ("Wrong-pose gates and out-of-map queries", "Trust").
"""

from __future__ import annotations

from typing import Callable, Iterable

from reloc_ros.core.status import FailureCode

__all__ = ["Failure", "first_failure", "few_inliers", "low_inlier_ratio", "reprojection", "uncertain",
           "small_coverage", "implausible", "epipolar", "ambiguous", "ambiguous_place"]

Failure = tuple[FailureCode, str]


def first_failure(gates: Iterable[Callable[[], Failure | None]]) -> Failure | None:
    """The failure of the first gate that fails (later gates are not run), or None when every gate passes."""
    for gate in gates:
        failure = gate()
        if failure is not None:
            return failure
    return None


def few_inliers(n_inliers: int, min_inliers: int) -> Failure | None:
    if n_inliers < min_inliers:
        return FailureCode.FEW_INLIERS, f"too few inliers ({n_inliers} < min_inliers {min_inliers})"
    return None


def low_inlier_ratio(n_inliers: int, n_matches: int, min_ratio: float) -> Failure | None:
    if n_inliers < min_ratio * n_matches:
        return FailureCode.LOW_INLIER_RATIO, f"inlier ratio {n_inliers / n_matches:.2f} < min_inlier_ratio {min_ratio}"
    return None


def reprojection(median_px: float, max_px: float) -> Failure | None:
    if median_px > max_px:
        return FailureCode.REPROJECTION, f"median reprojection error {median_px:.1f} px > {max_px} px"
    return None


def uncertain(position_sigma_m: float, max_sigma_m: float) -> Failure | None:
    if position_sigma_m > max_sigma_m:
        return (FailureCode.UNCERTAIN,
                f"position uncertainty {position_sigma_m:.2f} m > max_position_sigma_m {max_sigma_m}")
    return None


def small_coverage(coverage: float, min_coverage: float) -> Failure | None:
    if coverage < min_coverage:
        return (FailureCode.SMALL_COVERAGE,
                f"inliers cover {100 * coverage:.1f} % of the image < min_inlier_coverage {100 * min_coverage:g} %: "
                "matches on one small patch (a picture seen elsewhere?)")
    return None


def implausible(distance_ratio: float, max_ratio: float) -> Failure | None:
    if distance_ratio > max_ratio > 0:
        return (FailureCode.IMPLAUSIBLE,
                f"implausible pose: {distance_ratio:.2f} x the scene depth away from every matched keyframe "
                f"(> max_keyframe_distance_ratio {max_ratio})")
    return None


def epipolar(disagreement: tuple[float, int] | None, max_rot_deg: float) -> Failure | None:
    """``disagreement``: (degrees between the essential matrices' orientation and the PnP pose's, keyframes)."""
    if disagreement is not None:
        return (FailureCode.EPIPOLAR,
                f"the essential matrices with {disagreement[1]} retrieved keyframes put the camera's orientation "
                f"{disagreement[0]:.1f} deg from the PnP pose's (> epipolar_max_rot_deg {max_rot_deg}): the map's "
                "3D points fit a wrong pose (learned depth of a near-planar view?)")
    return None


def ambiguous(second: tuple | None, n_inliers: int) -> Failure | None:
    """``second``: (inliers, metres, degrees, pose) of a second pose from the correspondences the pose leaves out."""
    if second is not None:
        return (FailureCode.AMBIGUOUS,
                f"ambiguous: a second pose {second[1]:.2f} m / {second[2]:.1f} deg away has {second[0]} inliers "
                f"(vs {n_inliers}); repeated structure?")
    return None


def ambiguous_place(rival: tuple | None, n_inliers: int, ratio: float) -> Failure | None:
    """``rival``: (inliers, metres, degrees, offset, pose) of the best pose at another place (the place check)."""
    if rival is not None and rival[0] >= ratio * n_inliers:
        return (FailureCode.AMBIGUOUS_PLACE,
                f"ambiguous place: another place {rival[1]:.2f} m / {rival[2]:.1f} deg away has {rival[0]} inliers "
                f"(vs {n_inliers}): a look-alike view; move, or give /initialpose")
    return None
