"""The CuPy backend's own kernels: their CUDA source, kept as plain C, and their launch plans.

Each kernel is a loop body over a flat thread index: `FOR_EACH_THREAD(i, n)` is the only
CUDA-specific part (a grid-stride loop on the GPU). With the CPU prelude the same source is
ordinary C++, which the tests compile with g++ into a shared library that runs every index in
turn, and compare with the generic NumPy code (tests/backends/test_raw_kernels.py).
Scalars that change from step to step (lr, step, the loss's incoming gradient) are read from
device arrays inside the kernels, so that a captured CUDA graph replays them.

`T` is the element type (float or double) and `I` the index type (int or long long), each set by
a `typedef` before the source. Sizes and indices are `I`; int64 arrays (labels, argmax indices)
stay `long long`. A launch takes 32-bit indices whenever everything it touches fits
(`index_form`): a GPU divides 32-bit integers several times faster than 64-bit ones, and
dividing flat indices by axis sizes is most of the work of im2col, col2im and the pools.

A launch plan is a list of (family, dtype, kernel name, threads, arguments): arrays (CuPy's on
the GPU, NumPy's in the CPU emulation) and NumPy scalars of the kernel's C types. Nothing here
imports CuPy; backends/cupy_kernels.py compiles, checks and launches.
"""

from __future__ import annotations

import numpy as np

CUDA_PRELUDE = """
#define KERNEL extern "C" __global__
#define FOR_EACH_THREAD(i, n) \\
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)
"""

CPU_PRELUDE = """
#include <cmath>
using std::exp; using std::log; using std::tanh; using std::sqrt; using std::pow;
#define KERNEL extern "C"
#define FOR_EACH_THREAD(i, n) for (I i = 0; i < (n); ++i)
"""

ACTIVATIONS = {"relu": 0, "leaky_relu": 1, "sigmoid": 2, "tanh": 3}

# y = activation(x + b[channel]) or, without a bias, activation(x). x is [B, C, *spatial]
# flattened, `inner` the size of *spatial. The same roundings as the generic code; the
# library's exp and tanh may differ from NumPy's in the last bit.
BIAS_ACTIVATION = """
KERNEL void bias_activation(const T* x, const T* b, T* y, I n, I channels,
                            I inner, int has_bias, int activation, T alpha)
{
    FOR_EACH_THREAD(i, n) {
        T z = x[i];
        if (has_bias) z = b[(i / inner) % channels] + z;
        T result;
        if (activation == 0) {
            result = z < (T)0 ? (T)0 : z;
        } else if (activation == 1) {
            T scaled = z * alpha;
            result = (alpha <= (T)1) == (scaled > z) ? scaled : z;
        } else if (activation == 2) {
            result = (T)1 / (exp(-z) + (T)1);  // exp(-z) is inf below about -88: 1/inf = 0
        } else {
            result = tanh(z);
        }
        y[i] = result;
    }
}
"""

# PyTorch's SGD (momentum, Nesterov, weight decay) over flat buffers; new_* may be the inputs.
SGD_UPDATE = """
KERNEL void sgd_update(const T* p, const T* g, const T* lr, T* new_p, const T* v, T* new_v,
                       I n, T momentum, int nesterov, T weight_decay)
{
    FOR_EACH_THREAD(i, n) {
        T grad = g[i];
        if (weight_decay != (T)0) grad = grad + p[i] * weight_decay;
        T direction = grad;
        if (momentum != (T)0) {
            T velocity = v[i] * momentum + grad;
            new_v[i] = velocity;
            direction = nesterov ? grad + velocity * momentum : velocity;
        }
        new_p[i] = p[i] - lr[0] * direction;
    }
}
"""

# Adam, and AdamW (decoupled weight decay), with bias corrections from the step count.
ADAM_UPDATE = """
KERNEL void adam_update(const T* p, const T* g, const T* lr, const T* step, T* new_p,
                        const T* m, T* new_m, const T* v, T* new_v, I n,
                        T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps,
                        T weight_decay, int decoupled, double beta1_exact,
                        double beta2_exact, double weight_decay_exact)
{
    // In double, each rounded once to T, as PyTorch (and FusedKernels.adam_scalars) do.
    double rate = (double)lr[0], t = (double)step[0];
    T step_size = (T)(rate / (1.0 - pow(beta1_exact, t)));
    T root_correction2 = (T)sqrt(1.0 - pow(beta2_exact, t));
    T decay = (T)(1.0 - rate * weight_decay_exact);
    FOR_EACH_THREAD(i, n) {
        T param = p[i], grad = g[i];
        if (decoupled) param = param * decay;
        else if (weight_decay != (T)0) grad = grad + param * weight_decay;
        T first = m[i] * beta1 + grad * one_minus_beta1;
        T second = v[i] * beta2 + grad * one_minus_beta2 * grad;
        new_m[i] = first;
        new_v[i] = second;
        T denominator = sqrt(second) / root_correction2 + eps;
        new_p[i] = param - step_size * first / denominator;
    }
}
"""

