"""`nnrun export RUN_DIR|SPEC --format onnx --out model.onnx`: the inference graph, its weights and
the run's input preprocessing as an ONNX model, checked by onnx.checker and by onnxruntime
against nnrun's own outputs before it is written."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import click
import numpy as np

from nnrun.cli import (ExistingPath, OutPath, checkpoint_option, handle_errors,
                       in_own_caches, preprocessing_option, refuse_an_input_as_out,
                       refuse_an_unwritable_out, refuse_another_suffix,
                       refuse_to_replace_another_kind, set_option, wrote)
from nnrun.compiler.export_onnx import (BATCH_DIM, INPUT_NAME, OPSET, OUTPUT_NAME,
                                        PROTOBUF_BYTES, ExportError, InputPreprocessing,
                                        check_model, export_graph, layer_outputs, onnx_module,
                                        output_scale, relative_error, run_onnxruntime,
                                        run_onnxruntime_outputs)

CHECK_SAMPLES = 16
MODEL_START = b"\x08"  # a serialized ModelProto begins with its ir_version (field 1, a varint)
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


@dataclass
class Exported:
    model: object  # onnx.ModelProto
    source: str  # "best.npz (epoch 3)" or "initial weights (seed 0)"
    preprocessing: list[str]  # what the graph does before the first layer
    input_shape: list
    output_shape: list
    dtype: str
    least_scale: float  # outputs compared absolutely below it (1 for probabilities)
    check: str = ""  # how onnxruntime compared with nnrun
    warning: str = ""  # how far raw inputs read in the model's dtype take it from nnrun's
    preprocessed: bool = False  # a run exported with --no-preprocessing: inputs come preprocessed


def export_onnx(path: Path, checkpoint: str | None = None, preprocess: bool = True,
                overrides=()) -> Exported:
    """A run directory's checkpoint with its preprocessing, or a spec's initial weights for its
    seed (no preprocessing: a spec has no fitted statistics), as a checked ONNX model."""
    from nnrun.compiler.frontend import load_spec
    from nnrun.runtime.data.preprocessing import fits_preprocessing
    from nnrun.runtime.evaluate import load_run
    from nnrun.runtime.model import Model

    if path.is_dir():
        run = load_run(path, checkpoint, preprocess=preprocess)
        model, params, pre = run.model, run.params, run.preprocessing
        source = f"{run.checkpoint.name} (epoch {run.epoch})"
    else:
        model = Model(load_spec(path, overrides))
        params, pre = model.init_params(), None
        source = _initial_weights_source(model.spec)
    preprocessing = _input_preprocessing(pre)
    graph = model.lowered.graph
    onnx_model = export_graph(graph, params, model.spec.dtype, preprocessing,
                              model.spec.name or path.stem)
    check_model(onnx_model)
    exported = Exported(onnx_model, source, _describe(preprocessing),
                        list(graph.inputs[0].type.shape[1:]),
                        list(graph.outputs[OUTPUT_NAME].type.shape[1:]), model.spec.dtype,
                        output_scale(graph))
    exported.check, exported.warning = _compare_with_nnrun(exported, model, params, pre,
                                                           preprocessing)
    # (--no-preprocessing of a run that fits none changes nothing: its inputs are raw)
    exported.preprocessed = path.is_dir() and not preprocess and fits_preprocessing(model.spec)
    return exported


def _input_preprocessing(pre) -> InputPreprocessing:
    if pre is None:
        return InputPreprocessing()
    normalizer = pre.normalizer
    return InputPreprocessing(None if normalizer is None else np.asarray(normalizer.shift),
                              None if normalizer is None else np.asarray(normalizer.scale),
                              pre.permutation)


def _describe(pre: InputPreprocessing) -> list[str]:
    parts = ["(x - shift) / scale"] if pre.shift is not None else []
    return parts + (["feature permutation"] if pre.permutation is not None else [])


def _compare_with_nnrun(exported: Exported, model, params, pre,
                        preprocessing) -> tuple[str, str]:
    """onnxruntime and nnrun on the same random raw batch; an export that disagrees is not
    written. Also what reading raw inputs in the model's dtype loses, where `nnrun predict`
    preprocesses them in float64 (a warning, or "")."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((CHECK_SAMPLES, *exported.input_shape))
    raw = z if preprocessing.shift is None else z * preprocessing.scale + preprocessing.shift
    largest = float(np.abs(raw).max())
    if largest > float(np.finfo(exported.dtype).max):
        raise ExportError(f"the run's inputs lie near {largest:.3g}, beyond {exported.dtype}, in "
                          f"which the exported graph reads them; export with --no-preprocessing "
                          "(the graph then takes inputs preprocessed by nnrun), or train with "
                          "--set dtype=float64")
    exact, raw = raw, raw.astype(exported.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        inputs = pre.apply(raw, exported.dtype) if pre else raw
        if not np.isfinite(inputs).all():  # a shift and scale edited by hand (1e30, 1e-30)
            raise ExportError(f"the run's preprocessing.npz makes inputs near its shift inf or "
                              f"NaN in {exported.dtype}: delete it to fit the preprocessing "
                              "again from the run's data")
        expected = model.forward(params, inputs)
    if not np.isfinite(expected).all():  # no lowering to blame: the weights overflow
        from nnrun.runtime.archives import largest_magnitude

        largest = largest_magnitude(params)
        raise ExportError(f"nnrun's own outputs on {CHECK_SAMPLES} random samples are inf or "
                          f"NaN: the model overflows {exported.dtype} (its largest weight is "
                          f"{largest:.3g}); nothing to check the export against, so it is not "
                          "written: train again (a lower lr), or export another checkpoint")
    try:
        result = run_onnxruntime(exported.model, raw)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own unexported types
        if "NOT_IMPLEMENTED" in str(error):  # e.g. no float64 kernel for an op on the CPU
            return f"not run by onnxruntime ({str(error).split(':')[-1].strip()})", ""
        raise
    error = relative_error(result, expected, exported.least_scale)
    tolerance, exact_model = TOLERANCE[exported.dtype], None
    if result.shape == expected.shape and not error <= tolerance \
            and exported.dtype == "float32":
        exact_model = _float64_twin(model)
        own, theirs = _distances_from_float64(exported, exact_model, params, inputs, result,
                                              expected)
        if theirs <= _rounding_allowance(own, tolerance):
            return (f"onnxruntime agrees with nnrun on {CHECK_SAMPLES} random samples within "
                    f"the model's own float32 rounding (relative error {error:.1e}: nnrun's "
                    f"float32 outputs lie {own:.1e} from its float64 ones, onnxruntime's "
                    f"{theirs:.1e}; large weights or cancelling sums make float32 that coarse "
                    "for this model)"), _rounding_warning(exported, model, params, pre, exact,
                                                           result)
    if result.shape != expected.shape or not error <= tolerance:
        try:
            where = _first_differing_layer(exported, model, params, preprocessing, raw, inputs,
                                           exact_model)
        except Exception:  # noqa: BLE001 - a search for the cause must not hide the difference
            where = "where they part could not be found"
        raise ExportError(f"onnxruntime's outputs differ from nnrun's (relative error {error:.1e}, "
                          f"shapes {list(result.shape)} and {list(expected.shape)}); {where}; "
                          "please report it")
    return (f"onnxruntime agrees with nnrun on {CHECK_SAMPLES} random samples (relative error "
            f"{error:.1e})"), _rounding_warning(exported, model, params, pre, exact, result)


# onnxruntime's float32 outputs may lie this many times as far from nnrun's float64 ones as
# nnrun's own float32 outputs do: their sums run in other orders, each rounding its own way,
# and its float32 tanh errs up to 5.4 times as far as NumPy's (3.3e-7 against 6.0e-8 on
# [-10, 10], onnxruntime 1.32), which a model that magnifies rounding carries to its outputs.
ROUNDING_MARGIN = 8
# A model whose own float32 outputs lie farther than this from its float64 ones cannot be
# checked in float32: a wrong lowering would pass within 8 times that.
COARSEST_ROUNDING = 1e-3


def _rounding_allowance(own: float, tolerance: float) -> float:
    """How far onnxruntime's float32 outputs may lie from nnrun's float64 ones, where nnrun's
    own float32 outputs lie `own` from them."""
    return max(tolerance, ROUNDING_MARGIN * own)


def _float64_twin(model):
    """The model compiled in float64: what its float32 outputs are measured against."""
    from nnrun.runtime.model import Model

    return Model(replace(model.source, spec=model.spec.model_copy(update={"dtype": "float64"})))


def _in_float64(params: dict) -> dict:
    return {name: np.asarray(value, np.float64) for name, value in params.items()}


def _distances_from_float64(exported: Exported, exact_model, params, inputs, result,
                            expected) -> tuple[float, float]:
    """How far nnrun's own float32 outputs and onnxruntime's lie from nnrun's float64 outputs
    (`exact_model`'s) on the same weights and inputs, where the two float32 ones differ past
    the tolerance: a model whose float32 rounding is that large (weights of a large scale,
    saturated activations, cancelling sums), or a wrong lowering. A model too coarse in
    float32 to tell them apart is refused."""
    with np.errstate(all="ignore"):
        exact = exact_model.forward(_in_float64(params), np.asarray(inputs, np.float64))
    own = relative_error(expected, exact, exported.least_scale)
    if not own <= COARSEST_ROUNDING:
        raise ExportError(f"nnrun's own float32 outputs lie {own:.1e} (relative) from its "
                          "float64 ones on the same weights and inputs: the model is too "
                          "coarse in float32 for the check to tell a wrong export from rounding, "
                          "so it is not written; export it in float64 (train, or export the "
                          "spec, with --set dtype=float64)")
    return own, relative_error(result, exact, exported.least_scale)


def _first_differing_layer(exported: Exported, model, params, preprocessing, raw,
                           inputs, exact_model=None) -> str:
    """Where the difference starts: onnxruntime's and nnrun's (reference executor's) output of
    each layer on the same samples, the first over the tolerance named with its ops. With
    `exact_model` (the float64 twin of a model coarse in float32), a layer differs where
    onnxruntime's output lies farther from the twin's than ROUNDING_MARGIN times nnrun's."""
    graph = model.lowered.graph
    layers = layer_outputs(graph)
    probes = {f"layer/{layer}": value for layer, value in layers.items()}
    probed = export_graph(graph, params, exported.dtype, preprocessing, probes=probes)
    theirs = run_onnxruntime_outputs(probed, raw, list(probes))
    ours = _layer_values(model, params, inputs, probes)
    exact = list(ours.values()) if exact_model is None else list(_layer_values(
        exact_model, _in_float64(params), np.asarray(inputs, np.float64),
        {f"layer/{layer}": value
         for layer, value in layer_outputs(exact_model.lowered.graph).items()}).values())
    last = graph.outputs[OUTPUT_NAME]
    for (layer, value), result, expected, reference in zip(layers.items(), theirs,
                                                            ours.values(), exact):
        scale = exported.least_scale if value is last else 0.0
        if exact_model is None:
            error, tolerance = relative_error(result, expected, scale), TOLERANCE[exported.dtype]
        else:
            error = relative_error(result, reference, scale)
            tolerance = _rounding_allowance(relative_error(expected, reference, scale),
                                            TOLERANCE[exported.dtype])
        if result.shape != expected.shape or not error <= tolerance:
            nodes = [node for node in graph.nodes if node.origin and node.origin.layer == layer]
            return (f"they first differ at layer {nodes[-1].origin.where()}, ops "
                    f"{', '.join(node.op for node in nodes)} (relative error {error:.1e} there)")
    return "no single layer's output differs past the tolerance: the differences add up"


def _layer_values(model, params, inputs, probes: dict) -> dict[str, np.ndarray]:
    """nnrun's values of `probes` on the preprocessed `inputs`: the reference executor on the
    graph that the export walks."""
    from nnrun.runtime.executor import Executor

    be = model.backend
    feeds = {name: be.from_host(np.asarray(value)) for name, value in params.items()}
    feeds["x"] = be.from_host(inputs)
    with np.errstate(all="ignore"):
        outputs, _ = Executor(replace(model.lowered.graph, outputs=probes), be).run(feeds)
    return {probe: be.to_host(array) for probe, array in outputs.items()}


def _rounding_warning(exported: Exported, model, params, pre, exact, result) -> str:
    """Raw values of a large offset against their spread (years, timestamps) lose what tells
    them apart when the graph's input rounds them to float32; `predict` subtracts the shift
    from them in float64."""
    if pre is None or pre.normalizer is None or exported.dtype == "float64":
        return ""
    with np.errstate(over="ignore", invalid="ignore"):
        expected = model.forward(params, pre.apply(exact, exported.dtype))
    lost = relative_error(result, expected, exported.least_scale)
    if lost <= TOLERANCE[exported.dtype]:
        return ""
    shift = float(np.abs(pre.normalizer.shift).max())
    step = float(np.spacing(np.asarray(shift, exported.dtype)))
    return (f"the graph reads raw inputs as {exported.dtype}, which rounds values near "
            f"{shift:.3g} (the run's shift) to steps of {step:.3g}: on raw inputs its outputs "
            f"differ from `nnrun predict`'s by {lost:.1e} (relative); for its numbers, export "
            "with --no-preprocessing and feed (x - shift) / scale computed in float64 (the "
            "run's preprocessing.npz)")


@click.command("export")
@click.argument("source", type=ExistingPath(), metavar="RUN_DIR|SPEC")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", "out_path", type=OutPath(dir_okay=False, path_type=Path),
              required=True, help="Where to write the model (e.g. model.onnx).")
