"""``synth-catalogue``: a checkpoint with another checkpoint's encoder and repeat bonus and N items, to
measure how an artifact scales with the catalogue. A codes student keeps its codebooks and gets
random codes; any other compressor (tt, stt, cprec, none) gets its item table built afresh for N
items with its own settings and random initial weights, so that compressors can be timed side by
side at any catalogue size.

The result recommends nothing meaningful: it exists so that anyone can build, verify and bench an
artifact of 1M or 5M items without such a data set. It says so everywhere: its provenance holds
``synthetic`` (copied into the manifest of any artifact built from it) and its raw item ids are N
distinct random integers below 10·N, in random order, like a catalogue's own ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import POPULAR_KEEP
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
    config = dict(source.config, encoder=dict(source.config["encoder"], num_items=items))
    if source.config.get("compressor") == "codes":
        state = _random_codes(source, items, rng)
    else:  # the tensor trains' item grid (I1 × I2 ≥ N+1) follows N: let the table choose it again
        config["items"] = {k: v for k, v in (source.config.get("items") or {}).items() if k != "item_shape"}
        state = _fresh_item_table(source, config, seed)
    ids = rng.choice(10 * items, size=items, replace=False) + 1
    record = {"note": SYNTHETIC_NOTE, "items": items, "seed": seed, "like": str(like),
              "like_sha256": file_sha256(like)}
    keep = min(POPULAR_KEEP, items)  # random "popular" items, so the graph has a real artifact's cold-start part
    popular = {"ids": (rng.choice(items, size=keep, replace=False) + 1).tolist(),
               "clicks": [10 * keep // (rank + 1) for rank in range(keep)]}
    provenance = {"synthetic": record, "data_source": "synthetic", "popular_items": popular}
    save_checkpoint(Checkpoint(source.kind, config, [str(i) for i in ids], state, provenance), out)
    return record


def _random_codes(source: Checkpoint, items: int, rng) -> dict:
    m, k = int(source.config["items"]["m"]), int(source.config["items"]["k"])
    codes = torch.from_numpy(rng.integers(0, k, size=(items + 1, m)).astype(np.int64))
    codes[0] = 0  # padding
    state = {name: t for name, t in source.state_dict.items() if name != "items.codes"}
    state["items.codes"] = codes.to(source.state_dict["items.codes"].dtype).contiguous()
    return state


def _fresh_item_table(source: Checkpoint, config: dict, seed: int) -> dict:
    from .models.registry import build_model

    torch.manual_seed(seed)
    fresh = build_model(config).state_dict()
    return {name: (source.state_dict[name] if not name.startswith("items.") else t) for name, t in fresh.items()}
