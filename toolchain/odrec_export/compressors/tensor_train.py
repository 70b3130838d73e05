"""Tensor-train item tables: plain TT (TT-Rec style) and OD-Rec's semi-tensor-train (STT).

The N+1 rows of the table (index 0 = padding) are padded to I1·I2 rows and an item index is split as
v = i1·I2 + i2; the dimension is split as d = J1·J2, column j = j1·J2 + j2. Both tables are the
matrix W reshaped to (I1·J1) × (I2·J2) (row (i1, j1), column (i2, j2)) written as a product of two
cores:

* ``tt``: G1 (I1 × J1 × R), G2 (R × I2 × J2), W[v, j] = Σ_r G1[i1, j1, r] · G2[r, i2, j2], i.e. the
  reshaped table is the rank-R product G1 (I1·J1 × R) · G2 (R × I2·J2).
* ``stt`` (OD-Rec): G1 ((I1·J1) × R), G2 ((R/t) × (I2·J2/t)), joined by the semi-tensor product
  G1 ⋉ G2 = G1 · (G2 ⊗ I_t). With column index (i2, j2) = q·t + b (q = i2·J2/t + j2 // t,
  b = j2 % t) and G1 column r = p·t + b', the Kronecker factor makes
  W[(i1, j1), q·t + b] = Σ_p G1[(i1, j1), p·t + b] · G2[p, q]: the t column groups b of the
  reshaped table are t matrices sharing the right factor G2, each with its own slice
  G1[:, b::t]. Stacking them, [M_0; …; M_{t-1}] = [G1[:, 0::t]; …; G1[:, t-1::t]] · G2 is a plain
  rank-R/t factorisation, which is how ``init_from_table`` fits it (optimal by truncated SVD).

Parameters are kept in these canonical shapes (G1: I1 × J1 × R for both; G2: R × I2 × J2 for tt,
R/t × I2 × J2/t for stt). Nothing here builds the (N+1) × d table except ``table()``:
``lookup`` gathers core rows, ``score`` contracts the session vector with the cores:

* tt: U[b, i1, r, j2] = Σ_j1 G1[i1, j1, r] s[b, j1, j2] (B·I1·R·d multiply-adds), then
  score[b, (i1, i2)] = Σ_(r, j2) U · G2[r, i2, j2] (B·I1·I2·R·J2): contracting the larger of J1, J2
  first keeps the N-sized step at R·min(J1, J2) per item.
* stt: U[b, i1, j2', p] = Σ_(j1, b') s[b, j1, j2'·t + b'] G1[i1, j1, p·t + b'] (B·I1·d·R/t), then
  score = Σ_(j2', p) U · G2[p, i2, j2'] (B·I1·I2·R·J2/t²).

The ONNX heads (below) compute exactly the same contractions from the arrays of ``export_arrays``,
taken as they are (the layouts are prepared in numpy there):

* tt: ``tt/core1`` I1 × R × J1, ``tt/core2`` I2 × (R·J2);
* stt: ``stt/core1`` I1 × (J1·t) × (R/t), ``stt/core2`` I2 × ((J2/t)·(R/t)).

Item vectors: split ids into (i1, i2) = (v // I2, v % I2), Gather a core row for each, one small
MatMul per item. Scores: one MatMul of the session vector (reshaped J1 × J2) against core1, then one
Gemm of that B·I1 × (R·J2) (tt) or B·I1 × (R·J2/t²) (stt) product against core2: the only
N-sized product takes the runtime session vector, so constant folding cannot rebuild the table.
Every name written here starts with ``tt/`` or ``stt/`` except ``enc/item_vectors``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from ..export.graph import Graph
from .base import Compressor, ItemTable, all_columns_head

# Defaults: at Tmall size (N = 40,727, d = 128 → 202×202 rows, 16×8 dims) both give 174,528 table
# parameters, 29.9x smaller than the 5,213,056 of the full table (see ``table_params``).
TT_DEFAULT_RANK = 36
STT_DEFAULT_RANK = 48


def default_item_shape(num_items: int) -> list[int]:
    """[I1, I2] with I1·I2 ≥ N+1 and I1 ≈ I2: I1 = ceil(sqrt(N+1)), I2 = ceil((N+1)/I1)."""
    rows = num_items + 1
    i1 = math.isqrt(rows - 1) + 1  # ceil(sqrt(rows))
    return [i1, -(-rows // i1)]


def default_dim_shape(dim: int, t: int = 1) -> list[int]:
    """[J1, J2] with J1·J2 = d, J1 ≥ J2, as balanced as possible, J2 divisible by t."""
    best = None
    for j2 in range(1, math.isqrt(dim) + 1):
        if dim % j2 == 0 and j2 % t == 0:
            best = j2
    if best is None:
        # no divisor ≤ sqrt(d) is a multiple of t: take the smallest multiple of t dividing d
        best = next((j2 for j2 in range(t, dim + 1, t) if dim % j2 == 0), None)
        if best is None:
            raise ValueError(f"d={dim} has no factor J2 divisible by t={t}")
    return [dim // best, best]


def _check_shapes(num_items: int, dim: int, item_shape, dim_shape, t: int) -> tuple[list[int], list[int]]:
    item_shape = default_item_shape(num_items) if item_shape is None else [int(x) for x in item_shape]
    dim_shape = default_dim_shape(dim, t) if dim_shape is None else [int(x) for x in dim_shape]
    if len(item_shape) != 2 or item_shape[0] * item_shape[1] < num_items + 1 or min(item_shape) < 1:
        raise ValueError(f"item_shape {item_shape} must be [I1, I2] with I1·I2 ≥ N+1 = {num_items + 1}")
    if len(dim_shape) != 2 or dim_shape[0] * dim_shape[1] != dim or min(dim_shape) < 1:
        raise ValueError(f"dim_shape {dim_shape} must be [J1, J2] with J1·J2 = d = {dim}")
    if dim_shape[1] % t:
        raise ValueError(f"J2 = {dim_shape[1]} must be divisible by t = {t}")
    return item_shape, dim_shape


def _factor_svd(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors L (m × rank), R (rank × n) of ``mat`` (zero-padded when the matrix
    has lower rank), split as U·sqrt(S), sqrt(S)·Vᵀ; also the singular values."""
    u, s, vh = torch.linalg.svd(mat.double(), full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    left = torch.zeros(mat.shape[0], rank, dtype=torch.float64)
    right = torch.zeros(rank, mat.shape[1], dtype=torch.float64)
    left[:, :k] = u[:, :k] * root
    right[:k] = root[:, None] * vh[:k]
    return left, right, s


class _TensorTrainBase(ItemTable):
    prefix = ""
    t = 1

    def _setup(self, num_items: int, dim: int, rank: int, item_shape, dim_shape, t: int) -> None:
        self.num_items, self.dim, self.rank, self.t = num_items, dim, int(rank), int(t)
        if self.rank < 1 or self.rank % self.t:
            raise ValueError(f"rank {rank} must be a positive multiple of t = {t}")
        (self.i1, self.i2), (self.j1, self.j2) = _check_shapes(num_items, dim, item_shape, dim_shape, self.t)

    def _pad_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != 0).unsqueeze(-1).to(self.g1.dtype)

    def _split(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.long()
        return torch.div(ids, self.i2, rounding_mode="floor"), ids % self.i2

    def _reshaped_to_table(self, m: torch.Tensor) -> torch.Tensor:
        """(I1·J1) × (I2·J2) → (N+1) × d with row 0 zero."""
        w = m.view(self.i1, self.j1, self.i2, self.j2).permute(0, 2, 1, 3).reshape(self.i1 * self.i2, self.dim)
        return torch.cat([torch.zeros_like(w[:1]), w[1:self.num_items + 1]])

    def _table_to_reshaped(self, table: torch.Tensor) -> torch.Tensor:
        """(N+1) × d (row 0 and the padding rows up to I1·I2 set to zero) → (I1·J1) × (I2·J2)."""
        w = torch.zeros(self.i1 * self.i2, self.dim, dtype=torch.float64)
        w[1:self.num_items + 1] = table[1:self.num_items + 1].detach().double().cpu()
        return w.view(self.i1, self.i2, self.j1, self.j2).permute(0, 2, 1, 3).reshape(
            self.i1 * self.j1, self.i2 * self.j2)

    def table_params(self) -> int:
        return self.g1.numel() + self.g2.numel()

    def compression_ratio(self) -> float:
        """N·d (the full table's values) over the cores' values."""
        return self.num_items * self.dim / self.table_params()

    @classmethod
    def params_for(cls, num_items: int, dim: int, rank: int, item_shape=None, dim_shape=None, **kw) -> int:
        raise NotImplementedError

    @classmethod
    def rank_for_ratio(cls, num_items: int, dim: int, ratio: float, item_shape=None, dim_shape=None, **kw) -> int:
        """Largest rank (a multiple of t) whose cores hold at most N·d/ratio values (at least t)."""
        t = int(kw.get("t", cls.t))
        budget = num_items * dim / ratio
        rank = t
        while cls.params_for(num_items, dim, rank + t, item_shape, dim_shape, **kw) <= budget:
            rank += t
        return rank

    def export_arrays(self) -> dict[str, np.ndarray]:
        c1, c2 = self._head_layout()
        return {f"{self.prefix}/core1": c1.detach().float().cpu().numpy().copy(),
                f"{self.prefix}/core2": c2.detach().float().cpu().numpy().copy()}

    def shapes(self) -> dict:
        return {"item_shape": [self.i1, self.i2], "dim_shape": [self.j1, self.j2], "rank": self.rank}

    def config(self) -> dict:
        return self.shapes() if self.t == 1 else {**self.shapes(), "t": self.t}


class TTItemTable(_TensorTrainBase):
    """Two-core tensor train: G1 (I1 × J1 × R), G2 (R × I2 × J2).

    Tmall (N = 40,727, d = 128, default rank 36): shapes 202×202 and 16×8, 36·(202·16 + 202·8) =
    174,528 values, 29.9x smaller than N·d; ``score`` costs I1·R·d + I1·I2·R·J2 = 0.93M + 11.75M
    ≈ 12.7M multiply-adds per session (the full table: N·d = 5.2M).
    """

    prefix = "tt"

    def __init__(self, num_items: int, dim: int, rank: int = TT_DEFAULT_RANK,
                 item_shape: list[int] | None = None, dim_shape: list[int] | None = None):
        super().__init__()
        self._setup(num_items, dim, rank, item_shape, dim_shape, 1)
        r = self.rank
        self.g1 = nn.Parameter(torch.empty(self.i1, self.j1, r))
        self.g2 = nn.Parameter(torch.empty(r, self.i2, self.j2))
        std = (dim * r) ** -0.25  # entries Σ_r G1·G2 get variance 1/d, like the full table's init
        nn.init.normal_(self.g1, std=std)
        nn.init.normal_(self.g2, std=std)

    @classmethod
    def params_for(cls, num_items: int, dim: int, rank: int, item_shape=None, dim_shape=None, **kw) -> int:
        (i1, i2), (j1, j2) = _check_shapes(num_items, dim, item_shape, dim_shape, 1)
        return rank * (i1 * j1 + i2 * j2)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        i1, i2 = self._split(ids)
        a = self.g1[i1]  # … × J1 × R
        b = self.g2.permute(1, 0, 2)[i2]  # … × R × J2
        return (a @ b).reshape(*ids.shape, self.dim) * self._pad_mask(ids)

    def table(self) -> torch.Tensor:
        m = self.g1.reshape(self.i1 * self.j1, self.rank) @ self.g2.reshape(self.rank, self.i2 * self.j2)
        return self._reshaped_to_table(m)

    def _head_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """core1: I1 × R × J1 (gathered by i1; MatMul against the session J1 × J2), core2:
        I2 × (R·J2) (gathered by i2; Gemm transB against U)."""
        return (self.g1.permute(0, 2, 1).contiguous(),
                self.g2.permute(1, 0, 2).reshape(self.i2, self.rank * self.j2))

    def score(self, sessions: torch.Tensor) -> torch.Tensor:
        c1, c2 = self._head_layout()
        s = sessions.reshape(-1, 1, self.j1, self.j2)
        u = torch.matmul(c1, s)  # B × I1 × R × J2
        out = u.reshape(-1, self.rank * self.j2) @ c2.t()  # (B·I1) × I2
        return out.reshape(-1, self.i1 * self.i2)[:, :self.num_items + 1]

    def init_from_table(self, table: torch.Tensor, counts: np.ndarray | None = None) -> dict:
        m = self._table_to_reshaped(table)
        left, right, s = _factor_svd(m, self.rank)
        with torch.no_grad():
            self.g1.copy_(left.view(self.i1, self.j1, self.rank).to(self.g1.dtype))
            self.g2.copy_(right.view(self.rank, self.i2, self.j2).to(self.g2.dtype))
        return _fit_report(self, table, s, self.rank)


class STTItemTable(_TensorTrainBase):
    """OD-Rec's semi-tensor train: G1 ((I1·J1) × R), G2 ((R/t) × (I2·J2/t)), W = G1 · (G2 ⊗ I_t).

    Tmall (N = 40,727, d = 128, default rank 48, t = 2): 202·16·48 + 24·202·4 = 155,136 + 19,392 =
    174,528 values, 29.9x smaller than N·d; ``score`` costs I1·d·R/t + I1·I2·(R/t)·(J2/t) = 0.62M +
    3.92M ≈ 4.5M multiply-adds per session (the full table: 5.2M).
    """

    prefix = "stt"

    def __init__(self, num_items: int, dim: int, rank: int = STT_DEFAULT_RANK,
                 item_shape: list[int] | None = None, dim_shape: list[int] | None = None, t: int = 2):
        super().__init__()
        self._setup(num_items, dim, rank, item_shape, dim_shape, t)
        r, rt, jt = self.rank, self.rank // self.t, self.j2 // self.t
        self.g1 = nn.Parameter(torch.empty(self.i1, self.j1, r))  # = (I1·J1) × R
        self.g2 = nn.Parameter(torch.empty(rt, self.i2, jt))  # = (R/t) × (I2·J2/t)
        std = (dim * rt) ** -0.25  # each entry is a sum of R/t products
        nn.init.normal_(self.g1, std=std)
        nn.init.normal_(self.g2, std=std)

    @classmethod
    def params_for(cls, num_items: int, dim: int, rank: int, item_shape=None, dim_shape=None, t: int = 2,
                   **kw) -> int:
        (i1, i2), (j1, j2) = _check_shapes(num_items, dim, item_shape, dim_shape, t)
        return rank * i1 * j1 + (rank // t) * i2 * (j2 // t)

    @classmethod
    def rank_for_ratio(cls, num_items: int, dim: int, ratio: float, item_shape=None, dim_shape=None,
                       t: int = 2) -> int:
        return super().rank_for_ratio(num_items, dim, ratio, item_shape, dim_shape, t=t)

    def stp_matrix(self) -> torch.Tensor:
        """G1 ⋉ G2 as the (I1·J1) × (I2·J2) reshaped table, without a Kronecker product."""
        x, rt, t = self.i1 * self.j1, self.rank // self.t, self.t
        a = self.g1.reshape(x, rt, t)  # [x, p, b] = G1[x, p·t + b]
        m = torch.einsum("xpb,pq->xqb", a, self.g2.reshape(rt, -1))
        return m.reshape(x, self.i2 * self.j2)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        i1, i2 = self._split(ids)
        rt, t = self.rank // self.t, self.t
        a = self.g1[i1].reshape(*ids.shape, self.j1, rt, t).transpose(-1, -2)  # … × J1 × t × R/t
        b = self.g2.permute(1, 0, 2)[i2].unsqueeze(-3)  # … × 1 × R/t × J2/t
        v = (a @ b).transpose(-1, -2)  # … × J1 × J2/t × t
        return v.reshape(*ids.shape, self.dim) * self._pad_mask(ids)

    def table(self) -> torch.Tensor:
        return self._reshaped_to_table(self.stp_matrix())

    def _head_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """core1: I1 × (J1·t) × (R/t), [i1, (j1, b), p] = G1[i1, j1, p·t + b]; core2:
        I2 × ((J2/t)·(R/t)), [i2, (j2', p)] = G2[p, i2, j2']."""
        rt, t, jt = self.rank // self.t, self.t, self.j2 // self.t
        c1 = self.g1.reshape(self.i1, self.j1, rt, t).permute(0, 1, 3, 2).reshape(self.i1, self.j1 * t, rt)
        c2 = self.g2.permute(1, 2, 0).reshape(self.i2, jt * rt)
        return c1, c2

    def score(self, sessions: torch.Tensor) -> torch.Tensor:
        c1, c2 = self._head_layout()
        t, jt = self.t, self.j2 // self.t
        s = sessions.reshape(-1, self.j1, jt, t).permute(0, 2, 1, 3).reshape(-1, 1, jt, self.j1 * t)
        u = torch.matmul(s, c1)  # B × I1 × J2/t × R/t
        out = u.reshape(-1, c2.shape[1]) @ c2.t()  # (B·I1) × I2
        return out.reshape(-1, self.i1 * self.i2)[:, :self.num_items + 1]

    def init_from_table(self, table: torch.Tensor, counts: np.ndarray | None = None) -> dict:
        x, rt, t = self.i1 * self.j1, self.rank // self.t, self.t
        m = self._table_to_reshaped(table)  # X × (I2·J2), column q·t + b
        stacked = m.view(x, -1, t).permute(2, 0, 1).reshape(t * x, -1)  # [(b, x), q] = M[x, q·t + b]
        left, right, s = _factor_svd(stacked, rt)  # left: [(b, x), p]
        g1 = left.view(t, x, rt).permute(1, 2, 0).reshape(self.i1, self.j1, self.rank)  # [x, p·t + b]
        with torch.no_grad():
            self.g1.copy_(g1.to(self.g1.dtype))
            self.g2.copy_(right.view(rt, self.i2, self.j2 // t).to(self.g2.dtype))
        return _fit_report(self, table, s, rt)


def _fit_report(model: _TensorTrainBase, table: torch.Tensor, singular: torch.Tensor, kept: int) -> dict:
    with torch.no_grad():
        ref = table[1:model.num_items + 1].detach().double().cpu()
        got = model.table()[1:].detach().double().cpu()
        err = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
    energy = singular.pow(2)
    return {
        "compressor": model.prefix,
        **model.shapes(),
        "t": model.t,
        "rel_error": err,
        "svd_rel_error": float((energy[kept:].sum() / energy.sum().clamp_min(1e-30)).sqrt()),
        "params": model.table_params(),
        "full_params": model.num_items * model.dim,
        "ratio": model.compression_ratio(),
    }


# --------------------------------------------------------------------------- the ONNX head

ITEM_VECTORS = "enc/item_vectors"
SESSION = "enc/session"


def _i64(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _split_ids(g: Graph, p: str, i2: int, ids: str) -> tuple[str, str]:
    g.const(f"{p}/i2_size", _i64(i2))
    hi = g.op("Div", [ids, f"{p}/i2_size"], f"{p}/idx1")
    lo = g.op("Mod", [ids, f"{p}/i2_size"], f"{p}/idx2")
    return hi, lo


def _scores(g: Graph, p: str, u: str, inner: int, i1: int, i2: int, num_items: int) -> str:
    """u: B × I1 × … (inner values per (b, i1)) → B × (N+1) scores via one Gemm against core2."""
    flat = g.op("Reshape", [u, g.const(f"{p}/u_shape", _i64([-1, inner]))], f"{p}/u_flat")
    parts = g.op("Gemm", [flat, f"{p}/core2"], f"{p}/scores_blocks", transB=1)  # (B·I1) × I2
    scores = g.op("Reshape", [parts, g.const(f"{p}/scores_shape", _i64([-1, i1 * i2]))], f"{p}/scores_padded")
    if i1 * i2 == num_items + 1:
        return scores
    g.const(f"{p}/start0", _i64([0]))
    g.const(f"{p}/end_items", _i64([num_items + 1]))
    g.const(f"{p}/axis1", _i64([1]))
    return g.op("Slice", [scores, f"{p}/start0", f"{p}/end_items", f"{p}/axis1"], f"{p}/scores")


def _add_cores(g: Graph, p: str, arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    c1 = np.ascontiguousarray(arrays[f"{p}/core1"], dtype=np.float32)
    c2 = np.ascontiguousarray(arrays[f"{p}/core2"], dtype=np.float32)
    g.const(f"{p}/core1", c1)
    g.const(f"{p}/core2", c2)
    return c1, c2


def tt_head(g: Graph, arrays: dict, items_cfg: dict, num_items: int, dim: int, ids: str, mask: str) -> str:
    """Tensor-train item vectors (``enc/item_vectors``) and B × (N+1) scores from ``enc/session``."""
    p = "tt"
    c1, c2 = _add_cores(g, p, arrays)
    i1, r, j1 = c1.shape
    i2 = c2.shape[0]
    j2 = c2.shape[1] // r
    if j1 * j2 != dim or i1 * i2 < num_items + 1:
        raise ValueError(f"tt cores {c1.shape}, {c2.shape} do not fit N={num_items}, d={dim}")
    # input side: v[j1, j2] = Σ_r core1[i1, r, j1] · core2[i2, (r, j2)]
    idx1, idx2 = _split_ids(g, p, i2, ids)
    a = g.op("Gather", [f"{p}/core1", idx1], f"{p}/rows1", axis=0)  # B × L × R × J1
    a = g.op("Transpose", [a], f"{p}/rows1_t", perm=[0, 1, 3, 2])  # B × L × J1 × R
    b = g.op("Gather", [f"{p}/core2", idx2], f"{p}/rows2", axis=0)  # B × L × (R·J2)
    b = g.op("Reshape", [b, g.const(f"{p}/rows2_shape", _i64([0, 0, r, j2]))], f"{p}/rows2_4d")
    v = g.op("MatMul", [a, b], f"{p}/vectors_4d")  # B × L × J1 × J2
    v = g.op("Reshape", [v, g.const(f"{p}/vectors_shape", _i64([0, 0, dim]))], f"{p}/vectors")
    g.op("Mul", [v, mask], ITEM_VECTORS)
    # output side: U[b, i1, r, j2] = Σ_j1 core1[i1, r, j1] · s[b, j1, j2], then Gemm with core2
    s = g.op("Reshape", [SESSION, g.const(f"{p}/session_shape", _i64([-1, 1, j1, j2]))], f"{p}/session_4d")
    u = g.op("MatMul", [f"{p}/core1", s], f"{p}/u")  # B × I1 × R × J2
    return _scores(g, p, u, r * j2, i1, i2, num_items)


def stt_head(g: Graph, arrays: dict, items_cfg: dict, num_items: int, dim: int, ids: str, mask: str) -> str:
    """Semi-tensor-train item vectors (``enc/item_vectors``) and B × (N+1) scores from ``enc/session``."""
    p = "stt"
    c1, c2 = _add_cores(g, p, arrays)
    t = int((items_cfg or {}).get("t", 2))
    i1, j1t, rt = c1.shape
    j1 = j1t // t
    i2 = c2.shape[0]
    jt = c2.shape[1] // rt
    if j1 * t != j1t or j1 * jt * t != dim or i1 * i2 < num_items + 1:
        raise ValueError(f"stt cores {c1.shape}, {c2.shape} do not fit N={num_items}, d={dim}, t={t}")
    # input side: v[j1, (j2', b)] = Σ_p core1[i1, (j1, b), p] · core2[i2, (j2', p)]
    idx1, idx2 = _split_ids(g, p, i2, ids)
    a = g.op("Gather", [f"{p}/core1", idx1], f"{p}/rows1", axis=0)  # B × L × (J1·t) × R/t
    b = g.op("Gather", [f"{p}/core2", idx2], f"{p}/rows2", axis=0)  # B × L × (J2/t·R/t)
    b = g.op("Reshape", [b, g.const(f"{p}/rows2_shape", _i64([0, 0, jt, rt]))], f"{p}/rows2_4d")
    b = g.op("Transpose", [b], f"{p}/rows2_t", perm=[0, 1, 3, 2])  # B × L × R/t × J2/t
    v = g.op("MatMul", [a, b], f"{p}/vectors_jbj")  # B × L × (J1·t) × J2/t: order (j1, b, j2')
    v = g.op("Reshape", [v, g.const(f"{p}/vectors_5d_shape", _i64([0, 0, j1, t, jt]))], f"{p}/vectors_5d")
    v = g.op("Transpose", [v], f"{p}/vectors_5d_t", perm=[0, 1, 2, 4, 3])  # (j1, j2', b)
    v = g.op("Reshape", [v, g.const(f"{p}/vectors_shape", _i64([0, 0, dim]))], f"{p}/vectors")
    g.op("Mul", [v, mask], ITEM_VECTORS)
    # output side: U[b, i1, j2', p] = Σ_(j1, b') s[b, j1, (j2', b')] · core1[i1, (j1, b'), p]
    s = g.op("Reshape", [SESSION, g.const(f"{p}/session_shape", _i64([-1, j1, jt, t]))], f"{p}/session_4d")
    s = g.op("Transpose", [s], f"{p}/session_t", perm=[0, 2, 1, 3])  # B × J2/t × J1 × t
    s = g.op("Reshape", [s, g.const(f"{p}/session_mm_shape", _i64([-1, 1, jt, j1t]))], f"{p}/session_mm")
    u = g.op("MatMul", [s, f"{p}/core1"], f"{p}/u")  # B × I1 × J2/t × R/t
    return _scores(g, p, u, jt * rt, i1, i2, num_items)


# --------------------------------------------------------------------------- the compressors


class TensorTrain(Compressor):
    name = "tt"
    summary = "tensor train (TT-Rec)"
    table_type = TTItemTable
    options = {"rank": None}  # None: about 30x (TT_DEFAULT_RANK at Tmall size)
    parts = {"item factors": ("tt/",)}
    resized_options = ("item_shape",)  # the item grid I1 × I2 ≥ N+1 follows N
    score = staticmethod(tt_head)

    def head(self, frozen, opts):
        return all_columns_head(lambda g, ids, mask: self.score(g, frozen.arrays, frozen.items_config,
                                                                   frozen.num_items, frozen.dim, ids, mask))

    def describe(self, block: dict) -> str:
        return f"R={block.get('rank')}"


class SemiTensorTrain(TensorTrain):
    name = "stt"
    summary = "semi-tensor train (OD-Rec)"
    table_type = STTItemTable
    parts = {"item factors": ("stt/",)}
    score = staticmethod(stt_head)


COMPRESSORS = (TensorTrain(), SemiTensorTrain())
