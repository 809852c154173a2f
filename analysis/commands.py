"""Click commands of the analysis package: report, fit, compare (DESIGN §6).

Commands only parse options and call analysis.report / analysis.fit_io / analysis.compare;
the options of `fit` and `compare` are the fields of FitConfig (analysis.fit_config documents each
one, core.cli_options builds the options); their `--out` is the parent folder and `--name` the
folder below it (`report`, which takes no name, writes into `--out`). Errors surface as
one-line `Error:` messages naming the option (core.errors: ReportError, FitError,
ObservedDataError and JSON decode errors are ValueErrors), checked before any work where they
can be.
A run that fails removes the output folder it created, so no half-written folder (one without
its manifest.json, docs/ARCHITECTURE.md) is left behind.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from analysis.fit_config import (
    BOUNDS,
    MAX_FIT_ATTEMPTS,
    MAX_FIT_LENGTH,
    MAX_FIT_NFEV,
    MAX_FIT_STARTS,
    MAX_FIT_STEPS,
    FitConfig,
)
from core.cli_options import config_options, number_in
from core.errors import EXPECTED, fail
from core.provenance import check_run_name
from sim.population_commands import CouplingType


def _path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """Click callback of every path option: '' is refused (Path('') would be the current
    folder), anything else becomes a Path."""
    if value is None:
        return None
    if not str(value).strip():
        raise click.BadParameter("must be a path, got an empty string")
    return Path(value)


def check_out_dir(path: Path, option: str) -> Path:
    """An output folder that exists as a folder or can be made one: not a file, and no file
    on its way (checked before any work)."""
    path = Path(path)
    for cand in (path, *path.parents):
        if cand.exists():
            if not cand.is_dir():
                raise ValueError(f"{option} {path}: {cand} is a file, not a folder")
            break
    return path


@contextmanager
def removed_on_failure(path: Path, option: str) -> Iterator[Path]:
    """Make the output folder now (a bad `option` fails before any work, as `train` and
    `sweep` do) and run the command's work and writes inside; when they fail (or are
    interrupted), remove what this run created: the folder and any parent it made. A folder
    that existed before is left in place."""
    path = check_out_dir(path, option)
    created = None
    for cand in (path, *path.parents):
        if cand.exists():
            break
        created = cand
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{option} {path}: {exc.strerror or exc}") from None
        yield path
    except BaseException:
        if created is not None and created.exists():
            shutil.rmtree(created, ignore_errors=True)
        raise


def load_checked_observed(path: Path, option: str = "--observed") -> Any:
    """analysis.observed.load_observed, then check_observed (accuracies in [0, 1], a Base
    accuracy per task): one-line errors naming `option` and the file."""
    from analysis.observed import check_observed, load_observed

    try:
        table = load_observed(path)
        check_observed(table, path)
    except (ValueError, OSError, TypeError, KeyError) as exc:  # parser errors name no file
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if msg.startswith(str(path)):
            msg = f"{option} {msg}"
        elif option not in msg:
            msg = f"{option}: {msg}" if str(path) in msg else f"{option} {path}: {msg}"
        raise ValueError(msg) from None
    return table


@click.command()
@click.option("--sweep", type=click.Path(), callback=_path, default=None,
              help="outputs/sweeps/<name> (default: the newest; none: a built-in run).")
@click.option("--train", type=click.Path(), callback=_path, default=None,
              help="outputs/train/<name> (default: the newest; none: a built-in run).")
@click.option("--observed", type=click.Path(), callback=_path, default=None,
              help="Observed accuracy CSV or real-model run (default: the paper's Table 1).")
@click.option("--real", type=click.Path(), callback=_path, default=None,
              help="Folder of real-model calibrations (default: outputs/real if present).")
@click.option("--fit", "fit_json", type=click.Path(), callback=_path, default=None,
              help="A fit.json from `cli.py fit` (default: cached fit, else fit now).")
@click.option("--out", "out_dir", type=click.Path(), callback=_path,
              default=Path("outputs/report"), show_default=True,
              help="Output folder (the report's own fit cache goes to <out>/fit/).")
@click.option("--outputs", "outputs_root", type=click.Path(), callback=_path,
              default=Path("outputs"), show_default=True,
              help="Root searched (read only) for the newest sweeps/, train/, real/ and fit/ "
                   "outputs; given, it must be an existing folder.")
@click.option("--phase-diagram", type=click.Path(), callback=_path, default=None,
              help="A phase-diagram CSV (e.g. docs/results/simulator/phase_diagram.csv; "
                   "default: a sweep of a grid_phase.toml under --outputs, if any).")
@click.option("--no-png", is_flag=True, help="Skip the PNG of each chart.")
@click.option("--quick", is_flag=True, help="Tiny built-in runs and fit (tests).")
@click.pass_context
def report(ctx: click.Context, sweep: Path | None, train: Path | None, observed: Path | None,
           real: Path | None, fit_json: Path | None, out_dir: Path, outputs_root: Path,
           phase_diagram: Path | None, no_png: bool, quick: bool) -> None:
    """Build outputs/report/index.html (self-contained) and a PNG per chart (DESIGN §6)."""
    from analysis.observed import reference_dir
    from analysis.report import ReportConfig, write_report

    try:
        if (ctx.get_parameter_source("outputs_root") is not ParameterSource.DEFAULT
                and not outputs_root.is_dir()):
            raise ValueError(f"--outputs {outputs_root} "
                             f"{'is not a folder' if outputs_root.exists() else 'does not exist'}")
        check_out_dir(out_dir, "--out")
        cfg = ReportConfig(out_dir=out_dir, outputs=outputs_root, sweep=sweep, train=train,
                           observed=observed, real=real, fit=fit_json, png=not no_png, quick=quick,
                           phase_diagram=phase_diagram)
        if fit_json is None:  # the fit needs a sound observed table (else --fit is used)
            load_checked_observed(observed or reference_dir() / "paper_table1.csv")
        with removed_on_failure(out_dir, "--out"):
            paths = write_report(cfg, log=click.echo)
    except EXPECTED as exc:
        raise fail(exc) from None
    for name, path in paths.items():
        click.echo(f"  {name}: {path}")


# `fit` and `compare` take one option per FitConfig field (analysis.fit_config documents each);
# the ranges here make a bad value an error naming its option before any work
FIT_OPTIONS = config_options(
    FitConfig,
    include=("steps", "max_attempts", "q1_base", "q2_base", "length", "beta", "fit_beta",
             "transfer", "base", "lr_mode", "optimiser", "second_moment", "max_grad_norm",
             "max_adam_lr", "coupling", "ft_share", "mask_wrong_attempts", "decomposition",
             "acc_floor", "max_nfev", "grid_start", "starts", "quick"),
    rename={"max_attempts": ("--max-attempts", "-K"), "length": ("--length", "-L")},
    types={"steps": click.IntRange(1, MAX_FIT_STEPS), "coupling": CouplingType(),
           "max_attempts": click.IntRange(1, MAX_FIT_ATTEMPTS),
           "max_nfev": click.IntRange(1, MAX_FIT_NFEV),
           "starts": click.IntRange(1, MAX_FIT_STARTS)},
    callbacks={"q1_base": number_in(0, 1, lo_open=True, hi_open=True),
               "q2_base": number_in(0, 1, lo_open=True, hi_open=True),
               "length": number_in(0, MAX_FIT_LENGTH, lo_open=True),
               "beta": number_in(0, BOUNDS["beta"][1], lo_open=True),
               "ft_share": number_in(0, 1),
               "acc_floor": number_in(0, 0.5, lo_open=True, hi_open=True),
               "max_grad_norm": number_in(0, math.inf, hi_open=True),
               "max_adam_lr": number_in(0, BOUNDS["adam_lr"][1], lo_open=True)},
)


def _fit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--name", default=None,
                        help="Output folder name, one path component: writes <out>/<name>/ "
                             "(default: from --observed).")(func)
    return FIT_OPTIONS(func)


def _fit_config(**kw: Any) -> FitConfig:
    return FitConfig(**FIT_OPTIONS.values(kw))


def _run_name(name: str | None, default: str) -> str:
    """--name, else the name derived from the input; one path component either way."""
    if name is not None:
        return check_run_name(name, "--name")
    return check_run_name(default, "--name (default: from --observed)")


@click.command()
@click.option("--observed", type=click.Path(), callback=_path, default=None,
              help="Observed accuracy table (default: the paper's Table 1) or a real run; "
                   "accuracies in [0, 1] (or [0, 100] in a percent table).")
@click.option("--out", "out_root", type=click.Path(), callback=_path,
              default=Path("outputs/fit"), show_default=True,
              help="Folder of fits: writes <out>/<name>/ (where `report` looks for fits).")
@_fit_options
def fit(observed: Path | None, out_root: Path, name: str | None, **kw: Any) -> None:
    """Fit the simulator (base offsets, lr per regime, transfer scales) to observed curves."""
    from analysis.fit_io import fit_and_save
    from analysis.observed import reference_dir

    try:
        if name is not None:
            check_run_name(name, "--name")
        cfg = _fit_config(**kw)
        path = Path(observed) if observed is not None else reference_dir() / "paper_table1.csv"
        default = (path.resolve().parent.name if path.name == "calibration.csv"
                   else path.resolve().name if path.is_dir() else path.stem)
        out = check_out_dir(Path(out_root) / _run_name(name, default), "--out")
        table = load_checked_observed(path)
        with removed_on_failure(out, "--out"):
            result, paths = fit_and_save(table, cfg, out, path)
    except EXPECTED as exc:
        raise fail(exc) from None
    click.echo(result.summary())
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


@click.command()
@click.option("--observed", type=click.Path(), callback=_path, required=True,
              help="outputs/real/<run> (calibration.csv per regime below it) or a "
                   "calibration.csv.")
@click.option("--out", "out_root", type=click.Path(), callback=_path,
              default=Path("outputs/compare"), show_default=True,
              help="Folder of comparisons: writes <out>/<name>/.")
@_fit_options
def compare(observed: Path, out_root: Path, name: str | None, **kw: Any) -> None:
    """Measured (p, q1, q2) per task and regime beside the fitted simulator's predictions."""
    from analysis.compare import write_compare

    try:
        if name is not None:
            check_run_name(name, "--name")
        cfg = _fit_config(**kw)
        run = Path(observed)
        if not run.exists():
            raise ValueError(f"--observed {run} does not exist")
        if run.is_file() and run.name != "calibration.csv":
            raise ValueError(f"--observed {run} is a file, not a real-model run folder or its "
                             "calibration.csv (fit an accuracy table with `cli.py fit "
                             "--observed`)")
        default = (run.resolve().parent if run.is_file() else run.resolve()).name
        out_dir = check_out_dir(Path(out_root) / _run_name(name, default), "--out")
        load_checked_observed(run)
        with removed_on_failure(out_dir, "--out"):
            result, table, paths = write_compare(run, out_dir, cfg)
    except EXPECTED as exc:
        raise fail(exc) from None
    click.echo(result.summary())
    cols = ["regime", "task", "p_hat", "p_sim", "q1_hat", "q1_sim", "q2_hat", "q2_sim",
            "observed_accuracy", "accuracy_sim"]
    click.echo(table[[c for c in cols if c in table.columns]].round(3).to_string(index=False))
    for p in paths:
        click.echo(f"  {p}")


COMMANDS = [report, fit, compare]
