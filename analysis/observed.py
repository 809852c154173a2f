"""Loaders for observed data: the paper's reference tables and real-model calibrations.

DESIGN.md §6 (reference data) and §4/§5 (calibration tables written by realmodel.evaluation).
Every loader returns a *tidy* DataFrame with fractions (0..1), not percentages:

accuracy tables (`load_paper_table1`, `load_accuracy_table`): one row per (regime, task) with
  regime, task, task_index, in_distribution, accuracy, ci_low, ci_high, n, source
calibration tables (`load_calibrations`): one row per (regime, task) with the columns of
  `realmodel.evaluation.calibrate_responses` (observed_accuracy, p_hat, q1_hat, q2_hat,
  predicted_accuracy, echo_p_ft, each with _ci_low/_ci_high), plus regime, task_index, source.

The loaders accept the table layouts, not any manifest: a missing CI becomes NaN,
percentages are detected and divided by 100, and the regime is taken from a `regime`/`model`
column, else the run record (core.records) of the folder holding a calibration.csv
(`run_regime`), else the folder name. `check_observed` refuses a table the fit cannot use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from core.records import manifest_path, read_record
from core.regimes import REGIME_TABLE, TRAINED, lookup, regime

REFERENCE_ENV = "DS_STUDY_REFERENCE"
REFERENCE_DATA = Path(__file__).resolve().parent / "data"  # package data (DESIGN §6)

# The `regime` values of the tidy tables: the paper's Table 1 rows, in order (core.regimes)
BASE = regime("base").paper_row  # "Base"
SFT_NO_REFLECTION = regime("sft-no-reflection").paper_row  # "SFT (no reflection)"
SFT_REFLECTION = regime("sft-reflection").paper_row  # "SFT (reflection)"
RL = regime("grpo").paper_row  # "RL"
REGIMES = tuple(r.paper_row for r in REGIME_TABLE)

# the accuracy column of an accuracy table, first found (percent where the name ends in pct)
ACCURACY_COLUMNS = ("accuracy_pct", "accuracy", "observed_accuracy", "acc")
# optional columns of an accuracy table: the measured decomposition per task (DESIGN §4; a
# calibration's p_hat, q1_hat, q2_hat), fractions, used by the fit with --decomposition
DECOMPOSITION = ("p", "q1", "q2")
# a stated range instead of a measured value ("between 40-60%", "below 20%"): columns
# <name>_low and <name>_high, either may be empty (0 or 1 then), never beside a value
DECOMPOSITION_BOUNDS = tuple(f"{n}_{end}" for n in DECOMPOSITION for end in ("low", "high"))
CALIBRATION_STATS = ("observed_accuracy", "p_hat", "p_pooled", "q1_hat", "q2_hat",
                     "predicted_accuracy", "echo_p_ft")


class ObservedDataError(ValueError):
    """Observed data that is missing or unreadable (one-line message, for the CLI)."""


def reference_dir() -> Path:
    """The reference tables of DESIGN §6: $DS_STUDY_REFERENCE if set, else the package's data.

    The tables ship inside the package (`analysis/data/`), so an installed copy has them too.
    """
    env = os.environ.get(REFERENCE_ENV)
    path = Path(env) if env else REFERENCE_DATA
    if not (path / "paper_table1.csv").is_file():
        if env:
            raise ObservedDataError(f"reference tables not found: ${REFERENCE_ENV}={env} has "
                                    "no paper_table1.csv")
        raise ObservedDataError(f"reference tables not found in the package data ({path}); "
                                f"set ${REFERENCE_ENV} to a folder holding paper_table1.csv")
    return path


def canonical_regime(label: str) -> str:
    """Map a regime label (paper row, run name, CLI objective) onto the paper's four rows,
    through the regime table's spellings and markers (core.regimes.lookup).

    'base' -> Base; 'sft...no-reflection' -> SFT (no reflection); 'sft...reflection' /
    'sft' -> SFT (reflection); 'rl', 'grpo', 'surrogate+kl' -> RL. Anything else is returned
    unchanged (it still gets a colour of its own).
    """
    found = lookup(label)
    return found.paper_row if found is not None else str(label).strip()


def task_sort_key(names: pd.Series) -> pd.Series:
    """Order tasks as T1..T7, or '1x2' by total digits then first operand; else keep order."""
    def key(name: str) -> tuple:
        m = re.fullmatch(r"[Tt](\d+)", name)
        if m:
            return (0, int(m.group(1)), 0)
        m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", name)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            return (1, a + b, a)
        return (2, 0, 0)
    return names.astype(str).map(key)


def _fraction(values: pd.Series, is_pct: bool) -> pd.Series:
    v = pd.to_numeric(values, errors="coerce")
    return v / 100.0 if is_pct else v


def load_paper_table1(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's Table 1 (DESIGN §6) as a tidy accuracy table (fractions)."""
    path = Path(path) if path is not None else reference_dir() / "paper_table1.csv"
    return load_accuracy_table(path, source="paper Table 1")


