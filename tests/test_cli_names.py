"""One flag name per concept across every command (cli.main and the `realmodel` group), and
every option says what it does (its help text)."""

from __future__ import annotations

import click
import pytest

from cli import main

# concept -> (the one flag, parameter names and flags that would be another spelling of it)
CONCEPTS: dict[str, tuple[str, set[str]]] = {
    "KL estimator": ("--kl-estimator", {"estimator", "kl_estimator", "--estimator"}),
    "KL placement": ("--kl-placement", {"placement", "kl_placement", "--placement"}),
    "task ladder": ("--ladder", {"ladder", "tasks", "task_ladder", "--tasks"}),
    "output folder": ("--out", {"out", "out_dir", "out_root", "output_root", "output_dir",
                                "--out-root", "--output", "--output-dir", "--out-dir"}),
    "output name": ("--name", {"name", "run_name", "--run-name"}),
    "generated tokens": ("--max-new-tokens", {"max_new_tokens", "max_completion_length",
                                              "max_tokens", "--max-completion-length",
                                              "--max-tokens"}),
    "generation backend": ("--backend", {"backend", "use_vllm", "vllm", "--vllm",
                                         "--use-vllm"}),
}
RETIRED = ("--estimator", "--placement", "--tasks", "--out-root", "--run-name",
           "--max-completion-length", "--vllm", "--reparse")
BACKENDS = ["auto", "vllm", "transformers"]


def _commands(group: click.Group = main, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            out.update(_commands(command, path + " "))
        else:
            out[path] = command
    return out


COMMANDS = _commands()


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


def _flags(option: click.Option) -> set[str]:
    return {o for o in (*option.opts, *option.secondary_opts) if o.startswith("--")}


def test_every_command_is_walked() -> None:
    for name in ("attribution", "train", "sweep", "fit", "compare", "report",
                 "realmodel data", "realmodel eval", "realmodel sft", "realmodel grpo"):
        assert name in COMMANDS


@pytest.mark.parametrize("flag", RETIRED)
def test_retired_spellings_are_gone(flag: str) -> None:
    users = [name for name, command in COMMANDS.items()
             if any(flag in _flags(o) for o in _options(command))]
    assert not users, f"{flag} is still an option of {users}"


@pytest.mark.parametrize("concept", CONCEPTS)
def test_one_flag_per_concept(concept: str) -> None:
    """Any option that spells the concept (by its parameter name or a flag) uses its one
    flag, and that flag means nothing else."""
    flag, spellings = CONCEPTS[concept]
    wrong = []
    for name, command in COMMANDS.items():
        for option in _options(command):
            flags = _flags(option)
            if option.name in spellings or flags & spellings or flag in flags:
                if flag not in flags or option.name not in spellings:
                    wrong.append(f"{name}: {sorted(flags)} (parameter {option.name})")
    assert not wrong, f"{concept} must be {flag}: {wrong}"


def test_backend_choices_are_the_same_everywhere() -> None:
    seen = {}
    for name, command in COMMANDS.items():
        for option in _options(command):
            if "--backend" in _flags(option):
                seen[name] = list(option.type.choices)
    assert set(seen) == {"realmodel eval", "realmodel grpo"}
    assert all(choices == BACKENDS for choices in seen.values()), seen


def test_every_option_has_help() -> None:
    missing = [f"{name} {sorted(_flags(o))}" for name, command in COMMANDS.items()
               for o in _options(command) if not (o.help or "").strip()]
    assert not missing, f"options without help: {missing}"


def test_every_command_has_a_docstring() -> None:
    assert all((c.help or "").strip() for c in COMMANDS.values())
