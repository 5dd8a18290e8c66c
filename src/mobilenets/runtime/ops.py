"""ONNX operators in NumPy: one function per op, named like the op, with the spec's attribute names and
defaults (https://onnx.ai/onnx/operators/). Dispatched through :data:`OPS`.

Layout: every function takes and returns tensors with ONNX's NCHW *shape*, but convolutions compute in
NHWC *memory* and return an NCHW view of it (``transpose`` without a copy). Elementwise ops keep the
memory order of their inputs, so a whole MobileNet runs channels-last: a 1x1 convolution is one matrix
product over (pixels, channels) and a depthwise convolution is k*k multiply-adds of shifted views, with
no transposes in between.
"""

from __future__ import annotations

import threading

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


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
):
    """2-D convolution (NCHW in, NCHW out); computed channels-last.

    ``margin_rows`` (set by the runner, not an ONNX attribute): lay the output out with that many zero
    rows above and below each image, because a depthwise convolution reads it next and can then use
    them as its padding instead of copying the map into a padded buffer (see :func:`_framed_empty`).
    """
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
    x = X.transpose(0, 2, 3, 1)  # NHWC view: free when X came from another Conv
    ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    depthwise = group == c and c_per_group == 1 and m == c
    nhwc_pads = ((0, 0), (top, bottom), (left, right), (0, 0))
    geometry = (ho, wo, kh, kw, sh, sw, dh, dw)
    in_frame = _depthwise_in_frame(x, W, (top, left), *geometry) if depthwise else None
    # Measured: rows win down to 14x14 maps (a 7x7 map is a few rows), except on a strided layer whose
    # input outgrows L2 (V2's 112x112x96): there the phase copy costs more than the patch view saves.
    if in_frame is not None:
        out = in_frame
    elif depthwise and ho * wo > 100 and not (sh > 1 and x.nbytes > 2**21):
        out = _depthwise_rows(x, W, (top, left, bottom, right), ho, wo, kh, kw, sh, sw, dh, dw)
    elif depthwise:
        out = _depthwise_patches(_padded(x, nhwc_pads), W, n, ho, wo, c, kh, kw, sh, sw, dh, dw)
    elif group == 1 and kh == kw == 1:
        if top or left or bottom or right or sh > 1 or sw > 1:
            x = _padded(x, nhwc_pads)[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw, :]
        pixels = np.ascontiguousarray(x).reshape(n, ho * wo, c)
        if margin_rows:
            out = np.matmul(pixels, W.reshape(m, c).T, out=_framed_empty(n, ho, wo, m, X.dtype, margin_rows))
        else:
            out = pixels @ W.reshape(m, c).T
        out = out.reshape(n, ho, wo, m)
    else:
        # The stem reads the network's NCHW input: pad it as NCHW (a plain copy, not a transpose).
        X = _padded(X, ((0, 0), (0, 0), (top, bottom), (left, right)))
        per_group = m // group
        framed = margin_rows and group == 1
        outs = [
            _im2col_conv(
                X[:, g * c_per_group : (g + 1) * c_per_group],
                W[g * per_group : (g + 1) * per_group],
                (n, ho, wo, kh, kw, sh, sw, dh, dw),
                _framed_empty(n, ho, wo, m, X.dtype, margin_rows) if framed else None,
            )
            for g in range(group)
        ]
        out = outs[0] if group == 1 else np.concatenate(outs, axis=-1)
    if B is not None:
        out += B
    return out.transpose(0, 3, 1, 2)


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


def _depthwise_patches(x, W, n, ho, wo, c, kh, kw, sh, sw, dh, dw):
    """Depthwise convolution of a deep layer (few pixels, many channels), channels-last, ``x`` padded:
    one einsum over a strided (N, Ho, Wo, kh, kw, C) patch view, a single pass over memory."""
    weights = np.ascontiguousarray(W.reshape(c, kh, kw).transpose(1, 2, 0))  # (kh, kw, C)
    out = np.empty((n, ho, wo, c), dtype=np.result_type(x, W))
    s_n, s_h, s_w, s_c = x.strides
    patches = np.lib.stride_tricks.as_strided(
        x, (n, ho, wo, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c), writeable=False
    )
    return np.einsum("nhwijc,ijc->nhwc", patches, weights, out=out)


def _depthwise_rows(x, W, pads, ho, wo, kh, kw, sh, sw, dh, dw):
    """Depthwise convolution of a shallow layer (many pixels, few channels), channels-last, unpadded ``x``.

    The k*k taps are shifted views over whole output rows, summed by einsum with each tap's weights
    repeated along the row, so the inner loop is one contiguous run of wo*C floats rather than wo runs
    of C (C is 16-32 at the widest layers). The input is copied once, padded, into ``sw`` column phases
    (every sw-th padded column), so that a strided layer's windows are contiguous too; the phase
    buffers are reused across calls with their zero borders in place.
    """
    n, h, w, c = x.shape
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


# A depthwise convolution after a 1x1 convolution reads the 1x1's output where it lies. The producer
# lays each image out between zero rows ("the frame"), and every output row of the depthwise is then
# k*k shifted views of one flat run of memory: the rows above and below come from the frame; a window
# that runs off the left or right edge reads the neighbouring row's pixels, which the tap's weight for
# that column (zero there) cancels. No padded copy of the input is made, and a strided layer computes
# every column of its output rows in one contiguous run and keeps every sw-th: twice the multiply-adds
# of the strided layer, measured 1.5-2.5x faster than splitting the input into column phases.


def _framed_empty(n, ho, wo, c, dtype, margin_rows):
    """An uninitialised (N, Ho*Wo, C) array for a convolution's output, each image between
    ``margin_rows`` zero rows (only the frame is written here)."""
    rows = margin_rows * wo
    full = np.empty((n, (ho + 2 * margin_rows) * wo, c), dtype)
    full[:, :rows] = 0
    full[:, rows + ho * wo :] = 0
    return full[:, rows : rows + ho * wo]


def _depthwise_in_frame(x, W, pads, ho, wo, kh, kw, sh, sw, dh, dw):
    """Depthwise convolution of an NHWC ``x`` that lies in a buffer from :func:`_framed_empty` (see
    above); returns NHWC, or None when ``x`` is not in such a buffer or its zero rows do not cover every
    window. Checked, not assumed: the frame must hold zeros now (a few rows per image to read), so the
    result is exact whoever made ``x``."""
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
    margin, odd = divmod(full.shape[1] - h * w, 2)  # zero pixels above (and below) each image
    offset = x.__array_interface__["data"][0] - full.__array_interface__["data"][0]  # cheaper than .ctypes
    if odd or margin % w or offset != margin * c * x.itemsize:
        return None
    top, left = pads
    # A strided layer either computes every column of its output rows (as if stride 1, in one
    # contiguous run) and keeps every sw-th, or reads the kept columns directly (runs of C): measured,
    # the second wins from C = 256 on, where a run of C floats is long enough for einsum's inner loop.
    step = sw if sw > 1 and c >= 256 else 1
    columns = wo if step > 1 else sw * (wo - 1) + 1
    row = w * c
    start = margin * c - top * row - left * c  # the first window's first element, from the frame's start
    end = start + (sh * (ho - 1) + dh * (kh - 1)) * row + ((kw - 1) * dw + step * (columns - 1) + 1) * c
    if start < 0 or end > full[0].size:
        return None
    if np.count_nonzero(full[:, :margin]) or np.count_nonzero(full[:, margin + h * w :]):
        return None
    item = x.itemsize
    # np.ndarray over the buffer, not as_strided: a tenth of the set-up cost, and it refuses a view that
    # would reach past the buffer.
    windows = np.ndarray(
        (n, ho, kh, kw, columns, c),
        x.dtype,
        buffer=full,
        offset=start * item,
        strides=(full.strides[0], sh * row * item, dh * row * item, dw * c * item, step * c * item, item),
    )
    weights = _row_weights(W, kh, kw, columns, step, w, left, dw)
    out = np.empty((n, ho, columns, c), x.dtype)
    if step == 1:  # contiguous rows: one run of columns*C floats per output row and tap
        windows = windows.reshape(n, ho, kh, kw, columns * c)
        np.einsum("nrijx,ijx->nrx", windows, weights.reshape(kh, kw, -1), out=out.reshape(n, ho, -1))
    else:
        np.einsum("nrijwc,ijwc->nrwc", windows, weights, out=out)
    return np.ascontiguousarray(out[:, :, ::sw]) if sw > 1 and step == 1 else out


_ROW_WEIGHTS: dict = {}  # (id of the weights, geometry) -> (weights, row weights)
ROW_WEIGHTS_LIMIT = 64 << 20  # bytes; V2 and V3 at 224x224 keep 2.5-4.5 MB of row weights each


