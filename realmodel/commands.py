"""The `realmodel` command group (DESIGN.md §5): parse, data, eval (+ training commands).

torch / transformers are imported inside the commands, so `python cli.py --help` and the
simulator work without the `real` extra. Expected failures (a missing model, a bad ladder,
vLLM without a GPU) end with a one-line message, not a traceback (core.errors). Bad input is
refused at the option that carries it, before anything is generated or written: text inputs
must be UTF-8 (files and stdin alike), floats finite, seeds non-negative, output names one
folder name, and output folders creatable (DESIGN.md §5: a run is reproducible from its
options). The training commands (`sft`, `grpo`) come from realmodel/training/commands.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from core.errors import clear_errors, fail
from core.provenance import check_run_name
from realmodel.generation import BACKENDS, GenerationConfig
from realmodel.tasks import DEFAULT_ID, DEFAULT_LADDER
from realmodel.training.commands import TRAINING_COMMANDS


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and +-inf (NaN passes no range comparison)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class DeviceType(click.ParamType):
    """auto, cpu, cuda or cuda:K (a GPU index); anything else lists the choices."""

    name = "device"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[auto|cpu|cuda|cuda:K]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            return value
        self.fail(f"{value!r} is not one of auto, cpu, cuda, cuda:K (K a GPU index).",
                  param, ctx)


def _utf8_error(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def _read_utf8(path: str, option: str) -> str:
    """The text of `path`, or a usage error naming `option` (not UTF-8, unreadable)."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path} is {_utf8_error(exc)}", param_hint=option) from None
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}",
                                 param_hint=option) from None


