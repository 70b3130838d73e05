"""ONNX head of the compositional codes (``models/codes.py``): item vectors from the session's codes,
and every item's score from per-query score tables.

Scoring is exact: s·e_v = Σ_m T_m[c_m(v)] with T_m = E_m·s. What it costs per item is the number of
table lookups, so codebooks are combined in groups of ``g`` (1 or 2): a group's table holds, for every
combination of its codebooks' codes, the sum of their entries (K^g values per query), and an item
costs M/g lookups. The file stores one index per group and item (``codes``, G × N, uint8 when K^g
≤ 256, else uint16: the same bytes as the M separate codes).

onnxruntime's GatherElements takes only int32/int64 indices. The indices are therefore widened to
int32 (with each group's offset into the concatenated tables added) by constant nodes, which
onnxruntime folds once at load: the file keeps the narrow codes, memory holds 4 bytes per group and
item, and no inference pays a pass over N that only converts. A ``Loop`` over the batch scores one
row at a time, so the indices are used as they are, without an ``Expand`` to the batch size; per row
the cost is G GatherElements over N, one Sum, the repeat bonus and TopK.

Nothing here can be folded into an N×d table: every N-sized product takes the runtime session vector.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .. import artifact as A
from ..graph import Graph
from ..quantise import quantise_rows
from .tail import ScoringTail

SESSION = A.ENCODER_PREFIX + "session"
ITEM_VECTORS = A.ENCODER_PREFIX + "item_vectors"
# Measured with onnxruntime 1.32, 1 thread (docs/results.md): a GatherElements lookup costs ~1.1 ns,
# building a group table ~0.4 ns per entry.
LOOKUP_NS, TABLE_ENTRY_NS = 1.1, 0.4


def group_size(m: int, k: int, num_items: int) -> int:
    """Codebooks per lookup: 2 when the pair tables (K² entries a pair) cost less to build than the
    lookups they save and a pair index fits 16 bits, else 1."""
    if m % 2 or k * k > 1 << 16:
        return 1
    singles = num_items * m * LOOKUP_NS
    pairs = num_items * (m // 2) * LOOKUP_NS + (m // 2) * k * k * TABLE_ENTRY_NS
    return 2 if pairs < singles else 1


def index_dtype(k: int, g: int) -> np.dtype:
    return np.dtype(np.uint8 if k ** g <= 256 else np.uint16)


def layout(m: int, k: int, num_items: int) -> dict:
    """What the manifest says about the stored codes."""
    g = group_size(m, k, num_items)
    return {"codebooks_per_index": g, "code_dtype": index_dtype(k, g).name}


def group_codes(codes: np.ndarray, k: int, g: int) -> np.ndarray:
    """M × (N+1) codes (column 0 = padding) → G × N group indices for items 1..N, narrowest dtype."""
    items = codes[:, 1:].astype(np.int64)
    if g == 2:
        items = items[0::2] * k + items[1::2]
    return np.ascontiguousarray(items.astype(index_dtype(k, g)))


def ungroup_codes(grouped: np.ndarray, m: int, k: int) -> np.ndarray:
    """G × N group indices → M × N codes (the inverse of ``group_codes``)."""
    wide = grouped.astype(np.int64)
    if grouped.shape[0] == m:
        return wide
    codes = np.empty((m, wide.shape[1]), dtype=np.int64)
    codes[0::2], codes[1::2] = wide // k, wide % k
    return codes


def _dequantised_codebooks(g: Graph, codebooks: np.ndarray, quant: str) -> str:
    """(M·K) × d float codebooks. int8 is stored with one scale per codeword; the Cast and Mul take only
    constants, so onnxruntime folds them at load and no inference dequantises."""
    flat = codebooks.reshape(-1, codebooks.shape[-1]).astype(np.float32)
    if quant == "fp32":
        return g.const(A.CODEBOOKS, flat)
    q, scale = quantise_rows(flat)
    g.const(A.CODEBOOKS, q)
    g.const(A.CODEBOOK_SCALES, scale)
    g.const("codes/axes1", np.array([1], np.int64))
    column = g.op("Unsqueeze", [A.CODEBOOK_SCALES, "codes/axes1"], "codes/scale_column")
    as_float = g.op("Cast", [A.CODEBOOKS], "codes/codebooks_int8_as_float", to=TensorProto.FLOAT)
    return g.op("Mul", [as_float, column], "codes/codebooks_f")


def _item_vectors(g: Graph, books: str, m: int, k: int, grp: int, ids_m1: str, mask: str) -> None:
    """Σ_m codebook_m[c_m(v)] for the session's items → ``enc/item_vectors`` (zero at padding)."""
    codes = g.op("Gather", [A.CODES, ids_m1], "codes/session_groups", axis=1)  # G × B × L
    codes = g.op("Cast", [codes], "codes/session_groups_i64", to=TensorProto.INT64)
    order = list(range(m))
    if grp == 2:  # a pair index is c_2j·K + c_2j+1: split it back, even codebooks first
        g.const("codes/k", np.array(k, np.int64))
        hi = g.op("Div", [codes, "codes/k"], "codes/session_even")
        lo = g.op("Mod", [codes, "codes/k"], "codes/session_odd")
        codes = g.op("Concat", [hi, lo], "codes/session_codes", axis=0)  # M × B × L
        order = list(range(0, m, 2)) + list(range(1, m, 2))
    g.const("codes/codeword_offsets", (np.array(order, np.int64) * k).reshape(m, 1, 1))
    rows = g.op("Add", [codes, "codes/codeword_offsets"], "codes/codeword_rows")
    words = g.op("Gather", [books, rows], "codes/codewords", axis=0)  # M × B × L × d
    summed = g.op("ReduceSum", [words, "codes/axes0"], "codes/item_vectors_sum", keepdims=0)
    g.op("Mul", [summed, mask], ITEM_VECTORS)


