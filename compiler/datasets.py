"""Static facts about the datasets a spec may name.

The compiler validates `data:` and `model.input_shape` against this table without loading any
data, so this module imports neither numpy nor scikit-learn. Loading lives in
`nnrun.runtime.data`.
"""

from __future__ import annotations

import errno
import importlib.util
import itertools
import math
import os
import re
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .shapes import size_of

Task = Literal["classification", "binary", "segmentation"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, ...] | None  # per sample, channels first; None: known only on load
    num_classes: int | None  # None: known only on load (npz, csv)
    task: Task  # "binary": one 0/1 label, so either units 1 + binary_cross_entropy
    # or units 2 + cross_entropy fits
    has_test_split: bool
    needs_files: bool  # the files must be present (or fetched) before loading
    description: str
    # Per-sample label shape: () one label per sample, (H, W) a label map per image
    # ("segmentation").
    label_shape: tuple[int, ...] = ()
    # (module, package) that generates it, from the `datasets` extra; None: nnrun's own code
    generator: tuple[str, str] | None = None
    user_file: bool = False  # read from data.path, a file of the user's (npz, csv)
    sized: bool = False  # generated to data.n_samples, with data.noise
    default_samples: int | None = None  # sized: n_samples when the spec leaves it out
    train_samples: int | None = None  # a fixed training split's (None: known only on load)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits", (1, 8, 8), 10, "classification", True, False,
            "8x8 handwritten digits (scikit-learn's), shipped inside nnrun, 1797 images, "
            "fixed 80/20 split", train_samples=1437,
        ),
        DatasetInfo(
            "mnist", (1, 28, 28), 10, "classification", True, True,
            "28x28 handwritten digits, 60000 train / 10000 test, four IDX files",
            train_samples=60000,
        ),
        DatasetInfo(
            "fashion_mnist", (1, 28, 28), 10, "classification", True, True,
            "28x28 clothing images (Zalando), 60000 train / 10000 test, four IDX files",
            train_samples=60000,
        ),
        DatasetInfo(
            "mnist1d", (1, 40), 10, "classification", True, False,
            "1-D digit templates of length 40 from the mnist1d package, 4000 train / 1000 test",
            generator=("mnist1d.data", "mnist1d"), train_samples=4000,
        ),
        DatasetInfo(
            "xor", (2,), 2, "binary", True, False,
            "the four corners of the unit square with gaussian noise, label = x0 XOR x1",
            sized=True, default_samples=200,
        ),
        DatasetInfo(
            "spirals", (2,), 2, "classification", True, False,
            "two interleaved spirals in the plane",
            sized=True, default_samples=1000,
        ),
        DatasetInfo(
            "blobs", (2,), 3, "classification", True, False,
            "three gaussian blobs in the plane (scikit-learn make_blobs)",
            generator=("sklearn.datasets", "scikit-learn"), sized=True, default_samples=300,
        ),
        DatasetInfo(
            "shapes", (1, 32, 32), 4, "segmentation", True, False,
            "32x32 gray canvases with 1-3 squares, discs and triangles, and their label maps "
            "(0 background, 1 square, 2 disc, 3 triangle); generated, seeded",
            label_shape=(32, 32), sized=True, default_samples=2000,
        ),
        DatasetInfo(
            "npz", None, None, "classification", False, True,
            "arrays x, y (optional x_test, y_test; x_val, y_val) from an .npz file given by "
            "data.path; label maps for segmentation as integer y [N, H, W] or as masks "
            "(masks_test, masks_val)",
            user_file=True,
        ),
        DatasetInfo(
            "csv", None, None, "classification", False, True,
            "a CSV file given by data.path: a header row, a `label` column, the rest features",
            user_file=True,
        ),
    )
}


def largest_step_batch(spec) -> int:
    """The most samples a training step takes: train.batch_size, or fewer where the spec alone
    says the training split holds fewer, after the test and validation splits (a named
    dataset's split, a generated dataset's n_samples, data.limit): a batch size past them makes
    each epoch one step on all of them."""
    planned = planned_training_samples(spec.data)
    return min(spec.train.batch_size, planned) if planned else spec.train.batch_size


