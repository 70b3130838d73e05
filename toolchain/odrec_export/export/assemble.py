"""Frozen model → one checked ONNX graph: the exported encoder between the hand-written parts.

The graph, in order:

1. clean the input: ids outside 1..N become padding (0); real items are moved to the right keeping
   their order (the encoder was trained on left-padded sessions); only the last ``max_len`` slots
   are kept, so over-long sessions keep their most recent items;
2. item vectors, written by the compressor's head (``Compressor.head``: for codes, Σ_m
   codebook_m[code_m(id)]; for a plain table, one Gather);
3. the encoder, exported from PyTorch (dynamo) and simplified on its own;
4. scoring, also the head's: every item's score from the session vector (codes: per-codebook score
   tables T = codebooks · s and score(v) = Σ_m T[m, code_m(v)]; a plain table: s · tableᵀ); a model
   with a repeat bonus then adds each session slot's weight (by recency) to its item's score (one
   ScatterElements, reduction add), and TopK over items 1..N (tail.py).

Each head keeps its representation compressed: every N-sized product takes the runtime session
vector, so no constant folding (onnxruntime at load, onnxsim, the .ort converter) can rebuild the
N×d item table.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import __version__, compressors
from ..errors import OdrecError
from ..freeze import FrozenModel
from . import artifact as A
from .encoder import OPSET, export_encoder, run_onnxsim
from .graph import Graph
from .options import BuildOptions
from .tail import ScoringTail

INT64_MAX = np.iinfo(np.int64).max


def _clean_input(g: Graph, num_items: int, max_len: int) -> tuple[str, str]:
    """item_ids → compacted, truncated ids ``enc/ids`` and a float mask of real slots."""
    # One padding slot in front: a session of length 0 (item_ids B × 0) becomes an all-padding one.
    g.const("pad_one_in_front", np.array([0, 1, 0, 0], np.int64))
    x = g.op("Pad", [A.INPUT_NAME, "pad_one_in_front"], "item_ids_padded")
    g.const("zero_i64", np.array(0, np.int64))
    g.const("num_items", np.array(num_items, np.int64))
    valid = g.op("And", [g.op("Greater", [x, "zero_i64"], "gt0"),
                         g.op("LessOrEqual", [x, "num_items"], "leN")], "valid")
    clean = g.op("Where", [valid, x, "zero_i64"], "clean_ids")
    # Stable compaction: sort key = valid·L + position, ascending → padding first, order kept.
    g.const("one_i64", np.array(1, np.int64))
    g.const("axis1", np.array([1], np.int64))
    shape = g.op("Shape", [x], "in_shape")
    seq = g.op("Gather", [shape, "one_i64"], "seq_len", axis=0)
    pos = g.op("Range", ["zero_i64", seq, "one_i64"], "positions")
    key = g.op("Add", [g.op("Mul", [g.op("Cast", [valid], "valid_i64", to=TensorProto.INT64), seq], "key_hi"),
                       pos], "sort_key")
    k = g.op("Unsqueeze", [seq, g.const("axes0", np.array([0], np.int64))], "seq_len_1d")
    g.op("TopK", [key, k], ["sorted_key", "order"], axis=1, largest=0, sorted=1)
    compact = g.op("GatherElements", [clean, "order"], "compact_ids", axis=1)
    g.const("keep_start", np.array([-max_len], np.int64))
    g.const("keep_end", np.array([INT64_MAX], np.int64))
    ids = g.op("Slice", [compact, "keep_start", "keep_end", "axis1"], A.ENCODER_PREFIX + "ids")
    mask = g.op("Unsqueeze", [g.op("Cast", [g.op("Greater", [ids, "zero_i64"], "real")], "real_f", to=TensorProto.FLOAT),
                              g.const("axes_last", np.array([-1], np.int64))], "real_mask")
    return ids, mask


def _repeat_updates(g: Graph, ids: str, mask: str, weights: np.ndarray) -> str:
    """B × L: each real slot's weight w[recency] (models/repeat.py), 0 at padding."""
    g.const(A.REPEAT_WEIGHTS, weights.astype(np.float32))
    length = g.op("Gather", [g.op("Shape", [ids], "clean_shape"), "one_i64"], "clean_len", axis=0)
    slots = g.op("Range", ["zero_i64", length, "one_i64"], "clean_slots")
    recency = g.op("Sub", [g.op("Sub", [length, "one_i64"], "last_slot"), slots], "recency")
    per_slot = g.op("Gather", [A.REPEAT_WEIGHTS, recency], "repeat_per_slot", axis=0)  # L
    real = g.op("Squeeze", [mask, "axes_last"], "real_slots")  # B × L, 1.0 for items, 0.0 for padding
    return g.op("Mul", [real, per_slot], "repeat_updates")


def assemble(frozen: FrozenModel, encoder: onnx.ModelProto, opts: BuildOptions) -> onnx.ModelProto:
    """One model: cleaned input → item vectors → encoder → scores → top-k."""
    enc = encoder.graph
    nodes = list(enc.node)
    if enc.output[0].name != A.ENCODER_PREFIX + "session":
        nodes.append(helper.make_node("Identity", [enc.output[0].name], [A.ENCODER_PREFIX + "session"]))
    head = compressors.get(frozen.compressor).head(frozen, opts)
    return compose(frozen.num_items, frozen.max_len, head, nodes, list(enc.initializer), opts.top_k,
                   frozen.repeat_weights, cold_start(frozen.popular, min(opts.top_k, frozen.num_items)))


