"""An epoch's step scalars (rate, step count, dropout key) go to the backend at its start
(runtime/step_scalars.py): the training loop's steps are the steps one at a time would be, the
keys drawn from the epoch's generator after its shuffle, in the steps' order."""

from __future__ import annotations

import numpy as np

import nnrun
from nnrun.runtime.model import Model
from nnrun.runtime.schedules import learning_rate
from nnrun.runtime.step_scalars import StepScalars
from nnrun.runtime.train import epoch_batches

SPEC = """
seed: 3
data: {dataset: npz, path: d.npz, validation_split: 0, normalize: none}
model:
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dropout, rate: 0.5}
    - {type: dense, units: 3}
optimizer: {type: adam, lr: 0.01, schedule: {type: cosine, warmup_epochs: 1}}
train: {epochs: 2, batch_size: 8}
"""


def _run_and_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 5)).astype(np.float32), rng.integers(0, 3, 30)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    trained = dict(np.load(tmp_path / "run" / "last.npz"))

    model = Model(nnrun.compile(str(spec)).source, "numpy")
    state, step = model.train_state(), 0
    for epoch in (1, 2):
        epoch_rng, batches = epoch_batches(model.spec, len(x), epoch)
        for index, batch in enumerate(batches):
            step += 1
            lr = learning_rate(model.spec.optimizer, epoch - 1, index, len(batches), 2)
            feeds = model.step_feeds(state, x[batch], y[batch], lr, step,
                                     int(epoch_rng.integers(2**63)))
            state.update(model.step_executor.run(feeds)[1])
    return trained, {name: state[name] for name in model.lowered.params}


def test_an_epochs_steps_are_the_steps_one_at_a_time(tmp_path):
    trained, by_hand = _run_and_by_hand(tmp_path)
    for name, value in by_hand.items():
        np.testing.assert_array_equal(trained[f"params/{name}"], value, err_msg=name)


def test_a_steps_scalars_are_views_of_the_epochs():
    backend = nnrun.backends.get_backend("numpy")
    scalars = StepScalars(backend, "float32", 4, [0.1, 0.2, 0.3], 11, [5, 2**63 - 1, 7],
                          [0, 8, 16])
    feeds = scalars.feeds(5)
    assert scalars.lr(5) == 0.2 and float(feeds["lr"]) == np.float32(0.2)
    assert float(feeds["step"]) == 12 and feeds["step"].shape == ()
    assert feeds["rng"].tolist() == [2**32 - 1, 2**31 - 1, 8]
    assert all(np.shares_memory(feeds[name], scalars.arrays[name]) for name in feeds)


def test_an_epoch_of_no_steps_has_keys_of_the_keys_dtype():
    scalars = StepScalars(nnrun.backends.get_backend("numpy"), "float64", 0, [], 1, [], [])
    assert scalars.arrays["rng"].dtype == np.uint32 and scalars.arrays["rng"].shape == (0, 3)
