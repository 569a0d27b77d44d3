"""What audits of odd and hostile input found (2026-12-05): files, arguments and API calls that
reached an internal error, a NumPy warning, a wrong diagnosis, a silently wrong result or a slow
refusal. Each is one line now, naming what is wrong and what to do."""

from __future__ import annotations

import errno
import os
import json
from pathlib import Path

import numpy as np
import pytest

from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import load_spec_text
from nnrun.runtime.files import describe_os_error

from invoking import assert_ok, assert_one_line_error, invoke
# the run-reliability tests' tiny XOR spec, written (spec) and trained (trained)
from test_run_reliability import SPEC, spec, trained  # noqa: F401  (fixtures)


# --- files ------------------------------------------------------------------------------------


def test_init_from_values_beyond_float32_are_refused_before_the_run_starts(tmp_path, spec):
    """1e300 is finite in the file's float64: cast, it was inf, a NumPy warning and a NaN loss
    blamed on the learning rate, with a run directory left behind."""
    np.savez(tmp_path / "huge.npz", **{"dense_1.weight": np.full((2, 4), 1e300)})
    out = tmp_path / "run"
    line = assert_one_line_error(invoke("train", spec, "--out", out, "--set",
                                        "model.init_from=huge.npz"), "huge.npz")
    assert "beyond the range of float32" in line and "dense_1.weight" in line
    assert not out.exists()


@pytest.mark.parametrize("command", [["eval"], ["predict", "INPUT"]])
@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_preprocessing_beyond_the_models_dtype_is_named(tmp_path, trained, command, scale):
    """A scale of 1e300 is inf in float32 (every input 0), one of 1e-300 is 0: the run's data or
    the user's input was blamed."""
    path = trained / "preprocessing.npz"
    arrays = dict(np.load(path))
    arrays["scale"] = np.full(arrays["scale"].shape, scale)
    path.unlink()
    np.savez(path, **arrays)
    np.savez(tmp_path / "in.npz", x=np.zeros((3, 2), np.float32))
    args = [tmp_path / "in.npz" if part == "INPUT" else part for part in command]
    if command[0] == "predict":
        args += ["--out", tmp_path / "p.npy"]
    line = assert_one_line_error(invoke(args[0], trained, *args[1:]), "preprocessing.npz")
    assert "'scale' holds" in line and "float32" in line


