"""What changed between the spec a run was trained with and the spec it is resumed with.

A change that alters the training (the data, the model, the optimizer, the seed, the batch
size...) would make the run's record false: the earlier epochs did not run that way. Such a
change needs --allow-changes, and is then recorded in the run directory. `train.epochs` and the
fields that only choose what is measured or shown may change freely. A change of what the
checkpoint's arrays mean (the model, dtype, loss or optimizer kind: checkpoint.spec_hash) is no
continuation at all: it starts a new run from the checkpoint's weights (model.init_from).
"""

from __future__ import annotations

from pathlib import Path

from nnrun.compiler.checks import metrics_alike
from nnrun.compiler.diagnostics import format_path
from nnrun.compiler.frontend import load_spec, load_spec_text
from nnrun.notices import shell_word

from .checkpoint import SPEC_HASH_FIELDS, spec_hash
from .options import option

# What is measured or shown, not how the run trains (log_grad_norms only adds outputs to the step)
FREE_FIELDS = ("train.epochs", "train.metrics", "train.log_grad_norms", "name", "limits")


class SpecChangeError(Exception):
    """Resuming with a spec that would train differently from how the run was trained."""


def spec_changes(run_spec: Path, resolved_text: str, trained_text: str | None = None,
                 overridden: tuple[str, ...] = ()) -> dict[str, dict]:
    """Dotted field name -> {"old": ..., "new": ...}, over the specs with defaults filled in;
    refused at once when the change alters what the run's checkpoint means. `trained_text`:
    the spec the checkpoint was trained with, where it is not run_spec's (edited since);
    `overridden`: the fields the command's options set."""
    old_spec = (load_spec(run_spec) if trained_text is None
                else load_spec_text(trained_text, str(run_spec))).spec
    new_spec = load_spec_text(resolved_text).spec
    changes = _changes(old_spec, new_spec)
    if spec_hash(old_spec) != spec_hash(new_spec):
        _refuse_changed_meaning(run_spec, changes, unfit_arrays(old_spec, new_spec),
                                overridden)
    if any(_names_a_meaning_field(name) for name in changes):
        # the hash leaves out layer names, which name the checkpoint's arrays: a layer renamed
        # holds none of them
        unfit = unfit_arrays(old_spec, new_spec)
        if unfit:
            _refuse_changed_meaning(run_spec, changes, unfit, overridden)
    return changes


def _refuse_changed_meaning(run_spec: Path, changes: dict[str, dict],
                            unfit: list[str] | None, overridden: tuple[str, ...] = ()) -> None:
    """Even with --allow-changes: the arrays fit only the model they were trained as (an
    activation or a loss of another kind would read them as something else)."""
    fields = [name for name in changes if _names_a_meaning_field(name)]
    shown = MEANING_CHANGES_SHOWN
    listed = "; ".join(f"{name}: {changes[name]['old']!r} -> {changes[name]['new']!r}"
                       for name in fields[:shown]) or "the model"
    new_run = (f"start a new run instead ({option('--out', 'NEW_DIR', placeholder=True)})"
               + from_its_weights(run_spec.parent.resolve() / "last.npz", unfit))
    if len(fields) > shown and set_by_options(fields, overridden):  # a layer --set anew
        listed += f", and {_more_fields(len(fields) - shown)}"
    elif len(fields) > shown:  # another spec given, not a change: the run's own resumes it
        raise SpecChangeError(
            f"{run_spec}: the spec given is another model than the run's ({listed}, and "
            f"{_more_fields(len(fields) - shown)}); to go on with the run, give its own spec: "
            f"nnrun train {shell_word(str(run_spec))} --resume "
            f"{shell_word(str(run_spec.parent))}; for the model given, "
            f"{new_run}")
    raise SpecChangeError(f"{run_spec}: {listed} changes the model the checkpoint was trained "
                          "as, which a run cannot go on with (not even with "
                          f"{option('--allow-changes')}); "
                          f"{new_run}")


