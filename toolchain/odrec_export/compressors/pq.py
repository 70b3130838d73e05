"""Product quantisation (Jégou, Douze & Schmid, TPAMI 2011) of the item table.

The d dimensions are split into M sub-spaces of d/M; item v has one code c_m(v) per sub-space into
that sub-space's K sub-codewords C_m (K × d/M), and its vector is their concatenation,
e_v = [C_1[c_1(v)], …, C_M[c_M(v)]]. Where compositional codes sum M full-width codewords, PQ
concatenates M narrow ones: M·K·d/M codebook values instead of M·K·d, so at equal bytes it affords
more codes or codewords, but each code explains only its own d/M dimensions.

Scoring is the codes head's: s·e_v = Σ_m s_m·C_m[c_m(v)] = Σ_m T_m[c_m(v)] with the per-query score
tables T_m = C_m·s_m (s_m: the session vector's m-th slice), so the graph reuses the codes head's
group indices, pair tables and row Loop (compressors/codes.py) and only computes T differently:
one batched MatMul of the M session slices against the M sub-codebooks.

Fitted to the teacher by k-means in each sub-space (the codes are then frozen, as for codes); the
sub-codewords are distilled like the codes student's codebooks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto

from ..export import artifact as A
from ..export.graph import Graph
from ..export.quantise import quantise_rows
from ..train.code_learning import kmeans
from .base import Compressor
from .codes import (
    SESSION,
    Codes,
    CodesItemTable,
    codeword_rows,
    group_codes,
    group_size,
    score_from_tables,
)

KMEANS_ITERS = 15
# an item's weight in the k-means from its training clicks c: frequent items are the likely targets
KMEANS_WEIGHTS = {"uniform": torch.ones_like, "sqrt-count": lambda c: (c + 1).sqrt(), "log-count": lambda c: (c + 1).log1p()}


class PQItemTable(CodesItemTable):
    """Codes into M sub-spaces: codebooks M × K × d/M, an item's vector the concatenation of its M
    sub-codewords."""

    def __init__(self, num_items: int, dim: int, m: int = 16, k: int = 256, kmeans_weights: str = "uniform"):
        if dim % m:
            raise ValueError(f"d={dim} is not a multiple of M={m}")
        if kmeans_weights not in KMEANS_WEIGHTS:
            raise ValueError(f"kmeans_weights {kmeans_weights!r} is not one of {', '.join(KMEANS_WEIGHTS)}")
        super().__init__(num_items, dim, m, k)
        self.kmeans_weights = kmeans_weights
        self.codebooks = nn.Parameter(torch.randn(m, k, dim // m) * (dim // m) ** -0.5)

    def config(self) -> dict:
        return {**super().config(), "kmeans_weights": self.kmeans_weights}

    def int8_scales(self) -> int:
        return self.dim  # one per column of each sub-codebook (quantise_columns)

    def _compose(self, codes: torch.Tensor) -> torch.Tensor:
        flat = codes.reshape(-1, self.m).long() + torch.arange(self.m, device=codes.device) * self.k
        words = F.embedding(flat, self.codebooks.reshape(self.m * self.k, -1))  # n × M × d/M
        return words.reshape(*codes.shape[:-1], self.dim)

    def score_tables(self, sessions: torch.Tensor) -> torch.Tensor:
        slices = sessions.view(len(sessions), self.m, -1)
        return torch.einsum("bmd,mkd->bmk", slices, self.codebooks).reshape(len(sessions), self.m * self.k)

    @torch.no_grad()
    def init_from_table(self, table: torch.Tensor, counts: np.ndarray) -> dict:
        """k-means in each sub-space of the teacher's rows 1..N, each item weighted by ``kmeans_weights``
        of its training clicks (``counts``, index 0 the padding)."""
        rows = table[1:].float()
        weights = KMEANS_WEIGHTS[self.kmeans_weights](torch.as_tensor(np.asarray(counts[1:]), dtype=torch.float32))
        gen = torch.Generator().manual_seed(0)
        codes = torch.zeros(self.num_items + 1, self.m, dtype=torch.long)
        for m, part in enumerate(rows.split(self.dim // self.m, dim=1)):
            codes[1:, m], self.codebooks[m] = kmeans(part.contiguous(), self.k, KMEANS_ITERS, gen, weights)
        self.set_codes(codes)
        error = ((self.table()[1:] - rows) ** 2).sum() / (rows ** 2).sum().clamp(min=1e-12)
        return {"relative_mse": round(float(error), 5), "kmeans_iters": KMEANS_ITERS,
                "codes_used_per_subspace": [int(torch.unique(codes[1:, m]).numel()) for m in range(self.m)]}


def quantise_columns(codebooks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 sub-codebooks with one symmetric scale per column of each sub-codebook: ((M·K) × d/M int8,
    M × 1 × d/M float32 scales). A sub-codeword has only d/M values, so a scale per codeword (codes'
    scheme) would cost 4 bytes for every d/M = 8; per column it is d scales in all, which is what lets
    K=256 stay over 30x on a 40k-item catalogue."""
    m, k, sub = codebooks.shape
    q, scale = quantise_rows(codebooks.transpose(0, 2, 1).reshape(m * sub, k))
    return q.reshape(m, sub, k).transpose(0, 2, 1).reshape(m * k, sub), scale.reshape(m, 1, sub)


