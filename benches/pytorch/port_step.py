#!/usr/bin/env python3
"""One training step of the common PyTorch port of Glow, timed on the same work as
`cargo bench --bench train_step`.

The port is y0ast/Glow-PyTorch (MIT licence); point PEER_GLOW_DIR at a checkout of it.
The model: L=3, the given K and hidden width, affine coupling, LU-decomposed 1x1
convolutions, learned top prior, batch 16 of 32x32x3 inputs; one step is forward,
backward, gradient clipping at 50 and an Adamax update with weight decay 5e-5. Prints
one JSON line with the median step time and this process's peak RSS.

`--bf16` runs forward and backward under `torch.autocast("cpu", dtype=torch.bfloat16)`
(bf16 convolutions and matmuls through oneDNN, f32 weights and optimiser): PyTorch's
figure to put beside our `--matmul-precision bf16`. `--forward N` times the forward pass
alone instead (images/s over N images in batches of `--batch`, best of three passes under
`torch.inference_mode()`), the figure to put beside our `evaluate`.

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
    p.add_argument("--bf16", action="store_true", help="under torch.autocast('cpu', dtype=torch.bfloat16)")
    p.add_argument("--forward", type=int, metavar="N", default=0,
                   help="time the forward pass alone over N images (images/s) instead of a training step")
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
    autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16)  # noqa: E731
    if a.forward:
        return forward_only(a, model, dev, autocast)
    fwd = torch.compile(model) if a.compile else model
    warmup = 3 if a.compile else 1
    times = []
    for s in range(a.steps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad()
        with autocast():
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
        "K": a.K, "hidden": a.hidden, "batch": batch, "compiled": a.compile, "bf16": a.bf16, "steps": a.steps,
        "step_s_median": float(np.median(times)), "step_s_min": float(np.min(times)),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


def forward_only(a, model, dev, autocast):
    """Images/s of the forward pass alone (bits/dim of each image, as `evaluate` computes)."""
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (a.forward, 3, 32, 32), dtype=np.uint8)
    x = torch.from_numpy(u8.astype(np.float32) / 256.0 - 0.5).to(dev)
    model.eval()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast():
            for i in range(0, a.forward, a.batch):
                _, bpd, _ = model(x[i:i + a.batch], None)
                bpd.float().sum().item()
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "peer": "y0ast/Glow-PyTorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "K": a.K, "hidden": a.hidden, "batch": a.batch, "bf16": a.bf16, "images": a.forward,
        "images_per_s": a.forward / min(times),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
