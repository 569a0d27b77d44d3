"""Data-parallel training over MPI (docs/distributed.md): `mpiexec -n N nnrun train SPEC
--distributed` starts N ranks, each holding the whole model and training on its share of
every batch.

What the ranks exchange, and when:
- the gradients, once per step, inside the training step: its allreduce_mean op calls the
  backend's communicator (MPI's Allreduce over one flat buffer on CPUs; NCCL on GPUs, one rank
  per GPU), and so do synchronised batchnorm statistics;
- after each step, the loss and whether a rank got a signal, so that a diverged loss or a
  SIGTERM stops every rank at the same step;
- what rank 0 alone decides or reads (the starting state, early stopping, checkpoints),
  broadcast from it;
- the sums behind the metrics (training and validation), gathered and added in rank order.

A rank that waits for the others longer than the timeout (one has died, or hangs) says so
and exits, and MPI ends the rest. A rank that fails on its own (not by the ranks' agreement)
aborts the others when it exits: they would otherwise wait for it forever.
"""

from __future__ import annotations

import atexit
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager, nullcontext

import numpy as np

from nnrun.backends import BackendUnavailable, get_backend

from .data.fingerprint import USER_FILE
from .interrupts import Interrupted, InterruptGuard, take_over_from_the_start
from .launcher import launched_rank, launched_size
from .options import option

DEFAULT_TIMEOUT_S = 300.0


class DistributedError(Exception):
    """--distributed cannot run here (no MPI, no GPU per rank, an uneven batch)."""


class RankFollows(SystemExit):
    """This rank stops because the ranks agreed to; rank 0 reports why. A SystemExit, so that
    it exits quietly with rank 0's exit code instead of printing the message N times."""


def exit_code(error: BaseException) -> int:
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 1
    if isinstance(error, KeyboardInterrupt):
        return 130
    return getattr(error, "exit_code", 1)  # Interrupted: 128 + the signal number


class Alone:
    """A single process: each rank operation is the identity, and nothing waits."""

    rank, size, is_root = 0, 1, True

    def shard(self, count: int) -> slice:
        return slice(0, count)

    def even_batches(self, batches: list) -> list:
        return batches

    def loss_share(self, labels, ignore_index) -> float:
        return 1.0

    def together(self, function):
        return function()

    def from_root(self, function):
        return function()

    def agree(self, loss: float, signal_number: int | None) -> tuple[float, int | None]:
        return loss, signal_number

    def gather(self, value) -> list:
        return [value]

    def signal_guard(self) -> InterruptGuard:
        """Signals stop at once, outside the training loop's safe points."""
        return InterruptGuard()

    def first_meeting(self, spec_digest: str, signal_number: int | None = None) -> None:
        if signal_number:
            raise Interrupted(signal_number)

    def same_data(self, shapes: dict, signal_number: int | None = None,
                  digests: dict | None = None) -> None:
        if signal_number:
            raise Interrupted(signal_number)

    def ready(self, backend) -> None:
        pass

    def raise_together(self, error: BaseException):
        raise error

    def waiting(self, what: str):
        return nullcontext()

    def attach(self, backend) -> None:
        pass

    def failed(self) -> None:
        pass


ALONE = Alone()


