"""Two-stage accuracy formulas and calibration estimators (DESIGN §4)."""

from __future__ import annotations

import numpy as np
import pytest

from core.calibration import TrajectoryCounts, calibrate
from core.twostage import (
    accuracy_forced_stop,
    accuracy_infinite_horizon,
    two_stage_accuracy,
)
from sim.simulate import sample_trajectories, simulate_and_calibrate, trajectory_counts


def test_forced_stop_reduces_to_p_at_k1_and_approaches_infinite_horizon():
    p, q1, q2 = 0.4, 0.8, 0.7
    assert accuracy_forced_stop(p, q1, q2, 1) == pytest.approx(p)
    assert accuracy_forced_stop(p, q1, q2, 200) == pytest.approx(
        accuracy_infinite_horizon(p, q1, q2), abs=1e-12)


def test_forced_stop_formula_by_direct_recursion():
    # Acc_K by dynamic programming over attempts, independent of the closed form
    def dp(p, q1, q2, k):
        if k == 1:
            return p
        stop_right = p * q1
        resample = p * (1 - q1) + (1 - p) * q2
        return stop_right + resample * dp(p, q1, q2, k - 1)

    rng = np.random.default_rng(0)
    for _ in range(50):
        p, q1, q2 = rng.random(3)
        k = int(rng.integers(1, 12))
        assert accuracy_forced_stop(p, q1, q2, k) == pytest.approx(dp(p, q1, q2, k), rel=1e-12)


def test_r_equal_one_has_no_division_by_zero():
    assert accuracy_forced_stop(0.0, 0.0, 1.0, 5) == 0.0
    assert accuracy_forced_stop(1.0, 0.0, 0.0, 5) == 1.0


@pytest.mark.parametrize("bad", [(-0.1, 0.5, 0.5), (0.5, 1.5, 0.5), (0.5, 0.5, float("nan"))])
def test_probabilities_outside_unit_interval_are_rejected(bad):
    with pytest.raises(ValueError, match="probability"):
        two_stage_accuracy(*bad)


@pytest.mark.parametrize("truth", [(0.6, 0.9, 0.8), (0.2, 0.5, 0.95), (0.8, 0.99, 0.3)])
def test_calibration_recovers_known_parameters_within_its_cis(truth):
    p, q1, q2 = truth
    k = 8
    hits = 0
    seeds = range(20)
    for seed in seeds:
        res = simulate_and_calibrate(p, q1, q2, k, 3000, seed=seed, n_boot=200)
        for key, value in (("p_hat", p), ("q1_hat", q1), ("q2_hat", q2),
                           ("predicted_accuracy", float(two_stage_accuracy(p, q1, q2, k)))):
            hits += res[key].ci_low <= value <= res[key].ci_high
    coverage = hits / (4 * len(seeds))
    assert coverage >= 0.85, coverage  # nominal 95%


def test_observed_and_predicted_accuracy_agree_on_simulated_data():
    res = simulate_and_calibrate(0.45, 0.85, 0.75, 8, 50_000, seed=9)
    obs, pred = res["observed_accuracy"], res["predicted_accuracy"]
    assert abs(obs.estimate - pred.estimate) < 2 * (obs.ci_high - obs.estimate)


def test_counts_from_kernel_encoding_match_attempt_lists():
    masks, ns, truncs = sample_trajectories(0.5, 0.6, 0.7, 4, 300, seed=1)
    fast = trajectory_counts(masks, ns, truncs, 4)
    attempts = []
    for m, n in zip(masks, ns, strict=True):
        seq = []
        for k in range(n):
            correct = bool((m >> k) & 1)
            decision = "RESAMPLE" if k < n - 1 else (None if n == 4 else "STOP")
            seq.append((correct, decision))
        attempts.append(seq)
    slow = TrajectoryCounts.from_attempts(attempts, (masks >> (ns - 1)) & 1)
    np.testing.assert_array_equal(fast.matrix(), slow.matrix())


def test_calibrate_rejects_empty_and_bad_settings():
    empty = TrajectoryCounts(*(np.zeros(0, int) for _ in range(10)))
    with pytest.raises(ValueError):
        calibrate(empty)
    counts = TrajectoryCounts.from_attempts([[(True, "STOP")]], [True])
    with pytest.raises(ValueError):
        calibrate(counts, n_boot=0)
