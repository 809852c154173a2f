"""One sweep cell: train a population, measure it, return one row per agent (DESIGN.md §2-§4).

`run_cell` builds a `PopulationModel` (sim.population) of identical learners from the grid's
training settings and the cell's objective, beta, token model, optimiser, update budget
(second_moment, max_grad_norm, coupling: DESIGN §2) and answer length (L_C = L, L_W = ratio *
L, DESIGN §2), trains it on the in-distribution tasks and returns the results schema: the
cell's coordinates, the per-agent summary (p, q1, q2 per task, sampled gradients per term,
`max_jump`, the largest one-step move of p or q), `unstable` (the same in every row of the
cell: some agent's p or q moved by more than 0.5 in one step, chaos rather than a result),
two-stage accuracies on the whole ladder (core.twostage, DESIGN §4) and the exact expected
gradients at the trained policies (exp_* columns, DESIGN §3).

`check_finite` is the gate every writer of results passes (sweep cells, training histories):
NaN or infinities are refused, except in the ratio columns, which are inf or 0/0 by
definition where gradients vanish (DESIGN §3).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.twostage import two_stage_accuracy
from sim.attribution import attribution_ratio
from sim.columns import column, split_column
from sim.grid import Cell, GridConfig, regime_label
from sim.model import AgentSpec, coupling_label
from sim.objectives import ObjectiveConfig, combine, exact_logit_gradients
from sim.population import LearnerConfig, PopulationConfig, PopulationModel, homogeneous

# statistics whose columns may be inf or NaN (0/0): the attribution ratios (DESIGN §3)
RATIO_STATS = ("ratio", "exp_ratio")


def column_stat(name: str) -> str:
    """The statistic of a column: `g_s` for "g_s[kl]" (sim.columns), else the name itself."""
    parts = split_column(name)
    return name if parts is None else parts[0]


def cell_learner(grid: GridConfig, cell: Cell) -> LearnerConfig:
    """The learner of every agent of `cell` (DESIGN §2): spec at its length, objective,
    optimiser and update budget."""
    tr = grid.training
    return LearnerConfig(
        spec=tr.spec(grid.ladder, cell.length, cell.coupling),
        objective=tr.objective(cell.objective, cell.beta, cell.token_model),
        optimiser=tr.optimiser_config(cell.optimiser, cell.second_moment, cell.max_grad_norm),
    )


def population_config(grid: GridConfig) -> PopulationConfig:
    """A cell's population settings: the sweep seed for every cell (common random numbers),
    running means only."""
    tr = grid.training
    return PopulationConfig(n_queries=tr.n_queries, ref_update_every=tr.ref_update_every,
                            seed=grid.seed, record_every=None)


def run_cell(grid: GridConfig, cell: Cell) -> pd.DataFrame:
    """Train one cell's population alone and return one row per agent (the results schema);
    sim.cell_batch trains many cells in one population with the same rows."""
    learner = cell_learner(grid, cell)
    model = PopulationModel(homogeneous(learner, grid.training.n_agents),
                            population_config(grid), collect_model_vars=False)
    model.run(grid.training.steps)
    return cell_frame(grid, cell, learner, model.summary(), model.phi, model.ref_phi,
                      model.unstable)


# the columns that name a cell: the only ones in which cells trained as one differ
# (sim.identical_cells, sim.cell_batch.relabel)
NAMING_COLUMNS = ("cell_id", "beta", "token_model", "length", "len_correct", "len_wrong")


def naming_columns(cell: Cell, spec: AgentSpec, n: int) -> dict[str, Any]:
    """The NAMING_COLUMNS of n rows of `cell`."""
    values = ([cell.cell_id] * n, np.full(n, cell.beta), [cell.token_model] * n,
              np.full(n, cell.length, dtype=np.int64), np.full(n, spec.len_correct),
              np.full(n, spec.len_wrong))
    return dict(zip(NAMING_COLUMNS, values, strict=True))


def cell_frame(grid: GridConfig, cell: Cell, learner: LearnerConfig, summary: pd.DataFrame,
               phis: np.ndarray, ref_phis: np.ndarray, unstable: bool) -> pd.DataFrame:
    """The results rows of a trained cell from its agents' summary (PopulationModel.summary,
    the cell's terms only, index 0..n-1), final and reference parameters and `unstable`."""
    tr = grid.training
    spec = learner.spec
    summary = summary.copy()
    expected = expected_gradient_columns(spec, learner.objective, phis, ref_phis)
    n = len(summary)
    names = naming_columns(cell, spec, n)
    head = pd.DataFrame(
        {
            "cell_id": names["cell_id"],
            "objective": [cell.objective] * n,
            "regime": [regime_label(cell.objective)] * n,
            "beta": names["beta"],
            "token_model": names["token_model"],
            "optimiser": [cell.optimiser] * n,
            "second_moment": [cell.second_moment] * n,
            "max_grad_norm": np.full(n, float(cell.max_grad_norm)),
            "coupling": [coupling_label(cell.coupling)] * n,
            "length": names["length"],
            "len_correct": names["len_correct"],
            "len_wrong": names["len_wrong"],
            "agent": summary.pop("agent").to_numpy(),
            # int64 as always; seeds past int64 (up to 2**64 - 1) need uint64
            "seed": np.full(n, grid.seed, dtype=np.int64 if grid.seed < 2**63 else np.uint64),
            "steps": np.full(n, tr.steps, dtype=np.int64),
            "lr": np.full(n, learner.optimiser.lr),
            "unstable": np.full(n, unstable),
        }
    )
    ladder = spec.ladder
    acc = {
        column("acc", task): two_stage_accuracy(
            summary[column("p", task)], summary[column("q1", task)],
            summary[column("q2", task)], spec.max_attempts,
        )
        for task in ladder.names
    }
    acc_df = pd.DataFrame(acc)
    ids = [column("acc", t) for t, i in zip(ladder.names, ladder.in_distribution, strict=True)
           if i]
    oods = [column("acc", t) for t, i in zip(ladder.names, ladder.in_distribution, strict=True)
            if not i]
    acc_df["id_accuracy"] = acc_df[ids].mean(axis=1)
    acc_df["ood_accuracy"] = acc_df[oods].mean(axis=1) if oods else np.nan
    return pd.concat([head, _order(summary, acc_df), expected], axis=1)


