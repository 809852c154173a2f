"""Command-line entry point: parses arguments and calls the packages (no logic here).

Each package owns its commands module; this file only assembles them:
  sim/commands.py             illustrate, attribution, predict, simulate
  sim/population_commands.py  train, sweep
  analysis/commands.py        report, fit, compare
  realmodel/commands.py       the `realmodel` group (parse, data, eval, sft, grpo)

torch, transformers and TRL are imported inside the real-model commands only, so this file
imports (and the simulator runs) without the `real` extra (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import click
import mesa  # noqa: F401  (first: its logging decorator walks the import stack, ~0.15 s deeper)

from analysis import commands as analysis_commands
from realmodel import commands as realmodel_commands
from sim import commands as sim_commands
from sim import population_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Two-Stage Decision-Sampling (DS) study: simulator, real models, reports."""


for _module in (sim_commands, population_commands, analysis_commands, realmodel_commands):
    for _command in _module.COMMANDS:
        main.add_command(_command)

if __name__ == "__main__":
    main()
