"""--out of the commands that write: "" (an unset shell variable) is a usage error; an input,
a FIFO or device, a path under a file and a run's own files are refused in one line.

Before, `train --out ""` wrote its run into the current directory, and the commands that write
one file failed renaming onto '.' with 'Device or resource busy; Device or resource busy'."""

from __future__ import annotations

import importlib.util
import os

import pytest

from invoking import assert_one_line_error, invoke

COMMANDS = {
    "train": ["train", "{spec}"],
    "predict": ["predict", "{run}", "{spec}"],
    "export": ["export", "{run}"],
    "plot": ["plot", "{run}"],
    "data preview": ["data", "preview", "{spec}"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_dash_out_is_a_usage_error_not_a_file_named_dash(tmp_path, monkeypatch, command):
    """The user-facing audit: `predict ... --out -` wrote a file named '-'."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n")
    monkeypatch.chdir(tmp_path)
    args = [a.format(spec=spec, run=tmp_path) for a in COMMANDS[command]]
    result = invoke(*args, "--out", "-")
    assert result.exit_code == 2, result.output
    written = "a run directory" if command == "train" else "a file"  # (the docs audit)
    assert f"writes {written}, not to standard output" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


@pytest.mark.parametrize("empty", ["", " "])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_empty_out_is_a_usage_error(tmp_path, monkeypatch, command, empty):
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n")
    monkeypatch.chdir(tmp_path)
    args = [a.format(spec=spec, run=tmp_path) for a in COMMANDS[command]]
    result = invoke(*args, "--out", empty)
    assert result.exit_code == 2, result.output
    assert "'--out': an empty path" in result.stderr and "Traceback" not in result.output
    # the toolbox audit: "give a file or directory name" where a directory is refused
    kind = "directory" if command == "train" else "file"
    assert f"an empty path; give a {kind} name" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written


def test_an_out_that_names_an_input_is_refused_and_left_alone(tmp_path, monkeypatch):
    """`data preview spec.yaml --out spec.yaml` replaced the spec with a PNG (found by a fuzz of
    the commands' options); so did export, predict and plot with their inputs."""
    import numpy as np

    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 0\ndata: {dataset: xor}\nmodel:\n  layers: [{type: dense, "
                    "units: 2}]\ntrain: {epochs: 1}\n")
    run = tmp_path / "run"
    assert invoke("train", spec, "--out", run, "--quiet").exit_code == 0
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 2), dtype=np.float32))
    cases = [["data", "preview", spec, "--out", spec], ["plot", run, "--out", run / "spec.yaml"],
             ["predict", run, tmp_path / "x.npz", "--out", tmp_path / "x.npz"],
             ["predict", run, tmp_path / "x.npz", "--out", run / "best.npz"]]
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        cases.append(["export", run, "--out", run / "metrics.jsonl"])
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    for case in cases:
        result = invoke(*case)
        assert result.exit_code == 1, (case, result.output)
        assert "is a file this command reads" in result.stderr, result.stderr
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    again = invoke("plot", run, "--out", run / "curves.png")
    assert again.exit_code == 0  # a file of its own in the run directory is fine


XOR_SPEC = ("seed: 0\ndata: {dataset: xor}\nmodel:\n  layers: [{type: dense, units: 2}]\n"
            "train: {epochs: 1}\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A spec, a run of it, and an input for predict."""
    import numpy as np

    root = tmp_path_factory.mktemp("trained")
    spec = root / "spec.yaml"
    spec.write_text(XOR_SPEC)
    assert invoke("train", spec, "--out", root / "run", "--quiet").exit_code == 0
    np.savez(root / "x.npz", x=np.zeros((3, 2), dtype=np.float32))
    return root


def _writers(root, out) -> dict[str, list]:
    """Each command that writes one file, writing to `out`."""
    commands = {"predict": ["predict", root / "run", root / "x.npz", "--out", out]}
    if importlib.util.find_spec("matplotlib"):
        commands["plot"] = ["plot", root / "run", "--out", out]
        commands["data preview"] = ["data", "preview", root / "spec.yaml", "--out", out]
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        commands["export"] = ["export", root / "run", "--out", out]
    return commands


def test_an_out_that_is_no_regular_file_is_refused_and_kept(trained, tmp_path):
    """`predict --out /dev/null` replaced /dev/null with a plain file (the atomic rename)."""
    import stat

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for command, args in _writers(trained, fifo).items():
        line = assert_one_line_error(invoke(*args), fifo)
        assert "is a FIFO (named pipe), not a regular file" in line, command
        assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["fifo.png"]


def test_an_out_under_a_file_says_so_as_train_does(trained, tmp_path):
    """predict and export said `directory keep.npz does not exist`; train said the truth."""
    keep = tmp_path / "keep.npz"
    keep.write_bytes(b"kept")
    expected = "Not a directory; a part of the path is a file, not a directory"
    for command, args in _writers(trained, keep / "x.png").items():
        assert expected in assert_one_line_error(invoke(*args), keep / "x.png"), command
    train = invoke("train", trained / "spec.yaml", "--out", keep / "run", "--quiet")
    assert expected in assert_one_line_error(train, keep / "run")
    assert keep.read_bytes() == b"kept" and [p.name for p in tmp_path.iterdir()] == ["keep.npz"]


def test_an_out_named_as_a_run_file_is_refused(trained, tmp_path):
    """`predict runs/qs in.npz --out runs/other/best.npz` destroyed best.npz; `--out
    runs/qs/spec-changes.jsonl` made the next resume fail. A run's own file names are refused
    in a run directory, and over an existing file anywhere."""
    other = tmp_path / "other"
    assert invoke("train", trained / "spec.yaml", "--out", other, "--quiet").exit_code == 0
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "best.npz").write_bytes(b"a copy")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    for out in [other / "best.npz", other / "spec-changes.jsonl", other / "nnrun.lock",
                loose / "best.npz"]:
        for command, args in _writers(trained, out).items():
            line = assert_one_line_error(invoke(*args), out)
            assert "choose another --out" in line, (command, line)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    result = invoke("predict", trained / "run", trained / "x.npz", "--out", loose / "last.npy")
    assert result.exit_code == 0  # any other name, there or in a run directory, is written


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("matplotlib", "onnxruntime")),
                    reason="needs the plot and onnx extras")
