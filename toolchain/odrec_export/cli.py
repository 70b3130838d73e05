"""The ``odrec-export`` command line: each command parses options and calls one library function."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__, pipeline
from .cli_options import (
    BENCH,
    BUILD,
    CKPT,
    CLICK_LOG,
    DATA,
    DEVICE,
    DISTILLATION,
    FINETUNE_TRAINING,
    FIT,
    INIT,
    ITEM_SHAPE,
    ITEMS,
    MODEL,
    NPROC,
    REPEAT_FIT,
    SCALE,
    SPLIT,
    STUDENT,
    SYNTH_CATALOGUE,
    SYNTH_DATA,
    TRAINING,
    VALID,
    VERIFY,
    Opt,
    choice,
    command_options,
    default_of,
    existing,
    opt,
    pick,
)
from .errors import OdrecError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, compress and export compact session-based recommenders for phones.")


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
    from .train import parallel

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        code = parallel.launch(nproc, parallel.without_nproc(sys.argv[1:]))
        if code:
            raise typer.Exit(code)
        return True
    if not parallel.init(device).main:  # rank 0 logs, evaluates and writes; the others train silently
        sys.stdout = open(os.devnull, "w")
    return False


def _protocol(options: dict):
    """The data protocol from the command's click-log options; a ``valid_fraction`` of None stays None
    (``pipeline.load_split_like`` then splits like the checkpoint's run)."""
    from .data.sessions import ClickLogProtocol

    return ClickLogProtocol(**pick(options, CLICK_LOG), valid_fraction=options["valid_fraction"])


def _train_config(options: dict):
    """The ``TrainConfig`` of the command's training and scale options."""
    from .train.loop import TrainConfig

    return TrainConfig(**pick(options, TRAINING, SCALE))


@app.command()
@one_line_errors
@command_options(DATA, opt("out", Path, ..., "--out", help="Checkpoint file to write (atomically)."),
                 TRAINING, MODEL, STUDENT, SCALE, NPROC, INIT, CLICK_LOG, VALID)
def train(**options) -> None:
    """Train the uncompressed SASRec teacher (or, with --compressor codes, a student) and write a checkpoint."""
    if _relaunched(options["nproc"], options["device"]):
        return
    pipeline.train(options["data"], options["out"], config=_train_config(options), encoder=pick(options, MODEL),
                   protocol=_protocol(options), compressor=options["compressor"], teacher=options["teacher"],
                   init=options["init"], item_options={name: options[name] for name in ITEMS},
                   kd=options["kd"], distill=pick(options, DISTILLATION), progress=_rich_progress, log=typer.echo)


METRICS_JSON = opt("as_json", bool, False, "--json", metavar="", help="Print one JSON object (fractions).")


def _ckpt(help: str) -> Opt:
    return opt("ckpt", Path, ..., "--ckpt", **existing("--ckpt", CKPT), help=help)


@app.command("eval")
@one_line_errors
@command_options(_ckpt("Checkpoint to evaluate."), DATA, METRICS_JSON,
                 opt("by_group", bool, default_of(pipeline.evaluate, "breakdown"), "--breakdown", metavar="",
                     help="Also per group of samples: by the target's clicks in the training sessions, and by "
                     "whether it is already in the session."),
                 DEVICE.but(default=default_of(pipeline.evaluate, "device")), CLICK_LOG, SPLIT)
def eval_cmd(**options) -> None:
    """Evaluate a checkpoint on the test samples of --data (HR/NDCG/MRR @5/10/20, full item set)."""
    metrics = pipeline.evaluate(options["ckpt"], options["data"], protocol=_protocol(options),
                                device=options["device"], breakdown=options["by_group"], progress=_rich_progress)
    typer.echo(json.dumps(metrics, sort_keys=True) if options["as_json"] else pipeline.format_evaluation(metrics))


@app.command()
@one_line_errors
@command_options(DATA, METRICS_JSON, CLICK_LOG, VALID)
def baseline(**options) -> None:
    """The last-3-items transition baseline on the test samples of --data: what a trained model must beat."""
    metrics = pipeline.baseline(options["data"], protocol=_protocol(options))
    typer.echo(json.dumps(metrics, sort_keys=True) if options["as_json"]
               else f"{metrics['model']}, counted on the training sessions:\n{pipeline.format_evaluation(metrics)}")


@app.command("repeat-bonus")
@one_line_errors
@command_options(_ckpt("Trained checkpoint (teacher or student)."), DATA,
                 opt("out", Path, ..., "--out",
                     help="Checkpoint to write: --ckpt with the bonus (may be --ckpt itself)."),
                 opt("metric", str, REPEAT_FIT["metric"],
                     **choice("--metric", "NDCG@10", "HR@10"),
                     help="Validation metric the weights maximise: NDCG@10 or HR@10."),
                 CLICK_LOG, SPLIT)
def repeat_bonus_cmd(**options) -> None:
    """Fit a repeat bonus (a score added to items already in the session, by how recently they
    occurred) on the validation split the checkpoint was trained with; the rest of the model is unchanged."""
    pipeline.repeat_bonus(options["ckpt"], options["data"], options["out"], metric=options["metric"],
                          protocol=_protocol(options), log=typer.echo)


@app.command()
@one_line_errors
@command_options(_ckpt("Trained checkpoint (teacher or student) to continue."), DATA,
                 opt("out", Path, ..., "--out", help="Checkpoint file to write (atomically)."),
                 opt("objective", str, default_of(pipeline.finetune, "objective"),
                     **choice("--objective", "new", "all"),
                     help="new: only targets new to the session, the session's items left out of the softmax (a "
                     "repeat bonus ranks those); all: plain cross-entropy."),
                 FINETUNE_TRAINING, SCALE, NPROC, CLICK_LOG, SPLIT)
def finetune(**options) -> None:
    """Continue a trained model with cross-entropy alone (no teacher needed); a repeat bonus it had is
    fitted again afterwards on the validation split."""
    if _relaunched(options["nproc"], options["device"]):
        return
    pipeline.finetune(options["ckpt"], options["data"], options["out"], objective=options["objective"],
                      config=_train_config(options), protocol=_protocol(options), progress=_rich_progress,
                      log=typer.echo)


@app.command()
@one_line_errors
@command_options(DATA, *FIT)
def fit(**options) -> None:
    """One command from a click log to a verified artifact within a CPU time budget: baseline, teacher,
    student (polished with the time it leaves), repeat bonus, build, verify (x86), bench and
    DIR/report.md; --resume continues a stopped run."""
    from .fit import fit as run_fit

    run_fit(options["data"], options["out"], budget=options["budget"], compressor=options["compressor"],
            item_options=pick(options, ITEM_SHAPE), resume=options["resume"],
            valid_fraction=options["valid_fraction"], device=options["device"], progress=_rich_progress,
            log=typer.echo)


@app.command()
@one_line_errors
def verify(
    folder: Path = typer.Argument(..., **existing("artifact", "dir"), help="Artifact directory written by build."),
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", **existing("--ckpt", CKPT), help="Checkpoint for the "
                                        "PyTorch reference (default: the one the manifest names, when reachable)."),
    data: Optional[Path] = typer.Option(None, "--data", **existing("--data", "file or directory"),
                                        help="Real sessions (folder or click log); default: sessions sampled from "
                                        "the artifact's items."),
    as_json: bool = typer.Option(False, "--json", metavar="",
                                 help="Print one JSON object, a field per check and platform."),
    arm: bool = typer.Option(VERIFY["arm"], "--arm/--no-arm", metavar="",
                             help="Also run onnxruntime aarch64 under qemu."),
    arm_cache: Optional[Path] = typer.Option(None, "--arm-cache", help="ARM64 runtime cache dir "
                                             "(default: ~/.cache/odrec-export/arm64-ort-<ort>-<numpy>)."),
    arm_cpu: Optional[list[str]] = typer.Option(None, "--arm-cpu", help="ARM CPU model, repeatable "
                                                "(default: cortex-a72 and neoverse-n1)."),
    sessions: int = typer.Option(VERIFY["sessions"], min=1, help="How many real (or sampled) sessions to compare."),
    record: Optional[Path] = typer.Option(None, "--record", help="Also write the report as JSON to this file."),
):
    """Check an artifact: integrity, PyTorch reference parity, and parity on ARM64 (exit 0/1/2)."""
    from .errors import UsageError
    from .verify.arm_runtime import CPU_MODELS
    from .verify.parity import verify as run_verify

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
    from .report.summary import summary

    typer.echo(summary(folder, verify_record))


