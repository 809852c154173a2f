"""Command-line entry point: parses arguments and calls the packages (no logic here).

Each package owns its commands module; this file only assembles them:
  sim/commands.py        illustrate, attribution, predict, simulate, train, sweep
  analysis/commands.py   report, fit, compare
  realmodel/commands.py  the `realmodel` group (parse, eval, sft, grpo, ...)
"""

from __future__ import annotations

import importlib

import click

# (module, attribute) pairs; a module that is not written yet is simply skipped.
_COMMAND_MODULES = (
    "sim.commands",
    "sim.population_commands",
    "analysis.commands",
    "realmodel.commands",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Two-Stage Decision-Sampling (DS) study: simulator, real models, reports."""


def _register() -> None:
    for mod_name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:  # only tolerate the module itself missing
            if exc.name == mod_name:
                continue
            raise
        for cmd in getattr(mod, "COMMANDS", ()):
            main.add_command(cmd)


_register()

if __name__ == "__main__":
    main()
