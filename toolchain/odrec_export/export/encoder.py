"""The session encoder exported from PyTorch (dynamo), simplified on its own (onnxsim), with its large
MatMul weights stored as fp16 or int8 if asked; every name prefixed ``enc/``."""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..freeze import FrozenModel
from . import artifact as A
from .quantise import quantise_rows

OPSET = 18


def export_encoder(frozen: FrozenModel, simplify: bool = True, quant: str = "fp32") -> tuple[onnx.ModelProto, str]:
    """The encoder alone, (item_vectors B×L×d, ids B×L) → session B×d, names prefixed ``enc/``."""
    torch.manual_seed(0)
    # SessionEncoder computes positions as (t-1) - arange(t) and the causal mask from comparisons:
    # a negative-step Range is mis-optimised by onnxruntime, and Java onnxruntime 1.17 has no bool Trilu.
    core = frozen.encoder.eval()
    length = max(2, min(frozen.max_len, 8))
    ids = torch.arange(1, 2 * length + 1, dtype=torch.int64).view(2, length) % (frozen.num_items + 1)
    vecs = torch.randn(2, length, frozen.dim)
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=1, max=frozen.max_len)
    # The exporter logs (e.g. "torchvision is not installed") through handlers bound to the real stderr.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(core, (vecs, ids), dynamo=True, external_data=False, opset_version=OPSET,
                                    input_names=["item_vectors", "ids"], output_names=["session"],
                                    dynamic_shapes={"item_vectors": {0: batch, 1: seq}, "ids": {0: batch, 1: seq}},
                                    verbose=False)
    model = program.model_proto
    for node in model.graph.node:  # stack traces with local paths: not part of the model
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    note = "encoder exported without onnxsim"
    if simplify:
        model, note = run_onnxsim(model, "encoder")
    if quant == "int8":
        _quantise_matmul_weights(model)
    elif quant == "fp16":
        _fp16_matmul_weights(model)
    model = onnx.compose.add_prefix(model, A.ENCODER_PREFIX)
    return model, note


def _matmul_weights(model: onnx.ModelProto, min_elements: int = 1024) -> list[str]:
    """Names of the large 2-D MatMul/Gemm weight initializers (W as in × out)."""
    inits = {i.name: i for i in model.graph.initializer}
    return sorted({n.input[1] for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
                   and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
                   and int(np.prod(inits[n.input[1]].dims)) >= min_elements
                   and not (n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute))})


def _prepend_nodes(model: onnx.ModelProto, new_nodes: list) -> None:
    nodes = new_nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _fp16_matmul_weights(model: onnx.ModelProto) -> None:
    """Store each large MatMul weight as float16 with a Cast back to float32: half the encoder's bytes
    on disk, fp32 arithmetic at run time (onnxruntime folds the Cast once, at load)."""
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for name in _matmul_weights(model):
        w = numpy_helper.to_array(inits[name]).astype(np.float16)
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.append(numpy_helper.from_array(w, name + "_fp16"))
        new_nodes.append(helper.make_node("Cast", [name + "_fp16"], [name], name=name + "_cast",
                                          to=TensorProto.FLOAT))
    _prepend_nodes(model, new_nodes)


def _quantise_matmul_weights(model: onnx.ModelProto) -> None:
    """Replace each large 2-D MatMul/Gemm weight W by DequantizeLinear(int8 W_q, per-column scale)."""
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for name in _matmul_weights(model):
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        q, scale = quantise_rows(np.ascontiguousarray(w.T))  # one scale per output column
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(q.T), name + "_int8"),
                                        numpy_helper.from_array(scale, name + "_scale")])
        new_nodes.append(helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale"], [name],
                                          name=name + "_dequant", axis=1))
    _prepend_nodes(model, new_nodes)


def run_onnxsim(model: onnx.ModelProto, what: str) -> tuple[onnx.ModelProto, str]:
    """onnxsim, kept only when it validates and does not make the file larger."""
    import onnxsim

    before = model.ByteSize()
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            simplified, ok = onnxsim.simplify(model)
    except Exception as e:  # onnxsim raises plain RuntimeErrors from its C++ core
        return model, f"{what}: onnxsim skipped ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    if not ok:
        return model, f"{what}: onnxsim skipped (its check failed)"
    after = simplified.ByteSize()
    if after > before:
        return model, f"{what}: onnxsim skipped (it would grow the graph from {before} to {after} bytes by constant folding)"
    return simplified, f"{what}: onnxsim applied ({before} -> {after} bytes)"
