"""Distillation on the Diginetica sample: who changes when, and that a student stands alone."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import DIGINETICA, needs_shared
from odrec_export.checkpoint import load_checkpoint, save_checkpoint
from odrec_export.compressors.codes import codes_table
from odrec_export.errors import CheckpointError
from odrec_export.models.registry import model_from_checkpoint
from odrec_export.train.code_learning import CodeLearningConfig, learn_codes
from odrec_export.train.distill import (
    DistillConfig,
    Distiller,
    build_student,
    distill,
    hot_items,
    info_nce,
    train_student,
)
from odrec_export.train.evaluate import evaluate_model
from odrec_export.train.loading import load_teacher
from odrec_export.train.loop import SampleBatches, TrainConfig

CODES = CodeLearningConfig(m=2, k=16, warmup_steps=50, steps=30, rec_pool=256, rec_batch=128)


def quiet(_):
    pass


@pytest.fixture(scope="module")
def teacher_path(tiny_checkpoints):
    torch.set_num_threads(1)
    return tiny_checkpoints[0]


@pytest.fixture(scope="module")
def codes(teacher_path, diginetica):
    teacher, _ = load_teacher(teacher_path, diginetica)
    return learn_codes(teacher, diginetica, CODES, log=quiet)


def models(teacher_path, data, codes):
    teacher, _ = load_teacher(teacher_path, data)
    student, _ = build_student(teacher, codes_table(teacher, codes["codes"], codes["codebooks"]), "codes")
    return teacher, student


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed(before, model):
    return [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_distillation_steps_change_the_right_models(teacher_path, diginetica, codes, bidirectional):
    teacher, student = models(teacher_path, diginetica, codes)
    t0, s0 = snapshot(teacher), snapshot(student)
    cfg = DistillConfig(bidirectional=bidirectional, beta=0.5)
    distiller = Distiller(teacher, student, hot_items(diginetica, 0.2), cfg)
    params = list(student.parameters()) + list(distiller.proj.parameters())
    params += list(teacher.parameters()) if bidirectional else []
    opt = torch.optim.Adam(params, lr=1e-3)
    teacher.train(bidirectional)
    student.train()
    batches = SampleBatches(diginetica, student.encoder.cfg.max_len)
    for ids, targets in list(batches.batches(64, torch.Generator().manual_seed(0)))[:3]:
        loss, parts = distiller(ids, targets)
        assert torch.isfinite(loss) and all(v == v for v in parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "items.codebooks" in changed(s0, student)
    assert any(k.startswith("encoder.") for k in changed(s0, student))
    assert "items.codes" not in changed(s0, student)  # codes stay frozen
    if bidirectional:
        assert "items.weight" in changed(t0, teacher) and any(k.startswith("encoder.") for k in changed(t0, teacher))
    else:
        assert changed(t0, teacher) == []


def test_mse_weight_scales_the_table_matching_term(teacher_path, diginetica, codes):
    teacher, student = models(teacher_path, diginetica, codes)
    teacher.eval()  # no dropout: every weighting sees the same forward pass
    student.eval()
    ids, targets = next(SampleBatches(diginetica, student.encoder.cfg.max_len).batches(32, torch.Generator()))
    totals = {}
    for weight in (0.0, 1.0, 0.25):
        distiller = Distiller(teacher, student, hot_items(diginetica, 0.2), DistillConfig(mse=weight, eta=0.0))
        torch.manual_seed(0)
        distiller.proj.reset_parameters()
        with torch.no_grad():
            totals[weight], parts = distiller(ids, targets)
    assert parts["mse"] > 0
    assert float(totals[1.0] - totals[0.0]) == pytest.approx(parts["mse"], rel=1e-4)
    assert float(totals[0.25] - totals[0.0]) == pytest.approx(0.25 * parts["mse"], rel=1e-4)


def test_teacher_untouched_by_a_unidirectional_run(teacher_path, diginetica, codes):
    teacher, student = models(teacher_path, diginetica, codes)
    t0 = snapshot(teacher)
    history = distill(teacher, student, diginetica, TrainConfig(epochs=1, batch_size=64),
                      DistillConfig(bidirectional=False), log=quiet)
    assert history["epochs_run"] == 1 and changed(t0, teacher) == []


def test_teacher_lr_zero_keeps_a_bidirectional_teacher_fixed(teacher_path, diginetica, codes):
    teacher, student = models(teacher_path, diginetica, codes)
    t0, s0 = snapshot(teacher), snapshot(student)
    distill(teacher, student, diginetica, TrainConfig(epochs=1, batch_size=64, max_batches=3),
            DistillConfig(bidirectional=True, teacher_lr=0.0), log=quiet)
    assert changed(t0, teacher) == [] and "items.codebooks" in changed(s0, student)


def test_a_student_run_saves_its_best_epoch_as_it_goes(teacher_path, diginetica):
    teacher, info = load_teacher(teacher_path, diginetica)
    saved = []
    _, final = train_student(diginetica, teacher, info, {"code_learning": CODES}, TrainConfig(epochs=2, batch_size=64, max_batches=3,
                                                                           patience=5),
                             DistillConfig(bidirectional=False), log=quiet, save=saved.append)
    best, improving = float("-inf"), []
    for h in final.provenance["history"]:
        if h["valid"]["HR@10"] > best:
            best, improving = h["valid"]["HR@10"], improving + [h["epoch"]]
    assert [c.provenance["best_epoch"] for c in saved] == improving and improving
    assert all(c.provenance["complete"] is False and "test_metrics" not in c.provenance for c in saved)
    assert final.provenance["complete"] is True and "test_metrics" in final.provenance
    assert saved[-1].state_dict["items.codebooks"].equal(final.state_dict["items.codebooks"])  # the best epoch


def test_mix_up_share_reaches_zero_after_eta_decay(teacher_path, diginetica, codes):
    teacher, student = models(teacher_path, diginetica, codes)
    history = distill(teacher, student, diginetica, TrainConfig(epochs=3, batch_size=64, patience=5),
                      DistillConfig(bidirectional=False, eta=0.7, eta_decay=0.5), log=quiet)
    etas = [h["eta"] for h in history["history"]]  # η after each epoch's last step
    assert 0 < etas[0] < 0.7 and etas[1] == 0.0 and etas[2] == 0.0


def test_hot_items_are_the_most_clicked_fifth(diginetica):
    hot = hot_items(diginetica, 0.2)
    counts = torch.from_numpy(diginetica.item_counts())
    assert not hot[0] and int(hot.sum()) == round(0.2 * diginetica.num_items)
    assert counts[hot].min() >= counts[1:][~hot[1:]].max()


def test_info_nce_prefers_matching_pairs():
    torch.manual_seed(0)
    a = torch.randn(16, 8)
    assert info_nce(a, a + 0.01 * torch.randn(16, 8), 0.2) < info_nce(a, a[torch.randperm(16)], 0.2)


@pytest.fixture(scope="module")
def student_ckpt(teacher_path, diginetica, tmp_path_factory):
    teacher, info = load_teacher(teacher_path, diginetica)
    student, ckpt = train_student(diginetica, teacher, info, {"code_learning": CODES}, TrainConfig(epochs=1, batch_size=64),
                                  DistillConfig(bidirectional=True), log=quiet)
    path = tmp_path_factory.mktemp("student") / "student.pt"
    save_checkpoint(ckpt, path)
    return path, student


def test_student_checkpoint_holds_no_item_table(student_ckpt, diginetica):
    path, _ = student_ckpt
    ckpt = load_checkpoint(path)
    n = diginetica.num_items
    assert ckpt.kind == "student" and ckpt.config["compressor"] == "codes"
    assert ckpt.config["items"] == {"m": 2, "k": 16}
    float_rows = [t.shape[0] for t in ckpt.state_dict.values() if t.is_floating_point() and t.dim() >= 1]
    assert n not in float_rows and n + 1 not in float_rows
    assert ckpt.state_dict["items.codes"].dtype == torch.uint8
    assert not any(k.startswith("items.weight") or "teacher" in k for k in ckpt.state_dict)
    assert ckpt.provenance["teacher"]["checkpoint_sha256"] and ckpt.provenance["code_learning"]["usage"]
    assert ckpt.vocab == diginetica.vocab.raw_ids


def test_student_evaluation_needs_no_teacher(student_ckpt, diginetica, teacher_path, tmp_path):
    path, trained = student_ckpt
    ckpt = load_checkpoint(path)
    loaded = model_from_checkpoint(ckpt)
    max_len = loaded.encoder.cfg.max_len
    alone = evaluate_model(loaded, diginetica.test_samples, max_len=max_len)
    # the in-process student (trained beside a teacher) and the reloaded one agree exactly
    assert alone == ckpt.provenance["test_metrics"]
    assert alone == evaluate_model(trained, diginetica.test_samples, max_len=max_len)
    # and the CLI gives the same figures when no teacher file exists at all
    moved = tmp_path / "student.pt"
    moved.write_bytes(path.read_bytes())
    r = subprocess.run([sys.executable, "-m", "odrec_export.cli", "eval", "--ckpt", str(moved), "--data",
                        str(DIGINETICA), "--json"], capture_output=True, text=True, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    cli_metrics = json.loads(r.stdout)
    assert cli_metrics["HR@10"] == alone["HR@10"] and cli_metrics["NDCG@10"] == alone["NDCG@10"]


def test_a_student_is_not_a_teacher(student_ckpt, diginetica):
    with pytest.raises(CheckpointError, match="not a teacher"):
        load_teacher(student_ckpt[0], diginetica)


@needs_shared
def test_cli_trains_a_student(teacher_path, tmp_path):
    out = tmp_path / "s.pt"
    r = subprocess.run([sys.executable, "-m", "odrec_export.cli", "train", "--data", str(DIGINETICA),
                        "--compressor", "codes", "--teacher", str(teacher_path), "--m", "2", "--k", "16",
                        "--epochs", "1", "--code-steps", "20", "--no-bidirectional", "--out", str(out)],
                       capture_output=True, text=True, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "item representation" in r.stdout and load_checkpoint(out).kind == "student"
    bad = subprocess.run([sys.executable, "-m", "odrec_export.cli", "train", "--data", str(DIGINETICA),
                          "--compressor", "codes", "--teacher", str(out), "--out", str(tmp_path / "x.pt")],
                         capture_output=True, text=True, env={"OMP_NUM_THREADS": "1"})
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "not a teacher" in bad.stderr
    assert not (tmp_path / "x.pt").exists()


@needs_shared
def test_cli_continues_a_student_from_its_checkpoint(teacher_path, student_ckpt, tmp_path):
    from conftest import assert_one_line_error, cli
    from odrec_export.checkpoint import file_sha256

    start, _ = student_ckpt
    out = tmp_path / "more.pt"
    r = cli("train", "--data", str(DIGINETICA), "--teacher", str(teacher_path), "--init", str(start),
            "--m", "3", "--epochs", "1", "--out", str(out))  # --m is ignored: the student's codes are kept
    assert r.returncode == 0, r.stderr
    assert "codes:" not in r.stdout  # no code learning
    a, b = load_checkpoint(start), load_checkpoint(out)
    assert b.config == a.config and b.provenance["initialised_from"]["checkpoint_sha256"] == file_sha256(start)
    assert torch.equal(b.state_dict["items.codes"], a.state_dict["items.codes"])
    assert not torch.equal(b.state_dict["items.codebooks"], a.state_dict["items.codebooks"])
    assert b.provenance["distill"]["eta"] == 0.0  # a continued student does not restart the mix-up
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--teacher", str(teacher_path), "--init",
                              str(teacher_path), "--out", str(tmp_path / "x.pt")), 1, "not a student")
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--teacher", str(teacher_path), "--init",
                              str(start), "--compressor", "stt", "--out", str(tmp_path / "x.pt")), 2, "codes student")
    assert not (tmp_path / "x.pt").exists()
