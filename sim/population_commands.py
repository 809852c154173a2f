"""Click commands `train` and `sweep` (DESIGN.md §2-§4): parse, validate, call, report.

All the work is in sim.training_run and sim.sweep (grids from sim.grid and sim.grid_files,
executors in sim.executors); bad input becomes a one-line `Error:` (core.errors) before any
work starts: counts must fit MAX_COUNT, seeds 64 bits, rates be finite, answer lengths lie in
sim.lengths' bounds. Running out of memory, results that are
not finite, SIGINT and SIGTERM end a run with one line too (a sweep keeps its finished cells).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from core.cli_options import CommaList, config_options
from core.errors import clear_errors, fail
from core.provenance import check_output_name
from sim.columns import keyed_columns
from sim.lengths import MAX_LENGTH, parse_lengths
from sim.training_run import TrainConfig

_OOM = "not enough memory for this run: lower --agents, --queries or the grid's size"


def _csv(value: str | None, cast=str) -> tuple | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.ClickException(f"empty list: {value!r}")
    try:
        return tuple(cast(v) for v in items)
    except ValueError:
        raise click.ClickException(f"cannot read {value!r} as a comma-separated list") from None


def _check_counts(**options: tuple[int | None, int]) -> None:
    """option name -> (value or None, smallest allowed): integers up to MAX_COUNT (agents:
    MAX_AGENTS)."""
    from sim.grid import MAX_AGENTS, MAX_COUNT

    for option, (value, lowest) in options.items():
        highest = MAX_AGENTS if option == "--agents" else MAX_COUNT
        if value is not None and not lowest <= value <= highest:
            raise ValueError(f"{option} must be an integer in [{lowest}, {highest}], "
                             f"got {value}")


def _check_rate(value: float | None, option: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{option} must be a finite number > 0, got {value}")


def _check_clip(value: float | None, option: str) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{option} must be a finite number >= 0 (0: no clipping), got {value}")


def _fmt(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


class CouplingType(click.ParamType):
    """'none' or a 3x3 matrix '1 0.5 0; 0 1 0; 0 0 1' (sim.model.parse_coupling, DESIGN §2)."""

    name = "coupling"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        from sim.model import parse_coupling

        try:
            return parse_coupling(value, "--coupling")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# `train` takes one option per TrainConfig field (sim.training_run documents each one);
# the option names kept from the sweep's flags where the field's name is longer
TRAIN_OPTIONS = config_options(
    TrainConfig,
    exclude=("theta0",),
    rename={"max_attempts": ("-K", "--max-attempts"), "n_queries": "--queries",
            "n_agents": "--agents", "ref_update_every": "--ref-every"},
    types={"coupling": CouplingType()},
)


@click.command("train")
@click.option("--name", default="fig1", show_default=True,
              help="run folder name, one path component: writes <out>/<name>/")
@TRAIN_OPTIONS
@click.option("--out", default="outputs/train", show_default=True,
              help="parent folder of the run folders")
@clear_errors(TypeError)
def train(name: str, out: str, **fields: Any) -> None:
    """Train one configuration; default: the paper's Figure 1 (3-logit GRPO, reference resets)."""
    from sim.grid import check_seed
    from sim.training_run import train_and_write

    settings = TRAIN_OPTIONS.values(fields)
    ref_every = settings["ref_update_every"]
    if ref_every is not None and ref_every < 0:
        raise ValueError(f"--ref-every must be >= 0, got {ref_every}")
    check_output_name(name)
    check_seed(settings["seed"], "--seed")
    _check_counts(**{"--steps": (settings["steps"], 1), "--agents": (settings["n_agents"], 1),
                     "--queries": (settings["n_queries"], 1), "--ref-every": (ref_every, 0),
                     "-K/--max-attempts": (settings["max_attempts"], 1),
                     "--group-size": (settings["group_size"], 2),
                     "--record-every": (settings["record_every"], 1)})
    _check_rate(settings["lr"], "--lr")
    _check_clip(settings["max_grad_norm"], "--max-grad-norm")
    for option, value in (("--length", settings["length"]),
                          ("--wrong-length", settings["wrong_length"])):
        if value is not None and not 0 < value <= MAX_LENGTH:  # NaN fails too
            raise ValueError(f"{option} must be in (0, {MAX_LENGTH}] tokens, got {value}")
    cfg = TrainConfig(**{**settings, "ref_update_every": ref_every or None})
    run_dir = Path(out, name)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)  # fail on a bad --out before training
    try:
        out_dir, meas = train_and_write(cfg, name, out)
    except BaseException as exc:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)  # leave no empty folder behind
        if isinstance(exc, MemoryError):
            raise click.ClickException(_OOM) from None
        raise
    click.echo(f"wrote {out_dir}/history.parquet and manifest.json")
    if meas["unstable"]:
        click.echo(f"warning: unstable -- p or q moved by {meas['max_jump']:.3g} (> 0.5) in one "
                   "step: chaos, not a result (DESIGN §2); lower --lr", err=True)
    click.echo("mean |gradient| over training (agents x steps), per parameter:")
    click.echo(f"  {'term':<12}{'theta_s':>10}{'theta_1':>10}{'theta_2':>10}")
    for term, g in meas["mean_abs_gradient"].items():
        click.echo(f"  {term:<12}{_fmt(g['s']):>10}{_fmt(g['1']):>10}{_fmt(g['2']):>10}")
    for key in keyed_columns(meas, "ratio").values():  # ratio[surrogate], ..., ratio[total]
        r = meas[key]
        click.echo(
            f"{key}: per agent-step min {_fmt(r['agent_steps_min'])}, median "
            f"{_fmt(r['agent_steps_median'])}, max {_fmt(r['agent_steps_max'])}, share > 2 "
            f"{_fmt(r['agent_steps_share_above_2'])}; population-mean min "
            f"{_fmt(r['population_mean_min'])} max {_fmt(r['population_mean_max'])}; "
            f"undefined (0/0) {r['undefined_steps']}"
        )


