from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nnrun.compiler.datasets import DATASETS
from nnrun.runtime.data import DataError, Dataset, augment_batch, fetch_dataset, load_dataset
from nnrun.runtime.data import fetch
from nnrun.runtime.data.fetch import CHECKSUMS
from nnrun.runtime.data.idx import read_idx
from nnrun.runtime.data.locations import IDX_FILES
from nnrun.runtime.data.sources import LOADERS, missing_files_fetched


def spec(dataset: str, **fields) -> SimpleNamespace:
    return SimpleNamespace(dataset=dataset, **fields)


def load(dataset: str, spec_dir: Path = Path("."), seed: int = 0, **fields) -> Dataset:
    return load_dataset(spec(dataset, **fields), spec_dir=spec_dir, seed=seed)


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# --- every named dataset ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "mnist1d", "xor", "spirals", "blobs"])
def test_built_in_and_generated_datasets_match_the_static_table(name):
    info = DATASETS[name]
    dataset = load(name, normalize="none")
    assert dataset.input_shape == info.input_shape
    assert dataset.num_classes == info.num_classes
    for split in (dataset.train, dataset.test):
        assert split.x.shape[1:] == info.input_shape and split.x.dtype == np.float32
        assert split.y.dtype == np.int64 and split.y.shape == (len(split.x),)
        assert 0 <= split.y.min() and split.y.max() < info.num_classes
    assert dataset.val is None
    assert abs(len(dataset.test) - 0.2 * (len(dataset.train) + len(dataset.test))) <= 1


def test_dataset_sizes_and_defaults():
    assert (len(load("digits").train), len(load("digits").test)) == (1437, 360)
    mnist1d = load("mnist1d")
    assert (len(mnist1d.train), len(mnist1d.test)) == (4000, 1000)
    xor = load("xor", normalize="none", noise=0.0)
    assert xor.task == "binary" and len(xor.train) + len(xor.test) == 200
    assert np.array_equal(xor.train.y, np.logical_xor(*xor.train.x.T.round()).astype(np.int64))
    assert len(load("spirals").train) == 800
    assert len(load("blobs", n_samples=50).train) == 40


def test_generated_data_does_not_depend_on_the_spec_seed():
    first, second = load("spirals", seed=0), load("spirals", seed=7)
    assert np.array_equal(first.train.x, second.train.x)


def test_mnist1d_generation_leaves_global_random_state_alone():
    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    load("mnist1d")
    assert np.array_equal(np.random.get_state()[1], expected)


def test_generating_mnist1d_writes_nothing_in_home(tmp_path):
    """mnist1d imports matplotlib, which made ~/.config/matplotlib and its font list in
    ~/.cache: train, trace and eval wrote outside the run directory and the cache. In a
    process of its own, where matplotlib is not imported yet."""
    pytest.importorskip("mnist1d")
    home = tmp_path / "home"
    home.mkdir()
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    environment.update(HOME=str(home), NNRUN_CACHE_DIR=str(tmp_path / "cache"))
    code = ("import sys\nfrom nnrun.runtime.data.sources import generate_mnist1d\n"
            "generate_mnist1d()\nassert 'matplotlib' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], env=environment, check=True, timeout=300)
    assert list(home.rglob("*")) == []


def test_digits_keeps_raw_values_for_normalize_none():
    digits = load("digits", normalize="none")
    assert digits.train.x.min() == 0 and digits.train.x.max() == 16


def test_float64_dtype():
    dataset = load_dataset(spec("xor"), spec_dir=Path("."), seed=0, dtype="float64")
    assert dataset.train.x.dtype == np.float64 and dataset.train.y.dtype == np.int64


def test_every_static_entry_has_a_loader():
    assert set(LOADERS) == set(DATASETS)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load("cifar")


# --- MNIST from the shared directory ---------------------------------------------------------


def timed_load_under(name: str, limit_s: float, tries: int = 5, **fields):
    """The fastest of a few loads: other jobs on a shared machine can stall any single one."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        dataset = load(name, **fields)
        best = min(best, time.perf_counter() - start)
        if best < limit_s:
            break
    return dataset, best


def test_mnist_from_shared_directory_and_fast_second_load(shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("NNRUN_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty cache, so the first load decodes
    first = load("mnist", validation_split=0.1)
    second, seconds = timed_load_under("mnist", 1.0, validation_split=0.1)
    assert seconds < 1.0
    assert first.train.x.shape == (54000, 1, 28, 28) and first.val.x.shape == (6000, 1, 28, 28)
    assert first.test.x.shape == (10000, 1, 28, 28) and first.num_classes == 10
    assert np.array_equal(first.val.y, second.val.y)
    assert np.bincount(first.test.y).tolist()[:2] == [980, 1135]
    # The shared directory is read-only by intent, so the decoded cache went to the home cache.
    assert len(list((tmp_path / ".cache" / "nnrun" / "mnist").glob("*.npy"))) == 4
    assert not list((shared_data / "mnist").glob("*.npy"))


def test_checksum_table_accepts_the_shared_mnist_files(shared_data):
    for file_name, digests in CHECKSUMS["mnist"].items():
        actual = hashlib.sha256((shared_data / "mnist" / file_name).read_bytes()).hexdigest()
        assert actual in digests


# --- IDX files -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, what", [("directory", "not a regular file"),
                                        ("fifo", "not a regular file"),
                                        ("kernel", "a file of the kernel's (/proc, /sys)")])
def test_an_idx_file_that_is_not_a_regular_file_is_named_so(tmp_path, make_mnist_like, kind,
                                                           what, isolated_home):
    """A FIFO or a directory in an IDX file's place was reported 'not found'; a link to
    /proc/self/environ was read, and the environment's first bytes quoted as a magic number."""
    if kind == "kernel" and not Path("/proc/self/environ").exists():
        pytest.skip("Linux's /proc")
    make_mnist_like(tmp_path / "digits28", compress=True)
    odd = tmp_path / "digits28" / "t10k-labels-idx1-ubyte.gz"
    odd.unlink()
    {"directory": odd.mkdir, "fifo": lambda: os.mkfifo(odd),
     "kernel": lambda: odd.symlink_to("/proc/self/environ")}[kind]()
    with pytest.raises(DataError) as excinfo:
        load("mnist", spec_dir=tmp_path, path="digits28")
    one_line_error(excinfo, f"{odd} is {what}; put the IDX file itself there")


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_from_data_path(tmp_path, make_mnist_like, compress, isolated_home):
    make_mnist_like(tmp_path / "data" / "digits28", compress=compress)
    dataset = load("mnist", spec_dir=tmp_path, path="data/digits28", normalize="none")
    assert dataset.train.x.shape == (12, 1, 28, 28) and dataset.test.x.shape == (5, 1, 28, 28)
    assert dataset.train.x[3].max() == 3 and dataset.train.y.tolist()[:3] == [0, 1, 2]
    # Even a writable data directory gets no decoded cache: that goes to the cache directory.
    assert not list((tmp_path / "data" / "digits28").glob("*.npy"))
    assert len(list((isolated_home / ".cache/nnrun/mnist").glob("*.npy"))) >= 4
    again = load("mnist", spec_dir=tmp_path, path="data/digits28", normalize="none")
    assert np.array_equal(again.train.x, dataset.train.x)


def test_idx_rewritten_with_its_size_and_time_kept_is_decoded_again(tmp_path, make_mnist_like,
                                                                    isolated_home):
    """The decoded cache follows the file's bytes: `cp -p` or an archive keeps size and mtime."""
    directory = make_mnist_like(tmp_path / "data", compress=False)
    assert load("mnist", path=str(directory), normalize="none").train.y.tolist()[:3] == [0, 1, 2]
    labels = directory / "train-labels-idx1-ubyte"
    status = labels.stat()
    changed = bytearray(labels.read_bytes())
    changed[8] = 7  # the first label
    labels.write_bytes(bytes(changed))
    os.utime(labels, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert load("mnist", path=str(directory), normalize="none").train.y.tolist()[:3] == [7, 1, 2]


def test_idx_cache_goes_home_when_directory_is_read_only(tmp_path, make_mnist_like, monkeypatch):
    directory = make_mnist_like(tmp_path / "readonly")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    directory.chmod(0o555)
    try:
        load("fashion_mnist", path=str(directory))
        assert not list(directory.glob("*.npy"))
        assert len(list((tmp_path / "home/.cache/nnrun/fashion_mnist").glob("*.npy"))) == 4
    finally:
        directory.chmod(0o755)


def test_idx_found_through_nnrun_data_dir(tmp_path, make_mnist_like, monkeypatch):
    make_mnist_like(tmp_path / "fashion_mnist")
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path))
    assert load("fashion_mnist").train.x.shape == (12, 1, 28, 28)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_missing_idx_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(fetch.MIRRORS, "mnist", ())  # outside `train`, nothing is downloaded
    with pytest.raises(DataError) as excinfo:
        load("mnist")
    one_line_error(
        excinfo, "train-images-idx3-ubyte(.gz) not found", str(tmp_path / "mnist"),
        "nnrun data fetch mnist", "NNRUN_DATA_DIR",
    )


def test_train_says_why_a_download_failed_and_where_to_put_the_files(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(fetch.MIRRORS, "mnist", (f"http://127.0.0.1:{_closed_port()}/",))
    with pytest.raises(DataError) as excinfo, missing_files_fetched():
        load("mnist")
    one_line_error(
        excinfo, "train-images-idx3-ubyte(.gz) not found", str(tmp_path / "mnist"),
        "the download failed (connection refused)", "nnrun data fetch mnist", "NNRUN_DATA_DIR",
    )
    assert "downloading it into" in capsys.readouterr().err
    assert not (tmp_path / "mnist").exists()  # never into the user's data directory


def test_train_that_cannot_download_into_the_cache_names_what_it_can_set(tmp_path,
                                                                          monkeypatch):
    """It said 'choose a directory with --dest', data fetch's option, which train has not."""
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "cache").write_text("a file where the cache directory goes")
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as excinfo, missing_files_fetched():
        load("mnist")
    message = one_line_error(excinfo, "the download cannot go to the cache",
                             "set NNRUN_CACHE_DIR to a writable directory",
                             "$NNRUN_DATA_DIR/mnist")
    assert "--dest" not in message


def test_missing_idx_files_are_downloaded_into_the_cache(tmp_path, monkeypatch, mirror,
                                                         make_mnist_like, isolated_home):
    root, url = mirror
    served = make_mnist_like(root / "f")
    monkeypatch.setitem(fetch.MIRRORS, "fashion_mnist", (f"{url}/f/",))
    monkeypatch.setitem(fetch.CHECKSUMS, "fashion_mnist", {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in served.iterdir()})
    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path / "data"))
    with missing_files_fetched():  # as `train` loads its data
        assert load("fashion_mnist").train.x.shape == (12, 1, 28, 28)
    cached = isolated_home / ".cache" / "nnrun" / "fashion_mnist"
    assert {p.name for p in cached.glob("*.gz")} == {p.name for p in served.iterdir()}
    assert not (tmp_path / "data").exists()
    monkeypatch.setitem(fetch.MIRRORS, "fashion_mnist", ())  # no download now: the cache
    assert load("fashion_mnist").train.x.shape == (12, 1, 28, 28)


