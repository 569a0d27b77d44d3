"""What an audit of file-system misuse found: output streams that fail, and paths that cannot
be looked at or named again, said in one line, with no traceback and nothing lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnrun.notices import one_line, shell_word

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--set", "train.epochs=2", "--set", "data.limit=300"]
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


def unsearchable(monkeypatch, *prefixes: str) -> None:
    """os.stat refuses the paths under `prefixes` as a directory on their way that this user
    may not search makes it (root, which CI runs as, may search any)."""
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path).startswith(prefixes):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)


def no_space(path) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def nnrun(*args, cwd, **streams) -> subprocess.CompletedProcess:
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **streams}
    return subprocess.run([sys.executable, "-m", "nnrun", *map(str, args)], cwd=cwd,
                          timeout=300, **streams)


@needs_dev_full
@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["--version"]])
def test_help_or_version_to_a_full_disk_is_one_line(tmp_path, args):
    """They ended in click's traceback of the OSError."""
    with open("/dev/full", "w") as full:
        result = nnrun(*args, cwd=tmp_path, stdout=full)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("error: ") and "No space left on device" in lines[0]


@needs_dev_full
def test_training_whose_stderr_cannot_be_written_keeps_every_epoch(tmp_path):
    """The first epoch's line failed to print before its checkpoint was written: exit 1, no
    message anywhere, the epoch lost (a log on a disk that fills up, a reader that left)."""
    with open("/dev/full", "w") as full:
        result = nnrun("train", ROOT / "specs" / "quickstart.yaml", *QUICK, "--out", "run",
                       cwd=tmp_path, stderr=full)
    assert result.returncode == 0
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("args", [["schema"], ["summary", ROOT / "specs" / "quickstart.yaml"],
                                  ["--help"]])
def test_output_to_a_closed_standard_output_is_an_error_not_lost(tmp_path, args):
    """`nnrun summary SPEC >&-` printed nothing and exited 0: click drops what it writes to a
    standard output Python found closed."""
    result = nnrun(*args, cwd=tmp_path, stdout=None, preexec_fn=lambda: os.close(1))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "error: standard output: it is closed; give the command an output (a file, a pipe, "
        "/dev/null)"]


def file_size_limit(size: int):
    """`ulimit -f`, in bytes, for the command a test starts."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.parametrize("unbuffered", ["", "1"])
@pytest.mark.parametrize("args", [["schema"], ["trace", ROOT / "specs" / "quickstart.yaml",
                                               "--format", "json"],
                                  ["summary", ROOT / "specs" / "lenet5.yaml"]])
def test_output_cut_short_by_the_file_size_limit_is_an_error(tmp_path, monkeypatch, args,
                                                            unbuffered):
    """`nnrun schema > f` under `ulimit -f 1` (or on a disk that fills) exited 0 with f cut
    off at 1,024 bytes: Python's writers return a short count without an error, and the text
    layer drops it (the API walk)."""
    monkeypatch.setenv("PYTHONUNBUFFERED", unbuffered)
    with open(tmp_path / "out", "w") as out:
        result = nnrun(*args, cwd=tmp_path, stdout=out, preexec_fn=file_size_limit(1024))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "error: a file or the output: File too large; the file size limit (ulimit -f) was "
        "reached: raise it or write less"]


@needs_dev_full
@pytest.mark.parametrize("args", [["summary", ROOT / "specs" / "lenet5.yaml"],
                                  ["validate", ROOT / "specs" / "xor-mlp.yaml", "--format",
                                   "json"]])
def test_a_small_output_to_a_full_disk_is_exit_1_without_a_traceback(tmp_path, monkeypatch,
                                                                      args):
    """The review: buffered (no PYTHONUNBUFFERED), the flush at exit failed again: exit 120 and
    Python's traceback after nnrun's line."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    with open("/dev/full", "w") as full:
        result = nnrun(*args, cwd=tmp_path, stdout=full)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "error: a file or the output: No space left on device; the disk is full: free space or "
        "write somewhere else"]


