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


def test_the_tile_is_taken_where_it_pays_and_is_the_processs_one(monkeypatch):
    """The review: few rows (8 of 2,048 float32: 14 -> 23 us), and up to 64 rows of another
    multiple of 512 bytes (384 float32), took longer through the tile; a thread's own tile was
    made inside a later step by a worker thread that had none yet (a step's memory)."""
    import threading

    monkeypatch.setattr(numpy_backend, "_SPREAD", {"tile": None, "lock": threading.Lock()})
    spreads = numpy_backend._spreads
    assert spreads(np.zeros((128, 1024), np.float32)) and spreads(np.zeros((16, 2048)))
    assert not spreads(np.zeros((8, 2048), np.float32))  # few rows
    assert not spreads(np.zeros((128, 1000), np.float32))  # 4,000-byte rows
    assert not spreads(np.zeros((64, 384), np.float32)) and spreads(np.zeros((128, 384),
                                                                             np.float32))
    backend = NumpyBackend()
    backend.transpose_into(np.zeros((128, 1000), np.float32), np.empty((1000, 128), np.float32))
    assert numpy_backend._SPREAD["tile"] is None
    backend.transpose_into(np.zeros((128, 1024), np.float32), np.empty((1024, 128), np.float32))
    tile = numpy_backend._SPREAD["tile"]
    assert tile.nbytes == 128 * (4096 + 64)
    done = []
    worker = threading.Thread(target=lambda: done.append(backend.transpose_into(
        np.zeros((256, 2048)), np.empty((2048, 256)))))
    worker.start()
    worker.join()
    assert done and numpy_backend._SPREAD["tile"] is tile  # another thread, the same tile
    with numpy_backend._SPREAD["lock"]:  # taken: the plain copy, the same numbers
        x = np.random.default_rng(0).normal(size=(128, 1024))
        out = np.empty((1024, 128))
        backend.transpose_into(x, out)
    assert np.array_equal(out, x.T)


@pytest.mark.parametrize("batch, channels, size", [(64, 32, 16), (128, 6, 14), (3, 8, 8)])
def test_a_transposed_copy_into_a_padded_buffer_through_a_spare_one(batch, channels, size):
    """moved_into the inside of a padded batch-last buffer (a view the tiles cannot write)
    goes through a contiguous spare buffer where the tiles pay (rows of 32 KB: 4.9 -> 0.46 ms
    measured), else the plain copy: the same values either way, and the padding untouched."""
    from nnrun.compiler.ops.common import moved_into

    be = NumpyBackend()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    padded = np.full((channels, size + 2, size + 2, batch), 5, np.float32)
    inside = padded[:, 1:-1, 1:-1]
    spare = np.full(x.shape, np.nan, np.float32)
    moved_into(be, inside, x, 0, -1, spare)
    np.testing.assert_array_equal(inside, np.moveaxis(x, 0, -1))
    assert (padded[:, 0] == 5).all() and (padded[:, :, -1] == 5).all()
    assert np.isnan(spare).all() == (not be.transposes_faster_than_copyto(x.reshape(batch, -1)))
