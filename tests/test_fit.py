"""odrec-export fit: click log → verified artifact within a budget, resumable, on the Diginetica sample."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import DIGINETICA, assert_one_line_error, cli, needs_shared
from odrec_export import fit as F
from odrec_export.errors import UsageError

BUDGET = "2m"


def test_parse_budget():
    assert F.parse_budget("90s") == 90 and F.parse_budget("10m") == 600 and F.parse_budget("1h30m") == 5400
    assert F.parse_budget("45") == 45
    for bad in ("ten minutes", "10x", "m", ""):
        with pytest.raises(UsageError):
            F.parse_budget(bad)


def test_plan_phase_fits_the_seconds():
    whole = F.plan_phase("teacher", 100, step=0.1, epoch_batches=50, eval_seconds=1.0)  # an epoch: 6 s
    assert whole.max_batches is None and whole.epochs == int(100 * F.SAFETY // 6)
    part = F.plan_phase("teacher", 100, step=0.1, epoch_batches=10_000, eval_seconds=1.0)
    assert part.max_batches is not None and part.epochs * (part.max_batches * 0.1 + 1.0) <= 100
    assert F.plan_phase("teacher", 1, step=0.1, epoch_batches=10_000, eval_seconds=1.0) is None


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run stopped after its teacher (the library's stop_after), as an interrupted run leaves it."""
    if not DIGINETICA.is_file():
        pytest.skip("../shared/data not beside the checkout")
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("fit") / "run"
    lines = []
    F.fit(DIGINETICA, out, budget=BUDGET, stop_after="teacher", log=lines.append)
    return out, lines


@needs_shared
def test_resume_finishes_a_stopped_run_within_the_budget(stopped, tmp_path):
    first, first_lines = stopped
    assert any(line.startswith("  teacher ") and "epochs" in line for line in first_lines)  # the plan, printed
    out = tmp_path / "run"
    shutil.copytree(first, out)
    record = json.loads((out / "fit.json").read_text())
    assert record["split"]["sha256"] and record["split"]["valid_fraction"] == 0.1
    assert record["split"]["counts"]["valid_samples"] > 0 and record["baseline"]["HR@10"] > 0
    assert list(record["phases"]) == ["teacher"] and not (out / "artifact").exists()
    teacher = record["phases"]["teacher"]

    lines = []
    record = F.fit(DIGINETICA, out, budget=BUDGET, resume=True, log=lines.append)
    assert not any("] teacher ..." in line for line in lines)  # not redone
    assert record["phases"]["teacher"] == teacher
    assert all(record["phases"][p]["done"] for p in F.PHASES)
    assert json.loads((out / "verify.json").read_text())["passed"]
    assert (out / "artifact" / "model.onnx").is_file()
    last = record["runs"][-1]
    assert last["wall_seconds"] <= 1.1 * F.parse_budget(BUDGET)
    assert set(last["phases"]) == {"student", "polish", "bonus", "build", "verify", "bench"}
    report = (out / "report.md").read_text()
    for needle in ("transition baseline", "teacher (PyTorch)", "pq student + repeat bonus", "verify (x86): PASS",
                   "odrec-export train", "odrec-export build", "odrec-export verify", "speed (onnxruntime"):
        assert needle in report
    assert report in "\n".join(lines)  # printed too

    again = []
    F.fit(DIGINETICA, out, budget=BUDGET, resume=True, log=again.append)  # all done: nothing runs
    assert not any(line.endswith("] student ...") for line in again)


@needs_shared
def test_resume_refuses_other_data(stopped, tmp_path):
    out, _ = stopped
    other = tmp_path / "clicks.csv"
    rows = DIGINETICA.read_text().splitlines(keepends=True)
    other.write_text("".join(rows[:-200]))
    r = cli("fit", "--data", str(other), "--out", str(out), "--resume")
    assert_one_line_error(r, 2, "cannot resume", str(other), "sha256")
    r = cli("fit", "--data", str(DIGINETICA), "--out", str(out), "--resume", "--valid-fraction", "0.2")
    assert_one_line_error(r, 2, "cannot resume", "--valid-fraction 0.2", "0.1")
    r = cli("fit", "--data", str(DIGINETICA), "--out", str(out))
    assert_one_line_error(r, 2, "--resume")
    r = cli("fit", "--data", str(DIGINETICA), "--out", str(out), "--resume", "--m", "8")
    # the run recorded pq's default shape when it started, so that a later default cannot change it
    assert_one_line_error(r, 2, "cannot resume", "--m 8", "--k 256 --kmeans-weights uniform --m 16")


@needs_shared
def test_a_shape_the_compressor_cannot_take_fails_before_training(tmp_path):
    r = cli("fit", "--data", str(DIGINETICA), "--out", str(tmp_path / "run"), "--m", "7")
    assert_one_line_error(r, 2, "compressor pq", "M=7")
    assert not (tmp_path / "run").exists()


@needs_shared
def test_impossible_budget_is_a_usage_error(tmp_path):
    r = cli("fit", "--data", str(DIGINETICA), "--out", str(tmp_path / "run"), "--budget", "1s")
    assert_one_line_error(r, 2, "--budget 1s", "at least")
    assert not (tmp_path / "run" / "fit.json").exists()


def test_synthetic_run_interrupted_in_its_student_resumes_from_the_best_so_far(tmp_path):
    """The mechanics on generated data: a real interrupt (SIGINT) while the student trains, a one-line
    error, then --resume continues that student from its best epoch so far, within the budget, and ends
    with a verified artifact and a report."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO
    from odrec_export.data.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "synth", num_items=500, num_sessions=1500)
    out = tmp_path / "run"
    budget = "100s"
    command = [sys.executable, "-m", "odrec_export.cli", "fit", "--data", str(data), "--out", str(out),
               "--budget", budget]
    shape = ["--m", "8", "--k", "64"]  # not pq's default: the resumed run (without them) must keep them
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command + shape, stdout=log, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        t0 = time.monotonic()
        while not (out / "student.pt").is_file() and first.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.1)
        assert first.poll() is None, "the run ended before its student saved a first epoch"
        first.send_signal(signal.SIGINT)
        stderr = first.communicate(timeout=60)[1]
    assert first.returncode == 130, stderr  # progress lines go to stderr too: the error is its last line
    assert stderr.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in stderr, stderr
    record = json.loads((out / "fit.json").read_text())
    assert record["phases"]["teacher"]["done"] and "student" not in record["phases"]

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=REPO, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"continuing from {out / 'student.pt'}" in resumed.stdout
    assert "] teacher ..." not in resumed.stdout
    record = json.loads((out / "fit.json").read_text())
    assert all(record["phases"][p]["done"] for p in F.PHASES)
    assert record["runs"][-1]["wall_seconds"] <= 1.1 * F.parse_budget(budget)
    assert json.loads((out / "verify.json").read_text())["passed"]
    report = (out / "report.md").read_text()
    assert "teacher + repeat bonus (PyTorch)" in report and "verify (x86): PASS" in report
    assert "--compressor pq --k 64 --kmeans-weights uniform --m 8 --out" in report
    polish = record["phases"]["polish"]  # what the student left: spent on a continuation, or too little
    assert ("polish: skipped" in report) == polish["skipped"] == ("--init" not in report)
    manifest = json.loads((out / "artifact" / "manifest.json").read_text())
    assert (manifest["compressor"]["M"], manifest["compressor"]["K"]) == (8, 64)
