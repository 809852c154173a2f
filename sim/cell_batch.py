"""Many sweep cells trained as one population, split back into their own rows (DESIGN.md §2).

Every cell of one grid shares what a population shares (sim.population: the ladder and its
ID set, K and the final rule, G, queries per step, advantage scaling, KL estimator, placement
and clamp, the parameter layout -- all [training] settings of the grid); cells differ per
agent only (answer length, objective and its weights, beta, token model, optimiser, update
budget), which a population holds per agent. So a batch of cells is one heterogeneous
`PopulationModel`: agent j of the batch's i-th cell is row i * n + j, and it gets the stream of
agent j of a cell alone (sim.rng.agent_state(seed, j): common random numbers), so each
agent's trajectory is the one it has in a population of its own cell alone -- the kernel
steps each agent from its own row and stream only. The per-step Python and kernel-call
overhead is then paid once per batch instead of once per cell, and the population's thread
loop over agents (parallel where Numba has more than one thread) spreads the batch over the
cores without worker processes. `run_batch` returns, per member of each group
(sim.identical_cells), its own rows: the computed cell's rows, relabelled for the others.
tests/test_sweep_identical.py checks both against `sim.cell.run_cell` frame by frame.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from sim.cell import cell_frame, cell_learner, naming_columns, population_config
from sim.columns import column
from sim.grid import Cell, GridConfig
from sim.identical_cells import CellGroup
from sim.population import UNSTABLE_JUMP, PopulationModel
from sim.terms import KINDS

# The most agents trained as one population: large enough that per-step overhead vanishes,
# small enough that an interrupted sweep keeps most of its work (cells are written per batch).
MAX_BATCH_AGENTS = 256
# the per-term columns of PopulationModel.summary (one set per term present in the batch)
TERM_STATS = ("g_s", "g_1", "g_2", "ratio", "abs_g_s", "abs_g_1", "abs_g_2")


def plan_batches(groups: list[CellGroup], n_agents: int, max_agents: int = MAX_BATCH_AGENTS,
                 min_batches: int = 1) -> list[tuple[CellGroup, ...]]:
    """Consecutive groups in batches of at most `max_agents` agents (at least one group
    each) and at least `min_batches` batches where there are as many groups (one per worker
    process), the batches as even in size as that allows."""
    per_batch = max(1, max_agents // n_agents)
    n_batches = min(len(groups), max(-(-len(groups) // per_batch), min_batches))
    batches, start = [], 0
    for i in range(n_batches):  # sizes differ by at most one group
        size = len(groups) // n_batches + (i < len(groups) % n_batches)
        batches.append(tuple(groups[start:start + size]))
        start += size
    return batches


def _cell_summary(summary: pd.DataFrame, rows: slice, kinds: tuple[str, ...]) -> pd.DataFrame:
    """One cell's rows of a batch summary as a population of that cell alone reports them:
    agents numbered from 0, and only the columns of its own terms (plus the total)."""
    absent = {column(stat, k) for k in KINDS if k not in kinds for stat in TERM_STATS}
    out = summary.iloc[rows][[c for c in summary.columns if c not in absent]]
    out = out.reset_index(drop=True)
    out["agent"] = np.arange(len(out), dtype=np.int64)
    return out


def relabel(frame: pd.DataFrame, grid: GridConfig, member: Cell) -> pd.DataFrame:
    """The rows of a cell whose results are `frame`'s (sim.identical_cells.shared_key), with
    the columns that name the cell set to `member`'s."""
    spec = grid.training.spec(grid.ladder, member.length, member.coupling)
    out = frame.copy()
    for name, values in naming_columns(member, spec, len(out)).items():
        out[name] = values
    return out


def run_batch(grid: GridConfig, groups: tuple[CellGroup, ...]) -> list[tuple[str, pd.DataFrame]]:
    """Train the computed cell of every group as one population (DESIGN §2); returns
    (cell_id, rows) for every member of every group, in order."""
    tr = grid.training
    n = tr.n_agents
    learners = [cell_learner(grid, g.computed) for g in groups]
    # agent j of every cell draws from the stream it has in a population of its cell alone
    config = replace(population_config(grid), stream_ids=tuple(range(n)) * len(groups))
    model = PopulationModel([lc for lc in learners for _ in range(n)], config,
                            collect_model_vars=False)
    model.run(tr.steps)
    summary = model.summary()
    out: list[tuple[str, pd.DataFrame]] = []
    for i, (group, learner) in enumerate(zip(groups, learners, strict=True)):
        rows = slice(i * n, (i + 1) * n)
        frame = cell_frame(grid, group.computed, learner,
                           _cell_summary(summary, rows, learner.objective.kinds),
                           model.phi[rows], model.ref_phi[rows],
                           bool((model.max_jump[rows] > UNSTABLE_JUMP).any()))
        for member in group.members:
            out.append((member.cell_id,
                        frame if member == group.computed else relabel(frame, grid, member)))
    return out