def test_an_explicit_idx_directory_is_never_downloaded_into(tmp_path, monkeypatch):
    monkeypatch.setitem(fetch.MIRRORS, "mnist", ())  # a download would fail differently
    with pytest.raises(DataError) as excinfo, missing_files_fetched():
        load("mnist", path=str(tmp_path / "mine"))
    one_line_error(excinfo, "not found in", "(data.path)", "nnrun data fetch mnist --dest")


def test_missing_one_idx_file_names_it(tmp_path, make_mnist_like):
    directory = make_mnist_like(tmp_path / "idx")
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as excinfo:
        load("mnist", path=str(directory))
    one_line_error(excinfo, "t10k-labels-idx1-ubyte(.gz) not found", str(directory))


def corrupt_wrong_magic(path: Path) -> None:
    path.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + gzip.decompress(path.read_bytes())[4:]))


def corrupt_truncate(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-7]))


def corrupt_gzip_stream(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def corrupt_label_range(path: Path) -> None:
    labels = np.full(12, 12, dtype=np.uint8)
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + np.uint32(12).byteswap().tobytes()
                                   + labels.tobytes()))


@pytest.mark.parametrize(
    "file_name, corrupt, needle",
    [
        ("train-images-idx3-ubyte.gz", corrupt_wrong_magic, "bad magic number"),
        ("train-images-idx3-ubyte.gz", corrupt_truncate, "truncated"),
        ("t10k-images-idx3-ubyte.gz", corrupt_gzip_stream, "corrupt gzip"),
        ("train-labels-idx1-ubyte.gz", corrupt_label_range, "labels must be < 10"),
    ],
)
def test_bad_idx_files_are_refused_by_name(tmp_path, make_mnist_like, file_name, corrupt, needle):
    directory = make_mnist_like(tmp_path / "idx")
    corrupt(directory / file_name)
    with pytest.raises(DataError) as excinfo:
        load("mnist", path=str(directory))
    one_line_error(excinfo, str(directory / file_name), needle)


def test_idx_reader_checks_dimensions_and_types(tmp_path, make_idx):
    path = make_idx(tmp_path / "values", np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert read_idx(path).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(DataError, match="2 dimensions, expected 3"):
        read_idx(path, expected_ndim=3)
    floats = tmp_path / "floats"
    floats.write_bytes(bytes([0, 0, 0x0D, 1]) + np.uint32(2).byteswap().tobytes()
                       + np.array([1.5, -2.0], ">f4").tobytes())
    assert read_idx(floats).tolist() == [1.5, -2.0]


@pytest.mark.parametrize("type_code, dtype, bad", [(0x0D, ">f4", np.nan), (0x0E, ">f8", np.inf)])
def test_float_idx_images_with_nan_or_inf_are_refused_by_name(tmp_path, make_mnist_like, make_idx,
                                                              monkeypatch, type_code, dtype, bad):
    directory = make_mnist_like(tmp_path / "idx")
    images = np.zeros((12, 28, 28), dtype)
    images[4, 3, 5] = bad
    path = make_idx(directory / "train-images-idx3-ubyte", images, type_code=type_code)
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as excinfo:
        load("mnist", path=str(directory))
    one_line_error(excinfo, str(path), "NaN or inf", "sample 4")
    assert not list((tmp_path / "cache").rglob("train-*.npy"))


def test_wrong_image_size_is_refused(tmp_path, make_idx, make_mnist_like):
    directory = make_mnist_like(tmp_path / "idx")
    make_idx(directory / "train-images-idx3-ubyte", np.zeros((12, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"images are \(32, 32\), expected \(28, 28\)"):
        load("mnist", path=str(directory))


# --- npz and csv -----------------------------------------------------------------------------


def test_npz_with_and_without_test_arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3, 5)).astype(np.float32)
    write_npz(tmp_path / "data.npz", x=x, y=np.arange(20) % 4, x_test=x[:6], y_test=np.arange(6))
    dataset = load("npz", spec_dir=tmp_path, path="data.npz")
    assert dataset.input_shape == (3, 5) and dataset.num_classes == 6
    assert dataset.train.y.dtype == np.int64 and dataset.test.x.shape == (6, 3, 5)
    write_npz(tmp_path / "train_only.npz", x=x, y=(np.arange(20) % 4).astype(np.float64))
    dataset = load("npz", spec_dir=tmp_path, path="train_only.npz")
    assert dataset.test is None and dataset.num_classes == 4 and dataset.train.y.dtype == np.int64


def test_npz_regression_targets(tmp_path):
    write_npz(tmp_path / "r.npz", x=np.ones((8, 2)), y=np.linspace(0, 1, 8)[:, None])
    dataset = load("npz", spec_dir=tmp_path, path="r.npz")
    assert dataset.task == "regression" and dataset.num_classes is None
    assert dataset.train.y.dtype == np.float32 and dataset.train.y.shape == (8, 1)


@pytest.mark.parametrize("name, y", [("fraction", [0.0, 1.5, 2.0]), ("negative", [0.0, -1.0, 2.0])])
def test_float_labels_that_are_not_classes_are_regression_targets(tmp_path, name, y):
    write_npz(tmp_path / "r.npz", x=np.ones((3, 2)), y=np.array(y))
    (tmp_path / "r.csv").write_text("a,label\n" + "".join(f"1,{value}\n" for value in y))
    for path in ("r.npz", "r.csv"):
        dataset = load(path[2:], spec_dir=tmp_path, path=path)
        assert dataset.task == "regression" and dataset.num_classes is None
        assert dataset.train.y.tolist() == y and dataset.train.y.dtype == np.float32


@pytest.mark.parametrize("labels, value", [(np.full(60, 1e20), "1e+20"),
                                           (np.array([0.0, 2.0**63, 1.0]), str(2.0**63))])
def test_float_labels_too_large_for_int64_are_refused_without_a_numpy_warning(tmp_path, labels,
                                                                              value):
    write_npz(tmp_path / "big.npz", x=np.ones((len(labels), 2)), y=labels)
    (tmp_path / "big.csv").write_text("a,label\n1,0\n2,1e300\n")
    masks = np.zeros((3, 2, 2))
    masks[2, 1, 0] = 1e20
    write_npz(tmp_path / "maps.npz", x=np.ones((3, 1, 2, 2)), masks=masks)
    sample = int(np.argmax(labels))
    cases = [("npz", "big.npz", value, f"sample {sample}"),
             ("csv", "big.csv", "1e+300", "sample 1"), ("npz", "maps.npz", "1e+20", "sample 2")]
    for dataset, name, shown, where in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # NumPy's "invalid value encountered in cast"
            with pytest.raises(DataError) as excinfo:
                load(dataset, spec_dir=tmp_path, path=name)
        message = one_line_error(excinfo, str(tmp_path / name), shown, where, "too large")
        assert "-9223372036854775808" not in message and ">= 0" not in message


def test_unsigned_labels_too_large_for_int64_are_refused_as_such(tmp_path):
    """uint64 2**63 + 5 wrapped to -9223372036854775803: "labels must be >= 0", and the advice
    to set that number as ignore_index."""
    labels = np.array([0, 2**63 + 5, 1], dtype=np.uint64)
    write_npz(tmp_path / "big.npz", x=np.ones((3, 2)), y=labels)
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="big.npz")
    message = one_line_error(excinfo, str(tmp_path / "big.npz"), str(2**63 + 5), "sample 1",
                             "too large for a class index")
    assert "-9223372036854775803" not in message and ">= 0" not in message


@pytest.mark.parametrize("normalize", ["none", "scale", "standard"])
@pytest.mark.parametrize("array", ["x", "y"])
def test_values_beyond_float32_are_refused_once_preprocessed_without_a_numpy_warning(
        tmp_path, normalize, array):
    """1e300 is finite in float64: the npz passed, then NumPy warned and the loss became NaN,
    which train blamed on the learning rate."""
    arrays = {"x": np.random.default_rng(0).normal(size=(40, 2)), "y": np.linspace(0, 1, 40)}
    arrays[array][3] = 1e300
    write_npz(tmp_path / "big.npz", x=arrays["x"], y=arrays["y"][:, None])
    if (array, normalize) == ("x", "scale"):  # scaled in float64, then cast: within [0, 1]
        data = load("npz", spec_dir=tmp_path, path="big.npz", normalize=normalize)
        assert data.train.x.dtype == np.float32 and data.train.x.max() <= 1
        return
    if (array, normalize) == ("x", "standard"):  # standardized in float64: a few std at most
        data = load("npz", spec_dir=tmp_path, path="big.npz", normalize=normalize)
        assert data.train.x.dtype == np.float32 and np.abs(data.train.x).max() < 10
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow in cast, subtract or divide
        with pytest.raises(DataError) as excinfo:
            load("npz", spec_dir=tmp_path, path="big.npz", normalize=normalize)
    what = "x" if array == "x" else "targets"
    one_line_error(excinfo, str(tmp_path / "big.npz"), f"train split's {what} must hold finite "
                   "float32 numbers", "1e+300 at sample 3")


@pytest.mark.parametrize("array", ["x", "y"])
def test_a_value_beyond_float32_in_a_carved_split_is_named_by_its_place_in_the_file(tmp_path,
                                                                                    array):
    """The data audit: with a validation_split the train and val splits' samples were
    numbered within the split, which a user looking at x cannot find."""
    arrays = {"x": np.random.default_rng(0).normal(size=(50, 2)), "y": np.linspace(0, 1, 50)}
    arrays[array][47] = 1e39
    write_npz(tmp_path / "big.npz", x=arrays["x"], y=arrays["y"][:, None])
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="big.npz", normalize="none", validation_split=0.2)
    one_line_error(excinfo, f"1e+39 at {array}'s sample 47,", f"({array}'s sample 47 is NaN")


def test_inputs_beyond_float32_that_the_normalisation_brings_within_it_are_numbers(tmp_path):
    """The data audit: luminosities of about 1e40 erg/s, standardised to +-2.8, were refused as
    "too large for float32 once preprocessed": the shift was cast to float32 before the
    division by the scale."""
    x = np.random.default_rng(0).normal(size=(40, 2)) * 1e40
    write_npz(tmp_path / "big.npz", x=x, y=np.arange(40) % 2)
    data = load("npz", spec_dir=tmp_path, path="big.npz", normalize="standard")
    assert len(data.train) == 40  # every sample trains: the statistics are all of x's
    assert np.allclose(data.train.x, (x - x.mean(0)) / x.std(0), rtol=1e-6, atol=1e-6)