@app.command()
@one_line_errors
def build(
    ckpt: Path = typer.Option(..., "--ckpt", **existing("--ckpt", CKPT),
                              help="Student (codes, tt, stt, cprec) or teacher (none) checkpoint."),
    out: Path = typer.Option(..., "--out", help="Artifact directory to write (atomically)."),
    quant: str = typer.Option(BUILD["quant"], **choice("--quant", "int8", "fp32"), help="Codebook quantisation: int8 "
                              "(per-row scale) or fp32 (int4 is refused: plain 4-bit rounding loses too much)."),
    encoder_quant: str = typer.Option(BUILD["encoder_quant"], "--encoder-quant",
                                      **choice("--encoder-quant", "fp32", "fp16", "int8"),
                                      help="Encoder MatMul weights: fp16 (default: half the bytes, fp32 arithmetic, "
                                      "verify holds it to fp32's tolerance), fp32, or int8 (per-column scale; "
                                      "onnxruntime's MatMulNBits fusion then also quantises activations)."),
    top_k: int = typer.Option(BUILD["top_k"], "--top-k", help="How many items the graph returns."),
    ort_format: bool = typer.Option(BUILD["ort"], "--ort", metavar="",
                                    help="Also write model.ort (onnxruntime mobile format)."),
    simplify: bool = typer.Option(BUILD["simplify"], "--simplify/--no-simplify", metavar="",
                                  help="Run onnxsim (kept only when it does not grow the file)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", **existing("--eval-data", "file or directory"),
                                             help="Evaluate the built graph on this data's test samples."),
    force: bool = typer.Option(False, "--force", metavar="", help="Replace a non-empty --out directory."),
    expand_top: Optional[int] = typer.Option(BUILD["expand_top"], "--expand-top", help="cprec: expand only the tail "
                                             "blocks whose cluster is in the head's top-k (CpRec's fast, approximate "
                                             "output)."),
    popular_from: Optional[Path] = typer.Option(BUILD["popular_from"], "--popular-from",
                                                **existing("--popular-from", "file or directory"),
                                                help="Count the popular items a session with no known item gets in "
                                                "this data's training sessions (for checkpoints that do not record "
                                                "them)."),
    id_map: str = typer.Option(BUILD["id_map"], "--id-map", **choice("--id-map", "auto", "binary", "text"),
                               help="Item ids: binary (items.bin, 1-3 bytes an id; integer ids only), text "
                               "(items.txt, any ids) or auto (binary when every id is an integer)."),
):
    """Freeze a checkpoint into an ONNX artifact: model.onnx, items.bin or items.txt, manifest.json [, model.ort]."""
    from .export import BuildOptions
    from .export import build as run_build

    opts = BuildOptions(quant=quant, top_k=top_k, ort=ort_format, simplify=simplify, encoder_quant=encoder_quant,
                        expand_top=expand_top, id_map=id_map, popular_from=popular_from)
    manifest = run_build(ckpt, out, opts, force=force, eval_data=eval_data, log=typer.echo, progress=_rich_progress)
    typer.echo(pipeline.format_build(manifest))
    typer.echo(f"wrote {out}")


