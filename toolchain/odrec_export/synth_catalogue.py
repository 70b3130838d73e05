"""``synth-catalogue``: a checkpoint with another checkpoint's encoder and repeat bonus and N items, to
measure how an artifact scales with the catalogue. A codes student keeps its codebooks and gets
random codes; other compressors get their item table built afresh for N items with their own
settings and random initial weights (``Compressor.synthetic_state``), so that compressors can be timed side by
side at any catalogue size.

The result recommends nothing meaningful: it exists so that anyone can build, verify and bench an
artifact of 1M or 5M items without such a data set. It says so everywhere: its provenance holds
``synthetic`` (copied into the manifest of any artifact built from it) and its raw item ids are N
distinct random integers below 10·N, in random order, like a catalogue's own ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import compressors
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data.sessions import POPULAR_KEEP
from .errors import UsageError
from .files import file_sha256

SYNTHETIC_NOTE = "SYNTHETIC catalogue: random item representation and ids, for measuring scale, not accuracy"


def synth_catalogue(like: str | Path, items: int, out: str | Path, seed: int = 0) -> dict:
    """Write the checkpoint; returns its ``synthetic`` provenance record."""
    like, out = Path(like), Path(out)
    if items < 1:
        raise UsageError(f"--items must be >= 1, got {items}")
    if out.resolve() == like.resolve():
        raise UsageError(f"--out {out} is the --like checkpoint itself")
    source = load_checkpoint(like)
    rng = np.random.default_rng(seed)
    compressor = compressors.get(source.config.get("compressor", compressors.UNCOMPRESSED))
    config = dict(source.config, encoder=dict(source.config["encoder"], num_items=items),
                  items=compressor.synthetic_config(source.config.get("items") or {}))
    state = compressor.synthetic_state(source, config, rng, seed)
    ids = rng.choice(10 * items, size=items, replace=False) + 1
    record = {"note": SYNTHETIC_NOTE, "items": items, "seed": seed, "like": str(like),
              "like_sha256": file_sha256(like)}
    keep = min(POPULAR_KEEP, items)  # random "popular" items, so the graph has a real artifact's cold-start part
    popular = {"ids": (rng.choice(items, size=keep, replace=False) + 1).tolist(),
               "clicks": [10 * keep // (rank + 1) for rank in range(keep)]}
    provenance = {"synthetic": record, "data_source": "synthetic", "popular_items": popular}
    save_checkpoint(Checkpoint(source.kind, config, [str(i) for i in ids], state, provenance), out)
    return record
