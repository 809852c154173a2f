"""The simulator's CLI contract (issue 2): outputs, formats, and one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli import main
from tests.conftest import assert_clean_cli_error


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_illustrate_csv_matches_paper_columns_and_values(reference):
    res = run("illustrate", "--format", "csv")
    assert res.exit_code == 0, res.output
    ours = pd.read_csv(io.StringIO(res.output))
    paper = pd.read_csv(reference / "appendix_c.csv")
    assert list(ours.columns) == list(paper.columns)
    np.testing.assert_allclose(ours.select_dtypes("number"), paper.select_dtypes("number"),
                               atol=0.002)
    net = pd.read_csv(io.StringIO(run("illustrate", "--format", "csv", "--net").output))
    paper_net = pd.read_csv(reference / "appendix_c_net.csv")
    np.testing.assert_allclose(net.select_dtypes("number"), paper_net.select_dtypes("number"),
                               atol=0.002)


def test_illustrate_table_is_readable():
    res = run("illustrate", "--format", "table")
    assert res.exit_code == 0 and "sample_correct" in res.output and "reward_push" in res.output


@pytest.mark.parametrize("objective", ["surrogate", "kl", "sft", "dft", "nsr", "psr"])
def test_attribution_csv_has_one_row_per_length(objective):
    res = run("attribution", "--objective", objective, "--lengths", "10..1000", "--points", "5",
              "--format", "csv")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(io.StringIO(res.output))
    assert list(df.columns) == ["L", "g_s", "g_1", "g_2", "ratio"]
    assert len(df) == 5 and df["L"].iloc[0] == 10 and df["L"].iloc[-1] == 1000
    assert np.all(np.isfinite(df[["g_s", "g_1", "g_2"]]))


def test_attribution_token_model_changes_the_kl_curve():
    per = pd.read_csv(io.StringIO(run("attribution", "--lengths", "10..1000", "--points", "3",
                                      "--format", "csv").output))
    seq = pd.read_csv(io.StringIO(run("attribution", "--lengths", "10..1000", "--points", "3",
                                      "--token-model", "sequence", "--format", "csv").output))
    assert per["ratio"].iloc[-1] > 10 * seq["ratio"].iloc[-1]


@pytest.mark.parametrize("bad", ["10..", "1000..10", "0..5", "a..b"])
def test_malformed_length_ranges_fail_with_one_line(bad):
    res = run("attribution", "--lengths", bad)
    assert_clean_cli_error(res)
    assert res.output.strip().startswith("Error")
    assert len(res.output.strip().splitlines()) == 1


def test_predict_json_and_errors():
    res = run("predict", "--p", "0.6", "--q1", "0.9", "--q2", "0.8", "--format", "json")
    acc = json.loads(res.output)["accuracy"]
    assert acc == pytest.approx(0.6 * 0.9 / (0.6 * 0.9 + 0.4 * 0.2))
    res = run("predict", "--p", "0.6", "--q1", "0.9", "--q2", "0.8", "--max-attempts", "1")
    assert json.loads(res.output)["accuracy"] == pytest.approx(0.6)
    bad = run("predict", "--p", "1.2", "--q1", "0.9", "--q2", "0.8")
    assert_clean_cli_error(bad)
    assert "probability" in bad.output


def test_simulate_json_keys_and_reproducibility():
    args = ("simulate", "--p", "0.5", "--q1", "0.8", "--q2", "0.7", "--max-attempts", "8",
            "--n", "2000", "--seed", "4", "--format", "json")
    out = json.loads(run(*args).output)
    for key in ("observed_accuracy", "predicted_accuracy", "p_hat", "q1_hat", "q2_hat"):
        assert set(out[key]) == {"estimate", "ci_low", "ci_high"}
        assert out[key]["ci_low"] <= out[key]["estimate"] <= out[key]["ci_high"]
    assert json.loads(run(*args).output) == out
    assert_clean_cli_error(run("simulate", "--p", "0.5", "--q1", "0.8", "--q2", "0.7", "--n", "0"))


@pytest.mark.parametrize("args", [
    ("train", "--out", "/proc/no-such-dir", "--steps", "2"),
    ("train", "--name", "../escape", "--steps", "2"),
    ("sweep", "--name", "a/b"),
    ("sweep", "-K", "61"),
    ("attribution", "--lengths", "10", "-K", "10001"),
    ("train", "--objective", "surrogate+0.5*kl", "--beta", "0.1", "--steps", "2"),
])
def test_bad_runs_fail_before_work_with_a_clean_error(args, tmp_path):
    assert_clean_cli_error(run(*args))