def test_a_run_on_values_beyond_float32_evaluates_and_its_export_says_why_it_cannot(tmp_path,
                                                                                    spec):
    """Its shift, 5e38, is subtracted in float64: eval and predict work (the review found eval
    refusing them, predict cast them to float32 first). The exported graph reads raw inputs in
    float32, where they are inf: exit 70 before."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2))
    x[:, 1] = x[:, 1] * 1e37 + 5e38
    lines = ["a,b,label"] + [f"{float(a)!r},{float(b)!r},{int(a > 0)}" for a, b in x]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", run, "--quiet", "--set",
                     "data={dataset: csv, path: big.csv, validation_split: 0.25}"))
    assert_ok(invoke("eval", run, "--split", "val"))
    np.savez(tmp_path / "x.npz", x=x)  # predict too preprocesses them in float64 (was: inf)
    assert_ok(invoke("predict", run, tmp_path / "x.npz", "--out", tmp_path / "y.npy"))
    assert np.isfinite(np.load(tmp_path / "y.npy")).all()
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    line = assert_one_line_error(invoke("export", run, "--out", tmp_path / "m.onnx"), "5")
    assert "beyond float32" in line and "--no-preprocessing" in line


def test_a_checkpoint_with_a_parameter_the_model_lacks_is_refused(trained):
    path = trained / "best.npz"
    arrays = dict(np.load(path))
    arrays["params/dense_9.weight"] = np.zeros((2, 2), np.float32)
    path.unlink()
    np.savez(path, **arrays)
    line = assert_one_line_error(invoke("eval", trained), "best.npz")
    assert "'params/dense_9.weight', which is no parameter of this model" in line


def test_init_from_naming_a_parameter_twice_is_a_spec_error(tmp_path):
    np.savez(tmp_path / "twice.npz", **{"dense_1.weight": np.zeros((2, 4)),
                                        "params/dense_1.weight": np.ones((2, 4))})
    (tmp_path / "tiny.yaml").write_text(SPEC.replace("  input_shape: [2]",
                                                     "  input_shape: [2]\n  init_from: twice.npz"))
    result = invoke("validate", tmp_path / "tiny.yaml")
    assert result.exit_code == 1 and "both give dense_1.weight; keep one" in result.stderr


def test_a_run_that_lost_both_checkpoints_is_not_sent_to_a_resume_that_refuses(trained):
    (trained / "best.npz").unlink()
    (trained / "last.npz").unlink()
    line = assert_one_line_error(invoke("eval", trained), trained)
    assert "best.npz and last.npz are missing, though the run has trained epochs" in line
    assert "--resume" not in line


def test_a_csv_with_a_quote_left_open_says_so(tmp_path, spec):
    (tmp_path / "open.csv").write_text('a,b,label\n"1,2,1\n3,4,0\n')
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--set",
                                        "data={dataset: csv, path: open.csv}"), "open.csv")
    assert "quotes" in line


def test_a_csv_with_other_scripts_digits_names_the_cell(tmp_path, spec):
    (tmp_path / "digits.csv").write_text("a,b,label\n1,\u0661\u0662,1\n3,4,0\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--set",
                                        "data={dataset: csv, path: digits.csv}"), "digits.csv")
    assert "line 2, column 'b'" in line


# --- specs ------------------------------------------------------------------------------------


def test_a_huge_hexadecimal_integer_is_refused_at_its_position():
    """Read without the limit of decimal digits, it passed validate and failed in json.dumps."""
    with pytest.raises(SpecError) as excinfo:
        load_spec_text(SPEC.replace("seed: 0", "seed: 0x" + "f" * 5000), "hex.yaml")
    (diagnostic,) = excinfo.value.diagnostics
    assert (diagnostic.line, diagnostic.col) == (2, 7)
    assert "about 6,021 digits, far more than any setting takes" in diagnostic.message


@pytest.mark.parametrize("head, zeros, refused", [
    ("", 199_998, False), ("", 199_999, True),
    # the merge's source and its overridden x are composed, not counted
    ("a: &d {x: 1}\nb: {<<: *d, x: 2}\n", 199_994, False)])
def test_the_value_limit_counts_values_as_they_are_read(head, zeros, refused):
    """The mapping, its list and the list's zeros: 200,000 values at most. Counting keys too
    refused a spec of 199,986 values as "more than 200,000"."""
    from nnrun.compiler.loader import load_yaml_text

    text = head + "model: [" + ",".join(["0"] * zeros) + "]\n"
    if not refused:
        assert len(load_yaml_text(text, "limit.yaml").data["model"]) == zeros
        return
    with pytest.raises(SpecError, match="more than 200,000 values"):
        load_yaml_text(text, "limit.yaml")


def test_a_document_far_past_the_limit_is_refused_as_it_is_read():
    """Composing went on to the end first (16 MiB of small mappings took 85 s and 2 GB), and
    met this broken last line before the count."""
    from nnrun.compiler.loader import load_yaml_text

    text = "model: [" + ",".join(["0"] * 400_001) + "]\ntail: [not closed\n"
    with pytest.raises(SpecError) as excinfo:
        load_yaml_text(text, "limit.yaml")
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.line == 1 and "more than 200,000 values" in diagnostic.message


# --- arguments --------------------------------------------------------------------------------


def test_a_set_path_of_a_thousand_parts_is_a_spec_error(spec):
    """It nested the spec 1000 deep, and a check that copies it ran out of recursion."""
    path = ".".join(["x"] * 1000)
    result = invoke("validate", spec, "--set", f"{path}=1")
    assert result.exit_code == 1 and "internal error" not in result.output
    assert "the path has 1,000 parts" in result.stderr


@pytest.mark.parametrize("command", ["train", "bench"])
def test_a_thread_count_beyond_any_machine_is_a_usage_error(tmp_path, spec, command):
    """2**64 overflowed BLAS's C int (exit 70), after train had made its run directory."""
    out = ["--out", tmp_path / "run"] if command == "train" else []
    result = invoke(command, spec, "--threads", 2**64, *out)
    assert result.exit_code == 2 and "1024 at most" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_api_refuses_such_a_thread_count_and_the_environment_is_capped(monkeypatch):
    from nnrun.runtime.threads import default_threads, thread_limit

    with pytest.raises(ValueError, match="threads=5000: give 1 to 1024"):
        with thread_limit(5000):
            pass
    monkeypatch.setenv("OMP_NUM_THREADS", str(2**64))
    assert default_threads() == 1024


