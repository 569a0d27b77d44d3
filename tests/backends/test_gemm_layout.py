"""The cuBLAS GEMM arguments for `out = a @ b` (backends/gemm_layout.py), checked on NumPy by
doing what cuBLAS would do with them: read each operand's memory as a column-major matrix with
the computed leading dimension and batch stride, apply op T where asked, and write C."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from nnrun.backends.gemm_layout import layout_of, plan_gemm


def emulate(call, arrays: dict) -> None:
    """cuBLAS's strided-batched GEMM, column-major, on NumPy memory."""
    def matrix(operand, rows, columns):
        array = arrays[operand.name]
        stored = (columns, rows) if operand.transpose else (rows, columns)
        item = array.itemsize
        view = as_strided(array, (call.batch, *stored),
                          (operand.batch_stride * item, item, operand.ld * item), writeable=False)
        return view.transpose(0, 2, 1) if operand.transpose else view

    c = as_strided(arrays["out"], (call.batch, call.m, call.n),
                   (call.out.batch_stride * arrays["out"].itemsize, arrays["out"].itemsize,
                    call.out.ld * arrays["out"].itemsize))
    c[...] = matrix(call.first, call.m, call.k) @ matrix(call.second, call.k, call.n)


def run_planned(a, b, out) -> None:
    """As CupyBackend's direct path does: copy an operand no call can read, then call."""
    arrays = {"a": a, "b": b, "out": out}
    for _ in range(3):
        call = plan_gemm(*(layout_of(arrays[name]) for name in ("a", "b", "out")))
        if not isinstance(call, str):
            emulate(call, arrays)
            if arrays["out"] is not out:
                out[...] = arrays["out"]
            return
        arrays[call] = np.ascontiguousarray(arrays[call]) if call != "out" else np.empty(
            out.shape, out.dtype)
    raise AssertionError("no call after copying every operand")


def ops_layouts(xp, rng, dtype):
    """Every layout nnrun's ops hand to matmul_into (compiler/ops linear, conv, resize), as
    views made on `xp` (the GPU tests run the same list on CuPy)."""
    def r(*shape):
        return xp.asarray(rng.standard_normal(shape), dtype=dtype)

    def empty(*shape):
        return xp.zeros(shape, dtype=dtype)

    cols = r(12, 5, 7)  # [C*K, B, O] columns
    w = r(4, 12)
    g = r(5, 4, 7)
    yield "dense", r(6, 5), r(5, 3), empty(6, 3)
    yield "dense rows slice", r(6, 5)[2:5], r(5, 3), empty(6, 3)[2:5]
    yield "dense a^T", r(5, 6).T, r(5, 3), empty(6, 3)
    yield "dense b^T", r(6, 5), r(3, 5).T, empty(6, 3)
    yield "conv input grad", w.T, r(4, 35), empty(12, 35)
    yield "shifted rows: 2-D broadcast @ 3-D", w.T, r(3, 4, 10), empty(3, 12, 10)
    yield "conv columns", w, cols.reshape(12, -1), empty(4, 35)
    yield "per-sample columns (strided batch)", w, cols.swapaxes(0, 1), empty(5, 4, 7)
    yield "weight grad into a transposed view", cols.reshape(12, -1), r(4, 35).T, empty(4, 12).T
    yield "per-sample weight grad", cols.swapaxes(0, 1), g.swapaxes(1, 2), empty(5, 12, 4)
    yield "bias grad over the batch: vector @ matrix", xp.ones(5, dtype=dtype), r(5, 36), \
        empty(36)
    yield "bias grad over positions: matrix @ vector", r(4, 9), xp.ones(9, dtype=dtype), empty(4)
    yield "3-D @ vector", r(5, 4, 9), xp.ones(9, dtype=dtype), empty(5, 4)
    yield "resize rows: 2-D @ 4-D", r(6, 3), r(2, 3, 3, 4), empty(2, 3, 6, 4)
    yield "resize columns: 4-D @ 2-D^T", r(2, 3, 6, 4), r(8, 4).T, empty(2, 3, 6, 8)
    yield "resize grad", r(2, 3, 6, 8), r(8, 4), empty(2, 3, 6, 4)
    yield "resize grad rows: 2-D^T @ 4-D", r(6, 3).T, r(2, 3, 6, 4), empty(2, 3, 3, 4)
    yield "vector @ matrix", r(5), r(5, 3), empty(3)
    yield "one row", r(1, 5), r(5, 3), empty(1, 3)
    yield "one column out", r(6, 5), r(5, 1), empty(6, 1)
    yield "odd strides: copied", r(6, 10)[:, ::2], r(5, 6)[:, ::2], empty(6, 3)
    yield "batched out, transposed", r(4, 6, 5), r(4, 5, 3), empty(4, 3, 6).swapaxes(1, 2)
    yield "non-collapsible batch: copied", r(3, 4, 6, 5).swapaxes(0, 1), r(5, 2), \
        empty(4, 3, 6, 2)
    yield "odd-strided out: through a temporary", r(6, 5), r(5, 3), empty(6, 6)[:, ::2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_calls_match_matmul_on_every_ops_layout(dtype):
    rng = np.random.default_rng(0)
    for name, a, b, out in ops_layouts(np, rng, dtype):
        run_planned(a, b, out)
        np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-5, atol=1e-5, err_msg=name)


def test_views_keep_their_layout_without_a_copy():
    rng = np.random.default_rng(1)
    w, cols = rng.standard_normal((4, 12)), rng.standard_normal((12, 5, 7))
    call = plan_gemm(layout_of(w), layout_of(cols.swapaxes(0, 1)), layout_of(np.empty((5, 4, 7))))
    assert call.batch == 5 and call.first.name == "b" and call.second.name == "a"
    assert call.first.batch_stride == 7 and call.second.batch_stride == 0  # w broadcast
    weight_grad = plan_gemm(layout_of(cols.reshape(12, -1)), layout_of(np.empty((4, 35)).T),
                            layout_of(np.empty((4, 12)).T))
    assert not isinstance(weight_grad, str)
    # out is column-major as it is (a transposed view): out = a b, a's rows read as op T, and
    # b (a transposed view too) read as it is.
    assert (weight_grad.first.name, weight_grad.first.transpose, weight_grad.first.ld) == \
        ("a", True, 35)
    assert (weight_grad.second.name, weight_grad.second.transpose) == ("b", False)


def test_layouts_no_call_reads_are_named():
    x = np.empty((6, 10))
    assert plan_gemm(layout_of(x[:, ::2]), layout_of(np.empty((5, 3))),
                     layout_of(np.empty((6, 3)))) == "a"
    assert plan_gemm(layout_of(np.empty((6, 5))), layout_of(np.empty((5, 3))),
                     layout_of(np.empty((6, 6))[:, ::2])) == "out"
    broadcast_out = np.broadcast_to(np.empty((6, 3)), (2, 6, 3))
    assert plan_gemm(layout_of(np.empty((2, 6, 5))), layout_of(np.empty((5, 3))),
                     layout_of(broadcast_out)) == "out"
