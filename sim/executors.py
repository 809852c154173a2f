"""Where a sweep's cells run: local worker processes or a Ray cluster (DESIGN.md §2).

Both executors call `run(grid, task)` (sim.cell_batch.run_batch: a batch of cells trained as
one population) for each task still to do and hand each `(cell_id, rows)` it returns to
`on_done` in the calling process, as tasks finish; what is written and how is the runner's
business (sim.sweep).

Local: the calling process itself, with `workers` Numba threads over each population's
agents (no process to start, nothing to import twice: the fastest for small sweeps), or one
process per core (spawned, one Numba thread each, `processes=True`: the Python parts of a
task then run on every core too). SIGTERM and SIGINT stop the worker processes before the
sweep exits (SIGTERM is raised as `SweepInterrupted`, a KeyboardInterrupt), and workers die
with their parent even when it is killed outright (PR_SET_PDEATHSIG, else a thread watching
the parent).

Ray: `check_ray_address` fails fast on an address nothing answers at (HOST:PORT, or `auto` /
none for RAY_ADDRESS or the local cluster). Workers need Python and the base install's
packages, not this repository: the code a cell runs (core and sim, the only packages sim
imports, docs/ARCHITECTURE.md) goes to the cluster as the job's runtime_env working_dir
(`ray_runtime_env`). A driver started by `ray job submit --working-dir DIR` already runs from
such an upload; its runtime_env is reused, not uploaded again (`runtime_env_for_job`). Ray
initialised by the caller is used as it is. One Numba thread per worker, one task (a batch
of cells) per CPU; tasks not yet finished are cancelled when the sweep stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from core.provenance import REPO_ROOT
from sim.grid import GridConfig

# what a task computes (sim.cell_batch.run_batch: rows per cell) and what the runner does
# with each cell's rows (sim.sweep)
RunTask = Callable[[GridConfig, Any], list[tuple[str, pd.DataFrame]]]
OnDone = Callable[[str, pd.DataFrame], None]


class SweepInterrupted(KeyboardInterrupt):
    """SIGTERM during a sweep, raised like Ctrl-C's KeyboardInterrupt: the workers are
    stopped and the finished cells kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM into SweepInterrupted while a sweep runs (in the main thread, unless the
    program installed its own handler), so the workers are stopped on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise SweepInterrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker process end when `parent_pid` does, even if it is killed outright:
    Linux's PR_SET_PDEATHSIG, elsewhere a thread watching the parent's pid."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def _init_worker(parent_pid: int | None = None, threads: int = 1) -> None:
    # one process per core: threads inside a process would only oversubscribe the cores
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    if parent_pid is not None:  # a pool worker: the parent alone handles Ctrl-C, then ends us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent_pid)


def _run_task_worker(run: RunTask, grid: GridConfig,
                     task: Any) -> list[tuple[str, pd.DataFrame]]:
    return run(grid, task)


def _stop_workers(pool) -> None:
    """Cancel what has not started and end the worker processes now (ProcessPoolExecutor
    would otherwise let each finish its cell, and keep the interpreter waiting for them)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 3.0
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


def execute_local(run: RunTask, grid: GridConfig, todo: list[Any], workers: int,
                  on_done: OnDone, processes: bool = False) -> None:
    """Run the tasks `todo` in this process with `workers` Numba threads, or with
    `processes` in `workers` spawned processes (in this one for one worker or one task)."""
    if not processes or workers <= 1 or len(todo) <= 1:
        import numba

        before = numba.get_num_threads()
        _init_worker(threads=workers)  # the population step's threads (sim.kernel_threads)
        try:
            for task in todo:
                for cell_id, rows in _run_task_worker(run, grid, task):
                    on_done(cell_id, rows)
        finally:
            numba.set_num_threads(before)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child inheriting Numba's threading state can deadlock
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    try:
        futures = [pool.submit(_run_task_worker, run, grid, task) for task in todo]
        for fut in as_completed(futures):
            for cell_id, rows in fut.result():
                on_done(cell_id, rows)
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def check_ray_address(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast on a Ray address nothing answers at (ray.init would retry for minutes)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RuntimeError(f"--address must be HOST:PORT (or auto), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {address} ({exc})") from None


# What a Ray worker imports to run a batch of cells (sim.cell_batch.run_batch and what it
# needs): sim and core, the only packages sim imports (tests/test_layers.py). Everything
# else in the repository stays home, and so do caches and data inside those two:
# __pycache__ holds Numba's compiled cache (megabytes, rebuilt on the workers), *.parquet
# would be results.
RAY_PACKAGES = ("core", "sim")
RAY_EXCLUDES = ("__pycache__", "*.pyc", "*.parquet", "*.nbi", "*.nbc")
RAY_WORKER_ENV = {"NUMBA_NUM_THREADS": "1"}  # one process per CPU: no threads inside
# set by Ray's job supervisor in a driver started by `ray job submit` (the job's runtime_env)
_JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_RAY_PACKAGE_PREFIX = "_ray_pkg_"  # the folders Ray unpacks working_dir / py_modules into


def ray_excludes(root: Path = REPO_ROOT) -> list[str]:
    """runtime_env `excludes` (gitignore patterns, relative to `root`) that leave only
    RAY_PACKAGES of the repository, less their caches: every other top-level entry (outputs/,
    .git/, .offline/, .venv/, docs/, tests/, realmodel/, analysis/, benchmark results, ...) is
    named, so the upload stays small whatever .gitignore says or lies around."""
    top = sorted(p.name for p in root.iterdir() if p.name not in RAY_PACKAGES)
    return ["/" + re.sub(r"([][*?!#\\])", r"\\\1", name) for name in top] + list(RAY_EXCLUDES)


def ray_runtime_env(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The runtime_env that ships a cell's code with a Ray job (docs/ARCHITECTURE.md):
    working_dir = the repository root less `ray_excludes`, i.e. core/ and sim/ (workers start
    in the unpacked copy, which is on their Python path). For `ray.init(runtime_env=...)`:
    Ray uploads a local folder for a whole job, not for a single task.

    working_dir rather than py_modules: with a working_dir on the job, Ray does not put the
    driver's script folder and cwd in front of the workers' sys.path, so a node holding
    another checkout at the driver's path still runs the uploaded code."""
    return {"working_dir": str(root), "excludes": ray_excludes(root)}


