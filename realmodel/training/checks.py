"""Validation helpers of the run configs (config.py; DESIGN.md §5: a run is a validated config).

`RunConfigError` is a ``ValueError`` that names the config fields involved, so that the CLI
can word it with its own names (the options, or the keys of a config file). The checks refuse
non-finite floats (NaN passes no comparison), values outside their bounds and names that
transformers does not know (optimizers, LR schedules, logging integrations); transformers is
imported only for a value that is not the default, so validating a config stays cheap.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

NO_REPORT = ("none",)  # report_to's default: the run's own Parquet logs only
# TRL config fields set from a run-config field of another name: a config file may use either
# (config_file.py reads the TRL name as the run-config field), and trl_args may not hold them
TRL_ALIASES = {"max_completion_length": "max_new_tokens", "use_vllm": "backend",
               "use_cpu": "device"}
# TRL config fields the run sets itself, with what to use instead
TRL_RESERVED = {
    "output_dir": "the run sets it to <output_root>/<run_name>/checkpoints; set output_root "
                  "and run_name",
    "resume_from_checkpoint": "use --resume",
}


class RunConfigError(ValueError):
    """An invalid run setting. `fields` are the config fields the message names (the first
    occurrence of each); `render` words it with other names, e.g. the CLI's options.
    `names` (field -> name) are the names of the fields a config file set, which `render`
    prefers (config_file.resolve)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields
        self.names: dict[str, str] = {}

    def render(self, names: Mapping[str, str]) -> str:
        names = {**names, **self.names}
        text = str(self)
        for fld in self.fields:
            if fld in names:
                text = re.sub(rf"(?<![\w-]){re.escape(fld)}(?![\w-])",
                              lambda _, name=names[fld]: name, text, count=1)
        return text


@functools.cache
def optimizer_names() -> tuple[str, ...] | None:
    """The optimizer names transformers accepts (`TrainingArguments.optim`), or None when
    transformers is not installed (nothing can train then anyway)."""
    try:
        from transformers.training_args import OptimizerNames
    except ImportError:
        return None
    return tuple(o.value for o in OptimizerNames)


@functools.cache
def scheduler_names() -> tuple[str, ...] | None:
    """The LR schedule names transformers accepts (`TrainingArguments.lr_scheduler_type`),
    or None without transformers."""
    try:
        from transformers.trainer_utils import SchedulerType
    except ImportError:
        return None
    return tuple(s.value for s in SchedulerType)


@functools.cache
def reporting_names() -> tuple[str, ...] | None:
    """The logging integrations transformers knows (`TrainingArguments.report_to`: tensorboard,
    trackio, wandb, ...), or None without transformers."""
    try:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    except ImportError:
        return None
    return tuple(INTEGRATION_TO_CALLBACK)


def check_name(name: str, value: str, known: tuple[str, ...] | None, what: str) -> None:
    """`value` is one of transformers' `known` names (None: transformers is missing, so
    nothing can run anyway and the name is not checked)."""
    if known is not None and value not in known:
        raise RunConfigError(f"{name} must be one of transformers' {what} ({', '.join(known)});"
                             f" got {value!r}", name)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RunConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}", name)


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise RunConfigError(f"{name} must be >= 1, got {value}", name)


def check_real(name: str, value: float, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> None:
    """A finite number within the bounds (math.isfinite first: NaN fails no comparison)."""
    ok = isinstance(value, int | float) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = [f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
                  f"{'<' if high_open else '<='} {high:g}" if high is not None else ""]
        where = " and ".join(b for b in bounds if b)
        raise RunConfigError(
            f"{name} must be a finite number{' ' + where if where else ''}, got {value!r}", name)


def check_schedule(lr_scheduler_type: str, warmup_ratio: float, warmup_steps: int) -> None:
    """A schedule transformers knows, one warm-up setting, and no warm-up that the schedule
    would ignore (transformers' ``constant`` has none: ``constant_with_warmup`` does)."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise RunConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}",
                             "warmup_steps")
    if warmup_steps and warmup_ratio:
        raise RunConfigError("give warmup_ratio or warmup_steps, not both",
                             "warmup_ratio", "warmup_steps")
    if lr_scheduler_type not in ("linear", "constant"):  # transformers imported for others
        check_name("lr_scheduler_type", lr_scheduler_type, scheduler_names(), "schedules")
    if lr_scheduler_type == "constant" and (warmup_steps or warmup_ratio):
        raise RunConfigError("lr_scheduler_type constant ignores the warm-up (transformers); "
                             "use constant_with_warmup", "lr_scheduler_type")


def check_report_to(report_to: tuple[str, ...]) -> None:
    """``none`` alone, or transformers integration names (``all``: every installed one)."""
    if tuple(report_to) == NO_REPORT:
        return
    if not report_to or "none" in report_to:
        raise RunConfigError(f"report_to must be none or integration names, got "
                             f"{','.join(report_to)!r}", "report_to")
    known = reporting_names()
    for name in report_to:
        if name != "all":
            check_name("report_to", name, known, "logging integrations")


def check_trl_args(trl_args: Mapping[str, Any], own: Iterable[str]) -> None:
    """`trl_args` holds TRL fields the run config does not set (`own`: its field names):
    neither a run-config field, nor one set through a run-config field, nor a reserved one.
    Whether TRL knows the name is checked where TRL is imported (config_file.py)."""
    own = set(own)
    for key in trl_args:
        if not isinstance(key, str):
            raise RunConfigError(f"trl_args keys must be TRL field names, got {key!r}",
                                 "trl_args")
        if key in own:
            raise RunConfigError(f"trl_args: {key} is a run-config field; set it directly",
                                 "trl_args")
        if TRL_ALIASES.get(key) in own:
            raise RunConfigError(f"trl_args: {key} is set by the run-config field "
                                 f"{TRL_ALIASES[key]}", "trl_args")
        if key in TRL_RESERVED:
            raise RunConfigError(f"trl_args: {key} cannot be set: {TRL_RESERVED[key]}",
                                 "trl_args")
