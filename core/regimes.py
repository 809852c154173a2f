"""The one table of training regimes: the paper's Table 1 rows (DESIGN §6), the simulator
objective each is reproduced with (DESIGN §2), its SFT data (DESIGN §2, §5) and its colour.

Every package reads this table: the sweep's named objectives (sim.sweep), the tidy observed
tables and their regime lookup (analysis.observed), the fit's trained regimes (analysis.fit),
the chart colours (analysis.charts) and the report. Fields of a `Regime`:

  name             the key in run names, CLI options and grid files ("grpo")
  paper_row        the row label of the paper's Table 1 ("RL"); the `regime` value of the
                   tidy observed tables and of the fit (analysis.observed)
  label            the display label of the simulator's runs ("GRPO"; the sweep's `regime`
                   column)
  objective        the simulator term spec it trains with (sim.objectives grammar; the KL
                   weight comes from beta), None for the untrained base model
  sft_data         the SFT data kind ("reflection" / "no-reflection", DESIGN §2), else None
  sweep_objective  its name on the sweep's objectives axis (sim.sweep.NAMED_OBJECTIVES)
  kl               the KL settings of the paper's run (GRPO: beta 0.001, k3 in the loss)
  colour           its colour in every chart
  markers, qualifiers, aliases   how `lookup` recognises it in data files and run names

`lookup` maps the many spellings found in data (paper rows, run names such as
"grpo-smol", sweep objectives such as "surrogate+kl") onto a regime, or None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KLSettings:
    """A KL penalty as the paper's RL run applies it (DESIGN §2): weight beta, estimator
    (k1 / k2 / k3) and placement (in the reward or in the loss)."""

    beta: float
    estimator: str
    placement: str


@dataclass(frozen=True)
class Regime:
    """One training regime (see the module docstring for the fields)."""

    name: str
    paper_row: str
    label: str
    objective: str | None
    sft_data: str | None
    sweep_objective: str | None
    colour: str
    kl: KLSettings | None = None
    markers: tuple[str, ...] = ()  # words naming it in a run name (any one)
    qualifiers: tuple[str, ...] = ()  # ... together with one of these words, when given
    aliases: tuple[str, ...] = ()  # further whole spellings

    @property
    def trained(self) -> bool:
        return self.objective is not None

    def spellings(self) -> tuple[str, ...]:
        """Every whole spelling of this regime: name, paper row, label and aliases."""
        return (self.name, self.paper_row, self.label, *self.aliases)


# The paper's RL run (DESIGN §2, §5): verl's low_var_kl (k3) as a loss term, beta 0.001
PAPER_RL_KL = KLSettings(beta=0.001, estimator="k3", placement="in-loss")

# Table 1 order; `lookup` tries the regimes in this order (the no-reflection SFT before the
# reflection SFT: its markers are the same, plus a qualifier)
REGIME_TABLE: tuple[Regime, ...] = (
    Regime("base", "Base", "Base", objective=None, sft_data=None, sweep_objective=None,
           colour="#7f7f7f", markers=("base",), aliases=("instruct", "base model")),
    Regime("sft-no-reflection", "SFT (no reflection)", "SFT (no reflection)",
           objective="sft", sft_data="no-reflection", sweep_objective="sft-no-reflection",
           colour="#e08214", markers=("sft",),
           qualifiers=("no", "without", "wo", "noreflection", "plain")),
    Regime("sft-reflection", "SFT (reflection)", "SFT (reflection)",
           objective="sft", sft_data="reflection", sweep_objective="sft-reflection",
           colour="#8c4fbf", markers=("sft",)),
    Regime("grpo", "RL", "GRPO", objective="surrogate+kl", sft_data=None,
           sweep_objective="surrogate+kl", colour="#1f77b4", kl=PAPER_RL_KL,
           markers=("rl", "grpo", "ppo"), aliases=("surrogate+kl",)),
)
TRAINED: tuple[Regime, ...] = tuple(r for r in REGIME_TABLE if r.trained)
BY_NAME: dict[str, Regime] = {r.name: r for r in REGIME_TABLE}


# display label of each paper row (the report writes "GRPO" where Table 1 writes "RL")
LABEL_OF_ROW: dict[str, str] = {r.paper_row: r.label for r in REGIME_TABLE}


def display_label(value: str) -> str:
    """The label of a regime for charts and text: a paper row becomes its regime's label
    ("RL" -> "GRPO"); anything else is kept."""
    return LABEL_OF_ROW.get(str(value), str(value))


def regime(name: str) -> Regime:
    """The regime called `name` ("base", "sft-no-reflection", "sft-reflection", "grpo")."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown regime {name!r}; choose from "
                         f"{', '.join(BY_NAME)}") from None


def normalise(label: str) -> str:
    """Lower case, words split at anything not a letter or digit and between letters and
    digits ("GRPO-v2" -> "grpo v 2")."""
    s = re.sub(r"(?<=[a-z])(?=[0-9])|(?<=[0-9])(?=[a-z])", " ", str(label).lower())
    return " ".join(re.sub(r"[^a-z0-9]+", " ", s).split())


def _spellings() -> dict[str, Regime]:
    out: dict[str, Regime] = {}
    for r in REGIME_TABLE:
        for s in r.spellings():
            if out.setdefault(normalise(s), r) is not r:
                raise AssertionError(f"spelling {s!r} names two regimes")
    return out


_SPELLINGS = _spellings()


def lookup(label: str) -> Regime | None:
    """The regime a label names, or None: the exact name, paper row or label; else a whole
    spelling (any case and punctuation: "SFT-reflection", "surrogate+kl"); else, in table
    order, the first regime one of whose markers is a word of the label (with one of its
    qualifiers, where it has some): "grpo-smol" -> grpo, "sft_no_reflection_lr1e-5" ->
    sft-no-reflection, "sft" -> sft-reflection."""
    raw = str(label).strip()
    for r in REGIME_TABLE:
        if raw in (r.name, r.paper_row, r.label):
            return r
    s = normalise(raw)
    if s in _SPELLINGS:
        return _SPELLINGS[s]
    words = set(s.split())
    for r in REGIME_TABLE:
        if words & set(r.markers) and (not r.qualifiers or words & set(r.qualifiers)):
            return r
    return None
