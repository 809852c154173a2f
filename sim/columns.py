"""Names of the per-task and per-term columns of history and results tables.

Tables are wide, one column per (statistic, key): `p[T1]`, `q2[T1]`, `acc[T4]`,
`g_s[kl]`, `ratio[total]`. This module is the one place that builds such a name and the one
place that reads it back, so no writer or reader slices strings by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_COLUMN = re.compile(r"^(?P<stat>[^\[\]]+)\[(?P<key>[^\[\]]+)\]$")


def column(stat: str, key: str) -> str:
    """The column of statistic `stat` for task or term `key`, e.g. column("p", "T1") = "p[T1]"."""
    if not stat or not key or any(ch in stat + key for ch in "[]"):
        raise ValueError(f"bad column parts {stat!r}, {key!r}")
    return f"{stat}[{key}]"


def split_column(name: str) -> tuple[str, str] | None:
    """(stat, key) of a column built by `column`, else None."""
    m = _COLUMN.match(name)
    return (m["stat"], m["key"]) if m else None


def keyed_columns(names: Iterable[str], stat: str) -> dict[str, str]:
    """{key: column} of the columns of statistic `stat` among `names`, in their order."""
    out = {}
    for name in names:
        parts = split_column(name)
        if parts is not None and parts[0] == stat:
            out[parts[1]] = name
    return out
