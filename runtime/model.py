"""The Python API's Model: a compiled spec on a backend, NumPy arrays in and out."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from functools import cached_property

import numpy as np

from nnrun.backends import get_backend
from nnrun.compiler.frontend import SourceSpec, compile_checked
from nnrun.compiler.initial_values import PARAMS_PREFIX
from nnrun.compiler.passes import optimize
from nnrun.compiler.passes.dead_code import eliminate_dead_code
from nnrun.compiler.schema import CLASS_LABEL_LOSSES, REGRESSION_LOSSES
from nnrun.compiler.step import build_evaluation, build_loss_and_grads

from .agreement import rounding_sensitive
from .captured import CapturedExecutor
from .data.splits import not_finite_problem
from .data.targets import laid_out_as_outputs
from .executor import Executor, PlannedExecutor
from .init import init_params
from .memory import check_memory, estimate_bytes, loss_and_grads_bytes
from .step_path import TOLERANCE, CheckedStep, step_paths
from .step_scalars import StepScalars


class MissingParameters(KeyError):
    """A KeyError whose text prints as the line it is (KeyError's own shows it quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Model:
    """`optimized=False` runs the plain graphs on the reference executor (no passes, no memory
    plan): what the optimized executors are tested against. By default the graphs run on the
    planned executor, and on a backend that can capture device graphs (CuPy) the training step,
    the forward pass and the evaluation are each captured as one graph and replayed
    (`graph=False`: uncaptured; the loss-and-gradients graph of gradcheck never is). Where those paths have
    not been verified on the device, each executor checks its first step against the reference
    executor and falls back with a warning line (runtime/step_path.py)."""

    def __init__(self, source: SourceSpec, backend="numpy", optimized: bool | None = None,
                 data_parallel: bool = False, graph: bool = True):
        """backend: a name, or a backend object."""
        self.source = source
        self.spec = source.spec
        if not (isinstance(backend, str) or backend is None or hasattr(backend, "xp")):
            raise TypeError(f"backend must be a backend's name ('numpy' or 'cupy'), got "
                            f"{backend!r}")
        self.backend = get_backend(backend) if isinstance(backend, str) or backend is None \
            else backend
        self.optimized = True if optimized is None else optimized
        # A data-parallel step calls the communicator inside the step: never captured.
        self.capture_graph = graph and not data_parallel
        # data_parallel: the step averages gradients over the ranks, through the communicator
        # that nnrun.runtime.distributed gives the backend.
        self.lowered, self.train_step = compile_checked(source, data_parallel)
        # The executors run in buffers of their own, which the next call overwrites: calls
        # from several threads take turns (they had mixed one another's results up).
        self._calls = threading.Lock()
        self._fitting_batches: set[tuple] = set()  # (batch, gradients) checked to fit

    @property
    def param_infos(self) -> dict:
        """Trainable parameters, then buffers (batchnorm running statistics), in layer order."""
        return {**self.lowered.params, **self.lowered.state}

    def init_params(self, seed: int | None = None) -> dict[str, np.ndarray]:
        seed = self.spec.seed if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, as the spec's is, got {seed!r}")
        return init_params(self.param_infos, seed, self.spec.dtype)

    def train_state(self, seed: int | None = None) -> dict:
        """Parameters, buffers and zeroed optimizer state on the backend: a step's starting point."""
        return {name: self.backend.from_host(value)
                for name, value in self.host_train_state(seed).items()}

    def host_train_state(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """train_state, still on the host."""
        state = self.init_params(seed)
        for name, param in self.train_step.optimizer_state.items():
            state[name] = np.zeros(state[param].shape, state[param].dtype)  # calloc: untouched
        return state

    def step_feeds(self, state: dict, x, y, lr: float, step: int, seed: int) -> dict:
        """Everything the training-step graph reads: the state, the batch, the rate, the step
        count (from 1, for Adam's bias correction) and the step's dropout key (from `seed`)."""
        be = self.backend
        scalars = self.step_scalars(0, [lr], step, [seed], [0])
        return self.batch_feeds(state, be.from_host(np.asarray(x, dtype=self.spec.dtype)),
                                be.from_host(target_array(self.spec, self.lowered, y)),
                                scalars.feeds(0))

    def batch_feeds(self, state: dict, x, targets, scalars: dict) -> dict:
        """As step_feeds, for a batch already on the backend (`targets` as target_array) and
        its step's scalars (StepScalars.feeds)."""
        return {**state, "x": x, "y": targets, **scalars}

    def step_scalars(self, start: int, lrs, first_count: int, seeds, first_samples,
                     loss_shares=None) -> StepScalars:
        """The scalars of steps `start`, `start + 1`, ... on the backend (step_scalars.py):
        `first_samples`, where each step's batch starts in the whole batch (a rank's share), so
        that its dropout masks are the whole batch's; `loss_shares`, what a rank's loss is
        scaled by (distributed.MpiRanks.loss_share; 1 when not given), fed where the step
        reads it."""
        shares = (loss_shares or [1.0] * len(lrs)) if self.reads_loss_share else None
        return StepScalars(self.backend, self.spec.dtype, start, lrs, first_count, seeds,
                           first_samples, shares)

    @cached_property
    def reads_loss_share(self) -> bool:
        """Whether the training step scales its loss by a rank's share (step.py)."""
        return any(value.name == "loss_share" for value in self.train_step.graph.inputs)

    # The executors of the model's four graphs, built once each, on first use.

    @cached_property
    def forward_executor(self) -> Executor:
        return self._executor(self.lowered.graph, capturable=True, what="the forward pass")

    @cached_property
    def step_executor(self) -> Executor:
        # Only the training step runs collectives (the gradients' all-reduce): its ranks must
        # take one path. The other graphs' batches can differ between ranks (their shares).
        return self._executor(self.train_step.graph, capturable=True,
                              agree=self._every_rank_agrees)

    def release_training_step(self) -> str:
        """Lets the training step's executor go (its state, arenas and captured graph), for
        the memory of what follows a run, and returns the path it took (step_path)."""
        path = self.step_path
        self.__dict__.pop("step_executor", None)
        return path

    @property
    def step_path(self) -> str:
        """The training step's path: "captured", "planned" or "reference" (after a fallback,
        the path that took over)."""
        return getattr(self.step_executor, "path", "planned" if self.optimized else "reference")

    @property
    def step_fallbacks(self) -> list[str]:
        """The training step's paths dropped so far, each with why (runtime/step_path.py)."""
        return getattr(self.step_executor, "fallbacks", [])

    @cached_property
    def evaluation_executor(self) -> Executor:
        return self._executor(build_evaluation(self.spec).graph, capturable=True,
                              what="the evaluation")

    @cached_property
    def optimized_evaluation_graph(self):
        """The evaluation graph after the passes: what memory.py plans evaluation's memory
        from (several batch sizes, one build)."""
        return optimize(build_evaluation(self.spec).graph)

    @cached_property
    def optimized_loss_and_grads_graph(self):
        """The loss-and-gradients graph after the passes, as memory.py plans its memory."""
        return optimize(build_loss_and_grads(self.spec).graph)

    @cached_property
    def loss_and_grads_executor(self) -> Executor:
        return self._executor(build_loss_and_grads(self.spec).graph,
                              what="the loss and gradients")

    def _executor(self, graph, capturable: bool = False, what: str = "the training step",
                  agree=None):
        if not self.optimized:
            return self._path_executor(graph, "reference")
        paths = self._capture_paths if capturable else ["planned", "reference"]
        if paths[0] == "planned" and not self.backend.check_first_step:
            return self._path_executor(graph, "planned")
        return CheckedStep(paths, lambda path: self._path_executor(graph, path),
                           check=self.backend.check_first_step, what=what,
                           sensitive=lambda feeds: rounding_sensitive(graph, feeds, TOLERANCE),
                           agree=agree)

    def _every_rank_agrees(self, ok: bool) -> bool:
        communicator = self.backend.communicator  # set for a data-parallel run of several ranks
        return ok if communicator is None else communicator.all_agree(ok)

    @cached_property
    def _capture_paths(self) -> list[str]:
        # Asked once: a reason capture cannot work here is said in one line, not per graph.
        return step_paths(self.backend, self.capture_graph)

    def _path_executor(self, graph, path: str):
        if path == "reference":
            return Executor(eliminate_dead_code(graph), self.backend)
        planned = PlannedExecutor(optimize(graph), self.backend)
        if path == "captured":
            return CapturedExecutor(planned, self.backend.graph_capture())
        return planned

    def forward(self, params: dict, x) -> np.ndarray:
        """The last layer's outputs after its activation (probabilities only when that is a
        softmax or sigmoid, else raw scores), in inference mode (no dropout). `x` is what the
        model sees, already preprocessed; nnrun.load_run(...).predict takes raw inputs."""
        with self._calls, _quiet_arithmetic():
            outputs, _ = self.forward_executor.run(self._feeds(params, x=x))
            return self._host_copy(outputs["prediction"])

    def loss_and_grads(self, params: dict, x, y_true) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and its gradients in inference mode (no dropout, running batchnorm statistics)."""
        with self._calls, _quiet_arithmetic():
            outputs, _ = self.loss_and_grads_executor.run(self._feeds(params, x=x, y=y_true))
            grads = {name[len("grad/"):]: self._host_copy(v)
                     for name, v in outputs.items() if name.startswith("grad/")}
            return float(outputs["loss"]), grads

    def loss(self, params: dict, x, y_true) -> float:
        """The loss of loss_and_grads alone: no host copy of the gradients (gradcheck's
        differences need only the loss)."""
        with self._calls, _quiet_arithmetic():
            outputs, _ = self.loss_and_grads_executor.run(self._feeds(params, x=x, y=y_true))
            return float(outputs["loss"])

    def _host_copy(self, array) -> np.ndarray:
        # An executor's outputs are its own buffers, overwritten by its next run.
        return np.array(self.backend.to_host(array), copy=True)

    def _feeds(self, params: dict, **arrays) -> dict:
        """The API's arrays, checked first: a wrong shape or label would otherwise fail deep in
        a kernel, or worse, broadcast or index into a wrong result."""
        be = self.backend
        params = self._checked_params(params)
        if isinstance(arrays["x"], np.ndarray) and arrays["x"].ndim:  # before its copy is made
            self._check_memory(len(arrays["x"]), "y" in arrays, params)
        x = self.checked_x(arrays["x"])
        problem = not_finite_problem(x, after="as the model reads it")
        if problem:  # NaN out, and NumPy's warnings on the way: refused, as run.predict does
            raise ValueError(problem)
        self._check_memory(len(x), "y" in arrays, params)
        feeds = {name: be.from_host(value) for name, value in params.items()}
        feeds["x"] = be.from_host(x)
        if "y" in arrays:
            y = checked_targets(self.spec, self.lowered, arrays["y"], len(x))
            with np.errstate(over="ignore"):  # beyond the dtype: inf, refused just below
                target = target_array(self.spec, self.lowered, y)
            problem = (not_finite_problem(target, "y_true", "as the loss reads it")
                       if target.dtype.kind == "f" else None)
            if problem:
                raise ValueError(problem)
            feeds["y"] = be.from_host(target)
        return feeds

    def _check_memory(self, batch: int, gradients: bool, params: dict) -> None:
        """MemoryLimitError, as the commands give, where a batch needs more memory than there
        is (NumPy's own MemoryError, or the kernel's out-of-memory kill, otherwise), checked
        once per batch size, as a command checks once. The estimate counts `params`, which the
        caller holds in host memory already."""
        if (batch, gradients) in self._fitting_batches:
            return
        given = sum(value.nbytes for value in params.values())
        needed = loss_and_grads_bytes(self, batch) if gradients \
            else estimate_bytes(self, batch, training=False)
        what = "loss_and_grads" if gradients else "forward"
        executor = self.loss_and_grads_executor if gradients else self.forward_executor
        # The arenas its executor holds for other batch sizes go where this one would not fit
        held = sum(program.plan.arena_bytes
                   for program in getattr(executor, "programs", {}).values())
        check_memory(self, batch, f"Model.{what}", needed=needed, reclaimable=held, held=given,
                     fix="pass fewer samples at a time, or use a smaller model")
        self._fitting_batches.add((batch, gradients))

    def _checked_params(self, params) -> dict[str, np.ndarray]:
        """Each parameter the model has, as an array of its shape in the model's dtype, as x
        is (float64 weights in a float32 model were computed with in float64 by some kernels,
        in float32 by others), and finite there: NaN out, and NumPy's warnings on the way,
        refused as x's."""
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of arrays by name (as model.init_params() "
                            f"gives), got {type(params).__name__}")
        expected = self.param_infos
        missing = [name for name in expected if name not in params]
        if missing:
            stored = all(f"{PARAMS_PREFIX}{name}" in params for name in missing)
            hint = (f" (a checkpoint's arrays are named {PARAMS_PREFIX}NAME: load it with "
                    "nnrun.load_run(run_dir).params)" if stored else "")
            raise MissingParameters(f"params lacks {', '.join(map(repr, missing))}; the "
                                    f"model's are {', '.join(expected)}{hint}")
        dtype, checked = np.dtype(self.spec.dtype), {}
        for name, info in expected.items():
            try:
                value = as_array(params[name])
            except (TypeError, ValueError):  # a ragged list
                value = None
            if value is None or value.dtype.kind not in "biuf":
                raise TypeError(f"params[{name!r}] must be an array of real numbers, got "
                                f"{_described(params[name])}")
            if value.shape != tuple(info.shape):
                raise ValueError(f"params[{name!r}] has shape {list(value.shape)}, the model's "
                                 f"is {list(info.shape)}")
            with np.errstate(over="ignore", invalid="ignore"):
                checked[name] = value.astype(dtype, copy=False)
            if not np.isfinite(checked[name]).all():
                raise ValueError(f"params[{name!r}] must hold finite {dtype} numbers (NaN, inf "
                                 f"or too large for {dtype}); give finite weights")
            if name.endswith(".running_var") and (checked[name] < 0).any():  # sqrt: NaN
                raise ValueError(f"params[{name!r}] holds {checked[name].min():g}; a variance "
                                 "is 0 or more")
        return checked

    def checked_x(self, x, cast: bool = True) -> np.ndarray:
        """x as an array of the model's dtype (cast=False: of its own), [N, *input_shape] with
        N >= 1, or a ValueError that says what it should be."""
        sample = tuple(self.lowered.graph.inputs[0].type.shape[1:])
        try:
            given = as_array(x)
        except (TypeError, ValueError) as error:  # a ragged list, say
            raise TypeError(f"x must be an array of numbers [N, {_dims(sample)}] ({error})") from None
        if given.dtype.kind == "c":  # the cast would drop the imaginary parts with a warning
            raise TypeError(f"x must be real numbers [N, {_dims(sample)}], got complex values")
        if given.dtype.kind not in "biuf":  # strings, objects, dates: no cast to trust
            raise TypeError(f"x must be an array of numbers [N, {_dims(sample)}], got "
                            f"{_described(x)}")
        x = given
        if cast:
            with np.errstate(over="ignore"):  # beyond the dtype: inf, for the caller to check
                x = given.astype(self.spec.dtype, copy=False)
        problem = batch_shape_problem(x.shape, sample)
        if problem:
            raise ValueError(problem)
        return x


def check_flags(**flags) -> None:
    """The API's flags: True or False (NumPy's bools, 0 and 1 too): a string such as "no" is
    truthy, and would turn on what it means to turn off."""
    for name, value in flags.items():
        if isinstance(value, (str, bytes)) or value not in (True, False):
            raise TypeError(f"{name} must be True or False, got {value!r}")


def batch_shape_problem(shape: tuple, sample: tuple) -> str | None:
    """Why inputs of `shape` are no batch of the model's samples [N, *sample], N >= 1 (None:
    they are); for the API's arrays and predict's files alike."""
    shape, sample = tuple(shape), tuple(sample)
    if shape[1:] != sample or len(shape) != len(sample) + 1:
        if shape == sample:
            hint = "; for one sample, add a batch axis: x[None]"
        else:
            hint = (f": samples of shape {list(shape[1:])}, the model's are {list(sample)}"
                    if len(shape) == len(sample) + 1 else "")
            hint += _rearranged(shape, sample) or _one_sample(shape, sample)
        return f"x must be [N, {_dims(sample)}], got shape {list(shape)}{hint}"
    return None if shape[0] else "x holds no samples"


def _rearranged(shape: tuple, sample: tuple) -> str:
    """The numpy call that makes the same values the model's samples, where one does:
    channels last ([N, H, W, C] for [C, H, W]), or the values of a sample in other axes."""
    if not shape or math.prod(shape[1:]) != math.prod(sample):
        return ""
    if len(shape) == len(sample) + 1 and len(sample) > 1 and \
            tuple(shape[1:]) == sample[1:] + sample[:1]:
        axes = ", ".join(map(str, (0, len(shape) - 1, *range(1, len(shape) - 1))))
        return f"; channels last? x.transpose({axes}) puts them first"
    return f"; the values are there in another shape: x.reshape(-1, {_dims(sample)})"


def _one_sample(shape: tuple, sample: tuple) -> str:
    """The values of one sample in another shape ([8, 8] or [64] for [1, 8, 8]); not where
    the shape has a batch's axes ([2, 32] for [64]: two samples, likely)."""
    if math.prod(shape) != math.prod(sample) or len(shape) == len(sample) + 1:
        return ""
    return f"; one sample? x.reshape(1, {_dims(sample)})"


def _quiet_arithmetic():
    """Finite inputs whose products overflow give inf or NaN, which the API returns, without
    NumPy's RuntimeWarnings on the way (Run.predict says it once, in a line of its own)."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")


def as_array(value) -> np.ndarray:
    """A NumPy array of what the API is given: PyTorch's tensors too, those that require grad
    (detached: nnrun computes its own gradients) and bfloat16 ones (as float32, which holds
    every bfloat16 value), which NumPy cannot take as they are; not a masked array's hidden
    values."""
    if _is_torch(value):
        value = value.detach().cpu().resolve_conj().resolve_neg()  # views NumPy cannot read
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
    elif isinstance(value, (list, tuple)) and any(map(_is_torch, value)):  # rows of tensors
        value = [as_array(row) for row in value]
    if np.ma.is_masked(value):  # np.asarray would use the values under the mask
        raise ValueError("it holds masked values; fill them first (.filled(value)), or leave "
                         "those samples out")
    return np.asarray(value)


def _is_torch(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _described(value) -> str:
    if np.ma.is_masked(value):
        return "a masked array with masked values (fill them first: .filled(value))"
    try:
        array = as_array(value)
    except (TypeError, ValueError):
        return f"a {type(value).__name__} of rows of unequal lengths"
    return f"{type(value).__name__} {str(value)[:40]!r}" if not array.ndim else \
        f"an array of {array.dtype}"


def _dims(shape) -> str:
    return ", ".join(map(str, shape))


def checked_targets(spec, lowered, y, count: int) -> np.ndarray:
    """y_true of the API checked against the loss and the model's output: one per sample,
    class labels within the classes (or ignore_index), 0/1 targets within [0, 1]."""
    given = y
    try:
        y = as_array(y)
    except (TypeError, ValueError) as error:
        raise TypeError(f"y_true must be an array of numbers ({error})") from None
    if y.dtype.kind not in "biuf" or not y.ndim:
        raise TypeError(f"y_true must be an array of numbers, one per sample, got "
                        f"{type(given).__name__} {str(given)[:40]!r}")
    if len(y) != count:
        raise ValueError(f"y_true holds {len(y)} targets for {count} samples")
    loss, output = spec.loss, tuple(lowered.logits.type.shape[1:])
    ignored = np.zeros(y.shape, bool)
    if getattr(loss, "ignore_index", None) is not None:
        ignored = y == loss.ignore_index
    if loss.type in CLASS_LABEL_LOSSES:
        if y.shape[1:] != output[1:]:
            one_hot = (" (a column? give y_true.ravel())" if y.shape[1:] == (1,) else
                       " (one-hot rows? give y_true.argmax(1))" if y.shape[1:] == output else "")
            raise ValueError(f"y_true must be class labels [N{', ' if output[1:] else ''}"
                             f"{_dims(output[1:])}], got shape {list(y.shape)}{one_hot}")
        # one output under perceptron reads labels 0 and 1 (z >= 0 is class 1)
        classes = max(output[0], 2) if loss.type == "perceptron" else output[0]
        wrong = ~ignored & ~((y == np.round(y)) & (y >= 0) & (y < classes))
        what = f"class labels 0..{classes - 1}"
    elif loss.type == "binary_cross_entropy":
        wrong = ~ignored & ~((y >= 0) & (y <= 1))
        what = "targets in [0, 1]"
    elif _one_hot_labels(y, output):
        wrong = (y < 0) | (y >= output[0])
        what = f"class labels 0..{output[0] - 1} (one-hot targets of the {output[0]} outputs)"
    else:
        wrong = ~np.isfinite(y) if y.dtype.kind == "f" else np.zeros(y.shape, bool)
        what = "finite targets"
    if loss.type not in CLASS_LABEL_LOSSES and not _fits_outputs(y, output, loss.type):
        raise ValueError(f"y_true must hold targets shaped like the outputs, [N, {_dims(output)}]"
                         f", under {loss.type}; got shape {list(y.shape)}")
    if wrong.any():
        index = np.unravel_index(np.argmax(wrong), y.shape)
        raise ValueError(f"y_true holds {y[index]} at sample {index[0]}; {loss.type} needs "
                         f"{what}")
    return y


def _fits_outputs(y: np.ndarray, output: tuple, loss: str) -> bool:
    """Targets of as many values as the outputs, or class labels [N] that become one-hot
    targets of a vector output under mse, mae or huber (target_array)."""
    one_hot = loss in REGRESSION_LOSSES and _one_hot_labels(y, output)
    return one_hot or (y[0].size == int(np.prod(output))
                       and laid_out_as_outputs(tuple(y.shape[1:]), output))


def _one_hot_labels(y: np.ndarray, output: tuple) -> bool:
    """Integer labels [N] against a vector of several outputs: class labels, which mse, mae and
    huber compare as one-hot targets."""
    return (y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and len(output) == 1
            and output[0] > 1)


def target_array(spec, lowered, y) -> np.ndarray:
    """Labels as the loss wants them: int64 classes for cross_entropy, else values shaped like
    the model's output (so 0/1 labels [N] fit a [N, 1] sigmoid output)."""
    y = np.asarray(y)
    if spec.loss.type in CLASS_LABEL_LOSSES:
        return y.astype(np.int64)
    shape = lowered.logits.type.shape[1:]
    if _one_hot_labels(y, shape):
        return np.eye(shape[0], dtype=spec.dtype)[y]  # class labels as one-hot targets (mse on classes)
    return y.astype(spec.dtype).reshape(len(y), *shape)
