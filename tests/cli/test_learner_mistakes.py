"""The mistakes learners make in their first specs and commands (an audit collected 110): each
is told where it is and the fix to write, which works when applied as written."""

from __future__ import annotations

import numpy as np
import pytest

from invoking import assert_ok, assert_one_line_error, invoke

DIGITS = "data: {dataset: digits}\nmodel:\n  layers:\n    - {type: flatten}\n"


def write(path, text: str):
    path.write_text(text)
    return path


def only_error(tmp_path, text: str) -> str:
    spec = write(tmp_path / "s.yaml", text)
    return assert_one_line_error(invoke("validate", spec), spec)


@pytest.mark.parametrize("line, fix", [
    ("    - {type: dense, units: 10, in_features: 64}",
     "nnrun infers a layer's inputs from the layer before it: remove it"),
    ("    - {type: dense, units: 10, dropout: 0.5}",
     "add - {type: dropout, rate: 0.5} after this layer"),
])
def test_pytorch_and_keras_fields_say_what_nnrun_does_instead(tmp_path, line, fix):
    assert fix in only_error(tmp_path, DIGITS + line + "\n")


def test_a_section_indented_under_another_is_told_to_start_its_line(tmp_path):
    text = DIGITS + "    - {type: dense, units: 10}\ntrain:\n  epochs: 2\n  loss: mse\n"
    assert "loss is a section of its own: write it at the start of a line, not under train" \
        in only_error(tmp_path, text)


def test_from_logits_says_the_loss_reads_scores(tmp_path):
    text = DIGITS + ("    - {type: dense, units: 10}\n"
                     "loss: {type: cross_entropy, from_logits: true}\n")
    assert "sigmoid before cross-entropy is fused into the loss): remove it" \
        in only_error(tmp_path, text)


@pytest.mark.parametrize("value, fix", [("0,01", "decimal point: write 0.01"),
                                        ("10%", "write the fraction: 0.1")])
def test_numbers_written_as_people_write_them_are_told_the_yaml(tmp_path, value, fix):
    text = DIGITS + f"    - {{type: dense, units: 10}}\noptimizer: {{type: sgd, lr: '{value}'}}\n"
    assert fix in only_error(tmp_path, text)


@pytest.mark.parametrize("field, value, fix", [("units", "'10'", "without quotes: 10"),
                                               ("units", "'010'", "without quotes: 10"),
                                               ("use_bias", "'false'", "without quotes: false"),
                                               ("use_bias", "'True'", "without quotes: true")])
def test_a_value_in_quotes_is_told_to_drop_them(tmp_path, field, value, fix):
    """The spec-reference walk: `units: '10'` was "must be an integer, got '10'", no fix."""
    text = DIGITS + f"    - {{type: dense, units: 10, {field}: {value}}}\n"
    if field == "units":
        text = DIGITS + f"    - {{type: dense, units: {value}}}\n"
    assert only_error(tmp_path, text).endswith(f"; write it {fix}")


def test_a_kernel_size_in_quotes_is_told_to_drop_them(tmp_path):
    text = ("data: {dataset: digits}\nmodel:\n  layers:\n"
            "    - {type: conv2d, filters: 2, kernel_size: '3'}\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    assert only_error(tmp_path, text).endswith("got '3'; write it without quotes: 3")


def test_list_items_without_their_dashes_are_told_to_begin_with_one(tmp_path):
    text = "data: {dataset: digits}\nmodel:\n  layers:\n    {type: flatten}\n" \
           "    {type: dense, units: 10}\n"
    line = only_error(tmp_path, text)
    assert line.endswith("for a list, begin each item with '- '") and ":5:5:" in line


def test_class_names_as_labels_are_told_how_to_number_them(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 2), np.float32), y=np.array(list("abcabc")))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model: {layers: [{type: dense, units: 3}]}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith("with classes = numpy.unique(numpy.concatenate([y, y_test, y_val])) "
                         "(the splits the file holds), save numpy.searchsorted(classes, y) "
                         "as y (and so y_test, y_val)")