@pytest.mark.parametrize("value, used", [("abc", None), ("0", None), ("-2", None), ("4,2", 4),
                                         (" 3 ", 3)])
def test_an_unusable_thread_variable_is_said_once_and_openmps_list_form_is_read(
        monkeypatch, capsys, value, used):
    """An invalid OMP_NUM_THREADS fell back to every core without a word."""
    from nnrun import notices
    from nnrun.runtime import threads

    monkeypatch.setattr(notices, "_SAID_ONCE", set())
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    counts = {threads.default_threads(), threads.default_threads()}
    warnings = capsys.readouterr().err.splitlines()
    if used is not None:
        assert counts == {used} and warnings == []
        return
    every_core = len(os.sched_getaffinity(0))
    assert counts == {every_core}
    assert warnings == [f"nnrun: warning: OMP_NUM_THREADS={value!r} is not a number of threads: "
                        f"nnrun passes it over and uses {every_core}; set it to a whole number "
                        f"from 1, or give --threads N"]


def test_quiet_training_does_not_say_the_thread_variable_is_passed_over(monkeypatch, spec,
                                                                          tmp_path):
    from nnrun import notices

    monkeypatch.setattr(notices, "_SAID_ONCE", set())
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    result = invoke("train", spec, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0 and result.stderr == ""
    result = invoke("train", spec, "--out", tmp_path / "loud")  # not said yet: said now
    assert "OMP_NUM_THREADS='abc' is not a number of threads" in result.stderr


def test_summary_of_a_run_takes_no_set_and_of_a_spec_no_checkpoint(spec, trained):
    """--set showed the checkpoint's sparsity against a model it was not trained as. Options
    that do not go together are usage errors (exit 2), as train's are (the cli walk)."""
    line = assert_one_line_error(invoke("summary", trained, "--set",
                                        "model.layers[0].units=16"), trained, code=2)
    assert "--set applies to a spec" in line
    line = assert_one_line_error(invoke("summary", spec, "--checkpoint", "best"), spec, code=2)
    assert "--checkpoint applies to a run directory" in line


def test_a_config_home_this_user_may_not_search_is_passed_over(tmp_path, monkeypatch):
    """`Path.is_dir` raises on EACCES: export, plot and data preview failed, naming
    ~/.config/matplotlib, which the user never gave."""
    from nnrun.runtime.data import locations

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "private"))
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    real_is_dir = Path.is_dir

    def is_dir(path):
        if "private" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_is_dir(path)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    with locations.library_caches_in_ours():
        import os
        assert os.environ["MPLCONFIGDIR"].startswith(str(tmp_path / "cache"))


def test_a_write_without_a_file_name_names_the_output():
    """stdout on a full device (`nnrun schema > /dev/full`) was "a file"."""
    line = describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
    assert line.startswith("a file or the output: No space left on device")


