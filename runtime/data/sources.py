"""One loader per dataset name. Each returns raw arrays; splits.py does the rest.

Generated datasets (xor, spirals, blobs) use a fixed generator seed, not the spec's seed, so
that runs with different seeds train on the same data and differ only in their own randomness.
They and digits keep 20% of their samples as a test split.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nnrun.compiler.datasets import (CSV_ENCODING, DATASETS, HELD_OUT_SPLITS, TEST_FRACTION,
                                     closes_quote, csv_columns, csv_header_line, csv_text,
                                     csv_values, feature_layout_problem, generated_bytes,
                                     generator_hint, header_row_problem, held_out,
                                     held_out_pairs, is_number, kernel_file,
                                     labels_dtype_problem, labels_name, misnamed_split_arrays,
                                     no_training_samples, paths_relative_to, unread_arrays,
                                     unreadable_csv, unreadable_npz, user_path, why_not_looked_at,
                                     why_unreadable)
from nnrun.compiler.frontend import npz_header_problem, npz_samples_problem
from nnrun.compiler.tables import byte_size
from nnrun.notices import inform, warn

from ..archives import CACHE_DAMAGE, ArrayHeader, DamagedFile, npz_headers, read_npz
from ..files import remove_stale_temporaries
from ..memory import available_memory
from .errors import DataError
from .idx import cache_path, read_cached, read_idx, write_cached
from .locations import (
    IDX_FILES,
    cache_dir,
    find_idx_file,
    library_caches_in_ours,
    mnist1d_cache_file,
    search_dirs,
    write_cache_file,
)
from .splits import first_non_finite_sample

GENERATOR_SEED = 0


@dataclass
class RawData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int | None
    task: str = "classification"
    x_val: np.ndarray | None = None  # an npz's own validation split (x_val, y_val)
    y_val: np.ndarray | None = None


def option(data_spec: Any, name: str, default: Any = None) -> Any:
    value = getattr(data_spec, name, None)
    return default if value is None else value


# --- checks shared by every loader ------------------------------------------------------------


def check_feature_layout(shape: tuple[int, ...], dtype: np.dtype, where: str,
                         array: str = "x", samples: int | None = None) -> None:
    """What a header tells: numbers, one row per sample, no empty sample. `array`: the npz
    array that holds them; `samples`: how many labels go with them."""
    problem = feature_layout_problem(shape, dtype, where, array, samples=samples)
    if problem:
        raise DataError(problem)


def check_features(x: np.ndarray, where: str, samples: int | None = None) -> np.ndarray:
    check_feature_layout(x.shape, x.dtype, where, samples=samples)
    if (sample := first_non_finite_sample(x)) is not None:
        raise DataError(f"{where}: features contain NaN or inf (first at sample {sample}); "
                        "replace those values or leave those samples out")
    return x


def check_labels(y: np.ndarray, where: str, num_classes: int | None = None,
                 ignore_index: int | None = None) -> np.ndarray:
    """Class labels >= 0, or equal to the loss's ignore_index (-100, say, as in PyTorch)."""
    if problem := labels_dtype_problem(y.dtype, y.shape[:1], where):
        raise DataError(problem)
    labels = class_indices(y, where, "labels")
    negative = labels < 0
    if ignore_index is not None:
        negative &= labels != ignore_index
    if negative.any():
        sample = int(np.argmax(negative))
        raise DataError(f"{where}: labels must be >= 0, found {labels[sample]} at sample "
                        f"{sample}{_negative_labels_hint(y, labels[negative], num_classes)}")
    if num_classes is not None and len(labels) and labels.max() >= num_classes:
        sample = int(np.argmax(labels))
        raise DataError(
            f"{where}: labels must be < {num_classes}, found {labels[sample]} at sample {sample}"
        )
    return labels


def _negative_labels_hint(y: np.ndarray, negatives: np.ndarray, num_classes) -> str:
    """For a user's file: one negative value throughout may mark samples to leave out (as
    PyTorch's -100); integers of many values may be regression targets."""
    if num_classes is not None:  # a named dataset's file: damaged, no advice
        return ""
    regression = ("; for regression targets save them as floats (y.astype(float)), with loss: "
                  "mse" if y.dtype.kind in "iu" else "")
    if set(np.unique(y).tolist()) == {-1, 1}:  # the two classes as a perceptron writes them
        return ("; labels -1 and +1 are two classes: save them as 0 and 1, (y > 0).astype(int)"
                + regression)
    marker = np.unique(negatives)
    hint = (f"; if {int(marker[0])} marks samples to leave out of the loss, set "
            f"loss.ignore_index: {int(marker[0])} (a field of cross_entropy and "
            "binary_cross_entropy)" if len(marker) == 1 else "")
    return hint + regression


