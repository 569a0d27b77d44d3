"""Reading .npz archives without trusting them: checkpoints, npz datasets, predict inputs.

`np.load` decompresses a member before anything can look at it, so a 1 MB zip bomb becomes
gigabytes, and a header that claims 4e12 values fails deep inside NumPy. Here the headers come
first: callers check every member's declared shape and dtype, and a member is then decompressed
only up to the size its header declares.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from nnrun.compiler.datasets import NOT_NUMBERS, kernel_file
from nnrun.compiler.initial_values import NPZ_DAMAGE, npy_header, stream_header


class DamagedFile(Exception):
    """The file is not a readable .npz archive; the message says why, without the path."""


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


_DAMAGE = NPZ_DAMAGE  # what a damaged archive raises inside zipfile, zlib and numpy
# What np.load of a damaged cache file raises besides: a header that declares more than the
# machine holds (MemoryError); what a cache reader treats as "rebuild it".
CACHE_DAMAGE = (*_DAMAGE, OSError, MemoryError)


def npz_headers(path: Path) -> dict[str, ArrayHeader]:
    """Each member's name (without .npy) and declared shape and dtype; reads no array data."""
    with suppress(OSError):  # a missing file: zipfile says so below
        if not stat.S_ISREG(os.stat(path).st_mode):  # /dev/zero never ends, a FIFO blocks
            raise DamagedFile("not a regular file")
        if kernel_file(path):  # "regular", but a read can block (/proc/kmsg)
            raise DamagedFile("a file of the kernel's (/proc, /sys)")
    try:
        with zipfile.ZipFile(path) as archive:
            return {member.removesuffix(".npy"): _header(archive, member)
                    for member in archive.namelist()}
    except _DAMAGE as error:
        raise DamagedFile(_reason(error)) from None


def opens_as_npz(path: Path) -> bool:
    """Whether an archive can be opened, its members' headers read (a checkpoint whose fix
    would need it: a damaged or missing one cannot be copied over the other)."""
    try:
        npz_headers(path)
    except (DamagedFile, OSError):
        return False
    return True


def read_npz(path: Path, headers: dict[str, ArrayHeader]) -> dict[str, np.ndarray]:
    """The members named in `headers` (as `npz_headers` gave them, checked by the caller)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: _read(archive, f"{name}.npy", header) for name, header in headers.items()}
    except _DAMAGE as error:
        raise DamagedFile(_reason(error)) from None


def first_not_finite(arrays: dict[str, np.ndarray]) -> str | None:
    """The name of the first array that holds NaN or inf, else None. Weights read from a file
    (trace --weights, init_from) are checked with it: trained from, they would only show up
    later as a NaN loss."""
    return next((name for name, array in arrays.items() if not np.isfinite(array).all()), None)


def largest_magnitude(arrays: dict[str, np.ndarray]) -> float:
    """The largest |value| in any of `arrays` (0 for none): what says a model's weights overflow
    its dtype (predict's warning, export's refusal)."""
    return max((float(np.max(np.abs(array), initial=0)) for array in arrays.values()),
               default=0.0)


def _header(archive: zipfile.ZipFile, member: str) -> ArrayHeader:
    shape, dtype = npy_header(archive, member)
    return _checked_header(f"member {member!r}", shape, dtype, archive.getinfo(member).file_size)


def _checked_header(what: str, shape: tuple, dtype: np.dtype, stored: int) -> ArrayHeader:
    """`stored`: the bytes of data the file holds (a member's, its header's among them)."""
    if dtype.hasobject or dtype.names is not None:
        raise ValueError(f"{what} {NOT_NUMBERS}")
    header = ArrayHeader(tuple(shape), dtype)
    if stored < header.size_bytes:
        raise ValueError(f"{what} declares {header.size_bytes:,} bytes of data but holds "
                         f"{stored:,}")
    return header


def is_npy_file(path: Path) -> bool:
    """Whether `path` begins as a .npy file does (a missing or unreadable one: no; nor is
    what is not a regular file, a FIFO that would block the open)."""
    with suppress(OSError):
        if not stat.S_ISREG(os.stat(path).st_mode) or kernel_file(path):
            return False
        with open(path, "rb") as stream:
            return stream.read(len(npy_format.MAGIC_PREFIX)) == npy_format.MAGIC_PREFIX
    return False


def read_npy_checked(path: Path, check) -> np.ndarray:
    """The array of a .npy file, its header (an ArrayHeader) given to `check` before the data
    is read; never a pickle."""
    try:
        with open(path, "rb") as stream:
            shape, dtype = stream_header(stream, "the array")
            stored = os.fstat(stream.fileno()).st_size - stream.tell()  # past the header
            header = _checked_header("the array", shape, dtype, stored)
            check(header)
            stream.seek(0)  # read_array reads the header again
            array = npy_format.read_array(stream, allow_pickle=False)
    except _DAMAGE as error:
        raise DamagedFile(_reason(error)) from None
    if array.shape != header.shape or array.dtype != header.dtype:
        raise DamagedFile("the array changed while being read")
    return array


def _read(archive: zipfile.ZipFile, member: str, header: ArrayHeader) -> np.ndarray:
    with archive.open(member) as stream:
        array = npy_format.read_array(stream, allow_pickle=False)  # reads the declared count
    if array.shape != header.shape or array.dtype != header.dtype:
        raise ValueError(f"member {member!r} changed while being read")
    return array


def _reason(error: Exception) -> str:
    """What is wrong, in the reading library's words (its exception's name says nothing more
    to a user: 'File is not a zip file', not 'BadZipFile: ...')."""
    text = " ".join(str(error).split())
    return text or f"unreadable ({type(error).__name__})"
