"""A data file changed in place between a run and its --resume (docs/reliability.md, "Resume
keeps the record true"): the checkpoints keep the SHA-256 of each file the data is read from,
and a resume that finds other bytes treats it as a change of the spec's data."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from nnrun.runtime.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint
from nnrun.runtime.data import DataError
from nnrun.runtime.data.fingerprint import data_files, data_fingerprint
from nnrun.runtime.interrupts import Interrupted

from invoking import assert_ok, assert_one_line_error, invoke

SPEC = """\
name: vec
seed: 3
data: {dataset: npz, path: vec.npz, validation_split: 0.2, normalize: standard}
model: {layers: [{type: dense, units: 3}]}
loss: cross_entropy
optimizer: {type: sgd, lr: 0.3}
train:
  epochs: 2
  batch_size: 8
  # no epoch improves by 1e9 on the first: it is the best, so that one chosen again shows
  early_stopping: {monitor: train_loss, min_delta: 1.0e+9, patience: 9}
"""


def write_data(path: Path, column_scale: float = 1.0) -> None:
    generator = np.random.default_rng(1)
    x = generator.normal(size=(50, 3)) * [1, 10, 100] + [5, -3, 1000]
    x[:, 1] *= column_scale
    y = np.arange(50) % 3
    np.savez(path, x=x, y=y, x_test=x[:7] + 1, y_test=y[:7])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded_changes(run: Path) -> list[list[str]]:
    """The names of the changes of each record of spec-changes.jsonl."""
    return [list(json.loads(line)["changes"])
            for line in (run / "spec-changes.jsonl").read_text().splitlines()]


def contents(run: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in run.iterdir() if path.name != "nnrun.lock"}


@pytest.fixture
def run(tmp_path) -> Path:
    """A trained run of two epochs, its best the first; its data, vec.npz, beside the spec."""
    write_data(tmp_path / "vec.npz")
    (tmp_path / "vec.yaml").write_text(SPEC)
    out = tmp_path / "run"
    assert_ok(invoke("train", tmp_path / "vec.yaml", "--out", out, "--quiet"))
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == 1
    return out


def test_a_data_file_changed_in_place_is_a_change_of_the_data(run, tmp_path):
    """The audit: --resume refitted preprocessing.npz on the new file without a word, and
    best.npz, trained on the old one, stayed the run's model, scored with the new statistics."""
    data = tmp_path.resolve() / "vec.npz"
    old_digest = sha256(data)
    write_data(data, column_scale=20.0)
    before = contents(run)
    line = assert_one_line_error(invoke("train", run / "spec.yaml", "--resume", run,
                                        "--epochs", 3), run)
    assert line == (f"error: {run}: the data file {data} changed since the run's checkpoint "
                    "was written (another SHA-256); put it back as it was, or pass "
                    "--allow-changes to continue on the new data (the change is recorded in the "
                    "run directory)")
    assert contents(run) == before

    result = assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--epochs", 3,
                              "--allow-changes"))
    assert (f"{run}: data file {data} changed, so the best epoch is chosen again from epoch 3 "
            "on (the earlier ones were measured on other inputs); the normalisation statistics "
            "are fitted again on the new training split (preprocessing.npz)") in result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 3 and summary["final"]["checkpoint"] == "best.npz"
    assert recorded_changes(run) == [["train.epochs", f"data file {data}"]]
    record = json.loads((run / "spec-changes.jsonl").read_text())
    assert record["resumed_after_epoch"] == 2
    assert record["changes"][f"data file {data}"] == {"old": old_digest, "new": sha256(data)}
    # eval and predict score best.npz with preprocessing.npz: both are of the new file now
    assert checkpoint_meta(run / "best.npz")["data_sha256"] == {"data.path": sha256(data)}
    fresh = tmp_path / "fresh"
    assert_ok(invoke("train", tmp_path / "vec.yaml", "--out", fresh, "--quiet"))
    assert (run / "preprocessing.npz").read_bytes() == (fresh / "preprocessing.npz").read_bytes()


def test_a_resume_with_its_data_file_unchanged_says_nothing_of_it(run, tmp_path):
    data = tmp_path.resolve() / "vec.npz"
    os.utime(data, (0, 0))  # touched, its bytes the same
    preprocessing = (run / "preprocessing.npz").read_bytes()
    result = assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--epochs", 3))
    assert "data file" not in result.stderr and "chosen again" not in result.stderr
    assert recorded_changes(run) == [["train.epochs"]]
    assert json.loads((run / "summary.json").read_text())["best_epoch"] == 1
    assert (run / "preprocessing.npz").read_bytes() == preprocessing
    assert checkpoint_meta(run / "last.npz")["data_sha256"] == {"data.path": sha256(data)}


