"""Continue a trained model (teacher or student) with cross-entropy alone; no teacher needed.

Two objectives (``OBJECTIVES``):

* ``all``: the usual next-item cross-entropy over all items.
* ``new``: only the training samples whose target is *new to the session*, with the session's own
  items left out of the softmax. A model with a repeat bonus (models/repeat.py) already ranks the
  items it has seen by the bonus; this spends the encoder and the item representation on the other
  targets, where a compressed student loses most. (Training through the fitted bonus instead does
  not work: it is fitted for ranking, several score deviations high, and the cross-entropy then
  mostly pushes the session's items back down.)

The bonus is left out while training and, when the model had one, fitted again afterwards on the
validation split (with the metric it was fitted for before): the scores it was fitted to have moved.
The model keeps its kind, compressor and provenance; the run is recorded under ``"finetune"`` and
the checkpoint it started from under ``"finetuned_from"``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

import torch
import torch.nn.functional as F

from .. import compressors
from ..checkpoint import Checkpoint, check_no_full_table, load_checkpoint
from ..data.sessions import SessionData, check_same_split, check_vocabulary
from ..errors import UsageError
from ..files import file_sha256
from ..models.recommender import SessionRecommender
from ..models.registry import model_from_checkpoint
from ..models.repeat import CONFIG_KEY as REPEAT_KEY
from . import parallel
from .evaluate import evaluate_model
from .loop import Progress, TrainConfig, cross_entropy_loss, environment, fit, no_progress
from .repeat_fit import fit_repeat_bonus, with_repeat_bonus, without_repeat_bonus
from .sampled import Negatives, sampled_cross_entropy


def new_target_loss(model: SessionRecommender, ids: torch.Tensor, targets: torch.Tensor,
                    sample: Negatives | None = None) -> torch.Tensor:
    """Cross-entropy over the samples whose target is not in their session, the session's items excluded
    (from all items, or from ``sample``'s shared negatives)."""
    new = ~((ids == targets.unsqueeze(1)) & (ids != 0)).any(1)
    ids, targets = ids[new], targets[new]
    if sample is not None:
        sessions = model.session_vectors(ids)
        if not new.any():
            return sessions.sum() * 0.0  # a zero that keeps the graph
        return sampled_cross_entropy(sessions, model.items, targets, sample.items, sample.log_expected, exclude=ids)
    scores = model.scores(ids).scatter(1, ids, float("-inf"))
    if not new.any():
        return scores.sum()  # a zero that keeps the graph
    return F.cross_entropy(scores, targets)


OBJECTIVES = {"all": cross_entropy_loss, "new": new_target_loss}


def load_for_finetune(path, data: SessionData) -> Checkpoint:
    """The checkpoint at ``path`` (repeat bonus included), refused unless its vocabulary and validation
    split are ``data``'s."""
    ckpt = load_checkpoint(path)
    check_vocabulary(ckpt, data, path, "trained model")
    check_same_split(ckpt, data, path)
    return ckpt


def finetune(ckpt: Checkpoint, data: SessionData, cfg: TrainConfig, *, objective: str = "new", source: str = "",
             progress: Progress = no_progress, log: Callable[[str], None] = print,
             save: Callable[[Checkpoint], None] | None = None) -> Checkpoint:
    """Train the model of ``ckpt`` with ``objective`` (``OBJECTIVES``), keep the epoch with the best
    validation HR@10 (without a bonus), fit the repeat bonus again if it had one, and return the new
    checkpoint. ``save`` gets the best checkpoint so far (without its bonus, ``"complete": false``)
    after every improving epoch, so a stopped run keeps it."""
    if objective not in OBJECTIVES:
        raise UsageError(f"unknown objective '{objective}' (use {' or '.join(OBJECTIVES)})")
    t0 = time.time()
    bonus_report = ckpt.provenance.get(REPEAT_KEY) if ckpt.config.get(REPEAT_KEY) else None
    base = without_repeat_bonus(ckpt)
    model = model_from_checkpoint(base, source or "checkpoint")
    max_len = model.encoder.cfg.max_len
    start_valid = evaluate_model(model, data.valid_samples, max_len=max_len, batch_size=cfg.eval_batch_size)
    log(f"start (without a repeat bonus): valid HR@10 {100 * start_valid['HR@10']:.2f} "
        f"NDCG@10 {100 * start_valid['NDCG@10']:.2f}")
    started_from = {"checkpoint": source, "checkpoint_sha256": file_sha256(source) if source else None,
                    "valid_metrics_without_bonus": start_valid, "test_metrics": ckpt.provenance.get("test_metrics")}

    def checkpoint(history: dict, complete: bool) -> Checkpoint:
        state = model.state_dict()
        if base.kind == "student" and not compressors.get(base.config.get("compressor", compressors.UNCOMPRESSED)).holds_full_table:
            check_no_full_table(state, model.num_items)
        run = {"objective": objective, "data_source": data.source, "data_sha256": data.data_sha256,
               "train": asdict(cfg), "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
               "history": history["history"], "wall_seconds": round(time.time() - t0, 1),
               "environment": environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "complete": complete}
        provenance = {k: v for k, v in base.provenance.items() if k != "test_metrics"}
        provenance.update({"finetune": run, "finetuned_from": started_from})
        return Checkpoint(base.kind, base.config, base.vocab, state, provenance)

    on_best = (lambda h: save(checkpoint(h, complete=False))) if save else None
    history = fit(model, data, cfg, OBJECTIVES[objective], progress=progress, log=log, on_best=on_best)
    if not parallel.world().main:  # data-parallel: rank 0 holds the selected state and writes it
        return None
    model.cpu().eval()
    best = history["history"][history["best_epoch"] - 1]["valid"] if history["best_epoch"] else {}
    if best and best["HR@10"] <= start_valid["HR@10"]:
        log(f"warning: fine-tuning did not raise validation HR@10 without a bonus "
            f"({100 * start_valid['HR@10']:.2f} -> {100 * best['HR@10']:.2f})")
    result = checkpoint(history, complete=True)
    if bonus_report is not None:
        report = fit_repeat_bonus(model, data.valid_samples, metric=bonus_report.get("metric", "NDCG@10"))
        log(f"repeat bonus fitted again: validation {report['metric']} {100 * report['before']:.2f} -> "
            f"{100 * report['after']:.2f} (before fine-tuning: {100 * bonus_report['after']:.2f})")
        result = with_repeat_bonus(result, model, report)
        valid = evaluate_model(model, data.valid_samples, max_len=max_len, batch_size=cfg.eval_batch_size)
        result.provenance["finetune"]["valid_metrics_with_bonus"] = valid
        log(f"with the bonus: valid HR@10 {100 * valid['HR@10']:.2f} NDCG@10 {100 * valid['NDCG@10']:.2f}")
    if data.test_samples:
        result.provenance["test_metrics"] = evaluate_model(model, data.test_samples, max_len=max_len)
    return result
