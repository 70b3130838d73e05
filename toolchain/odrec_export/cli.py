"""The ``odrec-export`` command line: each command parses options and calls one library function."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import OdrecError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, compress and export compact session-based recommenders for phones.")


def choice(option: str, *values: str) -> dict:
    """Option settings for a fixed set of values: listed in --help, and a typo is a one-line error
    while the command line is parsed, before anything heavy loads."""
    def check(value):
        if value is not None and value not in values:
            raise typer.BadParameter(f"unknown {option.lstrip('-')} '{value}' for {option} "
                                     f"(choose from {', '.join(values)})")
        return value
    return {"callback": check, "metavar": "[" + "|".join(values) + "]"}


def existing(option: str, kind: str = "file") -> dict:
    """Option settings for an input path: a missing one, or a folder where a file belongs (and the
    reverse), is a one-line usage error (exit 2) while the command line is parsed."""
    def check(value):
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path is None:
                continue
            if not path.exists():
                what = "artifact directory" if option == "artifact" else "directory" if kind == "dir" else kind
                raise typer.BadParameter(f"{'' if option == 'artifact' else option + ' '}{path}: no such {what}")
            if kind == "checkpoint file" and path.is_dir():
                raise typer.BadParameter(f"{option} {path}: is a directory, not a checkpoint file")
            if kind == "dir" and not path.is_dir():
                raise typer.BadParameter(f"{option} {path}: not a directory")
        return value
    return {"callback": check}


CKPT = "checkpoint file"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"odrec-export {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", metavar="", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Train, compress and export compact session-based recommenders for phones."""


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line_errors(fn):
    """Report toolchain errors (and unreadable files) as one line with a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OdrecError as e:
            _fail(str(e), e.exit_code)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            _fail(f"{e.filename}: {e.strerror}", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def _rich_progress(it, total: int, label: str):
    if not sys.stderr.isatty():  # a log file gets a line every 10% instead of a bar
        yield from _logged_progress(it, total, label)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for x in it:
            yield x
            bar.advance(task)


def _logged_progress(it, total: int, label: str):
    import time

    start, step = time.time(), max(total // 10, 1)
    for n, x in enumerate(it, 1):
        yield x
        if n % step == 0 and n < total:
            typer.echo(f"  {label}: {n}/{total} batches, {time.time() - start:.0f}s", err=True)


def _relaunched(nproc: int, device: str) -> bool:
    """With --nproc N > 1 (and not already under torchrun): run this command in N processes, True.
    Under torchrun: join its process group; the processes other than rank 0 print nothing."""
    from . import parallel

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        code = parallel.launch(nproc, parallel.without_nproc(sys.argv[1:]))
        if code:
            raise typer.Exit(code)
        return True
    if not parallel.init(device).main:  # rank 0 logs, evaluates and writes; the others train silently
        sys.stdout = open(os.devnull, "w")
    return False


def _protocol(delimiter, session_col, item_col, time_col, date_col, test_days, valid_fraction):
    """The data protocol; ``valid_fraction`` None stays None (``_split_like`` then takes the checkpoint's)."""
    from .data import ClickLogProtocol

    return ClickLogProtocol(delimiter=delimiter, session_col=session_col, item_col=item_col,
                            time_col=time_col, date_col=date_col, test_days=test_days,
                            valid_fraction=valid_fraction)


def _split_like(checkpoint, data: Path, protocol):
    """--data split with --valid-fraction when given, else as the checkpoint's own run split it."""
    from .data import load_like_checkpoint, load_sessions

    if protocol.valid_fraction is not None:
        return load_sessions(data, protocol)
    return load_like_checkpoint(data, protocol, checkpoint.provenance)


DataOpt = typer.Option(..., "--data", **existing("--data", "file or directory"), help="Preprocessed folder (train_sessions.txt, test_samples.txt) or raw click-log CSV.")
DelimiterOpt = typer.Option(None, help="CSV delimiter (default: sniffed from the header).")
SessionColOpt = typer.Option(None, help="Session id column (default: session_id, sessionId, ...).")
ItemColOpt = typer.Option(None, help="Item id column (default: item_id, itemId, ...).")
TimeColOpt = typer.Option(None, help="Column ordering clicks in a session (default: timeframe, timestamp, ...).")
DateColOpt = typer.Option(None, help="Column dating a session for the time split (default: eventdate/date if present).")
TestDaysOpt = typer.Option(7, help="Raw logs: sessions of the last N days form the test set.")
ValidOpt = typer.Option(0.1, help="Fraction of training sessions (the latest) held out for model selection.")
SplitOpt = typer.Option(None, "--valid-fraction", help="Fraction of training sessions (the latest) held out for "
                        "validation (default: the split the checkpoint was selected on).")
LossOpt = typer.Option("full", "--loss", **choice("--loss", "full", "sampled"), help="full: softmax over all items (exact, O(N) a step); sampled: over the "
                       "target and --negatives items shared by the batch, drawn by click frequency with the log-Q "
                       "correction (a step costs what it touches; see docs/training.md).")
NegativesOpt = typer.Option(1024, "--negatives", min=1, help="--loss sampled: negatives per step, shared by the batch.")
InBatchOpt = typer.Option(False, "--in-batch/--no-in-batch", metavar="", help="--loss sampled: the batch's targets are "
                          "negatives too, besides the drawn ones.")
NprocOpt = typer.Option(1, "--nproc", min=1, help="Train in N processes on this machine (torchrun + "
                        "DistributedDataParallel; --batch-size stays the global batch). Several machines: the "
                        "torchrun command in the README.")
BucketsOpt = typer.Option(0, "--length-buckets", min=0, help="Sort the prefixes of every N batches by length before "
                          "cutting batches (less padding: a 3-5x cheaper encoder on Tmall); 0: plain shuffled batches.")

# --help groups these shared options under their own headings
LossOpt.rich_help_panel = "Scale"
NegativesOpt.rich_help_panel = "Scale"
BucketsOpt.rich_help_panel = "Scale"
InBatchOpt.rich_help_panel = "Scale"
NprocOpt.rich_help_panel = "Scale"
DataOpt.rich_help_panel = "Data"
DelimiterOpt.rich_help_panel = "Data"
SessionColOpt.rich_help_panel = "Data"
ItemColOpt.rich_help_panel = "Data"
TimeColOpt.rich_help_panel = "Data"
DateColOpt.rich_help_panel = "Data"
TestDaysOpt.rich_help_panel = "Data"
ValidOpt.rich_help_panel = "Data"
SplitOpt.rich_help_panel = "Data"


@app.command()
@one_line_errors
def train(
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (atomically)."),
    epochs: int = typer.Option(10, rich_help_panel="Training", min=0, help="Maximum epochs (early stopping on validation HR@10); a student "
                               "with 0 is its fitted item representation + the teacher's encoder, undistilled."),
    device: str = typer.Option("cpu", rich_help_panel="Training", **choice("--device", "cpu", "cuda"), help="Where to train."),
    seed: int = typer.Option(0, rich_help_panel="Training", help="Random seed."),
    batch_size: int = typer.Option(128, rich_help_panel="Training", min=1),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", rich_help_panel="Training", min=1, help="Batches per epoch (a random "
                                              "subset; default: all): short runs on big data."),
    lr: float = typer.Option(1e-3, rich_help_panel="Training"),
    lr_schedule: str = typer.Option("constant", "--lr-schedule", rich_help_panel="Training", **choice("--lr-schedule", "constant", "cosine"),
                                    help="constant, or cosine: the learning rate "
                                    "falls to 0 over the planned epochs × batches."),
    patience: int = typer.Option(2, rich_help_panel="Training", min=1, help="Epochs without validation gain before stopping."),
    dim: int = typer.Option(128, rich_help_panel="Model", min=8, help="Embedding dimension d."),
    heads: int = typer.Option(1, rich_help_panel="Model", min=1),
    layers: int = typer.Option(1, rich_help_panel="Model", min=1),
    max_len: int = typer.Option(50, rich_help_panel="Model", min=1, help="Maximum session length seen by the encoder."),
    dropout: float = typer.Option(0.5, rich_help_panel="Model", min=0.0, max=0.95),
    share: str = typer.Option("none", rich_help_panel="Model", **choice("--share", "none", "cross-block", "adjacent-block",
                                                      "adjacent-layer", "cross-layer"), help="Encoder weight sharing across blocks (CpRec): none, cross-block, "
                              "adjacent-block, adjacent-layer, cross-layer."),
    compressor: str = typer.Option("none", rich_help_panel="Student (--compressor / --teacher)", **choice("--compressor", "none", "codes", "tt", "stt", "cprec"), help="none: the teacher (with --teacher: an uncompressed student); "
                                   "codes: compositional codes (EODRec); stt: semi-tensor train (OD-Rec); "
                                   "tt: tensor train (TT-Rec); cprec: CpRec blocks + adaptive softmax."),
    teacher: Optional[Path] = typer.Option(None, rich_help_panel="Student (--compressor / --teacher)", **existing("--teacher", CKPT), help="Students: distil from this teacher checkpoint "
                                           "(default: train a teacher first)."),
    m: int = typer.Option(8, rich_help_panel="Student (--compressor / --teacher)", min=1, help="codes: number of codebooks M (8 x 64: about 35x fewer bytes than the "
                          "fp32 table; see docs/compressors.md for why)."),
    k: int = typer.Option(64, rich_help_panel="Student (--compressor / --teacher)", min=2, max=65536, help="codes: codewords per codebook K."),
    rank: Optional[int] = typer.Option(None, rich_help_panel="Student (--compressor / --teacher)", min=1, help="tt/stt: TT-rank R (default: about 30x compression)."),
    blocks: Optional[str] = typer.Option(None, rich_help_panel="Student (--compressor / --teacher)", help="cprec: frequency block sizes, e.g. 500,2000 (the last block "
                                         "takes the rest; default: about 30x compression)."),
    rho: int = typer.Option(4, rich_help_panel="Student (--compressor / --teacher)", min=2, help="cprec: block i has dimension d/rho^i."),
    kd: Optional[str] = typer.Option(None, rich_help_panel="Student (--compressor / --teacher)", **choice("--kd", "eodrec", "odrec"), help="Students: KD recipe, eodrec (bidirectional, mix-up; default for "
                                     "codes) or odrec (frozen teacher, predictive task; default for the others)."),
    beta: float = typer.Option(0.01, rich_help_panel="Student (--compressor / --teacher)", min=0.0, help="Students: weight of the contrastive loss."),
    gamma: float = typer.Option(0.3, rich_help_panel="Student (--compressor / --teacher)", min=0.0, help="Students: weight of the soft-target KL."),
    mse: float = typer.Option(1.0, rich_help_panel="Student (--compressor / --teacher)", min=0.0, help="Students: weight of matching the teacher's item vectors "
                              "(relative MSE; the paper's 1)."),
    eta: Optional[float] = typer.Option(None, rich_help_panel="Student (--compressor / --teacher)", min=0.0, max=1.0, help="Students: initial mix-up share of teacher "
                                        "vectors (recipe default: eodrec 0.7, odrec 0; 0 with --init)."),
    eta_decay: float = typer.Option(0.5, "--eta-decay", rich_help_panel="Student (--compressor / --teacher)", min=0.0, max=1.0, help="Students: share of the training "
                                    "steps over which the mix-up share falls to 0 (then codes only)."),
    bidirectional: Optional[bool] = typer.Option(None, "--bidirectional/--no-bidirectional", metavar="", rich_help_panel="Student (--compressor / --teacher)",
                                                 help="Students: also update the teacher from the student "
                                                 "(recipe default: eodrec yes, odrec no)."),
    predictive: Optional[float] = typer.Option(None, rich_help_panel="Student (--compressor / --teacher)", min=0.0, help="Students: weight of OD-Rec's predictive task "
                                               "(recipe default: eodrec 0, odrec 0.5)."),
    teacher_lr: Optional[float] = typer.Option(None, "--teacher-lr", rich_help_panel="Student (--compressor / --teacher)", min=0.0, help="Students, bidirectional: the "
                                               "teacher's learning rate (default: --lr; 0 keeps it fixed)."),
    code_steps: int = typer.Option(300, rich_help_panel="Student (--compressor / --teacher)", min=1, help="codes: code-learning steps (full item table each)."),
    loss: str = LossOpt, negatives: int = NegativesOpt, length_buckets: int = BucketsOpt, in_batch: bool = InBatchOpt,
    nproc: int = NprocOpt,
    init: Optional[Path] = typer.Option(None, "--init", rich_help_panel="Student (--compressor / --teacher)", **existing("--init", CKPT), help="Continue a stopped or finished run from its "
                                        "checkpoint: a teacher's (no --teacher), or, with --teacher, a student's "
                                        "(no code learning; its compressor is kept). --dim, --m etc. are ignored."),
    delimiter: Optional[str] = DelimiterOpt, session_col: Optional[str] = SessionColOpt,
    item_col: Optional[str] = ItemColOpt, time_col: Optional[str] = TimeColOpt,
    date_col: Optional[str] = DateColOpt, test_days: int = TestDaysOpt, valid_fraction: float = ValidOpt,
):
    """Train the uncompressed SASRec teacher (or, with --compressor codes, a student) and write a checkpoint."""
    if _relaunched(nproc, device):
        return
    from .checkpoint import save_checkpoint
    from .data import load_sessions
    from .errors import UsageError
    from .metrics import format_table
    from .train import TrainConfig, resolve_device, train_teacher

    student = compressor != "none" or teacher is not None
    if init is not None and student and teacher is None:
        raise UsageError("--init with a student compressor continues a student: give its --teacher too")
    if epochs == 0 and not student:
        raise UsageError("--epochs 0 only makes sense for a student (a fitted, undistilled representation)")
    items_config = _items_config(compressor, m, k, rank, blocks, rho)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
                      device=resolve_device(device), max_batches=max_batches, lr_schedule=lr_schedule,
                      loss=loss, negatives=negatives, length_buckets=length_buckets, in_batch=in_batch)
    sessions = load_sessions(data, _protocol(delimiter, session_col, item_col, time_col, date_col,
                                             test_days, valid_fraction))
    typer.echo(f"data: {json.dumps(sessions.report)}")
    enc = {"dim": dim, "heads": heads, "layers": layers, "max_len": max_len, "dropout": dropout, "share": share}

    def save_best_so_far(c) -> None:  # after every improving epoch (teacher or student): a long run can be stopped
        save_checkpoint(c, out)

    if not student:
        start = None
        if init is not None:
            from .loading import load_teacher
            start = load_teacher(init, sessions)
        _, ckpt = train_teacher(sessions, enc, cfg, progress=_rich_progress, log=typer.echo,
                                save=save_best_so_far, init=start)
    else:
        from .code_learning import CodeLearningConfig
        from .distill import distill_config, train_student
        from .loading import load_student, load_teacher, teacher_provenance

        if teacher is not None:
            teacher_model, teacher_info = load_teacher(teacher, sessions)
        else:
            typer.echo("no --teacher: training the teacher first")
            teacher_model, teacher_ckpt = train_teacher(sessions, enc, cfg, progress=_rich_progress, log=typer.echo)
            teacher_info = teacher_provenance(teacher_ckpt) if teacher_ckpt is not None else {}
        start = None
        if init is not None:
            start = load_student(init, sessions)
            if compressor not in ("none", start.config["compressor"]):
                raise UsageError(f"--compressor {compressor}, but {init} is a {start.config['compressor']} student")
            compressor = start.config["compressor"]
            eta = 0.0 if eta is None else eta  # its run's mix-up is over: continue on the student's own vectors
        code_cfg = CodeLearningConfig(m=m, k=k, steps=code_steps, seed=seed, device=cfg.device)
        kd_cfg = distill_config(compressor, kd, beta=beta, gamma=gamma, mse=mse, eta=eta, eta_decay=eta_decay,
                                bidirectional=bidirectional, predictive=predictive, teacher_lr=teacher_lr)
        _, ckpt = train_student(sessions, teacher_model, teacher_info, code_cfg, cfg, kd_cfg, compressor=compressor,
                                items_config=items_config, progress=_rich_progress, log=typer.echo,
                                save=save_best_so_far, init=start)
        typer.echo(f"item representation: {json.dumps(ckpt.provenance['item_bytes'])}")
    if ckpt is None:  # a process other than rank 0 of a data-parallel run: rank 0 writes
        return
    sha = save_checkpoint(ckpt, out)
    if "test_metrics" in ckpt.provenance:
        typer.echo("test metrics (best validation epoch):\n" + format_table(ckpt.provenance["test_metrics"]))
    typer.echo(f"wrote {out} (sha256 {sha[:16]}…)")


