"""Reading IDX files (the MNIST format), gzip-compressed or raw, with a decoded .npy cache.

The header comes first: the magic number, the dimensions and the declared size are checked
before any data is decompressed, and no more than the declared size is ever decompressed, so a
gzip bomb costs nothing. The decoded cache goes to the cache directory (NNRUN_CACHE_DIR, default
~/.cache/nnrun), never next to the user's data, and only once the caller has validated the array.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nnrun.compiler.tables import byte_size

from ..archives import CACHE_DAMAGE
from ..files import remove_stale_temporaries
from ..memory import available_memory
from .errors import DataError
from .locations import cache_dir, write_cache_file

# The third byte of the magic number names the element type; IDX stores big-endian.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
# What a damaged gzip stream raises (gzip.BadGzipFile is an OSError).
GZIP_DAMAGE = (EOFError, OSError, zlib.error)


def open_idx(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def read_idx(path: Path, expected_ndim: int | None = None,
             sample_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The array, after checking the header (and the per-sample shape, when given)."""
    try:
        with open_idx(path) as stream:
            shape, dtype = read_header(stream, path, expected_ndim, sample_shape)
            size = math.prod(shape) * dtype.itemsize
            data = stream.read(size + 1)  # one byte more tells trailing data apart
    except GZIP_DAMAGE as error:
        raise DataError(f"{path}: corrupt gzip data ({error}); download the file again") from None
    if len(data) < size:
        raise DataError(f"{path}: IDX file truncated: {len(data)} bytes of data, expected {size} "
                        f"for shape {list(shape)}; download the file again")
    if len(data) > size:  # reading stopped one byte past the data: how far they go is unknown
        raise DataError(f"{path}: IDX file has trailing bytes: more than the {size} bytes of "
                        f"data of shape {list(shape)}; download the file again")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_header(stream: BinaryIO, path: Path, expected_ndim: int | None,
                sample_shape: tuple[int, ...] | None) -> tuple[tuple[int, ...], np.dtype]:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'})")
    ndim = magic[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    dimensions = stream.read(4 * ndim)
    if len(dimensions) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({4 + len(dimensions)} of {4 + 4 * ndim} "
                        "bytes)")
    shape = tuple(int(size) for size in np.frombuffer(dimensions, ">u4"))
    if sample_shape is not None and shape[1:] != tuple(sample_shape):
        raise DataError(f"{path}: images are {shape[1:]}, expected {tuple(sample_shape)}")
    dtype = IDX_DTYPES[magic[2]]
    size = math.prod(shape) * dtype.itemsize
    available, source = available_memory()
    if size > available:
        raise DataError(f"{path}: the header declares {byte_size(size)} of data (shape "
                        f"{list(shape)}), over the {byte_size(available)} available ({source}); "
                        "free memory or raise the limit, or, if the shape is not this "
                        "dataset's, the file is damaged: replace it")
    return shape, dtype


def cache_path(path: Path, dataset_name: str) -> Path:
    """The decoded copy is keyed by the source's bytes, so it never goes stale: a file
    rewritten with its size and time kept (`cp -p`, an archive) is decoded again. Hashing the
    file costs a few percent of decoding it (10 ms for MNIST's 9.7 MB of training images)."""
    with open(path, "rb") as source:
        key = hashlib.file_digest(source, "sha1").hexdigest()
    base = path.name.removesuffix(".gz")
    return cache_dir(dataset_name) / f"{base}.{key[:12]}.npy"


def read_cached(cached: Path, source: Path) -> np.ndarray | None:
    """The decoded copy at `cached` (cache_path) of `source`, or None: an unreadable copy, or
    one of another shape or type than the source's header declares, is decoded again."""
    remove_stale_temporaries(cached)  # of killed writes of it: the cache is not written again
    if not cached.is_file():
        return None
    try:
        array = np.load(cached, allow_pickle=False)
        with open_idx(source) as stream:
            shape, dtype = read_header(stream, source, None, None)
    except (*CACHE_DAMAGE, *GZIP_DAMAGE, DataError):
        return None  # the source's own damage is said when it is decoded
    if array.shape != shape or array.dtype != dtype.newbyteorder("="):
        return None
    return array


def write_cached(cached: Path, array: np.ndarray) -> None:
    """Call only with an array that passed every check of its dataset."""
    write_cache_file(cached, lambda handle: np.save(handle, array, allow_pickle=False))
