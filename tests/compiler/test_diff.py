"""`nnrun diff A B` (issue 13): layers aligned by name then by position, what changed in shapes,
parameters and FLOPs, the totals with training memory, final metrics of runs; text, JSON and
GitHub-flavoured markdown."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from nnrun.compiler.diff import (Side, align, diff, diff_json, diff_markdown, diff_text,
                                 layer_memory, layer_settings, spec_settings)
from nnrun.compiler.frontend import check, compile_checked, load_spec_text
from invoking import invoke

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
model:
  input_shape: [1, 12, 12]
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: flatten}
    - {type: dense, units: 10}
"""


def side(text: str, label: str = "spec.yaml", metrics=None) -> Side:
    source = load_spec_text(text)
    memory = layer_memory(*compile_checked(source), source.spec.train.batch_size)
    return Side(label, check(source).summary, metrics, memory, spec_settings(source),
                source.spec, layer_settings(source))


def statuses(a: str, b: str) -> list[tuple]:
    return [(c.status, c.a and c.a.name, c.b and c.b.name) for c in diff(side(a), side(b)).layers]



def test_identical_specs_are_unchanged_everywhere():
    result = diff(side(BASE), side(BASE))
    assert [c.status for c in result.layers] == ["unchanged"] * 4
    assert all(a == b for a, b in result.totals.values())


def test_a_changed_layer_names_what_changed():
    wider = BASE.replace("filters: 4", "filters: 8")
    result = diff(side(BASE), side(wider))
    conv, pool, flatten, dense = result.layers
    assert conv.status == "changed"
    assert conv.changes == ["output shape", "kernel", "params", "FLOPs", "memory"]
    assert (conv.a.params, conv.b.params) == (40, 80)
    assert pool.changes == ["output shape", "memory"]
    assert dense.changes == ["kernel", "params", "FLOPs", "memory"]
    assert flatten.changes == ["output shape"]  # a view: no memory of its own
    params_a, params_b = result.totals["total_params"]
    assert params_b - params_a == sum(c.b.params - c.a.params for c in result.layers)
    memory_a, memory_b = result.totals["train_memory_bytes"]
    assert memory_b > memory_a > 0


def test_a_layers_memory_is_its_parameters_state_and_output():
    """float32, batch 32, sgd with momentum: weights, gradients and one momentum buffer per
    parameter value, the output for the batch; flatten and dropout are views."""
    text = BASE.replace("    - {type: flatten}",
                        "    - {type: flatten}\n    - {type: dropout, rate: 0.5}")
    text += "optimizer: {type: sgd, lr: 0.1, momentum: 0.9}\ntrain: {epochs: 1, batch_size: 32}\n"
    memory = side(text).layer_memory
    assert memory["conv2d_1"] == (40 * 3 + 4 * 10 * 10 * 32) * 4
    assert memory["maxpool2d_1"] == 4 * 5 * 5 * 32 * 4
    assert memory["flatten_1"] == memory["dropout_1"] == 0
    assert memory["dense_1"] == ((100 * 10 + 10) * 3 + 10 * 32) * 4


@pytest.mark.parametrize("pool", ["global_avgpool", "global_maxpool"])
def test_a_global_pool_holds_its_output_though_it_ends_in_a_reshape(pool):
    """It lowers to a pool and a reshape of the pool's own output, and was given 0 bytes as
    if it were a view, as flatten is."""
    text = BASE.replace("{type: maxpool2d, pool_size: 2}", f"{{type: {pool}}}")
    text += "train: {epochs: 1, batch_size: 32}\n"
    memory = side(text).layer_memory
    assert memory[f"{pool}_1"] == 4 * 32 * 4
    assert memory["flatten_1"] == 0


def test_an_inserted_layer_is_added_and_the_rest_stay_aligned():
    inserted = BASE.replace("    - {type: maxpool2d",
                            "    - {type: batchnorm}\n    - {type: maxpool2d")
    assert statuses(BASE, inserted) == [
        ("unchanged", "conv2d_1", "conv2d_1"), ("added", None, "batchnorm_1"),
        ("unchanged", "maxpool2d_1", "maxpool2d_1"), ("unchanged", "flatten_1", "flatten_1"),
        ("unchanged", "dense_1", "dense_1")]


