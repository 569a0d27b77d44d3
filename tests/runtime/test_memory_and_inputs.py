"""Memory pre-flight before anything big is allocated, and untrusted inputs checked before they
are decompressed or cast (docs/reliability.md)."""

from __future__ import annotations

import gzip
import json
import re
import zipfile

import numpy as np

import pytest
from click.testing import CliRunner

from nnrun.cli import main
from nnrun.runtime.data import DataError, load_dataset
from nnrun.runtime.data.idx import read_idx
from invoking import assert_ok, assert_one_line_error, invoke

SPEC = """\
name: tiny
data: {dataset: xor, n_samples: 64, validation_split: 0.25}
model:
  input_shape: [2]
  layers:
    - {type: dense, units: 4, activation: tanh}
    - {type: dense, units: 1, activation: sigmoid}
loss: binary_cross_entropy
optimizer: {type: adam, lr: 0.05}
train: {epochs: 2, batch_size: 16}
"""




# 20 billion parameters: about 320 GB to train with Adam, more than any test machine has.
HUGE = """\
data: {dataset: xor}
model:
  layers:
    - {type: dense, units: 100000}
    - {type: dense, units: 200000}
    - {type: dense, units: 1, activation: sigmoid}
loss: binary_cross_entropy
optimizer: {type: adam, lr: 0.01}
"""


@pytest.fixture
def huge(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE)
    return path


@pytest.fixture
def trained(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    return tmp_path / "run"


@pytest.mark.parametrize("command", ["train", "bench", "gradcheck", "check-backends"])
def test_a_model_too_big_for_memory_is_refused_before_allocating(huge, tmp_path, command):
    extra = {"train": ["--out", tmp_path / "run", "--quiet"],
             "check-backends": ["--backend", "numpy"]}.get(command, [])
    line = assert_one_line_error(invoke(command, huge, *extra), command)
    assert "needs about" in line and "available" in line
    assert not (tmp_path / "run").exists()


def test_validate_warns_above_a_configurable_size(huge, tmp_path):
    result = CliRunner().invoke(main, ["validate", str(huge)])
    assert result.exit_code == 0 and "warning" in result.stderr and "needs about" in result.stderr
    small = tmp_path / "small.yaml"
    small.write_text(SPEC)
    result = CliRunner().invoke(main, ["validate", str(small), "--warn-memory", "10B"])
    assert "warning" in result.stderr and "(--warn-memory 10B)" in result.stderr
    result = CliRunner().invoke(main, ["validate", str(small), "--warn-memory", "1GB"])
    assert "warning" not in result.stderr
    # the limit named by where it comes from (the CLI audit: NNRUN_MEMORY_LIMIT's was called
    # "this machine's available memory")
    result = CliRunner().invoke(main, ["validate", str(small)], env={"NNRUN_MEMORY_LIMIT": "10B"})
    assert "(NNRUN_MEMORY_LIMIT; --warn-memory sets another)" in result.stderr
    for size in ["lots", "1e400"]:  # 1e400 overflowed a float: an internal error
        result = CliRunner().invoke(main, ["validate", str(small), "--warn-memory", size])
        assert result.exit_code == 2 and "is not a size" in result.stderr


def test_a_generated_dataset_too_big_for_memory_is_refused_before_it_is_generated(
        tmp_path, monkeypatch):
    """n_samples 1e12 passed validate, then train said to lower the batch size or the model."""
    spec = tmp_path / "spirals.yaml"
    spec.write_text(SPEC.replace("dataset: xor, n_samples: 64", "dataset: spirals,\n"
                                 "       n_samples: 1000000000000"))
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "1GB")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--quiet"),
                                 "spirals")
    assert "data.n_samples 1,000,000,000,000 needs about 65.48 TB" in line
    assert "(1,000,000,000,000 samples x 24 B x 3 copies)" in line and "batch size" not in line
    assert not (tmp_path / "run").exists()
    result = invoke("validate", spec)
    assert result.exit_code == 0
    assert f"{spec}:3:19: warning: data.n_samples: needs about 65.48 TB" in result.stderr
    assert invoke("validate", spec, "--strict").exit_code == 1