def _row_weights(W, kh, kw, columns, step, width, left, dw):
    """(kh, kw, columns, C): each tap's weights repeated along an output row (output column x reads
    input column step*x + j*dw - left for tap j), zero where the tap falls outside the image (there it
    reads a neighbouring row). Cached per weight array: the runner passes the same initializer on
    every call."""
    key = (id(W), kh, kw, columns, step, width, left, dw)
    cached = _ROW_WEIGHTS.get(key)
    if cached is not None and cached[0] is W:
        return cached[1]
    c = W.shape[0]
    per_tap = W.reshape(c, kh, kw).transpose(1, 2, 0)  # (kh, kw, C)
    weights = np.repeat(per_tap[:, :, None, :], columns, axis=2)  # (kh, kw, columns, C)
    for j in range(kw):
        source = step * np.arange(columns) + j * dw - left  # the input column tap j reads
        weights[:, j, (source < 0) | (source >= width)] = 0
    if sum(entry[1].nbytes for entry in _ROW_WEIGHTS.values()) + weights.nbytes > ROW_WEIGHTS_LIMIT:
        _ROW_WEIGHTS.clear()  # many models or resolutions in one process: start again rather than grow
    _ROW_WEIGHTS[key] = (W, weights)
    return weights


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


def _im2col_conv(X, W, geometry, out=None):
    """General convolution of a padded NCHW ``X`` (in MobileNets, the stem): one row of columns per
    (tap, input channel), each a strided copy of the whole output grid, then one matrix product. Rows
    of N*Ho*Wo floats keep the copies long when C is 3, where a (pixel, tap, channel) gather would
    copy 3 floats at a time. Returns NHWC."""
    n, ho, wo, kh, kw, sh, sw, dh, dw = geometry
    c, m = X.shape[1], W.shape[0]
    columns = np.empty((kh, kw, c, n, ho, wo), dtype=X.dtype)
    for i in range(kh):
        for j in range(kw):
            window = X[
                :, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw
            ]
            columns[i, j] = window.transpose(1, 0, 2, 3)
    kernel = W.transpose(2, 3, 1, 0).reshape(kh * kw * c, m)
    rows = columns.reshape(kh * kw * c, n, ho * wo).transpose(1, 2, 0)  # (N, pixels, taps)
    return np.matmul(rows, kernel, out=out).reshape(n, ho, wo, m)


