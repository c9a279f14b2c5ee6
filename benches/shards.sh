#!/usr/bin/env bash
# Batch-parallel training inside one process: config S (L=3, K=8, hidden 128, learned top
# prior, batch 16, CPU device) for STEPS steps (default 100) with --shards 1 and with
# --shards N (default: the machine's cores), alternated for ROUNDS rounds (default 3),
# each run's images/s as the example reports it (from its first step to its last, the
# ActNorm initialisation and the first checkpoint excluded). Prints every run, the median
# of each and their ratio, and the ratio as JSON on the last line.
#
# Usage: benches/shards.sh [STEPS] [ROUNDS] [N]   (release example built first:
#        cargo build --release --example train_cifar10)
set -euo pipefail
steps=${1:-100}
rounds=${2:-3}
n=${3:-$(nproc)}
bin=${BIN:-target/release/examples/train_cifar10}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
one() { # shards round
  "$bin" --device cpu --levels 3 --depth 8 --hidden 128 --learn-top --batch 16 \
    --steps "$steps" --seed 0 --eval-every 0 --sample-every 0 --shards "$1" \
    --out "$dir/s$1-r$2" 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])["images_per_sec"])'
}
: >"$dir/one"
: >"$dir/many"
for r in $(seq "$rounds"); do
  a=$(one 1 "$r"); b=$(one "$n" "$r")
  echo "round $r: --shards 1 $a images/s, --shards $n $b images/s"
  echo "$a" >>"$dir/one"
  echo "$b" >>"$dir/many"
done
python3 - "$dir/one" "$dir/many" "$n" <<'PY'
import json, statistics, sys
one = statistics.median(float(l) for l in open(sys.argv[1]))
many = statistics.median(float(l) for l in open(sys.argv[2]))
print(f"medians: --shards 1 {one:.1f} images/s, --shards {sys.argv[3]} {many:.1f} images/s, {many / one:.2f}x")
print(json.dumps({"shards": int(sys.argv[3]), "one_images_per_sec": one, "shards_images_per_sec": many, "speedup": many / one}))
PY
