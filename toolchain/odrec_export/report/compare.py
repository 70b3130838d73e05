"""bench --compare: several artifacts (one per compressor) side by side, in one interleaved run.

For every artifact: the bytes of model.onnx and of the whole artifact (model.onnx + the id map,
items.bin or items.txt, + manifest.json, as size-report counts it; an optional model.ort is listed apart), the bytes of its item
representation (the manifest's ``compressor.item_representation_bytes`` when it records them, else the
codes/codebooks/scales/item_table initializers of model.onnx), the HR@10 / NDCG@10 its manifest
recorded at build time (``--eval-data``; "n/a" without), median onnxruntime CPU latency for batch 1
at each (threads, session length), and the resident memory a child process gains by creating a
session and running it (``report.probe_memory``, one fresh process per artifact). Every figure also
comes as a ratio against the FIRST artifact (this / first).

Fairness of the timings:
- one session per artifact is open at a time per thread count, and the runs are interleaved: run i of
  every artifact comes before run i+1 of any, so all see the same machine state; the artifact that
  goes first in a round rotates (round i starts with artifact i mod n), so none always runs right
  after another's cache traffic;
- every artifact gets the same input tensors: 16 random sessions per length, item ids uniform in
  1..min(num_items) over the artifacts, so the ids are valid in every vocabulary even when the
  vocabularies differ (latency does not depend on which items a session holds; the result says
  whether the id maps are identical).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import OdrecError, UsageError
from ..export import artifact as A
from .measure import item_parts, part_sizes, probe_memory

METRICS = ("HR@10", "NDCG@10")


def _ratio(x, first):
    if x is None or first is None or first == 0:
        return None
    return x / first


def _labels(folders: list[Path]) -> list[str]:
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders)]


def _describe(folder: Path) -> dict:
    """Sizes, compressor and recorded metrics of one artifact (validated first)."""
    import onnx

    try:
        manifest = A.validate(folder)
    except A.ArtifactError as e:  # a bad input to --compare is a usage error (exit 2)
        raise UsageError(str(e)) from None
    model = onnx.load(str(folder / A.MODEL_FILE), load_external_data=False)
    parts = part_sizes(folder, model)
    comp = manifest.get("compressor") or {}
    if any(parts[p] for p in item_parts()):
        item_bytes, item_src = sum(parts[p] for p in item_parts()), "model.onnx initializers"
    else:
        item_bytes, item_src = None, None
    ev = manifest.get("evaluation") or {}
    recorded = ev.get("metrics") or {}
    d = {"dir": str(folder), "num_items": manifest["num_items"],
         "max_session_length": manifest.get("max_session_length"),
         "compressor": comp, "compressor_name": comp.get("name", "n/a"),
         "quantisation": A.quant_scheme(manifest),
         "model_bytes": (folder / A.MODEL_FILE).stat().st_size,
         "total_bytes": sum(parts.values()),
         "item_representation_bytes": item_bytes, "item_representation_source": item_src,
         "metrics": {m: recorded.get(m) for m in METRICS},
         "metrics_source": ("manifest evaluation (build --eval-data"
                            + (f", {ev['samples']} samples)" if "samples" in ev else ")")) if recorded else None}
    if (folder / A.ORT_FILE).is_file():
        d["model_ort_bytes"] = (folder / A.ORT_FILE).stat().st_size
    return d


def compare_artifacts(folders: Sequence[str | Path], *, runs: int = 300, warmup: int = 30, threads=(1, 2),
            seq_lens=(10, 50), memory_runs: int = 100, seed: int = 0,
            trace: Optional[Callable[[int, int, int, int], None]] = None) -> dict:
    """Compare artifacts side by side; ratios are against ``folders[0]``.

    ``trace(threads, seq_len, run, index)`` (optional) is called before every timed or warm-up run of
    artifact ``index``: the order the runs took, for tests.
    """
    from ..export.onnx_runtime import ort_session

    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise UsageError(f"bench --compare needs at least 2 artifact directories, got {len(folders)}")
    seen = {}
    for f in folders:
        key = f.resolve()
        if key in seen:
            raise UsageError(f"{f}: given twice to bench --compare (also as {seen[key]})")
        seen[key] = f
    if runs < 1 or warmup < 0 or memory_runs < 0:
        raise UsageError("bench --compare: runs must be >= 1, warm-up and memory runs >= 0")
    arts = [_describe(f) for f in folders]
    for a, label in zip(arts, _labels(folders)):
        a["label"] = label
    n_min = min(a["num_items"] for a in arts)
    items0 = A.read_items(folders[0])
    same_vocab = all(A.read_items(f) == items0 for f in folders[1:])

    rng = np.random.default_rng(seed)
    inputs = {L: [rng.integers(1, n_min + 1, size=(1, L), dtype=np.int64) for _ in range(16)] for L in seq_lens}
    latency = [[] for _ in arts]
    n = len(arts)
    for t in threads:
        sessions = []
        for f in folders:
            try:
                sessions.append(ort_session(f / A.MODEL_FILE, threads=t, spin=False))
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise OdrecError(f"{f}: onnxruntime could not load {A.MODEL_FILE}: {why}") from None
        for length in seq_lens:
            times = [[] for _ in arts]
            for i in range(warmup + runs):
                for j in range(n):  # interleaved; the first artifact of a round rotates
                    idx = (i + j) % n
                    if trace is not None:
                        trace(t, length, i, idx)
                    feed = {A.INPUT_NAME: inputs[length][i % 16]}
                    t0 = time.perf_counter()
                    sessions[idx].run(None, feed)
                    dt = time.perf_counter() - t0
                    if i >= warmup:
                        times[idx].append(dt)
            for idx in range(n):
                latency[idx].append({"threads": t, "seq_len": length, "median_us": float(np.median(times[idx])) * 1e6})
        del sessions
    for a, lat, f in zip(arts, latency, folders):
        a["latency"] = lat
        a["memory"] = probe_memory(f / A.MODEL_FILE, a["num_items"], threads=1, runs=memory_runs, seq_len=10)

    first = arts[0]
    for a in arts:
        a["ratios"] = {
            "model_bytes": _ratio(a["model_bytes"], first["model_bytes"]),
            "total_bytes": _ratio(a["total_bytes"], first["total_bytes"]),
            "item_representation_bytes": _ratio(a["item_representation_bytes"], first["item_representation_bytes"]),
            **{m: _ratio(a["metrics"][m], first["metrics"][m]) for m in METRICS},
            "rss_growth_mib": _ratio(a["memory"]["rss_growth_mib"], first["memory"]["rss_growth_mib"]),
            "peak_growth_mib": _ratio(a["memory"]["peak_growth_mib"], first["memory"]["peak_growth_mib"]),
        }
        for x, x0 in zip(a["latency"], first["latency"]):
            x["ratio"] = _ratio(x["median_us"], x0["median_us"])
    return {"runs": runs, "warmup": warmup, "memory_runs": memory_runs, "threads": list(threads),
            "seq_lens": list(seq_lens), "first": first["label"],
            "order": "interleaved: run i of every artifact before run i+1 of any; round i starts with artifact i mod n",
            "inputs": {"batch": 1, "sessions_per_length": 16, "seed": seed, "item_ids": [1, n_min],
                       "same_vocabulary": same_vocab},
            "artifacts": arts}


# --------------------------------------------------------------------------- text table


def _cell(value, ratio, fmt: str) -> str:
    if value is None:
        return "n/a"
    text = format(value, fmt)
    return text if ratio is None else f"{text} ({ratio:.2f}x)"


def format_artifact_comparison(r: dict) -> str:
    arts = r["artifacts"]
    rows: list[tuple[str, list[str]]] = [("", [a["label"] for a in arts])]

    def comp(a):
        c = a["compressor"]
        extra = " ".join(f"{k}={v}" for k, v in c.items()  # M, K, ranks...: the integer settings
                         if isinstance(v, int) and not isinstance(v, bool) and k not in ("d", "item_representation_bytes"))
        return f"{a['compressor_name']} {extra}".strip()

    rows.append(("compressor", [comp(a) for a in arts]))
    rows.append(("quantisation", [a["quantisation"] or "n/a" for a in arts]))
    rows.append(("items", [f"{a['num_items']:,}" for a in arts]))
    rows.append(("model.onnx bytes", [_cell(a["model_bytes"], a["ratios"]["model_bytes"], ",") for a in arts]))
    rows.append(("artifact bytes", [_cell(a["total_bytes"], a["ratios"]["total_bytes"], ",") for a in arts]))
    rows.append(("item repr. bytes", [_cell(a["item_representation_bytes"], a["ratios"]["item_representation_bytes"], ",")
                                      for a in arts]))
    for m in METRICS:
        rows.append((f"{m} (%)", [_cell(None if a["metrics"][m] is None else 100 * a["metrics"][m], a["ratios"][m], ".2f")
                                  for a in arts]))
    for k, x in enumerate(arts[0]["latency"]):
        label = f"µs {x['threads']} thr, seq {x['seq_len']}"
        rows.append((label, [_cell(a["latency"][k]["median_us"], a["latency"][k]["ratio"], ".0f") for a in arts]))
    rows.append(("resident growth MiB", [_cell(a["memory"]["rss_growth_mib"], a["ratios"]["rss_growth_mib"], ".1f")
                                         for a in arts]))
    rows.append(("peak growth MiB", [_cell(a["memory"]["peak_growth_mib"], a["ratios"]["peak_growth_mib"], ".1f")
                                     for a in arts]))
    w0 = max(len(h) for h, _ in rows)
    widths = [max(len(cells[j]) for _, cells in rows) for j in range(len(arts))]
    lines = ["  ".join([h.ljust(w0)] + [c.rjust(w) for c, w in zip(cells, widths)]) for h, cells in rows]
    inp = r["inputs"]
    lines += [
        f"ratios: this artifact / the first ({r['first']}); lower is better for bytes, latency and memory, "
        "higher for HR/NDCG.",
        f"latency: median of {r['runs']} runs after {r['warmup']} warm-up, onnxruntime CPU, batch 1, interleaved "
        "(run i of every artifact before run i+1 of any; the first of each round rotates).",
        f"inputs: the same 16 random sessions per length for every artifact, item ids uniform in "
        f"1..{inp['item_ids'][1]:,} (the smallest vocabulary); vocabularies "
        + ("identical." if inp["same_vocabulary"] else "differ, so the ids name different items per artifact."),
    ]
    long = [(a["label"], a["max_session_length"]) for a in arts
            if a["max_session_length"] and a["max_session_length"] < max(r["seq_lens"])]
    if long:
        lines.append("sessions longer than max_session_length keep their most recent items: "
                     + ", ".join(f"{label} {m}" for label, m in long) + ".")
    lines += [
        f"memory: child process per artifact, 1 thread, session creation + {r['memory_runs']} inferences at seq 10, "
        "after onnxruntime's one-time init.",
        "HR/NDCG@10: recorded in each manifest by build --eval-data (n/a without); artifact bytes = model.onnx + "
        "id map (items.bin or items.txt) + manifest.json.",
    ]
    return "\n".join(lines)
