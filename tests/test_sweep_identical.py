"""Cells computed once for all the cells they stand for (sim.identical_cells) and cells trained
together as one population (sim.cell_batch): both give exactly the rows of each cell trained
alone (sim.cell.run_cell), run here for real and compared frame by frame."""

from __future__ import annotations

import itertools

import numba
import pandas as pd
import pytest

from sim.cell import NAMING_COLUMNS, run_cell
from sim.cell_batch import plan_batches, run_batch
from sim.grid import GridConfig, TrainingConfig
from sim.identical_cells import group_cells, shared_key
from sim.sweep import run_sweep

SMALL = TrainingConfig(steps=20, n_agents=3)


def _results(df: pd.DataFrame) -> pd.DataFrame:
    """A cell's rows less the columns that name it."""
    return df.drop(columns=list(NAMING_COLUMNS)).reset_index(drop=True)


def test_cells_with_one_key_are_identical_and_cells_with_two_differ() -> None:
    g = GridConfig(lengths=(10, 300), objectives=("surrogate", "nsr", "surrogate+kl",
                                                  "sft-reflection"),
                   betas=(0.001, 0.01), token_models=("per-token", "sequence", "grpo"),
                   training=SMALL)
    alone = {c: _results(run_cell(g, c)) for c in g.cells()}
    groups = group_cells(g, g.cells())
    assert 1 < len(groups) < len(alone)  # the rule merges some cells, not all
    for group in groups:
        for member in group.members[1:]:
            pd.testing.assert_frame_equal(alone[member], alone[group.computed],
                                          check_exact=True)
    # the rule never merges cells that can differ: every other pair does differ
    for a, b in itertools.combinations([grp.computed for grp in groups], 2):
        if a.objective == b.objective:
            assert not alone[a].equals(alone[b]), (a, b)


def test_default_sweep_trains_surrogate_and_nsr_once() -> None:
    """The default grid's surrogate and NSR (answer-level scores, per-token model with no
    normaliser: DESIGN §2) do not depend on L; every other default objective does."""
    g = GridConfig()
    groups = group_cells(g, g.cells())
    merged = {grp.computed.objective: len(grp.members) for grp in groups
              if len(grp.members) > 1}
    assert merged == {"surrogate": len(g.lengths), "nsr": len(g.lengths)}
    assert len(groups) == len(g.cells()) - 2 * (len(g.lengths) - 1)


def test_length_matters_through_normalisers_and_token_weights() -> None:
    g = GridConfig(lengths=(10, 20), objectives=("surrogate", "kl"),
                   token_models=("per-token", "sequence", "grpo", "dapo", "dr_grpo"))
    by_key: dict = {}
    for c in g.cells():
        by_key.setdefault(shared_key(g, c), set()).add((c.objective, c.token_model))
    merged = {m for members in by_key.values() if len(members) > 1 for m in members}
    # per-token and sequence fold together for the surrogate (no token-weighted term)
    assert merged == {("surrogate", "per-token"), ("surrogate", "sequence")}
    lengths_merged = {(c.objective, c.token_model) for c in g.cells()
                      if shared_key(g, c).length != c.length}
    assert lengths_merged == {("surrogate", "per-token"), ("surrogate", "sequence"),
                              ("kl", "sequence")}


def test_batches_equal_cells_trained_alone() -> None:
    """A heterogeneous batch (objectives, token models, optimisers, clipping) of more than 64
    agents, on two Numba threads where there are two, gives each cell's rows exactly."""
    g = GridConfig(lengths=(10, 40), objectives=("surrogate+kl", "sft-reflection", "psr"),
                   token_models=("per-token", "dapo"), optimisers=("adam", "sgd"),
                   max_grad_norms=(0.0, 1.0), training=TrainingConfig(steps=15, n_agents=3))
    groups = group_cells(g, g.cells())
    batches = plan_batches(groups, 3, max_agents=3 * len(groups))
    assert len(batches) == 1 and 3 * len(groups) >= 64  # the threaded population kernel
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        got = dict(run_batch(g, batches[0]))
    finally:
        numba.set_num_threads(before)
    assert list(got) == [c.cell_id for grp in groups for c in grp.members]
    for cell in g.cells():
        pd.testing.assert_frame_equal(got[cell.cell_id], run_cell(g, cell), check_exact=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_results_equal_cells_alone_and_resume_a_shared_cell(tmp_path, workers) -> None:
    g = GridConfig(lengths=(10, 30, 100), objectives=("surrogate", "surrogate+kl"),
                   training=SMALL)
    res = run_sweep(g, "s", tmp_path, workers=workers, progress=False)
    assert len(res.computed) == 6  # a file per cell, 4 trainings: the surrogate's once
    alone = pd.concat([run_cell(g, c) for c in g.cells()], ignore_index=True)
    pd.testing.assert_frame_equal(res.results.drop(columns="git_commit"), alone,
                                  check_exact=True)
    # a missing member of a group is computed again (as the group's cell) and written alone
    victim = tmp_path / "s" / "cells" / f"{g.cells()[1].cell_id}.parquet"  # surrogate, L30
    victim.unlink()
    again = run_sweep(g, "s", tmp_path, workers=workers, progress=False)
    assert again.computed == (victim.stem,) and len(again.skipped) == 5
    pd.testing.assert_frame_equal(again.results, res.results, check_exact=True)
