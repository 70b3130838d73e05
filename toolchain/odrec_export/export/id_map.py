"""The artifact's item-id map: the raw id of every item index 1..N, as text or as compact binary.

``items.txt``: line i is the raw id of index i. Any id without a line break.

``items.bin``: for catalogues whose raw ids are all canonical decimal integers (``0`` or no leading
zero) below 2^63, the usual case for shop catalogues. Little-endian:

    offset  size  field
         0     8  magic b"ODRECIDS"
         8     1  version, 1
         9     1  encoding: 1 = fixed width, 2 = delta varint
        10     1  width: bytes per id (fixed), 0 (delta)
        11     5  zero
        16     8  count N (uint64)
        24     8  base (uint64): the smallest id
        32        payload
    fixed:  N unsigned integers of ``width`` bytes, id - base, in index order
    delta:  N LEB128 varints of zigzag(id_i - id_(i-1)), with id_0 taken as base, in index order

The writer picks whichever payload is smaller: a vocabulary in id order (ids renumbered 1..N, or
sorted) costs about one byte an id as deltas; one in arbitrary order costs ceil(log2(range)/8)
bytes an id at fixed width. Either way the ids never cost more than 8 bytes an item, and usually
1–3, where text costs one byte per digit plus a newline.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from ..errors import OdrecError, UsageError

TEXT_FILE, BINARY_FILE = "items.txt", "items.bin"
FORMS = ("auto", "text", "binary")
MAGIC, VERSION = b"ODRECIDS", 1
FIXED, DELTA = 1, 2
HEADER = struct.Struct("<8sBBB5xQQ")
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,18}")
MAX_ID = (1 << 63) - 1


class IdMapError(OdrecError):
    """An items.bin that cannot be read."""


def integer_ids(raw_ids: list[str]) -> np.ndarray | None:
    """The ids as uint64 when every one is a canonical decimal integer <= 2^63 - 1, else None."""
    if not all(_CANONICAL.fullmatch(r) for r in raw_ids):
        return None
    values = [int(r) for r in raw_ids]
    if values and max(values) > MAX_ID:
        return None
    return np.array(values, dtype=np.uint64)


def _varints(values: np.ndarray) -> bytes:
    """LEB128 of each uint64, vectorised: 7 bits a byte, high bit set on all but the last."""
    sizes = np.ones(len(values), dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        sizes += rest > 0
        rest >>= np.uint64(7)
    out = np.zeros(int(sizes.sum()), dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    for b in range(int(sizes.max(initial=0))):
        live = sizes > b
        byte = (values[live] >> np.uint64(7 * b)) & np.uint64(0x7F)
        more = (sizes[live] > b + 1).astype(np.uint64) << np.uint64(7)
        out[starts[live] + b] = (byte | more).astype(np.uint8)
    return out.tobytes()


def _zigzag_deltas(ids: np.ndarray, base: int) -> np.ndarray:
    signed = ids.astype(np.int64)
    deltas = np.diff(signed, prepend=np.int64(base))
    return ((deltas << np.int64(1)) ^ (deltas >> np.int64(63))).astype(np.uint64)


def encode(ids: np.ndarray) -> bytes:
    """items.bin for uint64 ids (see the module docstring); the smaller of the two encodings."""
    base = int(ids.min()) if len(ids) else 0
    span = int(ids.max()) - base if len(ids) else 0
    width = max(1, (span.bit_length() + 7) // 8)
    fixed = (ids - np.uint64(base)).astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width].tobytes()
    delta = _varints(_zigzag_deltas(ids, base))
    if len(delta) < len(fixed):
        return HEADER.pack(MAGIC, VERSION, DELTA, 0, len(ids), base) + delta
    return HEADER.pack(MAGIC, VERSION, FIXED, width, len(ids), base) + fixed


def decode(data: bytes) -> np.ndarray:
    """uint64 ids from items.bin; IdMapError names what is wrong with a damaged file."""
    if len(data) < HEADER.size:
        raise IdMapError(f"{BINARY_FILE}: {len(data)} bytes, shorter than its {HEADER.size}-byte header")
    magic, version, encoding, width, count, base = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise IdMapError(f"{BINARY_FILE}: not an odrec-export id map (bad magic)")
    if version != VERSION:
        raise IdMapError(f"{BINARY_FILE}: unsupported version {version}")
    payload = np.frombuffer(data, dtype=np.uint8, offset=HEADER.size)
    if encoding == FIXED and 1 <= width <= 8:
        if len(payload) != count * width:
            raise IdMapError(f"{BINARY_FILE}: {len(payload)} payload bytes for {count} ids of {width} bytes")
        wide = np.zeros((count, 8), dtype=np.uint8)
        wide[:, :width] = payload.reshape(count, width)
        return wide.view("<u8").reshape(-1) + np.uint64(base)
    if encoding == DELTA:
        last = (payload & 0x80) == 0
        ends = np.flatnonzero(last)
        if len(ends) != count or (count and ends[-1] != len(payload) - 1):
            raise IdMapError(f"{BINARY_FILE}: holds {len(ends)} complete varints, header says {count}")
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        if count and (ends - starts).max() >= 10:
            raise IdMapError(f"{BINARY_FILE}: a varint longer than 10 bytes")
        shift = (np.arange(len(payload)) - np.repeat(starts, ends - starts + 1)).astype(np.uint64) * np.uint64(7)
        parts = (payload & 0x7F).astype(np.uint64) << shift
        zig = np.add.reduceat(parts, starts) if count else np.zeros(0, np.uint64)
        deltas = (zig >> np.uint64(1)).astype(np.int64) ^ -(zig & np.uint64(1)).astype(np.int64)
        return (np.cumsum(deltas) + np.int64(base)).astype(np.uint64)
    raise IdMapError(f"{BINARY_FILE}: unknown encoding {encoding} (width {width})")


def describe(data: bytes) -> str:
    """One line for the manifest: how an items.bin stores its ids."""
    _, _, encoding, width, count, base = HEADER.unpack_from(data)
    if encoding == FIXED:
        return f"fixed width, {width} byte(s) an id above base {base}, little-endian"
    return f"delta varint (LEB128 of zigzag differences), {len(data) - HEADER.size} bytes for {count} ids"


def choose_file(raw_ids: list[str], form: str) -> tuple[str, np.ndarray | None]:
    """(file name, integer ids or None) for ``form`` auto / text / binary."""
    if form not in FORMS:
        raise UsageError(f"unknown --id-map '{form}' (use {', '.join(FORMS)})")
    if form == "text":
        return TEXT_FILE, None
    ids = integer_ids(raw_ids)
    if ids is not None:
        return BINARY_FILE, ids
    if form == "binary":
        bad = next(r for r in raw_ids if not _CANONICAL.fullmatch(r) or int(r) > MAX_ID)
        raise UsageError(f"--id-map binary needs integer item ids below 2^63, and {bad!r} is not one "
                         "(use --id-map text)")
    return TEXT_FILE, None


def write(folder: Path, raw_ids: list[str], form: str = "auto") -> str:
    """Write the id map into ``folder``; returns its file name."""
    name, ids = choose_file(raw_ids, form)
    if ids is None:
        (folder / name).write_text("".join(f"{r}\n" for r in raw_ids))
    else:
        (folder / name).write_bytes(encode(ids))
    return name


def read(path: Path) -> list[str]:
    """Raw ids in index order from items.txt or items.bin."""
    path = Path(path)
    if path.name == BINARY_FILE:
        return [str(v) for v in decode(path.read_bytes()).tolist()]
    return path.read_text().splitlines()
