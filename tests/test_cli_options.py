"""The config dataclass is the CLI (core.cli_options): `train`, `fit`, `realmodel sft` and
`realmodel grpo` take their options from TrainConfig, FitConfig, SFTRunConfig and
GRPORunConfig, so no default is written twice."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from analysis.commands import FIT_OPTIONS, compare, fit
from analysis.fit import FitConfig
from core.cli_options import PRESET_DEFAULT, config_options, doc, field_help
from realmodel.training.commands import GRPO_OPTIONS, SFT_OPTIONS, grpo, sft
from realmodel.training.config import GRPORunConfig, SFTRunConfig
from sim.population_commands import TRAIN_OPTIONS, train
from sim.training_run import TrainConfig

# command, its config, whether options default to "the preset's", the options that are not
# config fields (where the output goes, the preset itself), the fields left out on purpose
CASES = [
    (train, TrainConfig, False, {"name", "out"}, {"theta0"}),
    (fit, FitConfig, False, {"observed", "out_root", "name"}, set()),
    (compare, FitConfig, False, {"observed", "out_root", "name"}, set()),
    (sft, SFTRunConfig, True, {"preset", "resume", "print_config", "config_file"},
     {"preset", "trl_args"}),
    (grpo, GRPORunConfig, True, {"preset", "resume", "print_config", "config_file"},
     {"preset", "trl_args"}),
]
IDS = [case[0].name for case in CASES]


@pytest.mark.parametrize("command,config,preset,others,left_out", CASES, ids=IDS)
def test_option_defaults_are_the_field_defaults(command: click.Command, config: type,
                                                preset: bool, others: set[str],
                                                left_out: set[str]) -> None:
    fields = {f.name: f for f in dataclasses.fields(config)}
    seen = set()
    for param in command.params:
        if param.name in others:
            continue
        assert param.name in fields, f"{command.name} option {param.opts} is no field"
        seen.add(param.name)
        if preset:
            assert param.default is None, (param.name, param.default)  # "the preset's"
            assert param.show_default == PRESET_DEFAULT
        else:
            assert param.default == fields[param.name].default, param.name
    assert seen == set(fields) - left_out, sorted(set(fields) - left_out - seen)


@pytest.mark.parametrize("config", [TrainConfig, FitConfig, SFTRunConfig, GRPORunConfig])
def test_every_field_is_documented_once(config: type) -> None:
    for f in dataclasses.fields(config):
        assert field_help(f), f.name
        design = f.metadata.get("design")
        assert design is None or design.startswith("§"), (f.name, design)


def test_option_help_is_the_fields_help() -> None:
    fields = {f.name: f for f in dataclasses.fields(GRPORunConfig)}
    options = {p.name: p for p in grpo.params}
    assert options["beta"].help == field_help(fields["beta"])
    assert "DESIGN §2" in options["beta"].help


def test_flags_map_fields_to_their_options() -> None:
    assert TRAIN_OPTIONS.flags["n_agents"] == "--agents"
    assert TRAIN_OPTIONS.flags["max_attempts"] == "--max-attempts"
    assert FIT_OPTIONS.flags["length"] == "--length"
    for opts in (SFT_OPTIONS, GRPO_OPTIONS):
        assert opts.flags["run_name"] == "--name" and opts.flags["output_root"] == "--out"
    assert GRPO_OPTIONS.flags["max_new_tokens"] == "--max-new-tokens"
    assert GRPO_OPTIONS.flags["backend"] == "--backend"


def test_an_option_given_overrides_the_preset(tmp_path) -> None:
    import json

    from realmodel.commands import realmodel

    res = CliRunner().invoke(realmodel, ["grpo", "--preset", "cpu-smoke", "--max-new-tokens",
                                         "7", "--backend", "transformers", "--no-bf16",
                                         "--lora-target-modules", "q_proj,v_proj",
                                         "--print-config"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)["run_config"]
    assert cfg["max_new_tokens"] == 7 and cfg["backend"] == "transformers"
    assert cfg["lora_target_modules"] == ["q_proj", "v_proj"]
    assert cfg["learning_rate"] == 3e-5  # the preset's, not a CLI default


# ---- the helper itself, on a toy config --------------------------------------------------


@dataclass(frozen=True)
class Toy:
    rate: float = field(default=0.5, metadata=doc("a rate", "§2"))
    count: int = field(default=3, metadata=doc("a count"))
    mode: Literal["a", "b"] = field(default="a", metadata=doc("a mode"))
    kind: str = field(default="x", metadata=doc("a kind", choices=("x", "y")))
    limit: int | None = field(default=None, metadata=doc("a limit (None: none)"))
    on: bool = field(default=False, metadata=doc("switch it on"))
    keep: bool = field(default=True, metadata=doc("keep it"))
    names: tuple[str, ...] = field(default=("p", "q"), metadata=doc("names"))


def _toy_command(**kwargs) -> tuple[click.Command, list]:
    built = []
    options = config_options(Toy, **kwargs)

    @click.command()
    @options
    def toy(**values) -> None:
        built.append(Toy(**options.values(values)))

    return toy, built


def test_defaults_round_trip_to_the_config() -> None:
    toy, built = _toy_command()
    assert CliRunner().invoke(toy, []).exit_code == 0
    assert built == [Toy()]


def test_types_choices_and_flags() -> None:
    toy, built = _toy_command(rename={"rate": ("-r", "--rate")})
    res = CliRunner().invoke(toy, ["-r", "0.25", "--count", "4", "--mode", "b", "--kind", "y",
                                   "--limit", "9", "--on", "--no-keep", "--names", "u,v,w"])
    assert res.exit_code == 0, res.output
    assert built == [Toy(0.25, 4, "b", "y", 9, True, False, ("u", "v", "w"))]
    bad = CliRunner().invoke(toy, ["--kind", "z"])
    assert bad.exit_code == 2 and "--kind" in bad.output
    help_text = CliRunner().invoke(toy, ["--help"]).output
    assert "a rate (DESIGN §2)" in help_text and "[default: 0.5]" in help_text
    assert "--keep / --no-keep" in help_text and "[default: p, q]" in help_text


def test_preset_mode_defaults_to_none() -> None:
    toy, _ = _toy_command(preset=True)
    params = {p.name: p for p in toy.params}
    assert all(p.default is None for p in params.values())
    assert params["on"].secondary_opts == ["--no-on"]


def test_include_exclude_extra_help_and_callbacks() -> None:
    def double(ctx, param, value):
        return value * 2

    toy, built = _toy_command(include=("count", "rate"), exclude=("rate",),
                              extra_help={"count": "(more)"}, callbacks={"count": double})
    assert [p.name for p in toy.params] == ["count"]
    assert toy.params[0].help == "a count (more)"
    assert CliRunner().invoke(toy, ["--count", "5"]).exit_code == 0
    assert built == [Toy(count=10)]


def test_a_field_without_help_or_type_is_refused_at_once() -> None:
    @dataclass
    class Bare:
        x: int = 1

    @dataclass
    class Odd:
        x: dict = field(default_factory=dict, metadata=doc("odd"))

    with pytest.raises(ValueError, match="no help"):
        config_options(Bare)
    with pytest.raises(TypeError, match="no click type"):
        config_options(Odd)
    with pytest.raises(ValueError, match="no field"):
        config_options(Toy, rename={"nope": "--nope"})
