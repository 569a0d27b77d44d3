"""--out "" (an unset shell variable): a usage error for every command that writes.

Before, `train --out ""` wrote its run into the current directory, and the commands that write
one file failed renaming onto '.' with 'Device or resource busy; Device or resource busy'."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from nnrun.cli import main

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
    result = CliRunner().invoke(main, [*args, "--out", empty])
    assert result.exit_code == 2, result.output
    assert "'--out': an empty path" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written