# RMSprop (with or without momentum) and Adagrad, weight decay added to the gradient.
RMSPROP_UPDATE = """
KERNEL void rmsprop_update(const T* p, const T* g, const T* lr, T* new_p, const T* square_avg,
                           T* new_square_avg, const T* buffer, T* new_buffer, I n,
                           T alpha, T one_minus_alpha, T eps, T momentum, T weight_decay)
{
    FOR_EACH_THREAD(i, n) {
        T grad = g[i];
        if (weight_decay != (T)0) grad = grad + p[i] * weight_decay;
        T average = square_avg[i] * alpha + grad * one_minus_alpha * grad;
        new_square_avg[i] = average;
        T scaled = grad / (sqrt(average) + eps);
        if (momentum != (T)0) {
            scaled = buffer[i] * momentum + scaled;
            new_buffer[i] = scaled;
        }
        new_p[i] = p[i] - lr[0] * scaled;
    }
}
"""

ADAGRAD_UPDATE = """
KERNEL void adagrad_update(const T* p, const T* g, const T* lr, T* new_p, const T* total,
                           T* new_total, I n, T eps, T weight_decay)
{
    FOR_EACH_THREAD(i, n) {
        T grad = g[i];
        if (weight_decay != (T)0) grad = grad + p[i] * weight_decay;
        T sum = total[i] + grad * grad;
        new_total[i] = sum;
        new_p[i] = p[i] - lr[0] * grad / (sqrt(sum) + eps);
    }
}
"""

# Max pooling over a padded input [planes = B*C, height, width] (1-D: height 1). For each
# output: the maximum (the first one in the window's row-major order, as argmax) and its flat
# position in its sample's padded input [C, height, width]. A nan in the window makes the
# maximum nan and leaves the position where it was, as the generic running maximum does.
MAX_POOL_INDEX = """
KERNEL void max_pool_index(const T* x, T* y, long long* index, I n, I channels,
                           I height, I width, I out_h, I out_w,
                           int kh, int kw, int sh, int sw, int dh, int dw)
{
    FOR_EACH_THREAD(i, n) {
        I col = i % out_w, row = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const T* source = x + plane * height * width;
        I first = row * sh * width + col * sw;
        T best = source[first];
        I best_at = first;
        for (int a = 0; a < kh; ++a) {
            for (int b = 0; b < kw; ++b) {
                I at = first + (I)a * dh * width + (I)b * dw;
                if (source[at] > best) {
                    best = source[at];
                    best_at = at;
                } else if (source[at] != source[at]) {
                    best = source[at];  // nan: the maximum is nan, the position stays
                }
            }
        }
        y[i] = best;
        index[i] = (plane % channels) * height * width + best_at;
    }
}
"""

# Its gradient in gather form: each padded input position sums g over the windows that chose
# it, in the order of those windows (so equal to a scatter-add in output order, bit for bit).
# No atomics, every position written: no zero fill, deterministic.
MAX_POOL_GRAD_INDEX = """
KERNEL void max_pool_grad_index(const T* g, const long long* index, T* target, I n,
                                I channels, I height, I width,
                                I out_h, I out_w, int kh, int kw, int sh,
                                int sw, int dh, int dw)
{
    FOR_EACH_THREAD(i, n) {
        I col = i % width, row = (i / width) % height, plane = i / (width * height);
        I here = (plane % channels) * height * width + row * width + col;
        T total = (T)0;
        for (int a = kh - 1; a >= 0; --a) {
            I top = row - (I)a * dh;
            if (top < 0 || top % sh != 0 || top / sh >= out_h) continue;
            for (int b = kw - 1; b >= 0; --b) {
                I left = col - (I)b * dw;
                if (left < 0 || left % sw != 0 || left / sw >= out_w) continue;
                I o = (plane * out_h + top / sh) * out_w + left / sw;
                if (index[o] == here) total = total + g[o];
            }
        }
        target[i] = total;
    }
}
"""