BAD_NPZ = {
    "no_y": ({"x": np.ones((4, 2))}, "needs arrays 'x' and 'y' (found x)"),
    "length": ({"x": np.ones((4, 2)), "y": np.zeros(3, int)}, "4 samples of features but 3 labels"),
    "nan": ({"x": np.array([[1.0, 2.0], [np.nan, 1.0]]), "y": np.zeros(2, int)}, "NaN or inf"),
    "negative": ({"x": np.ones((3, 2)), "y": np.array([0, -1, 2])}, "labels must be >= 0"),
    "strings": ({"x": np.array([["a", "b"]]), "y": np.zeros(1, int)}, "features must be numbers"),
    "test_alone": ({"x": np.ones((3, 2)), "y": np.zeros(3, int), "x_test": np.ones((1, 2))},
                   "'x_test' and 'y_test' must be given together"),
    # The test split's targets of another kind or shape than y's were found after training
    # (an internal error), or not at all (a test accuracy of 0 with a word).
    "test_real": ({"x": np.ones((3, 2)), "y": np.array([0, 1, 2]), "x_test": np.ones((2, 2)),
                   "y_test": np.array([0.3, 1.7])},
                  "(x_test, y_test): holds real-valued targets, but y holds class labels"),
    "test_column": ({"x": np.ones((3, 2)), "y": np.array([0, 1, 2]), "x_test": np.ones((2, 2)),
                     "y_test": np.array([[0], [1]])}, "(x_test, y_test): the labels are a column"),
    "test_width": ({"x": np.ones((3, 2)), "y": np.ones((3, 2)) / 3, "x_test": np.ones((2, 2)),
                    "y_test": np.ones((2, 3)) / 3}, "targets are [3] per sample, in y [2]"),
}


def test_whole_numbers_in_the_test_split_stay_regression_targets(tmp_path):
    """Real-valued y, and a test split whose targets happen to be whole numbers."""
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "r.npz", x=rng.normal(size=(6, 2)), y=rng.normal(size=6),
                     x_test=np.ones((3, 2)), y_test=np.array([1.0, 2.0, 0.0]))
    data = load("npz", spec_dir=tmp_path, path=path.name)
    assert data.task == "regression" and data.test.y.dtype.kind == "f"
    np.testing.assert_array_equal(data.test.y, [1.0, 2.0, 0.0])


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_files_are_refused_by_name(tmp_path, case):
    arrays, needle = BAD_NPZ[case]
    path = write_npz(tmp_path / f"{case}.npz", **arrays)
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path=path.name)
    one_line_error(excinfo, str(path), needle)


@pytest.mark.parametrize("form", ["npz", "csv"])
def test_labels_may_hold_a_negative_ignore_index(tmp_path, form):
    """PyTorch's ignore_index is -100 by default: labels marked so are the loss's to leave
    out, not negative classes; any other negative label is still refused."""
    y = np.array([0, -100, 2, 1, -100, 1])
    x = np.arange(12.0).reshape(6, 2)
    if form == "npz":
        write_npz(tmp_path / "d.npz", x=x, y=y)
    else:
        rows = "\n".join(f"{a},{b},{label}" for (a, b), label in zip(x, y))
        (tmp_path / "d.csv").write_text(f"a,b,label\n{rows}\n")
    data = load_dataset(spec(form, path=f"d.{form}"), spec_dir=tmp_path, seed=0,
                        ignore_index=-100)
    assert data.task == "classification"
    np.testing.assert_array_equal(data.train.y, y)
    assert data.num_classes == 3
    if form == "csv":  # a csv's labels are numbers: negative ones read as regression targets
        return
    with pytest.raises(DataError) as excinfo:
        load_dataset(spec(form, path=f"d.{form}"), spec_dir=tmp_path, seed=0, ignore_index=-1)
    one_line_error(excinfo, "labels must be >= 0, found -100 at sample 1")


def test_npz_that_is_not_an_archive(tmp_path):
    (tmp_path / "broken.npz").write_text("hello")
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="broken.npz")
    one_line_error(excinfo, "broken.npz", "not a readable .npz")


