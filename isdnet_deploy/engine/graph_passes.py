"""Graph passes for reduced precision, each over a ``GraphIndex``.

Analyses return node names and change nothing: which nodes FP16 must leave in FP32
(``shape_nodes``, ``index_nodes``, ``integer_casts``) and which INT8 must leave in float
(``head_nodes``, ``pyramid_nodes``). The passes named for an action (``split_shared_constants``,
``restore_output_types``, ``drop_fp16_round_trips``) mutate the indexed model, after which
that index is stale: build a new one before analysing the result.
"""

from __future__ import annotations

import onnx
from onnx import helper

from .graph_index import GraphIndex

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}
# Convolutions and matrix products carry the image data path: a walk back from an index
# computation stops there, and so does the walk from the outputs to the classifier head.
DATA_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _cast_target(node: onnx.NodeProto) -> int | None:
    """The element type a Cast converts to (None for other nodes)."""
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


# --- FP16: what stays FP32 ------------------------------------------------------------------

def shape_nodes(index: GraphIndex) -> list[str]:
    """Nodes computing on tensor shapes (sizes, resize targets, index ranges).

    They must stay FP32: FP16 holds integers exactly only up to 2048, so a 2448-pixel side
    would round, and the converter mistypes Casts feeding such nodes.
    """
    constants = index.initializers.keys() | index.constants.keys()
    derived: set[str] = set()
    names: list[str] = []
    for node in index.model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in ("Shape", "Size"):
            derived.update(node.output)
        elif inputs and any(i in derived for i in inputs) and all(
                i in derived or i in constants for i in inputs):
            derived.update(node.output)
            names.append(node.name)
    return names


def index_nodes(index: GraphIndex) -> list[str]:
    """Nodes that compute integers from floats: index and size arithmetic ending in a Cast to
    an integer type or a comparison (the exported pyramid's legacy-nearest picks, say).

    FP16 would clamp their constants (2**23 becomes 65504) and round their values, so they
    and the Constants they read stay FP32. Found by walking back over float tensors from
    each float->integer/bool node, stopping at convolutions and matrix products.
    """
    types = index.types
    stack = [node for node in index.model.graph.node
             if any(types.get(i) in FLOAT_TYPES for i in node.input if i)
             and all(types.get(o, 0) not in FLOAT_TYPES | {0} for o in node.output)]
    marked = dict.fromkeys(node.name for node in stack)
    while stack:
        node = stack.pop()
        for name in node.input:
            producer = index.producers.get(name)
            if (producer is None or producer.name in marked
                    or types.get(name) not in FLOAT_TYPES or producer.op_type in DATA_OPS):
                continue
            marked[producer.name] = None
            stack.append(producer)
    return list(marked)


def integer_casts(index: GraphIndex) -> list[str]:
    """Casts from integer or bool tensors (e.g. uint8 pixels) to float.

    They are where float data starts; the converter retypes them to FP16 but not the types
    it inferred for their outputs, leaving an invalid graph. Kept FP32, a Cast to FP16
    follows them instead.
    """
    types = index.types
    return [node.name for node in index.model.graph.node
            if node.op_type == "Cast" and types.get(node.input[0], 0) not in FLOAT_TYPES | {0}]


# --- FP16: mending what the converter leaves ------------------------------------------------

def split_shared_constants(index: GraphIndex, blocked: set[str], blocked_ops: set[str]) -> None:
    """Give kept-FP32 nodes their own copy of constants they share with converted nodes.

    The converter leaves a float initializer (or Constant) FP32 when any kept node reads it,
    and then a converted reader mixes FP16 and FP32 inputs (an invalid graph); exporters and
    onnxslim share equal constants freely, so this happens.

    Mutates the model: adds the copies and rewires the kept readers to them. Copied
    Constant nodes are added to ``blocked`` so they stay FP32 too.
    """
    model = index.model

    def is_blocked(node: onnx.NodeProto) -> bool:
        return node.name in blocked or node.op_type in blocked_ops

    initializers = {name: tensor for name, tensor in index.initializers.items()
                    if tensor.data_type == onnx.TensorProto.FLOAT}
    constants = {name: node for name, node in index.constants.items()
                 if node.attribute and node.attribute[0].t.data_type == onnx.TensorProto.FLOAT}
    for name in [*initializers, *constants]:
        users = index.readers.get(name, [])
        kept = [n for n in users if is_blocked(n)]
        if not kept or len(kept) == len(users):
            continue
        copy = f"{name}_fp32"
        if name in initializers:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(initializers[name])
            tensor.name = copy
            model.graph.initializer.append(tensor)
        else:
            source = constants[name]
            node = helper.make_node("Constant", [], [copy], name=f"{source.name}_fp32")
            node.attribute.extend(source.attribute)
            model.graph.node.insert(list(model.graph.node).index(source) + 1, node)
            blocked.add(node.name)
        for user in kept:
            for i, inp in enumerate(user.input):
                if inp == name:
                    user.input[i] = copy


