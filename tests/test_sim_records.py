"""Every simulator output folder is described by one run record (core.records): `sweep` and
`train` write kind, status, config, inputs and results; interrupted and failed runs end as
"interrupted" / "failed", never "running"; a resumed sweep reads its record back."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import cli
import sim.sweep as sweep_mod
import sim.training_run as training_run
from core.records import FIELDS, read_record, start_record
from sim import cell_batch
from sim.grid import GridConfig, TrainingConfig
from sim.grid_files import build_grid, load_grid_file
from sim.sweep import run_sweep
from sim.training_run import TrainConfig, train_and_write

TINY = TrainingConfig(steps=3, n_agents=2)
SWEEP_RESULTS = {"name", "grid_digest", "n_cells", "ladder", "transfer", "K", "length_rule",
                 "seeds", "gradient_columns", "argv", "executor", "workers", "cells_computed",
                 "cells_resumed", "cells_from_other_commits"}
TRAIN_RESULTS = {"name", "objective_weights", "parameter_names", "tasks", "terms",
                 "measurements", "model_vars", "unstable", "max_jump"}
KIND_OF_ROOT = {"sweeps": "sweep", "train": "train"}


def _as_json(data: dict) -> dict:
    return json.loads(json.dumps(data))


def test_every_sim_output_folder_has_a_run_record(tmp_path: Path) -> None:
    grid_file = tmp_path / "g.toml"
    grid_file.write_text('lengths = [10, 20]\nobjectives = ["surrogate"]\n')
    runner = CliRunner()
    res = runner.invoke(cli.main, ["sweep", "--grid", str(grid_file), "--steps", "2",
                                   "--agents", "2", "--workers", "1", "--no-progress",
                                   "--name", "s", "--out", str(tmp_path / "sweeps")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli.main, ["train", "--steps", "2", "--agents", "1", "--name", "f",
                                   "--out", str(tmp_path / "train")])
    assert res.exit_code == 0, res.output

    manifests = sorted(tmp_path.rglob("manifest.json"))
    assert [p.parent.name for p in manifests] == ["s", "f"]
    for path in manifests:
        record = read_record(path)
        assert set(record) == set(FIELDS)
        assert record["kind"] == KIND_OF_ROOT[path.parent.parent.name]
        assert record["status"] == "done" and record["error"] is None
        assert record["finished"] and record["wall_time_s"] >= 0

    sweep = read_record(tmp_path / "sweeps" / "s")
    _, grid = build_grid(load_grid_file(grid_file), steps=2, n_agents=2)
    assert sweep["config"] == _as_json(grid.to_dict())
    assert sweep["inputs"] == {"grid": str(grid_file)}
    assert set(sweep["results"]) == SWEEP_RESULTS
    assert sweep["results"]["grid_digest"] == grid.digest()
    assert (sweep["results"]["n_cells"], sweep["results"]["cells_computed"]) == (2, 2)

    train = read_record(tmp_path / "train" / "f")
    assert train["config"] == _as_json(asdict(TrainConfig(steps=2, n_agents=1)))
    assert train["inputs"] == {}
    assert set(train["results"]) == TRAIN_RESULTS
    assert train["results"]["objective_weights"] == {"surrogate": 1.0, "kl": 0.01}
    assert "ratio[kl]" in train["results"]["measurements"]


def _interrupt_at(length: int):
    real = sweep_mod.run_batch

    def run(grid, batch):
        if any(cell.length == length for group in batch for cell in group.members):
            raise KeyboardInterrupt
        return real(grid, batch)

    return run


def test_an_interrupted_sweep_records_interrupted_then_resumes(tmp_path, monkeypatch) -> None:
    # surrogate+kl: its cells differ in L (the surrogate alone is trained once for every L)
    grid = GridConfig(lengths=(10, 20, 30), objectives=("surrogate+kl",), training=TINY)
    monkeypatch.setattr(sweep_mod, "run_batch", _interrupt_at(20))
    monkeypatch.setattr(cell_batch, "MAX_BATCH_AGENTS", 1)  # one cell per batch
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, "i", tmp_path, workers=1, progress=False)
    record = read_record(tmp_path / "i")
    assert record["kind"] == "sweep" and record["status"] == "interrupted"
    assert record["error"].startswith("KeyboardInterrupt")
    assert record["results"]["cells_computed"] == 1
    assert not (tmp_path / "i" / "results.parquet").exists()

    monkeypatch.undo()
    res = run_sweep(grid, "i", tmp_path, workers=1, progress=False)
    assert len(res.computed) == 2 and len(res.skipped) == 1
    record = read_record(tmp_path / "i")
    assert record["status"] == "done" and record["error"] is None
    assert (record["results"]["cells_computed"], record["results"]["cells_resumed"]) == (2, 1)


def test_a_failed_sweep_records_failed(tmp_path, monkeypatch) -> None:
    real = sweep_mod.run_batch

    def diverging(grid, batch):
        return [(cell_id, rows.assign(id_accuracy=float("nan")))
                for cell_id, rows in real(grid, batch)]

    monkeypatch.setattr(sweep_mod, "run_batch", diverging)
    grid = GridConfig(lengths=(10,), objectives=("surrogate",), training=TINY)
    with pytest.raises(ValueError, match="non-finite"):
        run_sweep(grid, "nf", tmp_path, workers=1, progress=False)
    record = read_record(tmp_path / "nf")
    assert record["status"] == "failed" and "non-finite" in record["error"]
    assert "\n" not in record["error"]


def test_an_interrupted_training_records_interrupted(tmp_path, monkeypatch) -> None:
    def interrupted(cfg, progress=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "run_training", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_and_write(TrainConfig(steps=2, n_agents=1), "t", tmp_path, progress=False)
    record = read_record(tmp_path / "t")
    assert record["kind"] == "train" and record["status"] == "interrupted"
    assert not (tmp_path / "t" / "history.parquet").exists()


def test_resume_reads_the_record(tmp_path) -> None:
    """A folder whose manifest is not a sweep record of this schema (an older version's, or
    another kind of run) is never resumed into; --overwrite starts it afresh."""
    grid = GridConfig(lengths=(10,), objectives=("surrogate",), training=TINY)
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"name": "old",
                                                   "grid_digest": grid.digest()}))
    with pytest.raises(ValueError, match="cannot be resumed.*--overwrite"):
        run_sweep(grid, "old", tmp_path, workers=1, progress=False)
    res = run_sweep(grid, "old", tmp_path, workers=1, progress=False, overwrite=True)
    assert len(res.computed) == 1 and read_record(old)["status"] == "done"

    start_record(tmp_path / "train-run", "train", {})
    with pytest.raises(ValueError, match="different grid"):
        run_sweep(grid, "train-run", tmp_path, workers=1, progress=False)


def test_results_do_not_depend_on_the_record(tmp_path) -> None:
    """Cells and results hold the same rows whether computed or resumed (the record only
    describes them)."""
    grid = GridConfig(lengths=(10, 20), objectives=("surrogate",), training=TINY)
    first = run_sweep(grid, "r", tmp_path, workers=1, progress=False)
    again = run_sweep(grid, "r", tmp_path, workers=1, progress=False)
    assert again.computed == () and len(again.skipped) == 2
    pd.testing.assert_frame_equal(first.results, again.results, check_exact=True)
