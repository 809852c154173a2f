"""The `realmodel` command group (DESIGN.md §5): parse, data, eval (+ training commands).

torch / transformers are imported inside the commands, so `python cli.py --help` and the
simulator work without the `real` extra. Expected failures (a missing model, a bad ladder,
vLLM without a GPU) end with a one-line message, not a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from realmodel.tasks import DEFAULT_ID, DEFAULT_LADDER


def _fail(exc: BaseException) -> click.ClickException:
    """A one-line CLI error from an expected exception (also used by the training commands)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ImportError):
        text = f"{text} (training needs the real extra: pip install 'ds-study[real]')"
    return click.ClickException(text)


@click.group("realmodel")
def realmodel() -> None:
    """Real language models: tasks, parsing, SFT data, evaluation and calibration."""


@realmodel.command("parse")
@click.option("--a", "a", type=int, required=True, help="First operand.")
@click.option("--b", "b", type=int, required=True, help="Second operand.")
@click.option("--markers", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Extra revision markers, one a line (added to the default list).")
@click.option("--truncated", is_flag=True, help="The response hit the token limit.")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Response file (default: standard input).")
def parse_cmd(a: int, b: int, markers: str | None, truncated: bool,
              input_path: str | None) -> None:
    """Parse a response to `a * b` from stdin; print the attempts as JSON."""
    from realmodel.parsing import load_markers, parse_response

    text = Path(input_path).read_text(encoding="utf-8") if input_path else sys.stdin.read()
    marker_list = load_markers(markers) if markers else None
    click.echo(json.dumps(parse_response(text, a, b, marker_list, truncated).to_dict()))


@realmodel.command("data")
@click.option("--tasks", default=DEFAULT_LADDER, show_default=True, help="Task ladder.")
@click.option("--id-tasks", default=DEFAULT_ID, show_default=True,
              help="In-distribution (training) tasks.")
@click.option("--n-train", default=20000, show_default=True, type=click.IntRange(0))
@click.option("--n-test", default=100, show_default=True, type=click.IntRange(0),
              help="Test problems per task.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--ft-share", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Share of F->T examples in the reflection SFT set.")
@click.option("--n-reflections", default=1, show_default=True, type=click.IntRange(0),
              help="Attempts after the first in a reflection example (cut-at-k).")
@click.option("--out", "out_dir", default="outputs/real/data", show_default=True,
              type=click.Path(file_okay=False))
def data_cmd(tasks: str, id_tasks: str, n_train: int, n_test: int, seed: int, ft_share: float,
             n_reflections: int, out_dir: str) -> None:
    """Write the train/test splits and both SFT sets (JSONL + Parquet)."""
    from realmodel.synthesis import build_sft_dataset
    from realmodel.tasks import make_splits, write_records, write_splits

    try:
        splits = make_splits(tasks, id_tasks, n_train=n_train, n_test=n_test, seed=seed)
    except ValueError as exc:
        raise _fail(exc) from None
    out = Path(out_dir)
    paths = write_splits(splits, out)
    for kind in ("no-reflection", "reflection"):
        sft = build_sft_dataset(splits["train"], kind, ft_share=ft_share,
                                n_reflections=n_reflections, seed=seed)
        path = out / f"sft_{kind.replace('-', '_')}.jsonl"
        write_records(sft, path)
        paths.append(path)
    for path in paths:
        click.echo(f"wrote {path} (+ .parquet)")


@realmodel.command("eval")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="smollm2-135m, a local checkpoint directory or a cached hub id.")
@click.option("--tasks", default=DEFAULT_LADDER, show_default=True, help="Task ladder.")
@click.option("--id-tasks", default=DEFAULT_ID, show_default=True,
              help="In-distribution tasks (held out the same way as the training splits).")
@click.option("--n", default=100, show_default=True, type=click.IntRange(1),
              help="Test problems per task.")
@click.option("--name", default=None, help="Output name (default: from the model).")
@click.option("--out-root", default="outputs/real", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--max-new-tokens", default=1024, show_default=True, type=click.IntRange(1),
              help="Token limit per response (paper: 8192).")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--samples-per-prompt", default=1, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int,
              help="Sampling and bootstrap seed.")
@click.option("--split-seed", default=0, show_default=True, type=int,
              help="Seed of the problem splits.")
@click.option("--backend", type=click.Choice(["auto", "vllm", "transformers"]),
              default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:k].")
@click.option("--markers", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Extra revision markers, one a line.")
@click.option("--n-boot", default=100, show_default=True, type=click.IntRange(1),
              help="Bootstrap resamples (paper: 100).")
@click.option("--max-attempts", default=None, type=click.IntRange(1),
              help="Predict with a forced stop at K attempts (default: infinite horizon).")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="torch CPU threads (1 is much faster on a busy machine).")
@click.option("--reparse", is_flag=True,
              help="Kept for compatibility: stored responses are always re-parsed.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_cmd(model: str, tasks: str, id_tasks: str, n: int, name: str | None, out_root: str,
             max_new_tokens: int, temperature: float, top_p: float, samples_per_prompt: int,
             batch_size: int, seed: int, split_seed: int, backend: str, device: str,
             markers: str | None, n_boot: int, max_attempts: int | None, threads: int | None,
             reparse: bool, quiet: bool) -> None:
    """Generate, parse and calibrate (p, q1, q2) per task -> outputs/real/<name>/."""
    try:
        from realmodel.evaluation import EvaluationError, evaluate, format_table
        from realmodel.generation import GenerationConfig, GenerationError
        from realmodel.models import ModelResolutionError
        from realmodel.parsing import load_markers
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"{exc.name} is not installed: pip install 'ds-study[real]'") from None
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        config = GenerationConfig(temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens,
                                  samples_per_prompt=samples_per_prompt, seed=seed,
                                  batch_size=batch_size)
        result = evaluate(
            model, tasks, id_tasks, n=n, name=name, out_root=out_root, config=config,
            backend=backend, device=device,
            markers=load_markers(markers) if markers else None, n_boot=n_boot,
            max_attempts=max_attempts, split_seed=split_seed, reparse=reparse,
            progress=not quiet,
            log=lambda m: click.echo(m, err=True),
        )
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"{exc.name} is not installed: pip install 'ds-study[real]'") from None
    except (ValueError, ModelResolutionError, GenerationError, EvaluationError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(format_table(result.table))
    click.echo(f"wrote {result.out_dir} (responses.jsonl, calibration.csv, manifest.json); "
               f"generated {result.n_generated} queries in {result.wall_time_s:.1f} s")


COMMANDS = [realmodel]

# Hook for the training helper (realmodel/training/commands.py defines TRAINING_COMMANDS).
try:
    from realmodel.training.commands import TRAINING_COMMANDS
except ModuleNotFoundError as _exc:
    if _exc.name not in ("realmodel.training", "realmodel.training.commands"):
        raise
else:
    for _command in TRAINING_COMMANDS:
        realmodel.add_command(_command)
