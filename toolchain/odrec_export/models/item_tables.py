"""How items become vectors. Every table maps item indices 0..N (0 = padding) to d-dim vectors.

``FullItemTable`` is the uncompressed N×d table of the teacher. Compressed tables (codes, tensor
trains, CpRec blocks) implement the same methods, so the encoder and the training loops never need
to know which one they hold:

* ``lookup`` / ``table``: item vectors (the full table only for training and reference scoring);
* ``score``: B × (N+1) scores exactly as the exported graph computes them, ``log_probs``: the
  training distribution over items 1..N (a plain softmax of the scores unless the table has its
  own output layer, like CpRec's adaptive softmax);
* ``init_from_table``: fit the compressed form to a teacher's table before distillation;
* ``export_arrays``: the named arrays the artifact stores (names prefixed by the compressor).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..artifact import ITEM_TABLE


class ItemTable(nn.Module):
    num_items: int
    dim: int
    dot_product_softmax = True  # log_probs is a softmax of session · item vectors (a sampled loss estimates it)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors of the given indices (padding gives a zero vector)."""
        raise NotImplementedError

    def table(self) -> torch.Tensor:
        """All (N+1)×d vectors, row 0 = padding: for training and reference scoring only."""
        raise NotImplementedError

    def score(self, sessions: torch.Tensor) -> torch.Tensor:
        """B × (N+1) dot products of session vectors with every item vector."""
        return sessions @ self.table().t()

    def log_probs(self, sessions: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """B × N log-probabilities of items 1..N (padding left out). ``table``: this module's
        ``table()`` when the caller already has it (training builds it once per step), which is
        cheaper than ``score`` for large batches."""
        scores = sessions @ table[1:].t() if table is not None else self.score(sessions)[:, 1:]
        return F.log_softmax(scores, dim=1)

    def init_from_table(self, table: torch.Tensor, counts: np.ndarray) -> dict:
        """Fit this representation to a teacher's (N+1)×d table (``counts``: training clicks per
        index); returns a JSON-able report (reconstruction error, sizes, ...)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be initialised from a table")

    def export_arrays(self) -> dict[str, np.ndarray]:
        """The arrays the artifact stores, by initializer name."""
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor keyword arguments that rebuild this table (``config["items"]`` of a checkpoint)."""
        return {}


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
        return {ITEM_TABLE: table.numpy()}
