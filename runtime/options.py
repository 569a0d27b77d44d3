"""How an error names a setting of the command that ran: its option on the command line
(`--out`), or, where the Python API called it, the parameter of the API's function (`out_dir`).
Commands spelt out in full (`resume with: nnrun train ... --resume RUN`) stay commands."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager

from nnrun.notices import shell_word

_API_NAMES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("api_names",
                                                                         default=None)

# nnrun.train's parameters, by the option of `nnrun train` each stands for
TRAIN_PARAMETERS = {"--out": "out_dir", "--resume": "resume=RUN_DIR",
                    "--allow-changes": "allow_changes=True", "--epochs": "epochs",
                    "--batch-size": "batch_size", "--seed": "seed", "--threads": "threads",
                    "--set": "overrides"}


# nnrun.load_run's
LOAD_RUN_PARAMETERS = {"--checkpoint": "checkpoint", "--no-preprocessing": "preprocess=False"}


def option(flag: str, *values: str, placeholder: bool = False) -> str:
    """`flag` (with its `values`, alternatives: `--checkpoint best or last`) as the command line
    writes it, quoted for a shell, or the API parameter it stands for there (`checkpoint='best'
    or 'last'`). A `placeholder` value (NEW_DIR) is written as it is."""
    names = _API_NAMES.get() or {}
    api = flag in names
    quote = (lambda value: value) if placeholder else repr if api else shell_word
    given = " or ".join(map(quote, values))
    if not values:
        return names[flag] if api else flag
    # a parameter named with its placeholder (resume=RUN_DIR) takes the value given instead
    return f"{names[flag].split('=')[0]}={given}" if api else f"{flag} {given}"


@contextmanager
def named_as_parameters(names: dict):
    """Errors raised within name the options as these API parameters."""
    token = _API_NAMES.set(names)
    try:
        yield
    finally:
        _API_NAMES.reset(token)