@app.command("size-report")
@one_line_errors
def size_report_cmd(
    folder: Path = typer.Argument(..., **existing("artifact", "dir"), help="Artifact directory written by build."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print one JSON object."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", **existing("--baseline", CKPT),
                                            help="Build the fp32-table baseline from this checkpoint "
                                            "(default: computed from the artifact's own sizes)."),
):
    """Bytes per part, compression ratios vs an fp32 N×d item table, resident memory after loading."""
    from .report.measure import format_size_report, size_report

    r = size_report(folder, baseline_ckpt=baseline)
    typer.echo(json.dumps(r, sort_keys=True) if as_json else format_size_report(r))


@app.command()
@one_line_errors
def bench(
    folders: list[Path] = typer.Argument(..., **existing("artifact", "dir"), help="Artifact directory written by "
                                         "build; with --compare, two or more (ratios are against the first).",
                                         metavar="DIR"),
    compare: bool = typer.Option(False, "--compare", metavar="", help="Compare the artifacts side by side instead "
                                 "(bytes, item representation, recorded HR/NDCG@10, latency, memory; interleaved runs)."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print one JSON object."),
    runs: int = typer.Option(BENCH["runs"], min=5, help="Timed runs per model and setting (after warm-up)."),
    warmup: int = typer.Option(BENCH["warmup"], min=1, help="Untimed runs first."),
    quick: bool = typer.Option(False, "--quick", metavar="", help="60 runs, 10 warm-up, 30 inferences for memory."),
):
    """Latency and memory of the artifact vs the same model with an fp32 N×d table (onnxruntime CPU);
    with --compare, of several artifacts against the first."""
    r = pipeline.bench(folders, compare=compare, runs=runs, warmup=warmup, quick=quick)
    typer.echo(json.dumps(r, sort_keys=True) if as_json else pipeline.format_bench(r, compare=compare))


@app.command("synth-data")
@one_line_errors
def synth_data_cmd(
    items: int = typer.Option(..., "--items", help="Catalogue size N."),
    sessions: int = typer.Option(..., "--sessions",
                                 help="Number of sessions (the last --test-fraction are the test set)."),
    out: Path = typer.Option(..., "--out", help="Folder to write (train_sessions.txt, test_samples.txt, README.txt)."),
    seed: int = typer.Option(SYNTH_DATA["seed"], help="Random seed."),
    test_fraction: float = typer.Option(SYNTH_DATA["test_fraction"], "--test-fraction",
                                        help="Share of the (latest) sessions held out as test."),
):
    """A SYNTHETIC session folder in the usual format: power-law popularity, sessions that follow latent
    interests, a time-ordered test split. For measuring training at scale, not recommendation quality."""
    from .data.synthetic import write_synthetic

    folder = write_synthetic(out, items, sessions, seed=seed, test_fraction=test_fraction)
    typer.echo(f"wrote {folder}: SYNTHETIC, {items:,} items, {sessions:,} sessions")


@app.command("synth-catalogue")
@one_line_errors
def synth_catalogue_cmd(
    like: Path = typer.Option(..., "--like", **existing("--like", CKPT),
                              help="Codes student whose encoder, codebooks and repeat bonus to copy."),
    items: int = typer.Option(..., "--items", help="Number of items in the synthetic catalogue."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write."),
    seed: int = typer.Option(SYNTH_CATALOGUE["seed"], help="Seed for the random codes and ids."),
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
    from .report.figures import render_all

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
