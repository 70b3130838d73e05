"""Frozen model → ONNX artifact directory (model.onnx, the id map items.bin or items.txt, manifest.json, optional model.ort).

The graph, in order:

1. clean the input: ids outside 1..N become padding (0); real items are moved to the right keeping
   their order (the encoder was trained on left-padded sessions); only the last ``max_len`` slots
   are kept, so over-long sessions keep their most recent items;
2. item vectors, written by the compressor's head (``Compressor.head``: for codes, Σ_m
   codebook_m[code_m(id)]; for a plain table, one Gather);
3. the encoder, exported from PyTorch (dynamo) and simplified on its own;
4. scoring, also the head's: every item's score from the session vector (codes: per-codebook score
   tables T = codebooks · s and score(v) = Σ_m T[m, code_m(v)]; a plain table: s · tableᵀ); a model
   with a repeat bonus then adds each session slot's weight (by recency) to its item's score (one
   ScatterElements, reduction add), and TopK over items 1..N (heads/tail.py).

Each head keeps its representation compressed: every N-sized product takes the runtime session
vector, so no constant folding (onnxruntime at load, onnxsim, the .ort converter) can rebuild the
N×d item table.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from . import __version__
from . import artifact as A
from . import compressors, id_map
from .errors import OdrecError, UsageError
from .freeze import FrozenModel
from .graph import Graph
from .heads.tail import ScoringTail
from .onnx_runtime import ort_session
from .quantise import quantise_rows

OPSET = 18
INT64_MAX = np.iinfo(np.int64).max


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


# --------------------------------------------------------------------------- encoder (PyTorch)


def export_encoder(frozen: FrozenModel, simplify: bool = True, quant: str = "fp32") -> tuple[onnx.ModelProto, str]:
    """The encoder alone, (item_vectors B×L×d, ids B×L) → session B×d, names prefixed ``enc/``."""
    torch.manual_seed(0)
    # SessionEncoder computes positions as (t-1) - arange(t) and the causal mask from comparisons:
    # a negative-step Range is mis-optimised by onnxruntime, and Java onnxruntime 1.17 has no bool Trilu.
    core = frozen.encoder.eval()
    length = max(2, min(frozen.max_len, 8))
    ids = torch.arange(1, 2 * length + 1, dtype=torch.int64).view(2, length) % (frozen.num_items + 1)
    vecs = torch.randn(2, length, frozen.dim)
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=1, max=frozen.max_len)
    # The exporter logs (e.g. "torchvision is not installed") through handlers bound to the real stderr.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(core, (vecs, ids), dynamo=True, external_data=False, opset_version=OPSET,
                                    input_names=["item_vectors", "ids"], output_names=["session"],
                                    dynamic_shapes={"item_vectors": {0: batch, 1: seq}, "ids": {0: batch, 1: seq}},
                                    verbose=False)
    model = program.model_proto
    for node in model.graph.node:  # stack traces with local paths: not part of the model
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    note = "encoder exported without onnxsim"
    if simplify:
        model, note = _simplify(model, "encoder")
    if quant == "int8":
        _quantise_matmul_weights(model)
    elif quant == "fp16":
        _fp16_matmul_weights(model)
    model = onnx.compose.add_prefix(model, A.ENCODER_PREFIX)
    return model, note


def _matmul_weights(model: onnx.ModelProto, min_elements: int = 1024) -> list[str]:
    """Names of the large 2-D MatMul/Gemm weight initializers (W as in × out)."""
    inits = {i.name: i for i in model.graph.initializer}
    return sorted({n.input[1] for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
                   and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
                   and int(np.prod(inits[n.input[1]].dims)) >= min_elements
                   and not (n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute))})


def _prepend_nodes(model: onnx.ModelProto, new_nodes: list) -> None:
    nodes = new_nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _fp16_matmul_weights(model: onnx.ModelProto) -> None:
    """Store each large MatMul weight as float16 with a Cast back to float32: half the encoder's bytes
    on disk, fp32 arithmetic at run time (onnxruntime folds the Cast once, at load)."""
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for name in _matmul_weights(model):
        w = numpy_helper.to_array(inits[name]).astype(np.float16)
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.append(numpy_helper.from_array(w, name + "_fp16"))
        new_nodes.append(helper.make_node("Cast", [name + "_fp16"], [name], name=name + "_cast",
                                          to=TensorProto.FLOAT))
    _prepend_nodes(model, new_nodes)


def _quantise_matmul_weights(model: onnx.ModelProto) -> None:
    """Replace each large 2-D MatMul/Gemm weight W by DequantizeLinear(int8 W_q, per-column scale)."""
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for name in _matmul_weights(model):
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        q, scale = quantise_rows(np.ascontiguousarray(w.T))  # one scale per output column
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(q.T), name + "_int8"),
                                        numpy_helper.from_array(scale, name + "_scale")])
        new_nodes.append(helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale"], [name],
                                          name=name + "_dequant", axis=1))
    _prepend_nodes(model, new_nodes)


def _simplify(model: onnx.ModelProto, what: str) -> tuple[onnx.ModelProto, str]:
    """onnxsim, kept only when it validates and does not make the file larger."""
    import onnxsim

    before = model.ByteSize()
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            simplified, ok = onnxsim.simplify(model)
    except Exception as e:  # onnxsim raises plain RuntimeErrors from its C++ core
        return model, f"{what}: onnxsim skipped ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    if not ok:
        return model, f"{what}: onnxsim skipped (its check failed)"
    after = simplified.ByteSize()
    if after > before:
        return model, f"{what}: onnxsim skipped (it would grow the graph from {before} to {after} bytes by constant folding)"
    return simplified, f"{what}: onnxsim applied ({before} -> {after} bytes)"


# --------------------------------------------------------------------------- hand-written parts


def _clean_input(g: Graph, num_items: int, max_len: int) -> tuple[str, str]:
    """item_ids → compacted, truncated ids ``enc/ids`` and a float mask of real slots."""
    # One padding slot in front: a session of length 0 (item_ids B × 0) becomes an all-padding one.
    g.const("pad_one_in_front", np.array([0, 1, 0, 0], np.int64))
    x = g.op("Pad", [A.INPUT_NAME, "pad_one_in_front"], "item_ids_padded")
    g.const("zero_i64", np.array(0, np.int64))
    g.const("num_items", np.array(num_items, np.int64))
    valid = g.op("And", [g.op("Greater", [x, "zero_i64"], "gt0"),
                         g.op("LessOrEqual", [x, "num_items"], "leN")], "valid")
    clean = g.op("Where", [valid, x, "zero_i64"], "clean_ids")
    # Stable compaction: sort key = valid·L + position, ascending → padding first, order kept.
    g.const("one_i64", np.array(1, np.int64))
    g.const("axis1", np.array([1], np.int64))
    shape = g.op("Shape", [x], "in_shape")
    seq = g.op("Gather", [shape, "one_i64"], "seq_len", axis=0)
    pos = g.op("Range", ["zero_i64", seq, "one_i64"], "positions")
    key = g.op("Add", [g.op("Mul", [g.op("Cast", [valid], "valid_i64", to=TensorProto.INT64), seq], "key_hi"),
                       pos], "sort_key")
    k = g.op("Unsqueeze", [seq, g.const("axes0", np.array([0], np.int64))], "seq_len_1d")
    g.op("TopK", [key, k], ["sorted_key", "order"], axis=1, largest=0, sorted=1)
    compact = g.op("GatherElements", [clean, "order"], "compact_ids", axis=1)
    g.const("keep_start", np.array([-max_len], np.int64))
    g.const("keep_end", np.array([INT64_MAX], np.int64))
    ids = g.op("Slice", [compact, "keep_start", "keep_end", "axis1"], A.ENCODER_PREFIX + "ids")
    mask = g.op("Unsqueeze", [g.op("Cast", [g.op("Greater", [ids, "zero_i64"], "real")], "real_f", to=TensorProto.FLOAT),
                              g.const("axes_last", np.array([-1], np.int64))], "real_mask")
    return ids, mask


def _repeat_updates(g: Graph, ids: str, mask: str, weights: np.ndarray) -> str:
    """B × L: each real slot's weight w[recency] (models/repeat.py), 0 at padding."""
    g.const(A.REPEAT_WEIGHTS, weights.astype(np.float32))
    length = g.op("Gather", [g.op("Shape", [ids], "clean_shape"), "one_i64"], "clean_len", axis=0)
    slots = g.op("Range", ["zero_i64", length, "one_i64"], "clean_slots")
    recency = g.op("Sub", [g.op("Sub", [length, "one_i64"], "last_slot"), slots], "recency")
    per_slot = g.op("Gather", [A.REPEAT_WEIGHTS, recency], "repeat_per_slot", axis=0)  # L
    real = g.op("Squeeze", [mask, "axes_last"], "real_slots")  # B × L, 1.0 for items, 0.0 for padding
    return g.op("Mul", [real, per_slot], "repeat_updates")