BATCH_PAST_THE_SAMPLES = """\
data: DATA
model: {layers: [{type: flatten}, {type: dense, units: 256, activation: relu},
                 {type: dense, units: 10}]}
train: {epochs: 1, batch_size: BATCH}
"""


def _training_bytes(tmp_path, data: str, batch: int) -> int:
    spec = tmp_path / "planned.yaml"
    spec.write_text(BATCH_PAST_THE_SAMPLES.replace("DATA", data).replace("BATCH", str(batch)))
    return json.loads(invoke("summary", spec, "--format", "json").stdout)["train_memory_bytes"]


@pytest.mark.parametrize("data, samples, unsplit", [
    ("{dataset: digits, validation_split: 0.5}", 719, "{dataset: digits}"),
    ("{dataset: npz, path: d.npz}", 200, None)])
def test_a_batch_past_the_training_samples_is_checked_at_the_samples(tmp_path, monkeypatch,
                                                                    data, samples, unsplit):
    """A batch_size past digits' 1437 samples was checked for memory at 1437 under a
    validation split that leaves 719 (the design audit: a run that fits was refused), and at
    batch_size itself where an npz's samples were loaded before the model."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((200, 64)), y=rng.integers(0, 10, 200))
    limit = 3 * _training_bytes(tmp_path, data, samples) // 2
    assert limit < _training_bytes(tmp_path, unsplit or data, 2 * samples)
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", f"{limit}B")
    spec = tmp_path / "s.yaml"
    spec.write_text(BATCH_PAST_THE_SAMPLES.replace("DATA", data).replace("BATCH", "100000"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    # refused, the fix is a batch below the samples (the review: "lower the batch size")
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", f"{limit // 3}B")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r2", "--quiet"),
                                 "train")
    assert f"at batch size {samples}, but only " in line
    assert line.endswith(f"(NNRUN_MEMORY_LIMIT); lower the batch size below {samples}, the "
                         "training samples a step takes at most, or the model size (see `nnrun "
                         "summary`)"), line


def test_eval_and_predict_refuse_under_a_memory_limit(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "100B")
    line = assert_one_line_error(invoke("eval", trained), trained)
    assert "NNRUN_MEMORY_LIMIT" in line
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 2)))
    assert_one_line_error(invoke("predict", trained, tmp_path / "in.npz", "--out", tmp_path / "p.npy"),
                   trained)


def test_predict_checks_finiteness_after_the_cast(trained, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.array([[0.0, 1.0], [1e300, 0.0]]))  # finite in float64
    line = assert_one_line_error(invoke("predict", trained, tmp_path / "in.npz",
                                 "--out", tmp_path / "p.npy"), tmp_path / "in.npz")
    assert "float32" in line and "sample 1" in line
    assert not (tmp_path / "p.npy").exists()


def test_features_of_width_zero_are_a_clear_error(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.zeros((8, 0)), y=np.zeros(8, np.int64))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("dataset: xor, n_samples: 64,", "dataset: npz, path: data.npz,")
                    .replace("input_shape: [2]", "input_shape: [1]"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--quiet"), "data.npz")
    assert "no features" in line


def npz_bomb(path, declared_rows: int):
    """A small npz whose x is `declared_rows` x 1000 zeros, written without holding them."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (declared_rows, 1000)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            block = bytes(4000 * 1000)
            for _ in range(declared_rows // 1000):
                member.write(block)
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(3, np.int64))
    return path


