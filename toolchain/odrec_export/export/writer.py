"""Checkpoint → artifact directory (model.onnx, the id map items.bin or items.txt, manifest.json,
optional model.ort), written to a temporary directory beside the target and renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from .. import __version__, compressors
from ..errors import OdrecError, UsageError
from ..freeze import FrozenModel
from . import artifact as A
from . import id_map
from .assemble import build_onnx_model
from .evaluate import evaluate_graphs
from .onnx_runtime import ort_session
from .options import BuildOptions


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
    from ..freeze import freeze, popular_from_data

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
            manifest["evaluation"] = evaluate_graphs(frozen, model, fp32, Path(eval_data), progress)
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