def _utf8_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Option callback: a text file given must be UTF-8 (the marker list is text)."""
    if value is not None:
        _read_utf8(value, f"'{param.opts[0]}'")
    return value


def _output_name(ctx: click.Context, param: click.Parameter,
                 value: str | None) -> str | None:
    """Option callback: an output name is one folder name under the output root."""
    if value is None:
        return None
    try:
        return check_run_name(value, param.opts[0])
    except ValueError as exc:  # its message names the option
        raise click.UsageError(str(exc).splitlines()[0], ctx) from None


def _output_folder(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Option callback: a folder that exists, or can be made below the nearest existing
    folder (not under a regular file, not in a read-only folder). Probed by making and
    removing an empty temporary folder there (permission bits do not stop root)."""
    if not value:
        raise click.BadParameter("expected a folder path, got ''")
    path = Path(value).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise click.BadParameter(f"{value} cannot be a folder: {path} is a regular file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=path))
    except OSError as exc:
        raise click.BadParameter(f"cannot write under {path}: {exc.strerror or exc}") from None
    return value


def _ladder(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Option callback: a task ladder ('1x1,2x3'); for --id-tasks, tasks of --ladder too."""
    from realmodel.tasks import parse_ladder

    try:
        names = [t.name for t in parse_ladder(value)]
    except ValueError as exc:
        raise click.BadParameter(str(exc).splitlines()[0], ctx, param) from None
    if param.name == "id_tasks" and "ladder" in ctx.params:
        ladder = {t.name for t in parse_ladder(ctx.params["ladder"])}
        missing = [n for n in names if n not in ladder]
        if missing:
            raise click.BadParameter(f"{', '.join(missing)} not on --ladder "
                                     f"{ctx.params['ladder']!r}", ctx, param)
    return value


@click.group("realmodel")
def realmodel() -> None:
    """Real language models: tasks, parsing, SFT data, evaluation and calibration."""


@realmodel.command("parse")
@click.option("--a", "a", type=click.IntRange(0), required=True,
              help="First operand (non-negative, as in the tasks).")
@click.option("--b", "b", type=click.IntRange(0), required=True,
              help="Second operand (non-negative, as in the tasks).")
@click.option("--markers", type=click.Path(exists=True, dir_okay=False), default=None,
              callback=_utf8_file,
              help="Extra revision markers, one a line, UTF-8 (added to the default list).")
@click.option("--truncated", is_flag=True, help="The response hit the token limit.")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="UTF-8 response file (default: standard input).")
def parse_cmd(a: int, b: int, markers: str | None, truncated: bool,
              input_path: str | None) -> None:
    """Parse a UTF-8 response to `a * b` from stdin; print the attempts as JSON."""
    from realmodel.parsing import load_markers, parse_response

    if input_path:
        text = _read_utf8(input_path, "'--input'")
    else:  # bytes, decoded strictly: a text stdin may use surrogateescape (C/POSIX locale)
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"stdin is {_utf8_error(exc)}; pass a UTF-8 "
                                       f"response (or a file with --input)") from None
    marker_list = load_markers(markers) if markers else None
    click.echo(json.dumps(parse_response(text, a, b, marker_list, truncated).to_dict()))


@realmodel.command("data")
@click.option("--ladder", default=DEFAULT_LADDER, show_default=True, help="Task ladder.",
              is_eager=True, callback=_ladder)
@click.option("--id-tasks", default=DEFAULT_ID, show_default=True, callback=_ladder,
              help="In-distribution (training) tasks.")
@click.option("--n-train", default=20000, show_default=True, type=click.IntRange(0),
              help="Training problems, balanced over the ID tasks (DESIGN §5).")
@click.option("--n-test", default=100, show_default=True, type=click.IntRange(0),
              help="Test problems per task.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help="Seed of the splits and the synthesized sets.")
@click.option("--ft-share", default=0.5, show_default=True, type=FiniteFloatRange(0, 1),
              help="Share of F->T examples in the reflection SFT set.")
@click.option("--n-reflections", default=1, show_default=True, type=click.IntRange(0),
              help="Attempts after the first in a reflection example (cut-at-k).")
@click.option("--out", "out_dir", default="outputs/real/data", show_default=True,
              type=click.Path(file_okay=False), callback=_output_folder,
              help="The data folder written (data sets and manifest.json).")
def data_cmd(ladder: str, id_tasks: str, n_train: int, n_test: int, seed: int, ft_share: float,
             n_reflections: int, out_dir: str) -> None:
    """Write the train/test splits and both SFT sets (JSONL + Parquet) and manifest.json."""
    from realmodel.data_run import DataRunError, build_data, check_out, write_data

    config = dict(tasks=ladder, id_tasks=id_tasks, n_train=n_train, n_test=n_test, seed=seed,
                  ft_share=ft_share, n_reflections=n_reflections)
    try:  # everything is built before anything is written
        data = build_data(**config)
        check_out(out_dir)
    except (ValueError, DataRunError) as exc:
        raise fail(exc) from None
    try:
        paths = write_data(out_dir, data, config)
    except OSError as exc:
        raise click.BadParameter(f"cannot write {out_dir}: {exc.strerror or exc}",
                                 param_hint="'--out'") from None
    for path in paths:
        click.echo(f"wrote {path} (+ .parquet)")
    click.echo(f"wrote {Path(out_dir) / 'manifest.json'}")


@realmodel.command("eval")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="smollm2-135m, a local checkpoint directory or a cached hub id.")
@click.option("--ladder", default=DEFAULT_LADDER, show_default=True, help="Task ladder.",
              is_eager=True, callback=_ladder)
@click.option("--id-tasks", default=DEFAULT_ID, show_default=True, callback=_ladder,
              help="In-distribution tasks (held out the same way as the training splits).")
@click.option("--n", default=100, show_default=True, type=click.IntRange(1),
              help="Test problems per task.")
@click.option("--name", default=None, callback=_output_name,
              help="Output folder name, one path component: writes <out>/<name>/ (default: "
                   "from the model).")
@click.option("--out", default="outputs/real", show_default=True,
              type=click.Path(file_okay=False), callback=_output_folder,
              help="Parent folder of the evaluation folders.")
@click.option("--max-new-tokens", default=GenerationConfig.max_new_tokens, show_default=True,
              type=click.IntRange(1),
              help="Token limit per response (paper: 8192).")
@click.option("--temperature", default=GenerationConfig.temperature, show_default=True,
              type=FiniteFloatRange(0),
              help="Sampling temperature (paper: 1.0).")
@click.option("--top-p", default=GenerationConfig.top_p, show_default=True,
              type=FiniteFloatRange(0, 1, min_open=True), help="Nucleus sampling threshold.")
@click.option("--samples-per-prompt", default=GenerationConfig.samples_per_prompt,
              show_default=True, type=click.IntRange(1),
              help="Responses per problem (paper: 1).")
@click.option("--batch-size", default=GenerationConfig.batch_size, show_default=True,
              type=click.IntRange(1),
              help="Prompts per generation batch.")
@click.option("--seed", default=GenerationConfig.seed, show_default=True,
              type=click.IntRange(0), help="Sampling and bootstrap seed.")
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(0),
              help="Seed of the problem splits.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="Generation backend (auto: vLLM when it is installed and a GPU is present).")
@click.option("--device", default="auto", show_default=True, type=DeviceType(),
              help="auto, cpu or cuda[:k].")
@click.option("--markers", type=click.Path(exists=True, dir_okay=False), default=None,
              callback=_utf8_file, help="Extra revision markers, one a line, UTF-8.")
@click.option("--n-boot", default=100, show_default=True, type=click.IntRange(1),
              help="Bootstrap resamples (paper: 100).")
@click.option("--max-attempts", default=None, type=click.IntRange(1),
              help="Predict with a forced stop at K attempts (default: infinite horizon).")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="torch CPU threads (1 is much faster on a busy machine).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@clear_errors(ImportError)
def eval_cmd(model: str, ladder: str, id_tasks: str, n: int, name: str | None, out: str,
             max_new_tokens: int, temperature: float, top_p: float, samples_per_prompt: int,
             batch_size: int, seed: int, split_seed: int, backend: str, device: str,
             markers: str | None, n_boot: int, max_attempts: int | None, threads: int | None,
             quiet: bool) -> None:
    """Generate, parse and calibrate (p, q1, q2) per task -> outputs/real/<name>/."""
    # expected failures (a missing model or extra, a backend that cannot run here) are
    # one-line errors (core.errors; the realmodel errors are ExpectedErrors)
    from realmodel.calibration_table import format_table
    from realmodel.evaluation import evaluate
    from realmodel.parsing import load_markers

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    config = GenerationConfig(temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens,
                              samples_per_prompt=samples_per_prompt, seed=seed,
                              batch_size=batch_size)
    result = evaluate(
        model, ladder, id_tasks, n=n, name=name, out_root=out, config=config,
        backend=backend, device=device,
        markers=load_markers(markers) if markers else None, n_boot=n_boot,
        max_attempts=max_attempts, split_seed=split_seed, progress=not quiet,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(format_table(result.table))
    click.echo(f"wrote {result.out_dir} (responses.jsonl, calibration.csv, manifest.json); "
               f"generated {result.n_generated} queries in {result.wall_time_s:.1f} s")


for _command in TRAINING_COMMANDS:  # realmodel sft, realmodel grpo
    realmodel.add_command(_command)

COMMANDS = [realmodel]
