"""Training is a function of the spec and its seed: two runs give the same metrics and weights,
and a run stopped after epoch 2 and resumed to epoch 3 gives what an uninterrupted 3-epoch run
gives (DESIGN.md section 7; runtime/train.py: epoch e draws from default_rng([seed, e])).

Also: resuming from another spec's checkpoint, and a diverging loss, fail with useful messages.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.runtime.checkpoint import CheckpointError
from nnrun.runtime.run_dir import RunDirectoryError
from nnrun.runtime.spec_changes import SpecChangeError
from nnrun.runtime.train import TrainingError

pytest.importorskip("sklearn")  # the digits dataset

SPEC = """\
name: tiny-digits
seed: 5
data:
  dataset: digits
  validation_split: 0.2
  normalize: standard
  limit: 240
  augment:
    - {type: random_shift, max_shift: 1}
    - {type: gaussian_noise, std: 0.05}
model:
  init: he_uniform
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, padding: same, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: flatten}
    - {type: dense, units: 16, activation: relu}
    - {type: dropout, rate: 0.3}
    - {type: dense, units: 10}
loss: cross_entropy
optimizer:
  type: adam
  lr: 0.01
train:
  epochs: 3
  batch_size: 32
  metrics: [accuracy]
"""

# wall-clock fields: the only ones allowed to differ between identical runs
TIMING = {"epoch_s", "samples_per_s"}


def write_spec(directory: Path, text: str = SPEC, name: str = "tiny.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def metrics_rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files if key != "meta"}


def meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["meta"]))


def assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key], b[key]), f"{key} differs"


@pytest.fixture(scope="module")
def three_epoch_run(tmp_path_factory) -> Path:
    """One uninterrupted 3-epoch run, shared by the tests below."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    summary = nnrun.train(write_spec(root), out_dir=out, quiet=True)
    assert summary["epochs_run"] == 3
    return out


def test_same_spec_and_seed_give_identical_runs(tmp_path, three_epoch_run):
    out = tmp_path / "again"
    nnrun.train(write_spec(tmp_path), out_dir=out, quiet=True)
    first, second = metrics_rows(three_epoch_run), metrics_rows(out)
    assert [row["epoch"] for row in first] == [1, 2, 3]
    # bit-identical: json round-trips floats exactly, so equality of the parsed rows is enough
    assert without_timing(first) == without_timing(second)
    assert_same_arrays(arrays(three_epoch_run / "last.npz"), arrays(out / "last.npz"))
    assert_same_arrays(arrays(three_epoch_run / "best.npz"), arrays(out / "best.npz"))
    # the run trained: dropout and augmentation were on, and the weights moved
    assert first[-1]["train_loss"] < first[0]["train_loss"]


def test_another_seed_gives_another_run(tmp_path, three_epoch_run):
    out = tmp_path / "other-seed"
    nnrun.train(write_spec(tmp_path), out_dir=out, quiet=True, overrides=["seed=6"])
    assert without_timing(metrics_rows(out)) != without_timing(metrics_rows(three_epoch_run))


def test_two_epochs_then_resume_equals_three_epochs(tmp_path, three_epoch_run):
    spec = write_spec(tmp_path)
    out = tmp_path / "resumed"
    # The checkpoint's spec hash covers model, dtype, optimizer type and loss, not train.epochs,
    # so the same spec file resumes a run that was cut short by an override.
    nnrun.train(spec, out_dir=out, quiet=True, overrides=["train.epochs=2"])
    assert [row["epoch"] for row in metrics_rows(out)] == [1, 2]
    assert meta(out / "last.npz")["epoch"] == 2

    summary = nnrun.train(spec, resume=out, quiet=True)
    assert summary["epochs_run"] == 3  # the history of the first part is kept
    assert meta(out / "last.npz")["epoch"] == 3
    assert meta(out / "last.npz")["step"] == meta(three_epoch_run / "last.npz")["step"]
    assert_same_arrays(arrays(out / "last.npz"), arrays(three_epoch_run / "last.npz"))
    assert without_timing(metrics_rows(out)) == without_timing(metrics_rows(three_epoch_run))


