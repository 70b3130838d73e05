"""The sampled objective: exact when the negatives are every item, draws by frequency, sparse row
updates, and students that never build their N×d table in a sampled step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import needs_shared
from odrec_export.compressors.codes import CodesItemTable
from odrec_export.compressors.cprec import BlockItemTable
from odrec_export.compressors.full_table import FullItemTable
from odrec_export.errors import UsageError
from odrec_export.train.sampled import Negatives, NegativeSampler, check_loss, sampled_cross_entropy


def test_every_item_as_a_negative_under_uniform_counts_is_the_full_softmax():
    torch.manual_seed(0)
    items = FullItemTable(num_items=30, dim=8)
    sessions, targets = torch.randn(5, 8), torch.tensor([1, 7, 30, 7, 12])
    sampler = NegativeSampler(np.array([0] + [3] * 30), negatives=30)  # uniform: a constant correction
    everything = torch.arange(1, 31)
    sampled = sampled_cross_entropy(sessions, items, targets, everything, sampler.log_expected)
    full = F.cross_entropy(sessions @ items.weight[1:].t(), targets - 1)
    assert torch.allclose(sampled, full, atol=1e-5)


def test_draws_follow_click_frequency_and_never_padding():
    counts = np.array([0, 999, 0, 99, 9])  # + 1 each: 1000, 1, 100, 10
    sampler = NegativeSampler(counts, negatives=200_000, seed=1)
    draws = sampler.draw()
    assert draws.min() >= 1 and draws.max() <= 4
    share = torch.bincount(draws, minlength=5)[1:].float() / len(draws)
    assert torch.allclose(share, torch.tensor([1000, 1, 100, 10]) / 1111, atol=3e-3)
    # the log-Q correction is the log of each item's expected draws per step
    assert torch.allclose(sampler.log_expected[1:].exp(), 200_000 * torch.tensor([1000, 1, 100, 10]) / 1111)
    same = NegativeSampler(counts, negatives=50, seed=1)
    assert torch.equal(same.draw(), NegativeSampler(counts, negatives=50, seed=1).draw())


def test_in_batch_targets_join_the_negatives():
    sampler = NegativeSampler(np.array([0, 5, 5, 5]), negatives=4, seed=0, in_batch=2)
    draws = sampler.draw(torch.tensor([3, 1]))
    assert len(draws) == 6 and draws[-2:].tolist() == [3, 1]
    assert torch.allclose(sampler.log_expected[1:].exp(), torch.full((3,), 6 / 3))


def test_a_negative_equal_to_the_target_is_masked_and_session_items_can_be_excluded():
    torch.manual_seed(0)
    items = FullItemTable(num_items=10, dim=4)
    sessions, targets = torch.randn(2, 4), torch.tensor([3, 5])
    log_q = torch.zeros(11)
    with_hit = sampled_cross_entropy(sessions, items, targets, torch.tensor([3, 4]), log_q)
    # row 0's negative 3 is its target: only 4 competes; row 1 sees both 3 and 4
    s = sessions @ items.weight.t()
    expected = (F.cross_entropy(torch.stack([s[0, 3], s[0, 4]])[None], torch.tensor([0]))
                + F.cross_entropy(torch.stack([s[1, 5], s[1, 3], s[1, 4]])[None], torch.tensor([0]))) / 2
    assert torch.allclose(with_hit, expected, atol=1e-6)
    excluded = sampled_cross_entropy(sessions, items, targets, torch.tensor([3, 4]), log_q,
                                     exclude=torch.tensor([[0, 4], [0, 4]]))
    expected = (F.cross_entropy(s[0, 3][None, None], torch.tensor([0]))
                + F.cross_entropy(torch.stack([s[1, 5], s[1, 3]])[None], torch.tensor([0]))) / 2
    assert torch.allclose(excluded, expected, atol=1e-6)


def test_cprec_and_bad_options_are_refused():
    with pytest.raises(UsageError, match="adaptive softmax"):
        check_loss("sampled", 10, BlockItemTable(num_items=100, dim=16))
    with pytest.raises(UsageError, match="--loss"):
        check_loss("softmax", 10)
    with pytest.raises(UsageError, match="--negatives"):
        check_loss("sampled", 0)
    check_loss("sampled", 10, CodesItemTable(num_items=100, dim=16, m=2, k=4))


@needs_shared
def test_a_sampled_teacher_step_updates_only_the_rows_it_touched(diginetica):
    from odrec_export.models.encoder import EncoderConfig
    from odrec_export.models.registry import build_model
    from odrec_export.train.loop import TrainConfig, cross_entropy_loss, fit

    torch.manual_seed(0)
    model = build_model({"encoder": EncoderConfig(num_items=diginetica.num_items, dim=16, max_len=10).to_dict(),
                         "compressor": "none", "items": {}})
    before = model.items.weight.detach().clone()
    touched = set()

    def spy(m, ids, targets, sample):
        touched.update(ids.unique().tolist() + targets.tolist() + sample.items.tolist())
        return cross_entropy_loss(m, ids, targets, sample)

    fit(model, diginetica, TrainConfig(epochs=1, max_batches=1, batch_size=16, loss="sampled", negatives=20), spy,
        log=lambda _: None)
    changed = set((model.items.weight.detach() != before).any(1).nonzero().flatten().tolist())
    assert changed and changed <= touched - {0}
    assert len(changed) < diginetica.num_items / 3  # not a dense update of the whole table


@needs_shared
def test_a_sampled_distillation_step_never_builds_a_full_table(tiny_checkpoints, diginetica, monkeypatch):
    from odrec_export.checkpoint import load_checkpoint
    from odrec_export.models.registry import model_from_checkpoint
    from odrec_export.train.distill import Distiller, distill_config, hot_items
    from odrec_export.train.loading import load_teacher

    teacher, _ = load_teacher(tiny_checkpoints[0], diginetica)
    student = model_from_checkpoint(load_checkpoint(tiny_checkpoints[1]))
    distiller = Distiller(teacher, student, hot_items(diginetica, 0.2), distill_config("codes"))

    def no_table(*a, **k):
        raise AssertionError("a sampled step built the N×d table")

    for items in (teacher.items, student.items):
        monkeypatch.setattr(items, "table", no_table)
    sampler = NegativeSampler(diginetica.item_counts(), negatives=32)
    ids = torch.tensor([[0, 3, 5], [7, 8, 9]])
    loss, parts = distiller(ids, torch.tensor([4, 2]), Negatives(sampler.draw(), sampler.log_expected))
    loss.backward()
    assert set(parts) >= {"rec", "mse", "soft", "con", "teacher_rec"} and torch.isfinite(loss)
    assert student.items.codebooks.grad is not None and student.items.codebooks.grad.abs().sum() > 0
