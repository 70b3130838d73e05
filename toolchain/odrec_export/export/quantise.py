"""Symmetric int8 quantisation with one scale per row, shared by the codebooks and the encoder weights."""

from __future__ import annotations

import numpy as np


def quantise_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scale per row) with values · scale ≈ rows and |values| ≤ 127."""
    amax = np.abs(rows).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale
