"""Section 3 grid points trained one by one (one `fit` per point, as one job per point does, less
the process start-up) against one batched training of the same points (section3.batched), on the
same images, seed and settings.

    python benchmarks/section3_batched.py [--points 5] [--images 640] [--batch-size 32] [--group table5]

Prints both wall times and their ratio, measured in one run on the current device. Add each job's
start-up (`import torch` and the data) to the one-by-one side for the DAG's real saving.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import report_one_by_one_vs_batched  # noqa: E402

from arelbo.core.config import load_config  # noqa: E402
from arelbo.core.layout import GridPoint, section3_group_checkpoint  # noqa: E402
from arelbo.core.runtime import pick_device  # noqa: E402
from arelbo.stages.section3 import train_point, train_points_batched  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--group", default="table5", choices=["table1/stochastic", "table1/deterministic", "table5"])
    args = parser.parse_args()
    values = [round(1.0 - 2.0 * i / max(args.points - 1, 1), 1) for i in range(args.points)]
    if args.group == "table5":
        points = [GridPoint(5, log10_sigma_z2=v) for v in values]
    else:
        points = [GridPoint(1, args.group.split("/")[1], log10_sigma_x2=min(v, 0.0) - 0.0) for v in values]
        points = list({p.id: p for p in points}.values())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load_config(
            Path(__file__).resolve().parents[1] / "config" / "ci.yaml",
            check_folders=False,
            overrides={
                "outdir": str(tmp),
                "data": {"mnist": {"limit": {"train": max(args.images, 512), "val": 64, "test": 64}}},
                "section3": {
                    "train": {"lr": 1e-3, "epochs": args.epochs, "batch_size": args.batch_size},
                    "train_limit": args.images,
                },
            },
        )
        device = pick_device(cfg.device)
        train_point(cfg, points[0], 0, tmp / "warm", progress=False)  # data cache, kernels, allocator

        def one_by_one():
            for p in points:
                train_point(cfg, p, 0, tmp / "single" / p.id, progress=False)

        report_one_by_one_vs_batched(
            device,
            f"{len(points)} points of {args.group}",
            args.epochs * -(-args.images // args.batch_size),
            args.batch_size,
            one_by_one,
            lambda: train_points_batched(
                cfg,
                points,
                0,
                [tmp / "batched" / p.id for p in points],
                section3_group_checkpoint(tmp / "batched", args.group, 0),
                progress=False,
            ),
        )


if __name__ == "__main__":
    main()
