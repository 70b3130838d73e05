"""Fine-tuning a trained model without its teacher: the new-to-session objective, the refitted bonus,
what the checkpoint keeps, and the CLI's errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import DIGINETICA, assert_one_line_error, cli, fit_bonus_checkpoint
from odrec_export.checkpoint import load_checkpoint
from odrec_export.models.registry import model_from_checkpoint
from odrec_export.train.finetune import finetune, load_for_finetune, new_target_loss
from odrec_export.train.loop import TrainConfig

pytestmark = pytest.mark.usefixtures("diginetica")


@pytest.fixture(scope="module")
def with_bonus(tiny_checkpoints, diginetica, tmp_path_factory):
    path = tmp_path_factory.mktemp("finetune") / "student_repeat.pt"
    fit_bonus_checkpoint(tiny_checkpoints[1], diginetica.valid_samples, path)
    return path


def test_new_target_loss_ignores_repeats_and_the_session_items(tiny_checkpoints):
    model = model_from_checkpoint(load_checkpoint(tiny_checkpoints[1]))
    model.eval()
    ids = torch.tensor([[0, 4, 7, 9], [3, 5, 5, 8], [0, 0, 2, 6]])
    targets = torch.tensor([7, 11, 12])  # the first is a repeat
    expected = F.cross_entropy(model.scores(ids[1:]).scatter(1, ids[1:], float("-inf")), targets[1:])
    assert torch.allclose(new_target_loss(model, ids, targets), expected)

    only_repeats = new_target_loss(model, ids[:1], targets[:1])
    only_repeats.backward()
    assert only_repeats.item() == 0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_finetune_trains_refits_the_bonus_and_keeps_the_codes(with_bonus, diginetica):
    original = load_checkpoint(with_bonus)
    saved = []
    result = finetune(load_for_finetune(with_bonus, diginetica), diginetica,
                      TrainConfig(epochs=1, max_batches=15, lr=1e-3), source=str(with_bonus),
                      log=lambda s: None, save=saved.append)
    state = result.state_dict
    assert result.kind == "student" and result.config == original.config
    assert torch.equal(state["items.codes"], original.state_dict["items.codes"])
    assert not torch.equal(state["items.codebooks"], original.state_dict["items.codebooks"])
    assert any(not torch.equal(state[n], t) for n, t in original.state_dict.items() if n.startswith("encoder."))
    assert not any(t.dim() == 2 and t.shape[0] >= diginetica.num_items for t in state.values()
                   if t.is_floating_point())
    refit = result.provenance["repeat_bonus"]
    assert refit["metric"] == "NDCG@10" and refit is not original.provenance["repeat_bonus"]
    assert torch.equal(state["repeat.weights"], model_from_checkpoint(result).repeat.weights)
    run = result.provenance["finetune"]
    assert run["objective"] == "new" and run["complete"] and run["train"]["max_batches"] == 15
    assert result.provenance["finetuned_from"]["checkpoint"] == str(with_bonus)
    assert set(result.provenance["test_metrics"]) >= {"HR@10", "NDCG@10"}
    # the best-so-far save during training is the model without its (stale) bonus
    assert len(saved) == 1 and not saved[0].provenance["finetune"]["complete"]
    assert "repeat.weights" not in saved[0].state_dict and "repeat_bonus" not in saved[0].config


def test_cli_finetunes_and_refuses_bad_input(tiny_checkpoints, with_bonus, tmp_path):
    out = tmp_path / "ft.pt"
    r = cli("finetune", "--ckpt", str(with_bonus), "--data", str(DIGINETICA), "--out", str(out),
            "--max-batches", "5", "--objective", "all")
    assert r.returncode == 0, r.stderr
    assert "repeat bonus fitted again" in r.stdout and load_checkpoint(out).provenance["finetune"]["objective"] == "all"

    missing = tmp_path / "missing.pt"
    before = with_bonus.read_bytes()
    for args, code, needles in [
        (["--ckpt", str(tmp_path / "nope.pt")], 2, ["nope.pt", "no such checkpoint"]),
        (["--ckpt", str(with_bonus), "--objective", "repeats"], 2, ["--objective"]),
        (["--ckpt", str(with_bonus), "--out", str(with_bonus)], 2, ["--out must not be --ckpt"]),
        (["--ckpt", str(tiny_checkpoints[0]), "--valid-fraction", "0.3"], 2, ["validation samples", "--valid-fraction"]),
    ]:  # a later --out wins: the third case overrides the default one
        r = cli("finetune", "--data", str(DIGINETICA), "--out", str(missing), "--max-batches", "2", *args)
        assert_one_line_error(r, code, *needles)
    assert not missing.exists() and with_bonus.read_bytes() == before