def test_an_npz_zip_bomb_is_refused_from_its_headers(tmp_path, monkeypatch):
    path = npz_bomb(tmp_path / "bomb.npz", 20_000)  # 76.29 MB declared (80,000,000 bytes), about 80 KB on disk
    assert path.stat().st_size < 1_000_000
    spec = npz_data_section("bomb.npz")
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "10MB")
    with pytest.raises(DataError, match="declare 76.29 MB"):
        load_dataset(spec, spec_dir=tmp_path, seed=0)
    monkeypatch.delenv("NNRUN_MEMORY_LIMIT")
    with pytest.raises(DataError, match="20000 samples of features but 3 labels"):
        load_dataset(spec, spec_dir=tmp_path, seed=0)


def npz_data_section(path: str):
    from nnrun.compiler.schema import Data

    return Data(dataset="npz", path=path)


def test_an_idx_gzip_bomb_decompresses_no_more_than_its_header_declares(tmp_path, monkeypatch):
    header = bytes([0, 0, 0x08, 3]) + np.array([2, 28, 28], ">u4").tobytes()
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(header + bytes(50_000_000), compresslevel=1))
    with pytest.raises(DataError, match="trailing bytes: more than the 1568 bytes of data"):
        read_idx(bomb, 3, (28, 28))
    liar = tmp_path / "liar.gz"
    liar.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3])
                                   + np.array([4_000_000_000, 28, 28], ">u4").tobytes()))
    with pytest.raises(DataError, match="declares"):
        read_idx(liar, 3, (28, 28))


def test_the_memory_limit_is_the_tightest_one_known(monkeypatch, tmp_path):
    from nnrun.runtime import memory

    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("1000000\n")
    (cgroup / "memory.current").write_text("900000\n")
    (cgroup / "memory.stat").write_text("anon 500000\ninactive_file 300000\n")
    real_path = memory.Path
    monkeypatch.setattr(memory, "Path", lambda p: cgroup if p == "/sys/fs/cgroup" else real_path(p))
    assert memory.available_memory() == (400_000, "the cgroup's memory.max")
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "100KB")
    assert memory.available_memory() == (100 * 1024, "NNRUN_MEMORY_LIMIT")
    assert memory.parse_size("1.5 GiB") == memory.parse_size("1.5GB") == 3 * 2**29
    assert memory.parse_size("16G") == 16 * 2**30 and memory.parse_size("512M") == 2**29
    with pytest.raises(ValueError):
        memory.parse_size("lots")
    with pytest.raises(ValueError, match="not a whole number of bytes; name the unit, e.g. 1.5GB"):
        memory.parse_size("1.5")  # was 1 byte
    assert memory.parse_size("1e9") == 10**9 and memory.parse_size("0.5 KiB") == 512
    # a decimal amount of a unit is whole up to float rounding (the review: 2.2GB refused)
    assert memory.parse_size("2.2GB") == round(2.2 * 2**30)
    assert memory.parse_size("1.7GiB") == round(1.7 * 2**30)


def test_a_refusal_says_the_size_summary_says(tmp_path, monkeypatch):
    """Units of 1024 everywhere: a refusal's estimate, read beside `nnrun summary` as it
    suggests, is the same number."""
    spec = tmp_path / "mlp.yaml"
    spec.write_text("model:\n  input_shape: [784]\n  layers:\n    - {type: dense, units: 512}\n"
                    "    - {type: dense, units: 10}\ntrain: {batch_size: 64}\n")
    summary = CliRunner().invoke(main, ["summary", str(spec)]).output
    said = re.search(r"training memory at batch size 64: ([0-9.]+) MB", summary).group(1)
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "1MB")
    result = CliRunner().invoke(main, ["bench", str(spec), "--batch-size", "64", "--steps", "1"])
    assert result.exit_code != 0
    assert f"needs about {said} MB" in result.output
    assert "only 1.00 MB is available (NNRUN_MEMORY_LIMIT)" in result.output


