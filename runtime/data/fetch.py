"""Downloading the IDX files of mnist and fashion_mnist, each checked against its SHA-256.

pooch does the download: into a temporary file beside the target, renamed only once its
checksum matches, so an interrupted or corrupted download never looks like a dataset. nnrun adds
what pooch does not do: several mirrors tried in turn, more than one accepted digest for a file
already present (see CHECKSUMS), and one-line errors that say where to put the files by hand.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from pathlib import Path
from typing import Callable, Iterable, Mapping

from nnrun.compiler.datasets import DATASETS, USER_FILE_DATASETS, user_path
from nnrun.compiler.diagnostics import suggest

from ..files import settle, what_is_there
from .errors import DataError
from .locations import IDX_FILES, default_dir, is_writable_dir

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# mnist: the first digest of each file is the one the public mirrors serve (the original LeCun
# .gz files; the same values appear in many independent projects). The second is this
# project's shared copy (/work/shared/data/mnist/SHA256SUMS): the same decompressed bytes,
# gzip-compressed again, so both are accepted, present or downloaded.
# fashion_mnist: the published digests of the Zalando release files, as listed by TensorFlow
# Datasets and other projects; not checked here against a download (no network).
CHECKSUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        ),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    },
}

CHUNK_BYTES = 1 << 20
Report = Callable[[str], None]


def fetch_dataset(
    name: str,
    dest_dir: Path | str | None = None,
    mirrors: Iterable[str] | None = None,
    checksums: Mapping[str, str | Iterable[str]] | None = None,
    *,
    report: Report | None = None,
    timeout: float = 60.0,
) -> Path:
    """Makes the four files present and verified in dest_dir; returns that directory."""
    if name not in MIRRORS:
        raise DataError(nothing_to_fetch(name))
    destination = user_path(dest_dir) if dest_dir else default_dir(name)
    mirror_list = list(mirrors or MIRRORS[name])
    # The downloader is requests': it refuses other schemes (ftp too) with an error that is
    # also the ValueError of a bad checksum.
    for mirror in mirror_list:
        if not _http_url(mirror):
            raise DataError(f"mirror {mirror!r} is not an http(s) URL; serve a local copy as "
                            "one: --mirror http://127.0.0.1:8000/mnist/")
    digests = {file: accepted(value) for file, value in (checksums or CHECKSUMS[name]).items()}
    say = report or (lambda message: None)
    created = [path for path in (destination, *destination.parents) if not path.exists()]
    try:
        for base in IDX_FILES.values():
            file_name = f"{base}.gz"
            if file_name not in digests:
                raise DataError(f"{name}: no SHA-256 known for {file_name}; refusing to "
                                "download it")
            fetch_file(name, destination / file_name, mirror_list, digests[file_name], say,
                       timeout)
    except DataError:
        remove_if_empty(created)
        raise
    return destination


def nothing_to_fetch(name: str) -> str:
    """Why a name other than mnist and fashion_mnist has nothing to download."""
    downloadable = ", ".join(MIRRORS)
    if name in USER_FILE_DATASETS:
        return (f"{name}: your own file, read from data.path: nothing to fetch (downloadable "
                f"datasets are {downloadable})")
    if name in DATASETS:
        return (f"{name}: built in or generated: nothing to fetch (downloadable datasets are "
                f"{downloadable})")
    meant = suggest(name, DATASETS)
    return (f"{name or repr(name)}: no dataset of that name"
            + (f"; did you mean {meant}?" if meant else "")
            + f" (downloadable datasets are {downloadable}; nnrun data list shows every one)")


def remove_if_empty(directories: list[Path]) -> None:
    """The directories a failed fetch created, deepest first; one holding a verified file
    (a later file failed) stays, and so do its parents."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def accepted(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value.lower(),) if isinstance(value, str) else tuple(d.lower() for d in value)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_file(
    name: str, target: Path, mirrors: list[str], digests: tuple[str, ...],
    say: Report, timeout: float,
) -> None:
    # pooch would accept a present file under one digest only; mnist's shared copy has another.
    present = target.is_file()
    if present and sha256_of(target) in digests:
        say(f"{target.name}: already present, checksum ok")
        return
    damaged = (f"{target.name} in {target.parent} fails its checksum (damaged, cut short or "
               "another file)") if present else ""
    make_directory(name, target.parent)
    problems = {}  # url -> why it failed
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + target.name
        problem = download(url, target, digests, timeout)
        if problem is None:
            said = f"{damaged}: replaced, " if damaged else f"{target.name}: "
            say(f"{said}downloaded from {url}, checksum ok")
            return
        problems[url] = problem
    failed = (f"{damaged}, and a fresh copy could not be fetched" if damaged
              else f"could not fetch {target.name}")
    raise FetchFailed(f"{name}: {failed} ({_failures(problems)}); download it by hand into "
                      f"{target.parent}{' in its place' if damaged else ''}",
                      list(problems.values()))


