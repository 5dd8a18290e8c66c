"""Non-maximum suppression inside an exported detector: ONNX's NonMaxSuppression op appended to the graph
(``mobilenets export --nms``), so that a runtime returns the kept boxes without any code of ours.

The detector's graph ends in ``boxes`` (N, B, 4: x1, y1, x2, y2 in input pixels, clipped to the image) and
``scores`` (N, B, C: softmax, class 0 the background). Appended: the background column sliced off,
the scores transposed to (N, C - 1, B) as the op wants them, NonMaxSuppression per image and class, and
the class column shifted back by one, giving ``selected`` (K, 3) int64 rows of (image, class, box index):
``boxes[image, box]`` with score ``scores[image, box, class]``. torchvision's SSD post-processing does the
same per class (it also keeps the 300 best per class before NMS and 300 overall after; here
``max_per_class`` bounds each class after NMS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NmsSettings:
    iou_threshold: float = 0.55  # torchvision's SSD
    score_threshold: float = 0.01
    max_per_class: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.iou_threshold <= 1:
            raise ValueError(f"NMS IoU threshold must be in [0, 1], got {self.iou_threshold}")
        if not 0 <= self.score_threshold < 1:
            raise ValueError(f"NMS score threshold must be in [0, 1), got {self.score_threshold}")
        if not 1 <= self.max_per_class <= 100_000:
            raise ValueError(f"NMS boxes per class must be from 1 to 100000, got {self.max_per_class}")


def append_nms(proto, num_classes: int, settings: NmsSettings) -> None:
    """Add the NonMaxSuppression tail and the ``selected`` output to ``proto`` (in place)."""
    from onnx import TensorProto, helper, numpy_helper

    def constant(name, values, dtype):
        proto.graph.initializer.append(numpy_helper.from_array(np.array(values, dtype=dtype), f"nms/{name}"))
        return f"nms/{name}"

    nodes = [
        helper.make_node(
            "Slice",
            [
                "scores",
                constant("starts", [1], np.int64),
                constant("ends", [num_classes], np.int64),
                constant("axes", [2], np.int64),
            ],
            ["nms/foreground"],
            name="nms/slice_background",
        ),
        helper.make_node(
            "Transpose", ["nms/foreground"], ["nms/by_class"], perm=[0, 2, 1], name="nms/transpose"
        ),
        helper.make_node(
            "NonMaxSuppression",
            [
                "boxes",
                "nms/by_class",
                constant("max_per_class", [settings.max_per_class], np.int64),
                constant("iou_threshold", [settings.iou_threshold], np.float32),
                constant("score_threshold", [settings.score_threshold], np.float32),
            ],
            ["nms/selected_foreground"],
            name="nms/nms",
        ),
        helper.make_node(
            "Add",
            ["nms/selected_foreground", constant("class_shift", [[0, 1, 0]], np.int64)],
            ["selected"],
            name="nms/class_index",
        ),
    ]
    proto.graph.node.extend(nodes)
    proto.graph.output.append(helper.make_tensor_value_info("selected", TensorProto.INT64, ["selected", 3]))


def reference_nms(boxes, scores, settings: NmsSettings) -> set[tuple[int, int, int]]:
    """The (image, class, box) triples torchvision's per-class NMS keeps, for checking the graph."""
    import torch
    from torchvision.ops import nms

    kept = set()
    for image in range(scores.shape[0]):
        for label in range(1, scores.shape[2]):
            score = torch.as_tensor(scores[image, :, label])
            candidates = torch.nonzero(score > settings.score_threshold).flatten()
            order = nms(torch.as_tensor(boxes[image])[candidates], score[candidates], settings.iou_threshold)
            kept |= {(image, label, int(candidates[i])) for i in order[: settings.max_per_class]}
    return kept
