"""`realmodel sft|grpo --config FILE` (realmodel/training/config_file.py, DESIGN.md §5): any
run-config field or TRL SFTConfig/GRPOConfig field, preset < file < options, one-line errors,
and `--print-config` showing the final TRL config without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402

from realmodel.commands import realmodel  # noqa: E402
from tests.conftest import assert_clean_cli_error  # noqa: E402


def _file(folder: Path, text: str, name: str = "f.yaml") -> str:
    path = folder.parent / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _print(*args: str) -> dict:
    res = CliRunner().invoke(realmodel, [*args, "--print-config"])
    assert res.exit_code == 0, res.output
    return json.JSONDecoder().raw_decode(res.output)[0]  # the paper presets add a note


def _error(*args: str) -> str:
    res = CliRunner().invoke(realmodel, list(args))
    assert_clean_cli_error(res)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


def test_done_when_print_config_shows_the_files_values_in_the_final_grpo_config(
        cwd: Path) -> None:
    path = _file(cwd, "max_grad_norm: 0.37\nlearning_rate: 2.0e-6\nreport_to: tensorboard\n"
                      "num_generations: 4\n")
    res = CliRunner().invoke(realmodel, ["grpo", "--config", path, "--print-config"])
    assert res.exit_code == 0, res.output
    for line in ('"max_grad_norm": 0.37', '"learning_rate": 2e-06', '"num_generations": 4'):
        assert line in res.output
    out = json.loads(res.output)
    trl = out["trl_config"]
    assert out["trl_config_class"] == "trl.GRPOConfig"
    assert trl["max_grad_norm"] == 0.37 and trl["learning_rate"] == 2e-6
    assert trl["report_to"] == ["tensorboard"] and trl["num_generations"] == 4
    assert len(trl) > 150  # every GRPOConfig field
    run = out["run_config"]
    assert run["learning_rate"] == 2e-6 and run["report_to"] == ["tensorboard"]
    assert run["trl_args"] == {"max_grad_norm": 0.37} and run["preset"] == "smol"
    # the run-config choices reach TRL under their TRL names
    assert trl["max_completion_length"] == run["max_new_tokens"] == 48
    assert trl["loss_type"] == "grpo" and trl["lr_scheduler_type"] == "linear"  # smol's
    assert trl["output_dir"] == "outputs/real/grpo-smol/checkpoints"
    assert list(cwd.iterdir()) == []  # nothing loaded, nothing written


def test_print_config_of_the_paper_preset_uses_verls_choices(cwd: Path) -> None:
    out = _print("grpo", "--preset", "paper")
    trl = out["trl_config"]
    assert trl["loss_type"] == "dapo" and trl["lr_scheduler_type"] == "constant"
    assert trl["mask_truncated_completions"] is False and trl["beta"] == 0.001
    assert trl["bf16"] is True and trl["use_cpu"] is False and out["target_device"] == "cuda"
    assert _print("sft", "--preset", "cpu-smoke")["trl_config"]["completion_only_loss"]


def test_precedence_is_preset_then_file_then_options(cwd: Path) -> None:
    base = ["grpo", "--preset", "cpu-smoke"]
    assert _print(*base)["run_config"]["learning_rate"] == 3e-5  # the preset's
    path = _file(cwd, "learning_rate: 2e-6\nmax_completion_length: 24\ntop_p: 0.9\n")
    out = _print(*base, "--config", path)
    assert out["run_config"]["learning_rate"] == 2e-6  # YAML's "2e-6" is a string: converted
    assert out["run_config"]["max_new_tokens"] == out["trl_config"]["max_completion_length"] == 24
    assert out["trl_config"]["top_p"] == 0.9
    out = _print(*base, "--config", path, "--lr", "1e-4", "--max-new-tokens", "16")
    assert out["trl_config"]["learning_rate"] == 1e-4
    assert out["trl_config"]["max_completion_length"] == 16  # the option beats the TRL name
    assert out["trl_config"]["top_p"] == 0.9


def test_the_files_preset_stands_unless_the_option_names_one(cwd: Path) -> None:
    path = _file(cwd, "preset: cpu-smoke\nuse_cpu: true\nscale_rewards: false\n")
    out = _print("grpo", "--config", path)
    assert out["run_config"]["preset"] == "cpu-smoke" and out["run_config"]["device"] == "cpu"
    assert out["trl_config"]["scale_rewards"] == "none"  # TRL's False
    assert _print("grpo", "--config", path, "--preset", "smol")["run_config"]["preset"] == "smol"


def test_warmup_steps_in_the_file_replaces_the_presets_warmup_ratio(cwd: Path) -> None:
    assert _print("sft", "--preset", "paper")["trl_config"]["warmup_steps"] == 0.03
    out = _print("sft", "--preset", "paper", "--config", _file(cwd, "warmup_steps: 10\n"))
    assert out["run_config"]["warmup_ratio"] == 0 and out["trl_config"]["warmup_steps"] == 10


@pytest.mark.parametrize("text,words", [
    ("max_grad_nrm: 0.3\n", ["unknown key 'max_grad_nrm'", "max_grad_norm", "GRPOConfig"]),
    ("packing: true\n", ["unknown key 'packing'"]),  # an SFTConfig field, not GRPO's
    ("output_dir: /tmp/x\n", ["output_dir", "output_root"]),
    ("max_grad_norm: abc\n", ["max_grad_norm", "abc"]),
    ("max_grad_norm: [1]\n", ["max_grad_norm"]),
    ("lr_scheduler_type: cosinus\n", ["lr_scheduler_type", "cosinus"]),
    ("num_generations: 2.5\n", ["num_generations", "2.5"]),
    ("learning_rate: -1\n", ["learning_rate (f.yaml)", "> 0"]),
    ("lr_scheduler_type: constant\nwarmup_ratio: 0.1\n", ["constant_with_warmup"]),
    ("report_to: tensorbored\n", ["report_to", "tensorbored"]),
    ("generation_batch_size: 16\nsteps_per_generation: 2\n", ["trl.GRPOConfig", "both"]),
    ("- a list\n", ["mapping"]),
])
def test_bad_files_are_one_line_errors(cwd: Path, text: str, words: list[str]) -> None:
    line = _error("grpo", "--preset", "cpu-smoke", "--config", _file(cwd, text),
                  "--print-config")
    for word in words:
        assert word in line, line
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("text,words", [
    ("max_new_tokens: 32\nmax_completion_length: 64\n", ["max_completion_length: 64",
                                                          "max_new_tokens: 32"]),
    ("backend: transformers\nuse_vllm: true\n", ["use_vllm", "backend"]),
    ("device: cuda\nuse_cpu: true\n", ["use_cpu", "device"]),
    ("top_p: 0.9\ntrl_args: {top_p: 0.8}\n", ["top_p", "twice"]),
])
def test_contradictions_are_one_line_errors(cwd: Path, text: str, words: list[str]) -> None:
    line = _error("grpo", "--config", _file(cwd, text), "--print-config")
    assert "contradicts" in line or "twice" in line
    for word in words:
        assert word in line, line


def test_agreeing_spellings_are_one_setting(cwd: Path) -> None:
    text = "backend: auto\nuse_vllm: false\nmax_new_tokens: 8\nmax_completion_length: 8\n"
    out = _print("grpo", "--config", _file(cwd, text))
    assert out["run_config"]["backend"] == "transformers"  # the pinned spelling wins
    assert out["trl_config"]["use_vllm"] is False


def test_print_config_is_reusable_as_a_config_file(cwd: Path) -> None:
    """The run_config of --print-config fed back through --config gives the same run."""
    first = _print("grpo", "--preset", "cpu-smoke", "--config",
                   _file(cwd, "top_k: 5\nloss_type: dr_grpo\n"))
    again = _print("grpo", "--config",
                   _file(cwd, json.dumps(first["run_config"]), name="again.json"))
    assert again == first
