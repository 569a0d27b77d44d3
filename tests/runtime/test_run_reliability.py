"""Run directories you can trust (docs/reliability.md lists each promise and its test here):
one owner at a time, always resumable or restartable, only nnrun's own files, atomic writes,
damaged files and write errors as one-line user errors, and resume that keeps the record true.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nnrun.runtime.checkpoint import load_checkpoint, save_checkpoint
from nnrun.runtime.files import write_atomically, write_text_atomically
from nnrun.runtime.run_dir import LOCK, RunDirectory

from invoking import assert_ok, assert_one_line_error, invoke

SPEC = """\
name: tiny
seed: 0
data: {dataset: xor, n_samples: 64, validation_split: 0.25}
model:
  input_shape: [2]
  layers:
    - {type: dense, units: 4, activation: tanh}
    - {type: dense, units: 1, activation: sigmoid}
loss: binary_cross_entropy
optimizer: {type: adam, lr: 0.05}
train: {epochs: 2, batch_size: 16}
"""


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def change_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "spec-changes.jsonl").read_text().splitlines()]


def stopped_resume(run: Path, *options) -> list[dict]:
    """A resume of `run` with allowed changes (`options`) whose training was not kept: its
    checkpoint put back as it was, as if a signal or a diverged loss had stopped it before its
    first. Returns the metrics rows it had trained."""
    before = (run / "last.npz").read_bytes()
    assert_ok(invoke("train", run / "spec.yaml", "--resume", run, *options, "--allow-changes",
                     "--quiet"))
    trained_rows = rows(run)
    (run / "last.npz").write_bytes(before)
    return trained_rows


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def trained(tmp_path, spec) -> Path:
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    return out


def wait_for_epochs(run: Path, count: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (run / "metrics.jsonl").exists() or len(rows(run)) < count:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"fewer than {count} epochs in {timeout} s"
        time.sleep(0.05)


def nnrun_process(*args, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnrun", *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


# --- one process owns a run directory -------------------------------------------------------


def test_a_second_process_fails_at_once_naming_the_holder(tmp_path, spec):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from nnrun.runtime.run_dir import RunDirectory
        with RunDirectory({str(out)!r}) as run:
            run.open_new()
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = assert_one_line_error(invoke("train", spec, "--out", out, "--quiet"), out)
        assert f"pid {holder.pid}" in line
    finally:
        holder.kill()  # SIGKILL: the OS releases the lock with the process
        holder.wait()
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))


def test_a_holder_that_has_not_written_its_pid_yet_is_waited_for(tmp_path):
    """The run-directory audit: a process that took the lock a moment before (its checks not
    yet done, its pid not yet written) was named "pid unknown", or by the pid of the run
    before it, which had ended (the review)."""
    import fcntl
    import threading

    from nnrun.runtime.run_dir import RunDirectoryError

    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / LOCK
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.pwrite(descriptor, b"999999999\n", 0)  # the run before's pid, which has ended
    later = threading.Timer(0.1, lambda: (os.ftruncate(descriptor, 0),
                                          os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)))
    later.start()
    try:
        with pytest.raises(RunDirectoryError, match=r"in use by another nnrun process "
                                                     rf"\(pid {os.getpid()}\)"):
            RunDirectory(tmp_path / "run").open_existing()
    finally:
        later.join()
        os.close(descriptor)


def test_two_real_trainings_on_one_directory(tmp_path, spec):
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    spec.write_text(SPEC.replace("epochs: 2", "epochs: 400"))
    first = nnrun_process("train", spec, "--resume", out, "--quiet")
    wait_for_epochs(out, 3, first)
    second = nnrun_process("train", spec, "--resume", out, "--quiet")
    assert second.wait(timeout=60) == 1
    assert "in use by another nnrun process" in second.stderr.read()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 143
    epochs = [row["epoch"] for row in rows(out)]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer: no interleaved rows


# --- always resumable or restartable ----------------------------------------------------------


def test_a_run_without_checkpoint_restarts_with_out_or_resume(tmp_path, spec):
    out = tmp_path / "run"
    with RunDirectory(out) as run:  # what a kill in epoch 1 leaves
        run.open_new()
        run.start_over(SPEC)
        (out / "metrics.jsonl").write_text('{"epoch": 1, "train_')
    result = assert_ok(invoke("train", spec, "--out", out))
    assert "no checkpoint yet; starting it from epoch 1" in result.stderr
    assert [row["epoch"] for row in rows(out)] == [1, 2]
    # What a kill between the writes of best.npz and last.npz of epoch 1 left (an older nnrun
    # wrote best.npz first).
    one = tmp_path / "one-epoch"
    assert_ok(invoke("train", spec, "--out", one, "--epochs", 1, "--quiet"))
    for name in ("last.npz", "summary.json"):
        (one / name).unlink()
    result = assert_ok(invoke("train", spec, "--resume", one))
    assert "starting it from epoch 1" in result.stderr
    assert [row["epoch"] for row in rows(one)] == [1, 2]


# A child that dies as a kill -9 would, right after the last.npz of an epoch that improved.
KILLED_AFTER_LAST = """
import os, sys
import nnrun.runtime.checkpoint as checkpoint
saved, after = checkpoint.save_checkpoint, int(sys.argv[1])
def save(path, state, meta):
    saved(path, state, meta)
    if path.name == "last.npz" and meta["epoch"] > after and meta["epoch"] == meta["best_epoch"]:
        os._exit(137)
checkpoint.save_checkpoint = save
from nnrun.entry import main
sys.argv = ["nnrun", *sys.argv[2:]]
main()
"""


def test_a_best_npz_of_another_runs_spec_is_refused_not_blamed_on_a_kill(tmp_path, spec):
    """The closed-issues audit: a best.npz copied from another run was told "the run stopped
    between the two writes", and eval scored last.npz, exit 0."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert_ok(invoke("train", spec, "--out", ours, "--quiet", "--epochs", "1"))
    other = tmp_path / "other.yaml"
    other.write_text(spec.read_text().replace("units: 4", "units: 5"))
    assert_ok(invoke("train", other, "--out", theirs, "--quiet", "--epochs", "8"))
    # as a kill between an epoch's two writes leaves them: last.npz's own epoch the best
    assert load_checkpoint(theirs / "best.npz")[1]["epoch"] != 1
    (ours / "best.npz").write_bytes((theirs / "best.npz").read_bytes())
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 2)))
    for command in (["eval", ours], ["predict", ours, tmp_path / "x.npz", "--out",
                                     tmp_path / "y.npy"]):
        line = assert_one_line_error(invoke(*command), ours / "best.npz")
        assert "checkpoint was written for another spec" in line


def test_a_kill_between_the_two_checkpoints_of_an_epoch_leaves_best_npz_of_its_epoch(tmp_path,
                                                                                     spec):
    """The run-directory audit: killed between the writes of best.npz and last.npz of epoch
    N > 1, best.npz was of an epoch last.npz had not reached, and the final model a later
    resume named was of no epoch in the record. last.npz is written first now, and a resume
    puts the best epoch's checkpoint back from it."""
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_LAST, "1", "train", str(spec),
                             "--out", str(out), "--epochs", "8", "--quiet"], capture_output=True,
                            text=True)
    assert killed.returncode == 137, killed.stderr
    _, last = load_checkpoint(out / "last.npz")
    _, best = load_checkpoint(out / "best.npz")
    epoch = last["epoch"]
    assert last["best_epoch"] == epoch > best["epoch"]
    # before any resume, eval scores the best epoch, last.npz's, not best.npz's earlier one
    scored = assert_ok(invoke("eval", out, "--format", "json"))
    assert f"last.npz records its own epoch {epoch} as the best" in scored.stderr
    assert json.loads(scored.stdout)["checkpoint"].endswith("last.npz")
    # nothing left to train: the run's final model is named from the checkpoints as they are
    result = assert_ok(invoke("train", spec, "--resume", out, "--epochs", epoch))
    assert (f"best.npz: written again from last.npz, whose epoch {epoch} is the run's best"
            in result.stderr)
    assert (out / "best.npz").read_bytes() == (out / "last.npz").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == summary["final"]["epoch"] == epoch


def test_a_best_checkpoint_past_last_npz_from_an_older_nnrun_goes(trained, spec):
    """An older nnrun wrote best.npz first: killed between the two writes, best.npz held an
    epoch last.npz had not reached, and the run's best epoch is lost. It goes, said, and the
    final model is last.npz until an epoch betters the best."""
    state, meta = load_checkpoint(trained / "last.npz")
    state = {name.removeprefix("params/"): value for name, value in state.items()}
    save_checkpoint(trained / "last.npz", state, {**meta, "best_epoch": 1})
    save_checkpoint(trained / "best.npz", state, {**meta, "epoch": 3,
                                                  "rng": {**meta["rng"], "next_epoch": 4}})
    result = assert_ok(invoke("train", spec, "--resume", trained))
    assert "best.npz: removed; it held epoch 3, after last.npz's epoch 2" in result.stderr
    assert not (trained / "best.npz").exists()
    # where last.npz's own epoch is the best, best.npz is written again from it, said so
    save_checkpoint(trained / "last.npz", state, {**meta, "best_epoch": 2,
                                                  "epochs_since_best": 0})  # epoch 2, the best
    save_checkpoint(trained / "best.npz", state, {**meta, "epoch": 3,
                                                  "rng": {**meta["rng"], "next_epoch": 4}})
    result = assert_ok(invoke("train", spec, "--resume", trained))
    assert ("best.npz: written again from last.npz, whose epoch 2 is the run's best (it held "
            "epoch 3, past last.npz's, which the run did not keep (an older nnrun wrote best.npz "
            "first))") in result.stderr


def files_of(run: Path) -> dict[str, bytes]:
    """Every file of a run directory but the lock, whose pid each process rewrites."""
    return {path.name: path.read_bytes() for path in run.iterdir() if path.name != LOCK}


def test_a_run_whose_last_checkpoint_was_deleted_is_refused_and_kept(trained, spec):
    (trained / "last.npz").unlink()
    before = files_of(trained)
    for option in ("--resume", "--out"):
        line = assert_one_line_error(invoke("train", spec, option, trained, "--quiet"), trained)
        assert "trained epochs" in line and "no last.npz" in line
        assert "copy best.npz to last.npz" in line and "another --out" in line
        assert files_of(trained) == before
    (trained / "last.npz").write_bytes((trained / "best.npz").read_bytes())  # the way on it names
    assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"))
    assert [row["epoch"] for row in rows(trained)] == [1, 2, 3]


def test_resume_of_a_directory_that_is_not_a_run_is_refused(tmp_path, spec):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("train", spec, "--resume", tmp_path / "empty"), tmp_path / "empty")
    assert not (tmp_path / "empty" / LOCK).exists()


def test_a_failed_start_leaves_no_directory(tmp_path, spec):
    spec.write_text(SPEC.replace("units: 1,", "units: 1, bad: 2,"))
    assert invoke("train", spec, "--out", tmp_path / "run", "--quiet").exit_code == 1
    bad_data = tmp_path / "bad.yaml"
    bad_data.write_text(SPEC.replace("dataset: xor, n_samples: 64,", "dataset: npz, path: missing.npz,"))
    assert_one_line_error(invoke("train", bad_data, "--out", tmp_path / "run2", "--quiet"), "missing.npz")
    assert not (tmp_path / "run2").exists()


# --- only nnrun's own files -----------------------------------------------------------------