@click.command("sweep")
@click.option("--lengths", default=None,
              help=f"A..B (log-spaced) or A..B:STEP [default 10..1000]; L <= {MAX_LENGTH}")
@click.option("--points", type=int, default=None, help="points of a log-spaced range [16]")
@click.option("--objectives", default=None,
              help="comma-separated: surrogate, surrogate+kl, kl, sft-no-reflection, "
                   "sft-reflection, dft, nsr, psr or any term spec")
@click.option("--betas", default=None, help="comma-separated KL weights [0.001]")
@click.option("--token-models", default=None, help="per-token,sequence [per-token]")
@click.option("--optimisers", default=None,
              help="sgd,adam [adam]; SGD above its stability bound is refused (DESIGN §2)")
@click.option("--second-moments", default=None, type=CommaList(),
              help="Adam's second moment: shared,per-parameter [shared] (SGD ignores it)")
@click.option("--max-grad-norms", default=None,
              help="global gradient-norm clips, e.g. 0,1.0 (0: off) [0]")
@click.option("--couplings", default=None,
              help="couplings of the trained logits, comma-separated: none or a 3x3 matrix "
                   "'1 0.5 0; 0 1 0; 0 0 1' [none]")
@click.option("--grid", "grid_file", default=None, help="TOML or YAML grid file")
@click.option("--name", default=None, help="outputs/sweeps/<name>/ [from the grid's hash]")
@click.option("--seed", type=int, default=None, help="0 .. 2**64 - 1 [0]")
@click.option("--steps", type=int, default=None, help="training steps per cell [the grid's]")
@click.option("--agents", "n_agents", type=int, default=None,
              help="agents per cell [the grid's]")
@click.option("--queries", "n_queries", type=int, default=None,
              help="queries per step and agent [the grid's]")
@click.option("--lr", type=float, default=None, help="SGD's learning rate [the grid's: 0.05]")
@click.option("--adam-lr", type=float, default=None,
              help="Adam's learning rate [the grid's: 0.02]")
@click.option("-K", "--max-attempts", type=int, default=None,
              help="K, the forced stop at attempt K (DESIGN §1) [the grid's]")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local processes or a Ray cluster")
