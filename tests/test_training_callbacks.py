"""The periodic calibration callback (realmodel/training/callbacks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from realmodel.models import tiny_random_model  # noqa: E402
from realmodel.tasks import make_splits  # noqa: E402
from realmodel.training.callbacks import calibrate_model, held_out_slice  # noqa: E402


def test_calibration_leaves_the_global_torch_rng_alone() -> None:
    """Sampling seeds torch; a calibration during training must not reset the training's
    stream (else every calibration would restart GRPO rollouts and dropout from one state)."""
    model, tokenizer = tiny_random_model(seed=0)
    queries = held_out_slice(make_splits("1x1,1x2", "1x1", n_train=0, n_test=2)["test"], 2)
    after = []
    for prior in (1, 2):
        torch.manual_seed(prior)
        expected = torch.rand(4)
        torch.manual_seed(prior)
        table, rows = calibrate_model(model, tokenizer, queries, max_new_tokens=4, seed=0)
        assert len(rows) == 4 and list(table["task"]) == ["1x1", "1x2"]
        got = torch.rand(4)
        assert torch.equal(got, expected)  # as if no calibration had run
        after.append(got)
    assert not torch.equal(after[0], after[1])


def test_run_callbacks_normalise_the_id_task_names(tmp_path: Path) -> None:
    """--id-tasks 1X1 must mark the 1x1 queries in-distribution (the names are parsed, not
    split by hand)."""
    from realmodel.training.config import sft_preset
    from realmodel.training.runs import callbacks

    cfg = sft_preset("cpu-smoke", ladder="1x1,1x2,2x2", id_tasks="1X1, 1x2", n_test=2,
                     calib_n=1, calib_max_new_tokens=2)
    model, tokenizer = tiny_random_model(seed=0)
    queries = held_out_slice(make_splits(cfg.ladder, cfg.id_tasks, n_train=0,
                                         n_test=1)["test"], 1)
    calibration = callbacks(cfg, tmp_path, tokenizer, queries, log=lambda m: None)[1]
    calibration._run(model, 0)
    rows = [json.loads(line) for line in
            (tmp_path / "calibration_responses.jsonl").read_text().splitlines()]
    assert {r["task"]: r["in_distribution"] for r in rows} == {"1x1": True, "1x2": True,
                                                               "2x2": False}


class _Control:
    should_training_stop = False


class _State:
    def __init__(self, step: int) -> None:
        self.global_step = step


def test_time_budget_stops_after_the_step_that_crosses_it_not_counting_calibration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from realmodel.training import callbacks as cb

    clock = [1000.0]
    monkeypatch.setattr(cb.time, "time", lambda: clock[0])

    class Calibration:
        seconds = 0.0

    calib = Calibration()
    budget = cb.make_time_budget_callback(10.0, [calib], log=lambda m: None)
    control = _Control()
    budget.on_train_begin(None, _State(0), control)
    clock[0] += 6
    budget.on_step_end(None, _State(1), control)
    assert not control.should_training_stop
    clock[0] += 30  # 30 s more, 28 of them calibrating: 8 s of training in all
    calib.seconds = 28.0
    budget.on_step_end(None, _State(2), control)
    assert not control.should_training_stop and budget.stopped_at is None
    clock[0] += 3  # 11 s of training
    budget.on_step_end(None, _State(3), control)
    assert control.should_training_stop and budget.stopped_at == 3


def test_run_callbacks_add_the_time_budget_only_when_set(tmp_path: Path) -> None:
    from realmodel.training.config import sft_preset
    from realmodel.training.runs import callbacks

    _, tokenizer = tiny_random_model(seed=0)
    plain = sft_preset("cpu-smoke")
    capped = sft_preset("cpu-smoke", max_train_seconds=5.0)
    assert len(callbacks(plain, tmp_path, tokenizer, [], log=print)) == 2
    added = callbacks(capped, tmp_path, tokenizer, [], log=print)
    # the budget comes before the calibration, which then sees its stop at the same step
    assert [type(c).__name__ for c in added[1:]] == ["TimeBudgetCallback",
                                                     "CalibrationCallback"]
