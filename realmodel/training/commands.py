"""`realmodel sft` and `realmodel grpo` (DESIGN.md §5). A run = a preset + the options given.

Every option defaults to "not given" (None), so the preset's value stands unless the user
overrides it; `--print-config` shows the resolved run config and exits. The run config
validates every setting (config.py); its message names the options (`OPTIONS`), e.g.
"Error: --lr must be a finite number > 0, got inf". Expected failures (bad settings, a missing
model, bf16 without a GPU, --resume without a checkpoint) end with a one-line message, before
the run folder is made or with the folder removed again (runs.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from core.errors import EXPECTED, fail, one_line
from core.provenance import first_missing_folder
from realmodel.training.config import (
    DATA_KINDS,
    LOSS_TYPES,
    PAPER_MEMORY_NOTE,
    PRESET_NAMES,
    VLLM_CHOICES,
    RunConfigError,
    TrainRunConfig,
    check_run_name,
    grpo_preset,
    sft_preset,
)

# (option, config field, click type, help) shared by both commands
_COMMON: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "Model name or checkpoint path (default: the preset's)."),
    ("--run-name", "run_name", str, "Folder under --out-root (default: <method>-<preset>)."),
    ("--out-root", "output_root", str, "Root of the run folders (default outputs/real)."),
    ("--ladder", "ladder", str, "Task ladder for calibration, e.g. 1x1,1x2,2x2,2x3."),
    ("--id-tasks", "id_tasks", str, "In-distribution (training) tasks, e.g. 1x1,1x2."),
    ("--n-train", "n_train", int, "Training problems, balanced over the ID tasks."),
    ("--n-test", "n_test", int, "Held-out problems per task (calibration draws from them)."),
    ("--seed", "seed", int, "Seed of the splits, the data and the trainer."),
    ("--device", "device", click.Choice(["auto", "cpu", "cuda"]), "Training device."),
    ("--lr", "learning_rate", float, "Learning rate."),
    ("--epochs", "num_train_epochs", float, "Epochs (ignored when --max-steps is given)."),
    ("--max-steps", "max_steps", int, "Optimizer steps (-1: by epochs)."),
    ("--batch-size", "per_device_train_batch_size", int,
     "Per-device micro-batch (GRPO: completions, not prompts)."),
    ("--grad-accum", "gradient_accumulation_steps", int, "Gradient accumulation steps."),
    ("--optim", "optim", str, "transformers optimizer name, e.g. adamw_torch."),
    ("--lora-r", "lora_r", int, "LoRA rank (with --lora)."),
    ("--lora-alpha", "lora_alpha", int, "LoRA alpha (with --lora)."),
    ("--save-steps", "save_steps", int, "Checkpoint every N steps."),
    ("--logging-steps", "logging_steps", int, "Log every N steps."),
    ("--calib-every", "calib_every", int,
     "Calibrate p, q1, q2 every N steps (0: only before and after)."),
    ("--calib-n", "calib_n", int, "Held-out problems per task for each calibration."),
    ("--calib-max-new-tokens", "calib_max_new_tokens", int, "Token limit when calibrating."),
]
_FLAGS: list[tuple[str, str, str]] = [
    ("--lora/--no-lora", "use_lora", "LoRA via peft instead of full fine-tuning."),
    ("--bf16/--no-bf16", "bf16", "bf16 mixed precision (GPU only)."),
    ("--gradient-checkpointing/--no-gradient-checkpointing", "gradient_checkpointing",
     "Recompute activations in the backward pass."),
]
# run-config field -> the option that sets it (error messages name options, not fields)
OPTIONS: dict[str, str] = {
    **{dest: opt for opt, dest, _, _ in _COMMON},
    **{dest: opt.split("/")[0] for opt, dest, _ in _FLAGS},
    "data": "--data", "ft_share": "--ft-share", "n_reflections": "--n-reflections",
    "max_length": "--max-length", "num_generations": "--num-generations", "beta": "--beta",
    "temperature": "--temperature", "max_completion_length": "--max-completion-length",
    "loss_type": "--loss-type", "scale_rewards": "--scale-rewards", "use_vllm": "--vllm",
}


def _run_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--run-name, when given, is one folder name under --out-root ("" included: the default
    name is what leaving the option out gives)."""
    if value is None:
        return None
    try:
        return check_run_name(value, "--run-name")
    except ValueError as exc:  # its message names the option
        raise click.UsageError(str(exc).splitlines()[0], ctx) from None


