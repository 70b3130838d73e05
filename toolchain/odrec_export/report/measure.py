"""size-report and bench: where an artifact's bytes go, and how it runs against the uncompressed model.

The uncompressed baseline is the same model with a plain fp32 (N+1)×d item table: the artifact's own
encoder nodes, its codes decoded through its (dequantised) codebooks into a table, a Gather for the
input items and a Gemm + TopK for scoring, so both graphs return the same ranking. Memory is measured
in a fresh child process per model, so one model's allocations never hide in the other's numbers.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import compressors
from ..errors import OdrecError, UsageError
from ..export import artifact as A


@functools.cache
def item_parts() -> tuple[str, ...]:
    """The item representation's size-report parts: every compressor's (``Compressor.parts``), in order.
    A function, not a constant: the compressors load torch, which the memory probe's child must not."""
    return tuple(dict.fromkeys(p for c in compressors.all_compressors().values() for p in c.parts))


def all_parts() -> tuple[str, ...]:
    return ("encoder weights", *item_parts(), "repeat bonus", "popular items", "graph overhead", "item ids",
            "manifest.json")


# --------------------------------------------------------------------------- size-report


def _initializer_bytes(model) -> dict[str, int]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i).nbytes for i in model.graph.initializer}


def part_sizes(folder: Path, model) -> dict[str, int]:
    """Bytes per part of model.onnx + the side files; "graph overhead" is everything in model.onnx that
    is not a weight (nodes, names, small constants, protobuf framing); "item ids" is the id map
    (items.txt or items.bin)."""
    inits = _initializer_bytes(model)
    parts = {p: 0 for p in all_parts()}
    parts.update(_compressor(A.read_manifest(folder)).part_bytes(inits))
    parts["repeat bonus"] = inits.get(A.REPEAT_WEIGHTS, 0)
    parts["encoder weights"] = sum(b for n, b in inits.items() if n.startswith(A.ENCODER_PREFIX))
    parts["popular items"] = inits.get(A.POPULAR_IDS, 0) + inits.get(A.POPULAR_SCORES, 0)
    model_bytes = (folder / A.MODEL_FILE).stat().st_size
    parts["graph overhead"] = (model_bytes - parts["encoder weights"] - parts["repeat bonus"] - parts["popular items"]
                               - sum(parts[p] for p in item_parts()))
    parts["item ids"] = (folder / A.id_map_file(A.read_manifest(folder))).stat().st_size
    parts["manifest.json"] = (folder / A.MANIFEST_FILE).stat().st_size
    return parts


def _compressor(manifest: dict) -> compressors.Compressor:
    name = (manifest.get("compressor") or {}).get("name")
    try:
        return compressors.get(name)
    except UsageError:
        raise OdrecError(f"{A.MANIFEST_FILE}: unknown compressor {name!r}") from None


