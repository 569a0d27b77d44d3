"""The resolved spec (issue 10, item 9): every default filled in, and it loads back as the same
model, so that a run's spec.yaml in this form matches the run's checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nnrun.compiler.checks import targets_decide_metrics
from nnrun.compiler.frontend import check, load_spec, load_spec_text, resolved_spec_data, spec_yaml
from nnrun.runtime.checkpoint import spec_hash

SPECS = sorted((Path(__file__).parents[2] / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_resolves_to_the_same_model(path):
    source = load_spec(path)
    text = spec_yaml(resolved_spec_data(source))
    again = load_spec_text(text, "resolved.yaml")
    again.path = path  # relative data paths resolve from the same directory
    assert spec_hash(again.spec) == spec_hash(source.spec)
    assert check(again).summary.as_json() == check(source).summary.as_json()
    resolved = yaml.safe_load(text)
    assert all("name" in layer for layer in resolved["model"]["layers"])
    assert {"epochs", "batch_size", "shuffle"} <= set(resolved["train"])
    # metrics too, unless left to the targets of an npz or csv file (docs/spec-reference.md)
    written = source.spec.train.metrics is not None or not targets_decide_metrics(source.spec)
    assert ("metrics" in resolved["train"]) == written
    assert "lr" in resolved["optimizer"] and "type" in resolved["loss"]
    assert spec_yaml(resolved_spec_data(again)) == text  # resolving is idempotent


def test_summary_table_fits_an_80_column_terminal_with_whole_shapes():
    from nnrun.compiler.summary import summary_text

    summary = check(load_spec(Path(__file__).parents[2] / "specs" / "residual-block.yaml")).summary
    text = summary_text(summary, width=80)
    table = text.split("parameters:")[0].splitlines()
    assert all(len(line) <= 80 for line in table)
    assert "[16, 16, 3, 3]" in text and "[16, 8, 8]" in text  # shapes are never cut


def test_spec_hash_ignores_fields_at_their_defaults_and_tells_layer_kinds_apart():
    """A field a later nnrun adds, with a default that keeps the old meaning, must not orphan
    the checkpoints written before it; the same fields spelled out change nothing either."""
    def hash_of(layers: str) -> str:
        return spec_hash(load_spec_text(f"model:\n  input_shape: [1, 8, 8]\n  layers:\n{layers}")
                         .spec)

    plain = hash_of("    - {type: conv2d, filters: 4, kernel_size: 3}\n    - {type: flatten}\n")
    spelled = hash_of("    - {type: conv2d, filters: 4, kernel_size: 3, padding: 0, stride: 1, "
                      "padding_mode: zeros, name: conv2d_1}\n    - {type: flatten}\n")
    padded = hash_of("    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1}\n"
                     "    - {type: flatten}\n")
    pooled = hash_of("    - {type: conv2d, filters: 4, kernel_size: 3}\n"
                     "    - {type: global_avgpool}\n")
    assert plain == spelled
    assert len({plain, padded, pooled}) == 3


def test_the_resolved_spec_writes_other_scripts_as_they_are():
    """`name: réseau` came out as "r\\xE9seau" in `summary --resolved` and a run's spec.yaml."""
    source = load_spec_text("name: réseau-网络\nmodel: {input_shape: [2], layers: [{type: dense, "
                            "units: 2}]}\n", "u.yaml")
    text = spec_yaml(resolved_spec_data(source))
    assert text.startswith("name: réseau-网络\n")
    assert load_spec_text(text, "again.yaml").spec.name == "réseau-网络"


def test_a_character_yaml_would_read_back_as_another_is_escaped():
    """U+0085 written bare into a single-quoted data.path read back as a space: eval and
    resume looked for another file (the review of the UTF-8 output)."""
    data = {"name": "réseau", "data": {"dataset": "csv", "path": "d\x85x.csv"}}
    text = spec_yaml(data)
    assert yaml.safe_load(text) == data and "\\N" in text
