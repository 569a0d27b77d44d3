"""Memory pre-flight: refuse a model that cannot fit before allocating it, rather than die with
MemoryError halfway or push the machine into swap.

The estimate is compiler/summary.py's `training_memory` (what a training step holds), or the
evaluation graph's memory plan for eval and predict, read through `estimate_bytes` only. The
limit is the memory available now: MemAvailable of /proc/meminfo, the process's address-space
limit (ulimit -v), the cgroup's memory.max (a scheduler's job limit) and, for cupy, the GPU's
free memory; NNRUN_MEMORY_LIMIT (bytes, or a size such as 8GB) lowers it.
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

from nnrun.compiler.passes.memory_plan import plan_memory, value_bytes
from nnrun.compiler.summary import training_memory
from nnrun.compiler.tables import byte_size

# Units of 1024, as `summary`, `bench` and the memory plan print sizes (Slurm's --mem and
# Docker's --memory count so too), so that a limit, a refusal and a summary agree.
UNITS = {"": 1, "B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
         "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}  # 16G, as Slurm's --mem writes it


class MemoryLimitError(Exception):
    """The model's estimated memory exceeds what the machine has available."""


def estimate_bytes(model, batch: int, training: bool = True) -> int:
    """What a training step holds at `batch`, or (training=False) what evaluation and
    prediction hold: the evaluation graph's planned memory, its parameters, state and inputs."""
    if training:
        return sum(training_memory(model.train_step, batch).values())
    return graph_bytes(model.optimized_evaluation_graph, batch)


def loss_and_grads_bytes(model, batch: int) -> int:
    """What the API's loss_and_grads holds at `batch`: its graph's planned memory, parameters
    and inputs, and the host copies of the gradients it returns."""
    graph = model.optimized_loss_and_grads_graph
    gradients = sum(value_bytes(value.type, batch) for value in graph.params)
    return graph_bytes(graph, batch) + gradients


def graph_bytes(graph, batch: int) -> int:
    """What running an optimized graph at `batch` holds: its memory plan's buffers, and its
    inputs, parameters and state."""
    held = sum(value_bytes(value.type, batch)
               for value in (*graph.inputs, *graph.params, *graph.state))
    return plan_memory(graph, batch).arena_bytes + held


def evaluation_batch(model, most: int = 1000, held: int = 0) -> int:
    """The largest batch, up to `most`, whose inference fits the memory available (at least
    1): evaluation in training, `eval` and `predict` take 1000 samples at a time where they
    fit and fewer where they do not (a model with large activations at batch size 4 trained,
    then needed 2 GB to evaluate at 1000). `held`: memory the caller will hold beside it (the
    training step's, in training). A batch whose plan fits twice: the last, smaller batch of
    the samples gets a plan of its own beside it."""
    available, _ = available_memory(model.backend)
    available = (available - held) // 2
    if estimate_bytes(model, most, training=False) <= available:
        return most
    one = estimate_bytes(model, 1, training=False)
    per_sample = max(estimate_bytes(model, 2, training=False) - one, 1)
    batch = int(max(1, min(most, 1 + (available - one) // per_sample)))
    # The plan's reuse of buffers is not quite linear in the batch: step down where it is over.
    while batch > 1 and estimate_bytes(model, batch, training=False) > available:
        batch -= max(1, batch // 20)
    return batch


def check_memory(model, batch: int, command: str, training: bool = True,
                 needed: int | None = None, fix: str | None = None,
                 reclaimable: int = 0, held: int = 0) -> None:
    """`needed`: a command's own estimate, where it runs other graphs than the training step;
    `fix`: what to do, where the command's default is not it; `reclaimable`: memory held now
    that is let go before this is allocated, where it must be; `held`: memory held now that
    `needed` counts too (the API's parameters, which its caller made)."""
    needed = estimate_bytes(model, batch, training) if needed is None else needed
    available, source = available_memory(model.backend, held)
    available += reclaimable
    if needed > available:
        # evaluation takes as few samples at a time as fit (evaluation_batch): no batch to lower
        fix = fix or ("lower the batch size or the model size" if training
                      else "free memory, or use a smaller model")
        raise MemoryLimitError(
            f"{command}: the model needs about {byte_size(needed)} at batch size {batch}, but "
            f"only {byte_size(available)} is available ({source}); {fix} (see `nnrun summary`)")


def available_memory(backend=None, held: int = 0) -> tuple[int, str]:
    """The tightest limit known, and where it comes from. `held`: host memory this process
    holds now that the caller's estimate counts too: added back to the limits that measure
    what is left (not to NNRUN_MEMORY_LIMIT, a budget, nor to a GPU's free memory)."""
    left = [_meminfo_available(), _address_space_limit(), _cgroup_limit()]
    limits = [(limit + held, source) for limit, source in filter(None, left)]
    limits.append(_environment_limit())
    free = backend.free_device_bytes() if backend is not None else None
    if free is not None:
        limits.append((free, "free GPU memory"))
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else (2**63, "no limit known")


def _meminfo_available() -> tuple[int, str] | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return _free_pages()
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return (int(match.group(1)) * 1024, "MemAvailable in /proc/meminfo") if match else None


def _free_pages() -> tuple[int, str] | None:
    try:  # not every system names these (macOS has no SC_AVPHYS_PAGES)
        pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return (pages * size, "free physical memory") if pages > 0 else None


def _address_space_limit() -> tuple[int, str] | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:  # what the process has mapped already counts against the limit
        status = Path("/proc/self/status").read_text()
        used = int(re.search(r"^VmSize:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024
    except (OSError, AttributeError):
        used = 0
    return soft - used, "ulimit -v"


def _cgroup_limit() -> tuple[int, str] | None:
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        used = int((cgroup / "memory.current").read_text())
        stat = (cgroup / "memory.stat").read_text()
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    # Page cache the kernel can drop counts as used in memory.current, not as taken.
    match = re.search(r"^inactive_file (\d+)$", stat, re.MULTILINE)
    reclaimable = int(match.group(1)) if match else 0
    return int(limit) - used + reclaimable, "the cgroup's memory.max"


def _environment_limit() -> tuple[int, str] | None:
    limit = size_variable("NNRUN_MEMORY_LIMIT")
    return None if limit is None else (limit, "NNRUN_MEMORY_LIMIT")


def size_variable(name: str) -> int | None:
    """The size an environment variable sets, in bytes; None when it is unset or empty."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return parse_size(value)
    except ValueError as error:
        raise MemoryLimitError(f"{name}: {error}") from None


def parse_size(text: str) -> int:
    """'8GB', '512 MiB', '1e9' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(text))
    if match and match.group(2).upper() in UNITS:
        try:
            size = float(match.group(1)) * UNITS[match.group(2).upper()]
            whole = int(size)
        except (ValueError, OverflowError):
            size = None  # digits and signs that are not a number ("1.2.3"), or beyond floats
        bare = match.group(2).upper() in ("", "B")
        if size is not None and bare and size != whole:  # "1.5" read as 1 byte: GB was meant
            raise ValueError(f"{text!r} is not a whole number of bytes; name the unit, e.g. "
                             f"{match.group(1)}GB or {match.group(1)}MiB")
        if size is not None:
            return whole if bare else round(size)  # 2.2GB: a fraction of a byte is rounding
    raise ValueError(f"{text!r} is not a size; write e.g. 8GB, 512MiB or 1000000")


