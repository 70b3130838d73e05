"""odrec-export build: the artifact contract, exactness against PyTorch, compactness after onnxruntime's
optimisations, determinism, atomicity and one-line errors. Real data: the Diginetica sample."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import DIGINETICA, assert_one_line_error, cli, needs_shared
from odrec_export.checkpoint import load_checkpoint
from odrec_export.data.sessions import pad_batch
from odrec_export.export import BuildOptions, build
from odrec_export.export import artifact as A
from odrec_export.export.onnx_runtime import ort_session
from odrec_export.models.registry import model_from_checkpoint
from odrec_export.verify.parity import Agreement, Case, accumulate_parity
from onnx import numpy_helper

pytestmark = needs_shared


def run(folder, ids) -> tuple[np.ndarray, np.ndarray]:
    return tuple(ort_session(folder / A.MODEL_FILE).run(None, {A.INPUT_NAME: np.asarray(ids, dtype=np.int64)}))


# --------------------------------------------------------------------------- contract


def test_files_manifest_and_items(built, tiny_checkpoints):
    folder = built["int8"]
    # integer item ids: the compact binary id map (items.bin) by default
    assert sorted(p.name for p in folder.iterdir()) == ["items.bin", "manifest.json", "model.onnx", "model.ort"]
    m = A.validate(folder)
    ckpt = load_checkpoint(tiny_checkpoints[1])
    assert A.read_items(folder) == [str(v) for v in ckpt.vocab]  # line i = raw id of index i
    assert m["num_items"] == len(ckpt.vocab) and m["top_k"] == 20
    assert m["max_session_length"] == ckpt.config["encoder"]["max_len"]
    # K² = 256: two 4-bit codes share one uint8 index, one table lookup for each pair of codebooks
    assert m["compressor"] == {"name": "codes", "M": 4, "K": 16, "d": 32, "code_dtype": "uint8", "codebooks_per_index": 2}
    assert m["quantisation"]["scheme"] == "int8"
    assert 18 <= m["opset"] <= 20 and m["ir_version"] <= 9
    assert m["source_checkpoint_sha256"] == A.file_sha256(tiny_checkpoints[1])
    assert set(m["files"]) == {"model.onnx", "items.bin", "model.ort"}
    assert m["id_map"]["file"] == "items.bin" and m["id_map"]["form"] == "binary"
    assert {"onnxruntime", "onnx", "torch", "onnxsim", "odrec_export"} <= set(m["versions"])
    assert [i["name"] for i in m["inputs"]] == ["item_ids"]
    assert [(o["name"], o["dtype"]) for o in m["outputs"]] == [("top_ids", "int64"), ("top_scores", "float32")]


def test_graph_names_dtypes_dynamic_axes(built):
    model = onnx.load(str(built["int8"] / A.MODEL_FILE))
    assert model.ir_version <= 9 and 18 <= model.opset_import[0].version <= 20
    (inp,) = model.graph.input
    assert inp.name == "item_ids" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["batch", "seq"]
    outs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert outs["top_ids"].elem_type == onnx.TensorProto.INT64
    assert outs["top_scores"].elem_type == onnx.TensorProto.FLOAT
    n = A.read_manifest(built["int8"])["num_items"]
    for batch, seq in ((1, 1), (3, 7), (2, 50)):
        ids, scores = run(built["int8"], np.random.default_rng(batch).integers(1, n + 1, size=(batch, seq)))
        assert ids.shape == scores.shape == (batch, 20) and ids.dtype == np.int64 and scores.dtype == np.float32
        assert ((ids >= 1) & (ids <= n)).all() and (np.diff(scores, axis=1) <= 0).all()
        assert all(len(set(row)) == 20 for row in ids)


@pytest.mark.parametrize("kind", ["int8", "teacher"])
def test_padding_out_of_range_and_overlong(built, kind):
    folder = built[kind]
    m = A.read_manifest(folder)
    n, max_len = m["num_items"], m["max_session_length"]
    session = [5, 17, 3, 42, 8]
    ref_ids, ref_scores = run(folder, [session])
    variants = [[0, 0, 0] + session, session + [0, 0], [5, 0, 17, 0, 0, 3, 42, 0, 8],  # padding anywhere
                [-3, 5, 17, n + 1, 3, 42, 10**12, 8, -(10**12)]]  # out-of-range ids are padding
    width = max(len(v) for v in variants)
    batch = np.array([v + [0] * (width - len(v)) if i == 1 else [0] * (width - len(v)) + v
                      for i, v in enumerate(variants)])
    ids, scores = run(folder, batch)
    for row in range(len(variants)):
        assert (ids[row] == ref_ids[0]).all()
        np.testing.assert_allclose(scores[row], ref_scores[0], rtol=1e-5, atol=1e-6)
    # over-long: only the most recent max_len items count
    long = list(np.random.default_rng(0).integers(1, n + 1, size=max_len + 15))
    ids_long, scores_long = run(folder, [long])
    ids_tail, scores_tail = run(folder, [long[-max_len:]])
    assert (ids_long == ids_tail).all()
    np.testing.assert_allclose(scores_long, scores_tail, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["int8", "fp32", "teacher"])
def test_a_session_with_no_known_item_gets_the_most_clicked_items(built, diginetica, kind):
    manifest = A.read_manifest(built[kind])
    n, k = manifest["num_items"], manifest["top_k"]
    popular = diginetica.popular_items()  # the data the fixture checkpoints were trained on
    batch = np.array([[0, 0, 0, 0], [0, -1, n + 5, 0], [0, 0, 0, 3]])
    ids, scores = run(built[kind], batch)
    for row in (0, 1):
        assert ids[row].tolist() == popular["ids"][:k]
        np.testing.assert_allclose(scores[row], np.log1p(popular["clicks"][:k]), rtol=1e-6)
    alone_ids, alone_scores = run(built[kind], [[3]])  # a known item in the batch: the model's own answer
    assert (ids[2] == alone_ids[0]).all() and np.allclose(scores[2], alone_scores[0], rtol=1e-5, atol=1e-6)
    # a session of length 0 (the sequence axis is dynamic) is an empty one, not a crash
    empty_ids, empty_scores = run(built[kind], np.zeros((2, 0), dtype=np.int64))
    assert (empty_ids == ids[0]).all() and np.array_equal(empty_scores[0], scores[0])
    assert manifest["cold_start"].startswith("popular")


def test_a_checkpoint_without_popular_items_builds_with_a_note_or_counts_them(tiny_checkpoints, tmp_path):
    from odrec_export.checkpoint import save_checkpoint

    old = load_checkpoint(tiny_checkpoints[0])
    del old.provenance["popular_items"]
    save_checkpoint(old, tmp_path / "old.pt")
    r = cli("build", "--ckpt", str(tmp_path / "old.pt"), "--out", str(tmp_path / "a"), "--no-simplify")
    assert r.returncode == 0, r.stderr
    assert "records no popular items" in r.stdout and A.read_manifest(tmp_path / "a")["cold_start"].startswith("none")
    r = cli("build", "--ckpt", str(tmp_path / "old.pt"), "--out", str(tmp_path / "b"), "--no-simplify",
            "--popular-from", str(DIGINETICA))
    assert r.returncode == 0, r.stderr
    ids, _ = run(tmp_path / "b", [[0]])
    recorded = load_checkpoint(tiny_checkpoints[0]).provenance["popular_items"]["ids"]
    assert ids[0].tolist() == recorded[:len(ids[0])]  # the same split, the same count


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind,ckpt_index", [("fp32", 1), ("teacher", 0)])
def test_fp32_graph_matches_pytorch_on_real_sessions(built, tiny_checkpoints, diginetica, kind, ckpt_index):
    model = model_from_checkpoint(load_checkpoint(tiny_checkpoints[ckpt_index]))
    max_len = model.encoder.cfg.max_len
    prefixes = [p for p, _ in diginetica.test_samples] + [p for p, _ in diginetica.valid_samples[:100]]
    ids = pad_batch(prefixes, max_len)
    top_ids, top_scores = run(built[kind], ids)
    with torch.no_grad():
        ref_scores, ref_ids = model.scores(torch.from_numpy(ids)).topk(20)
    # Items sharing a code score identically, and the two runtimes may order such ties differently:
    # ids must match wherever the scores are not tied (verify's parity rule).
    agreement = Agreement()
    accumulate_parity(Case("real sessions", ids), ref_ids.numpy(), ref_scores.numpy(), top_ids, top_scores, agreement,
            rtol=1e-4)
    assert not agreement.problems, agreement.problems[:3]
    assert agreement.identical >= 0.9 * agreement.rows
    np.testing.assert_allclose(top_scores, ref_scores.numpy(), rtol=1e-4, atol=1e-5)


def test_int8_is_close_to_fp32_and_evaluated(built):
    ev = A.read_manifest(built["int8"])["evaluation"]
    assert ev["samples"] > 50 and set(ev["metrics"]) >= {"HR@10", "NDCG@10", "MRR@20"}
    assert abs(ev["quantised_minus_fp32_points"]["HR@10"]) <= 3.0
    assert "HR" in built["cli_stdout"] and "quantised - fp32" in built["cli_stdout"]
    n = A.read_manifest(built["int8"])["num_items"]
    batch = np.random.default_rng(1).integers(1, n + 1, size=(64, 6))
    q, _ = run(built["int8"], batch)
    f, _ = run(built["fp32"], batch)
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(q, f)])
    assert overlap >= 0.9


def test_ort_file_loads_and_matches(built):
    batch = pad_batch([[1, 2, 3], [7, 8]], 5)
    onnx_out = run(built["int8"], batch)
    ort_out = ort_session(built["int8"] / A.ORT_FILE).run(None, {A.INPUT_NAME: batch})
    assert (onnx_out[0] == ort_out[0]).all()
    np.testing.assert_allclose(onnx_out[1], ort_out[1], rtol=1e-6)


# --------------------------------------------------------------------------- no N×d table anywhere


def _largest_tensors(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """name → (elements, dtype) of every initializer and Constant node."""
    out = {i.name: (int(np.prod(i.dims)), i.data_type) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            t = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].type == onnx.AttributeProto.TENSOR else None
            if t is not None:
                out[node.output[0]] = (t.size, 0)
    return out


def test_no_item_table_in_file_or_in_onnxruntimes_optimised_graph(built, tmp_path):
    import onnxruntime as ort

    m = A.read_manifest(built["int8"])
    n, d, mm = m["num_items"], m["compressor"]["d"], m["compressor"]["M"]
    results = {}
    for kind in ("int8", "fp32", "teacher"):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(tmp_path / f"{kind}.optimised.onnx")
        ort.InferenceSession(str(built[kind] / A.MODEL_FILE), so, providers=["CPUExecutionProvider"])
        results[kind] = [_largest_tensors(onnx.load(str(built[kind] / A.MODEL_FILE))),
                         _largest_tensors(onnx.load(so.optimized_model_filepath))]
    for kind in ("int8", "fp32"):
        for tensors in results[kind]:
            assert max(e for e, _ in tensors.values()) < n * d
            # the codes stay 1 byte each: no int32/int64 copy of the N×M codes was folded in
            wide = [name for name, (e, t) in tensors.items()
                    if e >= n * mm and t in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)]
            assert wide == []
    # the check can fail: the uncompressed teacher graph does hold an (N+1)×d table
    assert max(e for e, _ in results["teacher"][1].values()) >= n * d
    assert (built["int8"] / A.MODEL_FILE).stat().st_size < (built["teacher"] / A.MODEL_FILE).stat().st_size


# --------------------------------------------------------------------------- determinism, atomicity, errors


def test_same_checkpoint_and_options_give_byte_identical_files(built, tiny_checkpoints, tmp_path):
    build(tiny_checkpoints[1], tmp_path / "again", BuildOptions(quant="fp32", encoder_quant="fp32"))
    for name in ("model.onnx", "items.bin", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (built["fp32"] / name).read_bytes(), name


def test_failed_build_leaves_nothing_and_force_replaces(tiny_checkpoints, tmp_path):
    bad_data = tmp_path / "empty.csv"
    bad_data.write_text("")
    out = tmp_path / "art"
    r = cli("build", "--ckpt", str(tiny_checkpoints[1]), "--out", str(out), "--eval-data", str(bad_data))
    assert_one_line_error(r, 1, "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]  # no DIR, no temp dir
    # an existing artifact survives a failed --force rebuild untouched
    out.mkdir()
    (out / "keep.txt").write_text("old")
    r = cli("build", "--ckpt", str(tiny_checkpoints[1]), "--out", str(out), "--force", "--eval-data", str(bad_data))
    assert_one_line_error(r, 1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    r = cli("build", "--ckpt", str(tiny_checkpoints[0]), "--out", str(out), "--force", "--no-simplify")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["items.bin", "manifest.json", "model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "empty.csv"]


def test_bad_inputs_are_one_line_errors(tiny_checkpoints, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(cli("build", "--ckpt", str(junk), "--out", str(tmp_path / "a")), 1, "junk.pt")
    assert_one_line_error(cli("build", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "a")), 2,
                          "missing.pt")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert_one_line_error(cli("build", "--ckpt", str(tiny_checkpoints[1]), "--out", str(full)), 1, "not empty", "--force")
    assert_one_line_error(cli("build", "--ckpt", str(tiny_checkpoints[1]), "--out", str(junk / "art")), 1,
                          "junk.pt is a file")  # found before the export, not after it
    assert_one_line_error(cli("build", "--ckpt", str(tiny_checkpoints[1]), "--out", str(tmp_path / "b"),
                              "--quant", "int3"), 2, "--quant", "int3")
    assert_one_line_error(cli("build", "--ckpt", str(tiny_checkpoints[1]), "--out", str(tmp_path / "b"),
                              "--top-k", "0"), 2, "--top-k")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "junk.pt"]


@pytest.fixture(scope="module")
def fp32_encoder(tiny_checkpoints, tmp_path_factory):
    """The int8-codebook artifact with fp32 encoder weights (the reference for the reduced encoders)."""
    out = tmp_path_factory.mktemp("e32") / "art"
    build(tiny_checkpoints[1], out, BuildOptions(quant="int8", encoder_quant="fp32"))
    return out


def test_int8_encoder_weights_shrink_the_encoder_and_keep_the_ranking(built, fp32_encoder, tiny_checkpoints, tmp_path):
    m = build(tiny_checkpoints[1], tmp_path / "e8", BuildOptions(quant="int8", encoder_quant="int8"))
    assert m["quantisation"]["encoder"].startswith("int8")
    model = onnx.load(str(tmp_path / "e8" / A.MODEL_FILE))
    int8_weights = [i for i in model.graph.initializer if i.name.startswith("enc/") and i.data_type == onnx.TensorProto.INT8]
    assert int8_weights
    assert (tmp_path / "e8" / A.MODEL_FILE).stat().st_size < 0.75 * (fp32_encoder / A.MODEL_FILE).stat().st_size
    n = m["num_items"]
    batch = np.random.default_rng(2).integers(1, n + 1, size=(64, 6))
    q, _ = run(tmp_path / "e8", batch)
    f, _ = run(built["fp32"], batch)
    assert np.mean([len(set(a) & set(b)) / 20 for a, b in zip(q, f)]) >= 0.9
    assert_one_line_error(cli("build", "--ckpt", str(tiny_checkpoints[1]), "--out", str(tmp_path / "x"),
                              "--encoder-quant", "int2"), 2, "--encoder-quant")


def test_fp16_encoder_weights_halve_the_encoder_and_keep_fp32_arithmetic(built, fp32_encoder, tiny_checkpoints,
                                                                        tmp_path):
    m = build(tiny_checkpoints[1], tmp_path / "e16", BuildOptions(quant="int8", encoder_quant="fp16"))
    assert A.read_manifest(built["int8"])["quantisation"]["encoder"].startswith("fp16")  # build's default
    assert m["quantisation"]["encoder"].startswith("fp16")
    model = onnx.load(str(tmp_path / "e16" / A.MODEL_FILE))
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves and all(i.name.startswith("enc/") and i.name.endswith("_fp16") for i in halves)
    assert (tmp_path / "e16" / A.MODEL_FILE).stat().st_size < (fp32_encoder / A.MODEL_FILE).stat().st_size
    batch = np.random.default_rng(3).integers(1, m["num_items"] + 1, size=(64, 6))
    h_ids, h_scores = run(tmp_path / "e16", batch)
    f_ids, f_scores = run(fp32_encoder, batch)
    assert np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(h_ids, f_ids)]) >= 0.95
    assert np.max(np.abs(h_scores - f_scores)) < 1e-2 * np.max(np.abs(f_scores))


def test_id_map_forms_and_string_ids(tiny_checkpoints, tmp_path):
    """--id-map text keeps items.txt; ids that are not canonical integers get items.txt under auto and
    a one-line error under binary."""
    from odrec_export.checkpoint import save_checkpoint

    text = build(tiny_checkpoints[1], tmp_path / "text", BuildOptions(id_map="text"))
    assert text["id_map"]["file"] == "items.txt" and (tmp_path / "text" / "items.txt").is_file()
    binary = A.read_items(tmp_path / "text")
    ckpt = load_checkpoint(tiny_checkpoints[1])
    assert binary == [str(v) for v in ckpt.vocab]
    ckpt.vocab = [f"sku-{v}" for v in ckpt.vocab[:-1]] + ["007"]  # "007" is no canonical integer either
    save_checkpoint(ckpt, tmp_path / "strings.pt")
    auto = build(tmp_path / "strings.pt", tmp_path / "auto")
    assert auto["id_map"]["file"] == "items.txt" and A.read_items(tmp_path / "auto")[-1] == "007"
    r = cli("build", "--ckpt", str(tmp_path / "strings.pt"), "--out", str(tmp_path / "bin"), "--id-map", "binary")
    assert_one_line_error(r, 2, "--id-map binary", "sku-")
    r = cli("build", "--ckpt", str(tmp_path / "strings.pt"), "--out", str(tmp_path / "bin"), "--id-map", "csv")
    assert_one_line_error(r, 2, "--id-map")
    assert not (tmp_path / "bin").exists()
