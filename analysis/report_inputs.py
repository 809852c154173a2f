"""What the report reads (DESIGN §6), found and loaded once for every section.

Inputs (the output contracts of sweep / train / realmodel, each with its run record):
  --sweep    outputs/sweeps/<name>/results.parquet (+ manifest.json: config = the grid)
  --train    outputs/train/<name>/history.parquet (+ manifest.json: config = the TrainConfig)
  --observed a paper-style accuracy CSV (default: the paper's Table 1) and, found under
             outputs/real/, any real-model calibration.csv
  --fit      a fit.json of `cli.py fit`; else a cached fit of the same data, else fit now
  --phase-diagram  a phase-diagram CSV (medians per update-budget setting, L and regime);
             else a sweep under outputs/sweeps/ run from a grid file named grid_phase.toml
             (examples/grid_phase.toml), reduced to the same table; else no phase panel
With no --sweep / --train the newest folder under outputs/sweeps/ and outputs/train/ is used;
where there is none, the section runs its built-in simulation (analysis.builtin) and its
caption says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import charts
from analysis.builtin import FULL, QUICK, BuiltinRuns
from analysis.fit import FitConfig, FitResult
from analysis.fit_io import cached_or_new_fit, load_fit, slug
from analysis.observed import (
    BASE,
    ObservedDataError,
    find_calibrations,
    load_calibrations,
    load_kang2025,
    load_observed,
    reference_dir,
)
from analysis.runs import SWEEP_FILE, TRAIN_FILE, SweepRun, TrainRun, newest_run, run_dir
from core.records import RecordError, read_record
from core.regimes import BY_NAME


class ReportError(ValueError):
    """A report that cannot be built (one-line message, for the CLI)."""


@dataclass(frozen=True)
class ReportConfig:
    """Where the report reads from and writes to (paths relative to the repo root)."""

    out_dir: Path = Path("outputs/report")
    outputs: Path = Path("outputs")
    sweep: Path | None = None
    train: Path | None = None
    observed: Path | None = None  # None: the paper's Table 1
    real: Path | None = None  # None: outputs/real if it holds calibrations
    fit: Path | None = None  # a fit.json; None: cached fit of `observed`, else fit now
    phase_diagram: Path | None = None  # a phase-diagram CSV; None: a grid_phase sweep if any
    png: bool = True
    png_scale: float = 1.5
    quick: bool = False  # tests: the built-in runs and the fit kept small (builtin.QUICK)

    def __post_init__(self) -> None:
        for name in ("sweep", "train", "observed", "real", "fit", "phase_diagram"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise ValueError(f"--{name.replace('_', '-')}: {value} does not exist")
        # an input given explicitly is used, never silently replaced by the newest run or a
        # built-in one (DESIGN §6: the report says where each chart comes from)
        for name, filename in (("sweep", SWEEP_FILE), ("train", TRAIN_FILE)):
            value = getattr(self, name)
            if value is not None and run_dir(value, filename) is None:
                raise ValueError(f"--{name}: {value} holds no {filename} (expected "
                                 f"outputs/{'sweeps' if name == 'sweep' else name}/<name>/)")
        if self.real is not None and not find_calibrations(self.real):
            raise ValueError(f"--real: no calibration.csv found at or below {self.real}")
        if self.fit is not None and not Path(self.fit).is_file():
            raise ValueError(f"--fit: {self.fit} is not a file (a fit.json of `cli.py fit`)")
        if not self.png_scale > 0:
            raise ValueError("png_scale must be > 0")

    @property
    def runs(self) -> BuiltinRuns:
        """The built-in simulations' settings: builtin.QUICK with --quick, else FULL."""
        return QUICK if self.quick else FULL

    @property
    def fit_config(self) -> FitConfig:
        return FitConfig(quick=self.quick)

    def as_record(self) -> dict:
        """The run record's config: the fields, paths as strings."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ReportInputs:
    """Everything the sections read, loaded once (a section never reads a file itself)."""

    cfg: ReportConfig
    observed: pd.DataFrame  # the tidy accuracy table (analysis.observed)
    observed_path: Path
    fit: FitResult
    fit_path: Path
    real: pd.DataFrame | None  # real-model calibrations, if any
    real_root: Path
    sweep: SweepRun | None  # None: the attribution section runs runs.sweep
    train: TrainRun | None  # None: the dynamics section runs runs.figure1
    kang: pd.DataFrame  # the cited study's p(F→T) (DESIGN §6)
    kang_path: Path
    domain: list[str]  # every regime label, for one colour per regime
    runs: BuiltinRuns  # the built-in simulations' settings (ReportConfig.runs)
    phase: pd.DataFrame | None = None  # the phase-diagram table (phase_table), if any
    phase_path: Path | None = None

    @property
    def max_attempts(self) -> int:
        """K of the fit (the forced-stop accuracy, DESIGN §4)."""
        return int(self.fit.config.get("max_attempts", FitConfig.max_attempts))

    def paths(self) -> dict[str, str | None]:
        """{role: path} of every input read (None: a built-in run or none found)."""
        return {"observed": str(self.observed_path), "fit": str(self.fit_path),
                "real": None if self.real is None else str(self.real_root),
                "sweep": None if self.sweep is None else str(self.sweep.path),
                "train": None if self.train is None else str(self.train.path),
                "kang2025": str(self.kang_path),
                "phase_diagram": None if self.phase_path is None else str(self.phase_path)}


def load_or_fit(cfg: ReportConfig, observed: pd.DataFrame,
                log: Callable[[str], None] = print) -> tuple[FitResult, Path]:
    """(fit, its fit.json): --fit, else a cached fit.json of the same data, source and config
    (the report's own cache <out>/fit/<name>/, or a `cli.py fit` under <outputs>/fit/<name>/),
    else fit now and cache it under <out>/fit/: the report writes nothing outside its --out."""
    if cfg.fit is not None:
        try:
            return load_fit(cfg.fit), Path(cfg.fit)
        except ValueError as exc:
            raise ReportError(f"--fit {exc}") from None
    source = str(observed["source"].iloc[0])
    name = "quick" if cfg.quick else "report"
    cache = cfg.out_dir / "fit" / (slug(source + "-" + name) or name)
    observed_path = cfg.observed or reference_dir() / "paper_table1.csv"
    return cached_or_new_fit(observed, cfg.fit_config, cache,
                             (cfg.out_dir / "fit", cfg.outputs / "fit"), observed_path, log)


def load_inputs(cfg: ReportConfig, log: Callable[[str], None] = print) -> ReportInputs:
    """Find and read every input of the report, the runs' records first (cheap, and an
    unreadable one fails before the fit), then fit the simulator if no fit is cached."""
    sweep_dir = (run_dir(cfg.sweep, SWEEP_FILE)
                 or newest_run(cfg.outputs / "sweeps", SWEEP_FILE))
    train_dir = (run_dir(cfg.train, TRAIN_FILE)
                 or newest_run(cfg.outputs / "train", TRAIN_FILE))
    sweep = None if sweep_dir is None else SweepRun.load(sweep_dir)
    train = None if train_dir is None else TrainRun.load(train_dir)
    real_root = cfg.real or (cfg.outputs / "real")
    try:
        real = load_calibrations(real_root) if real_root.exists() else None
    except ObservedDataError:
        real = None
    observed_path = cfg.observed or reference_dir() / "paper_table1.csv"
    observed = load_observed(observed_path)
    fit, fit_path = load_or_fit(cfg, observed, log)
    domain = charts.regime_domain(observed["regime"], fit.curves["regime"],
                                  [] if real is None else real["regime"])
    phase, phase_path = load_phase(cfg)
    return ReportInputs(
        phase=phase, phase_path=phase_path, cfg=cfg, observed=observed,
        observed_path=Path(observed_path), fit=fit,
        fit_path=fit_path, real=real, real_root=real_root, sweep=sweep, train=train,
        kang=load_kang2025(), kang_path=reference_dir() / "kang2025_p_FT.csv", domain=domain,
        runs=cfg.runs)


PHASE_AXES = ("optimiser", "second_moment", "max_grad_norm", "coupling")  # DESIGN §2 budget
PHASE_GRID = "grid_phase.toml"  # the grid file of the phase-diagram sweep (examples/)
PHASE_METRICS = ("ratio", "ratio[kl]", "q2[T1]", "id_accuracy", "ood_accuracy")


def phase_table(results: pd.DataFrame) -> pd.DataFrame:
    """A sweep reduced to the phase-diagram table: medians over agents per update-budget
    setting (PHASE_AXES present), L and regime, of PHASE_METRICS present."""
    keys = [c for c in PHASE_AXES if c in results.columns] + ["length", "regime"]
    metrics = [c for c in PHASE_METRICS if c in results.columns]
    return results.groupby(keys, as_index=False, dropna=False)[metrics].median()


# the wide layout of docs/results/simulator/phase_diagram.csv: <metric>_<regime> columns
WIDE_METRICS = {"ratio": "ratio", "q2": "q2[T1]", "id": "id_accuracy", "ood": "ood_accuracy"}
WIDE_REGIMES = {"grpo": "grpo", "sft_refl": "sft-reflection", "sft_norefl": "sft-no-reflection"}


def _long_phase(df: pd.DataFrame) -> pd.DataFrame:
    """A wide phase table (q2_grpo, ood_sft_refl, ...) in the long phase_table layout."""
    keys = [c for c in (*PHASE_AXES, "length", "L") if c in df.columns]
    frames = []
    for short, name in WIDE_REGIMES.items():
        cols = {f"{m}_{short}": col for m, col in WIDE_METRICS.items()
                if f"{m}_{short}" in df.columns}
        if cols:
            frames.append(df[keys + list(cols)].rename(columns=cols).assign(
                regime=BY_NAME[name].label))
    return pd.concat(frames, ignore_index=True) if frames else df


def read_phase_csv(path: Path) -> pd.DataFrame:
    """A phase-diagram CSV in the phase_table layout (or the wide layout, one
    <metric>_<regime> column each: _long_phase): `L` is read as length and a
    `median_<metric>` column as <metric>; the regime, a length and a metric are required."""
    df = pd.read_csv(path)
    if "regime" not in df.columns:
        df = _long_phase(df)
    df = df.rename(columns={"L": "length", **{c: c.removeprefix("median_") for c in df.columns
                                              if c.startswith("median_")}})
    missing = [c for c in ("regime", "length") if c not in df.columns]
    if missing or not any(c in df.columns for c in PHASE_METRICS):
        raise ReportError(f"--phase-diagram {path}: expected columns regime, length (or L) "
                          f"and one of {', '.join(PHASE_METRICS)} (optionally median_...); "
                          f"got {', '.join(map(str, df.columns))}")
    return df


def load_phase(cfg: ReportConfig) -> tuple[pd.DataFrame | None, Path | None]:
    """(phase-diagram table, where from): --phase-diagram, else the newest sweep whose record
    names a grid file PHASE_GRID, else (None, None)."""
    if cfg.phase_diagram is not None:
        return read_phase_csv(Path(cfg.phase_diagram)), Path(cfg.phase_diagram)
    root = cfg.outputs / "sweeps"
    runs = sorted(root.glob(f"*/{SWEEP_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if root.is_dir() else []
    for path in runs:
        try:
            grid = read_record(path.parent).get("inputs", {}).get("grid")
        except RecordError:
            continue
        if grid and Path(str(grid)).name == PHASE_GRID:
            return phase_table(pd.read_parquet(path)), path.parent
    return None, None


@dataclass(frozen=True)
class FitQuality:
    """How well the fit matches and what it identifies: RMSE over the trained regimes (from
    the fit's residuals), the free parameters the data identify and those they do not, and
    the file that said so (params.csv with an `identified` column, else the fit.json)."""

    rmse: float
    identified: tuple[str, ...]
    not_identified: tuple[str, ...]
    source: Path

    def lines(self) -> list[str]:
        ident = ", ".join(self.identified) or "none"
        unident = ", ".join(self.not_identified) or "none"
        return [f"RMSE {self.rmse * 100:.1f} pp over the trained regimes",
                f"identified: {ident}; not identified: {unident}"]


def fit_quality(fit: FitResult, fit_path: Path) -> FitQuality:
    """FitQuality from the fit folder's params.csv where it has an `identified` column (the
    fit's own verdict), else from the fit's parameter table: a free parameter is identified
    when it is off its bounds with a finite standard error. RMSE from the residuals in
    curves.csv where present, else the fit's."""
    folder = Path(fit_path).parent
    params, source = fit.params, Path(fit_path)
    csv = folder / "params.csv"
    if csv.is_file():
        try:
            read = pd.read_csv(csv)
        except (OSError, ValueError):
            read = None
        if read is not None and {"name", "identified"} <= set(read.columns):
            params, source = read, csv
    if "identified" in params.columns:
        flag = params["identified"].astype(str).str.lower().isin(("true", "1", "yes"))
        free = params.get("free", pd.Series(True, index=params.index)).astype(bool)
    else:
        free = params["free"].astype(bool)
        se = pd.to_numeric(params.get("stderr", params.get("se")), errors="coerce")
        flag = ~params["at_bound"].astype(bool) & np.isfinite(se)
    names = params["name"].astype(str)
    rmse = fit.rmse
    curves = folder / "curves.csv"
    if curves.is_file():
        try:
            c = pd.read_csv(curves)
            trained = c[c["regime"] != BASE] if "regime" in c.columns else c
            if "residual" in trained.columns and trained["residual"].notna().any():
                rmse = float(np.sqrt(np.nanmean(trained["residual"].astype(float) ** 2)))
        except (OSError, ValueError, KeyError):
            pass
    return FitQuality(rmse, tuple(names[free & flag]), tuple(names[free & ~flag]), source)
