"""ONNX head of the compositional codes (``models/codes.py``): item vectors from the session's codes,
and every item's score from per-query score tables.

Scoring is exact: s·e_v = Σ_m T_m[c_m(v)] with T_m = E_m·s. What it costs per item is the number of
table lookups, so codebooks are combined in groups of ``g`` (1 or 2): a group's table holds, for every
combination of its codebooks' codes, the sum of their entries (K^g values per query), and an item
costs M/g lookups. The file stores one index per group and item (``codes``, G × N, uint8 when K^g
≤ 256, else uint16: the same bytes as the M separate codes).

A ``Loop`` over the batch scores one row at a time, so the G × N indices are used as they are, without
an ``Expand`` to the batch size. Per row and chunk of up to 65,536 items: one GatherElements (row j
of the G × K^g group tables for row j of the indices) and one (1 × G)·(G × C) MatMul that sums the
groups; then the repeat bonus and TopK over all N. Chunks keep the transient G × C values in cache.

onnxruntime's GatherElements takes only int32/int64 indices. Up to one chunk of items, one constant
``Cast`` widens them and onnxruntime folds it at load (4 bytes per group and item in memory, nothing
per inference). Beyond, each chunk is widened per row just before its lookup (see ``_chunk_indices``):
measured at 1M items, as fast as streaming folded int32 indices and a third of the resident memory.

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
CHUNK = 1 << 16  # items per GatherElements: its G × CHUNK floats stay in a core's cache


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
    codes = g.op("Cast", [codes], "codes/session_groups_i32", to=TensorProto.INT32)
    order = list(range(m))
    if grp == 2:  # a pair index is c_2j·K + c_2j+1: split it back, even codebooks first
        g.const("codes/k", np.array(k, np.int32))
        hi = g.op("Div", [codes, "codes/k"], "codes/session_even")
        lo = g.op("Mod", [codes, "codes/k"], "codes/session_odd")
        codes = g.op("Concat", [hi, lo], "codes/session_codes", axis=0)  # M × B × L
        order = list(range(0, m, 2)) + list(range(1, m, 2))
    g.const("codes/codeword_offsets", (np.array(order, np.int32) * k).reshape(m, 1, 1))
    rows = g.op("Add", [codes, "codes/codeword_offsets"], "codes/codeword_rows")
    words = g.op("Gather", [books, rows], "codes/codewords", axis=0)  # M × B × L × d
    # Σ over the M codewords as one (1 × M)·(M × B·L·d) MatMul: 3x faster than onnxruntime's ReduceSum
    # over the leading axis at L=50.
    g.const("codes/m_rows", np.array([m, -1], np.int64))
    g.const("codes/ones_m", np.ones((1, m), np.float32))
    shape = g.op("Shape", [words], "codes/item_vectors_shape", start=1)  # B, L, d
    words = g.op("Reshape", [words, "codes/m_rows"], "codes/codewords_flat")
    summed = g.op("MatMul", ["codes/ones_m", words], "codes/item_vectors_flat")
    summed = g.op("Reshape", [summed, shape], "codes/item_vectors_sum")
    g.op("Mul", [summed, mask], ITEM_VECTORS)


def _chunk_indices(body: Graph, row: str, num_items: int) -> list[str]:
    """int32 G × C pieces of the group indices, C ≤ CHUNK items each, for use inside the Loop body.

    One chunk (N ≤ CHUNK): a Cast of the whole constant, which onnxruntime folds once at load. More:
    each chunk is cut and widened per row, just before its lookup; the start depends on the row index,
    so nothing folds, memory holds only the narrow codes and one chunk's int32 indices, and the
    conversion runs on data already in cache (at 1M items as fast as streaming folded int32 indices,
    with a third of the resident memory; docs/results.md)."""
    if num_items <= CHUNK:
        return [body.op("Cast", [A.CODES], "row/indices", to=TensorProto.INT32)]
    body.const("row/zero", np.array(0, np.int64))
    body.const("row/items_axis", np.array([1], np.int64))
    runtime_zero = body.op("Mul", [row, "row/zero"], "row/runtime_zero")
    pieces = []
    for c, start in enumerate(range(0, num_items, CHUNK)):
        body.const(f"row/chunk{c}_start", np.array([start], np.int64))
        body.const(f"row/chunk{c}_end", np.array([min(start + CHUNK, num_items)], np.int64))
        first = body.op("Add", [f"row/chunk{c}_start", runtime_zero], f"row/chunk{c}_first")
        piece = body.op("Slice", [A.CODES, first, f"row/chunk{c}_end", "row/items_axis"], f"row/chunk{c}_codes")
        pieces.append(body.op("Cast", [piece], f"row/chunk{c}_indices", to=TensorProto.INT32))
    return pieces


def _row_scores(body: Graph, tables: str, row: str, num_items: int, m: int, k: int, grp: int) -> str:
    """Inside the Loop: the N scores of batch row ``row`` from its M·K score-table entries."""
    groups = m // grp
    flat = body.op("Gather", [tables, row], "row/score_tables", axis=0)  # M·K
    body.const("row/group_tables_shape", np.array([groups, k ** grp], np.int64))
    if grp == 2:
        body.const("row/pairs_shape", np.array([groups, 2, k], np.int64))
        body.const("row/even_shape", np.array([groups, k, 1], np.int64))
        pairs = body.op("Reshape", [flat, "row/pairs_shape"], "row/score_table_pairs")
        even, odd = body.op("Split", [pairs], ["row/even_tables", "row/odd_tables"], axis=1, num_outputs=2)
        even = body.op("Reshape", [even, "row/even_shape"], "row/even_column")  # G × K × 1
        flat = body.op("Add", [even, odd], "row/pair_tables")  # G × K × K: [j, a, b] = T_2j[a] + T_2j+1[b]
    tables = body.op("Reshape", [flat, "row/group_tables_shape"], "row/group_tables")  # G × K^g
    body.const("row/ones_g", np.ones((1, groups), np.float32))
    sums = []
    for c, indices in enumerate(_chunk_indices(body, row, num_items)):
        parts = body.op("GatherElements", [tables, indices], f"row/chunk{c}_parts", axis=1)  # G × C
        sums.append(body.op("MatMul", ["row/ones_g", parts], f"row/chunk{c}_scores"))  # Σ over the G groups
    summed = body.op("Concat", sums, "row/item_scores_1n", axis=1) if len(sums) > 1 else sums[0]
    body.const("row/n", np.array([-1], np.int64))
    return body.op("Reshape", [summed, "row/n"], "row/item_scores")


def codes_head(g: Graph, codes: np.ndarray, codebooks: np.ndarray, quant: str, ids_m1: str, mask: str,
               tail: ScoringTail) -> None:
    """Write the item vectors and, through ``tail``, the top-k outputs. ``codes``: M × (N+1) (column 0 =
    padding), ``codebooks``: M × K × d."""
    m, k, _ = codebooks.shape
    num_items = codes.shape[1] - 1
    grp = group_size(m, k, num_items)
    books = _dequantised_codebooks(g, codebooks, quant)
    g.const(A.CODES, group_codes(codes, k, grp))
    _item_vectors(g, books, m, k, grp, ids_m1, mask)
    tables = g.op("Gemm", [SESSION, books], "codes/score_tables", transB=1)  # B × (M·K)

    body = Graph()
    scores = _row_scores(body, tables, "row/index", num_items, m, k, grp)
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
