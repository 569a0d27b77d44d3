"""Writing files so that nothing is lost on a crash, and saying why a write failed.

Every file nnrun writes goes through `write_atomically` (downloads, renamed into place by pooch,
through `settle`): a hidden temporary name in the same
folder, fsync, an atomic rename, then fsync of the folder. Readers see the old file or the new
one, never half of one, even after a power cut; the rename replaces a symbolic link itself,
never its target. A target that is not a regular file (a device, a FIFO, a socket, a directory,
or a link to one) is refused: the rename would replace `/dev/null` with a plain file. A killed
write leaves only its temporary file, which `remove_leftovers` clears. Errors name the path
given, never the temporary file.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path = Path(path)
    refuse_a_target_that_is_no_file(path)
    descriptor, temporary = _create_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes 0600 whatever the umask
        os.replace(temporary, path)
    except OSError as error:
        code = error.errno if error.errno is not None else _short_write_cause(temporary)
        if code is None or not _about_the_target(error, path):
            raise  # a library's own words, or an error about another file: as they are
        # the message names the path given, not our temporary file
        raise OSError(code, error.strerror or os.strerror(code), str(path)) from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    sync_directory(path.parent)


def _short_write_cause(temporary: str) -> int | None:
    """Why a write a library reported without an errno stopped short (NumPy's tofile: "30000
    requested and 25568 written"): a full disk or the file size limit (`ulimit -f`), where
    either is so; else None."""
    import resource

    try:
        disk = os.statvfs(temporary)
        size = os.stat(temporary).st_size
    except OSError:
        return None
    if disk.f_bavail == 0 or disk.f_bfree == 0:
        return errno.ENOSPC
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return errno.EFBIG if limit != resource.RLIM_INFINITY and size >= limit else None


def write_output(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """A file outside a run directory (an output of predict, export or plot, a cache entry),
    written atomically; then the temporary files killed writes of it left go, once stale: no
    owner clears them, as a run directory's owner clears its own when it opens it."""
    write_atomically(path, write)
    remove_stale_temporaries(path)


STALE_AFTER_S = 3600.0


def remove_stale_temporaries(path: Path) -> None:
    """The temporary files that killed writes of `path` left beside it, once they are an hour
    old: another process may be writing the same file now (a cache, an output written again),
    but not for that long. After each write_output of `path`, and where a cache is read (a
    cache, once written, is not written again)."""
    cutoff = time.time() - STALE_AFTER_S
    try:
        leftovers = temporaries_of(Path(path))
    except OSError:  # a directory this process may write but not list
        return
    for leftover in leftovers:
        try:
            status = leftover.lstat()
            if status.st_mtime < cutoff and stat.S_ISREG(status.st_mode):
                leftover.unlink()
        except OSError:  # gone already, or not ours to remove
            pass


def _about_the_target(error: OSError, path: Path) -> bool:
    """The error concerns the file being written: its temporary file, the target, or no file
    named (a write that failed on the open file)."""
    if error.filename is None:
        return True
    name = Path(error.filename).name
    return name == path.name or name.startswith(temporary_prefix(path.name))


def _create_temporary(path: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name),
                                suffix=TEMPORARY_SUFFIX)
    except OSError as error:  # /proc, /sys: a file may exist where none can be created
        raise OSError(error.errno, f"cannot create a file in {path.parent} ({error.strerror})",
                      str(path)) from None


def refuse_a_target_that_is_no_file(path: Path) -> None:
    """An existing target must be a regular file (or a link to one, or a dangling link)."""
    for follow in (False, True):
        try:
            mode = os.stat(path, follow_symlinks=follow).st_mode
        except OSError:  # absent, or unreadable: the write itself says what is wrong
            return
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EEXIST
            raise OSError(code, f"is {_kind(mode)}, not a regular file that nnrun can replace",
                          str(path))


