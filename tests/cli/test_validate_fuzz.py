"""Property: `nnrun validate` on any spec-shaped YAML exits 0 or 1 and never crashes.

The specs are random nested mappings built from plausible keys and values: real and misspelt
layer types, zero/negative/huge integers, odd padding, strides and kernels, input shapes of any
rank, every dataset, loss and optimizer name plus misspellings, and now and then a value of a
type nobody expects. Whatever comes in, the answer is diagnostics (exit 1) or ok (exit 0), never
a traceback or an "internal error" (exit 70).
"""

from __future__ import annotations

import copy
import os
import re

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnrun.cli import main

# --- values ---------------------------------------------------------------------------------
#
# A spec is drawn in two steps: a plausible spec (real layer types with fitting fields and
# small sizes, so many get past the schema into the shape rules, the dataset checks and the
# budgets), then zero to three mutations anywhere in it: a value replaced by zero, a negative
# or huge number, a misspelt name or a value of another type; a key removed; an unknown key.

HUGE = [2**31, 2**53 + 1, 10**12, 2**63, 10**30]

garbage = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=6),
    st.lists(st.integers(-2, 8), max_size=3),
    st.dictionaries(st.sampled_from(["a", "type", "x"]), st.integers(-2, 8), max_size=2),
)
odd_ints = st.one_of(st.sampled_from([0, -1, -7, *HUGE]), st.integers(-3, 300))
MISSPELT = ["dens", "Dense", "conv2", "conv_2d", "maxpool", "max_pool2d", "flaten", "lstm",
            "batch_norm", "", "conv3d", "relu6", "swish", "adma", "crossentropy", "cifar10",
            "SAME", "full", "circular", "float16", "xavier", "nromal", "f1", "linear"]
replacement = st.one_of(garbage, odd_ints, st.sampled_from(MISSPELT),
                        st.lists(odd_ints, min_size=1, max_size=4))
UNKNOWN_KEYS = ["kernal_size", "unit", "filter", "strides", "modle", "inputs_shape", "lr",
                "padding", "units", "rate", "alpha", "max_layers", "batch"]

fraction = st.floats(min_value=0.0, max_value=0.9)

# Hypothesis's checks of how it draws (speed, size), which a loaded 2-core CI machine failed
# for its own slowness; the checks of how the tests are written stay on.
DRAWING_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                  HealthCheck.large_base_example]


def one_in(draw, n: int) -> bool:
    # Hypothesis favours the ends of a range (0 above all), so test for a value inside it.
    return draw(st.integers(0, n)) == n // 2


def int_or_pair(low: int, high: int):
    return st.one_of(st.integers(low, high), st.lists(st.integers(low, high), min_size=1,
                                                      max_size=2))


ACTIVATIONS = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "gelu", "softplus",
               "identity"]
activation = st.one_of(
    st.sampled_from(ACTIVATIONS),
    st.fixed_dictionaries({"type": st.sampled_from(["leaky_relu", "elu"])},
                          optional={"alpha": st.floats(0.01, 2.0)}),
)
init = st.one_of(
    st.sampled_from(["xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
                     "lecun_normal", "zeros"]),
    st.fixed_dictionaries({"type": st.just("normal")}, optional={"std": st.floats(0.01, 1.0)}),
    st.fixed_dictionaries({"type": st.just("uniform")}, optional={"limit": st.floats(0.01, 1.0)}),
)
NAMES = ["a", "b", "input", "dense_1", "conv2d_1", "flatten_1", "relu_1", "nope"]
CONV = {"filters": st.integers(1, 8), "kernel_size": int_or_pair(1, 5),
        "stride": int_or_pair(1, 3),
        "padding": st.one_of(st.sampled_from(["same", "valid"]), int_or_pair(0, 3)),
        "dilation": int_or_pair(1, 2),
        "padding_mode": st.sampled_from(["zeros", "reflect", "replicate", "circular", "random"]),
        "activation": activation, "use_bias": st.booleans(), "init": init}
TRANSPOSE = {"filters": st.integers(1, 8), "kernel_size": int_or_pair(1, 5),
             "stride": int_or_pair(1, 3), "padding": int_or_pair(0, 3),
             "output_padding": int_or_pair(0, 3), "dilation": int_or_pair(1, 3),
             "activation": activation, "use_bias": st.booleans(), "init": init}
UPSAMPLE = {"scale": int_or_pair(1, 3),
            "mode": st.sampled_from(["nearest", "linear", "bilinear", "bicubic"])}
# given initial values: right, wrong in shape or not numbers at all
GIVEN = {"weights": st.one_of(st.lists(st.lists(st.floats(-1, 1), min_size=1, max_size=3),
                                       min_size=1, max_size=3), st.just([[1.0], [2.0, 3.0]])),
         "bias": st.lists(st.floats(-1, 1), min_size=0, max_size=4),
         "init_from": st.sampled_from(["missing.npz", "", "dense_1", "w.npz:dense_1.weight"])}