def samples_before_validation(data, in_file: int | None = None
                              ) -> tuple[int, str, str | None] | None:
    """(count, whose, the setting that raises it) of the training samples the spec alone fixes
    before the validation split: a generated dataset's n_samples less its test split, a named
    dataset's split, or what data.limit keeps; None where the data decides. `in_file`: a data
    file's samples, read from its header."""
    found = samples_the_data_holds(data)
    if found is None and in_file is not None:
        found = (in_file, f"in {data.path}", None)
    if data.limit is not None and (found is None or data.limit < found[0]):
        found = (data.limit, "that data.limit keeps", "data.limit")
    return found


def samples_the_data_holds(data) -> tuple[int, str, str | None] | None:
    """(count, whose, the setting that raises it) of the training samples of a named or
    generated dataset before data.limit and the validation split; None for files."""
    info = DATASETS.get(data.dataset)
    if data.dataset in SIZED_DATASETS:
        count = data.n_samples if data.n_samples is not None else info.default_samples
        test = held_out(count, TEST_FRACTION)
        return count - test, f"({count} less {test} for the test split)", "data.n_samples"
    if info is not None and info.train_samples is not None and not data.path:
        return info.train_samples, f"of {data.dataset}", None
    return None


def planned_training_samples(data, in_file: int | None = None) -> int | None:
    """The training samples the spec alone fixes (`in_file`: with a data file's count from its
    header), after the test and validation splits (None where the data decides): what a batch
    size is measured against before the data loads."""
    known = samples_before_validation(data, in_file) if data is not None else None
    if known is None:
        return None
    split = data.validation_split
    return known[0] - (held_out(known[0], split) if split else 0)


def lower_batch_fix(planned: int, asked: int, setting: str = "train.batch_size") -> str:
    """What lowers a training step's memory: its batch (`planned`: the one a step takes, the
    training samples where the `asked` train.batch_size is more), or the model."""
    if planned < asked:
        return (f"lower {setting} below {planned}, the training samples a step takes at most, "
                "or the model size")
    return f"lower {setting} or the model size"


def defaulted_dataset(data_spec) -> str:
    """What an error about a named dataset's samples or labels adds where the data section
    names none (a `dataset:` line deleted): it read the default, which was not meant."""
    if data_spec is None or "dataset" in data_spec.model_fields_set:
        return ""
    return (f" (data names no dataset, so the default, {data_spec.dataset}, is read; set "
            "data.dataset to the data meant)")


USER_FILE_DATASETS = tuple(name for name, info in DATASETS.items() if info.user_file)
SIZED_DATASETS = tuple(name for name, info in DATASETS.items() if info.sized)

# A generated dataset's first 20% are its test split (runtime/data/sources.hold_out_test).
TEST_FRACTION = 0.2


def held_out(count: int, fraction: float) -> int:
    """How many of `count` samples a split of `fraction` takes: one at least."""
    return max(1, round(count * fraction))


def no_training_samples(count: int) -> str | None:
    """What is wrong with a generated dataset of `count` samples, whose test split would leave
    none to train on (None when some are left)."""
    if held_out(count, TEST_FRACTION) < count:
        return None
    fewest = next(n for n in itertools.count(count + 1) if held_out(n, TEST_FRACTION) < n)
    return (f"n_samples {count} leaves no training samples: the test split takes the first "
            f"{TEST_FRACTION:.0%} of them, one at least; use {fewest} or more")


# A generator holds its samples in float64 with int64 labels, and while it draws them about as
# much again in temporaries; loading then adds the model-dtype copy and the splits' copies.
GENERATION_COPIES = 3


def generated_bytes(name: str, n_samples: int) -> tuple[int, str]:
    """About how much memory generating `n_samples` of dataset `name` takes, and the
    arithmetic as text for the error that refuses it."""
    info = DATASETS[name]
    per_sample = 8 * (size_of(info.input_shape or ()) + size_of(info.label_shape or ()))
    total = GENERATION_COPIES * per_sample * n_samples
    return total, f"{n_samples:,} samples x {per_sample:,} B x {GENERATION_COPIES} copies"


