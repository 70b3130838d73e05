"""Metrics against hand-computed values."""

import math

import pytest
import torch

from odrec_export.metrics import format_table, metrics_from_ranks, target_ranks


def test_target_ranks_break_ties_by_index_like_topk():
    scores = torch.tensor([[float("-inf"), 0.9, 0.1, 0.5, 0.5],
                           [float("-inf"), 0.2, 0.3, 0.4, 0.1],
                           [float("-inf"), 0.9, 0.1, 0.5, 0.5]])
    # row 0: the tie at 0.5 has a higher index (4) and does not count; row 2: target 4 is behind item 3
    assert target_ranks(scores, torch.tensor([3, 4, 4])).tolist() == [1, 3, 2]
    assert onnxruntime_topk_order(scores[2].numpy()).index(4) == 2


def onnxruntime_topk_order(row) -> list[int]:
    """Indices of one score row as onnxruntime's TopK orders them (the shipped artifact's order)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = len(row)
    graph = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"])], "topk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, n]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [1, n])],
        [helper.make_tensor("k", TensorProto.INT64, [1], [n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["i"], {"x": np.asarray(row, dtype=np.float32)[None]})[0][0].tolist()


def test_hand_computed_values():
    m = metrics_from_ranks([0, 4, 9, 30], ks=(5, 10))
    assert m["HR@5"] == pytest.approx(2 / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(11)) / 4)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 5 + 1 / 10) / 4)
    assert m["samples"] == 4


def test_no_samples_is_an_error():
    with pytest.raises(ValueError):
        metrics_from_ranks([])


def test_format_table_in_percent():
    text = format_table(metrics_from_ranks([0, 100]))
    assert "50.00" in text and "2 samples" in text
