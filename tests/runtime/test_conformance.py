"""ONNX's own backend node tests (generated from the onnx package's test-case definitions, as ONNX Runtime
runs them) for every op the NumPy runner and the C generator claim. A case either matches ONNX's expected
outputs within the case's tolerances, or is refused with the reason listed here; a listed case that stops
being refused, or a refusal that is not listed, fails. Zero silent mismatches.

A case is "for" a claimed op when every node in its model is a claimed op (the single-node case, and the
expanded function bodies that use only claimed ops). The generator takes weights from the file, so every
input after the first is made an initializer with the case's own values.
"""

import copy
import re
import warnings

import numpy as np
import pytest

from mobilenets.codegen import SUPPORTED, CodegenError, build_shared_library
from mobilenets.runtime import OnnxFormatError, OnnxModel, UnsupportedOnnx
from mobilenets.runtime.ops import OPS

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, numpy_helper  # noqa: E402

RUNNER_REFUSED = {
    # ONNX 1.23's CausalConvWithState expanded to Slice, Concat and a 1-D Conv: the runner's Conv is 2-D only
    "test_causal_conv_with_state_decode_step_expanded": "Conv on 1-D data (only 2-D is supported) is not supported",
    "test_causal_conv_with_state_with_bias_and_past_state_expanded": "Conv on 1-D data (only 2-D is supported) is not supported",
    "test_causal_conv_with_state_with_past_state_expanded": "Conv on 1-D data (only 2-D is supported) is not supported",
    "test_batchnorm_epsilon_training_mode": "BatchNormalization with training_mode=1 is not supported",
    "test_batchnorm_example_training_mode": "BatchNormalization with training_mode=1 is not supported",
    "test_dequantizelinear_blocked": "blocked quantization (block_size > 0) is not supported",
    "test_dequantizelinear_e4m3fn": "input 'x': element type float8e4m3fn is not supported",
    "test_dequantizelinear_e4m3fn_float16": "input 'x': element type float8e4m3fn is not supported",
    "test_dequantizelinear_e4m3fn_zero_point": "input 'x': element type float8e4m3fn is not supported",
    "test_dequantizelinear_e5m2": "input 'x': element type float8e5m2 is not supported",
    "test_dequantizelinear_float4e2m1": "input 'x': element type float4e2m1 is not supported",
    "test_dequantizelinear_int2": "input 'x': element type int2 is not supported",
    "test_dequantizelinear_int4": "input 'x': element type int4 is not supported",
    "test_dequantizelinear_uint2": "input 'x': element type uint2 is not supported",
    "test_dequantizelinear_uint4": "input 'x': element type uint4 is not supported",
    "test_edge_pad": "Pad mode='edge' is not supported",
    "test_quantizelinear_blocked_asymmetric": "blocked quantization (block_size > 0) is not supported",
    "test_quantizelinear_blocked_symmetric": "blocked quantization (block_size > 0) is not supported",
    "test_quantizelinear_e4m3fn": "input 'y_zero_point': element type float8e4m3fn is not supported",
    "test_quantizelinear_e5m2": "input 'y_zero_point': element type float8e5m2 is not supported",
    "test_quantizelinear_float4e2m1": "input 'y_zero_point': element type float4e2m1 is not supported",
    "test_quantizelinear_int2": "input 'y_zero_point': element type int2 is not supported",
    "test_quantizelinear_int4": "input 'y_zero_point': element type int4 is not supported",
    "test_quantizelinear_uint2": "input 'y_zero_point': element type uint2 is not supported",
    "test_quantizelinear_uint4": "input 'y_zero_point': element type uint4 is not supported",
    "test_reflect_pad": "Pad mode='reflect' is not supported",
    "test_resize_downsample_scales_cubic": "Resize mode='cubic' is not supported",
    "test_resize_downsample_scales_cubic_A_n0p5_exclude_outside": "Resize mode='cubic' is not supported",
    "test_resize_downsample_scales_cubic_align_corners": "Resize mode='cubic' is not supported",
    "test_resize_downsample_scales_cubic_antialias": "Resize mode='cubic' is not supported",
    "test_resize_downsample_scales_linear_antialias": "Resize antialias=1 when downsampling is not supported",
    "test_resize_downsample_sizes_cubic": "Resize mode='cubic' is not supported",
    "test_resize_downsample_sizes_cubic_antialias": "Resize mode='cubic' is not supported",
    "test_resize_downsample_sizes_linear_antialias": "Resize antialias=1 when downsampling is not supported",
    "test_resize_tf_crop_and_resize": "Resize coordinate_transformation_mode='tf_crop_and_resize' is not supported",
    "test_resize_tf_crop_and_resize_axes_2_3": "Resize coordinate_transformation_mode='tf_crop_and_resize' is not supported",
    "test_resize_tf_crop_and_resize_axes_3_2": "Resize coordinate_transformation_mode='tf_crop_and_resize' is not supported",
    "test_resize_tf_crop_and_resize_extrapolation_value": "Resize coordinate_transformation_mode='tf_crop_and_resize' is not supported",
    "test_resize_upsample_scales_cubic": "Resize mode='cubic' is not supported",
    "test_resize_upsample_scales_cubic_A_n0p5_exclude_outside": "Resize mode='cubic' is not supported",
    "test_resize_upsample_scales_cubic_align_corners": "Resize mode='cubic' is not supported",
    "test_resize_upsample_scales_cubic_asymmetric": "Resize mode='cubic' is not supported",
    "test_resize_upsample_sizes_cubic": "Resize mode='cubic' is not supported",
    "test_wrap_pad": "Pad mode='wrap' is not supported",
}