# UTF-8, with or without the byte-order mark that spreadsheets write first ("CSV UTF-8")
CSV_ENCODING = "utf-8-sig"


def user_path(text: str) -> Path:
    """A path as a user writes it, `~` and `~name` expanded where they name a home; a
    `~nouser/x.npz` is left as written (a file not found, not Python's RuntimeError)."""
    path = Path(text)
    if path.parts[:1] == ("~",):  # the user's own home, as home_directory finds it
        home = home_directory()
        return home.joinpath(*path.parts[1:]) if home is not None else path
    try:
        return path.expanduser()
    except RuntimeError:  # no such user
        return path


def paths_relative_to(directory: Path) -> str:
    """What a spec's relative paths (data.path, init_from) are read from, in words, given the
    directory they are read from (frontend.SourceSpec.directory). A spec of no file (a dict,
    a Spec, YAML text) reads them from the current directory, which SourceSpec gives as an
    absolute path; a spec file's directory is as its path was given (`.` for spec.yaml), so
    only one named by an absolute path in the current directory reads so too, as truly."""
    try:
        current = directory.is_absolute() and directory == Path.cwd()
    except OSError:  # the current directory was removed: a spec file's directory
        current = False
    return "the current directory" if current else "the spec file"


def home_directory() -> Path | None:
    """The user's home: HOME, else (HOME empty or unset) the password database's, else None.
    Path.home() gives / for an empty HOME."""
    import pwd

    home = os.environ.get("HOME")
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # a uid without an entry (a container's `-u 4242`)
        return None


def kernel_file(path: Path) -> bool:
    """A file of /proc or /sys: the kernel's state as text (/proc/self/environ holds the
    environment), never a dataset; reading it only to quote it in an error would leak it."""
    return Path(os.path.realpath(path)).parts[1:2] in (("proc",), ("sys",))


def csv_header_line(handle) -> str:
    """A csv dataset's header row: its first line with more than a comment (text after a `#`
    outside quotes, which may follow spaces there, as the csv module reads the names) or
    blanks, without its comment ("" for a file of none)."""
    lines = (",".join(csv_values(line, skip_spaces=True)[0]) for line in handle)
    return next((text for text in lines if text.strip()), "")


def csv_text(line: str) -> str:
    """A csv line without its comment (from a # outside quotes) and its line end."""
    return ",".join(csv_values(line)[0])


def csv_values(line: str, skip_spaces: bool = False) -> tuple[list[str], int | None]:
    """A csv row's values as np.loadtxt reads them (delimiter ',', quotechar '"', a comment
    from a # outside quotes), each as written, quotes kept; and the index of the value whose
    quote the line does not close (loadtxt reads on into the next lines), None if none.
    `skip_spaces`: a quote may follow spaces, as the csv module reads the header row."""
    line = line.rstrip("\r\n")
    values, start, position = [], 0, 0
    while True:
        while skip_spaces and line.startswith(" ", position):
            position += 1
        if line.startswith('"', position):
            quoted = _QUOTED_VALUE.match(line, position)
            if not quoted.group(1):
                return [*values, line[start:]], len(values)
            position = quoted.end()
        stop = _DELIMITER_OR_COMMENT.search(line, position)
        if stop is None or stop.group() == "#":
            return [*values, line[start:stop.start() if stop else len(line)]], None
        values.append(line[start:stop.start()])
        start = position = stop.end()


_DELIMITER_OR_COMMENT = re.compile(r"[,#]")


_CSV_LIMIT_LOCK = threading.Lock()