def test_a_removed_layer_is_removed_even_when_default_names_shift():
    """Removing the first of two dense layers renames the second (dense_2 -> dense_1): the
    names nnrun gave are no anchors, the output shapes pair the layers."""
    two = BASE.replace("    - {type: dense, units: 10}",
                       "    - {type: dense, units: 32}\n    - {type: dense, units: 10}")
    pairs = statuses(two, BASE)
    assert ("removed", "dense_1", None) in pairs
    assert ("renamed", "dense_2", "dense_1") in pairs


@pytest.mark.parametrize("before, inserted", [
    ("    - {type: flatten}", "    - {type: conv2d, filters: 2, kernel_size: 1}\n"),
    ("    - {type: conv2d", "    - {type: conv2d, filters: 1, kernel_size: 1}\n"),
])
def test_a_layer_inserted_beside_one_of_its_type_leaves_that_one_paired(before, inserted):
    """Default names shift (conv2d_1 becomes conv2d_2): a name is no anchor then, and the
    layer that was there stays paired with itself, the new one added."""
    grown = BASE.replace(before, inserted + before)
    changes = {(c.a and c.a.name, c.b and c.b.name): c for c in
               align(side(BASE).summary.layers, side(grown).summary.layers)}
    added = [c for c in changes.values() if c.status == "added"]
    assert len(added) == 1 and added[0].b.type == "conv2d"
    original = next(c for c in changes.values() if c.a and c.a.type == "conv2d")
    assert original.b is not None and original.b.output_shape == original.a.output_shape


def test_an_edit_with_a_layer_of_its_old_fields_after_it_reads_as_documented_unless_named():
    """The CI audit: a conv2d given padding_mode reflect, with a conv2d of its old fields
    inserted after it, paired with the inserted one (the edit shown as an added layer): it
    reads the same as a layer inserted before an unchanged one, which the diff shows (cli.md);
    names pair them as meant."""
    base = BASE.replace("activation: relu}", "activation: relu, padding: same}")
    edited = base.replace("padding: same}", "padding: same, padding_mode: reflect}\n    - {type: "
                          "conv2d, filters: 4, kernel_size: 3, activation: relu, padding: same}")
    assert statuses(base, edited)[:2] == [("added", None, "conv2d_1"),
                                          ("renamed", "conv2d_1", "conv2d_2")]
    named_base = base.replace("{type: conv2d,", "{type: conv2d, name: stem,")
    named_edit = edited.replace("{type: conv2d,", "{type: conv2d, name: stem,", 1)
    assert statuses(named_base, named_edit)[:2] == [("changed", "stem", "stem"),
                                                    ("added", None, "conv2d_2")]


def test_a_renamed_layer_pairs_by_position():
    renamed = BASE.replace("{type: conv2d,", "{name: features, type: conv2d,")
    result = diff(side(BASE), side(renamed))
    assert result.layers[0].status == "renamed"
    assert (result.layers[0].a.name, result.layers[0].b.name) == ("conv2d_1", "features")
    assert result.layers[0].changes == ["name"]  # as the text's "what changed" says (JSON: [])


def test_a_retyped_layer_is_removed_and_added():
    retyped = BASE.replace("maxpool2d", "avgpool2d")
    assert statuses(BASE, retyped)[1:3] == [("removed", "maxpool2d_1", None),
                                            ("added", None, "avgpool2d_1")]


RESIDUAL = """\
model:
  input_shape: [2, 6, 6]
  layers:
    - {name: a, type: conv2d, filters: 2, kernel_size: 3, padding: same}
    - {name: b, type: conv2d, filters: 2, kernel_size: 3, padding: same}
    - {name: sum, type: add, inputs: [a, b]}
loss: mse
"""


def test_rewired_multi_input_layers_show_their_inputs():
    rewired = RESIDUAL.replace("inputs: [a, b]", "inputs: [input, b]")
    (change,) = [c for c in diff(side(RESIDUAL), side(rewired)).layers if c.b.name == "sum"]
    assert change.changes == ["inputs"]