def test_missing_user_file(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load("csv", spec_dir=tmp_path, path="nowhere.csv")
    one_line_error(excinfo, str(tmp_path / "nowhere.csv"), "not found")


@pytest.mark.parametrize("dataset", ["npz", "csv", "mnist"])
def test_a_data_path_of_the_wrong_kind_says_what_it_is(tmp_path, dataset):
    """`data.path: /etc` and `/dev/zero` were "not found"."""
    (tmp_path / "file.npz").write_bytes(b"")
    if dataset == "mnist":  # a directory of IDX files, not a file
        cases = [(tmp_path / "file.npz", "is not a directory"),
                 (Path(os.devnull), "is not a directory")]
    else:
        cases = [(tmp_path, "is a directory; data.path must name a ." + dataset + " file"),
                 (Path(os.devnull), "is not a regular file")]
    for path, needle in cases:
        with pytest.raises(DataError) as excinfo:
            load(dataset, spec_dir=tmp_path, path=str(path))
        message = one_line_error(excinfo, str(path), needle)
        assert "not found" not in message


def test_csv_label_column_anywhere(tmp_path):
    (tmp_path / "d.csv").write_text("a,label,b\n1.0,0,2\n3,1,4\n5,2,6.5\n")
    dataset = load("csv", spec_dir=tmp_path, path="d.csv", normalize="none")
    assert dataset.train.x.tolist() == [[1, 2], [3, 4], [5, 6.5]]
    assert dataset.train.y.tolist() == [0, 1, 2] and dataset.num_classes == 3
    assert dataset.input_shape == (2,)


def test_a_column_name_past_the_csv_modules_field_limit_is_read(tmp_path):
    """A header name of 140,000 characters was the csv module's "field larger than field
    limit (131072)", an internal error (exit 70) in validate and train."""
    import csv

    (tmp_path / "d.csv").write_text("a" * 140_000 + ",label\n1,0\n3,1\n")
    dataset = load("csv", spec_dir=tmp_path, path="d.csv", normalize="none")
    assert dataset.train.x.tolist() == [[1], [3]]
    assert csv.field_size_limit() == 131_072  # the module's limit left as it was


def test_a_file_without_a_label_column_is_shown_in_a_few_short_names(tmp_path):
    """The whole header row was echoed: a hostile spec's data.path of /proc/self/environ
    printed the environment into the error (and a CI log). A name that is `label` but for its
    case or an s is pointed at."""
    (tmp_path / "env.csv").write_text(",".join(f"SECRET_{i}=" + "x" * 40 for i in range(9))
                                      + "\n1,2,3,4,5,6,7,8,9\n")
    with pytest.raises(DataError) as excinfo:
        load("csv", spec_dir=tmp_path, path="env.csv")
    message = one_line_error(excinfo, "no `label` column in the header row "
                             "(SECRET_0=xxxxxxxxxxxx..., ")
    assert message.count("SECRET_") == 6 and "x" * 22 not in message and "..., ...)" in message
    (tmp_path / "case.csv").write_text("a,Labels\n1,0\n")
    with pytest.raises(DataError) as excinfo:
        load("csv", spec_dir=tmp_path, path="case.csv")
    one_line_error(excinfo, "name the targets' column `label` (is it 'Labels'?)")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux's /proc")
def test_a_kernel_file_is_no_data_file_and_is_not_quoted(tmp_path, monkeypatch):
    """A hostile spec's data.path of /proc/self/environ printed the environment in the 'no
    label column' error of validate and train."""
    from click.testing import CliRunner

    from nnrun.cli import main

    monkeypatch.setenv("NNRUN_TEST_SECRET", "sk-live-0123456789")
    with pytest.raises(DataError) as excinfo:
        load("csv", spec_dir=tmp_path, path="/proc/self/environ")
    message = one_line_error(excinfo, "/proc/self/environ is a file of the kernel's")
    assert "sk-live" not in message
    for shape in ("", "input_shape: [3], "):  # validate reads the header with or without it
        spec = (f"data: {{dataset: csv, path: /proc/self/environ}}\n"
                f"model: {{{shape}layers: [{{type: dense, units: 2}}]}}\n")
        (tmp_path / "env.yaml").write_text(spec)
        result = CliRunner().invoke(main, ["validate", str(tmp_path / "env.yaml")])
        assert result.exit_code == 1 and "is a file of the kernel's" in result.output
        assert "sk-live" not in result.output


def test_a_quoted_column_name_may_hold_a_comma(tmp_path):
    """The header was split at every comma: "a,x" made 4 columns of 3."""
    (tmp_path / "d.csv").write_text('"a,x",b,label\n1,2,0\n3,4,1\n')
    dataset = load("csv", spec_dir=tmp_path, path="d.csv", normalize="none")
    assert dataset.train.x.tolist() == [[1, 2], [3, 4]] and dataset.input_shape == (2,)


BAD_CSV = {
    "no_label": ("a,b\n1,2\n", "no `label` column in the header row (a, b); name the targets' "
                 "column `label`"),
    "text": ("a,label\n1,0\nx,1\n", "line 3, column 'a': 'x' is not a number"),
    "text_after_comments": ("a,b,label\n# units: cm\n\n1,2,0 # first\n1,2,one\n",
                            "line 5, column 'label': 'one' is not a number"),
    "empty_value": ("a,b,label\n1,,0\n", "line 2, column 'b': empty"),
    "ragged": ("a,b,label\n1,2,0\n1,1\n", "line 3 has 2 values, the header has 3 columns"),
    "short_rows": ("a,b,label\n1,0\n2,1\n", "line 2 has 2 values, the header has 3 columns"),
    "duplicate_names": ("a,a,c,label,label\n1,2,3,0,0\n", "'a', 'label' more than once"),
    "nan": ("a,label\n1,0\nnan,1\n", "NaN or inf"),
    "empty": ("", "empty file"),
    "header_only": ("a,label\n", "no data rows"),
    # what spreadsheets and pandas write (the practitioner audit): the advice was to name a
    # `label` column the file has, to write categories as numbers, or pandas' index trained
    "semicolons": ("a;b;label\n1;2;0\n", "its columns are separated by ';'; a csv dataset "
                   "separates them by commas: save it so (pandas.read_csv(path, sep=';')"),
    # decimal commas, as those locales write numbers: re-saved without decimal=',' they were
    # text, refused (the data audit)
    "semicolons_decimal_commas": ("a;b;label\n0,5;1,25;0\n", "(pandas.read_csv(path, sep=';', "
                                  "decimal=',').to_csv(path, index=False))"),
    "tabs": ("a\tlabel\n1\t0\n", "separated by '\\t'"),
    "spaces": ("f1 f2 label\n1 2 0\n", "its columns are separated by ' '; a csv dataset "
               "separates them by commas"),
    "excel_separator_line": ("sep=;\na;label\n1;0\n", "separated by ';'"),
    "no_header": ("5.1,3.5,0\n4.9,3.0,1\n", "the first row holds numbers (5.1, 3.5, 0), not "
                  "column names; begin the file with a header row"),
    "pandas_index": (",a,label\n0,1.5,0\n1,2.5,1\n", "column 1 has no name in the header row "
                     "(pandas writes its index so: save with df.to_csv(path, index=False))"),
    "pandas_index_read_back": ("Unnamed: 0,a,label\n0,1.5,0\n", "column 1 is pandas' "
                               "'Unnamed: 0'"),
    "unnamed_middle": ("a,,label\n1,2,0\n", "column 2 has no name in the header row; name it"),
    "trailing_commas": ("a,label,\n1,0,\n", "the header row ends with a comma, an empty "
                        "column; remove the commas that end the rows"),
    "missing_value": ("a,b,label\n1,NA,0\n", "column 'b': 'NA', a missing value; a csv dataset "
                      "holds a number in every column: fill in the missing values, or leave "
                      "their rows out"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_files_are_refused_by_name(tmp_path, case):
    text, needle = BAD_CSV[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(DataError) as excinfo:
        load("csv", spec_dir=tmp_path, path=path.name)
    message = one_line_error(excinfo, str(path), needle)
    assert "usecols" not in message and "float64" not in message  # NumPy's own words


NOT_A_NUMBER = ("is not a number; a csv dataset holds a number in every column (write categories "
                "as 0, 1, 2, ...)")
CLOSE_IT = "check the file's quotes: a value quoted with \" must close on its own line"
HEADER_QUOTE = ("the header row's quote (\") before 'b' is not closed on its line; a column name "
                "cannot span lines: close the quote where the name ends, or remove it")


@pytest.mark.parametrize("text, said", [
    # np.loadtxt reads a quoted value on through the next lines: it said "the number of
    # columns changed from 4 to 1 at row 2", or quoted the rest of the file as the value of
    # "row 0, column 1"; a quoted header name broken over two lines hid the label after it
    ('a,b,c,label\n1,2,3,0\n"4,5,6,1\n7,8,9,0\n',
     f"line 3, column 'a': its quote (\") is never closed; {CLOSE_IT}"),
    ('a,b,c,label\n"1,2,3,0\n0.95,2,3,1\n',
     f"line 2, column 'a': its quote (\") is never closed; {CLOSE_IT}"),
    ('a,b,c,label\n1,"2\n3",3,0\n4,5,6,1\n',
     f"line 2, column 'b': its quote (\") is closed only on line 3; {CLOSE_IT}"),
    ('a,b,c,label\n1,2,3,0,"9\n',
     f"line 2, value 5: its quote (\") is never closed; {CLOSE_IT}"),
    ('a,"b\nx",c,label\n1,2,3,0\n4,5,6,1\n', HEADER_QUOTE),
    ('label,a, "b\n1,2,3\n', HEADER_QUOTE),
    # the review: a # inside quotes is no comment, a comma inside quotes no delimiter (as
    # loadtxt reads them), a quote after a space no quote
    ('a,b,label\n1,"#2",0\n3,4,1\n', f"line 2, column 'b': '#2' {NOT_A_NUMBER}"),
    ('a,b,label\n1,"2,5",0\n3,4,1\n', f"line 2, column 'b': '2,5' {NOT_A_NUMBER}"),
    ('a,b,label\n1, "2",0\n3,4,1\n', f"line 2, column 'b': '\"2\"' {NOT_A_NUMBER}; a quote "
     "opens a value only as its first character: remove the spaces before it"),
])
def test_a_csv_quote_its_line_does_not_close_is_named_where_it_opens(tmp_path, text, said):
    path = tmp_path / "q.csv"
    path.write_text(text)
    with pytest.raises(DataError) as excinfo:
        load("csv", spec_dir=tmp_path, path=path.name)
    assert str(excinfo.value) == f"{path}: {said}"


@pytest.mark.parametrize("text", ['"a","b,x",label\n"1",2,"0"\n3,"4",1\n',
                                  'a,b,label\n"1""",2,0\n'])
def test_quotes_closed_on_their_line_are_no_quote_problem(tmp_path, text):
    from nnrun.compiler.datasets import csv_values

    assert all(csv_values(line)[1] is None for line in text.splitlines())
    assert all(csv_values(line, skip_spaces=True)[1] is None for line in text.splitlines())


def test_a_csv_row_is_read_as_loadtxt_reads_it():
    from nnrun.compiler.datasets import csv_values

    assert csv_values('1,"2,5","#3" # a "comment\r\n') == (["1", '"2,5"', '"#3" '], None)
    assert csv_values('1,"2\n') == (["1", '"2'], 1)
    assert csv_values("# only a comment\n") == ([""], None)


# --- an npz's own validation split (x_val, y_val) ----------------------------------------------


def test_an_npz_validation_pair_is_the_validation_split(tmp_path):
    """Keras' validation_data habit: x_val and y_val were dropped without a word (the
    practitioner audit). The statistics stay the training split's."""
    rng = np.random.default_rng(0)
    x, x_val = rng.normal(5, 2, (30, 3)), rng.normal(0, 1, (8, 3))
    write_npz(tmp_path / "d.npz", x=x, y=np.arange(30) % 2, x_val=x_val, y_val=np.arange(8) % 2)
    dataset = load("npz", spec_dir=tmp_path, path="d.npz", limit=20)
    assert len(dataset.train) == 20 and len(dataset.val) == 8  # limit keeps training samples
    mean, std = x[:20].mean(axis=0), x[:20].std(axis=0)
    np.testing.assert_allclose(dataset.val.x, (x_val - mean) / std, rtol=1e-5, atol=1e-6)
    assert dataset.val.y.tolist() == (np.arange(8) % 2).tolist() and dataset.test is None


@pytest.mark.parametrize("arrays, needle", [
    ({"x_val": np.zeros((4, 3))}, "'x_val' and 'y_val' must be given together"),
    ({"x_val": np.zeros((4, 2)), "y_val": np.zeros(4, int)},
     "(x_val, y_val): samples are [2], in x [3]"),
    ({"x_val": np.zeros((4, 3)), "y_val": np.full(4, 0.5)},
     "(x_val, y_val): holds real-valued targets, but y holds class labels"),
])
def test_a_validation_pair_unlike_the_training_split_is_refused(tmp_path, arrays, needle):
    write_npz(tmp_path / "d.npz", x=np.zeros((10, 3)), y=np.arange(10) % 2, **arrays)
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="d.npz")
    one_line_error(excinfo, needle)


def test_a_validation_split_leaves_the_validation_pair_out_with_a_warning(tmp_path, capsys):
    """As before x_val was read (the review: runs made so were refused by eval and resume)."""
    write_npz(tmp_path / "d.npz", x=np.arange(10.0)[:, None], y=np.arange(10) % 2,
              x_val=np.zeros((4, 3)), y_val=np.arange(4) % 2)  # not read: unlike x, it passes
    dataset = load("npz", spec_dir=tmp_path, path="d.npz", validation_split=0.2,
                   normalize="none")
    assert len(dataset.val) == 2 and set(dataset.val.x.ravel()) <= set(range(10))
    assert ("x_val and y_val are left out: data.validation_split holds out the validation "
            "samples from x (a spec without it validates on x_val)") in capsys.readouterr().err


def test_a_validation_pair_left_out_does_not_decide_the_labels_name(tmp_path):
    """masks_val beside y, left out by a validation_split, made the file 'has both y and
    masks' (the third review)."""
    write_npz(tmp_path / "d.npz", x=np.zeros((10, 1, 2, 2)), y=np.arange(10) % 2,
              x_val=np.zeros((4, 1, 2, 2)), masks_val=np.zeros((4, 2, 2), int))
    dataset = load("npz", spec_dir=tmp_path, path="d.npz", validation_split=0.2)
    assert len(dataset.val) == 2 and dataset.task == "classification"


def test_label_maps_may_name_their_validation_pair_masks_val(tmp_path):
    rng = np.random.default_rng(0)
    write_npz(tmp_path / "m.npz", x=rng.random((6, 1, 4, 4)), masks=rng.integers(0, 2, (6, 4, 4)),
              x_val=rng.random((2, 1, 4, 4)), masks_val=rng.integers(0, 2, (2, 4, 4)))
    dataset = load("npz", spec_dir=tmp_path, path="m.npz")
    assert dataset.task == "segmentation" and dataset.val.y.shape == (2, 4, 4)


# --- limit, validation split, normalize, permute ---------------------------------------------


@pytest.fixture
def indexed(tmp_path) -> Path:
    """100 samples whose features are [index, index + 1000]; the label is index % 3."""
    index = np.arange(100)
    x = np.stack([index, index + 1000], axis=1).astype(np.float64)
    x_test = np.stack([index[:10] + 500, index[:10]], axis=1).astype(np.float64)
    y, y_test = index % 3, index[:10] % 3
    return write_npz(tmp_path / "indexed.npz", x=x, y=y, x_test=x_test, y_test=y_test)


def load_indexed(path: Path, seed: int = 0, **fields) -> Dataset:
    return load("npz", spec_dir=path.parent, seed=seed, path=path.name, **fields)


def test_validation_split_is_seeded_disjoint_and_complete(indexed):
    dataset = load_indexed(indexed, validation_split=0.25, normalize="none")
    train_ids, val_ids = dataset.train.x[:, 0], dataset.val.x[:, 0]
    assert (len(train_ids), len(val_ids)) == (75, 25)
    assert sorted(np.concatenate([train_ids, val_ids]).tolist()) == list(range(100))
    assert np.array_equal(dataset.val.y, (val_ids % 3).astype(np.int64))
    same = load_indexed(indexed, validation_split=0.25, normalize="none")
    other = load_indexed(indexed, seed=1, validation_split=0.25, normalize="none")
    assert np.array_equal(same.val.x, dataset.val.x)
    assert not np.array_equal(other.val.x, dataset.val.x)


def test_limit_takes_the_first_samples_before_the_split(indexed):
    dataset = load_indexed(indexed, limit=20, validation_split=0.5, normalize="none")
    assert len(dataset.train) == len(dataset.val) == 10
    assert set(np.concatenate([dataset.train.x[:, 0], dataset.val.x[:, 0]])) == set(range(20))
    assert len(dataset.test) == 10  # limit applies to training data only


def test_validation_split_that_leaves_nothing(indexed):
    with pytest.raises(DataError, match="leaves none to train on"):
        load_indexed(indexed, limit=1, validation_split=0.5)


def test_standard_normalize_uses_training_statistics_only(indexed):
    raw = load_indexed(indexed, validation_split=0.2, normalize="none")
    dataset = load_indexed(indexed, validation_split=0.2, normalize="standard")
    mean, std = raw.train.x.mean(axis=0), raw.train.x.std(axis=0)
    np.testing.assert_allclose(dataset.train.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(dataset.train.x.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(dataset.val.x, (raw.val.x - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dataset.test.x, (raw.test.x - mean) / std, rtol=1e-5, atol=1e-5)


def test_standard_normalize_is_per_channel_for_images(tmp_path, make_mnist_like):
    make_mnist_like(tmp_path / "idx", train=30)
    dataset = load("mnist", path=str(tmp_path / "idx"))
    assert abs(dataset.train.x.mean()) < 1e-5 and abs(dataset.train.x.std() - 1) < 1e-5


def test_scale_maps_the_training_range_to_unit_interval(indexed):
    dataset = load_indexed(indexed, normalize="scale", validation_split=0.1)
    assert dataset.train.x.min() == 0 and dataset.train.x.max() == 1
    assert dataset.test.x.max() <= 1


def test_permute_features_is_one_fixed_permutation_for_every_split(tmp_path):
    x = np.tile(np.arange(12, dtype=np.float64), (30, 1)).reshape(30, 3, 4)
    labels = np.zeros(30, int)
    path = write_npz(tmp_path / "p.npz", x=x, y=labels, x_test=x[:4], y_test=labels[:4])
    dataset = load_indexed(path, permute_features=True, normalize="none", validation_split=0.2)
    order = dataset.train.x[0].reshape(-1)
    assert sorted(order.tolist()) == list(range(12)) and order.tolist() != list(range(12))
    assert dataset.train.x.shape == (24, 3, 4)
    for split in (dataset.train, dataset.val, dataset.test):
        assert (split.x.reshape(len(split.x), -1) == order).all()
    same_seed = load_indexed(path, permute_features=True, normalize="none")
    other_seed = load_indexed(path, seed=5, permute_features=True, normalize="none")
    assert np.array_equal(same_seed.train.x[0], dataset.train.x[0])
    assert not np.array_equal(other_seed.train.x[0], dataset.train.x[0])
    # An integer is the permutation's own seed, whatever the spec's seed.
    fixed = [load_indexed(path, seed=s, permute_features=3, normalize="none") for s in (0, 9)]
    assert np.array_equal(fixed[0].train.x[0], fixed[1].train.x[0])


def test_no_permutation_when_false(indexed):
    dataset = load_indexed(indexed, permute_features=False, normalize="none")
    assert dataset.train.x[5].tolist() == [5, 1005]


# --- augmentations ---------------------------------------------------------------------------


def dots(count: int = 64) -> np.ndarray:
    images = np.zeros((count, 1, 9, 9), np.float32)
    images[:, 0, 4, 4] = 1.0
    return images


def test_random_shift_moves_within_bounds_with_zero_fill():
    images = dots()
    shifted = augment_batch(images, [SimpleNamespace(type="random_shift", max_shift=2)],
                            np.random.default_rng(0))
    assert shifted.shape == images.shape and shifted.dtype == np.float32
    assert images[:, 0, 4, 4].all()  # the input is untouched
    positions = np.argwhere(shifted[:, 0] == 1.0)
    assert len(positions) == len(images) and shifted.sum() == len(images)
    offsets = positions[:, 1:] - 4
    assert np.abs(offsets).max() == 2 and len({tuple(o) for o in offsets}) > 5


def test_random_shift_fills_with_zeros_and_works_on_sequences():
    sequences = np.ones((16, 2, 10), np.float32)
    shifted = augment_batch(sequences, [{"type": "random_shift", "max_shift": 3}],
                            np.random.default_rng(1))
    assert shifted.shape == sequences.shape and set(np.unique(shifted)) <= {0.0, 1.0}
    assert (shifted.sum(axis=2) >= 7).all() and (shifted.sum(axis=2) < 10).any()


def test_augmentations_are_deterministic_for_a_seeded_generator():
    specs = [SimpleNamespace(type="random_shift", max_shift=1),
             SimpleNamespace(type="random_flip", axis="horizontal"),
             SimpleNamespace(type="gaussian_noise", std=0.1)]
    first = augment_batch(dots(), specs, np.random.default_rng(4))
    second = augment_batch(dots(), specs, np.random.default_rng(4))
    assert np.array_equal(first, second)


@pytest.mark.parametrize("axis, array_axis", [("horizontal", 3), ("vertical", 2)])
def test_random_flip(axis, array_axis):
    images = np.random.default_rng(0).random((40, 1, 5, 6)).astype(np.float32)
    flipped = augment_batch(images, [SimpleNamespace(type="random_flip", axis=axis)],
                            np.random.default_rng(0))
    same = (flipped == images).all(axis=(1, 2, 3))
    mirrored = (flipped == np.flip(images, axis=array_axis)).all(axis=(1, 2, 3))
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_gaussian_noise():
    batch = np.zeros((200, 50), np.float32)
    noisy = augment_batch(batch, [SimpleNamespace(type="gaussian_noise", std=0.5)],
                          np.random.default_rng(0))
    assert noisy.dtype == np.float32 and abs(noisy.std() - 0.5) < 0.02 and not batch.any()


def test_every_augmentation_draws_alike_in_float32_and_float64():
    """A float32 run and its float64 check see the same augmented data (up to rounding): the
    noise is drawn in float64 whatever the dtype, as the initializers are."""
    specs = [SimpleNamespace(type="random_shift", max_shift=1),
             SimpleNamespace(type="random_flip", axis="horizontal"),
             SimpleNamespace(type="gaussian_noise", std=0.1)]
    images = np.random.default_rng(0).random((20, 1, 6, 6))
    single = augment_batch(images.astype(np.float32), specs, np.random.default_rng(3))
    double = augment_batch(images, specs, np.random.default_rng(3))
    assert single.dtype == np.float32 and double.dtype == np.float64
    assert np.allclose(single, double, rtol=0, atol=1e-6)


def test_augmentation_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="needs samples with a spatial axis"):
        augment_batch(np.zeros((4, 3)), [SimpleNamespace(type="random_shift", max_shift=1)], rng)
    with pytest.raises(DataError, match="vertical needs 2-D samples"):
        augment_batch(np.zeros((4, 1, 5)), [SimpleNamespace(type="random_flip", axis="vertical")],
                      rng)
    with pytest.raises(DataError, match="unknown augmentation 'rotate'"):
        augment_batch(np.zeros((4, 1, 5)), [SimpleNamespace(type="rotate")], rng)
    assert augment_batch(np.ones((2, 2)), [], rng).tolist() == [[1, 1], [1, 1]]


# --- fetch -----------------------------------------------------------------------------------


def fill_mirror(directory: Path, seed: int = 0) -> dict[str, str]:
    """Four small files with the IDX names; returns their SHA-256 digests."""
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for number, base in enumerate(IDX_FILES.values()):
        content = np.random.default_rng([seed, number]).bytes(1000 + number)
        (directory / f"{base}.gz").write_bytes(content)
        digests[f"{base}.gz"] = hashlib.sha256(content).hexdigest()
    return digests


def test_fetch_stores_verified_files(mirror, tmp_path):
    root, url = mirror
    digests = fill_mirror(root / "good")
    destination = tmp_path / "dest" / "mnist"
    messages = []
    result = fetch_dataset("mnist", destination, mirrors=[f"{url}/good/"], checksums=digests,
                           report=messages.append)
    assert result == destination
    assert sorted(os.listdir(destination)) == sorted(digests)
    for file_name, digest in digests.items():
        assert hashlib.sha256((destination / file_name).read_bytes()).hexdigest() == digest
    assert all("checksum ok" in message for message in messages)
    again = []
    fetch_dataset("mnist", destination, mirrors=[f"{url}/good/"], checksums=digests,
                  report=again.append)
    assert all("already present" in message for message in again)


def test_fetch_refuses_a_corrupted_download_and_keeps_nothing(mirror, tmp_path):
    root, url = mirror
    digests = fill_mirror(root / "bad")
    (root / "bad" / "train-labels-idx1-ubyte.gz").write_bytes(b"not the real file")
    destination = tmp_path / "dest"
    with pytest.raises(DataError) as excinfo:
        fetch_dataset("fashion_mnist", destination, mirrors=[f"{url}/bad/"], checksums=digests)
    one_line_error(excinfo, "train-labels-idx1-ubyte.gz", "checksum mismatch", str(destination))
    assert os.listdir(destination) == ["train-images-idx3-ubyte.gz"]  # no temporary file either


def test_a_mirror_host_that_cannot_be_parsed_is_not_called_a_checksum_mismatch(tmp_path):
    """urllib3's error for such a host is a ValueError, as pooch's mismatch is; a host name
    holding 'hash' was taken for one (nothing is sent: the URL fails to parse)."""
    with pytest.raises(DataError) as excinfo:
        fetch_dataset("mnist", tmp_path / "dest", mirrors=["http://hash..example/mnist/"])
    message = one_line_error(excinfo, "train-images-idx3-ubyte.gz", "hash..example")
    assert "checksum mismatch" not in message and "label empty or too long" in message


def test_fetch_falls_back_to_the_next_mirror(mirror, tmp_path):
    root, url = mirror
    digests = fill_mirror(root / "good")
    fill_mirror(root / "bad", seed=1)
    mirrors = [f"{url}/missing/", f"{url}/bad/", f"{url}/good/"]
    fetch_dataset("mnist", tmp_path / "dest", mirrors=mirrors, checksums=digests)
    assert sorted(os.listdir(tmp_path / "dest")) == sorted(digests)


def test_fetch_refuses_unknown_and_unwritable(tmp_path):
    with pytest.raises(DataError, match="digits: built in or generated: nothing to fetch"):
        fetch_dataset("digits", tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(DataError, match="not writable"):
        fetch_dataset("mnist", locked / "mnist", mirrors=["http://127.0.0.1:9/"])


def test_fetch_downloads_through_pooch(mirror, tmp_path, monkeypatch):
    # Issue 10, item 12: the download, checksum and atomic rename are pooch's, not ours.
    import pooch

    root, url = mirror
    digests = fill_mirror(root / "good")
    calls = []
    real_retrieve = pooch.retrieve

    def recording_retrieve(*arguments, **options):
        calls.append(options["known_hash"])
        return real_retrieve(*arguments, **options)

    monkeypatch.setattr(pooch, "retrieve", recording_retrieve)
    fetch_dataset("mnist", tmp_path / "dest", mirrors=[f"{url}/good/"], checksums=digests)
    assert sorted(calls) == sorted(f"sha256:{digest}" for digest in digests.values())
    assert all(oct(p.stat().st_mode)[-3:] == "644" for p in (tmp_path / "dest").iterdir())


def test_a_download_past_the_largest_dataset_file_is_stopped(mirror, tmp_path, monkeypatch):
    """A mirror streaming without end filled the disk before the checksum refused it."""
    from nnrun.runtime.data import fetch

    root, url = mirror
    digests = fill_mirror(root / "good")  # files of about 1,000 bytes
    monkeypatch.setattr(fetch, "MOST_BYTES", 500)
    with pytest.raises(DataError, match="sends more than 0 MB, far more than the file"):
        fetch_dataset("mnist", tmp_path / "dest", mirrors=[f"{url}/good/"], checksums=digests)
    assert not list((tmp_path / "dest").rglob("*"))  # nor a temporary file
    guard = fetch._SizeGuard()
    guard.total = 0  # no Content-Length: counted as it comes
    guard.update(400)
    with pytest.raises(OSError, match="sends more than 0 MB"):
        guard.update(400)


# --- caches: in the cache directory only, and only after validation (docs/reliability.md) ------


def test_a_writable_data_directory_is_left_untouched(tmp_path, make_mnist_like, monkeypatch):
    data_dir = tmp_path / "data"
    make_mnist_like(data_dir / "mnist")
    before = sorted(p.name for p in (data_dir / "mnist").iterdir())
    monkeypatch.setenv("NNRUN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    load("mnist")
    load("mnist")
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == before
    assert len(list((tmp_path / "cache" / "mnist").glob("*.npy"))) == 4


def test_a_refused_dataset_leaves_no_cache(tmp_path, make_mnist_like, make_idx, monkeypatch):
    directory = make_mnist_like(tmp_path / "idx")
    make_idx(directory / "train-labels-idx1-ubyte", np.full(12, 10, np.uint8))  # class 10 of 10
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="labels must be < 10"):
        load("mnist", path=str(directory))
    assert not list((tmp_path / "cache").rglob("train-*.npy"))
    assert not list(directory.glob("*.npy"))


def test_a_cache_whose_header_declares_terabytes_is_rebuilt(tmp_path, make_mnist_like,
                                                           monkeypatch):
    """np.load's MemoryError went up as "out of memory; lower the batch size"."""
    directory = make_mnist_like(tmp_path / "idx")
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    first = load("mnist", path=str(directory))
    for cached in (tmp_path / "cache" / "mnist").glob("*.npy"):
        with open(cached, "wb") as stream:
            np.lib.format.write_array_header_1_0(stream, {
                "descr": "|u1", "fortran_order": False, "shape": (4_000_000, 1000, 1000)})
            stream.write(b"\0" * 1024)
    again = load("mnist", path=str(directory))
    np.testing.assert_array_equal(again.train.x, first.train.x)


def test_old_leftovers_of_killed_cache_writes_are_cleared(tmp_path, make_mnist_like, monkeypatch):
    directory = make_mnist_like(tmp_path / "idx")
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    load("mnist", path=str(directory))
    cache = tmp_path / "cache" / "mnist"
    cached = sorted(cache.glob("*.npy"))
    old, recent = (cache / f".{cached[0].name}.{stem}.nnrun-partial"  # as mkstemp names them
                   for stem in ("old_0000", "recent00"))
    old.write_bytes(b"half")
    recent.write_bytes(b"half")  # perhaps another process writing now: kept
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    for path in cached:
        path.unlink()
    load("mnist", path=str(directory))
    assert not old.exists() and recent.exists()


def test_old_leftovers_go_where_the_cache_is_read_and_not_written_again(
        tmp_path, make_mnist_like, monkeypatch):
    """The growth audit: a cache, once written, is only read, so what killed first writes
    left beside it (up to 47 MB each for MNIST) stayed for good."""
    directory = make_mnist_like(tmp_path / "idx")
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    load("mnist", path=str(directory))
    cache = tmp_path / "cache" / "mnist"
    cached = sorted(cache.glob("*.npy"))
    old, recent = (cache / f".{cached[0].name}.{stem}.nnrun-partial"
                   for stem in ("old_0000", "recent00"))
    old.write_bytes(b"half")
    recent.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    written = {path: path.stat().st_mtime_ns for path in cached}
    load("mnist", path=str(directory))
    assert {path: path.stat().st_mtime_ns for path in cached} == written  # read, not written
    assert not old.exists() and recent.exists()


def test_a_write_clears_the_hour_old_leftovers_of_its_file_only(tmp_path):
    """predict's, export's and plot's outputs too: a killed write of OUT left its temporary
    file beside it for good."""
    from nnrun.runtime.files import write_output

    out = tmp_path / "p.npy"
    old, recent, other = (tmp_path / name for name in (
        ".p.npy.old_0000.nnrun-partial", ".p.npy.recent00.nnrun-partial",
        ".q.npy.old_0000.nnrun-partial"))
    for path in (old, recent, other):
        path.write_bytes(b"half")
    for path in (old, other):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    write_output(out, lambda stream: stream.write(b"x"))
    assert sorted(tmp_path.iterdir()) == sorted([out, recent, other])


def test_permuted_features_are_laid_out_sample_by_sample():
    """A column-major result made every batch gather stride across the whole split: specs with
    permute_features trained 10-45x slower."""
    from nnrun.runtime.data.splits import permute_features

    x = np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3)
    permutation = np.random.default_rng(0).permutation(18)
    permuted = permute_features(x, permutation)
    assert permuted.flags.c_contiguous
    np.testing.assert_array_equal(permuted.reshape(4, -1), x.reshape(4, -1)[:, permutation])


def test_an_npz_whose_samples_would_not_fit_as_float32_is_refused_with_the_figures(tmp_path,
                                                                                monkeypatch):
    """uint8 images of 1 MB fit to read, not with their float32 copy: NumPy's MemoryError
    came after the read, as 'out of memory; lower the batch size' (the memory-limits audit)."""
    x = np.zeros((1024, 1, 32, 32), np.uint8)
    write_npz(tmp_path / "u8.npz", x=x, y=np.zeros(1024, np.int64))
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "3MB")
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="u8.npz")
    one_line_error(excinfo, "its arrays declare 1.01 MB, and their copies take 4.01 MB more "
                   "(samples and real-valued targets as float32, class labels as int64), over "
                   "the 3.00 MB available (NNRUN_MEMORY_LIMIT)", "save fewer samples")
    # data.limit keeps the first samples: only those are copied (the second review)
    assert len(load("npz", spec_dir=tmp_path, path="u8.npz", limit=100).train.x) == 100


# --- the hostile-files audit of 2026-12-05 ---------------------------------------------------


@pytest.mark.parametrize("arrays", [
    {"x": np.float32(1), "y": np.zeros(3, np.int64)},
    {"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.int64),
     "x_test": np.float32(1), "y_test": np.zeros(2, np.int64)}], ids=["x", "x_test"])
def test_an_npz_whose_features_are_a_single_value_is_a_data_error(tmp_path, arrays):
    """Its samples' memory was counted from shape[0] before the shape was checked: IndexError."""
    write_npz(tmp_path / "single.npz", **arrays)
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="single.npz")
    one_line_error(excinfo, "single.npz", "features must be [N, ...]")


def test_finding_the_first_nan_sample_costs_no_more_than_a_slice(tmp_path):
    """np.argwhere listed every NaN's index: 17x the data (3 GB for an all-NaN MNIST)."""
    import tracemalloc

    from nnrun.runtime.data.splits import first_non_finite_sample

    x = np.full((4000, 1, 28, 28), np.nan, np.float32)  # 12.5 MB
    x[:3000] = 0
    tracemalloc.start()
    try:
        assert first_non_finite_sample(x) == 3000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak
    assert first_non_finite_sample(np.zeros((5, 3))) is None
    assert first_non_finite_sample(np.arange(6).reshape(3, 2)) is None


def test_a_decoded_copy_changed_in_place_is_decoded_again(tmp_path, make_mnist_like,
                                                          isolated_home):
    """A cache truncated to 5 samples trained on them without a word; labels overwritten with
    99 were blamed on the intact IDX file."""
    directory = make_mnist_like(tmp_path / "data")
    first = load("mnist", path=str(directory), normalize="none")
    cache = isolated_home / ".cache/nnrun/mnist"
    for copy in cache.glob("train-*.npy"):
        np.save(copy, np.load(copy)[:5])
    assert np.array_equal(load("mnist", path=str(directory), normalize="none").train.x,
                          first.train.x)
    for copy in cache.glob("t10k-labels*.npy"):
        np.save(copy, np.full(np.load(copy).shape, 99, np.uint8))
    assert load("mnist", path=str(directory), normalize="none").test.y.max() < 10
    assert all(len(np.load(copy)) in (12, 5) for copy in cache.glob("*.npy"))


def test_a_mirror_is_an_http_url(tmp_path):
    """requests refuses ftp with an error that is also a ValueError: it read as a checksum
    mismatch."""
    with pytest.raises(DataError) as excinfo:
        fetch_dataset("mnist", tmp_path / "out", mirrors=["ftp://127.0.0.1:9/"])
    one_line_error(excinfo, "is not an http(s) URL")


def test_real_valued_targets_are_counted_as_float32_copies(tmp_path, monkeypatch):
    """Counted as 64-bit labels (the first fix of int8 labels), image-sized float targets made
    a file refused that loads within the limit (the review of that fix)."""
    images = np.zeros((200, 1, 28, 28), np.float32)
    write_npz(tmp_path / "denoise.npz", x=images, y=images + 0.5)
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "2.8MB")  # 1.25 MB of arrays, 1.25 MB of copies
    assert load("npz", spec_dir=tmp_path, path="denoise.npz").task == "regression"
    # float label maps without the channel axis become int64 class indices of every sample
    masks = (np.arange(200 * 784).reshape(200, 28, 28) % 2).astype(np.float32)
    write_npz(tmp_path / "maps.npz", x=images.astype(np.uint8), masks=masks)
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "1.5MB")
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="maps.npz", limit=10)
    one_line_error(excinfo, "their copies take 1.23 MB more")


