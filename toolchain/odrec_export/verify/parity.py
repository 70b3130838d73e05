"""``verify DIR``: prove that an artifact behaves like the model it was built from, here and on ARM64.

Checks, each reported per platform (see docs/parity.md for what "parity" means here):

1. integrity: every file's size and sha256 against the manifest, the manifest in its canonical form,
   the id map, and the graph (loads, opset, IR version, input/output names and dtypes, tables);
2. contract (x86-64): outputs of onnxruntime on this host have the contract's shape, ids in 1..N,
   descending scores, no NaN, and the same answer twice; ort-format: model.ort, when present,
   answers like model.onnx;
3. reference (x86-64): the PyTorch model from the checkpoint, with the same quantisation scheme
   (computed here, independently of the exporter's quantiser), against onnxruntime on this host;
4. arm64 (one row per CPU model): onnxruntime's aarch64 build under qemu against x86-64.

Parity rule (the same for every comparison): scores at every rank within ``SCORE_RTOL`` × max(1, |top score|)
of the row, and top-k ids identical except where the scores involved tie within that tolerance.
Inputs: real sessions (from ``--data``, or sampled from the id map) plus edge cases.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import compressors
from ..errors import OdrecError
from ..export import artifact as A
from ..export.onnx_runtime import ort_session

SCORE_RTOL = 1e-4
DEFAULT_SESSIONS = 200
CHUNK_ROWS = 64  # rows per onnxruntime call: bounds the B × M × N score parts in memory
PASS, FAIL, NOT_CHECKED = "pass", "fail", "not checked"


class VerifyInputError(OdrecError):
    """Input verify cannot use at all (no artifact, unreadable checkpoint or data): exit 2."""

    exit_code = 2


@dataclass
class Check:
    check: str  # integrity | contract | reference | arm64
    platform: str  # stable key: "any", "x86_64" or the ARM CPU model
    label: str  # what ran, for the table
    status: str = PASS
    max_score_diff: float | None = None
    topk: str | None = None  # e.g. "312/312 identical" or "310/312 identical, 2 tie swaps"
    details: list[str] = field(default_factory=list)
    seconds: float | None = None  # wall time of the run this check compared (the guest process for arm64)
    _seen: dict = field(default_factory=dict, repr=False)  # error text → (details index, first message, repeats)

    def fail(self, message: str) -> None:
        """Record a failure. The same error on further batches ("<case>: <error>") is counted on the
        first one's line instead of repeated (a damaged model fails every batch alike)."""
        self.status = FAIL
        _, sep, error = message.partition(": ")
        if sep and error in self._seen:
            first, original, repeats = self._seen[error]
            self._seen[error] = (first, original, repeats + 1)
            self.details[first] = f"{original} (and {repeats + 1} more batches alike)"
            return
        if sep:
            self._seen[error] = (len(self.details), message, 0)
        self.details.append(message)


@dataclass
class Case:
    """One batch given to the graph as is (padding, out-of-range ids and all)."""

    name: str
    ids: np.ndarray  # B × L int64


@dataclass
class Report:
    artifact: str
    checks: list[Check]
    cases: list[Case]
    tolerance: str

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == FAIL for c in self.checks) else 0

    def to_json(self) -> dict:
        grouped: dict = {}
        for c in self.checks:
            grouped.setdefault(c.check, {})[c.platform] = {k: v for k, v in asdict(c).items()
                                                           if k not in ("check", "platform", "_seen")}
        return {"artifact": self.artifact, "passed": self.exit_code == 0, "exit_code": self.exit_code,
                "tolerance": self.tolerance, "checks": grouped,
                "inputs": [{"case": c.name, "rows": int(c.ids.shape[0]), "width": int(c.ids.shape[1])}
                           for c in self.cases]}

    def table(self) -> str:
        rows = [("check", "platform", "max score diff", "top-k agreement", "result")]
        for c in self.checks:
            diff = "-" if c.max_score_diff is None else f"{c.max_score_diff:.2e}"
            rows.append((c.check, c.label, diff, c.topk or "-", c.status))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for c in self.checks:
            lines += [f"{c.check} [{c.label}] {c.status}: {d}" for d in c.details]
        if self.cases:
            n_rows = sum(int(c.ids.shape[0]) for c in self.cases)
            lines.append(f"inputs: {n_rows} sessions in {len(self.cases)} batches "
                         f"({', '.join(c.name for c in self.cases)}); tolerance: {self.tolerance}")
        else:
            lines.append("no input was run: the artifact could not be loaded")
        lines.append("verdict: " + ("PASS" if self.exit_code == 0 else "FAIL")
                     + ("" if all(c.status != NOT_CHECKED for c in self.checks)
                        else " (some checks were not run, see above)"))
        return "\n".join(lines)


