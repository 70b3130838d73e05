"""Learn compositional codes from a trained teacher's item table (EODRec, after Shu & Nakayama).

An encoder maps each teacher item vector x to M distributions over K codewords
(tanh → softplus → softmax); a Gumbel-softmax sample with a straight-through one-hot picks one
codeword per codebook, and the decoder is the codebooks themselves: x̂ = Σ_m E_m[c_m].
The loss is the reconstruction MSE (relative to the table's mean squared value) plus a
recommendation loss: the frozen teacher's session vectors for a sample of training prefixes,
scored against the reconstructed table, with cross-entropy on the true next item. Afterwards the
codes are frozen (argmax, no noise) and the codebooks refitted to them by least squares.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..compressors.codes import code_dtype
from ..data.sessions import SessionData, pad_batch
from ..models.recommender import SessionRecommender


@dataclass
class CodeLearningConfig:
    m: int  # codebooks and codewords: the codes compressor's options (compressors/codes.py) give the defaults
    k: int
    kmeans_iters: int = 15
    warmup_steps: int = 200  # code encoder imitates the k-means codes before Gumbel learning
    steps: int = 300  # full-table steps (every item, every step)
    lr: float = 1e-2
    tau: float = 0.3
    rec_weight: float = 0.1
    rec_pool: int = 4096  # training prefixes whose teacher session vectors drive the rec loss
    rec_batch: int = 512  # prefixes scored per step
    item_batch: int = 4096  # random items per step, besides those prefixes' targets
    balance_weight: float = 1.0  # weight of the codeword-usage penalty (see CodeLearner.forward)
    seed: int = 0
    device: str = "cpu"


class CodeLearner(nn.Module):
    def __init__(self, dim: int, m: int, k: int):
        super().__init__()
        self.m, self.k = m, k
        self.hidden = nn.Linear(dim, dim)
        self.logits = nn.Linear(dim, m * k)
        self.codebooks = nn.Parameter(torch.empty(m, k, dim))

    def code_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) → (n, M, K) logits; softmax over K gives the code distributions."""
        return F.softplus(self.logits(torch.tanh(self.hidden(x)))).view(-1, self.m, self.k)

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction through straight-through one-hot samples, and the codeword-usage penalty:
        log K minus the entropy of the batch's mean code distribution, averaged over codebooks
        (0 when the batch spreads evenly over all K codewords)."""
        logits = self.code_logits(x)
        onehot = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
        mean_p = logits.softmax(-1).mean(0)  # M × K
        imbalance = math.log(self.k) + (mean_p * mean_p.clamp(min=1e-12).log()).sum(-1).mean()
        return torch.einsum("nmk,mkd->nd", onehot, self.codebooks), imbalance

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.code_logits(chunk).argmax(-1) for chunk in x.split(8192)])


def compose(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """(n, M) codes, M×K×d codebooks → (n, d): the sum of each item's codewords."""
    idx = codes.long()
    return sum(codebooks[m][idx[:, m]] for m in range(codebooks.shape[0]))


def fit_codebooks(codes: torch.Tensor, table: torch.Tensor, k: int, ridge: float = 1e-3,
                  chunk: int = 65536) -> torch.Tensor:
    """Least-squares codebooks for fixed codes: min ‖A·E − table‖² + ridge·‖E‖², A the n×(M·K) one-hot
    matrix (built implicitly: AᵀA counts code pairs, Aᵀ·table sums item vectors per codeword), a chunk
    of items at a time so memory stays O(chunk·M² + (M·K)²) at any catalogue size."""
    n, m = codes.shape
    mk = m * k
    cols = codes.long() + torch.arange(m, device=codes.device) * k  # n × M column indices
    gram = torch.zeros(mk * mk, dtype=torch.float64, device=codes.device)
    rhs = torch.zeros(mk, table.shape[1], dtype=torch.float64, device=codes.device)
    for start in range(0, n, chunk):
        c = cols[start:start + chunk]
        gram += torch.bincount((c.unsqueeze(2) * mk + c.unsqueeze(1)).reshape(-1), minlength=mk * mk)
        rows = table[start:start + chunk].double()
        for j in range(m):
            rhs.index_add_(0, c[:, j], rows)
    gram = gram.view(mk, mk) + ridge * torch.eye(mk, dtype=torch.float64, device=codes.device)
    return torch.linalg.solve(gram, rhs).view(m, k, -1).to(table.dtype)


