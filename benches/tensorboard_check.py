#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own reader and checks them
against the run's metrics.jsonl: every step's train/bpd, every evaluation's test/bpd (and
test/bpd_ema when the run keeps a moving average), and one image per sample grid that
decodes as a PNG of its stated size. Prints what it found as one JSON line; exits 1 on a
mismatch. `tests/tensorboard.rs` decodes the same files without TensorBoard.

    pip install tensorboard
    cargo run --release --example train_cifar10 -- --steps 40 --eval-every 20 \
        --sample-every 40 --ema 0.99 --tensorboard --out runs/tb
    python3 benches/tensorboard_check.py runs/tb

A run that crashed after a checkpoint and resumed checks too: TensorBoard drops the
steps the crashed process logged after its checkpoint (the SessionLog START a resume
writes), so the series match the log, which the resume cut back the same way.
"""
import json
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(run):
    log = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    acc = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    problems = []

    def series(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in tags["scalars"] else []

    def same(tag, want):
        got = series(tag)
        close = len(got) == len(want) and all(
            s == t and abs(a - b) <= 1e-6 * max(1.0, abs(b)) for (s, a), (t, b) in zip(got, want)
        )
        if not close:
            problems.append(f"{tag}: {got[:3]}... against the log's {want[:3]}...")

    steps = [(v["step"], v["bpd"]) for v in log if "loss" in v]
    evals = [v for v in log if "test_bpd" in v]
    same("train/bpd", steps)
    same("test/bpd", [(v["step"], v["test_bpd"]) for v in evals])
    if any("test_bpd_ema" in v for v in evals):
        same("test/bpd_ema", [(v["step"], v["test_bpd_ema"]) for v in evals])
    images = acc.Images("samples") if "samples" in tags["images"] else []
    for image in images:
        png = image.encoded_image_string
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            problems.append(f"image at step {image.step} is not a PNG")
        elif struct.unpack(">II", png[16:24]) != (image.width, image.height):
            problems.append(f"image at step {image.step}: size differs from its PNG's")
    grids = sum(1 for v in log if "samples" in v)
    if len(images) != grids:
        problems.append(f"{len(images)} images for {grids} sample grids")
    print(json.dumps({
        "scalar_tags": sorted(tags["scalars"]),
        "steps": len(series("train/bpd")),
        "evaluations": len(series("test/bpd")),
        "images": len(images),
        "problems": problems,
    }))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/cifar10"))
