"""The whole jobs the commands run, as functions a Python caller uses the same way: ``train``,
``evaluate``, ``repeat_bonus`` and ``finetune`` take the command's options (grouped into the library's
config dataclasses: ``TrainConfig``, ``ClickLogProtocol``, an ``EncoderConfig``-like dict ...), report
through ``log`` and ``progress`` and write their result.

Imports stay inside the functions: the command line imports this module for its defaults, and
``--help`` or a mistyped option must not wait for torch.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from .compressors import UNCOMPRESSED

Log = Callable[[str], None]

FINETUNE_TRAINING = {"epochs": 1, "lr": 1e-4, "lr_schedule": "cosine", "patience": 1}
"""``finetune``'s training settings where they differ from ``TrainConfig``'s (a trained model: short, small steps)."""


def load_split_like(checkpoint, data, protocol=None):
    """``data`` split with ``protocol.valid_fraction`` when set, else as the checkpoint's own run split it."""
    from .data.sessions import load_like_checkpoint, load_sessions

    if protocol is not None and protocol.valid_fraction is not None:
        return load_sessions(data, protocol)
    return load_like_checkpoint(data, protocol, checkpoint.provenance)


def save_result(ckpt, out, log: Log = print) -> Optional[str]:
    """Write a finished run's checkpoint (None: a process other than rank 0 of a data-parallel run, which
    writes nothing) and report its test metrics; returns the file's sha256."""
    from .checkpoint import save_checkpoint
    from .metrics import format_table

    if ckpt is None:
        return None
    sha = save_checkpoint(ckpt, out)
    if "test_metrics" in ckpt.provenance:
        log("test metrics (best validation epoch):\n" + format_table(ckpt.provenance["test_metrics"]))
    log(f"wrote {out} (sha256 {sha[:16]}…)")
    return sha


def train(data, out, *, config=None, encoder: Optional[dict] = None, protocol=None, compressor: str = UNCOMPRESSED,
          teacher=None, init=None, item_options: Optional[dict] = None, kd: Optional[str] = None,
          distill: Optional[dict] = None, progress=None, log: Log = print):
    """Train the uncompressed teacher, or, with a ``compressor`` other than none or a ``teacher``
    checkpoint to distil from, a student (its teacher trained first when none is given); write the
    checkpoint to ``out``, also after every improving epoch so a stopped run keeps its best so far.

    ``config``: a ``TrainConfig``; ``encoder``: ``EncoderConfig`` fields but num_items; ``protocol``: a
    ``ClickLogProtocol``; ``init``: a checkpoint to continue (a teacher's, or with ``teacher`` a
    student's); ``item_options``: the compressor's options (``Compressor.options``; None: its defaults);
    ``kd``: the KD recipe (``distill.KD_RECIPES``; default: the compressor's); ``distill``:
    ``DistillConfig`` overrides (None values: the recipe's). Returns the final checkpoint (None on the
    processes other than rank 0 of a data-parallel run)."""
    from . import compressors
    from .checkpoint import save_checkpoint
    from .data.sessions import load_sessions
    from .errors import UsageError
    from .train.loop import TrainConfig, no_progress, resolve_device

    student = compressor != UNCOMPRESSED or teacher is not None
    if init is not None and student and teacher is None:
        raise UsageError("--init with a student compressor continues a student: give its --teacher too")
    config = config or TrainConfig()
    if config.epochs == 0 and not student:
        raise UsageError("--epochs 0 only makes sense for a student (a fitted, undistilled representation)")
    options = dict(item_options or {})
    compressors.get(compressor).items_config(options)  # option errors now, not after a teacher's training
    config = replace(config, device=resolve_device(config.device))
    sessions = load_sessions(data, protocol)
    log(f"data: {json.dumps(sessions.report)}")
    run = dict(progress=progress or no_progress, log=log, save=lambda c: save_checkpoint(c, out))
    if student:
        ckpt = train_student_on(sessions, config, compressor, teacher, encoder=encoder or {}, init=init,
                                options=options, kd=kd, distill=dict(distill or {}), **run)
    else:
        ckpt = train_teacher_on(sessions, config, encoder or {}, init, **run)
    save_result(ckpt, out, log)
    return ckpt


def train_teacher_on(sessions, config, encoder: dict, init, *, progress, log: Log, save):
    """``train``'s teacher on data already loaded and split (``fit`` splits once for every phase);
    ``init``: a teacher checkpoint to continue, or None."""
    from .train.loop import train_teacher

    start = None
    if init is not None:
        from .train.loading import load_teacher
        start = load_teacher(init, sessions)
    _, ckpt = train_teacher(sessions, encoder, config, progress=progress, log=log, save=save, init=start)
    return ckpt


