"""Other commands' outputs as the report reads them: outputs/sweeps/<name>/ and
outputs/train/<name>/, each a data file plus its run record (core.records).

A run's settings are its record's `config` and nothing else: a sweep's is its grid
(sim.sweep.GridConfig as a dict: ladder, training, axes), a train run's its
sim.training_run.TrainConfig. A folder whose manifest.json is not a record of this version, or
a record of another kind, is a one-line error saying which command rewrites it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from core.records import RecordError, read_record
from sim.training_run import TrainConfig

SWEEP_FILE, TRAIN_FILE = "results.parquet", "history.parquet"
WRITERS = {"sweep": "cli.py sweep", "train": "cli.py train"}


def newest_run(root: Path, filename: str) -> Path | None:
    """The most recently modified <root>/<name>/ holding `filename`, or None."""
    if not root.is_dir():
        return None
    runs = [p.parent for p in root.glob(f"*/{filename}")]
    return max(runs, key=lambda p: (p / filename).stat().st_mtime) if runs else None


def run_dir(path: Path | None, filename: str) -> Path | None:
    """The run folder of `path` (the folder, or its `filename`), None where it holds none."""
    if path is None:
        return None
    path = Path(path)
    return path.parent if path.is_file() else path if (path / filename).is_file() else None


def run_config(run: Path, kind: str) -> dict[str, Any]:
    """The `config` of the run record in `run`, which must be of `kind`."""
    try:
        record = read_record(run)
    except RecordError as exc:
        raise RecordError(f"{exc}; {run} is an output of `{WRITERS[kind]}`") from None
    if record["kind"] != kind:
        raise RecordError(f"{run}: the record of a {record['kind']} run, not of a {kind} run "
                          f"(`{WRITERS[kind]}` writes one)")
    return record["config"]


@dataclass(frozen=True)
class SweepRun:
    """A sweep's results table and its grid (the record's config)."""

    path: Path
    results: pd.DataFrame
    grid: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> SweepRun:
        grid = run_config(path, "sweep")
        for key, sub in (("ladder", ("names", "in_distribution", "length_scales")),
                         ("training", ("kl_placement", "kl_estimator"))):
            missing = [k for k in sub if k not in (grid.get(key) or {})]
            if missing:
                raise RecordError(f"{path}: its sweep record's grid lacks {key}."
                                  f"{', '.join(missing)}; `{WRITERS['sweep']}` rewrites it")
        return cls(path, pd.read_parquet(path / SWEEP_FILE), grid)

    @property
    def task_names(self) -> list[str]:
        return list(self.grid["ladder"]["names"])

    @property
    def in_distribution(self) -> list[bool]:
        return [bool(v) for v in self.grid["ladder"]["in_distribution"]]

    @property
    def id_tasks(self) -> list[str]:
        return [n for n, i in zip(self.task_names, self.in_distribution, strict=True) if i]

    def kl_text(self) -> str:
        """The KL placement and estimator the sweep trained with (its grid's training)."""
        training = self.grid["training"]
        return (f"KL {training['kl_placement']}, {training['kl_estimator']} estimator (the "
                "sweep's manifest)")

    def ell_text(self) -> str:
        return ("transfer length scales (ell_s, ell_1, ell_2) = "
                f"{list(self.grid['ladder']['length_scales'])}")


def train_config(config: dict[str, Any], path: Path) -> TrainConfig:
    """The TrainConfig a `train` record's config describes (JSON lists back to tuples)."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise RecordError(f"{path}: its train record has settings TrainConfig does not know "
                          f"({', '.join(unknown)}); `{WRITERS['train']}` rewrites it")
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


@dataclass(frozen=True)
class TrainRun:
    """A `train` run's history and the TrainConfig it ran (the record's config)."""

    path: Path
    history: pd.DataFrame
    config: TrainConfig

    @classmethod
    def load(cls, path: Path) -> TrainRun:
        cfg = train_config(run_config(path, "train"), path)
        return cls(path, pd.read_parquet(path / TRAIN_FILE), cfg)
