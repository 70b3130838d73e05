"""Compositional codes (EODRec): item v has a code (c_1..c_M), c_m in 0..K-1, and its vector is the sum of
its codewords, e_v = Σ_m E_m[c_m]. The padding item (index 0) is the zero vector.

Codes are a frozen buffer stored as the smallest unsigned integer type that holds K; only the
codebooks (M × K × d) are trained. They are learned from the teacher's table before distillation
(code_learning.py).

The ONNX head writes the item vectors from the session's codes, and every item's score from
per-query score tables.

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
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

from ..export import artifact as A
from ..export.graph import Graph
from ..export.quantise import quantise_rows
from ..export.tail import ScoringTail
from .base import Compressor, ItemTable

DEFAULT_M = 8  # 8 × 64: about 35x fewer bytes than the fp32 table at d=128 (docs/compressors.md)
DEFAULT_K = 64


def code_dtype(k: int) -> torch.dtype:
    if k <= 256:
        return torch.uint8
    if k <= 65536:
        return torch.uint16
    raise ValueError(f"K={k} needs more than 16 bits per code")


class CodesItemTable(ItemTable):
    def __init__(self, num_items: int, dim: int, m: int = DEFAULT_M, k: int = DEFAULT_K):
        super().__init__()
        self.num_items, self.dim, self.m, self.k = num_items, dim, m, k
        self.codebooks = nn.Parameter(torch.empty(m, k, dim))
        nn.init.normal_(self.codebooks, std=(dim * m) ** -0.5)
        self.register_buffer("codes", torch.zeros(num_items + 1, m, dtype=code_dtype(k)))

    def config(self) -> dict:
        return {"m": self.m, "k": self.k}

    def bytes_report(self, parts: dict[str, int]) -> dict:
        """The paper's parameter ratio |V|·d / (codebook numbers + M·|V|) beside the stored bytes
        (codebook numbers: M·K·d here, K·d for pq's M sub-spaces of d/M)."""
        n, d = self.num_items, self.dim
        int8 = n * self.m * self.codes.element_size() + self.codebooks.numel() + 4 * self.int8_scales()
        return {"codes_bytes": parts["codes"], "codebooks_bytes": parts["codebooks"],
                "paper_ratio": n * d / (self.codebooks.numel() + self.m * n),
                "int8_artifact_bytes": int8, "int8_artifact_ratio": n * d * 4 / int8}

    def int8_scales(self) -> int:
        """fp32 scales of the artifact's int8 codebooks: one per codeword."""
        return self.m * self.k

    def set_codes(self, codes: torch.Tensor) -> None:
        """codes: (N+1) × M integers in 0..K-1; row 0 (padding) is ignored."""
        if codes.shape != self.codes.shape:
            raise ValueError(f"codes must be {tuple(self.codes.shape)}, got {tuple(codes.shape)}")
        wide = codes.long()  # compare in int64: K=256 does not fit a uint8 scalar
        if wide.min() < 0 or wide.max() >= self.k:
            raise ValueError(f"codes must lie in 0..{self.k - 1}")
        self.codes.copy_(codes.to(self.codes.dtype))

    def _compose(self, codes: torch.Tensor) -> torch.Tensor:
        # Σ_m codebooks[m, codes[..., m]] as one embedding_bag over the flattened M·K codewords: a single
        # pass forward and backward, much cheaper than M gathers for the full table in every training step.
        flat = codes.reshape(-1, self.m).long() + torch.arange(self.m, device=codes.device) * self.k
        out = F.embedding_bag(flat, self.codebooks.reshape(self.m * self.k, self.dim), mode="sum")
        return out.view(*codes.shape[:-1], self.dim)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self._compose(self.codes[ids]) * (ids != 0).unsqueeze(-1)

    def table(self) -> torch.Tensor:
        t = self._compose(self.codes)
        return torch.cat([torch.zeros_like(t[:1]), t[1:]])

    def score(self, sessions: torch.Tensor) -> torch.Tensor:
        """Per-codebook score tables, score(v) = Σ_m (E_m·s)[c_m(v)]: exact, no N×d table, and items
        sharing a code score identically, as in the exported graph (so ties rank the same way)."""
        tables = self.score_tables(sessions)
        rows = self._table_rows()
        out = tables.index_select(1, rows[0])
        if self.m > 1 and not torch.is_grad_enabled():  # evaluation: one scratch buffer, not M B × N allocations
            scratch = torch.empty_like(out)
            for m in range(1, self.m):
                out += torch.index_select(tables, 1, rows[m], out=scratch)
            return out
        for m in range(1, self.m):
            out += tables.index_select(1, rows[m])
        return out

    def score_tables(self, sessions: torch.Tensor) -> torch.Tensor:
        """B × (M·K): every codeword's dot product with every session vector."""
        return torch.einsum("bd,mkd->bmk", sessions, self.codebooks).reshape(len(sessions), self.m * self.k)

    def _table_rows(self) -> torch.Tensor:
        """M × (N+1) contiguous int64 columns into the flattened score tables (c_m(v) + m·K), made once
        per state of the codes: index_select over them is 3x faster than indexing the codes column by
        column at 1M items."""
        key = (self.codes.data_ptr(), self.codes._version, self.codes.device)
        if getattr(self, "_rows_key", None) != key:
            self._rows = (self.codes.long() + torch.arange(self.m, device=self.codes.device) * self.k).t().contiguous()
            self._rows_key = key
        return self._rows


# --------------------------------------------------------------------------- the ONNX head

SESSION = A.ENCODER_PREFIX + "session"
ITEM_VECTORS = A.ENCODER_PREFIX + "item_vectors"
# Measured with onnxruntime 1.32, 1 thread (docs/results.md): a GatherElements lookup costs ~1.1 ns,
# building a group table ~0.4 ns per entry.
LOOKUP_NS, TABLE_ENTRY_NS = 1.1, 0.4
CHUNK = 1 << 16  # items per GatherElements: its G × CHUNK floats stay in a core's cache
# Both costs hold while a query's pair tables stay in a core's L2. Beyond, the random lookups miss it:
# pq M=16, K=256 on RetailRocket (2 MiB of pair tables) ran 1,295 µs with pairs against 1,130 µs
# without (docs/results.md, "fit"), where this model predicted pairs cheaper.
PAIR_TABLES_MAX_BYTES = 1 << 20


def group_size(m: int, k: int, num_items: int) -> int:
    """Codebooks per lookup: 2 when the pair tables (K² entries a pair) cost less to build than the
    lookups they save, fit a core's L2 together and a pair index fits 16 bits, else 1."""
    if m % 2 or k * k > 1 << 16 or (m // 2) * k * k * 4 > PAIR_TABLES_MAX_BYTES:
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


def codeword_rows(g: Graph, m: int, k: int, grp: int, ids_m1: str) -> tuple[str, list[int]]:
    """M × B × L int32 rows of the flattened (M·K) codebooks for the session's items, and which codebook
    each of the M leading entries is (pairs are split even codebooks first)."""
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
    return g.op("Add", [codes, "codes/codeword_offsets"], "codes/codeword_rows"), order


def _item_vectors(g: Graph, books: str, m: int, k: int, grp: int, ids_m1: str, mask: str) -> None:
    """Σ_m codebook_m[c_m(v)] for the session's items → ``enc/item_vectors`` (zero at padding)."""
    rows, _ = codeword_rows(g, m, k, grp, ids_m1)
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
    score_from_tables(g, tables, num_items, m, k, grp, ids_m1, tail)


def score_from_tables(g: Graph, tables: str, num_items: int, m: int, k: int, grp: int, ids_m1: str,
                      tail: ScoringTail) -> None:
    """Every item's score Σ_m T[m, c_m(v)] from the B × (M·K) per-query score tables and the stored group
    indices ``codes``, one batch row at a time (a Loop), then the tail's top-k."""
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


# --------------------------------------------------------------------------- the compressor


class Codes(Compressor):
    name = "codes"
    summary = "compositional codes (EODRec)"
    table_type = CodesItemTable
    options = {"m": DEFAULT_M, "k": DEFAULT_K, "code_steps": None}  # code-learning steps (None: CodeLearningConfig's)
    kd_recipe = "eodrec"
    fit_record = "code_learning"
    quantises = True
    parts = {"codebooks": (A.CODEBOOKS,), "codes": (A.CODES,), "scales": (A.CODEBOOK_SCALES,)}

    def items_config(self, options: dict) -> dict:
        learning = options.get("code_learning")  # a library caller's full CodeLearningConfig
        if learning is not None:
            return {"m": learning.m, "k": learning.k}
        return {name: self.options[name] if options.get(name) is None else options[name] for name in ("m", "k")}

    def fit(self, teacher, data, items_config: dict, options: dict, log=print, seed: int = 0, device: str = "cpu"):
        from ..train.code_learning import CodeLearningConfig, learn_codes

        steps = {"steps": options["code_steps"]} if options.get("code_steps") else {}
        learning = options.get("code_learning") or CodeLearningConfig(**items_config, **steps, seed=seed, device=device)
        learned = learn_codes(teacher, data, learning, log=log)
        return codes_table(teacher, learned["codes"], learned["codebooks"]), learned["report"]

    def arrays(self, table: CodesItemTable) -> dict[str, np.ndarray]:
        return {"codes": table.codes.t().contiguous().numpy().copy(),  # M × (N+1)
                "codebooks": table.codebooks.detach().float().numpy().copy()}

    def head(self, frozen, opts):
        def head(g: Graph, ids: str, ids_m1: str, mask: str, tail: ScoringTail) -> None:
            codes_head(g, frozen.arrays["codes"], frozen.arrays["codebooks"], opts.quant, ids_m1, mask, tail)
        return head

    def manifest(self, frozen, opts) -> dict:
        m, k, _ = frozen.arrays["codebooks"].shape
        return {"name": self.name, "M": m, "K": k, "d": frozen.dim, **layout(m, k, frozen.num_items)}

    def quantisation(self, opts) -> dict:
        if opts.quant == "int8":
            return {"scheme": "int8", "granularity": "per-row (per codeword) symmetric scale",
                    "op": "Cast + Mul (folded by onnxruntime at load)", "encoder": "fp32"}
        return {"scheme": "fp32", "encoder": "fp32"}

    def describe(self, block: dict) -> str:
        return f"M={block.get('M')}, K={block.get('K')}"

    def check_graph(self, inits: dict, manifest: dict) -> list[str]:
        return check_codes(inits, manifest, self.stored_books_shape)

    def stored_books_shape(self, block: dict) -> tuple[int, int]:
        """The codebooks initializer's shape for a manifest's compressor block."""
        return block["M"] * block["K"], block["d"]

    def decoded_rows(self, inits: dict, manifest: dict, chunk: int):
        from onnx import numpy_helper

        from ..errors import OdrecError

        if A.CODES not in inits or A.CODEBOOKS not in inits:
            raise OdrecError(f"{A.MODEL_FILE} holds no codes and codebooks")
        books = numpy_helper.to_array(inits[A.CODEBOOKS]).astype(np.float32)  # (M·K) × width
        m, k = manifest["compressor"]["M"], manifest["compressor"]["K"]
        if A.CODEBOOK_SCALES in inits:
            books = self.dequantised(books, numpy_helper.to_array(inits[A.CODEBOOK_SCALES]), m, k)
        grouped = numpy_helper.to_array(inits[A.CODES])
        for start in range(0, grouped.shape[1], chunk):
            codewords = ungroup_codes(grouped[:, start:start + chunk], m, k) + np.arange(m)[:, None] * k
            yield self.item_rows(books[rows] for rows in codewords)  # M × chunk rows of the flat books

    @staticmethod
    def dequantised(books: np.ndarray, scales: np.ndarray, m: int, k: int) -> np.ndarray:
        """Stored (M·K) × width int8 codebooks (as float) times their scales: one per codeword here."""
        return books * scales[:, None]

    @staticmethod
    def item_rows(codewords) -> np.ndarray:
        """Item vectors from each item's M codewords (M arrays of chunk × width, one at a time): their sum."""
        codewords = iter(codewords)
        rows = next(codewords).copy()
        for words in codewords:
            rows += words
        return rows

    def match_artifact(self, table: CodesItemTable, manifest: dict, round_trip) -> None:
        scheme = A.quant_scheme(manifest) or "fp32"
        if scheme != "fp32":
            with torch.no_grad():
                table.codebooks.copy_(self.quantised_books(table.codebooks.detach(), round_trip, scheme))

    @staticmethod
    def quantised_books(books: torch.Tensor, round_trip, scheme: str) -> torch.Tensor:
        """M × K × width codebooks after the artifact's quantisation, ``round_trip`` being verify's own
        per-row scheme: here each codeword is a row."""
        m, k, width = books.shape
        return round_trip(books.reshape(m * k, width), scheme).reshape(m, k, width)

    def synthetic_state(self, source, config: dict, rng, seed: int) -> dict:
        return random_codes_state(source, config["encoder"]["num_items"], rng)


def codes_table(teacher, codes: torch.Tensor, codebooks: torch.Tensor) -> CodesItemTable:
    """A codes table for the teacher's catalogue with the given (N+1) × M codes and M × K × d codebooks."""
    m, k, dim = codebooks.shape
    table = CodesItemTable(teacher.num_items, dim, m=m, k=k)
    table.set_codes(codes)
    with torch.no_grad():
        table.codebooks.copy_(codebooks)
    return table


def check_codes(inits: dict, manifest: dict, books_shape) -> list[str]:
    """verify's checks of stored group indices and codebooks against the manifest (codes and pq)."""
    from onnx import numpy_helper

    if A.CODES not in inits:
        return [f"{A.MODEL_FILE}: no '{A.CODES}' initializer"]
    codes_shape = tuple(inits[A.CODES].dims)
    num_items = manifest.get("num_items")
    problems = []
    if isinstance(num_items, int) and codes_shape[1:] != (num_items,):
        problems.append(f"{A.MODEL_FILE}: codes cover {codes_shape[1:]} items, manifest num_items is {num_items}")
    books = numpy_helper.to_array(inits[A.CODEBOOKS]) if A.CODEBOOKS in inits else None
    quant = A.quant_scheme(manifest)
    comp = manifest.get("compressor") if isinstance(manifest.get("compressor"), dict) else {}
    if quant not in A.QUANT_SCHEMES:
        problems.append(f"{A.MANIFEST_FILE}: quantisation scheme {quant!r} is not one of {', '.join(A.QUANT_SCHEMES)}")
    if books is None:
        problems.append(f"{A.MODEL_FILE}: no '{A.CODEBOOKS}' initializer next to the codes")
    elif {"M", "K", "d"} <= comp.keys() and (codes_shape[0] * comp.get("codebooks_per_index", 1), books.shape) \
            != (comp["M"], books_shape(comp)):
        problems.append(f"{A.MODEL_FILE}: codes/codebooks shapes {codes_shape}/{books.shape} differ from manifest "
                        f"compressor M={comp['M']} K={comp['K']} d={comp['d']}")
    elif quant == "int8" and (books.dtype != np.int8 or A.CODEBOOK_SCALES not in inits):
        problems.append(f"{A.MODEL_FILE}: manifest quantisation int8 but codebooks are {books.dtype}")
    elif quant == "fp32" and books.dtype != np.float32:
        problems.append(f"{A.MODEL_FILE}: manifest quantisation fp32 but codebooks are {books.dtype}")
    return problems


def random_codes_state(source, items: int, rng) -> dict:
    """A checkpoint state for ``items`` items with random codes and the source's codebooks (synth-catalogue)."""
    m, k = int(source.config["items"]["m"]), int(source.config["items"]["k"])
    codes = torch.from_numpy(rng.integers(0, k, size=(items + 1, m)).astype(np.int64))
    codes[0] = 0  # padding
    state = {name: t for name, t in source.state_dict.items() if name != "items.codes"}
    state["items.codes"] = codes.to(source.state_dict["items.codes"].dtype).contiguous()
    return state


COMPRESSORS = (Codes(),)
