"""CpRec's block table and adaptive softmax as an ONNX graph piece (see ``models/cprec.py``).

Input side: each index is mapped through ``cprec/position`` to its rank; every block gathers its
rows (clipped into range) and projects them to d, and a per-block in-range mask keeps the right
one. Output side, all from the runtime session vector s (nothing N×d is ever built, nor can
constant folding build it):

* head = [s·E_0ᵀ, s·Cᵀ + b] → LogSoftmax;
* tail block i: LogSoftmax((s @ P_i) · E_iᵀ) + the head's log-probability of cluster i;
* [padding column, block 0, block 1, ...] concatenated and gathered through ``cprec/position``
  into item-index order: exactly ``BlockItemTable.score``.

``expand_top=k`` is CpRec's inference shortcut: only tail blocks whose cluster is among the head's
top-k entries (block-0 items and clusters ranked together) keep their log-probabilities, the items
of the other tail blocks score ``PAD_SCORE``. It is approximate: an item of an unexpanded block can
never be recommended, even when its true log-probability beats an expanded one. Each tail block
sits in an ``If``: it is computed only when some row of the batch expands it (for batch 1, the
phone's case, only the expanded blocks cost anything).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..artifact import ENCODER_PREFIX
from ..graph import Graph
from ..models.cprec import PAD_SCORE

P = "cprec/"


def _i64(g: Graph, name: str, values) -> str:
    return g.const(P + name, np.asarray(values, dtype=np.int64))


def cprec_head(g: Graph, arrays: dict[str, np.ndarray], items_cfg: dict, num_items: int, dim: int,
               ids: str, mask: str, expand_top: int | None = None) -> str:
    """Add the arrays of ``BlockItemTable.export_arrays`` and the lookup + adaptive softmax; returns
    the name of the B × (N+1) log-probabilities (column 0 = ``PAD_SCORE``)."""
    count = sum(1 for name in arrays if name.startswith(P + "block"))
    tables = [np.asarray(arrays[f"{P}block{i}"], np.float32) for i in range(count)]
    projs = [np.asarray(arrays[f"{P}proj{i}"], np.float32) for i in range(1, count)]
    sizes = [t.shape[0] for t in tables]
    position = np.asarray(arrays[P + "position"])
    if sum(sizes) != num_items or position.shape != (num_items + 1,) or tables[0].shape[1] != dim:
        raise ValueError(f"cprec arrays do not match N={num_items}, d={dim}")
    if items_cfg.get("blocks") is not None and list(items_cfg["blocks"]) != sizes[:len(items_cfg["blocks"])]:
        raise ValueError(f"cprec arrays have blocks {sizes}, config says {items_cfg['blocks']}")
    for i, t in enumerate(tables):
        g.const(f"{P}block{i}", t)
    for i, p in enumerate(projs, start=1):
        g.const(f"{P}proj{i}", p)
    g.const(P + "position", position)
    pos = g.op("Cast", [P + "position"], P + "position_i32", to=TensorProto.INT32)

    # ------------------------------------------------------------------ input side: item vectors
    rank = g.op("Sub", [g.op("Gather", [pos, ids], P + "item_pos", axis=0),
                        g.const(P + "one_i32", np.array(1, np.int32))], P + "item_rank")  # -1 = padding
    g.const(P + "zero_i32", np.array(0, np.int32))
    _i64(g, "axes_last", [-1])
    acc = None
    for i, size in enumerate(sizes):
        q = rank
        if i:
            q = g.op("Sub", [rank, g.const(f"{P}offset{i}", np.array(sum(sizes[:i]), np.int32))], f"{P}rank{i}")
        last = g.const(f"{P}last{i}", np.array(size - 1, np.int32))
        rows = g.op("Clip", [q, P + "zero_i32", last], f"{P}rows{i}")
        inside = g.op("And", [g.op("GreaterOrEqual", [q, P + "zero_i32"], f"{P}ge{i}"),
                              g.op("LessOrEqual", [q, last], f"{P}le{i}")], f"{P}inside{i}")
        weight = g.op("Unsqueeze", [g.op("Cast", [inside], f"{P}inside_f{i}", to=TensorProto.FLOAT),
                                    P + "axes_last"], f"{P}inside_w{i}")  # B × L × 1
        vecs = g.op("Gather", [f"{P}block{i}", rows], f"{P}rows_vec{i}", axis=0)  # B × L × d_i
        if i:
            proj_t = g.op("Transpose", [f"{P}proj{i}"], f"{P}proj_t{i}", perm=[1, 0])  # d_i × d
            vecs = g.op("MatMul", [vecs, proj_t], f"{P}vec{i}")
        vecs = g.op("Mul", [vecs, weight], f"{P}vec_kept{i}")
        acc = vecs if acc is None else g.op("Add", [acc, vecs], f"{P}vec_sum{i}")
    g.op("Mul", [acc, mask], ENCODER_PREFIX + "item_vectors")

    # ------------------------------------------------------------------ output side: adaptive softmax
    session = ENCODER_PREFIX + "session"
    head = g.op("Gemm", [session, P + "block0"], P + "head_item_logits", transB=1)  # B × |block 0|
    if count > 1:
        g.const(P + "clusters", np.asarray(arrays[P + "clusters"], np.float32))
        g.const(P + "cluster_bias", np.asarray(arrays[P + "cluster_bias"], np.float32))
        clusters = g.op("Gemm", [session, P + "clusters", P + "cluster_bias"], P + "cluster_logits", transB=1)
        head = g.op("Concat", [head, clusters], P + "head_logits", axis=1)
    head_lp = g.op("LogSoftmax", [head], P + "head_log_probs", axis=1)
    _i64(g, "axis1", [1])
    kth = None
    if expand_top is not None and count > 1:
        g.const(P + "neg", np.array(PAD_SCORE, np.float32))
        g.const(P + "half", np.array(0.5, np.float32))
        k = max(1, min(int(expand_top), sizes[0] + count - 1))
        g.op("TopK", [head_lp, _i64(g, "top_k", [k])], [P + "head_top_values", P + "head_top_index"],
             axis=1, largest=1, sorted=1)
        kth = g.op("Slice", [P + "head_top_values", _i64(g, "kth_start", [k - 1]), _i64(g, "kth_end", [k]),
                             P + "axis1"], P + "head_kth")  # B × 1
    batch = g.op("Shape", [session], P + "batch", start=0, end=1)
    pad_shape = g.op("Concat", [batch, _i64(g, "one_col", [1])], P + "pad_shape", axis=0)
    pad = g.op("ConstantOfShape", [pad_shape], P + "pad_column",
               value=helper.make_tensor(P + "pad_value", TensorProto.FLOAT, [1], [PAD_SCORE]))
    parts = [pad, g.op("Slice", [head_lp, _i64(g, "start0", [0]), _i64(g, "b0_end", [sizes[0]]), P + "axis1"],
                    P + "block0_log_probs") if count > 1 else head_lp]
    b0 = sizes[0]
    for i in range(1, count):
        cluster = g.op("Slice", [head_lp, _i64(g, f"cluster_start{i}", [b0 + i - 1]),
                                 _i64(g, f"cluster_end{i}", [b0 + i]), P + "axis1"], f"{P}cluster_log_prob{i}")
        if kth is None:
            lp = _tail_log_probs(g, session, i, cluster)
        else:  # computed only when some row of the batch has cluster i in its head top-k
            keep = g.op("GreaterOrEqual", [cluster, kth], f"{P}expand{i}")  # B × 1
            wanted = g.op("Greater", [g.op("ReduceMax", [g.op("Cast", [keep], f"{P}expand_f{i}", to=TensorProto.FLOAT)],
                                           f"{P}expand_any{i}", keepdims=0), P + "half"], f"{P}expand_cond{i}")
            then = Graph()
            lp_all = _tail_log_probs(then, session, i, cluster, prefix=f"{P}then{i}/")
            then.op("Where", [keep, lp_all, P + "neg"], f"{P}then{i}/out")
            skip = Graph()
            skip.op("Expand", [P + "neg", g.op("Concat", [batch, _i64(g, f"size{i}", [sizes[i]])], f"{P}skip_shape{i}",
                                               axis=0)], f"{P}skip{i}/out")
            lp = g.op("If", [wanted], f"{P}block{i}_expanded",
                      then_branch=_subgraph(then, f"{P}then{i}/out", f"cprec_expand{i}"),
                      else_branch=_subgraph(skip, f"{P}skip{i}/out", f"cprec_skip{i}"))
        parts.append(lp)
    ranked = g.op("Concat", parts, P + "ranked_log_probs", axis=1)  # B × (N+1), frequency order
    return g.op("Gather", [ranked, pos], P + "item_log_probs", axis=1)


def _tail_log_probs(g: Graph, session: str, i: int, cluster: str, prefix: str = P) -> str:
    """log p(v) for the items of tail block i: LogSoftmax((s @ P_i) · E_iᵀ) + log p(cluster i)."""
    reduced = g.op("MatMul", [session, f"{P}proj{i}"], f"{prefix}session{i}")  # B × d_i
    tail = g.op("Gemm", [reduced, f"{P}block{i}"], f"{prefix}tail_logits{i}", transB=1)
    return g.op("Add", [g.op("LogSoftmax", [tail], f"{prefix}tail_log_softmax{i}", axis=1), cluster],
                f"{prefix}block{i}_log_probs")


def _subgraph(branch: Graph, output: str, name: str):
    """An If branch: its nodes read the outer graph's tensors by name and return one float tensor."""
    return helper.make_graph(branch.nodes, name, inputs=[],
                             outputs=[helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])
