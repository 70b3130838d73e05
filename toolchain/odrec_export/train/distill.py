"""Self-supervised knowledge distillation of a compact student from a trained teacher.

The student starts from the teacher's encoder weights and an item representation fitted to the
teacher's table: learned codes (``codes``), tensor-train cores (``tt``, ``stt``), CpRec blocks
(``cprec``) or a plain copy (``none``). Per batch of training prefixes, with hot items = the top
20% by training frequency:

    L = L_rec + μ·L_mse + β·L_con + γ·L_soft + δ·L_pred

* L_rec: the student's cross-entropy over all items, scored with its compressed table only;
* L_mse: the student's item vectors vs the teacher's (relative mean squared error; the paper's
  weight μ is 1);
* L_con: each session splits into a hot and a cold sub-session, each read out by both models;
  recombined views z_stu = proj([s_hot^stu; s_cold^tea]) and z_tea = proj([s_hot^tea; s_cold^stu])
  of the same session are positives in an InfoNCE (cosine, τ=0.2, in-batch negatives);
* L_soft: KL(teacher ‖ student) over all items;
* L_pred (OD-Rec's predictive task): the recombined z_stu predicts the next item.

Two recipes (``KD_RECIPES``), selected per compressor and overridable option by option:

* ``eodrec`` (codes): embedding mix-up — during training the student's *input* item vectors are
  e' = η·x_teacher + (1−η)·e_student, η decaying linearly to 0 over the first half of the steps
  (``eta_decay``), so the second half trains on exactly what is evaluated — and a *bidirectional*
  teacher, also trained from the student: its own cross-entropy plus γ·KL(student ‖ teacher) and the
  (symmetric) contrastive term. δ = 0.
* ``odrec`` (tt, stt, cprec, none): teacher frozen (eval mode), no mix-up, δ > 0.

Scoring always uses the student's own table, and validation (model selection) and test evaluation
see the student alone. The teacher's item table is never written into the student's checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import compressors
from ..checkpoint import Checkpoint, check_no_full_table
from ..compressors.base import ItemTable
from ..data.sessions import SessionData
from ..errors import UsageError
from ..models.encoder import EncoderConfig, SessionEncoder
from ..models.recommender import SessionRecommender
from . import parallel
from .evaluate import evaluate_model
from .loading import StudentStart
from .loop import Progress, TrainConfig, environment, no_progress, param_groups, run_epochs
from .sampled import Negatives, candidate_log_probs, candidates, sampled_cross_entropy


@dataclass
class DistillConfig:
    beta: float = 0.01  # contrastive weight (paper: Tmall 0.01, RetailRocket 0.5)
    gamma: float = 0.3  # soft-target weight
    mse: float = 1.0  # μ: weight of the student-vs-teacher item-vector matching (paper: 1)
    eta: float = 0.7  # initial mix-up share of the teacher's item vectors (decays to 0)
    eta_decay: float = 0.5  # share of the training steps over which η falls linearly to 0
    tau: float = 0.2  # InfoNCE temperature
    hot_fraction: float = 0.2
    bidirectional: bool = True
    predictive: float = 0.0  # δ: OD-Rec's predictive task on the recombined view
    teacher_lr: float | None = None  # bidirectional: the teacher's learning rate (None: the student's)


KD_RECIPES = {
    "eodrec": {"eta": 0.7, "bidirectional": True, "predictive": 0.0},
    "odrec": {"eta": 0.0, "bidirectional": False, "predictive": 0.5},
}


def distill_config(compressor: str, recipe: str | None = None, **overrides) -> DistillConfig:
    """The recipe's settings (default: the compressor's paper's) with the given non-None overrides."""
    name = recipe or compressors.get(compressor).kd_recipe
    if name not in KD_RECIPES:
        raise UsageError(f"unknown KD recipe '{name}' (use {' or '.join(KD_RECIPES)})")
    return DistillConfig(**{**KD_RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}})


def build_student(teacher: SessionRecommender, items: ItemTable, compressor: str) -> tuple[SessionRecommender, dict]:
    """A student of the given item table and the teacher's encoder weights; returns (model, model config)."""
    config = {"encoder": teacher.encoder.cfg.to_dict(), "compressor": compressor, "items": items.config()}
    student = SessionRecommender(items, SessionEncoder(EncoderConfig(**config["encoder"])))
    student.encoder.load_state_dict(teacher.encoder.state_dict())
    return student, config


