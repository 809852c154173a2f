"""Bad input to illustrate, attribution, predict, simulate, report, fit and compare: one
`Error: ...` line naming the option and a non-zero exit, or strict JSON; never a traceback,
never exit 0 on nonsense, never a folder left behind by a failed run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from cli import main
from tests.conftest import assert_clean_cli_error

PQQ = ("--p", "0.6", "--q1", "0.9", "--q2", "0.8")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def strict_json(text: str):
    """json.loads refusing NaN / Infinity (what allow_nan=False would never write)."""

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def one_error_line(res, *words: str) -> None:
    assert_clean_cli_error(res)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 or lines[-1].startswith("Error"), res.output
    error = [ln for ln in lines if ln.startswith("Error")][-1]
    for word in words:
        assert word in error, res.output


# ----------------------------------------------------------------------------- simulate


@pytest.mark.parametrize("seed", [str(2**64), str(10**30)])
def test_simulate_seed_beyond_64_bits_is_refused(seed):
    one_error_line(run("simulate", *PQQ, "--n", "10", "--seed", seed), "--seed")


def test_simulate_largest_seed_still_runs():
    res = run("simulate", *PQQ, "--n", "10", "--n-boot", "2", "--seed", str(2**64 - 1))
    assert res.exit_code == 0, res.output
    strict_json(res.output)


@pytest.mark.parametrize("args,option", [
    (("--n", str(10**13)), "--n"),
    (("--n", str(10**30)), "--n"),
    (("--n", "10", "--n-boot", str(10**14)), "--n-boot"),
])
def test_simulate_is_bounded_by_memory(args, option):
    res = run("simulate", *PQQ, *args)
    one_error_line(res, option, "memory")


def test_simulate_memory_estimate_covers_the_measured_peak():
    """The estimate is an upper bound of what tracemalloc sees (numpy allocations)."""
    import tracemalloc

    from sim.simulate import simulate_and_calibrate, simulation_bytes

    simulate_and_calibrate(0.6, 0.9, 0.8, 8, 100, 0, 2)  # compile first
    for k in (1, 8, 30):
        tracemalloc.start()
        simulate_and_calibrate(0.6, 0.9, 0.8, k, 50_000, 0, 5)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= simulation_bytes(50_000, k, 5) <= 2 * peak


@pytest.mark.parametrize("k", ["61", str(10**20)])
def test_simulate_max_attempts_names_the_option(k):
    one_error_line(run("simulate", *PQQ, "--max-attempts", k), "--max-attempts")


# ------------------------------------------------------------------ undefined -> null


def test_predict_undefined_accuracy_is_null():
    res = run("predict", "--p", "0", "--q1", "0", "--q2", "1")
    assert res.exit_code == 0, res.output
    assert strict_json(res.output) == {"accuracy": None}
    table = run("predict", "--p", "0", "--q1", "0", "--q2", "1", "--format", "table")
    assert table.exit_code == 0 and "undefined" in table.output and "nan" not in table.output
    assert "null" in run("predict", "--help").output


@pytest.mark.parametrize("pqq", [("0", "0", "1"), ("1", "1", "0")])
def test_simulate_undefined_estimates_are_null(pqq):
    p, q1, q2 = pqq
    res = run("simulate", "--p", p, "--q1", q1, "--q2", q2, "--n", "20", "--n-boot", "5")
    assert res.exit_code == 0, res.output
    out = strict_json(res.output)
    assert any(v is None for est in out.values() for v in est.values())
    assert "null" in run("simulate", "--help").output


# -------------------------------------------------------------------------- attribution


@pytest.mark.parametrize("option", ["--theta", "--theta-ref"])
@pytest.mark.parametrize("value", ["nan,0,0", "inf,0,0", "0,-inf,0", "0,0,1e999"])
def test_attribution_refuses_non_finite_theta(option, value):
    one_error_line(run("attribution", option, value, "--lengths", "10"), option)


def test_attribution_refuses_non_finite_rows(monkeypatch):
    """A gradient that overflowed is an error naming L and the reason, not a NaN row."""
    import numpy as np

    import sim.commands as sc

    def overflowing(ls, *a, **k):
        return pd.DataFrame({"L": ls, "g_s": [np.inf] * len(ls), "g_1": [np.nan] * len(ls),
                             "g_2": [0.0] * len(ls), "ratio": [np.nan] * len(ls)})

    monkeypatch.setattr(sc, "attribution_by_length", overflowing)
    one_error_line(run("attribution", "--lengths", "10"), "L = 10", "not finite")


def test_attribution_undefined_ratio_is_said_and_null_in_json():
    """theta = theta_ref: the KL gradient vanishes, the ratio 0/0 is undefined; JSON says
    null, and a note on stderr says why (never a silent empty column)."""
    res = run("attribution", "--theta", "0.3,2,1.2", "--lengths", "10", "--format", "json",
              "--explain")
    assert res.exit_code == 0, res.output
    rows = strict_json(res.stdout)
    assert rows[0]["ratio"] is None
    assert "undefined" in res.stderr and "nan" not in res.stderr


@pytest.mark.parametrize("args,option", [
    (("--lengths", str(10**20)), "--lengths"),
    (("--lengths", "1..1000000000000:1"), "--lengths"),
    (("--points", str(10**11)), "--points"),
    (("--group-size", str(10**20)), "--group-size"),
    (("--group-size", "1"), "--group-size"),
    (("--gamma", "nan"), "--gamma"),
    (("--gamma", "0"), "--gamma"),
    (("--max-attempts", "10001"), "--max-attempts"),
    (("--max-attempts", "0"), "--max-attempts"),
    (("--max-attempts", "1", "--objective", "sft"), "--max-attempts"),
    (("--ft-share", "nan", "--objective", "sft"), "--ft-share"),
    (("--ft-share", "2", "--objective", "sft"), "--ft-share"),
])
def test_attribution_bad_numbers_name_the_option(args, option):
    one_error_line(run("attribution", *args), option)


# --------------------------------------------------------------------------------- fit


def _table(path: Path, accs: dict[str, tuple[float, ...]], col: str = "accuracy_pct") -> Path:
    rows = [{"model": regime, "task": f"T{i + 1}", "task_index": i + 1,
             "in_distribution": i < 2, col: a, "n": 100}
            for regime, values in accs.items() for i, a in enumerate(values)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_fit_refuses_accuracies_outside_0_100(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _table(tmp_path / "obs.csv", {"Base": (70.0, 40.0, 10.0), "RL": (174.0, -30.0, 5.0)})
    res = run("fit", "--observed", str(path), "--quick")
    one_error_line(res, "obs.csv", "row 4", "174")
    assert not (tmp_path / "outputs").exists()


def test_fit_refuses_a_fraction_outside_0_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _table(tmp_path / "obs.csv", {"Base": (0.7, 0.4, 0.1), "RL": (0.8, -0.3, 0.05)},
                  col="accuracy")
    one_error_line(run("fit", "--observed", str(path), "--quick"), "obs.csv", "row 5", "-0.3")


@pytest.mark.parametrize("name", ["../x", "a/b", "/tmp/abs", "", ".", ".."])
@pytest.mark.parametrize("command", ["fit", "compare"])
def test_fit_and_compare_names_are_one_path_component(tmp_path, monkeypatch, command, name):
    monkeypatch.chdir(tmp_path)
    args = ["--observed", str(tmp_path)] if command == "compare" else []
    one_error_line(run(command, *args, "--quick", "--name", name), "--name")
    assert not (tmp_path / "outputs").exists() and not (tmp_path.parent / "x").exists()


def test_check_run_name():
    from core.provenance import check_run_name

    assert check_run_name("run-1.a_b", "--name") == "run-1.a_b"
    for bad in ("../x", "a/b", "a\\b", "", ".", "..", "/abs", "a\nb", "x" * 300):
        with pytest.raises(ValueError, match="--name"):
            check_run_name(bad, "--name")


def test_fit_out_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("fit", "--quick", "--max-nfev", "1", "--steps", "2", "--name", "t", "--out",
              str(tmp_path / "fits"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fits/t/fit.json").is_file() and not (tmp_path / "outputs").exists()
    file = tmp_path / "a-file"
    file.write_text("x")
    one_error_line(run("fit", "--quick", "--out", str(file)), "--out")


@pytest.mark.parametrize("args,option", [
    (("--length", "inf"), "--length"),
    (("--length", "nan"), "--length"),
    (("--steps", "0"), "--steps"),
    (("--steps", str(10**20)), "--steps"),
    (("--max-nfev", "0"), "--max-nfev"),
    (("--beta", "nan"), "--beta"),
    (("--q1-base", "1"), "--q1-base"),
    (("--max-attempts", "1001"), "--max-attempts"),
])
def test_fit_bad_numbers_name_the_option(tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    one_error_line(run("fit", "--quick", *args), option)
    assert not (tmp_path / "outputs").exists()


def test_failed_fit_leaves_no_folder(tmp_path, monkeypatch):
    """A failure while writing removes the folder the run created."""
    monkeypatch.chdir(tmp_path)

    def broken(result, out_dir, **k):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fit.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr("analysis.fit_io.save_fit", broken)
    res = run("fit", "--quick", "--max-nfev", "1", "--steps", "2", "--name", "t")
    one_error_line(res, "disk full")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args,option", [
    (("fit", "--observed", ""), "--observed"),
    (("fit", "--out", ""), "--out"),
    (("compare", "--observed", ""), "--observed"),
    (("report", "--out", ""), "--out"),
    (("report", "--outputs", " "), "--outputs"),
])
def test_empty_paths_are_refused(tmp_path, monkeypatch, args, option):
    """Path('') is the current folder: an empty path is a mistake, not '.'."""
    monkeypatch.chdir(tmp_path)
    one_error_line(run(*args, "--quick"), option)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_out_names_the_option_before_the_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("fit", "--quick", "--out", "/proc/no-such-dir")
    one_error_line(res, "--out")
    assert "RMSE" not in res.output


# ----------------------------------------------------------------------------- compare


def test_compare_refuses_an_accuracy_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _table(tmp_path / "obs.csv", {"Base": (70.0, 40.0, 10.0), "RL": (80.0, 50.0, 5.0)})
    one_error_line(run("compare", "--observed", str(path), "--quick"), "--observed")
    assert not (tmp_path / "outputs").exists()


def test_failed_compare_leaves_no_folder(tmp_path, monkeypatch):
    from test_report_fixtures import write_real

    real = write_real(tmp_path)

    def broken(run, out_dir, cfg):
        (out_dir / "fit.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr("analysis.compare.write_compare", broken)
    one_error_line(run("compare", "--observed", str(real), "--quick", "--out",
                       str(tmp_path / "new"), "--name", "cmp"), "disk full")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------ report


def test_report_train_without_history_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("report", "--quick", "--no-png", "--train", str(empty), "--out",
              str(tmp_path / "r"))
    one_error_line(res, "--train")
    assert not (tmp_path / "r").exists()


def test_report_sweep_without_results_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(run("report", "--quick", "--no-png", "--sweep", str(empty), "--out",
                       str(tmp_path / "r")), "--sweep")


def test_report_missing_outputs_is_an_error_not_created(tmp_path):
    missing = tmp_path / "missing"
    res = run("report", "--quick", "--no-png", "--outputs", str(missing), "--out",
              str(tmp_path / "r"))
    one_error_line(res, "--outputs")
    assert not missing.exists() and not (tmp_path / "r").exists()


def test_report_out_is_not_a_file(tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    one_error_line(run("report", "--quick", "--no-png", "--outputs", str(tmp_path), "--out",
                       str(file)), "--out")


def test_report_refuses_bad_observed_accuracies(tmp_path):
    path = _table(tmp_path / "obs.csv", {"Base": (70.0, 40.0, 10.0), "RL": (174.0, -30.0, 5.0)})
    one_error_line(run("report", "--quick", "--no-png", "--observed", str(path), "--outputs",
                       str(tmp_path), "--out", str(tmp_path / "r")), "obs.csv", "174")


def test_report_fit_cache_stays_inside_out(tmp_path):
    from analysis.observed import load_observed
    from analysis.report import ReportConfig, load_or_fit

    path = _table(tmp_path / "obs.csv", {"Base": (70.0, 40.0, 10.0), "RL": (80.0, 60.0, 20.0)})
    outputs, out = tmp_path / "outputs", tmp_path / "report"
    cfg = ReportConfig(out_dir=out, outputs=outputs, observed=path, quick=True)
    logs: list[str] = []
    load_or_fit(cfg, load_observed(path), logs.append)
    assert not outputs.exists()
    assert list(out.glob("fit/*/fit.json"))
    load_or_fit(cfg, load_observed(path), logs.append)
    assert logs[-1].startswith("using cached fit")


def test_failed_report_leaves_no_folder(tmp_path, monkeypatch):
    out = tmp_path / "r"

    def broken(cfg, log):
        (cfg.out_dir / "index.html").write_text("<html>")
        raise OSError("no space left")

    monkeypatch.setattr("analysis.report.write_report", broken)
    one_error_line(run("report", "--quick", "--no-png", "--outputs", str(tmp_path), "--out",
                       str(out)), "no space left")
    assert not out.exists()
