"""Trainer callbacks: periodic calibration of (p, q1, q2) and Parquet logs (DESIGN.md §4, §5).

`CalibrationCallback` samples the current model on a held-out slice of every ladder task
(the first `calib_n` test problems of each, which training never sees), parses the responses
with `realmodel.parsing` and calibrates them with
`realmodel.calibration_table.calibrate_responses` (the same estimators as `realmodel eval`).
It runs before the first step, every `calib_every` optimizer steps and at the last one (the
step at which the trainer, or the time budget, stops training; `on_train_end` catches any
other end), so a run shows step by step which component - sampling p, or the decisions q1,
q2 - the training moves. It runs on the main process only (`state.is_world_process_zero`:
the other ranks go on to their next collective and wait there; a sharded model, FSDP or
ZeRO-3, cannot generate on one rank and is not supported).

Each calibration is also logged through the trainer's logger (`emit`, connected by
runs.attach: `state.log_history` and every `report_to` integration) as scalars
`calib/<task>/<stat>` for stat in accuracy, p, q1, q2, predicted_accuracy (undefined ones,
e.g. q2 without a wrong first answer, are left out); transformers' TensorBoard and W&B
callbacks file them under `train/calib/<task>/<stat>`. The last calibration is logged at the
last step, before the integrations close their runs in `on_train_end`; one that only
`on_train_end` catches goes to the Parquet file and the console only.

Files (beside the run's manifest.json):
* `calibration.parquet`: one row per (step, task): the calibration table's columns;
* `calibration_responses.jsonl`: the responses behind it (one line per query and step);
* `train_log.parquet`: the Trainer's log records (loss, reward, kl, learning rate, ...).

Both Parquet files are rewritten whole at each update (they stay small), so a crash leaves a
readable file; on `--resume` rows after the resumed step are dropped first.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.provenance import write_parquet_atomic

CALIBRATION_LOG = "calibration.parquet"
CALIBRATION_RESPONSES = "calibration_responses.jsonl"
TRAIN_LOG = "train_log.parquet"
CALIB_PREFIX = "calib/"  # the trainer-log keys of the calibration: calib/<task>/<stat>
# calibration-table column -> its name in the trainer's log
CALIB_STATS = {"observed_accuracy": "accuracy", "p_hat": "p", "q1_hat": "q1", "q2_hat": "q2",
               "predicted_accuracy": "predicted_accuracy"}


def held_out_slice(test: Sequence[dict[str, Any]], n_per_task: int) -> list[dict[str, Any]]:
    """The first `n_per_task` test records of each task, in ladder order."""
    taken: dict[str, int] = {}
    out = []
    for rec in test:
        k = taken.get(rec["task"], 0)
        if k < n_per_task:
            taken[rec["task"]] = k + 1
            out.append({"id": f"{rec['task']}/{k}", **rec})
    return out


def _append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(rows)
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    write_parquet_atomic(frame, path)


def truncate_logs(run_dir: Path, step: int) -> None:
    """Prepare the logs for a run resumed at checkpoint `step`: the steps after it are
    replayed, and the calibration at `step` itself is redone when training begins again."""
    for name, last in ((TRAIN_LOG, step), (CALIBRATION_LOG, step - 1)):
        path = run_dir / name
        if path.exists():
            frame = pd.read_parquet(path)
            write_parquet_atomic(frame[frame["step"] <= last], path)
    responses = run_dir / CALIBRATION_RESPONSES
    if responses.exists():
        lines = responses.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] < step]
        responses.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def calibrate_model(
    model: Any,
    tokenizer: Any,
    queries: Sequence[dict[str, Any]],
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    id_tasks: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(calibration table per task, response rows) for an in-memory model on `queries`.

    The model is put in eval mode for sampling and returned to its previous mode. Sampling
    seeds torch's global generator (for a reproducible calibration); it runs inside
    `torch.random.fork_rng`, so the training's RNG stream (rollouts, dropout) goes on from
    where it was rather than restarting from the same state at every calibration.
    """
    import torch

    from realmodel.calibration_table import calibrate_responses
    from realmodel.generation import GenerationConfig, TransformersGenerator
    from realmodel.parsing import parse_response

    config = GenerationConfig(temperature=temperature, max_new_tokens=max_new_tokens,
                              seed=seed, batch_size=batch_size)
    was_training = model.training
    use_cache = getattr(model.config, "use_cache", None)
    model.eval()
    model.config.use_cache = True  # gradient checkpointing turns the KV cache off
    # the trainer's tokenizer pads on the right for training; generation pads on the left
    padding_side = tokenizer.padding_side
    device = next(model.parameters()).device
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            results = TransformersGenerator(model, tokenizer, config).generate(
                [q["prompt"] for q in queries]
            )
    finally:
        tokenizer.padding_side = padding_side
        model.config.use_cache = use_cache
        model.train(was_training)
    rows = []
    for q, res in zip(queries, results, strict=True):
        parsed = parse_response(res.text, q["a"], q["b"], truncated=res.truncated)
        rows.append({**q, "in_distribution": q["task"] in id_tasks, "sample": 0,
                     "response": res.text, "n_tokens": res.n_tokens,
                     "truncated": res.truncated, "parse": parsed.to_dict()})
    order = {name: k for k, name in enumerate(dict.fromkeys(q["task"] for q in queries))}
    table = calibrate_responses(rows, by="task", n_boot=100, seed=seed)
    table = table.sort_values("task", key=lambda c: c.map(order)).reset_index(drop=True)
    return table, rows