@checkpoint_option
@preprocessing_option
@set_option
@handle_errors
@in_own_caches
def export(source, fmt, out_path, checkpoint, raw, overrides) -> None:
    """The inference graph with its weights and the run's input preprocessing, as ONNX.

    A run directory exports a checkpoint and the preprocessing training fitted; a spec exports
    its initial weights for its seed, without preprocessing. The model is checked by
    onnx.checker and by onnxruntime against nnrun's outputs before it is written."""
    from nnrun.compiler.export_onnx import require_extra
    from nnrun.runtime.files import write_output

    require_extra()
    refuse_an_input_as_out(out_path, source)
    refuse_an_unwritable_out(out_path)
    refuse_another_suffix(out_path, ".onnx", "an ONNX model")  # first: no "delete it" then
    refuse_to_replace_another_kind(out_path, _holds_an_onnx_model, "ONNX model")
    _check_options(source, checkpoint, raw, overrides)
    exported = export_onnx(source, checkpoint, not raw, overrides)
    data = exported.model.SerializeToString()
    write_output(out_path, lambda stream: stream.write(data))
    click.echo(_report(out_path, exported))
    if exported.warning:
        click.echo(f"warning: {exported.warning}", err=True)


def _holds_an_onnx_model(handle) -> bool:
    """Whether the open file is an ONNX model: read whole only when it can be one, beginning
    as a serialized model does and under protobuf's limit (a dataset given as --out by mistake
    is not read into memory)."""
    if os.fstat(handle.fileno()).st_size >= PROTOBUF_BYTES or handle.read(1) != MODEL_START:
        return False
    handle.seek(0)
    return _is_onnx_model(handle.read())


