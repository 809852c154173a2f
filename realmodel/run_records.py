"""Reading back the run records of realmodel outputs (`core.records`; DESIGN.md §5: a run is
reproducible from its options, and a resumed run is the run it continues).

Every realmodel output folder holds one `manifest.json` in the `core.records` schema; its
`kind` says what wrote it and `config` is what a resume must match:

    kind        config                                     written by
    eval        the run key: model, tasks, id_tasks, n,    realmodel.evaluation
                split_seed, generation, model_path, weights
    sft, grpo   the run config (`cfg.to_dict()`)           realmodel.training.runs
    data        the `realmodel data` options               realmodel.data_run

This module holds what the writers share when they read a folder again: `previous_record`
(the record of an earlier run there; one-line errors for a folder written by an older
version or by another kind of run), `previous_sessions` (what the earlier sessions of a
resumed run did), `changed_keys`, `weights_fingerprint` (the model part of the eval run key)
and `trained_split_spec` (the held-out rule a trained model was trained with).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.records import RecordError, manifest_path, read_record

SPLIT_SPEC = "split_spec.json"  # beside a trained model (realmodel.training.runs writes it)
TRAINED_KINDS = ("sft", "grpo")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
_SESSION = ("started", "finished", "status", "error", "wall_time_s")


def previous_record(out_dir: str | Path, kinds: Iterable[str], error: type[Exception],
                    hint: str) -> dict[str, Any] | None:
    """The record in `out_dir` (None where there is no manifest.json). A manifest that is
    not a run record of this version (an older layout, another schema, unreadable) or a
    record of a kind not in `kinds` raises `error` with one line ending in `hint` (what to
    do instead, e.g. "pick another --name or delete that directory")."""
    out_dir = Path(out_dir)
    path = manifest_path(out_dir)
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except RecordError as exc:
        detail = str(exc).splitlines()[0].removeprefix(str(path)).lstrip(": ")
        detail = detail.removeprefix("is ").split(" (written")[0]
        raise error(f"{path} is not a run record of this version ({detail}); start a new "
                    f"run: {hint}") from None
    kinds = tuple(kinds)
    if record["kind"] not in kinds:
        raise error(f"{out_dir} holds a {record['kind']} run, not {' or '.join(kinds)}; "
                    f"{hint}")
    return record


def previous_sessions(record: Mapping[str, Any] | None,
                      fields: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The sessions of a resumed run so far: those `record` lists, then `record` itself
    (started, finished, status, error, wall time and the results `fields`). [] for None."""
    if record is None:
        return []
    results = record.get("results", {})
    own = {k: record.get(k) for k in _SESSION} | {k: results.get(k) for k in fields}
    return [*results.get("previous_sessions", []), own]


def changed_keys(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two configs (a key missing on one side too)."""
    return sorted(k for k in set(previous) | set(current)
                  if k not in previous or k not in current or previous[k] != current[k])


def weights_fingerprint(model_path: str | Path) -> str | None:
    """sha256 (16 hex digits) of the name, size and mtime of each weight file in a checkpoint
    directory: changes when the weights are retrained or replaced. None if it has none."""
    path = Path(model_path)
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES) \
        if path.is_dir() else []
    if not files:
        return None
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def trained_split_spec(model: Any) -> dict[str, Any] | None:
    """The split spec a trained model was trained with: `<model>/split_spec.json` (a run's
    `final/`), else `results.split_spec` of the run record `<model>/../manifest.json` of an
    SFT or GRPO run; None if neither is there (or the record is not one of this version)."""
    if not isinstance(model, str | Path):
        return None
    path = Path(model)
    try:
        spec = json.loads((path / SPLIT_SPEC).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        spec = None
    if isinstance(spec, dict):
        return spec
    try:
        record = read_record(manifest_path(path.parent))
    except RecordError:
        return None
    spec = record["results"].get("split_spec") if record["kind"] in TRAINED_KINDS else None
    return spec if isinstance(spec, dict) else None