def load_accuracy_table(path: str | Path, source: str | None = None) -> pd.DataFrame:
    """A CSV of accuracy per (regime, task): the paper_table1 layout, or any table with a
    regime/model column, a task column and accuracy (percent or fraction) with optional CIs."""
    path = Path(path)
    if not path.is_file():
        raise ObservedDataError(f"observed table not found: {path}")
    raw = pd.read_csv(path)
    cols = {c.lower(): c for c in raw.columns}
    regime_col = cols.get("regime") or cols.get("model")
    if "task" not in cols:
        raise ObservedDataError(f"{path} has no 'task' column (columns: {list(raw.columns)})")
    acc_col = next((cols[c] for c in ACCURACY_COLUMNS if c in cols), None)
    if acc_col is None:
        raise ObservedDataError(f"{path} has no accuracy column (accuracy_pct / accuracy / "
                                "observed_accuracy)")
    is_pct = acc_col.lower().endswith("pct") or pd.to_numeric(raw[acc_col]).max() > 1.0
    lo_col = next((cols[c] for c in ("ci_low_pct", "ci_low", f"{acc_col.lower()}_ci_low")
                   if c in cols), None)
    hi_col = next((cols[c] for c in ("ci_high_pct", "ci_high", f"{acc_col.lower()}_ci_high")
                   if c in cols), None)
    out = pd.DataFrame({
        "regime": (raw[regime_col].map(canonical_regime) if regime_col
                   else canonical_regime(path.parent.name)),
        "task": raw[cols["task"]].astype(str),
        "accuracy": _fraction(raw[acc_col], is_pct),
        "ci_low": _fraction(raw[lo_col], is_pct) if lo_col else np.nan,
        "ci_high": _fraction(raw[hi_col], is_pct) if hi_col else np.nan,
        "n": pd.to_numeric(raw[cols["n"]], errors="coerce") if "n" in cols else np.nan,
    })
    for name in DECOMPOSITION:  # optional measured p, q1, q2 (fractions)
        col = cols.get(name) or cols.get(f"{name}_hat")
        if col is not None:
            out[name] = pd.to_numeric(raw[col], errors="coerce")
    for name in DECOMPOSITION_BOUNDS:  # optional stated ranges of them (fractions)
        if name in cols:
            out[name] = pd.to_numeric(raw[cols[name]], errors="coerce")
    if "in_distribution" in cols:
        out["in_distribution"] = raw[cols["in_distribution"]].map(_truthy)
    else:
        out["in_distribution"] = np.nan
    out = _with_task_index(out, raw[cols["task_index"]] if "task_index" in cols else None)
    out["source"] = source or f"observed: {path.stem}"
    return out


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "id")
    return bool(v)


def _with_task_index(df: pd.DataFrame, given: pd.Series | None) -> pd.DataFrame:
    df = df.copy()
    if given is not None:
        df["task_index"] = pd.to_numeric(given, errors="coerce").astype(int).to_numpy()
    else:
        order = sorted(df["task"].unique(), key=lambda t: task_sort_key(pd.Series([t]))[0])
        df["task_index"] = df["task"].map({t: i + 1 for i, t in enumerate(order)})
    return df


def load_kang2025(path: str | Path | None = None) -> pd.DataFrame:
    """The cited study's p(F→T) table (DESIGN §6): ft_ratio_pct, model, p_ft, source."""
    path = Path(path) if path is not None else reference_dir() / "kang2025_p_FT.csv"
    if not path.is_file():
        raise ObservedDataError(f"kang2025 table not found: {path}")
    raw = pd.read_csv(path)
    return pd.DataFrame({"ft_ratio_pct": raw["ft_ratio_in_data_pct"].astype(float),
                         "model": raw["model"].astype(str), "p_ft": raw["p_F_to_T"].astype(float),
                         "source": "Kang et al. 2025 (cited study)"})


