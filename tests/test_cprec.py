"""CpRec: the block table and adaptive softmax (PyTorch and ONNX head), and layer-wise sharing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from odrec_export.compressors.cprec import PAD_SCORE, BlockItemTable, blocks_for_ratio, count_params, cprec_head
from odrec_export.export.graph import Graph
from odrec_export.models.encoder import SHARE_MODES, EncoderConfig, SessionEncoder
from onnx import TensorProto, helper, numpy_helper

N, D = 120, 16


def _table(seed: int = 0, blocks=(10, 30), rho: int = 4) -> BlockItemTable:
    torch.manual_seed(seed)
    t = BlockItemTable(N, D, blocks=list(blocks), rho=rho)
    counts = np.random.default_rng(seed).integers(0, 50, N + 1)
    t.set_frequencies(counts)
    return t


def _reference_scores(t: BlockItemTable, s: torch.Tensor) -> torch.Tensor:
    """Straightforward per-item computation of the adaptive softmax."""
    order = t.order().tolist()  # item index by rank
    b0 = t.sizes[0]
    head = [s @ t.tables[0][r] for r in range(b0)]
    head += [s @ t.clusters[i] + t.cluster_bias[i] for i in range(len(t.sizes) - 1)]
    head_lp = F.log_softmax(torch.stack(head, 1), 1)
    out = torch.full((s.shape[0], N + 1), float("nan"), dtype=torch.float64)
    for rank, item in enumerate(order):
        blk = max(i for i, off in enumerate(t.offsets) if rank >= off)
        row = rank - t.offsets[blk]
        if blk == 0:
            out[:, item] = head_lp[:, row].double()
        else:
            vecs = t.tables[blk] @ t.projections[blk - 1].t()  # |block| × d
            tail_lp = F.log_softmax(s @ vecs.t(), 1)
            out[:, item] = (head_lp[:, b0 + blk - 1] + tail_lp[:, row]).double()
    return out


def test_lookup_matches_table_and_padding_is_zero():
    t = _table()
    ids = torch.tensor([[0, 0, 5, 17, 3], [1, 2, 119, 120, 64]])
    full = t.table()
    assert full.shape == (N + 1, D) and torch.all(full[0] == 0)
    vecs = t.lookup(ids)
    torch.testing.assert_close(vecs, full[ids], rtol=1e-5, atol=1e-6)
    assert torch.all(vecs[0, :2] == 0)


def test_score_is_log_probabilities_and_matches_reference():
    t = _table(1)
    s = torch.randn(4, D)
    with torch.no_grad():
        lp = t.score(s)
        ref = _reference_scores(t, s)
    assert lp.shape == (4, N + 1) and torch.all(lp[:, 0] == PAD_SCORE)
    torch.testing.assert_close(torch.logsumexp(lp[:, 1:].double(), 1), torch.zeros(4, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(lp[:, 1:].double(), ref[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t.log_probs(s), lp[:, 1:])


def test_init_from_table_full_rank_blocks_reconstruct_exactly():
    torch.manual_seed(3)
    teacher = torch.randn(N + 1, D)
    teacher[0] = 0
    counts = np.random.default_rng(3).integers(0, 100, N + 1)
    # rho=1: every block keeps d dimensions, so each truncated SVD is exact
    t = BlockItemTable(N, D, blocks=[20, 40], rho=1)
    rep = t.init_from_table(teacher, counts)
    assert max(rep["relative_error"]) < 1e-5 and rep["blocks"] == [20, 40, 60]
    torch.testing.assert_close(t.table(), teacher, atol=1e-5, rtol=1e-5)
    # rho=4 with tail blocks no bigger than their dimension (16, 4, 1): also exact
    t = BlockItemTable(N, D, blocks=[N - 5, 4], rho=4)
    rep = t.init_from_table(teacher, counts)
    assert max(rep["relative_error"]) < 1e-5
    torch.testing.assert_close(t.table(), teacher, atol=1e-5, rtol=1e-5)
    # the most clicked items land in block 0
    top = np.argsort(-counts[1:], kind="stable")[:N - 5] + 1
    assert sorted(t.order()[:N - 5].tolist()) == sorted(top.tolist())
    # a lossy split reports an error and a smaller size
    t = BlockItemTable(N, D, blocks=[10, 20], rho=4)
    rep = t.init_from_table(teacher, counts)
    assert rep["relative_error"][0] < 1e-6 and rep["relative_error"][2] > 0.1 and rep["ratio"] > 1


def test_default_blocks_and_ratio_helper():
    b = blocks_for_ratio(40727, 128, 30, 4)
    ratio = 40727 * 128 / count_params(40727, 128, b + [40727 - sum(b)], 4)
    assert 27 <= ratio <= 33
    t = BlockItemTable(40727, 128)
    assert t.blocks == b and t.dims == [128, 32, 8, 2] and t.param_count() == count_params(40727, 128, t.sizes, 4)
    for r in (4, 8):
        b = blocks_for_ratio(40727, 128, r, 4)
        got = 40727 * 128 / count_params(40727, 128, b + [40727 - sum(b)], 4)
        assert 0.9 * r <= got <= 1.1 * r
    assert BlockItemTable(30, 8).sizes  # tiny sizes still build
    rebuilt = BlockItemTable(40727, 128, **t.config())
    assert rebuilt.sizes == t.sizes
    arrays = t.export_arrays()
    assert all(name.startswith("cprec/") for name in arrays)
    assert arrays["cprec/position"].dtype == np.uint16 and arrays["cprec/position"].shape == (40728,)
    assert all(a.size < 40727 * 128 / 4 for a in arrays.values())


def test_rebuilt_from_config_loads_state_dict_strictly():
    import json

    t = _table(5)
    rebuilt = BlockItemTable(N, D, **json.loads(json.dumps(t.config())))
    rebuilt.load_state_dict(t.state_dict(), strict=True)
    assert torch.equal(rebuilt.position, t.position)
    torch.testing.assert_close(rebuilt.table(), t.table())


# --------------------------------------------------------------------------- the ONNX head


def _head_model(t: BlockItemTable, expand_top=None) -> onnx.ModelProto:
    g = Graph()
    mask = g.op("Unsqueeze", [g.op("Cast", [g.op("Greater", ["ids", "zero_i64"], "real")], "real_f",
                                           to=TensorProto.FLOAT), "axes_last"], "mask")
    g.const("zero_i64", np.array(0, np.int64))
    g.const("axes_last", np.array([-1], np.int64))
    scores = cprec_head(g, t.export_arrays(), t.config(), t.num_items, t.dim, "ids", mask, expand_top=expand_top)
    names = [n for node in g.nodes for n in node.output] + [i.name for i in g.inits]
    assert all(n.startswith("cprec/") for n in names if n not in ("real", "real_f", "mask", "zero_i64",
                                                                     "axes_last", "enc/item_vectors"))
    graph = helper.make_graph(
        g.nodes, "cprec_head",
        inputs=[helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("enc/session", TensorProto.FLOAT, ["batch", t.dim])],
        outputs=[helper.make_tensor_value_info("enc/item_vectors", TensorProto.FLOAT, ["batch", "seq", t.dim]),
                 helper.make_tensor_value_info(scores, TensorProto.FLOAT, ["batch", t.num_items + 1])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, ids: np.ndarray, s: np.ndarray, optimised: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimised:
        so.optimized_model_filepath = optimised
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"ids": ids, "enc/session": s})


def test_onnx_head_matches_pytorch(tmp_path):
    t = _table(2)
    ids = np.array([[0, 0, 5, 17, 3], [1, 2, 119, 120, 64], [0, 0, 0, 0, 7]], np.int64)
    s = np.random.default_rng(2).normal(size=(3, D)).astype(np.float32)
    vecs, scores = _run(_head_model(t), ids, s, str(tmp_path / "opt.onnx"))
    with torch.no_grad():
        ref_vecs = t.lookup(torch.from_numpy(ids)).numpy()
        ref = t.score(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(vecs, ref_vecs, atol=1e-5, rtol=1e-5)
    assert np.all(vecs[0, :2] == 0)
    np.testing.assert_allclose(scores, ref, atol=1e-5, rtol=1e-5)
    # different batch and length (dynamic shapes)
    vecs1, scores1 = _run(_head_model(t), ids[:1, 2:], s[:1])
    np.testing.assert_allclose(scores1, ref[:1], atol=1e-5, rtol=1e-5)
    # no N×d table in the file or in onnxruntime's optimised graph
    for model in (_head_model(t), onnx.load(str(tmp_path / "opt.onnx"))):
        sizes = [int(np.prod(i.dims)) for i in model.graph.initializer]
        sizes += [numpy_helper.to_array(n.attribute[0].t).size for n in model.graph.node if n.op_type == "Constant"]
        assert max(sizes) < N * D / 4


def test_onnx_head_top_k_expansion():
    t = _table(4)
    s = np.random.default_rng(4).normal(size=(3, D)).astype(np.float32)
    ids = np.array([[1, 2]] * 3, np.int64)
    b0 = t.sizes[0]
    ranks = t.position.long()  # column of each item in rank order
    block_of = np.searchsorted(np.array(t.offsets), ranks.numpy() - 1, side="right") - 1
    for bias in (None, 100.0):
        if bias is not None:  # make cluster 1 the head's top entry
            with torch.no_grad():
                t.cluster_bias[0] = bias
        _, scores = _run(_head_model(t, expand_top=1), ids, s)
        with torch.no_grad():
            full = t.score(torch.from_numpy(s)).numpy()
            approx = t.score(torch.from_numpy(s), expand_top=1).numpy()
            head = torch.cat([torch.from_numpy(s) @ t.tables[0].t(),
                              torch.from_numpy(s) @ t.clusters.t() + t.cluster_bias], 1)
        np.testing.assert_allclose(scores, approx, atol=1e-5, rtol=1e-5)
        top = head.argmax(1).numpy()
        if bias is not None:
            assert np.all(top == b0)
        for row in range(3):
            expanded = {0} | ({top[row] - b0 + 1} if top[row] >= b0 else set())
            keep = np.isin(block_of, list(expanded))
            keep[0] = False
            np.testing.assert_allclose(scores[row, keep], full[row, keep], atol=1e-5, rtol=1e-5)
            assert np.all(scores[row, 1:][~keep[1:]] == PAD_SCORE)
    # expanding every cluster gives the exact scores
    _, scores = _run(_head_model(t, expand_top=N), ids, s)
    np.testing.assert_allclose(scores, full, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- layer-wise sharing


def _encoder(share: str, layers: int = 4) -> SessionEncoder:
    torch.manual_seed(0)
    return SessionEncoder(EncoderConfig(num_items=N, dim=D, heads=2, layers=layers, max_len=8, share=share))


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_default_encoder_state_dict_unchanged():
    old = {"num_items": N, "dim": D, "heads": 2, "layers": 2, "max_len": 8, "dropout": 0.5}
    enc = SessionEncoder(EncoderConfig(**old))
    keys = ["pos.weight", "ln.weight", "ln.bias"]
    for j in range(2):
        b = f"blocks.{j}."
        keys += [b + k for k in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                 "ln1.weight", "ln1.bias", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight",
                                 "ffn.2.bias", "ln2.weight", "ln2.bias")]
    keys += ["readout.w1.weight", "readout.w2.weight", "readout.w2.bias", "readout.w.weight"]
    assert list(enc.state_dict()) == keys
    assert EncoderConfig(**old).to_dict() == {**old, "share": "none"}
    with pytest.raises(ValueError):
        _encoder("sideways")


@pytest.mark.parametrize("share", [m for m in SHARE_MODES if m != "none"])
def test_sharing_modes(share):
    base, enc = _encoder("none"), _encoder(share)
    assert _count(enc) < _count(base)
    blocks = enc.blocks
    ptr = lambda lin: lin.weight.data_ptr()  # noqa: E731
    if share in ("cross-block", "cross-layer"):
        for blk in blocks[1:]:
            assert blk.attn.qkv.weight is blocks[0].attn.qkv.weight and ptr(blk.ffn[0]) == ptr(blocks[0].ffn[0])
            assert blk.ffn[0].bias is blocks[0].ffn[0].bias
    if share == "adjacent-block":
        assert blocks[1].attn.proj.weight is blocks[0].attn.proj.weight
        assert ptr(blocks[3].ffn[2]) == ptr(blocks[2].ffn[2]) != ptr(blocks[1].ffn[2])
    if share in ("adjacent-layer", "cross-layer"):
        for blk in blocks:
            assert ptr(blk.ffn[0]) == ptr(blk.ffn[2]) and blk.ffn[0].bias is not blk.ffn[2].bias
    if share == "adjacent-layer":
        assert ptr(blocks[1].ffn[0]) != ptr(blocks[0].ffn[0])
    for blk in blocks[1:]:  # LayerNorms never shared
        assert blk.ln1.weight is not blocks[0].ln1.weight and blk.ln2.bias is not blocks[0].ln2.bias
    expected = {"cross-block": 3, "adjacent-block": 2, "adjacent-layer": 4, "cross-layer": 3}[share]
    d = D
    per_block = 4 * d * d + 4 * d + 2 * (d * d + d)  # attention (qkv, proj) + FFN
    assert _count(base) - _count(enc) == {
        "cross-block": expected * per_block, "adjacent-block": expected * per_block,
        "adjacent-layer": expected * d * d, "cross-layer": expected * per_block + d * d}[share]

    ids = torch.tensor([[0, 3, 4, 5], [1, 2, 3, 4]])
    vecs = torch.randn(2, 4, D)
    enc.eval()
    out = enc(vecs, ids)
    assert out.shape == (2, D) and torch.isfinite(out).all()
    out.sum().backward()
    # round trip: a fresh encoder of the same mode loads the state_dict strictly, and stays shared
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.01)
    other = SessionEncoder(EncoderConfig(**enc.cfg.to_dict()))
    other.load_state_dict(enc.state_dict(), strict=True)
    other.eval()
    torch.testing.assert_close(other(vecs, ids), enc(vecs, ids))
    assert _count(other) == _count(enc)
