"""What a built artifact is, in a few lines: the end of ``make demo`` (``odrec-export summary DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import compressors
from ..export import artifact as A
from .measure import item_parts, part_sizes


def summary(folder: str | Path, verify_record: str | Path | None = None) -> str:
    """Files and bytes, compression ratios, accuracy through onnxruntime, the verify verdict (from
    ``verify --record FILE``) and how to put it on a phone."""
    import onnx

    folder = Path(folder)
    manifest = A.validate(folder)
    parts = part_sizes(folder, onnx.load(str(folder / A.MODEL_FILE), load_external_data=False))
    total = sum(parts.values())
    item_bytes = sum(parts[p] for p in item_parts())
    n, d = manifest["num_items"], manifest["compressor"]["d"]
    table = (n + 1) * d * 4
    comp = manifest["compressor"]
    shape = compressors.get(comp["name"]).describe(comp)
    lines = [f"artifact: {folder}  ({comp['name']}" + (f", {shape}" if shape else "")
             + f", {n:,} items, top {manifest['top_k']})"
             + ("  SYNTHETIC catalogue" if manifest.get("synthetic") else ""),
             "  files: " + ", ".join(f"{name} {info['bytes']:,} B" for name, info in sorted(manifest["files"].items())),
             f"  {total:,} bytes in all; item representation {item_bytes:,} B, {table / item_bytes:.1f}x smaller than "
             f"the fp32 {n + 1:,}×{d} table" if item_bytes else f"  {total:,} bytes in all"]
    ev = manifest.get("evaluation")
    if ev:
        m = ev["metrics"]
        lines.append(f"  accuracy through onnxruntime on {ev['data']} ({ev['samples']:,} test samples): "
                     f"HR@10 {100 * m['HR@10']:.2f}, NDCG@10 {100 * m['NDCG@10']:.2f}")
    else:
        lines.append("  accuracy: not evaluated (build --eval-data DATA records it)")
    if verify_record and Path(verify_record).is_file():
        record = json.loads(Path(verify_record).read_text())
        rows = [f"{check} {plat}: {r['status']}" for check, by in record["checks"].items() for plat, r in by.items()]
        lines.append(f"  verify: {'PASS' if record['passed'] else 'FAIL'} ({'; '.join(rows)})")
    lines.append("  on a phone: make apk ARTIFACT=" + str(folder) + "  then  adb install -r android_demo/build/odrec-demo.apk")
    return "\n".join(lines)