def test_a_layer_that_reads_another_layer_is_changed_and_says_which():
    """A bypassed activation leaves every shape and count as it was: only the wiring says it."""
    wired = BASE.replace("{type: conv2d,", "{name: stem, type: conv2d,").replace(
        "activation: relu}", "}\n    - {name: act, type: relu}")
    bypassed = wired.replace("{type: maxpool2d,", "{type: maxpool2d, inputs: stem,")
    result = diff(side(wired), side(bypassed))
    (pool,) = [c for c in result.layers if c.b.type == "maxpool2d"]
    assert pool.status == "changed" and pool.changes == ["inputs"]
    assert "inputs act -> stem" in diff_text(result)
    assert [c.status for c in result.layers].count("unchanged") == len(result.layers) - 1


def test_an_input_renamed_or_a_layer_inserted_before_is_no_change_of_the_reader():
    renamed = RESIDUAL.replace("name: a,", "name: first,").replace("[a, b]", "[b, first]")
    inserted = RESIDUAL.replace("    - {name: b,", "    - {name: n, type: batchnorm}\n"
                                "    - {name: b,")
    for other in (renamed, inserted):
        sums = [c for c in diff(side(RESIDUAL), side(other)).layers if c.b and c.b.name == "sum"]
        assert sums[0].changes == [], other


def test_text_json_and_markdown_say_the_same():
    wider = BASE.replace("filters: 4", "filters: 8")
    result = diff(side(BASE, "a.yaml"), side(wider, "b.yaml"))
    text = diff_text(result)
    assert "A = a.yaml, B = b.yaml" in text
    assert "40 -> 80 (+40)" in text and "training memory" in text
    data = json.loads(json.dumps(diff_json(result)))
    assert data["layers"][0]["status"] == "changed"
    assert data["layers"][0]["a"]["params"] == 40 and data["layers"][0]["b"]["params"] == 80
    assert data["totals"]["total_params"]["change"] == result.totals["total_params"][1] - \
        result.totals["total_params"][0]
    assert data["metrics"] == {}
    markdown = diff_markdown(result)
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[1].startswith("| --- |") and "---:" in table[1]
    assert "| ~ | conv2d_1 | conv2d | [4, 10, 10] → [8, 10, 10] | 40 → 80 (+40) |" in markdown
    assert data["layers"][0]["b"]["train_memory_bytes"] == result.layers[0].memory[1] > 0
    widths = {line.count(" | ") for line in table[:6]}
    assert len(widths) == 1  # every row of the layer table has the same number of cells


def test_a_change_of_decimal_settings_is_given_in_json_as_written_not_as_binary_noise():
    lower = BASE + "optimizer: {type: sgd, lr: 0.01}\n"
    result = diff(side(lower), side(lower.replace("lr: 0.01", "lr: 0.001")))
    assert diff_json(result)["settings"]["optimizer.lr"] == {"a": 0.01, "b": 0.001,
                                                             "change": -0.009}


def test_a_layers_own_settings_that_leave_its_shapes_alone_are_changes():
    other = (BASE.replace("activation: relu", "activation: {type: leaky_relu, alpha: 0.3}, "
                          "padding_mode: reflect, init: he_normal")
             .replace("{type: flatten}", "{type: flatten}\n    - {type: dropout, rate: 0.5}"))
    result = diff(side(BASE), side(other))
    conv = result.layers[0]
    assert conv.status == "changed" and conv.changes == []
    assert conv.settings == {"padding_mode": ("zeros", "reflect"),
                             "activation.type": ("relu", "leaky_relu"),
                             "activation.alpha": (None, 0.3), "init.type": (None, "he_normal")}
    text = diff_text(result)
    assert "activation relu -> leaky_relu" in text and "padding_mode zeros -> reflect" in text
    assert "init - -> he_normal" in text
    layer = json.loads(json.dumps(diff_json(result)))["layers"][0]
    assert layer["status"] == "changed"
    assert layer["settings"]["activation.type"] == {"a": "relu", "b": "leaky_relu", "change": None}
    rate = diff(side(other), side(other.replace("rate: 0.5", "rate: 0.1")))
    assert [(c.status, c.settings) for c in rate.layers if c.settings] == [
        ("changed", {"rate": (0.5, 0.1)})]
    assert diff(side(other), side(other)).layers[0].status == "unchanged"