def test_an_option_that_is_a_spec_field_is_told_to_set_it(tmp_path):
    spec = write(tmp_path / "s.yaml", DIGITS + "    - {type: dense, units: 10}\n")
    result = invoke("train", spec, "--lr", "0.1")
    assert result.exit_code == 2 and "a spec's fields are set with --set, as --set " \
        "optimizer.lr=VALUE" in result.stderr  # click offered '--help'


def test_the_latest_run_is_the_last_written_whatever_its_name(tmp_path):
    """The export audit: runs sorted by name made zz_first "the latest" beside aa_second,
    trained after it (only time-stamped names sort by age)."""
    import os

    spec = write(tmp_path / "s.yaml", "data: {dataset: xor}\nmodel: {layers: [{type: dense, "
                 "units: 2}]}\ntrain: {epochs: 1}\n")
    runs = tmp_path / "runs"
    for name, written in (("zz_first", 1_000_000), ("aa_second", 2_000_000)):
        assert_ok(invoke("train", spec, "--out", runs / name, "--quiet"))
        for path in (runs / name).iterdir():
            os.utime(path, (written, written))
    line = assert_one_line_error(invoke("eval", runs), runs)
    assert f"give {runs / 'aa_second'} (the latest), or the other one in it" in line


def test_a_parent_of_runs_and_a_runs_spec_point_at_the_run(tmp_path):
    spec = write(tmp_path / "s.yaml", "data: {dataset: xor}\nmodel: {layers: [{type: dense, "
                 "units: 2}]}\ntrain: {epochs: 1}\n")
    runs = tmp_path / "runs"
    assert_ok(invoke("train", spec, "--out", runs / "a", "--quiet"))
    (runs / "b").mkdir()  # a run stopped before its first checkpoint: nothing to read
    (runs / "b" / "spec.yaml").write_text(spec.read_text())
    line = assert_one_line_error(invoke("eval", runs), runs)
    assert f"give {runs / 'a'} (the latest with a checkpoint)" in line
    line = assert_one_line_error(invoke("train", spec, "--resume", runs), runs)
    assert f"give {runs / 'a'} (the latest with a checkpoint)" in line
    result = invoke("eval", runs / "a" / "spec.yaml")
    assert result.exit_code == 2 and f"is the spec of the run {runs / 'a'}; give the run " \
        f"directory itself, {runs / 'a'}" in result.stderr


def test_mnist_data_path_above_the_datasets_directory_names_the_one_to_give(tmp_path,
                                                                            monkeypatch):
    from nnrun.runtime.data import DataError, load_dataset
    from nnrun.runtime.data.locations import IDX_FILES

    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for base in IDX_FILES.values():
        (tmp_path / "data" / "mnist" / f"{base}.gz").write_bytes(b"")
    spec = type("Data", (), {"dataset": "mnist", "path": "data"})()
    with pytest.raises(DataError) as raised:
        load_dataset(spec, spec_dir=tmp_path, seed=0)
    assert str(raised.value).endswith(f"are in {tmp_path / 'data' / 'mnist'}: set data.path to "
                                      "data/mnist")


@pytest.mark.parametrize("field, fix", [
    ("train: {epochs: '1,000'}", "write it without the thousands separator: 1000"),
    ("optimizer: {type: sgd, lr: '1,000'}", "write 1000, or 1.000 if the comma is a decimal"),
    ("model: {input_shape: [4], layers: [{type: dense, units: '10%'}]}", None),
])
def test_separators_in_integers_and_numbers_are_told_apart(tmp_path, field, fix):
    """The review: '1,000' epochs were told to write 1.000, which validate took as 1."""
    text = ("data: {dataset: xor}\nmodel: {input_shape: [2], layers: [{type: dense, units: 2}]}\n"
            if not field.startswith("model") else "data: {dataset: xor}\n") + field + "\n"
    line = only_error(tmp_path, text)
    if fix is None:
        assert "fraction" not in line and "write" not in line
    else:
        assert fix in line


