#!/usr/bin/env bash
# The training recipe's effect on quality: config S (L=3, K=8, hidden 128, learned top
# prior, batch 16, seed 0, CPU device) on the built-in sample for STEPS steps (default
# 6000), without and with augmentation (--translate --flip), each keeping a moving average
# of the weights (--ema 0.999), which changes nothing in training: so each run gives both
# the raw and the averaged weights' figures.
#
# Every third of the way the run stops (a resume continues it bit for bit) and the
# checkpoint is evaluated on both splits, raw and averaged, with the same dequantisation
# noise (evaluate, --seed 0): train bits/dim is the training split as stored, so the gap
# is the model's, not the augmentation's.
#
# Prints one table row per run, leg and weights, and writes them as JSON lines to
# $OUT/quality.jsonl. Both runs go in parallel, one thread each (18 minutes for 6000
# steps on a 2-core machine; the table it gave is in docs/measurements.md).
#
# Usage: [BIN=dir] benches/quality.sh [STEPS] [OUT]   (BIN: where train_cifar10 and
#        evaluate are, by default the release examples, built first:
#        cargo build --release --examples)
set -euo pipefail
steps=${1:-6000}
out=${2:-runs/quality}
bin=${BIN:-target/release/examples}
mkdir -p "$out"
: >"$out/quality.jsonl"

leg() { # name extra-flags...
  local name=$1
  shift
  local dir="$out/$name"
  rm -rf "$dir"
  for k in 1 2 3; do
    local at=$((steps * k / 3))
    local resume=()
    [ "$k" -gt 1 ] && resume=(--resume)
    RAYON_NUM_THREADS=1 "$bin/train_cifar10" --device cpu --levels 3 --depth 8 --hidden 128 \
      --learn-top --batch 16 --seed 0 --steps "$at" --eval-every $((steps / 3)) \
      --sample-every "$steps" --ema 0.999 --out "$dir" "${resume[@]}" "$@" \
      >>"$dir.log" 2>&1
    for split in train test; do
      for weights in raw ema; do
        local bpd
        bpd=$(RAYON_NUM_THREADS=1 "$bin/evaluate" --device cpu \
          --checkpoint "$dir/checkpoint.safetensors" --split "$split" \
          --weights "$weights" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["bpd"])')
        echo "{\"run\": \"$name\", \"step\": $at, \"split\": \"$split\", \"weights\": \"$weights\", \"bpd\": $bpd}" \
          >>"$out/quality.jsonl"
      done
    done
  done
}

leg plain &
leg augmented --translate --flip &
wait

python3 - "$out/quality.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
get = {(r["run"], r["step"], r["split"], r["weights"]): r["bpd"] for r in rows}
print("| run | weights | step | train bpd | test bpd | gap |")
print("|---|---|---|---|---|---|")
for run in ["plain", "augmented"]:
    for w in ["raw", "ema"]:
        for step in sorted({r["step"] for r in rows}):
            tr, te = get.get((run, step, "train", w)), get.get((run, step, "test", w))
            if tr is None or te is None:
                continue
            print(f"| {run} | {w} | {step} | {tr:.4f} | {te:.4f} | {te - tr:+.4f} |")
EOF
