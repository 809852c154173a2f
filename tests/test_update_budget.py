"""The update budget (DESIGN.md §2, "Update budget"): global gradient-norm clipping, Adam with
a shared second moment, coupling of the trained logits, the SGD stability bound and the
`unstable` flag -- on the exact-gradient path (sim.optim, sim.dynamics), in the population
kernel, and through grids, grid files and the command line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from sim import population_kernels as pk
from sim.cell import run_cell
from sim.dynamics import train_expected
from sim.grid import GridConfig, LadderConfig, TrainingConfig
from sim.grid_files import build_grid, load_grid_file
from sim.model import AgentSpec, TaskLadder, parse_coupling
from sim.objectives import ObjectiveConfig, SFTData
from sim.optim import OptimiserConfig, ascent_step, clip_gradient
from sim.population import LearnerConfig, PopulationConfig, PopulationModel, homogeneous
from sim.stability import sgd_lr_bound
from tests.conftest import assert_clean_cli_error

REPO = Path(__file__).resolve().parent.parent
COUPLING = ((1.0, 0.5, 0.0), (0.3, 1.0, 0.2), (0.0, 0.4, 1.0))
OPTIMISERS = {
    "sgd": OptimiserConfig("sgd", 0.003),
    "adam-per-parameter": OptimiserConfig("adam", 0.05, second_moment="per-parameter"),
    "adam-shared": OptimiserConfig("adam", 0.05, second_moment="shared"),
}


# ------------------------------------------------------------------ the optimiser (sim.optim)

def test_clipping_rescales_to_exactly_c_and_leaves_smaller_gradients_alone() -> None:
    g = np.array([3.0, -4.0, 12.0])  # norm 13
    clipped = clip_gradient(g, 1.0)
    assert np.linalg.norm(clipped) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(clipped, g / 13.0, rtol=1e-15)
    np.testing.assert_array_equal(clip_gradient(g, 13.0), g)  # at c: untouched
    np.testing.assert_array_equal(clip_gradient(g, 20.0), g)
    np.testing.assert_array_equal(clip_gradient(g, 0.0), g)  # 0: off
    batch = clip_gradient(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0)  # per agent (last axis)
    np.testing.assert_allclose(batch, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-15)
    # SGD's step is lr times the clipped gradient
    step = ascent_step(OptimiserConfig("sgd", 0.1, max_grad_norm=2.0), g, np.zeros((2, 3)), 1)
    np.testing.assert_allclose(step, 0.1 * 2.0 * g / 13.0, rtol=1e-15)


def test_shared_second_moment_is_per_parameter_adam_for_one_parameter() -> None:
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(20, 1)) * np.logspace(0, 3, 20)[:, None]
    shared, per = OptimiserConfig("adam", 0.02, second_moment="shared"), OptimiserConfig(
        "adam", 0.02, second_moment="per-parameter")
    s1, s2 = np.zeros((2, 1)), np.zeros((2, 1))
    for step, g in enumerate(grads, 1):
        np.testing.assert_array_equal(ascent_step(shared, g, s1, step),
                                      ascent_step(per, g, s2, step))


def _numpy_shared_adam(grads: np.ndarray, lr: float, b1: float = 0.9, b2: float = 0.999,
                       eps: float = 1e-8, clip: float = 0.0) -> np.ndarray:
    """A reference written from DESIGN §2 alone: clip, m per parameter, one scalar v."""
    m, v, steps = np.zeros(grads.shape[1]), 0.0, []
    for t, g in enumerate(grads, 1):
        norm = np.sqrt(sum(x * x for x in g))
        if clip > 0 and norm > clip:
            g = g * (clip / norm)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * sum(x * x for x in g) / len(g)
        steps.append(lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
    return np.array(steps)


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_shared_second_moment_matches_a_numpy_reference(clip: float) -> None:
    grads = np.random.default_rng(1).normal(size=(30, 5)) * [100.0, 1.0, 1.0, 0.1, 3.0]
    cfg = OptimiserConfig("adam", 0.02, second_moment="shared", max_grad_norm=clip)
    state = np.zeros((2, 5))
    ours = np.array([ascent_step(cfg, g, state, t) for t, g in enumerate(grads, 1)])
    np.testing.assert_allclose(ours, _numpy_shared_adam(grads, 0.02, clip=clip), rtol=1e-12)
    assert np.all(state[1] == state[1][0])  # one second moment for all five parameters


@pytest.mark.parametrize("clip", [0.0, 0.7])
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_population_kernel_optimiser_matches_sim_optim(name: str, clip: float) -> None:
    cfg = replace(OPTIMISERS[name], max_grad_norm=clip)
    grads = np.random.default_rng(2).normal(size=(8, 4)) * [5.0, 0.1, 1.0, 0.01]
    phi_k, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    phi_ref, state = np.zeros(4), np.zeros((2, 4))
    for step, g in enumerate(grads, 1):
        pk.optimiser_step(phi_k, m, v, g.copy(), pk.OPT_SGD if cfg.name == "sgd" else
                          pk.OPT_ADAM, cfg.lr, cfg.beta1, cfg.beta2, cfg.eps,
                          pk.V_SHARED if cfg.second_moment == "shared" else
                          pk.V_PER_PARAMETER, cfg.max_grad_norm, step)
        phi_ref += ascent_step(cfg, g, state, step)
        np.testing.assert_allclose(phi_k, phi_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("clip", [0.0, 1.0])
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_population_follows_the_exact_dynamics_on_sft(name: str, clip: float) -> None:
    """SFT's population gradient is the exact expectation over its data (no sampling noise),
    so a population and sim.dynamics.train_expected take the same steps: clipping, shared
    second moment and coupling included."""
    lad = LadderConfig()
    spec = AgentSpec(ladder=lad.ladder(), transfer=lad.transfer(), len_correct=50.0,
                     len_wrong=50.0, coupling=COUPLING)
    obj = ObjectiveConfig.parse("sft", sft_data=SFTData("reflection", 0.5))
    opt = replace(OPTIMISERS[name], max_grad_norm=clip)
    model = PopulationModel(homogeneous(LearnerConfig(spec, obj, opt), 2),
                            PopulationConfig(n_queries=4, record_every=None),
                            collect_model_vars=False)
    model.run(6)
    phi, _ = train_expected(spec, obj, spec.initial_params(), 6, opt, record_every=6)
    for row in model.phi:
        np.testing.assert_allclose(row, phi, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ coupling (sim.model)

def test_coupling_acts_on_the_trained_logits_only() -> None:
    lad = LadderConfig()
    plain = AgentSpec(ladder=lad.ladder(), transfer=lad.transfer())
    coupled = replace(plain, coupling=COUPLING)
    np.testing.assert_array_equal(coupled.offsets(), plain.offsets())
    phi0 = plain.initial_params()
    np.testing.assert_array_equal(coupled.task_logits(phi0), plain.task_logits(phi0))
    np.testing.assert_array_equal(plain.task_logits(phi0),
                                  np.asarray(plain.ladder.base_offsets))
    phi = np.random.default_rng(3).normal(size=plain.n_params)
    moved = coupled.task_logits(phi) - coupled.offsets()
    np.testing.assert_allclose(moved, np.einsum("ij,tj->ti", np.array(COUPLING),
                                                plain.task_logits(phi) - plain.offsets()))
    # populations start from the same policy, coupled or not
    models = [PopulationModel(homogeneous(LearnerConfig(s, optimiser=OptimiserConfig(
        "adam", 0.02)), 2)) for s in (plain, coupled)]
    np.testing.assert_array_equal(models[0].probabilities(), models[1].probabilities())


def test_coupling_spellings() -> None:
    assert parse_coupling("none") is None and parse_coupling("identity") is None
    assert parse_coupling("1 0 0; 0 1 0; 0 0 1") is None  # the identity: no coupling
    assert parse_coupling("1 0.5 0; 0.3 1 0.2; 0 0.4 1") == COUPLING
    assert parse_coupling([list(r) for r in COUPLING]) == COUPLING
    for bad in ("1 2 3", "a b c; 1 2 3; 1 2 3", 5, [[1, 2, True]] * 3):
        with pytest.raises(ValueError, match="coupling"):
            parse_coupling(bad)


# ------------------------------------------------------------------ the SGD bound

def test_sgd_bound_is_the_divergence_threshold_of_sft_on_reflection_chains() -> None:
    """SFT on F->T chains only: w [log(1 - p) + log p] has its maximum at p = 1/2 with
    curvature w n / 4 (n = 2 sampling actions), so SGD converges below 8 / (w n) and
    oscillates above it (sim.stability)."""
    spec = AgentSpec(ladder=TaskLadder.single(), len_correct=100.0, len_wrong=100.0)
    obj = ObjectiveConfig.parse("sft", sft_data=SFTData("reflection", 1.0))
    bound = sgd_lr_bound(spec, obj)
    assert bound == pytest.approx(8 / (100 * 2))
    phi0 = spec.initial_params((0.3, 0.0, 0.0))
    for factor, converges in ((0.9, True), (1.1, False)):
        phi, hist = train_expected(spec, obj, phi0, 400, OptimiserConfig("sgd", factor * bound))
        assert (abs(phi[0]) < 1e-6) == converges, (factor, phi[0])
    with pytest.raises(ValueError, match="stability bound"):
        LearnerConfig(spec, obj, OptimiserConfig("sgd", 1.1 * bound))
    LearnerConfig(spec, obj, OptimiserConfig("adam", 1.0))  # Adam needs no bound


def test_sgd_above_its_bound_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"SGD lr 0.05 is above the stability bound .* "
                                         r"sft-reflection.* L = 1000"):
        GridConfig(lengths=(10, 1000), objectives=("sft-reflection",), optimisers=("sgd",))
    GridConfig(lengths=(10, 100), objectives=("sft-reflection",), optimisers=("sgd",),
               training=TrainingConfig(lr=0.03))
    res = CliRunner().invoke(cli.main, ["train", "--objective", "sft", "--length", "1000",
                                        "--lr", "0.1", "--out", "unused", "--steps", "1"])
    assert_clean_cli_error(res)
    assert "stability bound" in res.output and len(res.output.strip().splitlines()) == 1


# ------------------------------------------------------------------ grids and the CLI

def test_grid_axes_and_training_scalars(tmp_path: Path) -> None:
    grid = GridConfig(lengths=(10,), objectives=("surrogate",), optimisers=("sgd", "adam"),
                      second_moments=("shared", "per-parameter"), max_grad_norms=(0, 1.0),
                      couplings=("none", "1 0.5 0; 0 1 0; 0 0 1"))
    cells = grid.cells()
    # SGD once (its second moment is "none"), Adam twice, times 2 clips x 2 couplings
    assert len(cells) == (1 + 2) * 2 * 2 and len({c.cell_id for c in cells}) == len(cells)
    assert {c.second_moment for c in cells if c.optimiser == "sgd"} == {"none"}
    default = GridConfig()
    assert (default.optimisers, default.second_moments, default.max_grad_norms,
            default.couplings) == (("adam",), ("shared",), (0.0,), (None,))
    f = tmp_path / "g.toml"
    f.write_text('lengths = [10]\nobjectives = ["surrogate"]\n[training]\noptimiser = "sgd"\n'
                 'second_moment = "per-parameter"\nmax_grad_norm = 1\n'
                 'coupling = "1 0.5 0; 0 1 0; 0 0 1"\n')
    _, g = build_grid(load_grid_file(f))
    assert (g.optimisers, g.second_moments, g.max_grad_norms) == (("sgd",), (
        "per-parameter",), (1.0,))
    assert g.couplings == (((1.0, 0.5, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),)
    _, g = build_grid(load_grid_file(f), optimisers=("adam",))  # the command line wins
    assert g.optimisers == ("adam",)
    f.write_text('lengths = [10]\ncouplings = ["none", [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]]\n'
                 'max_grad_norms = [0.0, 1.0]\nsecond_moments = "per-parameter"\n')
    _, g = build_grid(load_grid_file(f))
    assert len(g.couplings) == 2 and g.second_moments == ("per-parameter",)


@pytest.mark.parametrize("text, msg", [
    ('second_moments = ["bogus"]\n', "second_moments must be one of"),
    ("max_grad_norms = [-1.0]\n", "max_grad_norms must be a finite number >= 0"),
    ('couplings = ["1 2 3"]\n', "couplings"),
    ("couplings = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n", "a list of couplings"),
    ('optimisers = ["adam"]\n[training]\noptimiser = "sgd"\n', "not both"),
    ('[training]\nsecond_moment = "v"\n', "second_moment must be one of"),
    ("[training]\nmax_grad_norm = true\n", "max_grad_norm"),
    ('[training]\ncoupling = "1 2"\n', "coupling"),
])
def test_bad_update_budget_values_in_grid_files(tmp_path: Path, text: str, msg: str) -> None:
    f = tmp_path / "g.toml"
    f.write_text("lengths = [10]\n" + text)
    res = CliRunner().invoke(cli.main, ["sweep", "--grid", str(f), "--out", str(tmp_path)])
    assert_clean_cli_error(res)
    assert msg in res.output and len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize("args, msg", [
    (["sweep", "--second-moments", "bogus"], "second_moments"),
    (["sweep", "--max-grad-norms", "nan"], "max_grad_norms"),
    (["sweep", "--max-grad-norms", "x"], "comma-separated"),
    (["sweep", "--couplings", "1 2 3"], "couplings"),
    (["sweep", "--optimisers", "sgd", "--lr", "1"], "stability bound"),
    (["train", "--second-moment", "bogus"], "second-moment"),
    (["train", "--max-grad-norm", "-1"], "--max-grad-norm"),
    (["train", "--coupling", "1 2"], "coupling"),
])
def test_bad_update_budget_options(tmp_path: Path, args: list[str], msg: str) -> None:
    res = CliRunner().invoke(cli.main, [*args, "--out", str(tmp_path)])
    assert_clean_cli_error(res)
    assert msg in res.output, res.output
    assert not list(tmp_path.iterdir())  # refused before any work


def test_the_sweep_cli_takes_the_new_axes(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli.main, [
        "sweep", "--lengths", "10", "--objectives", "surrogate", "--steps", "2", "--agents",
        "2", "--second-moments", "shared,per-parameter", "--max-grad-norms", "0,1",
        "--couplings", "none,1 0.5 0; 0 1 0; 0 0 1", "--name", "b", "--out", str(tmp_path),
        "--no-progress", "--workers", "1"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "b" / "results.parquet")
    assert len(df.groupby(["second_moment", "max_grad_norm", "coupling"])) == 8
    assert set(df["coupling"]) == {"none", "1 0.5 0; 0 1 0; 0 0 1"}
    assert not df["unstable"].any()


# ------------------------------------------------------------------ the chaos flag

def test_unstable_is_set_for_a_huge_learning_rate(tmp_path: Path) -> None:
    grid = GridConfig(lengths=(100,), objectives=("sft-reflection",),
                      training=TrainingConfig(steps=5, n_agents=2, adam_lr=20.0))
    df = run_cell(grid, grid.cells()[0])
    assert df["unstable"].all() and (df["max_jump"] > 0.5).all()
    # the bare agent starts at p = 1/2 and cannot move by more than 1/2: the 7-task ladder
    res = CliRunner().invoke(cli.main, ["train", "--optimiser", "adam", "--lr", "20",
                                        "--ladder", "default", "--steps", "3", "--agents", "1",
                                        "--name", "u", "--out", str(tmp_path)])
    assert res.exit_code == 0 and "warning: unstable" in res.output, res.output
    from core.records import read_record

    rec = read_record(tmp_path / "u")
    assert rec["results"]["unstable"] is True and rec["results"]["max_jump"] > 0.5
    hist = pd.read_parquet(tmp_path / "u" / "history.parquet")
    assert hist["jump"].max() == pytest.approx(rec["results"]["max_jump"])


def _longest_cells(grid: GridConfig) -> list:
    """The cells at the grid's longest answer: SGD's step is lr w(L) g, so its one-step moves
    grow with L; Adam's are about lr whatever L."""
    return [c for c in grid.cells() if c.length == max(grid.lengths)]


@pytest.mark.parametrize("source", ["default", "examples/grid_paper_theory.toml",
                                    "examples/grid_update_budget.toml"])
def test_default_grids_have_no_unstable_cells(source: str) -> None:
    if source == "default":
        grid = GridConfig()
    else:
        _, grid = build_grid(load_grid_file(REPO / source), source=source)
    for cell in _longest_cells(grid):
        df = run_cell(grid, cell)
        assert not df["unstable"].any(), (cell.cell_id, df["max_jump"].max())

