"""The fit's SFT-data and decision-transfer options (DESIGN §1, §2): masked wrong attempts
and decisions shared by every task (transfer "global-decisions": one logit each;
"flat-decisions": the kernel's flat limit, ell_d bounded below by the data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.fit import FitConfig, Ladder, base_sampling_logits
from analysis.fit_bounds import flat_decisions_row
from analysis.fit_config import FLAT_ELL_D
from analysis.fit_model import (
    agent_spec,
    free_parameter_names,
    grid_starts,
    length_scales,
    regime_objective,
    simulate_regime,
)
from analysis.observed import RL, SFT_NO_REFLECTION, SFT_REFLECTION

LADDER = Ladder(("T1", "T2", "T3", "T4", "T5"), (True, True, False, False, False))
REGIMES = [SFT_NO_REFLECTION, SFT_REFLECTION, RL]


def _offsets(cfg: FitConfig) -> np.ndarray:
    return base_sampling_logits(np.array([0.7, 0.4, 0.1, 0.03, 0.01]), cfg)


def test_masked_wrong_attempts_reach_the_sft_objective():
    masked = regime_objective(SFT_REFLECTION, FitConfig(mask_wrong_attempts=True), 0.001)
    assert masked.sft_data.mask_wrong_attempts is True
    assert regime_objective(SFT_REFLECTION, FitConfig(), 0.001).sft_data.mask_wrong_attempts \
        is False


def test_masked_wrong_attempts_free_p_from_its_pin():
    """Trained on wrong first attempts, SFT reflection's ID p stays near 1/(1 + f) (f = the
    F->T share); masked, the sampling loss sees correct answers only and p climbs past it."""
    vals = {"ell_s": 1.0, "ell_d": 2.0, f"lr[{SFT_REFLECTION}]": 0.05}
    ps = {}
    for mask in (False, True):
        cfg = FitConfig(steps=600, mask_wrong_attempts=mask, ft_share=0.5)
        ps[mask] = simulate_regime(SFT_REFLECTION, LADDER, _offsets(cfg), cfg, vals)[0, 0]
    assert abs(ps[False] - 1 / 1.5) < 0.03
    assert ps[True] > 0.9


def test_global_decisions_parameters_and_agent():
    cfg = FitConfig(transfer="global-decisions")
    assert free_parameter_names(REGIMES, cfg) == ["ell_s", f"lr[{SFT_REFLECTION}]", "lr[RL]"]
    assert length_scales(RL, cfg, {"ell_s": 2.0}) == (2.0, math.inf)
    spec = agent_spec(LADDER, tuple(_offsets(cfg)), cfg, 2.0, math.inf)
    assert spec.transfer.shared_trainable == (False, True, True)
    # sampling: w_s (frozen) and one u_s per ID task; each decision: one trained logit w
    assert spec.n_params == (1 + 2) + 1 + 1
    starts = grid_starts(REGIMES, FitConfig(transfer="global-decisions", steps=2), {},
                         lambda rows, vals: float(len(rows)) + vals["ell_s"])
    assert [set(s) for s in starts] == [{"ell_s", f"lr[{SFT_REFLECTION}]", "lr[RL]"}] * 3


def test_global_decisions_are_the_same_on_every_task():
    """ell_d = inf: q1 and q2 move together on every task (in distribution and out of it),
    while p still falls off with distance through ell_s."""
    cfg = FitConfig(transfer="global-decisions", steps=50)
    out = simulate_regime(RL, LADDER, _offsets(cfg), cfg, {"ell_s": 1.0, "lr[RL]": 0.05})
    np.testing.assert_allclose(out[:, 1], out[0, 1], atol=1e-12)
    np.testing.assert_allclose(out[:, 2], out[0, 2], atol=1e-12)
    assert out[0, 2] != pytest.approx(FitConfig().q2_base, abs=1e-3)  # trained, not the base
    # the same run with a finite ell_d decays off the ladder: the mode is not a no-op
    finite = simulate_regime(RL, LADDER, _offsets(cfg), FitConfig(steps=50),
                             {"ell_s": 1.0, "ell_d": 1.0, "lr[RL]": 0.05})
    assert abs(finite[-1, 2] - finite[0, 2]) > 1e-3


def test_an_unknown_transfer_is_refused_with_the_choices(tmp_path, monkeypatch):
    from cli import main

    monkeypatch.chdir(tmp_path)
    bad = CliRunner().invoke(main, ["fit", "--transfer", "nope", "--name", "g"])
    assert bad.exit_code != 0 and "global-decisions" in bad.output


def test_flat_decisions_are_the_shared_kernel_at_its_flat_limit():
    """ell_d = FLAT_ELL_D in the kernel agent: q equal on every task, the shared transfer's
    run at that ell_d exactly, and not the logit agent of global-decisions (which trains the
    decisions at another rate: docs/results/simulator/fit_settings_compared.md)."""
    cfg = FitConfig(transfer="flat-decisions", steps=50)
    assert free_parameter_names(REGIMES, cfg) == ["ell_s", f"lr[{SFT_REFLECTION}]", "lr[RL]"]
    assert length_scales(RL, cfg, {"ell_s": 2.0}) == (2.0, FLAT_ELL_D)
    vals = {"ell_s": 1.0, "lr[RL]": 0.05}
    flat = simulate_regime(RL, LADDER, _offsets(cfg), cfg, vals)
    shared = simulate_regime(RL, LADDER, _offsets(cfg), FitConfig(steps=50),
                             {**vals, "ell_d": FLAT_ELL_D})
    np.testing.assert_array_equal(flat, shared)
    # kernel weights exp(-gap / ell_d) within 4 / FLAT_ELL_D of 1 on this ladder
    np.testing.assert_allclose(flat[:, 1:3], flat[0, 1:3] + 0 * flat[:, 1:3], atol=1e-3)
    assert abs(flat[0, 2] - FitConfig().q2_base) > 0.05  # trained: the check above has teeth
    logit_agent = simulate_regime(RL, LADDER, _offsets(cfg),
                                  FitConfig(transfer="global-decisions", steps=50), vals)
    assert abs(logit_agent[0, 2] - flat[0, 2]) > 1e-3


def test_flat_decisions_lower_bound_is_where_the_sse_has_risen_by_the_budget():
    """A known SSE, 1 / ell_d over the rows (falling toward the flat limit): the bound solves
    1 / ell_d = 1 / FLAT_ELL_D + budget; read with ell_d free (transfer shared)."""
    calls = []

    def sse(rows, vals, run_cfg):
        calls.append(run_cfg.transfer)
        return len(rows) / vals["ell_d"]

    cfg = FitConfig(transfer="flat-decisions")
    row, note = flat_decisions_row([SFT_REFLECTION, RL], {"ell_s": 1.0}, sse, cfg, 0.1)
    want = 2 / (2 / FLAT_ELL_D + 0.1)
    assert row.loc[0, "ci_low"] == pytest.approx(want, rel=2e-3)
    assert row.loc[0, "value"] == FLAT_ELL_D and row.loc[0, "ci_high"] == math.inf
    assert not row.loc[0, "free"] and not row.loc[0, "identified"]
    assert set(calls) == {"shared"} and f"ell_d >= {want:.3g}" in note
    flat_sse = flat_decisions_row([RL], {}, lambda rows, vals, c: 0.3, cfg, 0.1)[0]
    assert flat_sse.loc[0, "ci_low"] == 0.0  # no ell_d in the range is ruled out


def test_a_flat_decisions_fit_reports_ell_d_as_bounded_below():
    from analysis.fit import fit_observed
    from analysis.observed import load_paper_table1

    res = fit_observed(load_paper_table1(), FitConfig(
        transfer="flat-decisions", steps=3, max_attempts=3, max_nfev=2, starts=1))
    params = res.params.set_index("name")
    assert "ell_d" in params.index and not params.loc["ell_d", "free"]
    assert params.loc["ell_d", "value"] == FLAT_ELL_D
    assert 0 <= params.loc["ell_d", "ci_low"] < FLAT_ELL_D
    assert "ell_d" not in set(params.index[params["free"]])
    line = next(x for x in res.summary().splitlines() if x.strip().startswith("ell_d"))
    assert "flat limit; 95% lower bound" in line and "trained" not in line
    from analysis.fit_io import params_text  # the report's caption: a lower bound, not "<= inf"
    caption = params_text(res)
    assert f"ell_d = {FLAT_ELL_D:g} (>= " in caption and "ell_d = 10000 (<=" not in caption
    assert "lr[SFT (no reflection)] = 0 (<= " in caption  # the untrained row: an upper bound



def test_fixed_rows_read_the_same_in_the_summary_and_the_caption():
    # one reading of a fixed row (fit_bounds.one_sided_bound) for both formatters: an untrained
    # lr whose upper bound is inf (nothing in the range ruled out) is still an upper bound
    import pandas as pd

    from analysis.fit_bounds import one_sided_bound
    from analysis.fit_io import params_text

    params = pd.DataFrame([
        {"name": "lr[SFT (no reflection)]", "value": 0.0, "ci_low": 0.0, "ci_high": math.inf},
        {"name": "lr[SFT (reflection)]", "value": 0.05, "ci_low": 0.012, "ci_high": math.inf},
        {"name": "ell_d", "value": FLAT_ELL_D, "ci_low": 0.0, "ci_high": math.inf},
        {"name": "beta", "value": 0.001, "ci_low": math.nan, "ci_high": math.nan}])
    params = params.assign(se=math.nan, identified=False, at_bound=False, free=False)
    rows = list(params.itertuples())
    assert [one_sided_bound(r) for r in rows] == [("<=", math.inf), (">=", 0.012),
                                                  (">=", 0.0), None]
    from analysis.fit import FitResult

    res = FitResult(params, pd.DataFrame(columns=["regime", "task", "task_index", "residual"]),
                    0.05, 0.04, 0, 0, 0, {})
    assert params_text(res) == ("lr[SFT (no reflection)] = 0 (<= inf); lr[SFT (reflection)] = "
                                "0.05 (>= 0.012); ell_d = 10000 (>= 0); beta = 0.001")
    lines = [x.strip() for x in res.summary().splitlines()[2:6]]
    assert lines[0].endswith("(not trained; 95% upper bound inf)")
    assert lines[1].endswith("(trained at the top of its range; 95% lower bound 0.012)")
    assert lines[2].endswith("(at the kernel's flat limit; 95% lower bound 0)")
    assert lines[3].endswith("0.001 (fixed)")
