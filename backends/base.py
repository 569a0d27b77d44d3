"""The backends' shared code: an array module plus the few kernels that must differ per device.

The interface the ops rely on is the protocol in compiler/ops/backend.py (structural: nothing
here imports it). Everything here is written once against `self.xp`; a device backend
overrides only what a benchmark shows to be worth a kernel of its own. The `_into` kernels
write into buffers given to them (the memory-planned executor's); the others allocate their
result. Besides the ops' kernels a backend has `from_host`, `to_host`, `rng` and `synchronize`
for the runtime.
"""

from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .fused import FusedKernels

# Workers for kernels split along the batch: NumPy releases the GIL inside its loops, so the
# slices of a large copy or elementwise pass run on several cores. Sized by
# nnrun.runtime.threads.thread_limit (`--threads`).
_WORKERS = {"count": 1, "pool": None, "pool_size": 0, "splitting": False,
            "step_threads": None, "split_bytes": 0, "product_flops": 0}
PARALLEL_MIN_BYTES = 1 << 20  # below this, handing work to a thread costs more than it saves
# A matrix product of at least this many flops is worth more than one thread (BLAS's, or
# nnrun's workers when its products are many small ones, one per sample): measured on 2 cores,
# 1.3-1.6x faster at 8-12 MFLOP.
PARALLEL_MIN_FLOPS = 8_000_000
_WORKER_PREFIX = "nnrun-kernel"


def set_workers(count: int) -> None:
    _WORKERS["count"] = max(1, count)


def workers() -> int:
    return _WORKERS["count"]


def run_in_slices(task: Callable[[slice], None], size: int, nbytes: int,
                  flops: int = 0, site=None) -> None:
    """task(slice) over consecutive slices of range(size), one per worker, in parallel when
    the work (`nbytes` written, or `flops` of matrix products) is large enough to pay for it
    and the step uses the workers (step_threads). Called on a split's slice it runs in place:
    the pool's workers are busy. `site`: what the task runs, where its code does not say
    (SplitCosts keeps times by it)."""
    if ((nbytes < PARALLEL_MIN_BYTES and flops < PARALLEL_MIN_FLOPS) or workers() < 2
            or splitting()):
        task(slice(0, size))
        return
    count_split(nbytes)
    if _WORKERS["step_threads"] == BLAS_THREADS:
        task(slice(0, size))
        return
    if not split_where_it_pays(task, size, flops or nbytes, site):
        task(slice(0, size))


def split_where_it_pays(task: Callable[[slice], None], size: int, work: int,
                        site=None) -> bool:
    """task(slice) over consecutive slices of range(size), one per worker, when SPLIT_COSTS
    says it pays; else the same slices one after the other on this thread (the same calls, so
    the same numbers). `work`: its size in any unit (bytes, flops), which tells call sites'
    kernels apart, as does `site` (default: the task's code). False (nothing run) with one
    worker. Callers check splitting() first: a split's slices never split again."""
    count = min(workers(), size)
    if count < 2:
        return False
    key = (site or getattr(task, "__code__", None), work, count)
    split = SPLIT_COSTS.worth_splitting(key)
    started = time.perf_counter()
    _WORKERS["splitting"] = True  # BLAS stays on one thread while the slices run
    try:
        if split:
            _split_over_workers(task, batch_bounds(size, count))
        else:
            for part in batch_bounds(size, count):
                task(part)
    finally:
        _WORKERS["splitting"] = False
    SPLIT_COSTS.record(key, split, time.perf_counter() - started)
    return True


def _split_over_workers(task, parts: list[slice]) -> None:
    pool = _pool(len(parts) - 1)
    if pool is None:  # no thread could start: the slices here, one after the other
        for part in parts:
            task(part)
        return
    # NumPy's error settings and ufunc buffer size are the thread's: the caller's, there too
    # (its error callback with them)
    settings = {**np.geterr(), "call": np.geterrcall()}
    pending = [pool.submit(_with_callers_settings, settings, np.getbufsize(), task, part)
               for part in parts[1:]]
    task(parts[0])
    for future in pending:
        future.result()


def batch_bounds(size: int, count: int) -> list[slice]:
    """range(size) as `count` consecutive slices, as a split cuts it."""
    edges = [size * i // count for i in range(count + 1)]
    return [slice(lo, hi) for lo, hi in zip(edges, edges[1:])]


class SplitCosts:
    """Whether splitting a kernel over the workers pays here, from how long it took split
    and on one thread, per call site and size. What a split costs depends on the machine and
    the moment: on the benchmark's 2-vCPU virtual machine a worker takes about 60 us to start
    when the host is quiet and 200-400 us when it is busy (a split 2 MB multiply: 0.4 ms,
    against 0.06 ms on one thread), and a slice shares the cores' caches and memory with the
    other (LeNet-5's dense layer, 12 MFLOP: 141 us on one thread, 182 us split). So each
    kernel takes the way that has been faster for it lately, and tries the other every
    PROBE_EVERY calls."""

    PROBE_EVERY = 16
    KEPT = 5  # the median of a way's last KEPT times: one stall of the host moves it little

    def __init__(self):
        self.times: dict = {}  # (key, split) -> the call's last times, in seconds
        self.split_faster: dict = {}  # key -> whether splitting has been faster lately
        self.calls: dict = {}
        self.warmed: set = set()

    def worth_splitting(self, key) -> bool:
        faster = self.split_faster.get(key)
        if faster is None:  # try each way once: split first
            return (key, True) not in self.times
        self.calls[key] = calls = self.calls.get(key, 0) + 1
        return faster != (calls % self.PROBE_EVERY == 0)  # now and then, the other way

    def record(self, key, split: bool, seconds: float) -> None:
        if key not in self.warmed:  # a first call pays for first touches of its memory
            self.warmed.add(key)
            return
        kept = self.times.setdefault((key, split), [])
        kept.append(seconds)
        del kept[:-self.KEPT]
        split_times, here_times = self.times.get((key, True)), self.times.get((key, False))
        if split_times and here_times:
            self.split_faster[key] = statistics.median(split_times) < statistics.median(here_times)


SPLIT_COSTS = SplitCosts()


def splitting() -> bool:
    """Whether kernels are running on the worker threads right now."""
    return _WORKERS["splitting"]


# What a step's threads are (runtime/executor.py chooses for each step after its first run).
# Both kinds at once lose: OpenBLAS's threads busy-wait after each product they share, taking
# the cores nnrun's workers need for the next kernel (LeNet-5's inference at 2 threads: 8.7 ms
# with both kinds, 5.3 ms with the workers alone).
WORKER_THREADS = "workers"  # kernels and large products split over nnrun's workers
BLAS_THREADS = "blas"  # kernels on one thread, large products on BLAS's threads


@contextmanager
def step_threads(kind: str | None):
    """Runs the block with threads of one kind (None: kernels split by size, large products
    on BLAS's threads, as outside a planned step)."""
    saved = swap_step_threads(kind)
    try:
        yield
    finally:
        swap_step_threads(saved)


def swap_step_threads(kind: str | None) -> str | None:
    """step_threads without a context manager, whose objects a planned step would allocate at
    each run: sets the kind, returns the one to put back."""
    saved, _WORKERS["step_threads"] = _WORKERS["step_threads"], kind
    return saved


def current_step_threads() -> str | None:
    return _WORKERS["step_threads"]


def count_split(nbytes: int) -> None:
    """Bytes of kernels large enough to split (or of a batch segment), for work_counters."""
    _WORKERS["split_bytes"] += nbytes


def count_product(flops: int) -> None:
    """A large matrix product (numpy_backend.py), counted for work_counters."""
    _WORKERS["product_flops"] += flops


def work_counters() -> tuple[int, int]:
    """(bytes of the kernels large enough to split, flops of the large matrix products) so
    far: what a step's choice of threads is made from."""
    return _WORKERS["split_bytes"], _WORKERS["product_flops"]


def _with_callers_settings(settings: dict, bufsize: int, task, part: slice) -> None:
    saved = np.setbufsize(bufsize)
    try:
        with np.errstate(**settings):
            task(part)
    finally:
        np.setbufsize(saved)


def _pool(size: int) -> ThreadPoolExecutor | None:
    if _WORKERS["pool_size"] < size:
        if _WORKERS["pool"] is not None:
            _WORKERS["pool"].shutdown(wait=False)
        _WORKERS["pool"] = _started_pool(size)
        _WORKERS["pool_size"] = size
    return _WORKERS["pool"]


def _started_pool(size: int) -> ThreadPoolExecutor | None:
    """A pool whose `size` threads all run already, or None where they cannot start (an
    address-space limit: "can't start new thread"). Started lazily, a thread could fail in the
    middle of a split, after its slice was queued: that slice would then run later, or twice."""
    pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=_WORKER_PREFIX)
    meeting = threading.Barrier(size + 1)  # each waits there, so each submit starts a thread

    def meet() -> None:
        try:
            meeting.wait()
        except threading.BrokenBarrierError:
            pass

    try:
        for _ in range(size):
            pool.submit(meet)
    except RuntimeError:
        meeting.abort()
        pool.shutdown(wait=False)
        return None
    meeting.wait()
    return pool


