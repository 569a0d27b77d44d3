"""Running the `nnrun` command line in-process, and the checks every command's result meets
(DESIGN.md section 5): shared by the CLI tests of every folder."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from nnrun.cli import main


def invoke(*args) -> "click.testing.Result":  # noqa: F821 - only a type name
    # Click 8.2+ keeps stdout and stderr apart (result.stdout / result.stderr) and interleaves
    # both in result.output; there is no mix_stderr any more.
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_ok(result, code: int = 0):
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def assert_one_line_error(result, names: str | Path, code: int = 1) -> str:
    """The section 5 contract: exit code, one stderr line, no traceback, names the file."""
    assert result.exit_code == code, result.output
    # CliRunner turns an uncaught exception into exit 1 too; it must be a deliberate exit.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(names) in lines[0], lines[0]
    return lines[0]