GENERATOR_REFUSED = {
    "test_add": "the C generator needs a 4-D NCHW image input",
    "test_add_bcast": "the C generator needs a 4-D NCHW image input",
    "test_add_int16": "the C generator needs a 4-D NCHW image input",
    "test_add_int8": "the C generator needs a 4-D NCHW image input",
    "test_add_uint16": "the C generator needs a 4-D NCHW image input",
    "test_add_uint32": "the C generator needs a 4-D NCHW image input",
    "test_add_uint64": "the C generator needs a 4-D NCHW image input",
    "test_add_uint8": "the C generator needs a 4-D NCHW image input",
    "test_clip": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_inbounds": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_inbounds_expanded": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_int8_inbounds": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_int8_inbounds_expanded": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_int8_max": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_int8_min": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_max": "the C generator needs a 4-D NCHW image input",
    "test_clip_default_min": "the C generator needs a 4-D NCHW image input",
    "test_clip_example": "the C generator needs a 4-D NCHW image input",
    "test_clip_inbounds": "the C generator needs a 4-D NCHW image input",
    "test_clip_min_greater_than_max": "the C generator needs a 4-D NCHW image input",
    "test_clip_outbounds": "the C generator needs a 4-D NCHW image input",
    "test_clip_splitbounds": "the C generator needs a 4-D NCHW image input",
    "test_conv_with_autopad_same": "auto_pad is not supported (export with explicit pads)",
    "test_flatten_axis0": "the generated C runs batch 1",
    "test_flatten_axis1": "the generated C runs batch 1",
    "test_flatten_axis2": "the generated C runs batch 1",
    "test_flatten_axis3": "the generated C runs batch 1",
    "test_flatten_default_axis": "the generated C runs batch 1",
    "test_flatten_negative_axis1": "the generated C runs batch 1",
    "test_flatten_negative_axis2": "the generated C runs batch 1",
    "test_flatten_negative_axis3": "the generated C runs batch 1",
    "test_flatten_negative_axis4": "the generated C runs batch 1",
    "test_gemm_all_attributes": "the C generator needs a 4-D NCHW image input",
    "test_gemm_alpha": "the C generator needs a 4-D NCHW image input",
    "test_gemm_beta": "the C generator needs a 4-D NCHW image input",
    "test_gemm_default_matrix_bias": "the C generator needs a 4-D NCHW image input",
    "test_gemm_default_no_bias": "the C generator needs a 4-D NCHW image input",
    "test_gemm_default_scalar_bias": "the C generator needs a 4-D NCHW image input",
    "test_gemm_default_single_elem_vector_bias": "the C generator needs a 4-D NCHW image input",
    "test_gemm_default_vector_bias": "the C generator needs a 4-D NCHW image input",
    "test_gemm_default_zero_bias": "the C generator needs a 4-D NCHW image input",
    "test_gemm_transposeA": "the C generator needs a 4-D NCHW image input",
    "test_gemm_transposeB": "the C generator needs a 4-D NCHW image input",
    "test_hardsigmoid": "the C generator needs a 4-D NCHW image input",
    "test_hardsigmoid_default": "the C generator needs a 4-D NCHW image input",
    "test_hardsigmoid_example": "the C generator needs a 4-D NCHW image input",
    "test_hardswish": "the C generator needs a 4-D NCHW image input",
    "test_hardswish_expanded": "the C generator needs a 4-D NCHW image input",
    "test_identity_opt": "the C generator needs a 4-D NCHW image input",
    "test_identity_sequence": "the C generator needs a 4-D NCHW image input",
    "test_mul": "the C generator needs a 4-D NCHW image input",
    "test_mul_bcast": "the C generator needs a 4-D NCHW image input",
    "test_mul_example": "the C generator needs a 4-D NCHW image input",
    "test_mul_int16": "the C generator needs a 4-D NCHW image input",
    "test_mul_int8": "the C generator needs a 4-D NCHW image input",
    "test_mul_uint16": "the C generator needs a 4-D NCHW image input",
    "test_mul_uint32": "the C generator needs a 4-D NCHW image input",
    "test_mul_uint64": "the C generator needs a 4-D NCHW image input",
    "test_mul_uint8": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_default_axes_keepdims_example": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_default_axes_keepdims_random": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_do_not_keepdims_example": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_do_not_keepdims_random": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_keepdims_example": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_keepdims_random": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_negative_axes_keepdims_example": "the C generator needs a 4-D NCHW image input",
    "test_reduce_mean_negative_axes_keepdims_random": "the C generator needs a 4-D NCHW image input",
    "test_relu": "the C generator needs a 4-D NCHW image input",
}


