#!/usr/bin/env bash
# Writes docs/figures/data/*.json, the inputs of `make figures` (about 20 min on 2 cores; run it on a
# quiet machine: the latency figures are medians of interleaved runs, but absolute values move with load).
# Needs build/demo/artifact (make demo) and, for compare.json, the four equal-budget Tmall artifacts of
# docs/results.md ("Figures") in build/kd/.
set -euo pipefail
CLI=${CLI:-.venv/bin/odrec-export}
DATA=docs/figures/data
mkdir -p "$DATA"
export OMP_NUM_THREADS=1
$CLI size-report build/demo/artifact --json > "$DATA/size_report.json"
$CLI bench build/demo/artifact --json > "$DATA/scale_40727.json"
for n in 200000 1000000 5000000; do
  test -f "runs/synth_$n.pt" || $CLI synth-catalogue --like models/tmall/student.pt --items "$n" --out "runs/synth_$n.pt"
  $CLI build --ckpt "runs/synth_$n.pt" --out "build/synth_$n" --force > /dev/null
  quick=$([ "$n" -ge 5000000 ] && echo --quick || true)
  $CLI bench "build/synth_$n" $quick --json > "$DATA/scale_$n.json"
done
if [ -d build/kd/codes ]; then
  $CLI bench --compare build/kd/codes build/kd/stt build/kd/tt build/kd/none --json > "$DATA/compare.json"
fi
