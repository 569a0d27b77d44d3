"""The CuPy backend's raw kernels (backends/raw_kernels.py), checked without a GPU.

Each kernel family's C source is compiled with g++ under a prelude whose FOR_EACH_THREAD runs
every thread index in turn; a NumPy backend whose fused members run the kernels' launch plans
through ctypes (as the CuPy backend runs them on the device) must then agree with the generic
code, op by op, over random shapes and every configuration the kernels cover. Where nvcc or
NVRTC is at hand, the CUDA form of every source compiles for compute_90."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from kernel_cases import (ACTIVATIONS, CROSS_ENTROPY_CONFIGS, DTYPES, UPDATES,
                          activation_cases, compare_columns, compare_into, cross_entropy_cases,
                          pool_cases, update_cases)
from kernel_emulation import needs_gcc, run_plan

from nnrun.backends import raw_kernels
from nnrun.backends.numpy_backend import NumpyBackend

_run = run_plan


class EmulatedBackend(NumpyBackend):
    """The CuPy backend's overrides, with the kernels run on the CPU by _run."""

    def activation_into(self, activation, alpha, x, out):
        _run(raw_kernels.activation_plan(activation, alpha, x, None, out[0]))

    def bias_activation_into(self, activation, alpha, x, b, out):
        _run(raw_kernels.activation_plan(activation, alpha, x, b, out[0]))

    def optimizer_update_into(self, rule, attrs, out, p, g, lr, step, *state):
        _run(raw_kernels.update_plan(rule, attrs, out[:1 + len(state)], p, g, lr, step, *state))

    def max_pool_index_into(self, padded, kernel, stride, dilation, positions, out):
        _run(raw_kernels.pool_plan("max_pool_index", padded, *out[:2], kernel, stride, dilation))

    def max_pool_grad_index_into(self, g, index, kernel, stride, dilation, starts, target,
                                 positions):
        _run(raw_kernels.pool_plan("max_pool_grad_index", target, g, index, kernel, stride,
                                   dilation))

    def im2col_into(self, x, kernel, stride, dilation, cols):
        _run(raw_kernels.columns_plan("im2col", x, cols, kernel, stride, dilation))
        return cols

    def batch_columns_into(self, x, kernel, stride, dilation, cols):
        _run(raw_kernels.columns_plan("im2col", x, cols, kernel, stride, dilation, layout=1))
        return cols

    def col2im_into(self, cols, kernel, stride, dilation, x):
        _run(raw_kernels.columns_plan("col2im", x, cols, kernel, stride, dilation))
        return x

    def softmax_cross_entropy_into(self, attrs, logits, labels, starts, out):
        _run(raw_kernels.cross_entropy_plan(attrs, logits, labels, out, None,
                                            _workspace(logits.dtype)))

    def softmax_cross_entropy_grad_into(self, attrs, g, logits, labels, starts, out):
        _run(raw_kernels.cross_entropy_plan(attrs, logits, labels, out, g,
                                            _workspace(logits.dtype)))


def _workspace(dtype):
    return np.full(2 * raw_kernels.PARTS, np.nan), np.full(2, np.nan, dtype=dtype)


GENERIC, EMULATED = NumpyBackend(), EmulatedBackend()


def _compare_all(cases):
    for name, attrs, inputs, exact, in_place in cases:
        compare_into(GENERIC, EMULATED, name, attrs, inputs, exact, in_place)


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation, alpha", ACTIVATIONS)
def test_bias_activation_kernel(activation, alpha, dtype):
    _compare_all(activation_cases(activation, alpha, dtype))


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule, attrs", UPDATES)
def test_optimizer_update_kernel(rule, attrs, dtype):
    _compare_all(update_cases(rule, attrs, dtype))


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_max_pool_kernels(rank, dtype):
    _compare_all(pool_cases(rank, dtype))


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attrs", CROSS_ENTROPY_CONFIGS)
def test_softmax_cross_entropy_kernels(attrs, dtype):
    _compare_all(cross_entropy_cases(attrs, dtype))


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_column_kernels(rank, dtype):
    """im2col in both layouts and col2im, bit for bit (copies, and sums in the generic
    order)."""
    compare_columns(GENERIC, EMULATED, rank, dtype)


def test_every_family_is_covered_here():
    covered = {"bias_activation", "sgd_update", "adam_update", "rmsprop_update",
               "adagrad_update", "max_pool_index",
               "max_pool_grad_index", "cross_entropy", "columns"}
    assert set(raw_kernels.SOURCES) == covered


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", sorted(raw_kernels.SOURCES))
def test_cuda_sources_compile_for_compute_90(family, dtype, tmp_path):
    """nvcc (to a cubin for sm_90, through ptxas), else NVRTC (to PTX), else skip."""
    source = raw_kernels.source(family, dtype)
    if shutil.which("nvcc"):
        path = tmp_path / f"{family}.cu"
        path.write_text(source)
        result = subprocess.run(["nvcc", "-arch=sm_90", "--cubin", "-fmad=false", str(path),
                                 "-o", str(tmp_path / f"{family}.cubin")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(source, f"{family}.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=compute_90", "--fmad=false"])
    except Exception as error:
        pytest.fail(f"{error}\n{nvrtc.getProgramLog(program)}")
    finally:
        nvrtc.destroyProgram(program)


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as error:  # no CuPy, or no NVRTC library beside it
        pytest.skip(f"neither nvcc nor NVRTC is available ({type(error).__name__})")
    return nvrtc