# ------------------------------------------------------------------ accuracy-table checks


def _raw_accuracy(path: Path) -> tuple[pd.Series, bool] | None:
    """The accuracy column of a plain CSV table as written (strings) and whether the loader
    read it as percent (load_accuracy_table's rule); None when unknown."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return None
    cols = {c.lower(): c for c in raw.columns}
    col = next((cols[c] for c in ACCURACY_COLUMNS if c in cols), None)
    if col is None:
        return None
    values = pd.to_numeric(raw[col], errors="coerce")
    return raw[col], bool(col.lower().endswith("pct") or values.max() > 1.0)


def check_observed(observed: pd.DataFrame, path: str | Path | None = None) -> None:
    """Refuse an observed accuracy table the fit (analysis.fit) cannot use (DESIGN §4, §6):
    an accuracy that is not a number or lies outside [0, 1] (outside [0, 100] in a percent
    table), a measured p, q1 or q2 (or a stated range's end) outside [0, 1], a range whose low
    end is above its high end or given beside a value, a Base row without an accuracy for every
    task, a (regime, task) given twice. A
    one-line ObservedDataError naming the file (`path`, else the table's source), the row
    and the value; rows are counted from 1 below the header of a CSV table."""
    path = Path(path) if path is not None else None
    plain_csv = (path is not None and path.is_file() and path.name != "calibration.csv"
                 and path.suffix.lower() == ".csv")
    raw = _raw_accuracy(path) if plain_csv else None
    where_file = str(path) if path is not None else (
        str(observed["source"].iloc[0]) if "source" in observed.columns and len(observed)
        else "the observed table")
    acc = pd.to_numeric(observed["accuracy"], errors="coerce").to_numpy(float)

    def where(i: int) -> str:
        row = observed.iloc[i]
        label = f"{row['regime']}, {row['task']}"
        if plain_csv:
            return f"{where_file} row {observed.index[i] + 1} ({label})"
        run = str(row["source"]) if "source" in observed.columns else ""
        return f"{where_file} ({run + ': ' if run else ''}{label})"

    for i, value in enumerate(acc):
        written = None
        if raw is not None and observed.index[i] in raw[0].index:
            written = str(raw[0].loc[observed.index[i]]).strip()
        if not np.isfinite(value):
            if written:  # a cell with text that is not a number
                raise ObservedDataError(f"{where(i)}: accuracy {written!r} is not a number")
            if observed.iloc[i]["regime"] == BASE:
                raise ObservedDataError(f"{where(i)}: the Base row has no accuracy (the base "
                                        "offsets need one per task)")
            continue  # a missing trained cell is left out of the fit
        if not 0.0 <= value <= 1.0:
            pct = raw[1] if raw is not None else False
            shown = written or (f"{value * 100:.4g}" if pct else f"{value:.4g}")
            unit = "[0, 100] (the table is in percent)" if pct else "[0, 1]"
            raise ObservedDataError(f"{where(i)}: accuracy {shown} is outside {unit}")
    for name in (n for n in DECOMPOSITION + DECOMPOSITION_BOUNDS if n in observed.columns):
        values = observed[name].to_numpy(float)
        bad = np.flatnonzero(~((values >= 0) & (values <= 1)) & ~np.isnan(values))
        if len(bad):
            raise ObservedDataError(f"{where(int(bad[0]))}: {name} {values[bad[0]]:.4g} is "
                                    "outside [0, 1] (a proportion)")
    for name in DECOMPOSITION:
        low, high = (observed[f"{name}_{end}"].to_numpy(float) if f"{name}_{end}" in observed
                     else np.full(len(observed), np.nan) for end in ("low", "high"))
        ranged = ~np.isnan(low) | ~np.isnan(high)
        if name in observed.columns and (both := ranged & ~observed[name].isna()).any():
            raise ObservedDataError(f"{where(int(np.argmax(both)))}: {name} has a value and a "
                                    f"range ({name}_low/{name}_high); give one")
        if (inverted := low > high).any():
            i = int(np.argmax(inverted))
            raise ObservedDataError(f"{where(i)}: {name}_low {low[i]:.4g} is above {name}_high "
                                    f"{high[i]:.4g}")
    dup = observed.duplicated(["regime", "task"], keep=False).to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise ObservedDataError(f"{where(i)}: ({observed.iloc[i]['regime']}, "
                                f"{observed.iloc[i]['task']}) is given more than once")
    base_tasks = set(observed.loc[observed["regime"] == BASE, "task"])
    missing = [t for t in dict.fromkeys(observed["task"]) if t not in base_tasks]
    if base_tasks and missing:
        raise ObservedDataError(f"{where_file}: the Base row has no accuracy for task(s) "
                                f"{', '.join(map(str, missing))} (the base offsets need one "
                                "per task)")


# ---------------------------------------------------------------- real-model calibrations


def find_calibrations(root: str | Path, max_depth: int = 3) -> list[Path]:
    """Every calibration.csv at or below `root` (a file, a run folder or outputs/real)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("calibration.csv")):
        if len(path.relative_to(root).parts) <= max_depth + 1:
            found.append(path)
    return found


def run_regime(record: dict) -> str | None:
    """The paper row a real-model run record (core.records; DESIGN §5) names, else None: an
    sft / grpo run by its kind and SFT data (`config["data"]`: "sft reflection" ->
    SFT (reflection)), an eval by the model it evaluated (`config["model"]`, e.g. the
    checkpoint "outputs/real/grpo-smol/final" -> RL); a base model's name names none."""
    config, kind = record["config"], record["kind"]
    if kind in ("sft", "grpo"):
        label = f"{kind} {config.get('data') or ''}"
    elif kind == "eval":
        label = str(config.get("model") or "")
    else:
        return None
    found = lookup(label)
    return found.paper_row if found is not None else None


def _regime_of(path: Path) -> str:
    """The regime of the calibration.csv at `path`: from its folder's run record where that
    names one (run_regime), else from the folder name. A manifest.json that is not a run
    record of this version is an error (core.records.RecordError: rerun the command)."""
    if manifest_path(path.parent).is_file():
        label = run_regime(read_record(path.parent))
        if label in REGIMES:
            return label
    label = canonical_regime(path.parent.name)
    return label if label in REGIMES else BASE if _looks_like_base(path.parent.name) else label


def _looks_like_base(name: str) -> bool:
    """No trained regime's marker anywhere in `name` (core.regimes: sft, rl, grpo, ppo)."""
    s = name.lower()
    return not any(m in s for r in TRAINED for m in r.markers)


def load_calibrations(root: str | Path) -> pd.DataFrame:
    """All real-model calibration tables under `root`, tidy, with regime and run columns."""
    paths = find_calibrations(root)
    if not paths:
        raise ObservedDataError(f"no calibration.csv found at or below {root}")
    frames = []
    for path in paths:
        try:
            raw = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ObservedDataError(f"cannot read {path}: {exc}") from exc
        if "task" not in raw.columns:
            raise ObservedDataError(f"{path} has no 'task' column")
        df = raw.copy()
        df["task"] = df["task"].astype(str)
        if "regime" in df.columns:
            df["regime"] = df["regime"].map(canonical_regime)
        else:
            df["regime"] = _regime_of(path)
        for stat in CALIBRATION_STATS:
            for suffix in ("", "_ci_low", "_ci_high"):
                if stat + suffix not in df.columns:
                    df[stat + suffix] = np.nan
        df["run"] = path.parent.name
        df["source"] = f"real model: {path.parent.name}"
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    order = sorted(out["task"].unique(), key=lambda t: task_sort_key(pd.Series([t]))[0])
    out["task_index"] = out["task"].map({t: i + 1 for i, t in enumerate(order)})
    if "in_distribution" not in out.columns:
        out["in_distribution"] = np.nan
    return out


def calibration_accuracy(cal: pd.DataFrame) -> pd.DataFrame:
    """The observed-accuracy columns of a calibration table in the accuracy-table layout."""
    return pd.DataFrame({
        "regime": cal["regime"], "task": cal["task"], "task_index": cal["task_index"],
        "in_distribution": cal["in_distribution"], "accuracy": cal["observed_accuracy"],
        "ci_low": cal["observed_accuracy_ci_low"], "ci_high": cal["observed_accuracy_ci_high"],
        "n": cal.get("n", np.nan), "source": cal["source"],
        **{name: cal[f"{name}_hat"] for name in DECOMPOSITION}})


def load_observed(path: str | Path) -> pd.DataFrame:
    """An observed accuracy table from a CSV (paper layout) or a real-model run folder."""
    path = Path(path)
    if path.is_dir() or path.name == "calibration.csv":
        return calibration_accuracy(load_calibrations(path))
    if path.name == "paper_table1.csv":
        return load_paper_table1(path)
    return load_accuracy_table(path)
