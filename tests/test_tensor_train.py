"""Tensor-train (tt) and semi-tensor-train (stt) item tables (compressors/tensor_train.py): PyTorch algebra and the ONNX heads."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from odrec_export.compressors.tensor_train import (
    STTItemTable,
    TTItemTable,
    default_dim_shape,
    default_item_shape,
    stt_head,
    tt_head,
)
from odrec_export.export.graph import Graph
from onnx import TensorProto, helper, numpy_helper

N, D = 700, 16  # 701 rows → 27 × 26 = 702; d = 4 × 4
KINDS = {"tt": (TTItemTable, tt_head, {"rank": 6}), "stt": (STTItemTable, stt_head, {"rank": 8, "t": 2})}


def make(kind: str, n: int = N, d: int = D, seed: int = 0, **kw):
    cls, _, defaults = KINDS[kind]
    torch.manual_seed(seed)
    return cls(n, d, **{**defaults, **kw})


def some_ids(n: int = N, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, n + 1, (3, 7), generator=g)
    ids[0, :3] = 0  # padding
    ids[1, -1] = n  # last item
    return ids


def sessions(b: int = 4, d: int = D, seed: int = 2) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- shapes and sizes


def test_default_shapes():
    assert default_item_shape(N) == [27, 26]
    assert default_item_shape(40727) == [202, 202]
    assert default_item_shape(0) == [1, 1]
    assert default_dim_shape(128) == [16, 8] and default_dim_shape(128, 2) == [16, 8]
    assert default_dim_shape(64) == [8, 8] and default_dim_shape(36, 2) == [6, 6] and default_dim_shape(18, 2) == [9, 2]
    assert default_dim_shape(32, 2) == [8, 4]


@pytest.mark.parametrize("kind", KINDS)
def test_kwargs_are_json_and_rebuild(kind):
    cls = KINDS[kind][0]
    kw = {**KINDS[kind][2], "item_shape": [30, 24], "dim_shape": [8, 2]}
    m = cls(N, D, **json.loads(json.dumps(kw)))
    assert m.shapes() == {"item_shape": [30, 24], "dim_shape": [8, 2], "rank": kw["rank"]}
    m2 = cls(N, D, **json.loads(json.dumps(kw)))
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.table(), m.table())


def test_tmall_defaults_are_about_30x():
    for cls in (TTItemTable, STTItemTable):
        m = cls(40727, 128)
        assert m.table_params() == 174_528
        assert 29 < m.compression_ratio() < 31
        assert not any(a.size >= 40727 * 128 // 4 for a in m.export_arrays().values())
    assert TTItemTable.rank_for_ratio(40727, 128, 30) == 35
    assert STTItemTable.rank_for_ratio(40727, 128, 30) == 46
    assert STTItemTable.rank_for_ratio(40727, 128, 30) % 2 == 0
    assert TTItemTable.params_for(40727, 128, 35) <= 40727 * 128 / 30 < TTItemTable.params_for(40727, 128, 36)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError):
        TTItemTable(N, D, rank=4, item_shape=[10, 10])
    with pytest.raises(ValueError):
        TTItemTable(N, D, rank=4, dim_shape=[3, 5])
    with pytest.raises(ValueError):
        STTItemTable(N, D, rank=5)
    with pytest.raises(ValueError):
        STTItemTable(N, D, rank=4, dim_shape=[16, 1])


# --------------------------------------------------------------------------- PyTorch algebra


@pytest.mark.parametrize("kind", KINDS)
def test_lookup_matches_table_and_padding_is_zero(kind):
    m = make(kind)
    table = m.table()
    assert table.shape == (N + 1, D)
    assert torch.count_nonzero(table[0]) == 0
    ids = some_ids()
    vecs = m.lookup(ids)
    assert vecs.shape == (*ids.shape, D)
    torch.testing.assert_close(vecs, table[ids], rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(vecs[ids == 0]) == 0
    assert torch.count_nonzero(vecs[ids != 0]) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_score_matches_full_table(kind):
    m = make(kind)
    s = sessions()
    got = m.score(s)
    ref = s @ m.table().t()
    assert got.shape == (4, N + 1)
    torch.testing.assert_close(got[:, 1:], ref[:, 1:], rtol=1e-5, atol=1e-5)
    lp = m.log_probs(s)
    assert lp.shape == (4, N)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_both_cores(kind):
    m = make(kind)
    loss = m.log_probs(sessions()).mean() + m.lookup(some_ids()).pow(2).sum()
    loss.backward()
    assert m.g1.grad is not None and m.g2.grad is not None
    assert m.g1.grad.abs().sum() > 0 and m.g2.grad.abs().sum() > 0


def test_tt_table_is_the_explicit_core_product():
    m = make("tt")
    i1, i2 = m.i1, m.i2
    w = torch.einsum("ajr,rbk->abjk", m.g1, m.g2).reshape(i1 * i2, D)  # row a·I2 + b, column j·J2 + k
    torch.testing.assert_close(m.table()[1:], w[1:N + 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [2, 4])
def test_stt_table_is_the_semi_tensor_product(t):
    m = make("stt", d=32, rank=8, t=t, dim_shape=[4, 8])
    i1, i2, j1, j2 = m.i1, m.i2, m.j1, m.j2
    a = m.g1.reshape(i1 * j1, m.rank)  # (I1·J1) × R
    b = m.g2.reshape(m.rank // t, i2 * j2 // t)  # (R/t) × (I2·J2/t)
    stp = a @ torch.kron(b, torch.eye(t))  # A ⋉ B = A (B ⊗ I_t)
    assert stp.shape == (i1 * j1, i2 * j2)
    torch.testing.assert_close(m.stp_matrix(), stp, rtol=1e-5, atol=1e-6)
    w = stp.reshape(i1, j1, i2, j2).permute(0, 2, 1, 3).reshape(i1 * i2, 32)
    torch.testing.assert_close(m.table()[1:], w[1:N + 1], rtol=1e-5, atol=1e-6)
    ids = some_ids()
    torch.testing.assert_close(m.lookup(ids), m.table()[ids], rtol=1e-5, atol=1e-6)
    s = sessions(d=32)
    torch.testing.assert_close(m.score(s)[:, 1:], (s @ m.table().t())[:, 1:], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- init_from_table


@pytest.mark.parametrize("kind", KINDS)
def test_init_from_exactly_representable_table(kind):
    teacher = make(kind, seed=5)
    with torch.no_grad():  # rows the fit treats as zero (0 = padding, N+1.. = I1·I2 padding) really are zero
        for row in [0, *range(N + 1, teacher.i1 * teacher.i2)]:
            teacher.g2[:, row % teacher.i2] = 0
    target = teacher.table().detach()
    assert (target[1:].abs().sum(1) > 0).float().mean() > 0.9
    student = make(kind, seed=6)
    report = student.init_from_table(target, np.ones(N + 1))
    assert report["rel_error"] < 1e-5
    assert report["params"] == student.table_params() and report["full_params"] == N * D
    json.dumps(report)
    torch.testing.assert_close(student.table(), target, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_svd_error_decreases_with_rank(kind):
    target = torch.randn(N + 1, D, generator=torch.Generator().manual_seed(9))
    ranks = [2, 4, 8, 16] if kind == "stt" else [1, 3, 6, 12]
    errors = []
    for r in ranks:
        m = make(kind, rank=r)
        rep = m.init_from_table(target, np.ones(N + 1))
        # the error is the discarded spectrum (less what falls on the dropped padding rows)
        assert rep["svd_rel_error"] - 0.01 < rep["rel_error"] <= rep["svd_rel_error"] + 1e-6
        errors.append(rep["rel_error"])
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # full rank of the reshaped (tt: 108 × 104) or stacked (stt: 216 × 52) matrix: exact
    full = make(kind, rank=104)
    assert full.init_from_table(target, np.ones(N + 1))["rel_error"] < 1e-5


def test_stt_fit_beats_a_random_factorisation_of_same_rank():
    """Truncated SVD of the stacked matrix is optimal: no other stt of that rank fits better."""
    target = torch.randn(N + 1, D, generator=torch.Generator().manual_seed(3))
    m = make("stt", rank=4)
    best = m.init_from_table(target, np.ones(N + 1))["rel_error"]
    with torch.no_grad():
        m.g1.add_(0.01 * torch.randn_like(m.g1))
        m.g2.add_(0.01 * torch.randn_like(m.g2))
        err = float((m.table()[1:] - target[1:]).norm() / target[1:].norm())
    assert err > best


# --------------------------------------------------------------------------- ONNX heads


def head_onnx_model(kind: str, m) -> onnx.ModelProto:
    head = KINDS[kind][1]
    g = Graph()
    ids = "item_ids_test"
    g.const("zero_i64", np.array(0, np.int64))
    g.const("axes_last", np.array([-1], np.int64))
    g.op("Greater", [ids, "zero_i64"], "mask_bool")
    g.op("Cast", ["mask_bool"], "mask_2d", to=TensorProto.FLOAT)
    g.op("Unsqueeze", ["mask_2d", "axes_last"], "mask")
    n_caller = (len(g.nodes), len(g.inits))
    items_cfg = {k: v for k, v in KINDS[kind][2].items() if k != "rank"}
    scores = head(g, m.export_arrays(), items_cfg, m.num_items, m.dim, ids, "mask")
    names = [o for n in g.nodes[n_caller[0]:] for o in n.output] + [i.name for i in g.inits[n_caller[1]:]]
    assert all(x.startswith(kind + "/") for x in names if x != "enc/item_vectors"), names
    assert "enc/item_vectors" in names and scores.startswith(kind + "/")
    g.op("Identity", [scores], "scores")
    graph = helper.make_graph(
        g.nodes, "tt_head_test",
        inputs=[helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("enc/session", TensorProto.FLOAT, ["batch", m.dim])],
        outputs=[helper.make_tensor_value_info("enc/item_vectors", TensorProto.FLOAT, ["batch", "seq", m.dim]),
                 helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", m.num_items + 1])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def _largest(model: onnx.ModelProto) -> int:
    sizes = [int(np.prod(i.dims)) for i in model.graph.initializer]
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                sizes.append(numpy_helper.to_array(a.t).size)
    return max(sizes)


@pytest.mark.parametrize("kind,n,d", [("tt", N, D), ("stt", N, D), ("tt", 1500, 32), ("stt", 1500, 32), ("stt", 728, 16)])
def test_onnx_head_matches_pytorch_and_stays_compressed(kind, n, d, tmp_path):
    import onnxruntime as ort

    m = make(kind, n=n, d=d)
    arrays = m.export_arrays()
    assert all(a.dtype == np.float32 and a.size < n * d / 4 for a in arrays.values())
    assert all(k.startswith(kind + "/") for k in arrays)
    model = head_onnx_model(kind, m)
    path = tmp_path / "head.onnx"
    onnx.save(model, str(path))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "head.optimised.onnx")
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for b, seq, seed in [(3, 7, 1), (1, 2, 4), (5, 1, 8)]:  # dynamic batch and length
        ids = torch.randint(0, n + 1, (b, seq), generator=torch.Generator().manual_seed(seed))
        ids[0, 0] = 0
        s = sessions(b, d, seed)
        vecs, scores = sess.run(None, {"item_ids_test": ids.numpy(), "enc/session": s.numpy()})
        with torch.no_grad():
            ref_vecs, ref_scores = m.lookup(ids).numpy(), m.score(s).numpy()
        assert vecs.shape == (b, seq, d) and scores.shape == (b, n + 1)
        np.testing.assert_allclose(vecs, ref_vecs, rtol=1e-5, atol=1e-5 * np.abs(ref_vecs).max())
        assert not vecs[0, 0].any()
        np.testing.assert_allclose(scores[:, 1:], ref_scores[:, 1:], rtol=1e-5,
                                   atol=1e-5 * np.abs(ref_scores).max())
    for graph in (model, onnx.load(so.optimized_model_filepath)):
        assert _largest(graph) < n * d / 4
