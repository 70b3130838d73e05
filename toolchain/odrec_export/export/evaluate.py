"""Accuracy of a built graph through onnxruntime (and of its fp32 twin, to show what quantisation cost)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..freeze import FrozenModel
from . import artifact as A
from .onnx_runtime import ort_session


def evaluate_onnx(session, samples, max_len: int, ks=(5, 10, 20), batch_size: int = 256, progress=None) -> dict:
    """HR/NDCG/MRR@K from the graph's top-k output (exact for K <= the graph's k).

    A target inside the top-k has rank = its position there. TopK orders equal scores by item index,
    so this is metrics.py's rule (strictly higher scores, plus equal scores of lower-indexed items):
    items sharing a target's code never count in its favour. A target outside the top-k is a miss at
    every K <= k.
    """
    from ..data.sessions import pad_batch
    from ..metrics import metrics_from_ranks

    ranks = []
    starts = range(0, len(samples), batch_size)
    for start in (progress(starts, len(starts), "evaluating through onnxruntime") if progress else starts):
        chunk = samples[start:start + batch_size]
        ids, _ = session.run(None, {A.INPUT_NAME: pad_batch([p for p, _ in chunk], max_len)})
        hit = ids == np.array([t for _, t in chunk])[:, None]
        ranks.append(np.where(hit.any(axis=1), hit.argmax(axis=1), ids.shape[1]))
    return metrics_from_ranks(np.concatenate(ranks), [k for k in ks if k <= ids.shape[1]])


def evaluate_graphs(frozen: FrozenModel, model: onnx.ModelProto, fp32_model, data_path: Path, progress=None) -> dict:
    """Metrics of ``model`` and, when ``fp32_model`` (a callable building it) is given, of the fp32 graph."""
    from ..data.sessions import Vocabulary, load_sessions, remap_samples_or_fail

    sessions = load_sessions(data_path)
    samples, skipped = remap_samples_or_fail(sessions.test_samples, sessions.vocab, Vocabulary(frozen.vocab),
                                             where=data_path)
    block = {"data": Path(data_path).name, "data_sha256": sessions.data_sha256, "samples": len(samples),
             "skipped_unknown_items": skipped, "metrics": evaluate_onnx(ort_session(model), samples, frozen.max_len, progress=progress)}
    if fp32_model is not None:
        ref = evaluate_onnx(ort_session(fp32_model()), samples, frozen.max_len, progress=progress)
        block["fp32_metrics"] = ref
        block["quantised_minus_fp32_points"] = {k: round(100 * (block["metrics"][k] - v), 4)
                                               for k, v in ref.items() if k != "samples"}
    return block
