"""End to end through the CLI: a short real training run, eval --json, and one-line errors."""

import json

import pytest
from conftest import DIGINETICA, assert_one_line_error, cli, needs_shared


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not DIGINETICA.is_file():
        pytest.skip("../shared/data not beside the checkout")
    out = tmp_path_factory.mktemp("train") / "teacher.pt"
    r = cli("train", "--data", str(DIGINETICA), "--out", str(out), "--epochs", "2", "--dim", "32", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "epoch 1: loss" in r.stdout and "valid HR@10" in r.stdout
    return out


@needs_shared
def test_train_then_eval_json(trained):
    r = cli("eval", "--ckpt", str(trained), "--data", str(DIGINETICA), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    for k in (5, 10, 20):
        for name in ("HR", "NDCG", "MRR"):
            assert 0.0 <= m[f"{name}@{k}"] <= 1.0
    assert m["HR@5"] <= m["HR@10"] <= m["HR@20"] and m["samples"] > 50
    # the figures stored at training time are the same evaluation
    from odrec_export.checkpoint import load_checkpoint
    stored = load_checkpoint(trained).provenance["test_metrics"]
    assert stored["HR@10"] == pytest.approx(m["HR@10"]) and stored["samples"] == m["samples"]


@needs_shared
def test_breakdown_groups_partition_the_samples(trained):
    from odrec_export.data.sessions import load_sessions

    r = cli("eval", "--ckpt", str(trained), "--data", str(DIGINETICA), "--json", "--breakdown")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    rows = {row["group"]: row for row in m["breakdown"]}
    by_clicks = [row for name, row in rows.items() if name.startswith("target clicked")]
    by_repeat = [rows["target already in the session"], rows["target new to the session"]]
    for groups in (by_clicks, by_repeat):  # each grouping covers every sample once
        assert sum(g["samples"] for g in groups) == m["samples"]
        assert sum(g["share"] * g["HR@10"] for g in groups) == pytest.approx(m["HR@10"])
    data = load_sessions(DIGINETICA)
    repeats = sum(t in p[-50:] for p, t in data.test_samples)  # the teacher's max_len is the default 50
    assert rows["target already in the session"]["samples"] == repeats
    text = cli("eval", "--ckpt", str(trained), "--data", str(DIGINETICA), "--breakdown").stdout
    assert "target new to the session" in text and "% of samples" in text


@needs_shared
def test_training_is_reproducible(trained, tmp_path):
    again = tmp_path / "again.pt"
    r = cli("train", "--data", str(DIGINETICA), "--out", str(again), "--epochs", "2", "--dim", "32", "--seed", "1")
    assert r.returncode == 0, r.stderr
    from odrec_export.checkpoint import load_checkpoint
    a, b = load_checkpoint(trained), load_checkpoint(again)
    assert a.provenance["test_metrics"] == b.provenance["test_metrics"]


@needs_shared
def test_init_continues_a_teacher_and_records_where_it_started(trained, tmp_path):
    from odrec_export.checkpoint import file_sha256, load_checkpoint

    more = tmp_path / "more.pt"
    r = cli("train", "--data", str(DIGINETICA), "--out", str(more), "--epochs", "1", "--init", str(trained),
            "--dim", "64")  # architecture options are ignored: the checkpoint's own are kept
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(trained), load_checkpoint(more)
    assert b.config == a.config and b.vocab == a.vocab
    assert b.provenance["initialised_from"]["checkpoint_sha256"] == file_sha256(trained)
    assert b.provenance["epochs_run"] == 1
    changed = any(not (x == y).all() for x, y in zip(a.state_dict.values(), b.state_dict.values()))
    if b.provenance["best_epoch"] == 0:  # the epoch validated worse than its start: the start is kept
        assert not changed and "keeping the start" in r.stdout
    else:
        assert changed
    assert_one_line_error(cli("train", "--data", str(DIGINETICA), "--out", str(tmp_path / "s.pt"), "--init",
                              str(trained), "--compressor", "codes"), 2, "--init")


def test_bad_inputs_give_one_line_errors(tmp_path):
    assert_one_line_error(cli("eval", "--ckpt", str(tmp_path / "nope.pt"), "--data", str(tmp_path)), 2,
                          "no such checkpoint")  # a missing input: a usage error, exit 2 (README)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not a checkpoint")
    assert_one_line_error(cli("eval", "--ckpt", str(junk), "--data", str(tmp_path)), 1, "junk.pt")
    assert_one_line_error(cli("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o.pt")), 2,
                          "no such file or directory")
    (tmp_path / "train_sessions.txt").write_text("1\n2\n")
    assert_one_line_error(cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o.pt")), 1,
                          "no session with at least two items")
    assert_one_line_error(cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o.pt"),
                              "--device", "tpu"), 2, "unknown device")
    assert_one_line_error(cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o.pt"),
                              "--lr-schedule", "step"), 2, "schedule 'step'")
    assert not (tmp_path / "o.pt").exists()


def test_help_everywhere():
    for args in ([], ["train"], ["eval"]):
        r = cli(*args, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout
