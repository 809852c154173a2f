"""Click commands of the analysis package: report, fit, compare (issues 4 and 6).

Commands only parse options and call analysis.report / analysis.fit; errors surface as one-line
click.ClickException messages.
"""

from __future__ import annotations

from pathlib import Path

import click

# ReportError, FitError, ObservedDataError and JSON decode errors are ValueErrors
ERRORS = (ValueError, OSError, NotImplementedError)


def _fail(exc: Exception) -> click.ClickException:
    """One line: the first line of the message, else the exception's type."""
    text = str(exc).strip()
    return click.ClickException(text.splitlines()[0] if text else type(exc).__name__)


@click.command()
@click.option("--sweep", type=click.Path(path_type=Path), default=None,
              help="outputs/sweeps/<name> (default: the newest; none: a built-in run).")
@click.option("--train", type=click.Path(path_type=Path), default=None,
              help="outputs/train/<name> (default: the newest; none: a built-in run).")
@click.option("--observed", type=click.Path(path_type=Path), default=None,
              help="Observed accuracy CSV or real-model run (default: the paper's Table 1).")
@click.option("--real", type=click.Path(path_type=Path), default=None,
              help="Folder of real-model calibrations (default: outputs/real if present).")
@click.option("--fit", "fit_json", type=click.Path(path_type=Path), default=None,
              help="A fit.json from `cli.py fit` (default: cached fit, else fit now).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("outputs/report"), show_default=True)
@click.option("--outputs", "outputs_root", type=click.Path(path_type=Path),
              default=Path("outputs"), show_default=True,
              help="Root searched for the newest sweeps/, train/, real/ and fit/ outputs.")
@click.option("--no-png", is_flag=True, help="Skip the PNG of each chart.")
@click.option("--quick", is_flag=True, help="Tiny built-in runs and fit (tests).")
def report(sweep, train, observed, real, fit_json, out_dir, outputs_root, no_png,
           quick) -> None:
    """Build outputs/report/index.html (self-contained) and a PNG per chart (DESIGN §6)."""
    from analysis.report import ReportConfig, write_report

    try:
        cfg = ReportConfig(out_dir=out_dir, outputs=outputs_root, sweep=sweep, train=train,
                           observed=observed, real=real, fit=fit_json, png=not no_png, quick=quick)
        paths = write_report(cfg, log=click.echo)
    except ERRORS as exc:
        raise _fail(exc) from None
    for name, path in paths.items():
        click.echo(f"  {name}: {path}")


def _fit_options(func):
    for opt in reversed([
        click.option("--steps", type=int, default=30, show_default=True,
                     help="Training steps per regime (the learning rate is fitted)."),
        click.option("--max-attempts", "-K", type=int, default=8, show_default=True),
        click.option("--q1-base", type=float, default=0.9, show_default=True,
                     help="Base model's q1 (not identified by accuracy; fixed)."),
        click.option("--q2-base", type=float, default=0.1, show_default=True,
                     help="Base model's q2 (not identified by accuracy; fixed)."),
        click.option("--length", "-L", type=float, default=100.0, show_default=True,
                     help="Tokens per candidate answer (per-token weighting)."),
        click.option("--beta", type=float, default=0.001, show_default=True),
        click.option("--fit-beta", is_flag=True, help="Fit beta too."),
        click.option("--transfer", type=click.Choice(["shared", "per-regime"]),
                     default="shared", show_default=True,
                     help="shared: ell_s, ell_d for all regimes; per-regime: one ell each."),
        click.option("--max-nfev", type=int, default=30, show_default=True),
        click.option("--quick", is_flag=True, help="Few steps and evaluations (tests)."),
        click.option("--name", default=None, help="outputs/fit/<name> (default: from input)."),
    ]):
        func = opt(func)
    return func


def _fit_config(**kw):
    from analysis.fit import FitConfig

    return FitConfig(max_attempts=kw["max_attempts"], q1_base=kw["q1_base"],
                     q2_base=kw["q2_base"], length=kw["length"], steps=kw["steps"],
                     beta=kw["beta"], fit_beta=kw["fit_beta"], transfer=kw["transfer"],
                     max_nfev=kw["max_nfev"], quick=kw["quick"])


@click.command()
@click.option("--observed", type=click.Path(path_type=Path), default=None,
              help="Observed accuracy table (default: the paper's Table 1) or a real run.")
@_fit_options
def fit(observed, name, **kw) -> None:
    """Fit the simulator (base offsets, lr per regime, transfer scales) to observed curves."""
    from analysis.fit import fit_observed
    from analysis.observed import load_observed, reference_dir
    from analysis.report import save_fit

    try:
        cfg = _fit_config(**kw)
        path = observed or reference_dir() / "paper_table1.csv"
        result = fit_observed(load_observed(path), cfg)
        path = Path(path)
        default = path.parent.name if path.name == "calibration.csv" else path.stem
        out = Path("outputs/fit") / (name or default)
        paths = save_fit(result, out, inputs={"observed": path})
    except ERRORS as exc:
        raise _fail(exc) from None
    click.echo(result.summary())
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


@click.command()
@click.option("--observed", type=click.Path(path_type=Path), required=True,
              help="outputs/real/<run> (calibration.csv per regime below it).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: outputs/compare/<run>).")
@_fit_options
def compare(observed, out_dir, name, **kw) -> None:
    """Measured (p, q1, q2) per task and regime beside the fitted simulator's predictions."""
    from analysis.report import write_compare

    try:
        cfg = _fit_config(**kw)
        out_dir = out_dir or Path("outputs/compare") / (name or Path(observed).name)
        result, table, paths = write_compare(Path(observed), out_dir, cfg)
    except ERRORS as exc:
        raise _fail(exc) from None
    click.echo(result.summary())
    cols = ["regime", "task", "p_hat", "p_sim", "q1_hat", "q1_sim", "q2_hat", "q2_sim",
            "observed_accuracy", "accuracy_sim"]
    click.echo(table[[c for c in cols if c in table.columns]].round(3).to_string(index=False))
    for p in paths:
        click.echo(f"  {p}")


COMMANDS = [report, fit, compare]
