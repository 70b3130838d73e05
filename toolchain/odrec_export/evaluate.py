"""Score test samples over the full item set with a model and collect ranking metrics."""

from __future__ import annotations

from typing import Sequence

import torch

from .data import Sample, Vocabulary, pad_batch
from .metrics import DEFAULT_KS, RankingMetrics
from .models.recommender import SessionRecommender


@torch.no_grad()
def evaluate_model(model: SessionRecommender, samples: Sequence[Sample], *, max_len: int,
                   batch_size: int = 512, device: str = "cpu", ks: Sequence[int] = DEFAULT_KS) -> dict:
    was_training = model.training
    model.eval()
    metrics = RankingMetrics(ks)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        longest = min(max_len, max(len(p) for p, _ in chunk))  # shorter padding, same scores
        ids = torch.from_numpy(pad_batch([p for p, _ in chunk], longest)).to(device)
        targets = torch.tensor([t for _, t in chunk], device=device)
        metrics.add_scores(model.scores(ids), targets)
    model.train(was_training)
    return metrics.result()


def remap_samples(samples: Sequence[Sample], source: Vocabulary, target: Vocabulary) -> tuple[list[Sample], int]:
    """Re-index samples from one vocabulary to another through raw ids.

    Items unknown to ``target`` are dropped from prefixes; samples whose target is unknown, or whose
    prefix becomes empty, are skipped and counted.
    """
    if source == target:
        return list(samples), 0
    out, skipped = [], 0
    for prefix, t in samples:
        new_t = target.index(source.raw(t))
        new_p = [i for i in (target.index(source.raw(x)) for x in prefix) if i]
        if new_t and new_p:
            out.append((new_p, new_t))
        else:
            skipped += 1
    return out, skipped