def test_resume_from_a_later_epoch_rewrites_the_metrics_after_it(tmp_path, three_epoch_run):
    """metrics.jsonl lines after the checkpoint's epoch (a run killed between writing the line
    and the checkpoint) are dropped on resume, not duplicated."""
    spec = write_spec(tmp_path)
    out = tmp_path / "cut"
    nnrun.train(spec, out_dir=out, quiet=True, overrides=["train.epochs=2"])
    rows = metrics_rows(out)
    with open(out / "metrics.jsonl", "a") as stream:
        stream.write(json.dumps({**rows[-1], "epoch": 3}) + "\n")  # a line without checkpoint
    nnrun.train(spec, resume=out, quiet=True)
    assert [row["epoch"] for row in metrics_rows(out)] == [1, 2, 3]
    assert without_timing(metrics_rows(out)) == without_timing(metrics_rows(three_epoch_run))


def test_a_resume_at_another_thread_count_says_its_sums_may_round_otherwise(tmp_path, capsys):
    """Runs are bit-identical at a fixed thread count only (docs/architecture.md): the
    checkpoint keeps what the sums' order depends on, and a resume that trains with another
    says so, with the option that resumes as the run trained; the same count says nothing."""
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    nnrun.train(spec, out_dir=out, quiet=True, overrides=["train.epochs=1"], threads=2)
    written = meta(out / "last.npz")
    assert (written["backend"], written["threads"], written["ranks"]) == ("numpy", 2, 1)
    capsys.readouterr()
    nnrun.train(spec, resume=out, overrides=["train.epochs=2"], threads=2)
    assert "round" not in capsys.readouterr().err
    nnrun.train(spec, resume=out, threads=1)
    said = capsys.readouterr().err
    assert (f"{out}: the checkpoint's epoch 2 trained on 2 CPU threads, this resume runs on "
            "1 CPU thread: sums may round otherwise") in said
    assert "(--threads 2 resumes as it trained)" in said
    assert meta(out / "last.npz")["threads"] == 1


@pytest.mark.parametrize("before, now, words", [
    ({"backend": "cupy", "threads": None, "ranks": 1},
     {"backend": "numpy", "threads": 2, "ranks": 1},
     "the checkpoint's epoch 1 trained on the cupy backend, this resume runs on the numpy "
     "backend: "),
    ({"backend": "numpy", "threads": 1, "ranks": 2},
     {"backend": "numpy", "threads": 1, "ranks": 1},
     "the checkpoint's epoch 1 trained on 2 ranks, this resume runs on 1 rank: "),
    ({"backend": "numpy", "threads": 4, "ranks": 2},
     {"backend": "numpy", "threads": 1, "ranks": 1},
     "the checkpoint's epoch 1 trained on 4 CPU threads, 2 ranks, this resume runs on 1 CPU "
     "thread, 1 rank: "),
    # a checkpoint of an nnrun that did not keep them: nothing to compare
    ({"backend": "numpy"}, {"backend": "numpy", "threads": 2, "ranks": 1}, None),
])
def test_what_a_resume_says_of_another_backend_or_ranks(before, now, words):
    from types import SimpleNamespace

    from nnrun.runtime.train import Trainer

    said = []
    run = SimpleNamespace(path="RUN", say=said.append)
    trainer = SimpleNamespace(_arithmetic=lambda: dict(now), _batchnorm_per_rank=lambda: False,
                              data=SimpleNamespace(train=SimpleNamespace(x=np.zeros((64, 1)))),
                              spec=SimpleNamespace(train=SimpleNamespace(batch_size=32)))
    Trainer._say_if_rounding_differs(trainer, run, {"epoch": 1, **before})
    assert said == ([] if words is None else [
        f"RUN: {words}sums may round otherwise, so its numbers may differ in the last digits "
        "from an uninterrupted run's"])