def hot_items(data: SessionData, fraction: float) -> torch.Tensor:
    """Boolean mask over indices 0..N: the top ``fraction`` of items by training clicks."""
    counts = data.item_counts()
    n_hot = max(1, int(round(fraction * data.num_items)))
    order = np.argsort(-counts[1:], kind="stable")[:n_hot] + 1
    mask = torch.zeros(data.num_items + 1, dtype=torch.bool)
    mask[torch.from_numpy(order)] = True
    return mask


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE with cosine similarity: row i of a and row i of b are the positives."""
    logits = F.normalize(a, dim=1, eps=1e-8) @ F.normalize(b, dim=1, eps=1e-8).t() / tau
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) from log-probabilities, summed over items, mean over the batch."""
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


class Distiller(nn.Module):
    """Holds teacher, student and the recombination projection; ``forward`` is one training step's loss."""

    def __init__(self, teacher: SessionRecommender, student: SessionRecommender, hot: torch.Tensor,
                 cfg: DistillConfig):
        super().__init__()
        self.teacher, self.student, self.cfg = teacher, student, cfg
        d = student.encoder.cfg.dim
        self.proj = nn.Linear(2 * d, d)
        self.register_buffer("hot", hot)
        self.eta = cfg.eta

    def forward(self, ids: torch.Tensor, targets: torch.Tensor,
                sample: Negatives | None = None) -> tuple[torch.Tensor, dict]:
        """The step's loss over all items, or with ``sample``'s shared negatives: sampled cross-entropies,
        and the soft targets and item-vector matching on the candidate set (targets + negatives)."""
        cfg, t, s = self.cfg, self.teacher, self.student
        hot_ids = ids * self.hot[ids]
        cold_ids = ids * ~self.hot[ids]
        cands = candidates(targets, sample.items) if sample is not None else None
        with torch.set_grad_enabled(cfg.bidirectional and torch.is_grad_enabled()):
            t_sess = t.encoder(t.items.lookup(ids), ids)
            t_hot, t_cold = t.session_vectors(hot_ids), t.session_vectors(cold_ids)
            if sample is None:
                t_table = t.items.table()
                t_logp = t.items.log_probs(t_sess, t_table)
            else:
                t_logp = candidate_log_probs(t_sess, t.items, cands)

        def s_encode(sub_ids):  # mix-up of the input vectors only; the teacher side is a fixed target
            vectors = s.items.lookup(sub_ids)
            if self.eta > 0:
                vectors = self.eta * t.items.lookup(sub_ids).detach() + (1 - self.eta) * vectors
            return s.encoder(vectors, sub_ids)

        s_sess, s_hot, s_cold = s_encode(ids), s_encode(hot_ids), s_encode(cold_ids)
        if sample is None:
            s_table = s.items.table()  # built once per step from the student's compressed form
            s_logp = s.items.log_probs(s_sess, s_table)
            l_rec = F.nll_loss(s_logp, targets - 1)
            mine, ref = s_table[1:], t_table[1:].detach()
        else:  # only the vectors of the items this step touches
            s_logp = candidate_log_probs(s_sess, s.items, cands)
            l_rec = sampled_cross_entropy(s_sess, s.items, targets, sample.items, sample.log_expected)
            mine, ref = s.items.lookup(cands), t.items.lookup(cands).detach()
        l_mse = (mine - ref).pow(2).mean() / ref.pow(2).mean()
        z_s = self.proj(torch.cat([s_hot, t_cold], 1))
        l_con = info_nce(z_s, self.proj(torch.cat([t_hot, s_cold], 1)), cfg.tau)
        l_soft = kl(t_logp.detach(), s_logp)
        total = l_rec + cfg.mse * l_mse + cfg.beta * l_con + cfg.gamma * l_soft
        parts = {"rec": l_rec.item(), "mse": l_mse.item(), "con": l_con.item(), "soft": l_soft.item()}
        if cfg.predictive:
            l_pred = (F.nll_loss(s.items.log_probs(z_s, s_table), targets - 1) if sample is None else
                      sampled_cross_entropy(z_s, s.items, targets, sample.items, sample.log_expected))
            total = total + cfg.predictive * l_pred
            parts["pred"] = l_pred.item()
        if cfg.bidirectional:
            t_rec = (F.nll_loss(t_logp, targets - 1) if sample is None else
                     sampled_cross_entropy(t_sess, t.items, targets, sample.items, sample.log_expected))
            t_soft = kl(s_logp.detach(), t_logp)
            total = total + t_rec + cfg.gamma * t_soft
            parts.update({"teacher_rec": t_rec.item(), "teacher_soft": t_soft.item()})
        return total, parts