@pytest.mark.parametrize("text, fix", [
    ("loss: {type:mse}", "YAML reads 'type:mse' as one key: write a space after the colon "
                         "(type: mse)"),
    # a no-break space after the colon, as block mappings are told (the mutation fuzz)
    ("loss: {type:\u00a0mse}", "YAML reads 'type:\\xa0mse' as one key: a no-break space "
                              "(U+00A0) follows the colon where YAML needs a space: write a "
                              "plain space (type: mse)"),
    # two of them, or a dash: all of it named and left out (the review)
    ("loss: {type:\u00a0\u00a0mse}", "follows the colon where YAML needs a space: write a "
                                     "plain space (type: mse)"),
    ("optimizer: {type:\u2013sgd}", "an en dash (U+2013) follows the colon where YAML needs a "
                                   "space: write a plain space (type: sgd)"),
    ("optimizer: Adam(0.001)", "an optimizer is a mapping, not a call: write {type: adam, ...}"),
    ("model:\n  layers:\n    - {type: dense, units: 2, activation: {type: none}}",
     "unknown activation 'none'; expected one of"),
])
def test_review_of_the_learners_hints(tmp_path, text, fix):
    """Hints that did not fit: {type:mse} told 'did you mean type', Adam(0.001) 'a layer is a
    mapping', and {type: none} 'did you mean none' (`none` is a name, not a type)."""
    base = "data: {dataset: xor}\nmodel:\n  layers:\n    - {type: dense, units: 2}\n"
    spec_text = base + text + "\n" if not text.startswith("model") else \
        "data: {dataset: xor}\n" + text + "\n"
    assert fix in only_error(tmp_path, spec_text)


def test_section_and_dropout_hints_fit_where_they_fire(tmp_path):
    base = "data: {dataset: xor}\nmodel:\n  layers:\n    - {type: dense, units: 2, dropout: 0.2}\n"
    assert "add - {type: dropout, rate: 0.2} after this layer" in only_error(tmp_path, base)
    twice = base.replace(", dropout: 0.2", "") + "loss: mse\ntrain: {loss: mse}\n"
    assert "loss is a section of its own, given at the top already: remove this one" \
        in only_error(tmp_path, twice)
    seed = base.replace("dropout: 0.2", "seed: 3")
    assert only_error(tmp_path, seed).endswith("error: model.layers[0]: unknown field 'seed'")


def test_fourth_review_of_the_hints(tmp_path):
    """0,001 was offered the thousands reading 0001 first (octal 1 to YAML 1.1); seed under
    train lost its hint; a dropout field of 50 was copied as the layer's rate; an option click
    loosely matched to another (--dataset to --set) lost the --set hint."""
    base = "data: {dataset: xor}\nmodel: {input_shape: [2], layers: [{type: dense, units: 2}]}\n"
    line = only_error(tmp_path, base + "optimizer:\n  type: sgd\n  lr: 0,001\n")
    assert line.endswith("YAML numbers take a decimal point: write 0.001")
    line = only_error(tmp_path, base + "train: {epochs: 2, seed: 3}\n")
    assert line.endswith("seed is a field of the spec's top level: write it at the start of a "
                         "line, not under train")
    line = only_error(tmp_path, base.replace("units: 2}", "units: 2, dropout: 50}"))
    assert "add - {type: dropout, rate: 0.5} after this layer" in line
    spec = write(tmp_path / "t.yaml", base)
    result = invoke("train", spec, "--dataset", "mnist")
    assert result.exit_code == 2 and "as --set data.dataset=VALUE" in result.stderr
    result = invoke("train", spec, "--batch_size", "3")
    assert "Did you mean '--batch-size'?" in result.stderr