def test_predictions_cut_short_by_the_file_size_limit_name_their_file(tmp_path):
    """NumPy's own words came out ("error: 8000 requested and 4096 written"): no path, no
    fix."""
    assert nnrun("train", ROOT / "specs" / "quickstart.yaml", *QUICK, "--out", "run",
                 cwd=tmp_path).returncode == 0
    np.savez(tmp_path / "in.npz", x=np.zeros((200, 1, 8, 8), np.float32))
    result = nnrun("predict", "run", "in.npz", "--out", "p.npy", cwd=tmp_path,
                   preexec_fn=file_size_limit(4096))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "error: p.npy: File too large; the file size limit (ulimit -f) was reached: raise it "
        "or write less"]
    assert not (tmp_path / "p.npy").exists()


def test_training_with_its_standard_output_closed_trains_as_with_a_full_disk(tmp_path):
    result = nnrun("train", ROOT / "specs" / "quickstart.yaml", *QUICK, "--out", "run",
                   cwd=tmp_path, stdout=None, preexec_fn=lambda: os.close(1))
    assert result.returncode == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 2


def test_training_into_a_reader_that_leaves_keeps_every_epoch(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "nnrun", "train",
                                str(ROOT / "specs" / "quickstart.yaml"), *QUICK,
                                "--set", "train.epochs=3", "--out", "run"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr.readline()  # the first line, then the reader goes away
    process.stderr.close()
    assert process.wait(timeout=300) == 0
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("command", ["eval", "predict", "summary", "export", "diff", "plot"])
def test_a_path_too_long_to_look_at_is_one_line(tmp_path, command):
    """eval, predict, plot and --resume ended in a traceback (Path.is_file raised); summary,
    export and diff said it does not exist."""
    result = nnrun(command, "a" * 300, *(["x.npz"] if command == "predict" else []),
                   *(["b"] if command == "diff" else []), cwd=tmp_path)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1, lines
    assert "a name too long for the file system" in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize("command", ["validate", "train", "diff", "eval", "predict"])
def test_a_path_this_user_cannot_read_is_exit_1_not_a_usage_error(tmp_path, monkeypatch,
                                                                  command):
    """click's own test of the permission said it as a usage error (exit 2); cli.md's table
    puts a file that cannot be read under 1. Root reads anything: os.access says no here."""
    from click.testing import CliRunner

    from nnrun.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text((ROOT / "specs" / "quickstart.yaml").read_text())
    given = tmp_path / "run" if command == "eval" else spec
    given.mkdir(exist_ok=True) if command == "eval" else None
    refused = str(tmp_path / "x.npz") if command == "predict" else str(given)
    if command == "predict":
        (tmp_path / "x.npz").write_bytes(b"")
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != refused)
    args = {"diff": [spec, spec], "predict": [tmp_path, tmp_path / "x.npz"]}.get(command, [given])
    result = CliRunner().invoke(main, [command, *map(str, args)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        f"error: {refused}: cannot be read (Permission denied); give this user read permission "
        "on it, or point to a copy it can read"]


def test_a_data_path_of_bytes_that_are_no_utf8_is_refused_before_the_run(tmp_path):
    """The run trained, then no command could read its spec.yaml back: the absolute data.path
    held a lone surrogate, which the spec reader refuses (with advice nobody could follow)."""
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/dir\xff"))
    (odd / "data").mkdir(parents=True)
    shutil.copy(ROOT / "specs" / "csv-regression.yaml", odd)
    shutil.copy(ROOT / "specs" / "data" / "sine-regression.csv", odd / "data")
    result = nnrun("train", odd / "csv-regression.yaml", "--out", "run", cwd=tmp_path)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1
    assert "data.path: " in lines[0] and "holds the byte \\xff, which is not UTF-8" in lines[0]
    assert "\\udc" not in lines[0] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["my spec", "run\ntwo", "it's", "back\\slash", "x\udcffy",
                                  "tab\there", "sep\u2028x", "plain", "é ü"])
