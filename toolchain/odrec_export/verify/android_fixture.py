"""The Android demo's JVM-test fixture: sessions and Python onnxruntime's top-k for them.

`android_demo/jvm_test.sh` runs the app's inference class (Java, onnxruntime 1.17) on an artifact
and compares its top-k ids and scores with what Python onnxruntime computes here on the same file.
Sessions are raw item ids (as the app sees them) drawn deterministically from the artifact's own
catalogue, with lengths from 1 to beyond the model's maximum (the graph keeps the most recent items).

    python -m odrec_export.verify.android_fixture ARTIFACT_DIR OUT.json
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OdrecError
from ..export import artifact as A
from ..export.onnx_runtime import ort_session


def session_lengths(max_len: int) -> list[int]:
    return sorted({1, 2, 3, 5, min(10, max_len), max_len, max_len + 5})


def make_fixture(folder: str | Path, seed: int = 0, per_length: int = 2) -> dict:
    import onnxruntime as ort

    folder = Path(folder)
    manifest = A.validate(folder)
    items = A.read_items(folder)
    max_len = int(manifest["max_session_length"])
    session = ort_session(folder / A.MODEL_FILE, threads=1, inter_threads=None, log_level=None)
    rng = np.random.default_rng(seed)
    sessions = []
    for length in session_lengths(max_len):
        for _ in range(per_length):
            idx = rng.integers(1, len(items) + 1, size=length)
            ids, scores = session.run([A.OUTPUT_IDS, A.OUTPUT_SCORES], {A.INPUT_NAME: idx[None, :].astype(np.int64)})
            sessions.append({"items": [items[i - 1] for i in idx],
                             "top_ids": [int(i) for i in ids[0]],
                             "top_scores": [float(s) for s in scores[0]]})
    return {"artifact": str(folder), "onnxruntime": ort.__version__, "num_items": len(items),
            "catalogue_sha256": hashlib.sha256("\n".join(items).encode()).hexdigest(),
            "top_k": int(manifest["top_k"]), "max_session_length": max_len, "seed": seed, "sessions": sessions,
            "id_map_cases": id_map_cases()}


def id_map_cases() -> list[dict]:
    """items.bin files in both encodings, with the ids they hold: the app's decoder is checked against
    the exporter's encoder byte for byte, whichever encoding the artifact itself uses."""
    from ..export.id_map import decode, encode

    rng = np.random.default_rng(7)
    cases = []
    for ids in (np.arange(1, 301, dtype=np.uint64),  # in id order: delta varint
                rng.choice(5_000_000, size=300, replace=False).astype(np.uint64),  # arbitrary order: fixed width
                np.array([0, (1 << 63) - 1, 12345], dtype=np.uint64)):  # the extremes
        data = encode(ids)
        assert (decode(data) == ids).all()
        cases.append({"hex": data.hex(), "ids": [str(v) for v in ids.tolist()], "encoding": data[9]})
    return cases


def write_fixture(folder: str | Path, out: str | Path, seed: int = 0) -> Path:
    fixture = make_fixture(folder, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(fixture, f, indent=1)
    os.replace(tmp, out)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m odrec_export.verify.android_fixture ARTIFACT_DIR OUT.json", file=sys.stderr)
        return 2
    try:
        out = write_fixture(argv[0], argv[1])
    except OdrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # onnxruntime refusing the model: still one line, naming the problem
        print(f"error: {argv[0]}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    fixture = json.loads(out.read_text())
    print(f"wrote {out}: {len(fixture['sessions'])} sessions, onnxruntime {fixture['onnxruntime']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