# Softmax cross-entropy, scores [B, K, S] and labels [B, S] (S = 1 for one label per sample),
# one row per label position r = b*S + s. 1) each row: its maximum, log-sum-exp, loss and
# whether it counts; 2) PARTS partial sums (in double); 3) one thread: the mean loss, and the
# gradient's scale g / count; 4) the gradient, elementwise.
CROSS_ENTROPY = """
KERNEL void cross_entropy_rows(const T* logits, const long long* labels, T* row_max,
                               T* row_lse, T* row_loss, I rows, I classes,
                               I positions, T share, T one_minus_smoothing,
                               int has_ignore, I ignore_index)
{
    FOR_EACH_THREAD(r, rows) {
        const T* x = logits + (r / positions) * classes * positions + r % positions;
        long long label = labels[r];
        T top = x[0];
        for (I c = 1; c < classes; ++c) {
            if (x[c * positions] > top) top = x[c * positions];
        }
        T total = (T)0;
        for (I c = 0; c < classes; ++c) total = total + exp(x[c * positions] - top);
        T lse = log(total);
        T loss = (T)0;
        if (!(has_ignore && label == ignore_index)) {
            for (I c = 0; c < classes; ++c) {
                T target = c == label ? share + one_minus_smoothing : share;
                loss = loss + target * (x[c * positions] - top - lse);
            }
        }
        row_max[r] = top;
        row_lse[r] = lse;
        row_loss[r] = loss;
    }
}

KERNEL void cross_entropy_partials(const T* row_loss, const long long* labels, double* partial,
                                   I rows, I parts, int has_ignore,
                                   I ignore_index)
{
    FOR_EACH_THREAD(p, parts) {
        double loss = 0, counted = 0;
        for (I r = p; r < rows; r += parts) {
            loss += row_loss[r];
            counted += has_ignore && labels[r] == ignore_index ? 0 : 1;
        }
        partial[p] = loss;
        partial[parts + p] = counted;
    }
}

KERNEL void cross_entropy_total(const double* partial, const T* g, T* loss, T* scale,
                                I parts)
{
    FOR_EACH_THREAD(p, 1) {
        double total = 0, counted = 0;
        for (I k = 0; k < parts; ++k) {
            total += partial[k];
            counted += partial[parts + k];
        }
        counted = counted < 1 ? 1 : counted;
        loss[0] = (T)((0.0 - total) / counted);  // 0, not -0, when every label is ignored
        scale[0] = g[0] / (T)counted;
    }
}

KERNEL void cross_entropy_grad(const T* logits, const long long* labels, const T* row_max,
                               const T* row_lse, const T* scale, T* grad, I n,
                               I classes, I positions, T share,
                               T one_minus_smoothing, int has_ignore, I ignore_index)
{
    FOR_EACH_THREAD(i, n) {
        I s = i % positions, c = (i / positions) % classes;
        I r = (i / (positions * classes)) * positions + s;
        long long label = labels[r];
        T target = c == label ? share + one_minus_smoothing : share;
        T difference = exp(logits[i] - row_max[r] - row_lse[r]) - target;
        if (has_ignore && label == ignore_index) difference = (T)0;
        grad[i] = difference * scale[0];
    }
}
"""

# Convolution columns of a padded input x [B, C, height, width] (1-D: height 1) whose elements
# may be runs of `inner` values (the batch-last layout: [1, C, height, width, B]): for kernel
# offset (a, b) and output position (row, col), x at (row*sh + a*dh, col*sw + b*dw). Layout
# 0: [B, C, kh, kw, out_h, out_w] (im2col); 1: [C, kh, kw, B, out_h, out_w] (batch columns).
# col2im sums them back in gather form, each position over its offsets in the generic code's
# order: no atomics, every position written.
COLUMNS = """
KERNEL void im2col(const T* x, T* cols, I n, I batch, I channels,
                   I height, I width, I out_h, I out_w,
                   int kh, int kw, int sh, int sw, int dh, int dw, int layout, I inner)
{
    FOR_EACH_THREAD(i, n) {
        I element = i % inner, j = i / inner;
        I col = j % out_w, row = (j / out_w) % out_h, rest = j / (out_w * out_h);
        I sample, channel, a, b;
        if (layout == 0) {
            b = rest % kw;
            a = (rest / kw) % kh;
            channel = (rest / (kw * kh)) % channels;
            sample = rest / (kw * kh * channels);
        } else {
            sample = rest % batch;
            b = (rest / batch) % kw;
            a = (rest / (batch * kw)) % kh;
            channel = rest / (batch * kw * kh);
        }
        cols[i] = x[(((sample * channels + channel) * height + row * sh + a * dh) * width
                     + col * sw + b * dw) * inner + element];
    }
}

KERNEL void col2im(const T* cols, T* x, I n, I height, I width,
                   I out_h, I out_w, int kh, int kw, int sh, int sw, int dh,
                   int dw, I inner)
{
    FOR_EACH_THREAD(i, n) {
        I element = i % inner, j = i / inner;
        I col = j % width, row = (j / width) % height, plane = j / (width * height);
        T total = (T)0;
        for (int a = 0; a < kh; ++a) {
            I top = row - (I)a * dh;
            if (top < 0 || top % sh != 0 || top / sh >= out_h) continue;
            for (int b = 0; b < kw; ++b) {
                I left = col - (I)b * dw;
                if (left < 0 || left % sw != 0 || left / sw >= out_w) continue;
                total = total + cols[(((plane * kh + a) * kw + b) * out_h * out_w
                                      + (top / sh) * out_w + left / sw) * inner + element];
            }
        }
        x[i] = total;
    }
}
"""

