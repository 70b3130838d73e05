"""The docs' figures, drawn from the JSON the tools print (``make figures``; matplotlib).

Every figure reads one kind of tool output from the data folder (docs/figures/data), so a figure is
redrawn by re-running the command named in FIGURE_SOURCES and then ``make figures``:

- accuracy_vs_bytes.png: ``bench --compare --json`` over artifacts built with ``--eval-data``;
- latency_vs_items.png: one ``bench --json`` per catalogue size (files scale_*.json);
- bytes_per_part.png: ``size-report --json`` of the demo artifact;
- flow.png: the pipeline, drawn from PIPELINE below (no data).
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import compressors
from ..errors import UsageError

FIGURE_SOURCES = {
    "compare.json": "odrec-export bench --compare DIR... --json",
    "scale_*.json": "odrec-export bench DIR --json (one file per catalogue size)",
    "size_report.json": "odrec-export size-report DIR --json",
}

# (stage, command, what it writes, where the code is); the arrows run top to bottom
PIPELINE = [
    ("data", "sessions folder or click CSV", "train / valid / test splits", "data/"),
    ("train", "odrec-export train", "teacher checkpoint (N×d table)", "train/loop.py, models/"),
    ("distil", "odrec-export train --compressor codes --teacher", "student: codes + codebooks",
     "train/distill.py, compressors/"),
    ("freeze + export", "odrec-export build", "model.onnx, items.bin, manifest.json", "freeze.py, export/"),
    ("verify", "odrec-export verify", "parity with PyTorch, x86-64 + ARM64", "verify/"),
    ("report / ship", "size-report · bench · make apk", "bytes, latency, signed APK", "report/, android_demo/"),
]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("figures need matplotlib: pip install -e '.[figures]' (make figures installs it)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read(path: Path) -> dict:
    if not path.is_file():
        source = FIGURE_SOURCES.get(path.name) or FIGURE_SOURCES["scale_*.json"]
        raise UsageError(f"no figure data {path}: write it with `{source} > {path}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None


def _label(a: dict) -> str:
    c = a["compressor"]
    known = compressors.all_compressors()
    shape = known[c["name"]].describe(c) if c.get("name") in known else ""
    if shape and known[c["name"]].quantises:
        shape += f", {a.get('quantisation')}"
    return f"{a['label']} ({shape})" if shape else a["label"]


def accuracy_vs_bytes(compare: dict, out: Path, plt) -> None:
    points = [a for a in compare["artifacts"] if a["metrics"].get("HR@10") is not None]
    if not points:
        raise UsageError("compare.json has no recorded accuracy: build each artifact with --eval-data first")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for a in points:
        x, y = a["item_representation_bytes"], 100 * a["metrics"]["HR@10"]
        ax.scatter([x], [y], s=40)
        ax.annotate(_label(a), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("item representation, bytes (log)")
    ax.set_ylabel("HR@10 through onnxruntime, %")
    ax.set_title(f"Accuracy vs item bytes ({points[0]['num_items']:,} items)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def latency_vs_items(benches: list[dict], out: Path, plt, threads: int = 1, seq_len: int = 10) -> None:
    rows = []
    for b in sorted(benches, key=lambda b: b["num_items"]):
        row = next(r for r in b["latency"] if r["threads"] == threads and r["seq_len"] == seq_len)
        rows.append((b["num_items"], row, b["memory"]))
    n = [r[0] for r in rows]
    fig, (lat, mem) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for key, name in (("artifact", "artifact (codes head)"), ("baseline", "fp32 N×d table")):
        med = [r[1][f"{key}_us"] / 1e3 for r in rows]
        lo = [m - r[1][f"{key}_p10_us"] / 1e3 for m, r in zip(med, rows)]
        hi = [r[1][f"{key}_p90_us"] / 1e3 - m for m, r in zip(med, rows)]
        lat.errorbar(n, med, yerr=[lo, hi], marker="o", capsize=3, label=name)
        mem.plot(n, [r[2][key]["rss_growth_mib"] for r in rows], marker="o", label=name)
    for ax in (lat, mem):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue size, items (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lat.set_ylabel("latency, ms (median; bars p10–p90)")
    mem.set_ylabel("resident memory growth, MiB")
    lat.set_title(f"Latency vs catalogue size ({threads} thread, session of {seq_len})", fontsize=10)
    mem.set_title("Memory vs catalogue size")
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def bytes_per_part(report: dict, out: Path, plt) -> None:
    parts = sorted(((p, b) for p, b in report["parts"].items() if b > 0), key=lambda x: x[1])
    total = report["total_bytes"]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(parts) + 1.2))
    ax.barh([p for p, _ in parts], [b / 1e3 for _, b in parts])
    for i, (_, b) in enumerate(parts):
        ax.annotate(f"{b:,} B ({100 * b / total:.1f}%)", (b / 1e3, i), textcoords="offset points",
                    xytext=(4, -3), fontsize=8)
    ax.set_xlabel("kB")
    ax.set_xlim(0, max(b for _, b in parts) / 1e3 * 1.45)
    ax.set_title(f"Artifact bytes per part: {total:,} B in all "
                 f"({report['artifact_compression_ratio']:.1f}x smaller than the fp32 model)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def flow(out: Path, plt) -> None:
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(6.4, 0.9 * len(PIPELINE) + 0.4))
    ax.set_xlim(0, 10)
    ax.set_ylim(-len(PIPELINE) + 0.5, 0.5)
    ax.axis("off")
    for i, (stage, command, writes, code) in enumerate(PIPELINE):
        y = -i
        ax.add_patch(FancyBboxPatch((0.2, y - 0.3), 2.6, 0.6, boxstyle="round,pad=0.05", fc="#dbe8f6", ec="#4a6f99"))
        ax.text(1.5, y + 0.08, stage, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(1.5, y - 0.17, code, ha="center", va="center", fontsize=6.5, color="#555")
        ax.text(3.2, y + 0.12, command, va="center", fontsize=8.5, family="monospace")
        ax.text(3.2, y - 0.16, "→ " + writes, va="center", fontsize=8.5, color="#444")
        if i + 1 < len(PIPELINE):
            ax.annotate("", (1.5, y - 0.68), (1.5, y - 0.32), arrowprops={"arrowstyle": "->", "color": "#4a6f99"})
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def render_all(data: str | Path, out: str | Path) -> list[Path]:
    """Draw every figure from the JSON in ``data`` into ``out``; returns the files written."""
    data, out = Path(data), Path(out)
    plt = _pyplot()
    scale = sorted(data.glob("scale_*.json"))
    if not scale:
        _read(data / "scale_1.json")  # names the command that writes them
    inputs = {"compare": _read(data / "compare.json"), "size": _read(data / "size_report.json"),
              "scale": [_read(p) for p in scale]}
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "accuracy_vs_bytes.png", out / "latency_vs_items.png", out / "bytes_per_part.png", out / "flow.png"]
    accuracy_vs_bytes(inputs["compare"], written[0], plt)
    latency_vs_items(inputs["scale"], written[1], plt)
    bytes_per_part(inputs["size"], written[2], plt)
    flow(written[3], plt)
    return written
