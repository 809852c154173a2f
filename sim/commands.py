"""CLI commands of the simulator core: illustrate, attribution, predict, simulate.

Only parsing and printing here; the work is in sim.attribution, sim.simulate and
core.twostage. Bad input ends in one `Error:` line (core.errors).
"""

from __future__ import annotations

import json
import math

import click
import numpy as np
import pandas as pd

from core.cli_options import number_in
from core.errors import clear_errors
from core.provenance import finite_json
from core.twostage import two_stage_accuracy
from sim.attribution import (
    APPENDIX_C_REF,
    APPENDIX_C_THETA,
    appendix_c,
    attribution_by_length,
    length_decomposition,
)
from sim.kernels import MAX_ATTEMPTS
from sim.lengths import parse_lengths
from sim.model import AgentSpec
from sim.objectives import (
    MAX_EXACT_ATTEMPTS,
    OBJECTIVE_KINDS,
    TOKEN_MODELS,
    ObjectiveConfig,
    SFTData,
)
from sim.simulate import MAX_SEED, simulate_and_calibrate

FORMATS = click.Choice(["csv", "table", "json"])
MAX_LENGTHS = 10_000  # rows of one attribution run: each an exact gradient (DESIGN §3)
MAX_GROUP_SIZE = 10_000  # G of the surrogate's group advantage (DESIGN §2; the paper: 8)