def _dequantised_sub_codebooks(g: Graph, codebooks: np.ndarray, quant: str) -> str:
    """(M·K) × d/M float sub-codebooks; as for codes, the int8 Cast and Mul take only constants and are
    folded by onnxruntime at load."""
    m, k, sub = codebooks.shape
    if quant == "fp32":
        return g.const(A.CODEBOOKS, codebooks.reshape(m * k, sub).astype(np.float32))
    q, scale = quantise_columns(codebooks.astype(np.float32))
    g.const(A.CODEBOOKS, q)
    g.const(A.CODEBOOK_SCALES, scale)
    as_float = g.op("Cast", [A.CODEBOOKS], "pq/codebooks_int8_as_float", to=TensorProto.FLOAT)
    blocks = g.op("Reshape", [as_float, g.const("pq/blocks_shape", np.array([m, k, sub], np.int64))], "pq/blocks_int8")
    scaled = g.op("Mul", [blocks, A.CODEBOOK_SCALES], "pq/blocks_f")
    return g.op("Reshape", [scaled, g.const("pq/flat_shape", np.array([m * k, sub], np.int64))], "pq/codebooks_f")


def pq_head(g: Graph, codes: np.ndarray, codebooks: np.ndarray, quant: str, ids_m1: str, mask: str, tail) -> None:
    """Item vectors (concatenated sub-codewords) and every item's score from the per-query score tables."""
    m, k, sub = codebooks.shape
    num_items = codes.shape[1] - 1
    grp = group_size(m, k, num_items)
    books = _dequantised_sub_codebooks(g, codebooks, quant)  # (M·K) × d/M
    g.const(A.CODES, group_codes(codes, k, grp))
    rows, order = codeword_rows(g, m, k, grp, ids_m1)  # M × B × L, codebooks in ``order``
    words = g.op("Gather", [books, rows], "pq/codewords", axis=0)  # M × B × L × d/M
    if order != sorted(order):
        g.const("pq/sub_space_order", np.argsort(order).astype(np.int64))
        words = g.op("Gather", [words, "pq/sub_space_order"], "pq/codewords_in_order", axis=0)
    words = g.op("Transpose", [words], "pq/codewords_t", perm=[1, 2, 0, 3])  # B × L × M × d/M
    vectors = g.op("Reshape", [words, g.const("pq/vectors_shape", np.array([0, 0, m * sub], np.int64))], "pq/vectors")
    g.op("Mul", [vectors, mask], A.ENCODER_PREFIX + "item_vectors")
    # T[b, m, :] = C_m · s_m: M batched (B × d/M)·(d/M × K) products
    slices = g.op("Reshape", [SESSION, g.const("pq/slices_shape", np.array([-1, m, sub], np.int64))], "pq/slices")
    slices = g.op("Transpose", [slices], "pq/slices_t", perm=[1, 0, 2])  # M × B × d/M
    books3 = g.op("Reshape", [books, g.const("pq/books_shape", np.array([m, k, sub], np.int64))], "pq/books_3d")
    books3 = g.op("Transpose", [books3], "pq/books_t", perm=[0, 2, 1])  # M × d/M × K
    tables = g.op("MatMul", [slices, books3], "pq/tables_mbk")  # M × B × K
    tables = g.op("Transpose", [tables], "pq/tables_bmk", perm=[1, 0, 2])
    tables = g.op("Reshape", [tables, g.const("pq/tables_shape", np.array([0, m * k], np.int64))], "pq/score_tables")
    score_from_tables(g, tables, num_items, m, k, grp, ids_m1, tail)