def distill(teacher: SessionRecommender, student: SessionRecommender, data: SessionData,
            train_cfg: TrainConfig, cfg: DistillConfig, *, progress: Progress = no_progress,
            log: Callable[[str], None] = print, on_best: Callable[[dict], None] | None = None,
            keep_start: bool = False) -> dict:
    """Train the student (and, when bidirectional, the teacher); keeps the student state with the best
    validation HR@10 (codes only). Returns the history. ``on_best(history)`` runs after every epoch that
    improves it (the student then holds that epoch's weights), so a long run can save as it goes."""
    torch.manual_seed(train_cfg.seed)
    distiller = Distiller(teacher, student, hot_items(data, cfg.hot_fraction), cfg)
    groups = param_groups(student, train_cfg.lr, train_cfg.loss)
    groups[0]["params"] += list(distiller.proj.parameters())
    if cfg.bidirectional:
        groups += param_groups(teacher, train_cfg.lr if cfg.teacher_lr is None else cfg.teacher_lr, train_cfg.loss)
    else:
        for p in teacher.parameters():
            p.requires_grad_(False)

    def before_step(done: float) -> None:
        # η falls linearly to 0 after eta_decay of the steps; the rest trains on exactly what is evaluated
        distiller.eta = cfg.eta * max(0.0, 1 - done / max(cfg.eta_decay, 1e-9))
        teacher.train(cfg.bidirectional)

    history = run_epochs(student, data, train_cfg, distiller, groups, progress=progress, log=log, on_best=on_best,
                         label="distil", before_step=before_step, extra=lambda: {"eta": distiller.eta},
                         keep_start=keep_start)
    if hasattr(teacher.items, "sparse_parameters"):  # run_epochs resets the student's table itself
        teacher.items.sparse = False
    student.cpu().eval()
    teacher.cpu().eval()
    return history


def item_bytes(items: ItemTable) -> dict:
    """The item representation as stored (every parameter and buffer of the item table) against the
    fp32 N×d table; for codes also the paper's parameter ratio |V|·d / (M·K·d + M·|V|)."""
    tensors = dict(items.named_parameters())
    tensors.update(items.named_buffers())
    parts = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    stored = sum(parts.values())
    n, d = items.num_items, items.dim
    full = n * d * 4
    out = {"parts_bytes": parts, "stored_bytes": stored, "fp32_table_bytes": full, "ratio_bytes": full / stored}
    return {**out, **items.bytes_report(parts)}


def student_checkpoint(student: SessionRecommender, config: dict, data: SessionData, teacher_info: dict,
                       fit_report: dict, train_cfg: TrainConfig, cfg: DistillConfig, history: dict,
                       wall: float, complete: bool = True, init_info: dict | None = None) -> Checkpoint:
    """The student's checkpoint; ``complete=False`` marks a best-so-far state saved mid-run (no test
    metrics, which cost an evaluation per save). ``init_info``: the student checkpoint it continued."""
    state = student.state_dict()
    compressor = compressors.get(config["compressor"])
    if not compressor.holds_full_table:  # the uncompressed student holds its N×d table by design
        check_no_full_table(state, student.num_items)
    provenance = {"data_source": data.source, "data_sha256": data.data_sha256, "data_report": data.report,
                  "popular_items": data.popular_items(), "teacher": teacher_info, compressor.fit_record: fit_report, "train": asdict(train_cfg),
                  "distill": asdict(cfg), "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
                  "history": history["history"], "wall_seconds": round(wall, 1), "item_bytes": item_bytes(student.items),
                  "environment": environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "complete": complete}
    if init_info is not None:
        provenance["initialised_from"] = init_info
    if complete and data.test_samples:
        provenance["test_metrics"] = evaluate_model(student, data.test_samples, max_len=student.encoder.cfg.max_len)
    return Checkpoint("student", config, list(data.vocab.raw_ids), state, provenance)


