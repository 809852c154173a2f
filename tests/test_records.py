"""The one run-record schema (core/records.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.records import (
    FIELDS,
    RECORD_SCHEMA,
    RecordError,
    finish_record,
    read_record,
    record_outcome,
    start_record,
    update_record,
)


def test_a_record_goes_from_running_to_done(tmp_path: Path) -> None:
    rec = start_record(tmp_path, "sweep", {"lr": 0.1}, inputs={"grid": tmp_path / "g.toml"},
                       cells=3)
    assert rec["status"] == "running" and rec["schema"] == RECORD_SCHEMA
    assert set(rec) == set(FIELDS)
    assert rec["inputs"] == {"grid": str(tmp_path / "g.toml")}
    update_record(tmp_path, cells_computed=2)
    done = finish_record(tmp_path, wall_time_s=1.23456, cells_computed=3)
    assert done["status"] == "done" and done["error"] is None and done["finished"]
    assert done["results"] == {"cells": 3, "cells_computed": 3}
    assert done["wall_time_s"] == pytest.approx(1.235)
    assert read_record(tmp_path) == done == read_record(tmp_path / "manifest.json")


@pytest.mark.parametrize(("exc", "status"), [(KeyboardInterrupt(), "interrupted"),
                                             (ValueError("bad\nsecond line"), "failed")])
def test_an_exception_is_recorded_never_running(tmp_path: Path, exc: BaseException,
                                                status: str) -> None:
    start_record(tmp_path, "train", {})
    rec = record_outcome(tmp_path, exc)
    assert rec["status"] == status and "\n" not in rec["error"]
    assert rec["error"].startswith(type(exc).__name__)
    assert record_outcome(tmp_path / "nowhere", exc) is None  # nothing started: no record


def test_other_schemas_and_broken_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="does not exist"):
        read_record(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RecordError, match="not a readable run record"):
        read_record(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "old", "grid": {}}))
    with pytest.raises(RecordError, match="schema None"):
        read_record(tmp_path)
    rec = start_record(tmp_path, "fit", {})
    (tmp_path / "manifest.json").write_text(json.dumps({**rec, "status": "weird"}))
    with pytest.raises(RecordError, match="status 'weird'"):
        read_record(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        start_record(tmp_path, "", {})