class MpiRanks:
    """The ranks of MPI_COMM_WORLD. Every method is a collective: each rank calls it at the same
    point, in the same order."""

    def __init__(self, comm, timeout: float = DEFAULT_TIMEOUT_S,
                 guard: InterruptGuard | None = None):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self.watchdog = Watchdog(timeout, f"rank {self.rank} of {self.size}")
        self.agreed = False  # set when the ranks stop together: nothing to abort
        self.guard = guard  # connect's, noting signals since MPI started; train's to end

    @contextmanager
    def signal_guard(self):
        """A signal to one rank is only noted, and every rank stops where they next meet
        (each collective of train's passes on what each received): one leaving alone would
        leave the others waiting for it. connect's guard, noting since MPI started, so that
        no moment before training is left out; handed back as training ends."""
        guard, self.guard = self.guard, None
        if guard is None:
            with InterruptGuard(deferring=self.size > 1) as guard:
                yield guard
            return
        try:
            yield guard
        finally:
            guard.__exit__(None, None, None)

    def shard(self, count: int) -> slice:
        """This rank's contiguous share of `count` samples (equal when `size` divides it)."""
        return slice(count * self.rank // self.size, count * (self.rank + 1) // self.size)

    def even_batches(self, batches: list) -> list:
        """Batches whose sizes the ranks divide evenly, so that the mean of the ranks'
        gradients is the batch's: an epoch's last, smaller batch leaves out its last
        (size mod ranks) samples, and is skipped when smaller than the rank count."""
        cut = [batch[:len(batch) - len(batch) % self.size] for batch in batches]
        return [batch for batch in cut if len(batch)]

    def loss_share(self, labels: np.ndarray, ignore_index) -> float:
        """What this rank's mean loss over its share of a batch (`labels`, the whole batch's)
        is scaled by, so that the ranks' scaled losses, times their sample counts and added,
        are the batch's loss times its size: the fraction of this share's positions that are
        labelled (not ignore_index) over the whole batch's. 1 when every position counts."""
        if ignore_index is None:
            return 1.0
        share = self.shard(len(labels))
        labelled = np.asarray(labels) != ignore_index
        whole = np.count_nonzero(labelled) / labelled.size if labelled.size else 0.0
        mine = labelled[share]
        if not whole or not mine.size:
            return 1.0  # nothing labelled (every loss is 0), or nothing to weigh
        return float(np.count_nonzero(mine) / mine.size / whole)

    def together(self, function):
        """Every rank runs `function`; if any fails, all stop (rank 0 raising the error). An
        error only other ranks met is raised by rank 0 with `met_on` naming the first of them
        and its host (a file missing on one node), which the command prints after it."""
        try:
            value, failure = function(), None
        except BaseException as error:  # noqa: BLE001 - handed to every rank below
            value, failure = None, error
        with self.waiting("at the start of training"):
            failures = self.comm.allgather(
                None if failure is None else (_portable(failure), socket.gethostname()))
        first = next(((rank, met) for rank, met in enumerate(failures) if met is not None), None)
        if first is None:
            return value
        if failure is None:
            rank, (failure, host) = first
            failure.met_on = f"rank {rank} of {self.size} (host {host})"
        self.raise_together(failure)

    def from_root(self, function):
        """Rank 0 runs `function`; every rank gets its result, or stops with rank 0's error."""
        outcome = failure = None
        if self.is_root:
            try:
                outcome = ("ok", function())
            except BaseException as error:  # noqa: BLE001 - handed to every rank below
                failure, outcome = error, ("failed", exit_code(error))
        mine = outcome
        with self.waiting("waiting for a broadcast from rank 0"):
            outcome = self.comm.bcast(outcome, root=0)
        if outcome[0] == "ok":  # rank 0 keeps its own objects, not the broadcast's copies
            return mine[1] if self.is_root else outcome[1]
        self.raise_together(failure if failure is not None else SystemExit(outcome[1]))

    def agree(self, loss: float, signal_number: int | None) -> tuple[float, int | None]:
        """After a step: the ranks' mean loss (not finite when any rank's is not) and the
        signal any rank received, the same on every rank."""
        mine = np.array([loss, signal_number or 0], dtype=np.float64)
        everyone = np.empty((self.size, 2), dtype=np.float64)
        with self.waiting("at the end of a training step"):
            self.comm.Allgather(mine, everyone)
        return float(everyone[:, 0].mean()), int(everyone[:, 1].max()) or None

    def gather(self, value) -> list:
        """`value` (picklable) of every rank, in rank order: the same list on every rank."""
        with self.waiting("gathering the metrics"):
            return self.comm.allgather(value)

    def first_meeting(self, spec_digest: str, signal_number: int | None = None) -> None:
        """Where the ranks first meet, before anything else they do together, every rank
        stops (rank 0 reporting why) on a signal one of them received since MPI started
        (`signal_number`), or when a rank was launched with another spec (`spec_digest`,
        train's): it would fail later as an internal error, or wait for the others until the
        timeout."""
        with self.waiting("at the start of training"):
            met = self.comm.allgather((spec_digest, signal_number))
        signals = [signal_number for _, signal_number in met if signal_number is not None]
        if signals:
            self.raise_together(Interrupted(signals[0]))
        differing = [rank for rank, (digest, _) in enumerate(met) if digest != met[0][0]]
        if differing:
            self.raise_together(DistributedError(
                f"rank {differing[0]} of {self.size} runs another spec than rank 0 (other "
                f"{option('--set')}, {option('--epochs')}, {option('--batch-size')} or "
                f"{option('--seed')}, or another spec file); launch one command on every rank"))

    def same_data(self, shapes: dict, signal_number: int | None = None,
                  digests: dict | None = None) -> None:
        """After every rank loaded the data: each split's shape (`shapes`) and each data
        file's SHA-256 (`digests`, by its role), the same on every rank, or all stop; as they
        do on a signal any rank received (`signal_number`). The spec's digest leaves out what
        is read from the data files (their paths, an input_shape taken from them), which ranks
        on other machines may find elsewhere, or differing (a stale copy on one node)."""
        with self.waiting("at the start of training"):
            met = self.comm.allgather((shapes, digests or {}, signal_number))
        signals = [number for *_, number in met if number]
        if signals:
            self.raise_together(Interrupted(signals[0]))
        for rank, (theirs, their_digests, _) in enumerate(met):
            if theirs != met[0][0]:
                what = f"{_shapes_text(theirs)}, against {_shapes_text(met[0][0])}"
            else:
                roles = [role for role, digest in their_digests.items()
                         if met[0][1].get(role, digest) != digest]
                if not roles:
                    continue
                what = (f"the same shapes, but its {_role_text(roles[0])} holds other bytes: "
                        "another SHA-256")
            self.raise_together(DistributedError(
                f"rank {rank} of {self.size} loaded other data than rank 0 ({what}): its data "
                "files differ; give every rank the same files"))

    def raise_together(self, error: BaseException):
        """Stop every rank, each calling this with the same decision: rank 0 raises `error`
        (and reports it), the others exit quietly with its exit code."""
        self.agreed = True
        if self.is_root:
            raise error
        raise RankFollows(exit_code(error))

    def waiting(self, what: str):
        return self.watchdog.waiting(what)

    def attach(self, backend) -> None:
        """The backend's allreduce_mean goes through MPI (NumPy) or NCCL (CuPy), set up by
        `ready` once every rank has prepared."""
        if self.size > 1:
            kind = NcclReduction if backend.name == "cupy" else MpiReduction
            backend.communicator = kind(self.comm)

    def ready(self, backend) -> None:
        """After the ranks prepared and compared their data: the reduction's own set-up."""
        if self.size > 1:
            with self.waiting("setting up the gradients' reduction"):  # NCCL's id, its ring
                backend.communicator.set_up()

    def failed(self) -> None:
        """Called on the way out of a failed run: when this rank fails on its own, the
        others are waiting for it in a collective; MPI_Abort (after this rank has printed its
        error) ends them."""
        if not self.agreed:
            atexit.register(self.comm.Abort, 1)


def _role_text(role: str) -> str:
    """A data file by its role (data_files'): `data file (data.path)`, `train-images-idx3-ubyte`."""
    return "data file (data.path)" if role == USER_FILE else f"file {role}"


def _shapes_text(shapes: dict) -> str:
    """`train x [200, 3], test x [40, 3]`."""
    return ", ".join(f"{split} x {list(shape)}" for split, shape in shapes.items())


def _portable(error: BaseException) -> BaseException:
    """`error` as it can travel to rank 0 (pickled), or its message."""
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - an exception that does not pickle: keep its words
        return DistributedError(f"{type(error).__name__}: {error}")


class Watchdog:
    """Ends this process when a wait for the other ranks lasts longer than `timeout`: a rank
    blocked in MPI cannot be interrupted otherwise (its signal handlers wait for the call)."""

    def __init__(self, timeout: float, who: str, on_timeout=None):
        self.timeout, self.who = timeout, who
        self.on_timeout = on_timeout or _exit_now
        self.current: tuple[str, float] | None = None
        threading.Thread(target=self._watch, name="nnrun-watchdog", daemon=True).start()

    @contextmanager
    def waiting(self, what: str):
        previous, self.current = self.current, (what, time.monotonic())
        try:
            yield
        finally:
            self.current = previous

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            current = self.current
            if current is not None and time.monotonic() - current[1] > self.timeout:
                self.on_timeout(f"error: {self.who}: no word from the other ranks for "
                                f"{self.timeout:g} s ({current[0]}); one of them has died or "
                                "hangs (its own messages, if any, are above); stopping "
                                "(--distributed-timeout sets the wait)")
                return


def _exit_now(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(1)  # the main thread is blocked inside MPI: only the process can end it


class _Reduction:
    """What every rank's backend shares: the job's communicator."""

    def __init__(self, comm):
        self.comm, self.size = comm, comm.Get_size()

    def set_up(self) -> None:
        """What the ranks set up together, once all of them have prepared (MpiRanks.ready)."""

    def all_agree(self, ok: bool) -> bool:
        """True on every rank when `ok` is on every rank: a choice that must be the same on
        all of them (runtime/step_path.py: which executor runs the step)."""
        return all(self.comm.allgather(bool(ok)))


class MpiReduction(_Reduction):
    """allreduce_mean for host arrays: one MPI Allreduce (sum) in place, then / size."""

    def __init__(self, comm):
        from mpi4py import MPI

        super().__init__(comm)
        self.in_place, self.sum = MPI.IN_PLACE, MPI.SUM

    def allreduce_mean(self, array) -> None:
        self.comm.Allreduce(self.in_place, array, op=self.sum)
        np.divide(array, self.size, out=array)


class NcclReduction(_Reduction):
    """allreduce_mean for CuPy arrays through NCCL, on the current stream; the NCCL id is
    made by rank 0 and broadcast over MPI."""

    def __init__(self, comm):
        from cupy.cuda import nccl

        if not nccl.available:  # CuPy imports without NCCL; its names are missing then
            raise DistributedError(
                "--distributed --backend cupy reduces gradients with NCCL, which CuPy does not "
                "find here; install it with: pip install 'nnrun[mpi-cuda13]' (or "
                "'nnrun[mpi-cuda12]'), or train on CPU ranks with --backend numpy")
        super().__init__(comm)
        self.nccl, self.communicator = nccl, None
        self.types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}

    def set_up(self) -> None:
        """NCCL's communicator, every rank waiting for the others in it: not while they
        prepare, when a rank that failed would be in another collective, sharing its error."""
        comm, nccl = self.comm, self.nccl
        uid = comm.bcast(nccl.get_unique_id() if comm.Get_rank() == 0 else None, root=0)
        self.communicator = nccl.NcclCommunicator(self.size, uid, comm.Get_rank())

    def allreduce_mean(self, array) -> None:
        import cupy

        if self.communicator is None:  # a reduction used on its own, outside train
            self.set_up()

        stream = cupy.cuda.get_current_stream()
        self.communicator.allReduce(array.data.ptr, array.data.ptr, array.size,
                                    self.types[array.dtype.name], self.nccl.NCCL_SUM, stream.ptr)
        cupy.divide(array, self.size, out=array)


def connect(backend: str, timeout: float = DEFAULT_TIMEOUT_S) -> MpiRanks:
    """This process as a rank of the MPI job it was started in (a job of one without mpiexec)."""
    if backend == "cupy":
        # CuPy missing or no device: its one line, before any GPU call, and before MPI starts:
        # a rank that exits after MPI_Init waits in MPI_Finalize for the others, which would
        # all report it instead of being ended by the launcher when rank 0 does. The extras
        # named are those with NCCL, which the ranks reduce with.
        try:
            get_backend("cupy")
        except BackendUnavailable as error:
            raise BackendUnavailable(str(error).replace("'nnrun[cuda", "'nnrun[mpi-cuda")) \
                from None
    # A signal from the start of MPI (seconds, waiting for every rank) to the end of training
    # is only noted (MpiRanks.signal_guard): this rank leaving alone would leave the others
    # waiting for it until --distributed-timeout.
    with ExitStack() as held:
        guard = held.enter_context(InterruptGuard(deferring=True))
        take_over_from_the_start(guard)  # a signal noted since the rank started (entry.py)
        try:
            with _watched_start(timeout, launched_rank(), launched_size()):
                from mpi4py import MPI
        except (ImportError, RuntimeError) as error:
            said = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise DistributedError(f"--distributed needs mpi4py and an MPI library ({said}); "
                                   "install them with: pip install 'nnrun[mpi]'") from None
        comm = MPI.COMM_WORLD
        ranks = MpiRanks(comm, timeout, guard)
        guard.deferring = ranks.size > 1  # a job of one stops at once, as without MPI
        if backend == "cupy":
            with ranks.waiting("choosing each rank's GPU"):
                use_own_gpu(comm.Split_type(MPI.COMM_TYPE_SHARED))
        held.pop_all()  # started: the guard stays, train's to hand back
    return ranks


# Run by a process beside the rank: after `timeout` seconds, if the rank has not ended it
# (its parent is still the rank), says so and kills the rank.
_START_WATCHER = """\
import os, sys, time
rank, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
    if os.getppid() != rank:  # the rank has gone: nothing to watch
        sys.exit()
print(message, file=sys.stderr, flush=True)
os.kill(rank, 9)
"""


@contextmanager
def _watched_start(timeout: float, rank: int, size: int):
    """MPI's start (MPI_Init, inside mpi4py's import) waits for every rank while holding
    Python's lock, so the Watchdog thread cannot run: a rank that died at once, under a
    launcher that does not end the job (srun without --kill-on-bad-exit, mpiexec
    --enable-recovery), would leave the others there for good. A process beside it watches."""
    why = ("MPI's start takes longer here" if size == 1 else "another rank has died or hangs "
           "(its own messages, if any, are above), or MPI's start takes longer here")
    message = (f"error: rank {rank} of {size}: MPI did not start within {timeout:g} s; {why}; "
               "stopping (--distributed-timeout sets the wait)")
    try:
        # A session of its own: a Ctrl-C in the terminal goes to the rank, not to it.
        watcher = subprocess.Popen([sys.executable, "-c", _START_WATCHER, str(os.getpid()),
                                    str(timeout), message], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, start_new_session=True)
    except OSError:  # no interpreter to start (an embedded Python): MPI starts unwatched
        watcher = None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.kill()
            watcher.wait()


def use_own_gpu(machine) -> None:
    """One rank per GPU: the ranks of one machine (`machine`, their communicator) take its
    GPUs in order; a rank that sees one GPU alone takes it (a launcher that binds a GPU to
    each rank: Slurm's --gpus-per-task=1, CUDA_VISIBLE_DEVICES set per rank). Two ranks on
    one GPU are refused here, in words: NCCL would refuse them later, in its own."""
    import cupy

    local_rank, local_ranks = machine.Get_rank(), machine.Get_size()
    # Every rank decides on the same facts: one that raised alone would leave the others
    # waiting for it in the next collective call
    counts = machine.allgather(cupy.cuda.runtime.getDeviceCount())
    count = counts[local_rank]
    if any(seen > 1 and rank >= seen for rank, seen in enumerate(counts)):
        raise DistributedError(f"--backend cupy runs one rank per GPU, and this machine has "
                               f"{max(counts)}: start at most {max(counts)} ranks per machine")
    device = cupy.cuda.Device(local_rank if count > 1 else 0)
    device.use()
    buses = machine.allgather(device.pci_bus_id)
    shared = next((bus for bus in buses if buses.count(bus) > 1), None)
    if shared is not None:
        first, second = [rank for rank, bus in enumerate(buses) if bus == shared][:2]
        raise DistributedError(
            f"--backend cupy runs one rank per GPU, and ranks {first} and {second} of this "
            f"machine's {local_ranks} share GPU {shared}: start at most one rank per GPU on "
            "each machine")


def check_batch(batch_size: int, size: int, set_by: str = "") -> None:
    """The global batch must split evenly over the ranks (`set_by`: SourceSpec.set_by's)."""
    if batch_size % size:
        lower, upper = batch_size - batch_size % size, batch_size - batch_size % size + size
        choices = f"{lower} or {upper}" if lower else f"{upper}"
        raise DistributedError(f"train.batch_size {batch_size}{set_by} does not split evenly "
                               f"over {size} ranks; choose a multiple of {size} (e.g. {choices}), "
                               "or run another number of ranks")
