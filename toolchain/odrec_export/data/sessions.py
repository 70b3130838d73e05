"""Session data: raw click logs or preprocessed session files → sessions → prefix samples.

Two sources are understood:

* a raw click log (CSV) with a session id, an item id and a time column, turned into sessions by
  the standard protocol of the session-based recommendation literature (see ``ClickLogProtocol``);
* a preprocessed folder holding ``train_sessions.txt`` (one session per line, item ids separated by
  spaces) and ``test_samples.txt`` (a prefix, a TAB, the next item).

Items are indexed 1..N through a ``Vocabulary`` (0 is padding); the vocabulary travels inside every
checkpoint so that raw item ids survive export.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..errors import CheckpointError, DataError, UsageError

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

PAD = 0
SESSION_COLUMNS = ("session_id", "sessionid", "session", "sid")
ITEM_COLUMNS = ("item_id", "itemid", "item", "iid")
TIME_COLUMNS = ("timeframe", "timestamp", "time", "ts")
DATE_COLUMNS = ("eventdate", "date", "event_date")
DAY_SECONDS = 86400


class Vocabulary:
    """Raw item ids (strings) ↔ indices 1..N; index 0 is padding."""

    def __init__(self, raw_ids: Sequence[str]):
        self.raw_ids = [str(r) for r in raw_ids]
        self._index = {raw: i + 1 for i, raw in enumerate(self.raw_ids)}
        if len(self._index) != len(self.raw_ids):
            raise DataError("vocabulary has duplicate item ids")

    def __len__(self) -> int:
        return len(self.raw_ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.raw_ids == other.raw_ids

    def index(self, raw: str) -> int:
        """Index of a raw item id, or 0 when unknown."""
        return self._index.get(str(raw), PAD)

    def raw(self, index: int) -> str:
        if not 1 <= index <= len(self.raw_ids):
            raise DataError(f"item index {index} out of range 1..{len(self.raw_ids)}")
        return self.raw_ids[index - 1]

    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.raw_ids).encode()).hexdigest()


POPULAR_KEEP = 200  # popular items a checkpoint records (an artifact keeps its top-k of them)

Sample = tuple[list[int], int]  # (session prefix as item indices, next item index)


@dataclass
class SessionData:
    """Everything training and evaluation need, in item indices."""

    vocab: Vocabulary
    train_sessions: list[list[int]]
    valid_samples: list[Sample]
    test_samples: list[Sample]
    source: str
    data_sha256: str
    report: dict = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.vocab)

    def train_samples(self) -> list[Sample]:
        return expand_prefixes(self.train_sessions)

    def item_counts(self) -> np.ndarray:
        """Clicks per item index in the training sessions (index 0 stays 0)."""
        clicks = np.fromiter((i for s in self.train_sessions for i in s), dtype=np.int64)
        return np.bincount(clicks, minlength=self.num_items + 1)

    def popular_items(self, keep: int = POPULAR_KEEP) -> dict:
        """The ``keep`` most clicked items of the training sessions, most first (ties: lower index first),
        with their clicks: what an artifact answers for a session with no known item."""
        clicks = self.item_counts()[1:]
        order = np.lexsort((np.arange(len(clicks)), -clicks))[:keep]
        return {"ids": (order + 1).tolist(), "clicks": clicks[order].tolist()}


def expand_prefixes(sessions: Iterable[Sequence[int]]) -> list[Sample]:
    """[a, b, c] → ([a], b), ([a, b], c)."""
    return [(list(s[:t]), s[t]) for s in sessions for t in range(1, len(s))]


def pad_batch(prefixes: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Left-pad (most recent item last) and keep the last ``max_len`` items of each prefix."""
    out = np.zeros((len(prefixes), max_len), dtype=np.int64)
    for row, p in enumerate(prefixes):
        p = p[-max_len:]
        if len(p):
            out[row, max_len - len(p):] = p
    return out


def split_validation(sessions: list[list[int]], fraction: float) -> tuple[list[list[int]], list[Sample]]:
    """Hold out the last ``fraction`` of training sessions (they are in time order) for validation."""
    if not 0 <= fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    n_valid = int(round(len(sessions) * fraction))
    if n_valid == 0:
        return sessions, []
    return sessions[:-n_valid], expand_prefixes(sessions[-n_valid:])