def test_evaluation_takes_as_many_samples_at_a_time_as_fit(tmp_path, monkeypatch):
    """Trained at batch size 4, a model of large activations then needed 2 GB to evaluate at
    1000 samples: training went past its memory limit, and eval and predict refused."""
    import nnrun
    from nnrun.runtime.evaluate import load_run
    from nnrun.runtime.memory import estimate_bytes, evaluation_batch

    spec = nnrun.load_spec_text(
        "data: {dataset: digits, limit: 8}\nmodel:\n  layers:\n"
        "    - {type: upsample2d, scale: 16}\n"
        "    - {type: conv2d, filters: 8, kernel_size: 3, padding: same, activation: relu}\n"
        "    - {type: global_avgpool}\n    - {type: dense, units: 10}\n"
        "train: {epochs: 1, batch_size: 4}\n")
    model = nnrun.compile(spec)
    limit = estimate_bytes(model, 100, training=False)
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", str(limit))
    batch = evaluation_batch(model)
    assert 1 <= batch < 1000 and estimate_bytes(model, batch, training=False) <= limit
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    run = load_run(tmp_path / "run")
    assert run.batch == batch
    assert run.predict(np.zeros((3, 1, 8, 8))).shape == (3, 10)


def test_eval_and_predict_count_what_evaluation_holds_not_a_training_step(tmp_path, monkeypatch):
    """They refused with the training step's figure (gradients, Adam's state, the activations
    kept for backward): a model that evaluates in 28 MB was refused under a 40 MB limit."""
    import tracemalloc

    import nnrun
    from nnrun.runtime.evaluate import load_run
    from nnrun.runtime.memory import estimate_bytes

    spec = nnrun.load_spec_text(
        "data: {dataset: digits, limit: 64}\nmodel:\n  layers:\n    - {type: flatten}\n"
        "    - {type: dense, units: 1500, activation: tanh}\n"
        "    - {type: dense, units: 1500, activation: tanh}\n    - {type: dense, units: 10}\n"
        "optimizer: {type: adam}\ntrain: {epochs: 1, batch_size: 16}\n")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    run = load_run(tmp_path / "run")
    run.predict(np.zeros((1000, 1, 8, 8)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    estimate = estimate_bytes(run.model, run.batch, training=False)
    assert run.batch == 1000 and abs(estimate - (peak - start)) < 0.15 * (peak - start)
    training = estimate_bytes(run.model, 16)
    assert training > 1.5 * estimate
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", str((estimate + training) // 2))
    assert_ok(invoke("eval", tmp_path / "run"))


def test_a_smaller_batchs_plan_that_would_not_fit_beside_the_other_replaces_it(monkeypatch):
    """An epoch's last, smaller batch got an arena of its own beside the full batch's: twice
    the arena the memory check had counted (the memory-limits audit). Where the new arena does
    not fit in what is left, the other goes first."""
    import nnrun
    from nnrun.runtime import executor as executor_module
    from stepping import train_steps

    spec = nnrun.load_spec_text("data: {dataset: digits}\nmodel:\n  layers:\n"
                                "    - {type: flatten}\n    - {type: dense, units: 32}\n"
                                "    - {type: dense, units: 10}\n")
    model = nnrun.compile(spec)
    x = np.zeros((16, 1, 8, 8), "float32")
    y = np.zeros(16, np.int64)
    train_steps(model, x, y, steps=1)
    executor = model.step_executor
    assert list(executor.programs) == [16]
    monkeypatch.setattr(executor_module, "available_memory", lambda backend: (2**40, "plenty"))
    train_steps(model, x[:5], y[:5], steps=1)
    assert sorted(executor.programs) == [5, 16]  # both kept where they fit
    monkeypatch.setattr(executor_module, "available_memory", lambda backend: (0, "none left"))
    train_steps(model, x[:3], y[:3], steps=1)
    assert list(executor.programs) == [3]


def test_training_holds_little_beyond_its_estimate(tmp_path):
    """A dense 2-6000-6000-1 model with Adam (estimate 825 MB) peaked at 1.8 GB: the host's
    optimizer state zeroed page by page, the state copied again to undo the first run on two
    threads, the whole checkpoint read back beside the training step for the final numbers.
    Allocated now: the estimate, the host's initial state (the first step's feed) and the
    evaluation's own copy of the parameters."""
    import tracemalloc

    import nnrun
    from nnrun.runtime.memory import estimate_bytes

    spec = nnrun.load_spec_text(
        "data: {dataset: digits, limit: 200}\nmodel:\n  layers:\n    - {type: flatten}\n"
        "    - {type: dense, units: 1200, activation: relu}\n"
        "    - {type: dense, units: 1200, activation: relu}\n    - {type: dense, units: 10}\n"
        "optimizer: {type: adam}\ntrain: {epochs: 2, batch_size: 48}\n")  # a last batch of 24
    model = nnrun.compile(spec)
    estimate = estimate_bytes(model, 48)
    initial_state = model.host_train_state()
    parameters = sum(initial_state[name].nbytes for name in model.param_infos)
    initial_state = sum(array.nbytes for array in initial_state.values())
    del model
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - start < 1.1 * (estimate + initial_state + parameters)


def test_a_first_run_on_blas_threads_is_undone_from_its_feeds_and_counted_once(monkeypatch):
    """The first run at two threads counts the work, and where BLAS's threads are chosen it is
    undone and run again on them. The undo reads the state the run was fed (the initial values,
    apart from the executor's buffers) rather than a copy of it, and a plan made later (the
    last, smaller batch) takes the choice without counting, or copying, again."""
    import nnrun
    from nnrun.backends.base import BLAS_THREADS
    from nnrun.runtime import executor as executor_module
    from nnrun.runtime.threads import thread_limit

    monkeypatch.setattr(executor_module, "_threads_for", lambda *counters: BLAS_THREADS)
    spec = nnrun.load_spec_text("data: {dataset: digits}\nmodel:\n  layers:\n"
                                "    - {type: flatten}\n    - {type: dense, units: 64}\n"
                                "    - {type: dense, units: 10}\n")
    model = nnrun.compile(spec)
    x, y = np.random.default_rng(0).normal(size=(16, 1, 8, 8)), np.arange(16) % 10
    state = model.train_state()
    executor, copies, first_runs = model.step_executor, [], []
    real_copy, real_first_run = np.copy, executor_module._Program._first_run
    monkeypatch.setattr(executor_module._Program, "_first_run",
                        lambda self, *args: first_runs.append(self.plan.batch)
                        or real_first_run(self, *args))
    monkeypatch.setattr(np, "copy", lambda array, *a, **k: copies.append(array.shape)
                        or real_copy(array, *a, **k))
    with thread_limit(2):
        _, updates = executor.run(model.step_feeds(state, x, y, 0.01, 1, 0))
        once = {name: real_copy(value) for name, value in updates.items()}
        _, smaller = executor.run(model.step_feeds(dict(updates), x[:5], y[:5], 0.01, 2, 0))
    assert executor.threads == {2: BLAS_THREADS} and first_runs == [16] and copies == []
    assert sorted(executor.programs) == [5, 16]
    again = nnrun.compile(spec)  # one run on BLAS's threads from the start
    with thread_limit(2):
        again.step_executor.threads[2] = BLAS_THREADS
        _, direct = again.step_executor.run(again.step_feeds(again.train_state(), x, y, 0.01,
                                                              1, 0))
    for name, value in direct.items():
        np.testing.assert_array_equal(once[name], value)


@pytest.mark.parametrize("command, fix", [("eval", "free memory, or run it where more is"),
                                          ("train", "lower the batch size or the model size"),
                                          ("trace", "lower the batch size or the model"),
                                          ("trace-3", "trace fewer --steps (it keeps every")])
def test_out_of_memory_advises_what_the_command_can_change(tmp_path, monkeypatch, command, fix):
    """eval and predict were told to lower a batch size they do not take (they take as few
    samples at a time as fit already): the memory-limits audit. The error is said before the
    handler's other clauses, whose imports need memory (a traceback, out of memory again)."""
    import nnrun
    from nnrun import cli
    from nnrun.runtime import executor

    def importing_fails():
        raise MemoryError

    monkeypatch.setattr(cli, "_expected_errors", importing_fails)

    spec = nnrun.load_spec_text("data: {dataset: xor}\nmodel: {layers: [{type: dense, "
                                "units: 2}]}\ntrain: {epochs: 1}\n")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(executor, "_Program", no_memory)
    monkeypatch.setattr("nnrun.runtime.trace.trace", no_memory)  # trace runs no _Program
    arguments = {"eval": [tmp_path / "run"], "trace": [tmp_path / "run" / "spec.yaml"],
                 "trace-3": [tmp_path / "run" / "spec.yaml", "--steps", 3],
                 "train": [tmp_path / "run" / "spec.yaml", "--out", tmp_path / "again"]}[command]
    line = assert_one_line_error(invoke(command.split("-")[0], *arguments),
                                 "error: out of memory")
    assert fix in line


def test_predict_inputs_that_would_not_fit_with_their_outputs_are_refused(tmp_path,
                                                                          monkeypatch):
    """Inputs are prepared a batch at a time (session 44): what is counted beside them is
    their outputs and one batch's copies, not a float32 copy of them all (5 MB refused these
    20,000 samples before; the review of that change found the command's check left as it
    was)."""
    import nnrun

    spec = nnrun.load_spec_text("data: {dataset: digits, limit: 16}\nmodel: {layers: [{type: "
                                "flatten}, {type: dense, units: 10}]}\ntrain: {epochs: 1}\n")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    np.savez(tmp_path / "x.npz", x=np.zeros((20000, 1, 8, 8), np.uint8))
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "2.5MB")
    line = assert_one_line_error(invoke("predict", tmp_path / "run", tmp_path / "x.npz", "--out",
                                        tmp_path / "p.npy"), "x.npz")
    # the outputs, 20,000 x 10 float32, and a batch of 1,000 in float64 and float32
    assert ("x needs 1.22 MB, and 1.50 MB more for its outputs and a batch prepared at a time, "
            "over the 2.50 MB available") in line
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "5MB")
    assert_ok(invoke("predict", tmp_path / "run", tmp_path / "x.npz", "--out", tmp_path / "p.npy"))
    assert np.load(tmp_path / "p.npy").shape == (20000, 10)


def test_eval_makes_the_inputs_of_its_split_alone(trained, monkeypatch):
    """An overhead audit: `eval --split test` preprocessed and cast every split's inputs (381
    MB for MNIST, of which the test split's are 30); the other splits' labels are still read
    (the task and the labels' checks), their inputs are placeholders of no memory."""
    import nnrun.runtime.data as data_module
    import nnrun.runtime.evaluate as evaluate_module
    from nnrun.runtime.evaluate import evaluate_run

    made = {}
    real = data_module._load

    def load(*args):
        dataset = real(*args)
        made.update({name: getattr(dataset, name).x for name in ("train", "val", "test")
                     if getattr(dataset, name) is not None})
        return dataset

    def every_split(*args, inputs_of, **kwargs):
        return load_dataset(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(evaluate_module, "load_dataset", every_split)
        everything = evaluate_run(trained, split="val")
    monkeypatch.setattr(data_module, "_load", load)
    assert evaluate_run(trained, split="val") == everything
    assert made["val"].strides != (0,) * made["val"].ndim and made["val"].flags.writeable
    assert made["train"].strides == (0,) * made["train"].ndim
    assert made["train"].shape[1:] == made["val"].shape[1:]
