"""The last-items transition baseline (train/baseline.py): exact on hand-made sessions, and the CLI
command on the Diginetica sample."""

from __future__ import annotations

import json

import pytest

from odrec_export.data.sessions import SessionData, Vocabulary
from odrec_export.train.baseline import TransitionBaseline, evaluate_baseline

from conftest import DIGINETICA, assert_one_line_error, cli, needs_shared


def _data(train, test) -> SessionData:
    return SessionData(Vocabulary([str(i) for i in range(1, 7)]), train, [], test, "hand-made", "0")


def test_next_item_follows_the_last_items_transitions():
    data = _data([[1, 2, 3], [1, 2, 3], [4, 5], [2, 6]], [])
    baseline = TransitionBaseline(data)
    scores = baseline.scores([[1, 2], [4]])
    # after 2: 3 (2 of 3 transitions) before 6 (1 of 3); the older 1 → 2 adds half its weight to 2
    assert scores[0, 3] == pytest.approx(2 / 3, abs=1e-5) and scores[0, 6] == pytest.approx(1 / 3, abs=1e-5)
    assert scores[0, 2] == pytest.approx(0.5, abs=1e-5)
    assert scores[1].argmax().item() == 5 and scores[:, 0].eq(float("-inf")).all()


def test_items_no_transition_reaches_are_ranked_by_clicks_then_index():
    data = _data([[1, 2, 3], [1, 2, 3], [4, 5]], [([3], 1), ([3], 2), ([3], 4), ([1, 2], 3)])
    m = evaluate_baseline(data, ks=(1, 2, 3))
    # from 3 nothing follows: 1, 2, 3 (2 clicks each) by index, then 4 and 5 -> ranks 0, 1, 3; and 3 after [1, 2]: 0
    assert m["HR@1"] == pytest.approx(2 / 4) and m["HR@2"] == pytest.approx(3 / 4) and m["HR@3"] == pytest.approx(3 / 4)
    assert m["samples"] == 4 and "transitions" in m["model"]


@needs_shared
def test_cli_reports_the_baseline_on_the_sample(tmp_path):
    r = cli("baseline", "--data", str(DIGINETICA), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert 0 < m["HR@5"] <= m["HR@10"] <= m["HR@20"] <= 1 and m["samples"] > 0
    assert_one_line_error(cli("baseline", "--data", str(tmp_path / "missing.csv")), 2, "missing.csv")