def window_count(n: int, k: int, s: int, d: int) -> int:
    return (n - d * (k - 1) - 1) // s + 1


def phase_elements(shape, kernel, stride) -> int:
    """The values of col2im's largest phase of x [B, C, *padded, *rest] (the positions r,
    r + s, ... along each axis with a stride s): the spare buffer col2im_into sums it in."""
    rank = len(kernel)
    largest = (-(-n // s) for n, s in zip(shape[2:2 + rank], stride))
    return math.prod((*shape[:2], *largest, *shape[2 + rank:]))


def refuse_during_capture(capturing: bool, what: str) -> None:
    """For an array kept beyond a step (a cached constant, a workspace): first made while the
    step is captured, it would come from the graph's own memory pool and outlive it. Capture
    warms the step up first, so a correct step never gets here; the capture fails instead, and
    the step runs uncaptured."""
    if capturing:
        raise RuntimeError(f"{what} was first made during a CUDA-graph capture, after its "
                           "warm-up")


class ArrayBackend(FusedKernels):
    """Generic kernels over `xp`. Column layout: [B, C, *kernel, *out]: for each kernel offset,
    the input values it meets at every output position, copied at once from a strided view of
    the windows (window_view); a matrix product with the weight gives channels-first output
    without a transpose."""

    name = "generic"
    xp: Any = None
    # Work split over nnrun's worker threads (run_in_slices, a step's batch segments) runs in
    # parallel: on a GPU one stream orders the launches, and host threads would only reorder
    # them (or break a stream capture).
    host_threads = True
    # The reduction over the ranks of a data-parallel run (MPI on CPUs, NCCL on GPUs), set by
    # nnrun.runtime.distributed on each rank; None in a single process.
    communicator: Any = None

    def rank_count(self) -> int:
        """The ranks of a data-parallel run (1 in a single process)."""
        return 1 if self.communicator is None else self.communicator.size

    def allreduce_mean(self, array) -> None:
        """`array`, in place, becomes its mean over the ranks (itself in a single process)."""
        if self.communicator is not None:
            self.communicator.allreduce_mean(array)

    def from_host(self, array):
        return self.xp.asarray(array)

    def to_host(self, array):
        return array

    def synchronize(self) -> None:
        pass

    def refuse_during_capture(self, what: str) -> None:
        """Nothing here: a host backend never captures its steps."""

    def free_device_bytes(self) -> int | None:
        """The device's free memory, or None: the arrays live in host memory, whose limits
        runtime/memory.py reads itself."""
        return None

    def device_pool_bytes(self, emptied: bool = False) -> int | None:
        """What the device's memory pool holds (emptied of its cached blocks first where
        `emptied`), or None: host allocations, which tracemalloc traces instead."""
        return None

    def release_cached_memory(self) -> None:
        """Hands back what the device's memory pool caches but no array uses (after a one-time
        use of memory, such as a first step's check); nothing on the host."""

    def run_in_slices(self, task, size: int, nbytes: int, flops: int = 0, site=None) -> None:
        """task(slice) over the batch, split across the worker threads when it pays."""
        run_in_slices(task, size, nbytes, flops, site)

    def take_into(self, table, indices, out, axis=None) -> None:
        """out = table.take(indices, axis), for indices known to be in range."""
        self.xp.take(table, indices, axis=axis, out=out)

    def transpose_into(self, x, out) -> None:
        """out = x.T, for a C-contiguous x [R, C] and out [C, R]."""
        self.xp.copyto(out, x.T)

    def transposes_faster_than_copyto(self, x) -> bool:
        """Whether transpose_into copies x [R, C] faster than a plain copyto of its transposed
        view: a transpose into a view of a larger buffer then pays going through a contiguous
        spare buffer first."""
        return False

    def gelu_cdf_into(self, x, out) -> None:
        """out = 1 + erf(x / sqrt(2)), twice the standard normal CDF (GELU's); `out` may be
        `x`."""
        self.xp.divide(x, math.sqrt(2), out=out)
        self.erf_into(out, out)
        self.xp.add(out, 1, out=out)

    # Whether a model's first training step on this backend is checked against the reference
    # executor (runtime/step_path.py): for paths that have not been verified on its device.
    check_first_step = False

    def failed_kernels(self) -> list[str]:
        """Kernels of the backend's own found wrong on its device by their self-check (each
        then runs the generic code), one line each: none where there are none to check."""
        return []

    def graph_capture(self):
        """What captures a whole step as one device graph (backends/cuda_graph.py), or None:
        CPUs have no such thing. Raises CaptureUnavailable (with the reason) where the device
        has graphs but they cannot be used here."""
        return None

    def matmul_into(self, a, b, out) -> None:
        """out = a @ b, with matmul's broadcasting."""
        self.xp.matmul(a, b, out=out)

    def window_slices(self, spatial, kernel, stride, dilation):
        """For each kernel offset: the strided slice of the (padded) input it reads."""
        out = [window_count(n, k, s, d) for n, k, s, d in zip(spatial, kernel, stride, dilation)]
        for offset in itertools.product(*(range(k) for k in kernel)):
            slices = tuple(
                slice(o * d, o * d + s * (m - 1) + 1, s)
                for o, d, s, m in zip(offset, dilation, stride, out)
            )
            yield offset, slices

    def im2col(self, x, kernel, stride, dilation):
        batch, channels, *spatial = x.shape
        out = [window_count(n, k, s, d) for n, k, s, d in zip(spatial, kernel, stride, dilation)]
        cols = self.xp.empty((batch, channels, *kernel, *out), dtype=x.dtype)
        return self.im2col_into(x, kernel, stride, dilation, cols)

    def window_view(self, x, kernel, stride, dilation):
        """x [B, C, *spatial, *rest] as [B, C, *kernel, *out, *rest]: every window's values as
        one strided view, nothing copied. Read it only: its elements overlap."""
        rank = len(kernel)
        spatial, steps = x.shape[2:2 + rank], x.strides[2:2 + rank]
        out = [window_count(n, k, s, d) for n, k, s, d in zip(spatial, kernel, stride, dilation)]
        return self.xp.lib.stride_tricks.as_strided(
            x, (*x.shape[:2], *kernel, *out, *x.shape[2 + rank:]),
            (*x.strides[:2], *(t * d for t, d in zip(steps, dilation)),
             *(t * s for t, s in zip(steps, stride)), *x.strides[2 + rank:]))

    def im2col_into(self, x, kernel, stride, dilation, cols):
        # One copy of the windows' view instead of one per kernel offset: one call, and one
        # release of the GIL (measured alone on LeNet-5's columns, 1.1-1.4x faster; over a
        # whole step, no difference beyond the machine's noise).
        self.xp.copyto(cols, self.window_view(x, kernel, stride, dilation))
        return cols

    def batch_columns_into(self, x, kernel, stride, dilation, cols):
        """Columns [C, *kernel, B, *out]: read as a [C*K, B*O] matrix, one matrix product
        with the [F, C*K] weight convolves the whole batch, and one with the gradient gives
        the weight gradient."""
        lead = (slice(None),) * (1 + len(kernel))  # [C, *kernel]
        windows = self.window_view(x, kernel, stride, dilation)  # [B, C, *kernel, *out]
        windows = windows.transpose(*range(1, len(lead) + 1), 0, *range(len(lead) + 1,
                                                                        windows.ndim))

        def copy(batch: slice) -> None:
            self.xp.copyto(cols[(*lead, batch)], windows[(*lead, batch)])

        self.run_in_slices(copy, x.shape[0], cols.nbytes)
        return cols

    def col2im(self, cols, padded_shape, kernel, stride, dilation):
        x = self.xp.empty(padded_shape, dtype=cols.dtype)
        return self.col2im_into(cols, kernel, stride, dilation, x)

    @contextmanager
    def short_buffers(self):
        """A block of elementwise work over strided views with short contiguous runs: where
        the array module buffers them, with small buffers (NumPy: numpy_backend.py)."""
        saved = self.begin_short_buffers()
        try:
            yield
        finally:
            self.end_short_buffers(saved)

    def begin_short_buffers(self):
        """short_buffers without a context manager (a step's, which must allocate little):
        returns what end_short_buffers puts back."""
        return None

    def end_short_buffers(self, saved) -> None:
        pass

    def col2im_into(self, cols, kernel, stride, dilation, x, spare=None):
        """x [B, C, *padded, *rest] = the sum of cols [B, C, *kernel, *out, *rest] over the
        windows. With a `spare` buffer of at least phase_elements(...) values, by phases (below)."""
        if spare is not None and spare.size >= phase_elements(x.shape, kernel, stride):
            return self._col2im_by_phases(cols, kernel, stride, dilation, x, spare)
        x.fill(0)
        (x_view, cols_view), lead = _merged_leading(x, cols)
        with self.short_buffers():
            for offset, slices in self.window_slices(x.shape[2:], kernel, stride, dilation):
                target = x_view[(*lead, *slices)]
                self.xp.add(target, cols_view[(*lead, *offset)], out=target)
        return x

    # With a stride above 1 each window offset adds into every s-th position, a strided pass.
    # The positions of one phase (r mod s along each axis) take the offsets whose taps land on
    # r: summed in a spare buffer of that phase's positions, each addition is one contiguous
    # run per row, and the phase is copied out once. The same additions in the same order, bit
    # for bit; measured 1.1-3x faster for 3x3 and 4x4 kernels at stride 2, the more the
    # shorter the batch-last runs (docs/benchmarks.md). compiler/ops/conv.py gives the spare
    # buffer where it pays.
    def _col2im_by_phases(self, cols, kernel, stride, dilation, x, spare):
        rank = len(kernel)
        padded, rest = x.shape[2:2 + rank], x.shape[2 + rank:]
        out = cols.shape[2 + rank:2 + 2 * rank]
        lead = (slice(None), slice(None))
        offsets = list(itertools.product(*(range(k) for k in kernel)))
        for phase in itertools.product(*(range(s) for s in stride)):
            sizes = tuple(len(range(r, n, s)) for r, n, s in zip(phase, padded, stride))
            shape = (*x.shape[:2], *sizes, *rest)
            buffer = spare.reshape(-1)[:math.prod(shape)].reshape(shape)
            buffer.fill(0)
            for offset in offsets:
                if any(t * d % s != r for t, d, s, r in zip(offset, dilation, stride, phase)):
                    continue
                first = (t * d // s for t, d, s in zip(offset, dilation, stride))
                target = buffer[(*lead, *(slice(f, f + m) for f, m in zip(first, out)))]
                self.xp.add(target, cols[(*lead, *offset)], out=target)
            self.xp.copyto(x[(*lead, *(slice(r, None, s) for r, s in zip(phase, stride)))],
                           buffer)
        return x


def _merged_leading(*arrays):
    """The arrays with their [B, C] axes merged into one, when every one allows it as a view,
    and the leading slices to index them with. One axis fewer for each strided copy or
    addition to iterate over: measured 4x faster on a 1-D convolution's col2im."""
    if all(a.flags.c_contiguous for a in arrays):
        return [a.reshape(a.shape[0] * a.shape[1], *a.shape[2:]) for a in arrays], (slice(None),)
    return list(arrays), (slice(None), slice(None))
