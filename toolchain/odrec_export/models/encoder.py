"""The SASRec session encoder of the EODRec paper, shared by teacher and students.

Item vectors come from outside (an item table); this module adds learned positions, runs one or
more post-LN Transformer blocks under a causal + padding mask and reads the session out with soft
attention: with h_t the block outputs and h̄ their mean over real items,
β_t = wᵀ σ(W1 h_t + W2 h̄) and s = Σ_t β_t h_t.

Sessions are left-padded (the most recent item last). Positions count back from the most recent
item, so a session gets the same positions whatever padded length it arrives in.

Layer-wise parameter sharing (``share``), CpRec's four modes transposed from NextItNet's residual
blocks of two dilated convolutions to this encoder, where a block is an attention sub-layer plus an
FFN of two d×d Linear layers (the FFN's two layers play the role of the block's two convolutions):

* ``none``: every block has its own weights (the original encoder; state_dict unchanged);
* ``cross-block``: every block uses block 0's attention (qkv, proj) and FFN weights and biases;
* ``adjacent-block``: block 2k+1 uses block 2k's attention and FFN weights and biases;
* ``adjacent-layer``: inside each block the FFN's second layer uses its first layer's d×d weight
  matrix (biases stay separate), attention untouched;
* ``cross-layer``: cross-block + adjacent-layer: one block's weights everywhere, with its two FFN
  layers sharing one d×d matrix (and each of the two FFN biases shared across blocks).

LayerNorms (in blocks and at the input), positions and the readout are never shared. A shared
weight is one Parameter object registered under several names: ``parameters()`` and an ONNX export
hold it once, ``state_dict`` lists it under every alias name (all pointing at one storage, so
``torch.save`` writes it once) and loading with strict=True assigns the same values to every alias.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn


SHARE_MODES = ("none", "cross-block", "adjacent-block", "adjacent-layer", "cross-layer")


@dataclass
class EncoderConfig:
    num_items: int
    dim: int = 128
    heads: int = 1
    layers: int = 1
    max_len: int = 50
    dropout: float = 0.5
    share: str = "none"  # layer-wise parameter sharing, see SHARE_MODES and the module docstring

    def to_dict(self) -> dict:
        return asdict(self)


class Dropout(nn.Module):
    """nn.Dropout with the mask drawn by ``torch.rand`` (uniform floats compared with p): the same
    distribution, 3x faster on CPU than the Bernoulli sampler nn.Dropout uses, which took a fifth of
    a sampled-loss training step (docs/results.md)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by heads {cfg.heads}")
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        att = att.masked_fill(~allowed.unsqueeze(1), float("-inf"))
        att = self.dropout(torch.softmax(att, dim=-1))
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Post-LN Transformer block: x = LN(x + attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.dropout(self.attn(x, allowed)))
        return self.ln2(x + self.dropout(self.ffn(x)))


def _shared_linears(block: Block) -> list[nn.Linear]:
    return [block.attn.qkv, block.attn.proj, block.ffn[0], block.ffn[2]]


def share_parameters(blocks: nn.ModuleList, mode: str) -> None:
    """Tie the blocks' weights in place according to ``mode`` (one of SHARE_MODES)."""
    if mode not in SHARE_MODES:
        raise ValueError(f"unknown share mode '{mode}' (known: {', '.join(SHARE_MODES)})")
    if mode in ("cross-block", "adjacent-block", "cross-layer"):
        for j in range(1, len(blocks)):
            src = 0 if mode != "adjacent-block" else j - j % 2
            if src == j:
                continue
            for mine, theirs in zip(_shared_linears(blocks[j]), _shared_linears(blocks[src])):
                mine.weight, mine.bias = theirs.weight, theirs.bias
    if mode in ("adjacent-layer", "cross-layer"):
        for block in blocks:
            block.ffn[2].weight = block.ffn[0].weight


class SoftAttentionReadout(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim)
        self.w = nn.Linear(dim, 1, bias=False)

    def forward(self, h: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        realf = real.unsqueeze(-1).to(h.dtype)
        mean = (h * realf).sum(1) / realf.sum(1).clamp(min=1.0)
        beta = self.w(torch.sigmoid(self.w1(h) + self.w2(mean).unsqueeze(1))) * realf
        return (beta * h).sum(1)


class SessionEncoder(nn.Module):
    """(item vectors B×L×d, item ids B×L) → session vectors B×d."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.ln = nn.LayerNorm(cfg.dim)
        self.dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.readout = SoftAttentionReadout(cfg.dim)
        share_parameters(self.blocks, cfg.share)

    def forward(self, item_vectors: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        real = ids != 0
        slot = torch.arange(t, device=ids.device)
        x = self.dropout(self.ln(item_vectors + self.pos((t - 1) - slot).unsqueeze(0)))  # 0 = most recent
        query, key = slot.unsqueeze(1), slot.unsqueeze(0)
        # Built from comparisons rather than tril/eye: older onnxruntime (Java 1.17) has no bool Trilu.
        # A padding query may still see itself, so no attention row is empty (no NaN).
        allowed = (query >= key) & (real.unsqueeze(1) | (query == key))
        for block in self.blocks:
            x = block(x, allowed)
        return self.readout(x, real)