@torch.no_grad()
def kmeans(points: torch.Tensor, k: int, iters: int, gen: torch.Generator,
           weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from k random points (zero centroids when there are fewer points than k);
    returns (assignment of each point, k centroids). ``weights`` (one per point, > 0): each centroid is
    its points' weighted mean, so heavy points are fitted more closely."""
    centroids = points[torch.randperm(len(points), generator=gen, device=points.device)[:k]].clone()
    if len(centroids) < k:
        centroids = torch.cat([centroids, points.new_zeros(k - len(centroids), points.shape[1])])
    w = points.new_ones(len(points)) if weights is None else weights.to(points)
    for _ in range(iters):
        assign = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points * w[:, None])
        mass = torch.zeros(k, 1, dtype=points.dtype, device=points.device).index_add_(0, assign, w[:, None])
        centroids = torch.where(mass > 0, sums / mass.clamp(min=1e-12), centroids)
    return torch.cdist(points, centroids).argmin(1), centroids


@torch.no_grad()
def residual_kmeans(table: torch.Tensor, m: int, k: int, iters: int, gen_seed: int = 0):
    """Codebook m clusters what codebooks 1..m-1 left unexplained; returns (n×M codes, M×K×d books)."""
    gen = torch.Generator(device=table.device).manual_seed(gen_seed)
    residual, codes, books = table.clone(), [], []
    for _ in range(m):
        assign, centroids = kmeans(residual, k, iters, gen)
        residual = residual - centroids[assign]
        codes.append(assign)
        books.append(centroids)
    return torch.stack(codes, 1), torch.stack(books)


