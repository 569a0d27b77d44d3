"""The `nnrun` command's entry point. Importing the command line takes about half a second
(pydantic, NumPy, click); a Ctrl-C then is answered as the commands answer it, in one line,
not with a traceback of whatever module was loading."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from nnrun.cli import main as command
    except KeyboardInterrupt:
        print("interrupted: stopped by SIGINT before the command began; nothing was written",
              file=sys.stderr)
        sys.exit(130)
    command()