def cold_start(popular: dict | None, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The graph's answer to a session with no known item: the k most clicked training items (ids and
    log(1 + clicks) as scores), or None when the checkpoint records fewer than k."""
    if popular is None or len(popular["ids"]) < k:
        return None
    return (np.array([popular["ids"][:k]], np.int64),
            np.log1p(np.array([popular["clicks"][:k]], np.float64)).astype(np.float32))


def _answer_cold_start(g: Graph, mask: str, popular: tuple[np.ndarray, np.ndarray]) -> None:
    """Rows whose cleaned session holds no item get the popular items instead of the head's top-k."""
    for name in (A.OUTPUT_IDS, A.OUTPUT_SCORES):
        for node in g.nodes:
            node.output[:] = ["ranked_" + name if o == name else o for o in node.output]
            node.name = "ranked_" + name if node.name == name else node.name
    g.const(A.POPULAR_IDS, popular[0])
    g.const(A.POPULAR_SCORES, popular[1])
    known = g.op("ReduceSum", [mask, g.const("axes_seq", np.array([1], np.int64))], "known_items", keepdims=0)
    has_item = g.op("Greater", [known, g.const("zero_f", np.array(0.0, np.float32))], "has_item")  # B × 1
    g.op("Where", [has_item, "ranked_" + A.OUTPUT_IDS, A.POPULAR_IDS], A.OUTPUT_IDS)
    g.op("Where", [has_item, "ranked_" + A.OUTPUT_SCORES, A.POPULAR_SCORES], A.OUTPUT_SCORES)


def compose(num_items: int, max_len: int, head, enc_nodes: list, enc_inits: list, top_k: int,
            repeat_weights: np.ndarray | None = None, popular: tuple[np.ndarray, np.ndarray] | None = None,
            check: bool = True) -> onnx.ModelProto:
    """Input cleaning + ``head(g, ids, ids_m1, mask, tail)`` (item vectors, scores of items 1..N and,
    through the tail, the repeat bonus and top-k) + the encoder between them; with ``popular`` (from
    ``cold_start``), a session with no known item returns those items. ``check=False`` skips onnx's
    checker, for a graph whose weights live in an external file not written yet."""
    g = Graph()
    ids, mask = _clean_input(g, num_items, max_len)
    ids_m1 = g.op("Sub", [ids, "one_i64"], "clean_ids_minus_1")  # score column of each slot's item
    updates = _repeat_updates(g, ids, mask, repeat_weights) if repeat_weights is not None else None
    k = min(top_k, num_items)
    tail = ScoringTail(ids_m1, updates, g.const("top_k", np.array([k], np.int64)), "one_i64")
    head(g, ids, ids_m1, mask, tail)
    if popular is not None:
        _answer_cold_start(g, mask, popular)
    # The encoder's nodes sit between the item vectors and the head (nodes must be in topological order).
    head_start = next(i for i, n in enumerate(g.nodes) if A.ENCODER_PREFIX + "session" in n.input)
    g.nodes[head_start:head_start] = enc_nodes
    graph = helper.make_graph(
        g.nodes, "odrec_recommender",
        inputs=[helper.make_tensor_value_info(A.INPUT_NAME, TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info(A.OUTPUT_IDS, TensorProto.INT64, ["batch", k]),
                 helper.make_tensor_value_info(A.OUTPUT_SCORES, TensorProto.FLOAT, ["batch", k])],
        initializer=g.inits + enc_inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="odrec-export", producer_version=__version__)
    model.ir_version = A.MAX_IR_VERSION
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def _upstream(model: onnx.ModelProto, output: str, stop: set[str]) -> tuple[list, list]:
    """The nodes (in graph order) and initializers ``output`` depends on, not looking past ``stop``."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    if output not in producers:
        raise OdrecError(f"model.onnx has no {output} tensor: not a graph written by odrec-export")
    seen, todo, nodes, used = set(), [output], [], set()
    while todo:
        name = todo.pop()
        if name in seen or name in stop or name == "":
            continue
        seen.add(name)
        if name in inits:
            used.add(name)
        elif name in producers:
            node = producers[name]
            nodes.append(node)
            todo.extend(node.input)
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    nodes = sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)])
    return nodes, [inits[n] for n in sorted(used)]


def encoder_part(model: onnx.ModelProto) -> tuple[list, list]:
    """The encoder's nodes and initializers inside a built model: everything ``enc/session`` depends on,
    back to ``enc/item_vectors`` and ``enc/ids`` (used by bench to rebuild the baseline graph)."""
    return _upstream(model, A.ENCODER_PREFIX + "session", {A.ENCODER_PREFIX + "item_vectors", A.ENCODER_PREFIX + "ids"})


def prefix_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph cut at the session vector: input cleaning, item lookup and encoder (bench times it
    beside the whole graph; the difference is the head and top-k)."""
    session = A.ENCODER_PREFIX + "session"
    nodes, inits = _upstream(model, session, set())
    graph = helper.make_graph(nodes, "odrec_prefix", inputs=list(model.graph.input),
                              outputs=[helper.make_tensor_value_info(session, TensorProto.FLOAT, ["batch", "d"])],
                              initializer=inits)
    prefix = helper.make_model(graph, opset_imports=list(model.opset_import))
    prefix.ir_version = model.ir_version
    return prefix


def build_onnx_model(frozen: FrozenModel, opts: BuildOptions) -> tuple[onnx.ModelProto, list[str]]:
    """The complete, checked model and notes on each simplification pass."""
    encoder, enc_note = export_encoder(frozen, simplify=opts.simplify, quant=opts.encoder_quant)
    model = assemble(frozen, encoder, opts)
    notes = [enc_note]
    if opts.simplify:
        simplified, note = run_onnxsim(model, "whole graph")
        notes.append(note)
        if simplified is not model:
            simplified.ir_version = A.MAX_IR_VERSION
            model = simplified
    else:
        notes.append("whole graph: onnxsim not run (--no-simplify)")
    return model, notes
