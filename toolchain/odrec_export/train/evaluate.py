"""Score test samples over the full item set with a model and collect ranking metrics."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.sessions import Sample, pad_batch
from ..metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from ..models.recommender import SessionRecommender


@torch.no_grad()
def sample_ranks(model: SessionRecommender, samples: Sequence[Sample], *, max_len: int, batch_size: int = 512,
                 device: str = "cpu", progress=None) -> np.ndarray:
    """Each sample's 0-based target rank over the full item set (ties broken by index). ``progress``:
    a train.Progress wrapper shown over the batches (a bar on a terminal, log lines when piped)."""
    was_training = model.training
    model.eval()
    batch_size = max(1, min(batch_size, (1 << 26) // (model.num_items + 1)))  # ≤ 256 MB of scores a batch
    ranks = []
    starts = range(0, len(samples), batch_size)
    for start in (progress(starts, len(starts), "evaluating") if progress else starts):
        chunk = samples[start:start + batch_size]
        longest = min(max_len, max(len(p) for p, _ in chunk))  # shorter padding, same scores
        ids = torch.from_numpy(pad_batch([p for p, _ in chunk], longest)).to(device)
        targets = torch.tensor([t for _, t in chunk], device=device)
        ranks.append(target_ranks(model.scores(ids), targets).cpu().numpy())
    model.train(was_training)
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def evaluate_model(model: SessionRecommender, samples: Sequence[Sample], *, max_len: int,
                   batch_size: int = 512, device: str = "cpu", ks: Sequence[int] = DEFAULT_KS) -> dict:
    ranks = sample_ranks(model, samples, max_len=max_len, batch_size=batch_size, device=device)
    return metrics_from_ranks(ranks, ks)


CLICK_BUCKETS = ((0, 0), (1, 4), (5, 19), (20, 99), (100, None))


def breakdown(ranks: np.ndarray, samples: Sequence[Sample], item_counts: np.ndarray, *, max_len: int,
              ks: Sequence[int] = DEFAULT_KS) -> list[dict]:
    """Metrics per group of samples: by the target's clicks in the training sessions (compressed item
    tables lose most on rare items), and by whether the target already occurs in the (last ``max_len``
    items of the) session. Each row: group, samples, share of all samples, and the metrics."""
    clicks = item_counts[[t for _, t in samples]]
    repeat = np.array([t in p[-max_len:] for p, t in samples])
    groups = []
    for lo, hi in CLICK_BUCKETS:
        span = f"{lo}+" if hi is None else str(lo) if hi == lo else f"{lo}-{hi}"
        groups.append((f"target clicked {span} times in training",
                       (clicks >= lo) & (clicks <= (np.inf if hi is None else hi))))
    groups += [("target already in the session", repeat), ("target new to the session", ~repeat)]
    return [{"group": name, "samples": int(mask.sum()), "share": float(mask.mean()),
             **metrics_from_ranks(ranks[mask], ks)} for name, mask in groups if mask.any()]
