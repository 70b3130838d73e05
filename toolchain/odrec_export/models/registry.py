"""Build a recommender from a plain config dict, and from a checkpoint.

A model config is ``{"encoder": {...EncoderConfig...}, "compressor": NAME, "items": {...}}``, plus
``"repeat_bonus": true`` for a model with a fitted repeat bonus (models/repeat.py); ``ITEM_TABLES``
maps each compressor to its constructor ``(num_items, dim, **items_config) -> ItemTable``.
"""

from __future__ import annotations

from typing import Callable

from ..checkpoint import Checkpoint
from ..errors import CheckpointError, UsageError
from .codes import CodesItemTable
from .cprec import BlockItemTable
from .encoder import EncoderConfig, SessionEncoder
from .item_tables import FullItemTable, ItemTable
from .recommender import SessionRecommender
from .repeat import CONFIG_KEY as REPEAT_KEY, RepeatBonus
from .tensor_train import STTItemTable, TTItemTable

ITEM_TABLES: dict[str, Callable[..., ItemTable]] = {"none": FullItemTable, "codes": CodesItemTable,
                                                    "tt": TTItemTable, "stt": STTItemTable, "cprec": BlockItemTable}


def build_model(config: dict) -> SessionRecommender:
    enc = EncoderConfig(**config["encoder"])
    name = config.get("compressor", "none")
    if name not in ITEM_TABLES:
        raise UsageError(f"unknown compressor '{name}' (known: {', '.join(sorted(ITEM_TABLES))})")
    try:
        items = ITEM_TABLES[name](enc.num_items, enc.dim, **config.get("items", {}))
    except ValueError as e:  # settings the table cannot take (a rank that is no multiple of t, ...)
        raise UsageError(f"compressor {name}: {e}") from None
    repeat = RepeatBonus(enc.max_len) if config.get(REPEAT_KEY) else None
    return SessionRecommender(items, SessionEncoder(enc), repeat)


def model_from_checkpoint(ckpt: Checkpoint, source: str = "checkpoint") -> SessionRecommender:
    try:
        model = build_model(ckpt.config)
        model.load_state_dict(ckpt.state_dict, strict=True)
    except UsageError as e:  # build_model's option errors: here the options come from the file
        raise CheckpointError(f"{source}: model config not usable: {e}") from None
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{source}: weights do not match the model config: {first[:200]}") from None
    if len(ckpt.vocab) != model.num_items:
        raise CheckpointError(f"{source}: vocabulary has {len(ckpt.vocab)} items, model {model.num_items}")
    return model.eval()
