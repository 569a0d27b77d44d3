"""What the MPI launcher told this process, read from its environment alone: before MPI starts,
and where nothing heavier may be imported (the command's last step, entry.py, may follow a
signal that landed inside NumPy's import and left it half loaded)."""

from __future__ import annotations

import os

# What launchers (Open MPI, MPICH and PMI, Slurm, MVAPICH) tell each process, read before MPI
# is started: the command line's own checks run first, and only rank 0 should report them.
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK",
                   "SLURM_PROCID")
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_rank() -> int:
    """This process's rank as its launcher set it (0 without a launcher)."""
    return _launcher_number(_RANK_VARIABLES, 0)


def launched_size() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    return _launcher_number(_SIZE_VARIABLES, 1)


def _launcher_number(names, default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default
