"""The training step's path (captured graph, planned, reference) and its first-step self-check,
without a GPU: stand-in backends on NumPy whose "capture" records the step and replays it, or
fails, or replays it wrongly. The same logic runs on CuPy with real CUDA graphs
(tests/backends/test_cuda_graph.py, `pytest -m gpu`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.backends import CaptureUnavailable
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.runtime.bench import bench
from nnrun.runtime.executor import PlannedExecutor
from nnrun.runtime.gradcheck import random_batch
from nnrun.runtime.model import Model
from invoking import invoke
from stepping import RoundsOtherwise

SPEC = """
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: flatten}
    - {type: dropout, rate: 0.25}
    - {type: dense, units: 12, activation: tanh}
    - {type: dense, units: 5}
loss: cross_entropy
optimizer: {type: adam, lr: 0.01}
train: {batch_size: 8}
"""
BATCHES = (8, 8, 5, 8, 5, 8)  # two plans (an epoch's last, smaller batch), revisited


class RecordingCapture:
    """Stands in for a CUDA graph: capture records the step and runs nothing, as stream
    capture does; each launch replays it on whatever the fixed buffers then hold."""

    def __init__(self):
        self.warmups = self.captures = self.launches = 0

    def warm(self, run):
        self.warmups += 1
        run()

    def capture(self, run):
        self.captures += 1
        return _Replay(self, run)


class _Replay:
    def __init__(self, capture, run):
        self.capture, self.run = capture, run

    def launch(self):
        self.capture.launches += 1
        self.run()

    def held_bytes(self):
        return 1000  # what a real graph's own memory pool would hold


class CapturingNumpy(NumpyBackend):
    """NumPy as an unverified device backend with graph capture."""

    check_first_step = True

    def __init__(self, capture=None):
        self.capture = capture or RecordingCapture()

    def graph_capture(self):
        return self.capture


class FailingCapture(RecordingCapture):
    def capture(self, run):
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported")


class DoubledCapture(RecordingCapture):
    """A graph that runs the step twice per launch: its updates are wrong, not missing."""

    def capture(self, run):
        self.captures += 1

        def twice():
            run()
            run()

        return _Replay(self, twice)


class NoGraphs(CapturingNumpy):
    def graph_capture(self):
        raise CaptureUnavailable("the cuBLAS library CuPy loaded was not found")


class BrokenMatmul(CapturingNumpy):
    """matmul_into off by a little: the planned and captured steps of a dense network use it,
    the reference executor's plain forwards (`a @ b`) do not."""

    def matmul_into(self, a, b, out):
        super().matmul_into(a, b, out)
        out *= 1.01


DENSE_SPEC = """
model:
  input_shape: [6]
  layers:
    - {type: dense, units: 8, activation: relu}
    - {type: dense, units: 3}
loss: cross_entropy
optimizer: {type: sgd, lr: 0.1, momentum: 0.9}
"""


def train(model: Model, batches=BATCHES) -> dict:
    """Steps on random batches of the given sizes, the updates fed back as training does."""
    rng = np.random.default_rng(3)
    state = model.train_state()
    for step, size in enumerate(batches, start=1):
        x, y = random_batch(model, size, rng)
        _, updates = model.step_executor.run(model.step_feeds(state, x, y, 0.01 / step, step,
                                                              seed=step))
        state.update(updates)
    return {name: np.array(model.backend.to_host(v), copy=True) for name, v in state.items()}


@pytest.fixture(scope="module")
def source():
    return nnrun.load_spec_text(SPEC)


@pytest.fixture(scope="module")
def planned_weights(source):
    model = Model(source, "numpy")
    assert isinstance(model.step_executor, PlannedExecutor) and model.step_path == "planned"
    return train(model)


def assert_same(weights, expected):
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)