def size_report(folder: str | Path, baseline_ckpt: str | Path | None = None, measure_rss: bool = True) -> dict:
    import onnx

    folder = Path(folder)
    manifest = A.validate(folder)
    model = onnx.load(str(folder / A.MODEL_FILE), load_external_data=False)
    parts = part_sizes(folder, model)
    n, d = manifest["num_items"], manifest["compressor"]["d"]
    item_repr = sum(parts[p] for p in item_parts())
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
    base_total = base_model_bytes + parts["item ids"] + parts["manifest.json"]
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
    from ..export import BuildOptions
    from ..export.assemble import assemble
    from ..export.encoder import export_encoder
    from ..freeze import freeze, materialise

    frozen = freeze(ckpt)
    if frozen.checkpoint_sha256 != manifest.get("source_checkpoint_sha256"):
        raise OdrecError(f"{ckpt}: not the checkpoint this artifact was built from (sha256 differs)")
    base = materialise(frozen)
    encoder, _ = export_encoder(base)
    return assemble(base, encoder, BuildOptions(quant="fp32", top_k=manifest["top_k"]))


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
    import onnxruntime  # noqa: F401  (loaded before the first reading, as the sessions below need it)

    from ..export.onnx_runtime import ort_session

    # onnxruntime's one-time initialisation (kernel registries, thread pool, allocators) is the same
    # for every model: pay it on a tiny graph first, so the figures below are the model's own cost.
    start = _status_kib("VmRSS")
    warm = ort_session(_warmup_graph(), threads=threads, inter_threads=1, log_level=3)
    for _ in range(10):
        warm.run(None, {"x": np.ones((1, 8), np.float32)})
    try:  # reset the high-water mark so VmHWM below is the peak of what follows
        Path("/proc/self/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    before = _status_kib("VmRSS")
    session = ort_session(model_path, threads=threads, inter_threads=1, log_level=3)
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
    code = ("import json, sys; from odrec_export.report.measure import _probe; "
            "print(json.dumps(_probe(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))")
    r = subprocess.run([sys.executable, "-c", code, str(model_path), str(threads), str(runs), str(seq_len), str(num_items)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise OdrecError(f"{model_path}: onnxruntime could not load or run it in a child process: {tail[:200]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- bench


def item_table_rows(model, manifest: dict, chunk: int = 1 << 16):
    """The fp32 rows (items 1..N, in order) that the artifact's item representation stands for (codes
    through their dequantised codebooks, or a plain table), in chunks of ``chunk`` items: the full
    table is never held twice."""
    inits = {i.name: i for i in model.graph.initializer}
    yield from _compressor(manifest).decoded_rows(inits, manifest, chunk)


def decode_item_table(model, manifest: dict) -> np.ndarray:
    """The fp32 (N+1)×d table the artifact stands for (row 0 = padding, zero)."""
    rows = list(item_table_rows(model, manifest))
    return np.concatenate([np.zeros((1, rows[0].shape[1]), np.float32), *rows])


def baseline_graph(folder: Path, manifest: dict, table_file: Path | None = None):
    """The uncompressed baseline: the artifact's encoder + an fp32 N×d table (Gather + Gemm head).

    With ``table_file`` the table is written there chunk by chunk and the graph refers to it as
    external data (protobuf caps one message at 2 GB: 4M items × d=128 in fp32); save the graph into
    the same folder."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from ..compressors.full_table import table_head
    from ..export.assemble import compose, encoder_part

    model = onnx.load(str(folder / A.MODEL_FILE), load_external_data=False)
    nodes, inits = encoder_part(model)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
               if i.name in (A.REPEAT_WEIGHTS, A.POPULAR_IDS, A.POPULAR_SCORES)}
    repeat = weights.get(A.REPEAT_WEIGHTS)
    popular = (weights[A.POPULAR_IDS], weights[A.POPULAR_SCORES]) if A.POPULAR_IDS in weights else None
    n, max_len, top_k = manifest["num_items"], manifest["max_session_length"], manifest["top_k"]
    if table_file is None:
        return compose(n, max_len, table_head(decode_item_table(model, manifest)), nodes, inits, top_k, repeat, popular)
    table_file = Path(table_file)
    with table_file.open("wb") as f:
        for rows in item_table_rows(model, manifest):
            f.write(rows.tobytes())
    table = TensorProto(name=A.ITEM_TABLE, data_type=TensorProto.FLOAT, dims=[n, manifest["compressor"]["d"]],
                        data_location=TensorProto.EXTERNAL)
    for key, value in (("location", table_file.name), ("offset", "0"), ("length", str(table_file.stat().st_size))):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    return compose(n, max_len, table_head(table), nodes, inits, top_k, repeat, popular, check=False)


SPREAD_WARNING = 1.5  # p90 / p10 of one model's runs above this: the machine was busy


def _interleaved(sessions: dict, inputs: list, runs: int, warmup: int) -> dict[str, np.ndarray]:
    """Seconds per run of every session, run i of each before run i+1 of any (same machine state). The
    first of each round rotates, so no model always runs in the caches another one just trampled."""
    times = {k: [] for k in sessions}
    order = list(sessions.items())
    for i in range(warmup + runs):
        for k, s in order[i % len(order):] + order[:i % len(order)]:
            t0 = time.perf_counter()
            s.run(None, {A.INPUT_NAME: inputs[i % len(inputs)]})
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: np.array(v) for k, v in times.items()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def bench(folder: str | Path, *, runs: int = 300, warmup: int = 30, threads=(1, 2), seq_lens=(10, 50),
          memory_runs: int = 100, workdir: str | Path | None = None) -> dict:
    """Latency of artifact vs baseline, interleaved run by run; then of each cut at the session vector
    (the prefix: cleaning, lookup, encoder), interleaved the same way; head = whole − prefix (so it
    also carries what a whole run loses to caches the other model flushed). Child-process memory."""
    import os
    import tempfile

    import onnx

    from ..export.assemble import prefix_model
    from ..export.onnx_runtime import ort_session

    folder = Path(folder)
    manifest = A.validate(folder)
    n = manifest["num_items"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        art = onnx.load(str(folder / A.MODEL_FILE), load_external_data=False)
        base = baseline_graph(folder, manifest, table_file=tmp / "item_table.bin")
        paths = {"artifact": tmp / "artifact.onnx", "baseline": tmp / "baseline.onnx",
                 "artifact prefix": tmp / "artifact_prefix.onnx", "baseline prefix": tmp / "baseline_prefix.onnx"}
        for key, graph in (("artifact", art), ("baseline", base)):
            onnx.save(graph, str(paths[key]))
            onnx.save(prefix_model(graph), str(paths[key + " prefix"]))
        sizes = {"artifact": paths["artifact"].stat().st_size,
                 "baseline": paths["baseline"].stat().st_size + (tmp / "item_table.bin").stat().st_size}
        del art, base
        rng = np.random.default_rng(0)
        latency = []
        for t in threads:
            sessions = {k: ort_session(p, threads=t, spin=False) for k, p in paths.items()}
            wholes = {k: sessions[k] for k in ("artifact", "baseline")}
            prefixes = {k: sessions[k] for k in ("artifact prefix", "baseline prefix")}
            for length in seq_lens:
                inputs = [rng.integers(1, n + 1, size=(1, length), dtype=np.int64) for _ in range(16)]
                # wholes and prefixes in two loops, so a prefix never runs in the caches a whole model
                # just flushed (at 1M items that alone cost it ~200 µs)
                times = {**_interleaved(wholes, inputs, runs, warmup), **_interleaved(prefixes, inputs, runs, warmup)}
                latency.append(_latency_row(times, t, length, n))
            del sessions, wholes, prefixes
        memory = {k: probe_memory(paths[k], n, threads=1, runs=memory_runs, seq_len=10) for k in ("artifact", "baseline")}
    for m in memory.values():
        m["rss_growth_bytes_per_item"] = m["rss_growth_mib"] * 2**20 / n
    mem_ratio = (memory["artifact"]["rss_growth_mib"] / memory["baseline"]["rss_growth_mib"]
                 if memory["baseline"]["rss_growth_mib"] > 0 else None)
    spread = max(max(x["artifact_spread"], x["baseline_spread"]) for x in latency if x["threads"] == 1)
    return {"dir": str(folder), "num_items": n, "runs": runs, "warmup": warmup, "model_bytes": sizes,
            "synthetic": manifest.get("synthetic"),
            "size_ratio": sizes["baseline"] / sizes["artifact"], "latency": latency, "memory": memory,
            "rss_growth_ratio": mem_ratio,
            "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "load_average_before": round(load_before, 2),
                        "max_spread_1_thread": round(spread, 2), "loaded": spread > SPREAD_WARNING}}


def _latency_row(times: dict[str, np.ndarray], threads: int, seq_len: int, n: int) -> dict:
    us = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    row = {"threads": threads, "seq_len": seq_len}
    for k in ("artifact", "baseline"):
        head = us[k] - us[k + " prefix"]
        row.update({f"{k}_us": us[k], f"{k}_p10_us": float(np.percentile(times[k], 10)) * 1e6,
                    f"{k}_p90_us": float(np.percentile(times[k], 90)) * 1e6,
                    f"{k}_prefix_us": us[k + " prefix"], f"{k}_head_us": head,
                    f"{k}_head_ns_per_item": head * 1e3 / n})
        row[f"{k}_spread"] = row[f"{k}_p90_us"] / row[f"{k}_p10_us"]
    row["speedup"] = us["baseline"] / us["artifact"]
    row["head_speedup"] = row["baseline_head_us"] / row["artifact_head_us"] if row["artifact_head_us"] > 0 else None
    return row


def format_bench(r: dict) -> str:
    m = r["machine"]
    lines = [f"model.onnx: artifact {r['model_bytes']['artifact']:,} bytes, baseline (fp32 N×d table) "
             f"{r['model_bytes']['baseline']:,} bytes ({r['size_ratio']:.1f}x); {r['num_items']:,} items"
             + (" (SYNTHETIC catalogue)" if r.get("synthetic") else ""),
             f"onnxruntime CPU, batch 1, {r['runs']} runs after {r['warmup']} warm-up, interleaved; {m['cpu']}, "
             f"{m['cores']} cores, load average {m['load_average_before']} before the run",
             "median µs (p10-p90); prefix = input cleaning + item lookup + encoder, head = whole - prefix "
             "(scores, repeat bonus, top-k)",
             f"{'threads':>7} {'seq':>4} {'artifact':>20} {'baseline':>20} {'speedup':>8} {'prefix art/base':>16} "
             f"{'head art/base':>16} {'head':>6} {'head ns/item art/base':>22}"]
    for x in r["latency"]:
        art = f"{x['artifact_us']:.0f} ({x['artifact_p10_us']:.0f}-{x['artifact_p90_us']:.0f})"
        base = f"{x['baseline_us']:.0f} ({x['baseline_p10_us']:.0f}-{x['baseline_p90_us']:.0f})"
        head = f"{x['head_speedup']:.2f}x" if x["head_speedup"] else "n/a"
        lines.append(f"{x['threads']:>7} {x['seq_len']:>4} {art:>20} {base:>20} {x['speedup']:>7.2f}x "
                     f"{x['artifact_prefix_us']:>7.0f}/{x['baseline_prefix_us']:<8.0f} "
                     f"{x['artifact_head_us']:>7.0f}/{x['baseline_head_us']:<8.0f} {head:>6} "
                     f"{x['artifact_head_ns_per_item']:>10.1f}/{x['baseline_head_ns_per_item']:<11.1f}")
    if m["loaded"]:
        lines.append(f"note: the runs spread widely (p90/p10 up to {m['max_spread_1_thread']:.2f} at 1 thread): the "
                     "machine was busy, so these figures are noisy; rerun on a quiet machine before quoting them")
    lines.append("memory (child process per model, 1 thread, session creation + "
                 f"{r['memory']['artifact']['runs']} inferences at seq 10; onnxruntime's one-time init, "
                 f"{r['memory']['artifact']['runtime_init_mib']:.1f} MiB for any model, paid before measuring):")
    for k in ("artifact", "baseline"):
        mm = r["memory"][k]
        peak = f"{mm['peak_growth_mib']:.1f}" if mm["peak_growth_mib"] is not None else "n/a"
        lines.append(f"  {k:<9} resident growth {mm['rss_growth_mib']:6.1f} MiB ({mm['rss_growth_bytes_per_item']:.1f} "
                     f"B per item), peak growth {peak} MiB")
    if r["rss_growth_ratio"] is not None:
        lines.append(f"  artifact / baseline resident growth: {r['rss_growth_ratio']:.2f}")
    return "\n".join(lines)
