"""Evaluation, resume and calibration (realmodel/evaluation.py, realmodel/calibration_table.py;
DESIGN.md §4, §5).

Most tests use a scripted generator (fast, exact expectations); one runs the tiny random Qwen2
end to end through the CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from realmodel_fixtures import save_tiny_checkpoint

from core.records import read_record
from realmodel.calibration_table import calibrate_responses
from realmodel.commands import realmodel
from realmodel.evaluation import (
    CALIBRATION,
    RESPONSES,
    EvaluationError,
    evaluate,
    read_responses,
)
from realmodel.generation import GenerationConfig, GenerationResult

LADDER = "1x1,1x2,2x2"


class ScriptedGenerator:
    """Wrong first attempt on even a, then a corrected one; straight answer on odd a."""

    backend = "scripted"

    def __init__(self, config: GenerationConfig, fail_after: int | None = None) -> None:
        self.config = config
        self.fail_after = fail_after
        self.prompts: list[str] = []

    def generate(self, prompts: list[str]) -> list[GenerationResult]:
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            a, b = map(int, re.findall(r"\d+", p))
            for _ in range(self.config.samples_per_prompt):
                if a % 2 == 0:
                    text = (f"{a} * {b} = {a * b + 1}. Wait, let me recompute. "
                            f"{a} * {b} = {a * b}. The answer is {a * b}.")
                else:
                    text = f"So {a} * {b} = {a * b}."
                out.append(GenerationResult(text, len(text), False))
        return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory)


def test_evaluate_writes_outputs(tmp_path: Path) -> None:
    config = GenerationConfig(batch_size=4, max_new_tokens=64)
    gen = ScriptedGenerator(config)
    res = evaluate("scripted", LADDER, "1x1,1x2", n=10, name="run", out_root=tmp_path,
                   config=config, generator=gen, progress=False, log=lambda m: None)
    out = tmp_path / "run"
    rows = read_responses(out / RESPONSES)
    assert len(rows) == 30 and len(gen.prompts) == 30 and res.n_generated == 30
    row = rows[0]
    assert {"id", "task", "a", "b", "answer", "prompt", "sample", "response", "n_tokens",
            "truncated", "parse", "in_distribution"} <= set(row)
    assert set(row["parse"]) == {"attempts", "final_answer", "correct"}
    table = res.table
    assert list(table["task"]) == ["1x1", "1x2", "2x2"]
    assert list(table["in_distribution"]) == [True, True, False]
    assert (table["observed_accuracy"] == 1.0).all()
    assert (table["q1_hat"] == 1.0).all()  # every correct candidate -> STOP at the end
    for _, r in table.iterrows():
        task_rows = [x for x in rows if x["task"] == r["task"]]
        odd = sum(x["a"] % 2 for x in task_rows) / len(task_rows)
        assert r["p_hat"] == pytest.approx(odd)
        if odd < 1:
            assert r["q2_hat"] == 1.0 and r["echo_p_ft"] == 1.0
    csv = (out / CALIBRATION).read_text()
    assert csv.startswith("task,n,in_distribution,observed_accuracy,observed_accuracy_ci_low")
    record = read_record(out)
    assert record["kind"] == "eval" and record["status"] == "done"
    assert record["results"]["backend"] == "scripted" and res.record == record
    assert "packages" in record and "git_commit" in record and record["wall_time_s"] >= 0
    # Re-parsing without markers: each response is one attempt ending on the right answer.
    again = evaluate("scripted", LADDER, "1x1,1x2", n=10, name="run", out_root=tmp_path,
                     config=config, generator=gen, markers=[], reparse=True, progress=False,
                     log=lambda m: None)
    assert again.n_generated == 0 and (again.table["p_hat"] == 1.0).all()
    assert all(len(r["parse"]["attempts"]) == 1 for r in read_responses(out / RESPONSES))
    sessions = read_record(out)["results"]["previous_sessions"]
    assert [x["n_generated_this_run"] for x in sessions] == [30]


def test_evaluate_resumes(tmp_path: Path) -> None:
    config = GenerationConfig(batch_size=4, samples_per_prompt=2)
    first = ScriptedGenerator(config, fail_after=8)
    with pytest.raises(KeyboardInterrupt):
        evaluate("scripted", LADDER, "1x1,1x2", n=5, name="r", out_root=tmp_path,
                 config=config, generator=first, progress=False, log=lambda m: None)
    path = tmp_path / "r" / RESPONSES
    written = read_responses(path)
    assert len(written) == 16  # two batches of 4 prompts x 2 samples
    # A half-written query: only sample 0 of the last one survived; then a cut line.
    half = written[-1]
    assert half["sample"] == 1
    path.write_text("".join(json.dumps(r) + "\n" for r in written[:-1]))
    with path.open("a") as fh:
        fh.write('{"id": "2x2/4", "sampl')
    second = ScriptedGenerator(config)
    messages: list[str] = []
    res = evaluate("scripted", LADDER, "1x1,1x2", n=5, name="r", out_root=tmp_path,
                   config=config, generator=second, progress=False, log=messages.append)
    assert len(second.prompts) == 15 - 7 and res.n_generated == 8
    assert second.prompts[0] == half["prompt"]  # regenerated (both samples)
    assert any("resuming" in m for m in messages)
    rows = read_responses(path)
    assert len(rows) == 30
    assert len({(r["id"], r["sample"]) for r in rows}) == 30
    assert set(first.prompts[:-1]).isdisjoint(second.prompts)
    # A row whose id now names another problem (an older split rule) is regenerated.
    stale = dict(rows[-1], a=rows[-1]["a"] + 1)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1] + [stale]))
    fourth = ScriptedGenerator(config)
    evaluate("scripted", LADDER, "1x1,1x2", n=5, name="r", out_root=tmp_path, config=config,
             generator=fourth, progress=False, log=lambda m: None)
    assert fourth.prompts == [rows[-1]["prompt"]]
    # A finished run re-evaluated generates nothing; another configuration is refused.
    third = ScriptedGenerator(config)
    evaluate("scripted", LADDER, "1x1,1x2", n=5, name="r", out_root=tmp_path, config=config,
             generator=third, progress=False, log=lambda m: None)
    assert third.prompts == []
    with pytest.raises(EvaluationError, match="another configuration"):
        evaluate("scripted", LADDER, "1x1,1x2", n=6, name="r", out_root=tmp_path,
                 config=config, generator=third, progress=False, log=lambda m: None)


def test_resume_reparses_with_the_current_markers(tmp_path: Path) -> None:
    """A resumed run re-parses the kept responses: never old parses beside new ones (two
    marker lists in one calibration)."""
    config = GenerationConfig(batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        evaluate("scripted", LADDER, "1x1,1x2", n=5, name="m", out_root=tmp_path,
                 config=config, generator=ScriptedGenerator(config, fail_after=4),
                 progress=False, log=lambda m: None)
    path = tmp_path / "m" / RESPONSES
    assert any(len(r["parse"]["attempts"]) == 2 for r in read_responses(path))
    evaluate("scripted", LADDER, "1x1,1x2", n=5, name="m", out_root=tmp_path, config=config,
             generator=ScriptedGenerator(config), markers=[], progress=False,
             log=lambda m: None)
    rows = read_responses(path)
    assert len(rows) == 15 and all(len(r["parse"]["attempts"]) == 1 for r in rows)
    assert read_record(tmp_path / "m")["results"]["markers"] == []


def test_resume_refuses_another_model(tmp_path: Path) -> None:
    """The run key holds a weights fingerprint: weights retrained in place do not reuse the
    old model's answers."""
    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0" * 10)
    config = GenerationConfig(batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        evaluate(str(model), LADDER, "1x1,1x2", n=5, name="w", out_root=tmp_path,
                 config=config, generator=ScriptedGenerator(config, fail_after=4),
                 progress=False, log=lambda m: None)
    (model / "model.safetensors").write_bytes(b"1" * 12)  # retrained in place
    with pytest.raises(EvaluationError, match="another model") as info:
        evaluate(str(model), LADDER, "1x1,1x2", n=5, name="w", out_root=tmp_path,
                 config=config, generator=ScriptedGenerator(config), progress=False,
                 log=lambda m: None)
    assert len(str(info.value).splitlines()) == 1


def _row(task: str, parse: dict, truncated: bool = False) -> dict:
    return {"task": task, "a": 1, "b": 1, "parse": parse, "truncated": truncated,
            "n_tokens": 10}


def _parse(*attempts: tuple[int | None, bool, str | None], final_correct: bool) -> dict:
    return {"attempts": [{"answer": a, "correct": c, "decision": d} for a, c, d in attempts],
            "final_answer": None, "correct": final_correct}


def test_calibrate_responses_counts() -> None:
    rows = [
        _row("t", _parse((1, True, "STOP"), final_correct=True)),
        _row("t", _parse((2, False, "RESAMPLE"), (1, True, "STOP"), final_correct=True)),
        _row("t", _parse((2, False, "STOP"), final_correct=False)),
        _row("t", _parse((2, False, None), (3, False, None), final_correct=False), True),
        _row("t", _parse((None, False, None), final_correct=False)),
    ]
    table = calibrate_responses(rows, n_boot=50)
    r = table.iloc[0]
    assert r["n"] == 5
    assert r["observed_accuracy"] == pytest.approx(2 / 5)
    assert r["p_hat"] == pytest.approx(1 / 5)
    assert r["p_pooled"] == pytest.approx(2 / 6)
    assert r["q1_hat"] == 1.0
    assert r["q2_hat"] == pytest.approx(1 / 2)  # truncation's attempts carry no decision
    assert r["echo_p_ft"] == 1.0
    assert r["truncated_rate"] == pytest.approx(1 / 5)
    assert r["answerless_rate"] == pytest.approx(1 / 5)
    assert r["predicted_accuracy_ci_low"] <= r["predicted_accuracy_ci_high"]
    assert len(calibrate_responses(rows, by=None)) == 1


def test_calibrate_reparse(tmp_path: Path) -> None:
    text = "3 * 4 = 11. On reflection, 3 * 4 = 12."
    rows = [{"task": "1x1", "a": 3, "b": 4, "response": text, "truncated": False,
             "parse": {"attempts": [], "final_answer": None, "correct": False}}]
    plain = calibrate_responses(rows, reparse=True, n_boot=5)
    custom = calibrate_responses(rows, reparse=True, markers=["On reflection"], n_boot=5)
    assert plain.iloc[0]["p_hat"] == 1.0 and custom.iloc[0]["p_hat"] == 0.0
    assert custom.iloc[0]["observed_accuracy"] == 1.0


# ---- the tiny random Qwen2, end to end through the CLI ---------------------------------------
def test_cli_eval_tiny_model(tmp_path: Path, tiny_checkpoint: Path) -> None:
    res = CliRunner().invoke(realmodel, [
        "eval", "--model", str(tiny_checkpoint), "--ladder", "1x1,2x2", "--id-tasks", "1x1",
        "--n", "3", "--name", "tiny", "--out", str(tmp_path), "--max-new-tokens", "12",
        "--batch-size", "3", "--backend", "transformers", "--quiet", "--n-boot", "10",
    ])
    assert res.exit_code == 0, res.output
    rows = read_responses(tmp_path / "tiny" / RESPONSES)
    assert len(rows) == 6
    assert all(r["n_tokens"] <= 12 for r in rows)
    assert all(r["truncated"] == (r["n_tokens"] == 12) for r in rows if r["truncated"])
    assert "wrote" in res.output and "1x1" in res.output
    record = read_record(tmp_path / "tiny")
    assert record["results"]["backend"] == "transformers"
    assert record["config"]["model_path"] == str(tiny_checkpoint)
    assert record["inputs"] == {"model": str(tiny_checkpoint)}


def test_cli_eval_missing_model_is_one_line(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(realmodel, [
        "eval", "--model", "no-such-org/no-such-model", "--ladder", "1x1", "--id-tasks", "1x1",
        "--n", "1", "--out", str(tmp_path), "--backend", "transformers", "--quiet",
    ])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: model 'no-such-org/no-such-model'")
    assert list(tmp_path.iterdir()) == []  # no half-made folder blocks the name


def test_cli_eval_vllm_without_gpu(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from realmodel.generation import vllm_available

    if vllm_available():
        pytest.skip("vLLM and a GPU are present")
    res = CliRunner().invoke(realmodel, [
        "eval", "--model", str(tiny_checkpoint), "--ladder", "1x1", "--id-tasks", "1x1",
        "--n", "1", "--out", str(tmp_path), "--backend", "vllm", "--quiet",
    ])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "Error: backend vllm needs the vllm package and a CUDA GPU "
        "(pip install 'ds-study[vllm]' on a GPU machine); use --backend transformers"
    ]
    assert list(tmp_path.iterdir()) == []