# --------------------------------------------------------------------------- 1. integrity


def check_integrity(folder: Path) -> tuple[Check, dict | None, object, list[str] | None]:
    """(check, manifest, onnx model, items); model is None when nothing can run. Raises
    VerifyInputError for a directory that is not an artifact at all."""
    import onnx

    check = Check("integrity", "any", "files + graph")
    if not folder.is_dir():
        raise VerifyInputError(f"{folder}: no such artifact directory")
    if not (folder / A.MANIFEST_FILE).is_file():
        raise VerifyInputError(f"{folder}: no {A.MANIFEST_FILE} (not an odrec-export artifact)")
    try:
        manifest = A.read_manifest(folder)
    except A.ArtifactError as e:
        check.fail(str(e))
        return check, None, None, None
    with tempfile.TemporaryDirectory() as tmp:  # the manifest must be exactly what the exporter writes
        A.write_manifest(Path(tmp), manifest)
        if (Path(tmp) / A.MANIFEST_FILE).read_bytes() != (folder / A.MANIFEST_FILE).read_bytes():
            check.fail(f"{A.MANIFEST_FILE}: not in the form the exporter writes (edited or corrupted)")

    bad = [k for k in ("num_items", "top_k", "max_session_length")
           if type(manifest.get(k)) is not int or manifest[k] < 1]
    for key in bad:
        check.fail(f"{A.MANIFEST_FILE}: field '{key}' is missing or not a positive integer")
    if bad:  # nothing below can be interpreted without them
        return check, None, None, None

    try:
        ids_name = A.id_map_file(manifest)
    except A.ArtifactError as e:
        check.fail(str(e))
        return check, None, None, None
    files = manifest.get("files")
    if not isinstance(files, dict) or A.MODEL_FILE not in files or ids_name not in files:
        check.fail(f"{A.MANIFEST_FILE}: field 'files' does not list {A.MODEL_FILE} and {ids_name}")
        files = files if isinstance(files, dict) else {}
    for name, info in sorted(files.items()):
        path = folder / name
        if Path(name).name != name or name in (".", "..") or not isinstance(info, dict):
            check.fail(f"{A.MANIFEST_FILE}: malformed 'files' entry {name!r}")
            continue
        if not path.is_file():
            check.fail(f"{name}: listed in the manifest but missing")
            continue
        size = path.stat().st_size
        if size != info.get("bytes"):
            check.fail(f"{name}: bytes {size} != manifest {info.get('bytes')}")
        if A.file_sha256(path) != info.get("sha256"):
            check.fail(f"{name}: sha256 differs from the manifest")

    num_items = manifest.get("num_items")
    items = None
    if (folder / ids_name).is_file():
        try:
            items = A.read_items(folder, manifest)
        except A.ArtifactError as e:
            check.fail(str(e).removeprefix(f"{folder}: "))
            return check, manifest, None, None
        if len(items) != num_items:
            check.fail(f"{ids_name}: {len(items)} ids, manifest num_items is {num_items}")
        if len(set(items)) != len(items):
            check.fail(f"{ids_name}: duplicate raw item ids")

    model = None
    model_path = folder / A.MODEL_FILE
    if not model_path.is_file():
        check.fail(f"{A.MODEL_FILE}: missing")
        return check, manifest, None, items
    try:
        model = onnx.load(str(model_path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf's DecodeError and onnx's ValidationError share no useful base
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        check.fail(f"{A.MODEL_FILE}: not a loadable ONNX graph (truncated or corrupted?): {first}")
        return check, manifest, None, items
    _check_graph(check, model, manifest)
    return check, manifest, model if items is not None else None, items


def _check_graph(check: Check, model, manifest: dict) -> None:
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if not A.MIN_OPSET <= (opset or 0) <= A.MAX_OPSET:
        check.fail(f"{A.MODEL_FILE}: opset {opset} outside {A.MIN_OPSET}..{A.MAX_OPSET}")
    m_opset = manifest.get("opset")
    if m_opset is not None and m_opset != opset:
        check.fail(f"{A.MODEL_FILE}: opset {opset} != manifest opset {m_opset}")
    if model.ir_version > A.MAX_IR_VERSION:
        check.fail(f"{A.MODEL_FILE}: IR version {model.ir_version} > {A.MAX_IR_VERSION}")
    m_ir = manifest.get("ir_version")
    if m_ir is not None and m_ir != model.ir_version:
        check.fail(f"{A.MODEL_FILE}: IR version {model.ir_version} != manifest ir_version {m_ir}")

    def described(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            out.append({"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                        "rank": len(t.shape.dim)})
        return out

    for role, got, want in (("input", described(model.graph.input), A.INPUTS),
                            ("output", described(model.graph.output), A.OUTPUTS)):
        want_plain = [{"name": w["name"], "dtype": w["dtype"], "rank": len(w["shape"])} for w in want]
        if sorted(got, key=lambda x: x["name"]) != sorted(want_plain, key=lambda x: x["name"]):
            check.fail(f"{A.MODEL_FILE}: {role}s {got} differ from the contract {want_plain}")
        listed = manifest.get(role + "s")
        if isinstance(listed, list):
            plain = [{"name": x.get("name"), "dtype": x.get("dtype")} for x in listed if isinstance(x, dict)]
            if sorted(plain, key=str) != sorted(({"name": g["name"], "dtype": g["dtype"]} for g in got), key=str):
                check.fail(f"{A.MODEL_FILE}: {role}s differ from manifest field '{role}s'")
    seq = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    if any(d.dim_value for d in seq):
        check.fail(f"{A.MODEL_FILE}: input axes must be dynamic, got {[d.dim_value or d.dim_param for d in seq]}")

    inits = {t.name: t for t in model.graph.initializer}
    top_k = manifest.get("top_k")
    k_dim = model.graph.output[0].type.tensor_type.shape.dim if model.graph.output else []
    if len(k_dim) == 2 and k_dim[1].dim_value and k_dim[1].dim_value != top_k:
        check.fail(f"{A.MODEL_FILE}: outputs give top {k_dim[1].dim_value}, manifest top_k is {top_k}")
    name = (manifest.get("compressor") or {}).get("name") if isinstance(manifest.get("compressor"), dict) else None
    if name in compressors.names():
        for problem in compressors.get(name).check_graph(inits, manifest):
            check.fail(problem)
    else:
        check.fail(f"{A.MANIFEST_FILE}: unknown compressor {name!r} (known: {', '.join(compressors.names())})")
    try:
        ort_session(model, log_level=QUIET)
    except Exception as e:
        check.fail(f"{A.MODEL_FILE}: onnxruntime refuses it: {str(e).strip().splitlines()[0][:160]}")


# --------------------------------------------------------------------------- inputs


def _left_pad(rows: list[list[int]], width: int | None = None) -> np.ndarray:
    width = width or max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, width - len(r):] = r
    return out


def build_cases(num_items: int, max_len: int, real: list[list[int]], real_name: str) -> list[Case]:
    """Real sessions in chunks, then every edge case of the contract."""
    rng = np.random.default_rng(1)
    n = num_items
    cases = [Case(f"{real_name} [{i // CHUNK_ROWS + 1}]", _left_pad(real[i:i + CHUNK_ROWS]))
             for i in range(0, len(real), CHUNK_ROWS)]

    def some(count):
        return rng.integers(1, n + 1, size=count).tolist()

    cases.append(Case("length 1", _left_pad([[1], [n], *[[i] for i in some(6)]])))
    cases.append(Case("batch of 1", _left_pad([real[0] if real else some(5)])))
    cases.append(Case("max length", _left_pad([some(max_len) for _ in range(4)])))
    cases.append(Case("over-long", _left_pad([some(2 * max_len + 7) for _ in range(4)])))
    s = some(5)
    cases.append(Case("padding anywhere", np.array([
        [0] * 7 + s, s + [0] * 7, s[:2] + [0] * 7 + s[2:], [0, s[0], 0, s[1], 0, s[2], 0, s[3], 0, s[4], 0, 0]],
        dtype=np.int64)))
    big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    cases.append(Case("out-of-range ids", np.array([
        [-1, s[0], n + 1, s[1], s[2]], [s[0], s[1], big, s[2], -7], [small, s[0], s[1], s[2], n + 1000],
        [-1, -2, n + 1, big, small]], dtype=np.int64)))
    cases.append(Case("all padding", np.zeros((2, max_len), dtype=np.int64)))
    cases.append(Case("length 0", np.zeros((2, 0), dtype=np.int64)))
    return cases


def real_sessions(manifest: dict, items: list[str], data: Path | None, count: int) -> tuple[list[list[int]], str]:
    """Session prefixes (artifact indices) from --data, or random sessions over the id map."""
    from ..data.sessions import Vocabulary, load_sessions, remap_samples_or_fail

    rng = np.random.default_rng(0)
    num_items, max_len = len(items), int(manifest["max_session_length"])
    if data is None:
        lengths = rng.integers(1, max_len + 1, size=count)
        return [rng.integers(1, num_items + 1, size=int(k)).tolist() for k in lengths], "sampled sessions"
    try:
        sessions = load_sessions(data)
    except OdrecError as e:
        raise VerifyInputError(f"--data: {e}") from None
    samples = sessions.test_samples or sessions.valid_samples or sessions.train_samples()
    try:
        samples, _ = remap_samples_or_fail(samples, sessions.vocab, Vocabulary(items), where=f"--data {data}",
                                           what="session", known_by="the artifact")
    except OdrecError as e:
        raise VerifyInputError(str(e) if str(e).startswith("--data ") else f"--data: {e}") from None
    pick = rng.choice(len(samples), size=min(count, len(samples)), replace=False)
    return [samples[i][0] for i in sorted(pick)], "real sessions"


# --------------------------------------------------------------------------- running and comparing


QUIET = 4  # onnxruntime's log level here: failures are reported in the table, not as its log lines


def run_host(model_path: Path, cases: list[Case], config: dict | None = None) -> list:
    """Outputs per case ({name: array}), or the error text where onnxruntime failed on that input."""
    # one thread (bitwise results may change with the thread count); a path, so that onnxruntime tells
    # .ort from .onnx
    sess = ort_session(model_path, threads=1, inter_threads=1, log_level=QUIET, config=config)
    names = [o.name for o in sess.get_outputs()]
    if not {A.OUTPUT_IDS, A.OUTPUT_SCORES} <= set(names):
        return [f"outputs are {names}, not {A.OUTPUT_IDS} and {A.OUTPUT_SCORES}"] * len(cases)
    outs = []
    for c in cases:
        try:
            outs.append(dict(zip(names, sess.run(None, {A.INPUT_NAME: c.ids}))))
        except Exception as e:  # onnxruntime's exception types; any means the graph failed on this input
            outs.append(f"onnxruntime failed: {str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}")
    return outs


@dataclass
class Agreement:
    rows: int = 0
    identical: int = 0
    tie_swaps: int = 0
    max_diff: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.identical}/{self.rows} identical"
        return text + (f", {self.tie_swaps} tie swaps" if self.tie_swaps else "")


def accumulate_parity(case: Case, ref_ids, ref_scores, ids, scores, agreement: Agreement,
                      rtol: float = SCORE_RTOL) -> None:
    """Accumulate the parity rule for one batch into ``agreement`` (see the module docstring)."""
    if ids.shape != ref_ids.shape or scores.shape != ref_scores.shape:
        agreement.problems.append(f"{case.name}: output shape {ids.shape} != {ref_ids.shape}")
        return
    for row in range(ids.shape[0]):
        agreement.rows += 1
        a, b, sa, sb = ref_ids[row], ids[row], ref_scores[row].astype(np.float64), scores[row].astype(np.float64)
        if not (np.isfinite(sa).all() and np.isfinite(sb).all()):
            agreement.problems.append(f"{case.name} row {row}: non-finite scores")
            continue
        tol = rtol * max(1.0, float(np.abs(sa).max()))
        diff = float(np.abs(sa - sb).max())
        agreement.max_diff = max(agreement.max_diff, diff)
        if diff > tol:
            j = int(np.abs(sa - sb).argmax())
            agreement.problems.append(f"{case.name} row {row}: score at rank {j + 1} differs by {diff:.3g} "
                                      f"(tolerance {tol:.3g})")
            continue
        if np.array_equal(a, b):
            agreement.identical += 1
            continue
        pos_b = {int(v): j for j, v in enumerate(b)}
        pos_a = {int(v): j for j, v in enumerate(a)}
        bad = None
        for j in np.flatnonzero(a != b):
            for item, score, other_pos, other_scores in ((int(a[j]), sa[j], pos_b, sb), (int(b[j]), sb[j], pos_a, sa)):
                # A differing id is fine only when it ties: at its rank on the other side, or at the
                # cut-off (k-th score) when it fell out of the other side's top k.
                where = other_pos.get(item, len(other_scores) - 1)
                if abs(score - other_scores[where]) > tol:
                    bad = (j, item)
        if bad:
            agreement.problems.append(f"{case.name} row {row}: rank {bad[0] + 1} holds item {bad[1]} on one "
                                      f"side only, with no score tie within {tol:.3g}")
        else:
            agreement.tie_swaps += 1


def check_contract(cases: list[Case], outputs: list[dict], again: dict, num_items: int, top_k: int,
                   label: str) -> Check:
    check = Check("contract", "x86_64", label)
    for case, out in zip(cases, outputs):
        if isinstance(out, str):
            check.fail(f"{case.name}: {out}")
            continue
        ids, scores = out[A.OUTPUT_IDS], out[A.OUTPUT_SCORES]
        want = (case.ids.shape[0], min(top_k, num_items))
        if ids.dtype != np.int64 or scores.dtype != np.float32:
            check.fail(f"{case.name}: dtypes {ids.dtype}/{scores.dtype}, contract int64/float32")
        if ids.shape != want or scores.shape != want:
            check.fail(f"{case.name}: output shape {ids.shape}, contract {want}")
            continue
        if ids.min() < 1 or ids.max() > num_items:
            check.fail(f"{case.name}: top_ids outside 1..{num_items} ({ids.min()}..{ids.max()})")
        if not np.isfinite(scores).all():
            check.fail(f"{case.name}: NaN or infinite scores")
        elif (np.diff(scores, axis=1) > 0).any():
            check.fail(f"{case.name}: top_scores not descending")
        if any(len(set(r.tolist())) != len(r) for r in ids):
            check.fail(f"{case.name}: repeated ids within a row")
    first = outputs[0]
    if isinstance(first, dict) and isinstance(again, dict) and not all(np.array_equal(first[k], again[k]) for k in first):
        check.fail(f"{cases[0].name}: two runs on the same input gave different outputs")
    return check


def _parity_check(name: str, platform_key: str, label: str, cases, reference: list[dict], outputs: list) -> Check:
    check, agreement = Check(name, platform_key, label), Agreement()
    for case, ref, out in zip(cases, reference, outputs):
        if isinstance(out, str):
            check.fail(f"{case.name}: {out}")
            continue
        if isinstance(ref, str):  # the side compared against failed; the contract row says why
            check.fail(f"{case.name}: not compared, the reference side failed")
            continue
        accumulate_parity(case, ref[A.OUTPUT_IDS], ref[A.OUTPUT_SCORES], out[A.OUTPUT_IDS], out[A.OUTPUT_SCORES],
                          agreement)
    check.max_score_diff, check.topk = agreement.max_diff, agreement.summary()
    for p in agreement.problems[:10]:
        check.fail(p)
    if len(agreement.problems) > 10:
        check.fail(f"... and {len(agreement.problems) - 10} more rows")
    return check


# --------------------------------------------------------------------------- 2. reference (PyTorch)

ACCURACY_LEVEL = "session.qdq_matmulnbits_accuracy_level"


def _matmulnbits_hint(model_path: Path, cases, ref) -> str:
    """int8 MatMul weights: onnxruntime fuses DequantizeLinear + MatMul into MatMulNBits, which at its
    default accuracy level (4) also quantises the activations to int8. Say what level 1 (fp32
    compute) would give, so the user knows whether the weights or the runtime's fusion differ."""
    alt = _parity_check("reference", "x86_64", "", cases, ref, run_host(model_path, cases, {ACCURACY_LEVEL: "1"}))
    return (f"hint: the graph has int8 MatMul weights; onnxruntime's MatMulNBits fusion quantises activations at "
            f"its default accuracy level 4; with {ACCURACY_LEVEL}=1 the max score diff is "
            f"{alt.max_score_diff:.2e} ({alt.status})")


def _reference_checkpoint(folder: Path, manifest: dict, ckpt: Path | None) -> tuple[Path | None, str | None]:
    """(checkpoint path, or None with the reason it is not available)."""
    info = manifest.get("source_checkpoint")
    want_sha = info.get("sha256") if isinstance(info, dict) else manifest.get("source_checkpoint_sha256")
    if ckpt is not None:
        if not Path(ckpt).is_file():
            raise VerifyInputError(f"--ckpt {ckpt}: no such file")
        if want_sha and A.file_sha256(ckpt) != want_sha:
            raise VerifyInputError(f"--ckpt {ckpt}: not the checkpoint this artifact was built from "
                                   f"(sha256 differs from the manifest's)")
        return Path(ckpt), None
    path = info.get("path") if isinstance(info, dict) else None
    if not path:
        return None, "no --ckpt given and the manifest names no checkpoint path (pass --ckpt CKPT)"
    candidates = [Path(path), folder / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        return None, f"no --ckpt given and the manifest's checkpoint {path} is not reachable"
    if want_sha and A.file_sha256(found) != want_sha:
        return None, f"the manifest's checkpoint {found} has changed since the build (sha256 differs)"
    return found, None


def reference_outputs(ckpt_path: Path, manifest: dict, items: list[str], cases: list[Case],
                      graph=None) -> list[dict]:
    """Top-k of the PyTorch model, with the artifact's quantisation (codebooks, and the encoder's
    Linear weights when the manifest says int8) and the contract's input rules."""
    import torch

    from ..checkpoint import load_checkpoint
    from ..data.sessions import pad_batch
    from ..models.registry import model_from_checkpoint

    try:
        ckpt = load_checkpoint(ckpt_path)
        model = model_from_checkpoint(ckpt, str(ckpt_path))
    except OdrecError as e:
        raise VerifyInputError(str(e)) from None
    if [str(v) for v in ckpt.vocab] != items:
        bad = next((i for i, (a, b) in enumerate(zip(ckpt.vocab, items)) if str(a) != b), min(len(items), len(ckpt.vocab)))
        name = A.id_map_file(manifest)
        where = f"line {bad + 1}" if name == A.ITEMS_FILE else f"id {bad + 1}"
        raise ReferenceMismatch(f"{name}: {where} does not match the checkpoint's vocabulary "
                             f"({items[bad] if bad < len(items) else 'missing'!r} vs "
                             f"{str(ckpt.vocab[bad]) if bad < len(ckpt.vocab) else 'missing'!r})")
    compressors.get(ckpt.config.get("compressor", compressors.UNCOMPRESSED)).match_artifact(model.items, manifest, quantised_rows)
    encoder_quant = str((manifest.get("quantisation") or {}).get("encoder", "fp32"))
    if encoder_quant.startswith("int8"):
        _quantise_encoder_like_graph(model.encoder, graph)
    elif encoder_quant.startswith("fp16"):
        _round_encoder_like_graph(model.encoder, graph)
    n, max_len, k = model.num_items, model.encoder.cfg.max_len, min(int(manifest["top_k"]), model.num_items)
    popular = _popular_answer(ckpt.provenance.get("popular_items"), graph, k)
    out = []
    with torch.no_grad():
        for case in cases:
            rows = [[int(i) for i in r if 1 <= i <= n] for r in case.ids]
            scores = model.scores(torch.from_numpy(pad_batch(rows, max_len)))[:, 1:]
            top = torch.topk(scores, k, dim=1)
            ids, values = (top.indices + 1).numpy(), top.values.numpy()
            if popular is not None:  # the contract: a session with no known item gets the popular items
                empty = np.array([not r for r in rows], dtype=bool)
                ids[empty], values[empty] = popular
            out.append({A.OUTPUT_IDS: ids, A.OUTPUT_SCORES: values})
    return out


def _popular_answer(recorded: dict | None, graph, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """What a session with no known item should get: the checkpoint's recorded popular items (their
    top k, scored log(1 + clicks)); for an artifact built with --popular-from, the graph's own."""
    has_popular = graph is not None and any(i.name == A.POPULAR_IDS for i in graph.graph.initializer)
    if not has_popular:
        return None
    if recorded is not None and len(recorded["ids"]) >= k:
        return (np.array(recorded["ids"][:k], np.int64),
                np.log1p(np.array(recorded["clicks"][:k], np.float64)).astype(np.float32))
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer
              if i.name in (A.POPULAR_IDS, A.POPULAR_SCORES)}
    return arrays[A.POPULAR_IDS][0], arrays[A.POPULAR_SCORES][0]


class ReferenceMismatch(Exception):
    """The checkpoint cannot be the artifact's source: the reference check fails with this message."""


def _quantise_encoder_like_graph(encoder, graph) -> None:
    """Give every nn.Linear whose weight the graph stores as int8 verify's own int8 round trip.

    The graph says *which* weights are int8 (``<name>_int8`` + ``<name>_scale``, W as in × out, one
    scale per output column); the values come from the checkpoint through ``int8_round_trip`` (not the
    exporter's quantiser), so a tampered weight or a wrong quantiser still shows up as a parity failure.
    """
    import torch
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.graph.initializer}
    stored = [(n, numpy_helper.to_array(inits[n]).astype(np.float32), numpy_helper.to_array(inits[n[:-5] + "_scale"]))
              for n in inits if n.endswith("_int8") and n[:-5] + "_scale" in inits]
    matched = set()
    for lin in (m for m in encoder.modules() if isinstance(m, torch.nn.Linear)):
        w = lin.weight.detach().float().numpy()  # out × in
        for name, q, scale in stored:
            if name not in matched and q.shape == w.T.shape and np.all(np.abs(q * scale - w.T) <= 0.51 * scale + 1e-7):
                with torch.no_grad():
                    lin.weight.copy_(int8_round_trip(lin.weight))  # one scale per output unit (row)
                matched.add(name)
                break
    if len(matched) != len(stored):
        missing = sorted({n for n, _, _ in stored} - matched)
        raise ReferenceMismatch(f"{A.MODEL_FILE}: int8 encoder weight {missing[0]} matches no Linear layer of the "
                                f"checkpoint ({len(matched)}/{len(stored)} matched)")


def _round_encoder_like_graph(encoder, graph) -> None:
    """Give every nn.Linear whose weight the graph stores as float16 (``<name>_fp16``, W as in × out)
    the same float16 round trip; a weight the checkpoint does not explain fails the reference check."""
    import torch
    from onnx import numpy_helper

    stored = [numpy_helper.to_array(t).astype(np.float32) for t in graph.graph.initializer
              if t.name.endswith("_fp16")]
    matched = 0
    for lin in (m for m in encoder.modules() if isinstance(m, torch.nn.Linear)):
        rounded = lin.weight.detach().half().float()
        if any(w.shape == rounded.T.shape and np.array_equal(w, rounded.T.numpy()) for w in stored):
            with torch.no_grad():
                lin.weight.copy_(rounded)
            matched += 1
    if matched != len(stored):
        raise ReferenceMismatch(f"{A.MODEL_FILE}: {len(stored) - matched} fp16 encoder weight(s) match no Linear "
                                f"layer of the checkpoint ({matched}/{len(stored)} matched)")


def int8_round_trip(rows):
    """``rows`` (R × C tensor) after the artifact's int8 scheme, computed here on purpose rather than with
    the exporter's ``quantise.quantise_rows``, so that a fault in that quantiser cannot hide itself:
    symmetric, one scale per row = max|row| / 127 (1 for an all-zero row), values rounded half to even
    and clipped to [-127, 127], then dequantised (values × scale) in float32."""
    import torch

    rows = rows.detach().to(torch.float32)
    amax = rows.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    values = torch.clamp(torch.round(rows / scale[:, None]), -127, 127)  # torch.round: half to even
    return values * scale[:, None]


def quantised_rows(rows, quant: str):
    """Rows (R × C tensor, e.g. codebooks) after the artifact's quantisation round trip (verify's own)."""
    if quant != "int8":
        raise VerifyInputError(f"manifest quantisation {quant!r}: verify knows int8 and fp32")
    return int8_round_trip(rows)


# --------------------------------------------------------------------------- the whole verification


def verify(folder: str | Path, ckpt: str | Path | None = None, data: str | Path | None = None,
           arm: bool = True, arm_cache: str | Path | None = None, arm_cpus=None,
           sessions: int = DEFAULT_SESSIONS, arm_mirror: str | None = None, log=lambda msg: None) -> Report:
    import onnxruntime as ort

    folder = Path(folder)
    host = f"{platform.machine()} onnxruntime {ort.__version__}"
    tolerance = f"|score diff| <= {SCORE_RTOL:g} x max(1, |top score of the row|); ids equal unless tied"
    integrity, manifest, model, items = check_integrity(folder)
    checks = [integrity]
    if model is None:
        return Report(str(folder), checks, [], tolerance)

    num_items, max_len, top_k = len(items), int(manifest["max_session_length"]), int(manifest["top_k"])
    real, real_name = real_sessions(manifest, items, Path(data) if data else None, sessions)
    cases = build_cases(num_items, max_len, real, real_name)
    model_path = folder / A.MODEL_FILE
    log(f"verify: {sum(len(c.ids) for c in cases)} sessions in {len(cases)} batches on {host}")
    t0 = time.perf_counter()
    x86 = run_host(model_path, cases)
    x86_seconds = round(time.perf_counter() - t0, 2)
    checks.append(check_contract(cases, x86, run_host(model_path, cases[:1])[0], num_items, top_k, host))
    checks[-1].seconds = x86_seconds

    if A.ORT_FILE in manifest.get("files", {}) and (folder / A.ORT_FILE).is_file():
        label = f"{host}, {A.ORT_FILE} vs {A.MODEL_FILE}"
        try:
            ort_out = run_host(folder / A.ORT_FILE, cases)
            checks.append(_parity_check("ort-format", "x86_64", label, cases, x86, ort_out))
        except Exception as e:  # onnxruntime's own exception types; any of them means "refused"
            checks.append(Check("ort-format", "x86_64", label, FAIL,
                                details=[f"{A.ORT_FILE}: onnxruntime refuses it: {str(e).strip()[:160]}"]))

    ckpt_path, why_not = _reference_checkpoint(folder, manifest, Path(ckpt) if ckpt else None)
    ref_platform = f"{host} vs PyTorch"
    if ckpt_path is None:
        checks.append(Check("reference", "x86_64", ref_platform, NOT_CHECKED, details=[why_not]))
    else:
        log(f"verify: PyTorch reference from {ckpt_path}")
        try:
            ref = reference_outputs(ckpt_path, manifest, items, cases, model)
            checks.append(_parity_check("reference", "x86_64", ref_platform, cases, ref, x86))
            if checks[-1].status == FAIL and any(t.name.endswith("_int8") for t in model.graph.initializer):
                checks[-1].details.insert(0, _matmulnbits_hint(model_path, cases, ref))
        except ReferenceMismatch as e:
            checks.append(Check("reference", "x86_64", ref_platform, FAIL, details=[str(e)]))

    if arm:
        checks += _arm_checks(model_path, cases, x86, arm_cache, arm_cpus, arm_mirror, log)
    return Report(str(folder), checks, cases, tolerance)


def _arm_checks(model_path: Path, cases, x86, cache, cpus, mirror, log) -> list[Check]:
    from . import arm_runtime as R

    cpus = list(cpus or R.DEFAULT_CPUS)
    try:
        kwargs = {"mirror": mirror} if mirror else {}
        runtime = R.provision(cache, log=log, **kwargs)
    except R.ArmUnavailable as e:
        return [Check("arm64", cpu, f"aarch64 {cpu} (qemu)", NOT_CHECKED, details=[str(e)]) for cpu in cpus]
    checks = []
    for cpu in cpus:
        name = f"aarch64 {cpu} (qemu) vs x86"
        log(f"verify: onnxruntime aarch64 on {cpu} (one emulated process, {len(cases)} batches)")
        try:
            run = runtime.run(cpu, [(model_path, {A.INPUT_NAME: c.ids}) for c in cases])
        except (R.ArmRunError, R.ArmUnavailable) as e:
            checks.append(Check("arm64", cpu, name, FAIL, details=[str(e)]))
            continue
        outs = [r.outputs if r.outputs is not None else f"onnxruntime aarch64 failed: {r.error}" for r in run.results]
        check = _parity_check("arm64", cpu, name, cases, x86, outs)
        check.seconds = round(run.wall_seconds, 2)
        if run.machine != "aarch64":
            check.fail(f"guest reports machine {run.machine!r}, not aarch64")
        checks.append(check)
    return checks
