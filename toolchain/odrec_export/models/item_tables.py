"""How items become vectors. Every table maps item indices 0..N (0 = padding) to d-dim vectors.

``FullItemTable`` is the uncompressed N×d table of the teacher. Compressed tables (codes, ...)
implement the same two methods, so the encoder and the training loops never need to know which
one they hold.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ItemTable(nn.Module):
    num_items: int
    dim: int

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors of the given indices (padding gives a zero vector)."""
        raise NotImplementedError

    def table(self) -> torch.Tensor:
        """All (N+1)×d vectors, row 0 = padding: for training and reference scoring only."""
        raise NotImplementedError

    def score(self, sessions: torch.Tensor) -> torch.Tensor:
        """B × (N+1) dot products of session vectors with every item vector."""
        return sessions @ self.table().t()


class FullItemTable(ItemTable):
    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.num_items, self.dim = num_items, dim
        self.weight = nn.Parameter(torch.empty(num_items + 1, dim))
        nn.init.normal_(self.weight, std=dim ** -0.5)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids] * (ids != 0).unsqueeze(-1)

    def table(self) -> torch.Tensor:
        return self.weight
