"""The ARM64 onnxruntime under qemu: provisioned once into the repo's .cache (reused by later runs on
the same machine), then a tiny onnx.helper model runs in ONE guest process and must agree with
onnxruntime on this host. Provisioning needs Debian's archive and PyPI; without them the tests skip
and say so (verify itself then reports ARM as "not checked")."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from odrec_export.verify.arm_runtime import CPU_MODELS, ArmUnavailable, default_cache_dir, provision
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def arm_runtime():
    # The default cache, reached through a relative path from the repository root: a relative
    # --arm-cache once broke the private apt configuration on a cold cache.
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        runtime = provision(os.path.relpath(default_cache_dir(), REPO))
    except ArmUnavailable as e:
        pytest.skip(f"ARM64 runtime not provisionable here: {e}")
    finally:
        os.chdir(cwd)
    assert runtime.root == default_cache_dir().resolve()
    return runtime


def tiny_model(path: Path, n: int = 3000, d: int = 64) -> Path:
    """Gather (out-of-range ids clipped to 0) → mean → MatMul over n items → TopK: a recommender in miniature."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((n, d)).astype(np.float32)
    table[0] = 0
    nodes = [
        helper.make_node("Clip", ["ids", "zero", "nmax"], ["clipped"]),
        helper.make_node("Gather", ["table", "clipped"], ["vecs"]),
        helper.make_node("ReduceMean", ["vecs", "axis1"], ["sess"], keepdims=0),
        helper.make_node("MatMul", ["sess", "table_t"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_ids"], axis=-1),
    ]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(table.T.copy() * 7.0, "table_t"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(n - 1, np.int64), "nmax"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([10], np.int64), "k")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"])],
                              [helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["b", 10]),
                               helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["b", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return path


def test_guest_runs_onnxruntime_aarch64_and_agrees_with_host(arm_runtime, tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(1)
    ids = rng.integers(-5, 3100, size=(6, 30)).astype(np.int64)
    host = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want_scores, want_ids = host.run(None, {"ids": ids})

    # One guest process for the whole batch: a good input, a one-row input, and a wrong dtype.
    run = arm_runtime.run("cortex-a72", [(model, {"ids": ids}), (model, {"ids": ids[:1, :1]}),
                                         (model, {"ids": ids.astype(np.float32)})])
    assert run.machine == "aarch64"
    assert run.onnxruntime == ort.__version__
    assert run.cpu_part == f"{CPU_MODELS['cortex-a72'].part:#05x}"  # the fake cpuinfo was the one read
    good, one, bad = run.results
    np.testing.assert_array_equal(good.outputs["top_ids"], want_ids)
    scale = np.abs(want_scores).max()
    assert np.abs(good.outputs["top_scores"] - want_scores).max() <= 1e-5 * scale
    np.testing.assert_array_equal(one.outputs["top_ids"], host.run(None, {"ids": ids[:1, :1]})[1])
    assert bad.outputs is None and "tensor(float)" in bad.error  # a model error is reported, not raised


def test_provisioned_runtime_is_reused(arm_runtime):
    t0 = time.perf_counter()
    again = provision(arm_runtime.root)
    assert time.perf_counter() - t0 < 1.0
    assert again.info == arm_runtime.info
    assert {d["package"] for d in again.info["debs"]} >= {"python3.11-minimal", "libpython3.11-stdlib", "libstdc++6"}
    assert again.info["qemu"]["package"] == "qemu-user-static" and again.info["qemu"]["arch"] == "amd64"
    assert all(len(w["sha256"]) == 64 for w in again.info["wheels"])
    assert arm_runtime.root.name == f"arm64-ort-{ort.__version__}-{again.info['numpy']}"


def test_unreachable_archive_says_so_and_leaves_nothing(tmp_path):
    target = tmp_path / "arm64"
    with pytest.raises(ArmUnavailable, match=r"cannot provision the ARM64 runtime: .*127.0.0.1:9.*no network\?"):
        provision(target, mirror="http://127.0.0.1:9/debian")
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".arm64.lock"]  # no half-made runtime


def test_unknown_cpu_model_is_refused(arm_runtime, tmp_path):
    with pytest.raises(ArmUnavailable, match="unknown ARM CPU model 'pentium'"):
        arm_runtime.run("pentium", [])