def test_a_checkpoint_without_data_digests_resumes_as_before(run, tmp_path):
    """A run of an nnrun before the digests: nothing to compare, so nothing is said; its next
    checkpoint keeps them."""
    arrays, meta = load_checkpoint(run / "last.npz")
    del meta["data_sha256"]
    save_checkpoint(run / "last.npz", arrays, meta)
    assert checkpoint_meta(run / "last.npz")["data_sha256"] is None
    data = tmp_path.resolve() / "vec.npz"
    write_data(data, column_scale=20.0)
    result = assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--epochs", 3))
    assert "data file" not in result.stderr and "chosen again" not in result.stderr
    assert recorded_changes(run) == [["train.epochs"]]
    assert checkpoint_meta(run / "last.npz")["data_sha256"] == {"data.path": sha256(data)}


def test_a_changed_data_file_with_no_epoch_left_is_refused(run, tmp_path):
    """As a change of data.* is: the resume would only refit preprocessing.npz and the final
    numbers on other data than best.npz was trained on."""
    data = tmp_path.resolve() / "vec.npz"
    write_data(data, column_scale=20.0)
    before = contents(run)
    line = assert_one_line_error(invoke("train", run / "spec.yaml", "--resume", run,
                                        "--allow-changes"), run)
    assert line.endswith(f"this resume trains no epoch (its 2 epoch(s) are trained), so data "
                         f"file {data} would change only the run's final numbers "
                         "and stored preprocessing, not what it was trained with; put back the "
                         "data it was trained on, or give --epochs above 2 to train with them")
    assert contents(run) == before


def test_a_changed_data_file_allowed_once_stays_allowed_for_that_resume(run, tmp_path):
    """A resume allowed the new data that trained nothing kept (its checkpoint put back, as a
    signal before its first would leave it) is resumed with the command its message gives,
    without --allow-changes, and leaves one record."""
    data = tmp_path.resolve() / "vec.npz"
    write_data(data, column_scale=20.0)
    checkpoint = (run / "last.npz").read_bytes()
    assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--epochs", 3,
                     "--allow-changes", "--quiet"))
    (run / "last.npz").write_bytes(checkpoint)
    result = assert_ok(invoke("train", run / "spec.yaml", "--resume", run))
    assert "chosen again from epoch 3 on" in result.stderr
    assert recorded_changes(run) == [["train.epochs", f"data file {data}"]]


def test_mnist_is_fingerprinted_by_its_four_idx_files():
    """Hashing them costs about 9 ms (SHA-256 of mnist's 11 MB of .gz files)."""
    directory = Path(os.environ.get("NNRUN_DATA_DIR", "")) / "mnist"
    sums = directory / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip("no shared mnist files (NNRUN_DATA_DIR)")
    from nnrun.compiler.schema import Data

    files = data_files(Data(dataset="mnist"), Path("."))
    assert {role: path.name for role, path in files.items()} == {
        "train-images-idx3-ubyte": "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte": "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte": "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte": "t10k-labels-idx1-ubyte.gz"}
    published = dict(reversed(line.split()) for line in sums.read_text().splitlines())
    assert data_fingerprint(files) == {role: published[path.name]
                                       for role, path in files.items()}
    assert data_files(Data(dataset="xor"), Path(".")) == {}


def test_a_data_file_moved_with_its_bytes_is_no_change_of_the_data(run, tmp_path):
    """The runtime follow-the-fix audit: eval's advice for a moved file (set data.path in the
    run's spec.yaml to where it is now), followed, made --resume a change of the data, and with
    --allow-changes the best epoch was chosen again as "measured on other inputs"."""
    (tmp_path / "moved").mkdir()
    os.replace(tmp_path / "vec.npz", tmp_path / "moved" / "vec.npz")
    spec = run / "spec.yaml"
    spec.write_text(spec.read_text().replace(str(tmp_path / "vec.npz"),
                                             str(tmp_path / "moved" / "vec.npz")))
    result = invoke("train", spec, "--resume", run, "--epochs", "3", "--quiet")
    assert_ok(result)
    assert "chosen again" not in result.output
    assert recorded_changes(run) == [["train.epochs"]]
    # other bytes there are still a change of the data
    write_data(tmp_path / "moved" / "vec.npz", column_scale=2.0)
    assert_one_line_error(invoke("train", spec, "--resume", run, "--epochs", "4", "--quiet"),
                          str(run))


def test_a_resume_that_follows_a_moved_file_alone_writes_the_path_in_spec_yaml(tmp_path,
                                                                              monkeypatch):
    """The resume audit: --set data.path to where the file moved, the only change, trained on,
    and the run's spec.yaml still named the old place: eval and the next resume, as the run
    itself prints it, then failed to find the file."""
    from nnrun.runtime.train import Trainer

    write_data(tmp_path / "vec.npz")
    (tmp_path / "vec.yaml").write_text(SPEC)
    short, train_epoch = tmp_path / "short", Trainer.train_epoch

    def stopped_at_the_second(trainer, epoch, guard=None):  # a SIGTERM after epoch 1's save
        if epoch == 2:
            raise Interrupted(signal.SIGTERM)
        return train_epoch(trainer, epoch, guard)

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "train_epoch", stopped_at_the_second)
        assert invoke("train", tmp_path / "vec.yaml", "--out", short, "--quiet").exit_code == 143
    (tmp_path / "moved").mkdir()
    os.replace(tmp_path / "vec.npz", tmp_path / "moved" / "vec.npz")
    moved = tmp_path / "moved" / "vec.npz"
    assert_ok(invoke("train", short / "spec.yaml", "--resume", short, "--set",
                     f"data.path={moved}", "--quiet"))
    assert str(moved) in (short / "spec.yaml").read_text()
    assert not (short / "spec-changes.jsonl").exists()  # no change of the data: no record
    assert_ok(invoke("eval", short, "--split", "val"))
    assert_ok(invoke("train", short / "spec.yaml", "--resume", short, "--quiet"))


