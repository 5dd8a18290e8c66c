"""ONNX operators in NumPy: one function per op, named like the op, with the spec's attribute names and
defaults (https://onnx.ai/onnx/operators/). Dispatched through :data:`OPS`.

Layout: every function takes and returns tensors with ONNX's NCHW *shape*, but convolutions (in
:mod:`.conv`) compute in NHWC *memory* and return an NCHW view of it (``transpose`` without a copy).
Elementwise ops keep the memory order of their inputs, so a whole MobileNet runs channels-last: a 1x1
convolution is one matrix product over (pixels, channels) and a depthwise convolution is k*k
multiply-adds of shifted views, with no transposes in between.
"""

from __future__ import annotations

import math

import numpy as np

from .conv import Conv, prepare_conv, weight_layout  # noqa: F401 (Conv is dispatched through OPS)

# ---------------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------------


def BatchNormalization(X, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    if training_mode:
        raise NotImplementedError("BatchNormalization with training_mode=1")
    shape = (1, -1) + (1,) * (X.ndim - 2)
    factor = scale / np.sqrt(input_var + epsilon)
    return X * factor.reshape(shape) + (B - input_mean * factor).reshape(shape)


# ---------------------------------------------------------------------------------------------------
# Activations and elementwise
# ---------------------------------------------------------------------------------------------------


# The runner passes ``out`` (not an ONNX attribute), one of the inputs, when that input dies at this node
# and nothing else shares its memory: the result is written over it instead of into a new array. A MobileNet's
# activations are a few MB each at 224x224, so a fresh one per op costs page faults and cache misses,
# and writing in place keeps a convolution's output in the zero frame its depthwise consumer reads.


# np.clip is a Python wrapper (argument checks, deprecation paths) around the clip ufunc: ~3.7 us a call
# against ~1.1 us for the ufunc itself, and a MobileNetV3 clips ~45 times per image, mostly small
# squeeze-and-excite tensors. The ufunc lives in NumPy's private namespace (np._core.umath in 2.x,
# np.core.umath in 1.x): used when found, np.clip otherwise (same results either way).
_CORE = getattr(np, "_core", None) or getattr(np, "core", None)  # np.core only where np._core is not
_CLIP = getattr(getattr(_CORE, "umath", None), "clip", None)
if not isinstance(_CLIP, np.ufunc):
    _CLIP = np.clip


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
    # clip, not maximum: on this NumPy, maximum against a scalar is a scalar loop, 2.5-3x slower than
    # clip's vectorised one on a MobileNet's activations (half of which are negative).
    if X.dtype.kind == "f":
        return _CLIP(X, X.dtype.type(0), X.dtype.type(np.inf), out=_fits(out, X))
    return np.maximum(X, 0, dtype=X.dtype, out=_fits(out, X))


def Clip(input, min=None, max=None, *, out=None):  # noqa: A002 (the spec's names)
    low = -np.inf if min is None else min
    high = np.inf if max is None else max
    return _CLIP(input, low, high, out=_fits(out, input)).astype(input.dtype, copy=False)


def HardSigmoid(X, *, alpha=0.2, beta=0.5, out=None):
    out = np.multiply(X, np.asarray(alpha, X.dtype), out=_fits(out, X))  # the rest in place
    out += np.asarray(beta, X.dtype)
    return _CLIP(out, out.dtype.type(0), out.dtype.type(1), out=out)


def HardSwish(X, *, out=None):
    """x * max(0, min(1, x / 6 + 1/2)) (ONNX: alpha = 1/6, beta = 0.5)."""
    gate = HardSigmoid(X, alpha=1 / 6, beta=0.5)  # a new array: X is read again below
    target = _fits(out, X)
    return np.multiply(X, gate, out=gate if target is None else target)


def Sigmoid(X):
    return (1 / (1 + np.exp(-X))).astype(X.dtype, copy=False)


def Exp(input):  # noqa: A002
    return np.exp(input)


def Mul(A, B, *, out=None):
    return np.multiply(A, B, out=_fits(out, A, B))


def Add(A, B, *, out=None):
    return np.add(A, B, out=_fits(out, A, B))


def Sub(A, B):
    return A - B


def Div(A, B):
    if A.dtype.kind in "iu" and B.dtype.kind in "iu":  # integers: C's division, truncating toward zero
        quotient = np.floor_divide(A, B)
        return quotient + ((np.remainder(A, B) != 0) & ((A < 0) ^ (B < 0))).astype(quotient.dtype)
    return np.divide(A, B)


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


def _spatial_mean(X, weights=None):
    """Mean over H and W of an NCHW tensor, keepdims. A matrix product with a row of 1/(H*W) when the
    memory is channels-last (as after a Conv here): 3x faster than ``mean`` over the two strided axes,
    which squeeze-and-excite and the pooling head do every block. ``weights``: that row, made already."""
    n, c, h, w = X.shape
    pixels = X.transpose(0, 2, 3, 1)
    if not pixels.flags.c_contiguous or X.dtype.kind != "f":
        return X.mean(axis=(2, 3), keepdims=True)
    if weights is None or weights.dtype != X.dtype:
        weights = np.full((1, h * w), 1 / (h * w), X.dtype)
    return np.matmul(weights, pixels.reshape(n, h * w, c)).reshape(n, c, 1, 1)


def GlobalAveragePool(X):
    if X.ndim == 4:
        return _spatial_mean(X)
    return X.mean(axis=tuple(range(2, X.ndim)), keepdims=True)


def AveragePool(
    X,
    *,
    kernel_shape,
    auto_pad="NOTSET",
    ceil_mode=0,
    count_include_pad=0,
    dilations=None,
    pads=None,
    strides=None,
):
    """Average over windows (any number of spatial axes). LR-ASPP's regional gate pooling (V3 Figure 10)
    exports to this. The mean divides by the window's input positions, plus its explicit padding when
    ``count_include_pad``; positions past the padding that ``ceil_mode`` adds never count."""
    spatial = X.ndim - 2
    kernel = [int(k) for k in kernel_shape]
    strides = [int(v) for v in strides] if strides else [1] * spatial
    dilations = [int(v) for v in dilations] if dilations else [1] * spatial
    size = X.shape[2:]
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // s) for n, s in zip(size, strides, strict=True)]
        total = [max(0, (o - 1) * s + e - n) for o, s, e, n in zip(out, strides, extent, size, strict=True)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        pads = begin + [t - b for t, b in zip(total, begin, strict=True)]
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    elif auto_pad != "NOTSET":
        raise NotImplementedError(f"AveragePool auto_pad={auto_pad!r}")
    pads = [int(p) for p in pads] if pads else [0] * (2 * spatial)
    out = []
    for axis in range(spatial):
        padded = size[axis] + pads[axis] + pads[axis + spatial] - extent[axis]
        count = (-(-padded // strides[axis]) if ceil_mode else padded // strides[axis]) + 1
        if ceil_mode and (count - 1) * strides[axis] >= size[axis] + pads[axis]:
            count -= 1  # a last window that would start in the end padding is dropped
        out.append(count)
    # Zero-pad to cover every window; ``weight`` is 1 where a position counts toward the divisor.
    reach = [(o - 1) * s + e for o, s, e in zip(out, strides, extent, strict=True)]
    widths = [(0, 0), (0, 0)] + [(pads[a], max(0, reach[a] - size[a] - pads[a])) for a in range(spatial)]
    data = np.pad(X.astype(np.float64), widths)
    weight = np.zeros(data.shape[2:])
    counted = tuple(
        slice(0, pads[a] + size[a] + pads[a + spatial])
        if count_include_pad
        else slice(pads[a], pads[a] + size[a])
        for a in range(spatial)
    )
    weight[counted] = 1.0
    total = np.zeros(X.shape[:2] + tuple(out))
    divisor = np.zeros(tuple(out))
    for offset in np.ndindex(*kernel):
        window = tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, n, s in zip(offset, dilations, out, strides, strict=True)
        )
        total += data[(slice(None), slice(None)) + window]
        divisor += weight[window]
    return (total / np.maximum(divisor, 1)).astype(X.dtype)


def ReduceMean(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return prepare_reduce_mean(data, axes, keepdims=keepdims, noop_with_empty_axes=noop_with_empty_axes)(data)


def ReduceMean_1(data, *, axes=None, keepdims=1):
    """ReduceMean-1 to -13 (models declaring opset < 18): the axes are an attribute, not an input."""
    return ReduceMean(data, axes, keepdims=keepdims)


def prepare_reduce_mean(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """``ReduceMean`` with these axes, for inputs of ``data``'s shape: returns ``run(data)``. Squeeze-and-
    excite takes a mean every block; parsing the axes input each time cost a third of it."""
    if axes is None or len(axes) == 0:
        if noop_with_empty_axes:  # a copy: the runner may write over this output, never over a live input
            return lambda data: data.copy()
        axes = tuple(range(data.ndim))
    axes = tuple(sorted(int(a) % data.ndim for a in np.ravel(axes)))
    if axes == (2, 3) and data.ndim == 4 and keepdims:
        pixels = data.shape[2] * data.shape[3]
        weights = np.full((1, pixels), 1 / pixels, data.dtype) if data.dtype.kind == "f" else None
        return lambda data: _spatial_mean(data, weights)
    return lambda data: data.mean(axis=axes, keepdims=bool(keepdims))


def Flatten(input, *, axis=1):  # noqa: A002
    axis = axis % input.ndim if input.ndim else 0
    return input.reshape(math.prod(input.shape[:axis]), -1)


def Reshape(data, shape, *, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


def Transpose(data, *, perm=None):
    """A copy in the new order (the runner may write over an op's output; a view would alias its input)."""
    return np.ascontiguousarray(np.transpose(data, None if perm is None else [int(p) for p in perm]))


def Gather(data, indices, *, axis=0):
    indices = np.asarray(indices).astype(np.int64)
    size = data.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise ValueError(f"Gather index out of range for axis {axis} of size {size}")
    return np.take(data, np.where(indices < 0, indices + size, indices), axis=axis)


def Unsqueeze(data, axes):
    """Opset 13: the axes are an input (Unsqueeze_1 below takes them as an attribute)."""
    rank = data.ndim + len(np.ravel(axes))
    for axis in sorted(int(a) % rank for a in np.ravel(axes)):
        data = np.expand_dims(data, axis)
    return data


def Unsqueeze_1(data, *, axes):
    return Unsqueeze(data, axes)


def Slice(data, starts, ends, axes=None, steps=None):
    """Slice-10 and later: starts / ends / axes / steps are inputs; out-of-range values are clamped as
    the spec says (Python's slicing rules, with INT_MAX / INT_MIN meaning the ends)."""
    starts, ends = [int(v) for v in np.ravel(starts)], [int(v) for v in np.ravel(ends)]
    axes = list(range(len(starts))) if axes is None else [int(a) % data.ndim for a in np.ravel(axes)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.ravel(steps)]
    if len(set(axes)) != len(axes) or not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("Slice: starts, ends, axes and steps must have one value per distinct axis")
    if 0 in steps:
        raise ValueError("Slice: a step of 0")
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        size = data.shape[axis]
        # clamp as the spec does; Python's slice would wrap a very negative end for negative steps
        start = min(
            max(start + size if start < 0 else start, 0 if step > 0 else -1), size if step > 0 else size - 1
        )
        end = min(max(end + size if end < 0 else end, 0 if step > 0 else -1), size if step > 0 else size - 1)
        index[axis] = slice(start, None if end == -1 and step < 0 else end, step)
    return np.ascontiguousarray(data[tuple(index)])


def Slice_1(data, *, starts, ends, axes=None):
    """Slice-1 (models declaring opset < 10): starts / ends / axes are attributes, steps are 1."""
    return Slice(data, starts, ends, axes)


def Min(*inputs):
    return np.minimum.reduce(np.broadcast_arrays(*inputs)) if len(inputs) > 1 else inputs[0].copy()


def Max(*inputs):
    return np.maximum.reduce(np.broadcast_arrays(*inputs)) if len(inputs) > 1 else inputs[0].copy()


def NonMaxSuppression(
    boxes,
    scores,
    max_output_boxes_per_class=None,
    iou_threshold=None,
    score_threshold=None,
    *,
    center_point_box=0,
):
    """Greedy NMS per batch and class (ONNX NonMaxSuppression-11): boxes (N, B, 4) as two corners (any
    order) or, with center_point_box=1, centre + size; scores (N, C, B). Returns (K, 3) int64 rows of
    (batch, class, box), by class within a batch, best score first. A box is dropped when its IoU with a
    kept one is above ``iou_threshold``; only scores above ``score_threshold`` are candidates."""
    limit = 0 if max_output_boxes_per_class is None else int(np.ravel(max_output_boxes_per_class)[0])
    iou_limit = 0.0 if iou_threshold is None else float(np.ravel(iou_threshold)[0])
    floor = None if score_threshold is None else float(np.ravel(score_threshold)[0])
    if center_point_box:
        centre, half = boxes[..., :2], boxes[..., 2:] / 2
        corners = np.concatenate([centre - half, centre + half], -1)
    else:  # the two corners in either order: sort each coordinate pair
        corners = np.concatenate(
            [np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])], -1
        )
    corners = corners.astype(np.float64)
    selected = []
    for batch in range(scores.shape[0]):
        area = (corners[batch, :, 2] - corners[batch, :, 0]) * (corners[batch, :, 3] - corners[batch, :, 1])
        for label in range(scores.shape[1]):
            if limit <= 0:
                break
            score = scores[batch, label]
            candidates = np.arange(score.shape[0]) if floor is None else np.nonzero(score > floor)[0]
            order = candidates[np.argsort(-score[candidates], kind="stable")]
            kept: list[int] = []
            for box in order:
                if len(kept) == limit:
                    break
                if kept:
                    others = corners[batch, kept]
                    inter_w = np.minimum(others[:, 2], corners[batch, box, 2]) - np.maximum(
                        others[:, 0], corners[batch, box, 0]
                    )
                    inter_h = np.minimum(others[:, 3], corners[batch, box, 3]) - np.maximum(
                        others[:, 1], corners[batch, box, 1]
                    )
                    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
                    union = area[kept] + area[box] - inter
                    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
                    if (iou > iou_limit).any():
                        continue
                kept.append(int(box))
            selected += [(batch, label, box) for box in kept]
    return np.array(selected, dtype=np.int64).reshape(-1, 3)


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


def Shape(data, *, start=0, end=None):
    """The shape as int64, sliced by ``start`` / ``end`` (opset 15; negative values count from the end)."""
    return np.array(data.shape[start:end], dtype=np.int64)


# Resize (opset 11 onwards; LR-ASPP's bilinear upsampling is mode=linear, half_pixel): the output
# coordinate x maps to x_original in the input, per axis; interpolation is separable.
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")
NEAREST_MODES = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


def Resize(
    X,
    roi=None,
    scales=None,
    sizes=None,
    *,
    mode="nearest",
    coordinate_transformation_mode="half_pixel",
    nearest_mode="round_prefer_floor",
    cubic_coeff_a=-0.75,
    exclude_outside=0,
    extrapolation_value=0.0,
    antialias=0,
    axes=None,
    keep_aspect_ratio_policy="stretch",
):
    if mode not in ("nearest", "linear"):
        raise NotImplementedError(f"Resize mode={mode!r}")
    if coordinate_transformation_mode not in COORDINATE_MODES:
        raise NotImplementedError(f"Resize coordinate_transformation_mode={coordinate_transformation_mode!r}")
    if nearest_mode not in NEAREST_MODES:
        raise NotImplementedError(f"Resize nearest_mode={nearest_mode!r}")
    if exclude_outside:
        raise NotImplementedError("Resize exclude_outside=1")
    axes = list(range(X.ndim)) if axes is None else [int(a) % X.ndim for a in axes]
    in_sizes = [X.shape[a] for a in axes]
    if sizes is not None and np.size(sizes):
        out_sizes = [int(v) for v in np.ravel(sizes)]
        scale = [o / i for o, i in zip(out_sizes, in_sizes, strict=True)]
        if keep_aspect_ratio_policy != "stretch":
            pick = min if keep_aspect_ratio_policy == "not_larger" else max
            if keep_aspect_ratio_policy not in ("not_larger", "not_smaller"):
                raise NotImplementedError(f"Resize keep_aspect_ratio_policy={keep_aspect_ratio_policy!r}")
            common = pick(scale)
            scale = [common] * len(axes)
            out_sizes = [int(np.floor(i * common + 0.5)) for i in in_sizes]
    elif scales is not None and np.size(scales):
        scale = [float(v) for v in np.ravel(scales)]
        out_sizes = [int(np.floor(i * s)) for i, s in zip(in_sizes, scale, strict=True)]
    else:
        raise ValueError("Resize needs scales or sizes")
    if antialias and mode == "linear" and any(s < 1 for s in scale):
        raise NotImplementedError("Resize antialias=1 when downsampling")
    Y = X
    for axis, length, out_length, factor in zip(axes, in_sizes, out_sizes, scale, strict=True):
        if out_length == length and factor == 1:
            continue
        x = _original_coordinates(
            coordinate_transformation_mode, np.arange(out_length), length, out_length, factor
        )
        if mode == "nearest":
            index = np.clip(NEAREST_MODES[nearest_mode](x), 0, length - 1).astype(np.intp)
            Y = np.take(Y, index, axis=axis)
            continue
        low = np.floor(x)
        ratio = (x - low).astype(np.float64)
        below = np.clip(low, 0, length - 1).astype(np.intp)
        above = np.clip(low + 1, 0, length - 1).astype(np.intp)
        shape = [1] * Y.ndim
        shape[axis] = out_length
        weight = ratio.reshape(shape)
        Y = (np.take(Y, below, axis=axis) * (1 - weight) + np.take(Y, above, axis=axis) * weight).astype(
            X.dtype
        )
    return Y


def _original_coordinates(mode: str, x: np.ndarray, length: int, out_length: int, scale: float) -> np.ndarray:
    """The spec's coordinate transforms; the resized length in them is ``scale * length`` (a float when
    scales are given), as ONNX's reference implementation computes it."""
    x = x.astype(np.float64)
    resized = scale * length
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = length / 2 * (1 - out_length / resized)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if resized != 1 else np.full_like(x, -0.5)
    if mode == "align_corners":
        return x * (length - 1) / (resized - 1) if resized != 1 else np.zeros_like(x)
    return x / scale  # asymmetric


# ---------------------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------------------


def Gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    return _gemm(A, B.T if transB else B, C, alpha, beta, transA)


def prepare_gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    """``Gemm`` with these weights: returns ``run(A)``. A transposed ``B`` (a classifier's (classes,
    features) weights) is copied once into (features, classes) order: measured, OpenBLAS reads it 15-20%
    faster than through a transposed view, and at batch 1 the classifier is all weight reading."""
    weights = weight_layout("gemm", lambda B: np.ascontiguousarray(B.T), B) if transB else B
    return lambda A: _gemm(A, weights, C, alpha, beta, transA)


def _gemm(A, weights, C, alpha, beta, transA):
    out = (A.T if transA else A) @ weights
    if alpha != 1.0:
        out = out * np.float32(alpha)
    if C is not None:
        out = out + (C * np.float32(beta) if beta != 1.0 else C)
    return out


def MatMul(A, B):
    return A @ B


def Softmax(input, *, axis=-1):  # noqa: A002
    """Softmax-13: along one axis."""
    if input.size == 0:
        return input.copy()
    shifted = input - input.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=axis, keepdims=True)).astype(input.dtype, copy=False)


def Softmax_1(input, *, axis=1):  # noqa: A002
    """Softmax-1 and -11 (models declaring opset < 13): the input is seen as a 2-D matrix, the dimensions
    before ``axis`` as rows and the rest as columns, and each row is normalised; default axis 1."""
    axis = axis % input.ndim if input.ndim else 0
    rows = math.prod(input.shape[:axis])
    return Softmax(input.reshape(rows, -1), axis=1).reshape(input.shape)


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


# TensorProto data types an integer QuantizeLinear may produce; the float8 / 4-bit / 2-bit ones are refused.
QUANTIZED_TYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}
FLOAT_TYPES = {1: np.float32, 10: np.float16}


def QuantizeLinear(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0, output_dtype=0):
    if block_size:
        raise NotImplementedError("blocked quantization (block_size > 0)")
    if output_dtype and output_dtype not in QUANTIZED_TYPES:
        raise NotImplementedError(f"output_dtype {output_dtype} (only uint8, int8, uint16, int16)")
    if y_zero_point is not None:
        dtype = np.asarray(y_zero_point).dtype
        if output_dtype and np.dtype(QUANTIZED_TYPES[output_dtype]) != dtype:
            raise ValueError(
                f"output_dtype {np.dtype(QUANTIZED_TYPES[output_dtype])} disagrees with the zero point's {dtype}"
            )
    else:
        dtype = np.dtype(QUANTIZED_TYPES.get(output_dtype, np.uint8))
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        raise NotImplementedError(f"quantization to {dtype}")
    info = np.iinfo(dtype)
    zero = 0 if y_zero_point is None else _per_axis(y_zero_point, x, axis).astype(np.int32)
    # In float32 (or the scale's float16), as the spec computes x / y_scale; rint rounds half to even.
    q = np.rint(x / _per_axis(y_scale, x, axis)) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


def DequantizeLinear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    if block_size:
        raise NotImplementedError("blocked quantization (block_size > 0)")
    if x.dtype.kind not in "iu":
        raise NotImplementedError(f"dequantizing {x.dtype}")
    if output_dtype and output_dtype not in FLOAT_TYPES:
        raise NotImplementedError(f"output_dtype {output_dtype} (only float32, float16)")
    scale = np.asarray(x_scale)
    dtype = FLOAT_TYPES[output_dtype] if output_dtype else scale.dtype
    zero = 0 if x_zero_point is None else _per_axis(x_zero_point, x, axis).astype(np.int64)
    return ((x.astype(np.int64) - zero) * _per_axis(scale, x, axis).astype(np.float32)).astype(dtype)


# Passed by the runner, never read from a node.
RUNNER_KEYWORDS = frozenset({"out", "margin_rows", "column_phases", "input_column_phases"})

OPS = {
    name: function
    for name, function in globals().items()
    if callable(function)
    and name[:1].isupper()
    and "_" not in name
    and function.__module__.startswith(__package__)
}

# Opsets. A model declares the version of the default domain it was written for, and each op means what
# its newest version at or below that says. The versions below were read from the operator changelog up
# to opset 28 (onnx 1.23); the version bumps of these ops not listed here only added types or moved an
# attribute to an input (the old form is refused as an unknown attribute, never misread).
NEWEST_OPSET = 28
FIRST_OPSET = {
    "HardSwish": 14,
    "QuantizeLinear": 10,
    "DequantizeLinear": 10,
    "Resize": 11,
    "NonMaxSuppression": 10,
}  # the opset that added the op
CHANGED = {
    "Softmax": {1: Softmax_1, 13: Softmax},
    "ReduceMean": {1: ReduceMean_1, 18: ReduceMean},
    "Unsqueeze": {1: Unsqueeze_1, 13: Unsqueeze},
    "Slice": {1: Slice_1, 10: Slice},
}  # since-version -> the function for that meaning


def for_opset(op_type: str, opset: int):
    """The function implementing ``op_type`` as opset ``opset`` defines it; NotImplementedError when the
    op does not exist there."""
    first = FIRST_OPSET.get(op_type, 1)
    if opset < first:
        raise NotImplementedError(
            f"{op_type} does not exist before opset {first}; the model declares {opset}"
        )
    versions = CHANGED.get(op_type)
    if versions is None:
        return OPS[op_type]
    return versions[max(v for v in versions if v <= opset)]


# Ops the runner prepares once per input shape (``prepare(*inputs, **attributes)`` returns ``run(X)``),
# when every input but the first is a weight.
PREPARED = {"Conv": prepare_conv, "Gemm": prepare_gemm, "ReduceMean": prepare_reduce_mean}
