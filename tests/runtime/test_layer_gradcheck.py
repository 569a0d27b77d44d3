"""A finite-difference gradient check for every layer type, through the whole compiled model
(`nnrun gradcheck`'s code), in float64. A new layer type without a case fails the suite."""

import pytest

import nnrun
from nnrun.compiler.schema import ACTIVATION_TYPES, LAYER_TYPES
from nnrun.runtime.gradcheck import gradcheck

IMAGE = "input_shape: [2, 6, 6]"
SEQUENCE = "input_shape: [2, 9]"
VECTOR = "input_shape: [5]"

# Each case: the model's input, then layers that surround the layer under test so that
# parameters sit on both sides of it.
CASES = {
    "dense": (VECTOR, ["{type: dense, units: 4, activation: tanh}"]),
    "conv1d": (SEQUENCE, ["{type: conv1d, filters: 3, kernel_size: 3, stride: 2, padding: same, "
                          "dilation: 1}", "{type: conv1d, filters: 2, kernel_size: 2, dilation: 2, "
                          "padding: 1, padding_mode: reflect}"]),
    "conv2d": (IMAGE, ["{type: conv2d, filters: 3, kernel_size: [3, 2], stride: [2, 1], "
                       "padding: same}", "{type: conv2d, filters: 2, kernel_size: 2, "
                       "padding: 1, padding_mode: replicate}"]),
    "maxpool1d": (SEQUENCE, ["{type: conv1d, filters: 2, kernel_size: 2}",
                             "{type: maxpool1d, pool_size: 3, stride: 2, padding: 1}"]),
    "maxpool2d": (IMAGE, ["{type: conv2d, filters: 2, kernel_size: 2}",
                          "{type: maxpool2d, pool_size: 2}"]),
    "avgpool1d": (SEQUENCE, ["{type: conv1d, filters: 2, kernel_size: 2}",
                             "{type: avgpool1d, pool_size: 2, padding: 1}"]),
    "avgpool2d": (IMAGE, ["{type: conv2d, filters: 2, kernel_size: 2}",
                          "{type: avgpool2d, pool_size: [2, 3], stride: 1}"]),
    "global_avgpool": (IMAGE, ["{type: conv2d, filters: 3, kernel_size: 2}",
                               "{type: global_avgpool}"]),
    "global_maxpool": (IMAGE, ["{type: conv2d, filters: 3, kernel_size: 2}",
                               "{type: global_maxpool}"]),
    "flatten": (IMAGE, ["{type: conv2d, filters: 2, kernel_size: 3}", "{type: flatten}"]),
    "reshape": (VECTOR, ["{type: dense, units: 6}", "{type: reshape, shape: [2, -1]}",
                         "{type: conv1d, filters: 2, kernel_size: 2}"]),
    "dropout": (VECTOR, ["{type: dense, units: 6, activation: relu}", "{type: dropout, rate: 0.3}"]),
    "batchnorm": (IMAGE, ["{type: conv2d, filters: 3, kernel_size: 2}", "{type: batchnorm}"]),
    "add": (VECTOR, ["{type: dense, units: 4, name: a}", "{type: dense, units: 4, name: b}",
                     "{type: add, inputs: [a, b]}"]),
    "concat": (IMAGE, ["{type: conv2d, filters: 2, kernel_size: 1, name: a, inputs: input}",
                       "{type: conv2d, filters: 3, kernel_size: 1, name: b, inputs: input}",
                       "{type: concat, inputs: [a, b]}"]),
    "upsample1d": (SEQUENCE, ["{type: conv1d, filters: 2, kernel_size: 2}",
                              "{type: upsample1d, scale: 3, mode: linear}"]),
    "upsample2d": (IMAGE, ["{type: conv2d, filters: 2, kernel_size: 2, stride: 2}",
                           "{type: upsample2d, scale: [2, 3], mode: bilinear}",
                           "{type: upsample2d, scale: 2}"]),
    "conv1d_transpose": (SEQUENCE, ["{type: conv1d, filters: 2, kernel_size: 2}",
                                    "{type: conv1d_transpose, filters: 3, kernel_size: 3, "
                                    "stride: 2, padding: 1, output_padding: 1}"]),
    "conv2d_transpose": (IMAGE, ["{type: conv2d, filters: 2, kernel_size: 2}",
                                 "{type: conv2d_transpose, filters: 3, kernel_size: [3, 2], "
                                 "stride: [2, 1], padding: [1, 0], output_padding: [1, 0], "
                                 "dilation: [1, 2]}"]),
    **{name: (VECTOR, ["{type: dense, units: 4}", f"{{type: {name}}}"]) for name in ACTIVATION_TYPES},
}


def _spec(input_line: str, layers: list[str]) -> str:
    body = "\n".join(f"    - {layer}" for layer in [*layers, "{type: flatten}",
                                                      "{type: dense, units: 3}"])
    return f"dtype: float64\nmodel:\n  {input_line}\n  layers:\n{body}\n"


def test_every_layer_type_has_a_case():
    assert set(CASES) == set(LAYER_TYPES)


@pytest.mark.parametrize("layer_type", sorted(CASES))
def test_gradients_of_a_model_with_this_layer_match_finite_differences(layer_type):
    model = nnrun.compile(nnrun.load_spec_text(_spec(*CASES[layer_type])))
    results = gradcheck(model, batch=3, samples=6, seed=1)
    assert results, "the model has parameters to check"
    for result in results:
        assert result.worst_relative_error < 1e-6, (result.name, result.worst_relative_error)
