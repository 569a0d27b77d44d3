"""--out "" (an unset shell variable): a usage error for every command that writes.

Before, `train --out ""` wrote its run into the current directory, and the commands that write
one file failed renaming onto '.' with 'Device or resource busy; Device or resource busy'."""

from __future__ import annotations

import importlib.util

import pytest

from invoking import invoke

COMMANDS = {
    "train": ["train", "{spec}"],
    "predict": ["predict", "{run}", "{spec}"],
    "export": ["export", "{run}"],
    "plot": ["plot", "{run}"],
    "data preview": ["data", "preview", "{spec}"],
}


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