def test_a_resume_on_ranks_that_cut_the_last_batch_otherwise_says_its_numbers_will_differ():
    """The MPI audit: a 1-rank run whose epochs end in a batch of 7 resumed on 2 ranks (which
    leave one of the 7 out) was told its numbers may differ in the last digits."""
    from types import SimpleNamespace

    from nnrun.runtime.train import Trainer

    said = []
    trainer = SimpleNamespace(_arithmetic=lambda: {"backend": "numpy", "threads": 1, "ranks": 2},
                              _batchnorm_per_rank=lambda: False,
                              data=SimpleNamespace(train=SimpleNamespace(x=np.zeros((231, 1)))),
                              spec=SimpleNamespace(train=SimpleNamespace(batch_size=32)))
    Trainer._say_if_rounding_differs(trainer, SimpleNamespace(path="RUN", say=said.append),
                                     {"epoch": 1, "backend": "numpy", "threads": 1, "ranks": 1})
    assert said == [
        "RUN: the checkpoint's epoch 1 trained on 1 rank, this resume runs on 2 ranks: sums may "
        "round otherwise, so its numbers will differ from an uninterrupted run's: each epoch's "
        "last batch of 7 samples leaves out 1 of them, against 0 before (a batch is cut to a "
        "multiple of the ranks)"]


@pytest.mark.parametrize("sync, says", [(False, True), (True, False)])
def test_a_resume_on_another_rank_count_with_batchnorm_per_rank_says_it_trains_otherwise(
        sync, says):
    """The crash audit: a 2-rank run with batchnorm resumed on 1 rank was told its numbers
    may differ in the last digits; each rank's statistics are of its half batch, the one
    rank's of the whole (epoch 3's train_loss 0.4266 against 0.4913)."""
    from nnrun.compiler.frontend import check, load_spec_text
    from nnrun.runtime.model import Model
    from nnrun.runtime.train import Trainer
    from types import SimpleNamespace

    text = ("data: {dataset: xor}\nmodel: {layers: [{type: dense, units: 4}, "
            "{type: batchnorm}, {type: dense, units: 2}]}\n"
            f"train: {{batch_size: 32, sync_batchnorm: {str(sync).lower()}}}\n")
    source = load_spec_text(text, "s.yaml")
    check(source)
    trainer = SimpleNamespace(_arithmetic=lambda: {"backend": "numpy", "threads": 1, "ranks": 1},
                              data=SimpleNamespace(train=SimpleNamespace(x=np.zeros((64, 1)))),
                              spec=source.spec, model=Model(source))
    trainer._batchnorm_per_rank = lambda: Trainer._batchnorm_per_rank(trainer)
    said = []
    Trainer._say_if_rounding_differs(trainer, SimpleNamespace(path="RUN", say=said.append),
                                     {"epoch": 2, "backend": "numpy", "threads": 1, "ranks": 2})
    (line,) = said
    assert line.startswith("RUN: the checkpoint's epoch 2 trained on 2 ranks, this resume runs "
                           "on 1 rank: ")
    assert ("batchnorm normalises with each rank's share of a batch" in line) == says
    assert ("may differ in the last digits" in line) != says


def test_resuming_from_a_copy_of_best_trains_the_later_epochs_again_exactly(tmp_path):
    """The way on that a run without last.npz is shown (run_dir.py): best.npz is a whole
    checkpoint (weights, optimizer state, meta), so a copy of it as last.npz resumes the run at
    its best epoch, and the epochs after it come out as they did."""
    spec = write_spec(tmp_path)
    worst = ["train.early_stopping={monitor: train_loss, mode: max, patience: 5}"]
    out = tmp_path / "run"
    nnrun.train(spec, out_dir=out, quiet=True, overrides=worst)
    assert meta(out / "best.npz")["epoch"] == 1 and meta(out / "last.npz")["epoch"] == 3
    rows, last = metrics_rows(out), arrays(out / "last.npz")
    (out / "last.npz").unlink()
    with pytest.raises(RunDirectoryError, match="no last.npz"):
        nnrun.train(spec, resume=out, quiet=True, overrides=worst)
    shutil.copyfile(out / "best.npz", out / "last.npz")
    nnrun.train(spec, resume=out, quiet=True, overrides=worst)
    assert without_timing(metrics_rows(out)) == without_timing(rows)
    assert_same_arrays(arrays(out / "last.npz"), last)


