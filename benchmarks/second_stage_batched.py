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
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import report_one_by_one_vs_batched  # noqa: E402

from arelbo.core.config import paper_config  # noqa: E402
from arelbo.core.runtime import pick_device  # noqa: E402
from arelbo.models.estimators import fit_estimator, fit_second_stages  # noqa: E402


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
    latents = [
        (torch.randn(args.latents, args.dim, generator=g), torch.randn(args.latents, args.dim, generator=g) - 2)
        for _ in range(args.models)
    ]
    settings = replace(paper_config().second_stage.settings, epochs=args.epochs, hidden=args.hidden)
    fit_estimator(
        "2ndvae", *latents[0], seed=0, second_stage=replace(settings, epochs=1), device=device, progress=False
    )  # kernels, allocator

    def one_by_one():
        for mu, logvar in latents:
            fit_estimator("2ndvae", mu, logvar, seed=0, second_stage=settings, device=device, progress=False)

    report_one_by_one_vs_batched(
        device,
        f"{args.models} second stages (hidden {args.hidden}, d {args.dim})",
        args.epochs * -(-args.latents // settings.batch_size),
        settings.batch_size,
        one_by_one,
        lambda: fit_second_stages(
            latents,
            seed=0,
            settings=settings,
            device=device,
            progress=False,
            names=[f"m{k}" for k in range(args.models)],
        ),
    )


if __name__ == "__main__":
    main()
