"""A next-item recommender = item table + session encoder; scores are session · item vectors."""

from __future__ import annotations

import torch
import torch.nn as nn

from .encoder import SessionEncoder
from .item_tables import ItemTable


class SessionRecommender(nn.Module):
    def __init__(self, items: ItemTable, encoder: SessionEncoder):
        super().__init__()
        self.items = items
        self.encoder = encoder

    @property
    def num_items(self) -> int:
        return self.items.num_items

    def session_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.items.lookup(ids), ids)

    def scores(self, ids: torch.Tensor) -> torch.Tensor:
        """B × (N+1) scores; column 0 (padding) is -inf so it is never recommended."""
        logits = self.items.score(self.session_vectors(ids))
        logits[:, 0] = float("-inf")
        return logits
