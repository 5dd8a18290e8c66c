"""Run exported MobileNets with NumPy alone: no PyTorch, ONNX or ONNX Runtime (a test checks).

    from mobilenets.runtime import OnnxModel
    model = OnnxModel("model.onnx")
    logits = model(x)        # x: (N, 3, H, W) float32

This package imports nothing else from mobilenets.
"""

from .model import OnnxModel, UnsupportedOnnx, load
from .ops import OPS
from .protobuf import OnnxFormatError

__all__ = ["OPS", "OnnxFormatError", "OnnxModel", "UnsupportedOnnx", "load"]
