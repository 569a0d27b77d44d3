"""How an error names a setting of the command that ran: its option on the command line
(`--out`), or, where the Python API called it, the parameter of the API's function (`out_dir`).
Commands spelt out in full (`resume with: nnrun train ... --resume RUN`) stay commands."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager

_API_NAMES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("api_names",
                                                                         default=None)

# nnrun.train's parameters, by the option of `nnrun train` each stands for
TRAIN_PARAMETERS = {"--out": "out_dir", "--resume": "resume=RUN_DIR",
                    "--allow-changes": "allow_changes=True", "--epochs": "epochs",
                    "--batch-size": "batch_size", "--seed": "seed", "--threads": "threads",
                    "--set": "overrides"}


# nnrun.load_run's
LOAD_RUN_PARAMETERS = {"--checkpoint": "checkpoint", "--no-preprocessing": "preprocess=False"}


def option(flag: str, value: str | None = None) -> str:
    """`flag` (with its `value`) as the command line writes it, or the API parameter it stands
    for there (`checkpoint='last'`)."""
    names = _API_NAMES.get() or {}
    if flag not in names:
        return flag if value is None else f"{flag} {value}"
    return names[flag] if value is None else f"{names[flag]}={value!r}"


@contextmanager
def named_as_parameters(names: dict):
    """Errors raised within name the options as these API parameters."""
    token = _API_NAMES.set(names)
    try:
        yield
    finally:
        _API_NAMES.reset(token)