def _sha256_files(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- preprocessed folders


def _parse_ids(text: str, path: Path, line_no: int) -> list[int]:
    try:
        ids = [int(t) for t in text.split()]
    except ValueError:
        raise DataError(f"{path}:{line_no}: item ids must be integers") from None
    if any(i < 1 for i in ids):
        raise DataError(f"{path}:{line_no}: item ids must be >= 1 (0 is padding)")
    return ids


@contextmanager
def _text_lines(path: Path, **kwargs):
    """A file's lines as text; bytes that are not UTF-8 become a one-line DataError naming the file."""
    try:
        with open(path, encoding="utf-8", **kwargs) as f:
            yield f
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); expected "
                        "space-separated item ids or a CSV click log") from None


class _LargestId:
    """The largest item id seen and where, and how many distinct ids: a preprocessed folder numbers
    its items 1..N, and one stray id of 10^20 must not make the model allocate 10^20 rows."""

    def __init__(self):
        self.value, self.where, self.distinct = 0, "", set()

    def see(self, ids: list[int], path: Path, line_no: int) -> None:
        self.distinct.update(ids)
        top = max(ids, default=0)
        if top > self.value:
            self.value, self.where = top, f"{path}:{line_no}"

    def check(self) -> int:
        n = len(self.distinct)
        if self.value > max(16 * n, n + 1_000_000):  # room for unclicked ids, not for a stray 10^20
            raise DataError(f"{self.where}: item id {self.value}, but the folder has only {n} distinct item ids: "
                            "a preprocessed folder numbers its items 1..N densely (docs/data-format.md); "
                            "renumber them, or pass the raw click log as a CSV file instead")
        return self.value


def read_preprocessed(folder: Path, valid_fraction: float = 0.1) -> SessionData:
    """Read ``train_sessions.txt`` and ``test_samples.txt`` (ids already 1..N, docs/data-format.md)."""
    train_path, test_path = folder / "train_sessions.txt", folder / "test_samples.txt"
    if not train_path.is_file():
        raise DataError(f"{folder}: no train_sessions.txt (expected a preprocessed session folder)")
    sessions: list[list[int]] = []
    skipped_short, largest = 0, _LargestId()
    with _text_lines(train_path) as f:
        for no, line in enumerate(f, 1):
            ids = _parse_ids(line, train_path, no)
            largest.see(ids, train_path, no)
            if len(ids) >= 2:
                sessions.append(ids)
            elif ids:
                skipped_short += 1
    test: list[Sample] = []
    if test_path.is_file():
        with _text_lines(test_path) as f:
            for no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                prefix, sep, target = line.rstrip("\n").partition("\t")
                if not sep:
                    raise DataError(f"{test_path}:{no}: expected '<prefix>\\t<target>'")
                t = _parse_ids(target, test_path, no)
                if len(t) != 1:
                    raise DataError(f"{test_path}:{no}: expected exactly one target item")
                test.append((_parse_ids(prefix, test_path, no), t[0]))
                largest.see(test[-1][0] + t, test_path, no)
    if not sessions:
        raise DataError(f"{train_path}: no session with at least two items")
    num_items = largest.check()
    train, valid = split_validation(sessions, valid_fraction)
    files = [train_path] + ([test_path] if test_path.is_file() else [])
    return SessionData(
        vocab=Vocabulary([str(i) for i in range(1, num_items + 1)]),
        train_sessions=train,
        valid_samples=valid,
        test_samples=test,
        source=str(folder),
        data_sha256=_sha256_files(files),
        report={"valid_fraction": valid_fraction, "train_sessions": len(train), "skipped_sessions_len1": skipped_short,
                "valid_samples": len(valid), "test_samples": len(test), "items": num_items},
    )


# --------------------------------------------------------------------------- raw click logs


@dataclass
class ClickLogProtocol:
    """Column names and the preprocessing protocol for a raw click log.

    Clicks are ordered by ``time_col`` within a session. Sessions are dated by ``date_col`` when
    there is one (Diginetica's ``eventdate``), otherwise by their last ``time_col`` value read as
    Unix seconds; the sessions of the last ``test_days`` days form the test set.
    """

    delimiter: str | None = None  # None: sniffed from the header line
    session_col: str | None = None  # None: recognised from common names
    item_col: str | None = None
    time_col: str | None = None
    date_col: str | None = None
    min_item_support: int = 5
    min_session_length: int = 2
    test_days: int = 7
    valid_fraction: float = 0.1


