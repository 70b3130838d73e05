"""The command line's options, declared once as data, and the decorator that makes a list of them a
command's signature (Typer reads ``inspect.signature`` and ``__annotations__``, both set here).

Defaults come from the library: ``library_defaults`` reads a config dataclass's field defaults, or a
function's keyword defaults, from its module's source (``ast``, no import), so ``--help`` and a
mistyped option stay quick (no torch) while a Python caller of the library and a CLI user get the
same defaults; tests/test_cli_options.py checks what it reads against the imported classes.
"""

from __future__ import annotations

import ast
import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from . import fit as fitting
from . import pipeline
from .compressors import UNCOMPRESSED

_PACKAGE = Path(__file__).resolve().parent


def _parse(path: Path) -> tuple[ast.Module, dict]:
    """A library module's syntax tree and its module-level constants (name → expression)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return tree, {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                  for t in node.targets if isinstance(t, ast.Name)}


def _literal(expr, constants: dict):
    """The value of a literal expression; a module-level constant's name stands for its value."""
    if isinstance(expr, ast.Dict):
        return {_literal(k, constants): _literal(v, constants) for k, v in zip(expr.keys, expr.values)}
    return ast.literal_eval(constants.get(expr.id, expr) if isinstance(expr, ast.Name) else expr)


@functools.lru_cache(maxsize=None)
def library_defaults(module: str, name: str) -> dict:
    """The literal defaults of dataclass ``name`` (its fields) or function ``name`` (its keyword
    arguments) in ``odrec_export.<module>``; a module-level constant stands for its literal value."""
    tree, constants = _parse(_PACKAGE / f"{module.replace('.', '/')}.py")

    def literals(pairs) -> dict:
        out = {}
        for key, expr in pairs:
            try:
                out[key] = _literal(expr, constants)
            except ValueError:  # not a literal (a default_factory, a call): not a default we can show
                pass
        return out

    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return literals((s.target.id, s.value) for s in node.body
                            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.value)
        if isinstance(node, ast.FunctionDef) and node.name == name:
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            return literals((arg.arg, d) for arg, d in pairs)
    raise LookupError(f"odrec_export.{module} defines no {name}")


@functools.lru_cache(maxsize=None)
def compressor_declarations() -> dict[str, dict]:
    """Every compressor's ``name``, ``summary`` and ``options`` (with their defaults) as its module in
    compressors/ declares them (``ast``, no import; a class inherits what it does not set from its base
    classes there): the --compressor choices and the help of its options without loading torch."""
    classes = {}
    for path in sorted((_PACKAGE / "compressors").glob("*.py")):
        tree, constants = _parse(path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                attrs = {t.id: (s.value, constants) for s in node.body if isinstance(s, ast.Assign)
                         for t in s.targets if isinstance(t, ast.Name) and t.id in ("name", "summary", "options")}
                classes[node.name] = ([b.id for b in node.bases if isinstance(b, ast.Name)], attrs)

    def declared(cls: str, attr: str):
        bases, attrs = classes.get(cls, ([], {}))
        if attr in attrs:
            return _literal(*attrs[attr])
        return next((v for v in (declared(b, attr) for b in bases) if v is not None), None)

    found = {declared(c, "name"): {"summary": declared(c, "summary"), "options": declared(c, "options") or {}}
             for c in classes if declared(c, "name")}
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != UNCOMPRESSED, kv[0])))


def default_of(function, name: str) -> Any:
    """The default of keyword ``name`` of an (already imported, light) library function."""
    return inspect.signature(function).parameters[name].default


# --------------------------------------------------------------------------- library defaults

TRAIN = library_defaults("train.loop", "TrainConfig")
ENCODER = library_defaults("models.encoder", "EncoderConfig")
DISTILL = library_defaults("train.distill", "DistillConfig")
CODE_LEARNING = library_defaults("train.code_learning", "CodeLearningConfig")
PROTOCOL = library_defaults("data.sessions", "ClickLogProtocol")
BUILD = library_defaults("export.options", "BuildOptions")
FINETUNE = {**TRAIN, **pipeline.FINETUNE_TRAINING}
VERIFY = library_defaults("verify.parity", "verify")
REPEAT_FIT = library_defaults("train.repeat_fit", "fit_repeat_bonus")
BENCH = library_defaults("report.measure", "bench")
SYNTH_DATA = library_defaults("data.synthetic", "write_synthetic")
SYNTH_CATALOGUE = library_defaults("synth_catalogue", "synth_catalogue")


# --------------------------------------------------------------------------- parse-time checks


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


# --------------------------------------------------------------------------- option specs