def test_a_shell_word_reads_back_as_the_name_and_stays_one_line(name):
    """A signal's resume command quoted a directory named run<newline>two as 'run\\ntwo',
    which a shell reads as a backslash and an n; one_line had escaped the line break."""
    word = shell_word(name)
    assert one_line(word) == word
    printed = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True)
    assert printed.stdout == os.fsencode(name)


def test_a_spec_given_for_a_run_is_told_to_train_in_a_command_that_pastes(tmp_path):
    spec = tmp_path / "my spec.yaml"
    shutil.copy(ROOT / "specs" / "quickstart.yaml", spec)
    result = nnrun("eval", spec, cwd=tmp_path)
    assert result.returncode == 2
    assert f"nnrun train '{spec}'" in result.stderr.decode()


def test_a_data_file_that_cannot_be_looked_at_is_said_at_its_field(tmp_path, monkeypatch):
    """validate said `error: <file>: Permission denied` without the spec's position, and the
    files after it went unchecked (Path.is_file raises where a directory on the way may not
    be searched; root, which CI runs as, may search any, so the refusal is stood in for). As
    a missing file: a warning, an error with --data."""
    from click.testing import CliRunner

    from nnrun.cli import main

    private = tmp_path / "private"
    (private / "data").mkdir(parents=True)
    spec = private / "csv-regression.yaml"
    shutil.copy(ROOT / "specs" / "csv-regression.yaml", spec)
    shutil.copy(ROOT / "specs" / "data" / "sine-regression.csv", private / "data")
    unsearchable(monkeypatch, str(private / "data"))
    for options, severity, code in (([], "warning", 0), (["--data"], "error", 1)):
        result = CliRunner().invoke(main, ["validate", *options, str(spec),
                                           str(ROOT / "specs" / "xor-mlp.yaml")])
        lines = result.stderr.splitlines()
        assert result.exit_code == code and "Traceback" not in result.output
        assert lines[0].startswith(f"{spec}:9:9: {severity}: data.path: ")
        assert "permission denied: a directory on its way does not let this user" in lines[0]
        assert "xor-mlp.yaml: ok" in result.stdout  # the next spec is still checked