def _pick_column(header: list[str], wanted: str | None, candidates: tuple[str, ...], role: str,
                 required: bool = True) -> int | None:
    lower = [h.strip().lower() for h in header]
    if wanted is not None:
        if wanted.lower() not in lower:
            raise DataError(f"{role} column '{wanted}' not in header {header}")
        return lower.index(wanted.lower())
    for c in candidates:
        if c in lower:
            return lower.index(c)
    if required:
        raise DataError(f"no {role} column found in header {header}; name it with --{role}-col")
    return None


def _parse_date(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def read_click_log(path: Path, protocol: ClickLogProtocol | None = None) -> SessionData:
    """Raw clicks → filtered sessions → time split → prefix samples, with a report of every drop."""
    p = protocol or ClickLogProtocol()
    with _text_lines(path, newline="") as f:
        head = f.readline()
        if not head.strip():
            raise DataError(f"{path}: empty file")
        delimiter = p.delimiter or _sniff_delimiter(head)
        header = next(csv.reader([head], delimiter=delimiter))
        sc = _pick_column(header, p.session_col, SESSION_COLUMNS, "session")
        ic = _pick_column(header, p.item_col, ITEM_COLUMNS, "item")
        tc = _pick_column(header, p.time_col, TIME_COLUMNS, "time")
        dc = _pick_column(header, p.date_col, DATE_COLUMNS, "date", required=False)
        needed = max(c for c in (sc, ic, tc, dc) if c is not None)
        bad = Counter()
        clicks: dict[str, list[tuple[float, str]]] = defaultdict(list)
        session_date: dict[str, float] = {}
        for row in csv.reader(f, delimiter=delimiter):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= needed or not row[sc].strip() or not row[ic].strip():
                bad["missing columns"] += 1
                continue
            try:
                t = float(row[tc])
            except ValueError:
                bad["non-numeric time"] += 1
                continue
            if not math.isfinite(t):
                bad["non-numeric time"] += 1
                continue
            try:
                day = _parse_date(row[dc]) if dc is not None else t
            except ValueError:
                bad["unparseable date"] += 1
                continue
            sid = row[sc].strip()
            clicks[sid].append((t, row[ic].strip()))
            session_date[sid] = max(session_date.get(sid, -math.inf), day)
    total_clicks = sum(len(v) for v in clicks.values())
    if not clicks:
        raise DataError(f"{path}: no usable clicks (bad rows: {dict(bad) or 'none'})")

    sessions = {sid: [item for _, item in sorted(v, key=lambda x: x[0])] for sid, v in clicks.items()}
    sessions = _filter_sessions(sessions, p.min_item_support, p.min_session_length)
    if not sessions:
        raise DataError(f"{path}: no session left after filtering (sessions of length < "
                        f"{p.min_session_length}, items with < {p.min_item_support} clicks)")

    split = max(session_date[s] for s in sessions) - p.test_days * DAY_SECONDS
    ordered = sorted(sessions, key=lambda s: (session_date[s], s))
    train_raw = [sessions[s] for s in ordered if session_date[s] <= split]
    test_raw = [sessions[s] for s in ordered if session_date[s] > split]
    if not train_raw:
        raise DataError(f"{path}: the time split left no training session (test_days={p.test_days})")

    vocab = Vocabulary(sorted({i for s in train_raw for i in s}, key=_natural_key))
    train = [[vocab.index(i) for i in s] for s in train_raw]
    test_sessions = []
    for s in test_raw:
        kept = [vocab.index(i) for i in s if vocab.index(i)]
        if len(kept) >= p.min_session_length:
            test_sessions.append(kept)
    train_part, valid = split_validation(train, p.valid_fraction)
    return SessionData(
        vocab=vocab,
        train_sessions=train_part,
        valid_samples=valid,
        test_samples=expand_prefixes(test_sessions),
        source=str(path),
        data_sha256=_sha256_files([path]),
        report={"valid_fraction": p.valid_fraction, "clicks_read": total_clicks, "bad_rows": dict(bad), "sessions_kept": len(sessions),
                "train_sessions": len(train_part), "valid_samples": len(valid),
                "test_sessions": len(test_sessions), "items": len(vocab)},
    )


def _filter_sessions(sessions: dict[str, list[str]], min_support: int, min_len: int) -> dict[str, list[str]]:
    """Drop short sessions, then rare items, then sessions made short by that (one round each)."""
    sessions = {k: v for k, v in sessions.items() if len(v) >= min_len}
    support = Counter(i for v in sessions.values() for i in v)
    sessions = {k: [i for i in v if support[i] >= min_support] for k, v in sessions.items()}
    return {k: v for k, v in sessions.items() if len(v) >= min_len}


def _natural_key(raw: str):
    return (0, int(raw), raw) if raw.isdigit() else (1, 0, raw)


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t", "|")}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise DataError("cannot tell the CSV delimiter from the header; pass --delimiter")
    return best


def load_sessions(path: str | Path, protocol: ClickLogProtocol | None = None) -> SessionData:
    """``--data`` accepts a preprocessed folder or a raw click-log CSV file."""
    path = Path(path)
    if path.is_dir():
        return read_preprocessed(path, (protocol or ClickLogProtocol()).valid_fraction)
    if path.is_file():
        return read_click_log(path, protocol)
    raise DataError(f"{path}: no such file or directory")


def remap_samples(samples: Sequence[Sample], source: Vocabulary, target: Vocabulary) -> tuple[list[Sample], int]:
    """Re-index samples from one vocabulary to another through raw ids.

    Items unknown to ``target`` are dropped from prefixes; samples whose target is unknown, or whose
    prefix becomes empty, are skipped and counted.
    """
    if source == target:
        return list(samples), 0
    out, skipped = [], 0
    for prefix, t in samples:
        new_t = target.index(source.raw(t))
        new_p = [i for i in (target.index(source.raw(x)) for x in prefix) if i]
        if new_t and new_p:
            out.append((new_p, new_t))
        else:
            skipped += 1
    return out, skipped


def remap_samples_or_fail(samples: Sequence[Sample], source: Vocabulary, target: Vocabulary, *, where,
                          what: str = "test sample", known_by: str = "the checkpoint") -> tuple[list[Sample], int]:
    """``remap_samples``, refusing a result with no sample left: DataError
    ``"<where>: no <what> whose items <known_by> knows"``."""
    out, skipped = remap_samples(samples, source, target)
    if not out:
        raise DataError(f"{where}: no {what} whose items {known_by} knows")
    return out, skipped


def load_like_checkpoint(path: str | Path, protocol: ClickLogProtocol | None, provenance: dict) -> SessionData:
    """``path`` split as the checkpoint's own run split it: the validation fraction its data report
    records, or, in checkpoints older than that record, the fraction whose latest sessions give its
    count of validation samples. Commands that continue or fit on a trained model (finetune,
    repeat-bonus) must select on the samples it was selected on, not train on them."""
    from dataclasses import replace

    protocol = protocol or ClickLogProtocol()
    report = provenance.get("data_report") or {}
    if report.get("valid_fraction") is not None:
        return load_sessions(path, replace(protocol, valid_fraction=report["valid_fraction"]))
    want = report.get("valid_samples")
    if not want:  # a checkpoint that records no split: the usual default
        return load_sessions(path, replace(protocol, valid_fraction=ClickLogProtocol.valid_fraction))
    whole = load_sessions(path, replace(protocol, valid_fraction=0.0))
    sessions, count, n = whole.train_sessions, 0, 0
    while count < want and n < len(sessions):
        n += 1
        count += len(sessions[-n]) - 1
    if count != want:
        raise DataError(f"{path}: no split of the latest sessions gives the checkpoint's {want} validation "
                        "samples (other data?); pass --valid-fraction")
    return load_sessions(path, replace(protocol, valid_fraction=n / len(sessions)))


def check_vocabulary(ckpt: Checkpoint, data: SessionData, path, role: str) -> None:
    """Refuse a checkpoint whose items are not ``data``'s."""
    if Vocabulary(ckpt.vocab) != data.vocab:
        raise CheckpointError(f"{path}: the {role}'s vocabulary ({len(ckpt.vocab)} items) is not the one "
                              f"of {data.source} ({data.num_items} items)")


def check_same_split(ckpt: Checkpoint, data: SessionData, path) -> None:
    """Refuse a validation split other than the one the checkpoint was selected on (it would then be
    fitted or selected on samples it trained on)."""
    trained_on = ckpt.provenance.get("data_report", {}).get("valid_samples")
    if trained_on is not None and trained_on != len(data.valid_samples):
        raise UsageError(f"{path} was selected on {trained_on} validation samples, this split has "
                         f"{len(data.valid_samples)}: pass the --valid-fraction it was trained with")
    if not data.valid_samples:
        raise UsageError(f"{data.source}: no validation samples (--valid-fraction is 0)")
