"""Trained checkpoints loaded for a further run over some data: the teacher of a distillation, a
student to continue, a model to fit a repeat bonus to; each refused unless it fits that data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..checkpoint import Checkpoint, load_checkpoint
from ..compressors import UNCOMPRESSED
from ..data.sessions import SessionData, check_vocabulary
from ..errors import CheckpointError
from ..files import file_sha256
from ..models.recommender import SessionRecommender
from ..models.registry import model_from_checkpoint
from .repeat_fit import without_repeat_bonus


def checkpoint_for(path, data: SessionData, role: str, fits: Callable[[Checkpoint], bool]) -> Checkpoint:
    """The checkpoint at ``path``, refused unless it is a ``role`` (``fits``) over ``data``'s vocabulary.
    A repeat bonus is left out: it was fitted to the scores this training is about to change."""
    ckpt = without_repeat_bonus(load_checkpoint(path))
    if not fits(ckpt):
        raise CheckpointError(f"{path}: not a {role} checkpoint (kind {ckpt.kind!r}, "
                              f"compressor {ckpt.config.get('compressor')!r})")
    check_vocabulary(ckpt, data, path, role)
    return ckpt


def load_teacher(path, data: SessionData) -> tuple[SessionRecommender, dict]:
    """A teacher checkpoint for ``data``: the model and the provenance a student records about it."""
    ckpt = checkpoint_for(path, data, "teacher",
                          lambda c: c.kind == "teacher" and c.config.get("compressor", UNCOMPRESSED) == UNCOMPRESSED)
    info = teacher_provenance(ckpt)
    info.update({"checkpoint": str(path), "checkpoint_sha256": file_sha256(path),
                 "same_data_as_student": ckpt.provenance.get("data_sha256") == data.data_sha256})
    return model_from_checkpoint(ckpt, str(path)), info


@dataclass
class StudentStart:
    """A saved student to continue distilling: the model, its config and fitting report, and where it came from."""
    model: SessionRecommender
    config: dict
    fit_report: dict
    info: dict


def load_student(path, data: SessionData) -> StudentStart:
    """A student checkpoint for ``data``, to continue (e.g. a stopped or finished KD run)."""
    ckpt = checkpoint_for(path, data, "student", lambda c: c.kind == "student")
    prov = ckpt.provenance
    fit_report = prov.get("code_learning", prov.get("item_fit", {}))
    info = {"checkpoint": str(path), "checkpoint_sha256": file_sha256(path), "best_epoch": prov.get("best_epoch"),
            "complete": prov.get("complete"), "test_metrics": prov.get("test_metrics")}
    return StudentStart(model_from_checkpoint(ckpt, str(path)), ckpt.config, fit_report, info)


def teacher_provenance(ckpt: Checkpoint) -> dict:
    """What a student records about its teacher (never the teacher's weights)."""
    return {"checkpoint": None, "data_sha256": ckpt.provenance.get("data_sha256"), "config": ckpt.config,
            "best_epoch": ckpt.provenance.get("best_epoch"), "test_metrics": ckpt.provenance.get("test_metrics")}