def train_student_on(sessions, config, compressor: str, teacher, *, encoder: dict, init, options: dict, kd,
                     distill: dict, progress, log: Log, save):
    """``train``'s student on data already loaded and split: distilled from the ``teacher`` checkpoint
    (or, None, a teacher trained first), or continued from the student checkpoint ``init``."""
    from .errors import UsageError
    from .train.distill import distill_config, train_student
    from .train.loading import load_student, load_teacher, teacher_provenance
    from .train.loop import train_teacher

    if teacher is not None:
        teacher_model, teacher_info = load_teacher(teacher, sessions)
    else:
        log("no --teacher: training the teacher first")
        teacher_model, teacher_ckpt = train_teacher(sessions, encoder, config, progress=progress, log=log)
        teacher_info = teacher_provenance(teacher_ckpt) if teacher_ckpt is not None else {}
    start = None
    if init is not None:
        start = load_student(init, sessions)
        if compressor not in (UNCOMPRESSED, start.config["compressor"]):
            raise UsageError(f"--compressor {compressor}, but {init} is a {start.config['compressor']} student")
        compressor = start.config["compressor"]
        if distill.get("eta") is None:  # its run's mix-up is over: continue on the student's own vectors
            distill["eta"] = 0.0
    kd_cfg = distill_config(compressor, kd, **distill)
    _, ckpt = train_student(sessions, teacher_model, teacher_info, options, config, kd_cfg, compressor=compressor,
                            progress=progress, log=log, save=save, init=start)
    if ckpt is not None:
        log(f"item representation: {json.dumps(ckpt.provenance['item_bytes'])}")
    return ckpt


def evaluate(ckpt, data, *, protocol=None, device: str = "cpu", breakdown: bool = False, progress=None) -> dict:
    """HR/NDCG/MRR @5/10/20 of checkpoint ``ckpt`` over the full item set, on the test samples of
    ``data`` (split like the checkpoint's run unless ``protocol.valid_fraction`` is set); also
    ``skipped_unknown_items``, ``repeat_bonus`` and, with ``breakdown``, the metrics per group of samples."""
    import numpy as np

    from .checkpoint import load_checkpoint
    from .data.sessions import Vocabulary, remap_samples_or_fail
    from .metrics import metrics_from_ranks
    from .models.registry import model_from_checkpoint
    from .train.evaluate import breakdown as group_metrics
    from .train.evaluate import sample_ranks
    from .train.loop import resolve_device

    checkpoint = load_checkpoint(ckpt)
    model = model_from_checkpoint(checkpoint, str(ckpt)).to(resolve_device(device))
    sessions = load_split_like(checkpoint, data, protocol)
    samples, skipped = remap_samples_or_fail(sessions.test_samples, sessions.vocab, Vocabulary(checkpoint.vocab),
                                             where=data)
    max_len = model.encoder.cfg.max_len
    ranks = sample_ranks(model, samples, max_len=max_len, device=device, progress=progress)
    metrics = metrics_from_ranks(ranks)
    metrics["skipped_unknown_items"] = skipped
    metrics["repeat_bonus"] = model.repeat is not None
    if breakdown:  # training clicks indexed like the checkpoint's vocabulary (the remapped samples use it)
        clicks = sessions.item_counts()
        clicks = np.array([0] + [clicks[sessions.vocab.index(raw)] for raw in checkpoint.vocab])
        metrics["breakdown"] = group_metrics(ranks, samples, clicks, max_len=max_len)
    return metrics


def format_evaluation(metrics: dict) -> str:
    """``evaluate``'s metrics as a table, with notes on the repeat bonus, skipped samples and the groups."""
    from .metrics import format_table

    lines = [format_table(metrics)]
    if metrics.get("repeat_bonus"):
        lines.append("scores include the checkpoint's repeat bonus")
    if metrics.get("skipped_unknown_items"):
        lines.append(f"skipped {metrics['skipped_unknown_items']} samples with items unknown to the checkpoint")
    for row in metrics.get("breakdown", []):
        lines.append(f"{row['group']:<44} {100 * row['share']:5.1f}% of samples  HR@10 {100 * row['HR@10']:6.2f}"
                     f"  NDCG@10 {100 * row['NDCG@10']:6.2f}")
    return "\n".join(lines)


def baseline(data, *, protocol=None) -> dict:
    """HR/NDCG/MRR @5/10/20 of the last-items transition baseline (train/baseline.py) on the test samples
    of ``data``, counted on its training sessions (split by ``protocol``): what a model must beat."""
    from .data.sessions import load_sessions
    from .train.baseline import evaluate_baseline

    return evaluate_baseline(load_sessions(data, protocol))


