"""The repeat bonus: its scores, the fast ranking the fit relies on, the CLI, and the exported graph."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import DIGINETICA, assert_one_line_error, cli, fit_bonus_checkpoint
from odrec_export.checkpoint import load_checkpoint
from odrec_export.data.sessions import pad_batch
from odrec_export.export import BuildOptions, build
from odrec_export.export import artifact as A
from odrec_export.models.registry import model_from_checkpoint
from odrec_export.models.repeat import RepeatBonus
from odrec_export.report.measure import size_report
from odrec_export.train.evaluate import sample_ranks
from odrec_export.train.loading import checkpoint_for
from odrec_export.train.repeat_fit import bucket_weights, ranks_with_bonus, session_slots


@pytest.fixture(scope="module")
def student(tiny_checkpoints):
    return model_from_checkpoint(load_checkpoint(tiny_checkpoints[1]))


@pytest.fixture(scope="module")
def with_bonus(tiny_checkpoints, diginetica, tmp_path_factory):
    """The tiny student with a fitted bonus: (checkpoint path, model, fit report)."""
    path = tmp_path_factory.mktemp("repeat") / "student_repeat.pt"
    model, report = fit_bonus_checkpoint(tiny_checkpoints[1], diginetica.valid_samples, path)
    return path, model, report


def test_bonus_adds_one_weight_per_occurrence_by_recency():
    bonus = RepeatBonus(5)
    bonus.weights.data = torch.tensor([1.0, 10.0, 100.0, 1000.0, 10000.0])
    ids = torch.tensor([[0, 7, 3, 7, 2],  # recencies: 2 → 4, 3 → 2, 7 → 3 and 1, padding → nothing
                        [0, 0, 0, 0, 5]])
    out = bonus(ids, 9)
    assert out[0, 7] == 1010.0 and out[0, 3] == 100.0 and out[0, 2] == 1.0
    assert out[1, 5] == 1.0
    assert out[:, 1:].count_nonzero() == 4  # nothing anywhere else (column 0 collects padding's zeros)


@torch.no_grad()
def test_model_scores_include_the_bonus(student):
    ids = torch.tensor([[0, 0, 4, 9, 4]])
    plain = student.scores(ids)
    student.repeat = RepeatBonus(student.encoder.cfg.max_len)
    try:
        student.repeat.weights.data[:] = 0.5
        boosted = student.scores(ids)
    finally:
        student.repeat = None
    diff = (boosted - plain)[0, 1:]
    assert diff[3] == pytest.approx(1.0) and diff[8] == pytest.approx(0.5)
    assert diff.count_nonzero() == 2


def test_fast_ranks_equal_full_evaluation(student, diginetica):
    """The fit ranks candidates from per-sample summaries; they must be the ranks a full scoring gives."""
    samples = diginetica.valid_samples[:300]
    max_len = student.encoder.cfg.max_len
    slots = session_slots(student, samples, depth=20)
    rng = np.random.default_rng(0)
    for values in ([0.0] * 8, rng.normal(0, 3, 8).tolist(), [5.0] * 8):
        weights = bucket_weights(values, max_len)
        fast = ranks_with_bonus(weights, slots).numpy()
        student.repeat = RepeatBonus(max_len)
        student.repeat.weights.data.copy_(weights)
        try:
            exact = sample_ranks(student, samples, max_len=max_len)
        finally:
            student.repeat = None
        # the same tie rule (equal scores rank by item index; this student's items share codes, so they
        # tie), exact up to the kept depth
        assert (np.minimum(fast, 20) == np.minimum(exact, 20)).all(), values


def test_fit_improves_validation_and_keeps_the_rest_of_the_model(with_bonus, tiny_checkpoints, diginetica):
    path, model, report = with_bonus
    assert report["after"] >= report["before"] and 0 < report["repeat_share"] < 1
    assert [b["recency_from"] for b in report["buckets"]] == [0, 1, 2, 3, 4, 6, 10]  # max_len 20
    saved = load_checkpoint(path)
    original = load_checkpoint(tiny_checkpoints[1])
    assert saved.config["repeat_bonus"] is True and saved.provenance["repeat_bonus"]["metric"] == "NDCG@10"
    assert set(saved.state_dict) == set(original.state_dict) | {"repeat.weights"}
    for name, tensor in original.state_dict.items():
        assert torch.equal(saved.state_dict[name], tensor)
    reloaded = model_from_checkpoint(saved)
    assert torch.equal(reloaded.repeat.weights, model.repeat.weights)


def test_training_from_a_checkpoint_drops_its_bonus(with_bonus, diginetica):
    ckpt = checkpoint_for(with_bonus[0], diginetica, "student", lambda c: True)
    assert "repeat_bonus" not in ckpt.config and "repeat.weights" not in ckpt.state_dict
    assert model_from_checkpoint(ckpt).repeat is None


def test_graph_with_bonus_matches_pytorch(with_bonus, diginetica, tmp_path):
    path, model, _ = with_bonus
    out = tmp_path / "art"
    build(path, out, BuildOptions(quant="fp32"))
    manifest = A.read_manifest(out)
    assert manifest["repeat_bonus"] is True
    max_len = model.encoder.cfg.max_len
    prefixes = [p for p, _ in diginetica.test_samples[:200]] + [[5, 9, 5, 5, 2, 9]]  # real + heavy repeats
    ids = pad_batch(prefixes, max_len)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out / A.MODEL_FILE), so, providers=["CPUExecutionProvider"])
    top_ids, top_scores = session.run(None, {A.INPUT_NAME: ids})
    with torch.no_grad():
        ref_scores, ref_ids = model.scores(torch.from_numpy(ids)).topk(top_ids.shape[1])
    np.testing.assert_allclose(top_scores, ref_scores.numpy(), rtol=1e-4, atol=1e-4)
    assert (top_ids == ref_ids.numpy()).mean() >= 0.95  # ties (shared codes) may order differently
    assert size_report(out, measure_rss=False)["parts"]["repeat bonus"] == 4 * max_len


def test_cli_fits_and_eval_uses_the_bonus(tiny_checkpoints, tmp_path):
    out = tmp_path / "s.pt"
    r = cli("repeat-bonus", "--ckpt", str(tiny_checkpoints[1]), "--data", str(DIGINETICA), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "validation NDCG@10" in r.stdout and "wrote" in r.stdout
    e = cli("eval", "--ckpt", str(out), "--data", str(DIGINETICA), "--json")
    assert e.returncode == 0, e.stderr
    result = json.loads(e.stdout)
    assert 0 <= result["HR@10"] <= 1 and result["repeat_bonus"] is True


def test_cli_refuses_another_validation_split_and_unknown_metrics(tiny_checkpoints, tmp_path):
    out = tmp_path / "s.pt"
    r = cli("repeat-bonus", "--ckpt", str(tiny_checkpoints[0]), "--data", str(DIGINETICA), "--out", str(out),
            "--valid-fraction", "0.3")  # the teacher records the split it was selected on
    assert_one_line_error(r, 2, "validation samples", "--valid-fraction")
    r = cli("repeat-bonus", "--ckpt", str(tiny_checkpoints[1]), "--data", str(DIGINETICA), "--out", str(out),
            "--metric", "MRR@3")
    assert_one_line_error(r, 2, "--metric")
    assert not out.exists()
