"""What training would refuse, found without data: `nnrun validate` reports it as errors at
the spec's positions, and training uses the same rules (issue 10, item 8)."""

from __future__ import annotations

from .ir import Origin

# Training batches track these metrics (cheap); validation tracks every metric.
TRAIN_METRICS = ("accuracy", "top_k_accuracy")
SPATIAL_AUGMENTATIONS = ("random_shift", "random_flip")


def metric_name(metric) -> str:
    return f"top_{metric.k}_accuracy" if metric.type == "top_k_accuracy" else metric.type


def has_validation(spec) -> bool:
    return spec.data is not None and spec.data.validation_split > 0


def monitor_names(spec, validation: bool) -> list[str]:
    """The keys of metrics.jsonl an early-stopping monitor may name."""
    metrics = spec.train.metrics
    train = ["loss", *(metric_name(m) for m in metrics if m.type in TRAIN_METRICS)]
    names = [f"train_{name}" for name in train]
    if validation:
        names += [f"val_{name}" for name in ["loss", *map(metric_name, metrics)]]
    return names


def training_errors(spec, sample_shape: list[int]) -> list[tuple[Origin, str]]:
    """(origin, message) of each problem that would stop `nnrun train` once it has data."""
    if spec.data is None:  # training refuses that already; validate checks the architecture
        return []
    return _augmentation_errors(spec, sample_shape) + _monitor_errors(spec)  # in file order


def _monitor_errors(spec) -> list[tuple[Origin, str]]:
    stopping = spec.train.early_stopping
    names = monitor_names(spec, has_validation(spec))
    if stopping is None or stopping.monitor in names:
        return []
    origin = Origin("train.early_stopping", keys=("train", "early_stopping", "monitor"))
    reason = ""
    if stopping.monitor.startswith("val_") and not has_validation(spec):
        reason = " (val_* metrics need data.validation_split > 0)"
    return [(origin, f"'{stopping.monitor}' will not be a metric of this run{reason}; "
                     f"choose one of: {', '.join(names)}")]


def _augmentation_errors(spec, sample_shape: list[int]) -> list[tuple[Origin, str]]:
    errors = []
    for index, augmentation in enumerate(spec.data.augment):
        origin = Origin(f"data.augment[{index}]", keys=("data", "augment", index))
        if augmentation.type in SPATIAL_AUGMENTATIONS and len(sample_shape) < 2:
            errors.append((origin, f"{augmentation.type} needs samples with a spatial axis "
                                   f"([C, L] or [C, H, W]), these are {sample_shape}; remove "
                                   "it or use gaussian_noise"))
        elif getattr(augmentation, "axis", None) == "vertical" and len(sample_shape) < 3:
            errors.append((origin.at_field("axis"), f"random_flip axis vertical needs 2-D "
                                                    f"samples [C, H, W], these are "
                                                    f"{sample_shape}; use axis: horizontal"))
    return errors