class ProductQuantisation(Codes):
    """Shares codes' storage (group indices, int8 codebooks), quantisation and verify reference."""

    name = "pq"
    summary = "product quantisation (one code per sub-space of d/M dimensions)"
    table_type = PQItemTable
    # at d=128: 8 dimensions a code; ~30.3x fewer bytes than the fp32 table in the artifact at 37k items (at
    # most 32x: 16 bytes an item; the int8 sub-codebooks are 32 KiB). The most accurate of the shapes tried at
    # 30-60x (docs/results.md, "fit"): in a 2-hour fit on RetailRocket K=256 kept 95.3% of the teacher's HR@10
    # (both with the repeat bonus) where K=128 kept 94.0%, but its artifact is ~1.2x faster than the fp32 table
    # where K=128's is ~1.8x (twice the lookups). M=8, K=256 gives ~57x for about 1.5 points of Tmall HR@10
    options = {"m": 16, "k": 256, "kmeans_weights": "uniform"}
    fit_record = "item_fit"
    fit = Compressor.fit  # k-means per sub-space (PQItemTable.init_from_table), not code learning
    items_config = Compressor.items_config  # every option is the table's (codes' adds its code learning)

    def head(self, frozen, opts):
        def head(g: Graph, ids: str, ids_m1: str, mask: str, tail) -> None:
            pq_head(g, frozen.arrays["codes"], frozen.arrays["codebooks"], opts.quant, ids_m1, mask, tail)
        return head

    def manifest(self, frozen, opts) -> dict:
        return {**super().manifest(frozen, opts), "sub_dim": frozen.arrays["codebooks"].shape[2]}

    def stored_books_shape(self, block: dict) -> tuple[int, int]:
        return block["M"] * block["K"], block["d"] // block["M"]

    def quantisation(self, opts) -> dict:
        if opts.quant == "int8":
            return {**super().quantisation(opts), "granularity": "per column of each sub-codebook (d symmetric scales)"}
        return super().quantisation(opts)

    def check_graph(self, inits: dict, manifest: dict) -> list[str]:
        problems = super().check_graph(inits, manifest)
        block = manifest.get("compressor") if isinstance(manifest.get("compressor"), dict) else {}
        if not problems and A.CODEBOOK_SCALES in inits and {"M", "d"} <= block.keys():
            want = (block["M"], 1, block["d"] // block["M"])
            if tuple(inits[A.CODEBOOK_SCALES].dims) != want:
                problems.append(f"{A.MODEL_FILE}: codebook scales {tuple(inits[A.CODEBOOK_SCALES].dims)}, expected {want} "
                                "(one per column of each sub-codebook; rebuild an artifact made before them)")
        return problems

    @staticmethod
    def dequantised(books: np.ndarray, scales: np.ndarray, m: int, k: int) -> np.ndarray:
        return (books.reshape(m, k, -1) * scales.reshape(m, 1, -1)).reshape(m * k, -1)

    @staticmethod
    def quantised_books(books: torch.Tensor, round_trip, scheme: str) -> torch.Tensor:
        """Each sub-codebook's columns are the rows of the per-row scheme."""
        m, k, sub = books.shape
        columns = books.transpose(1, 2).reshape(m * sub, k)
        return round_trip(columns, scheme).reshape(m, sub, k).transpose(1, 2)

    @staticmethod
    def item_rows(codewords) -> np.ndarray:
        return np.concatenate(list(codewords), axis=1)


COMPRESSORS = (ProductQuantisation(),)