def test_out_next_to_the_users_own_spec_is_refused(tmp_path, spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    users = (tmp_path / "spec.yaml")
    users.write_text("my own notes\n")
    line = assert_one_line_error(invoke("train", spec, "--out", ".", "--quiet"), "spec.yaml")
    assert "did not write" in line
    assert users.read_text() == "my own notes\n"
    assert not (tmp_path / LOCK).exists()


def test_a_last_npz_of_the_users_own_is_not_taken_for_a_run(tmp_path, spec):
    """The run-directory audit: weights saved by another tool as last.npz made the directory
    "already hold a run; use --resume", and the resume then asked for its spec.yaml. A run of
    an older nnrun (no lock file) is still known by its checkpoint's meta entry."""
    mine = tmp_path / "exp"
    mine.mkdir()
    np.savez(mine / "last.npz", w=np.ones(3))
    before = (mine / "last.npz").read_bytes()
    line = assert_one_line_error(invoke("train", spec, "--out", mine, "--quiet"), "last.npz")
    assert "holds last.npz that nnrun did not write" in line
    line = assert_one_line_error(invoke("train", spec, "--resume", mine, "--quiet"), "last.npz")
    assert "its last.npz is not nnrun's: start a run in another directory with --out" in line
    assert (mine / "last.npz").read_bytes() == before and sorted(os.listdir(mine)) == ["last.npz"]
    from nnrun.runtime.run_dir import is_run_directory

    older = tmp_path / "older"
    assert_ok(invoke("train", spec, "--out", older, "--quiet"))
    (older / LOCK).unlink()
    assert is_run_directory(older) and not is_run_directory(mine)


def test_out_on_a_dangling_symbolic_link_says_so(tmp_path, spec):
    """The run-directory audit: it said 'File exists; a file of that name is in the way'."""
    (tmp_path / "run").symlink_to(tmp_path / "gone")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--quiet"),
                                 tmp_path / "run")
    assert f"is a symbolic link to {tmp_path / 'gone'}, which does not exist" in line
    assert not (tmp_path / "gone").exists()


def test_out_on_a_loop_or_a_chain_of_links_names_what_to_fix(tmp_path, spec):
    """The crash audit: both were told to create the link's first target, which exists (a
    link), so mkdir failed."""
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "loop1", "--quiet"),
                                 tmp_path / "loop1")
    assert "is a symbolic link in a loop of links; remove the loop" in line
    (tmp_path / "chain").symlink_to("hop")
    (tmp_path / "hop").symlink_to(tmp_path / "nowhere" / "x")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "chain", "--quiet"),
                                 tmp_path / "chain")
    assert (f"is a symbolic link to hop, which leads to {tmp_path / 'nowhere' / 'x'}, which does "
            "not exist; create that directory") in line
    (tmp_path / "nowhere" / "x").mkdir(parents=True)  # the fix, followed
    assert_ok(invoke("train", spec, "--out", tmp_path / "chain", "--quiet"))


def test_a_run_file_linked_elsewhere_is_told_to_be_replaced_by_a_copy(tmp_path, spec):
    """The crash audit: "remove it" lost the metrics the link's target holds (the resume was
    then refused for the epochs it lacked); a copy of the target resumes."""
    run = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", run, "--quiet", "--epochs", "1"))
    kept = tmp_path / "elsewhere.jsonl"
    (run / "metrics.jsonl").rename(kept)
    (run / "metrics.jsonl").symlink_to(kept)
    line = assert_one_line_error(invoke("train", run / "spec.yaml", "--resume", run, "--quiet"),
                                 run / "metrics.jsonl")
    assert f"replace it with a copy of {kept} (cp --remove-destination {kept} " in line
    (run / "metrics.jsonl").unlink()
    shutil.copy(kept, run / "metrics.jsonl")  # the fix, followed
    assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--quiet", "--epochs", "2"))


def test_a_lock_file_that_is_not_writable_is_told_so(tmp_path, spec, monkeypatch):
    """The crash audit: a read-only nnrun.lock was told to give "a file you can read, or an
    output in a directory you can write to", which it was (root reads every file: the open
    is refused by hand here)."""
    from nnrun.runtime import run_dir

    run = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", run, "--quiet", "--epochs", "1"))
    real_open = os.open

    def refusing(path, *args, **kwargs):
        if str(path).endswith(LOCK):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(run_dir.os, "open", refusing)
    line = assert_one_line_error(invoke("train", run / "spec.yaml", "--resume", run, "--quiet"),
                                 run / LOCK)
    assert line.endswith("is not writable, and nnrun locks the run on it; make it writable "
                         "(chmod u+w), or remove it where no nnrun process uses the run")


def test_a_symbolic_link_in_the_run_directory_is_never_written_through(tmp_path, spec):
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (out / "spec.yaml").symlink_to(target)
    assert_one_line_error(invoke("train", spec, "--out", out, "--quiet"), out / "spec.yaml")
    assert target.read_text() == "keep me\n"


def test_the_atomic_writer_respects_the_umask_and_replaces_a_link_not_its_target(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep\n")
    (tmp_path / "link").symlink_to(target)
    previous = os.umask(0o027)
    try:
        write_text_atomically(tmp_path / "link", "new\n")
        write_text_atomically(tmp_path / "plain", "new\n")
    finally:
        os.umask(previous)
    assert target.read_text() == "keep\n" and not (tmp_path / "link").is_symlink()
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("kind", ["fifo", "directory", "link to a fifo"])
def test_the_atomic_writer_refuses_a_target_that_is_not_a_regular_file(tmp_path, kind):
    """`predict --out /dev/null` turned /dev/null into a plain file: the rename replaced it."""
    fifo, target = tmp_path / "fifo", tmp_path / "target"
    os.mkfifo(fifo)
    if kind == "directory":
        target.mkdir()
    elif kind == "link to a fifo":
        target.symlink_to(fifo)
    else:
        target = fifo
    with pytest.raises(OSError, match="not a regular file that nnrun can replace") as caught:
        write_text_atomically(target, "new\n")
    assert caught.value.filename == str(target)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"fifo", target.name})


@pytest.mark.parametrize("failing", ["tempfile.mkstemp", "os.replace"])
def test_a_failed_write_names_the_path_given_not_the_temporary_file(tmp_path, monkeypatch,
                                                                     failing):
    """`--out /proc/version` said `/proc/.version.nsbve3nw: No such file or directory`."""
    def fail(*args, **kwargs):
        raise OSError(errno.ENOENT, "No such file or directory", str(tmp_path / ".x.npy.abc"))

    monkeypatch.setattr(failing, fail)
    with pytest.raises(OSError) as caught:
        write_text_atomically(tmp_path / "x.npy", "new\n")
    assert caught.value.filename == str(tmp_path / "x.npy") and caught.value.filename2 is None
    if failing == "tempfile.mkstemp":
        assert f"cannot create a file in {tmp_path}" in caught.value.strerror
    assert list(tmp_path.iterdir()) == []


def test_a_writers_own_error_keeps_its_words(tmp_path):
    """An error of the code that writes (matplotlib about a font, PIL about a mode) is not
    rewritten as an error of the output path."""
    def fail(words, filename=None):
        def write(stream):
            raise OSError(*words, *([filename] if filename else []))
        return write

    with pytest.raises(OSError, match="^cannot write mode RGBA as JPEG$"):
        write_atomically(tmp_path / "x.jpg", fail(("cannot write mode RGBA as JPEG",)))
    with pytest.raises(OSError) as caught:
        write_atomically(tmp_path / "x.png", fail((errno.ENOENT, "missing"), "/fonts/a.ttf"))
    assert caught.value.filename == "/fonts/a.ttf"
    with pytest.raises(OSError) as caught:  # a failed write of the file itself names it
        write_atomically(tmp_path / "x.png", fail((errno.ENOSPC, "No space left on device")))
    assert caught.value.filename == str(tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


WRITER = """
import sys
import numpy as np
from nnrun.runtime.checkpoint import save_checkpoint
path, epoch = sys.argv[1], 0
while True:
    epoch += 1
    state = {"w": np.full((300, 300), epoch, np.float32)}
    save_checkpoint(path, state, {"epoch": epoch, "step": epoch})
    print(epoch, flush=True)
"""


def test_kills_at_random_moments_during_checkpoint_writes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("")
    (out / "spec.yaml").write_text("")  # a run with a checkpoint has its spec
    path = out / "last.npz"
    rng = np.random.default_rng(0)
    for attempt in range(6):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                  stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # one checkpoint is complete
        time.sleep(rng.uniform(0, 0.2))
        writer.kill()
        writer.wait()
        state, meta = load_checkpoint(path, {"w": (300, 300)}, "float32")
        assert (state["w"] == meta["epoch"]).all()  # never half a checkpoint
    with RunDirectory(out) as run:
        run.open_existing()  # the owner clears what killed writes left
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, "last.npz", "spec.yaml"])


# --- damaged files --------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit_flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"")


def test_a_damaged_run_spec_is_a_one_line_error(trained, spec):
    (trained / "spec.yaml").write_bytes(b"\xff\xfe\x00")
    assert_one_line_error(invoke("train", spec, "--resume", trained, "--quiet"), trained / "spec.yaml")
    assert_one_line_error(invoke("eval", trained), trained / "spec.yaml")


@pytest.mark.parametrize("how", ["truncated", "bit_flip", "empty"])
def test_a_damaged_checkpoint_is_a_one_line_error(trained, spec, how):
    damage(trained / "last.npz", how)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"),
                          trained / "last.npz")
    assert "damaged" in line or "another spec" in line or "no meta" in line
    assert_one_line_error(invoke("eval", trained, "--checkpoint", "last"), trained / "last.npz")


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_a_damaged_best_checkpoint_is_refused_before_a_resume_trains(trained, spec, how):
    """best.npz is read at the end: found damaged only after every epoch was trained, with
    summary.json left stale."""
    damage(trained / "best.npz", how)
    before = files_of(trained)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 4,
                                        "--quiet"), trained / "best.npz")
    assert "damaged checkpoint" in line and line.endswith("delete it (last.npz is then used)")
    assert files_of(trained) == before
    (trained / "best.npz").unlink()  # as the line says
    assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 4, "--quiet"))


@pytest.mark.parametrize("damage, field", [
    ({"epoch": -5}, "meta.epoch is -5"),
    ({"epoch": 10**30, "rng": "x"}, "meta.epoch is 1000"),
    ({"rng": "x"}, "meta.rng is 'x'"),
    ({"rng": {"seed": 0, "next_epoch": 9}}, "rng.next_epoch 9 does not follow epoch 2"),
    ({"step": 1}, "step 1 is less than epoch 2"),
    ({"step": "8"}, "meta.step is '8'"),
    ({"best_epoch": 7}, "best_epoch 7 is after epoch 2"),
    ({"best_value": "low"}, "meta.best_value is 'low'"),
    ({"epochs_since_best": True}, "meta.epochs_since_best is True"),
    ({"step": None}, "meta.step is None"),
])
def test_damaged_checkpoint_meta_is_a_one_line_error_that_changes_nothing(trained, spec, damage,
                                                                         field):
    state, meta = load_checkpoint(trained / "last.npz")
    save_checkpoint(trained / "last.npz", {name.removeprefix("params/"): value
                                           for name, value in state.items()}, {**meta, **damage})
    before = files_of(trained)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"),
                                 trained / "last.npz")
    assert "damaged checkpoint" in line and field in line and "copy best.npz over it" in line
    assert files_of(trained) == before  # metrics.jsonl keeps its rows


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_checkpoint_with_weights_that_are_not_finite_is_a_one_line_error(trained, spec,
                                                                           tmp_path, bad):
    """eval exited 0 with a NaN loss, predict wrote NaN outputs, and export blamed its own ONNX
    lowering; resume trained on from NaN."""
    for name in ("best.npz", "last.npz"):
        state, meta = load_checkpoint(trained / name)
        state = {key.removeprefix("params/"): value for key, value in state.items()}
        state["dense_2.weight"] = np.full_like(state["dense_2.weight"], bad)
        save_checkpoint(trained / name, state, meta)
    before = files_of(trained)
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 2)))
    commands = [("train", spec, "--resume", trained, "--epochs", 3, "--quiet"),
                ("eval", trained), ("predict", trained, tmp_path / "x.npz", "--out",
                                    tmp_path / "y.npy"),
                ("export", trained, "--out", tmp_path / "m.onnx")]
    for command in commands:
        line = assert_one_line_error(invoke(*command), trained)
        assert "'dense_2.weight' holds NaN or inf" in line, line
    assert files_of(trained) == before
    assert not (tmp_path / "y.npy").exists() and not (tmp_path / "m.onnx").exists()


