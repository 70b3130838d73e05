"""The uncompressed item table ("none"): the teacher's N×d fp32 table, and the head of bench's baseline."""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..export import artifact as A
from .base import Compressor, ItemTable


class FullItemTable(ItemTable, nn.Embedding):
    """The plain (N+1)×d table. It is an ``nn.Embedding`` so that, with ``sparse`` set (training with a
    sampled loss), its gradients are sparse rows that DistributedDataParallel recognises and sums as
    such, and torch.optim.SparseAdam updates only the rows a step touched."""

    def __init__(self, num_items: int, dim: int):
        super().__init__(num_items + 1, dim)
        self.num_items, self.dim = num_items, dim
        nn.init.normal_(self.weight, std=dim ** -0.5)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradients are sparse once ``sparse`` is set."""
        return [self.weight]

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight, sparse=self.sparse) * (ids != 0).unsqueeze(-1)

    def table(self) -> torch.Tensor:
        return self.weight

    def init_from_table(self, table: torch.Tensor, counts: np.ndarray) -> dict:
        with torch.no_grad():
            self.weight.copy_(table)
        return {"copied": list(table.shape)}

    def export_arrays(self) -> dict[str, np.ndarray]:
        table = self.weight.detach().float().clone()
        table[0] = 0.0
        return {A.ITEM_TABLE: table.numpy()}


def table_head(table: np.ndarray | onnx.TensorProto):
    """A plain fp32 table: ``Gather`` for the session's items, ``Gemm`` for the scores. ``table`` is
    (N+1) × d with row 0 = padding (the graph stores rows 1..N), or the N × d initializer itself (bench's
    baseline, whose table can be too large for one protobuf)."""
    def head(g, ids: str, ids_m1: str, mask: str, tail) -> None:
        if isinstance(table, onnx.TensorProto):
            g.inits.append(table)
        else:
            g.const(A.ITEM_TABLE, np.ascontiguousarray(table[1:], dtype=np.float32))
        vecs = g.op("Gather", [A.ITEM_TABLE, ids_m1], "item_vectors_raw", axis=0)
        g.op("Mul", [vecs, mask], A.ENCODER_PREFIX + "item_vectors")
        scores = g.op("Gemm", [A.ENCODER_PREFIX + "session", A.ITEM_TABLE], "item_scores", transB=1)
        tail.batch(g, scores, A.OUTPUT_SCORES, A.OUTPUT_IDS)
    return head


class FullTable(Compressor):
    name = "none"
    summary = "the plain N×d fp32 table (the teacher)"
    table_type = FullItemTable
    holds_full_table = True
    parts = {"item table (fp32)": (A.ITEM_TABLE,)}

    def head(self, frozen, opts):
        return table_head(frozen.arrays[A.ITEM_TABLE])

    def manifest(self, frozen, opts) -> dict:
        return {"name": self.name, "d": frozen.dim}

    def describe(self, block: dict) -> str:
        return "fp32 table"

    def check_graph(self, inits: dict, manifest: dict) -> list[str]:
        n = manifest.get("num_items")
        if A.ITEM_TABLE in inits and isinstance(n, int) and inits[A.ITEM_TABLE].dims[0] != n:
            return [f"{A.MODEL_FILE}: item table has {inits[A.ITEM_TABLE].dims[0]} rows, manifest num_items is {n}"]
        return []

    def decoded_rows(self, inits: dict, manifest: dict, chunk: int):
        from onnx import numpy_helper

        rows = numpy_helper.to_array(inits[A.ITEM_TABLE]).astype(np.float32)
        for start in range(0, len(rows), chunk):
            yield rows[start:start + chunk]


COMPRESSORS = (FullTable(),)
