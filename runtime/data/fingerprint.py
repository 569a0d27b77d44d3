"""The data a run trains on, by content: the SHA-256 of each file it is read from, which the
run's checkpoints keep so that a resume notices a file changed in place (docs/reliability.md).

npz and csv are read from the file data.path names; mnist and fashion_mnist from their four
IDX files, wherever they were found (the bytes on disk are hashed, .gz or not: 10 to 20 ms for
mnist's 11 MB, against about 0.5 s to load them from the decoded cache). The other datasets are
generated from the spec's settings or ship with nnrun: what they hold changes only with the
spec, which a resume compares already.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from nnrun.compiler.datasets import DATASETS

from .fetch import sha256_of
from .locations import IDX_FILES, find_idx_file
from .sources import idx_directory, user_file

USER_FILE = "data.path"  # the role of an npz's or csv's one file


def data_files(data_spec: Any, spec_dir: Path) -> dict[str, Path]:
    """Each file the data is read from, by its role: `data.path` for an npz or csv, the IDX
    file's name (without .gz) for mnist and fashion_mnist; none for the other datasets."""
    name = data_spec.dataset
    if DATASETS[name].user_file:
        return {USER_FILE: user_file(name, data_spec, spec_dir)}
    if DATASETS[name].needs_files:
        directory = idx_directory(name, data_spec, spec_dir)
        return {base: find_idx_file(directory, base) for base in IDX_FILES.values()}
    return {}


def data_fingerprint(files: dict[str, Path]) -> dict[str, str]:
    """Role -> the SHA-256 of the file's bytes, of data_files' `files`."""
    return {role: _digest(path) for role, path in files.items()}


def _digest(path: Path) -> str:
    """A file's SHA-256, read once while the file stays the same (eval of a run without
    preprocessing.npz asks twice: for the statistics fitted again, then for the scores)."""
    status = Path(path).stat()  # ctime: a copy that kept the old mtime (cp -p) changes it
    return _digest_of(str(Path(path).resolve()), (status.st_ino, status.st_size,
                                                   status.st_mtime_ns, status.st_ctime_ns))


@functools.lru_cache(maxsize=8)
def _digest_of(path: str, signature: tuple) -> str:
    return sha256_of(Path(path))
