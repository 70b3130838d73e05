"""size-report and bench on artifacts built from the tiny real checkpoints (see conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from conftest import cli, needs_shared
from odrec_export.export import artifact as A
from odrec_export.export.onnx_runtime import ort_session
from odrec_export.report.measure import baseline_graph, decode_item_table

pytestmark = needs_shared


def test_size_report_accounts_for_every_byte(built):
    r = cli("size-report", str(built["int8"]), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    m = A.read_manifest(built["int8"])
    n, c = m["num_items"], m["compressor"]
    parts = rep["parts"]
    assert parts["codebooks"] == c["M"] * c["K"] * c["d"]  # int8: one byte per value
    assert parts["scales"] == c["M"] * c["K"] * 4
    assert parts["codes"] == c["M"] // c["codebooks_per_index"] * n  # one uint8 index per item and pair of codebooks
    assert parts["item table (fp32)"] == 0 and parts["encoder weights"] > 0 and parts["graph overhead"] > 0
    on_disk = sum((built["int8"] / f).stat().st_size for f in ("model.onnx", A.id_map_file(m), "manifest.json"))
    assert rep["total_bytes"] == sum(parts.values()) == on_disk
    assert rep["fp32_item_table_bytes"] == (n + 1) * c["d"] * 4
    assert rep["item_compression_ratio"] == rep["fp32_item_table_bytes"] / (
        parts["codebooks"] + parts["codes"] + parts["scales"])
    assert rep["artifact_compression_ratio"] > 1
    assert rep["memory"]["load_rss_mib"] > 0
    assert rep["model.ort_bytes"] == (built["int8"] / "model.ort").stat().st_size


def test_size_report_text_and_baseline_checkpoint(built, tiny_checkpoints):
    r = cli("size-report", str(built["int8"]), "--baseline", str(tiny_checkpoints[1]))
    assert r.returncode == 0, r.stderr
    for needle in ("encoder weights", "codebooks", "codes", "scales", "graph overhead", "item ids",
                   "manifest.json", "x smaller", "resident memory"):
        assert needle in r.stdout
    # a different checkpoint is refused in one line
    r = cli("size-report", str(built["int8"]), "--baseline", str(tiny_checkpoints[0]))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_teacher_artifact_reports_its_table(built):
    rep = json.loads(cli("size-report", str(built["teacher"]), "--json").stdout)
    m = A.read_manifest(built["teacher"])
    assert rep["parts"]["item table (fp32)"] == m["num_items"] * m["compressor"]["d"] * 4  # items 1..N
    assert rep["parts"]["codes"] == rep["parts"]["codebooks"] == 0


def test_baseline_graph_is_the_same_model_with_a_full_table(built):
    folder = built["int8"]
    m = A.read_manifest(folder)
    base = baseline_graph(folder, m)
    table = decode_item_table(onnx.load(str(folder / A.MODEL_FILE)), m)
    assert table.shape == (m["num_items"] + 1, m["compressor"]["d"])
    assert {i.name for i in base.graph.initializer} >= {A.ITEM_TABLE}
    assert A.CODES not in {i.name for i in base.graph.initializer}
    batch = np.random.default_rng(0).integers(0, m["num_items"] + 1, size=(16, 9))
    art = ort_session(folder / A.MODEL_FILE).run(None, {A.INPUT_NAME: batch})
    ref = ort_session(base).run(None, {A.INPUT_NAME: batch})
    assert (art[0] == ref[0]).all()
    np.testing.assert_allclose(art[1], ref[1], rtol=1e-4, atol=1e-5)


def test_bench_runs_both_models_side_by_side(built):
    r = cli("bench", str(built["int8"]), "--json", "--runs", "20", "--warmup", "3")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    settings = {(x["threads"], x["seq_len"]) for x in rep["latency"]}
    assert settings == {(1, 10), (1, 50), (2, 10), (2, 50)}
    for x in rep["latency"]:
        assert x["artifact_us"] > 0 and x["baseline_us"] > 0
        assert abs(x["speedup"] - x["baseline_us"] / x["artifact_us"]) < 1e-9
    assert rep["model_bytes"]["baseline"] > rep["model_bytes"]["artifact"]
    for k in ("artifact", "baseline"):
        assert rep["memory"][k]["runs"] == 100 and rep["memory"][k]["rss_growth_mib"] > 0
    text = cli("bench", str(built["int8"]), "--quick")
    assert text.returncode == 0 and "speedup" in text.stdout and "resident growth" in text.stdout


def test_report_and_bench_errors_are_one_line(tmp_path):
    for cmd in ("size-report", "bench"):
        r = cli(cmd, str(tmp_path / "nope"))  # not an artifact at all: a usage error, exit 2 as in verify
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
        (tmp_path / "empty").mkdir(exist_ok=True)
        r = cli(cmd, str(tmp_path / "empty"))
        assert r.returncode == 2 and "manifest.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_computed_baseline_counts_reduced_encoder_weights_as_fp32(tiny_checkpoints, tmp_path):
    """Without --baseline the fp32 model is computed from the artifact: its encoder must be counted at
    4 bytes a value whatever precision the artifact stores, so fp32, fp16 and int8 encoders give
    (nearly) the same baseline; only node names and cast/dequantise nodes may differ."""
    from odrec_export.export import BuildOptions, build
    from odrec_export.report.measure import size_report

    baselines = {}
    for enc in ("fp32", "fp16", "int8"):
        build(tiny_checkpoints[1], tmp_path / enc, BuildOptions(encoder_quant=enc))
        baselines[enc] = size_report(tmp_path / enc, measure_rss=False)["baseline"]["model_bytes"]
    assert abs(baselines["fp16"] - baselines["fp32"]) < 2048, baselines
    assert abs(baselines["int8"] - baselines["fp32"]) < 2048, baselines
