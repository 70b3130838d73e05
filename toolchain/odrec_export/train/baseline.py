"""A baseline every model must beat: item-to-item transitions from the session's last items.

Counted on the training sessions: C[a, b] = how often b directly follows a. A session's score for
item v is Σ_j w_j · C[s_-j, v] / Σ_b C[s_-j, b] over its last ``LAST`` items s_-1, s_-2, …, with
recency weights w_j = 1/j, plus a popularity share small enough to order only the items no
transition reaches (ties otherwise go to the lower index, as everywhere: metrics.py). No training,
no hyper-parameter tuned on test; on a new data set it says at once whether a model earns its
place. Ranked over the full item set like the models (``metrics.target_ranks``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.sessions import SessionData
from ..metrics import DEFAULT_KS, metrics_from_ranks, target_ranks

LAST = 3
POPULARITY_SHARE = 1e-6  # below any transition score (the smallest is w_LAST / the largest row count)


class TransitionBaseline:
    """Row-normalised next-item transition counts of the training sessions, stored transposed (rows =
    the following item) so that scoring a batch is one sparse × dense product."""

    def __init__(self, data: SessionData, last: int = LAST):
        n = data.num_items + 1
        pairs = np.array([(a, b) for s in data.train_sessions for a, b in zip(s, s[1:])], dtype=np.int64).reshape(-1, 2)
        rows = torch.sparse_coo_tensor(torch.from_numpy(pairs.T), torch.ones(len(pairs)), (n, n),
                                       check_invariants=True).coalesce()
        totals = torch.zeros(n).index_add_(0, rows.indices()[0], rows.values())
        values = rows.values() / totals[rows.indices()[0]]
        self.following = torch.sparse_coo_tensor(rows.indices().flip(0), values, (n, n),
                                                 check_invariants=True).coalesce()
        popularity = torch.from_numpy(data.item_counts()).float()
        self.prior = POPULARITY_SHARE * popularity / popularity.max().clamp(min=1)
        self.last = last

    def scores(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """B × (N+1) scores (column 0, padding, is -inf)."""
        weights = torch.zeros(len(prefixes), self.following.shape[0])
        for row, prefix in enumerate(prefixes):
            for j, item in enumerate(reversed(prefix[-self.last:]), start=1):
                weights[row, item] += 1.0 / j
        out = torch.sparse.mm(self.following, weights.t()).t() + self.prior  # (Σ_j w_j e_{s_-j}) · C
        out[:, 0] = float("-inf")
        return out


def evaluate_baseline(data: SessionData, samples=None, last: int = LAST, ks: Sequence[int] = DEFAULT_KS,
                      batch_size: int | None = None) -> dict:
    """HR/NDCG/MRR of the transition baseline on ``samples`` (default: the test samples)."""
    baseline = TransitionBaseline(data, last)
    samples = data.test_samples if samples is None else samples
    batch_size = batch_size or max(1, min(512, (1 << 25) // (data.num_items + 1)))  # B × (N+1) floats ≤ 128 MB
    ranks = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        scores = baseline.scores([p for p, _ in chunk])
        ranks.append(target_ranks(scores, torch.tensor([t for _, t in chunk])))
    return {**metrics_from_ranks(torch.cat(ranks).numpy(), ks), "model": f"last-{last}-items transitions"}