POOL = {"pool_size": int_or_pair(1, 4), "stride": st.one_of(st.none(), int_or_pair(1, 3)),
        "padding": int_or_pair(0, 2)}
FIELDS = {
    "dense": {"units": st.integers(1, 12), "activation": activation, "use_bias": st.booleans(),
              "init": init, "bias_init": init, **GIVEN},
    "conv1d": CONV | GIVEN, "conv2d": CONV | GIVEN,
    "conv1d_transpose": TRANSPOSE, "conv2d_transpose": TRANSPOSE,
    "upsample1d": UPSAMPLE, "upsample2d": UPSAMPLE,
    "maxpool1d": POOL, "maxpool2d": POOL, "avgpool1d": POOL, "avgpool2d": POOL,
    "global_avgpool": {}, "global_maxpool": {}, "flatten": {},
    "reshape": {"shape": st.lists(st.sampled_from([1, 2, 3, 4, 8, -1]), min_size=1,
                                  max_size=3)},
    "dropout": {"rate": fraction},
    "batchnorm": {"momentum": fraction, "eps": st.floats(1e-6, 1e-2)},
    "add": {}, "concat": {"axis": st.integers(0, 2)},
    **{name: {} for name in ACTIVATIONS},
    "leaky_relu": {"alpha": st.floats(0.0, 1.0)}, "elu": {"alpha": st.floats(0.1, 2.0)},
}
REQUIRED = {"dense": ["units"], "conv1d": ["filters", "kernel_size"],
            "conv2d": ["filters", "kernel_size"], "maxpool1d": ["pool_size"],
            "maxpool2d": ["pool_size"], "avgpool1d": ["pool_size"], "avgpool2d": ["pool_size"],
            "reshape": ["shape"], "dropout": ["rate"],
            "conv1d_transpose": ["filters", "kernel_size"],
            "conv2d_transpose": ["filters", "kernel_size"]}
FOR_VECTORS = ["dense", "dense", "dropout", "relu", "tanh", "batchnorm", "reshape", "add"]
FOR_IMAGES = ["conv2d", "conv2d", "conv1d", "maxpool2d", "avgpool2d", "maxpool1d", "flatten",
              "global_avgpool", "batchnorm", "concat", "add", "dense", "conv2d_transpose",
              "conv1d_transpose", "upsample2d", "upsample1d"]


@st.composite
def layers(draw, kinds: list[str]):
    kind = draw(st.one_of(st.sampled_from(kinds), st.sampled_from(sorted(FIELDS))))
    fields = FIELDS[kind]
    layer = {"type": kind}
    for key in sorted(fields):
        if key in REQUIRED.get(kind, []) or one_in(draw, 4):
            layer[key] = draw(fields[key])
    if one_in(draw, 4):
        layer["name"] = draw(st.sampled_from([n for n in NAMES if n != "input"]))
    if kind in ("add", "concat") or one_in(draw, 10):
        layer["inputs"] = draw(st.one_of(st.sampled_from(NAMES),
                                         st.lists(st.sampled_from(NAMES), max_size=3)))
    return layer


@st.composite
def models(draw):
    rank = draw(st.integers(1, 3))
    model = {"input_shape": draw(st.lists(st.integers(1, 30), min_size=rank, max_size=rank))}
    kinds = FOR_VECTORS if rank == 1 else FOR_IMAGES
    model["layers"] = draw(st.lists(layers(kinds), min_size=1, max_size=6))
    if draw(st.booleans()):  # end as a classifier usually does
        head = [{"type": "flatten"}] if rank > 1 else []
        model["layers"] += head + [{"type": "dense", "units": draw(st.sampled_from([1, 2, 3, 10]))}]
    if one_in(draw, 6):
        model["init"] = draw(init)
    if one_in(draw, 10):
        del model["input_shape"]  # then the dataset must know it
    return model


DATASETS = ["digits", "mnist", "fashion_mnist", "mnist1d", "xor", "spirals", "blobs", "npz",
            "csv", "shapes"]