@pytest.mark.parametrize("a, b", [
    ("{type: conv2d, filters: 4, kernel_size: 3, activation: relu}",
     "{type: conv2d, filters: 4, kernel_size: [3, 3], padding: valid, activation: relu}"),
    ("{type: conv2d, filters: 4, kernel_size: 3, padding: 1, activation: relu}",
     "{type: conv2d, filters: 4, kernel_size: 3, padding: [1, 1], activation: relu}"),
    ("{type: conv2d, filters: 4, kernel_size: 3}",
     "{type: conv2d, filters: 4, kernel_size: 3, activation: identity}"),
])
def test_spellings_of_one_layer_are_no_change(a, b):
    """An audit: `3` and `[3, 3]`, `valid` and 0, identity and no activation showed as changes."""
    first = BASE.replace("{type: conv2d, filters: 4, kernel_size: 3, activation: relu}", a)
    second = BASE.replace("{type: conv2d, filters: 4, kernel_size: 3, activation: relu}", b)
    assert [c.status for c in diff(side(first), side(second)).layers] == ["unchanged"] * 4
    pool = BASE.replace("{type: maxpool2d, pool_size: 2}", "{type: maxpool2d, pool_size: 2, "
                        "stride: 2}")
    assert [c.status for c in diff(side(BASE), side(pool)).layers] == ["unchanged"] * 4


def test_settings_outside_the_layers_that_differ_are_listed():
    a = BASE + "optimizer: {type: sgd, lr: 0.1}\ntrain: {batch_size: 32}\n"
    b = BASE + "optimizer: {type: sgd, lr: 0.05, momentum: 0.9}\ntrain: {batch_size: 32}\n"
    result = diff(side(a), side(b))
    assert result.settings == {"optimizer.lr": (0.1, 0.05), "optimizer.momentum": (0.0, 0.9)}
    data = json.loads(json.dumps(diff_json(result)))
    assert data["settings"]["optimizer.momentum"] == {"a": 0.0, "b": 0.9, "change": 0.9}
    text = diff_text(result)
    assert "settings that differ" in text and "optimizer.lr" in text
    assert "| optimizer.momentum | 0.0 | 0.9 |" in diff_markdown(result)
    same = diff(side(a), side(a))
    assert same.settings == {} and "settings" not in diff_text(same)
    adam = diff(side(a), side(BASE + "optimizer: adam\n"))
    assert adam.settings["optimizer.type"] == ("sgd", "adam")
    assert adam.settings["optimizer.beta1"] == (None, 0.9)  # a field of one side only
    assert "| optimizer.beta1 | - | 0.9 |" in diff_markdown(adam)