def class_indices(y: np.ndarray, where: str, what: str) -> np.ndarray:
    """y as int64, refusing first the floats the cast would garble: NaN, fractions, and whole
    numbers past int64 (1e20 would become -2**63, with a NumPy warning, and then be reported
    as a negative label)."""
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        usable = whole & (np.abs(y.astype(np.float64)) < 2.0**63)  # float16 cannot hold 2**63
        if not usable.all():
            index = np.unravel_index(np.argmin(usable), y.shape)
            problem = "too large for a class index" if whole[index] else "not a whole number"
            raise DataError(f"{where}: {what} must be class indices 0, 1, 2, ...; found "
                            f"{float(y[index])} at sample {index[0]} ({problem})")
    if y.dtype == np.uint64 and y.size and y.max() >= 2**63:  # would wrap to negative int64
        index = np.unravel_index(np.argmax(y), y.shape)
        raise DataError(f"{where}: {what} must be class indices 0, 1, 2, ...; found "
                        f"{int(y[index])} at sample {index[0]} (too large for a class index)")
    return y.astype(np.int64)


def check_targets(y: np.ndarray, where: str,
                  ignore_index: int | None = None) -> tuple[np.ndarray, str]:
    """y [N] of whole numbers >= 0 (or the loss's ignore_index) holds class labels; any other
    float y ([N] or [N, k]) holds regression targets. Whether they fit the loss is checked with
    the model (targets.py)."""
    if y.ndim == 0:
        raise DataError(f"{where}: labels must be an array [N], got a single value")
    if problem := labels_dtype_problem(y.dtype, y.shape, where):
        raise DataError(problem)  # before are_class_labels compares them with numbers
    if (y.ndim >= 2 and y.dtype.kind in "biu"
            or y.ndim == 3 and are_class_labels(y, ignore_index)):
        return check_label_maps(y, where), "segmentation"  # float [N, H, W] of 0, 1, 2...
    if y.ndim == 1 and (y.dtype.kind != "f" or are_class_labels(y, ignore_index)):
        return check_labels(y, where, ignore_index=ignore_index), "classification"
    if y.dtype.kind != "f":
        raise DataError(f"{where}: labels must be [N] (or float targets [N, k]), got {y.shape}")
    if (sample := first_non_finite_sample(y)) is not None:
        raise DataError(f"{where}: targets contain NaN or inf (first at sample {sample}); "
                        "replace those values or leave those samples out")
    return y, "regression"


def check_label_maps(y: np.ndarray, where: str) -> np.ndarray:
    """Label maps [N, H, W] (or [N, L]): one whole-number class per position. Their range is
    checked against the model (data_fit.py), where ignore_index is known."""
    if problem := labels_dtype_problem(y.dtype, y.shape, where, "masks"):
        raise DataError(problem)
    return class_indices(y, where, "label maps")


def are_class_labels(y: np.ndarray, ignore_index: int | None = None) -> bool:
    counted = y >= 0 if ignore_index is None else (y >= 0) | (y == ignore_index)
    return bool((np.isfinite(y) & (y == np.round(y)) & counted).all())


def check_lengths(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} samples of features but {len(y)} labels")


def classes_of(*label_arrays: np.ndarray | None) -> int:
    present = [labels for labels in label_arrays if labels is not None and len(labels)]
    # max(..., 0): labels that are all the (negative) ignore_index, refused in data_fit.py
    return max(int(max(labels.max() for labels in present)) + 1, 0) if present else 0


# --- built-in and generated ------------------------------------------------------------------


def import_extra(dataset: str):
    """Generators of heavier datasets are an extra, kept out of the light core install."""
    module, package = DATASETS[dataset].generator
    try:
        return importlib.import_module(module)
    # ImportError, or what a build for another NumPy raises (ValueError: dtype size changed)
    except Exception as error:  # noqa: BLE001
        missing = getattr(error, "name", None)  # the module not found, where one was not
        if missing and (module == missing or module.startswith(missing + ".")):
            raise DataError(f"{dataset}: {generator_hint(package)}") from None
        # installed, and broken: a build for another NumPy, or a library it lacks
        raise DataError(f"{dataset}: generating it needs the {package} package, installed here "
                        f"but failing to import ({error}); upgrade it: pip install -U "
                        f"{package}") from None


def generated_count(name: str, data_spec: Any) -> int:
    """data.n_samples, refused before generating when the samples would not fit in memory."""
    count = option(data_spec, "n_samples", DATASETS[name].default_samples)
    needed, arithmetic = generated_bytes(name, count)
    available, source = available_memory()
    if needed > available:
        raise DataError(f"{name}: data.n_samples {count:,} needs about {byte_size(needed)} "
                        f"({arithmetic}), over the {byte_size(available)} available "
                        f"({source}); lower data.n_samples")
    return count


def hold_out_test(name: str, x: np.ndarray, y: np.ndarray) -> RawData:
    """The samples are already shuffled, so the first 20% make the test split."""
    test_size = held_out(len(y), TEST_FRACTION)
    if too_few := no_training_samples(len(y)):
        raise DataError(f"{name}: {too_few}")
    info = DATASETS[name]
    return RawData(
        x[test_size:], y[test_size:], x[:test_size], y[:test_size], info.num_classes, info.task
    )


DIGITS_FILE = Path(__file__).with_name("digits.npz")