@torch.no_grad()
def teacher_session_pool(teacher: SessionRecommender, data: SessionData, size: int, seed: int,
                         device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Session vectors of the frozen teacher for a random sample of training prefixes, and targets."""
    samples = data.train_samples()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(samples), size=min(size, len(samples)), replace=False)
    chosen = [samples[i] for i in pick]
    was_training = teacher.training
    teacher.eval().to(device)
    vecs = []
    for start in range(0, len(chosen), 1024):
        chunk = chosen[start:start + 1024]
        ids = torch.from_numpy(pad_batch([p for p, _ in chunk], teacher.encoder.cfg.max_len)).to(device)
        vecs.append(teacher.session_vectors(ids))
    teacher.train(was_training)
    return torch.cat(vecs), torch.tensor([t for _, t in chosen], device=device)


def learn_codes(teacher: SessionRecommender, data: SessionData, cfg: CodeLearningConfig,
                log: Callable[[str], None] = print) -> dict:
    """Returns {"codes": (N+1)×M (smallest uint type), "codebooks": M×K×d, "report": {...}}."""
    device, t0 = cfg.device, time.time()
    torch.manual_seed(cfg.seed)
    table = teacher.items.table().detach().to(device)[1:]  # N×d, padding row excluded
    n, d = table.shape
    scale = table.pow(2).mean()
    sessions, targets = teacher_session_pool(teacher, data, cfg.rec_pool, cfg.seed, device)
    targets = targets - 1  # scores below are over items 1..N only

    learner = CodeLearner(d, cfg.m, cfg.k).to(device)
    km_codes, km_books = residual_kmeans(table, cfg.m, cfg.k, cfg.kmeans_iters, gen_seed=cfg.seed)
    with torch.no_grad():  # Gumbel learning from random codebooks is slow to leave the mean: start at k-means
        learner.codebooks.copy_(km_books)
        km_mse = ((compose(km_codes, km_books) - table).pow(2).mean() / scale).item()
        km_ce = pool_cross_entropy(sessions, compose(km_codes, km_books), targets)
    log(f"residual k-means start: relative mse {km_mse:.4f}, pool CE {km_ce:.3f}")
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    for _ in range(cfg.warmup_steps):  # teach the code encoder the k-means assignment first
        rows = torch.randint(0, n, (min(cfg.item_batch, n),), generator=gen, device=device)
        loss = F.cross_entropy(learner.code_logits(table[rows]).reshape(-1, cfg.k), km_codes[rows].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    agree = (learner.codes(table) == km_codes).float().mean().item()
    log(f"code encoder warm-up: {100 * agree:.1f}% of k-means code entries reproduced")
    history = []
    for step in range(1, cfg.steps + 1):
        # Each step sees the targets of a batch of teacher sessions plus random items; the rec loss is a
        # softmax over exactly those items (a sampled softmax: the full table per step is too slow on CPU).
        pick = torch.randint(0, len(targets), (min(cfg.rec_batch, len(targets)),), generator=gen, device=device)
        extra = torch.randint(0, n, (min(cfg.item_batch, n),), generator=gen, device=device)
        items = torch.unique(torch.cat([targets[pick], extra]))
        recon, imbalance = learner(table[items], cfg.tau)
        mse = (recon - table[items]).pow(2).mean() / scale
        rec = F.cross_entropy(sessions[pick] @ recon.t(), torch.searchsorted(items, targets[pick]))
        loss = mse + cfg.rec_weight * rec + cfg.balance_weight * imbalance
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
            history.append({"step": step, "mse": mse.item(), "rec": rec.item()})
            log(f"codes step {step}/{cfg.steps}: relative mse {mse.item():.4f}, sampled rec CE {rec.item():.3f}")

    codes = learner.codes(table)
    # The least-squares system has M·K unknowns per dimension; beyond a few thousand keep the learned books.
    codebooks = fit_codebooks(codes, table, cfg.k) if cfg.m * cfg.k <= 8192 else learner.codebooks.detach()
    with torch.no_grad():
        final_mse = ((compose(codes, codebooks) - table).pow(2).mean() / scale).item()
        ref_ce = pool_cross_entropy(sessions, table, targets)
        final_ce = pool_cross_entropy(sessions, compose(codes, codebooks), targets)
    full = torch.zeros(n + 1, cfg.m, dtype=code_dtype(cfg.k))
    full[1:] = codes.cpu().to(full.dtype)
    report = {"config": asdict(cfg), "seconds": round(time.time() - t0, 1), "history": history,
              "kmeans_relative_mse": km_mse, "kmeans_pool_ce": km_ce, "final_relative_mse": final_mse,
              "pool_ce_teacher": ref_ce, "pool_ce_codes": final_ce,
              "usage": code_usage(full[1:], cfg.k)}
    log(f"codes: relative mse {final_mse:.4f}, pool CE {final_ce:.3f} (teacher table {ref_ce:.3f}), "
        f"usage {report['usage']}")
    return {"codes": full, "codebooks": codebooks.detach().cpu().float(), "report": report}


def pool_cross_entropy(sessions: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy of the pool's targets over all items, a few sessions at a time (at 1M items a
    whole pool's scores would take 16 GB)."""
    rows = max(1, (1 << 26) // max(len(table), 1))  # about 256 MB of scores per chunk
    total = sum(F.cross_entropy(s @ table.t(), t, reduction="sum").item()
                for s, t in zip(sessions.split(rows), targets.split(rows)))
    return total / max(len(targets), 1)


def code_usage(codes: torch.Tensor, k: int) -> dict:
    """How many of the K codewords each codebook uses, and how many items share an identical code."""
    codes = codes.long().cpu()
    used = [int(codes[:, m].unique().numel()) for m in range(codes.shape[1])]
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    shared = int((counts[inverse] > 1).sum())
    return {"codewords_used": used, "k": k, "distinct_codes": int(counts.numel()),
            "items": int(codes.shape[0]), "items_sharing_a_code": shared}