def _run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for opt, dest, typ, text in reversed(_COMMON):
        func = click.option(opt, dest, type=typ, default=None, help=text,
                            callback=_run_name if dest == "run_name" else None)(func)
    for opt, dest, text in reversed(_FLAGS):
        func = click.option(opt, dest, default=None, help=text)(func)
    func = click.option("--resume", is_flag=True,
                        help="Continue from the last checkpoint in the run folder.")(func)
    func = click.option("--print-config", is_flag=True,
                        help="Print the resolved run config as JSON and exit.")(func)
    return click.option("--preset", type=click.Choice(PRESET_NAMES), default="smol",
                        show_default=True, help="Preset the other options override.")(func)


def _execute(build: Callable[[], TrainRunConfig], run: Callable[..., dict[str, Any]],
             resume: bool, print_config: bool) -> None:
    from realmodel.training.runs import remove_unstarted, run_dir

    try:
        cfg = build()
    except RunConfigError as exc:
        raise click.ClickException(one_line(exc.render(OPTIONS))) from None
    except ValueError as exc:
        raise fail(exc) from None
    if print_config:
        click.echo(json.dumps(cfg.to_dict(), indent=2))
        if cfg.preset == "paper":
            click.echo(PAPER_MEMORY_NOTE)
        return
    out = run_dir(cfg)
    created = first_missing_folder(out)
    try:
        record = run(cfg, resume=resume, log=lambda m: click.echo(m, err=True))
    except BaseException as exc:
        remove_unstarted(out, created)  # a run that never started leaves no folder
        # a missing model, bf16 without a GPU, --resume without a checkpoint, a missing
        # extra: one line (core.errors; the realmodel errors are ExpectedErrors)
        if isinstance(exc, EXPECTED + (ImportError,)):
            raise fail(exc) from None
        raise
    res = record["results"]  # the run record (core.records; runs.py lists its fields)
    click.echo(f"{cfg.METHOD} run {cfg.name()}: {res['global_step']} steps, "
               f"{res['s_per_step']} s/step ({res['device_name']}), wall "
               f"{record['wall_time_s']:.0f} s; final model {res['final_model']}")


@click.command("sft")
@click.option("--data", type=click.Choice(DATA_KINDS), default=None,
              help="Synthesized set (default reflection).")
@click.option("--ft-share", type=float, default=None, help="Share of F->T chains (reflection).")
@click.option("--n-reflections", type=int, default=None, help="Attempts after the first.")
@click.option("--max-length", type=int, default=None, help="Prompt + completion token limit.")
@_run_options
def sft(preset: str, resume: bool, print_config: bool, **overrides: Any) -> None:
    """Fine-tune on synthesized trajectories with TRL's SFTTrainer (completion-only loss)."""
    from realmodel.training.sft import run_sft

    _execute(lambda: sft_preset(preset, **overrides), run_sft, resume, print_config)


@click.command("grpo")
@click.option("--num-generations", type=int, default=None, help="Completions per prompt.")
@click.option("--beta", type=float, default=None, help="KL coefficient (k3, in the loss).")
@click.option("--temperature", type=float, default=None, help="Sampling temperature.")
@click.option("--max-completion-length", type=int, default=None, help="Completion tokens.")
@click.option("--loss-type", type=click.Choice(LOSS_TYPES), default=None,
              help="TRL loss aggregation (grpo: per-sequence mean, as the paper/verl).")
@click.option("--scale-rewards/--no-scale-rewards", default=None,
              help="Divide advantages by the group's std (off = Dr.GRPO).")
@click.option("--vllm", "use_vllm", type=click.Choice(VLLM_CHOICES), default=None,
              help="Colocated vLLM generation (auto: when installed and on a GPU).")
@_run_options
def grpo(preset: str, resume: bool, print_config: bool, **overrides: Any) -> None:
    """Train with TRL's GRPOTrainer on a correctness reward; calibrates p, q1, q2 as it goes."""
    from realmodel.training.grpo import run_grpo

    _execute(lambda: grpo_preset(preset, **overrides), run_grpo, resume, print_config)


TRAINING_COMMANDS = [sft, grpo]
