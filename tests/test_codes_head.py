"""The codes head at catalogue scale: grouped codes, chunked lookups beyond 65,536 items, batch > 1,
and synth-catalogue. Exactness is against the PyTorch student (verify's parity rule)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, cli, needs_shared
from odrec_export.checkpoint import load_checkpoint
from odrec_export.compressors.codes import CHUNK, group_codes, group_size, ungroup_codes
from odrec_export.export import BuildOptions, build
from odrec_export.export import artifact as A
from odrec_export.export.onnx_runtime import ort_session
from odrec_export.verify.parity import verify


def test_group_codes_round_trip_and_dtype():
    rng = np.random.default_rng(0)
    for m, k in ((8, 128), (4, 16), (3, 64), (4, 256)):
        codes = rng.integers(0, k, size=(m, 1001))
        g = 2 if m % 2 == 0 else 1
        grouped = group_codes(codes, k, g)
        assert grouped.shape == (m // g, 1000)  # column 0 (padding) is not stored
        assert grouped.dtype == (np.uint8 if k ** g <= 256 else np.uint16)
        assert (ungroup_codes(grouped, m, k) == codes[:, 1:]).all()


def test_group_size_follows_the_cost_of_tables_against_lookups():
    assert group_size(8, 128, 40_000) == 2  # Tmall: 4 lookups an item instead of 8
    assert group_size(8, 128, 1_000) == 1  # four 16,384-entry tables would cost more than they save
    assert group_size(3, 16, 10**6) == 1  # odd M
    assert group_size(8, 512, 10**6) == 1  # a pair index would not fit 16 bits
    assert group_size(16, 256, 40_000) == 1  # eight 65,536-entry tables (2 MiB) would not stay in L2
    assert group_size(8, 256, 40_000) == 2  # four of them (1 MiB) do


@pytest.fixture(scope="module")
def synthetic(tiny_checkpoints, tmp_path_factory):
    """A synth-catalogue of 2.2 chunks built from the tiny student (M=4, K=16: one uint8 per pair)."""
    folder = tmp_path_factory.mktemp("synth")
    items = 2 * CHUNK + 7_000
    r = cli("synth-catalogue", "--like", str(tiny_checkpoints[1]), "--items", str(items),
            "--out", str(folder / "synth.pt"))
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout
    build(folder / "synth.pt", folder / "art", BuildOptions(quant="int8"))
    return folder / "synth.pt", folder / "art", items


@needs_shared
def test_synth_catalogue_is_labelled_and_keeps_the_source_model(synthetic, tiny_checkpoints):
    ckpt_path, art, items = synthetic
    ckpt, source = load_checkpoint(ckpt_path), load_checkpoint(tiny_checkpoints[1])
    assert len(ckpt.vocab) == len(set(ckpt.vocab)) == items
    assert ckpt.provenance["synthetic"]["items"] == items
    assert "SYNTHETIC" in ckpt.provenance["synthetic"]["note"]
    for name, t in source.state_dict.items():
        if name != "items.codes":
            assert (ckpt.state_dict[name] == t).all(), name
    manifest = A.read_manifest(art)
    assert manifest["synthetic"]["items"] == items and manifest["num_items"] == items


@needs_shared
def test_chunked_head_matches_pytorch_with_batches_padding_and_bad_ids(synthetic):
    ckpt_path, art, items = synthetic
    model = onnx.load(str(art / A.MODEL_FILE))
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    body = loop.attribute[0].g
    assert sum(n.op_type == "GatherElements" for n in body.node) == 3  # one lookup per chunk
    report = verify(art, ckpt=ckpt_path, sessions=40, arm=False)
    assert report.exit_code == 0, report.table()
    # batch > 1 gives each row what it gives alone
    batch = np.random.default_rng(3).integers(1, items + 1, size=(5, 9))
    sess = ort_session(art / A.MODEL_FILE)
    together = sess.run(None, {A.INPUT_NAME: batch})
    for row in range(5):
        alone = sess.run(None, {A.INPUT_NAME: batch[row:row + 1]})
        assert (alone[0][0] == together[0][row]).all()
        np.testing.assert_allclose(alone[1][0], together[1][row], rtol=1e-6)


@needs_shared
def test_chunked_head_keeps_codes_narrow_after_onnxruntimes_optimisations(synthetic, tmp_path):
    """Beyond one chunk the int32 indices are made per chunk at run time: onnxruntime's optimised graph
    holds the narrow codes, no folded int32/int64 copy of them (nor, as everywhere, an N×d table)."""
    import onnxruntime as ort

    _, art, items = synthetic
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(art / A.MODEL_FILE), so, providers=["CPUExecutionProvider"])
    optimised = onnx.load(so.optimized_model_filepath)
    graphs = [optimised.graph] + [a.g for n in optimised.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    wide = [(i.name, list(i.dims)) for g in graphs for i in g.initializer
            if i.data_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64) and np.prod(i.dims) >= items]
    assert wide == []
    d = A.read_manifest(art)["compressor"]["d"]
    assert max(int(np.prod(i.dims)) for g in graphs for i in g.initializer) < items * d


@needs_shared
def test_synth_catalogue_of_a_teacher_builds_a_fresh_table(tiny_checkpoints, tmp_path):
    """Other compressors get their item table made afresh for N items (here the plain table)."""
    r = cli("synth-catalogue", "--like", str(tiny_checkpoints[0]), "--items", "500", "--out", str(tmp_path / "t.pt"))
    assert r.returncode == 0, r.stderr
    ckpt, source = load_checkpoint(tmp_path / "t.pt"), load_checkpoint(tiny_checkpoints[0])
    assert ckpt.kind == "teacher" and ckpt.state_dict["items.weight"].shape == (501, source.config["encoder"]["dim"])
    assert all((ckpt.state_dict[n] == t).all() for n, t in source.state_dict.items() if n.startswith("encoder."))
    manifest = build(tmp_path / "t.pt", tmp_path / "art", BuildOptions(quant="fp32"))
    assert manifest["synthetic"]["items"] == 500


@needs_shared
def test_synth_catalogue_errors_are_one_line(tiny_checkpoints, tmp_path):
    r = cli("synth-catalogue", "--like", str(tiny_checkpoints[1]), "--items", "100", "--out", str(tiny_checkpoints[1]))
    assert_one_line_error(r, 2, "--like checkpoint itself")
    r = cli("synth-catalogue", "--like", str(tmp_path / "missing.pt"), "--items", "100", "--out", str(tmp_path / "x.pt"))
    assert_one_line_error(r, 2, "missing.pt")
    r = cli("synth-catalogue", "--like", str(tiny_checkpoints[1]), "--items", "0", "--out", str(tmp_path / "x.pt"))
    assert_one_line_error(r, 2, "--items")
    assert not (tmp_path / "x.pt").exists()
