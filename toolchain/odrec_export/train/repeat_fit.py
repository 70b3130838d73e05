"""Fit a trained model's repeat bonus (models/repeat.py) on held-out samples, the model itself frozen.

The weights are chosen for the ranking metric the model is judged by (NDCG@10 by default), not for
the softmax cross-entropy: raising the items already in the session costs a new-to-session target
a rank only when that target was near the top anyway, which the cross-entropy (charging every such
target for the probability mass moved) does not see; fitted on cross-entropy, the bonus barely moves
HR@10.

The fit is exact and cheap: the bonus only moves the scores of the session's own items, so one pass
of the model keeps, per sample, the base scores of its session slots, the best scores among the other
items and the target's rank among those; any candidate weights are then ranked from these small
arrays. The weights are tied within recency buckets (``RECENCY_BUCKETS``) and fitted by coordinate
ascent over a grid (``GRID``, in units of the spread of the model's scores), a few sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..data.sessions import Sample, pad_batch
from ..metrics import metrics_from_ranks, target_ranks
from ..models.recommender import SessionRecommender
from ..models.repeat import CONFIG_KEY as REPEAT_KEY
from ..models.repeat import RepeatBonus, slot_weights

RECENCY_BUCKETS = (0, 1, 2, 3, 4, 6, 10, 20)  # first recency of each bucket; the last runs to max_len - 1
GRID = tuple(np.round(np.arange(-2.0, 10.01, 0.125), 3))  # × the mean per-sample std of the scores
OBJECTIVES = ("NDCG@10", "HR@10")


@dataclass
class SessionSlots:
    """Per sample (rows) and session slot (columns, left-padded, most recent last), the model frozen."""
    real: torch.Tensor  # bool: the slot holds an item
    owner: torch.Tensor  # long: the slot of the item's most recent occurrence (its bonus is summed there)
    base: torch.Tensor  # float: the slot item's score without bonus
    others_top: torch.Tensor  # float, sample × depth: best scores of the items not in the session, descending
    target_slot: torch.Tensor  # long, per sample: the target's owner slot, -1 when it is new to the session
    target_base: torch.Tensor  # float, per sample: the target's score without bonus
    target_rank_others: torch.Tensor  # long, per sample: items not in the session ranked above the target
    spread: torch.Tensor  # float, per sample: the std of its scores over all items
    items: torch.Tensor  # long: the slot's item index (0 at padding)
    others_top_items: torch.Tensor  # long, sample × depth: the items of ``others_top``
    target: torch.Tensor  # long, per sample: the target item


@torch.no_grad()
def session_slots(model: SessionRecommender, samples: Sequence[Sample], depth: int = 20,
                  batch_size: int = 512) -> SessionSlots:
    """One pass of ``model`` without its bonus over ``samples``; ranks below ``depth`` are all "a miss"."""
    max_len = model.encoder.cfg.max_len
    saved, was_training = model.repeat, model.training
    model.repeat = None
    model.eval()
    parts = []
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            ids = torch.from_numpy(pad_batch([p for p, _ in chunk], max_len))
            targets = torch.tensor([t for _, t in chunk]).unsqueeze(1)
            scores = model.scores(ids)
            real = ids != 0
            same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & real.unsqueeze(2)  # B × L × L
            owner = torch.where(same, torch.arange(max_len), -1).max(dim=2).values.clamp(min=0)
            others = scores.scatter(1, ids, float("-inf"))  # column 0 is -inf already
            target_base = scores.gather(1, targets)
            hit = (ids == targets) & real
            top = others.topk(min(depth, others.shape[1]), dim=1)
            parts.append((real, owner, scores.gather(1, ids), top.values,
                          torch.where(hit, owner, -1).max(1).values, target_base.squeeze(1),
                          target_ranks(others, targets.squeeze(1)), scores[:, 1:].std(dim=1),
                          ids, top.indices, targets.squeeze(1)))
    finally:
        model.repeat = saved
        model.train(was_training)
    return SessionSlots(*(torch.cat(column) for column in zip(*parts)))


def bucket_weights(values: Sequence[float], max_len: int) -> torch.Tensor:
    """One weight per recency 0..max_len-1 from one value per bucket of RECENCY_BUCKETS."""
    starts = [s for s in RECENCY_BUCKETS if s < max_len]
    bucket = np.searchsorted(starts, np.arange(max_len), side="right") - 1
    return torch.tensor(np.asarray(values, dtype=np.float32)[bucket])


def _ranked_above(scores: torch.Tensor, items: torch.Tensor, score: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """Per row, how many of ``scores`` rank above (``score``, ``item``): higher, or equal with a lower
    index (metrics.py's rule, the artifact's TopK order)."""
    s, i = score.unsqueeze(1), item.unsqueeze(1)
    return ((scores > s) | ((scores == s) & (items < i))).sum(1)


def ranks_with_bonus(weights: torch.Tensor, slots: SessionSlots) -> torch.Tensor:
    """Each sample's 0-based target rank with per-recency bonus ``weights``: exact below the kept depth,
    at least the depth beyond it; ties broken by item index as in ``metrics.target_ranks``."""
    length = slots.real.shape[1]
    per_slot = slot_weights(weights, slots.real)
    bonus = torch.zeros_like(slots.base).scatter_add(1, slots.owner, per_slot)
    is_owner = slots.real & (slots.owner == torch.arange(length))
    session = (slots.base + bonus).masked_fill(~is_owner, float("-inf"))
    repeat = slots.target_slot >= 0
    target = torch.where(repeat, session.gather(1, slots.target_slot.clamp(min=0).unsqueeze(1)).squeeze(1),
                         slots.target_base)
    above_in_session = _ranked_above(session, slots.items, target, slots.target)
    above_others = torch.where(repeat, _ranked_above(slots.others_top, slots.others_top_items, target, slots.target),
                               slots.target_rank_others)
    return above_in_session + above_others


def fit_repeat_bonus(model: SessionRecommender, samples: Sequence[Sample], *, metric: str = "NDCG@10",
                     sweeps: int = 3) -> dict:
    """Give ``model`` a repeat bonus fitted on ``samples`` to maximise ``metric`` (replacing any bonus it
    had). Returns a report: samples, the share of targets already in the session, the metric before
    and after on these samples, and the weights per recency bucket."""
    if metric not in OBJECTIVES:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(OBJECTIVES)})")
    if not samples:
        raise ValueError("no samples to fit the repeat bonus on")
    max_len = model.encoder.cfg.max_len
    slots = session_slots(model, samples)
    n_buckets = sum(s < max_len for s in RECENCY_BUCKETS)
    values = [0.0] * n_buckets

    def score(candidate) -> float:
        return metrics_from_ranks(ranks_with_bonus(bucket_weights(candidate, max_len), slots).numpy(), [10])[metric]

    unit = float(slots.spread.mean())
    before = best = score(values)
    for _ in range(sweeps):
        changed = False
        for b in range(n_buckets):
            for v in sorted(GRID, key=abs):  # on equal scores the smaller weight wins
                trial = values[:b] + [round(float(v) * unit, 4)] + values[b + 1:]
                s = score(trial)
                if s > best:
                    best, values, changed = s, trial, True
        if not changed:
            break
    model.repeat = RepeatBonus(max_len)
    model.repeat.weights.data.copy_(bucket_weights(values, max_len))
    return {"samples": len(samples), "repeat_share": float((slots.target_slot >= 0).float().mean()),
            "metric": metric, "before": before, "after": best,
            "buckets": [{"recency_from": s, "weight": v} for s, v in zip(RECENCY_BUCKETS, values)]}


def with_repeat_bonus(ckpt: Checkpoint, model: SessionRecommender, report: dict) -> Checkpoint:
    """``ckpt`` with ``model``'s fitted bonus added (the rest of the model unchanged) and the fit recorded
    (under the same key in the provenance as in the config)."""
    state = {k: v for k, v in ckpt.state_dict.items() if not k.startswith("repeat.")}
    state["repeat.weights"] = model.repeat.weights.detach().clone()
    return replace(ckpt, config={**ckpt.config, REPEAT_KEY: True}, state_dict=state,
                   provenance={**ckpt.provenance, REPEAT_KEY: report})


def without_repeat_bonus(ckpt: Checkpoint) -> Checkpoint:
    """``ckpt`` as it was before a repeat bonus was fitted to it (unchanged if it has none)."""
    if not ckpt.config.get(REPEAT_KEY):
        return ckpt
    return replace(ckpt, config={k: v for k, v in ckpt.config.items() if k != REPEAT_KEY},
                   state_dict={k: v for k, v in ckpt.state_dict.items() if not k.startswith("repeat.")},
                   provenance={k: v for k, v in ckpt.provenance.items() if k != REPEAT_KEY})