def test_a_refused_resume_leaves_the_lock_files_pid_as_it_was(trained, spec):
    """The pid a resume writes into nnrun.lock goes back when the resume is refused before it
    writes anything (here: a damaged checkpoint); one that trains leaves its own."""
    state, meta = load_checkpoint(trained / "last.npz")
    good = (trained / "last.npz").read_bytes()
    (trained / LOCK).write_text("12345\n")
    save_checkpoint(trained / "last.npz", {name.removeprefix("params/"): value
                                           for name, value in state.items()},
                    {**meta, "step": None})
    assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"),
                          trained / "last.npz")
    assert (trained / LOCK).read_text() == "12345\n"
    (trained / "last.npz").write_bytes(good)
    assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"))
    assert (trained / LOCK).read_text() != "12345\n"


def test_a_nan_best_value_resumes_and_the_next_epoch_beats_it(trained, spec):
    """A first epoch whose validation diverged stores a nan best: a checkpoint as good as any,
    and any later epoch is better."""
    state, meta = load_checkpoint(trained / "last.npz")
    save_checkpoint(trained / "last.npz", {name.removeprefix("params/"): value
                                           for name, value in state.items()},
                    {**meta, "best_value": float("nan")})
    assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"))
    _, meta = load_checkpoint(trained / "last.npz")
    assert meta["epoch"] == 3 and meta["best_epoch"] == 3 and np.isfinite(meta["best_value"])


def huge_header_npz(path: Path, shape: tuple) -> Path:
    """An npz whose one member claims `shape` float32 values and holds 16 bytes."""
    import zipfile

    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(b"\0" * 16)
    return path


def test_an_npz_whose_header_claims_4e12_values_is_refused(tmp_path, trained):
    path = huge_header_npz(tmp_path / "huge.npz", (4_000_000_000_000,))
    line = assert_one_line_error(invoke("predict", trained, path, "--out", tmp_path / "p.npy"), path)
    assert "declares" in line
    (trained / "best.npz").unlink()
    huge_header_npz(trained / "best.npz", (4_000_000_000_000,))
    assert_one_line_error(invoke("eval", trained), trained / "best.npz")


def test_a_torn_last_metrics_line_is_repaired_on_resume(trained, spec):
    with open(trained / "metrics.jsonl", "a") as stream:
        stream.write('{"epoch": 3, "train_lo')  # what a full disk leaves
    result = assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 3))
    assert "torn last line" in result.stderr
    assert [row["epoch"] for row in rows(trained)] == [1, 2, 3]


def test_a_damaged_middle_metrics_line_names_the_file_and_line(trained, spec):
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    (trained / "metrics.jsonl").write_text("garbage\n" + lines[1] + "\n")
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"),
                          trained / "metrics.jsonl")
    # not "delete that line", which the resume then refuses (the epoch's row is missing)
    assert "line 1 is damaged" in line and "restore the file from a backup" in line


def test_a_run_with_a_checkpoint_but_no_spec_is_refused_and_kept(trained, spec):
    """Resumed without its spec.yaml, a run took changed settings with no check and no record."""
    (trained / "spec.yaml").unlink()
    (trained / LOCK).write_text("12345\n")
    before = files_of(trained)
    result = invoke("train", spec, "--resume", trained, "--epochs", 3, "--set",
                    "optimizer.lr=0.5", "--set", "seed=7", "--quiet")
    line = assert_one_line_error(result, trained)
    assert "has a checkpoint (last.npz) but no spec.yaml; restore spec.yaml" in line
    assert files_of(trained) == before and (trained / LOCK).read_text() == "12345\n"


@pytest.mark.parametrize("metrics, changes, named", [
    (None, b"\xff\xfe\x00\x9c binary", "spec-changes.jsonl: is damaged (not UTF-8 text)"),
    (None, b'{"resumed_after_epoch": 1}\nnot json\n', "spec-changes.jsonl: line 2 is damaged"),
    (None, b'{"resumed_after_epoch": 1' + b"0" * 4400 + b'}\n',  # past Python's digit limit
     "spec-changes.jsonl: line 1 is damaged"),
    (b"\xff\xfe\x00\x9c binary", b"\xff\xfe\x00\x9c binary", "metrics.jsonl: lacks the rows"),
])
def test_damaged_files_a_resume_reads_are_refused_before_anything_changes(trained, spec, metrics,
                                                                            changes, named):
    """A binary spec-changes.jsonl crashed resume (UnicodeDecodeError) after metrics.jsonl was
    rewritten (to 0 bytes, when it was binary too) and the lock had the new pid."""
    if metrics is not None:
        (trained / "metrics.jsonl").write_bytes(metrics)
    (trained / "spec-changes.jsonl").write_bytes(changes)
    (trained / LOCK).write_text("12345\n")
    before = files_of(trained)
    result = invoke("train", spec, "--resume", trained, "--epochs", 3, "--set",
                    "optimizer.lr=0.5", "--allow-changes", "--quiet")
    assert named in assert_one_line_error(result, trained)
    assert files_of(trained) == before and (trained / LOCK).read_text() == "12345\n"


@pytest.mark.parametrize("content, missing", [
    (b"", "epochs 1-2"), (b"\xff\xfe\x00\x9c", "epochs 1-2 (its last line is torn)"),
    (None, "epoch 2")])
def test_metrics_without_the_rows_of_the_checkpoints_epochs_are_refused(trained, spec, content,
                                                                        missing):
    """An empty metrics.jsonl beside a checkpoint of epoch 2: the resumed run's history held
    epoch 3 only."""
    first_row = (trained / "metrics.jsonl").read_text().splitlines()[0] + "\n"
    (trained / "metrics.jsonl").write_bytes(first_row.encode() if content is None else content)
    before = files_of(trained)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3,
                                        "--quiet"), trained / "metrics.jsonl")
    assert f"lacks the rows of {missing}, which last.npz has trained" in line
    assert files_of(trained) == before


def test_a_checkpoint_claiming_an_epoch_far_past_its_rows_is_refused_at_once(trained, spec):
    """A hostile file's meta, consistent in itself at epoch 10^15: the check of the missing
    rows built a set of every epoch, gigabytes, deaf to SIGTERM until memory ran out."""
    state, meta = load_checkpoint(trained / "last.npz")
    epoch = 10**15
    save_checkpoint(trained / "last.npz", {name.removeprefix("params/"): value
                                           for name, value in state.items()},
                    {**meta, "epoch": epoch, "step": epoch,
                     "rng": {**meta["rng"], "next_epoch": epoch + 1}})
    before = files_of(trained)
    started = time.perf_counter()
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3,
                                        "--quiet"), trained / "metrics.jsonl")
    assert time.perf_counter() - started < 30
    assert "lacks the rows of epochs 3-1000000000000000, which last.npz has trained" in line
    assert files_of(trained) == before


@pytest.mark.parametrize("order", [[0, 1, 0, 1], [1, 0]])
def test_metrics_whose_epochs_repeat_or_go_back_are_refused(trained, spec, order):
    """A metrics.jsonl joined to itself (epochs 1, 2, 1, 2): the resume went on to 1, 2, 1, 2, 3."""
    rows = (trained / "metrics.jsonl").read_text().splitlines()
    (trained / "metrics.jsonl").write_text("".join(rows[i] + "\n" for i in order))
    before = files_of(trained)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3,
                                        "--quiet"), trained / "metrics.jsonl")
    assert "the row of epoch 1 comes after the row of epoch 2" in line
    assert files_of(trained) == before


@pytest.mark.parametrize("name", ["best.npz", "last.npz", "summary.json", "spec-changes.jsonl"])
def test_a_run_file_replaced_by_a_directory_is_refused_before_training(trained, spec, name):
    """best.npz a directory: the resume failed writing its checkpoint, after metrics.jsonl had
    epoch 3's row."""
    (trained / name).unlink(missing_ok=True)
    (trained / name).mkdir()
    before = {path.name: path.read_bytes() for path in trained.iterdir()
              if path.is_file() and path.name != LOCK}
    for option in ("--resume", "--out"):
        result = invoke("train", spec, option, trained, "--epochs", 3, "--quiet")
        line = assert_one_line_error(result, trained / name)
        assert "is not a regular file" in line
    assert {path.name: path.read_bytes() for path in trained.iterdir()
            if path.is_file() and path.name != LOCK} == before


def test_a_float64_checkpoint_does_not_turn_a_float32_run_into_float64(trained, spec):
    state, meta = load_checkpoint(trained / "last.npz")
    save_checkpoint(trained / "last.npz",
                    {name.removeprefix("params/"): value.astype(np.float64)
                     for name, value in state.items()}, meta)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"),
                          trained / "last.npz")
    assert "float64" in line and "float32" in line
    # written for this spec (its meta's hash): the file was changed, not the spec (the docs
    # walk: it said to resume with the dtype the run was trained with, which it was)
    assert "damaged checkpoint" in line and "copy best.npz over it" in line
    assert "resume with the dtype" not in line


# --- write errors ---------------------------------------------------------------------------


def test_out_under_a_file_is_a_one_line_error(tmp_path, spec):
    (tmp_path / "file").write_text("")
    assert_one_line_error(invoke("train", spec, "--out", tmp_path / "file" / "run", "--quiet"),
                   tmp_path / "file")


def test_a_full_disk_is_a_one_line_error(tmp_path, spec):
    # RLIMIT_FSIZE makes every write past 1 KB fail with EFBIG, as a full disk fails with ENOSPC:
    # the spec and metrics fit, a checkpoint does not.
    limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))"
    process = subprocess.run(
        [sys.executable, "-c", f"{limit}; from nnrun.cli import main; main()",
         "train", str(spec), "--out", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "ulimit -f" in lines[0] and str(tmp_path / "run") in lines[0]
    assert not list((tmp_path / "run").glob(".*.npz.*"))  # no half-written temporary file
    # what is kept and how to go on, as a signal's line says (an audit of file-system misuse)
    assert lines[0].endswith(f"no checkpoint was written yet (resuming starts from epoch 1); "
                             f"resume with: nnrun train {tmp_path / 'run' / 'spec.yaml'} "
                             f"--resume {tmp_path / 'run'}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_out_is_a_one_line_error(tmp_path, spec, trained):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    assert_one_line_error(invoke("train", spec, "--out", read_only / "run", "--quiet"), read_only)
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 2)))
    assert_one_line_error(invoke("predict", trained, tmp_path / "in.npz", "--out", read_only / "p.npy"),
                   read_only)


