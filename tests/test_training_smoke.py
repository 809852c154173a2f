"""CPU smoke paths of SFT and GRPO on a tiny random model (DESIGN.md §5): a few steps
complete, the weights change, the logs and the run record are written, --resume continues."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from core.records import read_record  # noqa: E402
from realmodel.models import tiny_random_model  # noqa: E402
from realmodel.training.config import grpo_preset, sft_preset  # noqa: E402
from realmodel.training.grpo import correctness_reward, run_grpo  # noqa: E402
from realmodel.training.runs import TrainingError  # noqa: E402
from realmodel.training.sft import run_sft  # noqa: E402

TINY = dict(ladder="1x1,1x2,2x2", id_tasks="1x1,1x2", n_train=16, n_test=4, calib_n=2,
            calib_every=1, calib_max_new_tokens=8, max_steps=2, save_steps=1,
            logging_steps=1, per_device_train_batch_size=4)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    model, tokenizer = tiny_random_model(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> int:
    assert before.keys() == after.keys()
    return sum(not torch.equal(before[k], after[k]) for k in before)


def digit_share(completions: list, **_: object) -> list[float]:
    """A dense test reward (share of digits): a random model never earns the correctness
    reward, and all-zero rewards give zero advantages, hence no update."""
    texts = [c[0]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def _check_run(out: Path, record: dict, steps: int, tasks: list[str], kind: str) -> None:
    assert record == read_record(out)  # what run_sft / run_grpo return is the stored record
    assert record["kind"] == kind and record["status"] == "done" and record["error"] is None
    res = record["results"]
    assert res["global_step"] == steps and res["steps_this_run"] == steps
    assert record["config"]["max_steps"] == steps and record["wall_time_s"] > 0
    assert res["final_model"] == str(out / "final") and res["s_per_step"] > 0
    assert res["device"] == "cpu" and res["resumed_from"] is None
    assert res["previous_sessions"] == [] and res["stopped_by_time_budget_at"] is None
    calib = pd.read_parquet(out / "calibration.parquet")
    assert sorted(calib["step"].unique()) == list(range(steps + 1))  # 0, every step, end
    assert set(calib["task"]) == set(tasks)
    for col in ("p_hat", "q1_hat", "q2_hat", "observed_accuracy", "n"):
        assert col in calib.columns
    log = pd.read_parquet(out / "train_log.parquet")
    assert {"step", "loss"} <= set(log.columns) and log["step"].max() == steps
    assert (out / "checkpoints" / f"checkpoint-{steps}").is_dir()


def test_sft_cpu_smoke_changes_the_weights(tiny_path: Path, tmp_path: Path) -> None:
    cfg = sft_preset("cpu-smoke", model=str(tiny_path), output_root=str(tmp_path),
                     max_length=256, learning_rate=1e-2, **TINY)
    record = run_sft(cfg, log=lambda m: None)
    out = tmp_path / cfg.name()
    _check_run(out, record, 2, ["1x1", "1x2", "2x2"], "sft")
    assert _changed(_weights(tiny_path), _weights(out / "final")) > 0
    spec = json.loads((out / "final" / "split_spec.json").read_text())
    assert spec == record["results"]["split_spec"]
    assert spec["id_tasks"] == ["1x1", "1x2"] and spec["seed"] == cfg.seed
    # evaluating it on another split warns in one line
    from realmodel.evaluation import evaluate
    from realmodel.generation import GenerationConfig, GenerationResult

    class Echo:
        backend = "echo"

        def generate(self, prompts: list[str]) -> list[GenerationResult]:
            return [GenerationResult("no idea", 2, False) for _ in prompts]

    for seed, warned in ((cfg.seed, False), (cfg.seed + 1, True)):
        messages: list[str] = []
        evaluate(str(out / "final"), "1x1,1x2", "1x1,1x2", n=2, name=f"e{seed}",
                 out_root=tmp_path / "eval", config=GenerationConfig(), generator=Echo(),
                 split_seed=seed, progress=False, log=messages.append)
        assert any(m.startswith("warning:") for m in messages) is warned, messages


def test_grpo_cpu_smoke_changes_the_weights_and_resumes(tiny_path: Path,
                                                        tmp_path: Path) -> None:
    cfg = grpo_preset("cpu-smoke", model=str(tiny_path), output_root=str(tmp_path),
                      num_generations=2, max_new_tokens=8, learning_rate=1e-2, **TINY)
    assert cfg.beta == 0.001  # the reference model is loaded from the model's path
    record = run_grpo(cfg, log=lambda m: None, reward_funcs=[digit_share, correctness_reward])
    out = tmp_path / cfg.name()
    _check_run(out, record, 2, ["1x1", "1x2", "2x2"], "grpo")
    log = pd.read_parquet(out / "train_log.parquet")
    assert {"kl", "reward", "rewards/correctness_reward/mean"} <= set(log.columns)
    assert log["reward_std"].max() > 0
    assert _changed(_weights(tiny_path), _weights(out / "final")) > 0

    with pytest.raises(TrainingError, match="--resume"):  # a fresh run refuses the folder
        run_grpo(cfg, log=lambda m: None)
    longer = grpo_preset("cpu-smoke", model=str(tiny_path), output_root=str(tmp_path),
                         num_generations=2, max_new_tokens=8, learning_rate=1e-2,
                         **{**TINY, "max_steps": 3})
    with pytest.raises(TrainingError, match="other settings"):
        run_grpo(longer, resume=True, log=lambda m: None)


def test_sft_lora_resume_continues_from_the_last_checkpoint(tiny_path: Path,
                                                            tmp_path: Path) -> None:
    cfg = sft_preset("cpu-smoke", model=str(tiny_path), output_root=str(tmp_path),
                     max_length=128, use_lora=True, lora_r=4, lora_alpha=8,
                     lora_target_modules=("q_proj", "v_proj"), learning_rate=1e-2,
                     **{**TINY, "calib_every": 0})
    run_sft(cfg, log=lambda m: None)
    out = tmp_path / cfg.name()
    final = _weights(out / "final")  # LoRA merged into a plain checkpoint
    assert not any("lora" in k for k in final)
    assert _changed(_weights(tiny_path), final) > 0
    # resuming a finished run replays nothing and keeps the logs consistent
    record = run_sft(cfg, resume=True, log=lambda m: None)
    assert record["results"]["resumed_from"].endswith("checkpoint-2")
    # the first session is kept in the record of the resumed one
    first, = record["results"]["previous_sessions"]
    assert first["status"] == "done" and first["global_step"] == 2
    calib = pd.read_parquet(out / "calibration.parquet")
    assert calib.groupby(["step", "task"]).size().max() == 1


def test_cli_errors_are_one_line(tiny_path: Path, tmp_path: Path) -> None:
    from realmodel.commands import realmodel

    runner = CliRunner()
    res = runner.invoke(realmodel, ["sft", "--preset", "cpu-smoke", "--model",
                                    str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.output.startswith("Error: ") and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(realmodel, ["grpo", "--preset", "cpu-smoke", "--beta", "-1"])
    assert res.exit_code != 0 and "beta" in res.output and "Traceback" not in res.output
    res = runner.invoke(realmodel, ["grpo", "--preset", "cpu-smoke", "--resume",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 1 and "no checkpoint" in res.output
    res = runner.invoke(realmodel, ["sft", "--preset", "paper", "--print-config"])
    assert res.exit_code == 0 and "Qwen/Qwen2.5-7B-Instruct" in res.output
    assert "80 GB H100" in res.output
