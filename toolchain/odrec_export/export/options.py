"""What ``build`` can be asked for: quantisation, top-k, the encoder's weights, the id map, ..."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class BuildOptions:
    quant: str = "int8"
    top_k: int = 20
    ort: bool = False
    simplify: bool = True
    encoder_quant: str = "fp16"  # the best verified setting: half the encoder's bytes, fp32 arithmetic
    expand_top: int | None = None  # cprec: expand only the tail blocks whose cluster is in the head's top-k
    id_map: str = "auto"  # items.bin for integer ids (auto, binary) or items.txt (text); see id_map.py
    popular_from: str | Path | None = None  # data to count popular items in, for checkpoints that record none