@dataclass(frozen=True)
class Opt:
    """One command-line parameter: its Python name and type, default, option names and Typer settings
    (help, rich_help_panel, min/max, callback, metavar ...)."""

    name: str
    type: Any
    default: Any
    decls: tuple = ()
    settings: dict = field(default_factory=dict)
    argument: bool = False

    def but(self, **changes) -> "Opt":
        """This option with other settings (``default`` included); a setting given as None is dropped."""
        default = changes.pop("default", self.default)
        settings = {k: v for k, v in {**self.settings, **changes}.items() if v is not None}
        return Opt(self.name, self.type, default, self.decls, settings, self.argument)

    def parameter(self) -> inspect.Parameter:
        info = (typer.Argument if self.argument else typer.Option)(self.default, *self.decls, **self.settings)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=self.type)


def opt(name: str, type_: Any, default: Any, *decls: str, **settings) -> Opt:
    return Opt(name, type_, default, decls, settings)


def arg(name: str, type_: Any, default: Any, **settings) -> Opt:
    return Opt(name, type_, default, (), settings, argument=True)


def panel(title: Optional[str], *specs: Opt) -> tuple[Opt, ...]:
    """``specs`` shown under ``title`` in --help (None: under the plain Options heading)."""
    return tuple(s.but(rich_help_panel=title) for s in specs)


def names(*groups) -> tuple[str, ...]:
    return tuple(s.name for s in _flat(groups))


def pick(options: dict, *groups) -> dict:
    """The values of ``options`` that belong to ``groups``."""
    return {n: options[n] for n in names(*groups)}


def _flat(groups) -> list[Opt]:
    return [s for g in groups for s in (_flat(g) if isinstance(g, (list, tuple)) else [g])]


def command_options(*groups):
    """Decorator: the command's parameters are these options, in this order (``def cmd(**options)``)."""
    specs = _flat(groups)
    params = [s.parameter() for s in specs]

    def apply(fn):
        fn.__signature__ = inspect.Signature(params)
        fn.__annotations__ = {**{p.name: p.annotation for p in params}, "return": None}
        return fn
    return apply


# --------------------------------------------------------------------------- option groups

DATA_PANEL, TRAIN_PANEL, MODEL_PANEL, SCALE_PANEL = "Data", "Training", "Model", "Scale"
STUDENT_PANEL = "Student (--compressor / --teacher)"

DATA = opt("data", Path, ..., "--data", **existing("--data", "file or directory"), rich_help_panel=DATA_PANEL,
           help="Preprocessed folder (train_sessions.txt, test_samples.txt) or raw click-log CSV.")

# ClickLogProtocol's fields, the same in every command that reads --data (valid_fraction differs: see SPLIT)
CLICK_LOG = panel(
    DATA_PANEL,
    opt("delimiter", Optional[str], PROTOCOL["delimiter"], help="CSV delimiter (default: sniffed from the header)."),
    opt("session_col", Optional[str], PROTOCOL["session_col"],
        help="Session id column (default: session_id, sessionId, ...)."),
    opt("item_col", Optional[str], PROTOCOL["item_col"], help="Item id column (default: item_id, itemId, ...)."),
    opt("time_col", Optional[str], PROTOCOL["time_col"],
        help="Column ordering clicks in a session (default: timeframe, timestamp, ...)."),
    opt("date_col", Optional[str], PROTOCOL["date_col"],
        help="Column dating a session for the time split (default: eventdate/date if present)."),
    opt("test_days", int, PROTOCOL["test_days"], help="Raw logs: sessions of the last N days form the test set."),
)
VALID = opt("valid_fraction", float, PROTOCOL["valid_fraction"], rich_help_panel=DATA_PANEL,
            help="Fraction of training sessions (the latest) held out for model selection.")
SPLIT = opt("valid_fraction", Optional[float], None, "--valid-fraction", rich_help_panel=DATA_PANEL,
            help="Fraction of training sessions (the latest) held out for validation (default: the split the "
            "checkpoint was selected on).")
PROTOCOL_FIELDS = names(CLICK_LOG, VALID)

DEVICE = opt("device", str, TRAIN["device"], **choice("--device", "cpu", "cuda"), help="Where to train.")
SEED = opt("seed", int, TRAIN["seed"], help="Random seed.")
BATCH_SIZE = opt("batch_size", int, TRAIN["batch_size"], min=1)
PATIENCE_HELP = "Epochs without validation gain before stopping."
TIME_LIMIT = opt("time_limit", Optional[float], TRAIN["time_limit"], "--time-limit", min=1.0,
                 help="Seconds of training at most: the epoch then running stops early, is validated and is the last.")