def test_an_os_error_of_no_errno_and_no_file_is_said_in_its_own_words():
    """ctypes' failed load of a library: it was 'a file or the output: OSError'."""
    line = describe_os_error(OSError("libcuda.so.1: cannot open shared object file"))
    assert line == "libcuda.so.1: cannot open shared object file"


def test_a_fifo_among_a_runs_files_is_named_as_one(trained):
    import os

    (trained / "metrics.jsonl").unlink()
    os.mkfifo(trained / "metrics.jsonl")
    line = assert_one_line_error(invoke("train", trained / "spec.yaml", "--resume", trained,
                                        "--epochs", 3), "metrics.jsonl")
    assert "is not a regular file but a FIFO (named pipe)" in line


def test_resume_of_a_device_says_it_is_no_run_directory(spec):
    line = assert_one_line_error(invoke("train", spec, "--resume", "/dev/null"), "/dev/null")
    assert "is a character device, not a run directory" in line


# --- the API (an audit of odd input to it) ----------------------------------------------------

MAPS = """\
name: maps
model:
  input_shape: [1, 3, 3]
  layers:
    - {type: conv2d, filters: 2, kernel_size: 3, padding: same}
loss: mse
"""


def test_targets_of_the_outputs_size_in_another_layout_are_refused():
    """[N, 3, 3, 2] for outputs [2, 3, 3] (channels last) were reshaped: a wrong loss."""
    import nnrun

    model = nnrun.compile(nnrun.load_spec_text(MAPS))
    params = model.init_params()
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    target = np.random.default_rng(1).standard_normal((2, 2, 3, 3))
    loss, _ = model.loss_and_grads(params, x, target)
    flat, _ = model.loss_and_grads(params, x, target.reshape(2, 18))
    assert flat == loss  # a flat vector per sample reads in the outputs' order
    with pytest.raises(ValueError, match=r"shaped like the outputs, \[N, 2, 3, 3\]"):
        model.loss_and_grads(params, x, target.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("shape", [(2, 3, 3), (2, 1, 3, 3), (2, 3, 3, 1), (2, 9)])
def test_targets_of_one_channel_fit_with_or_without_its_axis(shape):
    import nnrun

    model = nnrun.compile(nnrun.load_spec_text(MAPS.replace("filters: 2", "filters: 1")))
    params = model.init_params()
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    target = np.random.default_rng(1).standard_normal((2, 1, 3, 3))
    loss, _ = model.loss_and_grads(params, x, target)
    assert model.loss_and_grads(params, x, target.reshape(shape))[0] == loss


def test_channels_last_targets_are_refused_where_a_map_axis_is_1():
    """Squeezing every axis of size 1 took [3, 1, 3] for outputs [3, 3, 1]: transposed values."""
    from nnrun.runtime.data.targets import laid_out_as_outputs

    assert not laid_out_as_outputs((3, 1, 3), (3, 3, 1))
    assert not laid_out_as_outputs((1, 3, 3), (3, 1, 3))
    assert laid_out_as_outputs((3, 3, 1), (1, 3, 3)) and laid_out_as_outputs((), (1,))


def test_a_dataset_whose_targets_are_laid_out_otherwise_is_a_data_error(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 1, 3, 3)).astype(np.float32)
    np.savez(tmp_path / "maps.npz", x=x, y=x.repeat(2, axis=1).transpose(0, 2, 3, 1) + 0.5)
    (tmp_path / "maps.yaml").write_text(MAPS.replace("name: maps\n", "name: maps\ndata: "
                                                     "{dataset: npz, path: maps.npz}\n"))
    line = assert_one_line_error(invoke("train", tmp_path / "maps.yaml", "--out",
                                        tmp_path / "run"), "maps.npz")
    assert "the targets are [3, 3, 2] per sample, the outputs [2, 3, 3]" in line


