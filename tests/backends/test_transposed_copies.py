"""The NumPy backend's transposed copy (transpose_into): rows of 512 bytes and more are copied a
tile at a time, 64 bytes apart, before the transposed read (NumPy read them down their columns
at 5-8x the time: the speed audit's conv1d of 64 positions at batch 128)."""

from __future__ import annotations

import numpy as np
import pytest

from nnrun.backends import numpy_backend
from nnrun.backends.numpy_backend import NumpyBackend


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(128, 1024), (100, 1024), (300, 4224), (129, 128),
                                   (2048, 128), (16, 8192), (128, 1000), (8, 1024), (7, 3)])
def test_a_transposed_copy_is_the_transpose_bit_for_bit(shape, dtype):
    x = np.random.default_rng(0).normal(size=shape).astype(dtype)
    x[0, :3] = [np.nan, -0.0, np.inf]
    out = np.full(shape[::-1], 7, dtype)
    NumpyBackend().transpose_into(x, out)
    assert out.tobytes() == np.ascontiguousarray(x.T).tobytes()


def test_the_tile_is_taken_for_rows_of_512_bytes_and_is_a_threads_own(monkeypatch):
    import threading

    monkeypatch.setattr(numpy_backend, "_SPREAD_SCRATCH", threading.local())
    backend = NumpyBackend()
    backend.transpose_into(np.zeros((128, 1000), np.float32), np.empty((1000, 128), np.float32))
    assert not hasattr(numpy_backend._SPREAD_SCRATCH, "bytes")  # 4,000-byte rows: plain copy
    backend.transpose_into(np.zeros((128, 1024), np.float32), np.empty((1024, 128), np.float32))
    tile = numpy_backend._SPREAD_SCRATCH.bytes
    assert tile.nbytes == 128 * (4096 + 64)
    backend.transpose_into(np.zeros((256, 2048)), np.empty((2048, 256)))
    assert numpy_backend._SPREAD_SCRATCH.bytes is tile  # float64 rows in the same tile
