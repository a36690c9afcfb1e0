"""One index of an ONNX graph, built once per model and shared by the graph passes.

The passes that decide what FP16 and INT8 must leave alone ask the same questions of a graph:
which node produces a tensor, which nodes read it, what its element type is, whether it is a
constant. Each pass used to answer them itself: an FP16 conversion ran full ONNX shape
inference three times and built the producer map three times. Passes now take an index, and
shape inference runs once per model (the source, then the converted one).

An index describes the graph as it was when built. A pass that mutates the graph says so;
the caller then builds a new index before analysing the result.
"""

from __future__ import annotations

from functools import cached_property

import onnx


class GraphIndex:
    """Name -> node maps of ``model``'s graph, and element types on demand.

    ``producers``: tensor name -> the node writing it. ``readers``: tensor name -> the nodes
    reading it, in graph order (a node reading a tensor twice is listed twice).
    ``initializers``: name -> initializer. ``constants``: output name -> ``Constant`` node.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.producers: dict[str, onnx.NodeProto] = {
            out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.initializers: dict[str, onnx.TensorProto] = {i.name: i for i in graph.initializer}
        self.constants: dict[str, onnx.NodeProto] = {
            node.output[0]: node for node in graph.node if node.op_type == "Constant"}

    @cached_property
    def types(self) -> dict[str, int]:
        """Element type (``onnx.TensorProto`` enum) of every tensor ONNX can infer one for.

        Inferred on first use, at most once per index: shape inference copies the whole
        model, weights included, and the INT8 head and pyramid analyses need no types.
        """
        graph = onnx.shape_inference.infer_shapes(self.model).graph
        types = {v.name: v.type.tensor_type.elem_type
                 for v in [*graph.input, *graph.value_info, *graph.output]}
        types.update({i.name: i.data_type for i in graph.initializer})
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].t.ByteSize():
                types[node.output[0]] = node.attribute[0].t.data_type
        return types


def name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a stable name (mutates ``model``).

    ONNX Runtime's quantizer and the FP16 converter's block list address nodes by name.
    """
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
