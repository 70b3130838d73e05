"""A next-item recommender = item table + session encoder (+ optional repeat bonus); scores are session ·
item vectors (+ the bonus of items already in the session)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .encoder import SessionEncoder
from ..compressors.base import ItemTable
from .repeat import RepeatBonus


class SessionRecommender(nn.Module):
    def __init__(self, items: ItemTable, encoder: SessionEncoder, repeat: RepeatBonus | None = None):
        super().__init__()
        self.items = items
        self.encoder = encoder
        self.repeat = repeat

    @property
    def num_items(self) -> int:
        return self.items.num_items

    def session_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.items.lookup(ids), ids)

    def scores(self, ids: torch.Tensor) -> torch.Tensor:
        """B × (N+1) scores (plus the repeat bonus, if the model has one); column 0 (padding) is -inf so it
        is never recommended."""
        logits = self.items.score(self.session_vectors(ids))
        if self.repeat is not None:
            logits = logits + self.repeat(ids, logits.shape[1])
        logits[:, 0] = float("-inf")
        return logits