# --- signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("number, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, spec, number, code):
    spec.write_text(SPEC.replace("epochs: 2", "epochs: 1000"))
    out = tmp_path / "run"
    process = nnrun_process("train", spec, "--out", out, "--quiet")
    wait_for_epochs(out, 2, process)
    process.send_signal(number)
    assert process.wait(timeout=60) == code
    message = process.stderr.read().strip().splitlines()
    assert len(message) == 1 and f"nnrun train {out / 'spec.yaml'} --resume {out}" in message[0]
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["epoch"] >= 2 and f"epoch {meta['epoch']}" in message[0]
    assert [row["epoch"] for row in rows(out)] == list(range(1, meta["epoch"] + 1))
    # The command of the message, with one more epoch.
    assert_ok(invoke("train", out / "spec.yaml", "--resume", out, "--epochs", meta["epoch"] + 1, "--quiet"))
    assert [row["epoch"] for row in rows(out)] == list(range(1, meta["epoch"] + 2))


def test_a_double_ctrl_c_still_says_what_is_kept_and_how_to_resume(tmp_path, spec):
    """The run-directory audit: a second SIGINT a few ms after the first (a double Ctrl-C)
    replaced the line naming the checkpoint and the resume command with a bare "interrupted:
    stopped by SIGINT" (6 of 47 trials). Once a signal stops the run, later ones are let go."""
    spec.write_text(SPEC.replace("epochs: 2", "epochs: 1000"))
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        process = nnrun_process("train", spec, "--out", out, "--quiet")
        wait_for_epochs(out, 2, process)
        process.send_signal(signal.SIGINT)
        time.sleep(0.002 * attempt)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
        message = process.stderr.read().strip().splitlines()
        assert code == 130, message
        assert len(message) == 1 and "is intact in" in message[0] and "resume with" in message[0]


# A child whose training a SIGINT stops after 2 epochs, and another SIGINT lands just after
# the guard has handed the command line's handlers back (as a burst of Ctrl-C does).
LATE_SIGNAL = """
import os, signal, sys
import nnrun.runtime.checkpoint as checkpoint
import nnrun.runtime.interrupts as interrupts
saved, leave = checkpoint.save_checkpoint, interrupts.InterruptGuard.__exit__
def save(path, state, meta):
    saved(path, state, meta)
    if path.name == "last.npz" and meta["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGINT)
def exit_(self, *raised):
    leave(self, *raised)
    if raised[0] is not None and issubclass(raised[0], interrupts.Interrupted):
        os.kill(os.getpid(), signal.SIGINT)
checkpoint.save_checkpoint, interrupts.InterruptGuard.__exit__ = save, exit_
from nnrun.entry import main
sys.argv = ["nnrun", *sys.argv[1:]]
main()
"""


def test_a_signal_after_the_guard_let_go_keeps_the_line_of_what_is_kept(tmp_path, spec):
    """The review: a Ctrl-C landing after the guard put the command line's handlers back still
    replaced the line with a bare "stopped by SIGINT"."""
    spec.write_text(SPEC.replace("epochs: 2", "epochs: 1000"))
    done = subprocess.run([sys.executable, "-c", LATE_SIGNAL, "train", str(spec), "--out",
                           str(tmp_path / "run"), "--quiet"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130, done.stderr
    assert "the checkpoint of epoch 2 is intact" in done.stderr and "resume with" in done.stderr


def test_signals_after_the_one_that_stopped_the_run_are_let_go():
    from nnrun.runtime.interrupts import Interrupted, InterruptGuard

    with pytest.raises(Interrupted), InterruptGuard(deferring=True) as guard:
        guard._handle(signal.SIGINT, None)  # noted at a safe point
        try:
            guard.check()
        finally:
            guard._handle(signal.SIGINT, None)  # the stop is under way: no second Interrupted
    from nnrun.runtime.interrupts import raise_on_signal

    raise_on_signal(signal.SIGINT, None)  # the command line's handler, back after the guard
    with pytest.raises(Interrupted), InterruptGuard(deferring=True) as fresh:  # a new training
        fresh._handle(signal.SIGINT, None)
        fresh._handle(signal.SIGTERM, None)  # a second signal before the stop never waits


# --- resume keeps the record true -----------------------------------------------------------


def test_resume_refuses_a_changed_learning_rate_unless_allowed(trained, spec):
    spec.write_text(SPEC.replace("lr: 0.05", "lr: 0.01"))
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet"),
                          trained)
    assert "optimizer.lr: 0.05 -> 0.01" in line
    for setting in ("seed=3", "data.n_samples=80", "train.batch_size=8"):
        result = invoke("train", spec, "--resume", trained, "--set", setting, "--quiet")
        assert_one_line_error(result, setting.split("=")[0])
    original = (trained / "spec.yaml").read_text()
    assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet", "--allow-changes"))
    (entry,) = change_records(trained)
    assert entry["resumed_after_epoch"] == 2 and entry["previous_spec"] == original
    assert entry["changes"]["optimizer.lr"] == {"old": 0.05, "new": 0.01}
    assert entry["changes"]["train.epochs"] == {"old": 2, "new": 3}
    assert "lr: 0.01" in (trained / "spec.yaml").read_text()


def test_resume_takes_other_metrics_without_allow_changes(trained, spec):
    """Issue 9: a change that alters the training is refused, 'anything but train.epochs and
    display options'; the issues audit found an added metric refused. Metrics measure the
    training without changing it: the resumed rows carry the new one, the earlier ones not."""
    result = invoke("train", spec, "--resume", trained, "--epochs", 3, "--quiet",
                    "--set", "train.metrics=[accuracy, mae]")
    assert_ok(result)
    last = rows(trained)[-1]
    assert last["epoch"] == 3 and "train_mae" in last and "train_mae" not in rows(trained)[0]
    assert "{type: mae}" in (trained / "spec.yaml").read_text()


def test_a_record_of_an_earlier_version_still_allows_what_it_allowed(tmp_path, monkeypatch):
    """A resume with --allow-changes that stopped before its first checkpoint keeps its
    record, and resuming again with the same spec needs no --allow-changes. Records written
    before field names took brackets say data.augment.0.max_shift; the review found them no
    longer matching data.augment[0].max_shift, and the resume refused."""
    import re

    import nnrun
    from nnrun.runtime.interrupts import Interrupted
    from nnrun.runtime.train import Trainer

    text = ("name: aug\nseed: 0\ndata: {dataset: digits, validation_split: 0.1, limit: 200, "
            "augment: [{type: random_shift, max_shift: 1}]}\nmodel:\n  layers:\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n"
            "optimizer: {type: sgd, lr: 0.1}\ntrain: {epochs: 1, batch_size: 32}\n")
    out = tmp_path / "run"
    nnrun.train(nnrun.load_spec_text(text), out_dir=out, quiet=True)
    changed = nnrun.load_spec_text(text.replace("max_shift: 1", "max_shift: 2"),
                                   overrides=["train.epochs=2"])

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "train_epoch", stopped)
        with pytest.raises(Interrupted):
            nnrun.train(changed, resume=out, quiet=True, allow_changes=True)
    records = out / "spec-changes.jsonl"
    assert "data.augment[0].max_shift" in records.read_text()
    records.write_text(re.sub(r"\[(\d+)\]", r".\1", records.read_text()))  # as written then
    nnrun.train(changed, resume=out, quiet=True)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_hand_edited_run_spec_is_a_change_like_any_other(trained, monkeypatch):
    """The run-directory audit: lr edited in RUN/spec.yaml, then the documented resume
    command, trained on at the new rate without a word, and the record said the run had
    always had it."""
    run_spec = trained / "spec.yaml"
    original = run_spec.read_text()
    run_spec.write_text(original.replace("lr: 0.05", "lr: 0.01"))
    line = assert_one_line_error(invoke("train", run_spec, "--resume", trained, "--epochs", 3,
                                        "--quiet"), trained)
    assert "optimizer.lr: 0.05 -> 0.01" in line and "undo the edit of" in line
    result = assert_ok(invoke("train", run_spec, "--resume", trained, "--epochs", 3,
                              "--allow-changes"))
    assert "spec.yaml: edited since its checkpoint was written" in result.stderr
    (entry,) = change_records(trained)
    assert entry["previous_spec"] == original
    assert entry["changes"]["optimizer.lr"] == {"old": 0.05, "new": 0.01}
    assert [row["lr"] for row in rows(trained)] == [0.05, 0.05, 0.01]
    # train.epochs edited there is free, as on the command line
    run_spec.write_text(run_spec.read_text().replace("epochs: 3", "epochs: 4"))
    assert_ok(invoke("train", run_spec, "--resume", trained, "--quiet"))
    assert len(rows(trained)) == 4


@pytest.mark.parametrize("kept_bytes", [64 * 1024, 10])
def test_a_checkpoint_of_another_model_than_spec_yaml_says_both_what_and_what_to_do(
        trained, tmp_path, monkeypatch, kept_bytes):
    """The errors audit: a layer's units edited in RUN/spec.yaml met 'checkpoint was written
    for another spec (hash ..., this spec ...); use the run directory of this spec', its own
    directory. The review: an edit cannot be told from another run's checkpoint copied in with
    its times kept (cp -p), so the line names the fields where the checkpoint kept its spec
    (not over 64 KiB) and says what to do in either case; the run is refused in both."""
    from nnrun.runtime import checkpoint

    monkeypatch.setattr(checkpoint, "SPEC_TEXT_KEPT_BYTES", kept_bytes)
    run = tmp_path / "edited"
    assert_ok(invoke("train", trained / "spec.yaml", "--out", run, "--quiet"))
    run_spec = run / "spec.yaml"
    run_spec.write_text(run_spec.read_text().replace("units: 4", "units: 5"))
    line = assert_one_line_error(invoke("train", run_spec, "--resume", run, "--epochs", 3),
                                 "last.npz")
    assert f"written for another spec than {run_spec}" in line
    assert f"if {run_spec} was edited since, undo the edit" in line
    if kept_bytes > 10:  # the trained spec is known: the arrays that no longer fit are named
        assert (f"save a copy of {run / 'last.npz'} without the arrays the new model has no "
                "place for (params/") in line
    else:  # an absolute path (the review: runs/r/last.npz resolved against the spec's directory)
        assert f"--set model.init_from={run.resolve() / 'last.npz'}" in line
    assert "another run's, resume that run's own directory" in line
    assert ("model.layers[0].units: 4 there, 5 here" in line) == (kept_bytes > 10)
    # another run's checkpoint copied in with its times kept (cp -p), as old as spec.yaml
    import shutil

    other = tmp_path / "other"
    other_spec = tmp_path / "other.yaml"
    other_spec.write_text(SPEC.replace("units: 4", "units: 6"))
    assert_ok(invoke("train", other_spec, "--out", other, "--quiet"))
    run_spec.write_text(run_spec.read_text().replace("units: 5", "units: 4"))  # undone
    for name in ("last.npz", "best.npz"):
        shutil.copy2(other / name, run / name)
    line = assert_one_line_error(invoke("train", run_spec, "--resume", run, "--epochs", 3),
                                 "last.npz")
    assert "resume that run's own directory" in line
    assert ("model.layers[0].units: 6 there, 4 here" in line) == (kept_bytes > 10)


@pytest.mark.parametrize("kept_bytes", [64 * 1024, 10])
def test_a_resume_stopped_before_its_first_checkpoint_resumes_with_its_own_spec(
        trained, monkeypatch, kept_bytes):
    """The review: a resume with allowed changes writes spec.yaml before its first checkpoint;
    stopped there (a signal, a diverged loss), the spec.yaml it wrote was taken for a hand
    edit, and the printed resume command was refused (for a spec too long to keep, every
    resume)."""
    from nnrun.runtime import checkpoint

    monkeypatch.setattr(checkpoint, "SPEC_TEXT_KEPT_BYTES", kept_bytes)
    stopped_resume(trained, "--epochs", 3, "--set", "optimizer.lr=0.01")
    result = assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained))
    assert "edited since" not in result.stderr
    assert [row["lr"] for row in rows(trained)] == [0.05, 0.05, 0.01]
    assert len(change_records(trained)) == 1


