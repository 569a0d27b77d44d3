"""The CuPy backend's raw kernels (backends/raw_kernels.py), checked without a GPU.

Each kernel family's C source is compiled with g++ under a prelude whose FOR_EACH_THREAD runs
every thread index in turn; a NumPy backend whose fused members run the kernels' launch plans
through ctypes (as the CuPy backend runs them on the device) must then agree with the generic
code, op by op, over random shapes and every configuration the kernels cover. The CUDA form
of every source compiles for compute_90 under nvcc, else NVRTC (CuPy's, else the
nvidia-cuda-nvrtc wheel of the test extra)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from kernel_cases import (ACTIVATIONS, CROSS_ENTROPY_CONFIGS, DTYPES, UPDATES,
                          activation_cases, compare_columns, compare_into, cross_entropy_cases,
                          pool_cases, update_cases)
from kernel_emulation import needs_gcc, run_plan

from nnrun.backends import raw_kernels
from nnrun.backends.numpy_backend import NumpyBackend

_run = run_plan


@pytest.fixture(autouse=True, params=["int32", "int64"])
def index_type(request, monkeypatch):
    """Every kernel check in both index forms: int32, as launches at the tests' sizes take,
    and int64, as launches of a billion elements or more take (NARROW_LIMIT lowered to 0)."""
    if request.param == "int64":
        monkeypatch.setattr(raw_kernels, "NARROW_LIMIT", 0)
    return request.param


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

    def col2im_into(self, cols, kernel, stride, dilation, x, spare=None):
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
def test_cuda_sources_compile_for_compute_90(family, dtype, index_type, tmp_path):
    """nvcc (to a cubin for sm_90, through ptxas), else NVRTC (to PTX), else skip."""
    source = raw_kernels.source(family, dtype, index=index_type)
    if shutil.which("nvcc"):
        path = tmp_path / f"{family}.cu"
        path.write_text(source)
        result = subprocess.run(["nvcc", "-arch=sm_90", "--cubin", "-fmad=false", str(path),
                                 "-o", str(tmp_path / f"{family}.cubin")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return
    log = _nvrtc_errors(source, f"{family}.cu",
                        ["--gpu-architecture=compute_90", "--fmad=false"])
    assert log is None, log


def _nvrtc_errors(source: str, name: str, options: list[str]) -> str | None:
    """NVRTC's log when the source does not compile, else None: through CuPy, else through
    the NVRTC wheel of the test extra (nvidia-cuda-nvrtc, no GPU needed), else skip."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception:  # noqa: BLE001 - no CuPy, or no NVRTC library beside it
        return _wheel_nvrtc_errors(source, name, options)
    program = nvrtc.createProgram(source, name, [], [])
    try:
        nvrtc.compileProgram(program, options)
    except Exception as error:  # noqa: BLE001 - the compile error, with its log
        return f"{error}\n{nvrtc.getProgramLog(program)}"
    finally:
        nvrtc.destroyProgram(program)
    return None


def _wheel_nvrtc_errors(source: str, name: str, options: list[str]) -> str | None:
    library = _wheel_nvrtc()
    program = ctypes.c_void_p()
    assert library.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(),
                                      0, None, None) == 0
    try:
        encoded = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        if library.nvrtcCompileProgram(program, len(options), encoded) == 0:
            return None
        size = ctypes.c_size_t()
        library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        library.nvrtcGetProgramLog(program, log)
        return log.value.decode(errors="replace")
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


def _wheel_nvrtc():
    try:
        import nvidia
    except ImportError:
        nvidia = None
    for root in getattr(nvidia, "__path__", []):
        for path in sorted(Path(root).glob("*/lib/libnvrtc.so.*")):
            return ctypes.CDLL(str(path))
    pytest.skip("neither nvcc nor NVRTC is available (CuPy, or the nvidia-cuda-nvrtc wheel)")


def test_a_launch_narrows_to_int32_only_when_everything_fits(monkeypatch):
    monkeypatch.setattr(raw_kernels, "NARROW_LIMIT", 11)
    x = np.zeros(10, np.float32)
    index, args = raw_kernels.index_form(10, (x, np.int64(10), np.float32(0.5), np.int32(1)))
    assert index == "int32" and [type(a) for a in args[1:]] == [np.int32, np.float32, np.int32]
    monkeypatch.setattr(raw_kernels, "NARROW_LIMIT", 10)
    for threads, args in ((10, (x[:1],)), (1, (x,)), (1, (np.int64(-10),))):
        assert raw_kernels.index_form(threads, args) == ("int64", args)