def what_is_there(path: Path) -> str:
    """`a file`, `a character device`, ... : what a path names (it exists)."""
    mode = os.stat(path).st_mode
    return "a file" if stat.S_ISREG(mode) else _kind(mode)


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "a special file")


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def append_text_durably(path: Path, text: str) -> None:
    """`text` appended to `path` (made if missing) and synced to the disk. A crash in the write
    leaves a torn last line at worst; an error names the file (OSError's filename)."""
    made = not os.path.lexists(path)
    data = text.encode("utf-8")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            while data:
                data = data[os.write(descriptor, data):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:  # os.write's has no file name, which tells the run's files apart
        raise OSError(error.errno, error.strerror, str(path)) from None
    if made:
        sync_directory(Path(path).parent)


def settle(path: Path) -> None:
    """For a file another library renamed into place (pooch's downloads): the mode the umask
    gives, and durable as if `write_atomically` had written it."""
    os.chmod(path, 0o666 & ~current_umask())
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    sync_directory(Path(path).parent)


def temporary_prefix(name: str) -> str:
    """`.NAME.`, NAME cut to what leaves the temporary file's whole name within the 255 bytes
    of a file system's name (mkstemp's 8 characters and the suffix after it): an output named
    with 232 to 255 bytes was refused as too long."""
    return f".{os.fsdecode(os.fsencode(name)[:_NAME_ROOM])}."  # bytes, as the name is held


TEMPORARY_SUFFIX = ".nnrun-partial"
_NAME_ROOM = 255 - len("..") - 8 - len(TEMPORARY_SUFFIX)


def temporaries_of(path: Path) -> list[Path]:
    """The temporary files of writes of `path` beside it: mkstemp's 8 characters between
    nnrun's prefix and suffix, so that a user's `.spec.yaml.swp` is never taken for one."""
    pattern = re.compile(rf"{re.escape(temporary_prefix(path.name))}[a-z0-9_]{{8}}"
                         rf"{re.escape(TEMPORARY_SUFFIX)}")
    prefix = glob.escape(temporary_prefix(path.name))  # `preds[1].npy`: no character class
    return [candidate for candidate in path.parent.glob(f"{prefix}*")
            if pattern.fullmatch(candidate.name)]


def current_umask() -> int:
    # The only portable way to read the umask is to set it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sync_directory(directory: Path) -> None:
    """Makes a rename in `directory` durable (some file systems refuse to open a folder)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_leftovers(directory: Path, names) -> list[Path]:
    """Deletes the temporary files of killed writes of `names`; only the directory's owner
    (the process holding its lock) may call this, or it could delete a write in progress."""
    removed = []
    for name in names:
        for leftover in temporaries_of(Path(directory) / name):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


SMALL_FILE_BYTES = 16 << 20  # a run's summary.json holds a few hundred bytes


def read_json_file(path: Path, limit: int = SMALL_FILE_BYTES):
    """A small JSON file nnrun wrote (summary.json). What is not one raises ValueError: a
    FIFO (which would block), a device (/dev/zero never ends), a file over `limit` bytes, text
    that is not JSON or nests past Python's recursion limit. A missing file: OSError."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(f"is {_kind(mode)}, not a file nnrun wrote")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is over {limit >> 20} MB, far more than nnrun writes there")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nests deeper than any file nnrun writes") from None


def is_writable_directory(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


# What to do about the errors a write or a read can meet, by errno.
_FIXES = {
    errno.ENOSPC: "the disk is full: free space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free space or write somewhere else",
    errno.EFBIG: "the file size limit (ulimit -f) was reached: raise it or write less",
    errno.EACCES: "no permission: give a file you can read, or an output in a directory you "
                  "can write to",
    errno.EPERM: "the system refuses it whoever asks (an immutable file, or a path such as "
                 "/sys): give a file you can read, or an output in a directory you can write to",
    errno.EROFS: "the file system is read-only: choose another directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EEXIST: "a file of that name is in the way: choose another path",
    errno.EISDIR: "that is a directory: give a file name",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "shorten the path or its longest part (255 bytes at most)",
    errno.ELOOP: "a loop of symbolic links, or a link where nnrun writes (it writes through "
                 "none): point at the file itself",
    errno.EIO: "the device reported an I/O error: check the disk",
}


def describe_os_error(error: OSError) -> str:
    """One line: the path, what went wrong, what to do."""
    if error.errno is None and not error.filename:  # ctypes' failed load, say: its words
        return str(error) or type(error).__name__
    where = error.filename or "a file or the output"  # stdout: `nnrun schema > /dev/full`
    if error.filename2:
        where = f"{where} -> {error.filename2}"
    what = error.strerror or type(error).__name__
    fix = _FIXES.get(error.errno)
    return f"{where}: {what}; {fix}" if fix else f"{where}: {what}"