def test_captured_step_replays_the_planned_step_bit_for_bit(source, planned_weights, capsys):
    backend = CapturingNumpy()
    model = Model(source, backend)
    assert_same(train(model), planned_weights)
    assert model.step_path == "captured" and capsys.readouterr().err == ""
    capture = backend.capture
    assert capture.captures == 2  # one graph per batch size, each captured once
    assert capture.launches == len(BATCHES)  # every step a replay, the checked ones too
    assert capture.warmups == 2 * 2
    assert model.step_executor.held_bytes() == 2 * 1000  # counted in bench's peak on CuPy


def test_each_check_hands_back_the_memory_it_used(source, planned_weights):
    """The check's copies and the reference executor's values, cached by a device's pool,
    are handed back after each batch size's check (on LeNet-5 at batch 1024 on CuPy, as much
    again as the step's own memory), and not at every step."""

    class Releasing(CapturingNumpy):
        releases = 0

        def release_cached_memory(self):
            Releasing.releases += 1

    model = Model(source, Releasing())
    assert_same(train(model), planned_weights)
    assert Releasing.releases == 2  # two batch sizes, each checked once


def test_unchecked_capture_keeps_the_state_its_warm_up_runs_updated(source, planned_weights):
    """Without the self-check, the second batch size is captured from the executor's own
    state buffer, fed back as it is: its warm-up runs must leave it as it was."""
    backend = CapturingNumpy()
    backend.check_first_step = False
    model = Model(source, backend)
    assert_same(train(model), planned_weights)
    assert model.step_path == "captured" and backend.capture.captures == 2


def falls_back_to_planned(capture, source, planned_weights, capsys) -> str:
    """Trains with a capture that fails and checks that it ends on the planned path with the
    planned weights and one warning line; returns that line."""
    model = Model(source, CapturingNumpy(capture))
    assert_same(train(model), planned_weights)
    assert model.step_path == "planned"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_capture_that_raises_falls_back_to_planned_once(source, planned_weights, capsys):
    line = falls_back_to_planned(FailingCapture(), source, planned_weights, capsys)
    assert line.startswith("nnrun: warning: the training step on a captured CUDA graph "
                           "raised NotImplementedError: calling cuBLAS")
    assert line.endswith("on its first run; using the uncaptured planned executor")


def test_capture_that_differs_falls_back_to_planned_once(source, planned_weights, capsys):
    line = falls_back_to_planned(DoubledCapture(), source, planned_weights, capsys)
    assert "the training step on a captured CUDA graph differs from the reference executor" \
        in line
    assert "relative difference" in line


def test_a_broken_kernel_falls_back_to_the_reference_executor(capsys):
    source = nnrun.load_spec_text(DENSE_SPEC)
    model = Model(source, BrokenMatmul())
    weights = train(model)
    assert model.step_path == "reference"
    reference = train(Model(source, "numpy", optimized=False))
    for name, value in reference.items():  # the reference executor's weights exactly
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "on a captured CUDA graph differs" in lines[0] and "planned executor" in lines[0]
    assert "on the uncaptured planned executor differs" in lines[1]
    assert lines[1].endswith("using the reference executor")


class OtherRankFails:
    """A data-parallel job's agreement, as seen by a rank whose steps all work: another rank
    reports a failure at the `failing`-th question (a build, or a first run)."""

    def __init__(self, failing: int):
        self.failing, self.asked = failing, []

    def all_agree(self, ok: bool) -> bool:
        self.asked.append(ok)
        return ok and len(self.asked) != self.failing


@pytest.mark.parametrize("failing, when", [(1, "could not be built"), (2, "on its first run")])
def test_every_rank_drops_a_path_that_fails_on_one(source, planned_weights, capsys, failing,
                                                   when):
    """A data-parallel step runs collectives: a rank that took another path than the others
    would pair its collectives with theirs wrongly, so a path that fails on one rank is
    dropped on every rank."""
    backend = CapturingNumpy()
    backend.communicator = OtherRankFails(failing)
    model = Model(source, backend)
    assert_same(train(model), planned_weights)
    assert model.step_path == "planned" and all(backend.communicator.asked)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"nnrun: warning: the training step on a captured CUDA graph "
                           f"{'could not be built' if failing == 1 else 'failed'} on another "
                           f"rank")
    assert when in line and line.endswith("using the uncaptured planned executor")