def load_digits(data_spec: Any, spec_dir: Path) -> RawData:
    # scikit-learn's 1,797 8x8 digits (raw 0..16; `normalize` rescales), already split 80/20
    # stratified (train_test_split, random_state 0) and shipped in the package (47 KB), so the
    # core install needs neither scikit-learn nor scipy. tests/data checks it against sklearn.
    with np.load(DIGITS_FILE, allow_pickle=False) as archive:
        x_train, y_train, x_test, y_test = (archive[key] for key in
                                            ("x_train", "y_train", "x_test", "y_test"))
    return RawData(x_train[:, None].astype(np.float64), y_train.astype(np.int64),
                   x_test[:, None].astype(np.float64), y_test.astype(np.int64), 10)


def load_xor(data_spec: Any, spec_dir: Path) -> RawData:
    count, noise = generated_count("xor", data_spec), option(data_spec, "noise", 0.1)
    generator = np.random.default_rng(GENERATOR_SEED)
    corners = generator.permutation(np.arange(count) % 4)  # balanced corners, shuffled
    bits = np.stack([corners // 2, corners % 2], axis=1)
    x = bits + noise * generator.standard_normal((count, 2))
    return hold_out_test("xor", x, (bits[:, 0] ^ bits[:, 1]).astype(np.int64))


def load_spirals(data_spec: Any, spec_dir: Path) -> RawData:
    count, noise = generated_count("spirals", data_spec), option(data_spec, "noise", 0.2)
    generator = np.random.default_rng(GENERATOR_SEED)
    y = generator.permutation(np.arange(count) % 2).astype(np.int64)
    radius = generator.uniform(0.05, 1.0, count)
    # One and a half turns per arm; the second arm is the first rotated by half a turn.
    angle = 3 * np.pi * radius + np.pi * y + noise * generator.standard_normal(count)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return hold_out_test("spirals", x, y)


def load_blobs(data_spec: Any, spec_dir: Path) -> RawData:
    make_blobs = import_extra("blobs").make_blobs

    count, noise = generated_count("blobs", data_spec), option(data_spec, "noise", 1.0)
    x, y = make_blobs(
        n_samples=count, centers=3, n_features=2, cluster_std=noise, random_state=GENERATOR_SEED
    )
    return hold_out_test("blobs", x, y.astype(np.int64))


SHAPES_CANVAS = 32


def load_shapes(data_spec: Any, spec_dir: Path) -> RawData:
    """Gray canvases with 1-3 shapes of random size, place and brightness (later ones cover
    earlier ones), plus gaussian noise; the label map gives each pixel its shape's class."""
    count, noise = generated_count("shapes", data_spec), option(data_spec, "noise", 0.1)
    generator = np.random.default_rng(GENERATOR_SEED)
    rows, columns = np.mgrid[:SHAPES_CANVAS, :SHAPES_CANVAS]
    x = np.zeros((count, 1, SHAPES_CANVAS, SHAPES_CANVAS))
    y = np.zeros((count, SHAPES_CANVAS, SHAPES_CANVAS), dtype=np.int64)
    for image, labels in zip(x[:, 0], y):
        for _ in range(generator.integers(1, 4)):
            kind, radius = generator.integers(1, 4), generator.integers(4, 9)
            top, left = generator.integers(radius, SHAPES_CANVAS - radius, size=2)
            inside = SHAPE_MASKS[kind](rows - top, columns - left, radius)
            image[inside] = generator.uniform(0.4, 1.0)
            labels[inside] = kind
    x += noise * generator.standard_normal(x.shape)
    return hold_out_test("shapes", x, y)


SHAPE_MASKS = {  # class -> pixels of a shape of `radius` centred at (0, 0)
    1: lambda dy, dx, r: (np.abs(dy) < r) & (np.abs(dx) < r),  # square
    2: lambda dy, dx, r: dy**2 + dx**2 < r**2,  # disc
    3: lambda dy, dx, r: (np.abs(dy) < r) & (2 * np.abs(dx) <= dy + r),  # triangle, apex up
}


def load_mnist1d(data_spec: Any, spec_dir: Path) -> RawData:
    path = mnist1d_cache_file()
    arrays = read_npz_cache(path)
    if arrays is None:
        arrays = generate_mnist1d()
        write_cache_file(path, lambda handle: np.savez(handle, **arrays))
    return RawData(
        arrays["x"][:, None], arrays["y"].astype(np.int64),
        arrays["x_test"][:, None], arrays["y_test"].astype(np.int64), 10,
    )


def generate_mnist1d() -> dict[str, np.ndarray]:
    # mnist1d imports matplotlib, which writes its configuration and font list in HOME
    with library_caches_in_ours():
        generator = import_extra("mnist1d")
    get_dataset_args, make_dataset = generator.get_dataset_args, generator.make_dataset

    # make_dataset reseeds the global `random` and `np.random`; put them back afterwards.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        generated = make_dataset(get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return {key: np.asarray(generated[key]) for key in ("x", "y", "x_test", "y_test")}


def read_npz_cache(path: Path) -> dict[str, np.ndarray] | None:
    remove_stale_temporaries(path)  # of killed writes of it: the cache is not written again
    if not path.is_file():  # absent, or no regular file (a FIFO would block the read)
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in ("x", "y", "x_test", "y_test")}
    except CACHE_DAMAGE:  # rebuilt
        return None


# --- IDX: mnist and fashion_mnist ------------------------------------------------------------


IMPLICIT_FETCH_TIMEOUT = 30.0  # seconds per request of a download that `train` starts itself
_FETCH = {"allowed": False}


@contextmanager
def missing_files_fetched():
    """Inside, mnist and fashion_mnist files found nowhere are downloaded into the cache
    (DESIGN.md section 8: `nnrun data fetch`, or the first `train`, fetches them); outside,
    their absence is an error that says how to get them."""
    saved = _FETCH["allowed"]
    _FETCH["allowed"] = True
    try:
        yield
    finally:
        _FETCH["allowed"] = saved


def idx_directory(name: str, data_spec: Any, spec_dir: Path) -> Path:
    """The directory that holds the four IDX files; downloaded (missing_files_fetched) never
    into data.path or NNRUN_DATA_DIR, which are the user's, but into the cache."""
    explicit = option(data_spec, "path")
    candidates = search_dirs(name, explicit, spec_dir)
    for directory in candidates:
        if all(find_idx_file(directory, base) for base in IDX_FILES.values()):
            return directory
    partial = [d for d in candidates if any(find_idx_file(d, b) for b in IDX_FILES.values())]
    directory = (partial or candidates)[0]
    missing = next(base for base in IDX_FILES.values() if not find_idx_file(directory, base))
    places = " or ".join(str(candidate) for candidate in ([directory] if partial else candidates))
    if explicit and directory.exists() and not directory.is_dir():
        raise DataError(f"{name}: {directory} is not a directory; data.path of {name} names the "
                        "directory that holds its four IDX files")
    odd = next((path for path in (directory / f"{missing}.gz", directory / missing)
                if os.path.lexists(path)), None)  # a directory, FIFO, device or broken link
    if odd is not None:
        what = ("a file of the kernel's (/proc, /sys)" if kernel_file(odd)
                else "not a regular file")
        raise DataError(f"{name}: {odd} is {what}; put the IDX file itself there")
    if explicit and all(find_idx_file(directory / name, base) for base in IDX_FILES.values()):
        # NNRUN_DATA_DIR's layout: the directory above the dataset's own
        raise DataError(f"{name}: {missing}(.gz) not found in {directory} (data.path), but the "
                        f"four IDX files are in {directory / name}: set data.path to "
                        f"{Path(explicit) / name}")
    if explicit:
        raise DataError(f"{name}: {missing}(.gz) not found in {directory} (data.path); put the "
                        f"four IDX files there, e.g. `nnrun data fetch {name} --dest {directory}`")
    if _FETCH["allowed"]:
        return _fetched(name, f"{missing}(.gz) not found in {places}")
    raise DataError(f"{name}: {missing}(.gz) not found in {places}; run `nnrun data fetch "
                    f"{name}` or put the four IDX files there (or set NNRUN_DATA_DIR)")


def _fetched(name: str, not_found: str) -> Path:
    # pooch and requests: only when needed
    from .fetch import FetchFailed, UnwritableDestination, fetch_dataset

    destination = cache_dir(name)
    inform(f"{name}: {not_found}; downloading it into {destination}")
    try:
        return fetch_dataset(name, destination, timeout=IMPLICIT_FETCH_TIMEOUT, report=inform)
    except UnwritableDestination as error:
        raise DataError(f"{name}: {not_found}, and the download cannot go to the cache "
                        f"({error.reason}); set NNRUN_CACHE_DIR to a writable directory, or "
                        f"put the four IDX files in $NNRUN_DATA_DIR/{name}") from None
    except FetchFailed as error:
        why = error.problems[-1] if error.problems else "no mirror"
        raise DataError(f"{name}: {not_found}, and the download failed ({why}); put the four "
                        f"IDX files in {destination} (or in $NNRUN_DATA_DIR/{name}), or run "
                        f"`nnrun data fetch {name}` where there is a network") from None


def read_idx_pair(name: str, directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = find_idx_file(directory, IDX_FILES[f"{split}_images"])
    labels_path = find_idx_file(directory, IDX_FILES[f"{split}_labels"])
    cached = {path: cache_path(path, name) for path in (images_path, labels_path)}
    try:
        return _checked_idx_pair(name, images_path, labels_path, cached)
    except DataError:
        if not any(path.is_file() for path in cached.values()):
            raise
        # A decoded copy edited or damaged in place fails the checks its source passes: the
        # source decides, and its copy is written again.
        return _checked_idx_pair(name, images_path, labels_path, cached, use_cache=False)


def _checked_idx_pair(name: str, images_path: Path, labels_path: Path, cached: dict,
                      use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    sample_shape = DATASETS[name].input_shape[1:]
    images = read_cached(cached[images_path], images_path) if use_cache else None
    decoded = {}
    if images is None or images.shape[1:] != sample_shape:
        images = decoded[images_path] = read_idx(images_path, 3, sample_shape)
    check_features(images, str(images_path))  # float IDX types (0x0D, 0x0E) can hold NaN
    raw_labels = read_cached(cached[labels_path], labels_path) if use_cache else None
    if raw_labels is None or raw_labels.ndim != 1:
        raw_labels = decoded[labels_path] = read_idx(labels_path, expected_ndim=1)
    labels = check_labels(raw_labels, str(labels_path), DATASETS[name].num_classes)
    check_lengths(images, labels, f"{images_path} and {labels_path.name}")
    for path, array in decoded.items():  # only a pair that passed every check is worth a cache
        write_cached(cached[path], array)
    return images[:, None], labels


def load_idx_dataset(name: str) -> Callable[[Any, Path], RawData]:
    def load(data_spec: Any, spec_dir: Path) -> RawData:
        directory = idx_directory(name, data_spec, spec_dir)
        x_train, y_train = read_idx_pair(name, directory, "train")
        x_test, y_test = read_idx_pair(name, directory, "test")
        return RawData(x_train, y_train, x_test, y_test, DATASETS[name].num_classes)

    return load


# --- user files: npz and csv -----------------------------------------------------------------


def user_file(name: str, data_spec: Any, spec_dir: Path) -> Path:
    path = option(data_spec, "path")
    if not path:
        raise DataError(f"{name}: data.path is required (a file, relative to "
                        f"{paths_relative_to(spec_dir)})")
    full_path = spec_dir / user_path(path)
    unseen = why_not_looked_at(full_path)
    if unseen:  # Path.is_dir raises on these (a directory on the way this user cannot search)
        raise DataError(f"{full_path}: {unseen} (data.path names the .{name} file)")
    if full_path.is_dir():
        raise DataError(f"{name}: {full_path} is a directory; data.path must name a .{name} file")
    if full_path.exists() and not full_path.is_file():
        raise DataError(f"{name}: {full_path} is not a regular file (a device, pipe or socket); "
                        f"data.path must name a .{name} file")
    if kernel_file(full_path):
        raise DataError(f"{name}: {full_path} is a file of the kernel's (/proc, /sys), not a "
                        f"data file; data.path must name a .{name} file")
    if not full_path.is_file():
        raise DataError(f"{full_path}: not found (data.path, relative to "
                        f"{paths_relative_to(spec_dir)}, names the .{name} file)")
    return full_path


def load_npz(data_spec: Any, spec_dir: Path, ignore_index: int | None = None,
             regression: bool = False) -> RawData:
    path = user_file("npz", data_spec, spec_dir)
    # data.validation_split holds out the validation samples from x: x_val is not read then,
    # as before nnrun read it (runs of such files evaluate and resume alike)
    carved = bool(option(data_spec, "validation_split", 0.0))
    arrays, labels = read_npz_dataset(path, option(data_spec, "limit"),
                                      ("test",) if carved else HELD_OUT_SPLITS)
    maps = labels == "masks"
    x_train, y_train, task = npz_pair(arrays["x"], arrays[labels], f"{path} (x, {labels})", maps,
                                      ignore_index)
    if (task in ("segmentation", "classification") and not maps and regression
            and _real_targets_held_out(arrays, labels, y_train)):
        y_train, task = y_train.astype(np.float64), "regression"
    held = {}
    for features, targets in held_out_pairs(labels):
        if features in arrays:
            held[features] = _held_out_pair(path, arrays, (features, targets), labels,
                                            (y_train, task), maps, ignore_index)
    x_test, y_test = held.get("x_test", (None, None))
    x_val, y_val = held.get("x_val", (None, None))
    classes = classes_of(y_train, y_test, y_val) if task == "classification" else None
    return RawData(x_train, y_train, x_test, y_test, classes, task, x_val, y_val)


def _held_out_pair(path: Path, arrays: dict, names: tuple[str, str], labels: str, train: tuple,
                   maps: bool, ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A held-out split's samples and targets, alike to the training split's (`train`: its
    targets and task; the samples' shapes were checked from the headers)."""
    (features, targets), (y_train, task) = names, train
    where = f"{path} ({features}, {targets})"
    held = arrays[targets]
    if task == "regression" and not maps and held.dtype.kind in "iu":
        held = held.astype(np.float64)  # whole numbers beside y's values, negative ones too
    x, y, held_task = npz_pair(arrays[features], held, where, maps, ignore_index)
    if task == "regression" and (held_task == "segmentation" and not maps
                                 or held_task != task and held.dtype.kind in "fiu"):
        y, held_task = held.astype(np.float64, copy=False), task  # whole numbers
    if task == "classification" and held_task == "segmentation" and y.shape[1:] == (1,):
        raise DataError(column_message(where, targets))  # (y's [N, 1]: data_fit.py says)
    _check_held_out_targets(where, labels, y_train, task, y, held_task, targets)
    return x, y


def _real_targets_held_out(arrays: dict, labels: str, y_train: np.ndarray) -> bool:
    """Whether a held-out split holds real-valued targets of y's shape a sample: under a
    regression loss y's whole numbers (read as class labels or label maps, as y alone cannot
    tell: data_fit.targets_for_model) are then values too (counts beside measurements)."""
    for features, targets in held_out_pairs(labels):
        y = arrays.get(targets) if features in arrays else None
        if y is not None and y.shape[1:] == y_train.shape[1:] and y.dtype.kind == "f":
            try:
                if check_targets(y, targets)[1] == "regression":
                    return True
            except DataError:  # said where the split is read
                pass
    return False


def _check_held_out_targets(where: str, labels: str, y_train, task: str, y_test,
                            test_task: str, test_labels: str = "y_test") -> None:
    """A held-out split's targets must be of the training split's kind and shape per
    sample."""
    alike = _alike_fix(labels, y_train, test_labels, y_test)
    if test_task != task:
        raise DataError(f"{where}: holds {_targets_kind(test_task, y_test)}, but {labels} holds "
                        f"{_targets_kind(task, y_train)}; {alike}")
    if y_test.shape[1:] != y_train.shape[1:]:
        raise DataError(f"{where}: targets are {list(y_test.shape[1:])} per sample, in {labels} "
                        f"{list(y_train.shape[1:])}; {alike}")


def _alike_fix(labels: str, y_train, test_labels: str, y_test) -> str:
    """How the splits' labels become alike, where one holds one label a sample and the other
    the same labels one-hot or in a column."""
    for name, one, other in ((labels, y_train, y_test), (test_labels, y_test, y_train)):
        if other.ndim == 1 and is_one_hot(one):
            return f"{name} is one-hot: save {name}.argmax(axis=1)"
        if other.ndim == 1 and one.ndim == 2 and one.shape[1] == 1:
            return f"{name} is a column: save {name}.ravel()"
    return "save both splits' targets alike"


def is_one_hot(y: np.ndarray) -> bool:
    """Labels saved one-hot, [N, k] of 0 and 1 with one 1 a row (Keras' to_categorical)."""
    return (y.ndim == 2 and y.shape[1] >= 2 and len(y) > 0 and bool(np.isin(y, (0, 1)).all())
            and bool((y.sum(axis=1) == 1).all()))


def _targets_kind(task: str, y: np.ndarray) -> str:
    if task == "segmentation" and y.ndim == 2:  # whole numbers [N, k]: the model tells which
        return "1-D label maps or several labels a sample"
    return {"classification": "class labels", "segmentation": "label maps",
            "regression": "real-valued targets"}[task]


def read_npz_dataset(path: Path, limit: int | None = None,
                     splits: tuple[str, ...] = HELD_OUT_SPLITS) -> tuple[dict[str, np.ndarray],
                                                                         str]:
    """x and its labels (y, or masks), and the optional held-out pairs of `splits` (test,
    val), checked from their headers before decompression; with the name of the labels.
    `limit`: data.limit, the training samples kept (and copied in the model's dtype)."""
    try:
        headers = npz_headers(path)
        every_name = list(headers)  # x_val among them, though left out: no name to save as
        left_out = unread_arrays(splits)
        if left_out & set(headers):
            warn(f"{path}: x_val and y_val are left out: data.validation_split holds out the "
                 "validation samples from x (a spec without it validates on x_val)")
        headers = {name: header for name, header in headers.items() if name not in left_out}
        shapes = {name: header.shape for name, header in headers.items()}
        _refuse(npz_header_problem(path, shapes,
                                   {name: header.dtype for name, header in headers.items()}))
        labels = labels_name(headers)
        misnamed = misnamed_split_arrays(every_name, labels)
        if misnamed:
            # x_val, saved so, would be left out too where a validation_split holds it out
            held_out = "" if all(meant.rsplit("_", 1)[-1] in splits
                                 for meant in misnamed.values()) else \
                " (x_val is read where data.validation_split is left out)"
            warn(f"{path}: {', '.join(misnamed)} {'is' if len(misnamed) == 1 else 'are'} not "
                 f"read: a held-out split is read from x_test and {labels}_test (x_val and "
                 f"{labels}_val); save them as {', '.join(misnamed.values())}{held_out}")
        check_npz_memory(path, headers, labels, limit)
        _refuse(npz_samples_problem(path, shapes))
        wanted = ("x", labels, *(name for pair in held_out_pairs(labels) for name in pair))
        return read_npz(path, {name: headers[name] for name in wanted if name in headers}), \
            labels
    except DamagedFile as error:
        raise DataError(unreadable_npz(path, str(error))) from None
    except OSError as error:  # permission, I/O: not the file's content
        raise DataError(f"{path}: {why_unreadable(error)}") from None


def _refuse(problem: str | None) -> None:
    if problem:
        raise DataError(problem)


def check_npz_memory(path: Path, headers: dict[str, ArrayHeader], labels: str,
                     limit: int | None = None) -> None:
    """The arrays to read (their names and layouts checked: npz_header_problem) and their
    copies must fit the memory available."""
    pairs = [(features, targets) for features, targets
             in [("x", labels), *held_out_pairs(labels)] if features in headers]
    names = [name for pair in pairs for name in pair]
    size = sum(headers[name].size_bytes for name in names)
    # The copies made next: integer labels as int64 class indices (all of them: data.limit
    # comes after), and in float32 at the least the training samples and float targets
    # data.limit keeps and the held-out splits'
    copies = sum(_kept(headers[features].shape, limit if features == "x" else None) * 4
                 + _label_copy_bytes(headers[targets], headers[features],
                                     limit if features == "x" else None)
                 for features, targets in pairs)
    available, source = available_memory()
    if size + copies > available:
        raise DataError(f"{path}: its arrays declare {byte_size(size)}, and their copies take "
                        f"{byte_size(copies)} more (samples and real-valued targets as float32, "
                        f"class labels as int64), over the {byte_size(available)} available "
                        f"({source}); the file is damaged or too big for this machine: save "
                        "fewer samples in it")


def _label_copy_bytes(labels: ArrayHeader, features: ArrayHeader, limit: int | None) -> int:
    """Class indices (int64) are made of every label before data.limit: integers, and floats
    laid out as labels, one a sample or a map without the samples' channel axis (whole
    numbers, as files from pandas hold them). Other floats are targets, copied as float32."""
    as_labels = labels.dtype.kind in "biu" or len(labels.shape) in (1, len(features.shape) - 1)
    if as_labels:
        return math.prod(labels.shape) * 8
    return _kept(labels.shape, limit) * 4 if labels.shape else 0


def _kept(shape: tuple[int, ...], limit: int | None) -> int:
    """The values of the samples of `shape` that the first `limit` keep (all without one)."""
    count = shape[0] if limit is None else min(limit, shape[0])
    return count * math.prod(shape[1:])


def column_message(where: str, labels: str = "y") -> str:
    """Integers [N, 1] where the model's outputs have no axis of 1 for maps of one position
    (`labels`: the array that holds them)."""
    return (f"{where}: the labels are a column, [N, 1]; one label per sample goes in "
            f"{labels} [N]: save {labels}.ravel() (or, for regression targets, floats)")


def npz_pair(x: np.ndarray, y: np.ndarray, where: str, maps: bool = False,
             ignore_index: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    features = check_features(x, where, len(y) if y.ndim else None)
    if maps and y.ndim < 2:
        raise DataError(f"{where}: masks must be label maps [N, H, W] (or [N, L]), got "
                        f"{list(y.shape)}; one label per sample goes in y")
    if maps:
        targets, task = check_label_maps(y, where), "segmentation"
    else:
        targets, task = check_targets(y, where, ignore_index)
    check_lengths(features, targets, where)
    return features, targets, task


def load_csv(data_spec: Any, spec_dir: Path, ignore_index: int | None = None,
             regression: bool = False) -> RawData:
    """`regression`: as load_npz's; one column holds no other split to read beside."""
    path = user_file("csv", data_spec, spec_dir)
    header = read_csv_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no data": reported below, one line
            with open(path, encoding=CSV_ENCODING) as handle:
                table = np.loadtxt(_without_blank_lines(handle), delimiter=",", skiprows=1,
                                   ndmin=2, dtype=np.float64, quotechar='"')
    except OSError as error:  # the header was read; the rest could not be (I/O, permission)
        raise DataError(f"{path}: {why_unreadable(error)}") from None
    except ValueError as error:
        said = str(error).split("; use `usecols`")[0].rstrip(".")  # an option nnrun lacks
        unread = (f"{said}; check the file's quotes: a value quoted with \" must close on its "
                  "own line")
        raise DataError(f"{path}: {csv_problem(path, header, unread)}") from None
    if len(table) == 0:
        raise DataError(f"{path}: no data rows after the header")
    if table.shape[1] != len(header):
        columns = f"rows have {table.shape[1]} columns, the header has {len(header)}"
        raise DataError(f"{path}: {csv_problem(path, header, columns)}")
    if (row := first_non_finite_sample(table)) is not None:
        column = int(np.flatnonzero(~np.isfinite(table[row]))[0])
        line, written = _line_of_row(path, row, column)
        value = table[row, column]
        too_large = written is not None and math.isinf(value) and any(map(str.isdigit, written))
        read = f" (read as {value}: beyond float64's range, about 1.8e308)" if too_large else ""
        written = value if written is None else written
        raise DataError(f"{path}: line {line}, column '{header[column]}': {written}{read}, "
                        "where a csv dataset holds finite numbers (no NaN or inf); replace it, "
                        "or leave that row out")
    label_column = header.index("label")
    x = check_features(np.delete(table, label_column, axis=1), str(path))
    y, task = check_targets(table[:, label_column], str(path), ignore_index)
    return RawData(x, y, None, None, classes_of(y) if task == "classification" else None, task)


def _line_of_row(path: Path, row: int, column: int) -> tuple[int, str | None]:
    """The line (from 1) of data row `row` (from 0) as load_csv reads the rows (after the
    header, blank and comment lines left out), and its value in `column` as written."""
    with open(path, encoding=CSV_ENCODING, errors="replace") as handle:
        rows = ((number, line) for number, line in enumerate(handle, start=1)
                if csv_text(line).strip())
        next(rows)  # the header's
        number, line = next(itertools.islice(rows, row, None))
    values = csv_values(line)[0]  # a quoted value over several lines: the number only
    return number, values[column].strip() if column < len(values) else None


def _without_blank_lines(lines):
    """Lines of spaces or tabs are blank lines, as empty ones are to np.loadtxt (which reads
    them as a row of one empty value); so are lines of a comment only, which its skiprows
    would count before the header."""
    return (line for line in lines if csv_text(line).strip())


def read_csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding=CSV_ENCODING) as handle:
            header = csv_columns(csv_header_line(handle))
    except OSError as error:
        raise DataError(f"{path}: {why_unreadable(error)}") from None
    except UnicodeDecodeError as error:
        raise DataError(unreadable_csv(path, str(error))) from None
    problem = header_row_problem(path, header)
    if problem:
        raise DataError(problem)
    return header


def csv_problem(path: Path, header: list[str], otherwise: str) -> str:
    """The first row that np.loadtxt cannot read, found again line by line (`otherwise` if
    none): its own message counts rows from 0 after the header, names no column, and for a
    short row suggests an option (usecols) that nnrun does not have."""
    with open(path, encoding=CSV_ENCODING, errors="replace") as handle:
        header_seen = False
        numbered = enumerate(handle, start=1)
        for number, line in numbered:
            values, unclosed = csv_values(line)  # as loadtxt: comments, quotes
            written = ",".join(values).strip()  # blank lines are no rows
            if header_seen and written:
                problem = (quote_problem(unclosed, header, numbered) if unclosed is not None
                           else row_problem(values, header))
                if problem:
                    return f"line {number}{problem}"
            header_seen = header_seen or bool(written)
    return otherwise


def quote_problem(index: int, header: list[str], later_lines) -> str:
    """The value at `index` whose quote its line does not close: np.loadtxt reads on through
    the next lines, to the closing quote or the end of the file, and reports a row it then
    miscounts or cannot convert, by its own count of rows (`later_lines`: the file's numbered
    lines after this one)."""
    closing = next((number for number, line in later_lines if closes_quote(line)), None)
    where = "is never closed" if closing is None else f"is closed only on line {closing}"
    column = f"column '{header[index]}'" if index < len(header) else f"value {index + 1}"
    return (f", {column}: its quote (\") {where}; check the file's quotes: a value quoted "
            "with \" must close on its own line")


def row_problem(values: list[str], header: list[str]) -> str | None:
    if len(values) != len(header):
        return (f" has {len(values)} values, the header has {len(header)} columns; give every "
                "row one value per column")
    for name, written in zip(header, values):
        value = _unquoted(written)
        if not value.strip() or value.strip().lower() in MISSING_VALUES:
            found = f"{value.strip()!r}, a missing value" if value.strip() else "empty"
            return (f", column '{name}': {found}; a csv dataset holds a number in every "
                    "column: fill in the missing values, or leave their rows out "
                    "(df.dropna())")
        if not is_number(value):
            spaced = ("; a quote opens a value only as its first character: remove the "
                      "spaces before it" if value.lstrip().startswith('"') else "")
            return (f", column '{name}': {value.strip()!r} is not a number; a csv dataset holds "
                    f"a number in every column (write categories as 0, 1, 2, ...){spaced}")
    return None


def _unquoted(value: str) -> str:
    """A value as np.loadtxt reads it: quoted where its first character is the quote."""
    if value.startswith('"'):
        closing = value.rfind('"')
        return value[1:closing].replace('""', '"') + value[closing + 1:] if closing else value
    return value


# How spreadsheets and pandas write a value that is missing (NaN and nan are numbers to NumPy,
# refused as such with the features' or targets' NaN check)
MISSING_VALUES = ("na", "n/a", "null", "none", "?", "-", "#n/a")


LOADERS: dict[str, Callable[[Any, Path], RawData]] = {
    "digits": load_digits,
    "mnist": load_idx_dataset("mnist"),
    "fashion_mnist": load_idx_dataset("fashion_mnist"),
    "mnist1d": load_mnist1d,
    "xor": load_xor,
    "spirals": load_spirals,
    "blobs": load_blobs,
    "shapes": load_shapes,
    "npz": load_npz,
    "csv": load_csv,
}


def load_raw(data_spec: Any, spec_dir: Path, ignore_index: int | None = None,
             regression: bool = False) -> RawData:
    """ignore_index: the loss's, a label a user's file may hold besides the classes;
    `regression`: whether the loss is mse, mae or huber (load_npz)."""
    name = getattr(data_spec, "dataset", None)
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)}")
    if DATASETS[name].user_file:
        return LOADERS[name](data_spec, spec_dir, ignore_index, regression)
    return LOADERS[name](data_spec, spec_dir)