def _failures(problems: dict[str, str]) -> str:
    """Why each mirror failed; once when every mirror failed alike."""
    if len(set(problems.values())) == 1 and len(problems) > 1:
        return f"{len(problems)} mirrors: {next(iter(problems.values()))}"
    return "; ".join(f"{url}: {problem}" for url, problem in problems.items())


# pooch's words for a download whose digest is not the known one (pooch.hashes.hash_matches);
# its other ValueErrors, and urllib3's of a host it cannot parse, are another failure.
HASH_MISMATCH = "does not match the known hash"


def _http_url(text: str) -> bool:
    """An http(s) URL with a host (and a port, if any, that is one)."""
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port  # a ValueError when out of range or not a number
    except ValueError:  # an unclosed [ of an IPv6 address
        return False
    host = parts.hostname or ""
    return (parts.scheme in ("http", "https") and bool(host) and port != 0
            and not any(character.isspace() for character in host))


def short_reason(text: str) -> str:
    """A network library's error in a few words: its chain of exceptions says the same thing
    several times in several hundred characters."""
    known = [(("Failed to resolve", "Name or service not known", "name resolution"),
              "the host name does not resolve: no network?"),
             (("timed out", "Timeout"), "timed out"), (("refused",), "connection refused")]
    for needles, short in known:
        if any(needle in text for needle in needles):
            return short
    return text if len(text) <= 120 else text[:117] + "..."


class FetchFailed(DataError):
    """No mirror gave the file; `problems`: why, for each mirror tried."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


class UnwritableDestination(DataError):
    """The download's directory cannot be made or written; `reason` says why, without the
    advice (`--dest` is `data fetch`'s; `train` fetching by itself has other ways)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def make_directory(name: str, directory: Path) -> None:
    existing = next(path for path in (directory, *directory.parents) if path.exists())
    if not is_writable_dir(existing):
        reason = f"{existing} is not writable"
        raise UnwritableDestination(f"{name}: {reason}; choose a directory with --dest", reason)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = (f"it is {what_is_there(directory)}, not a directory" if directory.exists()
               else error.strerror)
        reason = f"cannot create {directory} ({why})"
        raise UnwritableDestination(f"{name}: {reason}; use --dest", reason) from None


class _TooLarge(OSError):
    """A download stopped by _SizeGuard: its own words, not a network library's."""


MOST_BYTES = 64 << 20  # the largest IDX file (fashion_mnist's training images) is 26 MB


class _SizeGuard:
    """pooch's progress-bar hook, used to stop a download that sends more than any dataset
    file holds: a mirror (or a plain-http man in the middle) could fill the disk before the
    checksum refuses it. pooch then deletes its temporary file."""

    def __init__(self):
        self.received = 0

    @property
    def total(self) -> int:
        return MOST_BYTES

    @total.setter
    def total(self, announced: int) -> None:  # the Content-Length, 0 when not sent
        self.received = 0
        self._refuse_past(announced)

    def update(self, count: int) -> None:
        self.received += count
        self._refuse_past(self.received)

    def reset(self) -> None:
        pass  # pooch's HTTPDownloader calls reset() on its progress bar; nothing to reset here

    def close(self) -> None:
        pass

    @staticmethod
    def _refuse_past(size: int) -> None:
        if size > MOST_BYTES:
            raise _TooLarge(f"sends more than {MOST_BYTES >> 20} MB, far more than the file; "
                            "stopped")


def download(url: str, target: Path, digests: tuple[str, ...], timeout: float) -> str | None:
    """Returns None on success, otherwise why this mirror failed; never leaves a partial file.

    A download must match one of the accepted digests. pooch checks one digest per download,
    so a file that fails the first (the public mirrors') is downloaded again for the next
    (a copy such as this project's shared one): rare, and the check stays pooch's."""
    import pooch  # here, not above: training and the GPU machine need no downloader

    pooch.get_logger().setLevel(logging.WARNING)  # nnrun reports each file itself
    downloader = pooch.HTTPDownloader(progressbar=_SizeGuard(), timeout=timeout)
    for digest in digests:
        try:
            pooch.retrieve(url, known_hash=f"sha256:{digest}", fname=target.name,
                           path=target.parent, downloader=downloader)
        except _TooLarge as error:
            return str(error)
        except OSError as error:  # requests' errors are OSErrors (an invalid URL a ValueError too)
            return short_reason(" ".join(str(getattr(error, "reason", None) or error).split()))
        except ValueError as error:
            if HASH_MISMATCH in str(error):  # pooch's; its temporary file is gone
                continue
            return short_reason(" ".join(str(error).split()))  # a URL urllib3 cannot parse
        settle(target)  # pooch's temporary file is 0600 and not synced
        return None
    return "checksum mismatch, file refused"
