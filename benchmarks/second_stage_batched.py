"""Second-stage VAEs fitted one by one (one `fit_estimator` per model, as one job per model does,
less the process start-up) against one batched fit of all of them (second_stage.batched), on the
same latents, seed and settings.

    python benchmarks/second_stage_batched.py [--models 13] [--latents 6400] [--hidden 1024] [--epochs 1]

Prints both wall times and their ratio, measured in one run on the current device. The paper's
second stage is 70 epochs over 60,000 MNIST latents (d = 16) with hidden 1024: ~66,000 steps of a
small MLP per model, launch-bound on a GPU, so the batched fit's gain there is close to K.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arelbo.estimators import SecondStageSettings, fit_estimator, fit_second_stages  # noqa: E402
from arelbo.runtime import pick_device  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=13)
    parser.add_argument("--latents", type=int, default=6400)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    device = pick_device("auto")
    g = torch.Generator().manual_seed(0)
    latents = [(torch.randn(args.latents, args.dim, generator=g), torch.randn(args.latents, args.dim, generator=g) - 2)
               for _ in range(args.models)]
    settings = replace(SecondStageSettings(), epochs=args.epochs, hidden=args.hidden)
    fit_estimator("2ndvae", *latents[0], seed=0, second_stage=replace(settings, epochs=1), device=device,
                  progress=False)   # kernels, allocator
    _sync(device)
    start = time.perf_counter()
    for mu, logvar in latents:
        fit_estimator("2ndvae", mu, logvar, seed=0, second_stage=settings, device=device, progress=False)
    _sync(device)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    fit_second_stages(latents, seed=0, settings=settings, device=device, progress=False,
                      names=[f"m{k}" for k in range(args.models)])
    _sync(device)
    batched_s = time.perf_counter() - start
    steps = args.epochs * -(-args.latents // settings.batch_size)
    print(f"device {device}, {torch.get_num_threads()} threads; {args.models} second stages (hidden {args.hidden}, "
          f"d {args.dim}), {steps} steps each (batch {settings.batch_size})")
    print(f"one by one {single_s:.1f} s   batched {batched_s:.1f} s   speed-up {single_s / batched_s:.2f}x")


if __name__ == "__main__":
    main()