def csv_columns(header_line: str) -> list[str]:
    """The column names of a csv dataset's header row (names may be quoted, and a quoted name
    may hold a comma, as the csv module reads it)."""
    import csv

    # The line is in memory already: the csv module's limit on a field (131,072 characters, an
    # exception past it) guards nothing here. The limit is the process's: raised and put back
    # by one thread at a time.
    with _CSV_LIMIT_LOCK:
        limit = csv.field_size_limit(max(csv.field_size_limit(), len(header_line)))
        try:
            row = next(csv.reader([header_line.strip()], skipinitialspace=True), [""])
        finally:
            csv.field_size_limit(limit)
    names = [column.strip() for column in row] or [""]
    if csv_values(header_line.strip(), skip_spaces=True)[1] is not None:
        names[-1] = OpenQuotedName(names[-1])  # the csv module ends it quietly at the line's end
    return names


class OpenQuotedName(str):
    """The last name of a header row whose quote the row's line does not close (a name that
    spans lines, or a quote never closed): no_label_column and unnamed_column say so first."""


# A quoted value as np.loadtxt reads one (quotechar '"'): a quote opens only as a value's first
# character and "" inside is one quote. Group 1 is the closing quote, empty where the line ends
# first; what follows the closing quote, up to the comma, belongs to the value as written.
_QUOTED_VALUE = re.compile(r'"(?:[^"]|"")*("?)')


def closes_quote(line: str) -> bool:
    """Whether `line`, read inside a quoted value, holds the quote that closes it."""
    return re.match(r'(?:[^"]|"")*"(?!")', line) is not None


def _open_quote(path, header: list[str]) -> str | None:
    if not header or not isinstance(header[-1], OpenQuotedName):
        return None
    return (f"{path}: the header row's quote (\") before {_first_names(header[-1:])!r} is not "
            "closed on its line; a column name cannot span lines: close the quote where the "
            "name ends, or remove it")


def no_label_column(path, header: list[str]) -> str:
    open_quote = _open_quote(path, header)  # it hides the names after it
    if open_quote:
        return open_quote
    if header == [""]:  # no line but blanks and comments
        return f"{path}: empty file; expected a header row with a `label` column"
    separator = _other_separator(header)
    if separator:
        decimal = ", decimal=','" if _decimal_commas(path, separator) else ""
        return (f"{path}: its columns are separated by {separator!r}; a csv dataset separates "
                f"them by commas: save it so (pandas.read_csv(path, sep={separator!r}{decimal})"
                ".to_csv(path, index=False))")
    if all(is_number(name) for name in header):
        return (f"{path}: the first row holds numbers ({_first_names(header)}), not column "
                "names; begin the file with a header row that names the columns, the targets' "
                "`label`")
    close = [name for name in header if name.lower().strip("_ ") in ("label", "labels")]
    return (f"{path}: no `label` column in the header row ({_first_names(header)}); name the "
            f"targets' column `label`" + (f" (is it {_first_names(close[:1])!r}?)" if close
                                          else ""))


def _first_names(header: list[str], count: int = 6, width: int = 24) -> str:
    """A few of the header's names, each shortened: enough to recognise the file, and no
    more of a file that is no csv (`/proc/self/environ` named by a hostile spec) in a log."""
    names = [name if len(name) <= width else name[:width - 3] + "..." for name in header[:count]]
    return ", ".join(names) + (", ..." if len(header) > count else "")


def npz_arrays_problem(path, names) -> str | None:
    """What an npz dataset lacks of its arrays `x` and `y` (or `masks`), by the names it holds:
    Keras' x_train and y_train are named to save again as x and y."""
    names = set(names)
    if "x" in names and names & {"y", "masks"}:
        return None
    found = ", ".join(sorted(names)) or "nothing"
    return f"{path}: an npz dataset needs arrays 'x' and 'y' (found {found}){_arrays_meant(names)}"


# Names other code gives a dataset's samples and labels, by pairs.
_OTHER_PAIRS = [("images", "labels"), ("inputs", "targets"), ("features", "labels"),
                ("data", "labels"), ("data", "target"), ("inputs", "labels"), ("x", "labels"),
                ("features", "targets")]


