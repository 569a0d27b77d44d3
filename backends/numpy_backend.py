"""The NumPy backend: the generic kernels of base.py with numpy as the array module."""

from __future__ import annotations

import math
import threading
from functools import cache, lru_cache

import numpy as np

from .base import (PARALLEL_MIN_FLOPS, WORKER_THREADS, ArrayBackend, count_product,
                   current_step_threads, split_where_it_pays, splitting, workers)

# A matrix product of at least base.PARALLEL_MIN_FLOPS runs on `--threads` threads rather than
# on one: BLAS's own, measured on 2 cores 1.9x faster at 51 MFLOP (the MLP's first layer at
# batch 128) and 1.3-1.6x at 8-12 MFLOP, where splitting its rows over nnrun's workers gained
# 1.3x; but in a step whose threads are nnrun's workers (base.step_threads), over those.
# Smaller products stay on one thread: handing them to other threads costs more than it saves.


@cache
def _scipy_erf():
    # scipy is optional (the `scipy` extra; the `datasets` extra brings it too): its erf is
    # about 6x faster than math.erf applied element by element, and both are exact to an ulp,
    # so the light core install does without it. Imported at the first erf only: scipy loads
    # a BLAS library of its own, which _blas_threads would then set for every large product.
    try:
        from scipy.special import erf
    except ImportError:
        return None
    return erf


_math_erf = np.vectorize(math.erf, otypes=[np.float64])

BLOCK = 32768  # elements a pass over a large array takes at once: 128 KiB of float32, within L2
OUTER_MULTIPLY_MIN = 16384  # output elements from which an outer product is a multiply
BROADCAST_BIAS_MIN_RUN = 512  # positions per channel from which bias_add broadcasts the bias

# GELU's 1 + erf(x / sqrt(2)) in float32, from erfc(z) = t exp(P(t) - z^2), t = 1 / (1 + z / 2):
# erfc(|z|) for x < 0, 2 - erfc(z) for x >= 0. P's coefficients (highest degree first) are
# benchmarks/erf_fit.py's, erfc within 5e-8 relative. In NumPy's vectorised float32 operations
# it takes half the time of 1 + SciPy's erf (an element at a time, in float64; math.erf is
# slower still), within 5e-7 of the exact value (PyTorch's GELU: 4e-7), and relatively exact in
# the negative tail, where 1 + erf rounds to 0. float64 keeps erf's exact form.
_ERFC_POLYNOMIAL = tuple(np.float32(c) for c in (
    0.14493021369121967, -0.6808271776379925, 1.1567337568256995, -0.6962518985613164,
    -0.08028043242985036, 0.0012675864803081832, 0.03460279997287045, 0.3866404121540742,
    0.9986327833379387, -1.2654479969016665))


# A transposed copy reads its source down the columns: where a row is a multiple of 512 bytes,
# a column's values map to a few cache sets, and NumPy's copy of 128 rows of 1,024 float32 took
# 0.74 ms, against 0.09 ms with tiles of the rows first copied 64 bytes apart (transpose_into).
SPREAD_MIN = 16384  # values: below, the plain copy is as fast
SPREAD_ROWS, SPREAD_ROW_BYTES, SPREAD_GAP = 128, 4096, 64  # a tile, and the gap after each row
# The process's tile, made at its first use (no step's memory), for one thread at a time: a
# thread's own would be made inside a later step by a worker thread that had none yet.
_SPREAD = {"tile": None, "lock": threading.Lock()}


_CDF_SCRATCH = threading.local()  # a thread's rows, made at its first call: a step allocates none


def _spreads(x) -> bool:
    """Whether rows of x [R, C] are read faster down their columns from the tile: rows of a
    power of two of 512 bytes or more, 16 of them or more; rows of another multiple of 512
    bytes, 128 or more (fewer took longer through the tile, measured)."""
    count, row_bytes = x.shape[0], x.shape[1] * x.itemsize
    if x.size < SPREAD_MIN or row_bytes % 512:
        return False
    return count >= (16 if row_bytes & (row_bytes - 1) == 0 else SPREAD_ROWS)


def _transpose_by_tiles(x, out, tile) -> None:
    """out = x.T, each tile of x's rows copied into `tile` (its rows SPREAD_GAP bytes apart),
    then read down its columns."""
    count, length = x.shape
    width = tile.shape[1] - SPREAD_GAP // x.itemsize
    for first in range(0, count, SPREAD_ROWS):
        rows = slice(first, first + SPREAD_ROWS)
        for start in range(0, length, width):
            columns = slice(start, start + width)
            block = x[rows, columns]
            spread = tile[:block.shape[0], :block.shape[1]]
            np.copyto(spread, block)
            np.copyto(out[columns, rows], spread.T)