def _is_onnx_model(data: bytes) -> bool:
    """Whether `data` parses as an ONNX model (without external data): a leading byte 0x08 (a
    ModelProto's ir_version field) starts other files too."""
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    model = onnx_module().ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError:
        return False
    # protobuf keeps fields it does not know: a model is one with a version and a graph
    return model.ir_version > 0 and model.HasField("graph")


def _check_options(source: Path, checkpoint, raw: bool, overrides) -> None:
    """--checkpoint and --no-preprocessing choose within a run; --set changes a spec."""
    run_only = [name for name, given in (("--checkpoint", checkpoint),
                                         ("--no-preprocessing", raw)) if given]
    if run_only and not source.is_dir():
        raise click.UsageError(f"{source}: {run_only[0]} applies to a run directory, not a "
                               "spec")
    if overrides and source.is_dir():
        raise click.UsageError(f"{source}: --set applies to a spec; a run exports the spec it "
                               "was trained with")


def _initial_weights_source(spec) -> str:
    """What a spec's initial weights are: its seed's draws, and the values the spec gives
    (model.init_from's file, a layer's weights or init_from)."""
    from nnrun.compiler.schema import default_layer_names

    if spec.model.init_from is not None:
        return f"initial weights (from {spec.model.init_from})"
    given = [name for name, layer in zip(default_layer_names(spec.model.layers),
                                         spec.model.layers)
             if getattr(layer, "weights", None) is not None
             or getattr(layer, "init_from", None) is not None]
    return f"initial weights (seed {spec.seed}{''.join(f'; {name} as given' for name in given)})"


def _report(out_path: Path, exported: Exported) -> str:
    shape = ", ".join(str(d) for d in [BATCH_DIM, *exported.input_shape])
    out_shape = ", ".join(str(d) for d in [BATCH_DIM, *exported.output_shape])
    if exported.source.startswith("initial weights"):
        takes = ("samples as the model takes them (a spec has no fitted preprocessing; export a "
                 "run directory to include it)")
    elif exported.preprocessed:
        takes = ("samples already preprocessed as the run's training data was (--no-"
                 "preprocessing: apply the run's preprocessing.npz before feeding them)")
    else:
        takes = ("raw samples; preprocessing in the graph: "
                 f"{', then '.join(exported.preprocessing) or 'none'}")
    return "\n".join([
        wrote(out_path, f"ONNX opset {OPSET}, {exported.source}"),
        f"  input  '{INPUT_NAME}' {exported.dtype}[{shape}], {takes}",
        f"  output '{OUTPUT_NAME}' {exported.dtype}[{out_shape}], the last layer after its "
        "activation",
        f"  checked: onnx.checker (full check); {exported.check}"])
