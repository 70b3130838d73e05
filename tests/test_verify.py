"""verify: a good artifact passes on x86-64 and ARM64; every kind of damage fails and names its cause.

The artifact is built by the real exporter from the conftest's tiny Diginetica student. Damage is
applied to a copy: a flipped byte in each file, swapped items.txt lines, one changed weight, a
truncated model, and the same damage again with the manifest re-hashed (so that only the parity
checks can catch it). ARM64 runs once, through the CLI, in one guest process per CPU model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import REPO, cli
from odrec_export.compressors.codes import ungroup_codes
from odrec_export.export import artifact as A
from odrec_export.verify.arm_runtime import default_cache_dir
from odrec_export.verify.parity import (
    FAIL,
    NOT_CHECKED,
    PASS,
    Agreement,
    Case,
    VerifyInputError,
    accumulate_parity,
    verify,
)
from onnx import numpy_helper

FEW = 32  # sessions per verify run: enough rows to exercise every path, cheap on 2 cores


@pytest.fixture(scope="module")
def built(tiny_checkpoints, tmp_path_factory):
    from odrec_export.export import BuildOptions, build

    _, student = tiny_checkpoints
    out = tmp_path_factory.mktemp("verify") / "artifact"
    build(student, out, BuildOptions(ort=True))
    return out, student


@pytest.fixture
def damaged(built, tmp_path):
    """A fresh copy of the good artifact to damage."""
    copy = tmp_path / "artifact"
    shutil.copytree(built[0], copy)
    return copy


def rehash(folder: Path) -> None:
    """Make the manifest agree with the (damaged) files, as a careless or malicious rebuild would."""
    manifest = json.loads((folder / A.MANIFEST_FILE).read_text())
    manifest["files"] = A.describe_files(folder, manifest["files"])
    A.write_manifest(folder, manifest)


def failures(report) -> dict[str, list[str]]:
    return {c.check: c.details for c in report.checks if c.status == FAIL}


def flip_byte(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    i = min(int(len(data) * where), len(data) - 1)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- the good artifact


def test_good_artifact_passes_on_x86_and_arm64(built):
    folder, student = built
    r = cli("verify", str(folder), "--ckpt", str(student), "--sessions", str(FEW), "--json",
            "--arm-cache", str(REPO / default_cache_dir()))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    checks = report["checks"]
    assert checks["integrity"]["any"]["status"] == PASS
    assert checks["contract"]["x86_64"]["status"] == PASS
    assert checks["ort-format"]["x86_64"]["status"] == PASS  # model.ort answers like model.onnx
    ref = checks["reference"]["x86_64"]
    assert ref["status"] == PASS and ref["max_score_diff"] < 1e-4
    arm = checks["arm64"]
    assert set(arm) == {"cortex-a72", "neoverse-n1"}
    if any(v["status"] == NOT_CHECKED for v in arm.values()):
        pytest.skip(f"ARM64 runtime not provisionable here: {arm['cortex-a72']['details']}")
    for cpu, row in arm.items():
        assert row["status"] == PASS, (cpu, row)
        assert row["max_score_diff"] < 1e-4
    cases = {c["case"] for c in report["inputs"]}
    assert {"length 1", "max length", "over-long", "padding anywhere", "out-of-range ids", "all padding"} <= cases


def test_reference_uses_the_manifest_checkpoint_when_reachable(built):
    report = verify(built[0], sessions=8, arm=False)
    ref = next(c for c in report.checks if c.check == "reference")
    assert ref.status == PASS and ref.max_score_diff is not None


def test_human_table_and_reference_not_checked_without_checkpoint(damaged, tmp_path):
    manifest = json.loads((damaged / A.MANIFEST_FILE).read_text())
    manifest["source_checkpoint"]["path"] = str(tmp_path / "moved-away.pt")
    A.write_manifest(damaged, manifest)
    report = verify(damaged, sessions=FEW, arm=False)
    ref = next(c for c in report.checks if c.check == "reference")
    assert ref.status == NOT_CHECKED and "moved-away.pt is not reachable" in ref.details[0]
    assert report.exit_code == 0  # a check that did not run is not a failure, but it is said
    table = report.table()
    assert table.splitlines()[0].split() == ["check", "platform", "max", "score", "diff", "top-k", "agreement",
                                             "result"]
    assert "not checked" in table and "verdict: PASS (some checks were not run" in table


def test_real_sessions_from_data(built):
    from conftest import DIGINETICA

    report = verify(built[0], ckpt=built[1], data=DIGINETICA, sessions=FEW, arm=False)
    assert report.exit_code == 0, report.table()
    assert report.cases[0].name.startswith("real sessions")


def test_arm_reported_not_checked_when_runtime_cannot_be_provisioned(built, tmp_path):
    report = verify(built[0], ckpt=built[1], sessions=8, arm=True, arm_cache=tmp_path / "arm",
                    arm_mirror="http://127.0.0.1:9/debian")
    arm = [c for c in report.checks if c.check == "arm64"]
    assert len(arm) == 2 and all(c.status == NOT_CHECKED for c in arm)
    assert "no network" in arm[0].details[0]
    assert report.exit_code == 0 and "not checked" in report.table()


# --------------------------------------------------------------------------- damage


@pytest.mark.parametrize("name", [A.MODEL_FILE, A.ITEMS_BIN, A.ORT_FILE])
@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_byte_fails_naming_the_file(damaged, built, name, where):
    flip_byte(damaged / name, where)
    report = verify(damaged, ckpt=built[1], sessions=8, arm=False)
    assert report.exit_code == 1
    assert f"{name}: sha256 differs from the manifest" in failures(report)["integrity"]


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_byte_in_manifest_fails(damaged, where):
    flip_byte(damaged / A.MANIFEST_FILE, where)
    report = verify(damaged, sessions=8, arm=False)
    assert report.exit_code == 1
    assert any(A.MANIFEST_FILE in d for d in failures(report)["integrity"])


def test_edited_manifest_value_fails(damaged):
    manifest = json.loads((damaged / A.MANIFEST_FILE).read_text())
    manifest["num_items"] -= 1
    A.write_manifest(damaged, manifest)
    report = verify(damaged, sessions=8, arm=False)
    assert report.exit_code == 1
    assert any("manifest num_items" in d for d in failures(report)["integrity"])


def test_manifest_claiming_another_quantisation_fails(damaged):
    manifest = json.loads((damaged / A.MANIFEST_FILE).read_text())
    assert manifest["quantisation"]["scheme"] == "int8"
    manifest["quantisation"]["scheme"] = "fp32"
    A.write_manifest(damaged, manifest)
    report = verify(damaged, sessions=8, arm=False)
    assert f"{A.MODEL_FILE}: manifest quantisation fp32 but codebooks are int8" in failures(report)["integrity"]


@pytest.mark.parametrize("form", ["text", "binary"])
def test_swapped_items_fail(built, tmp_path, form):
    from odrec_export.export import BuildOptions, build, id_map

    damaged = tmp_path / "artifact"
    build(built[1], damaged, BuildOptions(id_map=form))
    name = A.ITEMS_FILE if form == "text" else A.ITEMS_BIN
    ids = A.read_items(damaged)
    ids[0], ids[1] = ids[1], ids[0]
    if form == "text":
        (damaged / name).write_text("".join(f"{x}\n" for x in ids))
    else:
        (damaged / name).write_bytes(id_map.encode(np.array([int(x) for x in ids], dtype=np.uint64)))
    report = verify(damaged, ckpt=built[1], sessions=8, arm=False)
    assert report.exit_code == 1
    assert f"{name}: sha256 differs from the manifest" in failures(report)["integrity"]
    # Re-hashed, the files agree with the manifest: only the checkpoint's vocabulary can tell.
    rehash(damaged)
    report = verify(damaged, ckpt=built[1], sessions=8, arm=False)
    assert "integrity" not in failures(report)
    where = "line 1" if form == "text" else "id 1"
    assert failures(report)["reference"] == [
        f"{name}: {where} does not match the checkpoint's vocabulary ({ids[0]!r} vs {ids[1]!r})"]


def test_truncated_items_bin_fails_naming_it(damaged):
    data = (damaged / A.ITEMS_BIN).read_bytes()
    (damaged / A.ITEMS_BIN).write_bytes(data[:-3])
    rehash(damaged)
    report = verify(damaged, sessions=8, arm=False)
    assert report.exit_code == 1
    assert any(d.startswith(f"{A.ITEMS_BIN}: ") for d in failures(report)["integrity"])


def test_one_changed_weight_fails(damaged, built):
    model = onnx.load(str(damaged / A.MODEL_FILE))
    codes = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == A.CODES))
    scales = next(t for t in model.graph.initializer if t.name == A.CODEBOOK_SCALES)
    values = numpy_helper.to_array(scales).copy()
    manifest = A.read_manifest(damaged)
    codes = ungroup_codes(codes, manifest["compressor"]["M"], manifest["compressor"]["K"])
    busiest = int(np.bincount(codes[0]).argmax())  # the codeword of codebook 0 most items share
    values[busiest] *= 4.0  # one number in the file
    scales.CopyFrom(numpy_helper.from_array(values, A.CODEBOOK_SCALES))
    onnx.save(model, str(damaged / A.MODEL_FILE))
    report = verify(damaged, ckpt=built[1], sessions=FEW, arm=False)
    assert f"{A.MODEL_FILE}: sha256 differs from the manifest" in failures(report)["integrity"]
    rehash(damaged)
    report = verify(damaged, ckpt=built[1], sessions=FEW, arm=False)
    assert report.exit_code == 1 and "integrity" not in failures(report)
    assert any("differs by" in d or "no score tie" in d for d in failures(report)["reference"])


def test_graph_that_crashes_on_out_of_range_ids_fails_without_crashing_verify(damaged, built):
    model = onnx.load(str(damaged / A.MODEL_FILE))
    for node in model.graph.node:  # skip the input cleaning: raw ids go straight to the lookups
        node.input[:] = ["item_ids_padded" if i == "clean_ids" else i for i in node.input]
    onnx.save(model, str(damaged / A.MODEL_FILE))
    rehash(damaged)
    report = verify(damaged, ckpt=built[1], sessions=8, arm=False)
    assert report.exit_code == 1
    assert any(d.startswith("out-of-range ids: onnxruntime failed") for d in failures(report)["contract"])


def test_truncated_model_fails(damaged, built):
    data = (damaged / A.MODEL_FILE).read_bytes()
    (damaged / A.MODEL_FILE).write_bytes(data[: len(data) // 2])
    report = verify(damaged, ckpt=built[1], sessions=8, arm=False)
    assert report.exit_code == 1
    problems = failures(report)["integrity"]
    assert f"{A.MODEL_FILE}: bytes {len(data) // 2} != manifest {len(data)}" in problems
    assert any(d.startswith(f"{A.MODEL_FILE}: not a loadable ONNX graph") for d in problems)
    assert [c.check for c in report.checks] == ["integrity"]  # nothing to run


# --------------------------------------------------------------------------- unusable input: exit 2


def test_unusable_input_exits_2(built, tiny_checkpoints, tmp_path):
    teacher, _ = tiny_checkpoints
    for args, needle in (([str(tmp_path / "nothing")], "no such artifact directory"),
                         ([str(built[0]), "--ckpt", str(teacher)], "not the checkpoint this artifact was built from"),
                         ([str(built[0]), "--arm-cpu", "pentium"], "unknown --arm-cpu 'pentium'")):
        r = cli("verify", *args, "--no-arm", "--sessions", "4")
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and needle in last and "Traceback" not in r.stderr


def test_verify_function_raises_input_error(built, tmp_path):
    for kwargs, needle in (({"folder": tmp_path / "nope"}, "no such artifact directory"),
                           ({"folder": tmp_path}, "no manifest.json"),
                           ({"folder": built[0], "data": tmp_path / "missing.csv"}, "--data"),
                           ({"folder": built[0], "ckpt": tmp_path / "missing.pt"}, "--ckpt")):
        with pytest.raises(VerifyInputError, match=needle) as e:
            verify(**kwargs, sessions=4, arm=False)
        assert e.value.exit_code == 2


# --------------------------------------------------------------------------- the parity rule itself


def _agree(ref_ids, ref_scores, ids, scores):
    ag = Agreement()
    case = Case("t", np.zeros((1, 1), np.int64))
    accumulate_parity(case, np.array([ref_ids]), np.array([ref_scores], np.float32), np.array([ids]),
            np.array([scores], np.float32), ag)
    return ag


def test_parity_rule_known_answers():
    assert _agree([3, 1, 2], [9.0, 5.0, 1.0], [3, 1, 2], [9.0, 5.0, 1.0]).identical == 1
    swap = _agree([3, 1, 2], [9.0, 5.0, 5.0], [3, 2, 1], [9.0, 5.0, 5.0])  # exact tie, order differs
    assert swap.tie_swaps == 1 and not swap.problems
    near = _agree([3, 1, 2], [9.0, 5.0, 4.9999], [3, 2, 1], [9.0, 5.0, 4.9999])  # within 1e-4 x 9
    assert near.tie_swaps == 1 and not near.problems
    cut = _agree([3, 1, 2], [9.0, 5.0, 1.0], [3, 1, 7], [9.0, 5.0, 1.0])  # item 7 ties item 2 at the cut-off
    assert cut.tie_swaps == 1 and not cut.problems
    wrong = _agree([3, 1, 2], [9.0, 5.0, 1.0], [3, 2, 1], [9.0, 5.0, 1.0])  # 1 and 2 swapped, 4 apart
    assert wrong.problems and "no score tie" in wrong.problems[0]
    off = _agree([3, 1, 2], [9.0, 5.0, 1.0], [3, 1, 2], [9.0, 5.01, 1.0])  # 0.01 > 1e-4 x 9
    assert off.problems and "differs by" in off.problems[0] and off.max_diff == pytest.approx(0.01, rel=1e-3)
    nan = _agree([3, 1, 2], [9.0, 5.0, 1.0], [3, 1, 2], [9.0, float("nan"), 1.0])
    assert nan.problems and "non-finite" in nan.problems[0]


def test_int8_encoder_reference_and_runtime_fusion_diagnosis(tiny_checkpoints, tmp_path):
    """With --encoder-quant int8 the reference quantises the same Linear weights with the exporter's
    quantiser. onnxruntime may fuse DequantizeLinear + MatMul into MatMulNBits, which at its default
    accuracy level also quantises activations: then the check fails and says that at accuracy
    level 1 (fp32 compute) the graph matches the reference."""
    from odrec_export.export import BuildOptions, build

    _, student = tiny_checkpoints
    build(student, tmp_path / "a", BuildOptions(encoder_quant="int8"))
    report = verify(tmp_path / "a", sessions=FEW, arm=False)
    ref = next(c for c in report.checks if c.check == "reference")
    if ref.status == PASS:  # an onnxruntime that does not fuse, or computes the fusion in fp32
        assert ref.max_score_diff < 1e-4
    else:
        assert ref.details[0].startswith("hint: the graph has int8 MatMul weights")
        assert ref.details[0].endswith("(pass)"), ref.details[0]


def test_fp16_encoder_passes_the_reference_check(tiny_checkpoints, tmp_path):
    """The reference rounds the same Linear weights to float16, so an fp16-encoder artifact is held to
    the same tolerance as an fp32 one."""
    from odrec_export.export import BuildOptions, build

    _, student = tiny_checkpoints
    build(student, tmp_path / "a", BuildOptions(encoder_quant="fp16"))
    report = verify(tmp_path / "a", sessions=FEW, arm=False)
    ref = next(c for c in report.checks if c.check == "reference")
    assert ref.status == PASS and ref.max_score_diff < 1e-4, ref.details


def _quantiser_with_scale_off_by(factor: float):
    """A subtly wrong int8 quantiser: the exporter's scheme with every row's scale × ``factor`` (the values
    still approximate the rows to within half a step, so nothing but an independent reference notices)."""
    def quantise_rows(rows):
        amax = np.abs(rows).max(axis=1)
        scale = (np.where(amax > 0, amax / 127.0, 1.0) * factor).astype(np.float32)
        return np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8), scale
    return quantise_rows


@pytest.mark.parametrize("quant,encoder_quant", [("int8", "fp32"), ("fp32", "int8")], ids=["codebooks", "encoder"])
def test_reference_does_not_share_the_exporters_quantiser(tiny_checkpoints, tmp_path, monkeypatch, quant,
                                                          encoder_quant):
    """An artifact built with a wrong quantiser fails the reference check: verify's int8 round trip is its
    own. The wrong one stays in place during verify too (in quantise.py and wherever the exporter took it
    from), so a verify that still called the exporter's quantiser would agree with it and pass."""
    from odrec_export.compressors import codes
    from odrec_export.export import BuildOptions, build, encoder, quantise

    wrong = _quantiser_with_scale_off_by(1.25)
    for module in (quantise, encoder, codes):
        monkeypatch.setattr(module, "quantise_rows", wrong)
    _, student = tiny_checkpoints
    build(student, tmp_path / "a", BuildOptions(quant=quant, encoder_quant=encoder_quant))
    report = verify(tmp_path / "a", sessions=FEW, arm=False)
    status = {c.check: c.status for c in report.checks}
    assert status["integrity"] == PASS and status["contract"] == PASS, report.table()
    ref = next(c for c in report.checks if c.check == "reference")
    assert ref.status == FAIL, report.table()
    assert any("differs by" in d or "no score tie" in d for d in ref.details), ref.details
    if encoder_quant == "int8":  # not the runtime's MatMulNBits fusion: fp32 compute disagrees as well
        assert ref.details[0].startswith("hint: ") and ref.details[0].endswith("(fail)"), ref.details[0]
