"""Export-time proof that a graph's integer arithmetic is portable: inside int32, and
divisions exact on consumers that divide integers in float32.

ONNX shape and index arithmetic is int64, but consumers narrow it: OpenVINO's CPU plugin
runs int64 arithmetic in int32 (an index product above 2**31 silently wrapped by 2**32 in an
earlier export and cost 2-4 % of pixels), TensorRT stores INT64 weights as INT32, and the
same OpenVINO plugin computes integer Div and Mod in float32 (wrong once an operand passes
2**24). So every integer tensor of an exported graph must provably fit int32, and every
integer Div/Mod operand stay below ``DIVISION_LIMIT``, for every input size the contract
admits (``profiles.MIN_SIZE`` .. ``profiles.MAX_SIZE`` per side when dynamic).

``check_int32_safe`` proves it by interval analysis: each tensor gets an interval per
dimension and, when integer, an interval of its values (per element for small vectors such
as shapes, one interval otherwise), propagated node by node from the inputs' admitted
sizes. The intervals contain every value any admitted size produces (dimensions are taken
to grow with the input, as every convolution, pooling, padding and slice of these graphs
does), so a graph that passes is safe; one that fails names the node and the range it may
reach. An operator the analysis does not know, or an integer value it cannot bound (say a
float cast to int), is rejected rather than assumed safe.

``clamp_slice_bounds`` first rewrites the one int64-only idiom exporters emit on purpose:
``Slice`` starts/ends of +-2**63 meaning "to the end", which ONNX clamps to the dimension
anyway; they become +-(2**31 - 1), with identical meaning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import IsdnetError
from ..profiles import MAX_SIZE, MIN_SIZE

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_INT_RANGES = {
    TensorProto.INT8: (-(2**7), 2**7 - 1), TensorProto.UINT8: (0, 2**8 - 1),
    TensorProto.INT16: (-(2**15), 2**15 - 1), TensorProto.UINT16: (0, 2**16 - 1),
    TensorProto.INT32: (INT32_MIN, INT32_MAX), TensorProto.UINT32: (0, 2**32 - 1),
    TensorProto.INT64: (-(2**63), 2**63 - 1), TensorProto.UINT64: (0, 2**64 - 1),
}
_BOOL = TensorProto.BOOL
_FLOAT = TensorProto.FLOAT
# Integer Div/Mod operands must stay below this: OpenVINO's CPU plugin computes them in
# float32 (measured: exact below 2**24, (2**25 + 3) // 2 gives 16777218), and with both
# operands below 2**23 a correctly rounded float32 quotient truncates to the exact one.
DIVISION_LIMIT = 2**23
# Small integer tensors (shapes, pads, axes) are tracked element by element.
_ELEMENTWISE_LIMIT = 64

Interval = tuple[int, int]


class NotInt32Safe(IsdnetError):
    """An exported graph whose integer arithmetic may leave int32 (or cannot be bounded)."""


@dataclass
class Tensor:
    """What the analysis knows about one tensor: element type, an interval per dimension,
    and for integer or bool tensors the bounds of its values: arrays of per-element bounds
    when the shape is small and fixed, else scalar bounds for all elements (None: unknown).
    """
    dtype: int
    dims: list[Interval]
    lo: np.ndarray | int | None = None
    hi: np.ndarray | int | None = None

    @property
    def elementwise(self) -> bool:
        return isinstance(self.lo, np.ndarray)

    def bounds(self) -> Interval | None:
        if self.lo is None:
            return None
        if self.elementwise:
            if self.lo.size == 0:
                return (0, 0)
            return int(self.lo.min()), int(self.hi.max())
        return int(self.lo), int(self.hi)


def _fixed(dims: Sequence[Interval]) -> bool:
    return all(lo == hi for lo, hi in dims)


def _from_array(array: np.ndarray, dtype: int) -> Tensor:
    dims = [(n, n) for n in array.shape]
    if dtype not in _INT_RANGES and dtype != _BOOL:
        return Tensor(dtype, dims)
    values = array.astype(object)
    return _values(dtype, dims, values, values)


def _values(dtype: int, dims: list[Interval], lo=None, hi=None) -> Tensor:
    """A tensor with the given bounds (arrays broadcastable to the shape, or scalars), kept
    per element while the shape is fixed and small, else as scalar bounds."""
    if lo is None or hi is None:
        return Tensor(dtype, dims)
    if _fixed(dims) and math.prod(d for d, _ in dims) <= _ELEMENTWISE_LIMIT:
        shape = tuple(d for d, _ in dims)
        return Tensor(dtype, dims, np.broadcast_to(np.asarray(lo, dtype=object), shape).copy(),
                      np.broadcast_to(np.asarray(hi, dtype=object), shape).copy())
    if isinstance(lo, np.ndarray):
        lo = int(lo.min()) if lo.size else 0
    if isinstance(hi, np.ndarray):
        hi = int(hi.max()) if hi.size else 0
    return Tensor(dtype, dims, int(lo), int(hi))


def _broadcast_dims(*shapes: list[Interval]) -> list[Interval]:
    rank = max(len(s) for s in shapes)
    padded = [[(1, 1)] * (rank - len(s)) + list(s) for s in shapes]
    out = []
    for column in zip(*padded, strict=True):
        # Sizes are equal or 1; one that cannot be 1 is the output's, so it bounds it.
        sure = [d for d in column if d[0] > 1]
        if sure:
            out.append((max(lo for lo, _ in sure), min(hi for _, hi in sure)))
        else:
            out.append((min(lo for lo, _ in column), max(hi for _, hi in column)))
    return out


def _grid(*tensors: Tensor) -> tuple[list, list]:
    """Bounds of several tensors, per element (broadcastable arrays) when all have them."""
    if all(t.elementwise for t in tensors):
        return [t.lo for t in tensors], [t.hi for t in tensors]
    scalars = [t.bounds() for t in tensors]
    return [b[0] for b in scalars], [b[1] for b in scalars]


def _corners(op: Callable, a: tuple, b: tuple):
    products = [op(x, y) for x in a for y in b]
    lo = products[0]
    hi = products[0]
    for p in products[1:]:
        lo = np.minimum(lo, p)
        hi = np.maximum(hi, p)
    return lo, hi


def _trunc_div(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.vectorize(_trunc_div_int, otypes=[object])(a, b)
    return _trunc_div_int(a, b)


def _trunc_div_int(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


class _Analysis:
    def __init__(self, proto: onnx.ModelProto, input_dims: dict[str, list[Interval]]) -> None:
        self.graph = proto.graph
        self.tensors: dict[str, Tensor] = {}
        self.problems: list[str] = []
        for init in self.graph.initializer:
            self.tensors[init.name] = _from_array(numpy_helper.to_array(init), init.data_type)
        for value in self.graph.input:
            if value.name in self.tensors:
                continue
            dtype = value.type.tensor_type.elem_type
            dims = input_dims[value.name]
            low, high = _INT_RANGES.get(dtype, (None, None))
            self.tensors[value.name] = _values(dtype, dims, low, high)

    def run(self) -> dict[str, Tensor]:
        for node in self.graph.node:
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                handler = self._unary_float if node.op_type in _FLOAT_UNARY else None
            if handler is None or node.domain not in ("", "ai.onnx"):
                raise NotInt32Safe(
                    f"int32 check: node {node.name or node.output[0]} uses {node.op_type}, "
                    f"which isdnet_deploy/export/portability.py does not analyse; teach it "
                    f"the op before exporting graphs that use it")
            inputs = [self.tensors[name] if name else None for name in node.input]
            outputs = handler(node, inputs)
            for name, tensor in zip(node.output, outputs, strict=False):
                if name:
                    self.tensors[name] = tensor
        return self.tensors

    # --- helpers ---------------------------------------------------------------------

    @staticmethod
    def _attr(node: onnx.NodeProto, name: str, default=None):
        for attr in node.attribute:
            if attr.name == name:
                return onnx.helper.get_attribute_value(attr)
        return default

    @staticmethod
    def _const(tensor: Tensor | None, what: str, node: onnx.NodeProto) -> list[int]:
        """Exact values of a small integer input (axes, pads, shape targets)."""
        if tensor is None or not tensor.elementwise or any(
                lo != hi for lo, hi in zip(tensor.lo.flat, tensor.hi.flat, strict=True)):
            raise NotInt32Safe(f"int32 check: node {node.name} ({node.op_type}) takes {what} "
                               f"that is not a known constant; export with fixed {what}")
        return [int(v) for v in tensor.lo.flat]

    # --- shape and data movement -------------------------------------------------------

    def _op_Constant(self, node, inputs):
        attr = node.attribute[0]
        if attr.name != "value":
            value = onnx.helper.get_attribute_value(attr)
            array = np.asarray(value)
            dtype = _INT64 if array.dtype.kind in "iu" else _FLOAT
            return [_from_array(array, dtype)]
        return [_from_array(numpy_helper.to_array(attr.t), attr.t.data_type)]

    def _op_Shape(self, node, inputs):
        dims = inputs[0].dims
        start = self._attr(node, "start", 0)
        end = self._attr(node, "end", None)
        picked = dims[slice(start, end)]
        lo = np.array([d[0] for d in picked], dtype=object)
        hi = np.array([d[1] for d in picked], dtype=object)
        return [_values(_INT64, [(len(picked), len(picked))], lo, hi)]

    def _op_Size(self, node, inputs):
        dims = inputs[0].dims
        return [_values(_INT64, [], math.prod(d[0] for d in dims), math.prod(d[1] for d in dims))]

    def _op_ConstantOfShape(self, node, inputs):
        dims = self._dims_from_values(inputs[0], node)
        value = self._attr(node, "value")
        if value is None:
            return [Tensor(_FLOAT, dims)]
        if value.data_type not in _INT_RANGES and value.data_type != _BOOL:
            return [Tensor(value.data_type, dims)]
        scalar = int(numpy_helper.to_array(value).flat[0])
        return [_values(value.data_type, dims, scalar, scalar)]

    def _dims_from_values(self, shape: Tensor, node) -> list[Interval]:
        """Dimensions given by a 1-D shape tensor's value bounds."""
        if not shape.elementwise:
            raise NotInt32Safe(f"int32 check: node {node.name} ({node.op_type}) takes a shape "
                               f"of unknown length")
        return [(max(int(lo), 0), int(hi)) for lo, hi in zip(shape.lo, shape.hi, strict=True)]

    def _op_Reshape(self, node, inputs):
        data, shape = inputs[0], inputs[1]
        if not shape.elementwise:
            raise NotInt32Safe(f"int32 check: node {node.name} (Reshape) takes a target shape "
                               f"of unknown length")
        allow_zero = self._attr(node, "allowzero", 0)
        dims: list[Interval | None] = []
        for k, (lo, hi) in enumerate(zip(shape.lo, shape.hi, strict=True)):
            if lo == hi == 0 and not allow_zero:
                dims.append(data.dims[k])
            elif lo == hi == -1:
                dims.append(None)
            else:
                dims.append((max(int(lo), 0), int(hi)))
        if None in dims:
            total = (math.prod(d[0] for d in data.dims), math.prod(d[1] for d in data.dims))
            known = [d for d in dims if d is not None]
            other = (math.prod(d[0] for d in known), math.prod(d[1] for d in known))
            inferred = (total[0] // max(other[1], 1), -(-total[1] // max(other[0], 1)))
            dims = [inferred if d is None else d for d in dims]
        return [self._reshaped(data, dims)]

    @staticmethod
    def _reshaped(data: Tensor, dims: list[Interval]) -> Tensor:
        if data.elementwise and _fixed(dims):
            shape = tuple(d for d, _ in dims)
            return _values(data.dtype, dims, data.lo.reshape(shape), data.hi.reshape(shape))
        bounds = data.bounds()
        return _values(data.dtype, dims, *(bounds if bounds else (None, None)))

    def _axes(self, node, inputs, rank: int) -> list[int]:
        axes = self._attr(node, "axes")
        if axes is None and len(inputs) > 1 and inputs[1] is not None:
            axes = self._const(inputs[1], "axes", node)
        return [a % rank for a in (axes or [])]

    def _op_Unsqueeze(self, node, inputs):
        data = inputs[0]
        rank = len(data.dims) + len(self._attr(node, "axes") or
                                    (self._const(inputs[1], "axes", node) if len(inputs) > 1
                                     else []))
        axes = self._axes(node, inputs, rank)
        dims = list(data.dims)
        for axis in sorted(axes):
            dims.insert(axis, (1, 1))
        return [self._reshaped(data, dims)]

    def _op_Squeeze(self, node, inputs):
        data = inputs[0]
        axes = self._axes(node, inputs, len(data.dims))
        if not axes:
            axes = [k for k, d in enumerate(data.dims) if d == (1, 1)]
        dims = [d for k, d in enumerate(data.dims) if k not in axes]
        return [self._reshaped(data, dims)]

    def _op_Transpose(self, node, inputs):
        data = inputs[0]
        perm = self._attr(node, "perm") or list(reversed(range(len(data.dims))))
        dims = [data.dims[p] for p in perm]
        if data.elementwise:
            return [_values(data.dtype, dims, data.lo.transpose(perm), data.hi.transpose(perm))]
        return [_values(data.dtype, dims, data.lo, data.hi)]

    def _op_Concat(self, node, inputs):
        rank = len(inputs[0].dims)
        axis = self._attr(node, "axis") % rank
        dims = list(inputs[0].dims)
        dims[axis] = (sum(t.dims[axis][0] for t in inputs), sum(t.dims[axis][1] for t in inputs))
        if inputs[0].dtype not in _INT_RANGES and inputs[0].dtype != _BOOL:
            return [_values(inputs[0].dtype, dims)]
        if all(t.elementwise for t in inputs):
            return [_values(inputs[0].dtype, dims,
                            np.concatenate([t.lo for t in inputs], axis),
                            np.concatenate([t.hi for t in inputs], axis))]
        return [self._hull(inputs[0].dtype, dims, inputs)]

    @staticmethod
    def _hull(dtype: int, dims: list[Interval], parts: Sequence[Tensor]) -> Tensor:
        bounds = [t.bounds() for t in parts]
        if any(b is None for b in bounds):
            return _values(dtype, dims)
        return _values(dtype, dims, min(b[0] for b in bounds), max(b[1] for b in bounds))

    def _op_Gather(self, node, inputs):
        data, indices = inputs
        axis = self._attr(node, "axis", 0) % len(data.dims)
        dims = data.dims[:axis] + indices.dims + data.dims[axis + 1:]
        if data.elementwise and indices.elementwise and indices.bounds() is not None and all(
                lo == hi for lo, hi in zip(indices.lo.flat, indices.hi.flat, strict=True)):
            picks = indices.lo.astype(np.int64)
            return [_values(data.dtype, dims, np.take(data.lo, picks, axis),
                           np.take(data.hi, picks, axis))]
        return [_values(data.dtype, dims, *(data.bounds() or (None, None)))]

    def _op_Slice(self, node, inputs):
        data = inputs[0]
        rank = len(data.dims)
        starts, ends = inputs[1], inputs[2]
        if not starts.elementwise:
            raise NotInt32Safe(f"int32 check: node {node.name} (Slice) takes starts of unknown "
                               f"length")
        axes = self._const(inputs[3], "axes", node) if len(inputs) > 3 and inputs[3] else \
            list(range(starts.lo.size))
        steps = self._const(inputs[4], "steps", node) if len(inputs) > 4 and inputs[4] else \
            [1] * len(axes)
        axes = [a % rank for a in axes]
        dims = list(data.dims)
        exact = starts.elementwise and ends.elementwise and all(
            lo == hi for t in (starts, ends) for lo, hi in zip(t.lo.flat, t.hi.flat, strict=True))
        index = [slice(None)] * rank
        for k, (axis, step) in enumerate(zip(axes, steps, strict=True)):
            if exact:
                cut = slice(int(starts.lo[k]), int(ends.lo[k]), step)
                lengths = [len(range(n)[cut]) for n in data.dims[axis]]
                dims[axis] = (min(lengths), max(lengths))
                index[axis] = cut
            else:  # a run of at most the whole dimension
                dims[axis] = (0, data.dims[axis][1])
        if data.elementwise and exact and _fixed(data.dims):
            return [_values(data.dtype, dims, data.lo[tuple(index)], data.hi[tuple(index)])]
        return [_values(data.dtype, dims, *(data.bounds() or (None, None)))]

    def _op_Range(self, node, inputs):
        start, limit, delta = (t.bounds() for t in inputs)
        dtype = inputs[0].dtype
        if dtype not in _INT_RANGES:
            return [_values(dtype, [(0, 2**31)])]
        if delta[0] <= 0:
            raise NotInt32Safe(f"int32 check: node {node.name} (Range) needs a positive step")
        count = (max(0, -(-(limit[0] - start[1]) // delta[1])),
                 max(0, -(-(limit[1] - start[0]) // delta[0])))
        return [_values(dtype, [count], start[0], max(start[1], limit[1] - 1))]

    def _op_Where(self, node, inputs):
        cond, a, b = inputs
        dims = _broadcast_dims(cond.dims, a.dims, b.dims)
        if a.dtype not in _INT_RANGES:
            return [_values(a.dtype, dims)]
        if a.elementwise and b.elementwise:
            return [_values(a.dtype, dims, np.minimum(a.lo, b.lo), np.maximum(a.hi, b.hi))]
        return [self._hull(a.dtype, dims, [a, b])]

    def _op_Expand(self, node, inputs):
        target = self._dims_from_values(inputs[1], node)
        dims = _broadcast_dims(inputs[0].dims, target)
        return [_values(inputs[0].dtype, dims, *(inputs[0].bounds() or (None, None)))]

    def _op_Cast(self, node, inputs):
        to = self._attr(node, "to")
        source = inputs[0]
        if to not in _INT_RANGES and to != _BOOL:
            return [_values(to, source.dims)]
        if source.lo is None:  # a float of unknown value: the analysis cannot bound it
            return [_values(to, source.dims)]
        if to == _BOOL:
            return [_values(to, source.dims, 0, 1)]
        return [_values(to, source.dims, source.lo, source.hi)]

    # --- arithmetic ----------------------------------------------------------------------

    def _binary(self, node, inputs, op: Callable) -> list[Tensor]:
        a, b = inputs
        dims = _broadcast_dims(a.dims, b.dims)
        if a.dtype not in _INT_RANGES or a.lo is None or b.lo is None:
            return [_values(a.dtype, dims)]
        (alo, blo), (ahi, bhi) = _grid(a, b)
        lo, hi = op((alo, ahi), (blo, bhi), node)
        return [_values(a.dtype, dims, lo, hi)]

    def _op_Add(self, node, inputs):
        return self._binary(node, inputs, lambda a, b, _: (a[0] + b[0], a[1] + b[1]))

    def _op_Sub(self, node, inputs):
        return self._binary(node, inputs, lambda a, b, _: (a[0] - b[1], a[1] - b[0]))

    def _op_Mul(self, node, inputs):
        return self._binary(node, inputs, lambda a, b, _: _corners(lambda x, y: x * y, a, b))

    def _division(self, node, a, b) -> bool:
        """Record what makes an integer Div/Mod unportable; True if the divisor may be 0."""
        largest = max(np.max(np.abs(np.asarray(x, dtype=object))) for x in (*a, *b))
        if largest >= DIVISION_LIMIT:
            self.problems.append(
                f"node {node.name} ({node.op_type}) divides integers as large as {largest}; "
                f"OpenVINO's CPU plugin divides integers in float32, exact only for operands "
                f"below 2**23: split the arithmetic into smaller steps (export/exact_index.py)")
        if np.any(np.asarray(b[0] <= 0) & np.asarray(b[1] >= 0)):
            self.problems.append(f"node {node.name} ({node.op_type}) may divide by zero")
            return True
        return False

    def _op_Div(self, node, inputs):
        def divide(a, b, node):
            if self._division(node, a, b):
                size = np.maximum(np.abs(a[0]), np.abs(a[1]))
                return -size, size
            return _corners(_trunc_div, a, b)
        return self._binary(node, inputs, divide)

    def _op_Mod(self, node, inputs):
        c_style = self._attr(node, "fmod", 0) == 1

        def modulo(a, b, node):
            size = np.maximum(np.abs(b[0]), np.abs(b[1])) - 1
            if self._division(node, a, b):
                return -size, size
            if c_style:  # the sign of the dividend
                lo = np.where(np.asarray(a[0] < 0), np.maximum(a[0], -size), 0)
                hi = np.where(np.asarray(a[1] > 0), np.minimum(a[1], size), 0)
                exact = a[0] - _trunc_div(a[0], b[0]) * b[0]
            else:  # the sign of the divisor
                inside = np.asarray(a[0] >= 0) & np.asarray(a[1] < b[0])  # already reduced
                positive = np.asarray(b[0] > 0)
                lo = np.where(inside, a[0], np.where(positive, 0, -size))
                hi = np.where(inside, a[1], np.where(positive, size, 0))
                exact = a[0] % b[0]
            known = np.asarray(a[0] == a[1]) & np.asarray(b[0] == b[1])
            return np.where(known, exact, lo), np.where(known, exact, hi)
        return self._binary(node, inputs, modulo)

    def _op_Min(self, node, inputs):
        return self._fold(node, inputs, np.minimum)

    def _op_Max(self, node, inputs):
        return self._fold(node, inputs, np.maximum)

    def _fold(self, node, inputs, pick):
        out = inputs[0]
        for other in inputs[1:]:
            out = self._binary(node, [out, other],
                               lambda a, b, _: (pick(a[0], b[0]), pick(a[1], b[1])))[0]
        return [out]

    def _op_Clip(self, node, inputs):
        data = inputs[0]
        if data.dtype not in _INT_RANGES or data.lo is None:
            return [_values(data.dtype, data.dims)]
        lo, hi = data.bounds()
        if len(inputs) > 1 and inputs[1] is not None:
            lo = max(lo, inputs[1].bounds()[0])
        if len(inputs) > 2 and inputs[2] is not None:
            hi = min(hi, inputs[2].bounds()[1])
        return [_values(data.dtype, data.dims, lo, max(lo, hi))]

    def _op_Neg(self, node, inputs):
        data = inputs[0]
        if data.dtype not in _INT_RANGES or data.lo is None:
            return [_values(data.dtype, data.dims)]
        return [_values(data.dtype, data.dims, -data.hi, -data.lo)]

    def _compare(self, node, inputs):
        return [_values(_BOOL, _broadcast_dims(*(t.dims for t in inputs)), 0, 1)]

    _op_Equal = _op_Less = _op_LessOrEqual = _op_Greater = _op_GreaterOrEqual = _compare
    _op_And = _op_Or = _op_Xor = _compare

    def _op_Not(self, node, inputs):
        return [_values(_BOOL, inputs[0].dims, 0, 1)]

    # --- reductions ----------------------------------------------------------------------

    def _reduce(self, node, inputs):
        data = inputs[0]
        rank = len(data.dims)
        axes = self._axes(node, inputs, rank) or list(range(rank))
        keep = self._attr(node, "keepdims", 1)
        dims = [((1, 1) if keep else None) if k in axes else d for k, d in enumerate(data.dims)]
        dims = [d for d in dims if d is not None]
        count = (math.prod(data.dims[a][0] for a in axes), math.prod(data.dims[a][1] for a in axes))
        return data, dims, count

    def _op_ReduceSum(self, node, inputs):
        data, dims, count = self._reduce(node, inputs)
        if data.dtype not in _INT_RANGES or data.lo is None:
            return [_values(data.dtype, dims)]
        lo, hi = data.bounds()
        return [_values(data.dtype, dims, min(lo * count[0], lo * count[1]),
                       max(hi * count[0], hi * count[1]))]

    def _op_ReduceMax(self, node, inputs):
        data, dims, _ = self._reduce(node, inputs)
        return [_values(data.dtype, dims, *(data.bounds() or (None, None)))]

    _op_ReduceMin = _op_ReduceMax

    def _op_ReduceMean(self, node, inputs):
        data, dims, _ = self._reduce(node, inputs)
        return [_values(data.dtype, dims)]

    def _op_ArgMax(self, node, inputs):
        data = inputs[0]
        axis = self._attr(node, "axis", 0) % len(data.dims)
        keep = self._attr(node, "keepdims", 1)
        dims = [(1, 1) if k == axis else d for k, d in enumerate(data.dims)
                if keep or k != axis]
        return [_values(_INT64, dims, 0, max(data.dims[axis][1] - 1, 0))]

    _op_ArgMin = _op_ArgMax

    def _op_GlobalAveragePool(self, node, inputs):
        dims = inputs[0].dims
        return [_values(inputs[0].dtype, dims[:2] + [(1, 1)] * (len(dims) - 2))]

    _op_GlobalMaxPool = _op_GlobalAveragePool

    # --- float data ops (shapes only) -------------------------------------------------------

    def _unary_float(self, node, inputs):
        return [_values(inputs[0].dtype, inputs[0].dims)]

    def _window(self, node, dims: list[Interval], kernel: Sequence[int],
                transposed: bool = False) -> list[Interval]:
        if self._attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise NotInt32Safe(f"int32 check: node {node.name} ({node.op_type}) uses auto_pad")
        n = len(kernel)
        strides = self._attr(node, "strides") or [1] * n
        dilations = self._attr(node, "dilations") or [1] * n
        pads = self._attr(node, "pads") or [0] * (2 * n)
        ceil = self._attr(node, "ceil_mode", 0)
        extra = self._attr(node, "output_padding") or [0] * n
        out = []
        for k in range(n):
            reach = dilations[k] * (kernel[k] - 1) + 1
            pad = pads[k] + pads[k + n]

            def size(length: int, k=k, reach=reach, pad=pad) -> int:
                if transposed:
                    return strides[k] * (length - 1) + extra[k] + reach - pad
                span = length + pad - reach
                return (-(-span // strides[k]) if ceil else span // strides[k]) + 1
            out.append((size(dims[k][0]), size(dims[k][1])))
        return out

    def _op_Conv(self, node, inputs):
        data, weight = inputs[0], inputs[1]
        spatial = self._window(node, data.dims[2:], [d for d, _ in weight.dims[2:]])
        return [_values(data.dtype, [data.dims[0], weight.dims[0], *spatial])]

    def _op_ConvTranspose(self, node, inputs):
        data, weight = inputs[0], inputs[1]
        group = self._attr(node, "group", 1)
        channels = (weight.dims[1][0] * group, weight.dims[1][1] * group)
        spatial = self._window(node, data.dims[2:], [d for d, _ in weight.dims[2:]],
                               transposed=True)
        return [_values(data.dtype, [data.dims[0], channels, *spatial])]

    def _op_MaxPool(self, node, inputs):
        data = inputs[0]
        spatial = self._window(node, data.dims[2:], self._attr(node, "kernel_shape"))
        return [_values(data.dtype, data.dims[:2] + spatial)]

    _op_AveragePool = _op_MaxPool

    def _op_Pad(self, node, inputs):
        data = inputs[0]
        pads = self._const(inputs[1], "pads", node)
        rank = len(data.dims)
        axes = self._const(inputs[3], "axes", node) if len(inputs) > 3 and inputs[3] else \
            list(range(rank))
        dims = list(data.dims)
        for k, axis in enumerate(a % rank for a in axes):
            grow = pads[k] + pads[k + len(axes)]
            dims[axis] = (dims[axis][0] + grow, dims[axis][1] + grow)
        return [_values(data.dtype, dims, *(data.bounds() or (None, None)))]

    def _op_Resize(self, node, inputs):
        data = inputs[0]
        sizes = inputs[3] if len(inputs) > 3 else None
        if sizes is None:
            raise NotInt32Safe(f"int32 check: node {node.name} (Resize) takes scales, not "
                               f"sizes; the analysis needs sizes to bound its output")
        return [_values(data.dtype, self._dims_from_values(sizes, node))]

    def _op_MatMul(self, node, inputs):
        a, b = inputs
        batch = _broadcast_dims(a.dims[:-2], b.dims[:-2])
        return [_values(a.dtype, [*batch, a.dims[-2], b.dims[-1]])]

    def _op_Gemm(self, node, inputs):
        a, b = inputs[0], inputs[1]
        rows = a.dims[1] if self._attr(node, "transA", 0) else a.dims[0]
        cols = b.dims[0] if self._attr(node, "transB", 0) else b.dims[1]
        return [_values(a.dtype, [rows, cols])]


_INT64 = TensorProto.INT64
_FLOAT_UNARY = {"Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Abs", "Floor", "Ceil",
                "Erf", "Softmax", "LeakyRelu", "Identity", "Reciprocal", "HardSigmoid",
                "HardSwish", "Dropout"}


def input_dims(proto: onnx.ModelProto, min_side: int = MIN_SIZE, max_side: int = MAX_SIZE
               ) -> dict[str, list[Interval]]:
    """Each graph input's dimension intervals: named (symbolic) dims range over the admitted
    sides, fixed dims are themselves."""
    dims = {}
    for value in proto.graph.input:
        shape = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                shape.append((dim.dim_value, dim.dim_value))
            else:
                shape.append((min_side, max_side))
        dims[value.name] = shape
    return dims


def integer_ranges(proto: onnx.ModelProto, min_side: int = MIN_SIZE,
                   max_side: int = MAX_SIZE) -> dict[str, tuple[int, Interval | None]]:
    """Element type and value bounds (None: unknown) of every integer tensor of ``proto``."""
    tensors = _Analysis(proto, input_dims(proto, min_side, max_side)).run()
    return {name: (t.dtype, t.bounds()) for name, t in tensors.items()
            if t.dtype in _INT_RANGES}


def check_int32_safe(proto: onnx.ModelProto, min_side: int = MIN_SIZE,
                     max_side: int = MAX_SIZE) -> None:
    """Raise ``NotInt32Safe`` naming the first integer tensor that may leave int32 (or its
    own type) for some admitted input size, that cannot be bounded at all, or that an
    integer Div/Mod takes beyond ``DIVISION_LIMIT``."""
    analysis = _Analysis(proto, input_dims(proto, min_side, max_side))
    tensors = analysis.run()
    sizes = f"sides {min_side}..{max_side}" if any(
        not d.HasField("dim_value") for v in proto.graph.input
        for d in v.type.tensor_type.shape.dim) else "its fixed size"
    if analysis.problems:
        raise NotInt32Safe(f"exported graph is not portable for inputs of {sizes}: "
                           f"{analysis.problems[0]}")
    producers = {out: node for node in proto.graph.node for out in node.output}
    for name, tensor in tensors.items():
        if tensor.dtype not in _INT_RANGES:
            continue
        node = producers.get(name)
        where = f"node {node.name} ({node.op_type})" if node else f"tensor {name}"
        kind = TensorProto.DataType.Name(tensor.dtype).lower()
        bounds = tensor.bounds()
        if bounds is None:
            raise NotInt32Safe(f"exported graph is not provably int32-safe: {where} computes "
                               f"{kind} values the analysis cannot bound (from a float?); "
                               f"compute indices with integer ops (export/exact_index.py)")
        low, high = _INT_RANGES[tensor.dtype]
        low, high = max(low, INT32_MIN), min(high, INT32_MAX)
        if bounds[0] < low or bounds[1] > high:
            raise NotInt32Safe(f"exported graph is not int32-safe: {where} may reach "
                               f"{bounds[0]}..{bounds[1]} ({kind}) for inputs of {sizes}; "
                               f"runtimes that narrow int64 to int32 (OpenVINO CPU, TensorRT) "
                               f"would wrap it: rewrite that arithmetic in int32-safe steps")


def ensure_int32_safe(proto: onnx.ModelProto, min_side: int = MIN_SIZE,
                      max_side: int = MAX_SIZE) -> None:
    """Clamp Slice's "to the end" sentinels in place, then prove every integer tensor fits
    int32 for every admitted input size (``NotInt32Safe`` if not)."""
    clamp_slice_bounds(proto)
    check_int32_safe(proto, min_side, max_side)


def clamp_slice_bounds(proto: onnx.ModelProto) -> int:
    """Clamp constant Slice starts/ends beyond int32 (exporters' +-2**63 'to the end') to
    +-(2**31 - 1); ONNX clamps them to the dimension anyway, so the meaning is unchanged.
    Only constants read by nothing but Slice starts/ends are touched. Returns the count."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in proto.graph.node:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, k))
    graph_outputs = {o.name for o in proto.graph.output}
    tensors = {init.name: init for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    changed = 0
    for name, tensor in tensors.items():
        if tensor.data_type not in (TensorProto.INT64, TensorProto.INT32) or name in graph_outputs:
            continue
        uses = readers.get(name, [])
        if not uses or any(node.op_type != "Slice" or k not in (1, 2) for node, k in uses):
            continue
        values = numpy_helper.to_array(tensor)
        clamped = np.clip(values, -INT32_MAX, INT32_MAX)
        if not np.array_equal(clamped, values):
            tensor.CopyFrom(numpy_helper.from_array(clamped.astype(values.dtype), tensor.name))
            changed += 1
    return changed
