"""`realmodel sft` and `realmodel grpo` (DESIGN.md §5). A run = a preset, then a `--config`
file, then the options given (config_file.py: the file takes any run-config field and any
field of TRL's SFTConfig / GRPOConfig).

One option per run-config field (config.py documents each one, core.cli_options builds the
options from the fields). Every option defaults to "not given" (None), so the file's or the
preset's value stands unless the user overrides it. `--print-config` prints, as JSON, the
resolved run config and the final TRL config the trainer would get (every field,
trl_config.preview), without loading the model or making the run folder, and exits. The run
config validates every setting (config.py); its message names the options (`OPTIONS`), or
the key and the file where the file set it, e.g. "Error: --lr must be a finite number > 0,
got inf". Expected failures (bad settings, a bad config file, a TRL config TRL refuses, a
missing model, bf16 without a GPU, --resume without a checkpoint) end with a one-line
message, before the run folder is made or with the folder removed again (runs.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from core.cli_options import config_options
from core.errors import EXPECTED, fail, one_line
from core.provenance import first_missing_folder
from realmodel.training.config import (
    DEFAULT_PRESET,
    PAPER_MEMORY_NOTE,
    PRESET_NAMES,
    GRPORunConfig,
    RunConfigError,
    SFTRunConfig,
    check_run_name,
)

# The run-config fields each command takes as options, in the order shown (every option's
# help and type come from its field, config.py), and the option names that are not the
# field's own: one flag per concept across the commands (--name, --out) and short forms
_COMMON = ("model", "run_name", "output_root", "ladder", "id_tasks", "n_train", "n_test",
           "seed", "device", "learning_rate", "num_train_epochs", "max_steps",
           "per_device_train_batch_size", "gradient_accumulation_steps", "optim",
           "weight_decay", "warmup_ratio", "warmup_steps", "lr_scheduler_type", "bf16",
           "gradient_checkpointing", "use_lora", "lora_r", "lora_alpha", "lora_dropout",
           "lora_target_modules", "save_steps", "save_total_limit", "logging_steps",
           "report_to", "calib_every", "calib_n",
           "calib_max_new_tokens", "calib_temperature", "calib_batch_size",
           "max_train_seconds")
_SFT = ("data", "ft_share", "n_reflections", "max_length")
_GRPO = ("num_generations", "beta", "temperature", "max_new_tokens", "steps_per_generation",
         "num_iterations", "epsilon", "loss_type", "mask_truncated_completions",
         "scale_rewards", "backend", "vllm_gpu_memory_utilization")
_RENAME = {"run_name": "--name", "output_root": "--out", "learning_rate": "--lr",
           "num_train_epochs": "--epochs", "per_device_train_batch_size": "--batch-size",
           "gradient_accumulation_steps": "--grad-accum", "use_lora": "--lora"}


def _run_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--name, when given, is one folder name under --out ("" included: the default name is
    what leaving the option out gives)."""
    if value is None:
        return None
    try:
        return check_run_name(value, "--name")
    except ValueError as exc:  # its message names the option
        raise click.UsageError(str(exc).splitlines()[0], ctx) from None


SFT_OPTIONS = config_options(SFTRunConfig, include=(*_SFT, *_COMMON), rename=_RENAME,
                             callbacks={"run_name": _run_name}, preset=True)
GRPO_OPTIONS = config_options(GRPORunConfig, include=(*_GRPO, *_COMMON), rename=_RENAME,
                              callbacks={"run_name": _run_name}, preset=True)
# run-config field -> the option that sets it (error messages name options, not fields)
OPTIONS: dict[str, str] = {**SFT_OPTIONS.flags, **GRPO_OPTIONS.flags}


def _run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--resume", is_flag=True,
                        help="Continue from the last checkpoint in the run folder.")(func)
    func = click.option("--print-config", is_flag=True,
                        help="Print the run config and the final TRL config (every field) as "
                             "JSON and exit; nothing is loaded or written.")(func)
    func = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                        help="YAML/JSON file of run-config fields and any TRL SFTConfig / "
                             "GRPOConfig field (preset < file < options).")(func)
    return click.option("--preset", type=click.Choice(PRESET_NAMES), default=DEFAULT_PRESET,
                        show_default=True, help="Preset the file and the options override "
                        "(default: the file's preset, else smol).")(func)


def _execute(method: str, run: Callable[..., dict[str, Any]], preset: str,
             config_file: str | None, overrides: dict[str, Any], resume: bool,
             print_config: bool) -> None:
    from realmodel.training.config_file import resolve
    from realmodel.training.runs import remove_unstarted, run_dir
    from realmodel.training.trl_config import preview, to_json

    ctx = click.get_current_context()
    given = ctx.get_parameter_source("preset") is not click.core.ParameterSource.DEFAULT
    try:
        cfg = resolve(method, preset if given else None, config_file, overrides)
        trl_args, device = preview(cfg)  # TRL validates it now, not after the folder is made
    except RunConfigError as exc:
        raise click.ClickException(one_line(exc.render(OPTIONS))) from None
    except (ValueError, ImportError, OSError) as exc:
        raise fail(exc) from None
    if print_config:
        click.echo(json.dumps({"run_config": cfg.to_dict(),
                               "trl_config_class": f"trl.{type(trl_args).__name__}",
                               "target_device": device,
                               "trl_config": to_json(trl_args)}, indent=2))
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
@_run_options
@SFT_OPTIONS
def sft(preset: str, config_file: str | None, resume: bool, print_config: bool,
        **overrides: Any) -> None:
    """Fine-tune on synthesized trajectories with TRL's SFTTrainer (completion-only loss)."""
    from realmodel.training.sft import run_sft

    _execute("sft", run_sft, preset, config_file, overrides, resume, print_config)


@click.command("grpo")
@_run_options
@GRPO_OPTIONS
def grpo(preset: str, config_file: str | None, resume: bool, print_config: bool,
         **overrides: Any) -> None:
    """Train with TRL's GRPOTrainer on a correctness reward; calibrates p, q1, q2 as it goes."""
    from realmodel.training.grpo import run_grpo

    _execute("grpo", run_grpo, preset, config_file, overrides, resume, print_config)


TRAINING_COMMANDS = [sft, grpo]