def _arrays_meant(names: set[str]) -> str:
    """What to save as x and y: Keras' x_train and y_train, X and Y, images and labels; the
    samples beside masks."""
    by_lower = {name.lower(): name for name in names}
    if {"x_train", "y_train"} <= set(by_lower):
        x, y = by_lower["x_train"], by_lower["y_train"]
        return (f"; save {x} and {y} as x and y (and x_test, y_test): numpy.savez(path, "
                f"x={x}, y={y}, ...)")
    pair = next(((by_lower[a], by_lower[b]) for a, b in [("x", "y"), *_OTHER_PAIRS]
                 if a in by_lower and b in by_lower), None)
    if pair is not None:
        return (f"; save {pair[0]} as x and {pair[1]} as y: numpy.savez(path, x={pair[0]}, "
                f"y={pair[1]})")
    samples = next((by_lower[word] for word in _SAMPLE_WORDS if word in by_lower), None)
    if "masks" in names and samples is not None:
        return f"; save {samples} as x: numpy.savez(path, x={samples}, masks=masks)"
    return "; label maps may be named 'masks' instead of 'y'"


# Segmentation data may name its label maps [N, H, W] `masks` (and `masks_test`, `masks_val`)
# instead of y; integer y of [N, H, W] are label maps too. The held-out splits an npz may hold,
# each a pair of arrays named with the split (x_test with y_test or masks_test).
HELD_OUT_SPLITS = ("test", "val")


def held_out_pairs(labels: str) -> list[tuple[str, str]]:
    """The held-out splits' array names beside x and `labels` (y or masks)."""
    return [(f"x_{split}", f"{labels}_{split}") for split in HELD_OUT_SPLITS]


_SPLIT_WORDS = {"test": "test", "testing": "test", "val": "val", "valid": "val",
                "validation": "val", "dev": "val"}
# The samples' and the labels' names of other code (_OTHER_PAIRS), with nnrun's.
_SAMPLE_WORDS = tuple(dict.fromkeys(["x", *(samples for samples, _ in _OTHER_PAIRS)]))
_LABEL_WORDS = tuple(dict.fromkeys(["y", "label", *(labels for _, labels in _OTHER_PAIRS)]))
_ARRAY = "|".join([*_SAMPLE_WORDS, *_LABEL_WORDS, "masks?"])
_SPLIT = "|".join(sorted(_SPLIT_WORDS, key=len, reverse=True))
_SPLIT_ARRAY = re.compile(rf"({_ARRAY})[_.-]?({_SPLIT})|({_SPLIT})[_.-]?({_ARRAY})")


def misnamed_split_arrays(names, labels: str) -> dict[str, str]:
    """The arrays of an npz that look like a held-out split's under another name (X_test,
    test_x, x_valid, x_testing, test_labels), each with the name nnrun reads it by: left
    unread, a split would be missing without a word."""
    meant = {}
    for name in names:
        match = _SPLIT_ARRAY.fullmatch(name.lower())
        if match is None:
            continue
        array, split = match.group(1) or match.group(4), match.group(2) or match.group(3)
        array = ("x" if array in _SAMPLE_WORDS else labels if array in _LABEL_WORDS
                 else "masks")
        wanted = f"{array}_{_SPLIT_WORDS[split]}"
        if wanted != name and wanted not in names and wanted not in meant.values():
            meant[name] = wanted
    return meant


def unread_arrays(splits: tuple[str, ...]) -> set[str]:
    """The arrays of the held-out splits the data loader leaves unread (x_val and y_val, or
    masks_val, where data.validation_split holds out the validation samples from x)."""
    return {f"{array}_{split}" for split in HELD_OUT_SPLITS if split not in splits
            for array in ("x", "y", "masks")}


def labels_name(names) -> str:
    """The name of an npz's labels: masks where any split names them so, else y."""
    return "masks" if any(name in names for name in _label_names("masks")) else "y"


def labels_named_twice(path, names) -> str | None:
    """An npz that names its labels both y (of any split) and masks: the loader refuses it,
    before it looks for x and y."""
    both = [name for name in _label_names("y") if name in names]
    if labels_name(names) == "y" or not both:
        return None
    return (f"{path}: has both '{both[0]}' and masks; keep one name for the labels (masks for "
            "label maps)")


