"""Run the CLI on bad inputs as a new user would and check each answer (``make bad-inputs``).

Every case must exit non-zero with exactly one ``error: ...`` line on stderr (``verify``: its report
on stdout with the failed check and verdict FAIL, exit 1), no traceback, peak memory under 2 GB,
and leave nothing half-written. Prints one row per case and exits 1 if any
case fails. Needs ../shared/data (a real data set and the committed Tmall student).
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "odrec_export.cli"]
SHARED = ROOT.parent / "shared" / "data"
DIGINETICA = SHARED / "diginetica_sample" / "sample_train-item-views.csv"
STUDENT = ROOT / "models" / "tmall" / "student.pt"
MEMORY_LIMIT_KB = 2 * 1024 * 1024


class Payload:
    """A pickle that would run a command when unpickled (the checkpoint loader must refuse it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def prepare(tmp: Path) -> dict[str, Path]:
    """The bad inputs, written into ``tmp``."""
    p = {}
    huge = tmp / "huge"
    huge.mkdir()
    (huge / "train_sessions.txt").write_text("1 2 3\n4 99999999999999999999\n")
    p["huge"] = huge
    sparse = tmp / "sparse"
    sparse.mkdir()
    (sparse / "train_sessions.txt").write_text("1 2 3\n4 1000000000 5\n")
    p["sparse"] = sparse
    binary = tmp / "binary"
    binary.mkdir()
    (binary / "train_sessions.txt").write_bytes(bytes(range(256)) * 8)
    p["binary"] = binary
    p["binary_csv"] = tmp / "clicks.csv"
    p["binary_csv"].write_bytes(b"\xff\xfe" + bytes(range(256)) * 8)
    p["empty_csv"] = tmp / "empty.csv"
    p["empty_csv"].write_text("")
    short = tmp / "short"
    short.mkdir()
    (short / "train_sessions.txt").write_text("1\n2\n3\n")
    p["short"] = short
    p["junk_ckpt"] = tmp / "junk.pt"
    p["junk_ckpt"].write_bytes(b"\x80\x04not a checkpoint at all")
    p["truncated_ckpt"] = tmp / "truncated.pt"
    p["truncated_ckpt"].write_bytes(STUDENT.read_bytes()[:100_000])
    p["marker"] = tmp / "payload_ran"
    p["payload_ckpt"] = tmp / "payload.pt"
    p["payload_ckpt"].write_bytes(pickle.dumps({"format": Payload(p["marker"])}))
    p["a_file"] = tmp / "a_file"
    p["a_file"].write_text("x")
    p["not_artifact"] = tmp / "not_artifact"
    p["not_artifact"].mkdir()
    p["artifact"] = tmp / "artifact"
    subprocess.run([*CLI, "build", "--ckpt", str(STUDENT), "--out", str(p["artifact"])], check=True,
                   capture_output=True)
    for name, edit in (("flipped", lambda b: b[:5000] + bytes([b[5000] ^ 0xFF]) + b[5001:]),
                       ("truncated_art", lambda b: b[: len(b) // 2])):
        shutil.copytree(p["artifact"], tmp / name)
        model = tmp / name / "model.onnx"
        model.write_bytes(edit(model.read_bytes()))
        p[name] = tmp / name
    p["bad_manifest"] = tmp / "bad_manifest"
    shutil.copytree(p["artifact"], p["bad_manifest"])
    (p["bad_manifest"] / "manifest.json").write_text("{not json")
    unknown = tmp / "unknown_items"
    unknown.mkdir()
    (unknown / "train_sessions.txt").write_text("1 2 3\n")
    (unknown / "test_samples.txt").write_text("1 1000000000\t5\n")
    p["unknown_items"] = unknown
    return p


def cases(p: dict[str, Path]) -> list[tuple[str, list[str]]]:
    out = str(p["a_file"].parent / "out")
    ckpt = str(STUDENT)
    return [
        ("train: a huge item id", ["train", "--data", str(p["huge"]), "--out", out + ".pt"]),
        ("train: sparse item ids", ["train", "--data", str(p["sparse"]), "--out", out + ".pt"]),
        ("train: a binary train_sessions.txt", ["train", "--data", str(p["binary"]), "--out", out + ".pt"]),
        ("train: a binary CSV", ["train", "--data", str(p["binary_csv"]), "--out", out + ".pt"]),
        ("train: an empty CSV", ["train", "--data", str(p["empty_csv"]), "--out", out + ".pt"]),
        ("train: only length-1 sessions", ["train", "--data", str(p["short"]), "--out", out + ".pt"]),
        ("train: a missing --data", ["train", "--data", str(p["a_file"]) + "_missing", "--out", out + ".pt"]),
        ("train: unknown --compressor", ["train", "--data", str(DIGINETICA), "--out", out + ".pt", "--compressor", "zip"]),
        ("train: unknown --device", ["train", "--data", str(DIGINETICA), "--out", out + ".pt", "--device", "tpu"]),
        ("train: unknown --lr-schedule", ["train", "--data", str(DIGINETICA), "--out", out + ".pt", "--lr-schedule", "x"]),
        ("train: unknown --kd", ["train", "--data", str(DIGINETICA), "--out", out + ".pt", "--kd", "x"]),
        ("train: --init a student as a teacher", ["train", "--data", str(DIGINETICA), "--out", out + ".pt",
                                                  "--init", ckpt]),
        ("train: an unknown option", ["train", "--data", str(DIGINETICA), "--out", out + ".pt", "--epoch", "2"]),
        ("eval: a huge item id in the test set", ["eval", "--ckpt", ckpt, "--data", str(p["unknown_items"])]),
        ("eval: a missing checkpoint", ["eval", "--ckpt", out + "_missing.pt", "--data", str(DIGINETICA)]),
        ("eval: a checkpoint from other data", ["eval", "--ckpt", ckpt, "--data", str(DIGINETICA)]),
        ("build: junk checkpoint", ["build", "--ckpt", str(p["junk_ckpt"]), "--out", out]),
        ("build: truncated checkpoint", ["build", "--ckpt", str(p["truncated_ckpt"]), "--out", out]),
        ("build: pickled payload", ["build", "--ckpt", str(p["payload_ckpt"]), "--out", out]),
        ("build: --ckpt is a directory", ["build", "--ckpt", str(p["not_artifact"]), "--out", out]),
        ("build: --out under a file", ["build", "--ckpt", ckpt, "--out", str(p["a_file"] / "art")]),
        ("build: --out not writable", ["build", "--ckpt", ckpt, "--out", "/sys/odrec_art"]),
        ("build: --out not empty", ["build", "--ckpt", ckpt, "--out", str(p["artifact"])]),
        ("build: unknown --quant", ["build", "--ckpt", ckpt, "--out", out, "--quant", "int3"]),
        ("build: unknown --encoder-quant", ["build", "--ckpt", ckpt, "--out", out, "--encoder-quant", "x"]),
        ("build: --top-k 0", ["build", "--ckpt", ckpt, "--out", out, "--top-k", "0"]),
        ("build: --popular-from other data", ["build", "--ckpt", ckpt, "--out", out, "--popular-from", str(DIGINETICA)]),
        ("verify: a flipped byte", ["verify", str(p["flipped"]), "--no-arm"]),
        ("verify: a truncated model.onnx", ["verify", str(p["truncated_art"]), "--no-arm"]),
        ("verify: a missing folder", ["verify", out + "_missing", "--no-arm"]),
        ("verify: not an artifact", ["verify", str(p["not_artifact"]), "--no-arm"]),
        ("verify: invalid manifest", ["verify", str(p["bad_manifest"]), "--no-arm"]),
        ("size-report: a missing folder", ["size-report", out + "_missing"]),
        ("size-report: not an artifact", ["size-report", str(p["not_artifact"])]),
        ("bench: a truncated model.onnx", ["bench", str(p["truncated_art"]), "--quick"]),
        ("bench: two folders without --compare", ["bench", str(p["artifact"]), str(p["artifact"])]),
        ("repeat-bonus: junk checkpoint", ["repeat-bonus", "--ckpt", str(p["junk_ckpt"]), "--data", str(DIGINETICA),
                                           "--out", out + ".pt"]),
        ("finetune: truncated checkpoint", ["finetune", "--ckpt", str(p["truncated_ckpt"]), "--data", str(DIGINETICA),
                                            "--out", out + ".pt"]),
        ("synth-data: --items 0", ["synth-data", "--items", "0", "--sessions", "10", "--out", out]),
        ("figures: a folder without data", ["figures", "--data", str(p["not_artifact"]), "--out", out]),
    ]


def run_case(args: list[str], tmp: Path) -> dict:
    rss = tmp / "rss"
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), *CLI, *args], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    peak_kb = int(rss.read_text().split()[-1])
    sane = r.returncode != 0 and "Traceback" not in r.stderr + r.stdout and peak_kb < MEMORY_LIMIT_KB
    report = [line for line in r.stdout.splitlines() if " fail: " in line]
    if args[0] == "verify" and "verdict: FAIL" in r.stdout:  # a failed check is verify's report, on stdout
        return {"ok": sane and r.returncode == 1, "exit": r.returncode, "peak_mb": peak_kb / 1024,
                "stderr": ["report: " + (report[0] if report else "verdict: FAIL")]}
    ok = sane and len(lines) == 1 and lines[0].startswith("error: ")
    return {"ok": ok, "exit": r.returncode, "peak_mb": peak_kb / 1024, "stderr": lines}


def main() -> int:
    if not DIGINETICA.is_file():
        print(f"error: {DIGINETICA} not found: the matrix needs ../shared/data beside the checkout", file=sys.stderr)
        return 2
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = prepare(tmp)
        before = sorted(x.name for x in tmp.iterdir())
        matrix = cases(inputs)
        print(f"{'case':<40} {'exit':>4} {'peak MB':>8}  answer")
        for name, args in matrix:
            r = run_case(args, tmp)
            failed += not r["ok"]
            answer = r["stderr"][0] if len(r["stderr"]) == 1 else f"{len(r['stderr'])} stderr lines: {r['stderr'][-1:]}"
            print(f"{name:<40} {r['exit']:>4} {r['peak_mb']:>8.0f}  {'' if r['ok'] else 'FAIL '}{answer[:150]}")
        left = sorted(set(x.name for x in tmp.iterdir()) - set(before) - {"rss"})
        if left:
            failed += 1
            print(f"FAIL: left behind: {left}")
        if inputs["marker"].exists():
            failed += 1
            print("FAIL: the pickled payload ran")
    total = len(matrix)
    print(f"{total - failed}/{total} cases: one-line error, non-zero exit, no traceback, under 2 GB, nothing left behind"
          if not failed else f"{failed} failure(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
