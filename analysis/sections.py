"""The report's sections (DESIGN §6), one function each: loaded inputs -> chart + caption.

analysis.report.SECTIONS lists them in page order (the Findings and the phase diagram are in
analysis.sections_findings); a section that has nothing to show returns None. Every
number a caption states comes from the object the chart's data came from: a run's record
(analysis.runs), the fit's config (analysis.fit), or the parameter object of a built-in
simulation (analysis.builtin), never a literal repeated here.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from analysis import charts, charts_accuracy, charts_sim
from analysis.builtin import (
    BuiltinSweep,
    builtin_sweep,
    figure1_history,
    simulated_calibration,
    simulated_echo,
)
from analysis.charts import labelled
from analysis.fit import RL, TRAINED_REGIMES, FitConfig, fit_observed, regime_objective
from analysis.fit_io import params_text
from analysis.observed import BASE, canonical_regime, load_observed
from analysis.page import Section
from analysis.report_inputs import ReportInputs, fit_quality
from analysis.runs import SweepRun
from core.regimes import TRAINED, display_label
from sim.columns import keyed_columns
from sim.headline import cell_medians, headline_sentence
from sim.training_run import TrainConfig

SWEEP_ACCURACY_LENGTH = 100.0  # the OOD section shows the sweep's cells nearest this L
TRAIN_SETTINGS = ("objective", "beta", "token_model", "kl_placement", "kl_estimator",
                  "optimiser", "lr", "steps", "n_agents", "group_size", "n_queries",
                  "ref_update_every", "length", "max_attempts")


def _words(setting: str) -> str:
    return setting.replace("-", " ")  # "in-reward" -> "in reward"


# ------------------------------------------------------------------ 1. attribution (§3)


def builtin_sweep_text(cfg: BuiltinSweep) -> str:
    """How the built-in sweep ran, from its parameter object."""
    kl = cfg.objective("kl", cfg.token_models[0])
    opt = cfg.optimiser
    combined = [o for o in cfg.objectives if "+" in o]
    beta = f"; {', '.join(combined)} uses beta = {cfg.beta:g}" if combined else ""
    return (f"One deterministic agent per cell (single task, K = {cfg.spec(1).max_attempts}, "
            f"exact expected gradients), so the CI band has zero width. The ratio is taken at "
            f"the Appendix C point theta = {cfg.theta}, theta_ref = {cfg.theta_ref}; p and q2 "
            f"after {cfg.steps} {opt.name.upper()} steps (lr {opt.lr:g}){beta}; KL "
            f"{_words(kl.kl_placement)}, {kl.kl_estimator} estimator.")


def attribution(inp: ReportInputs) -> Section:
    if inp.sweep is not None:
        sweep = inp.sweep
        chart = charts_sim.attribution_landscape(sweep.results, sweep.id_tasks,
                                                 domain=_domain(inp))
        src = (f"sweep {sweep.path} ({sweep.results['cell_id'].nunique()} cells, "
               f"{len(sweep.results)} agent rows)")
        extra = (f"{sweep.kl_text()}. Each point is the mean over the cell's population with a "
                 f"95% CI of that mean (normal approximation over agents); {sweep.ell_text()}.")
    else:
        sweep = None
        chart = charts_sim.attribution_landscape(builtin_sweep(inp.runs.sweep),
                                                 domain=_domain(inp))
        src = "built-in run (no outputs/sweeps/*/results.parquet found)"
        extra = builtin_sweep_text(inp.runs.sweep)
    found = headline_sentence(cell_medians(sweep.results if inp.sweep is not None
                                           else builtin_sweep(inp.runs.sweep)))
    return Section(
        "attribution", "1. Attribution landscape", chart,
        "Attribution ratio R = |g_s| / mean(|g_1|, |g_2|) of the total objective gradient "
        "against the answer length L (both axes log), per regime (colour; click the legend to "
        "pick) and token model (panel), with R = 1 dashed, and heatmaps of the learned p and "
        "q2 (mean over agents and ID tasks). An objective whose ratio is 0/0 everywhere is "
        "named in red in its panel; a length where a ratio is undefined is a red dotted rule. "
        "Theory (DESIGN §3): the surrogate's ratio is O(1) and flat in L, the per-token KL "
        "grows ~linearly in L (L-weighted sampling penalties, the paper's assumption), the "
        f"sequence-model KL stays flat. This run: {found} {extra} Source: {src}.", [src])


# --------------------------------------------------------------------- 2. dynamics (§2-§3)


def figure1_text(cfg: TrainConfig) -> str:
    """The built-in Figure 1 run's settings, from its TrainConfig and the learner it builds."""
    learner = cfg.learner()
    obj, spec, opt = learner.objective, learner.spec, learner.optimiser
    terms = " + ".join(k if w == 1 else f"{w:g}*{k}" for k, w in obj.weights)
    lengths = (f"L = {spec.len_correct:g}" if spec.len_wrong == spec.len_correct
               else f"L_C = {spec.len_correct:g}, L_W = {spec.len_wrong:g}")
    resets = (f"reference reset every {cfg.ref_update_every} steps (dotted lines)"
              if cfg.ref_update_every else "reference never reset")
    tasks = "single task" if len(spec.ladder.names) == 1 else f"{len(spec.ladder.names)} tasks"
    return (f"{terms} ({obj.token_model} model, KL {_words(obj.kl_placement)}, "
            f"{obj.kl_estimator}), {lengths}, {opt.name.upper()} lr {opt.lr:g}, {cfg.steps} "
            f"steps from theta = {cfg.theta0}, {resets}, {tasks}, K = {spec.max_attempts}: "
            "the Figure 1 setting of `cli.py train` (sim.training_run.TrainConfig)")