def parse_triple(text: str, name: str) -> tuple[float, float, float]:
    """Three finite numbers 'a,b,c' (logits, DESIGN §1); ValueError naming `name` else."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} must be three numbers 'a,b,c', got {text!r}") from None
    if len(values) != 3:
        raise ValueError(f"{name} must be three numbers 'a,b,c', got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be three finite numbers (logits), got {text!r}")
    return values  # type: ignore[return-value]


def _check_attribution_rows(df: pd.DataFrame) -> None:
    """Every g finite (else an error naming L: float64 overflow); an undefined (0/0) or
    infinite ratio is said on stderr, never left as a silent empty cell (DESIGN §3)."""
    g = df[["g_s", "g_1", "g_2"]].to_numpy(float)
    bad = ~np.isfinite(g).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        comp = ", ".join(f"{c} = {v:g}" for c, v in zip(("g_s", "g_1", "g_2"), g[i],
                                                        strict=True) if not np.isfinite(v))
        raise ValueError(
            f"the gradient is not finite at L = {df['L'].iloc[i]:g} ({comp}): float64 "
            "overflow, the token weight L multiplies every sampling term (DESIGN §2) and "
            "overflows from about L = 1e306 on (less far from --theta-ref); use smaller "
            "--lengths")
    ratio = df["ratio"].to_numpy(float)
    notes = []
    if np.isnan(ratio).any():
        notes.append(f"ratio undefined (0/0: the whole gradient vanishes, e.g. theta = "
                     f"theta_ref for KL) at L = {_few(df['L'][np.isnan(ratio)])}")
    if np.isinf(ratio).any():
        notes.append(f"ratio infinite (only g_s is non-zero) at L = "
                     f"{_few(df['L'][np.isinf(ratio)])}")
    if notes:
        click.echo("note: " + "; ".join(notes) + " (csv: empty / inf, json: null)", err=True)


def _g4(value: float) -> str:
    return "undefined (0/0)" if math.isnan(value) else f"{value:.4g}"


def _few(values: pd.Series, k: int = 5) -> str:
    out = ", ".join(f"{v:g}" for v in values.iloc[:k])
    return out + (f" and {len(values) - k} more" if len(values) > k else "")


def emit(df: pd.DataFrame, fmt: str, float_format: str = "%.6g") -> None:
    if fmt == "csv":
        click.echo(df.to_csv(index=False, float_format=float_format), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", double_precision=10))
    else:
        click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@click.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True,
              help="output format")
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
@click.option("--objective", type=click.Choice(OBJECTIVE_KINDS), default="kl", show_default=True,
              help="the objective term whose gradient is attributed (DESIGN §2)")
@click.option("--lengths", default="10..1000", show_default=True,
              help="A..B (log-spaced, inclusive), A..B:STEP (linear) or N")
@click.option("--points", type=click.IntRange(1, MAX_LENGTHS), default=16, show_default=True,
              help=f"lengths of an A..B range (at most {MAX_LENGTHS})")
@click.option("--token-model", type=click.Choice(TOKEN_MODELS), default="per-token",
              show_default=True,
              help="length weighting w(L) and loss normaliser: per-token (w = L) or sequence "
                   "(w = 1), or a trainer's normalisation with w = L: grpo (each trajectory / "
                   "its |o|), dapo, bnpo, sft-token-mean (/ the batch's mean |o|: exact = "
                   "E|o|), dr_grpo (/ K (L_max + 1)) (DESIGN §2, docs/token_models.md)")
@click.option("--kl-estimator", type=click.Choice(["k1", "k2", "k3"]), default="k1",
              show_default=True, help="per-token KL estimator (DESIGN §2)")
@click.option("--kl-placement", type=click.Choice(["in-reward", "in-loss"]),
              default="in-reward", show_default=True, help="KL placement (DESIGN §2)")
@click.option("--theta", default=",".join(map(str, APPENDIX_C_THETA)), show_default=True,
              help="logits theta_s,theta_1,theta_2 of the policy (default: Appendix C, "
                   "DESIGN §3)")
@click.option("--theta-ref", default=",".join(map(str, APPENDIX_C_REF)), show_default=True,
              help="logits of the reference policy pi_ref (default: Appendix C, DESIGN §3)")
@click.option("--max-attempts", "-K", type=click.IntRange(1, MAX_EXACT_ATTEMPTS), default=8,
              show_default=True, help="K (exact: dynamic programming over attempts)")
@click.option("--gamma", type=float, default=1.0, show_default=True,
              callback=number_in(0.0, 1.0, lo_open=True), help="discount, in (0, 1]")
@click.option("--group-size", type=click.IntRange(2, MAX_GROUP_SIZE), default=8,
              show_default=True,
              help="G, trajectories per query of the surrogate's group advantage (DESIGN §2)")
@click.option("--std-scaling/--no-std-scaling", default=True, show_default=True,
              help="divide the surrogate's advantages by the group's std (off: Dr.GRPO, "
                   "DESIGN §2)")
@click.option("--sft-data", type=click.Choice(["reflection", "no-reflection"]),
              default="reflection", show_default=True,
              help="data set of the sft and dft objectives (DESIGN §2)")
@click.option("--ft-share", type=float, default=0.5, show_default=True,
              callback=number_in(0.0, 1.0), help="share of F->T chains, in [0, 1]")
@click.option("--mask-wrong-attempts", is_flag=True,
              help="no loss on the wrong attempts of the SFT data's F->T chains (their "
                   "RESAMPLE decisions are still trained) (DESIGN §2)")
@click.option("--format", "fmt", type=FORMATS, default="csv", show_default=True,
              help="output format")
@click.option("--explain", is_flag=True,
              help="also print (stderr) the affine decomposition g(L) = g0 + L g1 and where the "
                   "ratio saturates")
@clear_errors(TypeError)
def attribution(objective: str, lengths: str, points: int, token_model: str,
                kl_estimator: str, kl_placement: str, theta: str, theta_ref: str,
                max_attempts: int, gamma: float, group_size: int, std_scaling: bool,
                sft_data: str, ft_share: float, mask_wrong_attempts: bool, fmt: str,
                explain: bool) -> None:
    """Exact expected g_s, g_1, g_2 and attribution ratio per answer length L (DESIGN §3).

    The ratio is undefined (csv: empty, json: null) where the whole gradient vanishes and
    infinite (json: null) where only g_s is non-zero; a note on stderr says where.
    """
    th, ref = (np.array(parse_triple(v, n)) for v, n in ((theta, "--theta"),
                                                           (theta_ref, "--theta-ref")))
    if objective in ("sft", "dft") and sft_data == "reflection" and max_attempts < 2:
        raise ValueError("--max-attempts must be >= 2 for --sft-data reflection (a "
                         "reflection chain has two attempts, DESIGN §2)")
    if objective == "surrogate" and std_scaling and gamma < 1:
        raise ValueError("--gamma < 1 with the surrogate needs --no-std-scaling (exact "
                         "std-scaled advantages need binary rewards, DESIGN §2)")
    try:
        ls = parse_lengths(lengths, points)
    except (MemoryError, OverflowError) as exc:
        raise ValueError(f"--lengths {lengths!r}: too many or too large lengths "
                         f"({' '.join(str(exc).split())})") from None
    if len(ls) > MAX_LENGTHS:
        raise ValueError(f"--lengths {lengths!r} gives {len(ls)} lengths; at most "
                         f"{MAX_LENGTHS} per run (each an exact gradient, DESIGN §3)")
    spec = AgentSpec(max_attempts=max_attempts, gamma=gamma)
    obj = ObjectiveConfig(weights=((objective, 1.0),), group_size=group_size,
                          std_scaling=std_scaling, kl_estimator=kl_estimator,
                          kl_placement=kl_placement, token_model=token_model,
                          sft_data=SFTData(sft_data, ft_share,
                                           mask_wrong_attempts=mask_wrong_attempts))
    with np.errstate(over="ignore", invalid="ignore"):
        df = attribution_by_length(ls, th, ref, spec, obj, objective)
    _check_attribution_rows(df)
    emit(df, fmt)
    if explain:
        d = length_decomposition(th, ref, spec, obj, objective)
        click.echo(f"g(L) = g0 + L*g1 with g0 = {np.round(d['g0'], 6)}, "
                   f"g1 = {np.round(d['g1'], 6)}; ratio -> {_g4(d['asymptotic_ratio'])} as L -> "
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
              show_default=True, help="output format")
@clear_errors(TypeError)
def predict(p: float, q1: float, q2: float, max_attempts: int | None, fmt: str) -> None:
    """Accuracy of the two-stage model (DESIGN §4).

    Where it is undefined (infinite horizon, an agent that never stops: p q1 + (1-p)(1-q2)
    = 0, e.g. --p 0 --q1 0 --q2 1) JSON gives null (strict JSON has no NaN) and the table
    says "undefined".
    """
    acc = float(two_stage_accuracy(p, q1, q2, max_attempts)) + 0.0  # never -0.0
    if fmt == "json":
        click.echo(json.dumps(finite_json({"accuracy": acc}), allow_nan=False))
    elif math.isfinite(acc):
        click.echo(f"accuracy = {acc:.6f}")
    else:
        click.echo("accuracy = undefined (the agent never stops: p q1 + (1-p)(1-q2) = 0)")


@click.command()
@_P
@_Q1
@_Q2
@click.option("--max-attempts", "-K", type=click.IntRange(1, MAX_ATTEMPTS), default=8,
              show_default=True, help="K, the forced stop at attempt K (DESIGN §1)")
@click.option("--n", type=int, default=1000, show_default=True, callback=_positive,
              help="trajectories (bounded by memory: at most half of the RAM)")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="uint64 splitmix64 seed, 0..2**64-1")
@click.option("--n-boot", type=int, default=100, show_default=True, callback=_positive,
              help="bootstrap resamples over queries (DESIGN §4)")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True, help="output format")
@clear_errors(TypeError)
def simulate(p: float, q1: float, q2: float, max_attempts: int, n: int, seed: int, n_boot: int,
             fmt: str) -> None:
    """Sample N trajectories, calibrate (p̂, q̂1, q̂2) and compare accuracies (DESIGN §4).

    An estimate or interval that is undefined on the sample (e.g. q̂2 when no candidate was
    wrong, or the predicted accuracy then) is null in JSON (strict JSON has no NaN) and
    "undefined" in the table. Runs needing more than half of the RAM are refused.
    """
    result = simulate_and_calibrate(p, q1, q2, max_attempts, n, seed, n_boot)
    if fmt == "json":
        click.echo(json.dumps(finite_json({k: v.to_dict() for k, v in result.items()}),
                              indent=2, allow_nan=False))
    else:
        for k, v in result.items():
            click.echo(f"{k:20s} {_fmt4(v.estimate)}  [{_fmt4(v.ci_low)}, {_fmt4(v.ci_high)}]")


def _fmt4(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "undefined"


COMMANDS = [illustrate, attribution, predict, simulate]
