"""How many threads the CPU kernels use: `--threads N`, else OMP_NUM_THREADS, else every core.

NumPy's BLAS (OpenBLAS or MKL) sizes its pool at import from OMP_NUM_THREADS and friends;
threadpoolctl changes it at run time. Results are bit-identical run to run at a fixed thread
count; BLAS may sum in another order with another count.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from threadpoolctl import threadpool_info, threadpool_limits

from nnrun.backends.base import set_workers, workers


def default_threads() -> int:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@contextmanager
def thread_limit(threads: int | None):
    """Runs the block with `threads` BLAS/OpenMP threads and as many workers for nnrun's own
    batch-split kernels (None: the default above)."""
    count = threads or default_threads()
    saved = workers()
    set_workers(count)
    try:
        with threadpool_limits(limits=count):
            yield count
    finally:
        set_workers(saved)


def blas_threads() -> int:
    """The BLAS pool's current size (what a benchmark reports)."""
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts) if counts else 1
