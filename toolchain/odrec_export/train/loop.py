"""Teacher training: cross-entropy (full softmax, or sampled: ``sampled.py``), validation-based model
selection.

The test set is never looked at while training: the best epoch is chosen on the validation
samples carved from the training sessions, and the test metrics are computed once at the end.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import compressors
from ..checkpoint import Checkpoint
from ..data.sessions import SessionData, pad_batch
from ..errors import UsageError
from ..models.encoder import EncoderConfig
from ..models.recommender import SessionRecommender
from ..models.registry import build_model
from . import parallel
from .evaluate import evaluate_model
from .sampled import Negatives, NegativeSampler, check_loss, sampled_cross_entropy

Progress = Callable[[Iterable, int, str], Iterable]


def no_progress(it: Iterable, total: int, label: str) -> Iterable:
    return it


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 2  # epochs without validation HR@10 gain before stopping
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 512
    max_batches: int | None = None  # per epoch: a random subset of this many batches (None: all)
    lr_schedule: str = "constant"  # or "cosine": falls to 0 over the planned epochs × batches
    loss: str = "full"  # or "sampled": softmax over the target and `negatives` shared items (sampled.py)
    negatives: int = 1024
    in_batch: bool = False  # sampled: the batch's targets join the drawn negatives
    length_buckets: int = 0  # sort the prefixes of every this many batches by length (less padding); 0: off
    time_limit: float | None = None  # seconds of training: the epoch then running ends early, is validated, and is the last


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, done: float) -> float:
    """The learning rate's multiplier once ``done`` (0..1) of the planned training steps have run."""
    if schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown learning-rate schedule '{schedule}' (use {' or '.join(LR_SCHEDULES)})")
    return 0.5 * (1 + math.cos(math.pi * min(done, 1.0))) if schedule == "cosine" else 1.0