def train_settings_text(cfg: TrainConfig) -> str:
    return ", ".join(f"{k} = {getattr(cfg, k)}" for k in TRAIN_SETTINGS
                     if getattr(cfg, k) is not None)


def dynamics(inp: ReportInputs) -> Section:
    if inp.train is not None:
        cfg, hist = inp.train.config, inp.train.history
        src = f"training run {inp.train.path}"
        desc = f"settings from {inp.train.path / 'manifest.json'}: {train_settings_text(cfg)}"
        gradients = (f"Gradients are Monte-Carlo estimates from sampled groups (groups of "
                     f"G = {cfg.group_size}, {cfg.n_queries} queries per step and agent), so "
                     "they are noisy (DESIGN §2–§3)")
    else:
        cfg = inp.runs.figure1
        hist = figure1_history(cfg)
        src = "built-in run (no outputs/train/*/history.parquet found)"
        desc = figure1_text(cfg)
        gradients = "Gradients are exact expectations (sim.dynamics; DESIGN §2–§3)"
    weights = dict(cfg.learner().objective.weights)
    band = "–".join(f"{q * 100:g}" for q in charts_sim.AGENT_BAND)
    weight_text = ("per-term components are multiplied by their weights "
                   f"({', '.join(f'{k} × {v:g}' for k, v in weights.items())})")
    return Section(
        "dynamics", "2. Training dynamics (the paper's Figure 1 layout)",
        charts_sim.training_dynamics(hist, weights),
        "Top: the agent's parameters (logit units), the net gradient d J / d logit per "
        "component (the weighted sum of all terms; ascent on J), and the attribution ratio of "
        "each term over time (log). Bottom: each term's gradient per parameter, so the "
        "surrogate's push and the KL's drag can be compared directly; "
        f"{weight_text}. Several agents: mean with a {band} percentile band. {desc}. "
        f"{gradients}. Source: {src}.", [src])


# ------------------------------------------------------------------------ 3. calibration (§4)