def assemble(frozen: FrozenModel, encoder: onnx.ModelProto, opts: BuildOptions) -> onnx.ModelProto:
    """One model: cleaned input → item vectors → encoder → scores → top-k."""
    enc = encoder.graph
    nodes = list(enc.node)
    if enc.output[0].name != A.ENCODER_PREFIX + "session":
        nodes.append(helper.make_node("Identity", [enc.output[0].name], [A.ENCODER_PREFIX + "session"]))
    head = compressors.get(frozen.compressor).head(frozen, opts)
    return compose(frozen.num_items, frozen.max_len, head, nodes, list(enc.initializer), opts.top_k,
                   frozen.repeat_weights, cold_start(frozen.popular, min(opts.top_k, frozen.num_items)))


def cold_start(popular: dict | None, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The graph's answer to a session with no known item: the k most clicked training items (ids and
    log(1 + clicks) as scores), or None when the checkpoint records fewer than k."""
    if popular is None or len(popular["ids"]) < k:
        return None
    return (np.array([popular["ids"][:k]], np.int64),
            np.log1p(np.array([popular["clicks"][:k]], np.float64)).astype(np.float32))


def _answer_cold_start(g: Graph, mask: str, popular: tuple[np.ndarray, np.ndarray]) -> None:
    """Rows whose cleaned session holds no item get the popular items instead of the head's top-k."""
    for name in (A.OUTPUT_IDS, A.OUTPUT_SCORES):
        for node in g.nodes:
            node.output[:] = ["ranked_" + name if o == name else o for o in node.output]
            node.name = "ranked_" + name if node.name == name else node.name
    g.const(A.POPULAR_IDS, popular[0])
    g.const(A.POPULAR_SCORES, popular[1])
    known = g.op("ReduceSum", [mask, g.const("axes_seq", np.array([1], np.int64))], "known_items", keepdims=0)
    has_item = g.op("Greater", [known, g.const("zero_f", np.array(0.0, np.float32))], "has_item")  # B × 1
    g.op("Where", [has_item, "ranked_" + A.OUTPUT_IDS, A.POPULAR_IDS], A.OUTPUT_IDS)
    g.op("Where", [has_item, "ranked_" + A.OUTPUT_SCORES, A.POPULAR_SCORES], A.OUTPUT_SCORES)