@pytest.mark.parametrize("options, error", [
    ({"max_steps": 0}, "max_steps must be a whole number >= 1"),
    ({"max_steps": 2.5}, "max_steps must be a whole number >= 1"),
    ({"ranks": 5}, "ranks is not an option")])
def test_train_refuses_its_internal_options_misused(tmp_path, spec, options, error):
    import nnrun

    with pytest.raises((ValueError, TypeError), match=error):
        nnrun.train(str(spec), out_dir=tmp_path / "run", quiet=True, **options)
    assert not (tmp_path / "run").exists()


def test_a_negative_running_variance_is_refused():
    import nnrun

    model = nnrun.compile(nnrun.load_spec_text(SPEC.replace(
        "    - {type: dense, units: 4, activation: tanh}",
        "    - {type: dense, units: 4, activation: tanh}\n    - {type: batchnorm}")))
    params = model.init_params()
    params["batchnorm_1.running_var"][:] = -1
    with pytest.raises(ValueError, match="a variance is 0 or more"):
        model.forward(params, np.zeros((2, 2)))


def test_a_hand_edited_preprocessing_is_named_by_export_and_eval(tmp_path, trained):
    """shift 1e30, scale 1e-30: both within float32, inputs inf once preprocessed: export
    exited 70, eval blamed the data alone. The checkpoints keep the digest of their own
    preprocessing, which refuses an edited one first; a run of an older nnrun keeps none."""
    from nnrun.runtime.checkpoint import load_checkpoint, save_checkpoint

    path = trained / "preprocessing.npz"
    arrays = dict(np.load(path))
    arrays["shift"] = np.full(arrays["shift"].shape, 1e30)
    arrays["scale"] = np.full(arrays["scale"].shape, 1e-30)
    path.unlink()
    np.savez(path, **arrays)
    line = assert_one_line_error(invoke("eval", trained), path)
    assert "is not the preprocessing best.npz was trained with (edited" in line
    for name in ("best.npz", "last.npz"):  # as an older nnrun wrote them
        state, meta = load_checkpoint(trained / name)
        del meta["preprocessing_sha256"]
        save_checkpoint(trained / name, state, meta)
    line = assert_one_line_error(invoke("eval", trained), "xor")
    assert "preprocessing.npz (its shift and scale, if edited" in line
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    line = assert_one_line_error(invoke("export", trained, "--out", tmp_path / "m.onnx"),
                                 "preprocessing.npz")
    assert "inf or NaN in float32" in line


def test_only_a_stored_shift_and_scale_are_named_as_a_cause(tmp_path):
    """The hint to delete preprocessing.npz came with every eval, also of a run without one."""
    from types import SimpleNamespace

    from nnrun.runtime.data import DataError, load_dataset
    from nnrun.runtime.data.preprocessing import Preprocessing
    from nnrun.runtime.data.splits import Normalizer

    x = np.full((8, 2), 1e39)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(8, np.int64))
    data = SimpleNamespace(dataset="npz", path="d.npz", normalize="none")
    stored = Preprocessing(Normalizer(np.zeros((1, 2)), np.ones((1, 2))),
                           file=tmp_path / "run" / "preprocessing.npz")
    for preprocessing, named in [(None, False), (Preprocessing(), False), (stored, True)]:
        with pytest.raises(DataError) as excinfo:
            load_dataset(data, spec_dir=tmp_path, seed=0, preprocessing=preprocessing)
        assert ("preprocessing.npz" in str(excinfo.value)) == named, str(excinfo.value)


# --- map targets in data files (an audit against PyTorch) -------------------------------------

CONV = """\
name: conv
data: {dataset: npz, path: d.npz, normalize: none}
model: {layers: [{type: conv2d, filters: FILTERS, kernel_size: 1}]}
loss: LOSS
optimizer: {type: sgd, lr: 0.01}
train: {epochs: 1, batch_size: 3}
"""