def _items_config(compressor: str, m: int, k: int, rank: int | None, blocks: str | None, rho: int) -> dict:
    """The student's ``config["items"]`` from the CLI options of its compressor."""
    from .errors import UsageError

    if compressor == "codes":
        return {"m": m, "k": k}
    if compressor in ("tt", "stt"):
        return {} if rank is None else {"rank": rank}
    if compressor == "cprec":
        config: dict = {"rho": rho}
        if blocks is not None:
            try:
                config["blocks"] = [int(b) for b in blocks.split(",") if b.strip()]
            except ValueError:
                raise UsageError(f"--blocks must be comma-separated block sizes, got {blocks!r}") from None
            if not config["blocks"] or min(config["blocks"]) < 1:
                raise UsageError(f"--blocks must be positive sizes, got {blocks!r}")
        return config
    return {}


@app.command("eval")
@one_line_errors
def eval_cmd(
    ckpt: Path = typer.Option(..., "--ckpt", **existing("--ckpt", CKPT), help="Checkpoint to evaluate."),
    data: Path = DataOpt,
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print one JSON object (fractions)."),
    by_group: bool = typer.Option(False, "--breakdown", metavar="", help="Also per group of samples: by the target's clicks "
                                  "in the training sessions, and by whether it is already in the session."),
    device: str = typer.Option("cpu", **choice("--device", "cpu", "cuda"), help="Where to train."),
    delimiter: Optional[str] = DelimiterOpt, session_col: Optional[str] = SessionColOpt,
    item_col: Optional[str] = ItemColOpt, time_col: Optional[str] = TimeColOpt,
    date_col: Optional[str] = DateColOpt, test_days: int = TestDaysOpt, valid_fraction: Optional[float] = SplitOpt,
):
    """Evaluate a checkpoint on the test samples of --data (HR/NDCG/MRR @5/10/20, full item set)."""
    import numpy as np

    from .checkpoint import load_checkpoint
    from .data import Vocabulary, remap_samples_or_fail
    from .evaluate import breakdown, sample_ranks
    from .metrics import format_table, metrics_from_ranks
    from .models.registry import model_from_checkpoint
    from .train import resolve_device

    checkpoint = load_checkpoint(ckpt)
    model = model_from_checkpoint(checkpoint, str(ckpt)).to(resolve_device(device))
    sessions = _split_like(checkpoint, data, _protocol(delimiter, session_col, item_col, time_col, date_col,
                                                       test_days, valid_fraction))
    samples, skipped = remap_samples_or_fail(sessions.test_samples, sessions.vocab, Vocabulary(checkpoint.vocab),
                                             where=data)
    max_len = model.encoder.cfg.max_len
    ranks = sample_ranks(model, samples, max_len=max_len, device=device, progress=_rich_progress)
    metrics = metrics_from_ranks(ranks)
    metrics["skipped_unknown_items"] = skipped
    metrics["repeat_bonus"] = model.repeat is not None
    if by_group:  # training clicks indexed like the checkpoint's vocabulary (the remapped samples use it)
        clicks = sessions.item_counts()
        clicks = np.array([0] + [clicks[sessions.vocab.index(raw)] for raw in checkpoint.vocab])
        metrics["breakdown"] = breakdown(ranks, samples, clicks, max_len=max_len)
    if as_json:
        typer.echo(json.dumps(metrics, sort_keys=True))
        return
    typer.echo(format_table(metrics))
    if model.repeat is not None:
        typer.echo("scores include the checkpoint's repeat bonus")
    if skipped:
        typer.echo(f"skipped {skipped} samples with items unknown to the checkpoint")
    for row in metrics.get("breakdown", []):
        typer.echo(f"{row['group']:<44} {100 * row['share']:5.1f}% of samples  HR@10 {100 * row['HR@10']:6.2f}"
                   f"  NDCG@10 {100 * row['NDCG@10']:6.2f}")


