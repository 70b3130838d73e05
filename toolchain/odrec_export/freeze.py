"""Checkpoint → frozen model: the fp32 encoder plus the item representation exactly as stored.

Each compressor says what its table freezes to (``Compressor.arrays``: codes and codebooks, cores,
blocks, or the teacher's plain table), and its ONNX head reads those arrays; a compressed table's
N×d item table is never computed here. ``materialise`` builds it on purpose, for the uncompressed
baseline that ``size-report --baseline`` compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import compressors
from .checkpoint import file_sha256, load_checkpoint
from .errors import CheckpointError
from .export import artifact as A
from .models.encoder import SessionEncoder


@dataclass
class FrozenModel:
    encoder: SessionEncoder  # eval mode, fp32
    num_items: int
    dim: int
    max_len: int
    compressor: str  # its name, one of compressors.names()
    vocab: list[str]
    checkpoint_sha256: str
    arrays: dict[str, np.ndarray]  # the item representation as the compressor stores it (Compressor.arrays)
    items: torch.nn.Module  # the item table itself, eval mode (materialise)
    items_config: dict | None = None  # the checkpoint's config["items"]
    repeat_weights: np.ndarray | None = None  # max_len fp32, by recency (models with a repeat bonus)
    synthetic: dict | None = None  # provenance of a synth-catalogue checkpoint: not a real catalogue
    popular: dict | None = None  # {"ids", "clicks"}: most clicked training items, most first (data.popular_items)


def freeze(path: str | Path) -> FrozenModel:
    """Load a checkpoint and take out the parts the artifact needs."""
    from .models.registry import model_from_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path)
    name = ckpt.config.get("compressor", compressors.UNCOMPRESSED) if isinstance(ckpt.config, dict) else None
    if name not in compressors.names():
        raise CheckpointError(f"{path}: cannot export compressor {name!r} (supported: {', '.join(compressors.names())})")
    model = model_from_checkpoint(ckpt, str(path))
    cfg = model.encoder.cfg
    with torch.no_grad():
        arrays = compressors.get(name).arrays(model.items.eval())
        repeat = model.repeat.weights.detach().float().numpy().copy() if model.repeat is not None else None
    return FrozenModel(encoder=model.encoder.float().eval(), num_items=model.num_items, dim=cfg.dim,
                       max_len=cfg.max_len, compressor=name, vocab=list(ckpt.vocab),
                       checkpoint_sha256=file_sha256(path), arrays=arrays, items=model.items,
                       items_config=dict(ckpt.config.get("items") or {}), repeat_weights=repeat,
                       synthetic=ckpt.provenance.get("synthetic"),
                       popular=checked_popular(ckpt.provenance.get("popular_items"), model.num_items, path))


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
    from .data.sessions import load_like_checkpoint

    sessions = load_like_checkpoint(data, None, load_checkpoint(ckpt_path).provenance)
    if sessions.vocab.raw_ids != [str(v) for v in vocab]:
        raise CheckpointError(f"{data}: not the data {ckpt_path} was trained on (its item vocabulary differs)")
    return sessions.popular_items()


def materialise(frozen: FrozenModel) -> FrozenModel:
    """The same model with an uncompressed fp32 (N+1)×d table (for the baseline graph)."""
    if compressors.get(frozen.compressor).holds_full_table:
        return frozen
    with torch.no_grad():
        table = frozen.items.table().detach().float().numpy().copy()
    table[0] = 0.0
    return replace(frozen, compressor=compressors.UNCOMPRESSED, arrays={A.ITEM_TABLE: table}, items_config={})