def test_a_stopped_resume_resumed_again_keeps_its_changes_effects_and_one_record(tmp_path,
                                                                                  spec):
    """The second review: resumed again with the printed command, a resume that had extended a
    cosine run and stopped before its first checkpoint trained without the schedule's restart
    (its changes were taken as no change), though the record said they were made."""
    spec.write_text(SPEC.replace("lr: 0.05}", "lr: 0.05, schedule: {type: cosine}}"))
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    expected = [row["lr"] for row in stopped_resume(out, "--epochs", 4)]
    assert_ok(invoke("train", out / "spec.yaml", "--resume", out, "--quiet"))
    assert [row["lr"] for row in rows(out)] == expected == [0.05, 0.025, 0.05, 0.025]
    (entry,) = change_records(out)
    assert entry["changes"] == {"train.epochs": {"old": 2, "new": 4}}
    assert "epochs: 2" in entry["previous_spec"]


def test_a_stopped_resume_then_one_without_changes_puts_spec_and_record_back(trained, spec):
    """The third review: after a resume with allowed changes stopped before its first
    checkpoint, a resume with the trained spec left spec.yaml and spec-changes.jsonl saying the
    stopped resume's change, and the next printed resume command was then refused."""
    original = (trained / "spec.yaml").read_text()
    stopped_resume(trained, "--epochs", 3, "--set", "optimizer.lr=0.01")
    assert_ok(invoke("train", spec, "--resume", trained, "--quiet"))  # the trained settings
    assert (trained / "spec.yaml").read_text() == original
    assert not (trained / "spec-changes.jsonl").exists()  # no record left: no file
    assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained, "--quiet"))


def test_a_run_spec_written_by_an_earlier_nnrun_resumes_without_being_called_edited(tmp_path,
                                                                                   spec):
    """spec.yaml in an earlier nnrun's words (escapes where this one writes UTF-8): a resume
    kept it, but its checkpoints named the text this nnrun would write, and the next resume
    said 'spec.yaml: edited since its checkpoint was written' of a file nobody edited."""
    from nnrun.runtime.checkpoint import spec_text_meta

    run = tmp_path / "run"
    spec.write_text(SPEC.replace("epochs: 2", "epochs: 300"))
    process = nnrun_process("train", spec, "--out", run, "--quiet")
    wait_for_epochs(run, 2, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    earlier = (run / "spec.yaml").read_text() + "# as an earlier nnrun wrote it\n"
    write_text_atomically(run / "spec.yaml", earlier)
    state, meta = load_checkpoint(run / "last.npz")
    save_checkpoint(run / "last.npz", {name.removeprefix("params/"): value
                                       for name, value in state.items()},
                    {**meta, **spec_text_meta(earlier)})
    assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--quiet"))  # to epoch 300
    assert (run / "spec.yaml").read_text() == earlier
    result = invoke("train", run / "spec.yaml", "--resume", run, "--epochs", 301)
    assert_ok(result)
    assert "edited since" not in result.output and len(rows(run)) == 301


def test_a_stopped_resume_then_a_hand_edit_leaves_one_record(trained):
    """The third review: the stopped resume's record stayed beside the one of the resume that
    trained, two records for one point of the run."""
    run_spec = trained / "spec.yaml"
    stopped_resume(trained, "--epochs", 3, "--set", "optimizer.lr=0.5")
    run_spec.write_text(run_spec.read_text().replace("lr: 0.5", "lr: 0.01"))
    assert_ok(invoke("train", run_spec, "--resume", trained, "--allow-changes", "--quiet"))
    (entry,) = change_records(trained)
    assert entry["changes"]["optimizer.lr"] == {"old": 0.05, "new": 0.01}
    assert [row["lr"] for row in rows(trained)] == [0.05, 0.05, 0.01]


def _as_an_older_checkpoint(path: Path) -> None:
    """The checkpoint as an nnrun before this one wrote it: no spec digest, no spec text."""
    state, meta = load_checkpoint(path)
    save_checkpoint(path, state, {k: v for k, v in meta.items()
                                  if k not in ("spec_sha256", "spec_text")})


@pytest.mark.parametrize("older", [False, True])
def test_records_of_resumes_that_trained_nothing_kept_go(trained, older):
    """The fourth review: a resume after a diverged one, with spec.yaml put back by hand, left
    the diverged resume's record (its change never trained); and for a checkpoint of an older
    nnrun, the diverged resume's spec.yaml was taken as the trained one."""
    if older:
        _as_an_older_checkpoint(trained / "last.npz")
    run_spec = trained / "spec.yaml"
    original = run_spec.read_text()
    stopped_resume(trained, "--epochs", 3, "--set", "optimizer.lr=0.5")
    if not older:
        run_spec.write_text(original)  # put back by hand
    assert_ok(invoke("train", run_spec if not older else trained.parent / "tiny.yaml",
                     "--resume", trained, "--epochs", 3, "--quiet"))
    (entry,) = change_records(trained)
    assert entry["changes"] == {"train.epochs": {"old": 2, "new": 3}}
    assert entry["previous_spec"] == original
    assert [row["lr"] for row in rows(trained)] == [0.05, 0.05, 0.05]


def test_an_older_best_copied_back_takes_its_spec_from_the_first_later_record(trained):
    """The fifth review: an older checkpoint (no digest) copied back from best.npz took
    spec.yaml for its spec, trained at the later lr, and dropped the only record of it."""
    _as_an_older_checkpoint(trained / "best.npz")
    older_best = (trained / "best.npz").read_bytes()  # the resume below may write a new best
    best = load_checkpoint(trained / "best.npz")[1]["epoch"]
    assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained, "--epochs", 4,
                     "--set", "optimizer.lr=0.5", "--allow-changes", "--quiet"))
    (trained / "last.npz").write_bytes(older_best)
    assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained, "--quiet"))
    records = change_records(trained)
    assert records[-1]["resumed_after_epoch"] == best
    assert records[-1]["changes"]["optimizer.lr"] == {"old": 0.05, "new": 0.5}


def test_an_epochs_edit_keeps_what_a_stopped_resume_was_allowed(trained):
    """The fifth review: train.epochs edited in a stopped resume's spec.yaml (a free change)
    made that resume's allowed lr change refused as an edit."""
    run_spec = trained / "spec.yaml"
    stopped_resume(trained, "--epochs", 3, "--set", "optimizer.lr=0.01")
    run_spec.write_text(run_spec.read_text().replace("epochs: 3", "epochs: 4"))
    assert_ok(invoke("train", run_spec, "--resume", trained, "--quiet"))
    assert [row["lr"] for row in rows(trained)] == [0.05, 0.05, 0.01, 0.01]


def test_a_resume_that_trains_nothing_records_nothing_and_keeps_the_trained_spec(trained):
    """The fourth review: changes a resume could not train with (no epoch left; early stopping
    keeping the run stopped) were recorded, and spec.yaml said them."""
    original = (trained / "spec.yaml").read_text()
    assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained, "--set",
                     "optimizer.lr=0.5", "--allow-changes", "--quiet"))  # epochs 2 of 2 done
    assert (trained / "spec.yaml").read_text() == original
    assert not (trained / "spec-changes.jsonl").exists()


def test_best_copied_over_last_resumes_a_long_spec_extended_before(trained, monkeypatch):
    """The fourth review: past 64 KiB (no kept text), the spec the best epoch trained with is in
    the record of the resume after a later epoch: it was not looked for there."""
    from nnrun.runtime import checkpoint

    monkeypatch.setattr(checkpoint, "SPEC_TEXT_KEPT_BYTES", 10)
    assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained, "--epochs", 3,
                     "--quiet"))  # epoch 2's checkpoint (kept no text) now superseded
    assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained, "--epochs", 4,
                     "--quiet"))
    (trained / "last.npz").write_bytes((trained / "best.npz").read_bytes())
    epoch = load_checkpoint(trained / "last.npz")[1]["epoch"]
    assert_ok(invoke("train", trained / "spec.yaml", "--resume", trained, "--quiet"))
    assert len(rows(trained)) == 4
    records = change_records(trained)
    # the records after the best epoch went; the resume from it made its own, if it changed
    assert [r["resumed_after_epoch"] for r in records if r["resumed_after_epoch"] >= epoch] \
        in ([], [epoch])


def test_a_hand_edit_a_resume_does_not_take_is_undone(trained, spec):
    """The review: resumed with the user's own spec (the trained settings), a run whose
    spec.yaml had been edited by hand kept the edit, which then said what the run was not
    trained with."""
    run_spec = trained / "spec.yaml"
    original = run_spec.read_text()
    run_spec.write_text(original.replace("lr: 0.05", "lr: 0.5"))
    assert_ok(invoke("train", spec, "--resume", trained, "--quiet"))
    assert run_spec.read_text() == original and not (trained / "spec-changes.jsonl").exists()


def test_a_long_run_spec_edited_by_hand_is_refused(trained, monkeypatch):
    """Past 64 KiB the checkpoint keeps only the spec's digest: an edit is refused, not
    guessed at."""
    from nnrun.runtime import checkpoint

    monkeypatch.setattr(checkpoint, "SPEC_TEXT_KEPT_BYTES", 10)
    run_spec = trained / "spec.yaml"
    assert_ok(invoke("train", run_spec, "--resume", trained, "--epochs", 3, "--quiet"))
    run_spec.write_text(run_spec.read_text().replace("lr: 0.05", "lr: 0.01"))
    line = assert_one_line_error(invoke("train", run_spec, "--resume", trained, "--epochs", 4,
                                        "--quiet", "--allow-changes"), run_spec)
    assert "is not the spec its checkpoint (last.npz, epoch 3) was trained with" in line


def test_extending_a_cosine_run_restarts_its_schedule_and_says_so(tmp_path, spec):
    spec.write_text(SPEC.replace("lr: 0.05}", "lr: 0.05, schedule: {type: cosine}}"))
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    assert [row["lr"] for row in rows(out)] == [0.05, 0.025]
    result = assert_ok(invoke("train", spec, "--resume", out, "--epochs", 4))
    assert "cosine schedule restarts at epoch 3" in result.stderr
    assert [row["lr"] for row in rows(out)][2:] == [0.05, 0.025]
    _, meta = load_checkpoint(out / "last.npz")
    assert meta["schedule_start"] == 2


@pytest.mark.parametrize("pruning", ["", ", pruning: {target_sparsity: 0.5, end_epoch: 1}"])
def test_an_early_stopped_run_does_not_train_again_on_resume(tmp_path, spec, pruning):
    spec.write_text(SPEC.replace("lr: 0.05", "lr: 1.0e-9").replace(
        "epochs: 2", "epochs: 10, early_stopping: {patience: 1, min_delta: 0.5}" + pruning))
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    assert len(rows(out)) == 2
    for _ in range(2):
        result = assert_ok(invoke("train", spec, "--resume", out))
        assert "stopped early at epoch 2; nothing to train" in result.stderr
        assert len(rows(out)) == 2
    # More epochs change nothing either: no "schedule restarts" line before "nothing to train",
    # and no change recorded for a resume that trains none (a crash audit)
    spec_before = (out / "spec.yaml").read_text()
    spec.write_text(spec.read_text().replace("lr: 1.0e-9", "lr: 1.0e-9, schedule: cosine"))
    result = assert_ok(invoke("train", spec, "--resume", out, "--epochs", 20,
                              "--allow-changes"))
    assert "stopped early at epoch 2; nothing to train" in result.stderr
    assert "restarts" not in result.stderr and len(rows(out)) == 2
    assert (out / "spec.yaml").read_text() == spec_before
    assert not (out / "spec-changes.jsonl").exists()


