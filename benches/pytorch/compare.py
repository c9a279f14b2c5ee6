#!/usr/bin/env python3
"""Our CPU training step and forward pass against the PyTorch port's, on the same
configurations, in one run.

    PEER_GLOW_DIR=/path/to/Glow-PyTorch /path/to/python-with-torch benches/pytorch/compare.py \
        [--configs S,K32,P] [--rounds N] [--compile] [--bf16] [--forward] [--example] \
        [--shards N] [--baseline DIR]

For each configuration and round it runs, back to back, each in its own process:

- ours: `cargo bench --bench train_step` (one training step, f32) and, with `--shards N`,
  its batch-parallel step (`BENCH_SHARDS=N`: N threads, each a shard of the batch);
- the port: `port_step.py` (eager) and, with `--compile`, through `torch.compile`;
- `--bf16`: ours with `BENCH_PRECISION=bf16` and the port under
  `torch.autocast("cpu", dtype=torch.bfloat16)`;
- `--example`: the user's path, `train_cifar10` on the built-in sample (data,
  dequantisation, logging and checkpoints included; its own images/s), and with
  `--shards N` also its batch-parallel run (`--shards N`);
- `--forward`: forward only, our `evaluate` (its own images/s, model loaded) against the
  port's forward pass under `torch.inference_mode()` (images/s, best of three passes),
  in f32 and, with `--bf16`, in bf16 for both;
- `--baseline DIR`: another checkout of this project (an earlier commit, say, from
  `git worktree add DIR COMMIT`) timed by the same benchmark, for before/after ratios.

It prints the medians over rounds and every ratio, ours over theirs: for step times
(s/step) below 1 means we are faster, for the forward rows (images/s) above 1 does; then
one JSON line. The machines this project is measured on are shared and noisy (±30%), so
only ratios taken in one run are worth reporting. Build first: `cargo build --release
--examples` (the script does it).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIGS = {"S": (8, 128), "K32": (32, 128), "S512": (8, 512), "P": (32, 512)}
STEPS = {"S": 20, "K32": 8, "S512": 6, "P": 4}
EXAMPLE_STEPS = {"S": 60, "K32": 20, "S512": 16, "P": 6}
# Forward only: our evaluate's split of the built-in sample (2,700 train or 300 test
# images) and the port's image count, a few seconds each.
FORWARD = {"S": ("train", 1024), "K32": ("test", 512), "S512": ("test", 512), "P": ("test", 256)}
EXAMPLES = os.path.join(ROOT, "target", "release", "examples")


def last_json(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in:\n" + text)


def run(cmd, env=None, cwd=ROOT):
    out = subprocess.run(cmd, cwd=cwd, env=dict(os.environ, **(env or {})), check=True,
                         capture_output=True, text=True)
    return last_json(out.stdout)


def bench(name, precision="f32", root=ROOT, shards=1):
    env = {"BENCH_CONFIGS": name, "BENCH_DEVICES": "cpu", "BENCH_PRECISION": precision,
           "BENCH_SHARDS": str(shards)}
    return run(["cargo", "bench", "-q", "--bench", "train_step"], env, root)


def model_flags(name):
    k, hidden = CONFIGS[name]
    return ["--device", "cpu", "--levels", "3", "--depth", str(k), "--hidden", str(hidden), "--learn-top"]


def example(name, tmp, steps, shards=1):
    """Seconds per step of train_cifar10 (its images/s over batch 16), in a new folder."""
    out = tempfile.mkdtemp(prefix=name + "-run-", dir=tmp)
    cmd = [os.path.join(EXAMPLES, "train_cifar10")] + model_flags(name) + [
        "--batch", "16", "--steps", str(steps), "--seed", "0", "--eval-every", "0",
        "--sample-every", "0", "--shards", str(shards), "--out", out]
    return 16 / run(cmd)["images_per_sec"]


def evaluate(name, checkpoint, precision):
    split = FORWARD[name][0]
    cmd = [os.path.join(EXAMPLES, "evaluate"), "--checkpoint", checkpoint, "--device", "cpu",
           "--split", split, "--batch", "64", "--matmul-precision", precision]
    return run(cmd)["images_per_sec"]


def port(name, compiled=False, bf16=False, forward=False):
    k, hidden = CONFIGS[name]
    cmd = [sys.executable, os.path.join(HERE, "port_step.py"), "--K", str(k), "--hidden", str(hidden)]
    if forward:
        cmd += ["--forward", str(FORWARD[name][1]), "--batch", "64"]
    else:
        cmd += ["--steps", str(STEPS[name])]
    cmd += (["--compile"] if compiled else []) + (["--bf16"] if bf16 else [])
    return run(cmd)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="S,K32,P")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also time the port through torch.compile")
    p.add_argument("--bf16", action="store_true", help="also time both with bf16 products")
    p.add_argument("--forward", action="store_true", help="also time the forward pass alone")
    p.add_argument("--example", action="store_true", help="also time our training example")
    p.add_argument("--shards", type=int, default=0,
                   help="also our batch-parallel step in N shards (BENCH_SHARDS=N, and with --example its --shards N run)")
    p.add_argument("--baseline", help="another checkout of this project, timed in the same rounds")
    a = p.parse_args()
    for root in [ROOT] + ([a.baseline] if a.baseline else []):
        subprocess.run(["cargo", "bench", "-q", "--bench", "train_step", "--no-run"], cwd=root, check=True)
    subprocess.run(["cargo", "build", "-q", "--release", "--example", "train_cifar10",
                    "--example", "evaluate"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="compare-")  # left for inspection; runs are small
    results = []
    for name in a.configs.split(","):
        checkpoint = None
        if a.forward:
            # Any trained weights do for timing: one step's.
            out = os.path.join(tmp, name + "-model")
            run([os.path.join(EXAMPLES, "train_cifar10")] + model_flags(name) + [
                "--batch", "16", "--steps", "1", "--eval-every", "0", "--sample-every", "0", "--out", out])
            checkpoint = os.path.join(out, "checkpoint.safetensors")
        runs, rss, ceiling = {}, {}, []

        def add(key, value, mem=None):
            runs.setdefault(key, []).append(value)
            if mem is not None:
                rss[key] = mem

        for _ in range(a.rounds):
            if a.baseline:
                o = bench(name, root=a.baseline)
                add("baseline", o["step_s_median"], o["peak_rss_bytes"])
            o = bench(name)
            add("ours", o["step_s_median"], o["peak_rss_bytes"])
            ceiling.append(o["fraction_of_ceiling"])
            if a.shards > 1:
                o = bench(name, shards=a.shards)
                add("ours_shards", o["step_s_median"], o["peak_rss_bytes"])
            if a.example:
                add("ours_example", example(name, tmp, EXAMPLE_STEPS[name]))
                if a.shards > 1:
                    add("ours_example_shards",
                        example(name, tmp, EXAMPLE_STEPS[name], a.shards))
            q = port(name)
            add("port", q["step_s_median"], q["peak_rss_bytes"])
            if a.compile:
                c = port(name, compiled=True)
                add("port_compiled", c["step_s_median"], c["peak_rss_bytes"])
            if a.bf16:
                o = bench(name, "bf16")
                add("ours_bf16", o["step_s_median"], o["peak_rss_bytes"])
                q = port(name, bf16=True)
                add("port_bf16", q["step_s_median"], q["peak_rss_bytes"])
            if a.forward:
                add("ours_forward", evaluate(name, checkpoint, "f32"))
                add("port_forward", port(name, forward=True)["images_per_s"])
                if a.bf16:
                    add("ours_forward_bf16", evaluate(name, checkpoint, "bf16"))
                    add("port_forward_bf16", port(name, bf16=True, forward=True)["images_per_s"])
        med = {k: statistics.median(v) for k, v in runs.items()}
        ratios = {}

        def ratio(label, num, den):
            if num in med and den in med:
                ratios[label] = med[num] / med[den]

        ratio("ours/port", "ours", "port")
        ratio("ours/port_compiled", "ours", "port_compiled")
        ratio("baseline/port", "baseline", "port")
        ratio("ours/baseline", "ours", "baseline")
        ratio("ours_shards/ours", "ours_shards", "ours")
        ratio("ours_shards/port", "ours_shards", "port")
        ratio("ours_shards/port_compiled", "ours_shards", "port_compiled")
        ratio("example/bench", "ours_example", "ours")
        ratio("example/port", "ours_example", "port")
        ratio("example/port_compiled", "ours_example", "port_compiled")
        ratio("example_shards/example", "ours_example_shards", "ours_example")
        ratio("example_shards/port", "ours_example_shards", "port")
        ratio("example_shards/port_compiled", "ours_example_shards", "port_compiled")
        ratio("ours_bf16/port", "ours_bf16", "port")
        ratio("ours_bf16/port_bf16", "ours_bf16", "port_bf16")
        ratio("ours_bf16/ours", "ours_bf16", "ours")
        ratio("forward ours/port (images/s)", "ours_forward", "port_forward")
        ratio("forward ours_bf16/port (images/s)", "ours_forward_bf16", "port_forward")
        ratio("forward ours_bf16/port_bf16 (images/s)", "ours_forward_bf16", "port_forward_bf16")
        row = {"config": name, "medians": med, "runs": runs, "ratios": ratios, "peak_rss_bytes": rss,
               "fraction_of_sgemm_ceiling": statistics.median(ceiling)}
        results.append(row)
        print(f"{name}: medians of {a.rounds} rounds (s/step; forward rows images/s)")
        for k, v in med.items():
            print(f"  {k:<22} {v:9.4f}")
        print(f"  whole step at {row['fraction_of_sgemm_ceiling']:.0%} of the SGEMM ceiling (f32 benchmark)")
        for k, v in ratios.items():
            print(f"  {k:<40} {v:6.2f}")
        print("  peak RSS: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in rss.items()), flush=True)
    print(json.dumps({"bench": "compare_pytorch", "rounds": a.rounds, "results": results}))


if __name__ == "__main__":
    main()
