"""CpRec's block-wise adaptive decomposition of the item table, with its adaptive softmax.

CpRec (Sun et al., SIGIR 2020) re-indexes items by descending training frequency and cuts them
into blocks: block 0 (the most frequent items) keeps full d-dim vectors, block i ≥ 1 stores
vectors of dimension d_i = d/ρ^i and a projection P_i (d × d_i), so an item's d-dim vector is
E_i[row] @ P_iᵀ. The same weights are tied to the output, an adaptive softmax:

* head: one logit s·e_v per block-0 item plus one cluster logit s·c_i + b_i per tail block i;
* tail block i: logits (s @ P_i) · E_iᵀ over its own items;
* log p(v) = log_softmax(head)[v] for block-0 items and
  log p(v) = log_softmax(head)[cluster i] + log_softmax(tail_i)[v] for an item of tail block i.

``score`` returns these exact log-probabilities, B × (N+1) in item-index order (column 0, padding,
is ``PAD_SCORE``), computed exactly as the ONNX head below computes them: the blocks'
log-probabilities concatenated as [padding, block 0, block 1, ...] (frequency order) and gathered
through ``position`` (item index → column of that concatenation).

Sizes. ``blocks`` lists the sizes of the leading blocks; a final block takes the remaining items
(if any). The default (``blocks=None``) comes from ``blocks_for_ratio(N, d, DEFAULT_RATIO, rho)``:
a ~30x smaller item representation (all E_i + P_i + cluster vectors and biases, fp32) than the
N×d fp32 table, which is what the other compressors of this toolchain are compared at. CpRec's
own paper only claims 4–8x; at 30x most items end in a very low-dimensional tail block. At Tmall
size (N=40727, d=128, ρ=4) the default is blocks [253, 1012, 4049] + a 35413-item tail, dims
128/32/8/2: 173,749 parameters against 5,213,056, i.e. 30.0x. (8x: [1483, 5934] + rest;
4x: [4500, 18001] + rest, both with ρ=4.)

Items are ranked by a buffer (``position``), set from the training click counts by
``init_from_table`` or ``set_frequencies``; until then items keep index order.

The ONNX head (the block table and adaptive softmax as a graph piece). Input side: each index is mapped through ``cprec/position`` to its rank; every block gathers its
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

import functools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

from ..errors import UsageError
from ..export.artifact import ENCODER_PREFIX
from ..export.graph import Graph
from .base import Compressor, ItemTable, all_columns_head

DEFAULT_RATIO = 30.0
PAD_SCORE = -1e9  # column 0 and, with head top-k expansion, the items of unexpanded tail blocks


def block_dims(dim: int, rho: int, count: int) -> list[int]:
    """Dimension of each of ``count`` blocks: d/ρ^i (integer division, at least 1)."""
    return [max(1, dim // rho ** i) for i in range(count)]


def _fixed_params(dim: int, dims: list[int]) -> int:
    """Projections, cluster vectors and cluster biases of the tail blocks."""
    return sum(dim * di + dim + 1 for di in dims[1:])


def count_params(num_items: int, dim: int, sizes: list[int], rho: int) -> int:
    """Parameters of a block table with these block sizes (all blocks, the last included)."""
    dims = block_dims(dim, rho, len(sizes))
    return sum(b * di for b, di in zip(sizes, dims)) + _fixed_params(dim, dims)


def blocks_for_ratio(num_items: int, dim: int, ratio: float = DEFAULT_RATIO, rho: int = 4) -> list[int]:
    """Sizes of the leading blocks (the last block takes the rest) so that the representation is
    about ``ratio`` times smaller than the N×d table.

    Uses the fewest blocks that can reach the target; the leading blocks get equal parameter
    budgets (so block i holds ρ^i times more items than block 0 when d/ρ^i is exact) and the last
    block takes the remaining items. Where the target cannot be reached (tiny N, ρ=1), returns the
    most compressed split: one item in each leading block, as many blocks as distinct dimensions.
    """
    if num_items < 1 or dim < 1 or rho < 1 or ratio <= 0:
        raise ValueError("num_items, dim, rho and ratio must be positive")
    budget = num_items * dim / ratio
    if budget >= num_items * dim:
        return []
    levels = 1
    if rho > 1:
        while dim // rho ** levels >= 1:
            levels += 1
    levels = min(levels, num_items)
    for k in range(2, levels + 1):
        dims = block_dims(dim, rho, k)
        rest = budget - _fixed_params(dim, dims) - num_items * dims[-1]
        coef = (k - 1) - dims[-1] * sum(1.0 / di for di in dims[:-1])
        if rest <= 0 or coef <= 0:
            continue
        per_block = rest / coef  # parameters of each leading block
        sizes = [int(per_block // di) for di in dims[:-1]]
        if min(sizes) >= 1 and sum(sizes) < num_items:
            return sizes
    return [1] * (max(levels, 1) - 1)


class BlockItemTable(ItemTable):
    """Frequency-ranked blocks of shrinking dimension with an adaptive softmax (CpRec)."""

    dot_product_softmax = False  # its log_probs is the adaptive softmax: a sampled loss cannot estimate it

    def __init__(self, num_items: int, dim: int, blocks: list[int] | None = None, rho: int = 4):
        super().__init__()
        if rho < 1:
            raise ValueError(f"rho must be >= 1, got {rho}")
        self.num_items, self.dim, self.rho = num_items, dim, rho
        lead = list(blocks_for_ratio(num_items, dim, DEFAULT_RATIO, rho) if blocks is None else blocks)
        if any(int(b) != b or b < 1 for b in lead) or sum(lead) > num_items:
            raise ValueError(f"blocks must be positive sizes summing to at most {num_items}, got {lead}")
        self.blocks = [int(b) for b in lead]
        self.sizes = self.blocks + ([num_items - sum(self.blocks)] if sum(self.blocks) < num_items else [])
        self.dims = block_dims(dim, rho, len(self.sizes))
        self.offsets = [int(o) for o in np.cumsum([0] + self.sizes[:-1])]
        self.tables = nn.ParameterList(
            nn.Parameter(torch.randn(b, di) * di ** -0.5) for b, di in zip(self.sizes, self.dims))
        # projections[i - 1] is P_i (d × d_i) of tail block i
        self.projections = nn.ParameterList(nn.Parameter(torch.randn(dim, di) * dim ** -0.5) for di in self.dims[1:])
        tails = len(self.sizes) - 1
        self.clusters = nn.Parameter(torch.randn(tails, dim) * dim ** -0.5)
        self.cluster_bias = nn.Parameter(torch.tensor([math.log(b) for b in self.sizes[1:]], dtype=torch.float32))
        # position[v]: 1 + rank of item v by descending frequency (0 for padding); the column of v in
        # the [padding, block 0, block 1, ...] concatenation of the blocks' log-probabilities.
        self.register_buffer("position", torch.arange(num_items + 1, dtype=torch.int32))

    # ----------------------------------------------------------------------------- sizes, ranking

    def config(self) -> dict:
        """The JSON-able kwargs that rebuild this table (``config["items"]``)."""
        return {"blocks": list(self.blocks), "rho": self.rho}

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def compression_ratio(self) -> float:
        return self.num_items * self.dim / self.param_count()

    def set_frequencies(self, counts: np.ndarray) -> np.ndarray:
        """Rank items by descending ``counts`` (counts[v] = training clicks of index v, counts[0] =
        padding; ties by index); returns the item indices in rank order."""
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        if counts.shape[0] != self.num_items + 1:
            raise ValueError(f"counts must have {self.num_items + 1} entries, got {counts.shape[0]}")
        order = np.argsort(-counts[1:], kind="stable") + 1
        position = np.zeros(self.num_items + 1, dtype=np.int64)
        position[order] = np.arange(1, self.num_items + 1)
        self.position.copy_(torch.from_numpy(position).to(torch.int32))
        return order

    def order(self) -> torch.Tensor:
        """Item indices in rank order (N entries)."""
        order = torch.empty(self.num_items, dtype=torch.long, device=self.position.device)
        order[self.position[1:].long() - 1] = torch.arange(1, self.num_items + 1, device=self.position.device)
        return order

    # ----------------------------------------------------------------------------- vectors

    def _project(self, i: int, rows: torch.Tensor) -> torch.Tensor:
        vecs = self.tables[i][rows]
        return vecs if i == 0 else vecs @ self.projections[i - 1].t()

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        q0 = self.position[ids].long() - 1  # rank, -1 for padding
        out = None
        for i, (off, size) in enumerate(zip(self.offsets, self.sizes)):
            q = q0 - off
            inside = ((q >= 0) & (q < size)).unsqueeze(-1)
            vecs = self._project(i, q.clamp(0, size - 1)) * inside
            out = vecs if out is None else out + vecs
        return out

    def block_vectors(self) -> torch.Tensor:
        """N × d vectors in rank order (training and reference only)."""
        return torch.cat([self._project(i, torch.arange(b, device=self.position.device))
                          for i, b in enumerate(self.sizes)])

    def table(self) -> torch.Tensor:
        ranked = self.block_vectors()
        full = torch.cat([torch.zeros_like(ranked[:1]), ranked])
        return full[self.position.long()]

    # ----------------------------------------------------------------------------- adaptive softmax

    def score(self, sessions: torch.Tensor, expand_top: int | None = None) -> torch.Tensor:
        """B × (N+1) log-probabilities of the adaptive softmax in item-index order (column 0 =
        ``PAD_SCORE``). ``expand_top=k``: only tail blocks whose cluster is among the head's top-k
        entries get their log-probabilities, the others ``PAD_SCORE`` (approximate, as the graph)."""
        b0 = self.sizes[0]
        head = sessions @ self.tables[0].t()
        if len(self.sizes) > 1:
            head = torch.cat([head, sessions @ self.clusters.t() + self.cluster_bias], dim=1)
        head_lp = F.log_softmax(head, dim=1)
        kth = None
        if expand_top is not None:
            k = max(1, min(int(expand_top), head_lp.shape[1]))
            kth = head_lp.topk(k, dim=1).values[:, k - 1:k]
        parts = [torch.full_like(head_lp[:, :1], PAD_SCORE), head_lp[:, :b0]]
        for i in range(1, len(self.sizes)):
            cluster = head_lp[:, b0 + i - 1:b0 + i]
            tail = (sessions @ self.projections[i - 1]) @ self.tables[i].t()
            lp = F.log_softmax(tail, dim=1) + cluster
            if kth is not None:
                lp = torch.where(cluster >= kth, lp, torch.full_like(lp, PAD_SCORE))
            parts.append(lp)
        return torch.cat(parts, dim=1)[:, self.position.long()]

    def log_probs(self, sessions: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """The adaptive softmax is its own output layer: ``table`` (the input-side vectors) is unused."""
        return self.score(sessions)[:, 1:]

    # ----------------------------------------------------------------------------- init, export

    @torch.no_grad()
    def init_from_table(self, table: torch.Tensor, counts: np.ndarray) -> dict:
        """Rank items by ``counts``; block 0 copies the teacher's rows, block i ≥ 1 is the truncated
        SVD of its teacher rows X_i to rank d_i (E_i = U·S, P_i = V, zero-padded where a block has
        fewer rows than d_i). Cluster vector i = mean of X_i and bias = log |block i|: the first-order
        expansion of logsumexp_{v in i} s·e_v around s = 0, so the head starts close to the teacher's
        block probabilities."""
        table = torch.as_tensor(table).detach().float().cpu()
        if tuple(table.shape) != (self.num_items + 1, self.dim):
            raise ValueError(f"table must be {(self.num_items + 1, self.dim)}, got {tuple(table.shape)}")
        order = self.set_frequencies(counts)
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        total = max(float(counts[1:].sum()), 1.0)
        errors, shares = [], []
        for i, (off, size, di) in enumerate(zip(self.offsets, self.sizes, self.dims)):
            idx = order[off:off + size]
            x = table[torch.from_numpy(idx)]
            shares.append(float(counts[idx].sum()) / total)
            if i == 0:
                approx = x
                self.tables[0].copy_(x)
            else:
                u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
                r = min(di, s.shape[0])
                e = torch.zeros(size, di, dtype=torch.float64)
                p = torch.zeros(self.dim, di, dtype=torch.float64)
                e[:, :r] = u[:, :r] * s[:r]
                p[:, :r] = vh[:r].t()
                self.tables[i].copy_(e.float())
                self.projections[i - 1].copy_(p.float())
                self.clusters[i - 1].copy_(x.mean(0))
                self.cluster_bias[i - 1] = math.log(size)
                approx = (e @ p.t()).float()
            norm = float(x.norm())
            errors.append(float((x - approx).norm()) / norm if norm > 0 else 0.0)
        return {"blocks": list(self.sizes), "dims": list(self.dims), "rho": self.rho,
                "relative_error": errors, "click_share": shares, "params": self.param_count(),
                "table_params": self.num_items * self.dim, "ratio": self.compression_ratio()}

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``cprec/block{i}`` (|block i| × d_i), ``cprec/proj{i}`` (d × d_i, i ≥ 1),
        ``cprec/clusters`` ((K-1) × d), ``cprec/cluster_bias`` (K-1) and ``cprec/position`` (N+1,
        the smallest unsigned type that holds N): column of each item index in the [padding, block 0,
        block 1, ...] concatenation."""
        out = {f"cprec/block{i}": t.detach().float().cpu().numpy().copy() for i, t in enumerate(self.tables)}
        for i, p in enumerate(self.projections, start=1):
            out[f"cprec/proj{i}"] = p.detach().float().cpu().numpy().copy()
        if len(self.sizes) > 1:
            out["cprec/clusters"] = self.clusters.detach().float().cpu().numpy().copy()
            out["cprec/cluster_bias"] = self.cluster_bias.detach().float().cpu().numpy().copy()
        n = self.num_items
        dtype = np.uint8 if n <= 0xFF else np.uint16 if n <= 0xFFFF else np.uint32
        out["cprec/position"] = self.position.cpu().numpy().astype(dtype)
        return out


