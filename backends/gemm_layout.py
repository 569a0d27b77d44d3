"""A row-major matrix product `out = a @ b` as one call of cuBLAS's column-major GEMM.

Pure arithmetic on shapes and strides (counted in elements), so that it is tested on NumPy by
emulating the call (tests/backends/test_gemm_layout.py). cuBLAS computes C = op(A) op(B), every
matrix column-major: element (i, j) of a matrix X with leading dimension ld is at i + j*ld.
A C-order array is its own transpose in column-major order, so C-order `out = a @ b` is
column-major `out^T = b^T a^T`; a transposed view (`a.T` of a C-order array) is column-major as
it is, and becomes op T when the call needs its transpose. Batches (matmul's broadcasting over
the leading axes) become one strided-batched call when each operand's batch axes collapse to one
stride (0 for an operand broadcast over them).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod


@dataclass(frozen=True)
class Layout:
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements


@dataclass(frozen=True)
class Operand:
    name: str  # "a", "b" or "out": which array's memory cuBLAS reads or writes
    transpose: bool  # op T
    ld: int
    batch_stride: int


@dataclass(frozen=True)
class GemmCall:
    m: int  # rows of C and of op(A)
    n: int  # columns of C and of op(B)
    k: int
    batch: int
    first: Operand  # cuBLAS's A
    second: Operand  # cuBLAS's B
    out: Operand  # cuBLAS's C (never transposed)


@dataclass(frozen=True)
class _Matrix:
    """One operand as a logical matrix: element (i, j) at i*row_stride + j*column_stride."""
    name: str
    rows: int
    columns: int
    row_stride: int
    column_stride: int
    batch_stride: int

    @property
    def transposed(self) -> "_Matrix":
        return _Matrix(self.name, self.columns, self.rows, self.column_stride, self.row_stride,
                       self.batch_stride)


def layout_of(array) -> Layout:
    """An array's layout (NumPy's and CuPy's strides are in bytes)."""
    return Layout(tuple(array.shape), tuple(s // array.itemsize for s in array.strides))


def plan_gemm(a: Layout, b: Layout, out: Layout) -> GemmCall | str:
    """The call that computes out = a @ b, or the name of an operand ("a", "b" or "out") whose
    layout no call can read: it must be copied to a C-contiguous array first. Sizes must agree
    as matmul's do, with k > 0 and out not empty (the caller handles those)."""
    a, b, out = _as_matrices(a, b, out)
    batch_shape = out.shape[:-2]
    strides = {}
    for name, operand in (("a", a), ("b", b), ("out", out)):
        stride = _batch_stride(operand, batch_shape)
        if stride is None or (name == "out" and stride == 0 and prod(batch_shape) > 1):
            return name
        strides[name] = stride
    matrices = {name: _Matrix(name, *layout.shape[-2:], *layout.strides[-2:], strides[name])
                for name, layout in (("a", a), ("b", b), ("out", out))}
    # out = a b, or out^T = b^T a^T: whichever has C readable as column-major without op T.
    problems = [(matrices["a"], matrices["b"], matrices["out"]),
                (matrices["b"].transposed, matrices["a"].transposed, matrices["out"].transposed)]
    for first, second, result in problems:
        c = _column_major(result, allow_transpose=False)
        if c is None:
            continue
        left, right = _column_major(first), _column_major(second)
        if left is None or right is None:
            return first.name if left is None else second.name
        return GemmCall(result.rows, result.columns, first.columns, prod(batch_shape),
                        left, right, c)
    return "out"


def _as_matrices(a: Layout, b: Layout, out: Layout) -> tuple[Layout, Layout, Layout]:
    """matmul's 1-D operands as matrices: a vector `a` is one row, a vector `b` one column, and
    out gains the axis the vector lacked. A size-1 axis's stride is never read."""
    if len(a.shape) == 1:
        a = Layout((1, *a.shape), (0, *a.strides))
        out = Layout((*out.shape[:-1], 1, out.shape[-1]), (*out.strides[:-1], 0, out.strides[-1]))
    if len(b.shape) == 1:
        b = Layout((*b.shape, 1), (*b.strides, 0))
        out = Layout((*out.shape, 1), (*out.strides, 0))
    return a, b, out


def _batch_stride(operand: Layout, batch_shape: tuple[int, ...]) -> int | None:
    """The one stride that steps through the operand's matrices in the order of out's batch
    axes (0 when it is broadcast over all of them), or None when no single stride does."""
    sizes, strides = operand.shape[:-2], operand.strides[:-2]
    pad = len(batch_shape) - len(sizes)
    if pad < 0:
        return None
    sizes, strides = (1,) * pad + sizes, (0,) * pad + strides
    kept = []
    for size, stride, wanted in zip(sizes, strides, batch_shape):
        if size not in (1, wanted):
            return None
        if wanted > 1:
            kept.append((wanted, stride if size == wanted else 0))
    for (_, outer), (inner_size, inner) in zip(kept, kept[1:]):
        if outer != inner * inner_size:
            return None
    stride = kept[-1][1] if kept else 0
    return stride if stride >= 0 else None


def _column_major(matrix: _Matrix, allow_transpose: bool = True) -> Operand | None:
    """The matrix as cuBLAS reads it: op N on itself when its columns are contiguous, op T on
    its transpose when its rows are. A size-1 axis's stride does not matter."""
    rows, columns = matrix.rows, matrix.columns
    if rows == 1 or matrix.row_stride == 1:
        ld = matrix.column_stride if columns > 1 else max(1, rows)
        if ld >= max(1, rows):
            return Operand(matrix.name, False, ld, matrix.batch_stride)
    if allow_transpose and (columns == 1 or matrix.column_stride == 1):
        ld = matrix.row_stride if rows > 1 else max(1, columns)
        if ld >= max(1, columns):
            return Operand(matrix.name, True, ld, matrix.batch_stride)
    return None