def test_a_resume_with_no_epoch_left_says_so(tmp_path, spec):
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    result = assert_ok(invoke("train", spec, "--resume", out, "--epochs", 2))
    assert "2 epoch(s) trained already, train.epochs is 2; nothing to train" in result.stderr
    assert "--epochs above 2" in result.stderr and len(rows(out)) == 2
    assert "no epoch trained now; the run has 2 epoch(s)" in result.stderr
    assert "trained 2 epoch(s)" not in result.stderr


def test_a_resume_that_trains_nothing_refuses_changes_of_what_its_numbers_depend_on(tmp_path,
                                                                                    spec):
    """The review: such a resume keeps spec.yaml the run's, yet wrote preprocessing.npz and the
    final numbers under the changed data settings (eval then fed the model other inputs)."""
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    line = assert_one_line_error(invoke("train", out / "spec.yaml", "--resume", out,
                                        "--allow-changes", "--set", "data.normalize=scale"), out)
    assert line.endswith("this resume trains no epoch (its 2 epoch(s) are trained), so "
                         "data.normalize would change only the run's final numbers and stored "
                         "preprocessing, not what it was trained with; leave them out, or give "
                         "--epochs above 2 to train with them")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    # what changes nothing evaluated still resumes to nothing to train
    assert_ok(invoke("train", out / "spec.yaml", "--resume", out, "--allow-changes", "--set",
                     "optimizer.lr=0.5", "--quiet"))


def test_a_resume_that_changes_the_inputs_chooses_the_best_epoch_again(tmp_path, spec):
    """The review: best.npz of an epoch before --set seed=... (another permutation, another
    validation split) stayed the run's model, evaluated on the new preprocessing.npz."""
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet", "--set",
                     "train.early_stopping={monitor: train_loss, mode: max, patience: 9}"))
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == 1  # the worst loss
    result = assert_ok(invoke("train", out / "spec.yaml", "--resume", out, "--epochs", 3,
                              "--set", "seed=5", "--allow-changes"))
    assert "seed changed, so the best epoch is chosen again from epoch 3 on" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 3 and summary["final"]["epoch"] == 3
    from nnrun.runtime.spec_changes import evaluated_changes  # augmentation: training's alone

    assert evaluated_changes({"data.augment": {}, "data.limit": {}, "optimizer.lr": {},
                              "loss.label_smoothing": {}}) == ["data.limit",
                                                               "loss.label_smoothing"]


@pytest.mark.parametrize("number, words", [(13, "no permission"), (30, "read-only")])
def test_unwritable_out_is_a_one_line_error_even_for_root(tmp_path, spec, monkeypatch, number,
                                                          words):
    # Root writes into chmod 555 directories, so the errors of a read-only place are simulated
    # where the run directory is first written: its lock file, before any data loads.
    import nnrun.runtime.run_dir as run_dir

    def refuse(path, *args):
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr(run_dir.os, "open", refuse)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--quiet"),
                          tmp_path / "run" / LOCK)
    assert words in line


def test_kills_at_random_moments_of_real_training_then_resume_equal_an_uninterrupted_run(
        tmp_path, spec):
    spec.write_text(SPEC.replace("epochs: 2", "epochs: 200"))
    reference = tmp_path / "reference"
    assert_ok(invoke("train", spec, "--out", reference, "--quiet"))
    out = tmp_path / "killed"
    rng = np.random.default_rng(1)
    process = nnrun_process("train", spec, "--out", out, "--quiet")
    for _ in range(3):
        done = len(rows(out)) if (out / "metrics.jsonl").exists() else 0
        wait_for_epochs(out, done + 1, process)  # the resumed process trains
        time.sleep(rng.uniform(0, 0.3))
        process.kill()  # SIGKILL: no handler runs; only atomic writes can save the run
        process.wait()
        process = nnrun_process("train", spec, "--resume", out, "--quiet")
    assert process.wait(timeout=120) == 0, process.stderr.read()
    timing = ("epoch_s", "samples_per_s")
    strip = lambda run: [{k: v for k, v in row.items() if k not in timing} for row in rows(run)]
    assert strip(out) == strip(reference)
    reference_state, _ = load_checkpoint(reference / "last.npz")
    state, _ = load_checkpoint(out / "last.npz")
    assert all(np.array_equal(state[name], reference_state[name]) for name in reference_state)


def test_a_signal_noted_after_the_last_check_is_not_lost():
    from nnrun.runtime.interrupts import InterruptGuard, Interrupted

    with pytest.raises(Interrupted) as caught, InterruptGuard() as guard:
        with guard.safe_points():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs; the signal is only noted
            assert guard.received == signal.SIGTERM
    assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is given back


def test_a_signal_in_a_deferred_block_is_noted_for_the_caller():
    """The final evaluation of a data-parallel run: the ranks agree on a signal after it."""
    from nnrun.runtime.interrupts import InterruptGuard

    with InterruptGuard() as guard:
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert guard.received == signal.SIGTERM and not guard.deferring


def test_safe_points_in_a_deferred_block_leave_a_signal_to_the_blocks_caller():
    """A data-parallel run notes signals through the whole of train: the ranks agree on them
    where they meet, and no rank raises on its own at the end of the training loop."""
    from nnrun.runtime.interrupts import InterruptGuard, Interrupted

    with InterruptGuard() as guard, guard.deferred():
        with guard.safe_points():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert guard.received == signal.SIGTERM and guard.deferring
        with pytest.raises(Interrupted):  # loading and compiling: a signal noted before stops
            with guard.at_once():
                pass
        assert guard.deferring


def test_a_signal_in_an_at_once_block_stops_it_at_once():
    from nnrun.runtime.interrupts import InterruptGuard, Interrupted

    with InterruptGuard() as guard, guard.deferred():
        with pytest.raises(Interrupted), guard.at_once():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # not reached: the handler raises
        assert guard.deferring and guard.received is None


def test_a_full_disk_names_the_file_and_says_the_disk_is_full(tmp_path, spec, monkeypatch):
    import errno

    import nnrun.runtime.files as files

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", no_space)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--quiet"),
                          tmp_path / "run")
    assert "disk is full" in line
    assert not list((tmp_path / "run").glob(".*"))  # no temporary file left


@pytest.mark.parametrize("after_the_spec", [True, False], ids=["spec-written", "before-spec"])
def test_a_signal_while_the_run_begins_says_what_to_do(tmp_path, spec, monkeypatch,
                                                       after_the_spec):
    """Between the lock and epoch 1 (spec.yaml, preprocessing.npz being written): the line
    names the command that continues the run, or starts it again when it has no spec.yaml."""
    from nnrun.runtime.interrupts import Interrupted
    from nnrun.runtime.train import Trainer

    begin = Trainer._begin

    def interrupted_begin(self, run, changes):
        if after_the_spec:
            begin(self, run, changes)
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_begin", interrupted_begin)
    out = tmp_path / "my run;x"  # the commands are pasted into a shell: quoted
    result = invoke("train", spec, "--out", out, "--quiet")
    assert result.exit_code == 143
    if after_the_spec:
        assert result.stderr.strip() == (
            f"interrupted: stopped by SIGTERM; no checkpoint was written yet (resuming starts "
            f"from epoch 1); resume with: nnrun train '{out / 'spec.yaml'}' --resume '{out}'")
        monkeypatch.undo()
        assert_ok(invoke("train", out / "spec.yaml", "--resume", out, "--quiet"))  # as it says
    else:
        assert result.stderr.strip() == (f"interrupted: stopped by SIGTERM; nothing was trained; "
                                         f"start again with: nnrun train {spec} --out '{out}'")


@pytest.mark.parametrize("writing", ["write_spec", "write_metrics"])
def test_a_signal_while_a_new_run_writes_its_first_files_leaves_no_directory(tmp_path, spec,
                                                                           monkeypatch, writing):
    """The crash audit: a SIGTERM while spec.yaml was written left a new directory holding
    only nnrun.lock, where a run stopped before it began leaves none."""
    from nnrun.runtime.interrupts import Interrupted
    from nnrun.runtime.run_dir import RunDirectory

    write = getattr(RunDirectory, writing)

    def interrupted_write(self, *arguments):
        write(self, *arguments)  # written, and then the signal
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(RunDirectory, writing, interrupted_write)
    out = tmp_path / "runs" / "run"
    result = invoke("train", spec, "--out", out, "--quiet", "--set", "optimizer.lr=0.5")
    assert result.exit_code == 143
    assert result.stderr.strip().endswith(f"nothing was trained; start again with: nnrun train "
                                          f"{spec} --out {out} --set optimizer.lr=0.5")
    assert not (tmp_path / "runs").exists()


def test_a_signal_as_the_run_ends_says_it_is_complete(tmp_path, spec, monkeypatch):
    """The chaos audit: a SIGTERM after the final table, as the run let go of its lock, said
    only 'stopped by SIGTERM', as if there were something to resume."""
    from nnrun.runtime.interrupts import Interrupted
    from nnrun.runtime.run_dir import RunDirectory

    let_go = RunDirectory.__exit__

    def interrupted_exit(self, *exception):
        let_go(self, *exception)
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(RunDirectory, "__exit__", interrupted_exit)
    out = tmp_path / "run"
    result = invoke("train", spec, "--out", out, "--quiet")
    assert result.exit_code == 143 and (out / "summary.json").is_file()
    assert result.stderr.strip() == (f"interrupted: stopped by SIGTERM as the run ended; it is "
                                     f"complete in {out} (nothing to resume)")


@pytest.mark.parametrize("resuming", [False, True])
def test_a_signal_while_the_run_is_prepared_says_what_to_do(trained, spec, monkeypatch,
                                                            resuming):
    """Before the run begins (its directory checked, data loaded, model compiled): a resume's
    line said only 'stopped by SIGINT' (a crash audit). The command it gives keeps what was
    asked (the extension, the --set): without it, a new run started again as another model."""
    from nnrun.runtime import train as training
    from nnrun.runtime.interrupts import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(training, "Trainer", interrupted)
    before = files_of(trained)
    if resuming:
        result = invoke("train", trained / "spec.yaml", "--resume", trained, "--epochs", 3,
                        "--set", "optimizer.lr=0.5", "--allow-changes")
        advice = (f"the run directory is as it was; resume with: nnrun train "
                  f"{trained / 'spec.yaml'} --resume {trained} --set optimizer.lr=0.5 "
                  "--epochs 3 --allow-changes")  # as typed (the design audit)
    else:
        out = trained.parent / "new"
        result = invoke("train", spec, "--out", out, "--set", "model.layers[0].units=3")
        advice = (f"nothing was trained; start again with: nnrun train {spec} --out {out} "
                  "--set 'model.layers[0].units=3'")
    assert result.exit_code == 130
    assert result.stderr.strip() == f"interrupted: stopped by SIGINT; {advice}"
    assert files_of(trained) == before


def test_eval_of_a_run_stopped_early_on_says_how_to_go_on(tmp_path, spec):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("12345\n")
    line = assert_one_line_error(invoke("eval", out), out)
    assert "a run stopped before it wrote its spec.yaml; nothing was trained" in line
    (out / "spec.yaml").write_text(spec.read_text())
    line = assert_one_line_error(invoke("eval", out), out)
    assert line.endswith(f"no checkpoint yet (the run stopped in its first epoch); continue it "
                         f"with nnrun train {out / 'spec.yaml'} --resume {out}")


