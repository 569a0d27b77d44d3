"""What the MPI launcher told this process, read from its environment alone: before MPI starts,
and where nothing heavier may be imported (the command's last step, entry.py, may follow a
signal that landed inside NumPy's import and left it half loaded)."""

from __future__ import annotations

import os
import time

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


# How long a further rank waits before it reports an error met before the ranks meet (the
# command line's, the spec's), by which time rank 0, meeting the same, has ended the job.
FURTHER_RANK_DELAY_S = 5.0


def wait_for_rank_0() -> None:
    """Before a rank other than 0 reports an error that every rank usually meets alike: an MPI
    launcher ends the whole job when its first rank fails, so rank 0's report of the same
    error ends this rank meanwhile; a rank still here after the delay met an error of its own
    (a file missing on its node alone), and reports it."""
    time.sleep(FURTHER_RANK_DELAY_S)
