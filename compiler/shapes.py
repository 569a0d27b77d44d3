"""Size arithmetic shared by convolution and pooling, and the shape errors that state it.

Every helper returns the size *and* the formula as text, so an error can show the arithmetic.
The course's formula: out = floor((n + 2p - d(k-1) - 1) / s) + 1, here with separate padding
before and after (p_lo + p_hi instead of 2p) so that asymmetric `same` padding fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ir import BATCH, TensorType


class ShapeError(Exception):
    """A shape rule failed; `hint` says what would fix it. `attribute` names the op attribute
    at fault (e.g. "kernel"), so that the diagnostic can point at the spec field it came from;
    None means the input's shape is at fault."""

    def __init__(self, message: str, hint: str = "", attribute: str | None = None,
                 own_hint: str = "", axis: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.attribute = attribute
        # the hint where no layer before made the input smaller (none to remove), if it differs
        self.own_hint = own_hint
        self.axis = axis  # the spatial axis at fault: its entry of a per-axis list, if given

    def __str__(self) -> str:
        return self.text(shrunk_before=True)

    def text(self, shrunk_before: bool) -> str:
        hint = self.own_hint if not shrunk_before and self.own_hint else self.hint
        return f"{self.message}; {hint}" if hint else self.message


@dataclass(frozen=True)
class WindowSize:
    size: int
    formula: str
    unused: int  # input elements at the end that no window reaches (unread_positions: all)


def window_output(n: int, k: int, s: int, pad: tuple[int, int], d: int = 1) -> WindowSize:
    lo, hi = pad
    span = d * (k - 1) + 1
    numerator = n + lo + hi - span
    worked_out = numerator // s + 1  # below 1 when the window does not fit: the formula says so
    size = max(worked_out, 0)
    pad_text = f"2*{lo}" if lo == hi else f"{lo}+{hi}"
    if d == 1:
        formula = f"({n} + {pad_text} - {k})/{s} + 1 = {worked_out}"
    else:
        formula = f"({n} + {pad_text} - {d}*({k}-1) - 1)/{s} + 1 = {worked_out}"
    unused = (numerator % s) if numerator >= 0 else 0
    unused = max(0, unused - hi)
    return WindowSize(size, formula, unused)


CHANNEL_LIKE = 4  # a last axis this short, after longer ones, looks like channels
CHANNEL_RATIO = 8  # and one eight times shorter than the others (9 sensors of 128 steps)


def looks_channel_last(shape) -> bool:
    """A sample shape whose last axis looks like channels: short against the others."""
    shorter = min(shape[:-1])
    return shape[-1] <= CHANNEL_LIKE < shorter or shape[-1] * CHANNEL_RATIO <= shorter


def pad_pairs(pad: tuple) -> tuple[tuple[int, int], ...]:
    return tuple(p if isinstance(p, tuple) else (p, p) for p in pad)


def window_sizes(spatial, kernel, attrs) -> tuple[int, ...]:
    """Output spatial sizes of a sliding window (attrs' stride, pad and dilation), unchecked."""
    return tuple(window_output(n, k, s, pad, d).size for n, k, s, pad, d in
                 zip(spatial, kernel, attrs.stride, pad_pairs(attrs.pad), attrs.dilation))


def window_shape(attrs, x: TensorType, kernel, what: str) -> tuple[int, ...]:
    """Output spatial sizes of a sliding window over x, or a ShapeError with the arithmetic."""
    sizes = window_sizes(x.shape[2:], kernel, attrs)
    axis_names = ["length"] if len(kernel) == 1 else ["rows", "columns"]
    for index, (axis, size, n, k, s, pad, d) in enumerate(zip(
            axis_names, sizes, x.shape[2:], kernel, attrs.stride, pad_pairs(attrs.pad),
            attrs.dilation)):
        if size < 1:
            result = window_output(n, k, s, pad, d)
            # the dilation is at fault where the kernel fits every axis undilated
            dilated = d > 1 and all(window_output(*undilated).size >= 1 for undilated in zip(
                x.shape[2:], kernel, attrs.stride, pad_pairs(attrs.pad)))
            cause = "dilation" if dilated else "kernel"
            fixes = _fitting_settings(x.shape[2:], kernel, attrs, what, dilated)
            raise ShapeError(
                f"{what} {'x'.join(map(str, kernel))}{_at_dilation(attrs.dilation)} "
                f"does not fit the {'x'.join(map(str, x.shape[2:]))} input ({axis}: "
                f"{result.formula})",
                f"use {fixes}, or remove a downsampling layer before it",
                attribute=cause,
                own_hint=f"use {fixes}",
                axis=index,
            )
    return sizes


def _at_dilation(dilation) -> str:
    return f" at dilation {setting_text(list(dilation))}" if max(dilation) > 1 else ""


def _fitting_settings(spatial, kernel, attrs, what: str, dilated: bool) -> str:
    """The two settings that each make every window fit the input: the largest kernel (or
    dilation) at this padding, and the least padding for this kernel."""
    axes = list(zip(spatial, kernel, pad_pairs(attrs.pad), attrs.dilation))
    # a kernel on zeros whose every tap reads the input, as the warning of taps on the zeros
    # alone asks (pools have no weights; other paddings copy the input or hold noise)
    every_tap = not dilated and what != "pool" and getattr(attrs, "padding_mode", None) is None
    if dilated:
        name, fit = "dilation", [min(d, (n + lo + hi - 1) // (k - 1)) if k > 1 else d
                                 for n, k, (lo, hi), d in axes]
    else:
        name = "pool_size" if what == "pool" else "kernel_size"
        fit = [min(k, (n + lo + hi - 1) // d + 1) for n, k, (lo, hi), d in axes]
    padding = [max(lo, hi, -(-(d * (k - 1) + 1 - n) // 2)) for n, k, (lo, hi), d in axes]
    if every_tap:
        fit = [_widest_reading_kernel(n, most, s, pad, d)
               for (n, _, pad, d), most, s in zip(axes, fit, attrs.stride)]
        padding = [_least_reading_padding(n, k, s, least, d)
                   for (n, k, _, d), least, s in zip(axes, padding, attrs.stride)]
    # 1 is the least size and dilation: "1 or less" would offer 0
    most = f"{name}: {setting_text(fit)}" + (" or less" if max(fit) > 1 else "")
    if getattr(attrs, "padding_mode", None) == "reflect" and any(p >= n for p, n in
                                                                  zip(padding, spatial)):
        return most  # reflect padding takes less than the input's length
    return f"{most}, or padding: {setting_text(padding)}"


def _widest_reading_kernel(n: int, most: int, s: int, pad: tuple[int, int], d: int) -> int:
    """The widest kernel up to `most` (the widest that fits) whose taps each read the input
    at some output: wider ones leave taps on the padding's zeros alone, which validate warns
    of. Searched a few dozen sizes down; else `most`."""
    if most > MOST_SEARCHED_KERNEL:
        return most
    return next((k for k in range(most, max(most - 64, 1), -1)
                 if every_tap_reads(n, k, s, pad, d)), most)


def _least_reading_padding(n: int, k: int, s: int, least: int, d: int) -> int:
    """The least padding from `least` (the least that fits) at which each of the kernel's
    taps reads the input at some output; else `least`. At stride 1, d(k - 1) - n + 1: the
    first and last taps reach the input then, and every tap between; at a longer stride the
    first few dozen paddings are searched."""
    if s == 1:
        return max(least, d * (k - 1) - n + 1)
    if k > MOST_SEARCHED_KERNEL:
        return least
    return next((p for p in range(least, least + 64)
                 if every_tap_reads(n, k, s, (p, p), d)), least)


MOST_SEARCHED_KERNEL = 4096


def every_tap_reads(n: int, k: int, s: int, pad: tuple[int, int], d: int) -> bool:
    """Whether each of the kernel's k taps reads one of the n inputs at some output."""
    return len(taps_reading_input(n, k, s, pad, d)) == k


def taps_reading_input(n: int, k: int, s: int, pad: tuple[int, int], d: int) -> list[int]:
    """The taps (0..k-1) that read one of the n inputs at some output."""
    size = window_output(n, k, s, pad, d).size
    live = []
    for tap in range(k):
        offset = tap * d - pad[0]  # the input read at output o is o * s + offset
        first = -(offset // s) if offset < 0 else 0  # the first output past the padding before
        last = min(size - 1, (n - 1 - offset) // s) if offset <= n - 1 else -1
        if first <= last:
            live.append(tap)
    return live


def setting_text(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(values)


@dataclass(frozen=True)
class Unread:
    """The input positions of one axis that no window reads."""

    count: int
    first: tuple[int, ...]  # the first few of them, counted from 0
    past_the_end_only: bool  # all of them lie after the last window


MOST_POSITIONS = 1 << 22  # an axis longer than this is not searched position by position


def unread_positions(n: int, k: int, s: int, pad: tuple[int, int], d: int = 1,
                     shown: int = 8) -> Unread | None:
    """The positions (0 to n-1) that no window reads: past the last window, between windows
    when the stride is longer than the window, between a dilated window's taps. They are
    marked in an array of n flags, tap by tap or window by window (whichever are fewer of
    those that reach the input), one slice each, the bounds in Python's integers: a stride or
    padding of 2**63 costs nothing. None for an axis longer than MOST_POSITIONS, or with more
    than that many taps and windows both: then only window_output's count past the end is
    known."""
    import numpy as np

    size = window_output(n, k, s, pad, d).size
    if size < 1:
        return Unread(0, (), True)
    lo = pad[0]
    # (first, last) taps that reach [0, n) in some window, and windows that reach it
    taps = max(0, -((s * (size - 1) - lo) // d)), min(k - 1, (lo + n - 1) // d)
    windows = max(0, -((d * (k - 1) - lo) // s)), min(size - 1, (lo + n - 1) // s)
    walk_taps = taps[1] - taps[0] <= windows[1] - windows[0]
    if n > MOST_POSITIONS or min(taps[1] - taps[0], windows[1] - windows[0]) >= MOST_POSITIONS:
        return None
    read = np.zeros(n, dtype=bool)
    if walk_taps:
        for tap in range(taps[0], taps[1] + 1):
            _mark(read, tap * d - lo, s, size)  # window i's tap reads i*s + offset
    else:
        for window in range(windows[0], windows[1] + 1):
            _mark(read, window * s - lo, d, k)  # the window's tap j reads offset + j*d
    unread = np.flatnonzero(~read)
    count = len(unread)
    return Unread(count, tuple(unread[:shown].tolist()), not count or unread[0] == n - count)


COPYING_PADDINGS = ("reflect", "replicate", "circular")  # their padding holds the input's values


def unread_through_copies(n: int, k: int, s: int, pad: tuple[int, int], d: int, mode: str,
                          shown: int = 8) -> Unread | None:
    """unread_positions of a padding that copies the input (reflect, replicate, circular): a
    tap in the padding reads the position it copies. None for more taps than MOST_POSITIONS
    (not searched)."""
    import numpy as np

    size = window_output(n, k, s, pad, d).size
    if size < 1:
        return Unread(0, (), True)
    if size * k > MOST_POSITIONS or n > MOST_POSITIONS:
        return None
    taps = (np.arange(size, dtype=np.int64)[:, None] * s - pad[0]
            + np.arange(k, dtype=np.int64)[None, :] * d).ravel()
    if mode == "replicate":
        sources = np.clip(taps, 0, n - 1)
    elif mode == "circular":
        sources = taps % n
    else:  # reflect, without repeating the edge: period 2(n - 1)
        period = max(2 * (n - 1), 1)
        folded = np.abs(taps) % period
        sources = np.where(folded >= n, period - folded, folded)
    read = np.zeros(n, dtype=bool)
    read[sources] = True
    unread = np.flatnonzero(~read)
    count = len(unread)
    return Unread(count, tuple(unread[:shown].tolist()), not count or unread[0] == n - count)


def windows_reading_no_input(n: int, k: int, s: int, pad: tuple[int, int],
                             d: int = 1) -> int:
    """How many windows have no tap on the input's n positions (all in the padding); 0 for an
    axis of more windows than MOST_POSITIONS (not searched)."""
    import numpy as np

    size = window_output(n, k, s, pad, d).size
    # A window misses the input where all its taps lie in one padding, or where the input
    # fits in the gap between two taps (n < d).
    if size < 1 or size > MOST_POSITIONS or (max(pad) < d * (k - 1) + 1 and n >= d):
        return 0
    starts = np.arange(size, dtype=object if s * size > 2**62 else np.int64) * s - pad[0]
    first_tap = np.maximum(0, -(starts // d))  # the first tap at or past position 0
    reads = (first_tap <= k - 1) & (starts + first_tap * d <= n - 1)
    return int(size - np.count_nonzero(reads))


def _mark(read, offset: int, step: int, count: int) -> None:
    """read[offset + m*step] = True for m in 0..count-1, where that lies in the array."""
    first = max(0, -(offset // step))
    last = min(count - 1, (len(read) - 1 - offset) // step)
    if first == last:
        read[first * step + offset] = True
    elif first < last:  # then step < len(read): a slice takes it
        read[first * step + offset:last * step + offset + 1:step] = True


def same_padding(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's `same`: output ceil(n/s); the odd padding element goes after."""
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def as_tuple(value, rank: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value) * rank if len(value) == 1 else tuple(value)
    return (value,) * rank


def per_sample(x: TensorType) -> list:
    """The shape without the batch axis, as users write it in specs."""
    shape = list(x.shape)
    return shape[1:] if shape and shape[0] == BATCH else shape


def shrink_factors(spatial, labels) -> list[float] | None:
    """By how much output maps of `spatial` exceed label maps of `labels` on each axis, when
    they are at least as large on every axis (None otherwise: they need upsampling)."""
    if len(spatial) != len(labels) or any(o < n for o, n in zip(spatial, labels)):
        return None
    return [o / n for o, n in zip(spatial, labels)]


def size_of(shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def transposed_output(n: int, k: int, s: int, pad: tuple[int, int], output_padding: int = 0,
                      d: int = 1) -> WindowSize:
    """A transposed convolution's size, the inverse of the window formula:
    out = (n - 1)*s - (p_lo + p_hi) + d(k - 1) + 1 + output_padding."""
    lo, hi = pad
    size = (n - 1) * s - lo - hi + d * (k - 1) + 1 + output_padding
    pad_text = f"2*{lo}" if lo == hi else f"{lo}+{hi}"
    kernel_text = f"{k}" if d == 1 else f"{d}*({k}-1) + 1"
    extra = f" + {output_padding}" if output_padding else ""
    return WindowSize(size, f"({n} - 1)*{s} - {pad_text} + {kernel_text}{extra} = {size}", 0)
