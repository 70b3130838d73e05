"""Checkpoint → frozen model: the fp32 encoder plus the item representation exactly as stored.

A codes student freezes to its codes (M × (N+1), codebook-major, smallest unsigned type) and its
codebooks (M × K × d); the N×d item table is never computed here. A teacher (compressor "none")
freezes to its plain table. The other compressors (tt, stt, cprec) freeze to the named arrays their
item table exports (cores, blocks), which their graph head in ``heads/`` reads. ``materialise``
builds the N×d table on purpose, for the uncompressed baseline that bench compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import artifact as A
from .checkpoint import load_checkpoint, file_sha256
from .errors import CheckpointError
from .models.encoder import SessionEncoder

FREEZABLE = ("codes", "none", "tt", "stt", "cprec")


@dataclass
class FrozenModel:
    encoder: SessionEncoder  # eval mode, fp32
    num_items: int
    dim: int
    max_len: int
    compressor: str  # one of FREEZABLE
    vocab: list[str]
    checkpoint_sha256: str
    codes: np.ndarray | None = None  # M × (N+1) uint8/uint16, column 0 = padding
    codebooks: np.ndarray | None = None  # M × K × d float32
    table: np.ndarray | None = None  # (N+1) × d float32, row 0 = padding (teacher / baseline only)
    arrays: dict[str, np.ndarray] | None = None  # tt / stt / cprec: the stored factors, by initializer name
    items_config: dict | None = None  # the checkpoint's config["items"]
    repeat_weights: np.ndarray | None = None  # max_len fp32, by recency (models with a repeat bonus)
    synthetic: dict | None = None  # provenance of a synth-catalogue checkpoint: not a real catalogue
    popular: dict | None = None  # {"ids", "clicks"}: most clicked training items, most first (data.popular_items)

    @property
    def m(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def k(self) -> int:
        return int(self.codebooks.shape[1])


def freeze(path: str | Path) -> FrozenModel:
    """Load a checkpoint and take out the parts the artifact needs."""
    from .models.registry import model_from_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path)
    compressor = ckpt.config.get("compressor", "none") if isinstance(ckpt.config, dict) else None
    if compressor not in FREEZABLE:
        raise CheckpointError(f"{path}: cannot export compressor {compressor!r} (supported: {', '.join(FREEZABLE)})")
    model = model_from_checkpoint(ckpt, str(path))
    cfg = model.encoder.cfg
    frozen = FrozenModel(encoder=model.encoder.float().eval(), num_items=model.num_items, dim=cfg.dim,
                         max_len=cfg.max_len, compressor=compressor, vocab=list(ckpt.vocab),
                         checkpoint_sha256=file_sha256(path), items_config=dict(ckpt.config.get("items") or {}),
                         synthetic=ckpt.provenance.get("synthetic"),
                         popular=checked_popular(ckpt.provenance.get("popular_items"), model.num_items, path))
    with torch.no_grad():
        if model.repeat is not None:
            frozen.repeat_weights = model.repeat.weights.detach().float().numpy().copy()
        if compressor not in ("codes", "none"):
            frozen.arrays = {name: np.ascontiguousarray(a) for name, a in model.items.export_arrays().items()}
        elif compressor == "codes":
            codes = model.items.codes.t().contiguous()  # M × (N+1)
            frozen.codes = codes.numpy().copy()
            frozen.codebooks = model.items.codebooks.detach().float().numpy().copy()
        else:
            frozen.table = model.items.export_arrays()[A.ITEM_TABLE]
    return frozen


def checked_popular(popular, num_items: int, source) -> dict | None:
    """A checkpoint's (or a data set's) popular-item record, checked: item indices within 1..N."""
    if popular is None:
        return None
    try:
        ids, clicks = [int(i) for i in popular["ids"]], [int(c) for c in popular["clicks"]]
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(f"{source}: popular_items is not a list of ids and clicks") from None
    if len(ids) != len(clicks) or not all(1 <= i <= num_items for i in ids):
        raise CheckpointError(f"{source}: popular_items has ids outside 1..{num_items}")
    return {"ids": ids, "clicks": clicks}


def popular_from_data(data: str | Path, ckpt_path: str | Path, vocab: list[str]) -> dict:
    """Popular items counted in ``data``'s training sessions, split as the checkpoint's run split them."""
    from .data import load_like_checkpoint

    sessions = load_like_checkpoint(data, None, load_checkpoint(ckpt_path).provenance)
    if sessions.vocab.raw_ids != [str(v) for v in vocab]:
        raise CheckpointError(f"{data}: not the data {ckpt_path} was trained on (its item vocabulary differs)")
    return sessions.popular_items()


def materialise(frozen: FrozenModel) -> FrozenModel:
    """The same model with its fp32 (N+1)×d table built from codes (for the baseline graph)."""
    if frozen.table is not None:
        return frozen
    books = frozen.codebooks
    table = np.zeros((frozen.num_items + 1, frozen.dim), dtype=np.float32)
    for m in range(books.shape[0]):
        table += books[m][frozen.codes[m].astype(np.int64)]
    table[0] = 0.0
    return replace(frozen, compressor="none", table=table, codes=None, codebooks=None)
