"""Tables on terminals of every width: long names fold inside their column, numbers and shapes
are never cut, and a terminal too narrow for even that gets the table as a pipe does."""

from __future__ import annotations

from nnrun.compiler.tables import table_text

HEADERS = ["layer", "type", "output shape", "params"]
ROWS = [["conv2d_transpose_1", "conv2d_transpose", "[16, 10, 10]", "2,416"],
        ["total", "", "", "61,706"]]


def test_without_a_width_the_table_keeps_its_natural_width():
    lines = table_text(HEADERS, ROWS, right=(3,), whole=(2,)).splitlines()
    assert lines[2] == "conv2d_transpose_1  conv2d_transpose  [16, 10, 10]   2,416"


def test_a_narrower_terminal_folds_names_inside_their_columns():
    text = table_text(HEADERS, ROWS, right=(3,), whole=(2,), width=40)
    assert max(map(len, text.splitlines())) <= 40
    assert "[16, 10, 10]   2,416" in text and "61,706" in text and "conv2d_t" in text


def test_a_terminal_too_narrow_for_folded_names_gets_the_whole_table_uncut():
    """At 20 columns rich gave the names no width at all and cut 61,706 to 61,70 (the outputs
    audit: summary at 40 columns, diff at 80)."""
    narrow = table_text(HEADERS, ROWS, right=(3,), whole=(2,), width=20)
    assert narrow == table_text(HEADERS, ROWS, right=(3,), whole=(2,))
    assert "conv2d_transpose_1" in narrow and "61,706" in narrow


def test_metrics_too_small_or_too_large_for_four_decimals_show_their_digits():
    """A loss of 1.5e-05 printed as 0.0000 in the epoch line, the final table and eval, alike
    to a loss of exactly 0 (the outputs audit)."""
    from nnrun.compiler.tables import metric_text

    assert metric_text(1.51e-05) == "1.51e-05" and metric_text(0.0) == "0.0000"
    assert metric_text(0.99306) == "0.9931" and metric_text(-0.0069, signed=True) == "-0.0069"
    assert metric_text(3.8e18) == "3.80e+18" and metric_text(float("nan")) == "nan"
    assert metric_text(0.25, signed=True) == "+0.2500"
