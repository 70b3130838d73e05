"""A small builder for hand-written ONNX graph pieces (input cleaning, item heads, top-k)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import helper, numpy_helper


@dataclass
class Graph:
    """Nodes and initializers collected while writing the graph by hand."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)

    def const(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | list[str], **attrs) -> str:
        outputs = [output] if isinstance(output, str) else output
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        return output