def _cases(claimed) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case definitions overflow float8 casts on purpose
        from onnx.backend.test.case.node import collect_testcases

        cases = collect_testcases()
    return [case for case in cases if {n.op_type for n in case.model.graph.node} <= set(claimed)]


def _array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def _matches(got: np.ndarray, expected: np.ndarray, case) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.dtype)
    np.testing.assert_allclose(
        got.astype(np.float64), expected.astype(np.float64), rtol=case.rtol, atol=case.atol
    )


RUNNER_CASES = _cases(OPS)
GENERATOR_CASES = _cases(SUPPORTED)


def test_the_suite_is_there_and_the_lists_are_current():
    """Enough cases to mean something, and no listed refusal for a case that no longer exists."""
    runner_names = {case.name for case in RUNNER_CASES}
    generator_names = {case.name for case in GENERATOR_CASES}
    assert len(runner_names) >= 150 and len(generator_names) >= 70
    assert set(RUNNER_REFUSED) <= runner_names and set(GENERATOR_REFUSED) <= generator_names


@pytest.mark.parametrize("case", RUNNER_CASES, ids=lambda case: case.name)
def test_numpy_runner(case):
    def run():
        model = OnnxModel(case.model.SerializeToString())
        for inputs, outputs in case.data_sets:
            names = [i.name for i in case.model.graph.input][: len(inputs)]
            got = model.run(dict(zip(names, map(_array, inputs), strict=True)))
            for value, expected in zip(got, outputs, strict=True):
                _matches(value, _array(expected), case)

    if case.name in RUNNER_REFUSED:
        with pytest.raises((UnsupportedOnnx, OnnxFormatError), match=_pattern(RUNNER_REFUSED[case.name])):
            run()
    else:
        run()


@pytest.mark.usefixtures("c_toolchain")
@pytest.mark.parametrize("case", GENERATOR_CASES, ids=lambda case: case.name)
def test_c_generator(case, tmp_path):
    inputs, outputs = case.data_sets[0]
    model = copy.deepcopy(case.model)
    names = [i.name for i in model.graph.input]
    for name, value in list(zip(names, inputs, strict=False))[1:]:
        model.graph.initializer.append(numpy_helper.from_array(_array(value), name))
    onnx.save(model, str(tmp_path / "case.onnx"))

    def run():
        function = build_shared_library(tmp_path / "case.onnx", tmp_path / "c")
        expected = _array(outputs[0])
        got = function(_array(inputs[0])).reshape(expected.shape)
        _matches(got, expected, case)

    if case.name in GENERATOR_REFUSED:
        with pytest.raises(CodegenError, match=_pattern(GENERATOR_REFUSED[case.name])):
            run()
    else:
        run()


def _pattern(text: str) -> str:
    return re.escape(text)
