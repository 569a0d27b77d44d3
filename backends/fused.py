"""The generic form of the kernels a device backend may fuse: written once against `self.xp`,
operation for operation as the ops' plain forwards round, so that the planned executor gives
their results bit for bit. `ArrayBackend` inherits them; the CuPy backend overrides each with a
kernel of its own (backends/cupy_kernels.py) and falls back here for what it does not cover.

`out` is always (result, ..., *scratch), the buffers the op's scratch rule declared."""

from __future__ import annotations

import math

import numpy as np


class FusedKernels:
    xp = None
    # A reduction along an axis whose elements lie in runs shorter than this (the channels of
    # a small map) goes over a copy whose reduced axis leads (softmax, its cross-entropy):
    # NumPy's reductions take a run at a time (from runs of 144 the copy cost softmax's
    # gradient 7-10%). A GPU's are no slower there, and would only gain copy kernels: 0.
    short_runs_by_copy_below = 128

    # --- activations, alone or after a bias ------------------------------------------------

    def activation_into(self, activation, alpha, x, out) -> None:
        """out[0] = activation(x) (no scratch)."""
        xp = self.xp
        y = out[0]
        if activation == "relu":
            self.relu_into(x, y)
        elif activation == "leaky_relu":
            # where(x > 0, x, alpha x) is the larger of x and alpha x for alpha <= 1, the
            # smaller for alpha > 1 (equal values; np.where has no out= and copyto(where=)
            # is very slow).
            xp.multiply(x, alpha, out=y)
            (xp.maximum if alpha <= 1 else xp.minimum)(x, y, out=y)
        elif activation == "sigmoid":
            self._sigmoid_into(x, y)
        elif activation == "tanh":
            xp.tanh(x, out=y)
        else:
            raise ValueError(f"no fused kernel for activation {activation!r}")

    def relu_into(self, x, y) -> None:
        """y = max(x, 0); y may be x."""
        self.xp.maximum(x, 0, out=y)

    def _sigmoid_into(self, x, y) -> None:
        # 1 / (1 + exp(-x)) as the forward (compiler/ops/activation.py) rounds it; y may be x
        xp = self.xp
        with np.errstate(over="ignore"):  # exp(-x) is inf below about -88 (float32): 1/inf = 0
            xp.negative(x, out=y)
            xp.exp(y, out=y)
            xp.add(y, 1, out=y)
            xp.divide(1, y, out=y)

    def bias_activation_into(self, activation, alpha, x, b, out) -> None:
        """out[0] = activation(x + b), b along axis 1. Scratch: relu none (computed in place);
        the others the pre-activation, then the activation's own scratch."""
        if activation == "relu":
            self.bias_add_into(x, b, out[0])
            self.relu_into(out[0], out[0])
            return
        y, pre_activation, *scratch = out
        self.bias_add_into(x, b, pre_activation)
        self.activation_into(activation, alpha, pre_activation, (y, *scratch))

    def bias_add_into(self, x, b, y) -> None:
        # Into another buffer: the bias first, then x. A broadcast operand in a ufunc, in place
        # or not, makes NumPy allocate a buffer at each call; the broadcast copy does not (and
        # is as fast). b + x == x + b exactly. The memory plan never puts y over x (the op
        # declares no overwrites); a caller that does gets the buffered addition.
        b = b.reshape((1, -1) + (1,) * (x.ndim - 2))
        if self.xp.may_share_memory(x, y):  # y is x (memory_plan: OpDef.overwrites)
            self.xp.add(x, b, out=y)
            return
        self.xp.copyto(y, b)
        self.xp.add(y, x, out=y)

    # --- optimizer updates ----------------------------------------------------------------
    # PyTorch's update rules; `out` is (new_param, *new_state, scratch_a, scratch_b) and may be
    # the param and state inputs themselves (updated in place). lr and step are 0-d arrays.

    def optimizer_update_into(self, rule, attrs, out, p, g, lr, step, *state) -> None:
        if rule == "sgd_update":
            self._sgd_into(attrs, out, p, g, lr, *state)
        elif rule == "adam_update":
            self._adam_into(attrs, out, p, g, lr, step, *state)
        elif rule == "rmsprop_update":
            self._rmsprop_into(attrs, out, p, g, lr, *state)
        elif rule == "adagrad_update":
            self._adagrad_into(attrs, out, p, g, lr, *state)
        else:
            raise ValueError(f"no fused update for {rule!r}")

    def _with_weight_decay(self, weight_decay, g, p, work):
        """g + weight_decay * p (into `work`), or g itself without weight decay."""
        if not weight_decay:
            return g
        self.xp.multiply(p, weight_decay, out=work)
        return self.xp.add(g, work, out=work)

    def _square_average_into(self, average, decay, g, out, work) -> None:
        """out = decay * average + (1 - decay) * g * g, in that order of operations."""
        xp = self.xp
        xp.multiply(average, decay, out=out)
        xp.multiply(g, 1 - decay, out=work)
        xp.multiply(work, g, out=work)
        xp.add(out, work, out=out)

    def _sgd_into(self, attrs, out, p, g, lr, *velocity) -> None:
        xp = self.xp
        new_p, *new_state, a, b = out
        g = self._with_weight_decay(attrs.weight_decay, g, p, a)
        if not attrs.momentum:
            xp.multiply(lr, g, out=b)
            xp.subtract(p, b, out=new_p)
            return
        (v,), (new_v,) = velocity, new_state
        xp.multiply(v, attrs.momentum, out=new_v)
        xp.add(new_v, g, out=new_v)
        direction = new_v
        if attrs.nesterov:
            xp.multiply(new_v, attrs.momentum, out=b)
            direction = xp.add(g, b, out=b)
        xp.multiply(lr, direction, out=b)
        xp.subtract(p, b, out=new_p)

    def adam_scalars(self, attrs, lr, step, dtype) -> tuple:
        """Adam's step size lr / (1 - beta1^t), the root of its second correction
        sqrt(1 - beta2^t), and AdamW's decay 1 - lr * weight_decay: in float64, as PyTorch
        computes them from Python floats, each rounded once to the parameters' dtype (in
        float32, 1 - 0.999^t is 1e-5 off in the first steps, 0.999 being 0.99900001 there)."""
        xp = self.xp
        lr, step = lr.astype(xp.float64), step.astype(xp.float64)
        step_size = lr / (1 - attrs.beta1 ** step)
        root_correction2 = xp.sqrt(1 - attrs.beta2 ** step)
        decay = 1 - lr * attrs.weight_decay
        return tuple(value.astype(dtype) for value in (step_size, root_correction2, decay))

    def _adam_into(self, attrs, out, p, g, lr, step, m, v) -> None:
        xp = self.xp
        new_p, new_m, new_v, a, b = out
        step_size, root_correction2, decay = self.adam_scalars(attrs, lr, step, p.dtype)
        if attrs.decoupled:
            p = xp.multiply(p, decay, out=new_p)
        else:
            g = self._with_weight_decay(attrs.weight_decay, g, p, a)
        xp.multiply(m, attrs.beta1, out=new_m)
        xp.multiply(g, 1 - attrs.beta1, out=b)
        xp.add(new_m, b, out=new_m)
        self._square_average_into(v, attrs.beta2, g, new_v, b)
        xp.sqrt(new_v, out=b)
        xp.divide(b, root_correction2, out=b)
        xp.add(b, attrs.eps, out=b)
        xp.multiply(step_size, new_m, out=a)
        xp.divide(a, b, out=a)
        xp.subtract(p, a, out=new_p)

    def _rmsprop_into(self, attrs, out, p, g, lr, square_avg, *buffer) -> None:
        xp = self.xp
        new_p, new_square_avg, *new_buffer, a, b = out
        g = self._with_weight_decay(attrs.weight_decay, g, p, a)
        self._square_average_into(square_avg, attrs.alpha, g, new_square_avg, b)
        xp.sqrt(new_square_avg, out=b)
        xp.add(b, attrs.eps, out=b)
        scaled = xp.divide(g, b, out=b)
        if attrs.momentum:
            (buf,), (new_buf,) = buffer, new_buffer
            xp.multiply(buf, attrs.momentum, out=new_buf)
            scaled = xp.add(new_buf, scaled, out=new_buf)
        xp.multiply(lr, scaled, out=b)
        xp.subtract(p, b, out=new_p)

    def _adagrad_into(self, attrs, out, p, g, lr, total) -> None:
        xp = self.xp
        new_p, new_total, a, b = out
        g = self._with_weight_decay(attrs.weight_decay, g, p, a)
        xp.multiply(g, g, out=b)
        xp.add(total, b, out=new_total)
        xp.sqrt(new_total, out=b)
        xp.add(b, attrs.eps, out=b)
        xp.multiply(lr, g, out=a)
        xp.divide(a, b, out=a)
        xp.subtract(p, a, out=new_p)

    # --- max pooling that keeps its argmax --------------------------------------------------

    def pool_positions(self, padded_shape, out_spatial, kernel, stride, dilation):
        """max_pool_index_into's `positions` for a padded input [B, C, *padded]: each window's
        first flat position in its sample's [C, *padded] ([B, C, *out]), and each kernel
        offset's distance from it ([K], in the order of window_slices)."""
        xp = self.xp
        spatial = padded_shape[2:]
        steps = [math.prod(spatial[axis + 1:]) for axis in range(len(spatial))]
        starts = xp.arange(padded_shape[1], dtype=xp.int64) * math.prod(spatial)
        starts = starts.reshape(1, -1, *(1,) * len(spatial))
        offsets = xp.zeros(1, dtype=xp.int64)
        for axis, (n, k, s, d, step) in enumerate(zip(out_spatial, kernel, stride, dilation,
                                                      steps)):
            along = [1] * len(spatial)
            along[axis] = n
            starts = starts + (xp.arange(n, dtype=xp.int64) * s * step).reshape(1, 1, *along)
            offsets = (offsets[:, None] + xp.arange(k, dtype=xp.int64) * d * step).reshape(-1)
        whole = (padded_shape[0], padded_shape[1], *out_spatial)
        return xp.ascontiguousarray(xp.broadcast_to(starts, whole)), offsets

    def max_pool_index_into(self, padded, kernel, stride, dilation, positions, out) -> None:
        """out = (y, index, first_max, change, larger): the maximum of each window of the
        padded input [B, C, *padded] and its flat position in its sample's [C, *padded].
        positions: (each window's first position [B, C, *out], each kernel offset's [K])."""
        # A running maximum over the offsets' strided views (NumPy's argmax along a short
        # window axis would copy every window and crawl). Only a strictly larger value moves
        # the maximum, so ties keep the first offset, as argmax does. The offset is tracked in
        # int8 arithmetic, with the comparison's booleans read as int8 (the same bytes).
        xp = self.xp
        y, index, first_max, change, larger = out
        if tuple(kernel) == tuple(padded.shape[2:]):  # one window, the whole input: a global pool
            channels = padded.reshape(*padded.shape[:2], -1)
            xp.copyto(y, channels.max(axis=2).reshape(y.shape))
            xp.copyto(index, channels.argmax(axis=2).reshape(index.shape))  # the first maximum
        else:
            self._running_max_into(padded, kernel, stride, dilation, y, first_max, change, larger)
            xp.copyto(index, first_max)  # widened first: take would convert small indices
        starts, offsets = positions
        self.take_into(offsets, index, index)
        xp.add(index, starts, out=index)

    def _running_max_into(self, padded, kernel, stride, dilation, y, first_max, change,
                          larger) -> None:
        """y: the windows' maxima; first_max: the offset of the first of each."""
        xp = self.xp
        every = (slice(None), slice(None))
        views = [padded[(*every, *slices)] for _, slices in
                 self.window_slices(padded.shape[2:], kernel, stride, dilation)]
        xp.copyto(y, views[0])
        first_max.fill(0)
        larger_count = larger.view(first_max.dtype) if first_max.dtype.itemsize == 1 else larger
        with self.short_buffers():
            for offset, candidate in enumerate(views[1:], start=1):
                xp.greater(candidate, y, out=larger)
                xp.maximum(y, candidate, out=y)
                xp.subtract(offset, first_max, out=change)  # first_max: offset where larger
                xp.multiply(change, larger_count, out=change)
                xp.add(first_max, change, out=first_max)

    def max_pool_grad_index_into(self, g, index, kernel, stride, dilation, sample_starts,
                                 target, positions) -> None:
        """target [B, C, *padded] = g put at the positions max_pool_index saved (summed where
        windows overlap). sample_starts [B, ...]: b * (a sample's size)."""
        xp = self.xp
        target.fill(0)
        xp.add(index, sample_starts, out=positions)
        flat = target.reshape(-1)
        if any(s < d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation)):
            xp.add.at(flat, positions.reshape(-1), g.reshape(-1))  # an input in two windows
        else:
            flat[positions] = g  # each input is in one window at most

    # --- softmax cross-entropy ----------------------------------------------------------------
    # Scores [B, K, *S], labels [B, *S]; `out` is (loss or gradient, log_probs, target, row,
    # positions, picked[, mask, ignored]). label_starts [B, *S]: b*K*S + s, the flat position
    # of class 0 for each label position.
    # Where the S positions of a sample are few (a small map: 16 for 4x4), each class's scores
    # lie in short runs, which NumPy reduces one at a time: the maximum over the 64 classes of
    # [256, 64, 4, 4] took 0.5 ms, over the leading axis of a class-major copy 0.05 ms. Both
    # add the classes one after the other, in order: the same sums. One position (S = 1) is
    # summed pairwise instead, and long runs are reduced as fast where they lie.

    def softmax_cross_entropy_into(self, attrs, logits, labels, label_starts, out) -> None:
        loss, log_probs, target, *rest = out
        count = self._log_softmax_and_target_into(attrs, logits, labels, label_starts,
                                                  log_probs, target, *rest)
        self._mean_loss_into(target, log_probs, count, target, loss)

    def softmax_cross_entropy_grad_into(self, attrs, g, logits, labels, label_starts,
                                        out) -> None:
        grad, log_probs, target, *rest = out
        count = self._log_softmax_and_target_into(attrs, logits, labels, label_starts,
                                                  log_probs, target, *rest)
        self._gradient_into(attrs, g, count, log_probs, target, rest, grad)

    def softmax_cross_entropy_with_grad_into(self, attrs, g, logits, labels, label_starts,
                                             out) -> None:
        """The two above from one log softmax and target: out = (loss, grad, *their scratch).
        The loss's terms go through `grad` (the forward writes them over `target`, which the
        gradient still needs): the same sum of the same values."""
        loss, grad, log_probs, target, *rest = out
        count = self._log_softmax_and_target_into(attrs, logits, labels, label_starts,
                                                  log_probs, target, *rest)
        self._mean_loss_into(target, log_probs, count, grad, loss)
        self._gradient_into(attrs, g, count, log_probs, target, rest, grad)

    def _mean_loss_into(self, target, log_probs, count, terms, loss) -> None:
        """loss = -sum(target * log_probs) / count, the products written into `terms`."""
        xp = self.xp
        xp.multiply(target, log_probs, out=terms)
        xp.sum(terms, out=loss)
        # through an element of `terms` (summed, no longer read): NumPy allocates about 1 KB at
        # each ufunc that writes a one-element array over itself
        negated = terms.reshape(-1)[:1].reshape(())
        xp.subtract(0, loss, out=negated)  # not negative(): every label ignored is 0, not -0
        xp.divide(negated, count, out=loss)

    def _gradient_into(self, attrs, g, count, log_probs, target, rest, grad) -> None:
        """grad = (softmax - target), masked with ignore_index, times g / count; log_probs is
        overwritten. rest: the scratch after `target` (the mask is rest[3])."""
        xp = self.xp
        xp.exp(log_probs, out=log_probs)
        xp.subtract(log_probs, target, out=log_probs)
        if attrs.ignore_index is not None:
            xp.multiply(log_probs, rest[3], out=log_probs)
        xp.multiply(log_probs, g / count, out=grad)

    def _log_softmax_and_target_into(self, attrs, logits, labels, label_starts, log_probs,
                                     target, row, positions, picked, *mask):
        """log_probs = log softmax(logits); target = the (smoothed, masked) one-hot labels;
        returns the count of labels that count (a 0-d array with ignore_index)."""
        xp = self.xp
        classes = logits.shape[1]
        if 1 < labels[0].size < self.short_runs_by_copy_below:
            self._log_softmax_by_class_into(logits, log_probs, target, row)
        else:
            self._log_softmax_along_classes_into(logits, log_probs, target, row)
        target.fill(attrs.label_smoothing / classes)
        xp.multiply(labels, labels[0].size, out=positions)
        if mask:
            valid, ignored = mask
            xp.equal(labels, attrs.ignore_index, out=ignored)
            xp.copyto(positions, 0, where=ignored)
            xp.logical_not(ignored, out=valid.reshape(labels.shape))
        xp.add(positions, label_starts, out=positions)
        flat = target.reshape(-1)
        self.take_into(flat, positions, picked)
        xp.add(picked, 1 - attrs.label_smoothing, out=picked)
        flat[positions] = picked
        if mask:
            xp.multiply(target, mask[0], out=target)
            # the count stays on the device (no read in a step captured as a graph); the same
            # number as the int it replaced, so the results are unchanged
            return xp.maximum(xp.count_nonzero(mask[0]), 1).astype(target.dtype)
        return labels.size

    def _log_softmax_along_classes_into(self, logits, log_probs, target, row) -> None:
        """log_probs = log softmax(logits) over axis 1, reduced where the scores lie; `target`
        is overwritten."""
        xp = self.xp
        if logits.ndim == 2:
            # NumPy's reduction over a short last axis is slow ([128, 10]: 10.8 us); over the
            # first axis of a transposed copy it is not (3.4 us with the copy). The maximum is
            # exact in any order.
            by_class = target.reshape(logits.shape[1], -1)
            xp.copyto(by_class, logits.T)
            xp.max(by_class, axis=0, out=row.reshape(-1))
        else:
            xp.max(logits, axis=1, keepdims=True, out=row)
        # each row's value copied across first: a broadcast ufunc operand makes NumPy allocate
        # a buffer at each call (a copy does not); the differences are the same
        xp.copyto(target, row)
        xp.subtract(logits, target, out=log_probs)
        xp.exp(log_probs, out=target)
        xp.sum(target, axis=1, keepdims=True, out=row)
        xp.log(row, out=row)
        xp.copyto(target, row)
        xp.subtract(log_probs, target, out=log_probs)

    def _log_softmax_by_class_into(self, logits, log_probs, target, row) -> None:
        """As above, over a class-major copy of the scores [K, B, S] in `target`, whose rows
        are long where the scores' runs of S are short; the differences are copied back (each
        row's maximum copied across them first, in log_probs, as above)."""
        xp = self.xp
        batch, classes = logits.shape[:2]
        by_class = target.reshape(classes, batch, -1)
        xp.copyto(by_class, logits.reshape(batch, classes, -1).transpose(1, 0, 2))
        rows, rows_across = row.reshape(batch, -1), log_probs.reshape(by_class.shape)
        xp.max(by_class, axis=0, out=rows)
        xp.copyto(rows_across, rows)
        xp.subtract(by_class, rows_across, out=by_class)
        xp.copyto(log_probs.reshape(batch, classes, -1), by_class.transpose(1, 0, 2))
        xp.exp(by_class, out=by_class)
        xp.sum(by_class, axis=0, out=rows)
        xp.log(row, out=row)
        xp.copyto(target, row)
        xp.subtract(log_probs, target, out=log_probs)
