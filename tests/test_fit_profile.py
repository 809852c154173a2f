"""Profile-likelihood intervals of a fit (analysis.fit_profile, DESIGN §4)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.fit import FitConfig, fit_observed
from analysis.fit_profile import ProfileConfig, profile_fit, profile_spans
from analysis.observed import load_paper_table1


def test_profile_starts_at_the_fits_own_sse_and_never_rises_above_holding_the_others():
    observed = load_paper_table1()
    res = fit_observed(observed, FitConfig(steps=3, max_attempts=3, max_nfev=2, starts=1))
    table, sse0, threshold = profile_fit(observed, res, ProfileConfig(offsets=(0.5,),
                                                                      max_nfev=2))
    trained = res.curves[res.curves["regime"] != "Base"]["residual"].dropna()
    assert sse0 == pytest.approx(float(trained @ trained), rel=1e-9)  # the fit's SSE
    n_free = 4  # ell_s, ell_d, lr[SFT (reflection)], lr[RL] (no-refl untrained)
    assert threshold == pytest.approx(sse0 * (1 + 1.959963984540054**2 / (21 - n_free)))
    assert table["name"].nunique() == n_free
    at_zero = table[table["offset"] == 0]
    assert (at_zero["sse"] == sse0).all() and at_zero["inside"].all()
    assert set(table["offset"]) <= {-0.5, 0.0, 0.5}
    assert (table["inside"] == (table["sse"] <= threshold)).all()


def test_profile_spans_are_bounded_by_the_nearest_points_outside():
    rows = [("a", -1.0, 9.0), ("a", -0.5, 1.0), ("a", 0.0, 0.5), ("a", 0.5, 1.5),
            ("a", 1.0, 3.0), ("b", -0.5, 1.0), ("b", 0.0, 0.5), ("b", 0.5, 0.9)]
    table = pd.DataFrame(rows, columns=["name", "offset", "sse"]).assign(value=1.0)
    table["inside"] = table["sse"] <= 1.2
    spans = profile_spans(table).set_index("name")
    assert spans.loc["a", "inside_low"] == -0.5 and spans.loc["a", "inside_high"] == 0.0
    assert spans.loc["a", "span_at_most"] == pytest.approx(math.exp(0.5 + 1.0))
    assert spans.loc["a", "identified"]
    assert np.isnan(spans.loc["b", "outside_high"]) and spans.loc["b", "span_at_most"] == math.inf
    assert not spans.loc["b", "identified"]  # the grid ended inside: no bound on that side


def test_profile_config_rejects_a_bad_grid():
    for bad in ((), (0.5, 0.2), (0.0, 0.5), (-0.1,)):
        with pytest.raises(ValueError, match="offsets"):
            ProfileConfig(offsets=bad)


def test_the_script_says_what_is_wrong_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "fit_profile.py"
    missing = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "no fit.json" in missing.stderr
    (tmp_path / "fit.json").write_text("{}")
    bad = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "is not a fit.json" in bad.stderr
    assert "Traceback" not in bad.stderr
    grid = subprocess.run([sys.executable, str(script), str(tmp_path), "--offsets", "0.5",
                           "0.2"], capture_output=True, text=True)
    assert grid.returncode == 1 and "increasing" in grid.stderr
    assert "Traceback" not in grid.stderr


def test_the_roughness_scan_reads_a_saved_fit_and_refuses_an_untrained_row(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from analysis.fit_io import save_fit

    script = Path(__file__).resolve().parent.parent / "scripts" / "fit_roughness_scan.py"
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "none")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no fit.json" in missing.stderr
    res = fit_observed(load_paper_table1(), FitConfig(steps=3, max_attempts=3, max_nfev=2,
                                                      starts=1))
    save_fit(res, tmp_path)
    ok = subprocess.run([sys.executable, str(script), str(tmp_path), "--scales", "1", "2",
                         "--regime", "RL", "--max-grad-norm", "0"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("RL, adam (shared v), 3 steps:")  # the clip is off as asked
    assert len(lines) == 3 and all("roughness" in ln for ln in lines[1:])
    base = subprocess.run([sys.executable, str(script), str(tmp_path), "--regime", "Base"],
                          capture_output=True, text=True)
    assert base.returncode == 1 and "not a trained row" in base.stderr
    assert "Traceback" not in base.stderr
    # a fit with lr_mode sft-limits trains SFT (reflection) at its lr's top: no free lr to scan
    limits = tmp_path / "limits"
    save_fit(fit_observed(load_paper_table1(), FitConfig(steps=3, max_attempts=3, max_nfev=2,
                                                         starts=1, lr_mode="sft-limits")),
             limits)
    fixed = subprocess.run([sys.executable, str(script), str(limits), "--regime",
                            "SFT (reflection)"], capture_output=True, text=True)
    assert fixed.returncode == 1 and "lr_mode sft-limits" in fixed.stderr


def test_the_training_scan_reproduces_the_fit_and_says_what_is_wrong(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from analysis.fit_io import save_fit

    script = Path(__file__).resolve().parent.parent / "scripts" / "fit_training_scan.py"
    res = fit_observed(load_paper_table1(), FitConfig(steps=3, max_attempts=3, max_nfev=2,
                                                      starts=1))
    save_fit(res, tmp_path)
    lr = float(res.params.set_index("name").loc["lr[RL]", "value"])
    ok = subprocess.run([sys.executable, str(script), str(tmp_path), "--regime", "RL",
                         "--amounts", repr(lr * 3), "1e3"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 3 and "3 steps" in lines[0]
    # at the fit's own amount of training the row's SSE is the fit's
    rl = res.curves[res.curves["regime"] == "RL"]["residual"].dropna()
    assert f"SSE {float(rl @ rl):.4f}" in lines[1] and "max_adam_lr" not in lines[1]
    assert lines[2].endswith("(lr above the fit's max_adam_lr)")
    for args, msg in ((["--regime", "Base"], "not a trained row"),
                      (["--amounts", "0"], "positive"),
                      (["--regime", "SFT (no reflection)"], "not a trained row")):
        bad = subprocess.run([sys.executable, str(script), str(tmp_path), *args],
                             capture_output=True, text=True)
        assert bad.returncode == 1 and msg in bad.stderr and "Traceback" not in bad.stderr