def test_a_run_and_the_spec_it_ran_have_the_same_settings(tmp_path):
    """The run's spec.yaml holds the data file's absolute path and every default; the spec
    its relative path and none: neither is a difference."""
    (tmp_path / "d.npz").write_bytes(b"")
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz}\n" + BASE)
    run = tmp_path / "run"
    run.mkdir()
    from nnrun.compiler.frontend import load_spec, resolved_spec_data, spec_yaml

    (run / "spec.yaml").write_text(spec_yaml(resolved_spec_data(load_spec(spec), True)))
    result = invoke("diff", spec, run, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"] == {}


def write_run(directory: Path, text: str, final: dict) -> Path:
    directory.mkdir()
    (directory / "spec.yaml").write_text(text)
    (directory / "summary.json").write_text(json.dumps({"final": final}))
    return directory


def test_run_directories_compare_final_metrics(tmp_path):
    a = write_run(tmp_path / "a", BASE, {"val_loss": 0.5, "val_accuracy": 0.9, "epoch": 3,
                                         "checkpoint": "best.npz"})
    b = write_run(tmp_path / "b", BASE.replace("filters: 4", "filters: 8"),
                  {"val_loss": 0.25, "val_accuracy": 0.95, "epoch": 5, "checkpoint": "last.npz"})
    result = invoke("diff", a, b, "--format", "json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["val_loss"] == {"a": 0.5, "b": 0.25, "change": -0.25}
    assert metrics["epoch"]["change"] == 2
    assert metrics["checkpoint"] == {"a": "best.npz", "b": "last.npz", "change": None}
    text = invoke("diff", a, b).output
    assert "final metrics" in text and "-0.2500" in text
    assert [line.split() for line in text.splitlines() if line.startswith("checkpoint")] == [
        ["checkpoint", "best.npz", "last.npz"]]


def test_a_spec_against_a_run_and_the_shipped_specs(tmp_path):
    run = write_run(tmp_path / "run", (ROOT / "specs" / "lenet5.yaml").read_text(), {})
    shutil.copy(ROOT / "specs" / "lenet5.yaml", tmp_path / "lenet5.yaml")
    result = invoke("diff", tmp_path / "lenet5.yaml", run, "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "(9 unchanged)" in result.output
    result = invoke("diff", ROOT / "specs" / "lenet5.yaml",
                    ROOT / "specs" / "fashion-mnist-cnn.yaml")
    assert result.exit_code == 0, result.output
    assert "batchnorm_1" in result.output and "added" in result.output


def test_a_spec_over_its_budget_is_compared_and_the_budget_error_shown(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text(BASE + "limits: {max_params: 100}\n")
    result = invoke("diff", over, over)  # the output holds stdout and stderr
    assert result.exit_code == 0
    assert "max_params" in result.output and "(4 unchanged)" in result.output


def test_bad_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("kernel_size", "kernal_size"))
    result = invoke("diff", bad, ROOT / "specs" / "lenet5.yaml")
    assert result.exit_code == 1 and "kernal_size" in result.output
    assert "Traceback" not in result.output
    result = invoke("diff", tmp_path, ROOT / "specs" / "lenet5.yaml")
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: {tmp_path}: neither a spec nor a run directory "
                                     "(no spec.yaml)")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # said as validate says it, not as a directory without spec.yaml
    result = invoke("diff", fifo, ROOT / "specs" / "lenet5.yaml")
    assert result.exit_code == 1
    assert result.output.strip().endswith("error: spec: not a regular file; a spec is a YAML file")


@pytest.mark.parametrize("summary", ['{"final": 3}', '{"final": null}', '{"final": [1]}',
                                     "[1]", "not json", '{"epochs_run": 2}'])
def test_a_damaged_run_summary_is_a_one_line_error(tmp_path, summary):
    run = write_run(tmp_path / "run", BASE, {})
    (run / "summary.json").write_text(summary)
    result = invoke("diff", run, run)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {run / 'summary.json'}: not a readable run summary")


@pytest.mark.parametrize("old, inserted", [
    ("{type: dense, units: 4, activation: relu}", "{type: dense, units: 4, activation: tanh}"),
    ("{type: dropout, rate: 0.5}", "{type: dropout, rate: 0.1}"),
])
def test_a_layer_inserted_before_its_twin_in_shape_is_added_not_changed(old, inserted):
    """The printed-numbers audit: alike in shape and parameters but not in its own fields (an
    activation, a rate), the inserted layer took the old one's place: the old one showed a
    changed field, and itself as added at the end."""
    head = "model:\n  input_shape: [4]\n  layers:\n"
    a = head + f"    - {old}\n"
    b = head + f"    - {inserted}\n    - {old}\n"
    kind = "dense" if "dense" in old else "dropout"
    assert statuses(a, b) == [("added", None, f"{kind}_1"),
                              ("renamed", f"{kind}_1", f"{kind}_2")]


def test_a_conv_inserted_before_its_twin_pairs_the_twin_though_its_weight_grew():
    """The export audit: a 1x1 conv2d of 8 filters inserted before a 3x3 one of 8 filters
    gives that one 8 input channels (80 -> 584 parameters), so only type and output shape
    were left to pair by, and the new conv took the old one's place."""
    head = "model:\n  input_shape: [1, 8, 8]\n  layers:\n"
    conv = "    - {type: conv2d, filters: 8, kernel_size: 3, padding: same, activation: relu}\n"
    tail = "    - {type: flatten}\n    - {type: dense, units: 10}\n"
    grown = head + "    - {type: conv2d, filters: 8, kernel_size: 1}\n" + conv + tail
    assert statuses(head + conv + tail, grown) == [
        ("added", None, "conv2d_1"), ("renamed", "conv2d_1", "conv2d_2"),
        ("unchanged", "flatten_1", "flatten_1"), ("unchanged", "dense_1", "dense_1")]
