"""Small passes that leave an exported MobileNet as a plain graph of standard ops.

The TorchScript exporter leaves shape arithmetic for TF-'same' padding (its constant folder gives up on
a reversed Slice) and shares equal initializers through Identity nodes. After these passes the graph holds
only Conv, activations, Mul / Add, pooling, Flatten and Gemm, which every runtime (and our NumPy runner and
C generator) supports.
"""

from __future__ import annotations

import numpy as np


def materialise_shared_initializers(proto) -> None:
    """Constant folding shares equal weights through Identity nodes; give each its own initializer."""
    initializers = {init.name: init for init in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = proto.graph.initializer.add()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
        else:
            keep.append(node)
    _replace_nodes(proto, keep)


def fold_constants(proto) -> None:
    """Evaluate every node whose inputs are all constants (onnx's reference evaluator) into initializers.

    Convolutions and Gemms are left alone even if their input were constant: they are the network.
    """
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    known = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        inputs = [name for name in node.input if name]
        foldable = node.op_type not in ("Conv", "Gemm", "MatMul") and all(name in known for name in inputs)
        if not foldable:
            keep.append(node)
            continue
        outputs = ReferenceEvaluator(node).run(None, {name: known[name] for name in inputs})
        for name, value in zip(node.output, outputs, strict=True):
            known[name] = np.asarray(value)
            proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    _replace_nodes(proto, keep)


def fuse_pad_into_conv(proto) -> None:
    """A zero Pad on height and width followed by a Conv becomes the Conv's (asymmetric) pads attribute."""
    from onnx import helper, numpy_helper

    initializers = {init.name: init for init in proto.graph.initializer}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed = set()
    for pad in [n for n in proto.graph.node if n.op_type == "Pad"]:
        mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
        pads_name = pad.input[1] if len(pad.input) > 1 else ""
        value_name = pad.input[2] if len(pad.input) > 2 else ""
        users = consumers.get(pad.output[0], [])
        if (
            mode != "constant"
            or pads_name not in initializers
            or len(users) != 1
            or users[0].op_type != "Conv"
        ):
            continue
        if value_name and float(numpy_helper.to_array(initializers[value_name])) != 0.0:
            continue
        pads = numpy_helper.to_array(initializers[pads_name]).tolist()  # [n, c, h, w begins, n, c, h, w ends]
        if len(pads) != 8 or pads[0] or pads[1] or pads[4] or pads[5]:
            continue
        conv = users[0]
        current = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        merged = [current[0] + pads[2], current[1] + pads[3], current[2] + pads[6], current[3] + pads[7]]
        kept = [a for a in conv.attribute if a.name != "pads"]
        del conv.attribute[:]
        conv.attribute.extend([*kept, helper.make_attribute("pads", merged)])
        conv.input[0] = pad.input[0]
        removed.add(id(pad))
    _replace_nodes(proto, [n for n in proto.graph.node if id(n) not in removed])


def drop_unused_initializers(proto) -> None:
    used = {name for node in proto.graph.node for name in node.input}
    used |= {output.name for output in proto.graph.output}
    keep = [init for init in proto.graph.initializer if init.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def clean(proto) -> None:
    """All of the above, in order."""
    materialise_shared_initializers(proto)
    fold_constants(proto)
    fuse_pad_into_conv(proto)
    drop_unused_initializers(proto)


def _replace_nodes(proto, nodes) -> None:
    nodes = list(nodes)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