def _group_indices(g: Graph, groups: int, table_size: int) -> list[str]:
    """One int32 index vector per group (N each), offset into the concatenated group tables; all
    constant, so folded at load."""
    wide = g.op("Cast", [A.CODES], "codes/indices_i32", to=TensorProto.INT32)
    g.const("codes/group_offsets", (np.arange(groups, dtype=np.int32) * table_size).reshape(groups, 1))
    wide = g.op("Add", [wide, "codes/group_offsets"], "codes/indices_offset")
    names = [f"codes/group{j}_rows" for j in range(groups)]
    rows = g.op("Split", [wide], names, axis=0, num_outputs=groups) if groups > 1 else [wide]
    return [g.op("Squeeze", [r, "codes/axes0"], f"codes/group{j}_indices") for j, r in enumerate(rows)]


def _row_scores(body: Graph, tables: str, row: str, indices: list[str], m: int, k: int, grp: int) -> str:
    """Inside the Loop: the N scores of batch row ``row`` from its M·K score-table entries."""
    flat = body.op("Gather", [tables, row], "row/score_tables", axis=0)  # M·K
    if grp == 2:
        groups = m // 2
        body.const("row/pairs_shape", np.array([groups, 2, k], np.int64))
        body.const("row/even_shape", np.array([groups, k, 1], np.int64))
        body.const("row/flat_shape", np.array([groups * k * k], np.int64))
        pairs = body.op("Reshape", [flat, "row/pairs_shape"], "row/score_table_pairs")
        even, odd = body.op("Split", [pairs], ["row/even_tables", "row/odd_tables"], axis=1, num_outputs=2)
        even = body.op("Reshape", [even, "row/even_shape"], "row/even_column")  # G × K × 1
        summed = body.op("Add", [even, odd], "row/pair_tables")  # G × K × K: entry [j, a, b] = T_2j[a] + T_2j+1[b]
        flat = body.op("Reshape", [summed, "row/flat_shape"], "row/pair_tables_flat")
    parts = [body.op("GatherElements", [flat, idx], f"row/item_score_part{j}", axis=0) for j, idx in enumerate(indices)]
    return body.op("Sum", parts, "row/item_scores") if len(parts) > 1 else parts[0]


def codes_head(g: Graph, codes: np.ndarray, codebooks: np.ndarray, quant: str, ids_m1: str, mask: str,
               tail: ScoringTail) -> None:
    """Write the item vectors and, through ``tail``, the top-k outputs. ``codes``: M × (N+1) (column 0 =
    padding), ``codebooks``: M × K × d."""
    m, k, _ = codebooks.shape
    num_items = codes.shape[1] - 1
    grp = group_size(m, k, num_items)
    grouped = group_codes(codes, k, grp)
    g.const("codes/axes0", np.array([0], np.int64))
    books = _dequantised_codebooks(g, codebooks, quant)
    g.const(A.CODES, grouped)
    _item_vectors(g, books, m, k, grp, ids_m1, mask)
    indices = _group_indices(g, grouped.shape[0], k ** grp)
    tables = g.op("Gemm", [SESSION, books], "codes/score_tables", transB=1)  # B × (M·K)

    body = Graph()
    scores = _row_scores(body, tables, "row/index", indices, m, k, grp)
    top_scores, top_ids = tail.row(body, scores, "row/index", "row/")
    body.op("Identity", ["row/cond_in"], "row/cond_out")
    loop = helper.make_graph(
        body.nodes, "codes_score_one_row",
        inputs=[helper.make_tensor_value_info("row/index", TensorProto.INT64, []),
                helper.make_tensor_value_info("row/cond_in", TensorProto.BOOL, [])],
        outputs=[helper.make_tensor_value_info("row/cond_out", TensorProto.BOOL, []),
                 helper.make_tensor_value_info(top_scores, TensorProto.FLOAT, [None]),
                 helper.make_tensor_value_info(top_ids, TensorProto.INT64, [None])],
        initializer=body.inits)
    g.const("codes/zero", np.array(0, np.int64))
    batch = g.op("Gather", [g.op("Shape", [ids_m1], "codes/session_shape"), "codes/zero"], "codes/batch_size", axis=0)
    g.op("Loop", [batch, ""], [A.OUTPUT_SCORES, A.OUTPUT_IDS], body=loop)
