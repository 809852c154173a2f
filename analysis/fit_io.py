"""Saving, loading and caching fits of the simulator (analysis.fit; DESIGN §4, §6), and the
fitted parameters as caption text.

A fit folder holds fit.json (the whole FitResult; strict JSON, NaN as null, round-trips),
params.csv (name, value, se, ci_low, ci_high, identified, at_bound, free), curves.csv (fitted
p, q1, q2 and accuracy per regime and task), residuals.csv (observed - fitted per trained
regime and task, in percentage points), summary.txt and its run record manifest.json
(core.records, kind "fit": config = the FitConfig, inputs = the observed table). `cli.py fit`
and the report's fit cache write the same folder (`fit_and_save`); a cached fit is reused only
for the same data (observed_sha256), source and FitConfig (`find_cached_fit`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.fit import FitConfig, FitError, FitResult, fit_observed, observed_digest
from analysis.fit_bounds import one_sided_bound
from analysis.observed import BASE
from core.provenance import finite_json, json_default
from core.records import finish_record, record_outcome, start_record

FIT_FILES = ("fit.json", "params.csv", "curves.csv", "residuals.csv", "summary.txt")


# ----------------------------------------------------------------------- JSON round trip


def fit_to_json(result: FitResult) -> dict[str, Any]:
    """Strict-JSON-ready: NaN and infinities become None (null)."""
    return finite_json({"params": result.params.to_dict(orient="records"),
                        "curves": result.curves.to_dict(orient="records"), "rmse": result.rmse,
                        "rmse_all": result.rmse_all, "n_free": result.n_free,
                        "n_params": result.n_params, "n_obs": result.n_obs,
                        "config": result.config, "notes": result.notes,
                        "wall_s": result.wall_s, "observed_source": result.observed_source,
                        "observed_sha256": result.observed_sha256, "budget": result.budget})


def fit_from_json(d: dict[str, Any]) -> FitResult:
    """Inverse of fit_to_json: None is read back as NaN, except an interval's upper end with
    a finite standard error, which is null only because it overflowed to inf."""
    params = _frame(d["params"])
    if {"ci_high", "se"} <= set(params.columns):
        overflow = params["ci_high"].isna() & np.isfinite(params["se"])
        params.loc[overflow, "ci_high"] = np.inf
    if {"ci_low", "ci_high", "free"} <= set(params.columns):
        # a fixed lr's one-sided bound (fit_bounds.one_sided_lr_bound: a lower end, no upper one
        # inside the search range): inf, written as null
        unbounded = ~params["free"].astype(bool) & params["ci_low"].notna() \
            & params["ci_high"].isna()
        params.loc[unbounded, "ci_high"] = np.inf
    return FitResult(params, _frame(d["curves"]), _float(d["rmse"]), _float(d["rmse_all"]),
                     d["n_free"], d["n_params"], d["n_obs"], d["config"],
                     list(d.get("notes", [])), d.get("wall_s", 0.0),
                     d.get("observed_source", ""), d.get("observed_sha256", ""),
                     _float(d.get("budget")))


def _float(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _frame(records: list[dict]) -> pd.DataFrame:
    """Records read back from JSON: a column of numbers and nulls is a float column."""
    df = pd.DataFrame(records)
    for c in df.columns:
        if df[c].dtype == object and df[c].map(
                lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool))
        ).all():
            df[c] = df[c].astype(float)
    return df


# ------------------------------------------------------------------------- save and load


def save_fit(result: FitResult, out_dir: Path) -> list[Path]:
    """fit.json (round-trips), params.csv, curves.csv, residuals.csv and summary.txt; the
    caller writes the folder's run record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in FIT_FILES]
    paths[0].write_text(json.dumps(fit_to_json(result), indent=1, default=json_default,
                                   allow_nan=False), encoding="utf-8")
    result.params.to_csv(paths[1], index=False)
    result.curves.to_csv(paths[2], index=False)
    residual_table(result).to_csv(paths[3], index=False)
    paths[4].write_text(result.summary() + "\n", encoding="utf-8")
    return paths


def residual_table(result: FitResult) -> pd.DataFrame:
    """regime, task, observed, fitted, residual_pp (observed - fitted, percentage points) of
    the trained regimes' observed cells: what the RMSE is over."""
    cur = result.curves[(result.curves["regime"] != BASE) & result.curves["observed"].notna()]
    return pd.DataFrame({"regime": cur["regime"], "task": cur["task"],
                         "observed": cur["observed"], "fitted": cur["accuracy"],
                         "residual_pp": cur["residual"] * 100})


def params_text(result: FitResult) -> str:
    """The fitted parameters with their uncertainties, then the fixed ones (captions)."""
    parts = []
    for r in result.params.itertuples():
        if r.free:
            unc = "at bound" if r.at_bound or not np.isfinite(r.se) else f"± {r.se:.2g}"
            parts.append(f"{r.name} = {r.value:.3g} ({unc})")
        else:  # a fixed value, with its one-sided bound where it has one
            bound = one_sided_bound(r)
            parts.append(f"{r.name} = {r.value:g}"
                         + (f" ({bound[0]} {bound[1]:.2g})" if bound else ""))
    return "; ".join(parts)