@app.command("repeat-bonus")
@one_line_errors
def repeat_bonus_cmd(
    ckpt: Path = typer.Option(..., "--ckpt", **existing("--ckpt", CKPT), help="Trained checkpoint (teacher or student)."),
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", help="Checkpoint to write: --ckpt with the bonus (may be --ckpt itself)."),
    metric: str = typer.Option("NDCG@10", **choice("--metric", "NDCG@10", "HR@10"), help="Validation metric the weights maximise: NDCG@10 or HR@10."),
    delimiter: Optional[str] = DelimiterOpt, session_col: Optional[str] = SessionColOpt,
    item_col: Optional[str] = ItemColOpt, time_col: Optional[str] = TimeColOpt,
    date_col: Optional[str] = DateColOpt, test_days: int = TestDaysOpt, valid_fraction: Optional[float] = SplitOpt,
):
    """Fit a repeat bonus (a score added to items already in the session, by how recently they
    occurred) on the validation split the checkpoint was trained with; the rest of the model is unchanged."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .data import check_same_split
    from .loading import checkpoint_for
    from .models.registry import model_from_checkpoint
    from .repeat_fit import fit_repeat_bonus, with_repeat_bonus

    sessions = _split_like(load_checkpoint(ckpt), data, _protocol(delimiter, session_col, item_col, time_col,
                                                                  date_col, test_days, valid_fraction))
    checkpoint = checkpoint_for(ckpt, sessions, "trained model", lambda c: True)
    check_same_split(checkpoint, sessions, ckpt)
    model = model_from_checkpoint(checkpoint, str(ckpt))
    report = fit_repeat_bonus(model, sessions.valid_samples, metric=metric)
    digest = save_checkpoint(with_repeat_bonus(checkpoint, model, report), out)
    typer.echo(f"validation {metric} {100 * report['before']:.2f} -> {100 * report['after']:.2f} "
               f"({report['samples']} samples, {100 * report['repeat_share']:.1f}% with the target already in the session)")
    typer.echo("weights by recency: " + ", ".join(f"{b['recency_from']}+: {b['weight']:.2f}" for b in report["buckets"]))
    typer.echo(f"wrote {out} (sha256 {digest[:16]}…)")


@app.command()
@one_line_errors
def finetune(
    ckpt: Path = typer.Option(..., "--ckpt", **existing("--ckpt", CKPT),
                              help="Trained checkpoint (teacher or student) to continue."),
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (atomically)."),
    objective: str = typer.Option("new", **choice("--objective", "new", "all"), help="new: only targets new to the session, the session's items left "
                                  "out of the softmax (a repeat bonus ranks those); all: plain cross-entropy."),
    epochs: int = typer.Option(1, min=1, help="Maximum epochs (the best validation HR@10 is kept)."),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", min=1, help="Batches per epoch (a random "
                                              "subset; default: all)."),
    lr: float = typer.Option(1e-4, help="Learning rate (a trained model: keep it small)."),
    lr_schedule: str = typer.Option("cosine", "--lr-schedule", **choice("--lr-schedule", "constant", "cosine"),
                                    help="How the learning rate moves over the run."),
    batch_size: int = typer.Option(128, min=1),
    patience: int = typer.Option(1, min=1, help="Epochs without validation gain before stopping."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("cpu", **choice("--device", "cpu", "cuda"), help="Where to train."),
    loss: str = LossOpt, negatives: int = NegativesOpt, length_buckets: int = BucketsOpt, in_batch: bool = InBatchOpt,
    nproc: int = NprocOpt,
    delimiter: Optional[str] = DelimiterOpt, session_col: Optional[str] = SessionColOpt,
    item_col: Optional[str] = ItemColOpt, time_col: Optional[str] = TimeColOpt,
    date_col: Optional[str] = DateColOpt, test_days: int = TestDaysOpt, valid_fraction: Optional[float] = SplitOpt,
):
    """Continue a trained model with cross-entropy alone (no teacher needed); a repeat bonus it had is
    fitted again afterwards on the validation split."""
    if _relaunched(nproc, device):
        return
    from .checkpoint import save_checkpoint
    from .errors import UsageError
    from .finetune import finetune as finetune_model, load_for_finetune
    from .metrics import format_table
    from .train import TrainConfig, resolve_device

    if out.resolve() == ckpt.resolve():  # the run saves as it goes: a stopped run would lose the original
        raise UsageError("--out must not be --ckpt: write the fine-tuned model to a new file")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
                      device=resolve_device(device), max_batches=max_batches, lr_schedule=lr_schedule,
                      loss=loss, negatives=negatives, length_buckets=length_buckets, in_batch=in_batch)
    from .checkpoint import load_checkpoint

    sessions = _split_like(load_checkpoint(ckpt), data, _protocol(delimiter, session_col, item_col, time_col,
                                                                  date_col, test_days, valid_fraction))
    checkpoint = load_for_finetune(ckpt, sessions)
    result = finetune_model(checkpoint, sessions, cfg, objective=objective, source=str(ckpt),
                            progress=_rich_progress, log=typer.echo, save=lambda c: save_checkpoint(c, out))
    if result is None:  # a process other than rank 0 of a data-parallel run: rank 0 writes
        return
    sha = save_checkpoint(result, out)
    if "test_metrics" in result.provenance:
        typer.echo("test metrics (best validation epoch):\n" + format_table(result.provenance["test_metrics"]))
    typer.echo(f"wrote {out} (sha256 {sha[:16]}…)")


@app.command()
@one_line_errors
def verify(
    folder: Path = typer.Argument(..., **existing("artifact", "dir"), help="Artifact directory written by build."),
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", **existing("--ckpt", CKPT), help="Checkpoint for the PyTorch reference "
                                        "(default: the one the manifest names, when reachable)."),
    data: Optional[Path] = typer.Option(None, "--data", **existing("--data", "file or directory"), help="Real sessions (folder or click log); "
                                        "default: sessions sampled from the artifact's items."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print one JSON object, a field per check and platform."),
    arm: bool = typer.Option(True, "--arm/--no-arm", metavar="", help="Also run onnxruntime aarch64 under qemu."),
    arm_cache: Optional[Path] = typer.Option(None, "--arm-cache", help="ARM64 runtime cache dir "
                                             "(default: ~/.cache/odrec-export/arm64-ort-<ort>-<numpy>)."),
    arm_cpu: Optional[list[str]] = typer.Option(None, "--arm-cpu", help="ARM CPU model, repeatable "
                                                "(default: cortex-a72 and neoverse-n1)."),
    sessions: int = typer.Option(200, min=1, help="How many real (or sampled) sessions to compare."),
    record: Optional[Path] = typer.Option(None, "--record", help="Also write the report as JSON to this file."),
):
    """Check an artifact: integrity, PyTorch reference parity, and parity on ARM64 (exit 0/1/2)."""
    from .arm_runtime import CPU_MODELS
    from .errors import UsageError
    from .verify import verify as run_verify

    unknown = [c for c in arm_cpu or [] if c not in CPU_MODELS]
    if unknown:
        raise UsageError(f"unknown --arm-cpu '{unknown[0]}' (known: {', '.join(CPU_MODELS)})")
    log = (lambda msg: typer.echo(msg, err=True))
    report = run_verify(folder, ckpt=ckpt, data=data, arm=arm, arm_cache=arm_cache, arm_cpus=arm_cpu,
                        sessions=sessions, log=log)
    typer.echo(json.dumps(report.to_json(), sort_keys=True) if as_json else report.table())
    if record is not None:
        record.write_text(json.dumps(report.to_json(), sort_keys=True, indent=1) + "\n")
    raise typer.Exit(report.exit_code)


@app.command("summary")
@one_line_errors
def summary_cmd(
    folder: Path = typer.Argument(..., **existing("artifact", "dir"), help="Artifact directory written by build."),
    verify_record: Optional[Path] = typer.Option(None, "--verify", help="The JSON that verify --record wrote."),
):
    """A few lines on a built artifact: bytes and ratio, accuracy, the verify verdict, how to install it."""
    from .summary import summary

    typer.echo(summary(folder, verify_record))


@app.command()
@one_line_errors
def build(
    ckpt: Path = typer.Option(..., "--ckpt", **existing("--ckpt", CKPT),
                              help="Student (codes, tt, stt, cprec) or teacher (none) checkpoint."),
    out: Path = typer.Option(..., "--out", help="Artifact directory to write (atomically)."),
    quant: str = typer.Option("int8", **choice("--quant", "int8", "fp32"), help="Codebook quantisation: int8 "
                              "(per-row scale) or fp32 (int4 is refused: plain 4-bit rounding loses too much)."),
    encoder_quant: str = typer.Option("fp16", "--encoder-quant", **choice("--encoder-quant", "fp32", "fp16", "int8"), help="Encoder MatMul weights: fp16 (default: half the bytes, fp32 arithmetic, verify holds it to fp32's tolerance), fp32, or int8 (per-column scale; onnxruntime's MatMulNBits fusion then also quantises activations)."),
    top_k: int = typer.Option(20, "--top-k", help="How many items the graph returns."),
    ort_format: bool = typer.Option(False, "--ort", metavar="", help="Also write model.ort (onnxruntime mobile format)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", metavar="", help="Run onnxsim (kept only when it does not grow the file)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", **existing("--eval-data", "file or directory"), help="Evaluate the built graph on this data's test samples."),
    force: bool = typer.Option(False, "--force", metavar="", help="Replace a non-empty --out directory."),
    expand_top: Optional[int] = typer.Option(None, "--expand-top", help="cprec: expand only the tail blocks whose "
                                             "cluster is in the head's top-k (CpRec's fast, approximate output)."),
    popular_from: Optional[Path] = typer.Option(None, "--popular-from", **existing("--popular-from", "file or directory"),
                                                help="Count the popular items a session with no known item gets in this "
                                                "data's training sessions (for checkpoints that do not record them)."),
    id_map: str = typer.Option("auto", "--id-map", **choice("--id-map", "auto", "binary", "text"), help="Item ids: binary (items.bin, 1-3 bytes an id; integer ids "
                               "only), text (items.txt, any ids) or auto (binary when every id is an integer)."),
):
    """Freeze a checkpoint into an ONNX artifact: model.onnx, items.bin or items.txt, manifest.json [, model.ort]."""
    from .export import BuildOptions, build as run_build
    from .metrics import format_table

    opts = BuildOptions(quant=quant, top_k=top_k, ort=ort_format, simplify=simplify, encoder_quant=encoder_quant,
                        expand_top=expand_top, id_map=id_map, popular_from=popular_from)
    manifest = run_build(ckpt, out, opts, force=force, eval_data=eval_data, log=typer.echo, progress=_rich_progress)
    for name, info in manifest["files"].items():
        typer.echo(f"{name:<12} {info['bytes']:>12,} bytes  sha256 {info['sha256'][:16]}…")
    ev = manifest.get("evaluation")
    if ev:
        ks = [k for k in (5, 10, 20) if f"HR@{k}" in ev["metrics"]]
        typer.echo(f"artifact ({manifest['quantisation']['scheme']}) through onnxruntime:\n" + format_table(ev["metrics"], ks))
        if "quantised_minus_fp32_points" in ev:
            d = ev["quantised_minus_fp32_points"]
            typer.echo(f"quantised - fp32: HR@10 {d.get('HR@10', 0):+.2f} NDCG@10 {d.get('NDCG@10', 0):+.2f} points")
    typer.echo(f"wrote {out}")


@app.command("size-report")
@one_line_errors
def size_report_cmd(
    folder: Path = typer.Argument(..., **existing("artifact", "dir"), help="Artifact directory written by build."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print one JSON object."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", **existing("--baseline", CKPT), help="Build the fp32-table baseline from this checkpoint "
                                            "(default: computed from the artifact's own sizes)."),
):
    """Bytes per part, compression ratios vs an fp32 N×d item table, resident memory after loading."""
    from .report import format_size_report, size_report

    r = size_report(folder, baseline_ckpt=baseline)
    typer.echo(json.dumps(r, sort_keys=True) if as_json else format_size_report(r))


@app.command()
@one_line_errors
def bench(
    folders: list[Path] = typer.Argument(..., **existing("artifact", "dir"), help="Artifact directory written by build; with --compare, two or "
                                         "more (ratios are against the first).", metavar="DIR"),
    compare: bool = typer.Option(False, "--compare", metavar="", help="Compare the artifacts side by side instead (bytes, "
                                 "item representation, recorded HR/NDCG@10, latency, memory; interleaved runs)."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print one JSON object."),
    runs: int = typer.Option(300, min=5, help="Timed runs per model and setting (after warm-up)."),
    warmup: int = typer.Option(30, min=1, help="Untimed runs first."),
    quick: bool = typer.Option(False, "--quick", metavar="", help="60 runs, 10 warm-up, 30 inferences for memory."),
):
    """Latency and memory of the artifact vs the same model with an fp32 N×d table (onnxruntime CPU);
    with --compare, of several artifacts against the first."""
    from .errors import UsageError

    memory_runs = 30 if quick else 100
    if quick:
        runs, warmup = 60, 10
    if compare:
        from .compare import compare_artifacts, format_artifact_comparison

        r = compare_artifacts(folders, runs=runs, warmup=warmup, memory_runs=memory_runs)
        typer.echo(json.dumps(r, sort_keys=True) if as_json else format_artifact_comparison(r))
        return
    if len(folders) != 1:
        raise UsageError(f"bench takes one artifact directory, got {len(folders)} "
                         "(use --compare DIR1 DIR2 ... to compare artifacts)")
    from .report import bench as run_bench, format_bench

    r = run_bench(folders[0], runs=runs, warmup=warmup, memory_runs=memory_runs)
    typer.echo(json.dumps(r, sort_keys=True) if as_json else format_bench(r))


@app.command("synth-data")
@one_line_errors
def synth_data_cmd(
    items: int = typer.Option(..., "--items", help="Catalogue size N."),
    sessions: int = typer.Option(..., "--sessions", help="Number of sessions (the last --test-fraction are the test set)."),
    out: Path = typer.Option(..., "--out", help="Folder to write (train_sessions.txt, test_samples.txt, README.txt)."),
    seed: int = typer.Option(0, help="Random seed."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Share of the (latest) sessions held out as test."),
):
    """A SYNTHETIC session folder in the usual format: power-law popularity, sessions that follow latent
    interests, a time-ordered test split. For measuring training at scale, not recommendation quality."""
    from .synthetic import write_synthetic

    folder = write_synthetic(out, items, sessions, seed=seed, test_fraction=test_fraction)
    typer.echo(f"wrote {folder}: SYNTHETIC, {items:,} items, {sessions:,} sessions")


@app.command("synth-catalogue")
@one_line_errors
def synth_catalogue_cmd(
    like: Path = typer.Option(..., "--like", **existing("--like", CKPT), help="Codes student whose encoder, codebooks and repeat bonus to copy."),
    items: int = typer.Option(..., "--items", help="Number of items in the synthetic catalogue."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write."),
    seed: int = typer.Option(0, help="Seed for the random codes and ids."),
):
    """A checkpoint like --like with N items of random codes, labelled SYNTHETIC: for measuring how an
    artifact scales with the catalogue (build, verify, bench), not for recommending."""
    from .synth_catalogue import synth_catalogue

    record = synth_catalogue(like, items, out, seed=seed)
    typer.echo(f"wrote {out}: {record['note']} ({items:,} items)")


@app.command()
@one_line_errors
def figures(
    data: Path = typer.Option(Path("docs/figures/data"), "--data", **existing("--data", "dir"),
                              help="Folder of the tools' JSON (compare.json, scale_*.json, size_report.json)."),
    out: Path = typer.Option(Path("docs/figures"), "--out", help="Folder to write the PNG figures to."),
):
    """Draw the docs' figures from the JSON that bench and size-report print (needs matplotlib)."""
    from .figures import render_all

    for path in render_all(data, out):
        typer.echo(f"wrote {path}")


def main() -> None:  # pragma: no cover - entry point
    """The console script: click's own usage errors (an unknown option or value, a missing one) become
    one ``error:`` line and exit status 2, like the toolchain's."""
    try:
        code = app(standalone_mode=False)
    except typer.BadParameter as e:  # ours carry their whole message; click's (a missing option) format one
        typer.echo(f"error: {e.message or e.format_message()}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # click's UsageError (typer vendors click): an unknown or missing option
        if getattr(e, "exit_code", None) != 2 or not hasattr(e, "format_message"):
            raise
        typer.echo(f"error: {e.format_message()} (see --help)", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