def test_running_out_of_memory_while_loading_names_the_data_and_its_fix(tmp_path, monkeypatch):
    """Past the check of the declared sizes (an npz's int8 labels copied as int64 were not
    counted), NumPy's MemoryError came out as 'out of memory; lower the batch size or the
    model size', naming no file (the hostile-files audit)."""
    from nnrun.runtime import data

    write_npz(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), y=np.zeros(8, np.int8))

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(data, "load_raw", out_of_memory)
    with pytest.raises(DataError) as excinfo:
        load("npz", spec_dir=tmp_path, path="d.npz")
    one_line_error(excinfo, str(tmp_path / "d.npz"), "out of memory while loading the data",
                   "use fewer samples")


def test_standard_normalisation_scales_every_feature_but_the_constant_ones():
    """A constant feature (up to rounding, whatever its unit) gets scale 1; one of a tiny
    spread is scaled like any other (an absolute 1e-12 cut-off left a spread of 1e-13 as it
    was)."""
    from nnrun.runtime.data.splits import fit_normalizer

    rng = np.random.default_rng(0)
    one_ulp = np.nextafter(1.0, 2.0) - 1.0  # 1.0 and the next double: a spread of rounding
    x = np.stack([rng.standard_normal(50), 1e-13 * rng.standard_normal(50),
                  1.7e18 + 1e6 * rng.standard_normal(50),  # nanoseconds: a real spread
                  np.full(50, 0.1), 1.0 + one_ulp * (np.arange(50) % 2), np.zeros(50)], axis=1)
    normalizer = fit_normalizer(x, "standard")
    scaled = (x - normalizer.shift) / normalizer.scale
    assert np.allclose(scaled[:, :3].std(axis=0), 1.0)
    assert list(normalizer.scale.ravel()[3:]) == [1.0, 1.0, 1.0]


