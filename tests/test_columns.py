"""Column names of history/results tables (sim/columns.py)."""

import pytest

from sim.columns import column, keyed_columns, split_column


def test_columns_round_trip() -> None:
    assert column("q2", "T1") == "q2[T1]"
    assert split_column(column("g_s", "kl")) == ("g_s", "kl")
    assert split_column("L") is None and split_column("a[b][c]") is None
    names = ["L", "acc[T1]", "acc[T10]", "p[T1]", "acc_mean"]
    assert keyed_columns(names, "acc") == {"T1": "acc[T1]", "T10": "acc[T10]"}
    with pytest.raises(ValueError):
        column("p", "T[1]")