def test_a_resume_that_trains_nothing_keeps_the_runs_final_model_and_numbers(run, tmp_path):
    """The resume audit: a finished run resumed with restore_best: false (or other metrics)
    trained nothing, recorded nothing, and kept spec.yaml, but summary.json then named
    last.npz, which eval and predict followed."""
    before = json.loads((run / "summary.json").read_text())["final"]
    for change in ("train.early_stopping.restore_best=false", "train.metrics=[mse]"):
        assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--set", change,
                         "--allow-changes", "--quiet"))
        assert json.loads((run / "summary.json").read_text())["final"] == before, change
    assert "best.npz" in assert_ok(invoke("eval", run)).output


@pytest.mark.parametrize("change", ["data file", "data.normalize=scale", "data.normalize=none"])
def test_a_resume_stopped_before_its_first_checkpoint_keeps_the_checkpoints_preprocessing(
        run, tmp_path, monkeypatch, capsys, change):
    """The export audit: a resume that refits the statistics (a changed data file, or
    data.normalize), stopped before its first epoch's checkpoint, had replaced
    preprocessing.npz already: eval, predict and export then fed best.npz, still the old
    epoch's, other inputs than it was trained on (test loss 0.49 against 0.11), unwarned.
    Where spec.yaml, written by that resume, has no statistics (normalize: none), the
    checkpoint's own are used, said, not refused with advice to delete them."""
    import nnrun
    from nnrun.runtime.train import Trainer

    overrides = [change] if change.startswith("data.normalize") else []
    if change == "data file":
        write_data(tmp_path / "vec.npz", column_scale=20.0)
    preprocessing = (run / "preprocessing.npz").read_bytes()
    x_test = np.load(tmp_path / "vec.npz")["x_test"]
    scores = nnrun.load_run(run).predict(x_test)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "_train_epochs", stopped)
        with pytest.raises(KeyboardInterrupt):
            nnrun.train(run / "spec.yaml", resume=run, allow_changes=True, epochs=3,
                        overrides=overrides, quiet=True)
    assert (run / "preprocessing.npz").read_bytes() == preprocessing
    assert checkpoint_meta(run / "best.npz")["epoch"] == 1
    capsys.readouterr()
    np.testing.assert_array_equal(nnrun.load_run(run).predict(x_test), scores)
    warned = "it is what the checkpoint was trained with" in capsys.readouterr().err
    assert warned == (change == "data.normalize=none")

    nnrun.train(run / "spec.yaml", resume=run, allow_changes=True, epochs=3,
                overrides=overrides, quiet=True)  # its first checkpoint replaces it
    fresh = tmp_path / "fresh"
    nnrun.train(tmp_path / "vec.yaml", out_dir=fresh, overrides=overrides, quiet=True)
    assert (run / "preprocessing.npz").read_bytes() == (fresh / "preprocessing.npz").read_bytes()
    assert (run / "preprocessing.npz").read_bytes() != preprocessing


def test_a_run_stopped_between_a_checkpoint_and_its_preprocessing_says_so_and_resumes(
        run, tmp_path):
    """The crash audit: SIGKILL right after a resume's first last.npz (its validation split
    changed) left the old preprocessing.npz beside it, used without a word (test loss 0.1074
    against 0.1084), even after a resume with nothing left to train. The checkpoint keeps the
    digest of its own preprocessing: eval refuses the other one, and a resume writes it."""
    import nnrun

    old = (run / "preprocessing.npz").read_bytes()
    args = ("train", run / "spec.yaml", "--resume", run, "--epochs", 3, "--allow-changes",
            "--set", "data.validation_split=0.4", "--quiet")
    assert_ok(invoke(*args))
    reference = assert_ok(invoke("eval", run)).stdout
    assert (run / "preprocessing.npz").read_bytes() != old
    (run / "preprocessing.npz").write_bytes(old)  # as killed before writing it
    line = assert_one_line_error(invoke("eval", run), run / "preprocessing.npz")
    assert line.endswith(f"is not the preprocessing best.npz was trained with (edited, or the "
                         f"run stopped between writing the two); resume the run to write it "
                         f"again: nnrun train {run / 'spec.yaml'} --resume {run}"), line
    with pytest.raises(DataError, match="resume the run to write it again"):
        nnrun.load_run(run)
    assert_ok(invoke("train", run / "spec.yaml", "--resume", run))  # the advice, followed
    assert assert_ok(invoke("eval", run)).stdout == reference