def test_standard_normalisation_of_values_whose_squares_overflow(tmp_path):
    """The numerics audit: features near 1e160 (float64) overflowed the sum of squares, and
    the std of NaN was read as a constant feature's: scale 1, the model fed 1e160. A feature of
    1e300 beside one of ordinary values keeps that one's statistics."""
    import nnrun
    from nnrun.runtime.data.splits import fit_normalizer

    rng = np.random.default_rng(0)
    x = np.stack([rng.standard_normal(40) * 1e160, rng.standard_normal(40) + 5,
                  np.r_[1e300, np.zeros(39)], np.full(40, 3e200)], axis=1)
    normalizer = fit_normalizer(x, "standard")
    ordinary = fit_normalizer(x[:, 1:2], "standard")
    np.testing.assert_allclose(normalizer.shift.ravel()[:3], [x[:, 0].mean(), x[:, 1].mean(),
                                                              1e300 / 40], rtol=1e-12)
    np.testing.assert_allclose(normalizer.scale.ravel()[:3], [(x[:, 0] / 1e160).std() * 1e160,
                                                              x[:, 1].std(),
                                                              np.sqrt(39) / 40 * 1e300],
                               rtol=1e-12)
    assert normalizer.scale.ravel()[3] == 1.0  # constant, however large
    np.testing.assert_allclose(normalizer.scale.ravel()[1], ordinary.scale.ravel()[0],
                               rtol=1e-12)
    np.savez(tmp_path / "big.npz", x=x[:, :2], y=np.arange(40) % 3)
    spec = tmp_path / "big.yaml"
    spec.write_text("data: {dataset: npz, path: big.npz, normalize: standard}\n"
                    "model: {layers: [{type: dense, units: 3}]}\ntrain: {epochs: 1}\n")
    nnrun.train(str(spec), out_dir=tmp_path / "run", quiet=True)
    stored = np.load(tmp_path / "run" / "preprocessing.npz")
    np.testing.assert_allclose(stored["scale"].ravel(), normalizer.scale.ravel()[:2],
                               rtol=1e-6)