@pytest.mark.parametrize("command", ["eval", "summary"])
def test_a_run_that_diverged_before_its_first_checkpoint_says_to_change_the_spec(
        tmp_path, spec, command):
    """The course audit: 'continue it with --resume' diverged again, from the same start."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "spec.yaml").write_text(spec.read_text())
    (out / "metrics.jsonl").write_text('{"epoch": 1, "diverged_at_batch": 4, '
                                       '"train_loss": 8.9e+21}\n')
    line = assert_one_line_error(invoke(command, out), out)
    assert line.endswith(f"no checkpoint: the training diverged at epoch 1, step 4, before the "
                         "first one was written; change the spec as train's message said (its "
                         "learning rate, initial weights or clipping) and start the run over "
                         f"with nnrun train {out / 'spec.yaml'} --out {out}"), line
    assert "--resume" not in line


def test_a_trained_run_that_lost_its_spec_says_to_restore_it(trained, tmp_path):
    """Its checkpoints are there: 'nothing was trained, start it again' was false, and train
    refuses that command over a run."""
    (trained / "spec.yaml").unlink()
    x = tmp_path / "x.npz"
    np.savez(x, x=np.zeros((2, 2), np.float32))
    for command in (["eval", trained], ["predict", trained, x, "--out", tmp_path / "p.npy"],
                    ["summary", trained], ["export", trained, "--out", tmp_path / "m.onnx"]):
        line = assert_one_line_error(invoke(*command), trained)
        assert line.endswith("the run has checkpoints (last.npz, best.npz) but no spec.yaml; "
                             "restore spec.yaml (the spec it was trained with) to use them")


# --- hostile and damaged files (an audit's findings) -----------------------------------------


def _npz_with_member(path: Path, name: str, data: bytes, flag_bits: int = 0) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.flag_bits |= flag_bits
        archive.writestr(info, data)
    return path


@pytest.mark.parametrize("header, flag_bits", [
    (b"\x93NUMPY\x01\x00\x20\x00{'descr': __import__('os').system('x'), }  \n", 0),  # not parsed
    (b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
     + b" " * 11 + b"\n" + b"\0" * 8, 0x1),  # flagged encrypted
])
def test_a_crafted_npy_header_or_an_encrypted_member_is_a_damaged_file(tmp_path, trained, header,
                                                                      flag_bits):
    """Exit 70 (TokenError, RuntimeError): the file was not named. Nothing runs either way:
    NumPy reads the header with ast.literal_eval."""
    path = _npz_with_member(tmp_path / "bad.npz", "x.npy", header, flag_bits)
    line = assert_one_line_error(invoke("predict", trained, path, "--out", tmp_path / "p.npy"),
                                 path)
    assert "not a readable" in line or "damaged" in line or "Error" in line
    (trained / "best.npz").unlink()
    _npz_with_member(trained / "best.npz", "params/dense_1.weight.npy", header, flag_bits)
    assert_one_line_error(invoke("eval", trained, "--checkpoint", "best"), trained / "best.npz")


def test_an_npy_header_of_a_negative_shape_is_a_damaged_file(tmp_path, trained):
    """NumPy's header reader takes (-1, 2): it was read as -1 samples beside the labels."""
    import io

    from numpy.lib import format as npy_format

    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                               "shape": (-1, 2)})
    path = _npz_with_member(tmp_path / "bad.npz", "x.npy", header.getvalue())
    line = assert_one_line_error(invoke("predict", trained, path, "--out", tmp_path / "p.npy"),
                                 path)
    assert "declares the shape [-1, 2]" in line
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("y.npy", _npy_bytes(np.zeros(3, np.int64)))
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: bad.npz}\nmodel: {input_shape: [2], layers: "
                    "[{type: dense, units: 2}]}\n")
    for command in (["validate", spec], ["train", spec, "--out", tmp_path / "new-run"]):
        assert "declares the shape [-1, 2]" in assert_one_line_error(invoke(*command), "bad.npz")


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "nested"])
def test_a_summary_that_is_no_json_file_nnrun_wrote_neither_hangs_nor_crashes(trained, tmp_path,
                                                                              kind):
    """A FIFO blocked eval, summary, diff and predict for good; /dev/zero filled the memory;
    JSON nested 100,000 deep was exit 70."""
    summary = trained / "summary.json"
    summary.unlink()
    if kind == "fifo":
        os.mkfifo(summary)
    elif kind == "/dev/zero":
        summary.symlink_to("/dev/zero")
    else:
        summary.write_text("[" * 100_000)
    process = nnrun_process("eval", trained)
    out, err = process.communicate(timeout=60)
    # which checkpoint train reported is not known: said in one line, until one is named
    assert process.returncode == 1 and "not a readable run summary" in err, err
    assert len(err.strip().splitlines()) == 1
    process = nnrun_process("eval", trained, "--checkpoint", "best")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    line = assert_one_line_error(invoke("diff", trained, trained), summary)
    assert "not a readable run summary" in line


def test_a_csv_header_of_many_columns_is_read_in_linear_time(tmp_path):
    """The duplicate-name check counted each name in the whole header: hours for 200,000."""
    from nnrun.runtime.data.sources import read_csv_header

    path = tmp_path / "wide.csv"
    names = [f"c{index}" for index in range(100_000)]
    path.write_text(",".join([*names, "c7", "label"]) + "\n" + ",".join(["0"] * 100_002) + "\n")
    started = time.monotonic()
    with pytest.raises(Exception, match="names 'c7' more than once"):
        read_csv_header(path)
    assert time.monotonic() - started < 10  # quadratic: about an hour


def test_a_metrics_row_without_its_numbers_is_refused_before_the_resume_trains(trained, spec):
    """The resume trained, wrote its checkpoints, then stopped at the summary (KeyError,
    exit 70), leaving summary.json behind, every time."""
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    del first["epoch_s"]
    (trained / "metrics.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    (trained / LOCK).write_text("12345\n")
    before = files_of(trained)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3),
                                 trained / "metrics.jsonl")
    assert "the row of epoch 1 lacks the number epoch_s" in line
    assert files_of(trained) == before


@pytest.mark.parametrize("damage", ["nested", "digits"])
def test_json_past_pythons_limits_is_a_damaged_line(trained, spec, damage):
    """Nested past the recursion limit, or an integer of more digits than Python converts
    (4,300: a ValueError, not a JSONDecodeError, was exit 70)."""
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    first = ("[" * 100_000 if damage == "nested"
             else lines[0].replace('"epoch_s": ', '"epoch_s": 1' + "0" * 4400 + ', "x": ', 1))
    (trained / "metrics.jsonl").write_text(first + "\n" + lines[1] + "\n")
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3),
                                 trained / "metrics.jsonl")
    assert "line 1" in line
    pytest.importorskip("matplotlib")
    assert_one_line_error(invoke("plot", trained, "--out", trained.parent / "p.png"),
                          trained / "metrics.jsonl")


def test_the_users_dot_files_beside_nnruns_are_kept(tmp_path, spec):
    """Leftovers were anything named .<run file>.*: a vim swap file, a backup."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".spec.yaml.swp").write_text("swap")
    (out / ".summary.json.bak").write_text("backup")
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    assert_ok(invoke("train", spec, "--resume", out, "--epochs", 3, "--quiet"))
    assert (out / ".spec.yaml.swp").read_text() == "swap"
    assert (out / ".summary.json.bak").read_text() == "backup"
    leftover = out / ".last.npz.abcd1234.nnrun-partial"  # as a killed write leaves it
    leftover.write_bytes(b"half")
    result = assert_ok(invoke("train", spec, "--resume", out, "--epochs", 4))
    assert not leftover.exists() and "left by a write that was killed" in result.stderr


def test_a_lock_file_that_is_not_nnruns_is_refused_and_kept(tmp_path, spec):
    out = tmp_path / "users"
    out.mkdir()
    (out / LOCK).write_text("USERDATA\n")
    line = assert_one_line_error(invoke("train", spec, "--out", out), out / LOCK)
    assert "is not nnrun's" in line and (out / LOCK).read_text() == "USERDATA\n"


def test_a_hard_linked_lock_file_is_refused_and_its_other_name_kept(trained, spec, tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("")
    (trained / LOCK).unlink()
    os.link(outside, trained / LOCK)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3),
                                 trained / LOCK)
    assert "hard link" in line and outside.read_text() == ""


def test_a_refused_out_leaves_no_lock_behind(tmp_path, spec):
    out = tmp_path / "users"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "summary.json").write_text("mine too")
    line = assert_one_line_error(invoke("train", spec, "--out", out), out)
    assert "holds summary.json that nnrun did not write" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json"]
    (out / "summary.json").unlink()
    # an earlier version's run: a checkpoint (nnrun's meta entry), no lock
    save_checkpoint(out / "last.npz", {"w": np.ones(2)}, {"epoch": 1})
    assert "already holds a run" in assert_one_line_error(invoke("train", spec, "--out", out), out)
    assert sorted(p.name for p in out.iterdir()) == ["last.npz", "notes.txt"]  # no lock left


def test_out_or_dest_naming_a_device_says_what_it_is(spec, tmp_path):
    line = assert_one_line_error(invoke("train", spec, "--out", os.devnull), os.devnull)
    assert "is a character device, not a directory" in line
    from nnrun.data_cli import data
    from click.testing import CliRunner

    result = CliRunner().invoke(data, ["fetch", "mnist", "--dest", os.devnull])
    assert result.exit_code == 1 and "(it is a character device, not a directory)" in result.stderr


def test_a_damaged_file_is_described_without_python_s_exception_names(tmp_path):
    """The hostile-input audit: messages read 'damaged checkpoint (BadZipFile: File is not a
    zip file)'."""
    from nnrun.runtime.archives import DamagedFile, npz_headers

    path = tmp_path / "bad.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DamagedFile) as caught:
        npz_headers(path)
    assert str(caught.value) == "File is not a zip file"


def _npy_with_header(text: str) -> bytes:
    """A .npy member whose header dictionary is `text`, padded as NumPy pads it."""
    body = text.encode("latin1")
    body += b" " * (-(10 + len(body) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body + b"\0" * 64


CALL_HEADER = "{'descr': __import__('os').system('x'), 'fortran_order': False, 'shape': (2,), }"
NOT_A_HEADER = "has a header that is not a NumPy array header"


@pytest.mark.parametrize("header", [
    CALL_HEADER,  # ast: "malformed node or string on line 1: <ast.Call object at 0x7f...>"
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), ",  # the tokenizer's tuple
    "-" * 5000 + "1",  # "maximum recursion depth exceeded during ast construction"
    "(" * 300 + ")" * 300,  # "Cannot parse header: '((((...'", the header quoted whole
    "[1, 2, 3]",
    "{'descr': 'zz9', 'fortran_order': False, 'shape': (2,), }",
])
def test_an_npy_header_that_does_not_parse_is_said_in_words(tmp_path, header):
    """The hostile-input audit: NumPy reads the header with ast.literal_eval, and its failure
    was every command's message, an object's address included."""
    from nnrun.runtime.archives import DamagedFile, npz_headers

    path = _npz_with_member(tmp_path / "bad.npz", "x.npy", _npy_with_header(header))
    with pytest.raises(DamagedFile) as caught:
        npz_headers(path)
    assert str(caught.value) == f"member 'x.npy' {NOT_A_HEADER}"


def test_a_crafted_npy_header_is_said_in_words_by_predict_train_and_eval(tmp_path, trained):
    path = _npz_with_member(tmp_path / "bad.npz", "x.npy", _npy_with_header(CALL_HEADER))
    line = assert_one_line_error(invoke("predict", trained, path, "--out", tmp_path / "p.npy"),
                                 path)
    assert f"not a readable .npz file (member 'x.npy' {NOT_A_HEADER}); save the inputs" in line
    data = tmp_path / "s.yaml"
    data.write_text("data: {dataset: npz, path: bad.npz}\nmodel: {input_shape: [2], layers: "
                    "[{type: dense, units: 2}]}\n")
    line = assert_one_line_error(invoke("train", data, "--out", tmp_path / "new-run"), path.name)
    assert f"(member 'x.npy' {NOT_A_HEADER}); save it again with numpy.savez" in line
    (trained / "best.npz").unlink()
    _npz_with_member(trained / "best.npz", "params/dense_1.weight.npy",
                     _npy_with_header(CALL_HEADER))
    line = assert_one_line_error(invoke("eval", trained, "--checkpoint", "best"),
                                 trained / "best.npz")
    assert line == (f"error: {trained / 'best.npz'}: damaged checkpoint (member "
                    f"'params/dense_1.weight.npy' {NOT_A_HEADER}); delete it (last.npz is then "
                    "used)")


def _without(path: Path, key: str, **replaced) -> None:
    """The checkpoint at `path` saved again without its member `key`, other members replaced."""
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files if name != key}
    np.savez(path, **{**members, **replaced})