def make_student(teacher: SessionRecommender, data: SessionData, compressor: str, options: dict,
                 train_cfg: TrainConfig | None = None, log: Callable[[str], None] = print
                 ) -> tuple[SessionRecommender, dict, dict]:
    """A student with the teacher's encoder and an item representation fitted to the teacher's table
    (``Compressor.fit``: learned codes, SVD fits, a copy, ...). ``options``: the compressor's options
    (``Compressor.options``; absent or None: its defaults). Returns (model, model config, fitting report)."""
    spec = compressors.get(compressor)
    train_cfg = train_cfg or TrainConfig()
    try:
        items, report = spec.fit(teacher, data, spec.items_config(options), options, log=log, seed=train_cfg.seed,
                                 device=train_cfg.device)
    except ValueError as e:  # settings the table cannot take (a rank that is no multiple of t, ...)
        raise UsageError(f"compressor {compressor}: {e}") from None
    student, config = build_student(teacher, items, compressor)
    log(f"{compressor} item table fitted to the teacher's: {report}")
    return student, config, report


def train_student(data: SessionData, teacher: SessionRecommender, teacher_info: dict, options: dict | None,
                  train_cfg: TrainConfig, cfg: DistillConfig, *, compressor: str = "codes",
                  progress: Progress = no_progress,
                  log: Callable[[str], None] = print,
                  save: Callable[[Checkpoint], None] | None = None,
                  init: StudentStart | None = None) -> tuple[SessionRecommender, Checkpoint]:
    """Fit the student's item representation to the teacher, distil, and return the student with its
    checkpoint (not yet saved). ``options``: the compressor's options (``Compressor.options``; absent or
    None: its defaults). ``train_cfg.epochs == 0`` stops after the fit (no distillation). ``init`` (from ``load_student``) continues distilling an existing student instead: no fit, its
    codes / representation, codebooks and encoder are the starting point.

    ``teacher_info`` is the teacher's provenance to record (checkpoint hash, data hash, metrics).
    With ``save``, the best student so far is handed to it after every improving distillation epoch
    (provenance ``"complete": false``), so a stopped run keeps its best epoch.
    """
    if teacher.num_items != data.num_items:
        raise UsageError(f"teacher knows {teacher.num_items} items, the data {data.num_items}")
    t0 = time.time()
    if init is not None:
        if init.model.items.dim != teacher.items.dim:
            raise UsageError(f"the student to continue has d={init.model.items.dim}, the teacher d={teacher.items.dim}")
        student, config, fit_report, init_info = init.model, init.config, init.fit_report, init.info
    else:
        student, config, fit_report = make_student(teacher, data, compressor, options or {}, train_cfg, log=log)
        init_info = None
    if train_cfg.epochs > 0:
        on_best = (lambda h: save(student_checkpoint(student, config, data, teacher_info, fit_report, train_cfg,
                                                     cfg, h, time.time() - t0, complete=False,
                                                     init_info=init_info))) if save else None
        history = distill(teacher, student, data, train_cfg, cfg, progress=progress, log=log, on_best=on_best,
                          keep_start=init is not None)
        if not parallel.world().main:  # data-parallel: rank 0 holds the selected student and writes it
            return student, None
    else:
        log("--epochs 0: no distillation, the student is the fitted representation + the teacher's encoder")
        history = {"epochs_run": 0, "best_epoch": 0, "history": []}
        student.eval()
    teacher_info = dict(teacher_info)
    if train_cfg.epochs > 0 and cfg.bidirectional and data.test_samples:  # the teacher changed: record it
        teacher_info["test_metrics_after_distill"] = evaluate_model(teacher, data.test_samples,
                                                                    max_len=teacher.encoder.cfg.max_len)
    ckpt = student_checkpoint(student, config, data, teacher_info, fit_report, train_cfg, cfg,
                              history, time.time() - t0, init_info=init_info)
    return student, ckpt
