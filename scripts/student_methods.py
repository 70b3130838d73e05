"""Students of one teacher at equal training time: which method closes the gap fastest.

    python scripts/student_methods.py --data ../shared/data/tmall --teacher runs/fit_tmall_2h/teacher.pt \
        --valid-fraction 0.0327 --seconds 600 [--variants codes pq-16x128 pq] [--out runs/methods]

Each variant distils a fresh student from the same teacher file with the same data split, seed and
training seconds (``TrainConfig.time_limit``; the item fit and the test evaluation are timed apart),
in epochs of ``--batches`` batches so validation sees it often. Its repeat bonus is then fitted on
validation, and it is evaluated on the test split with it, beside the teacher with its own bonus.
Prints a table. The variants run one after the other: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

VARIANTS = {  # name -> (compressor, its options, DistillConfig overrides); empty: the defaults
    "codes": ("codes", {}, {}),
    "codes-mse0.1": ("codes", {}, {"mse": 0.1}),
    "codes-frozen-teacher": ("codes", {}, {"teacher_lr": 0.0}),
    "pq": ("pq", {}, {}),
    "pq-16x128": ("pq", {"m": 16, "k": 128}, {}),
    "pq-8x256": ("pq", {"m": 8, "k": 256}, {}),
    "pq-16x256": ("pq", {"m": 16, "k": 256}, {}),
    "pq-sqrt-count": ("pq", {"kmeans_weights": "sqrt-count"}, {}),
    "pq-log-count": ("pq", {"kmeans_weights": "log-count"}, {}),
    "pq-frozen-teacher": ("pq", {}, {"teacher_lr": 0.0}),
    "pq-odrec": ("pq", {}, {"eta": 0.0, "bidirectional": False, "predictive": 0.5}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--valid-fraction", type=float, required=True, help="the teacher's split (fit.json records it)")
    ap.add_argument("--seconds", type=float, default=600.0, help="training seconds per student")
    ap.add_argument("--batches", type=int, default=500, help="batches per epoch (a validation after each)")
    ap.add_argument("--epochs", type=int, default=8, help="planned epochs: the mix-up share η decays over the "
                    "first half of them, as in a fit whose plan they match (the time limit may end them sooner)")
    ap.add_argument("--variants", nargs="+", default=["codes", "codes-mse0.1", "pq"], choices=sorted(VARIANTS))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="runs/methods")
    args = ap.parse_args()

    from odrec_export import fit as F
    from odrec_export.checkpoint import load_checkpoint, save_checkpoint
    from odrec_export.data.sessions import ClickLogProtocol, load_sessions
    from odrec_export.models.registry import model_from_checkpoint
    from odrec_export.pipeline import train_student_on

    sessions = load_sessions(args.data, ClickLogProtocol(valid_fraction=args.valid_fraction))
    cfg = replace(F.train_config(sessions, args.device), epochs=args.epochs, max_batches=args.batches, patience=1000,
                  time_limit=args.seconds)
    teacher = load_checkpoint(args.teacher)
    rows = [("teacher", "-", "-", "-", teacher.provenance.get("test_metrics") or {},
             F.bonus_on_test(model_from_checkpoint(teacher, args.teacher), sessions)[1])]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        compressor, options, distill = VARIANTS[name]
        t0 = time.time()
        ckpt = train_student_on(sessions, cfg, compressor, args.teacher, encoder={}, init=None,
                                options=dict(options), kd=None, distill=dict(distill), progress=lambda it, *_: it,
                                log=print,
                                save=lambda c, n=name: save_checkpoint(c, out / f"{n}.pt"))
        wall = time.time() - t0
        epochs = sum(h["seconds"] for h in ckpt.provenance["history"])
        item = ckpt.provenance["item_bytes"]
        rows.append((name, f"{item['stored_bytes']:,} ({item['fp32_table_bytes'] / item['stored_bytes']:.1f}x)",
                     f"{wall - epochs:.0f}", f"{wall:.0f}",
                     ckpt.provenance.get("test_metrics") or {},
                     F.bonus_on_test(model_from_checkpoint(ckpt, name), sessions)[1]))
        save_checkpoint(ckpt, out / f"{name}.pt")
    t_hr, t_nd = rows[0][5]["HR@10"], rows[0][5]["NDCG@10"]
    print(f"\n{args.seconds:.0f} s of training per student, at most {args.epochs} epochs of {args.batches} batches, "
          f"{args.data}")
    print("| model | item bytes, fp32 (vs the table) | fit + test eval s | wall s | HR@10 | NDCG@10 | + bonus HR@10 | "
          "+ bonus NDCG@10 | share of teacher + bonus |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, fit_s, wall, plain, bonus in rows:
        print(f"| {name} | {size} | {fit_s} | {wall} | {100 * plain.get('HR@10', float('nan')):.2f} | "
              f"{100 * plain.get('NDCG@10', float('nan')):.2f} | {100 * bonus['HR@10']:.2f} | "
              f"{100 * bonus['NDCG@10']:.2f} | {100 * bonus['HR@10'] / t_hr:.0f}% / {100 * bonus['NDCG@10'] / t_nd:.0f}% |")
    (out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
