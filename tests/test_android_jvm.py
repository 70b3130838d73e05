"""The Android demo's inference class on a desktop JVM (android_demo/jvm_test.sh).

jvm_test.sh compiles android_demo's Recommender.java against onnxruntime Java 1.17 (linux-x64),
and checks its top-k ids and scores against Python onnxruntime (odrec_export.verify.android_fixture) plus
the clear-error cases (corrupted model, mismatched items.txt / manifest). It needs a JDK; the first
run fetches onnxruntime Java from PyPI into android_demo/.cache (pinned sha256).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
JVM_TEST = ROOT / "android_demo" / "jvm_test.sh"

pytestmark = pytest.mark.skipif(shutil.which("javac") is None or shutil.which("java") is None,
                                reason="no JDK (javac/java) on PATH: the Android JVM test needs one")


def contract_artifact(folder: Path, num_items: int = 40, dim: int = 8, top_k: int = 10,
                      max_len: int = 6, seed: int = 0) -> Path:
    """A small artifact that follows the contract (names, dtypes, padding, over-long sessions) with a
    plain float item table: sum of the most recent `max_len` item vectors · every item vector."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    table = rng.normal(size=(num_items + 1, dim)).astype(np.float32)
    table[0] = 0.0
    mask = np.zeros((1, num_items + 1), np.float32)
    mask[0, 0] = -1e9  # index 0 (padding) is never recommended
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(table.T.copy(), "table_t"),
             numpy_helper.from_array(mask, "pad_mask"),
             numpy_helper.from_array(np.array([-max_len], np.int64), "start"),
             numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "end"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(num_items, np.int64), "n"),
             numpy_helper.from_array(np.array([top_k], np.int64), "k")]
    nodes = [
        helper.make_node("Slice", ["item_ids", "start", "end", "axis1"], ["recent"]),
        helper.make_node("Less", ["recent", "zero"], ["neg"]),
        helper.make_node("Greater", ["recent", "n"], ["big"]),
        helper.make_node("Or", ["neg", "big"], ["bad"]),
        helper.make_node("Where", ["bad", "zero", "recent"], ["clean"]),
        helper.make_node("Gather", ["table", "clean"], ["vecs"]),
        helper.make_node("ReduceSum", ["vecs", "axis1"], ["sess"], keepdims=0),
        helper.make_node("MatMul", ["sess", "table_t"], ["raw"]),
        helper.make_node("Add", ["raw", "pad_mask"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_ids"], axis=1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes, "contract_toy",
        [helper.make_tensor_value_info("item_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["batch", "k"]),
         helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["batch", "k"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    (folder / "items.txt").write_text("".join(f"sku-{1000 + 7 * i}\n" for i in range(1, num_items + 1)))
    files = {n: {"bytes": (folder / n).stat().st_size,
                 "sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest()} for n in ("items.txt", "model.onnx")}
    manifest = {"format": "odrec-export-artifact", "format_version": 1, "num_items": num_items, "top_k": top_k,
                "max_session_length": max_len, "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


def run_jvm_test(artifact: Path, fixture: Path | None = None) -> tuple[int, str, tuple[int, int]]:
    cmd = ["bash", str(JVM_TEST), str(artifact)] + ([str(fixture)] if fixture else [])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    found = re.findall(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    counts = tuple(map(int, found[-1])) if found else (0, 0)
    return proc.returncode, out, counts


def test_jvm_matches_python_onnxruntime_on_built_artifact(tmp_path, tiny_checkpoints, diginetica):
    """The real thing: `odrec-export build` of a small codes student (Diginetica sample, int8
    codebooks, a fitted repeat bonus, evaluated) must load in onnxruntime Java 1.17 and agree with
    Python onnxruntime."""
    from conftest import DIGINETICA, fit_bonus_checkpoint
    from odrec_export.export import BuildOptions, build

    student = tmp_path / "student_repeat.pt"
    fit_bonus_checkpoint(tiny_checkpoints[1], diginetica.valid_samples, student)
    art = tmp_path / "artifact"
    build(student, art, BuildOptions(quant="int8", top_k=10), eval_data=DIGINETICA)
    rc, out, (passed, failed) = run_jvm_test(art)
    assert rc == 0, out
    assert failed == 0 and passed >= 20, out
    assert "HR@10" in out, out  # the manifest's accuracy figures, as the app shows them


def test_jvm_matches_python_onnxruntime_on_contract_artifact(tmp_path):
    """Without ../shared: a hand-built graph that follows the artifact contract."""
    art = contract_artifact(tmp_path / "art")
    rc, out, (passed, failed) = run_jvm_test(art)
    assert rc == 0, out
    assert failed == 0 and passed >= 20, out
    # every clear-error case printed its message
    assert "model.onnx is corrupted" in out and "mismatched artifact" in out, out


def test_jvm_test_fails_when_java_and_python_disagree(tmp_path):
    """The comparison can fail: a fixture from another artifact (other weights, same catalogue)."""
    import sys

    art = contract_artifact(tmp_path / "art", seed=0)
    other = contract_artifact(tmp_path / "other", seed=1)
    fixture = tmp_path / "other.json"
    subprocess.run([sys.executable, "-m", "odrec_export.verify.android_fixture", str(other), str(fixture)],
                   cwd=ROOT, check=True, capture_output=True)
    rc, out, (passed, failed) = run_jvm_test(art, fixture)
    assert rc != 0, out
    assert failed >= 10, out


def test_jvm_test_rejects_a_missing_artifact(tmp_path):
    proc = subprocess.run(["bash", str(JVM_TEST), str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "manifest.json" in proc.stderr
