"""Cells of a sweep whose results cannot differ, computed once (DESIGN.md §2).

A cell's answer length L reaches its training through one door only: the token weights
w(L_C), w(L_W) of its sampling actions (DESIGN §2, "Length weighting") and the loss
normaliser built from them (DESIGN §2, "Loss normalisation in real trainers"). The task
ladder, the Jacobians and offsets, K, the group size, the optimiser and the RNG streams do not
read L (sim.model.AgentSpec: only len_correct / len_wrong, which only
sim.objectives.token_weights reads). So where neither door is open, two cells that differ
only in L train the same agents on the same draws and give the same rows, bit for bit, apart
from the columns that name the cell (cell_id, length, len_correct, len_wrong). The accuracies
and q values depend on L only through that training, and so do the exp_* columns (exact
gradients at the trained policies from the same term table: sim.exact_dp multiplies the
score's Q coefficient, exactly zero, by the finite KL penalties, which adds exact zeros).

Likewise beta is the weight of the `kl` term and of nothing else (sim.objectives
ObjectiveConfig.parse), and the token models per-token (w = L) and sequence (w = 1) differ in
w alone (both have loss normaliser 1), so they cannot matter to an objective without a KL
term, resp. without a token-weighted term.

`shared_key(grid, cell)` is that rule as a pure function: the cell whose computation stands
for `cell` -- the same cell with every coordinate that cannot matter set to a fixed value.
`group_cells` groups the cells still to do by it; the sweep computes one cell per group and
writes a file for every member (sim.cell_batch.relabel). tests/test_sweep_identical.py runs
the members for real, each alone, and compares their frames exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sim.grid import Cell, GridConfig
from sim.objectives import UNNORMALISED_TOKEN_MODELS, ObjectiveConfig
from sim.terms import BY_KIND

# the values a coordinate that cannot matter is set to in the key (never a real cell's:
# keys are compared, never run)
_ANY_LENGTH = 0
_ANY_BETA = -1.0
_ANY_TOKEN_MODEL = "*"


def length_matters(objective: ObjectiveConfig) -> bool:
    """Whether answer length L can change a cell's results (DESIGN §2, "Length weighting" and
    "Loss normalisation in real trainers"): L enters only through w(L) in token-weighted
    terms (sim.terms.TERMS, `token_weighted`) and through a loss normaliser |o| or
    K (L_max + 1). It cannot where the normaliser is 1 (per-token, sequence) and either
    w = 1 (sequence) or no term of the objective is token-weighted (surrogate, NSR, PSR)."""
    if objective.token_model not in UNNORMALISED_TOKEN_MODELS:
        return True
    if objective.token_model == "sequence":
        return False
    return any(BY_KIND[kind].token_weighted for kind in objective.kinds)


def token_weights_matter(objective: ObjectiveConfig) -> bool:
    """Whether w (per-token's L or sequence's 1) can change a cell's results: only through a
    token-weighted term (DESIGN §2), or a normaliser, which both unnormalised models lack."""
    return objective.token_model not in UNNORMALISED_TOKEN_MODELS or any(
        BY_KIND[kind].token_weighted for kind in objective.kinds)


def shared_key(grid: GridConfig, cell: Cell) -> Cell:
    """The cell `cell`'s results are computed as (DESIGN §2): `cell` with L, beta and the
    token model replaced by placeholders where they cannot matter (`length_matters`, beta
    outside a KL term, per-token vs sequence without a token-weighted term). Cells with equal
    keys give equal results except for the columns naming the cell."""
    obj = grid.training.objective(cell.objective, cell.beta, cell.token_model)
    key = cell
    if not length_matters(obj):
        key = replace(key, length=_ANY_LENGTH)
    if "kl" not in obj.kinds:
        key = replace(key, beta=_ANY_BETA)
    if not token_weights_matter(obj) and cell.token_model in UNNORMALISED_TOKEN_MODELS:
        key = replace(key, token_model=_ANY_TOKEN_MODEL)
    return key


@dataclass(frozen=True)
class CellGroup:
    """Cells with one key: `computed` is trained, every member gets its own cell file."""

    computed: Cell
    members: tuple[Cell, ...]


def group_cells(grid: GridConfig, cells: list[Cell]) -> list[CellGroup]:
    """`cells` grouped by `shared_key`, in the order of their first member; each group is
    computed as its first member."""
    groups: dict[Cell, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(shared_key(grid, cell), []).append(cell)
    return [CellGroup(members[0], tuple(members)) for members in groups.values()]