class UnbuildableCapture(CapturingNumpy):
    def graph_capture(self):
        if getattr(self, "asked", False):
            raise RuntimeError("cudaErrorNotSupported: operation not supported\nmore detail")
        self.asked = True
        return RecordingCapture()


def test_a_path_that_fails_to_build_falls_back_in_one_line(source, planned_weights, capsys):
    model = Model(source, UnbuildableCapture())
    assert_same(train(model), planned_weights)
    assert model.step_path == "planned"
    assert capsys.readouterr().err.splitlines() == [
        "nnrun: warning: the training step on a captured CUDA graph could not be built "
        "(RuntimeError: cudaErrorNotSupported: operation not supported); using the uncaptured "
        "planned executor"]


def test_capture_known_to_be_unavailable_says_why_in_one_line(source, planned_weights, capsys):
    model = Model(source, NoGraphs())
    assert_same(train(model), planned_weights)
    assert model.step_path == "planned"
    model.forward(model.init_params(), random_batch(model, 2, np.random.default_rng(0))[0])
    assert model.forward_executor.path == "planned"  # said once for the model's graphs
    assert capsys.readouterr().err.splitlines() == [
        "nnrun: warning: no CUDA-graph capture (the cuBLAS library CuPy loaded was not found); "
        "using the uncaptured planned executor"]


def test_graph_false_runs_the_planned_step_uncaptured(source, planned_weights, capsys):
    backend = CapturingNumpy()
    model = Model(source, backend, graph=False)
    assert_same(train(model), planned_weights)
    assert model.step_path == "planned" and backend.capture.captures == 0
    assert nnrun.compile(source, graph=False).capture_graph is False
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_train_quiet_silences_the_fallback_warning(quiet, tmp_path, capsys):
    from nnrun.runtime.train import train as train_run

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((20, 1, 8, 8)).astype(np.float32),
             y=rng.integers(0, 5, 20))
    (tmp_path / "s.yaml").write_text(SPEC.replace("train: {batch_size: 8}", "")
                                     + "data: {dataset: npz, path: d.npz}\n"
                                     "train: {batch_size: 8, epochs: 1}\n")
    source = nnrun.load_spec(tmp_path / "s.yaml")
    train_run(source, NoGraphs(), out_dir=tmp_path / "run", quiet=quiet)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ([] if quiet else [
        "nnrun: warning: no CUDA-graph capture (the cuBLAS library CuPy loaded was not found); "
        "using the uncaptured planned executor"])


def test_forward_and_evaluation_are_captured_too(source):
    backend = CapturingNumpy()
    model = Model(source, backend)
    params = model.init_params()
    expected = Model(source, "numpy")
    for size in (4, 4, 3):
        x, y = random_batch(model, size, np.random.default_rng(size))
        np.testing.assert_array_equal(model.forward(params, x), expected.forward(params, x))
    assert model.forward_executor.path == "captured" and backend.capture.captures == 2
    assert Model(source, backend, graph=False).forward_executor.path == "planned"
    # the loss and gradients (gradcheck) stay uncaptured
    loss, grads = model.loss_and_grads(params, x, y)
    assert model.loss_and_grads_executor.path == "planned" and backend.capture.captures == 2
    assert loss == expected.loss_and_grads(params, x, y)[0]


def test_bench_reports_the_path_that_ran(source):
    assert bench(Model(source, CapturingNumpy()), 8, steps=2, warmup=1)["step_path"] == \
        "captured"
    assert bench(Model(source, CapturingNumpy(FailingCapture())), 8, steps=2,
                 warmup=1)["step_path"] == "planned"