def _spread_tile(dtype) -> np.ndarray:
    """The process's tile: SPREAD_ROWS rows of SPREAD_ROW_BYTES, each followed by SPREAD_GAP
    bytes (taken under _SPREAD's lock)."""
    if _SPREAD["tile"] is None:
        _SPREAD["tile"] = np.empty(SPREAD_ROWS * (SPREAD_ROW_BYTES + SPREAD_GAP), np.uint8)
    return _SPREAD["tile"].view(dtype).reshape(SPREAD_ROWS, -1)


def _cdf_scratch() -> np.ndarray:
    rows = getattr(_CDF_SCRATCH, "rows", None)
    if rows is None:
        rows = _CDF_SCRATCH.rows = np.empty((3, BLOCK), np.float32)
    return rows


def _gelu_cdf_float32_into(x, out) -> None:
    """out = 1 + erf(x / sqrt(2)) for float32 `x` (`out` may be `x`), by blocks of BLOCK."""
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    scratch = _cdf_scratch()
    one = np.float32(1)
    for start in range(0, flat_x.size, BLOCK):
        block, into = flat_x[start:start + BLOCK], flat_out[start:start + BLOCK]
        square, t, result = scratch[:, :block.size]
        np.abs(block, out=t)
        np.multiply(t, np.float32(0.5 / math.sqrt(2)), out=t)  # z / 2, z = |x| / sqrt(2)
        np.add(t, one, out=t)
        np.reciprocal(t, out=t)
        with np.errstate(over="ignore"):  # |x| past 1.8e19: inf, whose erfc is 0
            np.multiply(block, block, out=square)
        np.multiply(square, np.float32(0.5), out=square)  # z^2
        np.multiply(t, _ERFC_POLYNOMIAL[0], out=result)
        for coefficient in _ERFC_POLYNOMIAL[1:-1]:
            np.add(result, coefficient, out=result)
            np.multiply(result, t, out=result)
        np.add(result, _ERFC_POLYNOMIAL[-1], out=result)
        np.subtract(result, square, out=result)
        np.exp(result, out=result)
        np.multiply(result, t, out=result)  # e = erfc(z): the term for x < 0
        # e + (1 + sign(x)) (1 - e): e itself for x < 0, 2 - e for x > 0, 1 at 0, NaN for NaN
        np.sign(block, out=t)
        np.add(t, one, out=t)
        np.subtract(one, result, out=square)
        np.multiply(t, square, out=t)
        np.add(result, t, out=into)