def calibration(inp: ReportInputs) -> Section:
    sample, k = inp.runs.calibration, inp.max_attempts
    sim_cal = simulated_calibration(inp.fit.curves, k, sample)
    real = inp.real
    cal = sim_cal if real is None else pd.concat([sim_cal, real], ignore_index=True)
    real_text = ("" if real is None else
                 f" Real-model calibrations from {inp.real_root}: "
                 f"{', '.join(sorted(real['run'].unique()))} (regime from each run's record "
                 "or folder name).")
    return Section(
        "calibration", "3. Calibration (the paper's Figures 2–3 layout)",
        charts_accuracy.calibration_chart(labelled(cal), _domain(inp)),
        "p̂ (first-attempt accuracy), q̂1 (STOPs / decisions after a correct candidate) and "
        "q̂2 (RESAMPLEs / decisions after a wrong one) per task, with 95% percentile-bootstrap "
        "CIs over queries, and the two-stage model's predicted accuracy Acc_K against the "
        "observed accuracy (normal-approximation CI), DESIGN §4. Forced final stops and "
        f"truncations are excluded from the decision counts. Simulated points: {sample.n} "
        f"sampled trajectories per task from each regime of the fitted simulator (K = {k}, "
        "forced stop), calibrated with the same estimators as a real model." + real_text,
        ["fit", str(inp.real_root) if real is not None else "no real calibrations"])


# ------------------------------------------------------------------------- 4. OOD curves (§1)


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


def sweep_accuracy(results: pd.DataFrame, sweep: SweepRun | None = None) -> pd.DataFrame:
    """Mean accuracy per (configuration, task) with a 95% CI over the population (sweep), at
    the length nearest SWEEP_ACCURACY_LENGTH. Cells that differ in optimiser, beta or token
    model stay separate series; the regime (canonical_regime) only picks the colour. Task
    order and ID flags from the sweep's grid, else the column order."""
    acc_cols = keyed_columns(results.columns, "acc")
    if not acc_cols:
        return pd.DataFrame()
    df = results.copy()
    if "length" in df.columns and df["length"].nunique() > 1:
        lengths = np.sort(df["length"].unique())
        keep = lengths[np.argmin(np.abs(np.log(lengths) - np.log(SWEEP_ACCURACY_LENGTH)))]
        df = df[df["length"] == keep]
    df["series"] = sweep_series(df)
    df["regime"] = df["regime"].map(canonical_regime)
    long = df.melt(id_vars=["series", "regime"], value_vars=list(acc_cols.values()),
                   var_name="col", value_name="value")
    long["task"] = long["col"].map({c: t for t, c in acc_cols.items()})
    agg = (long.groupby(["series", "regime", "task"], sort=False)["value"]
           .agg(["mean", "std", "count"]).reset_index())
    half = 1.96 * agg["std"].fillna(0) / np.sqrt(agg["count"])
    order = sweep.task_names if sweep is not None else list(acc_cols)
    id_map = dict(zip(sweep.task_names, sweep.in_distribution, strict=True)) if sweep else {}
    return pd.DataFrame({
        "regime": agg["regime"], "series": agg["series"], "task": agg["task"],
        "task_index": agg["task"].map({t: i + 1 for i, t in enumerate(order)}),
        "in_distribution": agg["task"].map(id_map) if id_map else np.nan,
        "accuracy": agg["mean"], "ci_low": agg["mean"] - half, "ci_high": agg["mean"] + half,
        "n": agg["count"], "source": "simulated (sweep)"})


def observed_text(observed: pd.DataFrame) -> str:
    """Source, sample size and ID tasks of an observed accuracy table, as it gives them."""
    n = pd.to_numeric(observed.get("n", pd.Series(dtype=float)), errors="coerce").dropna()
    size = f"{n.iloc[0]:g} problems per task" if len(n) and n.nunique() == 1 else \
        "problems per task as given"
    ids = observed.loc[observed["in_distribution"].fillna(False).astype(bool), "task"]
    id_text = (f"{', '.join(dict.fromkeys(ids))} in-distribution" if len(ids)
               else "no task marked in-distribution")
    return (f"{observed['source'].iloc[0]} (accuracy and 95% CI as printed, {size}; "
            f"{id_text})")