TRAINING = panel(
    TRAIN_PANEL,
    opt("epochs", int, TRAIN["epochs"], min=0, help="Maximum epochs (early stopping on validation HR@10); a "
        "student with 0 is its fitted item representation + the teacher's encoder, undistilled."),
    DEVICE, SEED, BATCH_SIZE,
    opt("max_batches", Optional[int], TRAIN["max_batches"], "--max-batches", min=1,
        help="Batches per epoch (a random subset; default: all): short runs on big data."),
    opt("lr", float, TRAIN["lr"]),
    opt("lr_schedule", str, TRAIN["lr_schedule"], "--lr-schedule", **choice("--lr-schedule", "constant", "cosine"),
        help="constant, or cosine: the learning rate falls to 0 over the planned epochs × batches."),
    opt("patience", int, TRAIN["patience"], min=1, help=PATIENCE_HELP),
    TIME_LIMIT,
)

# EncoderConfig's fields but num_items
MODEL = panel(
    MODEL_PANEL,
    opt("dim", int, ENCODER["dim"], min=8, help="Embedding dimension d."),
    opt("heads", int, ENCODER["heads"], min=1),
    opt("layers", int, ENCODER["layers"], min=1),
    opt("max_len", int, ENCODER["max_len"], min=1, help="Maximum session length seen by the encoder."),
    opt("dropout", float, ENCODER["dropout"], min=0.0, max=0.95),
    opt("share", str, ENCODER["share"], **choice("--share", "none", "cross-block", "adjacent-block", "adjacent-layer",
                                                 "cross-layer"),
        help="Encoder weight sharing across blocks (CpRec): none, cross-block, adjacent-block, adjacent-layer, "
        "cross-layer."),
)

COMPRESSORS = compressor_declarations()
COMPRESSOR = opt("compressor", str, default_of(pipeline.train, "compressor"), **choice("--compressor", *COMPRESSORS),
                 help=f"{UNCOMPRESSED}: the teacher (with --teacher: an uncompressed student); " + "; ".join(
                     f"{name}: {c['summary']}" for name, c in COMPRESSORS.items() if name != UNCOMPRESSED) + ".")
TEACHER = opt("teacher", Optional[Path], None, **existing("--teacher", CKPT),
              help="Students: distil from this teacher checkpoint (default: train a teacher first).")


def item_option(name: str, kind, what: str, otherwise: str = "about 30x compression", **limits) -> Opt:
    """A compressor option (default None: each compressor's own default, listed in the help)."""
    users = {c: d["options"][name] for c, d in COMPRESSORS.items() if name in d["options"]}
    defaults = ", ".join(f"{user} {default}" for user, default in users.items() if default is not None)
    return opt(name, Optional[kind], None, help=f"{'/'.join(users)}: {what} (default: {defaults or otherwise}; "
               "see docs/compressors.md).", **limits)


# the per-compressor options, handed to pipeline.train as one dict (item_options)
ITEMS = {
    "m": item_option("m", int, "number of codebooks (codes) or sub-spaces (pq) M", min=1),
    "k": item_option("k", int, "codewords per codebook K", min=2, max=65536),
    "rank": item_option("rank", int, "TT-rank R", min=1),
    "blocks": item_option("blocks", str, "frequency block sizes, e.g. 500,2000 (the last block takes the rest)"),
    "rho": item_option("rho", int, "block i has dimension d/rho^i", min=2),
    "code_steps": item_option("code_steps", int, "code-learning steps, full item table each",
                              otherwise=str(CODE_LEARNING["steps"]), min=1),
    "kmeans_weights": item_option("kmeans_weights", str, "an item's weight in the k-means of the teacher's table, "
                                  "from its training clicks c: 1, sqrt(c+1) or log(c+2)",
                                  **choice("--kmeans-weights", "uniform", "sqrt-count", "log-count")),
}
ITEM_SHAPE = tuple(ITEMS[name] for name in fitting.ITEM_OPTIONS)  # the student's item table as fit records it
KD = opt("kd", Optional[str], default_of(pipeline.train, "kd"), **choice("--kd", "eodrec", "odrec"),
         help="Students: KD recipe, eodrec (bidirectional, mix-up; default for codes) or odrec (frozen teacher, "
         "predictive task; default for the others).")

# DistillConfig's settings the command line overrides (None: the KD recipe's)
DISTILLATION = (
    opt("beta", float, DISTILL["beta"], min=0.0, help="Students: weight of the contrastive loss."),
    opt("gamma", float, DISTILL["gamma"], min=0.0, help="Students: weight of the soft-target KL."),
    opt("mse", float, DISTILL["mse"], min=0.0, help="Students: weight of matching the teacher's item vectors "
        "(relative MSE; the paper's 1)."),
    opt("eta", Optional[float], None, min=0.0, max=1.0, help="Students: initial mix-up share of teacher vectors "
        "(recipe default: eodrec 0.7, odrec 0; 0 with --init)."),
    opt("eta_decay", float, DISTILL["eta_decay"], "--eta-decay", min=0.0, max=1.0, help="Students: share of the "
        "training steps over which the mix-up share falls to 0 (then codes only)."),
    opt("bidirectional", Optional[bool], None, "--bidirectional/--no-bidirectional", metavar="",
        help="Students: also update the teacher from the student (recipe default: eodrec yes, odrec no)."),
    opt("predictive", Optional[float], None, min=0.0, help="Students: weight of OD-Rec's predictive task "
        "(recipe default: eodrec 0, odrec 0.5)."),
    opt("teacher_lr", Optional[float], DISTILL["teacher_lr"], "--teacher-lr", min=0.0, help="Students, "
        "bidirectional: the teacher's learning rate (default: --lr; 0 keeps it fixed)."),
)
INIT = opt("init", Optional[Path], None, "--init", **existing("--init", CKPT), rich_help_panel=STUDENT_PANEL,
           help="Continue a stopped or finished run from its checkpoint: a teacher's (no --teacher), or, with "
           "--teacher, a student's (no code learning; its compressor is kept). --dim, --m etc. are ignored.")
