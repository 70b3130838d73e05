"""``synth-catalogue``: a codes checkpoint with another checkpoint's encoder, codebooks and repeat bonus,
and N items with random codes, to measure how an artifact scales with the catalogue.

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
from .errors import CheckpointError, UsageError
from .files import file_sha256

SYNTHETIC_NOTE = "SYNTHETIC catalogue: random codes and ids, for measuring scale, not accuracy"


def synth_catalogue(like: str | Path, items: int, out: str | Path, seed: int = 0) -> dict:
    """Write the checkpoint; returns its ``synthetic`` provenance record."""
    like, out = Path(like), Path(out)
    if items < 1:
        raise UsageError(f"--items must be >= 1, got {items}")
    if out.resolve() == like.resolve():
        raise UsageError(f"--out {out} is the --like checkpoint itself")
    source = load_checkpoint(like)
    if source.config.get("compressor") != "codes":
        raise CheckpointError(f"{like}: synth-catalogue needs a codes student, this is "
                              f"{source.config.get('compressor', 'none')!r}")
    m, k = int(source.config["items"]["m"]), int(source.config["items"]["k"])
    rng = np.random.default_rng(seed)
    codes = torch.from_numpy(rng.integers(0, k, size=(items + 1, m)).astype(np.int64))
    codes[0] = 0  # padding
    ids = rng.choice(10 * items, size=items, replace=False) + 1
    state = {name: t for name, t in source.state_dict.items() if name != "items.codes"}
    state["items.codes"] = codes.to(source.state_dict["items.codes"].dtype).contiguous()
    config = dict(source.config, encoder=dict(source.config["encoder"], num_items=items))
    record = {"note": SYNTHETIC_NOTE, "items": items, "seed": seed, "like": str(like),
              "like_sha256": file_sha256(like)}
    provenance = {"synthetic": record, "data_source": "synthetic"}
    save_checkpoint(Checkpoint("student", config, [str(i) for i in ids], state, provenance), out)
    return record