def ood(inp: ReportInputs) -> Section:
    frames = []
    if inp.sweep is not None:
        sim_acc = sweep_accuracy(inp.sweep.results, inp.sweep)
        if not sim_acc.empty:
            frames.append(sim_acc)
    if not frames:
        fc = inp.fit.curves
        frames.append(pd.DataFrame({"regime": fc["regime"], "task": fc["task"],
                                    "task_index": fc["task_index"],
                                    "in_distribution": fc["in_distribution"],
                                    "accuracy": fc["accuracy"], "ci_low": np.nan,
                                    "ci_high": np.nan, "n": np.nan,
                                    "source": "simulated (fitted to Table 1)"}))
    frames.append(inp.observed)
    if inp.real is not None:
        for run, sub in inp.real.groupby("run"):
            frames.append(pd.DataFrame({
                "regime": sub["regime"], "task": sub["task"], "task_index": sub["task_index"],
                "in_distribution": sub["in_distribution"],
                "accuracy": sub["observed_accuracy"], "ci_low": sub["observed_accuracy_ci_low"],
                "ci_high": sub["observed_accuracy_ci_high"], "n": sub.get("n", np.nan),
                "source": f"real model: {run}"}))
    acc = labelled(pd.concat(frames, ignore_index=True))
    sim_note = ("the sweep's population mean with a 95% CI over agents (cells at the length "
                f"closest to L = {SWEEP_ACCURACY_LENGTH:g})" if inp.sweep is not None else
                "the fitted simulator of section 5 (deterministic: no CI)")
    simulated = acc["source"] == frames[0]["source"].iloc[0]
    paired = overlaid_regimes(acc, simulated)
    others = [r for r in dict.fromkeys(acc.loc[simulated, "regime"]) if r not in paired
              and r not in PAPER_LABELS]
    chart = charts_accuracy.ood_overlay(acc, _domain(inp), regimes=paired)
    shown = ", ".join(paired) if paired else "none"
    unpaired = [r for r in PAPER_LABELS if r not in paired and (acc["regime"] == r).any()]
    unpaired_text = (f" Not overlaid, as they lack a simulated or an observed curve: "
                     f"{', '.join(unpaired)}." if unpaired else "")
    ablation_text = ""
    if others:  # the sweep's ablations: simulated only, a compact panel of their own
        ablations = charts_accuracy.accuracy_panel(
            acc[simulated & acc["regime"].isin(others)],
            "ablations (simulated only, no observed counterpart)", _domain(inp))
        chart = alt.vconcat(chart, ablations).resolve_scale(
            color="independent", shape="independent", strokeDash="independent")
        ablation_text = (f" Below: the sweep's ablations, simulated only ({', '.join(others)}), "
                         "in a panel of their own.")
    return Section(
        "ood", "4. OOD curves: simulated and observed per regime", chart,
        f"Accuracy against task (ordered by difficulty), one panel per trained regime of the "
        f"paper that has both a simulated and an observed curve ({shown}), simulated and "
        "observed overlaid (line style and point shape per data source, one legend; click to "
        f"pick).{unpaired_text}{ablation_text} Simulated: {sim_note}. Observed: "
        f"{observed_text(inp.observed)} and any real-model calibration. "
        "The shaded tasks are in-distribution (trained on); the rest are OOD and are reached "
        "only through the transfer kernel k_x(t, t') = exp(-|d(t) - d(t')| / ell_x) of "
        "DESIGN §1 (difficulty d = task position).", [str(inp.observed_path)])


PAPER_LABELS = tuple(display_label(r.paper_row) for r in TRAINED)  # the paper's trained rows


def overlaid_regimes(acc: pd.DataFrame, simulated: pd.Series) -> list[str]:
    """The paper's trained regimes (display labels, Table 1 order) with both a simulated and
    an observed curve in `acc` (display labels): the panels of the OOD overlay."""
    sim, obs = set(acc.loc[simulated, "regime"]), set(acc.loc[~simulated, "regime"])
    return [r for r in PAPER_LABELS if r in sim and r in obs]


# --------------------------------------------------------------------------------- 5. fit


def base_text(cfg: FitConfig, n_offsets: int) -> str:
    """How the fit sets the base offsets b_s(t) (DESIGN §1), from its config."""
    fixed = (f"the base model's q1 = {cfg.q1_base:g}, q2 = {cfg.q2_base:g} fixed (accuracy "
             "alone does not identify p, q1, q2 — a documented assumption, not a finding)")
    if cfg.base == "exact":
        return (f"base offsets b_s(t) solved one per task from the Base row ({n_offsets} "
                f"offsets), with {fixed}")
    if cfg.base == "linear":
        return ("base offsets b_s(t) = slope·(d_half − d(t)) over the task difficulty d(t) "
                f"(position), slope and d_half fitted to the untrained rows, with {fixed}")
    return ("base offsets b_s(t) = logaddexp(slope·(d_half − d(t)), logit(floor)) over the "
            "task difficulty d(t) (position): p falls with difficulty down to a floor; slope, "
            f"d_half and floor fitted to the untrained rows, with {fixed}")


