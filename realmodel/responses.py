"""The `responses.jsonl` of an evaluation (DESIGN.md §5: one sample per query, resumable).

One JSON line per (query, sample): id, task, a, b, answer, prompt, in_distribution, sample,
response, n_tokens, truncated, parse (= ParsedResponse.to_dict()). Lines are appended and
flushed batch by batch; a line cut by a crash is skipped on reading; a rewrite goes to a
temporary file beside the file that replaces it (os.replace), so a crash during the rewrite
leaves the old file whole. A query is the resume unit: it counts only with all its samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESPONSES = "responses.jsonl"


def read_responses(path: str | Path) -> list[dict[str, Any]]:
    """Valid lines of a responses.jsonl (a line cut by a crash is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def write_responses_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write `rows` as JSON lines to a temporary file beside `path`, fsync, then os.replace:
    a reader (or a crash) sees the old file or the new one, never a truncated one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def complete_rows(rows: list[dict[str, Any]], samples: int) -> list[dict[str, Any]]:
    """Rows of queries whose `samples` samples are all present (a query is the resume unit)."""
    by_id: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(row["id"], {})[int(row["sample"])] = row
    return [r for group in by_id.values() if len(group) >= samples
            for j, r in sorted(group.items()) if j < samples]
