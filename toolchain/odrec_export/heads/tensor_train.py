"""ONNX heads of the tensor-train item tables (``models/tensor_train.py``): ``tt`` and ``stt``.

Both take the arrays of ``export_arrays`` as they are (the layouts are prepared in numpy there):

* tt: ``tt/core1`` I1 × R × J1, ``tt/core2`` I2 × (R·J2);
* stt: ``stt/core1`` I1 × (J1·t) × (R/t), ``stt/core2`` I2 × ((J2/t)·(R/t)).

Item vectors: split ids into (i1, i2) = (v // I2, v % I2), Gather a core row for each, one small
MatMul per item. Scores: one MatMul of the session vector (reshaped J1 × J2) against core1, then one
Gemm of that B·I1 × (R·J2) (tt) or B·I1 × (R·J2/t²) (stt) product against core2: the only
N-sized product takes the runtime session vector, so constant folding cannot rebuild the table.
Every name written here starts with ``tt/`` or ``stt/`` except ``enc/item_vectors``.
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph

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
