"""Tests for sim.lengths.parse_lengths (DESIGN.md §2-§3: ratio vs answer length L)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.lengths import parse_lengths


def test_log_spaced_default_16_points_inclusive() -> None:
    values = parse_lengths("10..1000")
    assert values.dtype == np.int64
    assert len(values) == 16
    assert values[0] == 10 and values[-1] == 1000
    assert np.all(np.diff(values) > 0)
    # log-spaced: ratios between neighbours are roughly constant
    ratios = values[1:] / values[:-1]
    assert ratios.max() / ratios.min() < 1.2


def test_points_and_linear_step() -> None:
    assert parse_lengths("10..1000", points=3).tolist() == [10, 100, 1000]
    assert parse_lengths("10..50:10").tolist() == [10, 20, 30, 40, 50]
    assert parse_lengths("10..55:10").tolist() == [10, 20, 30, 40, 50]
    assert parse_lengths("7").tolist() == [7]
    assert parse_lengths("5..5").tolist() == [5]
    # short range: duplicates after rounding are dropped
    assert parse_lengths("1..3", points=16).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "spec", ["10..", "1000..10", "0..5", "a..b", "", "..10", "1..10:0", "-1..5"]
)
def test_malformed_raise_one_line(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_lengths(spec)
    assert "\n" not in str(info.value)


def test_bad_points() -> None:
    with pytest.raises(ValueError):
        parse_lengths("10..100", points=0)