@pytest.mark.parametrize("name, advice", [
    ("best.npz", "delete it (last.npz is then used)"),
    ("last.npz", "copy best.npz over it to resume from the best epoch, or start a new run with "
                 "another --out")])
def test_a_checkpoint_without_one_of_its_parameters_is_damaged_and_says_what_to_do(
        trained, spec, name, advice):
    """The audit: 'checkpoint has no 'dense_1.bias'', the one damaged-checkpoint line with no
    advice."""
    _without(trained / name, "params/dense_1.bias")
    before = files_of(trained)
    command = (["eval", trained, "--checkpoint", name.removesuffix(".npz")] if name == "best.npz"
               else ["train", spec, "--resume", trained, "--epochs", 3, "--quiet"])
    line = assert_one_line_error(invoke(*command), trained / name)
    assert line == (f"error: {trained / name}: damaged checkpoint (it has no 'dense_1.bias', a "
                    f"parameter of this model); {advice}")
    assert files_of(trained) == before


def test_both_checkpoints_damaged_are_told_to_start_anew_not_to_use_each_other(trained, spec):
    """The hostile-input audit: best.npz was told "delete it (last.npz is then used)" of a
    damaged last.npz, whose own advice was then to copy best.npz over it."""
    for name in ("best.npz", "last.npz"):
        (trained / name).write_bytes(b"truncated")
    line = assert_one_line_error(invoke("eval", trained), trained / "best.npz")
    assert line.endswith("damaged checkpoint (File is not a zip file); last.npz is damaged "
                         "too: start a new run with another --out")
    (trained / "best.npz").unlink()
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--quiet"),
                                 trained / "last.npz")
    assert line.endswith("best.npz is missing too: start a new run with another --out")
    # last.npz missing beside a damaged best.npz: not told to copy it over (the docs audit)
    (trained / "best.npz").write_bytes(b"truncated")
    (trained / "last.npz").unlink()
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--quiet"), trained)
    assert "copy best.npz" not in line and line.endswith("start a new run with another --out")


@pytest.mark.parametrize("meta, problem", [
    (np.array(b"\xff\xfe"), "meta holds bytes, not a JSON string"),
    (np.zeros(3), "meta holds float64, not a JSON string"),
    (np.array("x" * 300_000), "meta declares 1,200,000 bytes, more than the 1,048,576 nnrun "
                              "reads"),
])
def test_a_meta_entry_that_is_not_a_json_string_is_damage_not_a_missing_entry(trained, meta,
                                                                              problem):
    """It was 'not an nnrun checkpoint (no meta entry)', though the entry was there."""
    _without(trained / "best.npz", "meta", meta=meta)
    line = assert_one_line_error(invoke("eval", trained, "--checkpoint", "best"),
                                 trained / "best.npz")
    assert line == (f"error: {trained / 'best.npz'}: damaged checkpoint ({problem}); delete it "
                    "(last.npz is then used)")


@pytest.mark.parametrize("row, epoch, problem", [
    (2, 1e308, "holds the epoch 1e+308, not the whole number (1, 2, ...) that nnrun writes in "
               "every row (an edited or damaged file)"),
    (2, "2", 'holds the epoch "2", not the whole number'),
    (2, True, "holds the epoch true, not the whole number"),
    (1, 0, "holds the epoch 0, not the whole number"),
    (2, None, "holds the epoch null, not the whole number"),
    (2, "absent", "lacks the epoch that nnrun writes in every row (an edited or damaged file)"),
    # complete JSON that Python will not read (past its 4,300 digits): no torn line either
    (2, "5,001 digits", "holds a number of 5,001 digits, which nnrun never writes (an edited or "
                        "damaged file)"),
])
def test_a_complete_metrics_row_with_a_wrong_epoch_is_named_not_called_torn(trained, spec, row,
                                                                            epoch, problem):
    """The audit: a last row whose epoch was edited to 1e+308, complete JSON, was 'lacks the
    rows of epoch 2 (its last line is torn)'. Torn is a last line that is not JSON at all."""
    lines = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    if epoch == "absent":
        del lines[row - 1]["epoch"]
    else:
        lines[row - 1]["epoch"] = epoch
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (trained / "metrics.jsonl").write_text(text.replace('"5,001 digits"', "1" + "0" * 5000))
    before = files_of(trained)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 3,
                                        "--quiet"), trained / "metrics.jsonl")
    assert f"metrics.jsonl: line {row} {problem}" in line and "torn" not in line
    assert line.endswith("restore the file from a backup, then resume, or start a new run with "
                         "another --out")
    assert files_of(trained) == before


def test_an_output_name_of_up_to_255_bytes_is_written_and_its_leftovers_found(tmp_path):
    """The environments audit: the temporary file's name is the output's with 24 bytes more,
    so names of 232 to 255 bytes (legal ones) were refused as too long; the name is cut in the
    temporary's, in bytes (a character of two may be cut), and its leftovers still found."""
    from nnrun.runtime.files import temporaries_of, temporary_prefix

    names = ("c" * 251 + ".npy", "é" * 124 + "abc.npy", "c" * 231 + ".npy")
    for name in names:
        assert len(os.fsencode(name)) <= 255
        write_text_atomically(tmp_path / name, "x")
        assert (tmp_path / name).read_text() == "x"
        leftover = tmp_path / f"{temporary_prefix(name)}abcd1234.nnrun-partial"
        leftover.write_text("half")  # as a killed write leaves it
        assert temporaries_of(tmp_path / name) == [leftover]
        leftover.unlink()
    with pytest.raises(OSError) as caught:  # past the limit, the output's own name is refused
        write_text_atomically(tmp_path / ("c" * 256), "x")
    assert caught.value.errno == errno.ENAMETOOLONG and caught.value.filename.endswith("c" * 256)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(names)


def test_leftovers_of_an_output_whose_name_holds_glob_characters_are_found(tmp_path):
    """`preds[1].npy`: the temporary files' prefix went to glob unescaped, read as a character
    class, and an hour-old leftover of a killed write stayed for good (the third review)."""
    from nnrun.runtime.files import temporaries_of, temporary_prefix, write_output

    for name in ("preds[1].npy", "a*b?.npy", "[x].npy"):
        leftover = tmp_path / f"{temporary_prefix(name)}abcd1234.nnrun-partial"
        leftover.write_text("half")
        assert temporaries_of(tmp_path / name) == [leftover]
        os.utime(leftover, (time.time() - 7200, time.time() - 7200))
        write_output(tmp_path / name, lambda stream: stream.write(b"x"))
        assert not leftover.exists() and (tmp_path / name).read_text() == "x"


def test_a_resume_that_changes_what_the_best_epoch_is_chosen_by_chooses_it_again(trained,
                                                                                 spec):
    """The run-directory audit: a resume that set early_stopping.monitor to train_loss compared
    each train_loss with the best val_loss so far, and kept an epoch whose train_loss later
    epochs bettered. The first epoch after such a change is the best again, as after a change
    of the data."""
    result = assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 3,
                              "--allow-changes", "--set",
                              "train.early_stopping={monitor: train_loss, patience: 5}"))
    assert ("the best epoch was chosen by the minimum of val_loss, now by the minimum of "
            "train_loss: it is chosen again from epoch 3 on") in result.stderr
    _, meta = load_checkpoint(trained / "last.npz")
    assert meta["best_epoch"] == 3 and meta["best_value"] == rows(trained)[-1]["train_loss"]
    same = assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 4,
                            "--allow-changes", "--set", "train.early_stopping={monitor: "
                            "train_loss, patience: 5}"))
    assert "chosen again" not in same.stderr  # the run's own monitor since epoch 3


def test_a_resume_whose_changes_alone_stop_the_run_is_refused(trained, spec):
    """The run-directory audit: a run that trained all its epochs, resumed for more with a
    lower patience, was "stopped early" at once: nothing recorded the change, and summary.json
    said stopped_early under a spec.yaml that does not stop it."""
    state, meta = load_checkpoint(trained / "last.npz")
    save_checkpoint(trained / "last.npz", {name.removeprefix("params/"): value
                                           for name, value in state.items()},
                    {**meta, "epochs_since_best": 1, "best_epoch": 1})  # epoch 2 was worse
    before = files_of(trained)
    line = assert_one_line_error(invoke("train", spec, "--resume", trained, "--epochs", 6,
                                        "--allow-changes", "--set",
                                        "train.early_stopping={patience: 1}"), trained)
    assert ("this resume trains no epoch: with train.early_stopping.patience 1, early stopping "
            "stops the run at epoch 2, 1 epoch(s) after its best (epoch 1)") in line
    assert files_of(trained) == before
    assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 6, "--allow-changes",
                     "--set", "train.early_stopping={patience: 2}", "--quiet"))


def test_an_operation_not_permitted_says_why_once():
    """The run-directory audit: --out under an immutable directory or /sys said "Operation not
    permitted; not permitted: give a file ..." (the same words twice, no cause)."""
    from nnrun.runtime.files import describe_os_error

    line = describe_os_error(OSError(errno.EPERM, os.strerror(errno.EPERM), "/sys/x"))
    assert line.startswith("/sys/x: Operation not permitted; the system refuses it whoever asks")
    assert line.count("not permitted") == 1


def test_a_new_monitor_counts_the_epochs_since_its_best_afresh(trained, spec):
    """The review: a resume that changed the monitor chose the best epoch again, but the stop
    check before it counted the old monitor's epochs since its best (a patience at or below it
    was refused, as if the new monitor had stopped the run)."""
    state, meta = load_checkpoint(trained / "last.npz")
    save_checkpoint(trained / "last.npz", {name.removeprefix("params/"): value
                                           for name, value in state.items()},
                    {**meta, "epochs_since_best": 1, "best_epoch": 1})  # val_loss's
    result = assert_ok(invoke("train", spec, "--resume", trained, "--epochs", 3,
                              "--allow-changes", "--set",
                              "train.early_stopping={monitor: train_loss, patience: 1}"))
    assert "it is chosen again from epoch 3 on" in result.stderr
    _, meta = load_checkpoint(trained / "last.npz")
    assert meta["epoch"] == 3 and meta["best_epoch"] == 3
