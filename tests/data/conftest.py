"""Fixtures for the data tests: an isolated cache, tiny IDX files, and a local HTTP mirror."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

# The data directory the suite was started with (the README sets NNRUN_DATA_DIR), read before
# `isolated_home` removes the variable from each test's environment.
SHARED_DATA = Path(os.environ.get("NNRUN_DATA_DIR")
                   or Path(__file__).resolve().parents[3] / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    # One home for the whole session, so mnist1d is generated once and then read from its cache.
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def isolated_home(session_home, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(session_home))
    monkeypatch.delenv("NNRUN_DATA_DIR", raising=False)
    monkeypatch.delenv("NNRUN_CACHE_DIR", raising=False)
    return session_home


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True,
              type_code: int = 0x08) -> Path:
    data = idx_bytes(array, type_code)
    target = path.with_name(path.name + ".gz") if compress else path
    target.write_bytes(gzip.compress(data) if compress else data)
    return target


def write_mnist_like(directory: Path, train: int = 12, test: int = 5, compress: bool = True):
    """Four tiny IDX files; pixel values encode the sample index so tests can trace samples."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images = (np.arange(count)[:, None, None] * np.ones((1, 28, 28))).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return directory


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


@pytest.fixture
def mirror(tmp_path):
    """Serves tmp_path/mirror over HTTP on 127.0.0.1; yields (root directory, base URL)."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def make_idx():
    return write_idx


@pytest.fixture
def make_mnist_like():
    return write_mnist_like


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST files are not in {SHARED_DATA / 'mnist'}")
    return SHARED_DATA
