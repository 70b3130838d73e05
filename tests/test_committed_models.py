"""The students committed under models/: loadable without a teacher, codes only, documented, and
trained on the data set they claim."""

import re
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from odrec_export.checkpoint import check_no_full_table, file_sha256, load_checkpoint
from odrec_export.data.sessions import load_sessions

MODELS = Path(__file__).resolve().parents[1] / "models"
COMMITTED = sorted(MODELS.glob("*/student.pt"))


def test_the_demo_student_is_committed():
    assert MODELS / "tmall" / "student.pt" in COMMITTED


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_student_is_a_codes_student_with_its_readme(path):
    ckpt = load_checkpoint(path)
    assert ckpt.kind == "student" and ckpt.config["compressor"] == "codes"
    check_no_full_table(ckpt.state_dict, len(ckpt.vocab))
    codes = ckpt.state_dict["items.codes"]
    assert codes.dtype == torch.uint8 and int(codes.max()) < ckpt.config["items"]["k"]
    readme = (path.parent / "README.md").read_text()
    documented = re.search(r"sha256 `([0-9a-f]{16})", readme)
    assert documented and file_sha256(path).startswith(documented.group(1)), "README names another file"
    assert f"{path.stat().st_size:,} bytes" in readme


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_student_matches_the_shared_data_it_names(path):
    ckpt = load_checkpoint(path)
    folder = SHARED / Path(ckpt.provenance["data_source"]).name
    if not folder.is_dir():
        pytest.skip(f"{folder} not beside the checkout")
    data = load_sessions(folder)
    assert ckpt.provenance["data_sha256"] == data.data_sha256
    assert ckpt.vocab == data.vocab.raw_ids