def repeat_bonus(ckpt, data, out, *, metric: Optional[str] = None, protocol=None, log: Log = print) -> dict:
    """Fit a repeat bonus to checkpoint ``ckpt`` on the validation split of ``data`` it was trained with
    (``metric``: the one to maximise, default ``fit_repeat_bonus``'s) and write the result to ``out``
    (may be ``ckpt``); returns the fit's report."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .data.sessions import check_same_split
    from .models.registry import model_from_checkpoint
    from .train.loading import checkpoint_for
    from .train.repeat_fit import fit_repeat_bonus, with_repeat_bonus

    sessions = load_split_like(load_checkpoint(ckpt), data, protocol)
    checkpoint = checkpoint_for(ckpt, sessions, "trained model", lambda c: True)
    check_same_split(checkpoint, sessions, ckpt)
    model = model_from_checkpoint(checkpoint, str(ckpt))
    report = fit_repeat_bonus(model, sessions.valid_samples, **({} if metric is None else {"metric": metric}))
    digest = save_checkpoint(with_repeat_bonus(checkpoint, model, report), out)
    log(f"validation {report['metric']} {100 * report['before']:.2f} -> {100 * report['after']:.2f} "
        f"({report['samples']} samples, {100 * report['repeat_share']:.1f}% with the target already in the session)")
    log("weights by recency: " + ", ".join(f"{b['recency_from']}+: {b['weight']:.2f}" for b in report["buckets"]))
    log(f"wrote {out} (sha256 {digest[:16]}…)")
    return report


def finetune_config(**settings):
    """A ``TrainConfig`` with ``FINETUNE_TRAINING``'s defaults, then ``settings``."""
    from .train.loop import TrainConfig

    return TrainConfig(**{**FINETUNE_TRAINING, **settings})


def finetune(ckpt, data, out, *, objective: str = "new", config=None, protocol=None, progress=None,
             log: Log = print):
    """Continue checkpoint ``ckpt`` with cross-entropy alone (``finetune.OBJECTIVES``) on ``data`` split
    like its run, refit a repeat bonus it had, and write ``out`` (also after every improving epoch);
    ``config``: a ``TrainConfig`` (default ``finetune_config()``). Returns the checkpoint (None on the
    processes other than rank 0 of a data-parallel run)."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .errors import UsageError
    from .train.finetune import finetune as finetune_model
    from .train.finetune import load_for_finetune
    from .train.loop import no_progress, resolve_device

    if Path(out).resolve() == Path(ckpt).resolve():  # the run saves as it goes: a stopped run would lose it
        raise UsageError("--out must not be --ckpt: write the fine-tuned model to a new file")
    config = config or finetune_config()
    config = replace(config, device=resolve_device(config.device))
    sessions = load_split_like(load_checkpoint(ckpt), data, protocol)
    checkpoint = load_for_finetune(ckpt, sessions)
    result = finetune_model(checkpoint, sessions, config, objective=objective, source=str(ckpt),
                            progress=progress or no_progress, log=log, save=lambda c: save_checkpoint(c, out))
    save_result(result, out, log)
    return result


QUICK_BENCH = {"runs": 60, "warmup": 10, "memory_runs": 30}
"""``bench``'s settings with ``quick``: 60 runs, 10 warm-up, 30 inferences for memory."""


def bench(folders, *, compare: bool = False, runs: Optional[int] = None, warmup: Optional[int] = None,
          memory_runs: Optional[int] = None, quick: bool = False) -> dict:
    """Latency and memory of one artifact vs the same model with an fp32 N×d table (``report.bench``),
    or with ``compare`` of several artifacts against the first (``compare.compare``); a setting left
    None is theirs, ``quick`` replaces them with ``QUICK_BENCH``."""
    from .errors import UsageError

    settings = {k: v for k, v in {"runs": runs, "warmup": warmup, "memory_runs": memory_runs}.items()
                if v is not None}
    if quick:
        settings.update(QUICK_BENCH)
    if compare:
        from .report.compare import compare_artifacts

        return compare_artifacts(folders, **settings)
    if len(folders) != 1:
        raise UsageError(f"bench takes one artifact directory, got {len(folders)} "
                         "(use --compare DIR1 DIR2 ... to compare artifacts)")
    from .report.measure import bench as run_bench

    return run_bench(folders[0], **settings)


def format_bench(r: dict, *, compare: bool = False) -> str:
    """``bench``'s result as text."""
    if compare:
        from .report.compare import format_artifact_comparison

        return format_artifact_comparison(r)
    from .report.measure import format_bench as format_single

    return format_single(r)


def format_build(manifest: dict) -> str:
    """What ``export.build`` wrote (a line a file) and, when it evaluated the artifact, the metrics."""
    from .metrics import format_table

    lines = [f"{name:<12} {info['bytes']:>12,} bytes  sha256 {info['sha256'][:16]}…"
             for name, info in manifest["files"].items()]
    ev = manifest.get("evaluation")
    if ev:
        ks = [k for k in (5, 10, 20) if f"HR@{k}" in ev["metrics"]]
        lines.append(f"artifact ({manifest['quantisation']['scheme']}) through onnxruntime:\n"
                     + format_table(ev["metrics"], ks))
        if "quantised_minus_fp32_points" in ev:
            d = ev["quantised_minus_fp32_points"]
            lines.append(f"quantised - fp32: HR@10 {d.get('HR@10', 0):+.2f} NDCG@10 {d.get('NDCG@10', 0):+.2f} points")
    return "\n".join(lines)
