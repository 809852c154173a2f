"""The prepared validation script (scripts/gpu_validate.py) end to end on the CPU, with a tiny
random model and tiny sizes: base eval -> SFT -> eval, base -> GRPO -> eval, tables written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

import pandas as pd  # noqa: E402

from core.records import read_record  # noqa: E402
from realmodel.models import tiny_random_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_validate", ROOT / "scripts" /
                                                  "gpu_validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_script_on_the_cpu_with_a_tiny_model(tmp_path: Path) -> None:
    model, tokenizer = tiny_random_model(seed=0)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "out"
    rc = _script().main([str(out), "--cpu-smoke", "--model", str(tmp_path / "tiny"),
                         "--n-eval", "2", "--eval-max-new-tokens", "8", "--warm-steps", "1",
                         "--steps", "1", "--calib-every", "1", "--calib-n", "2",
                         "--calib-max-new-tokens", "8", "--max-new-tokens", "8"])
    assert rc == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["model"].unique()) == ["base", "warm", "sft-more", "grpo"]
    assert list(summary["task"].unique()) == ["1x1", "1x2", "2x2", "2x3"]
    assert {"p_hat", "q1_hat", "q2_hat", "observed_accuracy"} <= set(summary.columns)
    deltas = pd.read_csv(out / "deltas.csv")
    # warm - base, and each arm - warm: 3 x 4 tasks, each delta with its CI
    assert len(deltas) == 12 and {"d_q2_hat", "d_q2_hat_ci_low"} <= set(deltas.columns)
    assert list(deltas.drop_duplicates("method")["from"]) == ["base", "warm", "warm"]
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["method"]) == {"sft-more", "grpo"}
    assert set(curves["step"]) == {0, 1}
    steps = pd.read_csv(out / "step_deltas.csv")
    assert set(steps["to_step"]) == {1} and len(steps) == 8
    info = json.loads((out / "run_info.json").read_text())
    assert info["device"] == "cpu" and info["status"] == "done"
    assert {k: v["global_step"] for k, v in info["runs"].items()} == {
        "warm": 1, "sft-more": 1, "grpo": 1}
    # both arms start from the warm start's checkpoint
    assert info["runs"]["grpo"]["config"]["model"] == info["runs"]["sft-more"]["config"]["model"]
    assert info["runs"]["grpo"]["config"]["model"].endswith("warm-sft-reflection/final")
    assert set(info["phases_s"]) == {"eval base", "train warm", "eval warm", "train sft-more",
                                     "eval sft-more", "train grpo", "eval grpo"}
    # every output folder carries its run record (core.records), and run_info reads them
    for name in ("base", "warm", "sft-more", "grpo"):
        record = read_record(out / "eval" / name)
        assert record["kind"] == "eval" and record["status"] == "done"
    records = {p.name: read_record(p) for p in (out / "runs").iterdir()}
    assert {k: r["kind"] for k, r in records.items()} == {
        "warm-sft-reflection": "sft", "sft-more": "sft", "grpo": "grpo"}
    assert info["runs"]["grpo"]["s_per_step"] == records["grpo"]["results"]["s_per_step"]
    assert info["runs"]["grpo"]["wall_time_s"] == records["grpo"]["wall_time_s"]


def _deltas(grpo: list[float], sft: list[float]) -> pd.DataFrame:
    rows = []
    for method, values in (("grpo", grpo), ("sft-more", sft)):
        for task, ids, v in zip(["1x1", "1x2", "2x2"], [True, True, False], values,
                                strict=True):
            rows.append({"method": method, "task": task, "in_distribution": ids,
                         "d_q2_hat": v, "d_q2_hat_ci_low": v - 0.1,
                         "d_q2_hat_ci_high": v + 0.1})
    return pd.DataFrame(rows)


def test_q2_verdict() -> None:
    script = _script()
    verdict = script.q2_verdict(_deltas([0.30, float("nan"), -0.5], [0.05, 0.2, 0.0]))
    ids, ood = verdict["in_distribution"], verdict["out_of_distribution"]
    assert ids["answer"] == "yes" and ids["tasks"] == ["1x1"]  # 1x2 undefined for GRPO
    assert ids["mean_abs_dq2_grpo"] == pytest.approx(0.30)
    assert ids["tasks_where_cis_separate"] == ["1x1"]  # [0.2, 0.4] vs [-0.05, 0.15]
    assert ood["answer"] == "yes" and ood["mean_dq2_grpo"] == pytest.approx(-0.5)
    tie = script.q2_verdict(_deltas([0.1, 0.1, 0.1], [-0.1, 0.1, 0.1]))
    assert tie["in_distribution"]["answer"] == "tie"
    assert tie["in_distribution"]["tasks_where_cis_separate"] == []
    none = _deltas([float("nan")] * 3, [0.1] * 3)
    assert script.q2_verdict(none)["in_distribution"]["answer"] == "undetermined"
    assert script.q2_verdict(none[none["method"] == "grpo"])["answer"] == "undetermined"


def test_step_deltas_compare_the_arms_at_the_last_common_step() -> None:
    script = _script()
    rows = []
    for method, steps in (("grpo", [0, 10, 20]), ("sft-more", [0, 10, 20, 30])):
        for step in steps:
            row = {"method": method, "step": step, "task": "1x1", "in_distribution": True,
                   "n": 32}
            for c in script.COMPONENTS:
                value = 0.5 + (0.01 * step if method == "grpo" else -0.001 * step)
                row.update({c: value, f"{c}_ci_low": value - 0.1, f"{c}_ci_high": value + 0.1})
            rows.append(row)
    d = script.step_deltas(pd.DataFrame(rows)).set_index("method")
    assert set(d["to_step"]) == {20}  # the last step both arms reached
    assert d.loc["grpo", "d_q2_hat"] == pytest.approx(0.20)
    assert d.loc["sft-more", "d_q2_hat"] == pytest.approx(-0.02)
    half = script.Z95 * (2 * (0.1 / script.Z95) ** 2) ** 0.5  # two independent SEs
    assert d.loc["grpo", "d_q2_hat_ci_high"] - d.loc["grpo", "d_q2_hat"] == pytest.approx(half)
