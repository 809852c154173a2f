"""Where a sweep's cells run: local worker processes or a Ray cluster (DESIGN.md §2).

Both executors call `run(grid, cell)` (sim.cell.run_cell) for each cell still to do and hand
each `(cell_id, rows)` to `on_done` in the calling process, as cells finish; what is written
and how is the runner's business (sim.sweep).

Local: one process per core (spawned, one Numba thread each), or the calling process itself for
one worker or one cell. SIGTERM and SIGINT stop the worker processes before the sweep exits
(SIGTERM is raised as `SweepInterrupted`, a KeyboardInterrupt), and workers die with their
parent even when it is killed outright (PR_SET_PDEATHSIG, else a thread watching the parent).

Ray: `check_ray_address` fails fast on an address nothing answers at; workers import this
package from the repository (REPO_ROOT on their PYTHONPATH), one Numba thread each, one cell
per CPU; cells not yet finished are cancelled when the sweep stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pandas as pd

from core.provenance import REPO_ROOT
from sim.grid import Cell, GridConfig

# what a cell computes (sim.cell.run_cell) and what the runner does with it (sim.sweep)
RunCell = Callable[[GridConfig, Cell], pd.DataFrame]
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


def _init_worker(parent_pid: int | None = None) -> None:
    # one process per core: threads inside a process would only oversubscribe the cores
    import numba

    numba.set_num_threads(1)
    if parent_pid is not None:  # a pool worker: the parent alone handles Ctrl-C, then ends us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent_pid)


def _run_cell_worker(run: RunCell, grid: GridConfig, cell: Cell) -> tuple[str, pd.DataFrame]:
    return cell.cell_id, run(grid, cell)


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


def execute_local(run: RunCell, grid: GridConfig, todo: list[Cell], workers: int,
                  on_done: OnDone) -> None:
    """Run `todo` in `workers` spawned processes (in this one for one worker or one cell)."""
    if workers <= 1 or len(todo) <= 1:
        _init_worker()
        for cell in todo:
            on_done(*_run_cell_worker(run, grid, cell))
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
        futures = [pool.submit(_run_cell_worker, run, grid, cell) for cell in todo]
        for fut in as_completed(futures):
            on_done(*fut.result())
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


def execute_ray(run: RunCell, grid: GridConfig, todo: list[Cell], address: str | None,
                on_done: OnDone) -> None:
    """Run `todo` as Ray tasks on the cluster at `address` (a local one if None)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install 'ds-study[dist]'") from None
    if not ray.is_initialized():
        check_ray_address(address)
        # Workers import this package from the repository (shared file system or the same
        # install on every node); one Numba thread each, Ray schedules one cell per CPU.
        env = {"PYTHONPATH": str(REPO_ROOT), "NUMBA_NUM_THREADS": "1"}
        ray.init(
            address=address,
            runtime_env={"env_vars": env},
            log_to_driver=False,
            include_dashboard=False,
        )
    remote = ray.remote(num_cpus=1)(_run_cell_worker)
    grid_ref = ray.put(grid)
    pending = [remote.remote(run, grid_ref, cell) for cell in todo]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            on_done(*ray.get(done[0]))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
