"""The calibration logs through the trainer (realmodel/training/callbacks.py, runs.attach):
`calib/<task>/<stat>` scalars reach `report_to` integrations (TensorBoard here), on the main
process only; calibration.parquet stays and train_log.parquet keeps the trainer's own logs
(DESIGN.md §4, §5)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402

from realmodel.commands import realmodel  # noqa: E402
from realmodel.tasks import make_splits  # noqa: E402
from realmodel.training.callbacks import (  # noqa: E402
    CALIBRATION_LOG,
    TRAIN_LOG,
    calibration_metrics,
    held_out_slice,
    make_calibration_callback,
    make_parquet_log_callback,
)
from tests.conftest import assert_clean_cli_error  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    from realmodel_fixtures import save_tiny_checkpoint

    return str(save_tiny_checkpoint(tmp_path_factory))


def _callback(tmp_path: Path, every: int = 1):
    from realmodel.models import tiny_random_model

    model, tokenizer = tiny_random_model(seed=0)
    queries = held_out_slice(make_splits("1x1,1x2", "1x1", n_train=0, n_test=1)["test"], 1)
    callback = make_calibration_callback(tmp_path, tokenizer, queries, every=every,
                                         max_new_tokens=2, log=lambda m: None)
    emitted: list[dict] = []
    callback.emit = emitted.append
    return callback, model, emitted


def _state(step: int, main: bool) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, is_world_process_zero=main)


def test_calibration_does_nothing_on_a_non_main_process(tmp_path: Path) -> None:
    callback, model, emitted = _callback(tmp_path)
    stop = SimpleNamespace(should_training_stop=True)
    callback.on_train_begin(None, _state(0, False), stop, model=model)
    callback.on_step_end(None, _state(1, False), stop, model=model)
    callback.on_train_end(None, _state(1, False), stop, model=model)
    assert callback.done_steps == set() and emitted == [] and callback.seconds == 0
    assert list(tmp_path.iterdir()) == []


def test_calibration_logs_through_the_trainer_on_the_main_process(tmp_path: Path) -> None:
    callback, model, emitted = _callback(tmp_path, every=0)
    go, stop = SimpleNamespace(should_training_stop=False), \
        SimpleNamespace(should_training_stop=True)
    callback.on_train_begin(None, _state(0, True), go, model=model)
    callback.on_step_end(None, _state(1, True), go, model=model)  # every=0: not due
    callback.on_step_end(None, _state(2, True), stop, model=model)  # the last step
    callback.on_train_end(None, _state(3, True), go, model=model)  # Parquet only
    assert callback.done_steps == {0, 2, 3} and len(emitted) == 2
    assert all(k.startswith("calib/") for logs in emitted for k in logs)
    assert {"calib/1x1/accuracy", "calib/1x2/accuracy"} <= set(emitted[0])
    assert sorted(pd.read_parquet(tmp_path / CALIBRATION_LOG)["step"].unique()) == [0, 2, 3]


def test_calibration_metrics_name_each_task_and_leave_undefined_values_out() -> None:
    table = pd.DataFrame([
        {"task": "1x1", "observed_accuracy": 0.5, "p_hat": 0.4, "q1_hat": 0.9, "q2_hat": 0.3,
         "predicted_accuracy": 0.45},
        {"task": "2x2", "observed_accuracy": 0.0, "p_hat": 0.1, "q1_hat": math.nan,
         "q2_hat": 0.0, "predicted_accuracy": math.nan},
    ])
    assert calibration_metrics(table) == {
        "calib/1x1/accuracy": 0.5, "calib/1x1/p": 0.4, "calib/1x1/q1": 0.9,
        "calib/1x1/q2": 0.3, "calib/1x1/predicted_accuracy": 0.45,
        "calib/2x2/accuracy": 0.0, "calib/2x2/p": 0.1, "calib/2x2/q2": 0.0}


def test_the_parquet_train_log_leaves_calibration_records_out(tmp_path: Path) -> None:
    callback = make_parquet_log_callback(tmp_path)
    state = SimpleNamespace(global_step=1, epoch=0.5, is_world_process_zero=True)
    callback.on_log(None, state, None, logs={"calib/1x1/p": 0.4, "epoch": 0.5})
    assert not (tmp_path / TRAIN_LOG).exists()
    callback.on_log(None, state, None, logs={"loss": 1.5, "calib/1x1/p": 0.4})
    assert list(pd.read_parquet(tmp_path / TRAIN_LOG).columns) == ["step", "epoch", "time",
                                                                   "loss"]


def test_report_to_without_its_package_is_refused_before_the_folder(
        tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.integrations.integration_utils as integrations

    monkeypatch.setattr(integrations, "get_available_reporting_integrations", lambda: [])
    res = CliRunner().invoke(realmodel, ["sft", "--preset", "cpu-smoke", "--model", tiny,
                                         "--out", str(tmp_path / "o"),
                                         "--report-to", "tensorboard"])
    assert_clean_cli_error(res)
    assert "report_to tensorboard" in res.output and "ds-study[track]" in res.output
    assert not (tmp_path / "o").exists()


def test_a_cpu_smoke_run_writes_the_calibration_to_tensorboard(tiny: str,
                                                               tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tmp_path / "run.yaml"
    config.write_text("preset: cpu-smoke\nreport_to: tensorboard\nladder: 1x1,1x2\n"
                      "id_tasks: 1x1\nn_train: 8\nn_test: 2\ncalib_n: 2\ncalib_every: 1\n"
                      "calib_max_new_tokens: 4\nmax_steps: 2\nmax_length: 64\n"
                      "max_grad_norm: 0.5\n", encoding="utf-8")
    res = CliRunner().invoke(realmodel, ["sft", "--config", str(config), "--model", tiny,
                                         "--out", str(tmp_path / "o"), "--name", "tb"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "o" / "tb"
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in run.rglob("*"))
    scalars: dict[str, dict[int, float]] = {}
    for path in events:  # one file per writer; tensorboard reads the folder as one run
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    assert "train/loss" in scalars
    calib = pd.read_parquet(run / CALIBRATION_LOG)
    assert sorted(calib["step"].unique()) == [0, 1, 2]
    for row in calib.itertuples():  # every finite statistic, at its step
        for column, stat in (("observed_accuracy", "accuracy"), ("p_hat", "p"),
                             ("q1_hat", "q1"), ("q2_hat", "q2")):
            value = getattr(row, column)
            tag = f"train/calib/{row.task}/{stat}"
            if math.isfinite(value):
                assert scalars[tag][row.step] == pytest.approx(value), tag
    for task in ("1x1", "1x2"):
        assert set(scalars[f"train/calib/{task}/accuracy"]) == {0, 1, 2}
    log = pd.read_parquet(run / TRAIN_LOG)
    assert "loss" in log.columns and not [c for c in log.columns if c.startswith("calib/")]
