"""Shared fixtures: a tiny real teacher and a codes student made from it.

The teacher is a short real training run on the Diginetica sample (../shared/data). The student's
codes come from a residual k-means of the teacher's item table and its encoder is the teacher's:
a real, if untrained, codes student, enough to exercise every export path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from odrec_export.train.code_learning import residual_kmeans

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DIGINETICA = SHARED / "diginetica_sample" / "sample_train-item-views.csv"
needs_shared = pytest.mark.skipif(not DIGINETICA.is_file(), reason="../shared/data not beside the checkout")
REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the odrec-export CLI in a child process (one thread, a minimal environment)."""
    return subprocess.run([sys.executable, "-m", "odrec_export.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def assert_one_line_error(result, code: int, *needles: str):
    """The CLI failed with ``code`` and exactly one stderr line ``error: ...`` holding every needle."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for n in needles:
        assert n in lines[0]


def student_from_teacher(teacher, m: int = 4, k: int = 16):
    """A codes-student checkpoint: teacher encoder + residual k-means codes of the teacher table."""
    from odrec_export.checkpoint import Checkpoint

    table = teacher.state_dict["items.weight"][1:].float()
    codes, books = residual_kmeans(table, m, k, iters=15)
    codes = torch.cat([torch.zeros(1, m, dtype=codes.dtype), codes])  # row 0 = padding
    config = {"encoder": dict(teacher.config["encoder"]), "compressor": "codes", "items": {"m": m, "k": k}}
    state = {n: t for n, t in teacher.state_dict.items() if n.startswith("encoder.")}
    state["items.codebooks"] = books.contiguous()
    state["items.codes"] = codes.to(torch.uint8 if k <= 256 else torch.uint16).contiguous()
    prov = {"teacher_digest": teacher.provenance.get("data_sha256"), "method": "residual k-means (test fixture)",
            "popular_items": teacher.provenance["popular_items"]}
    return Checkpoint("student", config, list(teacher.vocab), state, prov)


def fit_bonus_checkpoint(source: Path, samples, out: Path):
    """``source`` with a repeat bonus fitted on ``samples``, saved to ``out``: (model, fit report)."""
    from odrec_export.checkpoint import load_checkpoint, save_checkpoint
    from odrec_export.models.registry import model_from_checkpoint
    from odrec_export.train.repeat_fit import fit_repeat_bonus, with_repeat_bonus

    ckpt = load_checkpoint(source)
    model = model_from_checkpoint(ckpt)
    report = fit_repeat_bonus(model, samples)
    save_checkpoint(with_repeat_bonus(ckpt, model, report), out)
    return model, report


@pytest.fixture(scope="session")
def diginetica():
    if not DIGINETICA.is_file():
        pytest.skip("../shared/data not beside the checkout")
    from odrec_export.data.sessions import load_sessions

    return load_sessions(DIGINETICA)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, diginetica):
    """(teacher.pt, student.pt) paths: a 2-epoch d=32 teacher on the Diginetica sample and its codes student."""
    from odrec_export.checkpoint import save_checkpoint
    from odrec_export.train.loop import TrainConfig, train_teacher

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("ckpts")
    _, teacher = train_teacher(diginetica, {"dim": 32, "max_len": 20, "dropout": 0.2},
                               TrainConfig(epochs=2, seed=3), log=lambda s: None)
    save_checkpoint(teacher, folder / "teacher.pt")
    save_checkpoint(student_from_teacher(teacher), folder / "student.pt")
    return folder / "teacher.pt", folder / "student.pt"


@pytest.fixture(scope="session")
def built(tiny_checkpoints, tmp_path_factory):
    """Artifacts built from the tiny checkpoints: {"int8": DIR, "fp32": DIR, "teacher": DIR}.

    The int8 one goes through the CLI with --eval-data and --ort (default options: fp16 encoder weights),
    the others through the library, all in fp32.
    """
    import subprocess
    import sys

    from odrec_export.export import BuildOptions, build

    teacher, student = tiny_checkpoints
    root = tmp_path_factory.mktemp("artifacts")
    r = subprocess.run([sys.executable, "-m", "odrec_export.cli", "build", "--ckpt", str(student), "--out",
                        str(root / "int8"), "--eval-data", str(DIGINETICA), "--ort"],
                       capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    build(student, root / "fp32", BuildOptions(quant="fp32", encoder_quant="fp32"))  # exact against PyTorch
    build(teacher, root / "teacher", BuildOptions(quant="fp32", encoder_quant="fp32"))
    return {"int8": root / "int8", "fp32": root / "fp32", "teacher": root / "teacher", "cli_stdout": r.stdout}
