"""``odrec-export fit``: one command from a click log to a verified artifact inside a CPU time budget.

The data is loaded and split once; the split (data sha256, validation fraction, counts) goes into
``DIR/fit.json`` with the transition baseline, the plan and each phase as it finishes (its files'
sha256 and its measured wall time), so ``resume`` skips what is done and refuses other data.

The plan: the teacher's step time is measured on a few real batches, a validation pass is timed, and
the budget left after a reserve for what does not train (code fit, repeat bonus, build, verify, test
evaluations) is split between the teacher and the student; each phase's seconds become epochs ×
batches (``TrainConfig.epochs``, ``max_batches``). Before each training phase the plan is redone with
the time really left, so a slow phase shortens the next one instead of overrunning. What the student
leaves (early stopping, steps cheaper than estimated) goes to ``polish``: a cosine continuation of its
best epoch, planned from its own measured step, kept only if it validates better.

Imports stay inside the functions: the command line imports this module for its defaults.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

Log = Callable[[str], None]

STATE = "fit.json"
ITEM_OPTIONS = ("m", "k", "rank", "blocks", "rho", "kmeans_weights")  # the student's item table: fit's --m/--k/…
REPORT = "report.md"
FILES = {"teacher": "teacher.pt", "student": "student.pt", "polish": "student-polished.pt", "bonus": "student-bonus.pt",
         "build": "artifact/manifest.json", "verify": "verify.json", "bench": "bench.json"}
PHASES = tuple(FILES)
ARTIFACT = "artifact"

PROBE_STEPS = 20  # teacher steps timed before planning (after 2 untimed)
STUDENT_STEP_FACTOR = 6.0  # a distillation step vs a teacher step (two models, three sub-sessions; ~5x measured)
TEACHER_SHARE = 0.4  # of the training seconds; the student's steps are dearer
MIN_BATCHES = 10  # a phase needs at least one epoch of this many batches
MAX_EPOCHS = 1000  # early stopping (patience) ends a phase well before; small data has epochs of a few batches
SAMPLED_FROM_ITEMS = 20_000  # from this many items on, the sampled softmax (a full one costs O(N) a step)
PATIENCE_SHARE = 5  # patience: at least the library's, a fifth of the planned epochs, and PATIENCE_STEPS
PATIENCE_STEPS = 200  # steps without a validation gain before stopping: epochs of 10 batches (a small log)
# stopped after 2 epochs' patience while still learning (Diginetica sample: test HR@10 5.88 instead of 61.76)
SAFETY = 0.85  # a phase plans this share of its seconds (the estimates are estimates)
BENCH = {"runs": 60, "warmup": 10, "memory_runs": 30, "threads": (1,), "seq_lens": (10,)}  # the report's speed
VALID_SAMPLES = 20_000  # default split: ClickLogProtocol's fraction, cut to about this many validation samples
# (Tmall: 0.1 → ~100k samples, every epoch's validation slower and 8% fewer training sessions than 0.02 → 20k)


def parse_budget(text: str) -> float:
    """'10m', '90s', '1h30m', '2h' or plain seconds → seconds."""
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        from .errors import UsageError
        raise UsageError(f"--budget '{text}': expected a duration such as 90s, 10m or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass
class Phase:
    """A training phase's share of the budget as epochs × batches."""
    name: str
    seconds: float
    epochs: int
    max_batches: Optional[int]
    batches_per_epoch: int

    def line(self) -> str:
        batches = "all" if self.max_batches is None else str(self.max_batches)
        return f"{self.name:<8} {self.seconds:7.0f}s  {self.epochs:3d} epochs × {batches} batches"