def test_a_data_file_in_a_loop_of_links_is_a_warning_of_validate_as_before(tmp_path):
    """A review: the check of files that cannot be looked at took a loop for one (an error,
    advice about permissions), where validate warns of a loop, as of a missing file."""
    (tmp_path / "data").mkdir()
    spec = tmp_path / "csv-regression.yaml"
    shutil.copy(ROOT / "specs" / "csv-regression.yaml", spec)
    (tmp_path / "data" / "sine-regression.csv").symlink_to("sine-regression.csv")
    result = nnrun("validate", spec, cwd=tmp_path)
    assert result.returncode == 0
    assert "warning: data.path: " in result.stderr.decode()
    assert "a loop of symbolic links; point it at the file itself" in result.stderr.decode()
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    result = nnrun("eval", loop, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.decode() == f"error: {loop}: a loop of symbolic links; point it at " \
        "the file itself\n"


def test_validate_refuses_a_data_path_spec_yaml_could_not_hold(tmp_path):
    """A review: validate said ok to the spec whose non-UTF-8 data.path train refuses."""
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/dir\xff"))
    (odd / "data").mkdir(parents=True)
    shutil.copy(ROOT / "specs" / "csv-regression.yaml", odd)
    result = nnrun("validate", odd / "csv-regression.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert ":9:9: error: data.path: " in result.stderr.decode()
    assert "holds the byte \\xff, which is not UTF-8" in result.stderr.decode()


def test_an_empty_home_is_the_users_own_not_the_root(monkeypatch):
    """HOME= (set but empty) put the cache at /.cache, and `~/x.npz` at /x.npz: Path.home()
    gives / for it."""
    import pwd

    from nnrun.compiler.datasets import user_path
    from nnrun.runtime.data.locations import cache_root

    monkeypatch.delenv("NNRUN_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", "")
    own = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert cache_root() == own / ".cache" / "nnrun"
    assert user_path("~/d.npz") == own / "d.npz" and user_path("~") == own
    monkeypatch.setenv("HOME", "/somewhere")
    assert cache_root() == Path("/somewhere/.cache/nnrun")
    assert user_path("~/d.npz") == Path("/somewhere/d.npz")


def test_no_home_at_all_is_one_line_where_the_cache_is_needed(monkeypatch, tmp_path):
    """A review: HOME empty for a uid without a password entry (`docker run -u 4242 -e
    HOME=`) was an internal error of every command that sets the libraries' caches, even
    with NNRUN_CACHE_DIR set."""
    from nnrun.runtime.data import DataError
    from nnrun.runtime.data.locations import cache_root, library_caches_in_ours

    monkeypatch.setenv("HOME", "")
    monkeypatch.setattr(os, "getuid", lambda: 2**31 - 7)  # no such user
    monkeypatch.delenv("NNRUN_CACHE_DIR", raising=False)
    with pytest.raises(DataError, match="set NNRUN_CACHE_DIR"):
        cache_root()
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    with library_caches_in_ours():
        assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "cache" / "matplotlib")


def test_unfailing_output_leaves_streams_set_meanwhile_and_survives_a_slow_reader(monkeypatch):
    """A review: a program that set sys.stdout during the block had it undone at the end; a
    non-blocking reader's EAGAIN dropped every later line."""
    import io

    from nnrun.notices import unfailing_output

    class Slow(io.StringIO):
        calls = 0

        def write(self, text):
            Slow.calls += 1
            if Slow.calls == 1:
                raise BlockingIOError(11, "Resource temporarily unavailable")
            return super().write(text)

    slow, elsewhere = Slow(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", slow)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # put back after the test
    with unfailing_output():
        print("dropped", file=sys.stderr)
        print("kept", file=sys.stderr)
        sys.stdout = elsewhere  # the program's own, set meanwhile
    assert "dropped" not in slow.getvalue() and slow.getvalue().endswith("kept\n")
    assert sys.stderr is slow and sys.stdout is elsewhere


def test_a_data_path_from_home_is_held_by_the_runs_spec_as_the_loader_found_it(tmp_path,
                                                                                monkeypatch):
    """A review: `path: ~/d.npz` trained, but the run's spec.yaml held <spec dir>/~/d.npz,
    and eval, predict and resume of the run failed."""
    import nnrun as api

    home = tmp_path / "home"
    home.mkdir()
    rng = np.random.default_rng(0)
    np.savez(home / "d.npz", x=rng.standard_normal((40, 3)), y=rng.integers(0, 2, 40))
    monkeypatch.setenv("HOME", str(home))
    spec = tmp_path / "specs" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text("data: {dataset: npz, path: ~/d.npz}\nmodel: {input_shape: [3], layers: "
                    "[{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    api.train(spec, out_dir=tmp_path / "run", quiet=True)
    assert f"path: {home / 'd.npz'}" in (tmp_path / "run" / "spec.yaml").read_text()
    assert nnrun("eval", tmp_path / "run", "--split", "train", cwd=tmp_path).returncode == 0


def test_validate_and_train_see_a_data_path_through_links_alike(tmp_path):
    """A review: validate checked the path as written, train the one links lead to: a link
    to a directory named in bytes that are no UTF-8 passed validate, and a link so named
    to a good directory failed it."""
    good, odd = tmp_path / "good", Path(os.fsdecode(bytes(tmp_path) + b"/d\xff"))
    for directory in (good, odd):
        directory.mkdir()
        shutil.copy(ROOT / "specs" / "data" / "sine-regression.csv", directory)
    (tmp_path / "to-odd").symlink_to(odd)
    text = (ROOT / "specs" / "csv-regression.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text.replace("data/", "to-odd/"))
    assert nnrun("validate", tmp_path / "a.yaml", cwd=tmp_path).returncode == 1
    (good / "b.yaml").write_text(text.replace("data/", ""))
    oddly_named = Path(os.fsdecode(bytes(tmp_path) + b"/l\xfe"))
    oddly_named.symlink_to(good)  # the spec reached through it: train writes good/'s path
    assert nnrun("validate", oddly_named / "b.yaml", cwd=tmp_path).returncode == 0


def test_a_spec_whose_file_must_give_the_shape_says_why_it_cannot_be_looked_at(tmp_path):
    """A review: without input_shape, validate said only that input_shape is needed, not that
    data.path is a loop of links."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "loop.csv").symlink_to("loop.csv")
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: csv, path: data/loop.csv}\nmodel: {layers: [{type: dense, "
                    "units: 1}]}\nloss: mse\n")
    result = nnrun("validate", spec, cwd=tmp_path)
    assert result.returncode == 1
    assert "error: data.path: " in result.stderr.decode()
    assert "a loop of symbolic links" in result.stderr.decode()


def test_a_home_less_user_who_chose_every_place_needs_no_home(monkeypatch, tmp_path):
    """A review: the libraries' caches were computed from nnrun's before the user's own
    XDG_CACHE_HOME and MPLCONFIGDIR were looked at."""
    from nnrun.runtime.data.locations import library_caches_in_ours

    monkeypatch.setenv("HOME", "")
    monkeypatch.setattr(os, "getuid", lambda: 2**31 - 7)  # no such user
    monkeypatch.delenv("NNRUN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    with library_caches_in_ours():
        assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "mpl")


def test_a_program_calling_train_gets_its_own_streams_errors_as_they_are(tmp_path, monkeypatch):
    """A review: a progress line to the caller's broken pipe came back as a TrainingError
    about a disk, with a resume command."""
    import io

    import nnrun as api

    class Broken(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", Broken())
    with pytest.raises(BrokenPipeError):
        api.train(ROOT / "specs" / "quickstart.yaml", out_dir=tmp_path / "run", epochs=1,
                    overrides=["data.limit=100"])


def test_a_failed_write_while_a_resume_begins_gives_its_settings_again(tmp_path, monkeypatch):
    """A review: a resume with --epochs that failed writing metrics.jsonl (before spec.yaml
    took the new epochs) was told to resume without them, which trained nothing."""
    from click.testing import CliRunner

    from nnrun.cli import main
    from nnrun.runtime.run_dir import RunDirectory

    run = tmp_path / "run"
    spec = ROOT / "specs" / "quickstart.yaml"
    assert CliRunner().invoke(main, ["train", str(spec), "--out", str(run), "--epochs", "1",
                                     "--set", "data.limit=100", "--quiet"]).exit_code == 0

    monkeypatch.setattr(RunDirectory, "write_metrics",
                        lambda self, rows, name="metrics.jsonl": no_space(self.path / name))
    result = CliRunner().invoke(main, ["train", str(run / "spec.yaml"), "--resume", str(run),
                                       "--epochs", "3", "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(
        f"the checkpoint in {run / 'last.npz'} is intact; resume with: nnrun train "
        f"{run / 'spec.yaml'} --resume {run} --epochs 3")  # as typed (the design audit)


@pytest.mark.parametrize("kind", ["npz", "init_from"])
def test_an_npz_that_cannot_be_looked_at_is_said_at_its_field_too(tmp_path, monkeypatch, kind):
    """A docs walk: a csv behind a directory this user may not search was said at data.path,
    an npz (data or init_from) stopped validate with the write advice, unpositioned, the
    specs after it unchecked, and train likewise."""
    from click.testing import CliRunner

    from nnrun.cli import main

    private = tmp_path / "private"
    private.mkdir()
    np.savez(private / "x.npz", x=np.zeros((10, 4), "float32"), y=np.zeros(10, "int64"))
    field = ("data: {dataset: npz, path: private/x.npz}\n" if kind == "npz" else
             "data: {dataset: xor}\n")
    layer = "{type: dense, units: 2" + (", init_from: private/x.npz}" if kind != "npz" else "}")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"{field}model:\n  input_shape: [{4 if kind == 'npz' else 2}]\n  layers:\n"
                    f"    - {layer}\nloss: cross_entropy\n")
    unsearchable(monkeypatch, str(private), "private/")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["validate", str(spec),
                                       str(ROOT / "specs" / "xor-mlp.yaml")])
    assert "Traceback" not in result.output and "xor-mlp.yaml: ok" in result.stdout
    line = result.stderr.splitlines()[0]
    assert line.startswith(f"{spec}:") and "a directory on its way does not let this user" in line
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and result.stderr.startswith(f"{spec}:")
    assert "a directory on its way does not let this user" in result.stderr


def test_an_init_from_under_a_directory_named_tilde_is_held_as_read(tmp_path, monkeypatch):
    """A third review: `init_from: ~/w.npz` is read from <spec dir>/~/w.npz (init_from's `~`
    is a directory's name), but spec.yaml took it for the home's file."""
    import nnrun as api

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "~").mkdir()
    np.savez(tmp_path / "~" / "w.npz", weight=np.ones((2, 2)), bias=np.zeros(2))
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: xor}\nmodel: {input_shape: [2], layers: [{type: dense, "
                    "units: 2, init_from: '~/w.npz'}]}\ntrain: {epochs: 1}\n")
    api.train(spec, out_dir=tmp_path / "run", quiet=True)
    assert f"init_from: {tmp_path / '~' / 'w.npz'}" in (tmp_path / "run" / "spec.yaml").read_text()


def test_a_resume_of_a_run_without_checkpoint_stopped_before_its_spec_gives_its_settings(
        tmp_path, monkeypatch):
    """A third review: a resume of a run with no checkpoint yet, stopped before it wrote its
    spec.yaml, was told to resume without its --set settings (which then trained with the
    old ones)."""
    from click.testing import CliRunner

    import nnrun.runtime.checkpoint as checkpoint
    from nnrun.cli import main
    from nnrun.runtime.run_dir import RunDirectory

    run, spec = tmp_path / "run", ROOT / "specs" / "quickstart.yaml"

    with monkeypatch.context() as first_checkpoint_fails:
        first_checkpoint_fails.setattr(checkpoint, "save_checkpoint",
                                       lambda path, *args: no_space(path))
        assert CliRunner().invoke(main, ["train", str(spec), "--out", str(run), "--set",
                                         "data.limit=100", "--quiet"]).exit_code == 1
    assert (run / "spec.yaml").is_file() and not (run / "last.npz").exists()
    monkeypatch.setattr(RunDirectory, "write_spec", lambda self, text: no_space(self.path / "s"))
    result = CliRunner().invoke(main, ["train", str(spec), "--resume", str(run), "--set",
                                       "optimizer.lr=0.02", "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(
        f"no checkpoint was written yet (resuming starts from epoch 1); resume with: nnrun "
        f"train {spec} --resume {run} --set optimizer.lr=0.02")


def test_a_spec_given_as_data_is_not_named_by_the_runs_spec_in_the_resume_command(
        tmp_path, monkeypatch):
    """A fourth review: an API resume with a changed spec given as a mapping, stopped before
    the run's spec.yaml took it, was told to resume from that spec.yaml, which trains the old
    spec; SPEC stands for the spec, as in the command that starts a run again."""
    import yaml

    import nnrun as api
    from nnrun.runtime.run_dir import RunDirectory
    from nnrun.runtime.train import TrainingError

    text = (ROOT / "specs" / "quickstart.yaml").read_text()
    api.train(api.load_spec_text(text), out_dir=tmp_path / "run", epochs=1,
              overrides=["data.limit=100"], quiet=True)
    changed = yaml.safe_load(text)
    changed["train"]["epochs"] = 2
    changed["data"]["limit"] = 100

    monkeypatch.setattr(RunDirectory, "write_spec",
                        lambda self, text: no_space(self.path / "spec.yaml"))
    with pytest.raises(TrainingError) as raised:
        api.train(changed, resume=tmp_path / "run", quiet=True)
    assert str(raised.value).endswith(f"resume with: nnrun train SPEC --resume {tmp_path / 'run'}")


def test_a_checkpoint_that_cannot_be_read_is_not_called_intact(tmp_path, monkeypatch):
    """A fourth review: an I/O error reading last.npz while a resume began was reported with
    "the checkpoint ... is intact" and a resume command."""
    from click.testing import CliRunner

    import nnrun.runtime.checkpoint as checkpoint
    from nnrun.cli import main

    run, spec = tmp_path / "run", ROOT / "specs" / "quickstart.yaml"
    assert CliRunner().invoke(main, ["train", str(spec), "--out", str(run), "--epochs", "1",
                                     "--set", "data.limit=100", "--quiet"]).exit_code == 0

    def unreadable(path, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(checkpoint, "load_checkpoint", unreadable)
    result = CliRunner().invoke(main, ["train", str(run / "spec.yaml"), "--resume", str(run),
                                       "--epochs", "2", "--quiet"])
    assert result.exit_code == 1 and "Input/output error" in result.stderr
    assert "intact" not in result.stderr and "resume with" not in result.stderr


def unreadable(monkeypatch, *names: str) -> None:
    """open refuses the files ending in `names` as a file without read permission makes it
    (root, which CI runs as, may read any)."""
    import builtins
    import io

    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if str(file).endswith(names):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


@pytest.mark.parametrize("kind", ["npz", "csv", "init_from"])
def test_a_file_the_spec_names_that_cannot_be_read_is_told_to_be_made_readable(
        tmp_path, monkeypatch, kind):
    """A data or init_from file without read permission: validate told to write it again
    with numpy.savez, train to "give a file you can read, or an output in a directory you can
    write to" (session 44)."""
    from click.testing import CliRunner

    from nnrun.cli import main

    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2), "float32"), y=np.zeros(10, "int64"))
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    np.savez(tmp_path / "w.npz", weight=np.zeros((2, 2), "float32"))
    data = {"npz": "{dataset: npz, path: d.npz}", "csv": "{dataset: csv, path: d.csv}",
            "init_from": "{dataset: xor}"}[kind]
    init = ", init_from: w.npz, use_bias: false" if kind == "init_from" else ""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"data: {data}\nmodel:\n  input_shape: [2]\n  layers:\n"
                    f"    - {{type: dense, units: 2{init}}}\nloss: cross_entropy\n")
    unreadable(monkeypatch, {"npz": "d.npz", "csv": "d.csv", "init_from": "w.npz"}[kind])
    said = ": cannot be read (Permission denied); give this user read permission on it, or " \
           "point to a copy it can read"
    for command in (["validate", "--data"], ["train", "--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(main, [command[0], str(spec), *command[1:]])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert said in result.stderr and "numpy.savez" not in result.stderr
        assert "an output" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_name_the_terminals_encoding_cannot_hold_is_escaped_not_an_internal_error(tmp_path):
    """The environments audit: under a latin-1 stdout a spec named in CJK ended every
    command that printed it in an internal error (exit 70; click repairs an ASCII stream
    only)."""
    spec = tmp_path / "réseau-数据.yaml"
    spec.write_text("data: {dataset: xor}\nmodel:\n  layers:\n    - {type: dense, units: 2}\n")
    result = nnrun("validate", spec.name, cwd=tmp_path,
                   env={**os.environ, "PYTHONIOENCODING": "latin-1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode("latin-1") == "réseau-\\u6570\\u636e.yaml: ok (6 parameters, " \
        "8 FLOPs per sample)\n"


def test_a_command_in_a_message_names_the_files_bytes_where_the_terminal_cannot(monkeypatch):
    """A latin-1 terminal would show ü as its own byte and 数 as an escape the shell does not
    read: the $'...' form gives the name's bytes as the file system holds them."""
    import io

    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="latin-1"))
    word = shell_word("/runs/rün_数据")
    assert word == "$'/runs/r\\xc3\\xbcn_\\xe6\\x95\\xb0\\xe6\\x8d\\xae'"
    assert shell_word("/runs/plain") == "/runs/plain"


def test_a_data_path_beyond_the_locales_encoding_is_said_at_its_field(tmp_path):
    """LC_ALL=C with Python's UTF-8 mode off: a non-ASCII data.path ended validate and train
    in an internal error (exit 70: os.stat cannot encode the name)."""
    (tmp_path / "sïne.csv").write_text("a,label\n1,0\n2,1\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: csv, path: sïne.csv}\nmodel:\n  layers:\n"
                    "    - {type: dense, units: 2}\n", encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    for command in (["validate"], ["train", "--out", "run"]):
        result = nnrun(command[0], "s.yaml", *command[1:], cwd=tmp_path, env=env)
        lines = result.stderr.decode("ascii", "backslashreplace").splitlines()
        assert result.returncode == 1 and len(lines) == 1, lines
        assert "a name this locale's encoding (ascii) cannot hold; run nnrun in a UTF-8 locale " \
            "(LC_ALL=C.UTF-8) or with PYTHONUTF8=1" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_run_name_or_a_setting_beyond_the_locales_encoding_is_one_line(tmp_path):
    """The third review, under LC_ALL=C with Python's UTF-8 mode off: a spec named in CJK
    ended train in an internal error (its runs/<name>/ could not be made), and a --set of
    non-ASCII text was called "special characters" by YAML; a --set holding a byte that is
    no UTF-8 (a UTF-8 locale) says so."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: 数据\ndata: {dataset: xor}\nmodel:\n  layers:\n"
                    "    - {type: dense, units: 2}\ntrain: {epochs: 1}\n", encoding="utf-8")
    ascii_locale = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    for args, said in (
            (["train", "s.yaml"], ": a name this locale's encoding (ascii) cannot hold; run "
                                  "nnrun in a UTF-8 locale (LC_ALL=C.UTF-8) or with PYTHONUTF8=1; "
                                  "or choose an --out (and a spec name) it can"),
            (["validate", "s.yaml", "--set", "name=n数"],
             ": holds text this locale's encoding (ascii) cannot read; run nnrun in a UTF-8 "
             "locale (LC_ALL=C.UTF-8) or with PYTHONUTF8=1")):
        result = nnrun(*args, cwd=tmp_path, env=ascii_locale)
        lines = result.stderr.decode("ascii", "backslashreplace").splitlines()
        assert result.returncode == 1 and len(lines) == 1 and said in lines[0], lines
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.yaml"]  # no runs/ left
    result = subprocess.run([sys.executable, "-m", "nnrun", "validate", "s.yaml", "--set",
                             b"name=n\xff"], cwd=tmp_path, capture_output=True, timeout=300)
    assert result.returncode == 1
    assert b": holds bytes that are not UTF-8; give the value as UTF-8 text" in result.stderr


def test_a_current_directory_deleted_under_train_is_said_so(tmp_path):
    """The environments audit: "runs: No such file or directory; check the path", where the
    shell's current directory had been deleted."""
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: xor}\nmodel:\n  layers:\n    - {type: dense, units: 2}\n")
    gone = tmp_path / "gone"
    gone.mkdir()
    launcher = ("import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
                "sys.argv[1:2] = []; from nnrun.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", launcher, str(gone), "train", str(spec),
                             "--epochs", "1"], capture_output=True, text=True, timeout=300)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].endswith(": the current directory is gone (deleted since the shell entered "
                             "it); cd to one that exists, or give --out an absolute path")


def test_a_backend_matplotlib_does_not_know_is_no_internal_error(monkeypatch, tmp_path):
    """The DESIGN audit: MPLBACKEND=nonsense made matplotlib's import raise, and plot and data
    preview exit 70 as nnrun's bug. nnrun draws into files: agg, whatever MPLBACKEND says,
    which is the user's again afterwards."""
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    from nnrun.cli import main
    from nnrun.runtime.data.locations import library_caches_in_ours

    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "nonsense")
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: xor}\nmodel: {layers: [{type: dense, units: 2}]}\n")
    result = CliRunner().invoke(main, ["data", "preview", str(spec), "--out",
                                       str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").stat().st_size > 0
    with library_caches_in_ours():
        assert os.environ["MPLBACKEND"] == "agg"
    assert os.environ["MPLBACKEND"] == "nonsense"