def test_an_idx_file_over_the_memory_limit_is_told_to_free_memory_first(
        tmp_path, make_mnist_like, monkeypatch):
    """The environments audit, under ulimit -v: a whole MNIST file over the limit was called
    damaged or another dataset; its shape is MNIST's, so the limit comes first."""
    directory = make_mnist_like(tmp_path / "idx")
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "1kB")
    with pytest.raises(DataError, match=r"over the 1\.0 KB available \(NNRUN_MEMORY_LIMIT\); "
                                        r"free memory or raise the limit, or, if the shape is "
                                        r"not this dataset's, the file is damaged: replace it"):
        load("mnist", path=str(directory))


def test_validate_says_idx_files_missing_from_data_path_as_train_would(tmp_path,
                                                                       make_mnist_like):
    """train never downloads into a data.path (the user's): validate said nothing of an empty
    one, and validate --data passed it."""
    from click.testing import CliRunner

    from nnrun.cli import main

    (tmp_path / "empty").mkdir()
    make_mnist_like(tmp_path / "full", compress=True)
    spec = tmp_path / "m.yaml"
    spec.write_text("data: {dataset: mnist, path: empty}\n"
                    "model: {layers: [{type: flatten}, {type: dense, units: 10}]}\n")
    said = (f"{spec}:1:30: {{}}: data.path: mnist: train-images-idx3-ubyte(.gz) not found in "
            f"{tmp_path / 'empty'} (data.path); put the four IDX files there, e.g. `nnrun data "
            f"fetch mnist --dest {tmp_path / 'empty'}`")
    warned = CliRunner().invoke(main, ["validate", str(spec)])
    assert warned.exit_code == 0
    assert said.format("warning") + " (train needs them)" in warned.output
    refused = CliRunner().invoke(main, ["validate", "--data", str(spec)])
    assert refused.exit_code == 1 and said.format("error") in refused.output
    spec.write_text(spec.read_text().replace("path: empty", "path: full"))
    assert CliRunner().invoke(main, ["validate", str(spec)]).output.endswith(
        "ok (7,850 parameters, 15,680 FLOPs per sample)\n")


# --- validate says what the loader refuses of a csv header or an npz's pairs ----------------


def _validate_and_train(tmp_path, spec: Path) -> tuple:
    """validate's and train's exit codes and output, the command's."""
    from click.testing import CliRunner

    from nnrun.cli import main

    validated = CliRunner().invoke(main, ["validate", str(spec)])
    trained = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"),
                                        "--quiet"])
    return validated.exit_code, validated.output, trained.exit_code, trained.output


@pytest.mark.parametrize("header, said", [
    # validate passed it, train refused it (the design audit)
    ("f1,f1,label", "the header row names 'f1' more than once; give every column its own name"),
    # no label column as well: the loader names the unnamed column first, and so does validate
    ("Unnamed: 0,a,b", "column 1 is pandas' 'Unnamed: 0' in the header row (pandas writes its "
                       "index so: save with df.to_csv(path, index=False)); name it, or leave "
                       "the column out"),
    # no header row, whose numbers repeat: that it holds numbers comes first (the review)
    ("1,1,0", "the first row holds numbers (1, 1, 0), not column names; begin the file with a "
              "header row that names the columns, the targets' `label`"),
])
def test_validate_says_a_csv_header_train_refuses_at_data_path(tmp_path, header, said):
    (tmp_path / "d.csv").write_text(f"{header}\n1,2,0\n3,4,1\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: csv, path: d.csv}\n"
                    "model: {layers: [{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    line = f"{spec}:1:28: error: data.path: {tmp_path / 'd.csv'}: {said}\n"
    assert _validate_and_train(tmp_path, spec) == (1, line, 1, line)


@pytest.mark.parametrize("arrays, said", [
    # validate passed x_val of other samples than x's, which train refused (the design audit)
    ({"x_val": np.zeros((5, 4)), "y_val": np.arange(5) % 2},
     "(x_val, y_val): samples are [4], in x [3]; its samples must have the shape of the "
     "training samples"),
    ({"x_test": np.zeros((5, 3)), "y_test": np.arange(4) % 2},
     "(x_test, y_test): 5 samples of features but 4 labels"),
    ({"y": np.arange(19) % 2}, "(x, y): 20 samples of features but 19 labels"),
    # x at odds with x_test and x_val, which agree: x is told (the data-file mutation fuzz:
    # x_test was told to change, then x_val, then x)
    ({"x_test": np.zeros((5, 2)), "y_test": np.arange(5) % 2, "x_val": np.zeros((5, 2)),
      "y_val": np.arange(5) % 2}, "(x, y): samples are [3], in x_test and x_val [2]; its "
     "samples must have the shape of the held-out splits'"),
])
def test_validate_says_an_npz_pair_train_refuses_at_data_path(tmp_path, arrays, said):
    write_npz(tmp_path / "d.npz", **{"x": np.zeros((20, 3)), "y": np.arange(20) % 2, **arrays})
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz}\n"
                    "model: {layers: [{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    line = f"{spec}:1:28: error: data.path: {tmp_path / 'd.npz'} {said}\n"
    assert _validate_and_train(tmp_path, spec) == (1, line, 1, line)


# --- a spec of no file: its data.path is relative to the current directory -----------------


def test_a_spec_given_as_data_says_its_data_path_is_relative_to_the_current_directory(
        tmp_path, monkeypatch):
    """The message said 'relative to the spec file' of a dict, which has none."""
    import nnrun

    monkeypatch.chdir(tmp_path)
    data = {"data": {"dataset": "npz", "path": "missing.npz"},
            "model": {"input_shape": [3], "layers": [{"type": "dense", "units": 2}]}}
    for spec in (data, nnrun.Spec.model_validate(data)):
        with pytest.raises(DataError) as excinfo:
            nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
        assert str(excinfo.value) == (f"{tmp_path / 'missing.npz'}: not found (data.path, "
                                      "relative to the current directory, names the .npz file)")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text(
        "data: {dataset: npz, path: missing.npz}\n"
        "model: {input_shape: [3], layers: [{type: dense, units: 2}]}\n")
    with pytest.raises(DataError) as excinfo:
        nnrun.train("specs/s.yaml", out_dir=tmp_path / "run", quiet=True)
    assert str(excinfo.value) == (f"{Path('specs') / 'missing.npz'}: not found (data.path, "
                                  "relative to the spec file, names the .npz file)")


# --- data that does not fit the model is a DataError too ------------------------------------


def test_data_that_does_not_fit_the_model_is_a_data_error(tmp_path):
    """`except nnrun.DataError` missed it; the command says it as before."""
    import nnrun

    (tmp_path / "k.csv").write_text("a,label\n1,0\n2,1\n3,2\n4,3\n")
    spec = tmp_path / "k.yaml"
    spec.write_text("data: {dataset: csv, path: k.csv, validation_split: 0}\n"
                    "model: {layers: [{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    said = (f"{spec}:1:28: error: data.path: {tmp_path / 'k.csv'}: labels go up to 3 but the "
            "model has 2 outputs; set units: 4 in model.layers[0] (dense_1)")
    with pytest.raises(nnrun.DataError) as excinfo:
        nnrun.train(spec, out_dir=tmp_path / "api", quiet=True)
    assert type(excinfo.value) is nnrun.DataFitError
    assert excinfo.value.diagnostic.format() == said
    _, _, code, output = _validate_and_train(tmp_path, spec)
    assert (code, output) == (1, said + "\n")


@pytest.mark.parametrize("arrays, said", [
    # validate passed these three, which train refused (the design audit)
    ({"masks": np.zeros((20, 3), int), "x_test": np.zeros((4, 3)), "y_test": np.zeros(4, int)},
     ": has both 'y_test' and masks; keep one name for the labels (masks for label maps)"),
    ({"y": np.arange(20) % 2, "x_val": np.zeros((4, 3))},
     ": 'x_val' and 'y_val' must be given together; save the split's y_val beside it, or "
     "leave x_val out"),
    ({"y": np.arange(20) % 2, "y_test": np.arange(4) % 2},
     ": 'x_test' and 'y_test' must be given together; save the split's x_test beside it, or "
     "leave y_test out"),
    # the data-file audit: the samples' or a split's arrays beside masks under other names
    ({"y": np.arange(20) % 2, "X_test": np.zeros((4, 3)), "y_test": np.arange(4) % 2},
     ": 'x_test' and 'y_test' must be given together; save X_test as x_test"),
    ({"y": np.arange(20) % 2, "x_test": np.zeros(4), "y_test": np.arange(4) % 2},
     " (x_test, y_test): features must be [N, ...], one row per sample, got [4]; for one "
     "feature a sample save x_test[:, None]"),
    ({"y": np.arange(20) % 2, "x_val": np.zeros((0, 3)), "y_val": np.zeros(0, int)},
     " (x_val, y_val): x_val holds no samples ([0, 3]); save the data with at least one "
     "sample"),
    # text, in another layout too: train says it is no numbers first, and so validate (the
    # review: validate told the layout's fix, after which train refused the text)
    ({"y": np.arange(20) % 2, "x_test": np.array(["a"] * 4), "y_test": np.arange(4) % 2},
     " (x_test, y_test): features must be numbers, found dtype <U1; if they are numbers "
     "written as text, save x_test.astype('float32')"),
    ({"y": np.arange(20) % 2, "x_val": np.full((4, 3), 1j), "y_val": np.arange(4) % 2},
     " (x_val, y_val): features must be numbers, found dtype complex128; save x_val.real (or "
     "numpy.abs(x_val)) as floats, or both parts as features: numpy.stack([x_val.real, "
     "x_val.imag], axis=1) (two channels)"),
    # labels that are no numbers, which validate passed: class names, label maps of text
    # (which train met as an internal error), several labels a sample, another split's, other
    # dtypes; the class names' fix only for one label a sample (the review)
    ({"y": np.array(["a", "b"] * 10)},
     " (x, y): labels must be real numbers, found dtype <U1; for class names, number them 0..k-1 "
     "alike in every split: with classes = numpy.unique(numpy.concatenate([y, y_test, y_val])) "
     "(the splits the file holds), save numpy.searchsorted(classes, y) as y (and so y_test, "
     "y_val)"),
    ({"y": np.full((20, 2, 2), "a")}, " (x, y): labels must be real numbers, found dtype <U1; "
     "if they are numbers written as text, save y.astype('float32')"),
    ({"y": np.full((20, 2), "a")}, " (x, y): labels must be real numbers, found dtype <U1; if "
     "they are numbers written as text, save y.astype('float32')"),
    ({"y": np.full((20, 1), "a")},
     " (x, y): labels must be real numbers, found dtype <U1; for class names, number them "
     "0..k-1 alike in every split: with classes = numpy.unique(numpy.concatenate([y, y_test, "
     "y_val])) (the splits the file holds), save numpy.searchsorted(classes, y) as y (and so "
     "y_test, y_val)"),
    ({"masks": np.full((20, 3), "a")},
     " (x, masks): label maps must be integers, found dtype <U1"),
    ({"y": np.zeros(20, "datetime64[s]")},
     " (x, y): labels must be real numbers, found dtype datetime64[s]"),
    ({"y": np.arange(20) % 2, "x_test": np.zeros((4, 3)), "y_test": np.full(4, 1j)},
     " (x_test, y_test): labels must be real numbers, found dtype complex128; save "
     "y_test.real (or numpy.abs(y_test)) as floats"),
    # Python objects or records in any member: the loader reads no such file (the review)
    ({"y": np.arange(20) % 2, "x_test": np.array([[{}]] * 4, dtype=object),
      "y_test": np.arange(4) % 2},
     ": not a readable .npz file (member 'x_test.npy' holds Python objects or records, not "
     "numbers); save its arrays as numbers (e.g. x.astype('float32')) with numpy.savez"),
])
def test_validate_says_an_npz_name_or_layout_train_refuses_at_data_path(tmp_path, arrays, said):
    write_npz(tmp_path / "d.npz", x=np.zeros((20, 3)), **arrays)
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz}\n"
                    "model: {layers: [{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    line = f"{spec}:1:28: error: data.path: {tmp_path / 'd.npz'}{said}\n"
    assert _validate_and_train(tmp_path, spec) == (1, line, 1, line)


