"""The random_crop {size, padding} and random_rotation {degrees} augmentations: what they do to
a batch, that they are seeded, and the positioned errors `nnrun validate` gives for them."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.cli import main
from nnrun.runtime.data import DataError, augment_batch
from nnrun.runtime.data.augment import rotate

CROP = {"type": "random_crop", "padding": 2}


def _images(n=6, size=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2, size, size)).astype(np.float32)


def test_random_crop_is_a_window_of_the_zero_padded_sample():
    images = _images()
    cropped = augment_batch(images, [CROP], np.random.default_rng(1))
    assert cropped.shape == images.shape and cropped.dtype == images.dtype
    padded = np.pad(images, [(0, 0), (0, 0), (2, 2), (2, 2)])
    offsets = set()
    for sample, source in zip(cropped, padded):
        found = [(r, c) for r in range(5) for c in range(5)
                 if np.array_equal(source[:, r:r + 6, c:c + 6], sample)]
        assert found, "each crop is one window of the padded sample"
        offsets.add(found[0])
    assert len(offsets) > 1  # the windows move


def test_random_crop_is_seeded_and_works_on_sequences():
    sequences = np.arange(2 * 1 * 8, dtype=np.float64).reshape(2, 1, 8)
    first = augment_batch(sequences, [{"type": "random_crop", "size": 8, "padding": 3}],
                          np.random.default_rng(4))
    again = augment_batch(sequences, [{"type": "random_crop", "size": 8, "padding": 3}],
                          np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    unpadded = augment_batch(sequences, [{"type": "random_crop", "padding": 0}],
                             np.random.default_rng(4))
    np.testing.assert_array_equal(unpadded, sequences)


def test_random_crop_refuses_a_crop_bigger_than_the_padded_sample():
    with pytest.raises(DataError, match="does not fit"):
        augment_batch(_images(), [{"type": "random_crop", "size": 11, "padding": 2}],
                      np.random.default_rng(0))


def test_rotation_by_zero_is_the_identity_and_by_a_right_angle_is_rot90():
    images = _images(n=3, size=5)
    np.testing.assert_allclose(rotate(images, np.zeros(3)), images, atol=1e-6)
    turned = rotate(images, np.full(3, np.pi / 2))
    np.testing.assert_allclose(turned, np.rot90(images, k=-1, axes=(2, 3)), atol=1e-6)


def test_random_rotation_draws_its_angles_from_the_generator():
    images = _images(n=8, size=9)
    turned = augment_batch(images, [{"type": "random_rotation", "degrees": 12}],
                           np.random.default_rng(3))
    angles = np.deg2rad(np.random.default_rng(3).uniform(-12, 12, size=8))
    np.testing.assert_allclose(turned, rotate(images, angles), rtol=1e-6)
    assert not np.allclose(turned, images)
    # A small turn keeps the middle of a smooth image nearly as it was.
    smooth = np.broadcast_to(np.linspace(0, 1, 9), (1, 1, 9, 9)).copy()
    small = augment_batch(smooth, [{"type": "random_rotation", "degrees": 3}],
                          np.random.default_rng(0))
    assert np.abs(small[0, 0, 3:6, 3:6] - smooth[0, 0, 3:6, 3:6]).max() < 0.05


def test_random_rotation_needs_images():
    with pytest.raises(DataError, match="2-D samples"):
        augment_batch(np.zeros((2, 1, 8)), [{"type": "random_rotation"}],
                      np.random.default_rng(0))


SPEC = """\
data:
  dataset: mnist
  augment:
    - {{type: random_rotation, degrees: 10}}
    - {augmentation}
model:
  layers:
    - {{type: flatten}}
    - {{type: dense, units: 10}}
"""


@pytest.mark.parametrize("augmentation, line, col, needle", [
    ("{type: random_crop, size: 36, padding: 2}", 5, 33,
     "random_crop 36x36 is bigger than the padded input (28 + 2*2)x(28 + 2*2) = 32x32"),
    ("{type: random_crop, size: [24, 28], padding: 4}", 5, 33,
     "random_crop 24x28 would train on samples of another shape than the 28x28 test samples"),
    ("{type: random_rotation, degrees: 200}", 5, 40, "must be a number ≤ 180, got 200"),
    ("{type: random_shift, max_shift: 28}", 5, 39,
     "random_shift max_shift 28 can move a sample [1, 28, 28] wholly out of view"),
    # the augmentation audit: a crop's padding moves samples as far (a padding of 100000
    # ended in "out of memory" for its padded batch)
    ("{type: random_crop, padding: 28}", 5, 36,
     "random_crop padding 28 can move a sample [1, 28, 28] wholly out of view (leaving only "
     "the background); use at most 27"),
    ("{type: random_crop, size: 28, padding: 100000}", 5, 46,
     "random_crop padding 100000 can move a sample [1, 28, 28] wholly out of view"),
])
def test_validate_points_at_the_bad_augmentation(tmp_path, augmentation, line, col, needle):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(augmentation=augmentation))
    result = CliRunner().invoke(main, ["validate", str(path), "--format", "json"])
    assert result.exit_code == 1
    (error,) = [d for d in json.loads(result.stdout) if d["severity"] == "error"]
    assert (error["line"], error["col"]) == (line, col), error
    assert needle in error["message"]


def _validate_npz_spec(path: Path, augmentation: str, input_shape: str):
    path.write_text(f"data:\n  dataset: npz\n  path: d.npz\n  augment: [{augmentation}]\n"
                    f"model:\n  input_shape: {input_shape}\n  layers:\n    - {{type: flatten}}\n"
                    "    - {type: dense, units: 3}\n")
    return CliRunner().invoke(main, ["validate", str(path)])


def test_validate_refuses_rotation_of_sequences(tmp_path):
    path = tmp_path / "spec.yaml"
    result = _validate_npz_spec(path, "random_rotation", "[1, 40]")
    assert result.exit_code == 1 and "random_rotation turns 2-D samples" in result.stderr
    assert f"{path}:4:" in result.stderr
    path.write_text(path.read_text().replace("[1, 40]", "[40]"))  # vectors: the same need
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert "random_rotation needs 2-D samples [C, H, W], these are [40]" in result.stderr
    assert "[C, L]" not in result.stderr


def test_training_with_crop_and_rotation_is_reproducible(tmp_path):
    pytest.importorskip("sklearn")
    text = """
data:
  dataset: digits
  limit: 200
  validation_split: 0.2
  augment: [{type: random_crop, size: 8, padding: 1}, {type: random_rotation, degrees: 10}]
model:
  layers: [{type: flatten}, {type: dense, units: 10}]
train: {epochs: 2, batch_size: 50}
"""
    runs = [nnrun.train(nnrun.load_spec_text(text), out_dir=tmp_path / name, quiet=True)
            for name in ("a", "b")]
    assert runs[0]["final"]["val_loss"] == runs[1]["final"]["val_loss"]
    plain = nnrun.train(nnrun.load_spec_text(text.replace("augment:", "augment: []\n  #")),
                        out_dir=tmp_path / "plain", quiet=True)
    assert plain["final"]["val_loss"] != runs[0]["final"]["val_loss"]


def test_train_refuses_a_bad_crop_at_its_position_before_training(tmp_path):
    pytest.importorskip("sklearn")
    spec = tmp_path / "crop.yaml"
    spec.write_text("data:\n  dataset: digits\n  augment: [{type: random_crop, size: 12, "
                    "padding: 1}]\nmodel:\n  layers: [{type: flatten}, {type: dense, units: 10}]\n")
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{spec}:3:39: error: data.augment[0]: random_crop 12x12 is bigger")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_shift_of_samples_with_an_axis_of_size_one_is_refused_without_an_impossible_fix(
        tmp_path):
    result = _validate_npz_spec(tmp_path / "spec.yaml", "random_shift", "[1, 1, 8]")
    assert result.exit_code == 1 and "an axis of size 1 shows nothing" in result.stderr
    assert "at most 0" not in result.stderr


# --- the background moved in ------------------------------------------------------------------

MOVING = [{"type": "random_shift", "max_shift": 2}, {"type": "random_crop", "padding": 2},
          {"type": "random_rotation", "degrees": 30}]


@pytest.mark.parametrize("augmentation", MOVING, ids=[a["type"] for a in MOVING])
def test_pixels_moved_in_from_outside_hold_the_background(augmentation):
    """The course audit: after `normalize: standard` the fill was 0, the mean: a grey frame
    around digits whose background is -0.81. A sample of background stays background, and a
    bright pixel moves over background, channel by channel."""
    background = np.array([-0.8, 1.5], np.float32).reshape(1, 2, 1, 1)
    blank = np.broadcast_to(background, (32, 2, 8, 8)).copy()
    moved = augment_batch(blank, [augmentation], np.random.default_rng(0), background)
    np.testing.assert_allclose(moved, blank, atol=1e-6)
    dotted = blank.copy()
    dotted[:, :, 3:5, 3:5] = 5.0
    moved = augment_batch(dotted, [augmentation], np.random.default_rng(0), background)
    plain = augment_batch(dotted - background, [augmentation], np.random.default_rng(0))
    np.testing.assert_allclose(moved, plain + background, atol=1e-5)
    assert (moved[:, 0] < 5.01).all() and (moved[:, 0] > -0.81).all()
    assert not np.array_equal(moved, dotted)  # it did move


@pytest.mark.parametrize("augmentation", MOVING[:2], ids=[a["type"] for a in MOVING[:2]])
def test_pixels_that_move_keep_their_values_beside_a_far_background(augmentation):
    """The augmentation audit: x - background + background in float32 rounded every pixel
    to the background's scale (0.031 for a background of -1e6): each moved pixel is one of
    the sample's, exactly, and each one brought in is the background."""
    background = np.array([-1e6, 3.0], np.float32).reshape(1, 2, 1, 1)
    x = np.random.default_rng(0).standard_normal((16, 2, 6, 6)).astype(np.float32)
    moved = augment_batch(x, [augmentation], np.random.default_rng(1), background)
    for sample, out in zip(x, moved):
        for channel in range(2):
            kept = np.isin(out[channel], sample[channel])
            assert (kept | (out[channel] == background[0, channel])).all()
            assert kept.sum() >= 4 * 4  # a move of at most 2 keeps a 4x4 of the 6x6


def test_the_background_is_a_raw_zero_after_preprocessing():
    spec = nnrun.load_spec_text("data: {dataset: digits, normalize: standard}\n"
                                "model: {layers: [{type: flatten}, {type: dense, units: 10}]}\n")
    from nnrun.runtime.data import load_dataset

    data = load_dataset(spec.spec.data, spec_dir=Path("."), seed=0)
    zero = data.preprocessing.apply(np.zeros((1, 1, 8, 8)), "float32")
    np.testing.assert_allclose(np.broadcast_to(data.background(), zero.shape), zero, rtol=1e-6)
    assert data.train.x.min() == pytest.approx(float(np.min(data.background())), rel=1e-6)