def test_plain_sgd_trains(tmp_path):
    """The default optimizer settings (sgd without momentum: an update op with one output)."""
    out = tmp_path / "sgd"
    summary = nnrun.train(write_spec(tmp_path), out_dir=out, quiet=True,
                          overrides=["optimizer={type: sgd, lr: 0.05}", "train.epochs=1"])
    assert summary["epochs_run"] == 1
    model = nnrun.compile(write_spec(tmp_path))
    saved = arrays(out / "last.npz")
    for name, value in model.init_params().items():
        assert saved[f"params/{name}"].shape == value.shape, name


BATCHNORM = """
name: bn
data: {dataset: digits, limit: 100}
model:
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, padding: same}
    - {type: batchnorm}
    - {type: flatten}
    - {type: dense, units: 10}
train: {epochs: 1, batch_size: 50}
"""


@pytest.mark.parametrize("change", ["model.layers[0].filters=6", "model.layers[1]={type: identity}"])
def test_the_advice_on_a_refused_change_names_batchnorms_statistics_too(tmp_path, change):
    """The review: running_mean and running_var, under params/ in a checkpoint, were left out
    of the arrays to drop, and init_from then refused the copy."""
    spec = write_spec(tmp_path, BATCHNORM, "bn.yaml")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    with pytest.raises(SpecChangeError) as refused:
        nnrun.train(spec, resume=tmp_path / "run", quiet=True, overrides=[change])
    unfit = re.search(r"no place for \(([^)]*)\)", str(refused.value)).group(1).split(", ")
    assert {"params/batchnorm_1.running_mean", "params/batchnorm_1.running_var"} <= set(unfit)
    np.savez(tmp_path / "part.npz", **{k: v for k, v in arrays(tmp_path / "run" / "last.npz")
                                       .items() if k not in unfit})
    nnrun.train(spec, out_dir=tmp_path / "new", quiet=True,
                overrides=[change, f"model.init_from={tmp_path / 'part.npz'}"])


def test_resume_with_a_checkpoint_of_another_spec_names_the_file(tmp_path):
    other = SPEC.replace("units: 16", "units: 12")
    out = tmp_path / "other"
    nnrun.train(write_spec(tmp_path, other, "other.yaml"), out_dir=out, quiet=True,
                overrides=["train.epochs=1"])
    with pytest.raises(SpecChangeError, match=r"model\.layers\[3\]\.units: 12 -> 16"):
        nnrun.train(write_spec(tmp_path), resume=out, quiet=True)
    # Allowed changes still cannot change the checkpoint's arrays; the advice can be followed
    # (the cli walk: it said `--set model.init_from=RUN/last.npz`, which refused the arrays
    # of the resized layer)
    with pytest.raises(SpecChangeError, match="without the arrays the new model has no place "
                       r"for \((params/[^ ,]+(, )?)+\) and give that file's absolute path as "
                       "model.init_from"
                       ) as refused:
        nnrun.train(write_spec(tmp_path), resume=out, quiet=True, allow_changes=True)
    unfit = re.search(r"no place for \(([^)]*)\)", str(refused.value)).group(1).split(", ")
    kept = {k: v for k, v in arrays(out / "last.npz").items() if k not in unfit}
    np.savez(tmp_path / "part.npz", **kept)
    nnrun.train(write_spec(tmp_path), out_dir=tmp_path / "new", quiet=True,
                overrides=["train.epochs=1", f"model.init_from={tmp_path / 'part.npz'}"])
    # Nor can a checkpoint that another spec's run wrote, put in the run's place.
    mine = tmp_path / "mine"
    nnrun.train(write_spec(tmp_path), out_dir=mine, quiet=True, overrides=["train.epochs=1"])
    (mine / "last.npz").write_bytes((out / "last.npz").read_bytes())
    with pytest.raises(CheckpointError) as caught:
        nnrun.train(write_spec(tmp_path), resume=mine, quiet=True)
    message = str(caught.value)
    assert str(mine / "last.npz") in message
    assert "another spec" in message