data = st.fixed_dictionaries(
    {"dataset": st.sampled_from(DATASETS)},
    optional={
        "path": st.sampled_from(["data/x.npz", "missing.csv", "idx/"]),
        "validation_split": fraction,
        "normalize": st.sampled_from(["none", "scale", "standard"]),
        "limit": st.integers(1, 1000), "n_samples": st.integers(5, 500),
        "noise": st.floats(0.0, 2.0), "permute_features": st.one_of(st.booleans(),
                                                                    st.integers(0, 9)),
        "augment": st.lists(st.one_of(
            st.just({"type": "random_shift", "max_shift": 2}),
            st.just({"type": "random_flip", "axis": "vertical"}),
            st.just({"type": "gaussian_noise", "std": 0.1}),
            st.just({"type": "random_crop", "size": 6, "padding": 2}),
            st.just({"type": "random_rotation", "degrees": 10})), max_size=2),
    },
)
LOSSES = ["cross_entropy", "binary_cross_entropy", "mse", "mae", "huber"]
loss = st.one_of(
    st.sampled_from(LOSSES),
    st.fixed_dictionaries({"type": st.sampled_from(LOSSES)}, optional={"scale": st.floats(0.1, 2)}),
    st.just({"type": "cross_entropy", "label_smoothing": 0.1}),
    st.just({"type": "huber", "delta": 0.5}),
    st.fixed_dictionaries({"type": st.sampled_from(["cross_entropy", "binary_cross_entropy"]),
                           "ignore_index": st.sampled_from([0, 1, 255, -1])}),
)
optimizer = st.fixed_dictionaries(
    {"type": st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "adagrad"])},
    optional={"lr": st.floats(1e-4, 1.0), "weight_decay": st.floats(0.0, 0.1),
              "clip_grad_norm": st.floats(0.1, 10), "clip_grad_value": st.floats(0.1, 10),
              "schedule": st.one_of(
                  st.sampled_from(["constant", "cosine", "step", "exponential"]),
                  st.fixed_dictionaries({"type": st.sampled_from(["cosine", "step"])},
                                        optional={"warmup_epochs": st.integers(0, 3)}))},
)
train = st.fixed_dictionaries({}, optional={
    "epochs": st.integers(1, 20), "batch_size": st.integers(1, 256), "shuffle": st.booleans(),
    "metrics": st.lists(st.sampled_from(["accuracy", "mae", "mse", "top_k_accuracy",
                                         "pixel_accuracy", "mean_iou"]),
                        max_size=2, unique=True),
    "early_stopping": st.fixed_dictionaries({}, optional={
        "monitor": st.sampled_from(["val_loss", "val_accuracy"]), "patience": st.integers(1, 5)}),
    "log_grad_norms": st.booleans(),
})
limits = st.fixed_dictionaries({}, optional={
    "max_params": st.integers(1, 100_000), "max_flops": st.floats(1, 1e7),
    "max_train_memory_mb": st.floats(1e-3, 100),
})
SECTIONS = {"data": data, "loss": loss, "optimizer": optimizer, "train": train,
            "limits": limits, "seed": st.integers(0, 9),
            "dtype": st.sampled_from(["float32", "float64"]),
            "name": st.text(min_size=1, max_size=8), "version": st.just(1)}


@st.composite
def plausible_specs(draw):
    spec = {"model": draw(models())}
    for key in sorted(SECTIONS):
        if draw(st.booleans()):
            spec[key] = draw(SECTIONS[key])
    return spec


def _places(value, path=()):
    """Every (path, value) inside a spec, the root excluded."""
    found = [(path, value)] if path else []
    children = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found += _places(child, path + (key,))
    return found


@st.composite
def specs(draw):
    spec = copy.deepcopy(draw(plausible_specs()))  # st.just values are shared objects
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        places = _places(spec)
        if not places:  # a deletion took the last section (the model, with nothing beside it)
            break
        path, value = draw(st.sampled_from(places))
        parent = spec
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add_key"]))
        if action == "replace":
            parent[path[-1]] = draw(replacement)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add_key" and isinstance(value, dict):
            value[draw(st.sampled_from(UNKNOWN_KEYS))] = draw(st.one_of(replacement,
                                                                          st.integers(1, 5)))
    return spec


# --- the property ---------------------------------------------------------------------------


# FUZZ_N=2000 for a longer search when the spec language grows
EXAMPLES = int(os.environ.get("FUZZ_N", 150))


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "spec.yaml"


def _check(spec_file, text: str, *options: str) -> None:
    spec_file.write_text(text)
    result = CliRunner().invoke(main, ["validate", *options, str(spec_file)])
    assert result.exit_code in (0, 1), (text, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        text, repr(result.exception))
    assert "Traceback" not in result.output, text
    assert "internal error" not in result.output, (text, result.output)
    if result.exit_code == 1:
        assert result.output.strip(), text  # a failure always says why
    if "--format" in options and options[options.index("--format") + 1] == "text":
        for line in result.stdout.splitlines() + result.stderr.splitlines():
            if ": error:" in line:  # positioned: file:line:col: error: ...
                assert re.match(rf"{re.escape(str(spec_file))}:\d+:\d+: error: ", line), (
                    text, line)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=DRAWING_CHECKS)
@given(spec=specs(), fmt=st.sampled_from(["text", "json", "github"]), strict=st.booleans())
def test_validate_never_crashes(spec_file, spec, fmt, strict):
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    _check(spec_file, text, "--format", fmt, *(["--strict"] if strict else []))


@settings(max_examples=60, deadline=None, suppress_health_check=DRAWING_CHECKS)
@given(text=st.text(alphabet=st.sampled_from(list("model: layers[]{}-,&*!|>'\"\n 0123abc#%@")),
                    max_size=60))
def test_validate_never_crashes_on_arbitrary_text(spec_file, text):
    _check(spec_file, text)