def _label_names(labels: str) -> list[str]:
    """The names of the labels of every split: y, y_test, y_val (or masks, ...)."""
    return [labels, *(targets for _, targets in held_out_pairs(labels))]


def unpaired_array_problem(path, names, labels: str) -> str | None:
    """A held-out split's features without its labels, or its labels without features; the
    missing one may be there under another name (X_test)."""
    meant = {wanted: name for name, wanted in misnamed_split_arrays(names, labels).items()}
    for features, targets in held_out_pairs(labels):
        if (features in names) != (targets in names):
            present, missing = (features, targets) if features in names else (targets, features)
            fix = (f"save {meant[missing]} as {missing}" if missing in meant else
                   f"save the split's {missing} beside it, or leave {present} out")
            return f"{path}: '{features}' and '{targets}' must be given together; {fix}"
    return None


NOT_NUMBERS = "holds Python objects or records, not numbers"  # never unpickled


def dataset_of_file(path) -> str | None:
    """The user-file dataset a file's name says it is (`d.csv`: csv), or None."""
    return {".npz": "npz", ".csv": "csv"}.get(os.path.splitext(str(path))[1].lower())


def unreadable_npz(path, reason: str) -> str:
    """The data loader's message for an npz data file it cannot read (`reason`: why)."""
    fix = ("save its arrays as numbers (e.g. x.astype('float32')) with numpy.savez"
           if NOT_NUMBERS in reason else
           "it is a csv file: set data.dataset: csv" if dataset_of_file(path) == "csv" else
           "save it again with numpy.savez")
    return f"{path}: not a readable .npz file ({reason}); {fix}"


def unreadable_csv(path, reason: str) -> str:
    """The data loader's message for a csv data file whose bytes are no UTF-8 text."""
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"  # a zip archive, as numpy.savez writes
    fix = ("; it is an npz file: set data.dataset: npz" if zipped else
           "; save it as UTF-8 text")
    return f"{path}: cannot read ({reason}){fix}"


def objects_problem(path, dtypes: dict) -> str | None:
    """An npz member of Python objects or records (by `dtypes`, each member's), which the loader
    refuses to read, in its words."""
    member = next((name for name, dtype in dtypes.items()
                   if dtype.hasobject or dtype.names is not None), None)
    return unreadable_npz(path, f"member '{member}.npy' {NOT_NUMBERS}") if member else None


_CLASS_NAMES_FIX = ("; for class names, number them 0..k-1 alike in every split: with classes "
                    "= numpy.unique(numpy.concatenate([y, y_test, y_val])) (the splits the "
                    "file holds), save numpy.searchsorted(classes, y) as y (and so y_test, "
                    "y_val)")


def labels_dtype_problem(dtype, shape: tuple[int, ...], where: str,
                         labels: str = "y") -> str | None:
    """Labels whose dtype (None: not known) holds no numbers, in the loader's words: label
    maps (`labels` masks, of any split), or labels (class labels, label maps or real-valued
    targets: which, their values tell), one a sample of which may be class names, told how
    to number. `labels`: the npz array's name."""
    if dtype is None or dtype.kind in "biuf":
        return None
    if labels.startswith("masks"):
        return f"{where}: label maps must be integers, found dtype {dtype}"
    names = (_CLASS_NAMES_FIX if dtype.kind in "USO" and math.prod(shape[1:]) == 1 else
             _not_numbers_fix(dtype, labels, features=False))
    return f"{where}: labels must be real numbers, found dtype {dtype}{names}"


def _not_numbers_fix(dtype, array: str, features: bool = True) -> str:
    """What makes an array of no real numbers one: complex values' real parts (or their
    magnitudes; features also both parts), numbers written as text read as numbers."""
    if dtype.kind == "c":
        both = (f", or both parts as features: numpy.stack([{array}.real, {array}.imag], "
                "axis=1) (two channels)" if features else "")
        return f"; save {array}.real (or numpy.abs({array})) as floats{both}"
    if dtype.kind in "US":
        return f"; if they are numbers written as text, save {array}.astype('float32')"
    return ""


