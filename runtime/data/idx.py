"""Reading IDX files (the MNIST format), gzip-compressed or raw, with a decoded .npy cache."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError
from .locations import cache_dir, is_writable_dir, write_cache_file

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


def read_idx_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip data ({error}); download the file again") from None


def parse_idx(data: bytes, path: Path, expected_ndim: int | None = None) -> np.ndarray:
    """Checks the magic number, the dimensions and the length, then returns the array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header_size} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[data[2]]
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_size:
        problem = "truncated" if len(data) < expected_size else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {problem}: {len(data)} bytes, expected {expected_size} "
            f"for shape {list(shape)}; download the file again"
        )
    array = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: Path, expected_ndim: int | None = None) -> np.ndarray:
    return parse_idx(read_idx_bytes(path), path, expected_ndim)


def cache_path(path: Path, dataset_name: str) -> Path:
    """The decoded copy is keyed by the source's location, size and time, so it never goes stale."""
    source = path.resolve()
    status = source.stat()
    key = hashlib.sha1(f"{source}:{status.st_size}:{status.st_mtime_ns}".encode()).hexdigest()
    base = path.name.removesuffix(".gz")
    directory = path.parent if is_writable_dir(path.parent) else cache_dir(dataset_name)
    return directory / f"{base}.{key[:12]}.npy"


def load_idx_cached(path: Path, dataset_name: str, expected_ndim: int | None = None) -> np.ndarray:
    cached = cache_path(path, dataset_name)
    if cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            pass  # an unreadable cache is rebuilt below
    array = read_idx(path, expected_ndim)
    write_cache_file(cached, lambda handle: np.save(handle, array, allow_pickle=False))
    return array
