"""Checkpoint round trip and every bad-input case: missing, truncated, tampered, malicious."""

import os
import pickle

import pytest
import torch

from odrec_export.checkpoint import Checkpoint, atomic_write, load_checkpoint, save_checkpoint
from odrec_export.errors import CheckpointError
from odrec_export.models.registry import build_model, model_from_checkpoint

CONFIG = {"encoder": {"num_items": 6, "dim": 8, "heads": 2, "layers": 1, "max_len": 5, "dropout": 0.1},
          "compressor": "none", "items": {}}


def make_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    return Checkpoint("teacher", CONFIG, [f"item{i}" for i in range(1, 7)], model.state_dict(),
                      {"data_sha256": "ab" * 32, "epochs_run": 1, "metrics": {"HR@10": 0.5}})


def test_round_trip(tmp_path):
    ckpt = make_checkpoint()
    path = tmp_path / "m.pt"
    sha = save_checkpoint(ckpt, path)
    assert len(sha) == 64
    loaded = load_checkpoint(path)
    assert loaded.config == CONFIG and loaded.vocab == ckpt.vocab and loaded.provenance == ckpt.provenance
    for k, v in ckpt.state_dict.items():
        assert torch.equal(v, loaded.state_dict[k])
    model = model_from_checkpoint(loaded)
    ids = torch.tensor([[0, 1, 2, 3, 4]])
    reference = build_model(CONFIG)
    reference.load_state_dict(ckpt.state_dict)
    assert torch.allclose(model.scores(ids), reference.eval().scores(ids))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_truncated_file(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(make_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid odrec-export checkpoint"):
        load_checkpoint(path)


def test_tampered_weights_fail_the_digest(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(make_checkpoint(), path)
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1e-3
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="digest mismatch"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Exploit.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": "odrec-export-checkpoint", "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="pickled objects other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()
    with open(path, "wb") as f:  # a bare pickle, not even a torch zip file
        pickle.dump(Exploit(), f)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_foreign_and_malformed_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="missing format marker"):
        load_checkpoint(path)
    path.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_weights_not_matching_config(tmp_path):
    ckpt = make_checkpoint()
    ckpt.config = {**CONFIG, "encoder": {**CONFIG["encoder"], "dim": 16}}
    save_checkpoint(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))


@pytest.mark.parametrize("config, message", [
    ({"compressor": "svd"}, "unknown compressor 'svd'"),
    ({"compressor": "stt", "items": {"rank": 5}}, "multiple of t"),
])
def test_unusable_config_is_a_checkpoint_error_naming_the_file(tmp_path, config, message):
    ckpt = make_checkpoint()
    ckpt.config = {**CONFIG, **config}
    save_checkpoint(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=f"m.pt: model config not usable: .*{message}"):
        model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"), str(tmp_path / "m.pt"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def failing(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
