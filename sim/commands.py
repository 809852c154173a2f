"""CLI commands of the simulator core: illustrate, attribution, predict, simulate.

Only parsing and printing here; the work is in sim.attribution, sim.simulate, analysis.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click
import numpy as np
import pandas as pd

from analysis.twostage import two_stage_accuracy
from sim.attribution import (
    APPENDIX_C_REF,
    APPENDIX_C_THETA,
    appendix_c,
    attribution_by_length,
    length_decomposition,
)
from sim.lengths import parse_lengths
from sim.model import AgentSpec
from sim.objectives import OBJECTIVE_KINDS, ObjectiveConfig, SFTData
from sim.simulate import simulate_and_calibrate

FORMATS = click.Choice(["csv", "table", "json"])


def clear_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad-input and file-system errors into one-line CLI errors (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, NotImplementedError, OSError) as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None

    return wrapper


def parse_triple(text: str, name: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} must be three numbers 'a,b,c', got {text!r}") from None
    if len(values) != 3:
        raise ValueError(f"{name} must be three numbers 'a,b,c', got {text!r}")
    return values  # type: ignore[return-value]


def emit(df: pd.DataFrame, fmt: str, float_format: str = "%.6g") -> None:
    if fmt == "csv":
        click.echo(df.to_csv(index=False, float_format=float_format), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", double_precision=10))
    else:
        click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@click.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--net", is_flag=True, help="csv/json: print the net table (appendix_c_net.csv)")
def illustrate(fmt: str, net: bool) -> None:
    """The paper's Appendix C worked example, recomputed (DESIGN §3)."""
    steps, net_table = appendix_c()
    steps = steps.drop(columns="grad_log_prob")
    if net and fmt != "table":
        emit(net_table, fmt, "%.4f")
    elif fmt == "table":
        click.echo("Per-step KL penalties (k1, per-token, beta*L = 8, beta = 1 for decisions):")
        emit(steps, fmt)
        click.echo("\nNet per parameter (advantage A = 0.5):")
        emit(net_table, fmt)
    else:
        emit(steps, fmt, "%.4f")


@click.command()
@click.option("--objective", type=click.Choice(OBJECTIVE_KINDS), default="kl", show_default=True)
@click.option("--lengths", default="10..1000", show_default=True,
              help="A..B (log-spaced, inclusive), A..B:STEP (linear) or N")
@click.option("--points", type=int, default=16, show_default=True)
@click.option("--token-model", type=click.Choice(["per-token", "sequence"]), default="per-token",
              show_default=True)
@click.option("--estimator", type=click.Choice(["k1", "k2", "k3"]), default="k1",
              show_default=True)
@click.option("--placement", type=click.Choice(["in-reward", "in-loss"]), default="in-reward",
              show_default=True, help="KL placement (DESIGN §2)")
@click.option("--theta", default=",".join(map(str, APPENDIX_C_THETA)), show_default=True)
@click.option("--theta-ref", default=",".join(map(str, APPENDIX_C_REF)), show_default=True)
@click.option("--max-attempts", "-K", type=int, default=8, show_default=True)
@click.option("--gamma", type=float, default=1.0, show_default=True)
@click.option("--group-size", type=int, default=8, show_default=True)
@click.option("--std-scaling/--no-std-scaling", default=True, show_default=True)
@click.option("--sft-data", type=click.Choice(["reflection", "no-reflection"]),
              default="reflection", show_default=True)
@click.option("--ft-share", type=float, default=0.5, show_default=True)
@click.option("--format", "fmt", type=FORMATS, default="csv", show_default=True)
@click.option("--explain", is_flag=True,
              help="also print (stderr) the affine decomposition g(L) = g0 + L g1 and where the "
                   "ratio saturates")
@clear_errors
def attribution(objective: str, lengths: str, points: int, token_model: str, estimator: str,
                placement: str, theta: str, theta_ref: str, max_attempts: int, gamma: float,
                group_size: int, std_scaling: bool, sft_data: str, ft_share: float,
                fmt: str, explain: bool) -> None:
    """Exact expected g_s, g_1, g_2 and attribution ratio per answer length L (DESIGN §3)."""
    ls = parse_lengths(lengths, points)
    spec = AgentSpec(max_attempts=max_attempts, gamma=gamma)
    obj = ObjectiveConfig(weights=((objective, 1.0),), group_size=group_size,
                          std_scaling=std_scaling, kl_estimator=estimator, kl_placement=placement,
                          token_model=token_model, sft_data=SFTData(sft_data, ft_share))
    th, ref = (np.array(parse_triple(v, n)) for v, n in ((theta, "--theta"),
                                                           (theta_ref, "--theta-ref")))
    emit(attribution_by_length(ls, th, ref, spec, obj, objective), fmt)
    if explain:
        d = length_decomposition(th, ref, spec, obj, objective)
        click.echo(f"g(L) = g0 + L*g1 with g0 = {np.round(d['g0'], 6)}, "
                   f"g1 = {np.round(d['g1'], 6)}; ratio -> {d['asymptotic_ratio']:.4g} as L -> "
                   f"inf; decision crossovers L*_1 = {d['crossover_L_theta_1']:.4g}, "
                   f"L*_2 = {d['crossover_L_theta_2']:.4g}", err=True)


def _probability(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must be a probability in [0, 1], got {value}")
    return value


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be >= 1, got {value}")
    return value


_P = click.option("--p", "p", type=float, required=True, callback=_probability,
                  help="P(candidate correct)")
_Q1 = click.option("--q1", type=float, required=True, callback=_probability,
                   help="P(STOP | correct)")
_Q2 = click.option("--q2", type=float, required=True, callback=_probability,
                   help="P(RESAMPLE | wrong)")


@click.command()
@_P
@_Q1
@_Q2
@click.option("--max-attempts", "-K", type=int, default=None, callback=_positive,
              help="forced stop at attempt K (default: infinite horizon)")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True)
@clear_errors
def predict(p: float, q1: float, q2: float, max_attempts: int | None, fmt: str) -> None:
    """Accuracy of the two-stage model (DESIGN §4)."""
    acc = float(two_stage_accuracy(p, q1, q2, max_attempts))
    if fmt == "json":
        click.echo(json.dumps({"accuracy": acc}))
    else:
        click.echo(f"accuracy = {acc:.6f}")


@click.command()
@_P
@_Q1
@_Q2
@click.option("--max-attempts", "-K", type=int, default=8, show_default=True,
              callback=_positive)
@click.option("--n", type=int, default=1000, show_default=True, callback=_positive,
              help="trajectories")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--n-boot", type=int, default=100, show_default=True, callback=_positive)
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True)
@clear_errors
def simulate(p: float, q1: float, q2: float, max_attempts: int, n: int, seed: int, n_boot: int,
             fmt: str) -> None:
    """Sample N trajectories, calibrate (p̂, q̂1, q̂2) and compare accuracies (DESIGN §4)."""
    result = simulate_and_calibrate(p, q1, q2, max_attempts, n, seed, n_boot)
    if fmt == "json":
        click.echo(json.dumps({k: v.to_dict() for k, v in result.items()}, indent=2))
    else:
        for k, v in result.items():
            click.echo(f"{k:20s} {v.estimate:.4f}  [{v.ci_low:.4f}, {v.ci_high:.4f}]")


COMMANDS = [illustrate, attribution, predict, simulate]