def test_resume_without_a_checkpoint_names_the_directory(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    with pytest.raises(RunDirectoryError) as caught:
        nnrun.train(write_spec(tmp_path), resume=out, quiet=True)
    assert str(out) in str(caught.value)


def test_a_new_run_refuses_a_directory_that_holds_a_run(tmp_path, three_epoch_run):
    with pytest.raises(RunDirectoryError, match="resume"):
        nnrun.train(write_spec(tmp_path), out_dir=three_epoch_run, quiet=True)


OVERFLOWING_STATE = """\
name: overflow
data: {dataset: digits, limit: 200, validation_split: 0.2}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 8, activation: tanh}
    - {type: dense, units: 10, init: {type: uniform, limit: 1.0e+30}}
optimizer: {type: adam, lr: 0.01}
train: {epochs: 2, batch_size: 32}
"""


def test_a_state_that_overflows_under_a_finite_loss_stops_before_its_checkpoint(tmp_path):
    """Gradients of 1e30 square to inf in Adam's state, whose update is then 0: the loss stays
    finite, but a checkpoint would hold inf, which every later command refuses."""
    out = tmp_path / "overflow"
    with pytest.raises(TrainingError) as caught:
        nnrun.train(write_spec(tmp_path, OVERFLOWING_STATE), out_dir=out, quiet=True)
    message = str(caught.value)
    assert "'opt/dense_1.weight.exp_avg_sq' overflowed (float32) in epoch 1 while the loss " \
           "stayed finite" in message
    assert "optimizer.lr" in message and "clip_grad_norm" in message
    assert "loss.scale" not in message
    assert not (out / "last.npz").exists() and not (out / "best.npz").exists()


def test_an_overflow_under_a_large_loss_scale_names_it_first(tmp_path):
    """The second mutation fuzz: `loss: {type: mse, scale: 1e30}` overflowed Adagrad's state,
    and the message named the learning rate, clipping and the inputs, not the scale."""
    spec = ("data: {dataset: digits, limit: 100, normalize: scale}\nmodel:\n  layers:\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n"
            "loss: {type: mse, scale: 1.0e+30}\noptimizer: {type: adagrad, lr: 0.1}\n"
            "train: {epochs: 1, batch_size: 8}\n")
    with pytest.raises(TrainingError) as caught:
        nnrun.train(write_spec(tmp_path, spec), out_dir=tmp_path / "run", quiet=True)
    assert ("loss.scale (1e+30) multiplies the loss and every gradient by as much: lower it; "
            "else ") in str(caught.value)


def test_a_divergence_under_a_large_loss_scale_does_not_blame_the_initial_weights(tmp_path):
    """The third review: sgd under loss.scale 1e30 was told the initial weights' loss was
    already 6.89e+29 (0.69 but for the scale)."""
    spec = ("data: {dataset: xor}\nmodel:\n  layers: [{type: dense, units: 8, activation: tanh},"
            " {type: dense, units: 2}]\nloss: {type: cross_entropy, scale: 1.0e+30}\n"
            "optimizer: {type: sgd, lr: 0.05}\ntrain: {epochs: 1}\n")
    with pytest.raises(TrainingError) as caught:
        nnrun.train(write_spec(tmp_path, spec), out_dir=tmp_path / "run", quiet=True)
    assert "loss.scale (1e+30)" in str(caught.value)
    assert "initial weights" not in str(caught.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow in the diverging matmuls
def test_diverging_loss_stops_with_epoch_step_and_advice(tmp_path):
    # Without activations the weights of consecutive layers feed each other's gradients and grow
    # geometrically until the logits overflow (with relu, a huge step only kills the units and
    # the loss stays finite). Momentum: see the report on plain SGD's update in the executor.
    linear = SPEC.replace(", activation: relu}", "}")
    out = tmp_path / "diverged"
    with pytest.raises(TrainingError) as caught:
        nnrun.train(write_spec(tmp_path, linear), out_dir=out, quiet=True,
                    overrides=["optimizer={type: sgd, lr: 1.0e+6, momentum: 0.9}"])
    message = str(caught.value)
    assert "nan" in message or "inf" in message
    assert re.search(r"epoch \d+, step \d+", message), message
    assert "clip_grad_norm" in message
    assert "optimizer.lr" in message


def test_a_layer_renamed_on_resume_is_refused_as_another_model(tmp_path):
    """The runtime follow-the-fix audit: `name: hidden` on a layer passed as a change for
    --allow-changes (the checkpoint's hash leaves layer names out), then met the checkpoint as
    "damaged" and was told to copy best.npz over last.npz, losing the epochs after the best."""
    spec = write_spec(tmp_path)
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, overrides=["train.epochs=1"])
    last = (tmp_path / "run" / "last.npz").read_bytes()
    for allow in (False, True):
        with pytest.raises(SpecChangeError, match=r"model\.layers\[\d\]\.name: '[a-z_0-9]+' -> "
                           "'hidden' changes the model the checkpoint was trained as"):
            nnrun.train(spec, resume=tmp_path / "run", quiet=True, allow_changes=allow,
                        overrides=["model.layers[0].name=hidden"])
    assert (tmp_path / "run" / "last.npz").read_bytes() == last


def test_the_optimizer_type_set_on_a_runs_own_spec_is_refused_as_such_and_its_advice_runs(
        tmp_path):
    """The resume field walk: `--set optimizer.type=adam` on a run's spec.yaml failed on the
    sgd fields nnrun wrote there (momentum: 0.0, nesterov: false), hiding the refusal; and the
    refusal's advice, a new run from that spec, failed the same way (here adam's, to sgd)."""
    spec = write_spec(tmp_path)
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, overrides=["train.epochs=1"])
    own = tmp_path / "run" / "spec.yaml"
    assert "beta1: 0.9" in own.read_text()
    with pytest.raises(SpecChangeError, match=r"optimizer\.type: 'adam' -> 'sgd' changes the "
                       "model the checkpoint was trained as"):
        nnrun.train(own, resume=tmp_path / "run", quiet=True, allow_changes=True,
                    overrides=["optimizer.type=sgd", "train.epochs=2"])
    nnrun.train(own, out_dir=tmp_path / "new", quiet=True, overrides=[
        "optimizer.type=sgd", f"model.init_from={tmp_path / 'run' / 'last.npz'}"])
    assert "type: sgd" in (tmp_path / "new" / "spec.yaml").read_text()
    # a layer set anew, of four changed fields: told the change, not that the spec given (the
    # run's own) is another model's, to give the run's own spec (the command just run)
    with pytest.raises(SpecChangeError) as refused:
        nnrun.train(own, resume=tmp_path / "run", quiet=True, allow_changes=True, overrides=[
            "model.layers[3]={type: dense, units: 32, activation: tanh, use_bias: false, "
            "init: he_normal}", "train.epochs=2"])
    assert ", and 1 more field changes the model the checkpoint was trained as" in \
        str(refused.value) and "give its own spec" not in str(refused.value)


