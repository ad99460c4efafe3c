"""The Fréchet distance at the paper's sizes (10,000 generated features, D = 2048): arelbo's route
(two symmetric eigenproblems in float64, on the device) against pytorch-fid's
`calculate_frechet_distance` (scipy's sqrtm of the non-symmetric product), on the same statistics.

    python benchmarks/frechet_distance.py [--n 10000] [--dim 2048] [--repeats 3]

Prints both distances (they must agree to 1e-6 relative), each route's best-of-repeats wall time on
the CPU and, where CUDA is usable, arelbo's on the GPU, and the ratios, measured in one run. Then the
cost of one FID bootstrap resample at this N (`bootstrap_resample_s` of arelbo/reference/costs.yaml;
the paper's 1,000 per FID make it the largest evaluation cost `arelbo plan` projects on a GPU):
(time of R resamples − time of 1) / (R − 1), so the fixed part (√Σ_ref) is not counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arelbo.metrics.fid import feature_stats, fid_bootstrap, frechet_distance_to_features  # noqa: E402


def best_of(repeats: int, fn):
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=3, help="bootstrap resamples timed on the CPU (x10 on a GPU)")
    args = parser.parse_args()
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)
    gen = rng.normal(size=(args.n, args.dim)) @ mixing + 0.05
    mu_r, sigma_r = feature_stats(rng.normal(size=(args.n, args.dim)) @ (mixing * 0.9))
    mu_g, sigma_g = feature_stats(gen)
    ref = {"mu": mu_r, "sigma": sigma_r}
    # Both routes start from the same features; the covariance (np.cov) is common to both.
    theirs, theirs_s = best_of(args.repeats, lambda: float(calculate_frechet_distance(mu_g, sigma_g, mu_r, sigma_r)))
    ours, ours_s = best_of(args.repeats, lambda: frechet_distance_to_features(gen, ref, device="cpu"))
    _, cov_s = best_of(args.repeats, lambda: feature_stats(gen))
    print(f"N = {args.n}, D = {args.dim}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(
        f"  pytorch-fid calculate_frechet_distance {theirs:.6f}  {theirs_s + cov_s:7.2f} s (incl. np.cov {cov_s:.2f} s)"
    )
    print(
        f"  arelbo, CPU                            {ours:.6f}  {ours_s:7.2f} s   "
        f"rel. diff {abs(ours - theirs) / abs(theirs):.1e}"
    )
    print(f"  speed-up on the CPU: {(theirs_s + cov_s) / ours_s:.2f}x")
    if torch.cuda.is_available():
        frechet_distance_to_features(gen, ref, device="cuda")  # warm-up: CUDA context, cuSOLVER
        on_gpu, gpu_s = best_of(args.repeats, lambda: frechet_distance_to_features(gen, ref, device="cuda"))
        print(
            f"  arelbo, {torch.cuda.get_device_name()}  {on_gpu:.6f}  {gpu_s:7.2f} s   "
            f"speed-up {(theirs_s + cov_s) / gpu_s:.1f}x over pytorch-fid on the CPU"
        )

    for device, resamples in [("cpu", args.resamples)] + (
        [("cuda", 10 * args.resamples)] if torch.cuda.is_available() else []
    ):
        timed = lambda r: best_of(1, lambda: fid_bootstrap(gen, ref, resamples=r, seed=0, device=device))[1]  # noqa: E731
        timed(1)  # warm-up
        per = (timed(resamples) - timed(1)) / (resamples - 1)
        print(
            f"  bootstrap_resample_s on {device}: {per:.3f} s per resample at N = {args.n} "
            f"({per * 1000 / 60:.1f} min for the paper's 1,000)"
        )


if __name__ == "__main__":
    main()
