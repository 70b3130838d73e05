"""Tensor-only checkpoints with provenance, a content digest and atomic writes.

A checkpoint is a ``torch.save`` file of one plain dict (see docs/checkpoint-format.md)::

    format          "odrec-export-checkpoint"
    format_version  1
    kind            "teacher" | "student"
    config          plain dict (model and compressor settings)
    vocab           list of raw item ids; index i+1 ↔ vocab[i]
    state_dict      {name: tensor}
    provenance      plain dict (data sha256, epochs, metrics, teacher provenance, ...)
    digest          sha256 over everything above

Loading uses ``torch.load(weights_only=True)``, which refuses any pickled object other than
tensors and plain containers, so a malicious file cannot run code. The digest then catches
truncation and tampering that still unpickles.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError, UsageError
from .files import atomic_write, file_sha256

FORMAT = "odrec-export-checkpoint"
FORMAT_VERSION = 1
KINDS = ("teacher", "student")


@dataclass
class Checkpoint:
    kind: str
    config: dict
    vocab: list[str]
    state_dict: dict[str, torch.Tensor]
    provenance: dict = field(default_factory=dict)

    def payload(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
                "config": plain(self.config), "vocab": [str(v) for v in self.vocab],
                "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()},
                "provenance": plain(self.provenance)}


def plain(obj):
    """JSON-able copy made of dict/list/str/int/float/bool/None only (numpy scalars converted), so the
    file needs no pickled class to load."""
    def convert(o):
        if hasattr(o, "item"):
            return o.item()
        return str(o)
    return json.loads(json.dumps(obj, default=convert))


def _digest(payload: dict) -> str:
    h = hashlib.sha256()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "digest")}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(payload["state_dict"]):
        t = payload["state_dict"][name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> str:
    """Write atomically; returns the file's sha256."""
    if ckpt.kind not in KINDS:
        raise CheckpointError(f"unknown checkpoint kind '{ckpt.kind}'")
    payload = ckpt.payload()
    payload["digest"] = _digest(payload)
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))
    return file_sha256(path)


def _first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of an error's first line, cut at a word (not mid-word) if still long."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line.split(". ", 1)[0].rstrip(".")
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " …"


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # foreign pickles make torch warn before it refuses them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad pickles; all mean "not loadable"
        reason = _first_sentence(str(e)) or type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = "it contains pickled objects other than tensors (refused, nothing executed)"
        elif "PytorchStreamReader" in str(e) or "zip archive" in str(e) or "central directory" in str(e):
            reason = f"truncated or not a torch archive ({reason})"
        raise CheckpointError(f"{path}: not a valid odrec-export checkpoint: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an odrec-export checkpoint (missing format marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format version {payload.get('format_version')!r}")
    for key, typ in (("kind", str), ("config", dict), ("vocab", list), ("state_dict", dict),
                     ("provenance", dict), ("digest", str)):
        if not isinstance(payload.get(key), typ):
            raise CheckpointError(f"{path}: checkpoint field '{key}' is missing or malformed")
    if not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise CheckpointError(f"{path}: checkpoint state_dict holds non-tensor values")
    if _digest(payload) != payload["digest"]:
        raise CheckpointError(f"{path}: checkpoint digest mismatch (file modified or corrupted)")
    if payload["kind"] not in KINDS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {payload['kind']!r}")
    return Checkpoint(kind=payload["kind"], config=payload["config"], vocab=payload["vocab"],
                      state_dict=payload["state_dict"], provenance=payload["provenance"])


def check_no_full_table(state_dict: dict, num_items: int) -> None:
    """A student checkpoint must not carry an N×d float table (the teacher's or a composed one)."""
    for name, t in state_dict.items():
        if t.is_floating_point() and t.dim() == 2 and t.shape[0] in (num_items, num_items + 1):
            raise UsageError(f"student state holds a full item table '{name}' {tuple(t.shape)}")