def test_a_resume_changed_by_its_options_is_told_to_drop_them(tmp_path):
    """The runtime follow-the-fix audit: `--resume RUN --batch-size 4` was told to resume with
    the run's own spec, which it did; and the API's advice named --set."""
    spec = write_spec(tmp_path)
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, overrides=["train.epochs=1"])
    with pytest.raises(SpecChangeError, match=r"\(train\.batch_size: \d+ -> 4\); resume without "
                       r"the options that change train\.batch_size, or pass allow_changes=True"):
        nnrun.train(tmp_path / "run" / "spec.yaml", resume=tmp_path / "run", quiet=True,
                    batch_size=4)
    with pytest.raises(SpecChangeError, match=r"with overrides='model\.init_from=.*last\.npz' to "
                       "begin from its weights"):
        nnrun.train(spec, resume=tmp_path / "run", quiet=True, overrides=["dtype=float64"])
    # a type set brings its defaults (a cosine's min_lr): still the options' change, not the
    # spec's (the resume field walk: told to resume with the spec it was given)
    with pytest.raises(SpecChangeError, match=r"resume without the options that change "
                       r"optimizer\.schedule\.type, or pass allow_changes=True"):
        nnrun.train(tmp_path / "run" / "spec.yaml", resume=tmp_path / "run", quiet=True,
                    overrides=["optimizer.schedule.type=cosine"])
