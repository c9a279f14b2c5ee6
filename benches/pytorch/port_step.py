#!/usr/bin/env python3
"""One training step of the common PyTorch port of Glow, timed on the same work as
`cargo bench --bench train_step`.

The port is y0ast/Glow-PyTorch (MIT licence); point PEER_GLOW_DIR at a checkout of it.
The model: L=3, the given K and hidden width, affine coupling, LU-decomposed 1x1
convolutions, learned top prior, batch 16 of 32x32x3 inputs; one step is forward,
backward, gradient clipping at 50 and an Adamax update with weight decay 5e-5. Prints
one JSON line with the median step time and this process's peak RSS.

Benchmark-only: torch is never a build or test dependency of the project.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

peer_dir = os.environ.get("PEER_GLOW_DIR")
if not peer_dir or not os.path.isfile(os.path.join(peer_dir, "model.py")):
    sys.exit("port_step.py: set PEER_GLOW_DIR to a checkout of y0ast/Glow-PyTorch (with model.py)")
sys.path.insert(0, peer_dir)
# The port predates current torch, which removed torch.qr; map it onto torch.linalg.qr.
torch.qr = lambda A, some=True: torch.linalg.qr(A, mode="reduced" if some else "complete")
from model import Glow  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor); its first two steps compile and are not timed")
    a = p.parse_args()
    batch, levels = a.batch, 3
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = Glow((32, 32, 3), a.hidden, a.K, levels, 1.0, "invconv", "affine", True, 10, True, False).to(dev)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-4, weight_decay=5e-5)
    x = torch.from_numpy(np.random.default_rng(1).uniform(-0.5, 0.5, (batch, 3, 32, 32)).astype(np.float32)).to(dev)
    model.train()
    with torch.no_grad():  # ActNorm's data-dependent initialisation
        model(x, None)
    fwd = torch.compile(model) if a.compile else model
    warmup = 3 if a.compile else 1
    times = []
    for s in range(a.steps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad()
        _, bpd, _ = fwd(x, None)
        loss = bpd.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        opt.step()
        loss.item()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({
        "peer": "y0ast/Glow-PyTorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "K": a.K, "hidden": a.hidden, "batch": batch, "compiled": a.compile, "steps": a.steps,
        "step_s_median": float(np.median(times)), "step_s_min": float(np.min(times)),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
