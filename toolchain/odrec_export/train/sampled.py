"""Sampled training objectives: a step costs what the batch touches, not the catalogue.

``full`` scores every item (exact softmax, O(N·d) a step); ``sampled`` scores each row's target and
``negatives`` items shared across the batch, drawn from the training click frequency (+1, so every
item can be drawn), with the log-Q correction: each candidate's logit minus log(S·q(item)), the
log of how often S draws expect it, so the sampled softmax estimates the full one without favouring
rare items (Bengio & Senécal 2008; Yi et al. 2019). A negative that is the row's own target is
masked out. Draws come from one generator seeded per run and advanced once per step, so every
process of a data-parallel run draws the same negatives.

Distillation on the same budget uses a candidate set instead of all N items: the batch's targets
plus the sampled negatives (``candidates``). Finding the teacher's own top items for the batch would
score all N items again, the cost this module exists to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError

LOSSES = ("full", "sampled")


@dataclass
class Negatives:
    """One step's shared negatives and the log-Q correction of every item."""
    items: torch.Tensor  # S item indices, 1..N (repeats allowed)
    log_expected: torch.Tensor  # (N+1): log of each item's expected draws per step


def check_loss(loss: str, negatives: int, items=None) -> None:
    """Refuse an unknown loss, a sampled loss without negatives, and a sampled loss for an item table
    whose training distribution is not a softmax of dot products (CpRec's adaptive softmax)."""
    if loss not in LOSSES:
        raise UsageError(f"unknown --loss '{loss}' (use {' or '.join(LOSSES)})")
    if loss == "sampled" and negatives < 1:
        raise UsageError(f"--negatives must be >= 1, got {negatives}")
    if loss == "sampled" and items is not None and not getattr(items, "dot_product_softmax", True):
        raise UsageError(f"--loss sampled: {type(items).__name__} trains its own output layer (adaptive softmax), "
                         "which a sampled softmax does not estimate; use --loss full")


class NegativeSampler:
    """Items 1..N drawn with probability ∝ training clicks + 1; with ``in_batch``, the batch's own
    targets join them (B more draws from about the same distribution: targets follow the clicks)."""

    def __init__(self, counts: np.ndarray, negatives: int, seed: int = 0, in_batch: int = 0):
        weights = counts.astype(np.float64) + 1.0
        weights[0] = 0.0  # padding is never drawn
        q = weights / weights.sum()
        self.cdf = torch.from_numpy(np.cumsum(q)).float()
        self.cdf[-1] = 1.0
        self.negatives, self.in_batch = negatives, in_batch
        # log of the expected number of draws of each item in one step: the log-Q correction
        with np.errstate(divide="ignore"):
            self.log_expected = torch.from_numpy(np.log((negatives + in_batch) * q)).float()
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, targets: torch.Tensor | None = None) -> torch.Tensor:
        """This step's negatives; ``targets``: the whole (global) batch's, joined when ``in_batch``."""
        u = torch.rand(self.negatives, generator=self.generator)
        drawn = torch.searchsorted(self.cdf, u, right=True).clamp(1, len(self.cdf) - 1)
        return torch.cat([drawn, targets.cpu()]) if self.in_batch and targets is not None else drawn


def sampled_logits(sessions: torch.Tensor, items, targets: torch.Tensor, negatives: torch.Tensor,
                   log_expected: torch.Tensor) -> torch.Tensor:
    """B × (1+S) corrected logits, the target first; a negative equal to the row's target is -inf.
    ``items``: an ItemTable (its ``lookup`` gives the vectors of any item indices)."""
    log_expected = log_expected.to(sessions.device)
    positive = (sessions * items.lookup(targets)).sum(1) - log_expected[targets]
    negative = sessions @ items.lookup(negatives).t() - log_expected[negatives]
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    return torch.cat([positive.unsqueeze(1), negative], 1)


def sampled_cross_entropy(sessions: torch.Tensor, items, targets: torch.Tensor, negatives: torch.Tensor,
                          log_expected: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean sampled-softmax cross-entropy of the targets. ``exclude`` (B × L item ids) also masks each
    row's negatives that are among those items (finetune's objective leaves the session out)."""
    logits = sampled_logits(sessions, items, targets, negatives, log_expected)
    if exclude is not None:
        hit = (negatives.view(1, -1, 1) == exclude.unsqueeze(1)).any(-1)
        logits[:, 1:] = logits[:, 1:].masked_fill(hit, float("-inf"))
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


def candidates(targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """The items a sampled distillation step compares teacher and student on (sorted, unique)."""
    return torch.unique(torch.cat([targets, negatives.to(targets.device)]))


def candidate_log_probs(sessions: torch.Tensor, items, cands: torch.Tensor) -> torch.Tensor:
    """B × |C| log-softmax of the scores of the candidate items."""
    return F.log_softmax(sessions @ items.lookup(cands).t(), dim=1)