def submitted_job_env() -> dict[str, Any] | None:
    """The runtime_env of the Ray job this driver was started as (`ray job submit`: Ray's job
    supervisor passes it in RAY_JOB_CONFIG_JSON_ENV_VAR); None for a driver started
    otherwise."""
    raw = os.environ.get(_JOB_CONFIG_VAR)
    if raw is None:
        return None
    try:
        env = json.loads(raw).get("runtime_env")
    except (ValueError, AttributeError):
        return {}
    return dict(env) if isinstance(env, Mapping) else {}


def job_ships_this_code(job_env: Mapping[str, Any] | None) -> bool:
    """Whether the job's runtime_env already carries the code this driver runs: it has a
    working_dir or py_modules, and core and sim were imported from a folder Ray unpacked
    (`_ray_pkg_<hash>`), as in a driver started by `ray job submit --working-dir .` from
    the repository. The workers of the job then get the same code: nothing is uploaded."""
    if not job_env or not (job_env.get("working_dir") or job_env.get("py_modules")):
        return False
    import core
    import sim

    return all(any(part.startswith(_RAY_PACKAGE_PREFIX) for part in Path(pkg.__file__).parts)
               for pkg in (core, sim))


def runtime_env_for_job(job_env: Mapping[str, Any] | None) -> dict[str, Any]:
    """What ray.init adds to the runtime_env of the job the driver was started as (None: not
    started by `ray job submit`, so all of `ray_runtime_env`). Ray merges the two key by key
    and refuses a key both set, so only what the job lacks is added: nothing when the job
    ships this code (`job_ships_this_code`), else `ray_runtime_env`'s working_dir, or core/
    and sim/ as py_modules where the job has a working_dir of its own. A job with both keys
    keeps the code it chose."""
    if job_env is None or (not job_env.get("working_dir") and not job_ships_this_code(job_env)):
        return ray_runtime_env()
    if job_ships_this_code(job_env) or job_env.get("py_modules"):
        return {}
    return {"py_modules": [str(REPO_ROOT / pkg) for pkg in RAY_PACKAGES],
            "excludes": list(RAY_EXCLUDES)}


def execute_ray(run: RunTask, grid: GridConfig, todo: list[Any], address: str | None,
                on_done: OnDone) -> None:
    """Run `todo` as Ray tasks on the cluster at `address` (a local one if None); the cells'
    code travels in the job's runtime_env (`runtime_env_for_job`), so workers need no copy
    of the repository. Ray already initialised by the caller is used as it is: its
    runtime_env ships the code if it was given `ray_runtime_env()`."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install 'ds-study[dist]'") from None
    if not ray.is_initialized():
        check_ray_address(address)
        env = runtime_env_for_job(submitted_job_env())
        ray.init(address=address, runtime_env=env or None, log_to_driver=False,
                 include_dashboard=False)
    # one Numba thread per worker (a task's env_vars merge with its job's runtime_env)
    remote = ray.remote(num_cpus=1, runtime_env={"env_vars": dict(RAY_WORKER_ENV)})(
        _run_task_worker)
    grid_ref = ray.put(grid)
    pending = [remote.remote(run, grid_ref, task) for task in todo]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for cell_id, rows in ray.get(done[0]):
                on_done(cell_id, rows)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
