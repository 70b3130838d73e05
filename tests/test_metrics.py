"""Metrics against hand-computed values."""

import math

import pytest
import torch

from odrec_export.metrics import RankingMetrics, format_table, metrics_from_ranks, target_ranks


def test_target_ranks_count_strictly_higher_scores():
    scores = torch.tensor([[float("-inf"), 0.9, 0.1, 0.5, 0.5],
                           [float("-inf"), 0.2, 0.3, 0.4, 0.1]])
    assert target_ranks(scores, torch.tensor([3, 4])).tolist() == [1, 3]  # tie at 0.5 does not count


def test_hand_computed_values():
    m = metrics_from_ranks([0, 4, 9, 30], ks=(5, 10))
    assert m["HR@5"] == pytest.approx(2 / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(11)) / 4)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 5 + 1 / 10) / 4)
    assert m["samples"] == 4


def test_accumulator_counts_each_sample_once():
    acc = RankingMetrics(ks=(1,))
    acc.add_ranks([0, 1])
    acc.add_ranks([0])
    assert acc.count == 3
    assert acc.result()["HR@1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        RankingMetrics().result()


def test_format_table_in_percent():
    text = format_table(metrics_from_ranks([0, 100]))
    assert "50.00" in text and "2 samples" in text
