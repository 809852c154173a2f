"""The prepared validation script (scripts/gpu_validate.py) end to end on the CPU, with a tiny
random model and tiny sizes: base eval -> SFT -> eval, base -> GRPO -> eval, tables written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

import pandas as pd  # noqa: E402

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
                         "--n-eval", "2", "--eval-max-new-tokens", "8", "--sft-steps", "1",
                         "--grpo-steps", "1", "--calib-every", "1", "--calib-n", "2",
                         "--calib-max-new-tokens", "8", "--max-completion-length", "8"])
    assert rc == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["model"].unique()) == ["base", "sft-reflection", "grpo"]
    assert list(summary["task"].unique()) == ["1x1", "1x2", "2x2", "2x3"]
    assert {"p_hat", "q1_hat", "q2_hat", "observed_accuracy"} <= set(summary.columns)
    deltas = pd.read_csv(out / "deltas.csv")
    assert len(deltas) == 8 and "d_q2_hat" in deltas.columns
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["method"]) == {"sft-reflection", "grpo"}
    assert set(curves["step"]) == {0, 1}
    info = json.loads((out / "run_info.json").read_text())
    assert info["device"] == "cpu" and info["sft_steps"] == info["grpo_steps"] == 1
    assert info["grpo_moved_q2_more_than_sft"]["answer"] in ("yes", "no", "undetermined")
    assert set(info["phases_s"]) == {"eval base", "train sft-reflection",
                                     "eval sft-reflection", "train grpo", "eval grpo"}


def test_q2_verdict() -> None:
    script = _script()
    d = pd.DataFrame({"method": ["sft-reflection", "sft-reflection", "grpo", "grpo"],
                      "task": ["1x1", "2x2", "1x1", "2x2"],
                      "d_q2_hat": [0.05, float("nan"), 0.30, 0.9]})
    verdict = script.q2_verdict(d)
    assert verdict["answer"] == "yes" and verdict["tasks_compared"] == ["1x1"]
    assert verdict["mean_abs_dq2_grpo"] == pytest.approx(0.30)
    none = d.assign(d_q2_hat=float("nan"))
    assert script.q2_verdict(none)["answer"] == "undetermined"
