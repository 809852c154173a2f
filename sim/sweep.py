"""The sweep runner (DESIGN.md §1-§4): run or resume a grid, write its cells, results, record.

Each cell (sim.grid) trains a population of DS learners on the in-distribution tasks of a
ladder and evaluates every agent on the whole ladder (sim.cell.run_cell); the cells run in
local processes or on Ray (sim.executors). Outputs under outputs/sweeps/<name>/:

  cells/<cell_id>.parquet  one row per agent; written atomically (tmp file, then os.replace),
                           with the sha256 of its content in the Parquet key-value metadata
  results.parquet          the concatenation of all cells
  manifest.json            the run record (core.records, kind "sweep"): config = the grid,
                           results = name, grid digest, ladder, K, L_C/L_W rule, seeds,
                           executor and the cells computed / resumed

Resuming: a cell whose file exists and matches its checksum is never recomputed, so an
interrupted sweep restarted with the same arguments only runs the missing cells; a cell that
fails its checksum (a corrupt file) or has none (an older version's) is recomputed, with a
warning line. The grid's digest is kept in the record; a restart with a different grid under
the same name is refused (choose a new name or overwrite), and so is a folder whose record
this version cannot read.

Robustness: a cell whose results are not finite (sim.cell.check_finite) stops the sweep with
an error and is not written. Temporary files are named per host, process and write
(".<file>.<host>.<pid>.<random>.tmp"), so concurrent runs of one sweep never touch each
other's; a run removes only its own, and at start the leftovers of dead processes of this
host. A run that ends by an exception records "failed", or "interrupted" for Ctrl-C and
SIGTERM (core.records.record_outcome): no record stays at "running".

Reproducibility: every cell uses the sweep seed for its agents' splitmix64 streams (common
random numbers: agent i sees the same uniforms in every cell, which makes differences between
cells less noisy), so a cell's rows do not depend on which process ran it or in what order.

Speed: cells whose results cannot differ (sim.identical_cells: e.g. the surrogate's at every
L) are trained once and written once per cell; the cells to train run in batches, each one
heterogeneous population (sim.cell_batch), in this process on Numba threads or, for large
sweeps, in one process per core (PROCESS_POOL_MIN_AGENTS). Either way every cell's rows are
those of the cell trained alone (sim.cell.run_cell; tests/test_sweep_identical.py). Cells are
written as their batch finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.provenance import check_output_name, git_commit
from core.records import (
    RecordError,
    finish_record,
    manifest_path,
    read_record,
    record_outcome,
    start_record,
)
from sim import cell_batch, kernel_warmup
from sim.cell import cell_learner, check_finite
from sim.cell_batch import plan_batches, run_batch
from sim.executors import execute_local, execute_ray, signals_interrupt
from sim.grid import GridConfig
from sim.identical_cells import group_cells

EXECUTORS = ("local", "ray")
# Local sweeps with fewer agents to train run in this process, on Numba threads; larger ones
# in one process per core, which pays ~2-3 s to start and import but also spreads the serial
# Python part (~1 ms per agent: the exact exp_* columns) over the cores. Measured on two
# cores: the default sweep (1312 agents) is ~1 s faster in process.
PROCESS_POOL_MIN_AGENTS = 4096


# ------------------------------------------------------------------------------ cell files

CHECKSUM_KEY = b"ds_study.content_sha256"
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:20] or "host"  # short names
_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)"
                       r"\.(?P<rand>[0-9a-f]{8})\.tmp$")


def content_digest(table) -> str:
    """sha256 of a cell's content: column names, Arrow types and values (exact float reprs),
    independent of how Parquet pages, compresses or chunks them."""
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns, strict=True):
        digest.update(json.dumps([name, str(column.type)]).encode())
        digest.update(json.dumps(column.to_pylist(), default=repr).encode())
    return digest.hexdigest()


def _tmp_path(path: Path) -> Path:
    """A temporary name beside `path`, unique to this host, process and call."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host with id `pid` is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_dead_tmp(folder: Path) -> None:
    """Remove temporary files left by processes of this host that are no longer running;
    another live run's files (or another host's) are never touched."""
    for tmp in folder.glob(".*.tmp"):
        match = _TMP_NAME.match(tmp.name)
        if match and match["host"] == _HOST and not _pid_alive(int(match["pid"])):
            tmp.unlink(missing_ok=True)