@pytest.mark.parametrize("count, labels, fix", [
    # validate said 'd.npz (x): ...' where train says 'd.npz (x, y): ...'
    (20, 20, "for one feature a sample save x[:, None]"),
    # the data-file mutation fuzz: x [240] beside y [60] was told x[:, None], which made 240
    # samples of one feature for 60 labels
    (240, 60, "4 features a sample, flattened? save x.reshape(60, -1)"),
])
def test_features_of_one_axis_are_told_the_pair_and_how_to_make_rows(tmp_path, count, labels,
                                                                     fix):
    write_npz(tmp_path / "d.npz", x=np.arange(float(count)), y=np.arange(labels) % 2)
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz}\n"
                    f"model: {{input_shape: [{count // labels}], layers: [{{type: dense, "
                    "units: 2}]}\ntrain: {epochs: 1}\n")
    line = (f"{spec}:1:28: error: data.path: {tmp_path / 'd.npz'} (x, y): features must be "
            f"[N, ...], one row per sample, got [{count}]; {fix}\n")
    assert _validate_and_train(tmp_path, spec) == (1, line, 1, line)
    write_npz(tmp_path / "d.npz", x=np.arange(float(count)).reshape(labels, -1),
              y=np.arange(labels) % 2)
    assert _validate_and_train(tmp_path, spec)[0] == 0  # the fix, followed


def test_one_held_out_sample_without_its_batch_axis_is_told_to_add_it(tmp_path):
    """The runtime follow-the-fix audit: x_test [4] beside y_test [1] and samples of 4 features
    was told x_test[:, None], which made 4 samples of 1 label; x_test[None] is one sample."""
    x_test = np.arange(4.0)
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz}\n"
                    "model: {input_shape: [4], layers: [{type: dense, units: 2}]}\n"
                    "train: {epochs: 1}\n")
    write_npz(tmp_path / "d.npz", x=np.zeros((20, 4)), y=np.arange(20) % 2, x_test=x_test,
              y_test=np.array([1]))
    line = (f"{spec}:1:28: error: data.path: {tmp_path / 'd.npz'} (x_test, y_test): features "
            "must be [N, ...], one row per sample, got [4]; for one sample save x_test[None]\n")
    assert _validate_and_train(tmp_path, spec) == (1, line, 1, line)
    write_npz(tmp_path / "d.npz", x=np.zeros((20, 4)), y=np.arange(20) % 2, x_test=x_test[None],
              y_test=np.array([1]))
    assert _validate_and_train(tmp_path, spec)[0] == 0


def test_images_of_three_channels_last_against_input_shape_are_told_to_move_them(tmp_path):
    """The runtime follow-the-fix audit: x [N, 8, 8, 3] against input_shape [1, 8, 8] was told
    to use [8, 8, 3], which validate then warned of as 8 channels of 8 x 3."""
    write_npz(tmp_path / "d.npz", x=np.zeros((20, 8, 8, 3)), y=np.arange(20) % 2)
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz}\nmodel:\n  input_shape: [1, 8, 8]\n"
                    "  layers: [{type: flatten}, {type: dense, units: 2}]\ntrain: {epochs: 1}\n")
    line = (f"{spec}:3:16: error: model.input_shape: input_shape [1, 8, 8] does not match the "
            "samples of d.npz, [8, 8, 3], which look channels last (3 channels of 8 x 8): save "
            "numpy.moveaxis(x, -1, 1) (and x_test, x_val), and use input_shape [3, 8, 8], or "
            "leave it out\n")
    assert _validate_and_train(tmp_path, spec) == (1, line, 1, line)
    write_npz(tmp_path / "d.npz", x=np.zeros((20, 3, 8, 8)), y=np.arange(20) % 2)
    spec.write_text(spec.read_text().replace("[1, 8, 8]", "[3, 8, 8]"))
    assert _validate_and_train(tmp_path, spec)[0] == 0


@pytest.mark.parametrize("arrays", [
    {"y": np.arange(20) % 2, "x_val": np.zeros((5, 4)), "y_val": np.arange(5) % 2},  # [4]: x [3]
    {"y": np.arange(20) % 2, "x_val": np.zeros((4, 3))},  # x_val alone
    {"y": np.arange(20) % 2, "x_val": np.zeros(4), "y_val": np.arange(4) % 2},  # x_val [N]
    {"y": np.arange(20) % 2, "x_val": np.zeros((4, 3)), "masks_val": np.zeros((4, 3), int)},
])
def test_validate_passes_what_a_validation_split_leaves_unread(tmp_path, arrays):
    """The loader leaves x_val, y_val and masks_val unread under data.validation_split (with a
    warning), and so validate does not judge them."""
    from click.testing import CliRunner

    from nnrun.cli import main

    write_npz(tmp_path / "d.npz", x=np.zeros((20, 3)), **arrays)
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz, validation_split: 0.2}\n"
                    "model: {layers: [{type: dense, units: 2}]}\n")
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert (result.exit_code, result.output) == (0, f"{spec}: ok (8 parameters, 12 FLOPs per "
                                                    "sample)\n")


def test_data_list_says_a_data_path_is_relative_to_the_spec_file_or_the_current_directory():
    """It said 'relative to the spec', of which a dict spec has no file."""
    from nnrun.runtime.data.locations import where_stored

    assert where_stored("npz") == ("data.path, relative to the spec file (or the current "
                                   "directory)", "-")


def test_a_cache_file_that_is_no_regular_file_is_rebuilt_not_read(tmp_path):
    """A FIFO where mnist1d's cache goes hung train and data preview for ever (a hostile-input
    audit): the read blocked on it. Like the IDX cache's, it is now passed over."""
    import threading

    from nnrun.runtime.data.sources import read_npz_cache

    fifo = tmp_path / "mnist1d-default.npz"
    os.mkfifo(fifo)
    found = []
    reader = threading.Thread(target=lambda: found.append(read_npz_cache(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the test's own thread before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert found == [None]


def _limit_notices(tmp_path, y, limit: int) -> list[str]:
    """What loading an npz of labels `y` under data.limit says (each notice after its file)."""
    from nnrun.notices import collected

    np.savez(tmp_path / "d.npz", x=np.zeros((len(y), 2)), y=y)
    with collected() as notices:
        load("npz", tmp_path, path="d.npz", limit=limit)
    return [message.split(": ", 1)[1] for _, message in notices]


def test_a_limit_that_keeps_a_sorted_files_first_classes_only_is_warned(tmp_path):
    """The newcomer audit: data.limit 90 of a file sorted by label trained on class 0 alone,
    without a word."""
    sorted_labels = np.repeat([0, 1, 2], 100)
    assert _limit_notices(tmp_path, sorted_labels, 90) == [
        "data.limit 90 keeps the first 90 samples, which hold no sample of classes 1, 2 (the "
        "file is sorted by label): shuffle its samples, or raise data.limit"]
    assert not _limit_notices(tmp_path, sorted_labels, 250)
    # the second review: labels in no order, a small limit that misses a class by chance
    assert _limit_notices(tmp_path, np.tile([1, 0, 1, 2], 75), 2) == [
        "data.limit 2 keeps the first 2 samples, which hold no sample of class 2; 2 samples "
        "cannot hold the 3 classes: raise data.limit"]
    # the runtime follow-the-fix audit: labels cycling 0, 1, 2 were called sorted, shuffling
    # advised, where no order puts 3 classes in 2 samples
    assert _limit_notices(tmp_path, np.tile([0, 1, 2], 100), 2) == [
        "data.limit 2 keeps the first 2 samples, which hold no sample of class 2; 2 samples "
        "cannot hold the 3 classes: raise data.limit"]
    assert not _limit_notices(tmp_path, np.tile([0, 1, 2], 100), 3)  # in no order: no sorting


def test_a_limit_beyond_the_samples_is_warned(tmp_path):
    """The training fuzz: data.limit above the training samples was taken without a word."""
    assert _limit_notices(tmp_path, np.tile([0, 1, 2], 100), 1000) == [
        "data.limit 1,000 is more than the 300 training samples the data holds: every one is "
        "used; lower data.limit, or remove it"]
    assert not _limit_notices(tmp_path, np.tile([0, 1, 2], 100), 300)
    assert "more than the 1 training sample the data holds" in _limit_notices(
        tmp_path, np.array([0]), 5)[0]


def test_a_limit_beyond_a_named_datasets_samples_is_validates_warning_said_once(tmp_path):
    """The consistency audit: validate knew xor's 160 training samples (it warned of the
    batch size against them) but only train warned of the limit; train says it once."""
    from invoking import invoke

    spec = tmp_path / "xor.yaml"
    spec.write_text("data: {dataset: xor, limit: 5000}\nmodel: {input_shape: [2], layers: "
                    "[{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    expected = (f"{spec}:1:29: warning: data.limit: data.limit 5,000 is more than the 160 "
                "training samples (200 less 40 for the test split): every one is used; lower "
                "data.limit, or remove it")
    assert invoke("validate", spec).stderr.splitlines() == [expected]
    trained = invoke("train", spec, "--out", tmp_path / "run")
    assert trained.stderr.count("data.limit 5,000 is more than") == 1, trained.stderr


def test_held_out_arrays_misnamed_are_each_given_a_name_once():
    """The docs walk: X_test and test_x were both told to become x_test."""
    from nnrun.compiler.datasets import misnamed_split_arrays

    assert misnamed_split_arrays(["x", "y", "X_test", "Y_test", "test_x", "x_valid", "y_valid",
                                  "x_testing"], "y") == {
        "X_test": "x_test", "Y_test": "y_test", "x_valid": "x_val", "y_valid": "y_val"}
    assert misnamed_split_arrays(["x", "masks", "masks_valid", "X_VAL"], "masks") == {
        "masks_valid": "masks_val", "X_VAL": "x_val"}
    # other code's names for samples and labels (the newcomer audit's x_testing, test_labels)
    assert misnamed_split_arrays(["x", "y", "x_testing", "test_labels", "val-targets",
                                  "features.dev", "x_train", "test"], "y") == {
        "x_testing": "x_test", "test_labels": "y_test", "val-targets": "y_val",
        "features.dev": "x_val"}