MEANING_CHANGES_SHOWN = 3  # past them, a list says less than the fix


def _more_fields(count: int) -> str:
    return f"{count} more field{'s' if count > 1 else ''}"


def from_its_weights(weights: Path, unfit: list[str] | None) -> str:
    """How a new run begins from a checkpoint's weights (after "start a new run"):
    model.init_from takes every array it holds, so one that no longer fits (a layer resized or
    removed) must be left out; `unfit`: unfit_arrays'. The path is absolute: a relative
    init_from is relative to the spec file."""
    weights = weights.resolve()
    given = option("--set", f"model.init_from={weights}")
    if unfit is None:  # the new model's parameters are not known
        return f", with {given} to begin from its weights where they fit the new model"
    if not unfit:
        return f", with {given} to begin from its weights"
    return (f"; to begin from its weights, save a copy of {shell_word(str(weights))} without "
            f"the arrays the new model has no place for ({', '.join(unfit)}) and give that file's "
            "absolute path as model.init_from (docs/spec-reference.md, init_from)")


def unfit_arrays(old_spec, new_spec) -> list[str] | None:
    """The checkpoint's parameter arrays (params/NAME: batchnorm's running statistics too) the
    new model lacks or shapes otherwise; None where either model cannot be lowered."""
    from nnrun.compiler.builder import CompileError
    from nnrun.compiler.lower import lower

    try:
        old_model, new_model = lower(old_spec), lower(new_spec)
    except CompileError:
        return None
    old = {**old_model.params, **old_model.state}
    new = {**new_model.params, **new_model.state}
    return [f"params/{name}" for name, info in old.items()
            if name not in new or new[name].shape != info.shape]


def _names_a_meaning_field(name: str) -> bool:
    """A field spec_hash reads: init_from, which it leaves out, is not one."""
    if name == "model.init_from" or name.endswith(".init_from"):
        return False
    return any(_within(name, field) for field in SPEC_HASH_FIELDS)


def _changes(old_spec, new_spec) -> dict[str, dict]:
    if metrics_alike(old_spec, new_spec):  # a default left out, or spelled out
        train = new_spec.train.model_copy(update={"metrics": old_spec.train.metrics})
        new_spec = new_spec.model_copy(update={"train": train})
    old = _flat(old_spec.model_dump(mode="json"))
    new = _flat(new_spec.model_dump(mode="json"))
    return {name: {"old": old.get(name), "new": new.get(name)}
            for name in sorted(old.keys() | new.keys()) if old.get(name) != new.get(name)}


def model_changes(old_spec, new_spec) -> dict[str, dict]:
    """The changes of the fields that decide what a checkpoint's arrays mean."""
    return {name: change for name, change in _changes(old_spec, new_spec).items()
            if _names_a_meaning_field(name)}


def training_changes(changes: dict[str, dict]) -> dict[str, dict]:
    return {name: change for name, change in changes.items() if not _is_free(name)}


def _is_free(name: str) -> bool:
    return any(_within(name, free) for free in FREE_FIELDS)


# What the numbers of a run's evaluation, and its stored preprocessing, depend on (the seed:
# its validation split and feature permutation); augmentation changes the training only.
EVALUATED_FIELDS = ("seed", "data", "loss")
TRAINING_ONLY_FIELDS = ("data.augment",)


def evaluated_changes(changes: dict) -> list[str]:
    """The changed fields (and data files) that the numbers of an evaluation depend on."""
    return [name for name in changes if is_data_file_change(name)
            or (any(_within(name, field) for field in EVALUATED_FIELDS)
                and not any(_within(name, field) for field in TRAINING_ONLY_FIELDS))]


# A data file changed in place, as a change is named beside the spec's fields (its record in
# spec-changes.jsonl, its announcement): `data file PATH`, from the old SHA-256 to the new.
DATA_FILE = "data file "