# --------------------------------------------------------------------------- the ONNX head

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


# --------------------------------------------------------------------------- the compressor


class CpRec(Compressor):
    name = "cprec"
    summary = "CpRec blocks + adaptive softmax"
    table_type = BlockItemTable
    options = {"blocks": None, "rho": 4}  # blocks None: about 30x (blocks_for_ratio)
    parts = {"item factors": (P,)}
    build_options = ("expand_top",)

    def items_config(self, options: dict) -> dict:
        config = {"rho": options.get("rho") or self.options["rho"]}
        blocks = options.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = [int(b) for b in blocks.split(",") if b.strip()]
            except ValueError:
                raise UsageError(f"--blocks must be comma-separated block sizes, got {options['blocks']!r}") from None
            if not blocks or min(blocks) < 1:
                raise UsageError(f"--blocks must be positive sizes, got {options['blocks']!r}")
        if blocks is not None:
            config["blocks"] = list(blocks)
        return config

    def head(self, frozen, opts):
        return all_columns_head(lambda g, ids, mask: cprec_head(g, frozen.arrays, frozen.items_config, frozen.num_items,
                                                                frozen.dim, ids, mask, expand_top=opts.expand_top))

    def manifest(self, frozen, opts) -> dict:
        return {**super().manifest(frozen, opts), "expand_top": opts.expand_top}

    def match_artifact(self, table: BlockItemTable, manifest: dict, round_trip) -> None:
        expand_top = (manifest.get("compressor") or {}).get("expand_top")
        if expand_top is not None:  # CpRec's approximate output: the reference takes the same shortcut
            table.score = functools.partial(table.score, expand_top=int(expand_top))


COMPRESSORS = (CpRec(),)
