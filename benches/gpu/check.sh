#!/usr/bin/env bash
# The GPU check: the Vulkan device against the CPU device, and training steps against
# the PyTorch port, as one JSON report (its last line). See README.md beside this file.
#
#   bash benches/gpu/check.sh --build   # here: release binaries and the port into out/
#   bash benches/gpu/check.sh --run     # on the GPU machine, from the repository root
#   bash benches/gpu/check.sh --local   # both here, small, on the CPU Vulkan driver
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/out"

# Configurations of the training steps, NAME:BATCH (NAME as in benches/train_step.rs).
CONFIGS="${GPU_CHECK_CONFIGS:-S:16 S:64 P:16 P:64}"
STEPS="${GPU_CHECK_STEPS:-5}"
TORCH_DEVICE="${GPU_CHECK_TORCH_DEVICE:-cuda}"

# Builds bench target $1 (progress on stderr) and prints the executable's path.
executable() {
    (cd "$ROOT" && cargo bench --no-run --bench "$1" --message-format=json) |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-message":
        print(m["message"].get("rendered", ""), file=sys.stderr, end="")
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1" | tail -1
}

build() {
    mkdir -p "$OUT"
    for bench in gpu_check train_step; do
        local exe
        exe="$(executable "$bench")"
        [ -n "$exe" ] || { echo "check.sh: building $bench failed" >&2; exit 1; }
        cp "$exe" "$OUT/$bench"
        strip "$OUT/$bench" 2>/dev/null || true
    done
    cp "$ROOT/benches/pytorch/port_step.py" "$OUT/"
    # The port's model files (benchmark-only), from the shared folder beside the checkout.
    local peer="${PEER_GLOW_DIR:-$ROOT/../shared/peer/glow-pytorch}"
    if [ -f "$peer/model.py" ]; then
        # Writable copies (the shared folder is read-only), so the next --build can replace them.
        rm -rf "$OUT/glow-pytorch" && cp -r "$peer" "$OUT/glow-pytorch" && chmod -R u+w "$OUT/glow-pytorch"
    else
        echo "check.sh: no port at $peer (set PEER_GLOW_DIR); the report will skip PyTorch" >&2
    fi
    # A machine with a GPU driver but no Vulkan loader gets Debian's (unpacked by --run).
    if command -v apt-get >/dev/null && [ -z "${GPU_CHECK_NO_LOADER:-}" ]; then
        (cd "$OUT" && apt-get download libvulkan1 >/dev/null 2>&1) ||
            echo "check.sh: could not download libvulkan1; --run needs a Vulkan loader there" >&2
    fi
    du -sh "$OUT" >&2
}

# The last line of $1's output that is a JSON object, or `null`.
last_json() {
    grep '^{' <<<"$1" | tail -1 || true
}

run() {
    local lib="$OUT/loader"
    if ls "$OUT"/*.deb >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
        rm -rf "$lib" && mkdir -p "$lib"
        for deb in "$OUT"/*.deb; do dpkg -x "$deb" "$lib"; done
        export LD_LIBRARY_PATH="$(dirname "$(find "$lib" -name 'libvulkan.so.1' | head -1)"):${LD_LIBRARY_PATH:-}"
    fi
    local parts="$OUT/parts.jsonl"
    : >"$parts"
    echo "check.sh: primitives and the model, GPU against CPU" >&2
    local report
    report="$("$OUT/gpu_check" || true)"
    echo "{\"part\":\"gpu_check\",\"result\":$(last_json "$report" || echo null)}" >>"$parts"
    local torch=0
    if [ -f "$OUT/glow-pytorch/model.py" ] && python3 -c 'import torch' 2>/dev/null; then torch=1; fi
    for c in $CONFIGS; do
        local name="${c%%:*}" batch="${c##*:}" k hidden
        case "$name" in S) k=8 hidden=128 ;; K32) k=32 hidden=128 ;; P) k=32 hidden=512 ;; *) echo "unknown config $name" >&2; exit 2 ;; esac
        echo "check.sh: train step $name batch $batch on Vulkan" >&2
        local ours
        ours="$(BENCH_CONFIGS="$name" BENCH_BATCH="$batch" BENCH_STEPS="$STEPS" BENCH_DEVICES=vulkan "$OUT/train_step" || true)"
        echo "{\"part\":\"ours\",\"config\":\"$name\",\"batch\":$batch,\"result\":$(last_json "$ours" || echo null)}" >>"$parts"
        if [ "$torch" = 1 ]; then
            echo "check.sh: the PyTorch port, $name batch $batch on $TORCH_DEVICE" >&2
            local theirs
            theirs="$(PEER_GLOW_DIR="$OUT/glow-pytorch" python3 "$OUT/port_step.py" --K "$k" --hidden "$hidden" \
                --batch "$batch" --steps "$STEPS" --device "$TORCH_DEVICE" || true)"
            echo "{\"part\":\"pytorch\",\"config\":\"$name\",\"batch\":$batch,\"result\":$(last_json "$theirs" || echo null)}" >>"$parts"
        fi
    done
    # One report: the parts, and ours / port for each configuration both ran.
    python3 - "$parts" "$torch" "$TORCH_DEVICE" <<'PY'
import json, sys
parts = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {"bench": "gpu_check_report", "pytorch": "ran on " + sys.argv[3] if sys.argv[2] == "1" else "skipped (no torch or no port)"}
out["gpu_check"] = next((p["result"] for p in parts if p["part"] == "gpu_check"), None)
out["train_step"] = [dict(config=p["config"], batch=p["batch"], result=p["result"]) for p in parts if p["part"] == "ours"]
out["pytorch_step"] = [dict(config=p["config"], batch=p["batch"], result=p["result"]) for p in parts if p["part"] == "pytorch"]
ratios = []
for o in out["train_step"]:
    t = next((q for q in out["pytorch_step"] if (q["config"], q["batch"]) == (o["config"], o["batch"])), None)
    if o["result"] and t and t["result"]:
        ratios.append(dict(config=o["config"], batch=o["batch"], ours_s=o["result"]["step_s_median"],
                           pytorch_s=t["result"]["step_s_median"],
                           ours_over_pytorch=o["result"]["step_s_median"] / t["result"]["step_s_median"]))
out["ratios"] = ratios
print(json.dumps(out))
PY
}

case "${1:-}" in
    --build) build ;;
    --run) run ;;
    --local)
        # The same flow on this machine: the CPU Vulkan driver (lavapipe), small steps,
        # PyTorch on the CPU when this python3 has torch, and no paper-width convolutions
        # in the primitive sweep (lavapipe takes minutes over them).
        export GPU_CHECK_QUICK="${GPU_CHECK_QUICK:-1}" GPU_CHECK_NO_LOADER=1
        CONFIGS="${GPU_CHECK_CONFIGS:-S:4}" STEPS="${GPU_CHECK_STEPS:-1}" TORCH_DEVICE="${GPU_CHECK_TORCH_DEVICE:-cpu}"
        build
        run
        ;;
    *)
        echo "usage: bash benches/gpu/check.sh --build | --run | --local" >&2
        exit 2
        ;;
esac
