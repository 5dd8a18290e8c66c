"""Small passes that leave an exported MobileNet as a plain graph of standard ops.

The TorchScript exporter leaves shape arithmetic for TF-'same' padding (its constant folder gives up on
a reversed Slice) and shares equal initializers through Identity nodes. After these passes the graph holds
only Conv, activations, Mul / Add, pooling, Flatten and Gemm, which every runtime (and our NumPy runner and
C generator) supports. The torch.export-based exporter writes the flatten as a Reshape, put back as Flatten.
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


def flatten_pooled_reshapes(proto) -> None:
    """The torch.export-based exporter flattens the pooled (N, C, 1, 1) features with Reshape(-1, C): the
    same as Flatten(axis=1), the op the TorchScript exporter wrote and every runtime (and the C
    generator) has. Only a Reshape to [-1, C] of a value whose inferred shape is (N, C, 1, 1) is rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    initializers = {init.name: init for init in proto.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {
        info.name: [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        for info in inferred.graph.value_info
    }
    nodes = []
    for node in proto.graph.node:
        shape_name = node.input[1] if node.op_type == "Reshape" and len(node.input) > 1 else ""
        target = (
            numpy_helper.to_array(initializers[shape_name]).tolist() if shape_name in initializers else None
        )
        source = shapes.get(node.input[0]) if node.input else None
        if (
            target is not None
            and len(target) == 2
            and target[0] == -1
            and source is not None
            and len(source) == 4
            and source[1:] == [target[1], 1, 1]
        ):
            node = helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name, axis=1)
        nodes.append(node)
    _replace_nodes(proto, nodes)


def name_nodes_by_module(proto) -> None:
    """Node names from the module each node came from, as the TorchScript exporter wrote them
    (``/blocks/3/se/fc1/Conv``): quantize's --keep-float matches fragments like ``/se/``. The torch.export-
    based exporter names nodes ``node_conv2d_11`` and keeps the module path in per-node metadata, with a
    stack trace that is dropped here (it is most of a small model's file)."""
    import ast

    seen: dict[str, int] = {}
    for node in proto.graph.node:
        scopes = next((m.value for m in node.metadata_props if m.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes is None:
            continue
        try:
            parts = [p for p in ast.literal_eval(scopes)[:-1] if p]  # the last scope is the op itself
        except (ValueError, SyntaxError):
            continue
        module = parts[-1] if parts else ""
        name = "/" + "/".join([*module.split("."), node.op_type]) if module else f"/{node.op_type}"
        count = seen.get(name, 0)
        seen[name] = count + 1
        node.name = name if not count else f"{name}_{count}"
        del node.metadata_props[:]


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
    flatten_pooled_reshapes(proto)
    name_nodes_by_module(proto)
    drop_unused_initializers(proto)


def _replace_nodes(proto, nodes) -> None:
    nodes = list(nodes)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