def test_cli_bench_step_path_and_no_graph(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    for options, path in (((), "planned"), (("--no-graph",), "planned"),
                          (("--reference",), "reference")):
        result = invoke("bench", spec, "--steps", "2", "--format", "json", *options)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["step_path"] == path
        assert report["executor"] == ("reference" if path == "reference" else "planned")
    text = invoke("bench", spec, "--steps", "2")
    assert "step path   planned" in text.output


def test_train_takes_no_graph_from_the_cli_and_the_api(tmp_path):
    spec = tmp_path / "digits.yaml"
    spec.write_text("""
data: {dataset: digits, validation_split: 0.1}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 10}
train: {epochs: 1, batch_size: 64}
""")
    result = invoke("train", spec, "--no-graph", "--quiet", "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    summary = nnrun.train(spec, out_dir=tmp_path / "api", quiet=True, graph=False)
    assert summary["epochs_run"] == 1 and summary["step_path"] == "planned"
    evaluated = invoke("eval", tmp_path / "cli", "--split", "val", "--no-graph", "--format",
                       "json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["val_loss"] > 0
    run = nnrun.load_run(tmp_path / "api", graph=False)
    assert run.model.capture_graph is False


@pytest.mark.parametrize("graph", [True, False])
def test_a_training_run_on_the_captured_path_matches_numpy(tmp_path, graph, capsys):
    """The whole training loop (resident data, metrics on the device, validation) on the
    stand-in backend: the same metrics as NumPy's run, captured or not."""
    from nnrun.runtime.train import train as run_training

    text = """
data: {dataset: digits, validation_split: 0.1}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 16, activation: relu}
    - {type: dropout, rate: 0.2}
    - {type: dense, units: 10}
train: {epochs: 2, batch_size: 100}
"""
    backend = CapturingNumpy()
    runs = {}
    for name, chosen in (("numpy", "numpy"), ("stand-in", backend)):
        summary = run_training(nnrun.load_spec_text(text), backend=chosen,
                               out_dir=tmp_path / name, quiet=True, graph=graph)
        runs[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
    for want, have in zip(runs["numpy"], runs["stand-in"], strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert have[key] == want[key], key
    assert summary["step_path"] == ("captured" if graph else "planned")
    # the step and the evaluation, each for full batches and the last one
    assert backend.capture.captures == (4 if graph else 0)
    assert capsys.readouterr().err == ""


class OtherRounding(RoundsOtherwise, CapturingNumpy):
    """A correct device that rounds its matrix products otherwise."""


def test_rounding_noise_does_not_fail_the_self_check(capsys):
    """spirals-mlp's biases feed batchnorms: their gradient is rounding noise, which Adam turns
    into a full step of either sign. Rounding otherwise is no reason to leave the capture."""
    source = nnrun.load_spec(str(Path(__file__).resolve().parents[2] / "specs/spirals-mlp.yaml"))
    model = Model(source, OtherRounding())
    train(model)
    assert model.step_path == "captured"
    assert capsys.readouterr().err == ""


def test_a_batch_of_one_sample_through_a_batchnorm_passes_the_self_check(capsys):
    """The CuPy stand-in audit: an epoch's last batch of one vector sample gave the planned
    batchnorm x * scale + (beta - mean * scale), two terms of 1 / sqrt(eps) that cancel to
    rounding noise that large (0.05000305 for beta's 0.05): the self-check called the
    captured and planned steps wrong and the run went on on the reference executor."""
    source = nnrun.load_spec_text(
        "model:\n  input_shape: [4]\n  layers:\n    - {type: dense, units: 8, activation: "
        "relu}\n    - {type: batchnorm}\n    - {type: dense, units: 3}\n"
        "optimizer: {type: sgd, lr: 0.1}\n")
    for seed in range(5):
        model = Model(source, CapturingNumpy())
        model.init_params(seed=seed)
        train(model, batches=(8, 1))
        assert model.step_path == "captured", seed
    assert capsys.readouterr().err == ""
