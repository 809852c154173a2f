"""Python threads for a GIL-free Numba kernel that takes its work in chunks (DESIGN.md §2).

`run_threaded(kernel, args)` calls `kernel(counter, *args[i])` for every i at once, on this
thread and on `len(args) - 1` pool threads; each call asks `take_next(counter)` for its next
chunk of work until none is left, so a thread that the (shared) machine deschedules simply
takes fewer chunks. The kernel must be compiled with `nogil=True` and write disjoint
outputs per chunk.

Why not `parallel=True` and `prange`: a parallel build compiles its callee twice more (the
parallel region's function, then the function that launches it: Numba links and re-optimises
every callee into each caller), which cost about 7 s of the simulator's cold start for no
gain in speed (sim.population_kernels.population_step).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def take_next(typingctx, counter):
    """counter[0] += 1, atomically (LLVM atomicrmw add); returns the value before: the
    index of the chunk the caller takes."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(counter)(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, context.get_constant(types.int64, 1), "seq_cst")

    return types.int64(counter), codegen


class _Pool:
    """The helper threads, made once per process and grown on demand (a forked child gets
    its own: it inherits the pool's objects, not its threads)."""

    executor: ThreadPoolExecutor | None = None
    size = 0
    pid = 0

    @classmethod
    def get(cls, workers: int) -> ThreadPoolExecutor:
        if cls.executor is None or cls.size < workers or cls.pid != os.getpid():
            if cls.executor is not None and cls.pid == os.getpid():
                cls.executor.shutdown(wait=False)
            cls.executor = ThreadPoolExecutor(max_workers=workers,
                                              thread_name_prefix="kernel_threads")
            cls.size, cls.pid = workers, os.getpid()
        return cls.executor


def run_threaded(kernel: Callable, args: Sequence[tuple]) -> None:
    """kernel(counter, *args[i]) for every i at once, on this thread and len(args) - 1 pool
    threads, all sharing one fresh counter; returns when every call has (re-raising the
    first error)."""
    counter = np.zeros(1, np.int64)
    others = [_Pool.get(len(args) - 1).submit(kernel, counter, *a) for a in args[1:]]
    try:
        kernel(counter, *args[0])
    finally:
        for other in others:
            other.result()
