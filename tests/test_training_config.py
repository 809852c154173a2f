"""Run configs and presets validate (DESIGN.md §5); no torch needed."""

from __future__ import annotations

import dataclasses

import pytest

from realmodel.training.config import (
    GRPO_PRESETS,
    PRESET_NAMES,
    SFT_PRESETS,
    GRPORunConfig,
    SFTRunConfig,
    grpo_preset,
    sft_preset,
)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_build_and_validate(name: str) -> None:
    sft, grpo = sft_preset(name), grpo_preset(name)
    assert sft.preset == grpo.preset == name
    assert sft.name() == f"sft-{name}-reflection"
    assert grpo.name() == f"grpo-{name}"
    # GRPO groups: the effective batch holds whole groups of completions
    batch = grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps
    assert batch % grpo.num_generations == 0
    assert grpo.beta == 0.001 and grpo.temperature == 1.0  # the paper's KL and sampling


def test_paper_presets_carry_the_papers_hyperparameters() -> None:
    sft, grpo = sft_preset("paper"), grpo_preset("paper")
    assert sft.model == grpo.model == "Qwen/Qwen2.5-7B-Instruct"
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps == 128
    assert sft.num_train_epochs == 4 and sft.optim.startswith("adam")
    assert grpo.num_generations == 8 and grpo.num_train_epochs == 2
    completions_per_step = grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps
    assert completions_per_step // grpo.num_generations == 128  # mini-batch 128 prompts
    assert grpo.per_device_train_batch_size * grpo.steps_per_generation == 512 * 8  # batch 512
    assert grpo.max_new_tokens == 8192
    assert sft.use_lora and grpo.use_lora and sft.bf16 and sft.gradient_checkpointing
    assert sft.n_train == 20000 and sft.n_test == 100


def test_smol_grpo_matches_the_measured_setting() -> None:
    cfg = grpo_preset("smol")
    assert cfg.per_device_train_batch_size // cfg.num_generations == 8
    assert cfg.max_new_tokens == 48 and cfg.learning_rate == 3e-5


def test_cpu_smoke_runs_on_the_cpu_in_a_few_steps() -> None:
    for cfg in (sft_preset("cpu-smoke"), grpo_preset("cpu-smoke")):
        assert cfg.device == "cpu" and not cfg.bf16 and 0 < cfg.max_steps <= 10


def test_overrides_apply_and_none_means_not_given() -> None:
    cfg = sft_preset("smol", data="no-reflection", learning_rate=None, max_steps=3)
    assert cfg.data == "no-reflection" and cfg.max_steps == 3
    assert cfg.learning_rate == SFT_PRESETS["smol"]["learning_rate"]
    assert cfg.name() == "sft-smol-no-reflection"
    assert grpo_preset("smol", run_name="mine").name() == "mine"


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (SFTRunConfig, {"data": "other"}, "data must be one of"),
        (SFTRunConfig, {"ft_share": 1.5}, "ft_share"),
        (SFTRunConfig, {"ladder": "1x1,banana"}, "ladder"),
        (SFTRunConfig, {"id_tasks": "3x3"}, "not on the ladder"),
        (SFTRunConfig, {"learning_rate": 0.0}, "learning_rate"),
        (SFTRunConfig, {"max_steps": 0}, "max_steps"),
        (SFTRunConfig, {"n_test": 4, "calib_n": 8}, "calib_n"),
        (SFTRunConfig, {"device": "tpu"}, "device"),
        (SFTRunConfig, {"lora_dropout": 1.0}, "lora_dropout"),
        (GRPORunConfig, {"num_generations": 1, "per_device_train_batch_size": 1},
         "num_generations"),
        (GRPORunConfig, {"per_device_train_batch_size": 6}, "multiple of num_generations"),
        (GRPORunConfig, {"beta": -0.1}, "beta"),
        (GRPORunConfig, {"loss_type": "ppo"}, "loss_type"),
        (GRPORunConfig, {"backend": "yes"}, "backend"),
        (SFTRunConfig, {"max_train_seconds": -1.0}, "max_train_seconds"),
        (GRPORunConfig, {"max_train_seconds": float("inf")}, "max_train_seconds"),
        (GRPORunConfig, {"max_train_seconds": float("nan")}, "max_train_seconds"),
    ],
)
def test_bad_settings_are_refused(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_configs_are_frozen_and_replace_revalidates() -> None:
    cfg = grpo_preset("cpu-smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.beta = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="beta"):
        dataclasses.replace(cfg, beta=-1.0)


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="preset must be one of"):
        sft_preset("huge")
    assert set(SFT_PRESETS) == set(GRPO_PRESETS) == set(PRESET_NAMES)


def test_to_dict_round_trips() -> None:
    cfg = sft_preset("cpu-smoke")
    data = cfg.to_dict()
    data["lora_target_modules"] = tuple(data["lora_target_modules"])
    del data["preset"]
    assert SFTRunConfig(preset="cpu-smoke", **data) == cfg