STUDENT = panel(STUDENT_PANEL, COMPRESSOR, TEACHER, *ITEM_SHAPE, KD,
                *DISTILLATION, ITEMS["code_steps"])

# TrainConfig's scale settings
SCALE = panel(
    SCALE_PANEL,
    opt("loss", str, TRAIN["loss"], "--loss", **choice("--loss", "full", "sampled"), help="full: softmax over all "
        "items (exact, O(N) a step); sampled: over the target and --negatives items shared by the batch, drawn by "
        "click frequency with the log-Q correction (a step costs what it touches; see docs/training.md)."),
    opt("negatives", int, TRAIN["negatives"], "--negatives", min=1,
        help="--loss sampled: negatives per step, shared by the batch."),
    opt("length_buckets", int, TRAIN["length_buckets"], "--length-buckets", min=0, help="Sort the prefixes of every "
        "N batches by length before cutting batches (less padding: a 3-5x cheaper encoder on Tmall); 0: plain "
        "shuffled batches."),
    opt("in_batch", bool, TRAIN["in_batch"], "--in-batch/--no-in-batch", metavar="",
        help="--loss sampled: the batch's targets are negatives too, besides the drawn ones."),
)
NPROC = opt("nproc", int, 1, "--nproc", min=1, rich_help_panel=SCALE_PANEL, help="Train in N processes on this "
            "machine (torchrun + DistributedDataParallel; --batch-size stays the global batch). Several machines: "
            "the torchrun command in the README.")

# finetune's training options: its own defaults (pipeline.FINETUNE_TRAINING over TrainConfig's) and help
FINETUNE_TRAINING = (
    opt("epochs", int, FINETUNE["epochs"], min=1, help="Maximum epochs (the best validation HR@10 is kept)."),
    opt("max_batches", Optional[int], FINETUNE["max_batches"], "--max-batches", min=1,
        help="Batches per epoch (a random subset; default: all)."),
    opt("lr", float, FINETUNE["lr"], help="Learning rate (a trained model: keep it small)."),
    opt("lr_schedule", str, FINETUNE["lr_schedule"], "--lr-schedule", **choice("--lr-schedule", "constant", "cosine"),
        help="How the learning rate moves over the run."),
    BATCH_SIZE.but(default=FINETUNE["batch_size"]),
    opt("patience", int, FINETUNE["patience"], min=1, help=PATIENCE_HELP),
    SEED.but(default=FINETUNE["seed"]),
    DEVICE.but(default=FINETUNE["device"]),
    TIME_LIMIT.but(default=FINETUNE["time_limit"]),
)
TRAIN_FIELDS = names(TRAINING, SCALE)

# fit's options (defaults: fit.fit's keyword defaults)
FIT = (
    opt("out", Path, ..., "--out", help="Run directory: fit.json, checkpoints, artifact/, report.md."),
    opt("budget", str, default_of(fitting.fit, "budget"), "--budget",
        help="CPU time budget for the whole run: 90s, 10m, 1h30m (too small for one short epoch of each "
        "model: a one-line error before starting)."),
    opt("compressor", str, default_of(fitting.fit, "compressor"),
        **choice("--compressor", *(c for c in COMPRESSORS if c != UNCOMPRESSED)),
        help="The student's item representation (see train --help)."),
    *ITEM_SHAPE,
    opt("resume", bool, default_of(fitting.fit, "resume"), "--resume", metavar="",
        help="Continue the run in --out: skip the phases fit.json marks done (files unchanged); same data only."),
    opt("valid_fraction", Optional[float], default_of(fitting.fit, "valid_fraction"), "--valid-fraction",
        min=0.0, max=0.99, help=f"Fraction of training sessions (the latest) held out for model selection "
        f"(default: {PROTOCOL['valid_fraction']}, cut to about {fitting.VALID_SAMPLES:,} validation samples; with "
        "--resume the run's)."),
    DEVICE.but(default=default_of(fitting.fit, "device")),
)
