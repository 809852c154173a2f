"""Every realmodel output folder carries one run record (core.records; realmodel/run_records.py):
`realmodel data` (kind "data"), `realmodel eval` ("eval"), `realmodel sft` / `grpo` ("sft",
"grpo"). A failed or interrupted run's record says so; a folder written by an older version
(an old-style manifest) or by another kind of run is refused in one line, never a KeyError.
The training runs' records on real training are checked in test_training_smoke.py and
test_training_gpu_script.py; here the trainer is a stand-in (no training)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from core.records import FIELDS, read_record, start_record
from realmodel.commands import realmodel
from realmodel.evaluation import EvaluationError, evaluate
from realmodel.generation import GenerationConfig, GenerationResult
from realmodel.run_records import trained_split_spec
from realmodel.tasks import split_spec
from tests.conftest import assert_clean_cli_error

LADDER = "1x1,1x2"
QUIET: dict[str, Any] = {"progress": False, "log": lambda m: None}
# what the previous version wrote (no schema; the run key at the top level)
OLD_EVAL = {"run_key": {"model": "scripted", "n": 2}, "status": "done", "model": "scripted",
            "markers": [], "started": "2026-01-01T00:00:00"}
OLD_TRAIN = {"method": "sft", "config": {"max_steps": 2}, "status": "done", "global_step": 2,
             "split_spec": {"id_tasks": ["1x1"]}}


class Scripted:
    backend = "scripted"

    def __init__(self, config: GenerationConfig, fail_at: int | None = None,
                 exc: BaseException | None = None) -> None:
        self.config, self.fail_at, self.calls = config, fail_at, 0
        self.exc = exc or RuntimeError("boom")

    def generate(self, prompts: list[str]) -> list[GenerationResult]:
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise self.exc
        self.calls += 1
        return [GenerationResult(f"So it is {a * b}.", 5, False)
                for a, b in (map(int, re.findall(r"\d+", p)) for p in prompts)]


def _eval(root: Path, gen: Any, name: str = "e", n: int = 2) -> Any:
    return evaluate("scripted", LADDER, "1x1", n=n, name=name, out_root=root,
                    config=gen.config, generator=gen, **QUIET)


def _one_line(message: str, *words: str) -> None:
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    from realmodel_fixtures import save_tiny_checkpoint

    return str(save_tiny_checkpoint(tmp_path_factory))


# ---- eval --------------------------------------------------------------------------------
def test_eval_record(tmp_path: Path) -> None:
    config = GenerationConfig(batch_size=2, seed=3)
    res = _eval(tmp_path, Scripted(config))
    record = read_record(tmp_path / "e")
    assert set(record) == set(FIELDS) and record == res.record
    assert record["kind"] == "eval" and record["status"] == "done" and record["error"] is None
    assert record["config"] == {
        "model": "scripted", "tasks": ["1x1", "1x2"], "id_tasks": ["1x1"], "n": 2,
        "split_seed": 0, "generation": config.to_dict() | {"batch_size": None},
        "model_path": None, "weights": None}
    results = record["results"]
    assert results["split_spec"] == split_spec(LADDER, "1x1", 0)
    assert results["n_queries"] == 4 and results["n_generated_this_run"] == 4
    assert results["backend"] == "scripted" and results["backend_requested"] == "auto"
    assert results["previous_sessions"] == [] and results["n_boot"] == 100
    assert {"markers", "seeding", "max_attempts"} <= set(results)
    assert record["packages"]["transformers"] and record["finished"]
    # a second session records the first one
    _eval(tmp_path, Scripted(config))
    again = read_record(tmp_path / "e")
    first, = again["results"]["previous_sessions"]
    assert first["status"] == "done" and first["n_generated_this_run"] == 4
    assert again["results"]["n_generated_this_run"] == 0 and again["results"]["backend"] is None


@pytest.mark.parametrize(("exc", "status"), [(RuntimeError("CUDA error\nmore"), "failed"),
                                             (KeyboardInterrupt(), "interrupted")])
def test_a_failed_or_interrupted_eval_says_so(tmp_path: Path, exc: BaseException,
                                              status: str) -> None:
    config = GenerationConfig(batch_size=2)
    with pytest.raises(type(exc)):
        _eval(tmp_path, Scripted(config, fail_at=1, exc=exc))
    record = read_record(tmp_path / "e")
    assert record["kind"] == "eval" and record["status"] == status
    assert record["error"].startswith(type(exc).__name__) and "\n" not in record["error"]
    assert record["results"]["n_generated_this_run"] == 2 and record["finished"]


def test_eval_refuses_an_old_style_manifest(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "manifest.json").write_text(json.dumps(OLD_EVAL))
    with pytest.raises(EvaluationError) as info:
        _eval(tmp_path, Scripted(GenerationConfig()))
    _one_line(str(info.value), "start a new run", "--name")
    assert json.loads((tmp_path / "e" / "manifest.json").read_text()) == OLD_EVAL  # untouched


def test_eval_cli_refuses_an_old_style_manifest_in_one_line(tiny: str, tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "manifest.json").write_text(json.dumps(OLD_EVAL))
    res = CliRunner().invoke(realmodel, [
        "eval", "--model", tiny, "--ladder", "1x1", "--id-tasks", "1x1", "--n", "1",
        "--name", "e", "--out", str(tmp_path), "--backend", "transformers", "--quiet"])
    assert_clean_cli_error(res)
    assert res.exit_code == 1
    line, = res.output.strip().splitlines()
    _one_line(line, "Error: ", "start a new run", "--name")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["manifest.json"]


def test_eval_refuses_a_folder_of_another_kind(tmp_path: Path) -> None:
    start_record(tmp_path / "e", "sft", {"max_steps": 2})
    with pytest.raises(EvaluationError) as info:
        _eval(tmp_path, Scripted(GenerationConfig()))
    _one_line(str(info.value), "holds a sft run", "--name")


# ---- data --------------------------------------------------------------------------------
_DATA = ["data", "--ladder", "1x1,1x2", "--id-tasks", "1x1", "--n-train", "6", "--n-test", "2",
         "--seed", "4"]


def test_data_record(tmp_path: Path) -> None:
    res = CliRunner().invoke(realmodel, [*_DATA, "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    record = read_record(tmp_path / "d")
    assert record["kind"] == "data" and record["status"] == "done"
    assert record["config"] == {"tasks": "1x1,1x2", "id_tasks": "1x1", "n_train": 6,
                                "n_test": 2, "seed": 4, "ft_share": 0.5, "n_reflections": 1}
    results = record["results"]
    assert results["split_spec"] == split_spec("1x1,1x2", "1x1", 4)
    assert results["counts"] == {"train": 6, "test": 4, "sft_no_reflection": 6,
                                 "sft_reflection": 6}
    assert [Path(p).name for p in results["files"]] == [
        "train.jsonl", "test.jsonl", "sft_no_reflection.jsonl", "sft_reflection.jsonl"]
    # rerunning into its own folder is fine
    assert CliRunner().invoke(realmodel, [*_DATA, "--out", str(tmp_path / "d")]).exit_code == 0


def test_a_failed_data_run_in_an_existing_folder_says_so(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from realmodel import tasks

    def full_disk(records: list, path: Path) -> None:
        raise OSError(28, "No space left on device")

    (tmp_path / "d").mkdir()
    monkeypatch.setattr(tasks, "write_records", full_disk)
    res = CliRunner().invoke(realmodel, [*_DATA, "--out", str(tmp_path / "d")])
    assert_clean_cli_error(res)
    record = read_record(tmp_path / "d")
    assert record["kind"] == "data" and record["status"] == "failed"
    assert "No space left" in record["error"]


@pytest.mark.parametrize("what", ["old-style", "eval"])
def test_data_refuses_a_folder_it_did_not_write(tmp_path: Path, what: str) -> None:
    out = tmp_path / "d"
    if what == "eval":
        start_record(out, "eval", {})
    else:
        out.mkdir()
        (out / "manifest.json").write_text(json.dumps(OLD_EVAL))
    before = (out / "manifest.json").read_text()
    res = CliRunner().invoke(realmodel, [*_DATA, "--out", str(out)])
    assert_clean_cli_error(res)
    line, = res.output.strip().splitlines()
    _one_line(line, "Error: ", "--out")
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


# ---- sft / grpo (a stand-in trainer: no training) ----------------------------------------
class Broken:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def train(self, resume_from_checkpoint: object = None) -> None:
        raise self.exc


@pytest.mark.parametrize("method", ["sft", "grpo"])
@pytest.mark.parametrize(("exc", "status"), [(RuntimeError("boom\nsecond"), "failed"),
                                             (KeyboardInterrupt(), "interrupted")])
def test_a_failed_or_interrupted_training_says_so(tiny: str, tmp_path: Path, method: str,
                                                  exc: BaseException, status: str) -> None:
    from realmodel.training import runs
    from realmodel.training.config import grpo_preset, sft_preset

    preset = sft_preset if method == "sft" else grpo_preset
    cfg = preset("cpu-smoke", model=tiny, output_root=str(tmp_path))
    out = tmp_path / cfg.name()
    out.mkdir()
    with pytest.raises(type(exc)):
        runs.train_and_save(Broken(exc), None, cfg, out, None, "cpu")
    record = read_record(out)
    assert record["kind"] == method and record["status"] == status
    assert record["error"].startswith(type(exc).__name__) and "\n" not in record["error"]
    assert record["config"] == cfg.to_dict() and record["inputs"] == {"model": tiny}
    assert record["results"]["split_spec"] == runs.run_split_spec(cfg)
    assert record["results"]["device"] == "cpu" and record["wall_time_s"] is not None


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_resume_refuses_an_old_style_manifest_in_one_line(tiny: str, tmp_path: Path,
                                                          method: str) -> None:
    out = tmp_path / "old"
    (out / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps(OLD_TRAIN))
    res = CliRunner().invoke(realmodel, [method, "--preset", "cpu-smoke", "--model", tiny,
                                         "--out", str(tmp_path), "--name", "old",
                                         "--resume"])
    assert_clean_cli_error(res)
    assert res.exit_code == 1
    line, = res.output.strip().splitlines()
    _one_line(line, "Error: ", "start a new run", "--name")
    assert json.loads((out / "manifest.json").read_text()) == OLD_TRAIN  # untouched


def test_resume_refuses_a_run_of_another_kind(tiny: str, tmp_path: Path) -> None:
    from realmodel.training.config import grpo_preset
    from realmodel.training.grpo import run_grpo
    from realmodel.training.runs import TrainingError

    cfg = grpo_preset("cpu-smoke", model=tiny, output_root=str(tmp_path), run_name="r")
    (tmp_path / "r" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    start_record(tmp_path / "r", "sft", cfg.to_dict())
    with pytest.raises(TrainingError) as info:
        run_grpo(cfg, resume=True, log=lambda m: None)
    _one_line(str(info.value), "holds a sft run, not grpo")


# ---- the split spec of a trained model ----------------------------------------------------
def test_trained_split_spec_reads_split_spec_json_or_the_run_record(tmp_path: Path) -> None:
    spec = split_spec(LADDER, "1x1", 7)
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    assert trained_split_spec(str(final)) is None  # nothing there
    start_record(tmp_path / "run", "grpo", {}, split_spec=spec)
    assert trained_split_spec(str(final)) == spec  # from the run record's results
    (final / "split_spec.json").write_text(json.dumps({**spec, "seed": 8}))
    assert trained_split_spec(final)["seed"] == 8  # split_spec.json comes first
    (final / "split_spec.json").unlink()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(OLD_TRAIN))
    assert trained_split_spec(str(final)) is None  # an old-style manifest: no warning basis
    start_record(tmp_path / "run", "eval", {}, split_spec=spec)
    assert trained_split_spec(str(final)) is None  # not a training run
    assert trained_split_spec(("model", "tokenizer")) is None