SOURCES = {"bias_activation": BIAS_ACTIVATION, "sgd_update": SGD_UPDATE,
           "adam_update": ADAM_UPDATE, "rmsprop_update": RMSPROP_UPDATE,
           "adagrad_update": ADAGRAD_UPDATE, "max_pool_index": MAX_POOL_INDEX,
           "max_pool_grad_index": MAX_POOL_GRAD_INDEX, "cross_entropy": CROSS_ENTROPY,
           "columns": COLUMNS}
C_TYPES = {"float32": "float", "float64": "double"}
INDEX_TYPES = {"int32": "int", "int64": "long long"}
# Below this, every index of a launch and its grid-stride loop's last step fit in an int.
NARROW_LIMIT = 1 << 30


def source(name: str, dtype: str, prelude: str = CUDA_PRELUDE, index: str = "int64") -> str:
    """The complete source of one kernel family for one element type and index type."""
    return (f"{prelude}\ntypedef {C_TYPES[dtype]} T;\ntypedef {INDEX_TYPES[index]} I;\n"
            f"{SOURCES[name]}")


def index_form(threads: int, args: tuple) -> tuple[str, tuple]:
    """A launch's index type and its arguments: "int32", with its int64 scalars (sizes,
    counts, the ignored label) as int32, when those scalars, every array's size and the
    thread count are below NARROW_LIMIT; else "int64", the arguments as they are."""
    sizes = [abs(int(a)) if isinstance(a, np.int64) else a.size
             for a in args if isinstance(a, np.int64) or not isinstance(a, np.generic)]
    if max([threads, *sizes]) >= NARROW_LIMIT:
        return "int64", args
    return "int32", tuple(np.int32(a) if isinstance(a, np.int64) else a for a in args)


PARTS = 256  # the cross-entropy's partial sums (its workspace: 2 * PARTS doubles, 2 scalars)


def activation_plan(activation, alpha, x, b, y) -> list:
    """y = activation(x + b) (b along axis 1 of x [B, C, ...]), or activation(x) if b is None."""
    channels = x.shape[1] if b is not None else 1
    inner = x.size // max(x.shape[0] * channels, 1) if b is not None else 1
    return [("bias_activation", str(x.dtype), "bias_activation", x.size,
             (x, x if b is None else b, y, np.int64(x.size), np.int64(channels), np.int64(inner),
              np.int32(b is not None), np.int32(ACTIVATIONS[activation]), x.dtype.type(alpha)))]


def update_plan(rule, attrs, news, p, g, lr, step, *state) -> list:
    """news: (new param, *new state), which may be the inputs themselves."""
    t = p.dtype.type
    if rule == "sgd_update":
        (v,), (new_v,) = (state, news[1:]) if state else ((p,), (news[0],))
        args = (p, g, lr, news[0], v, new_v, np.int64(p.size), t(attrs.momentum),
                np.int32(attrs.nesterov), t(attrs.weight_decay))
    elif rule == "adam_update":
        m, v = state
        args = (p, g, lr, step, news[0], m, news[1], v, news[2], np.int64(p.size),
                t(attrs.beta1), t(1 - attrs.beta1), t(attrs.beta2), t(1 - attrs.beta2),
                t(attrs.eps), t(attrs.weight_decay), np.int32(attrs.decoupled),
                np.float64(attrs.beta1), np.float64(attrs.beta2), np.float64(attrs.weight_decay))
    elif rule == "rmsprop_update":
        average, *buffer = state
        buffer, new_buffer = (buffer[0], news[2]) if buffer else (average, news[1])
        args = (p, g, lr, news[0], average, news[1], buffer, new_buffer, np.int64(p.size),
                t(attrs.alpha), t(1 - attrs.alpha), t(attrs.eps), t(attrs.momentum),
                t(attrs.weight_decay))
    else:
        args = (p, g, lr, news[0], state[0], news[1], np.int64(p.size), t(attrs.eps),
                t(attrs.weight_decay))
    return [(rule, str(p.dtype), rule, p.size, args)]


