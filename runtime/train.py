"""The training loop: batches through the compiled training-step graph, per-epoch evaluation,
metrics.jsonl, checkpoints, early stopping, resume, and the run's summary.json.

Randomness: epoch e draws from default_rng([seed, e]) (shuffling, then per batch augmentation
and dropout), so a run resumed at an epoch boundary repeats exactly what an uninterrupted run
does; the checkpoint records the epoch, which is the whole RNG state.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from nnrun.compiler.checks import TRAIN_METRICS, monitor_names
from nnrun.compiler.datasets import DATASETS
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import resolved_spec_data, spec_yaml
from nnrun.compiler.ir import Origin

from . import checkpoint as ckpt
from .data import DataError, augment_batch, load_dataset
from .data.preprocessing import save_preprocessing
from .data.targets import check_targets_fit
from .files import write_text_atomically
from .metrics import default_mode, metric_name, metric_sum
from .model import Model, target_array
from .progress import EpochProgress, print_final_table
from .pruning import MagnitudePruner
from .schedules import learning_rate




class TrainingError(Exception):
    """Training cannot go on (bad data for this model, a diverged loss, a bad resume)."""


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    epochs_since_best: int = 0


def train(source, backend: str = "numpy", out_dir=None, resume=None, quiet: bool = False,
          max_steps: int | None = None) -> dict:
    """Trains `source` (a SourceSpec) and returns the run summary. `max_steps` caps the
    batches per epoch (for quick checks)."""
    trainer = Trainer(source, backend, quiet=quiet, max_steps=max_steps)
    return trainer.run(_run_directory(source, out_dir, resume), resume is not None)


def _run_directory(source, out_dir, resume) -> Path:
    if resume is not None:
        return Path(resume)
    if out_dir is not None:
        return Path(out_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / source.spec.name / stamp


class Trainer:
    def __init__(self, source, backend: str, quiet: bool = False, max_steps: int | None = None):
        self.source, self.spec = source, source.spec
        self.quiet, self.max_steps = quiet, max_steps
        if self.spec.data is None:
            raise TrainingError(f"{source.loaded.filename}: training needs a data section "
                                "(data: {dataset: ...})")
        self.data = load_dataset(self.spec.data, spec_dir=source.directory, seed=self.spec.seed,
                                 dtype=self.spec.dtype)
        _require_input_shape(source, self.data)
        self.model = Model(source, backend)
        self.backend = self.model.backend
        check_data_fits(self.spec, self.model, self.data)
        self.pruner = self._pruner()

    def _pruner(self) -> MagnitudePruner | None:
        pruning = self.spec.train.pruning
        if pruning is None:
            return None
        weights = [n for n, info in self.model.lowered.params.items() if n.endswith(".weight")]
        return MagnitudePruner(pruning, weights, self.spec.train.epochs, self.backend.xp)

    # --- state ----------------------------------------------------------------------------

    def initial_state(self) -> dict:
        return self.model.train_state(self.spec.seed)

    def host_state(self) -> dict:
        return {name: self.backend.to_host(value) for name, value in self.state.items()}

    def expected_shapes(self) -> dict:
        shapes = {name: info.shape for name, info in self.model.param_infos.items()}
        optimizer_state = self.model.train_step.optimizer_state
        shapes.update({name: shapes[param] for name, param in optimizer_state.items()})
        return shapes

    # --- the run --------------------------------------------------------------------------

    def run(self, run_dir: Path, resuming: bool) -> dict:
        self.run_dir = run_dir
        self._check_monitor()
        started = time.perf_counter()
        self.state, self.history, self.global_step, first_epoch = self._start(resuming)
        save_preprocessing(run_dir, self.data.preprocessing)
        stopped_early = False
        for epoch in range(first_epoch, self.spec.train.epochs + 1):
            row = self.train_epoch(epoch)
            self.history.rows.append(row)
            self._append_metrics(row)
            if self._after_epoch(epoch, row):
                stopped_early = True
                break
        return self._finish(started, stopped_early)

    def _start(self, resuming: bool):
        if not resuming:
            _prepare_new_run(self.run_dir, self.source)
            return self.initial_state(), History(), 0, 1
        return self._resume()

    def _resume(self):
        path = self.run_dir / "last.npz"
        if not path.exists():
            raise TrainingError(f"{self.run_dir}: no last.npz to resume from")
        saved, meta = ckpt.load_checkpoint(path)
        ckpt.check_compatible(path, meta, saved, self.spec, self.expected_shapes())
        history = History(best_value=meta.get("best_value"), best_epoch=meta.get("best_epoch", 0),
                          epochs_since_best=meta.get("epochs_since_best", 0))
        history.rows = _read_metrics(self.run_dir / "metrics.jsonl", meta["epoch"])
        _rewrite_metrics(self.run_dir / "metrics.jsonl", history.rows)
        state = {name: self.backend.from_host(saved[name]) for name in self.expected_shapes()}
        # The run now follows this spec (e.g. more epochs); record it as run.
        write_text_atomically(self.run_dir / "spec.yaml", resolved_spec_text(self.source))
        return state, history, meta["step"], meta["epoch"] + 1

    def train_epoch(self, epoch: int) -> dict:
        train = self.data.train
        rng = np.random.default_rng([self.spec.seed, epoch])
        batches = _batches(len(train.x), self.spec.train.batch_size, self.spec.train.shuffle, rng)
        if self.max_steps:
            batches = batches[: self.max_steps]
        if self.pruner:
            self.pruner.start_epoch(epoch, self.state)
        progress = EpochProgress(epoch, self.spec.train.epochs, len(batches), disabled=self.quiet)
        totals = _Totals(m for m in self.spec.train.metrics if m.type in TRAIN_METRICS)
        started = time.perf_counter()
        for index, batch in enumerate(batches):
            lr = learning_rate(self.spec.optimizer, epoch - 1, index, len(batches),
                               self.spec.train.epochs)
            labels = train.y[batch]
            outputs = self.train_step(train.x[batch], labels, lr, rng, epoch, index)
            totals.add(outputs, labels, self.backend)
            progress.update(totals.running_loss())
        seconds = time.perf_counter() - started
        row = {"epoch": epoch, **totals.means("train_"), "lr": lr}
        row.update(self.evaluate_split("val"))
        row.update({"epoch_s": round(seconds, 4), "samples_per_s": round(totals.count / seconds, 1)})
        row.update(totals.grad_norms())
        if self.pruner:
            row["sparsity"] = round(self.pruner.sparsity(self.state), 6)
        progress.close(row)
        return row

    def train_step(self, x, y, lr: float, rng, epoch: int, index: int) -> dict:
        if self.spec.data.augment:
            x = augment_batch(x, self.spec.data.augment, rng)
        self.global_step += 1
        feeds = self.model.step_feeds(self.state, x, y, lr, self.global_step, rng.integers(2**63))
        # A diverging loss is reported below, in one line; NumPy's warnings would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            outputs, updates = self.model.step_executor.run(feeds)
        loss = float(outputs["loss"])
        if not math.isfinite(loss):
            raise TrainingError(self._diverged_message(loss, epoch, index + 1, lr))
        self.state.update(updates)
        if self.pruner:
            self.pruner.apply(self.state)
        return outputs

    def _diverged_message(self, loss, epoch, step, lr) -> str:
        optimizer = self.spec.optimizer
        causes = [f"the learning rate ({lr:g}) may be too high: lower optimizer.lr"]
        if not optimizer.clip_grad_norm:
            causes.append("gradients may be exploding: set optimizer.clip_grad_norm (e.g. 1.0)")
        kept = self.run_dir / "last.npz"
        last = f"last good checkpoint: {kept}" if kept.exists() else "no checkpoint was written yet"
        return f"loss became {loss} at epoch {epoch}, step {step}; {'; '.join(causes)}; {last}"

    # --- evaluation -----------------------------------------------------------------------

    def evaluate_split(self, split: str, state=None) -> dict:
        data = getattr(self.data, split)
        if data is None:
            return {}
        return evaluate(self.model, state or self.state, data, split)

    # --- after each epoch -----------------------------------------------------------------

    def _append_metrics(self, row: dict) -> None:
        _append_metrics_line(self.run_dir / "metrics.jsonl", row)

    def _after_epoch(self, epoch: int, row: dict) -> bool:
        """Checkpoints and early stopping; True when training should stop."""
        monitor, mode, stopping = self._monitor()
        value = row.get(monitor)
        history = self.history
        improved = value is not None and (
            history.best_value is None or _better(value, history.best_value, mode,
                                                  stopping.min_delta if stopping else 0.0))
        if improved:
            history.best_value, history.best_epoch, history.epochs_since_best = value, epoch, 0
        else:
            history.epochs_since_best += 1
        meta = self._meta(epoch)
        if improved:
            ckpt.save_checkpoint(self.run_dir / "best.npz", self.host_state(), meta)
        ckpt.save_checkpoint(self.run_dir / "last.npz", self.host_state(), meta)
        return bool(stopping and history.epochs_since_best >= stopping.patience)

    def metric_names(self) -> list[str]:
        """The keys of metrics.jsonl an early-stopping monitor may name."""
        return monitor_names(self.spec, self.data.val is not None)

    def _check_monitor(self) -> None:
        stopping = self.spec.train.early_stopping
        if stopping and stopping.monitor not in self.metric_names():
            where = f"{self.source.loaded.filename}: train.early_stopping.monitor"
            raise TrainingError(f"{where}: '{stopping.monitor}' is not a metric of this run; "
                                f"choose one of: {', '.join(self.metric_names())}")

    def _monitor(self):
        stopping = self.spec.train.early_stopping
        default = "val_loss" if self.data.val is not None else "train_loss"
        monitor = stopping.monitor if stopping else default
        mode = stopping.mode if stopping and stopping.mode != "auto" else default_mode(monitor)
        return monitor, mode, stopping

    def _meta(self, epoch: int) -> dict:
        history = self.history
        return {"epoch": epoch, "step": self.global_step, "spec_hash": ckpt.spec_hash(self.spec),
                "seed": self.spec.seed, "rng": {"seed": self.spec.seed, "next_epoch": epoch + 1},
                "best_value": history.best_value, "best_epoch": history.best_epoch,
                "epochs_since_best": history.epochs_since_best, "version": 1,
                "backend": self.backend.name}

    def _finish(self, started: float, stopped_early: bool) -> dict:
        final = self._final_metrics(self._final_checkpoint())
        rows = self.history.rows
        wall = time.perf_counter() - started
        summary = {
            "backend": self.backend.name, "epochs_run": len(rows), "stopped_early": stopped_early,
            "best_epoch": self.history.best_epoch, "final": final,
            "samples_per_s": round(float(np.mean([r["samples_per_s"] for r in rows])), 1) if rows else 0.0,
            "wall_s": round(wall, 3), "run_dir": str(self.run_dir),
        }
        write_text_atomically(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if not self.quiet:
            print_final_table(summary, rows)
        return summary

    def _final_checkpoint(self) -> Path:
        """The run's model, whose numbers `train` reports and `eval`/`predict` use by default:
        best.npz (the best epoch by the monitor), or last.npz with restore_best: false."""
        stopping = self.spec.train.early_stopping
        best = self.run_dir / "best.npz"
        keep_last = stopping is not None and not stopping.restore_best
        return self.run_dir / "last.npz" if keep_last or not best.exists() else best

    def _final_metrics(self, checkpoint: Path) -> dict:
        """Every number from one checkpoint: train_loss is its epoch's line of metrics.jsonl,
        the val and test numbers are evaluated on its weights."""
        saved, meta = ckpt.load_checkpoint(checkpoint)
        state = {name: self.backend.from_host(saved[name]) for name in self.state}
        epoch = meta["epoch"]
        row = next((row for row in self.history.rows if row["epoch"] == epoch), {})
        final = {"checkpoint": checkpoint.name, "epoch": epoch, "train_loss": row.get("train_loss")}
        for split in ("val", "test"):
            final.update(self.evaluate_split(split, state))
        final.setdefault("val_loss", None)
        final.setdefault("test_loss", None)
        if any(m.type == "accuracy" for m in self.spec.train.metrics):
            final.setdefault("val_accuracy", None)
            final.setdefault("test_accuracy", None)
        return final


# --- helpers --------------------------------------------------------------------------------


def evaluate(model, state, split, prefix: str, batch_size: int = 1000) -> dict:
    """Loss and metrics of `state` on a data split, in inference mode, keys `<prefix>_...`."""
    spec, be = model.spec, model.backend
    totals = _Totals(spec.train.metrics, spec.loss.type)
    for start in range(0, len(split.x), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        feeds = dict(state)
        feeds.update(x=be.from_host(x), y=be.from_host(target_array(spec, model.lowered, y)))
        outputs, _ = model.evaluation_executor.run(feeds)
        totals.add(outputs, y, be)
    return totals.means(f"{prefix}_")


class _Totals:
    """Running sums of loss, metrics and gradient norms over batches (an epoch or a split)."""

    def __init__(self, metrics, loss: str | None = None):
        self.tracked, self.loss_type = list(metrics), loss
        self.loss, self.count, self.metrics, self.norms, self.steps = 0.0, 0, {}, {}, 0

    def add(self, outputs, y, be) -> None:
        n = len(y)
        self.loss += float(outputs["loss"]) * n
        self.count += n
        self.steps += 1
        logits, prediction = be.to_host(outputs["logits"]), be.to_host(outputs["prediction"])
        for metric in self.tracked:
            name = metric_name(metric)
            total = metric_sum(metric, logits, prediction, y, self.loss_type)
            self.metrics[name] = self.metrics.get(name, 0.0) + total
        for name, value in outputs.items():
            if name.startswith("grad_norm/"):
                self.norms[name] = self.norms.get(name, 0.0) + float(value)

    def running_loss(self) -> float:
        return self.loss / max(self.count, 1)

    def means(self, prefix: str) -> dict:
        result = {f"{prefix}loss": self.loss / self.count}
        result.update({f"{prefix}{k}": v / self.count for k, v in self.metrics.items()})
        return result

    def grad_norms(self) -> dict:
        return {name: value / self.steps for name, value in self.norms.items()}


def _batches(count: int, batch_size: int, shuffle: bool, rng) -> list[np.ndarray]:
    order = rng.permutation(count) if shuffle else np.arange(count)
    return [order[i:i + batch_size] for i in range(0, count, batch_size)]


def _better(value: float, best: float, mode: str, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _require_input_shape(source, data) -> None:
    """npz/csv samples have no static shape: the spec must state it; say which one fits."""
    spec = source.spec
    if spec.model.input_shape or DATASETS[spec.data.dataset].input_shape:
        return
    shape = list(data.input_shape)
    origin = Origin("model", keys=("model",))
    raise SpecError([source.diagnostic(origin, f"model.input_shape is needed: {spec.data.path} "
                                               f"has samples of shape {shape}; add "
                                               f"input_shape: {shape} under model")])


def check_data_fits(spec, model, data) -> None:
    """Labels must fit the output layer; samples must have the model's input shape."""
    where = spec.data.path or spec.data.dataset
    expected = tuple(model.lowered.graph.inputs[0].type.shape[1:])
    if tuple(data.input_shape) != expected:
        raise TrainingError(f"{where}: samples have shape {list(data.input_shape)}, the model "
                            f"expects {list(expected)}; set model.input_shape to "
                            f"{list(data.input_shape)}")
    outputs = model.lowered.logits.type.shape[1:]
    check_targets_fit(spec, data, outputs, where)
    labels = np.concatenate([s.y.ravel() for s in (data.train, data.val, data.test) if s is not None])
    if spec.loss.type == "cross_entropy":
        top = int(labels.max())
        if top >= outputs[0]:
            raise TrainingError(f"{where}: labels go up to {top} but the model has {outputs[0]} "
                                f"outputs; set the last layer's units to {top + 1}")
    elif spec.loss.type == "binary_cross_entropy" and not np.isin(labels, (0, 1)).all():
        raise TrainingError(f"{where}: binary_cross_entropy needs 0/1 labels; use cross_entropy "
                            "for more classes")
    elif data.task != "regression" and len(outputs) == 1 and outputs[0] > 1:
        top = int(labels.max())
        if top >= outputs[0]:  # labels become one-hot targets of the outputs
            raise TrainingError(f"{where}: labels go up to {top} but the model has {outputs[0]} "
                                f"outputs; set the last layer's units to {top + 1}")


def _prepare_new_run(run_dir: Path, source) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = [name for name in ("last.npz", "metrics.jsonl") if (run_dir / name).exists()]
    if existing:
        raise TrainingError(f"{run_dir}: already holds a run ({', '.join(existing)}); use "
                            "--resume to continue it or choose another --out")
    (run_dir / "metrics.jsonl").write_text("")
    (run_dir / "spec.yaml").write_text(resolved_spec_text(source))


def resolved_spec_text(source) -> str:
    """The spec as run, every default filled in: overrides applied, data.path made absolute."""
    data = resolved_spec_data(source)
    if data.get("data", {}).get("path"):
        data["data"]["path"] = str((source.directory / data["data"]["path"]).resolve())
    return spec_yaml(data)


def _append_metrics_line(path: Path, row: dict) -> None:
    with open(path, "a") as stream:
        stream.write(json.dumps(row) + "\n")


def _read_metrics(path: Path, through_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["epoch"] <= through_epoch]


def _rewrite_metrics(path: Path, rows: list[dict]) -> None:
    write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))


__all__ = ["train", "Trainer", "TrainingError", "DataError", "evaluate"]