def _conv_run(tmp_path, y, loss: str, filters: int = 1):
    x = np.random.default_rng(0).standard_normal((6, 2, 3, 4))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "s.yaml").write_text(CONV.replace("FILTERS", str(filters)).replace("LOSS", loss))
    return invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet")


def test_whole_number_maps_with_their_channel_axis_are_values_to_regress(tmp_path):
    """0/1 masks [N, 1, H, W] under mse were read as label maps [1, H, W] and refused."""
    masks = (np.random.default_rng(1).random((6, 1, 3, 4)) < 0.5).astype(float)
    assert_ok(_conv_run(tmp_path, masks, "mse"))


@pytest.mark.parametrize("layer, x_shape, y", [
    ("{type: conv1d, filters: 1, kernel_size: 1}", (6, 2, 5), np.arange(30.0).reshape(6, 1, 5) % 2),
    ("{type: conv1d, filters: 3, kernel_size: 1}", (6, 2, 5), np.arange(90).reshape(6, 3, 5) % 4),
    ("{type: conv2d, filters: 1, kernel_size: 1}", (6, 2, 3, 4),
     np.arange(72).reshape(6, 1, 3, 4) % 2),
    ("{type: dense, units: 3}", (6, 2), np.arange(18).reshape(6, 3) % 5)])
@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_whole_numbers_of_the_outputs_shape_are_values_to_regress(tmp_path, layer, x_shape, y,
                                                                  loss):
    """Floats [N, C, L] and integers of 2 or more axes (masks, counts) of the outputs' shape
    were read as label maps and refused under mse, mae and huber, in words that did not fit
    ("compares the label maps [1, 5] with one score per position, [1, 1, 5]")."""
    import nnrun

    x = np.random.default_rng(0).standard_normal(x_shape)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "s.yaml").write_text(
        f"data: {{dataset: npz, path: d.npz, normalize: none}}\nmodel: {{layers: [{layer}]}}\n"
        f"loss: {{type: {loss}}}\noptimizer: {{type: sgd, lr: 0.01}}\n"
        "train: {epochs: 1, batch_size: 3}\n")
    assert_ok(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet"))
    result = assert_ok(invoke("eval", tmp_path / "run", "--split", "train", "--format", "json"))
    outputs = nnrun.load_run(tmp_path / "run").predict(x)
    expected = np.mean((outputs - y) ** 2 if loss == "mse" else np.abs(outputs - y))
    measured = json.loads(result.stdout)
    assert measured["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert "train_mae" in measured  # values: the regression metric, not pixel accuracy


@pytest.mark.parametrize("kernel, dtype", [(1, "int64"), (1, "float64"), (3, "int64")])
def test_target_maps_to_regress_refuse_augmentations_that_move_pixels(tmp_path, kernel, dtype):
    """Masks [N, 1, H, W] under mse trained with random_flip moving x alone (the review), also
    where a valid convolution makes them smaller than x (the second review). eval, which
    augments nothing, still evaluates such a run."""
    from nnrun.compiler.frontend import load_spec
    from nnrun.runtime.data import load_dataset
    from nnrun.runtime.data_fit import check_data_fits, targets_for_model
    from nnrun.runtime.model import Model

    x = np.random.default_rng(0).standard_normal((6, 2, 5, 6))
    masks = (np.random.default_rng(1).random((6, 1, 6 - kernel, 7 - kernel)) < 0.5)
    np.savez(tmp_path / "d.npz", x=x, y=masks.astype(dtype))
    (tmp_path / "s.yaml").write_text(CONV.replace("FILTERS", "1").replace("LOSS", "mse").replace(
        "normalize: none}", "normalize: none, augment: [{type: random_flip}]}").replace(
        "kernel_size: 1", f"kernel_size: {kernel}"))
    line = assert_one_line_error(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "r"),
                                 "d.npz")
    assert line.endswith("random_flip would move the pixels but not the target maps; remove it "
                         "(gaussian_noise keeps them aligned)")
    source = load_spec(tmp_path / "s.yaml")
    model = Model(source)
    data = targets_for_model(source.spec, model,
                             load_dataset(source.spec.data, spec_dir=tmp_path, seed=0))
    check_data_fits(source.spec, model, data, training=False)


@pytest.mark.parametrize("layout", ["channel last", "flat"])
def test_target_maps_in_another_accepted_layout_refuse_augmentations_too(tmp_path, layout):
    """The augmentation audit: masks saved [N, H, W, 1] or flat [N, H*W], layouts the outputs
    [1, H, W] take, trained with random_flip moving x alone (to a loss 1e13 times the
    unaugmented one's)."""
    x = np.random.default_rng(0).standard_normal((6, 2, 5, 6))
    masks = (np.random.default_rng(1).random((6, 5, 6)) < 0.5).astype(np.float32)
    y = masks[..., None] if layout == "channel last" else masks.reshape(6, -1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "s.yaml").write_text(CONV.replace("FILTERS", "1").replace("LOSS", "mse").replace(
        "normalize: none}", "normalize: none, augment: [{type: random_flip}]}"))
    line = assert_one_line_error(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "r"),
                                 "d.npz")
    assert line.endswith("random_flip would move the pixels but not the target maps; remove it "
                         "(gaussian_noise keeps them aligned)")
    # at the entry the fix removes (the mutation audit: at data.path), as validate --data says
    assert ": error: data.augment[0]: " in line
    assert line == assert_one_line_error(invoke("validate", tmp_path / "s.yaml", "--data"),
                                         "d.npz")
    (tmp_path / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace(
        "{type: random_flip}", "{type: gaussian_noise, std: 0.1}"))
    assert_ok(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "r", "--quiet"))


