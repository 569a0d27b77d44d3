"""How many threads the CPU kernels use: `--threads N`, else OMP_NUM_THREADS, else every core.

nnrun splits its own work across that many worker threads: batch-parallel kernels by samples
(backends/base.py). BLAS runs one thread per call, except for large matrix products, which get
that many threads: BLAS's own, or nnrun's workers in a step whose kernels are split over them
(one kind of thread per step: base.step_threads, runtime/executor.py). OpenBLAS wakes its
threads for every product it parallelises, which on the 2-core machine of docs/benchmarks.md
made small products 2-4x slower than on one thread. Results are the same run to run at a given
count; across counts they agree to rounding.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

from nnrun.backends.base import set_workers, workers
from nnrun.notices import warn_once

from .options import option


# More than any machine's cores; BLAS libraries take a C int and cap it lower still.
MAX_THREADS = 1024


def default_threads() -> int:
    passed_over = []
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        # OpenMP's form is a list for nested levels ("4,2"): the first is the outer level's
        first = value.split(",")[0].strip()
        if first.isdigit() and int(first) > 0:
            count = min(int(first), MAX_THREADS)
            break
        if value:
            passed_over.append((name, value))
    else:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for name, value in passed_over:
        warn_once(f"{name}={value!r} is not a number of threads: nnrun passes it over and uses "
                  f"{count}; set it to a whole number from 1, or give "
                  f"{option('--threads', 'N', placeholder=True)}")
    return count


@contextmanager
def thread_limit(threads: int | None):
    """Runs the block with `threads` workers for nnrun's kernels (None: the default above),
    BLAS on one thread per call."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads={threads}: give 1 to {MAX_THREADS}")
    count = threads or default_threads()
    saved = workers()
    set_workers(count)
    try:
        with threadpool_limits(limits=1):
            yield count
    finally:
        set_workers(saved)