def is_data_file_change(name: str) -> bool:
    return name.startswith(DATA_FILE)


def data_file_changes(recorded: dict | None, files: dict[str, Path], digests: dict[str, str],
                      changes: dict) -> dict[str, dict]:
    """The data files whose bytes are not the ones the checkpoint's epoch trained on
    (`recorded`: its meta's data_sha256; `files` and `digests`: data/fingerprint.py's, by
    role), each named by its absolute path, as the run's spec.yaml names it. None where the
    checkpoint recorded none (an older nnrun's), or where the spec's `changes` name other data
    (data.dataset or data.path), which they say already."""
    if recorded is None or "data.dataset" in changes or "data.path" in changes:
        return {}
    return {f"{DATA_FILE}{files[role].resolve()}": {"old": recorded.get(role), "new": digest}
            for role, digest in digests.items() if recorded.get(role) != digest}


def refuse_data_changes(run_dir, changes: dict[str, dict]) -> None:
    """A data file changed in place is a change of the data, as one of data.* in the spec
    is: the earlier epochs trained on other bytes."""
    files = [name.removeprefix(DATA_FILE) for name in changes if is_data_file_change(name)]
    if not files:
        return
    one = len(files) == 1
    raise SpecChangeError(
        f"{run_dir}: the data file{'' if one else 's'} {', '.join(files)} changed since the "
        f"run's checkpoint was written (another SHA-256); put "
        f"{'it' if one else 'them'} back as {'it was' if one else 'they were'}, or pass "
        f"{option('--allow-changes')} to continue on the new data (the change is recorded in "
        "the run directory)")


def set_by_options(names, overridden: tuple[str, ...]) -> bool:
    """Whether every changed field of `names` lies within a field the options set, or beside
    a type they set (which brings its type's defaults: a cosine's min_lr)."""
    typed = overridden + tuple(field.rsplit(".", 1)[0] for field in overridden
                               if field.endswith(".type"))
    return bool(overridden) and all(any(_within(name, field) for field in typed)
                                    for name in names)


def _within(name: str, field: str) -> bool:
    """Whether the leaf path `name` is `field` or lies under it."""
    return name == field or name.startswith((f"{field}.", f"{field}["))


def refuse_training_changes(run_dir, changes: dict[str, dict], edited: bool = False,
                            overridden: tuple[str, ...] = ()) -> None:
    """`edited`: the run's spec.yaml was edited by hand since its checkpoint, so it is no
    longer the spec to resume with. `overridden`: the fields the command's options set
    (--set, --batch-size, --seed)."""
    altered = training_changes(changes)
    if not altered:
        return
    listed = "; ".join(f"{name}: {change['old']!r} -> {change['new']!r}"
                       for name, change in altered.items())
    if edited:
        own = f"undo the edit of {run_dir}/spec.yaml (made after its checkpoint)"
    elif set_by_options(altered, overridden):
        named = [name for name in altered if any(_within(name, field) for field in overridden)]
        own = f"resume without the options that change {', '.join(named or altered)}"
    else:
        own = f"resume with the run's own spec ({run_dir}/spec.yaml)"
    raise SpecChangeError(f"{run_dir}: the spec differs from the one the run was trained with "
                          f"({listed}); {own}, or pass {option('--allow-changes')} to continue "
                          "with the new settings (the change is recorded in the run directory)")


def bracketed(name: str) -> str:
    """A field name as _flat writes it, from one a record of an earlier version wrote with
    dotted indices (model.layers.0.units -> model.layers[0].units); a data file's, as it is."""
    if is_data_file_change(name):
        return name
    return format_path(int(part) if part.isdigit() else part for part in name.split("."))


def _flat(value, keys: tuple = ()) -> dict:
    """Leaf path -> value, paths as --set and the errors write them: model.layers[0].units."""
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {path: leaf for key, item in items
                for path, leaf in _flat(item, (*keys, key)).items()}
    return {format_path(keys): value}