def expected_gradient_columns(spec: AgentSpec, obj: ObjectiveConfig, phis: np.ndarray,
                              ref_phis: np.ndarray) -> pd.DataFrame:
    """Exact expected ID-mean logit gradients at each agent's final parameters (DESIGN §3):
    exp_g_x[term], exp_ratio[term] per term and the total (exp_ratio). Unlike the sampled
    magnitudes (ratio[term]), these carry no Monte-Carlo noise."""
    # sim.dynamics.expected_gradients' ID-mean on the logits, with the same operations, its
    # Jacobians built once for all agents rather than three times per agent
    jac, offsets, ids = spec.jacobians(), spec.offsets(), spec.ladder.id_indices
    rows = []
    for phi, ref in zip(phis, ref_phis, strict=True):
        logits = offsets + np.einsum("tip,...p->...ti", jac, phi)  # AgentSpec.task_logits
        ref_logits = offsets + np.einsum("tip,...p->...ti", jac, ref)
        on_logits = {k: np.zeros(3) for k in obj.kinds}
        for t in ids:
            for k, g in exact_logit_gradients(logits[t], ref_logits[t], spec, obj).items():
                on_logits[k] += g / len(ids)
        on_logits["total"] = combine(on_logits, obj)
        row = {}
        for term, g in on_logits.items():
            for x, comp in enumerate(("s", "1", "2")):
                row[column(f"exp_g_{comp}", term)] = float(g[x])
            row[column("exp_ratio", term)] = attribution_ratio(g)
        row["exp_ratio"] = row[column("exp_ratio", "total")]
        rows.append(row)
    return pd.DataFrame(rows)


def _order(summary: pd.DataFrame, acc: pd.DataFrame) -> pd.DataFrame:
    """The summary's p, q1, q2 columns, then the accuracies, then the rest (gradients)."""
    probs = [c for c in summary.columns if column_stat(c) in ("p", "q1", "q2")]
    rest = [c for c in summary.columns if c not in probs]
    return pd.concat([summary[probs], acc, summary[rest]], axis=1)


def check_finite(df: pd.DataFrame, what: str) -> None:
    """Refuse results with NaN or infinities outside the ratio columns (ratio*, exp_ratio*:
    inf or 0/0 by definition where gradients vanish, DESIGN §3)."""
    checked = [c for c, dtype in df.dtypes.items()
               if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
               and column_stat(c) not in RATIO_STATS]
    finite = np.isfinite(df[checked].to_numpy(dtype=float)).all(axis=0)  # one array, not ~200
    bad = [c for c, ok in zip(checked, finite, strict=True) if not ok]
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise ValueError(f"{what} gave non-finite values in {shown} (training diverged: "
                         "lower the learning rate or the lengths); it was not written")
