"""Where dataset files live (DESIGN.md section 8) and where decoded caches go."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable

from nnrun.compiler.datasets import (DATASETS, DATASETS_EXTRA, home_directory, kernel_file,
                                     missing_generator, user_path)

from ..files import write_output
from .errors import DataError

# The four IDX files of mnist and fashion_mnist, without the optional .gz suffix.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def cache_root() -> Path:
    """Decoded and generated data; never the user's data directory."""
    configured = os.environ.get("NNRUN_CACHE_DIR")
    if configured:
        return user_path(configured)
    home = home_directory()
    if home is None:
        raise DataError("no home directory for nnrun's cache: HOME is empty or unset, and this "
                        f"user (uid {os.getuid()}) has none in the password database; set "
                        "NNRUN_CACHE_DIR (or HOME)")
    return home / ".cache" / "nnrun"


def cache_dir(name: str) -> Path:
    return cache_root() / name


@contextmanager
def library_caches_in_ours():
    """For a command, the files libraries nnrun imports keep of their own go under nnrun's
    cache directory, where the user has not chosen a place, so that a command writes nowhere
    else: onnxruntime's device id and matplotlib's font list (under XDG_CACHE_HOME, else
    ~/.cache), and matplotlib's configuration directory (which it creates, else
    ~/.config/matplotlib) unless the user has one, which then applies; matplotlib's backend
    is agg."""
    chosen = {}
    if "XDG_CACHE_HOME" not in os.environ:  # the user's choices need no cache of nnrun's
        chosen["XDG_CACHE_HOME"] = str(cache_dir("libraries"))
    home = home_directory()
    config_home = os.environ.get("XDG_CONFIG_HOME") or (home / ".config" if home else None)
    if "MPLCONFIGDIR" not in os.environ and (
            config_home is None or not _is_dir(Path(config_home) / "matplotlib")):
        chosen["MPLCONFIGDIR"] = str(cache_dir("matplotlib"))
    # nnrun draws into files, never a window: the backend is agg, whatever MPLBACKEND names
    # (matplotlib's import refuses a name it does not know)
    users_backend = os.environ.get("MPLBACKEND")
    stand_in = _in_a_temporary_directory(chosen)
    chosen["MPLBACKEND"] = "agg"
    os.environ.update(chosen)
    try:
        yield
    finally:
        for name in chosen:
            os.environ.pop(name, None)
        if users_backend is not None:
            os.environ["MPLBACKEND"] = users_backend
        if stand_in is not None:
            shutil.rmtree(stand_in, ignore_errors=True)


def _in_a_temporary_directory(chosen: dict) -> str | None:
    """Where nnrun's cache cannot be created (NNRUN_CACHE_DIR names a file, a directory not
    writable), the libraries' files go to a temporary directory, removed after the command
    (the libraries would each warn, even under --quiet, and write elsewhere): its path, or
    None."""
    unusable = [name for name, path in chosen.items() if not _creatable(Path(path))]
    if not unusable:
        return None
    directory = tempfile.mkdtemp(prefix="nnrun-libraries-")
    for name in unusable:
        chosen[name] = os.path.join(directory, name.lower())
    return directory


def _creatable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _is_dir(path: Path) -> bool:
    """Whether `path` is a directory this process can see (a home it may not search, as
    another user's: no)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def mnist1d_cache_file() -> Path:
    return cache_dir("mnist1d") / "mnist1d-default.npz"


def default_dir(name: str) -> Path:
    """Where `nnrun data fetch` puts a dataset when no destination is given."""
    data_dir = os.environ.get("NNRUN_DATA_DIR")
    return user_path(data_dir) / name if data_dir else cache_dir(name)


def search_dirs(name: str, path: str | None = None, spec_dir: Path | None = None) -> list[Path]:
    """An explicit data.path is the only place searched; else the environment, then the cache."""
    if path:
        return [(Path(spec_dir or ".") / user_path(path))]
    data_dir = os.environ.get("NNRUN_DATA_DIR")
    candidates = [user_path(data_dir) / name] if data_dir else []
    return candidates + [cache_dir(name)]


def find_idx_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / f"{base}.gz", directory / base):
        if candidate.is_file() and not kernel_file(candidate):
            return candidate
    return None


def has_idx_files(directory: Path) -> bool:
    return all(find_idx_file(directory, base) for base in IDX_FILES.values())


def where_stored(name: str) -> tuple[str, str]:
    """(location, status) of a dataset, for `nnrun data list`."""
    if name in ("mnist", "fashion_mnist"):
        found = next((d for d in search_dirs(name) if has_idx_files(d)), None)
        if found:
            return str(found), "present"
        return str(default_dir(name)), f"missing: nnrun data fetch {name}"
    if name == "mnist1d":
        cached = mnist1d_cache_file()
        if cached.is_file():
            return str(cached), "cached"
        return str(cached), _generator_status(name, "generated on first use")
    if name == "digits":
        return "inside the nnrun package", "ready"
    if DATASETS[name].user_file:
        # a spec given as data (a dict, a Spec, YAML text) reads it from the current directory
        return "data.path, relative to the spec file (or the current directory)", "-"
    return "generated", _generator_status(name, "ready")


def _generator_status(name: str, status: str) -> str:
    # The generators of heavier datasets are the `datasets` extra, not the core install.
    return f"needs pip install 'nnrun[{DATASETS_EXTRA}]'" if missing_generator(name) else status


def generator_needed(name: str) -> str | None:
    """The package a dataset's generator needs where it is not installed and what it made is
    not cached either (mnist1d's set is kept once generated, and read without the package)."""
    if name == "mnist1d" and mnist1d_cache_file().is_file():
        return None
    return missing_generator(name)


def is_writable_dir(directory: Path) -> bool:
    # root passes os.access on a r-x directory, so the mode bits also count: a directory made
    # read-only on purpose (like the shared data) stays untouched.
    try:
        mode = directory.stat().st_mode
    except OSError:
        return False
    return os.access(directory, os.W_OK) and bool(stat.S_IMODE(mode) & 0o222)


def write_cache_file(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Writes under a temporary name, then renames, so readers never see half a file.

    A cache is only a speed-up: when it cannot be written, the load goes on without it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_output(path, write)
    except OSError:
        pass
