"""Every compressor through the same toolchain, on the Diginetica sample: distil one epoch from the
tiny teacher, build, verify against the PyTorch student (fp32, exact up to float rounding), size-report."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import REPO, assert_one_line_error, cli
from odrec_export.checkpoint import load_checkpoint, save_checkpoint
from odrec_export.export import BuildOptions, build
from odrec_export.export import artifact as A
from odrec_export.models.registry import model_from_checkpoint
from odrec_export.report.measure import size_report
from odrec_export.train.distill import distill_config, train_student
from odrec_export.train.evaluate import evaluate_model
from odrec_export.train.loading import load_teacher
from odrec_export.train.loop import TrainConfig
from odrec_export.verify.arm_runtime import default_cache_dir
from odrec_export.verify.parity import verify
from onnx import numpy_helper

SETTINGS = {"tt": {"rank": 6}, "stt": {"rank": 6}, "cprec": {"blocks": [30, 120]}, "none": {}}


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def student(request, tiny_checkpoints, diginetica, tmp_path_factory):
    """(compressor, student checkpoint path, checkpoint) after one distillation epoch."""
    torch.set_num_threads(1)
    name = request.param
    teacher, info = load_teacher(tiny_checkpoints[0], diginetica)
    _, ckpt = train_student(diginetica, teacher, info, SETTINGS[name], TrainConfig(epochs=1, seed=1),
                            distill_config(name), compressor=name, log=lambda s: None)
    path = tmp_path_factory.mktemp(name) / "student.pt"
    save_checkpoint(ckpt, path)
    return name, path, ckpt


@pytest.fixture(scope="module")
def artifact(student, tmp_path_factory):
    name, path, _ = student
    out = tmp_path_factory.mktemp(f"{name}_artifact") / "art"
    build(path, out, BuildOptions(quant="fp32"))
    return out


def test_student_checkpoint_records_its_compressor_and_stands_alone(student, diginetica):
    name, path, ckpt = student
    loaded = load_checkpoint(path)
    assert loaded.config["compressor"] == name
    assert loaded.provenance["distill"]["bidirectional"] is False  # OD-Rec recipe: teacher frozen
    assert loaded.provenance["epochs_run"] == 1
    model = model_from_checkpoint(loaded)
    n, d = model.num_items, model.encoder.cfg.dim
    if name != "none":  # no N×d float tensor anywhere in a compressed student
        assert all(not (t.is_floating_point() and t.numel() >= n * d // 4)
                   for key, t in loaded.state_dict.items() if key.startswith("items."))
        assert loaded.provenance["item_bytes"]["ratio_bytes"] > 1.0
    metrics = evaluate_model(model, diginetica.test_samples, max_len=model.encoder.cfg.max_len)
    assert metrics == pytest.approx(loaded.provenance["test_metrics"])


def test_artifact_verifies_against_the_pytorch_student(student, artifact):
    name, path, _ = student
    report = verify(artifact, ckpt=path, sessions=24, arm=False)
    rows = {c.check: c for c in report.checks}
    assert report.exit_code == 0, report.table()
    assert rows["reference"].status == "pass", rows["reference"].details
    manifest = A.read_manifest(artifact)
    assert manifest["compressor"]["name"] == name


def test_artifact_keeps_its_compressed_form_in_onnxruntime_memory(student, artifact, tmp_path):
    name, _, ckpt = student
    if name == "none":
        pytest.skip("the uncompressed student holds its N×d table by design")
    n, d = len(ckpt.vocab), ckpt.config["encoder"]["dim"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(artifact / A.MODEL_FILE), so, providers=["CPUExecutionProvider"])
    for path in (artifact / A.MODEL_FILE, tmp_path / "optimised.onnx"):
        biggest = max(numpy_helper.to_array(t).size for t in onnx.load(str(path)).graph.initializer)
        assert biggest < n * d // 2, (path.name, biggest)  # the biggest here are the encoder's 3d×d weights


def test_size_report_counts_the_factors_as_the_item_representation(student, artifact):
    name, _, ckpt = student
    r = size_report(artifact, measure_rss=False)
    part = "item table (fp32)" if name == "none" else "item factors"
    assert r["parts"][part] > 0 and r["item_representation_bytes"] == r["parts"][part]
    if name != "none":
        assert r["item_compression_ratio"] > 1.0


def test_single_bench_explains_that_factor_artifacts_need_compare(student, artifact):
    name, _, _ = student
    if name == "none":
        pytest.skip("an uncompressed artifact has its own table baseline")
    assert_one_line_error(cli("bench", str(artifact), "--quick"), 2, "bench --compare")


def test_stt_artifact_passes_on_arm64(student, artifact):
    name, path, _ = student
    if name != "stt":
        pytest.skip("one factorised graph on ARM64 is enough: the ops are the same for tt")
    report = verify(artifact, ckpt=path, sessions=8, arm=True, arm_cache=REPO / default_cache_dir(),
                    arm_cpus=["cortex-a72"])
    arm = [c for c in report.checks if c.check == "arm64"]
    if arm and arm[0].status == "not checked":
        pytest.skip(f"ARM64 runtime not provisionable here: {arm[0].details}")
    assert report.exit_code == 0, report.table()


def test_cprec_head_top_k_expansion_builds_and_verifies(student, tmp_path):
    name, path, _ = student
    if name != "cprec":
        pytest.skip("--expand-top is CpRec's")
    out = tmp_path / "expand"
    manifest = build(path, out, BuildOptions(quant="fp32", expand_top=2))
    assert manifest["compressor"]["expand_top"] == 2
    report = verify(out, ckpt=path, sessions=16, arm=False)
    assert report.exit_code == 0, report.table()


def test_cli_trains_an_undistilled_student_and_rejects_bad_options(tiny_checkpoints, tmp_path):
    from conftest import DIGINETICA

    teacher = tiny_checkpoints[0]
    out = tmp_path / "stt.pt"
    r = cli("train", "--data", str(DIGINETICA), "--out", str(out), "--compressor", "stt", "--teacher",
            str(teacher), "--rank", "4", "--epochs", "0")
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(out)
    assert ckpt.config["items"]["rank"] == 4 and ckpt.provenance["epochs_run"] == 0
    assert "item_fit" in ckpt.provenance and json.dumps(ckpt.provenance["item_bytes"])
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--out", str(tmp_path / "x.pt"),
                              "--compressor", "svd"), 2, "unknown compressor 'svd'")
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--out", str(tmp_path / "x.pt"),
                              "--epochs", "0"), 2, "--epochs 0")
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--out", str(tmp_path / "x.pt"),
                              "--compressor", "cprec", "--teacher", str(teacher), "--blocks", "a,b"), 2, "--blocks")
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--out", str(tmp_path / "x.pt"),
                              "--compressor", "stt", "--teacher", str(teacher), "--rank", "5"), 2, "multiple of t")
    assert_one_line_error(cli("build", "--ckpt", str(teacher), "--out", str(tmp_path / "art"),
                              "--expand-top", "2"), 2, "--expand-top")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "art").exists()


def test_shared_encoder_weights_train_build_and_verify(tmp_path):
    """CpRec's cross-layer sharing on a 2-block teacher: one copy of the block weights in the
    checkpoint and in the graph, and the artifact matches PyTorch."""
    from conftest import DIGINETICA

    ckpt = tmp_path / "shared.pt"
    r = cli("train", "--data", str(DIGINETICA), "--out", str(ckpt), "--epochs", "1", "--dim", "16",
            "--layers", "2", "--share", "cross-layer", "--max-len", "10")
    assert r.returncode == 0, r.stderr
    loaded = load_checkpoint(ckpt)
    assert loaded.config["encoder"]["share"] == "cross-layer"
    model = model_from_checkpoint(loaded)
    assert model.encoder.blocks[0].attn.qkv.weight is model.encoder.blocks[1].attn.qkv.weight
    out = tmp_path / "art"
    build(ckpt, out, BuildOptions(quant="fp32"))
    graph = onnx.load(str(out / A.MODEL_FILE))
    qkv = [i for i in graph.graph.initializer if tuple(i.dims) in ((16, 48), (48, 16))]
    assert len(qkv) == 1  # the shared attention projection is stored once
    assert verify(out, ckpt=ckpt, sessions=16, arm=False).exit_code == 0
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--out", str(tmp_path / "x.pt"),
                              "--share", "everything"), 2, "--share")
