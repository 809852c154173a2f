"""One run record: the `manifest.json` beside every output (docs/ARCHITECTURE.md).

Every command that writes an output folder describes it with the same schema, written
atomically, so that one reader serves the report, the fit, resumes and people:

    schema        RECORD_SCHEMA (an int; a reader refuses other schemas)
    kind          what wrote it: sweep, train, report, fit, compare, eval, sft, grpo, ...
    status        running | done | failed | interrupted
    config        the run's configuration (its frozen dataclass as a dict)
    inputs        {role: path} of what it read (empty if nothing)
    results       kind-specific headline fields (cells computed, s/step, final model, ...)
    error         one line when status is failed or interrupted, else null
    started, finished, wall_time_s
    packages, git_commit, python, platform   (provenance)

`start_record` writes the record with status "running"; `update_record` merges results (and a
new status) into it; `finish_record` sets the final status, the finish time and the wall time.
A run that ends by an exception records "failed" or "interrupted" with the one-line error
(`record_outcome`), so no manifest stays at "running".
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.provenance import SIM_PACKAGES, git_commit, package_versions, write_json_atomic

RECORD_SCHEMA = 1
MANIFEST = "manifest.json"
STATUSES = ("running", "done", "failed", "interrupted")
FIELDS = ("schema", "kind", "status", "config", "inputs", "results", "error", "started",
          "finished", "wall_time_s", "packages", "git_commit", "python", "platform")


class RecordError(ValueError):
    """A manifest that is missing, unreadable or of another schema (one-line message)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def manifest_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / MANIFEST


def new_record(kind: str, config: Mapping[str, Any], inputs: Mapping[str, Any] | None = None,
               packages: Iterable[str] = SIM_PACKAGES) -> dict[str, Any]:
    """A record with status "running", started now, with provenance filled in."""
    if not kind:
        raise ValueError("a run record needs a kind")
    return {
        "schema": RECORD_SCHEMA, "kind": kind, "status": "running", "config": dict(config),
        "inputs": {k: (None if v is None else str(v)) for k, v in (inputs or {}).items()},
        "results": {}, "error": None, "started": _now(), "finished": None,
        "wall_time_s": None, "packages": package_versions(packages),
        "git_commit": git_commit(), "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_record(out_dir: str | Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and write `record` atomically to `<out_dir>/manifest.json`; returns it."""
    record = dict(record)
    _validate(record, manifest_path(out_dir))
    write_json_atomic(record, manifest_path(out_dir))
    return record


def start_record(out_dir: str | Path, kind: str, config: Mapping[str, Any],
                 inputs: Mapping[str, Any] | None = None,
                 packages: Iterable[str] = SIM_PACKAGES, **results: Any) -> dict[str, Any]:
    """Write a new "running" record (with `results` fields known at the start)."""
    record = new_record(kind, config, inputs, packages)
    record["results"].update(results)
    return write_record(out_dir, record)


def update_record(out_dir: str | Path, status: str | None = None,
                  **results: Any) -> dict[str, Any]:
    """Merge `results` into the stored record's results (and set `status` if given)."""
    record = read_record(out_dir)
    record["results"].update(results)
    if status is not None:
        record["status"] = status
    return write_record(out_dir, record)


def finish_record(out_dir: str | Path, status: str = "done", error: str | None = None,
                  wall_time_s: float | None = None, **results: Any) -> dict[str, Any]:
    """Set the final status (done, failed, interrupted), the finish time and wall time."""
    record = read_record(out_dir)
    record["results"].update(results)
    record.update(status=status, error=error, finished=_now())
    if wall_time_s is not None:
        record["wall_time_s"] = round(float(wall_time_s), 3)
    return write_record(out_dir, record)


def record_outcome(out_dir: str | Path, exc: BaseException,
                   **results: Any) -> dict[str, Any] | None:
    """Record a run ended by `exc`: "interrupted" for Ctrl-C/SIGTERM, else "failed", with the
    exception's first line. Does nothing where no record was started."""
    if not manifest_path(out_dir).is_file():
        return None
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    text = str(exc).splitlines()[0] if str(exc) else ""
    error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return finish_record(out_dir, status, error=error[:500], **results)


def read_record(path: str | Path) -> dict[str, Any]:
    """The record of an output folder (or of a manifest.json path), validated."""
    path = Path(path)
    if path.is_dir():
        path = manifest_path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"no run record: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path} is not a readable run record ({type(exc).__name__})") \
            from None
    _validate(record, path)
    return record


def _validate(record: Any, path: Path) -> None:
    if not isinstance(record, dict):
        raise RecordError(f"{path}: a run record is a JSON object")
    if record.get("schema") != RECORD_SCHEMA:
        raise RecordError(f"{path}: run record schema {record.get('schema')!r}, expected "
                          f"{RECORD_SCHEMA} (written by another version: rerun the command)")
    missing = [f for f in FIELDS if f not in record]
    if missing:
        raise RecordError(f"{path}: run record lacks {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{path}: status {record['status']!r} is not one of "
                          f"{', '.join(STATUSES)}")
    for key in ("config", "inputs", "results", "packages"):
        if not isinstance(record[key], dict):
            raise RecordError(f"{path}: {key} must be a JSON object")
