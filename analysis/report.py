"""Assemble the study's report (DESIGN §6): one self-contained HTML page plus a PNG per chart.

Inputs (DESIGN.md §6 and the output contracts of sweep / train / realmodel):
  --sweep    outputs/sweeps/<name>/results.parquet (+ manifest.json)
  --train    outputs/train/<name>/history.parquet (+ manifest.json)
  --observed a paper-style accuracy CSV (default: the paper's Table 1) and, found under
             outputs/real/, any real-model calibration.csv
With no --sweep / --train the newest folder under outputs/sweeps/ and outputs/train/ is used;
where there is none, the simulator sections come from a small built-in deterministic run
(exact expected gradients, sim.dynamics.train_expected) and the caption says so.

The page inlines the Vega / Vega-Lite / vega-embed bundle of vl-convert once (no network
needed) and embeds each chart's Vega-Lite spec; every chart is also rendered to PNG with
vl-convert.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from analysis import charts
from analysis.fit import TRAINED_REGIMES, FitConfig, FitResult, fit_observed, observed_digest
from analysis.observed import (
    BASE,
    REGIMES,
    ObservedDataError,
    canonical_regime,
    find_calibrations,
    load_calibrations,
    load_kang2025,
    load_observed,
    reference_dir,
)
from core.provenance import finite_json, git_commit, package_versions, write_json_atomic
from core.regimes import BY_NAME, PAPER_RL_KL
from sim.attribution import APPENDIX_C_REF, APPENDIX_C_THETA  # DESIGN §3 worked example

VL_VERSION = "6.4"


class ReportError(ValueError):
    """A report that cannot be built (one-line message, for the CLI)."""


@dataclass(frozen=True)
class ReportConfig:
    """Where the report reads from and writes to (paths relative to the repo root)."""

    out_dir: Path = Path("outputs/report")
    outputs: Path = Path("outputs")
    sweep: Path | None = None
    train: Path | None = None
    observed: Path | None = None  # None: the paper's Table 1
    real: Path | None = None  # None: outputs/real if it holds calibrations
    fit: Path | None = None  # a fit.json; None: cached fit of `observed`, else fit now
    png: bool = True
    png_scale: float = 1.5
    quick: bool = False  # tests: built-in runs and the fit kept tiny

    def __post_init__(self) -> None:
        for name in ("sweep", "train", "observed", "real", "fit"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise ValueError(f"--{name}: {value} does not exist")
        # an input given explicitly is used, never silently replaced by the newest run or a
        # built-in one (DESIGN §6: the report says where each chart comes from)
        for name, filename in (("sweep", "results.parquet"), ("train", "history.parquet")):
            value = getattr(self, name)
            if value is not None and _run_dir(value, filename) is None:
                raise ValueError(f"--{name}: {value} holds no {filename} (expected "
                                 f"outputs/{'sweeps' if name == 'sweep' else name}/<name>/)")
        if self.real is not None and not find_calibrations(self.real):
            raise ValueError(f"--real: no calibration.csv found at or below {self.real}")
        if self.fit is not None and not Path(self.fit).is_file():
            raise ValueError(f"--fit: {self.fit} is not a file (a fit.json of `cli.py fit`)")
        if not self.png_scale > 0:
            raise ValueError("png_scale must be > 0")


@dataclass
class Section:
    slug: str
    title: str
    chart: alt.TopLevelMixin
    caption: str
    inputs: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- input discovery


def newest_run(root: Path, filename: str) -> Path | None:
    """The most recently modified <root>/<name>/ holding `filename`, or None."""
    if not root.is_dir():
        return None
    runs = [p.parent for p in root.glob(f"*/{filename}")]
    return max(runs, key=lambda p: (p / filename).stat().st_mtime) if runs else None


def _run_dir(path: Path | None, filename: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    return path.parent if path.is_file() else path if (path / filename).is_file() else None


def read_manifest(run: Path) -> dict:
    path = run / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------- built-in simulations


def builtin_sweep(lengths: tuple[float, ...] = (1, 3, 10, 30, 100, 300, 1000),
                  steps: int = 30, lr: float = 0.05) -> pd.DataFrame:
    """A one-agent-per-cell sweep in the results.parquet layout (single task, K = 8): the
    attribution ratio at the Appendix C theta (DESIGN §3) and p, q2 after `steps` SGD steps,
    for surrogate, kl and surrogate+kl (the paper's beta = 0.001, core.regimes) under both
    token models."""
    from sim.dynamics import train_expected
    from sim.model import AgentSpec
    from sim.objectives import ObjectiveConfig
    from sim.optim import OptimiserConfig

    rows = []
    for tm in ("per-token", "sequence"):
        for objective in ("surrogate", "kl", "surrogate+kl"):
            obj = ObjectiveConfig.parse(objective,
                                        beta=PAPER_RL_KL.beta if "+" in objective else None,
                                        token_model=tm)
            for length in lengths:
                spec = AgentSpec(len_correct=float(length), len_wrong=float(length))
                phi0 = spec.initial_params(APPENDIX_C_THETA)
                ref = spec.initial_params(APPENDIX_C_REF)
                with np.errstate(over="ignore", invalid="ignore"):
                    _, hist = train_expected(spec, obj, phi0, steps, OptimiserConfig(lr=lr),
                                             phi_ref=ref, record_every=steps)
                first, last = hist.iloc[0], hist.iloc[-1]
                rows.append({"cell_id": f"{objective}/{tm}/{length:g}", "objective": objective,
                             "regime": objective, "token_model": tm, "length": float(length),
                             "agent": 0, "seed": 0, "steps": steps,
                             "ratio": first["ratio[total]"], "p[T1]": last["p[T1]"],
                             "q1[T1]": last["q1[T1]"], "q2[T1]": last["q2[T1]"]})
    return pd.DataFrame(rows)


def builtin_history(steps: int = 120, beta: float = 0.01, length: float = 100.0,
                    ref_every: int = 30, lr: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """Surrogate + beta * kl (per-token, in-reward, k1) from the Appendix C theta with the
    reference reset every `ref_every` steps: the paper's Figure 1 setting (DESIGN §2-§3)."""
    from sim.dynamics import train_expected
    from sim.model import AgentSpec
    from sim.objectives import ObjectiveConfig
    from sim.optim import OptimiserConfig

    spec = AgentSpec(len_correct=length, len_wrong=length)
    obj = ObjectiveConfig.parse("surrogate+kl", beta=beta)
    _, hist = train_expected(spec, obj, spec.initial_params(APPENDIX_C_THETA), steps,
                             OptimiserConfig(lr=lr), ref_update_every=ref_every,
                             phi_ref=spec.initial_params(APPENDIX_C_REF))
    hist["ref_reset"] = (hist["step"] > 0) & (hist["step"] % ref_every == 0)
    info = {"objective": f"surrogate + {beta:g}*kl", "L": length, "ref_update_every": ref_every,
            "lr": lr, "optimiser": "sgd", "steps": steps, "start": APPENDIX_C_THETA,
            "ref": APPENDIX_C_REF}
    return hist, info


def simulated_calibration(curves: pd.DataFrame, max_attempts: int, n: int = 100,
                          n_boot: int = 100, seed: int = 0) -> pd.DataFrame:
    """Calibrate (DESIGN §4) on `n` sampled trajectories per (regime, task) of the fitted
    simulator: the same estimators and CIs as for a real model (sim.simulate's sampler and
    counts, core.calibration.calibrate)."""
    from core.calibration import calibrate
    from sim.simulate import sample_trajectories, trajectory_counts

    rows = []
    for i, r in enumerate(curves.itertuples()):
        sampled = sample_trajectories(r.p, r.q1, r.q2, max_attempts, n, seed + i)
        est = calibrate(trajectory_counts(*sampled, max_attempts), max_attempts=max_attempts,
                        n_boot=n_boot, seed=seed)
        row = {"regime": r.regime, "task": r.task, "task_index": r.task_index,
               "in_distribution": r.in_distribution, "n": n,
               "source": "simulator (fitted), sampled"}
        for key, e in est.items():
            row.update({key: e.estimate, f"{key}_ci_low": e.ci_low, f"{key}_ci_high": e.ci_high})
        rows.append(row)
    return pd.DataFrame(rows)


def simulated_echo(base_logit_s: float = 0.0, length: float = 100.0, steps: int = 40,
                   lr: float = 0.002, shares: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
                   q1_base: float = 0.9, q2_base: float = 0.1) -> pd.DataFrame:
    """p(F→T) after SFT on reflection data with each F→T share, and after SFT without
    reflection (plotted at 0%). In the two-stage model attempts are independent, so
    p(F→T) = P(next candidate correct | wrong, RESAMPLE) = p of the task (DESIGN §1-§2)."""
    from sim.dynamics import train_expected
    from sim.model import AgentSpec, TaskLadder
    from sim.objectives import ObjectiveConfig, SFTData
    from sim.optim import OptimiserConfig

    b = (base_logit_s, math.log(q1_base / (1 - q1_base)), math.log(q2_base / (1 - q2_base)))
    spec = AgentSpec(ladder=TaskLadder(("T1",), (1.0,), (True,), (b,)), len_correct=length,
                     len_wrong=length)
    rows = []
    refl, plain = BY_NAME["sft-reflection"], BY_NAME["sft-no-reflection"]  # core.regimes
    cases = [(refl.paper_row, s, SFTData(refl.sft_data, ft_share=s)) for s in shares]
    cases.append((plain.paper_row, 0.0, SFTData(plain.sft_data)))
    for regime, share, data in cases:
        obj = ObjectiveConfig(weights=(("sft", 1.0),), sft_data=data)
        _, hist = train_expected(spec, obj, spec.initial_params(), steps,
                                 OptimiserConfig(lr=lr), record_every=steps)
        rows.append({"regime": regime, "ft_ratio_pct": 100 * share,
                     "p_ft": float(hist.iloc[-1]["p[T1]"]),
                     "q2": float(hist.iloc[-1]["q2[T1]"])})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ sections


def sweep_series(results: pd.DataFrame) -> pd.Series:
    """One label per distinct sweep configuration: the objective plus each grid axis that
    varies (optimiser, beta: charts.series_labels; and the token model)."""
    if "objective" not in results.columns:
        label = results["regime"].astype(str)
    else:
        label = charts.series_labels(results)
    if "token_model" in results.columns and results["token_model"].nunique() > 1:
        label = label + " · " + results["token_model"].astype(str)
    return label


def _sweep_accuracy(results: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Mean accuracy per (configuration, task) with a 95% CI over the population (sweep).
    Cells that differ in optimiser, beta or token model stay separate series; the regime
    (canonical_regime) only picks the colour."""
    acc_cols = [c for c in results.columns if c.startswith("acc[")]
    if not acc_cols:
        return pd.DataFrame()
    df = results.copy()
    if "length" in df.columns and df["length"].nunique() > 1:
        lengths = np.sort(df["length"].unique())
        keep = lengths[np.argmin(np.abs(np.log(lengths) - np.log(100)))]
        df = df[df["length"] == keep]
    names = manifest.get("ladder", {}).get("names") if isinstance(manifest.get("ladder"),
                                                                   dict) else None
    ids = manifest.get("ladder", {}).get("in_distribution") if names else None
    df["series"] = sweep_series(df)
    df["regime"] = df["regime"].map(canonical_regime)
    long = df.melt(id_vars=["series", "regime"], value_vars=acc_cols, var_name="col",
                   value_name="value")
    long["task"] = long["col"].str.slice(4, -1)
    agg = (long.groupby(["series", "regime", "task"], sort=False)["value"]
           .agg(["mean", "std", "count"]).reset_index())
    half = 1.96 * agg["std"].fillna(0) / np.sqrt(agg["count"])
    order = names or [c[4:-1] for c in acc_cols]
    id_map = dict(zip(names, ids, strict=False)) if names and ids else {}
    return pd.DataFrame({
        "regime": agg["regime"], "series": agg["series"], "task": agg["task"],
        "task_index": agg["task"].map({t: i + 1 for i, t in enumerate(order)}),
        "in_distribution": agg["task"].map(id_map) if id_map else np.nan,
        "accuracy": agg["mean"], "ci_low": agg["mean"] - half, "ci_high": agg["mean"] + half,
        "n": agg["count"], "source": "simulated (sweep)"})


def _settings(manifest: dict) -> dict:
    """A run manifest's settings: its top level with the `config` block (where
    sim.training_run.train_and_write writes them) merged over it."""
    config = manifest.get("config")
    return {**manifest, **config} if isinstance(config, dict) else dict(manifest)


def _weights_from(manifest: dict) -> dict[str, float] | None:
    manifest = _settings(manifest)
    w = manifest.get("weights") or manifest.get("objective_weights")
    if isinstance(w, dict):
        return {str(k): float(v) for k, v in w.items()}
    if isinstance(w, list):
        return {str(k): float(v) for k, v in w}
    obj = manifest.get("objective")
    if isinstance(obj, str):
        try:
            from sim.objectives import ObjectiveConfig

            return dict(ObjectiveConfig.parse(obj, beta=manifest.get("beta")).weights)
        except (ValueError, TypeError):
            return None
    return None


TRAIN_SETTINGS = ("objective", "beta", "token_model", "kl_placement", "kl_estimator",
                  "optimiser", "lr", "steps", "n_agents", "group_size", "n_queries",
                  "ref_update_every", "length", "max_attempts")


def train_description(manifest: dict, train_dir: Path) -> tuple[dict[str, float] | None, str,
                                                                  str]:
    """(weights, settings text, gradient text) of an outputs/train/<name> run for the
    dynamics caption. `train` runs estimate their gradients by Monte Carlo from sampled
    groups (sim.training_run); only the built-in run uses exact expectations."""
    settings = _settings(manifest)
    desc = (f"settings from {train_dir / 'manifest.json'}: "
            + ", ".join(f"{k} = {settings[k]}" for k in TRAIN_SETTINGS
                        if settings.get(k) is not None))
    g, n_q = settings.get("group_size"), settings.get("n_queries")
    sizes = (f" (groups of G = {g}, {n_q} queries per step and agent)"
             if g is not None and n_q is not None else "")
    gradients = (f"Gradients are Monte-Carlo estimates from sampled groups{sizes}, so they "
                 "are noisy (DESIGN §2–§3)")
    return _weights_from(manifest), desc, gradients


def sweep_kl_text(manifest: dict) -> str:
    """The KL placement and estimator the sweep trained with (its manifest's grid.training),
    else the sweep's defaults (sim.sweep.TrainingConfig)."""
    grid = manifest.get("grid")
    training = grid.get("training") if isinstance(grid, dict) else None
    if isinstance(training, dict) and ("kl_placement" in training or
                                       "kl_estimator" in training):
        where = "the sweep's manifest"
        placement, estimator = training.get("kl_placement"), training.get("kl_estimator")
    else:
        from sim.sweep import TrainingConfig

        where = "the sweep's defaults (no grid.training in its manifest)"
        placement, estimator = TrainingConfig.kl_placement, TrainingConfig.kl_estimator
    return f"KL {placement}, {estimator} estimator ({where})"


def _ell_text(manifest: dict) -> str:
    ell = manifest.get("length_scales") or manifest.get("transfer", {}).get("length_scales") \
        if isinstance(manifest.get("transfer", {}), dict) else None
    return f"transfer length scales (ell_s, ell_1, ell_2) = {ell}" if ell else \
        "transfer length scales as in the sweep manifest"


def load_or_fit(cfg: ReportConfig, observed: pd.DataFrame, log: Callable[[str], None],
                inputs: dict[str, str] | None = None) -> FitResult:
    """The fit of the simulator to `observed`: --fit, else a cached fit.json of the same
    data, source and config (the report's own cache <out>/fit/<name>/, or a `cli.py fit`
    under <outputs>/fit/<name>/), else fit now and cache it under <out>/fit/: the report
    writes nothing outside its --out. The fit.json used is recorded in `inputs["fit"]`."""
    inputs = {} if inputs is None else inputs
    if cfg.fit is not None:
        inputs["fit"] = str(cfg.fit)
        try:
            return FitResult.from_dict(json.loads(Path(cfg.fit).read_text(encoding="utf-8")))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ReportError(f"--fit {cfg.fit} is not a fit.json of `cli.py fit` "
                              f"({type(exc).__name__}: {exc})") from None
    fit_cfg = FitConfig(quick=cfg.quick)
    source = str(observed["source"].iloc[0])
    digest = observed_digest(observed)
    name = "quick" if cfg.quick else "report"
    cache = cfg.out_dir / "fit" / (_slug(source + "-" + name) or name) / "fit.json"
    want = json.loads(json.dumps(finite_json(asdict(fit_cfg))))
    roots = [r for r in dict.fromkeys((cfg.out_dir / "fit", cfg.outputs / "fit")) if r.is_dir()]
    cached = sorted((p for r in roots for p in r.glob("*/fit.json")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for path in cached:  # the report's own cache or a `cli.py fit` with the same settings
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if (data.get("config") == want and data.get("observed_source") == source
                and data.get("observed_sha256") == digest):  # the same data, not just name
            log(f"using cached fit {path}")
            inputs["fit"] = str(path)
            return FitResult.from_dict(data)
    log(f"fitting the simulator to {source} (cached in {cache.parent}) ...")
    result = fit_observed(observed, fit_cfg)
    observed_path = cfg.observed or reference_dir() / "paper_table1.csv"
    save_fit(result, cache.parent, inputs={"observed": str(observed_path)}, command="report")
    inputs["fit"] = str(cache)
    return result


def write_manifest(out_dir: Path, command: str, config: dict, inputs: dict,
                   wall_s: float, **extra) -> Path:
    """manifest.json of an output folder: command, config, inputs (paths), package versions,
    git commit and wall time (the contract of every writer, docs/ARCHITECTURE.md)."""
    path = out_dir / "manifest.json"
    write_json_atomic({
        "command": command, "config": config,
        "inputs": {k: None if v is None else str(v) for k, v in inputs.items()},
        "versions": package_versions(), "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_time_s": round(wall_s, 3),
        **extra}, path)
    return path


def save_fit(result: FitResult, out_dir: Path, inputs: dict | None = None,
             command: str | None = "fit") -> list[Path]:
    """fit.json (round-trips), params.csv, curves.csv (with residuals), summary.txt and, unless
    `command` is None (the caller writes its own), manifest.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "fit.json", out_dir / "params.csv", out_dir / "curves.csv",
             out_dir / "summary.txt"]
    paths[0].write_text(json.dumps(result.to_dict(), indent=1, default=_json_default,
                                   allow_nan=False), encoding="utf-8")
    result.params.to_csv(paths[1], index=False)
    result.curves.to_csv(paths[2], index=False)
    paths[3].write_text(result.summary() + "\n", encoding="utf-8")
    if command is not None:
        paths.append(write_manifest(
            out_dir, command, result.config, inputs or {}, result.wall_s,
            observed_source=result.observed_source, observed_sha256=result.observed_sha256))
    return paths


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:60]


def _fmt_params(result: FitResult) -> str:
    parts = []
    for r in result.params.itertuples():
        if r.free:
            unc = "at bound" if r.at_bound or not np.isfinite(r.stderr) else f"± {r.stderr:.2g}"
            parts.append(f"{r.name} = {r.value:.3g} ({unc})")
        else:
            parts.append(f"{r.name} = {r.value:g}")
    return "; ".join(parts)


def build_sections(cfg: ReportConfig, log: Callable[[str], None] = print,
                   inputs: dict[str, str | None] | None = None) -> list[Section]:
    """Every section of the report, in order, with its chart and caption. The inputs used
    (paths; None for a built-in run) are recorded in `inputs`."""
    inputs = {} if inputs is None else inputs
    sections: list[Section] = []
    observed_path = cfg.observed or reference_dir() / "paper_table1.csv"
    observed = load_observed(observed_path)
    inputs["observed"] = str(observed_path)
    fit = load_or_fit(cfg, observed, log, inputs)
    real_root = cfg.real or (cfg.outputs / "real")
    try:
        real = load_calibrations(real_root) if real_root.exists() else None
    except ObservedDataError:
        real = None
    inputs["real"] = None if real is None else str(real_root)
    domain = charts.regime_domain(observed["regime"], fit.curves["regime"],
                                  [] if real is None else real["regime"])
    k_fit = int(fit.config.get("max_attempts", 8))

    # 1. attribution landscape
    sweep_dir = _run_dir(cfg.sweep, "results.parquet") or \
        newest_run(cfg.outputs / "sweeps", "results.parquet")
    sweep, sweep_manifest = None, {}
    inputs["sweep"] = None if sweep_dir is None else str(sweep_dir)
    if sweep_dir is not None:
        sweep = pd.read_parquet(sweep_dir / "results.parquet")
        sweep_manifest = read_manifest(sweep_dir)
        ids = None
        lad = sweep_manifest.get("ladder")
        if isinstance(lad, dict) and lad.get("names") and lad.get("in_distribution"):
            ids = [n for n, i in zip(lad["names"], lad["in_distribution"], strict=False) if i]
        chart = charts.attribution_landscape(sweep, ids)
        src = (f"sweep {sweep_dir} ({sweep['cell_id'].nunique()} cells, "
               f"{len(sweep)} agent rows)")
        extra = (f"{sweep_kl_text(sweep_manifest)}. Each point is the mean over the cell's "
                 f"population with a 95% CI of that mean (normal approximation over agents); "
                 f"{_ell_text(sweep_manifest)}.")
    else:
        steps = 5 if cfg.quick else 30
        sweep = builtin_sweep(steps=steps)
        chart = charts.attribution_landscape(sweep)
        src = "built-in run (no outputs/sweeps/*/results.parquet found)"
        extra = (f"One deterministic agent per cell (single task, K = 8, exact expected "
                 f"gradients), so the CI band has zero width. The ratio is taken at the Appendix "
                 f"C point theta = {APPENDIX_C_THETA}, theta_ref = {APPENDIX_C_REF}; p and q2 "
                 f"after {steps} SGD steps (lr 0.05); surrogate+kl uses beta = 0.001; KL in "
                 f"reward, k1 estimator.")
    sections.append(Section(
        "attribution", "1. Attribution landscape", chart,
        "Attribution ratio R = |g_s| / mean(|g_1|, |g_2|) of the total objective gradient "
        "against the answer length L (both axes log), per objective (colour) and token model "
        "(panel), and heatmaps of the learned p and q2 (mean over agents and ID tasks). "
        "Theory (DESIGN §3): the surrogate's ratio is O(1) and flat in L, the per-token KL "
        "grows ~linearly in L (L-weighted sampling penalties, the paper's assumption), the "
        f"sequence-model KL stays flat. {extra} Source: {src}.", [src]))

    # 2. training dynamics
    train_dir = _run_dir(cfg.train, "history.parquet") or \
        newest_run(cfg.outputs / "train", "history.parquet")
    inputs["train"] = None if train_dir is None else str(train_dir)
    if train_dir is not None:
        hist = pd.read_parquet(train_dir / "history.parquet")
        weights, desc, gradients = train_description(read_manifest(train_dir), train_dir)
        src = f"training run {train_dir}"
    else:
        hist, info = builtin_history(steps=20 if cfg.quick else 120)
        weights = {"surrogate": 1.0, "kl": 0.01}
        src = "built-in run (no outputs/train/*/history.parquet found)"
        desc = (f"{info['objective']} (per-token model, KL in reward, k1), L = {info['L']:g}, "
                f"SGD lr {info['lr']}, {info['steps']} steps from theta = {info['start']}, "
                f"reference reset every {info['ref_update_every']} steps (dotted lines), "
                f"single task, K = 8")
        gradients = "Gradients are exact expectations (sim.dynamics; DESIGN §2–§3)"
    weight_text = ("per-term components are multiplied by their weights "
                   f"({', '.join(f'{k} × {v:g}' for k, v in weights.items())})" if weights else
                   "per-term components are unweighted (no weights in the manifest)")
    sections.append(Section(
        "dynamics", "2. Training dynamics (the paper's Figure 1 layout)",
        charts.training_dynamics(hist, weights),
        "Top: the agent's parameters (logit units), the net gradient d J / d logit per "
        "component (the weighted sum of all terms; ascent on J), and the attribution ratio of "
        "each term over time (log). Bottom: each term's gradient per parameter, so the "
        "surrogate's push and the KL's drag can be compared directly; "
        f"{weight_text}. Several agents: mean with a 2.5–97.5 percentile band. {desc}. "
        f"{gradients}. Source: {src}.", [src]))

    # 3. calibration
    sim_cal = simulated_calibration(fit.curves, k_fit, n=100, n_boot=20 if cfg.quick else 100)
    cal = sim_cal if real is None else pd.concat([sim_cal, real], ignore_index=True)
    real_text = ("" if real is None else
                 f" Real-model calibrations from {real_root}: "
                 f"{', '.join(sorted(real['run'].unique()))} (regime from each run's manifest "
                 "or folder name).")
    sections.append(Section(
        "calibration", "3. Calibration (the paper's Figures 2–3 layout)",
        charts.calibration_chart(cal, domain),
        "p̂ (first-attempt accuracy), q̂1 (STOPs / decisions after a correct candidate) and "
        "q̂2 (RESAMPLEs / decisions after a wrong one) per task, with 95% percentile-bootstrap "
        "CIs over queries, and the two-stage model's predicted accuracy Acc_K against the "
        "observed accuracy (normal-approximation CI), DESIGN §4. Forced final stops and "
        "truncations are excluded from the decision counts. Simulated points: 100 sampled "
        f"trajectories per task from each regime of the fitted simulator (K = {k_fit}, forced "
        "stop), calibrated with the same estimators as a real model." + real_text,
        ["fit", str(real_root) if real is not None else "no real calibrations"]))

    # 4. OOD curves
    frames = []
    if sweep_dir is not None:
        sim_acc = _sweep_accuracy(sweep, sweep_manifest)
        if not sim_acc.empty:
            frames.append(sim_acc)
    if not frames:
        fc = fit.curves
        frames.append(pd.DataFrame({"regime": fc["regime"], "task": fc["task"],
                                    "task_index": fc["task_index"],
                                    "in_distribution": fc["in_distribution"],
                                    "accuracy": fc["accuracy"], "ci_low": np.nan,
                                    "ci_high": np.nan, "n": np.nan,
                                    "source": "simulated (fitted to Table 1)"}))
    frames.append(observed)
    if real is not None:
        for run, sub in real.groupby("run"):
            frames.append(pd.DataFrame({
                "regime": sub["regime"], "task": sub["task"], "task_index": sub["task_index"],
                "in_distribution": sub["in_distribution"],
                "accuracy": sub["observed_accuracy"], "ci_low": sub["observed_accuracy_ci_low"],
                "ci_high": sub["observed_accuracy_ci_high"], "n": sub.get("n", np.nan),
                "source": f"real model: {run}"}))
    acc = pd.concat(frames, ignore_index=True)
    sim_note = ("the sweep's population mean with a 95% CI over agents (cells at the length "
                "closest to L = 100)" if sweep_dir is not None else
                "the fitted simulator of section 5 (deterministic: no CI)")
    sections.append(Section(
        "ood", "4. OOD curves", charts.ood_curves(acc, domain),
        "Accuracy against task (ordered by difficulty) for each training regime. Simulated: "
        f"{sim_note}. Observed: {observed['source'].iloc[0]} (accuracy and 95% CI as printed, "
        "100 problems per task; T1, T2 in-distribution) and any real-model calibration. The "
        "shaded tasks are in-distribution (trained on); the rest are OOD and are reached only "
        "through the transfer kernel k_x(t, t') = exp(-|d(t) - d(t')| / ell_x) of DESIGN §1 "
        "(difficulty d = task position).", [str(observed_path)]))

    # 5. fit
    sections.append(Section(
        "fit", "5. Simulator fitted to the observed curves", charts.fit_overlay(fit.curves,
                                                                              domain),
        f"Least-squares fit (scipy, bounded, log-parameters) of the simulator to "
        f"{fit.observed_source}: base offsets b_s(t) solved from the Base row with the base "
        f"model's q1, q2 fixed (accuracy alone does not identify p, q1, q2 — a documented "
        f"assumption, not a finding); each trained regime re-trained from the base by exact "
        f"expected-gradient SGD with its objective (SFT no reflection, SFT reflection with an "
        f"F→T share of {fit.config.get('ft_share')}, RL = surrogate + beta·KL, per-token "
        f"model, L = {fit.config.get('length'):g}); OOD transfer only through the kernel of "
        f"DESIGN §1 ({fit.config.get('transfer')} length scales). Fitted: {_fmt_params(fit)}. "
        f"RMSE over the trained regimes {fit.rmse * 100:.1f} pp with {fit.n_free} free "
        f"parameters + {fit.n_params - fit.n_free} base offsets for {fit.n_obs} cells. "
        "Uncertainties: s²(JᵀJ)⁻¹ at the optimum (delta method); a parameter at its bound is "
        "not identified by these data.", ["fit"]))

    # 6. echo effect
    kang = load_kang2025()
    inputs["kang2025"] = str(reference_dir() / "kang2025_p_FT.csv")
    base_t = fit.curves[(fit.curves["regime"] == BASE) & fit.curves["in_distribution"]
                        .astype(bool)]
    p0 = float(base_t["p"].mean()) if len(base_t) else 0.5
    echo = simulated_echo(base_logit_s=math.log(p0 / (1 - p0)),
                          steps=10 if cfg.quick else 40)
    sections.append(Section(
        "echo", "6. The echo effect: p(F→T) after SFT", charts.echo_chart(echo, kang, domain),
        "Probability that a wrong first answer followed by RESAMPLE is corrected (F→T), "
        "against the share of F→T chains in the SFT data. Simulator: one ID task starting "
        f"from the fitted base (p = {p0:.2f}, q1 = 0.9, q2 = 0.1), 40 SGD steps (lr 0.002) of "
        "token-weighted SFT (L = 100) on reflection data with the given F→T share (one "
        "reflection per chain) or on no-reflection data (plotted at 0%); in the two-stage "
        "model attempts are independent, so p(F→T) equals the task's p. The cited study "
        "(Kang et al. 2025, DESIGN §6) found p(F→T) flat at 4–6% whatever the share: "
        "reflection data teaches the agent to RESAMPLE, not to answer better.",
        ["kang2025_p_FT.csv"]))

    # 7. compare (real runs present)
    if real is not None:
        sections.append(_compare_section(real, real_root, fit, domain, cfg))
    return sections


def _compare_section(real: pd.DataFrame, real_root: Path, fit: FitResult,
                     domain: list[str], cfg: ReportConfig) -> Section:
    """Measured (p, q1, q2) beside the simulator fitted to the real runs themselves (needs a
    Base run and a trained one), else beside the observed-table fit where the tasks match."""
    regimes = set(real["regime"])
    caption = ("Measured calibrations of the real-model runs (points, bootstrap CIs) beside "
               "the simulator's p, q1, q2 for the same regimes (dashed). ")
    if BASE in regimes and regimes & set(TRAINED_REGIMES):
        try:
            own = fit_observed(load_observed(real_root), FitConfig(quick=cfg.quick))
        except ValueError as exc:
            return Section("compare", "7. Measured (p, q1, q2) vs the simulator",
                           charts.message_chart(f"fit to the real runs failed: {exc}"),
                           caption, [str(real_root)])
        caption += (f"Simulator fitted to these runs' observed accuracies as in section 5: "
                    f"{_fmt_params(own)}; RMSE {own.rmse * 100:.1f} pp.")
        chart = charts.compare_chart(real, own.curves, domain)
    elif set(real["task"]) <= set(fit.curves["task"]):
        caption += "Simulator: the fit of section 5 (same task names)."
        chart = charts.compare_chart(real, fit.curves[fit.curves["regime"].isin(regimes)],
                                     domain)
    else:
        caption += ("No Base run to fit the real runs' ladder, and its tasks differ from the "
                    "observed table's: run `python cli.py compare --observed outputs/real/...`.")
        chart = charts.message_chart("no simulator prediction for these tasks")
    return Section("compare", "7. Measured (p, q1, q2) vs the simulator", chart, caption,
                   [str(real_root)])


# ----------------------------------------------------------------------------- rendering


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.caption{max-width:900px;color:#333;font-size:.93em}.meta{color:#666;font-size:.85em}
.chart{overflow-x:auto}
"""


def _script_json(obj) -> str:
    return json.dumps(obj, default=_json_default).replace("</", "<\\/")


def render_html(sections: list[Section], title: str, meta: str) -> str:
    """The self-contained page: the Vega bundle once, then a div + spec per section."""
    import vl_convert as vlc

    bundle = vlc.javascript_bundle(vl_version=VL_VERSION).replace("</script", "<\\/script")
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
             f"<script>{bundle}</script></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{html.escape(meta)}</p>", "<nav><ul>"]
    parts += [f"<li><a href='#{s.slug}'>{html.escape(s.title)}</a></li>" for s in sections]
    parts.append("</ul></nav>")
    specs = {}
    for s in sections:
        parts.append(f"<section id='{s.slug}'><h2>{html.escape(s.title)}</h2>"
                     f"<div class='chart' id='chart-{s.slug}'></div>"
                     f"<p class='caption'>{html.escape(s.caption)}</p></section>")
        specs[s.slug] = s.chart.to_dict()
    parts.append(f"<script>const SPECS = {_script_json(specs)};\n" + """
for (const [slug, spec] of Object.entries(SPECS)) {
  const el = document.getElementById('chart-' + slug);
  vegaEmbed(el, spec, {renderer: 'svg', actions: false})
    .then(() => { el.setAttribute('data-rendered', 'ok'); })
    .catch((err) => { el.setAttribute('data-rendered', 'error');
                      console.error('Vega error in ' + slug + ': ' + err); });
}
</script></body></html>""")
    return "\n".join(parts)


def write_report(cfg: ReportConfig, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Build every section and write index.html and one PNG per chart into cfg.out_dir."""
    import vl_convert as vlc

    t0 = time.time()
    inputs: dict[str, str | None] = {}
    sections = build_sections(cfg, log, inputs)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    meta = (f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `python cli.py report`; regimes "
            f"keep one colour across charts ({', '.join(REGIMES)}). Inputs: "
            + "; ".join(dict.fromkeys(i for s in sections for i in s.inputs)))
    page = cfg.out_dir / "index.html"
    page.write_text(render_html(sections, "Decision-Sampling study: report", meta),
                    encoding="utf-8")
    out = {"index.html": page}
    if cfg.png:
        for s in sections:
            png = cfg.out_dir / f"{s.slug}.png"
            png.write_bytes(vlc.vegalite_to_png(s.chart.to_dict(), vl_version=VL_VERSION,
                                                scale=cfg.png_scale))
            out[png.name] = png
    out["manifest.json"] = write_manifest(cfg.out_dir, "report", asdict(cfg), inputs,
                                          time.time() - t0,
                                          sections=[s.slug for s in sections])
    log(f"report: {page} ({len(sections)} charts, {time.time() - t0:.1f} s)")
    return out


def write_compare(run: Path, out_dir: Path, fit_cfg: FitConfig | None = None,
                  log: Callable[[str], None] = print) -> tuple[FitResult, pd.DataFrame,
                                                              list[Path]]:
    """`cli.py compare` (DESIGN §4, §5): fit the simulator to a real run's observed
    accuracies (Base row needed), then place measured (p̂, q̂1, q̂2) per task and regime
    beside the simulator's (p, q1, q2). Writes comparison.csv, the fit files, compare.html
    and PNGs."""
    import vl_convert as vlc

    t0 = time.time()
    cal = load_calibrations(run)
    observed = load_observed(run)
    result = fit_observed(observed, fit_cfg or FitConfig())
    sim = result.curves.rename(columns={"p": "p_sim", "q1": "q1_sim", "q2": "q2_sim",
                                        "accuracy": "accuracy_sim"})
    table = cal.merge(sim[["regime", "task", "p_sim", "q1_sim", "q2_sim", "accuracy_sim"]],
                      on=["regime", "task"], how="left")
    table["accuracy_residual"] = table["observed_accuracy"] - table["accuracy_sim"]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = save_fit(result, out_dir, command=None)
    table.to_csv(out_dir / "comparison.csv", index=False)
    paths.append(out_dir / "comparison.csv")
    domain = charts.regime_domain(cal["regime"])
    sections = [
        Section("compare", "Measured (p, q1, q2) vs the fitted simulator",
                charts.compare_chart(cal, result.curves, domain),
                f"Real-model calibrations under {run} (points, bootstrap CIs, DESIGN §4) beside "
                "the simulator fitted to the same runs' observed accuracies (dashed). The base "
                f"q1, q2 are fixed ({result.config.get('q1_base')}, "
                f"{result.config.get('q2_base')}): accuracy alone does not identify them."),
        Section("fit", "Simulated vs observed OOD curves and residuals",
                charts.fit_overlay(result.curves, domain),
                f"Fitted: {_fmt_params(result)}. RMSE over the trained regimes "
                f"{result.rmse * 100:.1f} pp; {result.n_free} free parameters + "
                f"{result.n_params - result.n_free} base offsets for {result.n_obs} cells."),
    ]
    page = out_dir / "compare.html"
    page.write_text(render_html(sections, f"Compare: {run}", f"Generated "
                                f"{time.strftime('%Y-%m-%d %H:%M')} by `python cli.py compare`"),
                    encoding="utf-8")
    paths.append(page)
    for s in sections:
        png = out_dir / f"{s.slug}.png"
        png.write_bytes(vlc.vegalite_to_png(s.chart.to_dict(), vl_version=VL_VERSION, scale=1.5))
        paths.append(png)
    paths.append(write_manifest(out_dir, "compare", result.config, {"observed": run},
                                time.time() - t0, observed_source=result.observed_source,
                                observed_sha256=result.observed_sha256))
    log(f"compare: {page}")
    return result, table, paths