def test_the_libraries_own_files_go_to_the_cache_directory(tmp_path):
    """matplotlib (its font list, ~/.config/matplotlib) and onnxruntime (a device id, written
    on import) keep files of their own under the home directory; in a command, they go under
    NNRUN_CACHE_DIR instead. Fresh processes: a library imported once has chosen its place."""
    import subprocess
    import sys

    spec = tmp_path / "spec.yaml"
    spec.write_text("data: {dataset: digits}\nmodel:\n  input_shape: [1, 8, 8]\n  layers:\n"
                    "    - {type: flatten}\n    - {type: dense, units: 10}\n"
                    "loss: cross_entropy\ntrain: {epochs: 1}\n")
    home, cache = tmp_path / "home", tmp_path / "cache"
    # onnxruntime writes nothing where CI is set: a user's machine has no such variable
    env = {key: value for key, value in os.environ.items()
           if key not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "CI")}
    env.update(HOME=str(home), NNRUN_CACHE_DIR=str(cache))
    for args in (["train", spec, "--out", tmp_path / "run", "--quiet"],
                 ["export", spec, "--out", tmp_path / "model.onnx"],
                 ["plot", tmp_path / "run", "--out", tmp_path / "curves.png"]):
        done = subprocess.run([sys.executable, "-m", "nnrun", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=180, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert not home.exists() or not any(p.is_file() for p in home.rglob("*"))
    assert any((cache / "libraries").rglob("*")) and (cache / "matplotlib").is_dir()


def test_a_cache_that_cannot_be_created_keeps_the_libraries_quiet(tmp_path):
    """The CLI audit: NNRUN_CACHE_DIR naming a file made matplotlib warn twice (even under
    train --quiet) and onnxruntime print a coloured line: their files go to a temporary
    directory then, removed after the command, and nothing is said."""
    import subprocess
    import sys

    spec = tmp_path / "spec.yaml"
    spec.write_text("data: {dataset: digits}\nmodel:\n  input_shape: [1, 8, 8]\n  layers:\n"
                    "    - {type: flatten}\n    - {type: dense, units: 10}\n"
                    "loss: cross_entropy\ntrain: {epochs: 1}\n")
    (tmp_path / "not-a-dir").write_text("")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "CI")}
    env.update(HOME=str(tmp_path / "home"), NNRUN_CACHE_DIR=str(tmp_path / "not-a-dir"),
               TMPDIR=str(temporary))
    for args in (["train", spec, "--out", tmp_path / "run", "--quiet"],
                 ["export", spec, "--out", tmp_path / "model.onnx"],
                 ["plot", tmp_path / "run", "--out", tmp_path / "curves.png"]):
        done = subprocess.run([sys.executable, "-m", "nnrun", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=180, cwd=tmp_path)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    # removed (onnxruntime keeps a session file .ses in TMPDIR, whatever the cache)
    assert [path.name for path in temporary.iterdir()] in ([], [".ses"])


def test_a_users_own_matplotlib_configuration_still_applies(tmp_path, monkeypatch):
    from nnrun.runtime.data.locations import library_caches_in_ours

    for name in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    with library_caches_in_ours():
        assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "cache" / "matplotlib")
    (tmp_path / ".config" / "matplotlib").mkdir(parents=True)
    with library_caches_in_ours():  # the user's matplotlibrc is read; caches still ours
        assert "MPLCONFIGDIR" not in os.environ
        assert os.environ["XDG_CACHE_HOME"] == str(tmp_path / "cache" / "libraries")
    assert "XDG_CACHE_HOME" not in os.environ


