"""ONNX Conv in NumPy, channels-last: NCHW in and out (the op's contract), NHWC in memory.

A MobileNet is three kinds of convolution (V1 Section 3.1, V2 Table 1):

- pointwise (1x1): one matrix product over (pixels, channels);
- depthwise (group = channels): k*k multiply-adds of shifted views, summed by einsum;
- the stem (3 input channels, stride 2): im2col, then one matrix product.

:func:`prepare_conv` works out a node's geometry and weight layouts once for an input shape and returns
``run(X)``; the runner keeps it while the input shape stays the same (a MobileNet's ~50 convolutions
otherwise redo that Python work on every call). :func:`Conv` prepares and runs in one call.

A depthwise convolution reads its input where the convolution before it left it. The runner asks that
producer (``margin_rows``) to lay each image out between zero rows, "the frame"; every output row of the
depthwise is then k*k shifted views of one flat run of memory: rows above and below come from the
frame, and a window that runs off the left or right edge reads the neighbouring row's pixels, which the
tap's weight for that column (zero there) cancels. No padded copy of the input is made. (Exact for
finite activations; an infinite one would become NaN, not 0, in the next row's edge pixel.)

A strided layer needs every sw-th column. When the runner can arrange it (the depthwise is the only
reader of a 1x1 convolution's output, ``column_phases``), the producer stores each row's columns grouped
by phase (even columns, then odd), by reordering its narrow input before the matrix product. Each tap
then reads one contiguous run of exactly the output's columns (measured 1.4-1.8x faster on layers under
256 channels). Otherwise a strided layer computes every column of its output rows in one contiguous run
and keeps every sw-th, or, from 256 channels, reads the kept columns directly.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def Conv(
    X,
    W,
    B=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
    margin_rows=0,
    column_phases=1,
    input_column_phases=1,
):
    """2-D convolution (NCHW in, NCHW out); computed channels-last.

    Set by the runner, not ONNX attributes (see the module docstring):

    - ``margin_rows``: lay the output out with that many zero rows above and below each image, because a
      depthwise convolution reads it next and can then use them as its padding instead of copying the
      map into a padded buffer (see :func:`_framed_empty`);
    - ``column_phases``: store each output row's columns grouped by phase (0, P, 2P, ..., then 1, P+1,
      ...), because a depthwise convolution with stride P reads it next; only that consumer may read it;
    - ``input_column_phases``: this (depthwise) convolution's input is stored that way.
    """
    attributes = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape)
    attributes.update(pads=pads, strides=strides, margin_rows=margin_rows, column_phases=column_phases)
    attributes.update(input_column_phases=input_column_phases)
    # Run once: no weight layouts kept (an int8 file's weights are new arrays on every call).
    return prepare_conv(X, W, B, **attributes, keep_layouts=False)(X)


def prepare_conv(
    X,
    W,
    B=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
    margin_rows=0,
    column_phases=1,
    input_column_phases=1,
    keep_layouts=True,
) -> Callable[[np.ndarray], np.ndarray]:
    """``Conv`` with these weights, for inputs of ``X``'s shape and dtype: returns ``run(X)``.

    ``keep_layouts`` (not an attribute: ``Conv``'s signature is the one nodes are checked against): lay
    the weights out for speed and keep that (see :func:`weight_layout`), or use them as they are."""
    if X.ndim != 4:
        raise NotImplementedError(f"Conv on {X.ndim - 2}-D data (only 2-D is supported)")
    n, c, h, w = X.shape
    m, c_per_group, kh, kw = W.shape
    sh, sw = strides or (1, 1)
    dh, dw = dilations or (1, 1)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        top, bottom = _same_pads(h, kh, sh, dh, auto_pad == "SAME_UPPER")
        left, right = _same_pads(w, kw, sw, dw, auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        top = left = bottom = right = 0
    elif auto_pad == "NOTSET":
        top, left, bottom, right = pads or (0, 0, 0, 0)
    else:
        raise NotImplementedError(f"auto_pad={auto_pad!r}")
    ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    geometry = _Geometry(n, c, h, w, m, kh, kw, sh, sw, dh, dw, top, left, bottom, right, ho, wo, X.dtype)
    depthwise = group == c and c_per_group == 1 and m == c
    pointwise = group == 1 and kh == kw == 1 and not depthwise
    if input_column_phases > 1 and not depthwise:
        raise NotImplementedError("columns stored by phase as the input of a non-depthwise convolution")
    if depthwise:
        compute = _prepare_depthwise(geometry, W, input_column_phases)
    elif pointwise:  # the bias is added inside
        compute, B = _prepare_pointwise(geometry, W, B, margin_rows, column_phases, keep_layouts), None
    elif group == 1:  # the bias comes out of the matrix product
        compute, B = _prepare_general(geometry, W, B, margin_rows), None
    else:
        compute = _prepare_grouped(geometry, W, group)
    if column_phases > 1 and not pointwise:
        # The runner asks only 1x1 convolutions for it (they reorder their narrow input; measured, the
        # stem's im2col in that order costs more than its depthwise saves): reorder what was made.
        compute = _then_by_phase(compute, column_phases)

    def run(X):
        out = compute(X)
        if B is not None:
            out += B
        return out.transpose(0, 3, 1, 2)

    return run


@dataclass(frozen=True, slots=True)
class _Geometry:
    """Shapes, strides, dilations and pads of one convolution, resolved."""

    n: int
    c: int
    h: int
    w: int
    m: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    left: int
    bottom: int
    right: int
    ho: int
    wo: int
    dtype: np.dtype

    @property
    def nhwc_pads(self):
        return ((0, 0), (self.top, self.bottom), (self.left, self.right), (0, 0))


# Channels from which a strided depthwise layer reads its kept columns directly, as runs of C floats
# (measured: from 256 on, a run of C is long enough for einsum's inner loop, and this beats both
# computing every column and storing the input's columns by phase, which is 3-20% slower there).
DIRECT_COLUMNS_FROM = 256


def _same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


# ---------------------------------------------------------------------------------------------------
# Pointwise and general (im2col) convolutions
# ---------------------------------------------------------------------------------------------------


def _prepare_pointwise(g: _Geometry, W, B, margin_rows, column_phases, keep_layouts=True):
    """A 1x1 convolution: one matrix product over (pixels, channels), straight into the frame, bias
    included.

    Output pixels come in the input's order, so columns stored by phase cost one copy of the (narrow)
    input. When the input is copied anyway, or is much narrower than the output (an expansion), the copy
    gets a column of ones and the kernel the bias as its last row, so the product adds the bias: measured
    8-17% faster per expansion than a pass over its wide output after. Both kernel layouts are copies,
    made only when they are kept (``keep_layouts``)."""
    n, ho, wo, c, m = g.n, g.ho, g.wo, g.c, g.m
    plain = not (g.top or g.left or g.bottom or g.right or g.sh > 1 or g.sw > 1)
    if keep_layouts and B is not None and (column_phases > 1 or not plain or m >= 2 * c):
        kernel = weight_layout("pointwise+bias", _kernel_with_bias, W, B)

        def compute(X):
            x = _pointwise_input(X, g, plain)
            rows = _scratch(("pointwise input", n, ho, wo), (n, ho, wo, c + 1), g.dtype)
            if rows.size and rows[0, 0, 0, c] != 1:  # a new buffer: its last column becomes the ones
                rows[..., c] = 1
            if column_phases > 1:
                _by_phase(x, column_phases, rows[..., :c])
            else:
                rows[..., :c] = x
            out = _framed_empty(n, ho, wo, m, g.dtype, margin_rows) if margin_rows else None
            return np.matmul(rows.reshape(n, ho * wo, c + 1), kernel, out=out).reshape(n, ho, wo, m)

        return compute

    # A contiguous (C, M) copy, not a transposed view: measured 3-4% faster end to end (OpenBLAS).
    if keep_layouts:
        kernel = weight_layout("pointwise", lambda W: np.ascontiguousarray(W.reshape(m, c).T), W)
    else:
        kernel = W.reshape(m, c).T

    def compute(X):
        x = _pointwise_input(X, g, plain)
        if column_phases > 1:
            x = _by_phase(x, column_phases, _scratch(("by phase", column_phases), x.shape, x.dtype))
        pixels = np.ascontiguousarray(x).reshape(n, ho * wo, c)
        out = _framed_empty(n, ho, wo, m, g.dtype, margin_rows) if margin_rows else None
        out = np.matmul(pixels, kernel, out=out)
        if B is not None:
            out += B
        return out.reshape(n, ho, wo, m)

    return compute


def _pointwise_input(X, g: _Geometry, plain):
    """The NHWC pixels a 1x1 convolution multiplies: a free view of ``X`` when it came from another Conv
    and needs no padding or stride."""
    x = X.transpose(0, 2, 3, 1)
    if plain:
        return x
    return _padded(x, g.nhwc_pads)[:, : g.sh * (g.ho - 1) + 1 : g.sh, : g.sw * (g.wo - 1) + 1 : g.sw, :]


def _kernel_with_bias(W, B):
    """(C + 1, M): the 1x1 kernel, transposed, with the bias as its last row."""
    m, c = W.shape[0], W.shape[1]
    kernel = np.empty((c + 1, m), W.dtype)
    kernel[:c] = W.reshape(m, c).T
    kernel[c] = B
    return kernel


def _prepare_general(g: _Geometry, W, B, margin_rows):
    """Any other convolution with one group (in MobileNets, the stem), by im2col, bias included.

    The columns carry one more row, of ones, and the kernel the bias as its last row: the matrix product
    adds the bias (one more multiply-add per output, against a pass over the whole output after)."""
    taps = g.kh * g.kw * g.c
    kernel = np.zeros((taps + 1, g.m), g.dtype)
    kernel[:taps] = W.transpose(2, 3, 1, 0).reshape(taps, g.m)
    if B is not None:
        kernel[taps] = B

    def compute(X):
        # The stem reads the network's NCHW input: pad it as NCHW (a plain copy, not a transpose).
        X = _padded(X, ((0, 0), (0, 0), (g.top, g.bottom), (g.left, g.right)))
        columns = _scratch(("im2col", g), (taps + 1, g.n, g.ho * g.wo), g.dtype)
        _im2col(X, g, columns[:taps].reshape(g.kh, g.kw, g.c, g.n, g.ho, g.wo))
        columns[taps] = 1
        out = _framed_empty(g.n, g.ho, g.wo, g.m, g.dtype, margin_rows) if margin_rows else None
        rows = columns.transpose(1, 2, 0)  # (N, pixels, taps + 1)
        return np.matmul(rows, kernel, out=out).reshape(g.n, g.ho, g.wo, g.m)

    return compute


def _prepare_grouped(g: _Geometry, W, group):
    """A grouped convolution that is not depthwise: im2col per group."""
    per_group, c_per_group = g.m // group, W.shape[1]
    taps = g.kh * g.kw * c_per_group
    kernels = [
        W[k * per_group : (k + 1) * per_group].transpose(2, 3, 1, 0).reshape(taps, -1) for k in range(group)
    ]

    def compute(X):
        X = _padded(X, ((0, 0), (0, 0), (g.top, g.bottom), (g.left, g.right)))
        outs = []
        for k, kernel in enumerate(kernels):
            columns = np.empty((g.kh, g.kw, c_per_group, g.n, g.ho, g.wo), g.dtype)
            _im2col(X[:, k * c_per_group : (k + 1) * c_per_group], g, columns)
            outs.append(np.matmul(columns.reshape(taps, g.n, -1).transpose(1, 2, 0), kernel))
        return np.concatenate(outs, axis=-1).reshape(g.n, g.ho, g.wo, g.m)

    return compute


def _im2col(X, g: _Geometry, columns):
    """Fill ``columns`` (kh, kw, C, N, Ho, Wo) from a padded NCHW ``X``: one row per (tap, input
    channel), each a strided copy of the whole output grid. Rows of N*Ho*Wo floats keep the copies long
    when C is 3, where a (pixel, tap, channel) gather would copy 3 floats at a time."""
    ho, wo, sh, sw, dh, dw = g.ho, g.wo, g.sh, g.sw, g.dh, g.dw
    for i in range(g.kh):
        for j in range(g.kw):
            window = X[
                :, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw
            ]
            columns[i, j] = window.transpose(1, 0, 2, 3)


# ---------------------------------------------------------------------------------------------------
# Depthwise convolutions
# ---------------------------------------------------------------------------------------------------


def _prepare_depthwise(g: _Geometry, W, input_column_phases=1):
    """A depthwise convolution: in the frame when its input lies in one, else by copying paths."""
    phases = input_column_phases
    if phases > 1:
        in_frame = _prepare_phased_in_frame(g, W) if phases == g.sw and g.dw == 1 else lambda x: None
    else:
        in_frame = _prepare_in_frame(g, W)

    def compute(X):
        x = X.transpose(0, 2, 3, 1)
        out = in_frame(x)
        if out is not None:
            return out
        if phases > 1:
            x = _natural_order(x, phases, axis=2)
        # Measured: rows win down to 14x14 maps (a 7x7 map is a few rows), except on a strided layer
        # whose input outgrows L2 (V2's 112x112x96): there the phase copy costs more than the patches.
        if g.ho * g.wo > 100 and not (g.sh > 1 and x.nbytes > 2**21):
            return _depthwise_rows(x, W, g)
        return _depthwise_patches(_padded(x, g.nhwc_pads), W, g)

    return compute


def _prepare_in_frame(g: _Geometry, W):
    """``in_frame(x)``: the depthwise convolution of an NHWC ``x`` that lies in a frame, read where it
    lies; None when it does not (or the frame is too small for the padding)."""
    c, kh, kw = g.c, g.kh, g.kw
    # A strided layer either computes every column of its output rows (as if stride 1, in one
    # contiguous run) and keeps every sw-th, or reads the kept columns directly (runs of C).
    step = g.sw if g.sw > 1 and c >= DIRECT_COLUMNS_FROM else 1
    columns = g.wo if step > 1 else g.sw * (g.wo - 1) + 1
    row_weights = []  # made on first use: an input that never lies in a frame (int8 files) never needs them
    row, item = g.w * c, np.dtype(g.dtype).itemsize
    # Elements from the frame's first image row to the first window's first element, and the reach of
    # the windows: the frame must have that many zero pixels above and below.
    before = g.top * row + g.left * c
    after = (g.sh * (g.ho - 1) + g.dh * (kh - 1) - g.top - g.h) * row + (
        (kw - 1) * g.dw + step * (columns - 1) + 1 - g.left
    ) * c
    strides = (g.sh * row * item, g.dh * row * item, g.dw * c * item, step * c * item, item)

    def in_frame(x):
        found = _frame_of(x, before, after)
        if found is None:
            return None
        full, margin = found
        if not row_weights:
            sources = [step * np.arange(columns) + j * g.dw - g.left for j in range(kw)]
            row_weights.append(_row_weights(W, sources, g.w))
        weights = row_weights[0]
        # np.ndarray, not as_strided: a tenth of the set-up, and it refuses to reach past the buffer.
        windows = np.ndarray(
            (g.n, g.ho, kh, kw, columns, c),
            g.dtype,
            buffer=full,
            offset=(margin - before) * item,
            strides=(full.strides[0], *strides),
        )
        out = np.empty((g.n, g.ho, columns, c), g.dtype)
        if step == 1:  # contiguous rows: one run of columns*C floats per output row and tap
            windows = windows.reshape(g.n, g.ho, kh, kw, columns * c)
            np.einsum("nrijx,ijx->nrx", windows, weights.reshape(kh, kw, -1), out=out.reshape(g.n, g.ho, -1))
            return np.ascontiguousarray(out[:, :, :: g.sw]) if g.sw > 1 else out
        return np.einsum("nrijwc,ijwc->nrwc", windows, weights, out=out)

    return in_frame


def _prepare_phased_in_frame(g: _Geometry, W):
    """``in_frame(x)`` for a strided layer whose input columns are stored by phase (``column_phases``).

    Output column x's tap j reads input column sw*x + j - left: phase (j - left) mod sw, at position
    x + (j - left) // sw within it. So each tap reads one contiguous run of Wo*C floats, and the taps of
    one phase are C floats apart: one einsum per phase over exactly the output columns (no computing
    every column and keeping every sw-th, no strided copy after)."""
    c, kh, kw, sw = g.c, g.kh, g.kw, g.sw
    row, item = g.w * c, np.dtype(g.dtype).itemsize
    first = np.cumsum([0] + [len(range(p, g.w, sw)) for p in range(sw)]) * c  # each phase's first element
    plans = []  # per phase with taps: (taps, element offset of the first window from the image start)
    for p in range(sw):
        taps = [j for j in range(kw) if (j - g.left) % sw == p]
        if taps:
            plans.append((taps, first[p] + (taps[0] - g.left) // sw * c - g.top * row))
    last_row = (g.sh * (g.ho - 1) + g.dh * (kh - 1)) * row
    before = max(-offset for _, offset in plans)  # zero elements the windows need above the image
    after = max(offset + last_row + (len(taps) - 1 + g.wo) * c for taps, offset in plans) - g.h * row
    phase_weights = []  # made on first use, as in _prepare_in_frame

    def in_frame(x):
        found = _frame_of(x, before, after)
        if found is None:
            return None
        full, margin = found
        if not phase_weights:
            for taps, _ in plans:
                sources = [sw * np.arange(g.wo) + j - g.left for j in taps]
                phase_weights.append(_row_weights(W[:, :, :, taps], sources, g.w).reshape(kh, len(taps), -1))
        out = np.empty((g.n, g.ho, g.wo * c), g.dtype)
        for k, ((taps, offset), weights) in enumerate(zip(plans, phase_weights, strict=True)):
            windows = np.ndarray(
                (g.n, g.ho, kh, len(taps), g.wo * c),
                g.dtype,
                buffer=full,
                offset=(margin + offset) * item,
                strides=(full.strides[0], g.sh * row * item, g.dh * row * item, c * item, item),
            )
            if k == 0:
                np.einsum("nrijx,ijx->nrx", windows, weights, out=out)
            else:
                out += np.einsum(
                    "nrijx,ijx->nrx", windows, weights, out=_scratch("tmp", out.shape, out.dtype)
                )
        return out.reshape(g.n, g.ho, g.wo, c)

    return in_frame


def _then_by_phase(compute, phases):
    def reordered(X):
        out = compute(X)
        return _by_phase(out, phases, np.empty_like(out))

    return reordered


def _by_phase(x, phases, out, axis=2):
    """``x`` copied into ``out`` with its columns (``axis``) grouped by phase: 0, P, 2P, ..., 1, P+1, ..."""
    index, start = [slice(None)] * x.ndim, 0
    for p in range(phases):
        index[axis] = slice(p, None, phases)
        part = x[tuple(index)]
        index[axis] = slice(start, start + part.shape[axis])
        out[tuple(index)] = part
        start += part.shape[axis]
    return out


def _natural_order(x, phases, axis=2):
    """The inverse of :func:`_by_phase`, in a new array."""
    out, index, start = np.empty_like(x), [slice(None)] * x.ndim, 0
    for p in range(phases):
        index[axis] = slice(p, None, phases)
        width = len(range(p, x.shape[axis], phases))
        source = list(index)
        source[axis] = slice(start, start + width)
        out[tuple(index)] = x[tuple(source)]
        start += width
    return out


def _framed_empty(n, ho, wo, c, dtype, margin_rows):
    """An uninitialised (N, Ho*Wo, C) array for a convolution's output, each image between
    ``margin_rows`` zero rows (only the frame is written here)."""
    rows = margin_rows * wo
    full = np.empty((n, (ho + 2 * margin_rows) * wo, c), dtype)
    full[:, :rows] = 0
    full[:, rows + ho * wo :] = 0
    return full[:, rows : rows + ho * wo]


def _frame_of(x, before: int, after: int):
    """``(full, margin)``: the (N, pixels, C) buffer from :func:`_framed_empty` that the NHWC ``x`` is the
    inside of, and the zero elements above (and below) each image in it; None when ``x`` is not such an
    inside or the frame is too small. Checked, not assumed: the ``before`` elements above each image and
    the ``after`` below it, the ones a depthwise convolution reads, must hold zeros now, so reading them
    is exact whoever made ``x``."""
    full = x.base
    n, h, w, c = x.shape
    if not (
        isinstance(full, np.ndarray)
        and full.ndim == 3
        and full.dtype == x.dtype
        and full.flags.c_contiguous
        and full.shape[0] == n
        and full.shape[2] == c
        and x.strides[1:] == (w * c * x.itemsize, c * x.itemsize, x.itemsize)
        and (n == 1 or x.strides[0] == full.strides[0])  # a length-1 axis's stride is arbitrary
    ):
        return None
    pixels, odd = divmod(full.shape[1] - h * w, 2)  # zero pixels above (and below) each image
    margin = pixels * c
    offset = x.__array_interface__["data"][0] - full.__array_interface__["data"][0]  # cheaper than .ctypes
    if odd or offset != margin * x.itemsize or before > margin or after > margin:
        return None
    flat = full.reshape(n, -1)
    inside = h * w * c
    if _any_bits(flat[:, margin - max(before, 0) : margin]) or _any_bits(
        flat[:, margin + inside : margin + inside + max(after, 0)]
    ):
        return None
    return full, margin


def _any_bits(block):
    """Whether any element of ``block`` (contiguous last axis) has a bit set: zero is all bits clear, so
    this is "any nonzero" except that -0.0 counts (a frame holding -0.0 is then just not used). Counted
    as unsigned integers: measured 5x faster than count_nonzero on floats, and the runner checks a frame
    on every depthwise call."""
    return np.count_nonzero(block.view(np.dtype(f"u{block.itemsize}"))) > 0


def _row_weights(W, sources, width):
    """(kh, taps, columns, C): each tap's weights repeated along an output row, where ``sources[j]``
    holds the input column that tap j reads at each output column; zero where that column is outside the
    image (there the run reads a neighbouring row, or phase)."""
    c, kh, kw = W.shape[0], W.shape[2], W.shape[3]
    per_tap = W.reshape(c, kh, kw).transpose(1, 2, 0)  # (kh, taps, C)
    weights = np.repeat(per_tap[:, :, None, :], len(sources[0]), axis=2)  # (kh, taps, columns, C)
    for j, source in enumerate(sources):
        weights[:, j, (source < 0) | (source >= width)] = 0
    return weights


def _depthwise_patches(x, W, g: _Geometry):
    """Depthwise convolution of a deep layer (few pixels, many channels), channels-last, ``x`` padded:
    one einsum over a strided (N, Ho, Wo, kh, kw, C) patch view, a single pass over memory."""
    n, ho, wo, c, kh, kw = g.n, g.ho, g.wo, g.c, g.kh, g.kw
    weights = np.ascontiguousarray(W.reshape(c, kh, kw).transpose(1, 2, 0))  # (kh, kw, C)
    out = np.empty((n, ho, wo, c), dtype=np.result_type(x, W))
    s_n, s_h, s_w, s_c = x.strides
    patches = np.lib.stride_tricks.as_strided(
        x, (n, ho, wo, kh, kw, c), (s_n, s_h * g.sh, s_w * g.sw, s_h * g.dh, s_w * g.dw, s_c), writeable=False
    )
    return np.einsum("nhwijc,ijc->nhwc", patches, weights, out=out)


def _depthwise_rows(x, W, g: _Geometry):
    """Depthwise convolution of a shallow layer (many pixels, few channels), channels-last, unpadded ``x``,
    when it is not in a frame.

    The k*k taps are shifted views over whole output rows, summed by einsum with each tap's weights
    repeated along the row, so the inner loop is one contiguous run of wo*C floats rather than wo runs
    of C (C is 16-32 at the widest layers). The input is copied once, padded, into ``sw`` column phases
    (every sw-th padded column), so that a strided layer's windows are contiguous too; the phase
    buffers are reused across calls with their zero borders in place.
    """
    n, h, w, c = x.shape
    kh, kw, sh, sw, dh, dw, ho, wo = g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.ho, g.wo
    pads = (g.top, g.left, g.bottom, g.right)
    top, left, bottom, right = pads
    weights = W.reshape(c, kh, kw).transpose(1, 2, 0)  # (kh, kw, C)
    tiled = np.ascontiguousarray(np.broadcast_to(weights[:, :, None, :], (kh, kw, wo, c))).reshape(kh, kw, -1)
    padded_h, padded_w = h + top + bottom, w + left + right
    phases = []
    for p in range(sw):
        width = len(range(p, padded_w, sw))
        phase = _scratch(("phase", p, pads, sw), (n, padded_h, width, c), x.dtype)
        first = max(0, -(-(left - p) // sw))  # the first phase column that holds an input column
        columns = x[:, :, p - left + sw * first :: sw, :]
        phase[:, top : top + h, first : first + columns.shape[2], :] = columns
        phases.append(phase.reshape(n, padded_h, width * c))
    out = np.empty((n, ho, wo * c), dtype=np.result_type(x, W))
    for p, rows in enumerate(phases):
        # The taps that read this phase start at evenly spaced columns: one strided (kh, taps, N, Ho,
        # Wo*C) view, and einsum multiplies and sums all of them in one pass per tap, no temporaries.
        taps = [j for j in range(kw) if (j * dw) % sw == p]
        if not taps:
            continue
        starts = [(j * dw) // sw * c for j in taps]
        step = starts[1] - starts[0] if len(taps) > 1 else 0
        s_n, s_row, s_x = rows.strides
        view = np.lib.stride_tricks.as_strided(
            rows[:, :, starts[0] :],
            (kh, len(taps), n, ho, wo * c),
            (s_row * dh, step * s_x, s_n, s_row * sh, s_x),
            writeable=False,
        )
        if p == 0:
            np.einsum("ijnrx,ijx->nrx", view, tiled[:, taps], out=out)
        else:
            out += np.einsum(
                "ijnrx,ijx->nrx", view, tiled[:, taps], out=_scratch("tmp", out.shape, out.dtype)
            )
    return out.reshape(n, ho, wo, c)


# ---------------------------------------------------------------------------------------------------
# Weight layouts and work buffers
# ---------------------------------------------------------------------------------------------------

_LAYOUTS: dict[tuple, tuple[tuple[weakref.ref, ...], np.ndarray]] = {}


def weight_layout(role: str, make: Callable[..., np.ndarray], *arrays: np.ndarray | None) -> np.ndarray:
    """``make(*arrays)``, made once per role and set of weight arrays and kept while they all live.

    Ops are prepared once per input shape and a model keeps several shapes' plans: a copy per plan would
    multiply the model's weights in memory (a batch-1 and a batch-8 plan, twice the weights)."""
    key = (role, *map(id, arrays))
    kept = _LAYOUTS.get(key)
    if kept is not None and all(
        ref() is array for ref, array in zip(kept[0], (a for a in arrays if a is not None), strict=True)
    ):
        return kept[1]
    layout = make(*arrays)
    # The entry goes when any of its arrays does (so a later array at the same address is not served it).
    refs = tuple(
        weakref.ref(array, lambda _, key=key: _LAYOUTS.pop(key, None))
        for array in arrays
        if array is not None
    )
    _LAYOUTS[key] = (refs, layout)
    return layout


def _padded(array, widths):
    """``array`` zero-padded by ``widths``, in a work buffer that is only valid until the next call with
    the same shapes (convolutions read it and let it go). No copy when there is nothing to pad (the 1x1
    convolutions). Cheaper than ``np.pad``, whose Python-level set-up costs ~30 us a call: a small
    network makes over a hundred of them."""
    if not any(before or after for before, after in widths):
        return array
    shape = tuple(size + before + after for size, (before, after) in zip(array.shape, widths, strict=True))
    buffer = _scratch(("padded", widths), shape, array.dtype)  # its zero border is never written
    buffer[
        tuple(slice(before, before + size) for size, (before, _) in zip(array.shape, widths, strict=True))
    ] = array
    return buffer


_SCRATCH = threading.local()  # one set of work buffers per thread: runners may share a process
SCRATCH_LIMIT = 256 << 20  # bytes per thread; V2 at 224x224 keeps ~15 MB of work buffers


def _scratch(role, shape, dtype) -> np.ndarray:
    """A work buffer reused across calls (zero-filled when first made): a fresh multi-MB array costs a
    page fault per 4 KiB page on every call, and a padded buffer keeps its zero border.

    Buffers are kept per shape, so a process that runs many models or resolutions would collect them
    without end: past ``SCRATCH_LIMIT`` the set is dropped and rebuilt (the caller's own references
    stay valid, and new buffers start zero-filled again)."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (role, shape, np.dtype(dtype))
    if key not in buffers:
        buffer = np.zeros(shape, dtype)
        if sum(b.nbytes for b in buffers.values()) + buffer.nbytes > SCRATCH_LIMIT:
            buffers.clear()
        buffers[key] = buffer
    return buffers[key]
