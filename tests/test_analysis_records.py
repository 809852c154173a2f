"""Run records (core.records) in analysis: what it reads from other runs' records and the
records it writes (report, fit, compare); old-style manifests are one-line errors.

The fixtures write their records with core.records themselves. Only the tests marked
"writer" below run the real `train` / `sweep` commands and read the records those write:
they skip, saying so, while a writer still writes its old manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_report_fixtures import write_real, write_sweep, write_train

from analysis.fit import FitConfig, FitError
from analysis.fit_io import fit_and_save
from analysis.observed import load_calibrations, run_regime
from analysis.runs import SweepRun, TrainRun
from core.records import RecordError, read_record, start_record
from sim.training_run import TrainConfig


def _cli(*args: str):
    from cli import main

    return CliRunner().invoke(main, list(args))


def _one_error_line(res, *needles: str) -> str:
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _old_manifest(folder: Path, data: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


# ------------------------------------------------------------------------------ reading


def test_train_settings_are_the_records_trainconfig(tmp_path):
    run = write_train(tmp_path)
    loaded = TrainRun.load(run)
    assert loaded.config == TrainConfig(objective="surrogate+kl", beta=0.01, length=10.0,
                                        steps=8, n_agents=2, n_queries=4, ref_update_every=4)
    assert len(loaded.history) > 0


@pytest.mark.parametrize("kind", ["sweep", "train"])
def test_an_old_manifest_is_a_one_line_error(tmp_path, kind):
    run = write_sweep(tmp_path) if kind == "sweep" else write_train(tmp_path)
    _old_manifest(run, {"config": {"objective": "surrogate"}, "grid": {}})
    with pytest.raises(RecordError, match="rerun"):
        (SweepRun if kind == "sweep" else TrainRun).load(run)
    res = _cli("report", "--quick", "--no-png", f"--{kind}", str(run), "--outputs",
               str(tmp_path), "--out", str(tmp_path / "r"))
    _one_error_line(res, "rerun", f"cli.py {kind}")
    assert not (tmp_path / "r").exists()


def test_a_record_of_another_kind_is_refused(tmp_path):
    run = write_sweep(tmp_path)
    start_record(run, "train", asdict(TrainConfig()))
    with pytest.raises(RecordError, match="not of a sweep run"):
        SweepRun.load(run)


def test_unknown_train_settings_are_refused(tmp_path):
    run = write_train(tmp_path)
    start_record(run, "train", {**asdict(TrainConfig()), "warmup": 3})
    with pytest.raises(RecordError, match="warmup"):
        TrainRun.load(run)


@pytest.mark.parametrize(("kind", "config", "want"), [
    ("sft", {"model": "smollm2-135m", "data": "no-reflection"}, "SFT (no reflection)"),
    ("sft", {"model": "smollm2-135m", "data": "reflection"}, "SFT (reflection)"),
    ("grpo", {"model": "smollm2-135m", "data": "problems"}, "RL"),
    ("eval", {"model": "outputs/real/grpo-smol/final"}, "RL"),
    ("eval", {"model": "smollm2-135m"}, None),
    ("sweep", {"ladder": {}}, None),
])
def test_the_regime_of_a_real_run_record(kind, config, want):
    assert run_regime({"kind": kind, "config": config}) == want


def test_calibrations_take_the_regime_from_the_record(tmp_path):
    real = write_real(tmp_path)  # eval records of smollm2-135m: regime from the folder name
    start_record(real / "base-smol", "eval", {"model": "outputs/real/sft-refl/final"})
    cal = load_calibrations(real)
    assert set(cal.groupby("run")["regime"].first().items()) == {
        ("base-smol", "SFT (reflection)"), ("grpo-smol", "RL")}


def test_a_real_run_with_an_old_manifest_is_a_one_line_error(tmp_path):
    real = write_real(tmp_path)
    _old_manifest(real / "grpo-smol", {"model": "smollm2-135m"})
    with pytest.raises(RecordError, match="rerun"):
        load_calibrations(real)
    _one_error_line(_cli("compare", "--observed", str(real), "--quick", "--out",
                         str(tmp_path), "--name", "c"), "rerun")
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------ writing


def test_a_fit_folder_records_its_outcome(tmp_path):
    ok = pd.DataFrame({"regime": ["Base", "RL"], "task": ["T1", "T1"], "task_index": [1, 1],
                       "in_distribution": [True, True], "accuracy": [0.5, 0.7],
                       "ci_low": [0.4, 0.6], "ci_high": [0.6, 0.8], "source": "t"})
    cfg = FitConfig(quick=True, steps=2, max_nfev=1)
    result, paths = fit_and_save(ok, cfg, tmp_path / "ok", "obs.csv")
    rec = read_record(tmp_path / "ok")
    assert rec["status"] == "done" and rec["config"] == asdict(cfg)
    assert rec["inputs"] == {"observed": "obs.csv"}
    assert rec["results"]["observed_sha256"] == result.observed_sha256
    assert {p.name for p in paths} >= {"fit.json", "summary.txt", "manifest.json"}
    with pytest.raises(FitError):
        fit_and_save(ok[ok["regime"] == "RL"], cfg, tmp_path / "bad", "obs.csv")
    bad = read_record(tmp_path / "bad")
    assert bad["status"] == "failed" and "FitError" in bad["error"]


# ------------------------------------------------------- writer: the other commands' records


def _record_or_skip(run: Path, writer: str) -> dict:
    try:
        return read_record(run)
    except RecordError:
        pytest.skip(f"{writer} still writes its old manifest (switch to core.records pending)")


def test_writer_train_and_sweep_records_feed_the_report(tmp_path):
    """The real `train` and `sweep` commands' records, read by the report."""
    train = _cli("train", "--steps", "4", "--agents", "1", "--queries", "2", "--ref-every",
                 "2", "--name", "t", "--out", str(tmp_path / "train"))
    assert train.exit_code == 0, train.output
    rec = _record_or_skip(tmp_path / "train" / "t", "sim.training_run (`cli.py train`)")
    assert rec["kind"] == "train"
    assert TrainRun.load(tmp_path / "train" / "t").config.steps == 4
    sweep = _cli("sweep", "--lengths", "10..100", "--points", "2", "--objectives",
                 "surrogate,kl", "--steps", "3", "--agents", "2", "--workers", "1", "--name",
                 "s", "--out", str(tmp_path / "sweeps"), "--no-progress")
    assert sweep.exit_code == 0, sweep.output
    _record_or_skip(tmp_path / "sweeps" / "s", "sim.sweep (`cli.py sweep`)")
    assert SweepRun.load(tmp_path / "sweeps" / "s").id_tasks == ["T1", "T2"]
    res = _cli("report", "--quick", "--no-png", "--outputs", str(tmp_path), "--out",
               str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    inputs = read_record(tmp_path / "r")["inputs"]
    assert inputs["train"].endswith("t") and inputs["sweep"].endswith("s")
