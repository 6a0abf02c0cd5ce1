"""A graph's channel counts filled up to whole blocks of ONNX Runtime's CPU layout, so that a stage stays in it.

On the CPU, ONNX Runtime runs convolutions in a blocked layout (NCHWc: channels in blocks of 16 with AVX-512, of
8 with AVX2) and computes a convolution whose channel count is not a multiple of the block as if it were, filled
with zeros. The pooling, additions and activations between such convolutions run in that layout only when their
channels fill whole blocks; otherwise the tensor is converted to the plain layout and back around them. In
resnet_small, whose first stage has 24 channels, those conversions and the unblocked pooling and addition took
93 of its 862 µs an image on an AVX-512 core. Adding the zero channels to the graph itself (zero filters and
biases in the convolutions that make a stage, zero weights in those that read it) gives the same answers and
keeps the stage blocked (docs/PERFORMANCE.md: resnet_small's runs 1.09–1.10× faster, cam_net's 1.07–1.08×).
The block is this CPU's (``cpu.nchwc_block``): on an AVX2 core resnet_small's and cam_net's stages already fill whole
blocks of 8, and filled to 16 they ran 0.79× and 0.88× as fast.

Only what is understood is changed. A stage is the set of tensors joined by operations that keep channels apart
(activations, pooling, the sum of two of the stage's tensors); it is filled only if every tensor in it is made by
a plain convolution (one group, weights and bias held in the graph, used by no other node) or by such an
operation, and read only by those or by plain convolutions. A stage that reaches a graph output, or anything
else (a concatenation, a reshape into a dense layer), is left as it is, as is a graph with subgraphs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

# Operations whose output channel c depends on channel c of their inputs alone. What they make of a zero channel
# does not matter: every convolution that reads the stage gives that channel zero weight.
CHANNELWISE = frozenset({"Relu", "Tanh", "Sigmoid", "MaxPool", "AveragePool", "Add"})


@dataclass
class _Stage:
    tensors: set[str] = field(default_factory=set)
    makers: set[int] = field(default_factory=set)   # convolutions whose output is in the stage (node indices)
    readers: set[int] = field(default_factory=set)  # convolutions that take a stage tensor as their input


class _Graph:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.weights = {tensor.name: tensor for tensor in graph.initializer}
        self.outputs = {output.name for output in graph.output}
        self.inputs = {given.name for given in graph.input}  # an initializer listed here may be fed another value
        self.maker: dict[str, int] = {}
        self.readers: dict[str, list[int]] = defaultdict(list)  # a node once per input it takes the tensor as
        for index, node in enumerate(self.nodes):
            for name in node.output:
                self.maker[name] = index
            for name in node.input:
                self.readers[name].append(index)
        self.plain = {index for index, node in enumerate(self.nodes) if self._plain_convolution(node)}

    def _plain_convolution(self, node: onnx.NodeProto) -> bool:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Conv" or attributes.get("group", 1) != 1 or len(node.input) < 2:
            return False
        held = node.input[1:]
        return all(name in self.weights and name not in self.inputs and len(self.readers[name]) == 1
                   and self.weights[name].data_type == onnx.TensorProto.FLOAT
                   and self.weights[name].data_location != onnx.TensorProto.EXTERNAL for name in held)

    def channelwise(self, index: int) -> bool:
        node = self.nodes[index]
        return node.op_type in CHANNELWISE and len(node.output) == 1

    def stage(self, start: str) -> _Stage | None:
        """Every tensor joined to ``start`` through channel-wise operations, with the convolutions that make and
        read them; None if any of them is made or read by something else."""
        stage, todo = _Stage({start}), [start]
        while todo:
            name = todo.pop()
            if name in self.outputs or name not in self.maker:
                return None
            joined: list[str] = []
            made_by = self.maker[name]
            if made_by in self.plain:
                stage.makers.add(made_by)
            elif self.channelwise(made_by):
                joined.append(self.nodes[made_by].input[0])
                if self.nodes[made_by].op_type == "Add":
                    joined.append(self.nodes[made_by].input[1])
            else:
                return None
            for reader in self.readers[name]:
                node = self.nodes[reader]
                if reader in self.plain and node.input[0] == name:
                    stage.readers.add(reader)
                elif self.channelwise(reader):
                    joined.append(node.output[0])
                else:
                    return None
            for other in joined:
                if other not in stage.tensors:
                    stage.tensors.add(other)
                    todo.append(other)
        return stage


def fill_channel_blocks(model: bytes, block: int) -> bytes | None:
    """The graph with every stage it can fill brought up to a multiple of ``block`` channels; None if there is
    none to fill."""
    proto = onnx.load_model_from_string(model)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in proto.graph.node for a in node.attribute):
        return None
    graph = _Graph(proto.graph)
    arrays = {name: numpy_helper.to_array(tensor) for name, tensor in graph.weights.items()}
    seen: set[str] = set()
    filled: set[str] = set()
    for index in sorted(graph.plain):
        start = graph.nodes[index].output[0]
        if start in seen:
            continue
        stage = graph.stage(start)
        if stage is None:
            seen.add(start)
            continue
        seen |= stage.tensors
        channels = {arrays[graph.nodes[i].input[1]].shape[0] for i in stage.makers}
        read = {arrays[graph.nodes[i].input[1]].shape[1] for i in stage.readers}
        if len(channels) != 1 or not read <= channels or next(iter(channels)) % block == 0:
            continue
        count = next(iter(channels))
        wanted = -(-count // block) * block
        for i in stage.makers:
            for name in graph.nodes[i].input[1:]:  # the filters along their first axis, the bias
                arrays[name] = _filled(arrays[name], 0, wanted)
        for i in stage.readers:
            name = graph.nodes[i].input[1]
            arrays[name] = _filled(arrays[name], 1, wanted)
        filled |= stage.tensors
    if not filled:
        return None
    for name, tensor in graph.weights.items():
        tensor.CopyFrom(numpy_helper.from_array(arrays[name], name))
    kept = [info for info in proto.graph.value_info if info.name not in filled]  # their recorded shapes are stale
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    data: bytes = proto.SerializeToString()
    return data


def _filled(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    return np.pad(array, widths)