def pool_plan(name, padded, y, index, kernel, stride, dilation) -> list:
    """max_pool_index (padded: the pooled input; y, index: its outputs) or max_pool_grad_index
    (padded: the gradient to write; y: the incoming gradient)."""
    sizes, window = _window_2d(kernel, stride, dilation, padded.shape[2:], y.shape[2:])
    threads = y.size if name == "max_pool_index" else padded.size
    arrays = (padded, y, index) if name == "max_pool_index" else (y, index, padded)
    return [(name, str(padded.dtype), name, threads,
             (*arrays, np.int64(threads), np.int64(padded.shape[1]), *sizes, *window))]


def _window_2d(kernel, stride, dilation, spatial, out):
    """A 1-D window as a 2-D one of height 1: the kernel's int arguments and the sizes."""
    lead = (1,) * (2 - len(kernel))
    (kh, kw), (sh, sw), (dh, dw) = ((*lead, *v) for v in (kernel, stride, dilation))
    sizes = (*lead, *spatial, *lead, *out)
    return [np.int64(n) for n in sizes], [np.int32(v) for v in (kh, kw, sh, sw, dh, dw)]


def columns_plan(name, x, cols, kernel, stride, dilation, layout=0) -> list:
    """im2col (x -> cols in `layout`) or col2im (cols [B, C, *kernel, *out] -> x). With one
    axis more than its windows' rank (layout 0 only), x's elements are runs of that many
    values: [1, C, *spatial, B] and [1, C, *kernel, *out, B], the batch-last layout."""
    rank = len(kernel)
    inner = x.shape[-1] if x.ndim == rank + 3 else 1
    out = cols.shape[2 + rank:2 + 2 * rank] if layout == 0 else cols.shape[-rank:]
    sizes, window = _window_2d(kernel, stride, dilation, x.shape[2:2 + rank], out)
    if name == "im2col":
        args = (x, cols, np.int64(cols.size), np.int64(x.shape[0]), np.int64(x.shape[1]),
                *sizes, *window, np.int32(layout), np.int64(inner))
        return [("columns", str(x.dtype), "im2col", cols.size, args)]
    return [("columns", str(x.dtype), "col2im", x.size,
             (cols, x, np.int64(x.size), *sizes, *window, np.int64(inner)))]


def cross_entropy_plan(attrs, logits, labels, out, g, workspace) -> list:
    """The mean loss into out[0] (g None) or its gradient for the incoming g (0-d); out is
    (result, log_probs, target, row, ...), whose scratch holds the rows' sums.
    workspace: (2 * PARTS doubles, 2 scalars of the logits' type)."""
    t, dtype = logits.dtype.type, str(logits.dtype)
    classes, rows = logits.shape[1], labels.size
    positions = rows // logits.shape[0]
    partial, scalars = workspace
    row_max, row_lse = out[3].reshape(-1), out[1].reshape(-1)[:rows]
    row_loss = out[2].reshape(-1)[:rows]
    ignore = attrs.ignore_index is not None
    options = (t(attrs.label_smoothing / classes), t(1 - attrs.label_smoothing),
               np.int32(ignore), np.int64(attrs.ignore_index if ignore else 0))
    loss, scale = (out[0], scalars[1:]) if g is None else (scalars[:1], scalars[1:])
    incoming = scalars[1:] if g is None else g  # read only for the gradient's scale
    plan = [("cross_entropy", dtype, "cross_entropy_rows", rows,
             (logits, labels, row_max, row_lse, row_loss, np.int64(rows), np.int64(classes),
              np.int64(positions), *options)),
            ("cross_entropy", dtype, "cross_entropy_partials", PARTS,
             (row_loss, labels, partial, np.int64(rows), np.int64(PARTS), *options[2:])),
            ("cross_entropy", dtype, "cross_entropy_total", 1,
             (partial, incoming, loss, scale, np.int64(PARTS)))]
    if g is not None:
        plan.append(("cross_entropy", dtype, "cross_entropy_grad", logits.size,
                     (logits, labels, row_max, row_lse, scale, out[0], np.int64(logits.size),
                      np.int64(classes), np.int64(positions), *options)))
    return plan
