"""bench --compare on artifacts built from the tiny real checkpoints (see conftest.py).

Tiny run counts and no timing thresholds: these check structure, ratios, the interleaved order, the
metrics taken from the manifests and the one-line errors, not speed.
"""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, cli
from odrec_export.errors import UsageError
from odrec_export.export import artifact as A
from odrec_export.report.compare import compare_artifacts, format_artifact_comparison

SETTINGS = {(1, 10), (1, 50), (2, 10), (2, 50)}


def test_compare_three_artifacts(built):
    order = []
    dirs = [built["int8"], built["fp32"], built["teacher"]]
    r = compare_artifacts(dirs, runs=5, warmup=1, memory_runs=3, trace=lambda *a: order.append(a))
    arts = r["artifacts"]
    assert [a["label"] for a in arts] == ["int8", "fp32", "teacher"] and r["first"] == "int8"
    assert (r["runs"], r["warmup"], r["memory_runs"]) == (5, 1, 3)
    assert [a["compressor_name"] for a in arts] == ["codes", "codes", "none"]
    n = arts[0]["num_items"]
    assert r["inputs"]["item_ids"] == [1, n] and r["inputs"]["same_vocabulary"] is True

    for a, d in zip(arts, dirs):
        m = A.read_manifest(d)
        assert a["model_bytes"] == (d / A.MODEL_FILE).stat().st_size
        assert a["total_bytes"] == sum((d / f).stat().st_size for f in (A.MODEL_FILE, A.id_map_file(m), A.MANIFEST_FILE))
        recorded = (m.get("evaluation") or {}).get("metrics", {})
        assert a["metrics"] == {"HR@10": recorded.get("HR@10"), "NDCG@10": recorded.get("NDCG@10")}
        assert {(x["threads"], x["seq_len"]) for x in a["latency"]} == SETTINGS
        assert all(x["median_us"] > 0 for x in a["latency"])
        assert a["memory"]["runs"] == 3 and a["memory"]["threads"] == 1
    # only the int8 artifact was built with --eval-data
    assert arts[0]["metrics"]["HR@10"] is not None and arts[0]["metrics_source"].startswith("manifest")
    assert arts[1]["metrics"]["HR@10"] is None and arts[2]["metrics"]["NDCG@10"] is None
    assert arts[1]["ratios"]["HR@10"] is None
    # item representation: int8 codebooks < fp32 codebooks < the teacher's full fp32 table
    reps = [a["item_representation_bytes"] for a in arts]
    assert reps[0] < reps[1] < reps[2] == n * A.read_manifest(dirs[2])["compressor"]["d"] * 4  # items 1..N
    assert arts[0]["model_ort_bytes"] > 0 and "model_ort_bytes" not in arts[1]

    first = arts[0]
    assert all(v == 1.0 for v in first["ratios"].values() if v is not None)
    assert first["ratios"]["model_bytes"] == 1.0 and first["ratios"]["HR@10"] == 1.0
    assert all(x["ratio"] == 1.0 for x in first["latency"])
    for a in arts[1:]:
        assert a["ratios"]["model_bytes"] == pytest.approx(a["model_bytes"] / first["model_bytes"])
        assert a["ratios"]["total_bytes"] == pytest.approx(a["total_bytes"] / first["total_bytes"])
        for x, x0 in zip(a["latency"], first["latency"]):
            assert (x["threads"], x["seq_len"]) == (x0["threads"], x0["seq_len"])
            assert x["ratio"] == pytest.approx(x["median_us"] / x0["median_us"])
        if first["memory"]["rss_growth_mib"]:
            assert a["ratios"]["rss_growth_mib"] == pytest.approx(a["memory"]["rss_growth_mib"]
                                                                  / first["memory"]["rss_growth_mib"])

    # interleaved: per setting, each round runs every artifact once before the next round starts
    assert len(order) == len(SETTINGS) * 6 * 3
    for s in range(len(SETTINGS)):
        block = order[s * 18:(s + 1) * 18]
        assert len({(t, L) for t, L, _, _ in block}) == 1
        for i in range(6):
            rnd = block[i * 3:(i + 1) * 3]
            assert [run for _, _, run, _ in rnd] == [i] * 3
            assert sorted(idx for *_, idx in rnd) == [0, 1, 2]
            assert rnd[0][3] == i % 3  # the first of a round rotates

    text = format_artifact_comparison(r)
    assert "median of 5 runs after 1 warm-up" in text and "n/a" in text
    header = text.splitlines()[0]
    assert header.split() == ["int8", "fp32", "teacher"]
    assert "(1.00x)" in text and "µs 2 thr, seq 50" in text
    lines = text.splitlines()
    table = lines[:next(i for i, x in enumerate(lines) if x.startswith("ratios:"))]
    assert len(table) == 15
    widths = {len(line) for line in table}
    assert len(widths) == 1, text  # the table's rows are aligned


def test_compare_cli_json_and_text(built):
    r = cli("bench", "--compare", str(built["teacher"]), str(built["int8"]), "--json", "--runs", "5", "--warmup", "1")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [a["label"] for a in rep["artifacts"]] == ["teacher", "int8"] and rep["first"] == "teacher"
    assert rep["runs"] == 5 and rep["memory_runs"] == 100
    assert rep["artifacts"][0]["ratios"]["model_bytes"] == 1.0
    assert rep["artifacts"][1]["ratios"]["model_bytes"] < 1.0  # codes are smaller than the full table
    assert rep["artifacts"][1]["ratios"]["HR@10"] is None  # the first has no recorded metrics
    text = cli("bench", "--compare", str(built["int8"]), str(built["fp32"]), "--quick")
    assert text.returncode == 0, text.stderr
    assert "median of 60 runs after 10 warm-up" in text.stdout and "resident growth" in text.stdout
    # plain bench DIR is unchanged
    plain = cli("bench", str(built["int8"]), "--json", "--runs", "5", "--warmup", "1")
    assert plain.returncode == 0, plain.stderr
    assert {"model_bytes", "size_ratio", "latency", "memory", "rss_growth_ratio"} <= set(json.loads(plain.stdout))


def test_compare_bad_input_is_a_one_line_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    assert_one_line_error(cli("bench", "--compare", str(tmp_path / "empty")), 2, "at least 2")
    assert_one_line_error(cli("bench", "--compare", str(tmp_path / "nope"), str(tmp_path / "empty")), 2, "nope")
    assert_one_line_error(cli("bench", "--compare", str(tmp_path / "empty"), str(tmp_path / "other")), 2,
                          "empty", "manifest.json")
    assert_one_line_error(cli("bench", "--compare", str(tmp_path / "empty"), str(tmp_path / "empty")), 2, "twice")
    assert_one_line_error(cli("bench", str(tmp_path / "empty"), str(tmp_path / "other")), 2, "--compare")
    with pytest.raises(UsageError, match="at least 2"):
        compare_artifacts([tmp_path / "empty"], runs=5, warmup=1, memory_runs=0)


def test_compare_later_broken_artifact_is_named(built, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(built["fp32"], broken)
    (broken / A.ITEMS_BIN).write_bytes(b"x\n")
    r = cli("bench", "--compare", str(built["int8"]), str(broken), "--runs", "5", "--warmup", "1")
    assert_one_line_error(r, 2, "broken", A.ITEMS_BIN)