class NumpyBackend(ArrayBackend):
    name = "numpy"
    xp = np

    @property
    def fast_erf(self):
        return _scipy_erf()

    def to_host(self, array):
        return np.asarray(array)

    def rng(self, seed):
        return np.random.default_rng(seed)

    def erf(self, x):
        out = np.empty_like(x)
        self.erf_into(x, out)
        return out

    def matmul_into(self, a, b, out) -> None:
        if a.shape[-1] == 1 and a.ndim >= 2 and b.ndim >= 2 and out.size >= OUTER_MULTIPLY_MIN:
            # An outer product (one input feature, a one-output head's input gradient): NumPy's
            # matmul takes no BLAS for it, and a multiply of the same products (the same
            # numbers) took a quarter of its time, 0.37 against 1.6 ms at [1024, 1] @ [1, 1000].
            # Below OUTER_MULTIPLY_MIN matmul is as fast within microseconds, and the multiply's
            # broadcast would take buffers of NumPy's own (about 4 KB, in a step that allocates
            # nothing else) for rows shorter than its buffer size
            np.multiply(a, b, out=out)
            return
        count, flops = workers(), 2 * out.size * a.shape[-1]
        if count < 2 or splitting() or flops < PARALLEL_MIN_FLOPS:
            np.matmul(a, b, out=out)
            return
        count_product(flops)
        if current_step_threads() != WORKER_THREADS:
            with _blas_threads(count):
                np.matmul(a, b, out=out)
        elif out.ndim != 2 or not _matmul_on_workers(a, b, out, flops):
            np.matmul(a, b, out=out)

    def transposes_faster_than_copyto(self, x) -> bool:
        return _spreads(x)

    def transpose_into(self, x, out) -> None:
        if not _spreads(x) or not _SPREAD["lock"].acquire(blocking=False):
            np.copyto(out, x.T)
            return
        try:
            _transpose_by_tiles(x, out, _spread_tile(x.dtype))
        finally:
            _SPREAD["lock"].release()

    def relu_into(self, x, y) -> None:
        # NumPy's maximum runs its SIMD loop only when both operands are arrays; against the
        # scalar 0 it takes an element-by-element loop (measured 3-4x slower on 1 MB, NumPy
        # 2.4). So the zeros come from a block kept for the purpose: one call over rows of a
        # divisor of the size, the block broadcast down them (a call a block cost 2 us each:
        # [16, 16, 64, 64] 190 -> 125 us), else a block at a time.
        if x.size <= BLOCK:
            np.maximum(x, _zeros(x.shape, x.dtype), out=y)
            return
        if not (x.flags.c_contiguous and y.flags.c_contiguous):
            np.maximum(x, 0, out=y)
            return
        row = _row_length(x.size)
        if row:
            rows = (x.size // row, row)
            np.maximum(x.reshape(rows), _zeros((row,), x.dtype), out=y.reshape(rows))
            return
        x_flat, y_flat = x.reshape(-1), y.reshape(-1)
        for start in range(0, x.size, BLOCK):
            end = min(start + BLOCK, x.size)
            np.maximum(x_flat[start:end], _zeros((end - start,), x.dtype), out=y_flat[start:end])

    def bias_add_into(self, x, b, y) -> None:
        # Where each channel's positions run long, x + b in one call (the bias a scalar along
        # each run) beats the bias copied across y first and x added (two passes): [16, 16,
        # 64, 64] 277 -> 170 us, [128, 6, 28, 28] 135 -> 105 us; runs of 196 went 142 -> 222
        # us. The same sums; the broadcast takes an iterator of about 1.2 KB a call in a step
        # (short buffers), no buffer that grows with the batch.
        if x.ndim > 2 and math.prod(x.shape[2:]) >= BROADCAST_BIAS_MIN_RUN:
            np.add(x, b.reshape((1, -1) + (1,) * (x.ndim - 2)), out=y)
            return
        super().bias_add_into(x, b, y)

    # Over strided or broadcast operands (col2im's additions, pooling's window offsets, a
    # reduction over a window axis, a per-channel scale), NumPy's ufuncs allocate buffers of
    # bufsize elements per operand at each call (3 x 32 KB by default), which a step that
    # allocates nothing (issue 7) cannot have: the planned executor runs its steps with
    # short buffers (begin_short_buffers). 512 elements keep them at 6 KB in float32, at the
    # same speed (docs/benchmarks.md, Memory; 256 was 2-3% slower on small convs).
    def begin_short_buffers(self) -> int:
        return np.setbufsize(SHORT_BUFFER)

    def end_short_buffers(self, saved: int) -> None:
        np.setbufsize(saved)

    def take_into(self, table, indices, out, axis=None) -> None:
        # mode="raise", the default, checks bounds through a temporary copy of the output
        np.take(table, indices, axis=axis, out=out, mode="clip")

    def gelu_cdf_into(self, x, out) -> None:
        if x.dtype == out.dtype == np.float32 and x.flags.c_contiguous and out.flags.c_contiguous:
            _gelu_cdf_float32_into(x, out)
        else:
            super().gelu_cdf_into(x, out)

    def erf_into(self, x, out):
        if self.fast_erf is not None:
            self.fast_erf(x, out=out)
        else:
            out[...] = _math_erf(x)


SHORT_BUFFER = 512  # elements per operand of NumPy's ufunc buffers, within short_buffers


@lru_cache(maxsize=256)
def _row_length(size: int) -> int:
    """The largest divisor of size from BLOCK / 8 to BLOCK, or 0: rows of it are long enough
    for one broadcast call to run at the speed of contiguous operands."""
    for count in range(-(-size // BLOCK), size // (BLOCK // 8) + 1):
        if size % count == 0:
            return size // count
    return 0


@lru_cache(maxsize=256)
def _zeros(shape: tuple, dtype) -> np.ndarray:
    """Read-only zeros of a shape of at most BLOCK elements, for relu_into: views of one
    block per dtype, kept by shape so that a call builds none."""
    return _zero_block(dtype)[:math.prod(shape)].reshape(shape)


@cache
def _zero_block(dtype) -> np.ndarray:
    zeros = np.zeros(BLOCK, dtype=dtype)
    zeros.flags.writeable = False
    return zeros


def _matmul_on_workers(a, b, out, flops: int) -> bool:
    """out = a @ b (2-d), its longer axis split over nnrun's workers where that pays (False:
    not run)."""
    rows, columns = out.shape
    if rows >= columns:
        return split_where_it_pays(lambda part: np.matmul(a[part], b, out=out[part]), rows,
                                   flops)
    return split_where_it_pays(lambda part: np.matmul(a, b[:, part], out=out[:, part]),
                               columns, flops)


class _blas_threads:
    """BLAS on `count` threads for the block (runtime/threads.py keeps it on one otherwise).
    A class rather than a generator: entered for every large product (a few us saved each)."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        self.libraries = _blas_libraries()
        self.saved = [library.num_threads for library in self.libraries]
        for library in self.libraries:
            library.set_num_threads(self.count)

    def __exit__(self, *exception):
        for library, threads in zip(self.libraries, self.saved):
            library.set_num_threads(threads)


@cache
def _blas_libraries() -> list:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers
