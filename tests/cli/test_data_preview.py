"""`nnrun data preview SPEC --out grid.png` (nnrun/preview.py): a PNG grid of training samples
and their augmented draws; without matplotlib, one line naming the `plot` extra."""

import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from invoking import invoke

from nnrun.cli import main

pytest.importorskip("sklearn")  # the digits dataset

SPEC = """\
name: digits-augmented
data:
  dataset: digits
  augment:
    - {type: random_crop, padding: 1}
    - {type: random_rotation, degrees: 15}
    - {type: gaussian_noise, std: 0.2}
model:
  layers: [{type: flatten}, {type: dense, units: 10}]
"""


def _preview(tmp_path, text=SPEC, *extra):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["data", "preview", str(spec), "--out", str(out), *extra])
    return result, out


def test_preview_writes_a_grid_of_augmented_samples(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    result, out = _preview(tmp_path, SPEC, "--samples", "3", "--draws", "4")
    assert result.exit_code == 0, result.output
    assert "3 training samples x 4 draws" in result.stdout
    pixels = image.imread(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400  # 3 rows, 5 columns of images
    grey = pixels[..., :3].mean(axis=-1)
    assert grey.std() > 0.1 and (grey < 0.2).mean() > 0.1  # dark images on white, not blank
    (tmp_path / "again").mkdir()
    _, second = _preview(tmp_path / "again", SPEC, "--samples", "3", "--draws", "4")
    np.testing.assert_array_equal(image.imread(second), pixels)  # seeded: the same picture


def test_preview_of_sequences(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "waves.npz", x=rng.standard_normal((20, 2, 30)), y=rng.integers(0, 3, 20))
    text = ("data:\n  dataset: npz\n  path: waves.npz\n  augment: [{type: random_shift, "
            "max_shift: 3}]\nmodel:\n  input_shape: [2, 30]\n  layers: [{type: flatten}, "
            "{type: dense, units: 3}]\n")
    result, out = _preview(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000


def test_preview_of_vectors_of_one_value_prints_no_warning(tmp_path):
    """A sample [0, 0] (AND's first) set matplotlib's y-range to nothing: a UserWarning with a
    source path on stderr."""
    pytest.importorskip("matplotlib")
    np.savez(tmp_path / "and.npz", x=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32),
             y=np.array([0, 0, 0, 1]))
    text = ("data:\n  dataset: npz\n  path: and.npz\n  normalize: none\n  augment: "
            "[{type: gaussian_noise, std: 0.1}]\nmodel:\n  input_shape: [2]\n  layers: "
            "[{type: dense, units: 1, activation: sigmoid}]\nloss: binary_cross_entropy\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pytest would otherwise collect it, not print it
        result, out = _preview(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and out.stat().st_size > 5_000


def test_without_matplotlib_one_line_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result, out = _preview(tmp_path)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'nnrun[plot]'" in lines[0]
    assert not out.exists()


def test_preview_errors_are_one_line(tmp_path):
    pytest.importorskip("matplotlib")
    no_data = "model:\n  input_shape: [4]\n  layers: [{type: dense, units: 2}]\n"
    result, _ = _preview(tmp_path, no_data)
    assert result.exit_code == 1 and \
        "spec.yaml:1:1: error: data: a preview needs a data section" in result.stderr
    spec = tmp_path / "spec.yaml"
    missing_dir = tmp_path / "nowhere" / "grid.png"
    result = CliRunner().invoke(main, ["data", "preview", str(spec), "--out", str(missing_dir)])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_augmentations_that_training_refuses_are_not_previewed(tmp_path):
    """A 6x6 crop of 8x8 digits: train refuses it (test samples keep 8x8), preview drew it."""
    pytest.importorskip("matplotlib")
    result, out = _preview(tmp_path, SPEC.replace("{type: random_crop, padding: 1}",
                                                  "{type: random_crop, size: 6, padding: 1}"))
    assert result.exit_code == 1, result.output
    assert "random_crop 6x6 would train on samples of another shape" in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_moves_that_an_npz_of_label_maps_would_miss_are_not_previewed(tmp_path):
    """The augmentation audit: train refused random_shift beside an npz's label maps (which
    only the loaded file tells), preview drew it."""
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "maps.npz", x=rng.standard_normal((20, 1, 8, 8)),
             y=rng.integers(0, 3, (20, 8, 8)))
    text = ("data:\n  dataset: npz\n  path: maps.npz\n  augment: [{type: random_shift, "
            "max_shift: 2}]\nmodel:\n  input_shape: [1, 8, 8]\n  layers: [{type: conv2d, "
            "filters: 3, kernel_size: 3, padding: same}]\n")
    result, out = _preview(tmp_path, text)
    assert result.exit_code == 1, result.output
    assert result.stderr.endswith("random_shift would move the pixels but not the label maps; "
                                  "remove it (gaussian_noise keeps them aligned)\n")
    assert not out.exists()


def test_the_colour_scale_spans_the_draws_so_the_background_shows(tmp_path, monkeypatch):
    """Constant images turned by 180 degrees: the corners moved in hold the background, below
    the sample's own range, and were clipped to its colour."""
    pytest.importorskip("matplotlib")
    from nnrun import preview

    np.savez(tmp_path / "flat.npz", x=np.full((6, 1, 8, 8), 5.0, np.float32),
             y=np.arange(6) % 2)
    text = ("data:\n  dataset: npz\n  path: flat.npz\n  normalize: scale\n  augment: "
            "[{type: random_rotation, degrees: 180}]\nmodel:\n  input_shape: [1, 8, 8]\n  "
            "layers: [{type: flatten}, {type: dense, units: 2}]\n")
    ranges = []
    real_draw = preview._draw
    monkeypatch.setattr(preview, "_draw", lambda axis, sample, low, high: (
        ranges.append((float(sample.min()), low, high)), real_draw(axis, sample, low, high)))
    result, _ = _preview(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert all(low <= smallest for smallest, low, _ in ranges)
    assert any(low < high for _, low, high in ranges)  # the background below the flat sample


def test_a_label_map_is_named_by_its_shape_and_classes():
    """The datasets audit: a row of the FCN spec's preview was labelled with its whole label
    map, 3,142 characters running off the figure."""
    import numpy as np

    from nnrun.preview import _label

    labels = np.zeros((32, 32), np.int64)
    labels[3:9, 4:8] = 3
    assert _label(labels) == "map [32, 32]: 0, 3"
    assert _label(np.arange(10).reshape(2, 5)) == "map [2, 5]: 0, 1, 2, 3, 4, 5, ..."
    assert _label(np.float32(2.0)) == "2" and _label(np.array([0.5, 1.0])) == "[0.5, 1.0]"


def test_images_of_two_or_four_channels_show_every_channel_side_by_side(tmp_path, monkeypatch):
    """Only the first of two channels was drawn; RGB stays one colour image."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    shown = []
    real_imshow = Axes.imshow
    monkeypatch.setattr(Axes, "imshow", lambda axis, image, **kw: (
        shown.append(np.asarray(image)), real_imshow(axis, image, **kw))[1])
    for channels in (2, 3, 4):
        shown.clear()
        x = np.stack([np.full((4, 5, 6), c, np.float32) for c in range(channels)], axis=1)
        np.savez(tmp_path / "x.npz", x=x, y=np.arange(4) % 2)
        text = (f"data: {{dataset: npz, path: x.npz, normalize: none}}\nmodel:\n  input_shape: "
                f"[{channels}, 5, 6]\n  layers: [{{type: flatten}}, {{type: dense, units: 2}}]\n")
        result, _ = _preview(tmp_path, text, "--samples", "1", "--draws", "1")
        assert result.exit_code == 0, result.output
        image = shown[0]
        if channels == 3:
            assert image.shape == (5, 6, 3)
        else:  # the channels left to right, one blank column between them
            assert image.shape == (5, 6 * channels + channels - 1)
            for c in range(channels):
                assert (image[:, 7 * c:7 * c + 6] == c).all()
            assert np.isnan(image[:, 6]).all()


def test_a_dataset_preview_downloads_is_said_as_train_says_it(tmp_path, monkeypatch):
    """The CLI audit: preview fetched missing mnist files (as train does) without the note
    train prints first: its collected warnings took the note too."""
    from nnrun.runtime.data import fetch

    monkeypatch.setenv("NNRUN_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(fetch.MIRRORS, "mnist", ("http://127.0.0.1:9/",))
    spec = tmp_path / "m.yaml"
    spec.write_text("data: {dataset: mnist, augment: [{type: random_shift}]}\n"
                    "model: {layers: [{type: flatten}, {type: dense, units: 10}]}\n")
    result = invoke("data", "preview", spec, "--out", tmp_path / "grid.png")
    assert result.exit_code == 1
    assert "downloading it into" in result.stderr and "the download failed" in result.stderr