def feature_layout_problem(shape: tuple[int, ...], dtype, where: str,
                           array: str = "x", one_sample: bool = False,
                           samples: int | None = None) -> str | None:
    """What an array's header tells of its features (`array`: the npz array that holds them):
    numbers (`dtype`; None: not known), one row per sample, no empty sample; None for
    features [N, ...] of numbers. `one_sample`: a 1-D array is one sample's features (a
    held-out split of one label, its length a training sample's); `samples`: the labels'
    count, of which a 1-D array may hold a few values each (flattened)."""
    if dtype is not None and dtype.kind not in "biuf":
        return (f"{where}: features must be numbers, found dtype {dtype}"
                f"{_not_numbers_fix(dtype, array)}")
    if len(shape) == 1 and shape[0]:  # one number a sample, or one sample, or flattened
        flattened = samples is not None and 0 < samples < shape[0] and shape[0] % samples == 0
        fix = (f"for one sample save {array}[None]" if one_sample else
               f"{shape[0] // samples} features a sample, flattened? save "
               f"{array}.reshape({samples}, -1)" if flattened else
               f"for one feature a sample save {array}[:, None]")
        return (f"{where}: features must be [N, ...], one row per sample, got {list(shape)}; "
                f"{fix}")
    if len(shape) >= 2 and shape[0] == 0:
        return (f"{where}: {array} holds no samples ({list(shape)}); save the data with at "
                "least one sample")
    if len(shape) < 2:
        return f"{where}: features must be [N, ...], one row per sample, got {list(shape)}"
    if 0 in shape[1:]:
        return (f"{where}: samples of shape {list(shape[1:])} hold no features; each sample "
                "needs at least one value")
    return None


def sample_count_problem(where: str, features: tuple[int, ...],
                         labels: tuple[int, ...]) -> str | None:
    """An npz pair whose arrays of `features` and `labels` shapes hold other numbers of
    samples (labels of a single value are the loader's to say, once read)."""
    if not labels or labels[0] == features[0]:
        return None
    return f"{where}: {features[0]} samples of features but {labels[0]} labels"


def header_row_problem(path, header: list[str]) -> str | None:
    """What the data loader refuses of a csv dataset's header row, in the order it says it: no
    row but blanks and comments, or a first row of numbers (no header row at all), a column
    without a name, a name given to two columns, no `label` column; None for a header it
    reads."""
    if header == [""] or all(is_number(name) for name in header):
        return no_label_column(path, header)
    return (unnamed_column(path, header) or _repeated_name(path, header)
            or (None if "label" in header else no_label_column(path, header)))


def _repeated_name(path, header: list[str]) -> str | None:
    # counted in one pass: a header of 100,000 columns is read in linear time
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if not repeated:
        return None
    return (f"{path}: the header row names {', '.join(map(repr, repeated))} more than once; "
            "give every column its own name")


def unnamed_column(path, header: list[str]) -> str | None:
    """A header cell left empty: pandas' index (`df.to_csv(path)`), read as a feature that
    numbers the rows, or commas that end every row; None where every column is named. A
    quote the header row does not close comes first: the names after it are lost."""
    open_quote = _open_quote(path, header)
    if open_quote:
        return open_quote
    unnamed = [name == "" or re.fullmatch(r"Unnamed: \d+", name) is not None
               for name in header]
    if not any(unnamed):
        return None
    if header[-1] == "" and not any(unnamed[:-1]):
        return (f"{path}: the header row ends with a comma, an empty column; remove the commas "
                "that end the rows")
    position = unnamed.index(True) + 1
    name = "has no name" if header[position - 1] == "" else f"is pandas' {header[position - 1]!r}"
    index = (" (pandas writes its index so: save with df.to_csv(path, index=False))"
             if position == 1 else "")
    return (f"{path}: column {position} {name} in the header row{index}; name it, or leave the "
            "column out")


def _other_separator(header: list[str]) -> str | None:
    """`a;b;label` (a spreadsheet's csv in many locales, or `sep=;` as Excel begins it),
    tab- or space-separated values, read as one column."""
    if len(header) != 1:
        return None
    line = header[0]
    if line.lower().startswith("sep=") and len(line) == 5:
        return line[4]
    return next((separator for separator in (";", "\t", "|", " ")
                 if "label" in [part.strip().strip('"') for part in line.split(separator)]), None)