def calibration_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The trainer-log scalars of a calibration table: `calib/<task>/<stat>` (CALIB_STATS),
    finite values only (an undefined statistic is left out, not logged as NaN)."""
    out = {}
    for row in table.to_dict("records"):
        for column, stat in CALIB_STATS.items():
            value = row.get(column)
            if isinstance(value, int | float) and math.isfinite(value):
                out[f"{CALIB_PREFIX}{row['task']}/{stat}"] = float(value)
    return out


def _trainer_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


def make_calibration_callback(
    run_dir: Path,
    tokenizer: Any,
    queries: Sequence[dict[str, Any]],
    every: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    id_tasks: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> Any:
    """A `transformers.TrainerCallback` that calibrates at step 0, every `every` steps
    (0 = never in between) and at the end of training, on the main process; see the module
    docstring. Its `emit` (None until runs.attach sets it) logs a calibration's scalars
    through the trainer."""
    base = _trainer_callback_base()
    run_dir = Path(run_dir)

    class CalibrationCallback(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.done_steps: set[int] = set()
            self.seconds = 0.0  # time spent calibrating (excluded from s/step)
            self.emit: Callable[[dict[str, float]], None] | None = None

        def _run(self, model: Any, step: int, emit: bool = True) -> None:
            if step in self.done_steps or model is None:
                return
            self.done_steps.add(step)
            start = time.time()
            table, rows = calibrate_model(model, tokenizer, queries, max_new_tokens,
                                          temperature, batch_size, seed, id_tasks)
            wall = time.time() - start
            self.seconds += wall
            table.insert(0, "step", step)
            table["calib_wall_s"] = round(wall, 2)
            _append_rows(run_dir / CALIBRATION_LOG, table.to_dict("records"))
            with (run_dir / CALIBRATION_RESPONSES).open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps({"step": step, **r}) + "\n" for r in rows)
            summary = ", ".join(
                f"{r.task}: acc {r.observed_accuracy:.2f} p {r.p_hat:.2f} "
                f"q1 {r.q1_hat:.2f} q2 {r.q2_hat:.2f}" for r in table.itertuples()
            )
            log(f"[calibration step {step}, {wall:.0f} s] {summary}")
            metrics = calibration_metrics(table)
            if emit and self.emit is not None and metrics:
                self.emit(metrics)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                self._run(kw.get("model"), state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            due = every and state.global_step % every == 0
            if state.is_world_process_zero and (due or control.should_training_stop):
                self._run(kw.get("model"), state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:  # the integrations may have closed their runs
                self._run(kw.get("model"), state.global_step, emit=False)

    return CalibrationCallback()


def make_time_budget_callback(seconds: float, exclude: Sequence[Any] = (),
                              log: Callable[[str], None] = print) -> Any:
    """A `TrainerCallback` that stops training after the first optimizer step at which more
    than `seconds` of training wall time have passed since `on_train_begin`. Time spent in the
    callbacks of `exclude` (their `seconds` attribute: the calibration) does not count, so
    the cap bounds optimisation, not evaluation. For runs on lent, time-limited machines."""
    base = _trainer_callback_base()

    class TimeBudgetCallback(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.start = 0.0
            self.stopped_at: int | None = None

        def _elapsed(self) -> float:
            return time.time() - self.start - sum(getattr(c, "seconds", 0.0) for c in exclude)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self._elapsed() > seconds and not control.should_training_stop:
                control.should_training_stop = True
                self.stopped_at = state.global_step
                log(f"time budget {seconds:.0f} s reached at step {state.global_step}: "
                    "stopping training")

    return TimeBudgetCallback()


def make_parquet_log_callback(run_dir: Path) -> Any:
    """A `TrainerCallback` that appends each log record (with its step) to train_log.parquet;
    the calibration's records are left to calibration.parquet."""
    base = _trainer_callback_base()
    path = Path(run_dir) / TRAIN_LOG

    class ParquetLogCallback(base):  # type: ignore[misc, valid-type]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            if not logs or not state.is_world_process_zero:
                return
            values = {k: float(v) for k, v in logs.items()
                      if isinstance(v, int | float) and not k.startswith(CALIB_PREFIX)}
            if len(values) < len(logs) and set(values) <= {"epoch"}:
                return  # a calibration record
            row = {"step": state.global_step, "epoch": state.epoch, "time": time.time()}
            row.update(values)
            _append_rows(path, [row])

    return ParquetLogCallback()
