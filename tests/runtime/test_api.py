"""The Python API of DESIGN.md section 7."""

from pathlib import Path

import numpy as np

import nnrun
from nnrun.runtime.evaluate import evaluate_run

QUICKSTART = Path(__file__).resolve().parents[2] / "specs" / "quickstart.yaml"


def test_compile_accepts_a_path_a_spec_and_a_source_with_overrides():
    source = nnrun.load_spec(QUICKSTART)
    for given in (QUICKSTART, str(QUICKSTART), source, source.spec):
        model = nnrun.compile(given, overrides=["model.layers[0].filters=4"])
        assert model.param_infos["conv2d_1.weight"].shape == (4, 1, 3, 3)


def test_forward_returns_numpy_outputs_and_grads_cover_every_parameter():
    model = nnrun.compile(QUICKSTART)
    params = model.init_params(seed=3)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8))
    outputs = model.forward(params, x)
    assert isinstance(outputs, np.ndarray) and outputs.shape == (5, 10)
    loss, grads = model.loss_and_grads(params, x, np.arange(5))
    assert np.isfinite(loss) and set(grads) == set(params)


def test_init_params_is_seeded():
    model = nnrun.compile(QUICKSTART)
    first, again, other = model.init_params(1), model.init_params(1), model.init_params(2)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["dense_1.weight"], other["dense_1.weight"])


def test_train_from_a_spec_object_writes_a_run_that_eval_can_read(tmp_path):
    spec = nnrun.load_spec(QUICKSTART).spec
    summary = nnrun.train(spec, out_dir=tmp_path / "run", quiet=True,
                          overrides=["train.epochs=1", "data.limit=300"])
    assert summary["epochs_run"] == 1
    result = evaluate_run(tmp_path / "run", split="test")
    assert result["test_accuracy"] == summary["final"]["test_accuracy"]


def test_train_starts_from_init_params_of_the_spec_seed(tmp_path):
    model = nnrun.compile(QUICKSTART, overrides=["train.epochs=1"])
    expected = model.init_params(model.spec.seed)
    from nnrun.runtime.train import Trainer

    trainer = Trainer(model.source, "numpy", quiet=True)
    state = trainer.initial_state()
    assert all(np.array_equal(state[k], v) for k, v in expected.items())