_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+")


def _decimal_commas(path, separator: str, rows: int = 20) -> bool:
    """Whether the first rows write numbers with a decimal comma (`0,5`), as the locales whose
    spreadsheets separate columns by ';' do: re-read without it, they stay text."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            lines = [line for _, line in zip(range(rows + 1), handle)][1:]
    except OSError:
        return False
    return any(_DECIMAL_COMMA.fullmatch(cell.strip().strip('"'))
               for line in lines for cell in line.split(separator))


def is_number(text: str) -> bool:
    """A csv value np.loadtxt reads as a number."""
    try:
        float(text)
    except ValueError:
        return False
    # Python's float reads 1_000 and other scripts' digits (١٢), loadtxt does not
    return "_" not in text and text.isascii()


DATASETS_EXTRA = "datasets"


def generator_hint(package: str) -> str:
    return (f"generating it needs the {package} package; install it with "
            f"pip install 'nnrun[{DATASETS_EXTRA}]'")


def missing_generator(name: str) -> str | None:
    """The package a dataset's generator needs where it is not installed (found, not imported)."""
    generator = DATASETS[name].generator if name in DATASETS else None
    if generator is None:
        return None
    try:
        found = importlib.util.find_spec(generator[0].split(".")[0])
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        found = None
    return None if found is not None else generator[1]


def why_not_looked_at(path: Path) -> str | None:
    """Why `path` cannot even be looked at, where its stat fails for more than its absence
    (Path.exists and is_file raise on these, or call a loop missing): no search permission on
    a directory on its way, a loop of symbolic links, a name too long; None for a path that
    is there, or missing."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        return _NOT_LOOKED_AT.get(error.errno, error.strerror or type(error).__name__)
    except UnicodeEncodeError:  # a name beyond the locale's encoding (LC_ALL=C, PYTHONUTF8=0)
        return beyond_the_locale()
    return None


def beyond_the_locale() -> str:
    """What a name the locale's encoding cannot hold gets (os.fsencode's UnicodeEncodeError:
    LC_ALL=C with Python's UTF-8 mode off), with the fix."""
    return f"a name this locale's encoding ({sys.getfilesystemencoding()}) cannot hold; {IN_UTF8}"


IN_UTF8 = "run nnrun in a UTF-8 locale (LC_ALL=C.UTF-8) or with PYTHONUTF8=1"


_NOT_LOOKED_AT = {
    errno.ELOOP: "a loop of symbolic links; point it at the file itself",
    errno.EACCES: "permission denied: a directory on its way does not let this user look into "
                  "it; give a path this user can read",
    errno.EPERM: "not permitted: a directory on its way does not let this user look into it; "
                 "give a path this user can read",
    errno.ENAMETOOLONG: "a name too long for the file system (255 bytes a name, 4,096 the "
                        "whole path); shorten it",
}


def why_unreadable(error: OSError) -> str:
    """Why a file a spec names (data.path, init_from) could not be read, and what to do: the
    advice for a file nnrun reads, not for an output it writes."""
    what = error.strerror or type(error).__name__
    return f"cannot be read ({what}){_UNREADABLE.get(error.errno, '')}"


_UNREADABLE = {
    errno.EACCES: "; give this user read permission on it, or point to a copy it can read",
    errno.EPERM: "; give this user read permission on it, or point to a copy it can read",
    errno.EIO: "; the device reported an I/O error: check the disk, or use a copy",
}


def why_absent(path: Path) -> str:
    """Why a file a spec names cannot be opened, for a path that is not there: no such file,
    a symbolic link to nothing, or a loop of symbolic links."""
    if not path.is_symlink():
        return "no such file"
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"a symbolic link to {os.readlink(path)}, which is not there"
    except (RuntimeError, OSError):  # RuntimeError before Python 3.13
        return "a loop of symbolic links; point it at the file itself"
    return "no such file"