def transfer_text(cfg: FitConfig) -> str:
    """How the fit's agent carries training to OOD tasks (DESIGN §1; FitConfig.transfer)."""
    if cfg.transfer == "global-decisions":
        return ("OOD transfer: sampling through the kernel of DESIGN §1 (one length scale), "
                "each decision one logit shared by every task.")
    if cfg.transfer == "flat-decisions":
        return ("OOD transfer through the kernel of DESIGN §1: sampling with a fitted length "
                "scale, each decision's kernel flat over every task (ell_d at its limit).")
    return f"OOD transfer only through the kernel of DESIGN §1 ({cfg.transfer} length scales)."


def trained_text(cfg: FitConfig) -> str:
    """Which regimes the fit trains and with what objective (DESIGN §2, §5), from its
    config and the objectives it builds (analysis.fit.regime_objective)."""
    rl = regime_objective(RL, cfg, cfg.beta)
    beta = f"beta fitted from {cfg.beta:g}" if cfg.fit_beta else f"beta {cfg.beta:g}"
    rl_text = (f"RL = surrogate + beta·KL ({beta}, {rl.kl_estimator} estimator "
               f"{_words(rl.kl_placement)}, {rl.token_model} model)")
    sft_refl = (f"SFT (reflection) on data with an F→T share of {cfg.ft_share:g}"
                + (", no loss on its wrong first attempts" if cfg.mask_wrong_attempts else ""))
    untrained = ("SFT (no reflection) is not trained (its row is the base model's; the fit "
                 "gives a 95% upper bound on its lr)")
    if cfg.lr_mode == "sft-limits":
        return (f"{rl_text} and {sft_refl}, trained at the top of its lr range (the fit "
                f"gives a 95% lower bound on its lr); {untrained}")
    if cfg.lr_mode == "no-refl-bound":
        return f"{rl_text} and {sft_refl}; {untrained}"
    shared = " (both SFT rows share one lr)" if cfg.lr_mode == "sft-shared" else ""
    return f"{rl_text}, {sft_refl} and SFT (no reflection){shared}"


def fit(inp: ReportInputs) -> Section:
    result = inp.fit
    fit_cfg = FitConfig(**result.config)
    quality = fit_quality(result, inp.fit_path)
    n_offsets = result.n_params - result.n_free
    counted = (f"{result.n_free} free parameters + {n_offsets} base offsets"
               if n_offsets else f"{result.n_free} free parameters")
    clip = (f", gradient-norm clip {fit_cfg.max_grad_norm:g}" if fit_cfg.max_grad_norm
            else "")
    return Section(
        "fit", "5. Simulator fitted to the observed curves",
        charts_accuracy.fit_overlay(labelled(result.curves), _domain(inp),
                                    subtitle=quality.lines()),
        f"Least-squares fit (scipy, bounded, log-parameters) of the simulator to "
        f"{result.observed_source}"
        f"{' (accuracy and the measured p, q1, q2)' if fit_cfg.decomposition else ''}: "
        f"{base_text(fit_cfg, n_offsets)}. Each trained regime is "
        f"re-trained from the base for {fit_cfg.effective_steps} steps of exact "
        f"expected-gradient {fit_cfg.optimiser.upper()}{clip} (K = {fit_cfg.max_attempts}, "
        f"L = {fit_cfg.length:g}): {trained_text(fit_cfg)}. {transfer_text(fit_cfg)} Fitted: "
        f"{params_text(result)}. {counted} for {result.n_obs} cells (RMSE and "
        f"identification in the chart's subtitle, from {quality.source.name}). "
        "Uncertainties: s²(JᵀJ)⁻¹ at the optimum (delta method); a parameter at its bound is "
        "not identified by these data.", ["fit"])


# ------------------------------------------------------------------------- 6. echo effect