def _write_parquet_atomic(df: pd.DataFrame, path: Path, checksum: bool = False) -> None:
    """Write `df` to a temporary file of this process, fsync, os.replace: readers see the old
    file or the whole new one. With `checksum`, the content's sha256 goes into the file's
    key-value metadata (verified on resume). The temporary file is removed on any failure."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        if checksum:
            table = pa.Table.from_pandas(df, preserve_index=False)
            meta = dict(table.schema.metadata or {})
            meta[CHECKSUM_KEY] = content_digest(table).encode()
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        else:
            df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cell_state(path: Path) -> str:
    """'missing', 'ok' (readable, checksum matches), 'corrupt' (unreadable or checksum
    mismatch) or 'unverified' (readable, no checksum: written by an older version)."""
    if not path.is_file():
        return "missing"
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception:  # noqa: BLE001 - any unreadable leftover is recomputed
        return "corrupt"
    stored = (table.schema.metadata or {}).get(CHECKSUM_KEY)
    if stored is None:
        return "unverified"
    return "ok" if stored.decode(errors="replace") == content_digest(table) else "corrupt"


def _cells_from_other_commits(cells_dir: Path, cell_ids: list[str],
                              commit: str | None) -> list[str]:
    """Resumed cells whose recorded git commit differs from the current one."""
    other = []
    for cell_id in cell_ids:
        path = cells_dir / f"{cell_id}.parquet"
        try:
            recorded = pd.read_parquet(path, columns=["git_commit"])["git_commit"].iloc[0]
        except (KeyError, ValueError, IndexError):  # written before commits were recorded
            recorded = None
        if recorded != commit:
            other.append(cell_id)
    return other


# ------------------------------------------------------------------------------ the record


def record_results(grid: GridConfig, name: str) -> dict[str, Any]:
    """What a sweep's record holds beside its config (the grid): the ladder and transfer
    kernel it builds (DESIGN §1), K, the L_C/L_W rule (DESIGN §2), seeds, column meanings."""
    spec = grid.training.spec(grid.ladder, 1)
    lad = spec.ladder
    return {
        "name": name,
        "grid_digest": grid.digest(),
        "n_cells": len(grid.cells()),
        "ladder": {
            "names": list(lad.names),
            "difficulty": list(lad.difficulty),
            "in_distribution": list(lad.in_distribution),
            "base_offsets": [list(b) for b in lad.base_offsets],
            "base_offsets_components": ["b_s", "b_1", "b_2"],
        },
        "transfer": {
            "length_scales": list(grid.ladder.length_scales),
            "shared_trainable": list(grid.ladder.shared_trainable),
            "parameter_names": spec.parameter_names(),
        },
        "K": grid.training.max_attempts,
        "length_rule": f"L_C = L, L_W = {grid.training.wrong_length_ratio:g} * L",
        "seeds": {
            "seed": grid.seed,
            "agent_streams": "sim.rng.agent_state(seed, agent), the same in every cell",
        },
        "gradient_columns": (
            "g_x[term]: mean over training steps of the ID-mean logit gradient (unweighted "
            "term; total = weighted sum); abs_g_x[term]: mean of its magnitude; ratio[term] = "
            "abs_g_s / mean(abs_g_1, abs_g_2)"
        ),
        "argv": sys.argv,
    }


def _check_resumable(out_dir: Path, name: str, digest: str) -> None:
    """Refuse to add cells to a folder that holds another grid's sweep (or anything else)."""
    try:
        old = read_record(out_dir)
    except RecordError:  # unreadable, or an older version's manifest
        raise ValueError(f"sweep {name!r} cannot be resumed: {manifest_path(out_dir)} is not a "
                         "run record of this version; use another --name or --overwrite") \
            from None
    if old["kind"] != "sweep" or old["results"].get("grid_digest") != digest:
        raise ValueError(f"sweep {name!r} already exists with a different grid; "
                         "use another --name or --overwrite")


# ------------------------------------------------------------------------------ the runner


@dataclass(frozen=True)
class SweepResult:
    """What `run_sweep` did: cells computed now and resumed (skipped), and all results."""

    out_dir: Path
    n_cells: int
    computed: tuple[str, ...]
    skipped: tuple[str, ...]
    wall_s: float
    results: pd.DataFrame | None


