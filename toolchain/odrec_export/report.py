"""size-report and bench: where an artifact's bytes go, and how it runs against the uncompressed model.

The uncompressed baseline is the same model with a plain fp32 (N+1)×d item table: the artifact's own
encoder nodes, its codes decoded through its (dequantised) codebooks into a table, a Gather for the
input items and a Gemm + TopK for scoring, so both graphs return the same ranking. Memory is measured
in a fresh child process per model, so one model's allocations never hide in the other's numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import artifact as A
from .errors import OdrecError, UsageError

PARTS = ("encoder weights", "codebooks", "codes", "scales", "item table (fp32)", "item factors",
         "repeat bonus", "graph overhead", "items.txt", "manifest.json")
ITEM_PARTS = ("codebooks", "codes", "scales", "item table (fp32)", "item factors")
FACTOR_PREFIXES = ("tt/", "stt/", "cprec/")  # tensor-train cores, CpRec blocks (heads/)


# --------------------------------------------------------------------------- size-report


def _initializer_bytes(model) -> dict[str, int]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i).nbytes for i in model.graph.initializer}


def part_sizes(folder: Path, model) -> dict[str, int]:
    """Bytes per part of model.onnx + the side files; "graph overhead" is everything in model.onnx that
    is not a weight (nodes, names, small constants, protobuf framing)."""
    inits = _initializer_bytes(model)
    named = {"codebooks": A.CODEBOOKS, "codes": A.CODES, "scales": A.CODEBOOK_SCALES,
             "item table (fp32)": A.ITEM_TABLE, "repeat bonus": A.REPEAT_WEIGHTS}
    parts = {p: 0 for p in PARTS}
    for part, name in named.items():
        parts[part] = inits.get(name, 0)
    parts["encoder weights"] = sum(b for n, b in inits.items() if n.startswith(A.ENCODER_PREFIX))
    parts["item factors"] = sum(b for n, b in inits.items() if n.startswith(FACTOR_PREFIXES))
    model_bytes = (folder / A.MODEL_FILE).stat().st_size
    parts["graph overhead"] = (model_bytes - parts["encoder weights"] - parts["repeat bonus"]
                               - sum(parts[p] for p in ITEM_PARTS))
    parts["items.txt"] = (folder / A.ITEMS_FILE).stat().st_size
    parts["manifest.json"] = (folder / A.MANIFEST_FILE).stat().st_size
    return parts


def size_report(folder: str | Path, baseline_ckpt: str | Path | None = None, measure_rss: bool = True) -> dict:
    import onnx

    folder = Path(folder)
    manifest = A.validate(folder)
    model = onnx.load(str(folder / A.MODEL_FILE), load_external_data=False)
    parts = part_sizes(folder, model)
    n, d = manifest["num_items"], manifest["compressor"]["d"]
    item_repr = sum(parts[p] for p in ITEM_PARTS)
    table_fp32 = (n + 1) * d * 4
    total = sum(parts.values())
    report = {"dir": str(folder), "num_items": n, "compressor": manifest["compressor"],
              "quantisation": manifest["quantisation"]["scheme"], "parts": parts, "total_bytes": total,
              "item_representation_bytes": item_repr, "fp32_item_table_bytes": table_fp32,
              "item_compression_ratio": table_fp32 / item_repr if item_repr else None}
    if baseline_ckpt is not None:
        base = _baseline_from_checkpoint(baseline_ckpt, manifest)
        base_model_bytes = len(base.SerializeToString())
        report["baseline"] = {"source": "checkpoint", "model_bytes": base_model_bytes}
    else:  # the same model, all fp32, with an fp32 table: swap the item representation and int8 encoder weights
        base_model_bytes = (folder / A.MODEL_FILE).stat().st_size - item_repr + table_fp32 \
            + _encoder_fp32_bytes(model) - parts["encoder weights"]
        report["baseline"] = {"source": "computed: the artifact with an fp32 (N+1)×d table "
                                        "and fp32 encoder weights", "model_bytes": base_model_bytes}
    base_total = base_model_bytes + parts["items.txt"] + parts["manifest.json"]
    report["baseline"]["total_bytes"] = base_total
    report["artifact_compression_ratio"] = base_total / total
    if (folder / A.ORT_FILE).is_file():
        report["model.ort_bytes"] = (folder / A.ORT_FILE).stat().st_size
    if measure_rss:
        report["memory"] = probe_memory(folder / A.MODEL_FILE, n, threads=1, runs=0, seq_len=10)
    return report


def _encoder_fp32_bytes(model) -> int:
    """Bytes of the encoder weights stored as fp32 (int8 and fp16 weights count 4 bytes a value, int8
    scales 0)."""
    from onnx import numpy_helper

    total = 0
    for i in model.graph.initializer:
        if not i.name.startswith(A.ENCODER_PREFIX) or i.name.endswith("_scale"):
            continue
        a = numpy_helper.to_array(i)
        total += a.size * 4 if i.name.endswith(("_int8", "_fp16")) else a.nbytes
    return total


def _baseline_from_checkpoint(ckpt, manifest: dict):
    from .export import assemble, export_encoder
    from .freeze import freeze, materialise

    frozen = freeze(ckpt)
    if frozen.checkpoint_sha256 != manifest.get("source_checkpoint_sha256"):
        raise OdrecError(f"{ckpt}: not the checkpoint this artifact was built from (sha256 differs)")
    base = materialise(frozen)
    encoder, _ = export_encoder(base)
    return assemble(base, encoder, "fp32", manifest["top_k"])


def format_size_report(r: dict) -> str:
    lines = [f"{'part':<20} {'bytes':>12} {'share':>7}"]
    for part, b in r["parts"].items():
        lines.append(f"{part:<20} {b:>12,} {100 * b / r['total_bytes']:>6.1f}%")
    lines.append(f"{'total':<20} {r['total_bytes']:>12,}")
    if r["item_compression_ratio"]:
        lines.append(f"item representation: {r['item_representation_bytes']:,} bytes vs fp32 (N+1)×d table "
                     f"{r['fp32_item_table_bytes']:,} bytes: {r['item_compression_ratio']:.1f}x smaller")
    lines.append(f"whole artifact: {r['total_bytes']:,} bytes vs {r['baseline']['total_bytes']:,} bytes with an "
                 f"fp32 item table ({r['baseline']['source']}): {r['artifact_compression_ratio']:.1f}x smaller")
    if "model.ort_bytes" in r:
        lines.append(f"model.ort (optional, not in the total): {r['model.ort_bytes']:,} bytes")
    if "memory" in r:
        m = r["memory"]
        lines.append(f"onnxruntime resident memory: +{m['load_rss_mib']:.1f} MiB after session creation "
                     f"({m['rss_after_load_mib']:.1f} MiB process total, of which {m['runtime_init_mib']:.1f} MiB "
                     "is onnxruntime's own one-time init)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- memory, in a child process


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OdrecError(f"/proc/self/status has no {field}")


def _probe(model_path: str, threads: int, runs: int, seq_len: int, num_items: int) -> dict:
    """Runs inside the child: RSS growth from session creation and from ``runs`` inferences."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    # onnxruntime's one-time initialisation (kernel registries, thread pool, allocators) is the same
    # for every model: pay it on a tiny graph first, so the figures below are the model's own cost.
    start = _status_kib("VmRSS")
    warm = ort.InferenceSession(_warmup_graph(), so, providers=["CPUExecutionProvider"])
    for _ in range(10):
        warm.run(None, {"x": np.ones((1, 8), np.float32)})
    try:  # reset the high-water mark so VmHWM below is the peak of what follows
        Path("/proc/self/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    before = _status_kib("VmRSS")
    session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    after_load = _status_kib("VmRSS")
    n = num_items
    rng = np.random.default_rng(0)
    for _ in range(runs):
        session.run(None, {A.INPUT_NAME: rng.integers(1, n + 1, size=(1, seq_len), dtype=np.int64)})
    after_runs = _status_kib("VmRSS")
    peak = _status_kib("VmHWM")
    mib = 1 / 1024
    return {"threads": threads, "runs": runs, "seq_len": seq_len, "runtime_init_mib": (before - start) * mib,
            "rss_before_mib": before * mib,
            "rss_after_load_mib": after_load * mib, "load_rss_mib": (after_load - before) * mib,
            "rss_growth_mib": (after_runs - before) * mib,
            "peak_growth_mib": (peak - before) * mib if hwm_reset else None}


def _warmup_graph() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("TopK", ["y", "k"], ["v", "i"])], "warmup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, None), helper.make_tensor_value_info("i", TensorProto.INT64, None)],
        initializer=[numpy_helper.from_array(np.ones((8, 16), np.float32), "w"),
                     numpy_helper.from_array(np.array([4], np.int64), "k")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = A.MAX_IR_VERSION
    return model.SerializeToString()


def probe_memory(model_path: str | Path, num_items: int, threads: int = 1, runs: int = 100, seq_len: int = 10) -> dict:
    code = ("import json, sys; from odrec_export.report import _probe; "
            "print(json.dumps(_probe(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))")
    r = subprocess.run([sys.executable, "-c", code, str(model_path), str(threads), str(runs), str(seq_len), str(num_items)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise OdrecError(f"{model_path}: onnxruntime could not load or run it in a child process: {tail[:200]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- bench


def decode_item_table(model, manifest: dict) -> np.ndarray:
    """The fp32 (N+1)×d table the artifact's codes and (dequantised) codebooks stand for (row 0 = padding)."""
    from onnx import numpy_helper

    from .heads.codes import ungroup_codes

    inits = {i.name: i for i in model.graph.initializer}
    if A.ITEM_TABLE in inits:
        rows = numpy_helper.to_array(inits[A.ITEM_TABLE]).astype(np.float32)
        return np.concatenate([np.zeros((1, rows.shape[1]), np.float32), rows])
    if A.CODES not in inits or A.CODEBOOKS not in inits:
        raise OdrecError("model.onnx holds neither an item table nor codes and codebooks")
    books = numpy_helper.to_array(inits[A.CODEBOOKS]).astype(np.float32)  # (M·K) × d
    if A.CODEBOOK_SCALES in inits:
        books = books * numpy_helper.to_array(inits[A.CODEBOOK_SCALES])[:, None]
    m, k = manifest["compressor"]["M"], manifest["compressor"]["K"]
    codes = ungroup_codes(numpy_helper.to_array(inits[A.CODES]), m, k)  # M × N
    table = np.zeros((codes.shape[1] + 1, books.shape[1]), np.float32)
    table[1:] = sum(books[i * k + codes[i]] for i in range(m))
    return table


def baseline_graph(folder: Path, manifest: dict):
    """The uncompressed baseline: the artifact's encoder + an fp32 N×d table (Gather + Gemm head)."""
    import onnx
    from onnx import numpy_helper

    from .export import compose, encoder_part, table_head

    name = (manifest.get("compressor") or {}).get("name")
    if name not in ("codes", "none"):
        raise UsageError(f"{folder}: bench builds its fp32-table baseline from codes or a table, and this {name} "
                         "artifact has neither; compare it with other artifacts: bench --compare DIR1 DIR2 ...")
    model = onnx.load(str(folder / A.MODEL_FILE), load_external_data=False)
    nodes, inits = encoder_part(model)
    table = decode_item_table(model, manifest)
    repeat = next((numpy_helper.to_array(i) for i in model.graph.initializer if i.name == A.REPEAT_WEIGHTS), None)
    return compose(manifest["num_items"], manifest["max_session_length"], table_head(table), nodes, inits,
                   manifest["top_k"], repeat)


def bench(folder: str | Path, *, runs: int = 300, warmup: int = 30, threads=(1, 2), seq_lens=(10, 50),
          memory_runs: int = 100, workdir: str | Path | None = None) -> dict:
    """Latency of artifact vs baseline, interleaved run by run, plus child-process memory for each."""
    import tempfile

    import onnx

    from .export import ort_session

    folder = Path(folder)
    manifest = A.validate(folder)
    n = manifest["num_items"]
    art = onnx.load(str(folder / A.MODEL_FILE), load_external_data=False)
    base = baseline_graph(folder, manifest)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        paths = {"artifact": Path(tmp) / "artifact.onnx", "baseline": Path(tmp) / "baseline.onnx"}
        onnx.save(art, str(paths["artifact"]))
        onnx.save(base, str(paths["baseline"]))
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        rng = np.random.default_rng(0)
        latency = []
        for t in threads:
            sessions = {k: ort_session(p, threads=t) for k, p in paths.items()}
            for length in seq_lens:
                inputs = [rng.integers(1, n + 1, size=(1, length), dtype=np.int64) for _ in range(16)]
                times = {k: [] for k in sessions}
                for i in range(warmup + runs):  # interleaved: both models see the same machine state
                    for k, s in sessions.items():
                        t0 = time.perf_counter()
                        s.run(None, {A.INPUT_NAME: inputs[i % len(inputs)]})
                        if i >= warmup:
                            times[k].append(time.perf_counter() - t0)
                med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
                latency.append({"threads": t, "seq_len": length, "artifact_us": med["artifact"],
                                "baseline_us": med["baseline"], "speedup": med["baseline"] / med["artifact"]})
            del sessions
        memory = {k: probe_memory(p, n, threads=1, runs=memory_runs, seq_len=10) for k, p in paths.items()}
    mem_ratio = (memory["artifact"]["rss_growth_mib"] / memory["baseline"]["rss_growth_mib"]
                 if memory["baseline"]["rss_growth_mib"] > 0 else None)
    return {"dir": str(folder), "num_items": n, "runs": runs, "warmup": warmup, "model_bytes": sizes,
            "size_ratio": sizes["baseline"] / sizes["artifact"], "latency": latency, "memory": memory,
            "rss_growth_ratio": mem_ratio}


def format_bench(r: dict) -> str:
    lines = [f"model.onnx: artifact {r['model_bytes']['artifact']:,} bytes, baseline (fp32 N×d table) "
             f"{r['model_bytes']['baseline']:,} bytes ({r['size_ratio']:.1f}x)",
             f"median latency, onnxruntime CPU, batch 1, {r['runs']} runs after {r['warmup']} warm-up, interleaved:",
             f"{'threads':>7} {'seq':>4} {'artifact µs':>12} {'baseline µs':>12} {'speedup':>8}"]
    for x in r["latency"]:
        lines.append(f"{x['threads']:>7} {x['seq_len']:>4} {x['artifact_us']:>12.0f} {x['baseline_us']:>12.0f} "
                     f"{x['speedup']:>7.2f}x")
    lines.append("memory (child process per model, 1 thread, session creation + "
                 f"{r['memory']['artifact']['runs']} inferences at seq 10; onnxruntime's one-time init, "
                 f"{r['memory']['artifact']['runtime_init_mib']:.1f} MiB for any model, paid before measuring):")
    for k in ("artifact", "baseline"):
        m = r["memory"][k]
        peak = f"{m['peak_growth_mib']:.1f}" if m["peak_growth_mib"] is not None else "n/a"
        lines.append(f"  {k:<9} resident growth {m['rss_growth_mib']:6.1f} MiB, peak growth {peak} MiB")
    if r["rss_growth_ratio"] is not None:
        lines.append(f"  artifact / baseline resident growth: {r['rss_growth_ratio']:.2f}")
    return "\n".join(lines)
