"""The update budget's phase diagram (DESIGN §2, "Update budget"): its grid file loads and
validates (SGD within its stability bound for every coupling), and the summariser of
scripts/phase_diagram.py computes the medians, unstable counts and orderings it reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from sim.grid_files import build_grid, load_grid_file
from sim.stability import sgd_lr_bound

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "examples" / "grid_phase.toml"


def _script():
    spec = importlib.util.spec_from_file_location("phase_diagram",
                                                  ROOT / "scripts" / "phase_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phase_grid_loads_validates_and_spans_the_budget_axes() -> None:
    name, grid = build_grid(load_grid_file(GRID), source=f"grid file {GRID}")
    assert name == "phase"
    assert set(grid.objectives) == {"surrogate+kl", "sft-reflection", "sft-no-reflection"}
    assert set(grid.optimisers) == {"sgd", "adam"}
    assert set(grid.second_moments) == {"shared", "per-parameter"}
    assert 0.0 in grid.max_grad_norms and 1.0 in grid.max_grad_norms
    assert None in grid.couplings and len(grid.couplings) >= 2
    assert grid.training.kl_placement == "in-loss" and grid.training.kl_estimator == "k3"
    assert grid.betas == (0.001,)
    # SGD once per clip/coupling/L (no second moment), Adam once per second moment
    per_objective = (1 + len(grid.second_moments)) * len(grid.max_grad_norms) * \
        len(grid.couplings) * len(grid.lengths)
    assert len(grid.cells()) == len(grid.objectives) * per_objective


def test_phase_grid_sgd_lr_is_below_every_bound_at_the_longest_length() -> None:
    _, grid = build_grid(load_grid_file(GRID), source="phase grid")
    tr = grid.training
    bounds = [sgd_lr_bound(tr.spec(grid.ladder, max(grid.lengths), c),
                           tr.objective(o, grid.betas[0], "per-token"))
              for o in grid.objectives for c in grid.couplings]
    assert tr.lr < min(bounds)


def test_phase_grid_is_refused_when_sgd_lr_exceeds_the_bound() -> None:
    data = load_grid_file(GRID)
    data["training"] = {**data["training"], "lr": 0.05}
    with pytest.raises(ValueError, match="stability bound"):
        build_grid(data, source="phase grid")


def _rows(objective: str, q2: list[float], ood: list[float], unstable: list[bool],
          clip: float = 0.0, cell: str = "") -> pd.DataFrame:
    n = len(q2)
    return pd.DataFrame({
        "cell_id": [f"{objective}{cell}"] * n, "objective": [objective] * n,
        "optimiser": ["adam"] * n, "second_moment": ["shared"] * n,
        "max_grad_norm": [clip] * n, "coupling": ["none"] * n, "length": [1000] * n,
        "q2[T1]": q2, "ood_accuracy": ood, "unstable": unstable})


def test_phase_table_medians_unstable_count_and_orderings() -> None:
    module = _script()
    frame = pd.concat([
        # clip 0: GRPO beats SFT-reflection in both, but not SFT-no-reflection's OOD
        _rows("surrogate+kl", [0.9, 0.1, 0.8], [0.10, 0.20, 0.0], [False] * 3),
        _rows("sft-reflection", [0.2, 0.3, 0.4], [0.05, 0.05, 0.05], [False, True, False]),
        _rows("sft-no-reflection", [0.15] * 3, [0.30, 0.30, 0.0], [False] * 3),
        # clip 1: GRPO ties SFT-reflection's OOD (>= holds) and beats both; q2 loses
        _rows("surrogate+kl", [0.1] * 3, [0.05] * 3, [True] * 3, 1.0, "c"),
        _rows("sft-reflection", [0.5] * 3, [0.05] * 3, [False] * 3, 1.0, "c"),
        _rows("sft-no-reflection", [0.15] * 3, [0.04] * 3, [False] * 3, 1.0, "c"),
    ], ignore_index=True)
    table = module.phase_table(frame).set_index("max_grad_norm")
    row = table.loc[0.0]
    assert row["q2_grpo"] == pytest.approx(0.8) and row["ood_grpo"] == pytest.approx(0.10)
    assert row["q2_sft_refl"] == pytest.approx(0.3) and row["ood_sft_norefl"] == 0.30
    assert row["unstable_cells"] == 1
    assert row["grpo_ood_ge_sft_refl"] and not row["grpo_ood_ge_both_sft"]
    assert row["grpo_q2_ge_sft_refl"]
    row = table.loc[1.0]
    assert row["unstable_cells"] == 1
    assert row["grpo_ood_ge_sft_refl"] and row["grpo_ood_ge_both_sft"]
    assert not row["grpo_q2_ge_sft_refl"]
    assert "oodG>=both" in module.format_table(table.reset_index())


def test_phase_table_needs_all_three_regimes() -> None:
    module = _script()
    frame = _rows("surrogate+kl", [0.5], [0.1], [False])
    with pytest.raises(ValueError, match="sft-no-reflection"):
        module.phase_table(frame)


def test_sweep_summary_keys_on_the_budget_axes_that_vary_and_flags_unstable_cells() -> None:
    spec = importlib.util.spec_from_file_location("summarise_sweep",
                                                  ROOT / "scripts" / "summarise_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frame = pd.concat([_rows("sft-reflection", [0.2, 0.4], [0.1, 0.1], [False, True]),
                       _rows("sft-reflection", [0.6, 0.8], [0.1, 0.1], [False, False], 1.0,
                             "c")], ignore_index=True)
    frame["token_model"], frame["beta"] = "per-token", 0.001
    frame["max_jump"] = [0.1, 0.6, 0.2, 0.3]
    table = module.summarise(frame).set_index("max_grad_norm")
    assert "second_moment" not in table.columns  # one value: not a key
    assert table.loc[0.0, "q2_T1"] == pytest.approx(0.3) and table.loc[1.0, "q2_T1"] == 0.7
    assert table.loc[0.0, "unstable"] == 1 and table.loc[1.0, "unstable"] == 0
    assert table.loc[0.0, "max_jump"] == 0.6