@click.option("--address", default=None, help="Ray cluster address (e.g. 10.0.0.1:6379, auto)")
@click.option("--workers", type=int, default=None, help="local processes [all cores]")
@click.option("--out", default="outputs/sweeps", show_default=True,
              help="parent folder of the sweep folders")
@click.option("--overwrite", is_flag=True, help="discard an existing sweep of this name")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@clear_errors(TypeError)
def sweep(lengths, points, objectives, betas, token_models, optimisers, second_moments,
          max_grad_norms, couplings, grid_file, name, seed, steps, n_agents, n_queries, lr,
          adam_lr, max_attempts, executor, address, workers, out, overwrite, no_progress) -> None:
    """Run (or resume) a grid of population trainings and write results.parquet."""
    from sim.executors import check_ray_address
    from sim.grid import check_seed
    from sim.grid_files import build_grid, load_grid_file
    from sim.sweep import default_name, run_sweep

    try:
        if lengths is not None:
            parse_lengths(lengths, points if points is not None else 16)
        if points is not None and points < 1:
            raise ValueError(f"--points must be >= 1, got {points}")
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        most = 4 * (os.cpu_count() or 1)
        if workers is not None and workers > most:
            raise ValueError(f"--workers {workers} is more than 4 per core ({most} here); one "
                             "process per core is the fastest")
        if address is not None and executor != "ray":
            raise ValueError("--address is only used with --executor ray")
        if executor == "ray":
            check_ray_address(address)  # before any work: ray.init retries for minutes
        if name is not None:
            if not name:
                raise ValueError("--name must not be empty (leave it out for a name from the "
                                 "grid's hash)")
            check_output_name(name)
        if seed is not None:
            check_seed(seed, "--seed")
        _check_counts(**{"--steps": (steps, 1), "--agents": (n_agents, 1),
                         "--queries": (n_queries, 1), "-K/--max-attempts": (max_attempts, 1)})
        _check_rate(lr, "--lr")
        _check_rate(adam_lr, "--adam-lr")
        file_data = load_grid_file(grid_file) if grid_file else None
        given_name, grid = build_grid(
            file_data, source=f"grid file {grid_file}" if grid_file else None,
            name=name, lengths=lengths, points=points,
            objectives=_csv(objectives), betas=_csv(betas, float),
            token_models=_csv(token_models), optimisers=_csv(optimisers),
            second_moments=second_moments, max_grad_norms=_csv(max_grad_norms, float),
            couplings=_csv(couplings), seed=seed,
            steps=steps, n_agents=n_agents, n_queries=n_queries, lr=lr, adam_lr=adam_lr,
            max_attempts=max_attempts,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        raise fail(exc) from None
    name = check_output_name(given_name if given_name is not None else default_name(grid))
    Path(out, name).mkdir(parents=True, exist_ok=True)  # fail on a bad --out before any work
    n_cells = len(grid.cells())
    click.echo(f"sweep {name}: {n_cells} cells x {grid.training.n_agents} agents, "
               f"executor {executor}")
    try:
        result = run_sweep(grid, name, out, executor=executor, workers=workers,
                           address=address, overwrite=overwrite, progress=not no_progress,
                           inputs={"grid": grid_file} if grid_file else None)
    except (ValueError, RuntimeError) as exc:
        raise fail(exc) from None
    except MemoryError:
        raise click.ClickException(_OOM) from None
    except KeyboardInterrupt as exc:  # Ctrl-C / SIGINT, or SIGTERM (sim.executors.SweepInterrupted)
        signum = getattr(exc, "signum", 2)
        click.echo(f"\ninterrupted; finished cells are kept in {out}/{name}/cells -- rerun the "
                   "same command to resume", err=True)
        sys.exit(128 + signum)
    click.echo(
        f"done in {result.wall_s:.1f} s: {len(result.computed)} cells computed, "
        f"{len(result.skipped)} resumed -> {result.out_dir}/results.parquet"
    )
    if result.results is not None and len(result.results):
        from sim.headline import headline

        click.echo(headline(result.results))
    summary = {"name": name, "wall_s": round(result.wall_s, 2), "computed": len(result.computed),
               "resumed": len(result.skipped)}
    click.echo(json.dumps(summary))  # the last line of stdout: scripts parse it


COMMANDS = [train, sweep]