def plan_phase(name: str, seconds: float, step: float, epoch_batches: int, eval_seconds: float) -> Optional[Phase]:
    """Epochs × batches that fit ``seconds`` with steps of ``step`` s and a validation pass of
    ``eval_seconds`` per epoch; None when not even one epoch of ``MIN_BATCHES`` fits."""
    usable = seconds * SAFETY
    full_epoch = epoch_batches * step + eval_seconds
    if usable >= 2 * full_epoch:
        return Phase(name, seconds, min(MAX_EPOCHS, int(usable // full_epoch)), None, epoch_batches)
    for epochs in (2, 1):
        batches = int((usable / epochs - eval_seconds) // step)
        if batches >= min(MIN_BATCHES, epoch_batches):
            return Phase(name, seconds, epochs, min(batches, epoch_batches), epoch_batches)
    return None


@dataclass
class Costs:
    """What planning measured or estimated, in seconds, and the batches in an epoch."""
    teacher_step: float
    valid_eval: float
    test_eval: float
    code_fit: float
    finish: float  # repeat bonus + build (with its evaluation) + verify
    epoch_batches: int

    def overhead(self, phase: str) -> float:
        """Seconds a training phase spends besides its steps: the last validation pass, the test
        evaluations and, for the student, the code fit."""
        return self.valid_eval + {"teacher": self.test_eval, "student": self.code_fit + 2 * self.test_eval,
                                  "polish": self.valid_eval + 2 * self.test_eval}[phase]  # polish: its start too

    def reserve(self, after: str) -> float:
        """Seconds the phases after ``after`` need besides training: test evaluations, code fit, finish."""
        student = self.code_fit + 2 * self.test_eval  # student and its teacher after distillation
        return {"start": self.test_eval + student + self.finish, "teacher": student + self.finish,
                "student": self.finish, "polish": self.finish}[after]


def measure(sessions, encoder: dict, cfg, steps: int = PROBE_STEPS) -> Costs:
    """Time ``steps`` real teacher training steps and one validation pass; estimate the rest from them."""
    import torch

    from .compressors import UNCOMPRESSED
    from .models.encoder import EncoderConfig
    from .models.registry import build_model
    from .train.evaluate import evaluate_model
    from .train.loop import Optimiser, SampleBatches, cross_entropy_loss, param_groups
    from .train.sampled import Negatives, NegativeSampler, check_loss

    torch.manual_seed(cfg.seed)
    model = build_model({"encoder": EncoderConfig(num_items=sessions.num_items, **encoder).to_dict(),
                         "compressor": UNCOMPRESSED, "items": {}}).to(cfg.device)
    batches = SampleBatches(sessions, model.encoder.cfg.max_len)
    check_loss(cfg.loss, cfg.negatives, model.items)
    opt = Optimiser(param_groups(model, cfg.lr, cfg.loss))
    sampler = NegativeSampler(sessions.item_counts(), cfg.negatives, cfg.seed) if cfg.loss == "sampled" else None
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    times = []
    while len(times) < steps + 2:
        for ids, targets in batches.batches(cfg.batch_size, gen, steps + 2, cfg.length_buckets):
            t0 = time.perf_counter()
            sample = Negatives(sampler.draw(targets), sampler.log_expected) if sampler else None
            loss = cross_entropy_loss(model, ids.to(cfg.device), targets.to(cfg.device), sample)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    step = sum(times[2:steps + 2]) / steps
    model.eval()
    probe = sessions.valid_samples[:2000] or sessions.test_samples[:2000]
    t0 = time.perf_counter()
    if probe:
        evaluate_model(model, probe, max_len=model.encoder.cfg.max_len, device=cfg.device)
    per_sample = (time.perf_counter() - t0) / max(len(probe), 1)
    valid_eval = per_sample * len(sessions.valid_samples)
    test_eval = per_sample * len(sessions.test_samples)
    # codes' fit: ~500 full-table steps, each about a teacher step's work per 10k items, plus k-means
    # (a floor of 2,500 items' worth: 500 synthetic items took 13 s at a 0.10 s teacher step, not 500 steps' 50 s)
    code_fit = 5.0 + 500 * step * max(sessions.num_items, 2_500) / 10_000
    # bonuses (teacher's and student's: a valid and a test pass each), build (fp32 + quantised eval), verify,
    # bench (the fp32-table graph beside the artifact, two child processes for memory)
    finish = 30.0 + 5 * test_eval + 3 * valid_eval + sessions.num_items / 10_000
    return Costs(step, valid_eval, test_eval, code_fit, finish, math.ceil(len(batches) / cfg.batch_size))


def train_config(sessions, device: str):
    """The fit's ``TrainConfig``: the library's, with the sampled softmax and length buckets at scale."""
    from .train.loop import TrainConfig, resolve_device

    big = sessions.num_items >= SAMPLED_FROM_ITEMS
    return TrainConfig(device=resolve_device(device), loss="sampled" if big else "full",
                       length_buckets=16 if big else 0)


class Run:
    """DIR/fit.json: the split, the baseline, the plan and the phases done."""

    def __init__(self, out: Path, record: dict):
        self.out, self.record = out, record

    def path(self, phase: str) -> Path:
        return self.out / FILES[phase]

    def save(self) -> None:
        from .files import atomic_write

        atomic_write(self.out / STATE, lambda p: p.write_text(json.dumps(self.record, indent=1, sort_keys=True)))

    def done(self, phase: str) -> bool:
        """Marked done, and its file is there with the recorded sha256."""
        from .files import file_sha256

        entry = self.record["phases"].get(phase, {})
        path = self.path(phase)
        return bool(entry.get("done")) and path.is_file() and file_sha256(path) == entry.get("sha256")

    def mark(self, phase: str, seconds: float, **extra) -> None:
        from .files import file_sha256

        self.record["phases"][phase] = {"done": True, "sha256": file_sha256(self.path(phase)),
                                        "file": FILES[phase], "seconds": round(seconds, 1), **extra}
        self.save()


def _split_record(sessions, data, protocol) -> dict:
    return {"path": str(data), "sha256": sessions.data_sha256, "valid_fraction": protocol.valid_fraction,
            "counts": {k: v for k, v in sessions.report.items() if k != "bad_rows"}}


def _check_same(recorded: dict, now: dict) -> None:
    """Resume only on the run's own data and split: a one-line error naming the difference."""
    from .errors import UsageError

    if recorded["sha256"] != now["sha256"]:
        raise UsageError(f"cannot resume: --data {now['path']} (sha256 {now['sha256'][:12]}…) is not the data of this "
                         f"run, {recorded['path']} (sha256 {recorded['sha256'][:12]}…)")
    if recorded["valid_fraction"] != now["valid_fraction"]:
        raise UsageError(f"cannot resume: --valid-fraction {now['valid_fraction']}, but this run split with "
                         f"{recorded['valid_fraction']}")


def _open(data, out: Path, resume: bool, valid_fraction, compressor: str, item_options: dict, log: Log):
    """Load and split the data once; the run's record (new, or the resumed one, checked)."""
    from . import compressors
    from .data.sessions import ClickLogProtocol, load_sessions
    from .errors import UsageError

    state = out / STATE
    previous = None
    if resume:
        if not state.is_file():
            raise UsageError(f"cannot resume: {state} does not exist (run fit without --resume first)")
        previous = json.loads(state.read_text())
        if valid_fraction is None:
            valid_fraction = previous["split"]["valid_fraction"]
        if previous["compressor"] != compressor:
            raise UsageError(f"cannot resume: --compressor {compressor}, but this run's is {previous['compressor']}")
        recorded = previous.setdefault("item_options", {})
        if any(recorded.get(name) != value for name, value in item_options.items()):
            raise UsageError(f"cannot resume: {_flags(item_options)}, but this run's student has "
                             f"{_flags(recorded) or 'the compressor defaults'}")
    elif state.is_file():
        raise UsageError(f"{out} holds a fit run ({STATE}): pass --resume to continue it, or another --out")
    protocol = ClickLogProtocol() if valid_fraction is None else ClickLogProtocol(valid_fraction=valid_fraction)
    sessions = load_sessions(data, protocol)
    if valid_fraction is None and len(sessions.valid_samples) > VALID_SAMPLES:
        fraction = round(protocol.valid_fraction * VALID_SAMPLES / len(sessions.valid_samples), 4)
        log(f"validation: {len(sessions.valid_samples):,} samples at fraction {protocol.valid_fraction}; "
            f"splitting again at {fraction} for about {VALID_SAMPLES:,}")
        protocol = ClickLogProtocol(valid_fraction=fraction)
        sessions = load_sessions(data, protocol)
    split = _split_record(sessions, data, protocol)
    if previous is not None:
        _check_same(previous["split"], split)
        log(f"resuming {out}: done " + (", ".join(p for p in PHASES if previous["phases"].get(p, {}).get("done"))
                                        or "nothing yet"))
        return sessions, protocol, previous
    log(f"data: {json.dumps(split['counts'])}")
    # the shape as the defaults of today make it, so that a resume after an upgrade trains the same student
    defaults = {name: value for name, value in compressors.get(compressor).options.items()
                if name in ITEM_OPTIONS and value is not None}
    item_options = {**defaults, **item_options}
    return sessions, protocol, {"version": 1, "split": split, "compressor": compressor, "item_options": item_options,
                                "phases": {}, "runs": []}


def _flags(item_options: dict) -> str:
    """``{"m": 8, "k": 256}`` as the command line's ``--k 256 --m 8`` (by name: fit.json sorts its keys)."""
    return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in sorted(item_options.items()))


def _student_shape(compressor: str, item_options: dict, num_items: int, encoder: dict, log: Log) -> None:
    """Reject options the compressor cannot take before any training (not after the teacher's hour),
    and say how much smaller than the fp32 table the student's item representation will be."""
    from . import compressors
    from .errors import UsageError
    from .models.encoder import EncoderConfig
    from .train.distill import item_bytes

    spec = compressors.get(compressor)
    config = spec.items_config(item_options)
    dim = EncoderConfig(num_items=num_items, **encoder).dim
    try:
        table = spec.table(num_items, dim, config)
    except ValueError as e:
        raise UsageError(f"compressor {compressor}: {e}") from None
    size = item_bytes(table)
    ratio = (f"{size['int8_artifact_ratio']:.1f}x smaller than the fp32 table in the artifact "
             f"({size['ratio_bytes']:.1f}x while training, codebooks fp32)") if "int8_artifact_ratio" in size \
        else f"{size['ratio_bytes']:.1f}x smaller than the fp32 table"
    log(f"student: {compressor} {json.dumps(config)}, item representation {ratio}")


def fit(data, out, *, budget: str = "10m", compressor: str = "pq", item_options: Optional[dict] = None,
        resume: bool = False, valid_fraction: Optional[float] = None, device: str = "cpu",
        encoder: Optional[dict] = None, stop_after: Optional[str] = None, progress=None, log: Log = print) -> dict:
    """From a click log (or session folder) ``data`` to a verified artifact in ``out``/artifact within
    ``budget`` (a duration: 90s, 10m, 1h): baseline, teacher, ``compressor`` student, its polish with
    the time it leaves, repeat bonus, build, verify (x86), bench, report.md. ``item_options``: the
    compressor's (``{"m": 8, "k": 256}``; absent or None: its defaults; resuming: the run's). ``valid_fraction``: None is ``ClickLogProtocol``'s (or,
    resuming, the run's). ``resume`` skips the phases ``out``/fit.json marks done (their files unchanged).
    ``stop_after``: a phase to stop after (the rest left for a resumed run). Returns the run's record."""
    from . import compressors
    from .errors import UsageError

    t_start = time.monotonic()
    seconds = parse_budget(budget)
    if compressors.get(compressor).holds_full_table:
        raise UsageError("fit distils a compressed student: choose a --compressor other than none")
    if stop_after is not None and stop_after not in PHASES:
        raise UsageError(f"unknown phase '{stop_after}' (one of {', '.join(PHASES)})")
    out = Path(out)
    item_options = {name: value for name, value in (item_options or {}).items() if value is not None}
    sessions, protocol, record = _open(data, out, resume, valid_fraction, compressor, item_options, log)
    run = Run(out, record)
    encoder = dict(encoder or {})
    _student_shape(compressor, record["item_options"], sessions.num_items, encoder, log)
    cfg = train_config(sessions, device)
    if "baseline" not in record:
        from .train.baseline import evaluate_baseline
        record["baseline"] = evaluate_baseline(sessions)
    log(f"baseline ({record['baseline']['model']}): test HR@10 {100 * record['baseline']['HR@10']:.2f} "
        f"NDCG@10 {100 * record['baseline']['NDCG@10']:.2f}")
    todo = _todo(run)
    costs = measure(sessions, encoder, cfg) if {"teacher", "student", "polish"} & set(todo) else None
    plan = _plan(todo, seconds - (time.monotonic() - t_start), costs, budget)
    log(f"plan for {budget} ({seconds:.0f}s; {time.monotonic() - t_start:.0f}s spent on loading and measuring):")
    for line in plan:
        log("  " + line)
    out.mkdir(parents=True, exist_ok=True)
    this_run = {"budget_seconds": seconds, "plan": plan, "costs": asdict(costs) if costs else None, "phases": {}}
    record["runs"].append(this_run)
    run.save()
    steps = {"teacher": _teacher, "student": _student, "polish": _polish, "bonus": _bonus, "build": _build,
             "verify": _verify, "bench": _bench}
    env = dict(sessions=sessions, cfg=cfg, encoder=encoder, compressor=compressor, item_options=record["item_options"],
               costs=costs, data=data, deadline=t_start + seconds, progress=progress, log=log)
    for name in todo:
        t0 = time.monotonic()
        log(f"[{t0 - t_start:5.0f}s of {seconds:.0f}s] {name} ...")
        extra = steps[name](run, first=resume and name == todo[0], **env)
        run.mark(name, time.monotonic() - t0, **extra)
        this_run["phases"][name] = round(time.monotonic() - t0, 1)
        run.save()
        if name == stop_after:
            log(f"stopped after {name} (stop_after); continue with --resume")
            break
    if all(run.done(p) for p in PHASES):
        text = report(run, data, protocol)
        (out / REPORT).write_text(text)
        log(text)
    this_run["wall_seconds"] = round(time.monotonic() - t_start, 1)
    run.save()
    log(f"fit: {this_run['wall_seconds']:.0f}s of the {seconds:.0f}s budget")
    return record


def _todo(run: Run) -> list[str]:
    """The phases to run: from the first one not done (its files unchanged) on, every later one too."""
    for i, name in enumerate(PHASES):
        if not run.done(name):
            return list(PHASES[i:])
    return []


def _plan(todo: list[str], left: float, costs: Optional[Costs], budget: str) -> list[str]:
    """The plan's lines; a usage error when the budget cannot fit one short epoch of each training phase."""
    from .errors import UsageError

    if costs is None:
        return [f"{name:<8} (no training left)" for name in todo]
    train_s = left - costs.reserve("start")
    phases = []
    for name, share, step in (("teacher", TEACHER_SHARE, costs.teacher_step),
                              ("student", 1 - TEACHER_SHARE, costs.teacher_step * STUDENT_STEP_FACTOR)):
        if name not in todo:
            continue
        s = train_s * (share if "teacher" in todo else 1.0)
        phase = plan_phase(name, s, step, costs.epoch_batches, costs.valid_eval)
        if phase is None:
            need = costs.reserve("start") + sum((MIN_BATCHES * costs.teacher_step * f + costs.valid_eval) / SAFETY / w
                                                for f, w in ((1, TEACHER_SHARE), (STUDENT_STEP_FACTOR, 1 - TEACHER_SHARE)))
            raise UsageError(f"--budget {budget} cannot fit one epoch of {MIN_BATCHES} batches for the teacher and "
                             f"the student plus building and verifying: give at least {math.ceil(need)}s")
        phases.append(phase.line())
    if "polish" in todo:
        phases.append("polish    what the student leaves, if one epoch fits: a cosine continuation of its best epoch, "
                      "kept only if it validates better")
    rest = [name for name in todo if name not in ("teacher", "student", "polish")]
    return phases + [f"{', '.join(rest)}: {costs.finish:.0f}s reserved (+ {costs.reserve('start') - costs.finish:.0f}s "
                     f"for code fit and test evaluations)"] * bool(rest)


def _phase_config(name: str, run: Run, cfg, costs: Costs, deadline: float, log: Log):
    """``cfg`` with the epochs × batches that fit the time really left before this phase, and that
    time as a hard limit on its training (estimates are estimates; the budget is the user's)."""
    from dataclasses import replace

    from .errors import UsageError

    left = deadline - time.monotonic() - costs.reserve(name)
    step = costs.teacher_step * (1.0 if name == "teacher" else STUDENT_STEP_FACTOR)
    if name == "teacher" and not run.done("student"):
        left *= TEACHER_SHARE
    phase = plan_phase(name, left, step, costs.epoch_batches, costs.valid_eval)
    if phase is None:
        raise UsageError(f"{name}: {max(left, 0):.0f}s left of the budget, not enough for one epoch of "
                         f"{MIN_BATCHES} batches; continue with --resume and a larger --budget")
    batches = phase.max_batches or phase.batches_per_epoch
    patience = max(cfg.patience, phase.epochs // PATIENCE_SHARE, math.ceil(PATIENCE_STEPS / batches))
    limit = max(left - costs.overhead(name), MIN_BATCHES * step)
    log(f"  {phase.line()}, patience {patience}, training stops after {limit:.0f}s at the latest")
    return replace(cfg, epochs=phase.epochs, max_batches=phase.max_batches, patience=patience, time_limit=limit)


def _continued(run: Run, name: str, first: bool, log: Log) -> Optional[Path]:
    """The phase's file left by an interrupted run, to continue from (its best epoch so far), when this
    phase is the first one to redo (the phases before it, whose output it was trained on, unchanged)."""
    path = run.path(name)
    if first and path.is_file():
        log(f"  continuing from {path} (the best so far of an interrupted run)")
        return path
    return None


def _trained(cfg, ckpt) -> dict:
    """A training phase's record: its settings (report.md's commands by hand) and its result."""
    return {"epochs": cfg.epochs, "max_batches": cfg.max_batches, "loss": cfg.loss, "length_buckets": cfg.length_buckets,
            "patience": cfg.patience, "time_limit": round(cfg.time_limit),
            "test_metrics": ckpt.provenance.get("test_metrics"), "best_epoch": ckpt.provenance["best_epoch"]}


def _teacher(run: Run, *, sessions, cfg, encoder, costs, deadline, first, progress, log, **_) -> dict:
    from .checkpoint import save_checkpoint
    from .pipeline import train_teacher_on
    from .train.loop import no_progress

    cfg = _phase_config("teacher", run, cfg, costs, deadline, log)
    path = run.path("teacher")
    ckpt = train_teacher_on(sessions, cfg, encoder, _continued(run, "teacher", first, log),
                            progress=progress or no_progress, log=log, save=lambda c: save_checkpoint(c, path))
    save_checkpoint(ckpt, path)  # the selected epoch again, now with its test metrics and whole history
    return _trained(cfg, ckpt)


def _student(run: Run, *, sessions, cfg, compressor, item_options, costs, deadline, first, progress, log,
             **_) -> dict:
    from .checkpoint import save_checkpoint
    from .pipeline import train_student_on
    from .train.loop import no_progress

    cfg = _phase_config("student", run, cfg, costs, deadline, log)
    path = run.path("student")
    ckpt = train_student_on(sessions, cfg, compressor, run.path("teacher"), encoder={},
                            init=_continued(run, "student", first, log), options=dict(item_options), kd=None, distill={},
                            progress=progress or no_progress, log=log, save=lambda c: save_checkpoint(c, path))
    save_checkpoint(ckpt, path)
    return {**_trained(cfg, ckpt), "item_ratio_bytes": ckpt.provenance["item_bytes"]["ratio_bytes"]}


def measured_epoch(ckpt) -> tuple[float, float]:
    """(seconds a training step, seconds a validation pass) as a checkpoint's training measured them:
    the medians over its epochs."""
    from statistics import median

    history = ckpt.provenance["history"]
    return (median(1.0 / h["steps_per_second"] for h in history),
            median(h["seconds"] - h["train_seconds"] for h in history))


def _polish(run: Run, *, sessions, cfg, compressor, costs, deadline, first, progress, log, **_) -> dict:
    """Spend what the student phase left (early stopping, or steps cheaper than estimated) on a
    continuation of its best epoch with a learning rate falling to 0 (cosine), planned from the
    student's own measured step; the continued student is kept only if it validates better than its
    start. Without time for one epoch of ``MIN_BATCHES`` batches the student is copied unchanged."""
    import shutil
    from dataclasses import replace

    from .checkpoint import load_checkpoint, save_checkpoint
    from .pipeline import train_student_on
    from .train.loop import no_progress

    start, path = run.path("student"), run.path("polish")
    step, valid = measured_epoch(load_checkpoint(start))
    # twice the finish's estimate: nothing after this phase can absorb an error in it (the build's export
    # and simplification took 42 s against 30 estimated on a busy machine)
    left = deadline - time.monotonic() - 2 * costs.reserve("polish")
    phase = plan_phase("polish", left - costs.valid_eval, step, costs.epoch_batches, valid)
    if phase is None:
        log(f"  {max(left, 0):.0f}s left: not enough for an epoch of {MIN_BATCHES} batches; the student stays as it is")
        shutil.copyfile(start, path)
        return {"skipped": True, "seconds_left": round(left)}
    cfg = replace(cfg, epochs=phase.epochs, max_batches=phase.max_batches, patience=phase.epochs,
                  lr_schedule="cosine", time_limit=max(left - costs.overhead("polish"), MIN_BATCHES * step))
    log(f"  {phase.line()} (a step measured at {step:.3f}s), cosine learning rate, training stops after "
        f"{cfg.time_limit:.0f}s at the latest")
    ckpt = train_student_on(sessions, cfg, compressor, run.path("teacher"), encoder={},
                            init=_continued(run, "polish", first, log) or start, options={}, kd=None, distill={},
                            progress=progress or no_progress, log=log, save=lambda c: save_checkpoint(c, path))
    save_checkpoint(ckpt, path)  # also when no epoch beat the start: then it is the start's weights
    return {**_trained(cfg, ckpt), "skipped": False, "kept_start": ckpt.provenance["best_epoch"] == 0}


def bonus_on_test(model, sessions) -> tuple[dict, dict]:
    """Give ``model`` a repeat bonus fitted on the validation split; the fit's report and the test metrics."""
    from .train.evaluate import evaluate_model
    from .train.repeat_fit import fit_repeat_bonus

    fitted = fit_repeat_bonus(model, sessions.valid_samples)
    return fitted, evaluate_model(model, sessions.test_samples, max_len=model.encoder.cfg.max_len)


def _bonus(run: Run, *, sessions, log, **_) -> dict:
    """The repeat bonus fitted on the run's validation split, to the (polished) student (its file is kept) and, to
    compare like with like, to the teacher; both evaluated on the test split with their bonus."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .models.registry import model_from_checkpoint
    from .train.repeat_fit import with_repeat_bonus

    out = {}
    for name, path in (("teacher", run.path("teacher")), ("student", run.path("polish"))):
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, str(path))
        fitted, test = bonus_on_test(model, sessions)
        log(f"  {name} + repeat bonus: validation {fitted['metric']} {100 * fitted['before']:.2f} -> "
            f"{100 * fitted['after']:.2f}; test HR@10 {100 * test['HR@10']:.2f} NDCG@10 {100 * test['NDCG@10']:.2f}")
        out[name] = {"metric": fitted["metric"], "before": fitted["before"], "after": fitted["after"],
                     "test_metrics": test}
        if name == "student":
            save_checkpoint(with_repeat_bonus(ckpt, model, fitted), run.path("bonus"))
    return out


def _build(run: Run, *, data, log, **_) -> dict:
    from .export import build

    manifest = build(run.path("bonus"), run.out / ARTIFACT, force=True, eval_data=data, log=log)
    from .report.measure import size_report

    sizes = size_report(run.out / ARTIFACT, measure_rss=False)
    return {"metrics": manifest.get("evaluation", {}).get("metrics"), "total_bytes": sizes["total_bytes"],
            "item_representation_bytes": sizes["item_representation_bytes"],
            "item_compression_ratio": sizes["item_compression_ratio"],
            "artifact_compression_ratio": sizes["artifact_compression_ratio"]}


def _verify(run: Run, *, data, log, **_) -> dict:
    from .errors import OdrecError
    from .verify.parity import verify

    report = verify(run.out / ARTIFACT, ckpt=run.path("bonus"), data=data, arm=False, log=log)
    run.path("verify").write_text(json.dumps(report.to_json(), sort_keys=True, indent=1) + "\n")
    if report.exit_code:
        raise OdrecError(f"verify failed on {run.out / ARTIFACT}:\n{report.table()}")
    return {"passed": True}


def _bench(run: Run, *, log, **_) -> dict:
    """The artifact's latency and memory beside the same model with an fp32 item table (``bench``, fewer runs)."""
    from .report.measure import bench

    r = bench(run.out / ARTIFACT, **BENCH)
    run.path("bench").write_text(json.dumps(r, sort_keys=True, indent=1) + "\n")
    row, memory = r["latency"][0], r["memory"]
    log(f"  latency {row['artifact_us']:.0f} µs, the fp32-table model {row['baseline_us']:.0f} µs "
        f"({row['speedup']:.2f}x); resident memory {memory['artifact']['rss_growth_mib']:.1f} MiB against "
        f"{memory['baseline']['rss_growth_mib']:.1f} MiB")
    return {"latency_us": round(row["artifact_us"], 1), "baseline_latency_us": round(row["baseline_us"], 1),
            "speedup": round(row["speedup"], 2), "rss_growth_mib": memory["artifact"]["rss_growth_mib"],
            "baseline_rss_growth_mib": memory["baseline"]["rss_growth_mib"], "loaded": r["machine"]["loaded"]}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _speed_line(b: dict) -> str:
    busy = " (the machine was busy: noisy)" if b["loaded"] else ""
    return (f"speed (onnxruntime, batch 1, 1 thread, a session of 10, median of {BENCH['runs']} interleaved runs): "
            f"{b['latency_us']:.0f} µs against {b['baseline_latency_us']:.0f} µs for the same model with an fp32 "
            f"item table ({b['speedup']:.2f}x){busy}; resident memory {b['rss_growth_mib']:.1f} MiB against "
            f"{b['baseline_rss_growth_mib']:.1f} MiB")


def _polish_line(p: dict) -> str:
    if p.get("skipped"):
        return f"polish: skipped ({p['seconds_left']}s left, less than an epoch)"
    verdict = "no epoch beat its start: the student as it was" if p["kept_start"] else f"kept epoch {p['best_epoch']}"
    return f"polish: {p['epochs']} epochs of cosine continuation within {p['time_limit']}s, {verdict}"


def _share(student: dict, teacher: dict, key: str) -> str:
    return f"{100 * student[key] / teacher[key]:.0f}%" if teacher.get(key) and key in student else "-"


def report(run: Run, data, protocol) -> str:
    """DIR/report.md: baseline vs teacher vs student, bytes, the verify verdict, the commands by hand."""
    r, ph = run.record, run.record["phases"]
    out, vf = run.out, protocol.valid_fraction
    t, s, polish = ph["teacher"], ph["student"], ph["polish"]
    base, teacher, unpolished = r["baseline"], t["test_metrics"] or {}, s["test_metrics"] or {}
    student = polish.get("test_metrics") or unpolished  # none when it was skipped: the student unchanged
    before = [(f"{r['compressor']} student before polishing (PyTorch)", unpolished)] * bool(polish.get("test_metrics"))
    with_bonus = {name: ph["bonus"].get(name, {}).get("test_metrics") or {} for name in ("teacher", "student")}
    rows = [("transition baseline", base), ("teacher (PyTorch)", teacher),
            *before,
            (f"{r['compressor']} student (PyTorch)", student),
            ("teacher + repeat bonus (PyTorch)", with_bonus["teacher"]),
            (f"{r['compressor']} student + repeat bonus (PyTorch)", with_bonus["student"]),
            (f"{r['compressor']} student + repeat bonus (the artifact, onnxruntime)", ph["build"]["metrics"] or {})]
    walls = ", ".join(f"{p} {ph[p]['seconds']:.0f}s" for p in PHASES)
    shape = _flags(r.get("item_options") or {})
    shape += " " if shape else ""
    batches = lambda p: ("" if p["max_batches"] is None else f" --max-batches {p['max_batches']}") + (
        f" --length-buckets {p['length_buckets']}" if p.get("length_buckets") else "") + f" --patience {p['patience']}" + (
        f" --time-limit {p['time_limit']}" if p.get("time_limit") else "")
    lines = ["# odrec-export fit", "", f"data: {r['split']['path']} (sha256 {r['split']['sha256'][:16]}…), "
             f"valid fraction {vf}, {json.dumps(r['split']['counts'])}", "",
             "| model | HR@10 | NDCG@10 |", "|---|---|---|",
             *[f"| {name} | {_pct(m.get('HR@10'))} | {_pct(m.get('NDCG@10'))} |" for name, m in rows], "",
             f"student as share of the teacher (PyTorch): HR@10 {_share(student, teacher, 'HR@10')}, NDCG@10 "
             f"{_share(student, teacher, 'NDCG@10')}; both with their repeat bonus: HR@10 "
             f"{_share(with_bonus['student'], with_bonus['teacher'], 'HR@10')}, NDCG@10 "
             f"{_share(with_bonus['student'], with_bonus['teacher'], 'NDCG@10')}", "",
             f"artifact: {out / ARTIFACT}, {ph['build']['total_bytes']:,} bytes; item representation "
             f"{ph['build']['item_representation_bytes']:,} bytes, {ph['build']['item_compression_ratio']:.1f}x "
             f"smaller than the fp32 table", f"verify (x86): {'PASS' if ph['verify']['passed'] else 'FAIL'}",
             _speed_line(ph["bench"]), _polish_line(polish),
             f"wall time per phase: {walls}", "", "The same steps by hand:", "", "```",
             f"odrec-export baseline --data {data} --valid-fraction {vf}",
             f"odrec-export train --data {data} --out {run.path('teacher')} --epochs {t['epochs']}{batches(t)} "
             f"--loss {t['loss']} --valid-fraction {vf}",
             f"odrec-export train --data {data} --teacher {run.path('teacher')} --compressor {r['compressor']} "
             f"{shape}--out {run.path('student')} --epochs {s['epochs']}{batches(s)} --loss {s['loss']} "
             f"--valid-fraction {vf}",
             *([] if polish.get("skipped") else [
                 f"odrec-export train --data {data} --teacher {run.path('teacher')} --init {run.path('student')} "
                 f"--out {run.path('polish')} --epochs {polish['epochs']}{batches(polish)} --lr-schedule cosine "
                 f"--loss {polish['loss']} --valid-fraction {vf}"]),
             f"odrec-export repeat-bonus --ckpt {run.path('student' if polish.get('skipped') else 'polish')} "
             f"--data {data} --out {run.path('bonus')} --valid-fraction {vf}",
             f"odrec-export repeat-bonus --ckpt {run.path('teacher')} --data {data} --out {out / 'teacher-bonus.pt'} "
             f"--valid-fraction {vf}",
             f"odrec-export eval --ckpt {out / 'teacher-bonus.pt'} --data {data}   # the teacher + bonus row",
             f"odrec-export build --ckpt {run.path('bonus')} --out {out / ARTIFACT} --eval-data {data} --force",
             f"odrec-export verify {out / ARTIFACT} --ckpt {run.path('bonus')} --data {data} --no-arm",
             f"odrec-export bench {out / ARTIFACT}   # more runs, 2 threads, sessions of 50 too", "```", ""]
    return "\n".join(lines)