def BatchNormalization(X, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    if training_mode:
        raise NotImplementedError("BatchNormalization with training_mode=1")
    shape = (1, -1) + (1,) * (X.ndim - 2)
    factor = scale / np.sqrt(input_var + epsilon)
    return X * factor.reshape(shape) + (B - input_mean * factor).reshape(shape)


# ---------------------------------------------------------------------------------------------------
# Activations and elementwise
# ---------------------------------------------------------------------------------------------------


# The runner passes ``out`` (not an ONNX attribute) when the first input dies at this node and nothing
# else shares its memory: the result is written over it instead of into a new array. A MobileNet's
# activations are a few MB each at 224x224, so a fresh one per op costs page faults and cache misses,
# and writing in place keeps a convolution's output in the zero frame its depthwise consumer reads.


def _fits(out, *inputs):
    """``out`` when the result of an elementwise op on ``inputs`` has exactly its shape and dtype."""
    if out is None:
        return None
    for array in inputs:
        if array.dtype != out.dtype or (
            array.shape != out.shape and (array.size > 1 or array.ndim > out.ndim)
        ):
            return None
    return out


def Relu(X, *, out=None):
    return np.maximum(X, 0, dtype=X.dtype, out=_fits(out, X))


def Clip(input, min=None, max=None, *, out=None):  # noqa: A002 (the spec's names)
    low = -np.inf if min is None else min
    high = np.inf if max is None else max
    return np.clip(input, low, high, out=_fits(out, input)).astype(input.dtype, copy=False)


def HardSigmoid(X, *, alpha=0.2, beta=0.5, out=None):
    out = np.multiply(X, np.asarray(alpha, X.dtype), out=_fits(out, X))  # the rest in place
    out += np.asarray(beta, X.dtype)
    return np.clip(out, 0, 1, out=out)


def HardSwish(X, *, out=None):
    """x * max(0, min(1, x / 6 + 1/2)) (ONNX: alpha = 1/6, beta = 0.5)."""
    gate = HardSigmoid(X, alpha=1 / 6, beta=0.5)  # a new array: X is read again below
    return np.multiply(X, gate, out=_fits(out, X) if out is not None else gate)


def Sigmoid(X):
    return (1 / (1 + np.exp(-X))).astype(X.dtype, copy=False)


def Mul(A, B, *, out=None):
    return np.multiply(A, B, out=_fits(out, A, B))


def Add(A, B, *, out=None):
    return np.add(A, B, out=_fits(out, A, B))


def Sub(A, B):
    return A - B


def Div(A, B):
    return A / B


def Identity(input):  # noqa: A002
    return input


def Constant(*, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None):
    for candidate, dtype in (
        (value, None),
        (value_float, np.float32),
        (value_floats, np.float32),
        (value_int, np.int64),
        (value_ints, np.int64),
    ):
        if candidate is not None:
            return np.asarray(candidate, dtype=dtype)
    raise NotImplementedError("Constant without a value")


# ---------------------------------------------------------------------------------------------------
# Pooling, reductions, shape
# ---------------------------------------------------------------------------------------------------


def _spatial_mean(X):
    """Mean over H and W of an NCHW tensor, keepdims. A matrix product with a row of 1/(H*W) when the
    memory is channels-last (as after a Conv here): 3x faster than ``mean`` over the two strided axes,
    which squeeze-and-excite and the pooling head do every block."""
    n, c, h, w = X.shape
    pixels = X.transpose(0, 2, 3, 1)
    if not pixels.flags.c_contiguous or X.dtype != np.float32:
        return X.mean(axis=(2, 3), keepdims=True)
    weights = np.full((1, h * w), 1 / (h * w), X.dtype)
    return np.matmul(weights, pixels.reshape(n, h * w, c)).reshape(n, c, 1, 1)


def GlobalAveragePool(X):
    if X.ndim == 4:
        return _spatial_mean(X)
    return X.mean(axis=tuple(range(2, X.ndim)), keepdims=True)


def ReduceMean(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    if axes is None or len(axes) == 0:
        if noop_with_empty_axes:
            return data
        axes = tuple(range(data.ndim))
    axes = tuple(sorted(int(a) % data.ndim for a in np.ravel(axes)))
    if axes == (2, 3) and data.ndim == 4 and keepdims:
        return _spatial_mean(data)
    return data.mean(axis=axes, keepdims=bool(keepdims))


def Flatten(input, *, axis=1):  # noqa: A002
    axis = axis % input.ndim if input.ndim else 0
    return input.reshape(int(np.prod(input.shape[:axis])), -1)


def Reshape(data, shape, *, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


def Concat(*inputs, axis):
    return np.concatenate(inputs, axis=axis)


def Pad(data, pads, constant_value=None, axes=None, *, mode="constant"):
    if mode != "constant":
        raise NotImplementedError(f"Pad mode={mode!r}")
    pads = [int(p) for p in np.ravel(pads)]
    axes = list(range(data.ndim)) if axes is None else [int(a) % data.ndim for a in np.ravel(axes)]
    half = len(pads) // 2
    widths = [(0, 0)] * data.ndim
    for k, axis in enumerate(axes):
        widths[axis] = (pads[k], pads[k + half])
    value = 0 if constant_value is None else np.asarray(constant_value).item()
    return np.pad(data, widths, constant_values=value)


# ---------------------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------------------


def Gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    out = (A.T if transA else A) @ (B.T if transB else B)
    if alpha != 1.0:
        out = out * np.float32(alpha)
    if C is not None:
        out = out + (C * np.float32(beta) if beta != 1.0 else C)
    return out


def MatMul(A, B):
    return A @ B


def Softmax(input, *, axis=-1):  # noqa: A002
    shifted = input - input.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# Quantization (the int8 QDQ files `mobilenets quantize` writes)
# ---------------------------------------------------------------------------------------------------


def _per_axis(value, x, axis):
    value = np.asarray(value)
    if value.ndim == 0:
        return value
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return value.reshape(shape)


def QuantizeLinear(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0, output_dtype=0):
    if block_size:
        raise NotImplementedError("blocked quantization (block_size > 0)")
    dtype = np.asarray(y_zero_point).dtype if y_zero_point is not None else np.uint8
    info = np.iinfo(dtype)
    zero = 0 if y_zero_point is None else _per_axis(y_zero_point, x, axis).astype(np.int32)
    q = np.rint(x / _per_axis(y_scale, x, axis)) + zero  # rint: round half to even, as the spec says
    return np.clip(q, info.min, info.max).astype(dtype)


def DequantizeLinear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0):
    if block_size:
        raise NotImplementedError("blocked quantization (block_size > 0)")
    zero = 0 if x_zero_point is None else _per_axis(x_zero_point, x, axis).astype(np.int32)
    return ((x.astype(np.int32) - zero) * _per_axis(x_scale, x, axis)).astype(np.float32)


RUNNER_KEYWORDS = frozenset({"out", "margin_rows"})  # passed by the runner, never read from a node

OPS = {
    name: function
    for name, function in globals().items()
    if callable(function) and name[:1].isupper() and function.__module__ == __name__
}
