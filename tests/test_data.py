"""The session protocol on small hand-made logs with known answers, and the preprocessed format."""

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from odrec_export.data.sessions import (
    ClickLogProtocol,
    Vocabulary,
    expand_prefixes,
    load_sessions,
    pad_batch,
    read_click_log,
    read_preprocessed,
)
from odrec_export.errors import DataError


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def click_log(rows: list[tuple], header: str = "session_id;user_id;item_id;timeframe;eventdate") -> str:
    return header + "\n" + "".join(";".join(str(c) for c in r) + "\n" for r in rows)


def frequent_items_log() -> list[tuple]:
    """Items a, b, c clicked >= 5 times; item z only once; day 1..10."""
    rows = []
    # 5 training sessions on day 1..5: a b c (clicks listed out of time order on purpose)
    for s in range(1, 6):
        rows += [(s, "NA", "c", 30, f"2016-01-0{s}"), (s, "NA", "a", 10, f"2016-01-0{s}"),
                 (s, "NA", "b", 20, f"2016-01-0{s}")]
    rows += [(6, "NA", "z", 5, "2016-01-06"), (6, "NA", "a", 6, "2016-01-06")]  # z is rare → length 1 → dropped
    rows += [(7, "NA", "b", 1, "2016-01-07")]  # length-1 session
    rows += [(8, "NA", "b", 1, "2016-01-20"), (8, "NA", "a", 2, "2016-01-20"), (8, "NA", "c", 3, "2016-01-20")]
    return rows


def test_click_log_protocol_known_answer(tmp_path):
    path = write(tmp_path, "log.csv", click_log(frequent_items_log()))
    data = read_click_log(path, ClickLogProtocol(test_days=7, valid_fraction=0.0))
    assert data.vocab.raw_ids == ["a", "b", "c"]  # z dropped (1 click)
    a, b, c = 1, 2, 3
    assert data.train_sessions == [[a, b, c]] * 5  # ordered by time within each session
    assert data.test_samples == [([b], a), ([b, a], c)]  # session 8 is in the last 7 days
    assert data.report["bad_rows"] == {}
    assert data.report["sessions_kept"] == 6


def test_click_log_counts_bad_rows(tmp_path):
    rows = frequent_items_log() + [(9, "NA", "a", "notatime", "2016-01-05"), (10, "NA", "", 3, "2016-01-05")]
    text = click_log(rows) + "11;NA\n"
    data = read_click_log(write(tmp_path, "log.csv", text), ClickLogProtocol(valid_fraction=0.0))
    assert data.report["bad_rows"] == {"non-numeric time": 1, "missing columns": 2}


def test_click_log_custom_columns_and_delimiter(tmp_path):
    rows = [(r[0], r[2], 86400 * int(r[4][-2:]) + r[3]) for r in frequent_items_log()]
    text = "sess,product,ts\n" + "".join(f"{s},{i},{t}\n" for s, i, t in rows)
    path = write(tmp_path, "log.csv", text)
    with pytest.raises(DataError, match="no session column"):
        read_click_log(path)
    data = read_click_log(path, ClickLogProtocol(session_col="sess", item_col="product", time_col="ts",
                                                 valid_fraction=0.0))
    assert data.vocab.raw_ids == ["a", "b", "c"]
    assert data.test_samples == [([2], 1), ([2, 1], 3)]


def test_click_log_empty_result_is_an_error(tmp_path):
    rows = [(1, "NA", "a", 1, "2016-01-01"), (1, "NA", "b", 2, "2016-01-01")]  # items too rare
    with pytest.raises(DataError, match="no session left"):
        read_click_log(write(tmp_path, "log.csv", click_log(rows)))
    with pytest.raises(DataError, match="empty file"):
        read_click_log(write(tmp_path, "empty.csv", ""))


def test_preprocessed_folder(tmp_path):
    write(tmp_path, "train_sessions.txt", "1 2 3\n2 3\n4\n3 1\n")
    write(tmp_path, "test_samples.txt", "1 2\t3\n1\t2\n")
    data = read_preprocessed(tmp_path, valid_fraction=0.34)
    assert data.num_items == 4 and data.vocab.raw(4) == "4"
    assert data.train_sessions == [[1, 2, 3], [2, 3]]  # [4] has one item; last session → validation
    assert data.valid_samples == [([3], 1)]
    assert data.test_samples == [([1, 2], 3), ([1], 2)]
    assert data.report["skipped_sessions_len1"] == 1


def test_preprocessed_rejects_bad_lines(tmp_path):
    write(tmp_path, "train_sessions.txt", "1 2\n1 x\n")
    with pytest.raises(DataError, match="train_sessions.txt:2"):
        read_preprocessed(tmp_path)
    write(tmp_path, "train_sessions.txt", "1 2\n")
    write(tmp_path, "test_samples.txt", "1 2 3\n")
    with pytest.raises(DataError, match="test_samples.txt:1"):
        read_preprocessed(tmp_path)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_sessions(tmp_path / "nope")


def test_prefixes_and_padding():
    assert expand_prefixes([[1, 2, 3]]) == [([1], 2), ([1, 2], 3)]
    np.testing.assert_array_equal(pad_batch([[1, 2], [3, 4, 5, 6]], 3), [[0, 1, 2], [4, 5, 6]])


def test_vocabulary_round_trip():
    v = Vocabulary(["x9", "a", "17"])
    assert [v.index(r) for r in ("x9", "a", "17", "nope")] == [1, 2, 3, 0]
    assert v.raw(2) == "a"
    with pytest.raises(DataError):
        v.raw(0)
    with pytest.raises(DataError, match="duplicate"):
        Vocabulary(["a", "a"])


@pytest.mark.skipif(not (SHARED / "diginetica_sample").is_dir(), reason="../shared/data not beside the checkout")
def test_diginetica_sample_defaults():
    data = load_sessions(SHARED / "diginetica_sample" / "sample_train-item-views.csv")
    assert data.report["clicks_read"] == 12391 and data.report["bad_rows"] == {}
    assert data.num_items > 100 and data.test_samples and data.valid_samples
    train_items = {i for s in data.train_sessions for i in s} | {i for p, t in data.valid_samples for i in p + [t]}
    assert all(i in train_items or 1 <= i <= data.num_items for p, t in data.test_samples for i in p + [t])
    assert all(len(s) >= 2 for s in data.train_sessions)