def echo(inp: ReportInputs) -> Section:
    curves, cfg = inp.fit.curves, inp.runs.echo
    base_t = curves[(curves["regime"] == BASE) & curves["in_distribution"].astype(bool)]
    p0 = float(base_t["p"].mean()) if len(base_t) else 0.5
    q1, q2 = inp.fit.config["q1_base"], inp.fit.config["q2_base"]
    data = simulated_echo(cfg, p0, q1, q2)
    n_refl = cfg.reflection.n_reflections
    per_chain = "one reflection" if n_refl == 1 else f"{n_refl} reflections"
    lo, hi = inp.kang["p_ft"].min(), inp.kang["p_ft"].max()
    return Section(
        "echo", "6. The echo effect: p(F→T) after SFT",
        charts_accuracy.echo_chart(labelled(data), inp.kang, _domain(inp)),
        "Probability that a wrong first answer followed by RESAMPLE is corrected (F→T), "
        "against the share of F→T chains in the SFT data. Simulator: one ID task starting "
        f"from the fitted base (p = {p0:.2f}, q1 = {q1:g}, q2 = {q2:g}), {cfg.steps} "
        f"{cfg.optimiser.name.upper()} steps (lr {cfg.optimiser.lr:g}) of token-weighted SFT "
        f"(L = {cfg.length:g}) on reflection data with the given F→T share ({per_chain} per "
        "chain) or on no-reflection data (plotted at 0%); in the two-stage model attempts are "
        "independent, so p(F→T) equals the task's p. The cited study (Kang et al. 2025, "
        f"DESIGN §6) found p(F→T) flat at {lo * 100:.0f}–{hi * 100:.0f}% whatever the share: "
        "reflection data teaches the agent to RESAMPLE, not to answer better.",
        [inp.kang_path.name])


# --------------------------------------------------------------------- 7. compare (§4, §5)


def compare(inp: ReportInputs) -> Section | None:
    """Measured (p, q1, q2) beside the simulator fitted to the real runs themselves (needs a
    Base run and a trained one), else beside the observed-table fit where the tasks match.
    None without real-model runs."""
    real = inp.real
    if real is None:
        return None
    regimes, title = set(real["regime"]), "7. Measured (p, q1, q2) vs the simulator"
    caption = ("Measured calibrations of the real-model runs (points, bootstrap CIs) beside "
               "the simulator's p, q1, q2 for the same regimes (dashed). ")
    if BASE in regimes and regimes & set(TRAINED_REGIMES):
        try:
            own = fit_observed(load_observed(inp.real_root), inp.cfg.fit_config)
        except ValueError as exc:
            return Section("compare", title,
                           charts.message_chart(f"fit to the real runs failed: {exc}"),
                           caption, [str(inp.real_root)])
        caption += (f"Simulator fitted to these runs' observed accuracies as in section 5: "
                    f"{params_text(own)}; RMSE {own.rmse * 100:.1f} pp.")
        chart = charts_accuracy.compare_chart(labelled(real), labelled(own.curves), _domain(inp))
    elif set(real["task"]) <= set(inp.fit.curves["task"]):
        caption += "Simulator: the fit of section 5 (same task names)."
        chart = charts_accuracy.compare_chart(
            labelled(real), labelled(inp.fit.curves[inp.fit.curves["regime"].isin(regimes)]),
            _domain(inp))
    else:
        caption += ("No Base run to fit the real runs' ladder, and its tasks differ from the "
                    "observed table's: run `python cli.py compare --observed outputs/real/...`.")
        chart = charts.message_chart("no simulator prediction for these tasks")
    return Section("compare", title, chart, caption, [str(inp.real_root)])


def _domain(inp: ReportInputs) -> list[str]:
    """The report's regime domain in display labels (one colour per regime): the inputs'
    regimes, then the sweep's other objectives (ablations), so that an ablation keeps one
    fallback colour in every chart."""
    labels = [display_label(r) for r in inp.domain]
    if inp.sweep is not None and "regime" in inp.sweep.results.columns:
        labels += [display_label(canonical_regime(r))
                   for r in dict.fromkeys(inp.sweep.results["regime"])]
    return list(dict.fromkeys(labels))
