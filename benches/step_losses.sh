#!/usr/bin/env bash
# The per-step losses of a fixed-seed run of config S (L=3, K=8, hidden 128, learned top
# prior, batch 16, seed 0, CPU device), 20 steps in stored and in reversible mode, as
# "step stored reversible". A restructuring must leave them identical, bit for bit:
#
#   git stash; cargo build --release --example train_cifar10
#   cp target/release/examples/train_cifar10 /tmp/before
#   git stash pop; cargo build --release --example train_cifar10
#   diff <(benches/step_losses.sh /tmp/before) <(benches/step_losses.sh target/release/examples/train_cifar10)
#
# Usage: benches/step_losses.sh [BINARY] [STEPS]   (default: the release example, 20)
set -euo pipefail
bin=${1:-target/release/examples/train_cifar10}
steps=${2:-20}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for mem in stored reversible; do
  RAYON_NUM_THREADS=2 "$bin" --device cpu --levels 3 --depth 8 --hidden 128 --learn-top \
    --batch 16 --steps "$steps" --seed 0 --eval-every 0 --sample-every 0 \
    --memory "$mem" --out "$dir/$mem" >/dev/null 2>"$dir/$mem.err" ||
    { echo "$mem mode failed:" >&2; tail -3 "$dir/$mem.err" >&2; exit 1; }
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    v = json.loads(line)
    if "loss" in v:
        print(v["step"], repr(v["loss"]))' "$dir/$mem/metrics.jsonl" >"$dir/$mem.losses"
done
paste -d' ' "$dir/stored.losses" "$dir/reversible.losses" | awk '{print $1, $2, $4}'
