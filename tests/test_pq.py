"""Product quantisation (compressors/pq.py): the table, its fit to a teacher, and the whole toolchain
on the Diginetica sample (distil, build int8 and fp32, verify against PyTorch, size-report, bench's
decoded baseline, the CLI's option errors)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import assert_one_line_error, cli
from odrec_export.checkpoint import load_checkpoint, save_checkpoint
from odrec_export.compressors.pq import PQItemTable
from odrec_export.export import BuildOptions, build
from odrec_export.export import artifact as A
from odrec_export.models.registry import model_from_checkpoint
from odrec_export.report.measure import decode_item_table, size_report
from odrec_export.train.distill import distill_config, train_student
from odrec_export.train.loading import load_teacher
from odrec_export.train.loop import TrainConfig
from odrec_export.verify.parity import verify


def test_item_vectors_concatenate_sub_codewords_and_scores_match_them():
    torch.manual_seed(0)
    table = PQItemTable(num_items=30, dim=12, m=3, k=5)
    codes = torch.randint(0, 5, (31, 3))
    table.set_codes(codes)
    v = 7
    expected = torch.cat([table.codebooks[m, codes[v, m]] for m in range(3)])
    assert torch.allclose(table.lookup(torch.tensor([v]))[0], expected)
    assert torch.equal(table.lookup(torch.tensor([0]))[0], torch.zeros(12))
    sessions = torch.randn(4, 12)
    with torch.no_grad():
        assert torch.allclose(table.score(sessions)[:, 1:], sessions @ table.table()[1:].t(), atol=1e-5)


def test_dimension_must_split_into_the_sub_spaces():
    with pytest.raises(ValueError, match="not a multiple of M=5"):
        PQItemTable(num_items=10, dim=12, m=5, k=4)


def test_fit_to_a_teacher_table_improves_with_more_codewords(tiny_checkpoints):
    teacher = load_checkpoint(tiny_checkpoints[0])
    weights = teacher.state_dict["items.weight"].float()
    n, d = weights.shape[0] - 1, weights.shape[1]
    errors = []
    for k in (4, 32):
        table = PQItemTable(n, d, m=4, k=k)
        report = table.init_from_table(weights, np.ones(n + 1))
        errors.append(report["relative_mse"])
        assert len(report["codes_used_per_subspace"]) == 4
    assert 0 < errors[1] < errors[0] < 1


@pytest.fixture(scope="module")
def pq_student(tiny_checkpoints, diginetica, tmp_path_factory):
    torch.set_num_threads(1)
    teacher, info = load_teacher(tiny_checkpoints[0], diginetica)
    _, ckpt = train_student(diginetica, teacher, info, {"m": 4, "k": 16}, TrainConfig(epochs=1, seed=1),
                            distill_config("pq"), compressor="pq", log=lambda s: None)
    path = tmp_path_factory.mktemp("pq") / "student.pt"
    save_checkpoint(ckpt, path)
    return path, ckpt


def test_student_stores_codes_and_sub_codebooks_only(pq_student):
    _, ckpt = pq_student
    assert ckpt.config["compressor"] == "pq" and ckpt.config["items"] == {"m": 4, "k": 16, "kmeans_weights": "uniform"}
    d = ckpt.config["encoder"]["dim"]
    assert tuple(ckpt.state_dict["items.codebooks"].shape) == (4, 16, d // 4)
    assert ckpt.state_dict["items.codes"].dtype == torch.uint8
    assert "relative_mse" in ckpt.provenance["item_fit"]
    assert ckpt.provenance["item_bytes"]["ratio_bytes"] > 1.0


@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_artifact_verifies_and_decodes_to_the_students_table(pq_student, quant, tmp_path):
    path, ckpt = pq_student
    out = tmp_path / quant
    manifest = build(path, out, BuildOptions(quant=quant, encoder_quant="fp32"))
    assert manifest["compressor"]["name"] == "pq" and manifest["compressor"]["sub_dim"] == ckpt.config["encoder"]["dim"] // 4
    report = verify(out, ckpt=path, sessions=24, arm=False)
    assert report.exit_code == 0, report.table()
    decoded = decode_item_table(onnx.load(str(out / A.MODEL_FILE)), manifest)
    with torch.no_grad():
        table = model_from_checkpoint(ckpt).items.table().numpy()
    tolerance = 1e-6 if quant == "fp32" else 0.02 * np.abs(table).max()
    assert np.abs(decoded - table).max() <= tolerance
    parts = size_report(out, measure_rss=False)["parts"]
    assert parts["codes"] > 0 and parts["codebooks"] > 0 and (parts["scales"] > 0) == (quant == "int8")
    if quant == "int8":  # one fp32 scale per column of each sub-codebook: d in all, not one per codeword
        assert parts["scales"] == 4 * ckpt.config["encoder"]["dim"]


def test_cli_names_a_code_shape_the_dimension_cannot_take(tiny_checkpoints, tmp_path):
    from conftest import DIGINETICA

    r = cli("train", "--data", str(DIGINETICA), "--teacher", str(tiny_checkpoints[0]), "--compressor", "pq",
            "--m", "3", "--epochs", "0", "--out", str(tmp_path / "s.pt"))
    assert_one_line_error(r, 2, "pq", "not a multiple of M=3")
    assert not (tmp_path / "s.pt").exists()


def test_kmeans_weights_pull_the_centroid_towards_heavy_points():
    from odrec_export.train.code_learning import kmeans

    points = torch.tensor([[0.0, 0.0], [4.0, 8.0]])
    gen = torch.Generator().manual_seed(0)
    _, plain = kmeans(points, 1, 3, gen)
    _, weighted = kmeans(points, 1, 3, gen, weights=torch.tensor([3.0, 1.0]))
    assert torch.allclose(plain[0], torch.tensor([2.0, 4.0])) and torch.allclose(weighted[0], torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="kmeans_weights 'often'"):
        PQItemTable(num_items=10, dim=8, m=2, k=4, kmeans_weights="often")
    table = PQItemTable(num_items=10, dim=8, m=2, k=4, kmeans_weights="log-count")
    assert table.config() == {"m": 2, "k": 4, "kmeans_weights": "log-count"}