def run_sweep(
    grid: GridConfig,
    name: str,
    out_root: str | Path = "outputs/sweeps",
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    inputs: Mapping[str, str | Path | None] | None = None,
) -> SweepResult:
    """Run (or resume) a sweep; returns what was computed and the concatenated results.
    `inputs` ({role: path}, e.g. the grid file) goes into the run record."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    check_output_name(name)
    out_dir = Path(out_root) / name
    cells_dir = out_dir / "cells"
    if manifest_path(out_dir).is_file() and not overwrite:
        _check_resumable(out_dir, name, grid.digest())
    if overwrite and cells_dir.is_dir():
        for f in cells_dir.glob("*.parquet"):
            f.unlink()
    cells_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_tmp(cells_dir)  # left by interrupted writes: never a result
    _remove_dead_tmp(out_dir)

    # resume: keep every cell that is present and passes its checksum
    cells = grid.cells()
    states = {c.cell_id: _cell_state(cells_dir / f"{c.cell_id}.parquet") for c in cells}
    skipped = [cell_id for cell_id, state in states.items() if state == "ok"]
    for cell_id, state in states.items():
        if state == "corrupt":
            print(f"warning: cell {cell_id} is unreadable or fails its checksum (a corrupt "
                  "file); recomputing it", file=sys.stderr)
    unverified = [cell_id for cell_id, state in states.items() if state == "unverified"]
    if unverified:
        print(f"warning: {len(unverified)} cells have no checksum (written by an older "
              "version); recomputing them", file=sys.stderr)
    commit = git_commit()
    stale = _cells_from_other_commits(cells_dir, skipped, commit)
    if stale:
        print(f"warning: {len(stale)} of {len(skipped)} resumed cells were computed at another "
              f"git commit; --overwrite recomputes them", file=sys.stderr)
    done_ids = set(skipped)
    todo = [c for c in cells if c.cell_id not in done_ids]
    workers = workers or os.cpu_count() or 1
    # cells that cannot differ are trained once (sim.identical_cells), and many cells as one
    # population (sim.cell_batch): at least one batch per worker where workers are processes
    groups = group_cells(grid, todo)
    n_agents = grid.training.n_agents
    processes = (executor == "ray"
                 or (workers > 1 and len(groups) * n_agents >= PROCESS_POOL_MIN_AGENTS))
    batches = plan_batches(groups, n_agents, cell_batch.MAX_BATCH_AGENTS,
                           min_batches=workers if processes else 1)

    start = time.perf_counter()
    start_record(out_dir, "sweep", grid.to_dict(), inputs, **record_results(grid, name),
                 executor=executor, workers=workers, cells_computed=0,
                 cells_resumed=len(skipped), cells_from_other_commits=len(stale))
    computed: list[str] = []
    written: dict[str, pd.DataFrame] = {}  # this run's cells, as written (none read back)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), initial=len(skipped), desc=f"sweep {name}", unit="cell")

    def on_done(cell_id: str, df: pd.DataFrame) -> None:
        check_finite(df, f"cell {cell_id}")
        df = df.assign(git_commit=commit)
        _write_parquet_atomic(df, cells_dir / f"{cell_id}.parquet", checksum=True)
        written[cell_id] = df
        computed.append(cell_id)
        if bar is not None:
            bar.update(1)

    # in one process on a cold Numba cache, a child compiles the exact-gradient kernels on
    # another core while this one compiles the population step (sim.kernel_warmup)
    warmup = (kernel_warmup.start([(lc.spec, lc.objective) for lc in
                                   (cell_learner(grid, g.computed) for g in groups)])
              if executor == "local" and not processes and workers > 1 else None)
    try:
        with signals_interrupt():
            if executor == "local":
                execute_local(run_batch, grid, batches, workers, on_done, processes)
            else:
                execute_ray(run_batch, grid, batches, address, on_done)
            wall = time.perf_counter() - start
            frames = [written[c.cell_id] if c.cell_id in written
                      else pd.read_parquet(cells_dir / f"{c.cell_id}.parquet") for c in cells]
            results = pd.concat(frames, ignore_index=True, sort=False)
            _write_parquet_atomic(results, out_dir / "results.parquet")
    except BaseException as exc:  # the record never stays at "running"
        try:
            record_outcome(out_dir, exc, cells_computed=len(computed))
        except (OSError, ValueError) as record_exc:  # the run's own error matters more
            print(f"warning: could not record the outcome ({record_exc})", file=sys.stderr)
        raise
    finally:
        kernel_warmup.stop(warmup)
        if bar is not None:
            bar.close()
    finish_record(out_dir, "done", wall_time_s=wall, cells_computed=len(computed))
    return SweepResult(out_dir, len(cells), tuple(computed), tuple(skipped), wall, results)


def default_name(grid: GridConfig) -> str:
    """A stable name from the grid's digest, so the same arguments resume the same sweep."""
    return f"sweep-{grid.digest()}"