def compose(num_items: int, max_len: int, head, enc_nodes: list, enc_inits: list, top_k: int,
            repeat_weights: np.ndarray | None = None, popular: tuple[np.ndarray, np.ndarray] | None = None,
            check: bool = True) -> onnx.ModelProto:
    """Input cleaning + ``head(g, ids, ids_m1, mask, tail)`` (item vectors, scores of items 1..N and,
    through the tail, the repeat bonus and top-k) + the encoder between them; with ``popular`` (from
    ``cold_start``), a session with no known item returns those items. ``check=False`` skips onnx's
    checker, for a graph whose weights live in an external file not written yet."""
    g = Graph()
    ids, mask = _clean_input(g, num_items, max_len)
    ids_m1 = g.op("Sub", [ids, "one_i64"], "clean_ids_minus_1")  # score column of each slot's item
    updates = _repeat_updates(g, ids, mask, repeat_weights) if repeat_weights is not None else None
    k = min(top_k, num_items)
    tail = ScoringTail(ids_m1, updates, g.const("top_k", np.array([k], np.int64)), "one_i64")
    head(g, ids, ids_m1, mask, tail)
    if popular is not None:
        _answer_cold_start(g, mask, popular)
    # The encoder's nodes sit between the item vectors and the head (nodes must be in topological order).
    head_start = next(i for i, n in enumerate(g.nodes) if A.ENCODER_PREFIX + "session" in n.input)
    g.nodes[head_start:head_start] = enc_nodes
    graph = helper.make_graph(
        g.nodes, "odrec_recommender",
        inputs=[helper.make_tensor_value_info(A.INPUT_NAME, TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info(A.OUTPUT_IDS, TensorProto.INT64, ["batch", k]),
                 helper.make_tensor_value_info(A.OUTPUT_SCORES, TensorProto.FLOAT, ["batch", k])],
        initializer=g.inits + enc_inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="odrec-export", producer_version=__version__)
    model.ir_version = A.MAX_IR_VERSION
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def _upstream(model: onnx.ModelProto, output: str, stop: set[str]) -> tuple[list, list]:
    """The nodes (in graph order) and initializers ``output`` depends on, not looking past ``stop``."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    if output not in producers:
        raise OdrecError(f"model.onnx has no {output} tensor: not a graph written by odrec-export")
    seen, todo, nodes, used = set(), [output], [], set()
    while todo:
        name = todo.pop()
        if name in seen or name in stop or name == "":
            continue
        seen.add(name)
        if name in inits:
            used.add(name)
        elif name in producers:
            node = producers[name]
            nodes.append(node)
            todo.extend(node.input)
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    nodes = sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)])
    return nodes, [inits[n] for n in sorted(used)]


def encoder_part(model: onnx.ModelProto) -> tuple[list, list]:
    """The encoder's nodes and initializers inside a built model: everything ``enc/session`` depends on,
    back to ``enc/item_vectors`` and ``enc/ids`` (used by bench to rebuild the baseline graph)."""
    return _upstream(model, A.ENCODER_PREFIX + "session", {A.ENCODER_PREFIX + "item_vectors", A.ENCODER_PREFIX + "ids"})


def prefix_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph cut at the session vector: input cleaning, item lookup and encoder (bench times it
    beside the whole graph; the difference is the head and top-k)."""
    session = A.ENCODER_PREFIX + "session"
    nodes, inits = _upstream(model, session, set())
    graph = helper.make_graph(nodes, "odrec_prefix", inputs=list(model.graph.input),
                              outputs=[helper.make_tensor_value_info(session, TensorProto.FLOAT, ["batch", "d"])],
                              initializer=inits)
    prefix = helper.make_model(graph, opset_imports=list(model.opset_import))
    prefix.ir_version = model.ir_version
    return prefix


def build_onnx_model(frozen: FrozenModel, opts: BuildOptions) -> tuple[onnx.ModelProto, list[str]]:
    """The complete, checked model and notes on each simplification pass."""
    encoder, enc_note = export_encoder(frozen, simplify=opts.simplify, quant=opts.encoder_quant)
    model = assemble(frozen, encoder, opts)
    notes = [enc_note]
    if opts.simplify:
        simplified, note = _simplify(model, "whole graph")
        notes.append(note)
        if simplified is not model:
            simplified.ir_version = A.MAX_IR_VERSION
            model = simplified
    else:
        notes.append("whole graph: onnxsim not run (--no-simplify)")
    return model, notes


# --------------------------------------------------------------------------- evaluation through onnxruntime


def evaluate_onnx(session, samples, max_len: int, ks=(5, 10, 20), batch_size: int = 256, progress=None) -> dict:
    """HR/NDCG/MRR@K from the graph's top-k output (exact for K <= the graph's k).

    A target inside the top-k has rank = its position there. TopK orders equal scores by item index,
    so this is metrics.py's rule (strictly higher scores, plus equal scores of lower-indexed items):
    items sharing a target's code never count in its favour. A target outside the top-k is a miss at
    every K <= k.
    """
    from .data import pad_batch
    from .metrics import metrics_from_ranks

    ranks = []
    starts = range(0, len(samples), batch_size)
    for start in (progress(starts, len(starts), "evaluating through onnxruntime") if progress else starts):
        chunk = samples[start:start + batch_size]
        ids, _ = session.run(None, {A.INPUT_NAME: pad_batch([p for p, _ in chunk], max_len)})
        hit = ids == np.array([t for _, t in chunk])[:, None]
        ranks.append(np.where(hit.any(axis=1), hit.argmax(axis=1), ids.shape[1]))
    return metrics_from_ranks(np.concatenate(ranks), [k for k in ks if k <= ids.shape[1]])


def _eval_block(frozen: FrozenModel, model: onnx.ModelProto, fp32_model, data_path: Path, progress=None) -> dict:
    """Metrics of ``model`` and, when ``fp32_model`` (a callable building it) is given, of the fp32 graph."""
    from .data import Vocabulary, load_sessions, remap_samples_or_fail

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


# --------------------------------------------------------------------------- the artifact directory


def _write_ort(folder: Path) -> None:
    """model.ort for onnxruntime-mobile, converted with constant folding off (it would re-inflate the
    compact tables into big ones)."""
    ort_session(folder / A.MODEL_FILE, threads=None, inter_threads=None, optimization="basic",
                optimized_path=folder / A.ORT_FILE, config={"session.save_model_format": "ORT"},
                disabled_optimizers=["ConstantFolding"])


def _library_versions() -> dict:
    import onnxruntime
    import onnxsim

    return {"odrec_export": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxsim": onnxsim.__version__, "numpy": np.__version__}


def check_options(opts: BuildOptions) -> None:
    if opts.id_map not in id_map.FORMS:
        raise UsageError(f"unknown --id-map '{opts.id_map}' (use {', '.join(id_map.FORMS)})")
    if opts.quant not in A.QUANT_SCHEMES:
        extra = " (int4: plain 4-bit rounding of the codebooks loses too much accuracy without " \
                "quantisation-aware training)" if opts.quant == "int4" else ""
        raise UsageError(f"unknown --quant '{opts.quant}' (use {' or '.join(A.QUANT_SCHEMES)}){extra}")
    if opts.encoder_quant not in A.ENCODER_QUANT_SCHEMES:
        raise UsageError(f"unknown --encoder-quant '{opts.encoder_quant}' (use {', '.join(A.ENCODER_QUANT_SCHEMES)})")
    if opts.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {opts.top_k}")
    if opts.expand_top is not None and opts.expand_top < 1:
        raise UsageError(f"--expand-top must be >= 1, got {opts.expand_top}")


def prepare_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OdrecError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OdrecError(f"{out}: directory is not empty (use --force to replace it)")
    above = next(p for p in out.absolute().parents if p.exists())
    if not above.is_dir():
        raise OdrecError(f"{out}: {above} is a file, not a directory")
    try:  # before the minutes of export: the temporary directory is made beside ``out``
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent))
    except OSError as e:
        raise OdrecError(f"{out}: cannot write there ({e.strerror})") from None


