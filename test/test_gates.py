"""The localizer's gates (core/gates.py): each one's threshold, and the chain stops at the first failure."""

from __future__ import annotations

from reloc_ros.core import gates
from reloc_ros.core.status import FailureCode


def test_each_gate_fails_past_its_threshold_only():
    assert gates.few_inliers(14, 15)[0] == FailureCode.FEW_INLIERS and gates.few_inliers(15, 15) is None
    assert gates.low_inlier_ratio(9, 100, 0.1)[0] == FailureCode.LOW_INLIER_RATIO
    assert gates.low_inlier_ratio(10, 100, 0.1) is None
    assert gates.reprojection(4.2, 4.0)[0] == FailureCode.REPROJECTION and gates.reprojection(4.0, 4.0) is None
    assert gates.uncertain(2.1, 2.0)[0] == FailureCode.UNCERTAIN and gates.uncertain(2.0, 2.0) is None
    assert gates.small_coverage(0.05, 0.1)[0] == FailureCode.SMALL_COVERAGE and gates.small_coverage(0.1, 0.1) is None
    assert gates.implausible(1.0, 0.9)[0] == FailureCode.IMPLAUSIBLE
    assert gates.implausible(5.0, 0.0) is None  # 0 = no check
    assert gates.epipolar((7.0, 3), 5.0)[0] == FailureCode.EPIPOLAR and gates.epipolar(None, 5.0) is None
    assert gates.ambiguous((80, 1.2, 3.0), 100)[0] == FailureCode.AMBIGUOUS and gates.ambiguous(None, 100) is None
    rival = (25, 3.6, 0.4, None)
    assert gates.ambiguous_place(rival, 100, 0.2)[0] == FailureCode.AMBIGUOUS_PLACE
    assert gates.ambiguous_place(rival, 200, 0.2) is None  # a weaker rival only widens the covariance
    for failure in (gates.few_inliers(1, 15), gates.ambiguous_place(rival, 100, 0.2)):
        assert isinstance(failure[1], str) and len(failure[1]) > 20


def test_first_failure_runs_the_gates_in_order_and_stops():
    ran = []

    def gate(name, result):
        def run():
            ran.append(name)
            return result
        return run

    fail = (FailureCode.REPROJECTION, "median reprojection error 9.0 px > 4.0 px")
    assert gates.first_failure([gate("a", None), gate("b", fail), gate("c", (FailureCode.EPIPOLAR, "x"))]) == fail
    assert ran == ["a", "b"]  # the (expensive) later gate did not run
    ran.clear()
    assert gates.first_failure([gate("a", None), gate("b", None)]) is None and ran == ["a", "b"]
