"""items.bin: both encodings round-trip, the smaller is chosen, damage is named."""

from __future__ import annotations

import numpy as np
import pytest
from odrec_export.export import id_map
from odrec_export.export.id_map import IdMapError, decode, encode, integer_ids


@pytest.mark.parametrize("ids, encoding", [
    (np.arange(1, 50_001, dtype=np.uint64), id_map.DELTA),  # renumbered 1..N: about a byte an id
    (np.random.default_rng(0).choice(10**7, 50_000, replace=False).astype(np.uint64), id_map.FIXED),  # any order
    (np.array([0, (1 << 63) - 1, 5], dtype=np.uint64), None),
    (np.zeros(0, dtype=np.uint64), None),
])
def test_round_trip_and_the_smaller_encoding(ids, encoding):
    data = encode(ids)
    assert (decode(data) == ids).all() and decode(data).dtype == np.uint64
    if encoding is not None:
        assert data[9] == encoding
    if len(ids) > 1000:
        assert len(data) <= 3 * len(ids) + id_map.HEADER.size  # ids below 2^24 above their minimum: 3 bytes


def test_only_canonical_integers_are_binary():
    assert integer_ids(["1", "0", "9223372036854775807"]).tolist() == [1, 0, (1 << 63) - 1]
    for bad in (["01"], ["-1"], ["1.0"], ["9223372036854775808"], [" 1"], ["sku"]):
        assert integer_ids(bad) is None


def test_damaged_files_are_named():
    data = encode(np.arange(1, 1000, dtype=np.uint64))
    for broken, needle in ((data[:10], "header"), (b"X" + data[1:], "magic"), (data[:-1], "varint"),
                           (data[:9] + b"\x07" + data[10:], "encoding")):
        with pytest.raises(IdMapError, match=needle):
            decode(broken)
    fixed = encode(np.random.default_rng(1).choice(10**7, 100, replace=False).astype(np.uint64))
    with pytest.raises(IdMapError, match="payload"):
        decode(fixed[:-2])