def build(ckpt: str | Path, out: str | Path, opts: BuildOptions | None = None, *, force: bool = False,
          eval_data: str | Path | None = None, log=lambda s: None, progress=None) -> dict:
    """Checkpoint → artifact directory, written atomically; returns the manifest."""
    from .freeze import freeze, popular_from_data

    opts = opts or BuildOptions()
    out = Path(out)
    check_options(opts)
    prepare_out_dir(out, force)
    frozen = freeze(ckpt)
    if opts.popular_from is not None:
        frozen.popular = popular_from_data(opts.popular_from, ckpt, frozen.vocab)
    elif frozen.popular is None:
        log("note: the checkpoint records no popular items (it predates them): a session with no known item "
            "gets the model's scores for an empty session; --popular-from DATA counts them in its training data")
    ids_file, _ = id_map.choose_file(frozen.vocab, opts.id_map)
    if ids_file == A.ITEMS_FILE and any("\n" in r or "\r" in r for r in frozen.vocab):
        raise OdrecError(f"{ckpt}: a raw item id contains a line break; items.txt cannot hold it")
    compressor = compressors.get(frozen.compressor)
    if not compressor.quantises and opts.quant != "fp32":
        log(f"note: {frozen.compressor!r} checkpoint has no codebooks; --quant {opts.quant} applies to nothing "
            "(its item representation is exported in fp32)")
    if opts.expand_top is not None and "expand_top" not in compressor.build_options:
        readers = " or ".join(c.name for c in compressors.all_compressors().values() if "expand_top" in c.build_options)
        raise UsageError(f"--expand-top applies to {readers} checkpoints, not {frozen.compressor!r}")
    if frozen.synthetic:
        log(f"note: {ckpt} is a {frozen.synthetic.get('note', 'synthetic catalogue')}; the manifest says so")
    log(f"exporting encoder and {frozen.compressor} item head ...")
    model, notes = build_onnx_model(frozen, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)
    try:
        (tmp / A.MODEL_FILE).write_bytes(model.SerializeToString())
        names = [A.MODEL_FILE, id_map.write(tmp, frozen.vocab, opts.id_map)]
        if opts.ort:
            _write_ort(tmp)
            names.append(A.ORT_FILE)
        manifest = _manifest(frozen, model, opts, notes, A.describe_files(tmp, names))
        manifest["id_map"] = _id_map_record(tmp / names[1])
        manifest["source_checkpoint"] = {"path": str(ckpt), "sha256": frozen.checkpoint_sha256}
        if eval_data is not None:
            log("evaluating the built graph through onnxruntime ...")
            def build_fp32():
                return build_onnx_model(frozen, BuildOptions(quant="fp32", top_k=opts.top_k, simplify=opts.simplify,
                                                        expand_top=opts.expand_top))[0]

            quantised = (compressor.quantises and opts.quant != "fp32") or opts.encoder_quant != "fp32"
            fp32 = build_fp32 if quantised else None
            manifest["evaluation"] = _eval_block(frozen, model, fp32, Path(eval_data), progress)
        A.write_manifest(tmp, manifest)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename the finished temp dir onto ``out``; an old ``out`` is moved aside first, removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rename(out, old / "dir")
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old / "dir", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _id_map_record(path: Path) -> dict:
    if path.name == A.ITEMS_FILE:
        return {"file": path.name, "form": "text", "encoding": "one raw id per line, UTF-8"}
    encoding = id_map.describe(path.read_bytes())
    return {"file": path.name, "form": "binary", "encoding": encoding}


