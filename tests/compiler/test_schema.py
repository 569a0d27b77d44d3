from nnrun.compiler import schema
from nnrun.compiler.lower import LOWERINGS


def test_every_layer_type_has_exactly_one_lowering():
    assert set(LOWERINGS) == set(schema.LAYER_TYPES)


def test_activation_names_work_as_layers_and_as_fields():
    assert set(schema.ACTIVATION_TYPES) <= set(schema.LAYER_TYPES)
    spec = schema.Spec.model_validate({"model": {"input_shape": [3], "layers": [
        {"type": "dense", "units": 2, "activation": "leaky_relu"},
        {"type": "dense", "units": 2, "activation": {"type": "elu", "alpha": 0.5}},
        {"type": "tanh"}]}})
    first, second, third = spec.model.layers
    assert first.activation.type == "leaky_relu" and first.activation.alpha == 0.01
    assert second.activation.alpha == 0.5
    assert third.type == "tanh"


def test_defaults_follow_the_design():
    spec = schema.Spec.model_validate({"model": {"input_shape": [3], "layers": [
        {"type": "conv1d", "filters": 2, "kernel_size": 1}, {"type": "batchnorm"}]}})
    conv, norm = spec.model.layers
    assert (conv.stride, conv.padding, conv.dilation, conv.padding_mode) == (1, 0, 1, "zeros")
    assert (norm.momentum, norm.eps) == (0.9, 1e-5)
    assert spec.version == 1 and spec.dtype == "float32" and spec.seed == 0
    assert spec.optimizer.type == "sgd" and spec.loss.type == "cross_entropy"


def test_default_layer_names_count_each_type():
    spec = schema.Spec.model_validate({"model": {"input_shape": [3], "layers": [
        {"type": "dense", "units": 2}, {"type": "relu"}, {"type": "dense", "units": 2},
        {"type": "dense", "units": 2, "name": "head"}]}})
    assert schema.default_layer_names(spec.model.layers) == ["dense_1", "relu_1", "dense_2", "head"]


def test_json_schema_lists_every_layer_type():
    document = schema.Spec.model_json_schema()
    text = str(document)
    for layer_type in schema.LAYER_TYPES:
        assert f"'{layer_type}'" in text