@pytest.mark.parametrize("loss, y, index", [
    # (shaped like the output [1, 3, 4]: binary_cross_entropy takes them as they are, as ints)
    ("binary_cross_entropy", np.zeros((6, 1, 3, 4)), "y.astype(int)"),
    ("binary_cross_entropy", np.zeros((6, 3, 4, 1), np.int64), "y[..., 0].astype(int)"),
    ("cross_entropy", np.zeros((6, 1, 3, 4), np.int64), "y[:, 0].astype(int)")])
def test_label_maps_with_an_axis_of_1_say_which_maps_to_save(tmp_path, loss, y, index):
    """They were told to add a fourth axis, and that a flatten took the positions away."""
    line = assert_one_line_error(_conv_run(tmp_path, y, loss, 3 if loss == "cross_entropy"
                                           else 1), "d.npz")
    assert line.endswith(f"save {index}")


def test_one_label_per_sample_in_a_column_says_ravel(tmp_path, spec):
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, :1] > 0).astype(float))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--set",
                                        "data={dataset: npz, path: d.npz}"), "d.npz")
    assert "the labels are a column, [N, 1]" in line and "save y.ravel()" in line


@pytest.mark.parametrize("text", ["{model: {layers: [{type: dense, units: 2}]}}",
                                  "model: {layers: [{type: dense, units: 2}]}"])
def test_one_line_yaml_text_given_as_a_path_says_so(text):
    """It was read as a file name: "cannot read file: No such file or directory"."""
    import nnrun

    with pytest.raises(TypeError, match="load_spec_text"):
        nnrun.compile(text)
    with pytest.raises(TypeError, match="load_spec_text"):
        nnrun.load_spec(text)


@pytest.mark.parametrize("use_bias, value, fix", [
    ("", "false", "to leave the bias out, write use_bias: false"),
    (", use_bias: false", "false", "use_bias: false leaves the bias out already: remove bias"),
    ("", "true", "a layer has a bias by default (use_bias: true): remove bias"),
    (", use_bias: false", "true", "to keep the bias, remove use_bias: false and bias")])