def _manifest(frozen: FrozenModel, model: onnx.ModelProto, opts: BuildOptions, notes: list[str], files: dict) -> dict:
    k = min(opts.top_k, frozen.num_items)
    compressor = compressors.get(frozen.compressor)
    quant = compressor.quantisation(opts)
    if opts.encoder_quant == "int8":
        quant["encoder"] = "int8 MatMul weights, per-output-column symmetric scale (DequantizeLinear); other weights fp32"
    elif opts.encoder_quant == "fp16":
        quant["encoder"] = "fp16 MatMul weights (Cast to fp32; fp32 arithmetic); other weights fp32"
    return {
        "format": A.FORMAT, "format_version": A.FORMAT_VERSION,
        "num_items": frozen.num_items, "top_k": k, "max_session_length": frozen.max_len,
        "inputs": A.INPUTS, "outputs": [dict(o, shape=["batch", k]) for o in A.OUTPUTS],
        "padding_index": 0,
        "compressor": compressor.manifest(frozen, opts), "quantisation": quant,
        "repeat_bonus": frozen.repeat_weights is not None,
        "cold_start": ("popular: a session with no known item returns the most clicked training items, "
                       "scored log(1 + clicks)" if any(i.name == A.POPULAR_IDS for i in model.graph.initializer)
                       else "none: the checkpoint records no popular items"),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
        "simplification": notes,
        "files": files,
        "source_checkpoint_sha256": frozen.checkpoint_sha256,
        "versions": _library_versions(),
        **({"synthetic": frozen.synthetic} if frozen.synthetic else {}),
    }
