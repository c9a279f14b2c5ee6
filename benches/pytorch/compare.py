#!/usr/bin/env python3
"""Our CPU training step against the PyTorch port's, on the same configurations, in one run.

    PEER_GLOW_DIR=/path/to/Glow-PyTorch /path/to/python-with-torch benches/pytorch/compare.py [--configs S,K32,P] [--compile] [--rounds N] [--baseline DIR]

For each configuration and round it runs, back to back, `cargo bench --bench
train_step` (our step, its own process) and `port_step.py` (the port's, eager and, with
--compile, through torch.compile), then prints the medians over rounds and the ratios
ours / port. `--baseline DIR` also times another checkout of this project (an earlier
commit, say, from `git worktree add DIR COMMIT`) in the same rounds, for before/after
ratios. The machines this project is measured on are shared and noisy (±30%), so only
ratios taken in one run are worth reporting. Ends with one JSON line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIGS = {"S": (8, 128), "K32": (32, 128), "P": (32, 512)}
STEPS = {"S": 20, "K32": 8, "P": 4}


def last_json(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in:\n" + text)


def ours(name, root=ROOT):
    env = dict(os.environ, BENCH_CONFIGS=name, BENCH_DEVICES="cpu")
    out = subprocess.run(["cargo", "bench", "-q", "--bench", "train_step"], cwd=root, env=env,
                         check=True, capture_output=True, text=True).stdout
    return last_json(out)


def port(name, compiled):
    k, hidden = CONFIGS[name]
    cmd = [sys.executable, os.path.join(HERE, "port_step.py"), "--K", str(k), "--hidden", str(hidden),
           "--steps", str(STEPS[name])] + (["--compile"] if compiled else [])
    return last_json(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="S,K32,P")
    p.add_argument("--compile", action="store_true", help="also time the port through torch.compile")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--baseline", help="another checkout of this project, timed in the same rounds")
    a = p.parse_args()
    for root in [ROOT] + ([a.baseline] if a.baseline else []):
        subprocess.run(["cargo", "bench", "-q", "--bench", "train_step", "--no-run"], cwd=root, check=True)
    results = []
    for name in a.configs.split(","):
        runs = {"ours": [], "baseline": [], "port": [], "port_compiled": []}
        rss = {}
        for _ in range(a.rounds):
            if a.baseline:
                o = ours(name, a.baseline)
                runs["baseline"].append(o["step_s_median"])
                rss["baseline"] = o["peak_rss_bytes"]
            o = ours(name)
            runs["ours"].append(o["step_s_median"])
            rss["ours"] = o["peak_rss_bytes"]
            q = port(name, False)
            runs["port"].append(q["step_s_median"])
            rss["port"] = q["peak_rss_bytes"]
            if a.compile:
                c = port(name, True)
                runs["port_compiled"].append(c["step_s_median"])
                rss["port_compiled"] = c["peak_rss_bytes"]
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        row = {"config": name, "step_s": med, "peak_rss_bytes": rss,
               "ratio_ours_to_port": med["ours"] / med["port"]}
        if "port_compiled" in med:
            row["ratio_ours_to_port_compiled"] = med["ours"] / med["port_compiled"]
        if "baseline" in med:
            row["ratio_baseline_to_port"] = med["baseline"] / med["port"]
        results.append(row)
        line = f"{name:<4} ours {med['ours']:.3f} s/step, port {med['port']:.3f} (ratio {row['ratio_ours_to_port']:.2f})"
        if "baseline" in med:
            line += f", baseline {med['baseline']:.3f} (ratio {row['ratio_baseline_to_port']:.2f})"
        if "port_compiled" in med:
            line += f", port compiled {med['port_compiled']:.3f} (ratio {row['ratio_ours_to_port_compiled']:.2f})"
        line += "; peak RSS " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in rss.items())
        print(line, flush=True)
    print(json.dumps({"bench": "compare_pytorch", "rounds": a.rounds, "results": results}))


if __name__ == "__main__":
    main()