def test_an_out_over_a_file_of_another_kind_is_kept(trained, tmp_path):
    """`export run --out my-spec.yaml` replaced the spec with ONNX bytes, `predict --out s.yaml`
    with an array (a hostile-input audit): an existing file is replaced only when it begins as
    the command's output (running the command again refreshes it), or is empty. plot and data
    preview refuse a name without an image suffix already."""
    kinds = {"predict": "NumPy .npy file", "export": "ONNX model"}
    for command in sorted(set(kinds) & set(_writers(trained, None))):
        mine = tmp_path / "mine"
        mine.write_text(XOR_SPEC)
        line = assert_one_line_error(invoke(*_writers(trained, mine)[command]), mine)
        assert line == (f"error: {mine}: exists and is no {kinds[command]}; choose another "
                        "--out (or delete the file first to replace it)")
        assert mine.read_text() == XOR_SPEC
        # of another suffix, told the suffix first (the CLI audit: "delete the file first",
        # followed, was then refused for its suffix)
        named = tmp_path / "mine.yaml"
        named.write_text(XOR_SPEC)
        line = assert_one_line_error(invoke(*_writers(trained, named)[command]), named)
        assert "this command writes" in line and "delete" not in line
        assert named.read_text() == XOR_SPEC
        again, empty = tmp_path / f"{command}-again", tmp_path / f"{command}-empty"
        empty.write_bytes(b"")
        for out in (again, again, empty):  # new, then refreshed; an empty file
            assert invoke(*_writers(trained, out)[command]).exit_code == 0
        assert again.read_bytes() == empty.read_bytes()


def test_an_out_whose_suffix_names_another_format_is_refused(trained, tmp_path):
    """`predict --out preds.png` wrote NumPy data under an image's name; plot and data preview
    write the format the suffix names, predict and export write one format alone."""
    suffixes = {"predict": ".npy", "export": ".onnx"}
    written = []
    for command in sorted(set(suffixes) & set(_writers(trained, None))):
        suffix = suffixes[command]
        for name in ["out.png", "out.csv", f"out{suffix}x"]:
            out = tmp_path / name
            line = assert_one_line_error(invoke(*_writers(trained, out)[command]), out)
            assert f"choose another --out, e.g. out{suffix}" in line, (command, line)
        for name in [f"{command}{suffix.upper()}", command]:  # its own suffix, or none
            assert invoke(*_writers(trained, tmp_path / name)[command]).exit_code == 0
            written.append(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)


@pytest.mark.parametrize("arguments", [
    ["validate", ""], ["train", ""], ["summary", ""], ["eval", ""], ["export", "", "--out",
                                                                    "m.onnx"],
    ["predict", "", "in.npz", "--out", "q.npy"], ["predict", "{run}", "", "--out", "q.npy"]])
def test_an_empty_input_path_is_a_usage_error(tmp_path, monkeypatch, arguments):
    """The predict audit: `predict '' in.npz` (an unset shell variable) was said as a file
    that cannot be read, permission denied, as root: '' is '.' to Path, no file to access."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    result = invoke(*[a.format(run=tmp_path / "run") for a in arguments])
    assert result.exit_code == 2, result.output
    assert "an empty path (an unset shell variable?); give the path" in result.stderr
    assert "Permission denied" not in result.stderr