def fit_results(result: FitResult) -> dict[str, Any]:
    """The headline fields of a fit for its run record's `results`."""
    return {"observed_source": result.observed_source,
            "observed_sha256": result.observed_sha256, "rmse": result.rmse,
            "rmse_all": result.rmse_all, "n_free": result.n_free, "n_params": result.n_params,
            "n_obs": result.n_obs}


def fit_and_save(observed: pd.DataFrame, cfg: FitConfig, out_dir: Path,
                 observed_path: str | Path) -> tuple[FitResult, list[Path]]:
    """Fit `observed` and write a fit folder: its run record (kind "fit") first, then the
    fit's files, then the record's outcome (a failure is recorded, then raised)."""
    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    start_record(out_dir, "fit", asdict(cfg), {"observed": observed_path})
    try:
        result = fit_observed(observed, cfg)
        paths = save_fit(result, out_dir)
    except BaseException as exc:
        record_outcome(out_dir, exc, wall_time_s=time.time() - t0)
        raise
    finish_record(out_dir, wall_time_s=time.time() - t0, **fit_results(result))
    return result, [*paths, out_dir / "manifest.json"]


def load_fit(path: str | Path) -> FitResult:
    """The FitResult of a fit.json written by `cli.py fit` (one-line FitError otherwise)."""
    try:
        result = fit_from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        FitConfig(**result.config)  # a fit of this version: its config is a FitConfig
        return result
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # JSONDecodeError too
        raise FitError(f"{path} is not a fit.json of `cli.py fit` "
                       f"({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------- the cache


def add_saved_fit_arguments(parser: Any) -> None:
    """The arguments of the scripts that re-read a fit (`load_saved_fit`): the fit's folder
    and, optionally, the table it was fitted to (an argparse parser)."""
    parser.add_argument("fit_dir", type=Path, help="a fit's folder (with fit.json)")
    parser.add_argument("--observed", type=Path, default=None,
                        help="the table the fit was fitted to (default: the paper's Table 1)")


def load_saved_fit(fit_dir: Path, observed_path: Path | None = None
                   ) -> tuple[FitResult, pd.DataFrame]:
    """A fit folder's result and the table it was fitted to (default: the paper's Table 1),
    for the scripts that re-read a fit; FitError with a one-line message otherwise."""
    from analysis.observed import load_observed, load_paper_table1

    if not (fit_dir / "fit.json").is_file():
        raise FitError(f"no fit.json in {fit_dir} (run `python3 cli.py fit` first)")
    try:
        result = load_fit(fit_dir / "fit.json")
        observed = load_observed(observed_path) if observed_path else load_paper_table1()
    except (OSError, ValueError) as exc:
        raise FitError(str(exc)) from exc
    return result, observed


def find_cached_fit(observed: pd.DataFrame, cfg: FitConfig,
                    roots: Iterable[Path]) -> tuple[Path, FitResult] | None:
    """The newest <root>/<name>/fit.json of the same data (observed_digest, not just the
    file name), source and FitConfig, or None."""
    want = json.loads(json.dumps(finite_json(asdict(cfg))))
    source, digest = str(observed["source"].iloc[0]), observed_digest(observed)
    found = sorted((p for r in dict.fromkeys(roots) if r.is_dir() for p in r.glob("*/fit.json")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if (_same_config(data.get("config"), want) and data.get("observed_source") == source
                and data.get("observed_sha256") == digest):
            return path, fit_from_json(data)
    return None


def _same_config(saved: object, want: dict) -> bool:
    """A saved fit's config is `want` once the settings added since it was saved take their
    defaults (they did not exist, so the fit ran as their defaults do)."""
    if not isinstance(saved, dict):
        return False
    try:
        filled = json.loads(json.dumps(finite_json(asdict(FitConfig(**saved)))))
    except (TypeError, ValueError):  # a field this version does not know, or a bad value
        return False
    return filled == want


def cached_or_new_fit(observed: pd.DataFrame, cfg: FitConfig, cache: Path,
                      roots: Iterable[Path], observed_path: str | Path,
                      log: Callable[[str], None] = print) -> tuple[FitResult, Path]:
    """(fit, its fit.json): a cached fit under `roots` (find_cached_fit), else a new fit
    written to the fit folder `cache` (fit_and_save)."""
    hit = find_cached_fit(observed, cfg, roots)
    if hit is not None:
        log(f"using cached fit {hit[0]}")
        return hit[1], hit[0]
    log(f"fitting the simulator to {observed['source'].iloc[0]} (cached in {cache}) ...")
    result, _ = fit_and_save(observed, cfg, cache, observed_path)
    return result, cache / "fit.json"


def slug(text: str) -> str:
    """A folder name from free text: lower case, anything else than letters and digits -."""
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:60]
