"""The artifact contract: what a built DIR holds, and how to read and check its manifest.

Other tools (verify, the Android app's tests) import this module, so it imports nothing heavier than
the standard library. See docs/artifact-format.md for the full description.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import OdrecError
from ..files import file_sha256  # noqa: F401  (part of this module's interface)

FORMAT = "odrec-export-artifact"
FORMAT_VERSION = 1

MODEL_FILE = "model.onnx"
ORT_FILE = "model.ort"
ITEMS_FILE = "items.txt"  # the id map as text; items.bin is its compact binary form (id_map.py)
ITEMS_BIN = "items.bin"
ID_MAP_FILES = (ITEMS_FILE, ITEMS_BIN)
MANIFEST_FILE = "manifest.json"

INPUT_NAME = "item_ids"
OUTPUT_IDS = "top_ids"
OUTPUT_SCORES = "top_scores"
INPUTS = [{"name": INPUT_NAME, "dtype": "int64", "shape": ["batch", "seq"]}]
OUTPUTS = [{"name": OUTPUT_IDS, "dtype": "int64", "shape": ["batch", "k"]},
           {"name": OUTPUT_SCORES, "dtype": "float32", "shape": ["batch", "k"]}]

QUANT_SCHEMES = ("int8", "fp32")
ENCODER_QUANT_SCHEMES = ("fp32", "fp16", "int8")
MIN_OPSET, MAX_OPSET, MAX_IR_VERSION = 18, 20, 9

# Initializer names in model.onnx, which size-report uses to say where the bytes go.
ENCODER_PREFIX = "enc/"
CODES = "codes"  # G × N unsigned group indices (items 1..N), see compressors/codes.py
CODEBOOKS = "codebooks"  # (M·K) × d, fp32 or int8
CODEBOOK_SCALES = "codebook_scales"  # int8 only: (M·K) fp32 per-codeword scales; pq: M × 1 × d/M per column
ITEM_TABLE = "item_table"  # uncompressed N × d table (items 1..N) (teacher / baseline graphs only)
POPULAR_IDS = "popular_ids"  # 1 × k int64: most clicked training items, the answer to a session with no known item
POPULAR_SCORES = "popular_scores"  # 1 × k fp32: their log(1 + clicks), the scores returned with them
REPEAT_WEIGHTS = "repeat_weights"  # max_len fp32 weights by recency (models with a repeat bonus only)


class ArtifactError(OdrecError):
    """An artifact directory that is missing files or does not match its manifest."""


class NotAnArtifact(ArtifactError):
    """No artifact there at all (no directory, no manifest.json): a usage error, like a missing path."""

    exit_code = 2


def describe_files(folder: Path, names) -> dict:
    """{name: {"bytes": ..., "sha256": ...}} for the given files of ``folder``."""
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": file_sha256(folder / n)} for n in sorted(names)}


def write_manifest(folder: Path, manifest: dict) -> None:
    (Path(folder) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise NotAnArtifact(f"{folder}: no such artifact directory")
    if not path.is_file():
        raise NotAnArtifact(f"{folder}: no {MANIFEST_FILE} (not an odrec-export artifact)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an odrec-export artifact manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: unsupported artifact format version {manifest.get('format_version')!r}")
    return manifest


def id_map_file(manifest: dict) -> str:
    """The artifact's id-map file: the manifest's ``id_map.file`` (items.txt in artifacts that predate it)."""
    info = manifest.get("id_map")
    name = info.get("file") if isinstance(info, dict) else ITEMS_FILE
    if name not in ID_MAP_FILES:
        raise ArtifactError(f"{MANIFEST_FILE}: id_map file {name!r} is not one of {', '.join(ID_MAP_FILES)}")
    return name


def quant_scheme(manifest: dict) -> str | None:
    """The codebook quantisation the manifest declares ("int8", "fp32"), or None."""
    q = manifest.get("quantisation")
    return q.get("scheme") if isinstance(q, dict) else None


def validate(folder: str | Path) -> dict:
    """Read the manifest and check every listed file's size and sha256; returns the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = manifest.get("files")
    ids_name = id_map_file(manifest)
    if not isinstance(files, dict) or MODEL_FILE not in files or ids_name not in files:
        raise ArtifactError(f"{folder}: manifest does not list {MODEL_FILE} and {ids_name}")
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{folder}: {name} is listed in the manifest but missing")
        if path.stat().st_size != info.get("bytes") or file_sha256(path) != info.get("sha256"):
            raise ArtifactError(f"{folder}: {name} does not match the manifest (size or sha256 differ)")
    items = read_items(folder, manifest)
    if len(items) != manifest.get("num_items"):
        raise ArtifactError(f"{folder}: {ids_name} holds {len(items)} ids, manifest says {manifest.get('num_items')}")
    return manifest


def read_items(folder: str | Path, manifest: dict | None = None) -> list[str]:
    """Raw item ids: element i-1 is the raw id of index i (from items.txt or items.bin)."""
    from .id_map import IdMapError, read

    folder = Path(folder)
    name = id_map_file(manifest if manifest is not None else read_manifest(folder))
    try:
        return read(folder / name)
    except IdMapError as e:
        raise ArtifactError(f"{folder}: {e}") from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{folder}: {name} is not valid UTF-8 text (byte {e.start})") from None