def restore_output_types(index: GraphIndex, types: dict[str, int]) -> None:
    """Give graph outputs their original types back (``types``: output name -> type).

    The converter casts the output of a kept-FP32 node (the final Resize) to FP16 even with
    ``keep_io_types``; that Cast is retargeted, or a Cast appended, so outputs keep their
    type and the logits are not rounded on the way out.

    Mutates the model, re-routing the outputs it restores.
    """
    model = index.model
    for output in model.graph.output:
        original = types.get(output.name)
        tensor_type = output.type.tensor_type
        if original is None or tensor_type.elem_type == original:
            continue
        node = index.producers[output.name]
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = original
        else:
            inner = f"{output.name}_converted"
            node.output[list(node.output).index(output.name)] = inner
            model.graph.node.append(helper.make_node("Cast", [inner], [output.name],
                                                     name=f"{output.name}_restore_type",
                                                     to=original))
        tensor_type.elem_type = original


def drop_fp16_round_trips(index: GraphIndex) -> int:
    """Let kept-FP32 nodes feed each other directly; returns how many round trips went.

    The converter casts every output of a kept node to FP16 and back to FP32 before the next
    kept node, and leaves some of those pairs in place (when the FP16 tensor has several
    readers). That round trip clamps index arithmetic (2**24 becomes inf) and defeats
    keeping the node in FP32, so each FP32<-FP16<-FP32 chain becomes an Identity.

    Mutates the model: the outer Cast becomes an Identity, and FP16 Casts left without
    readers are removed.
    """
    model, types = index.model, index.types
    dropped = 0
    for node in model.graph.node:
        if _cast_target(node) != onnx.TensorProto.FLOAT:
            continue
        inner = index.producers.get(node.input[0])
        if (inner is not None and _cast_target(inner) == onnx.TensorProto.FLOAT16
                and types.get(inner.input[0]) == onnx.TensorProto.FLOAT):
            node.op_type = "Identity"
            node.input[0] = inner.input[0]
            del node.attribute[:]
            dropped += 1
    # Read from the graph as rewired above, not from the index.
    used = {name for node in model.graph.node for name in node.input}
    used.update(o.name for o in model.graph.output)
    dead = [n for n in model.graph.node
            if _cast_target(n) == onnx.TensorProto.FLOAT16 and n.output[0] not in used]
    for node in dead:
        model.graph.node.remove(node)
    return dropped


# --- INT8: what stays float -----------------------------------------------------------------

def head_nodes(index: GraphIndex) -> list[str]:
    """Names of the classifier convolution(s) and everything after them.

    Quantizing the logits to 256 levels flips near-tied pixels; the head is a tiny share of
    the compute, so it stays in float.
    """
    head: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in index.model.graph.output]
    while stack:
        node = index.producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        head.append(node.name)
        if node.op_type not in DATA_OPS:
            stack.extend(node.input)
    return head


def pyramid_nodes(index: GraphIndex) -> list[str]:
    """Names of the in-graph Laplacian pyramid's nodes (the exporter's ``lap_pyramid`` scope).

    The pyramid's outputs are small high-frequency residuals next to a full-range image:
    8 bits flatten them, and its ops gain nothing from INT8 (the upsampling ConvTranspose
    stays float between extra Q/DQ pairs). On a trained synthetic-task ISDNet, held-out
    images at 1958x1958, keeping it float took argmax agreement with FP32 from 97.95% to
    99.80%; the ONNX Runtime CPU forward went from 942 to 658 ms (random weights).
    """
    return [n.name for n in index.model.graph.node if "/lap_pyramid/" in n.name]