def schedule_lr(opt: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for group, lr in zip(opt.param_groups, base_lrs):
        group["lr"] = lr * factor


def resolve_device(name: str) -> str:
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device '{name}' (use cpu or cuda)")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return name


class SampleBatches:
    """Training prefixes, padded once, served as shuffled mini-batches."""

    def __init__(self, data: SessionData, max_len: int):
        samples = data.train_samples()
        self.ids = torch.from_numpy(pad_batch([p for p, _ in samples], max_len))
        self.targets = torch.tensor([t for _, t in samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def count(self, batch_size: int, limit: int | None = None) -> int:
        n = (len(self) + batch_size - 1) // batch_size
        return n if limit is None else min(n, limit)

    def batches(self, batch_size: int, generator: torch.Generator, limit: int | None = None, buckets: int = 0):
        """Shuffled batches. With ``buckets``, the prefixes of every ``buckets`` batches are sorted by
        length before they are cut into batches, and those batches are shuffled: a batch then holds
        prefixes of similar length, so trimming its padding leaves far less (Tmall: 31.6 slots a batch
        for prefixes of 6.3 clicks on average), and the encoder does that much less work."""
        order = torch.randperm(len(self), generator=generator)[:self.count(batch_size, limit) * batch_size]
        if buckets > 0:
            lengths = (self.ids[order] != 0).sum(1)
            chunk = buckets * batch_size
            for start in range(0, len(order), chunk):
                part = order[start:start + chunk]
                order[start:start + chunk] = part[torch.argsort(lengths[start:start + chunk], stable=True)]
        starts = torch.arange(0, len(order), batch_size)
        if buckets > 0:
            starts = starts[torch.randperm(len(starts), generator=generator)]
        for start in starts.tolist():
            idx = order[start:start + batch_size]
            yield trim_padding(self.ids[idx]), self.targets[idx]


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Drop the left-padding columns no session in the batch uses. Positions count back from the most
    recent item, so the result is unchanged; most sessions are short and this saves most encoder work."""
    used = (ids != 0).any(0).nonzero()
    return ids[:, int(used[0]):] if len(used) else ids[:, -1:]


class BestEpoch:
    """Model selection on validation HR@10: keeps the best epoch's weights and counts the epochs
    without gain. Without validation samples every epoch counts as a gain (the last one is kept)."""

    def __init__(self, patience: int):
        self.patience, self.score, self.epoch, self.state, self.stale = patience, float("-inf"), 0, None, 0

    def update(self, model: torch.nn.Module, epoch: int, valid: dict) -> bool:
        score = valid.get("HR@10", float("inf"))
        if score > self.score or not valid:
            self.score, self.epoch, self.stale = score, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
            return True
        self.stale += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.stale >= self.patience


class Optimiser:
    """Adam for dense parameters, plus SparseAdam for an item table's rows when a sampled loss gives it
    sparse gradients: a step then updates the rows it touched, not all N. ``groups``: Adam parameter
    groups (``params``, ``lr``), a group with ``"sparse": True`` goes to SparseAdam."""

    def __init__(self, groups: list[dict], weight_decay: float = 0.0):
        dense = [{k: v for k, v in g.items() if k != "sparse"} for g in groups if not g.get("sparse")]
        sparse = [{k: v for k, v in g.items() if k != "sparse"} for g in groups if g.get("sparse")]
        self.parts = [torch.optim.Adam(dense, weight_decay=weight_decay)]
        if sparse:
            if weight_decay:
                raise UsageError("--weight-decay applies to dense updates only; the sampled loss updates the "
                                 "item table sparsely (use --loss full with weight decay)")
            self.parts.append(torch.optim.SparseAdam(sparse))

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.parts for g in opt.param_groups]

    def zero_grad(self) -> None:
        for opt in self.parts:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.parts:
            opt.step()


def param_groups(model: SessionRecommender, lr: float, loss: str) -> list[dict]:
    """The model's trainable parameters at ``lr``; under a sampled loss, the item table's rows (when
    it supports sparse gradients) in a sparse group of their own."""
    sparse = []
    if loss == "sampled" and hasattr(model.items, "sparse_parameters"):
        model.items.sparse = True
        sparse = model.items.sparse_parameters()
    ids = {id(p) for p in sparse}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in ids], "lr": lr}]
    return groups + ([{"params": sparse, "lr": lr, "sparse": True}] if sparse else [])


def environment() -> dict:
    return {"torch": str(torch.__version__), "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": torch.get_num_threads()}


def fit(model: SessionRecommender, data: SessionData, cfg: TrainConfig, step_loss, *,
        progress: Progress = no_progress, log: Callable[[str], None] = print,
        on_best: Callable[[dict], None] | None = None, keep_start: bool = False) -> dict:
    """Train ``model`` with ``step_loss(model, ids, targets, sample) -> loss`` (``sample``: the step's
    shared negatives under ``cfg.loss == "sampled"``, else None); see ``run_epochs``."""
    return run_epochs(model, data, cfg, StepLoss(model, step_loss), param_groups(model, cfg.lr, cfg.loss),
                      progress=progress, log=log, on_best=on_best, keep_start=keep_start)


def run_epochs(model: SessionRecommender, data: SessionData, cfg: TrainConfig, step: nn.Module,
               groups: list[dict], *, progress: Progress = no_progress, log: Callable[[str], None] = print,
               on_best: Callable[[dict], None] | None = None, label: str = "epoch",
               before_step: Callable[[float], None] | None = None, extra: Callable[[], dict] | None = None,
               keep_start: bool = False) -> dict:
    """The training loop every mode shares: batches (sharded over processes under torchrun), shared
    negatives, the learning-rate schedule, validation of ``model`` and selection of its best epoch.

    ``step(ids, targets, sample)`` returns the loss, or (loss, {part: float}) to log; it runs under
    DistributedDataParallel when several processes train. ``groups``: the optimiser's parameter groups
    (``Optimiser``). ``before_step(done)`` runs before each step with the share of steps done;
    ``extra()`` adds fields to each epoch's history. ``on_best(history)`` runs after every epoch that
    improves validation HR@10 (the model then holds that epoch's weights), on the main process only,
    so a long run can save as it goes and be stopped at any time. ``keep_start`` (a run continued from
    a checkpoint): the starting weights compete too, as epoch 0, so a continuation that validates worse
    than its start returns the start. Returns the training history.
    """
    device = resolve_device(cfg.device)
    world = parallel.world()
    torch.manual_seed(cfg.seed + world.rank)  # dropout differs by process; batches and negatives below do not
    batches = SampleBatches(data, model.encoder.cfg.max_len)
    check_loss(cfg.loss, cfg.negatives, model.items)
    opt = Optimiser(groups, cfg.weight_decay)
    step = world.wrap(step.to(device))
    sampler = (NegativeSampler(data.item_counts(), cfg.negatives, cfg.seed, cfg.batch_size if cfg.in_batch else 0)
               if cfg.loss == "sampled" else None)
    gen = torch.Generator().manual_seed(cfg.seed)
    history, selection = [], BestEpoch(cfg.patience)
    n_batches = batches.count(cfg.batch_size, cfg.max_batches)
    base_lrs = [g["lr"] for g in opt.param_groups]
    if keep_start and data.valid_samples and world.main:
        start = evaluate_model(model, data.valid_samples, max_len=model.encoder.cfg.max_len,
                               batch_size=cfg.eval_batch_size, device=device)
        selection.update(model, 0, start)
        selection.stale = 0
        log(f"start: valid HR@10 {100 * start['HR@10']:.2f} NDCG@10 {100 * start['NDCG@10']:.2f} "
            "(an epoch must beat it to be kept)")
    t_run, out_of_time = time.time(), False
    for epoch in range(1, cfg.epochs + 1):
        step.train()
        t0, sums, seen = time.time(), {}, 0
        epoch_batches = batches.batches(cfg.batch_size, gen, cfg.max_batches, cfg.length_buckets)
        if world.main:
            epoch_batches = progress(epoch_batches, n_batches, f"{label} {epoch}")
        warm = min(n_batches - 1, max(1, n_batches // 20))  # steps/s leaves out one-time start-up costs
        for i, (ids, targets) in enumerate(epoch_batches):
            if i == warm:
                t_warm = time.time()
            done = ((epoch - 1) * n_batches + i) / (cfg.epochs * n_batches)
            schedule_lr(opt, base_lrs, lr_factor(cfg.lr_schedule, done))
            if before_step is not None:
                before_step(done)
            sample = Negatives(sampler.draw(targets).to(device), sampler.log_expected) if sampler else None
            ids, targets = trim_padding(world.shard(ids)).to(device), world.shard(targets).to(device)
            out = step(ids, targets, sample)
            loss, parts = out if isinstance(out, tuple) else (out, {"loss": out.item()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            for key, v in parts.items():
                sums[key] = sums.get(key, 0.0) + v * len(targets)
            seen += len(targets)
            if cfg.time_limit is not None:
                out_of_time = world.decide(time.time() - t_run >= cfg.time_limit)
                if out_of_time:
                    break
        t_end = time.time()
        train_seconds = t_end - t0
        totals = world.sum([*sums.values(), seen]).tolist()  # over every process's rows
        means = {key: v / max(totals[-1], 1) for key, v in zip(sums, totals)}
        val = (evaluate_model(model, data.valid_samples, max_len=model.encoder.cfg.max_len,
                              batch_size=cfg.eval_batch_size, device=device)
               if data.valid_samples and world.main else {})
        steps_per_s = ((i + 1 - warm) / max(t_end - t_warm, 1e-9) if n_batches > 1 and i > warm
                       else (i + 1) / train_seconds)
        history.append({"epoch": epoch, **(extra() if extra else {}), "losses": means,
                        "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0, "train_seconds": train_seconds,
                        "steps_per_second": steps_per_s, "processes": world.size, "valid": val})
        log(f"{label} {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
            + (f"; valid HR@10 {100 * val['HR@10']:.2f} NDCG@10 {100 * val['NDCG@10']:.2f}" if val else "")
            + f" ({time.time() - t0:.0f}s, {steps_per_s:.2f} steps/s"
            + (f" on {world.size} processes)" if world.size > 1 else ")"))
        improved = selection.update(model, epoch, val) if world.main else False
        improved, stop = world.decide((improved, selection.exhausted))
        if improved and on_best is not None and world.main:
            on_best({"epochs_run": len(history), "best_epoch": epoch, "history": history})
        if out_of_time:
            log(f"time limit: {cfg.time_limit:.0f}s of training reached after {i + 1} of {n_batches} batches of "
                f"{label} {epoch}; stopping")
            break
        if not improved and stop:
            log(f"early stop: no validation gain for {cfg.patience} epochs")
            break
    if world.main:
        model.load_state_dict(selection.state)
        if keep_start and selection.epoch == 0 and history:
            log("no epoch beat the starting checkpoint on validation HR@10: keeping the start")
    world.share_state(model)  # every process continues (a student after its teacher) from the selected state
    if hasattr(model.items, "sparse_parameters"):
        model.items.sparse = False
    return {"epochs_run": len(history), "best_epoch": world.decide(selection.epoch), "history": history}


class StepLoss(nn.Module):
    """A loss function of (model, ids, targets, sample) as a module, so DistributedDataParallel can hook it."""

    def __init__(self, model: nn.Module, step_loss):
        super().__init__()
        self.model, self.step_loss = model, step_loss

    def forward(self, ids: torch.Tensor, targets: torch.Tensor, sample):
        return self.step_loss(self.model, ids, targets, sample)


def cross_entropy_loss(model: SessionRecommender, ids: torch.Tensor, targets: torch.Tensor,
                       sample: Negatives | None = None) -> torch.Tensor:
    """Next-item cross-entropy: over all items, or sampled against ``sample``'s shared negatives."""
    if sample is None:
        return F.cross_entropy(model.scores(ids), targets)
    return sampled_cross_entropy(model.session_vectors(ids), model.items, targets, sample.items, sample.log_expected)


def train_teacher(data: SessionData, enc: dict, cfg: TrainConfig, *, progress: Progress = no_progress,
                  log: Callable[[str], None] = print,
                  save: Callable[[Checkpoint], None] | None = None,
                  init: tuple[SessionRecommender, dict] | None = None) -> tuple[SessionRecommender, Checkpoint | None]:
    """Train the uncompressed SASRec teacher; returns the model and its final checkpoint (None on the
    processes other than rank 0 of a data-parallel run).

    With ``save``, the best checkpoint so far is also handed to it after every improving epoch
    (provenance marked ``"complete": false``) and the final one at the end. ``init`` (a teacher
    and its provenance, from ``loading.load_teacher``) continues training from its weights and
    architecture instead of a fresh model; ``enc`` is then ignored.
    """
    torch.manual_seed(cfg.seed)
    if init is not None:
        model, init_info = init
        model_config = {"encoder": model.encoder.cfg.to_dict(), "compressor": compressors.UNCOMPRESSED, "items": {}}
    else:
        model_config = {"encoder": EncoderConfig(num_items=data.num_items, **enc).to_dict(),
                        "compressor": compressors.UNCOMPRESSED, "items": {}}
        model, init_info = build_model(model_config), None
    t0 = time.time()

    def checkpoint(history: dict, complete: bool) -> Checkpoint:
        provenance = {**training_provenance(data, cfg, history, time.time() - t0), "complete": complete}
        if init_info is not None:
            provenance["initialised_from"] = init_info
        if complete and data.test_samples:
            provenance["test_metrics"] = evaluate_model(model, data.test_samples,
                                                        max_len=model.encoder.cfg.max_len, device=cfg.device)
        return Checkpoint("teacher", model_config, list(data.vocab.raw_ids), model.state_dict(), provenance)

    on_best = (lambda history: save(checkpoint(history, complete=False))) if save else None
    history = fit(model, data, cfg, cross_entropy_loss, progress=progress, log=log, on_best=on_best,
                  keep_start=init is not None)
    if not parallel.world().main:  # data-parallel: rank 0 holds the selected state and writes it
        return model, None
    final = checkpoint(history, complete=True)
    model.cpu().eval()
    if save:
        save(final)
    return model, final


def training_provenance(data: SessionData, cfg: TrainConfig, history: dict, wall: float) -> dict:
    return {"data_source": data.source, "data_sha256": data.data_sha256, "data_report": data.report,
            "popular_items": data.popular_items(), "train": asdict(cfg), "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "history": history["history"], "wall_seconds": round(wall, 1), "environment": environment(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