def test_bias_as_a_switch_is_told_what_fits_use_bias(use_bias, value, fix):
    """Beside use_bias: false, 'remove bias' left no bias where true meant one (the review)."""
    text = ("model:\n  input_shape: [4]\n  layers:\n    - {type: dense, units: 2"
            f"{use_bias}, bias: {value}}}\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec_text(text, "spec.yaml")
    assert excinfo.value.diagnostics[0].message.endswith(fix)


NO_PARAMETERS = """\
data: {dataset: npz, path: d.npz}
model:
  layers:
    - {type: tanh}
loss: mse
train: {epochs: 2}
"""


def test_a_model_without_parameters_trains_and_gradcheck_says_there_is_nothing_to_check(
        tmp_path):
    """Activations or pooling alone validate (0 parameters); train was an internal error
    ("need at least one array to stack") with a run directory left behind."""
    x = np.random.default_rng(0).standard_normal((20, 4))
    np.savez(tmp_path / "d.npz", x=x, y=np.tanh(x))
    (tmp_path / "s.yaml").write_text(NO_PARAMETERS)
    assert_ok(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet"))
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(row)["train_loss"] for row in rows]
    # nothing to learn, nothing changed (but the order the shuffled batches sum in)
    assert len(losses) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-6)
    line = assert_one_line_error(invoke("gradcheck", tmp_path / "s.yaml"), "no parameters")
    assert "there are none to check" in line
    summary = invoke("summary", tmp_path / "run")  # was "0.00% of the weights are zero"
    assert summary.stdout.rstrip().endswith("no weight tensor, so no sparsity"), summary.output


@pytest.mark.parametrize("loss, units", [("cross_entropy", 3), ("binary_cross_entropy", 1)])
def test_label_maps_of_one_position_train(tmp_path, loss, units):
    """[N, 1] integers for a conv1d ending in [classes, 1] (spec-reference: label maps [N, L]
    for 1-D samples) were called a column to ravel, and the ravelled labels then refused."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((8, 2, 4)),
             y=rng.integers(0, 2, (8, 1)))
    (tmp_path / "s.yaml").write_text(
        "data: {dataset: npz, path: d.npz}\nmodel:\n  layers:\n"
        f"    - {{type: conv1d, filters: {units}, kernel_size: 4}}\n"
        f"loss: {loss}\ntrain: {{epochs: 1}}\n")
    assert_ok(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet"))
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((8, 2, 4)), y=rng.integers(0, 2, 8))
    line = assert_one_line_error(invoke("train", tmp_path / "s.yaml", "--out",
                                        tmp_path / "run2", "--quiet"), "d.npz")
    assert line.endswith("(or give label maps for segmentation, y [N, 1])")


@pytest.mark.parametrize("x_shape, layers, loss", [
    ((8, 2, 4), "[{type: flatten}, {type: dense, units: 1}]", "mse"),
    ((8, 2, 4), "[{type: flatten}, {type: dense, units: 3}]", "cross_entropy"),
    ((8, 1, 4, 4), "[{type: conv2d, filters: 1, kernel_size: 4}]", "mse"),
    ((8, 4), "[{type: dense, units: 1}]", "mse")])
def test_a_column_of_integers_is_one_label_each_beside_any_samples(tmp_path, x_shape, layers,
                                                                    loss):
    """The review: deciding [N, 1] against the model's output (above) let a column beside
    sequences train under mse as counts of one output, where beside vectors it is refused
    (spec-reference: counts [N, k] for k >= 2), and told images to keep positions."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal(x_shape), y=rng.integers(0, 2, (8, 1)))
    (tmp_path / "s.yaml").write_text(f"data: {{dataset: npz, path: d.npz}}\nmodel:\n  layers: "
                                     f"{layers}\nloss: {loss}\ntrain: {{epochs: 1}}\n")
    line = assert_one_line_error(invoke("train", tmp_path / "s.yaml", "--out",
                                        tmp_path / "run", "--quiet"), "d.npz")
    assert "the labels are a column, [N, 1]" in line and "save y.ravel()" in line
