"""The Fréchet distance at the paper's sizes (10,000 generated features, D = 2048): arelbo's route
(two symmetric eigenproblems in float64, on the device) against pytorch-fid's
`calculate_frechet_distance` (scipy's sqrtm of the non-symmetric product), on the same statistics.

    python benchmarks/frechet_distance.py [--n 10000] [--dim 2048] [--repeats 3]

Prints both distances (they must agree to 1e-6 relative), each route's best-of-repeats wall time on
the CPU and, where CUDA is usable, arelbo's on the GPU, and the ratios, measured in one run. Then the
cost of one FID bootstrap resample at this N (`bootstrap_resample_s` of arelbo/reference/costs.yaml;
(time of R resamples − time of 1) / (R − 1), so the fixed part (√Σ_ref) is not counted), and one FID
with its delta-method standard error against the FID alone (`delta_se_s`) and against one FID with
1,000 bootstrap resamples (the paper's former default), as ratios measured in one run; and the
floor of any exact delta-method route, its two extra pieces timed on their own: the eigenvectors of a
D×D matrix whose eigenvalues alone the FID needs, and one N×D by D×D product for the N quadratic forms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arelbo.metrics.fid import (  # noqa: E402
    feature_stats,
    fid_bootstrap,
    frechet_distance_and_standard_error,
    frechet_distance_to_features,
)


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

    # Each FID's standard error: the delta method (one pass with the distance) against the bootstrap
    # of 1,000 resamples, projected from R timed resamples (57 minutes on a 2-core CPU: not run whole)
    for device, resamples in [("cpu", args.resamples)] + (
        [("cuda", 10 * args.resamples)] if torch.cuda.is_available() else []
    ):
        fid_only = best_of(args.repeats, lambda: frechet_distance_to_features(gen, ref, device=device))[1]
        (value, se), with_se = best_of(
            args.repeats, lambda: frechet_distance_and_standard_error(gen, ref, device=device)
        )
        timed = lambda r: best_of(1, lambda: fid_bootstrap(gen, ref, resamples=r, seed=0, device=device))[1]  # noqa: E731
        timed(1)  # warm-up
        per = (timed(resamples) - timed(1)) / (resamples - 1)
        with_bootstrap = fid_only + 1000 * per
        print(
            f"  on {device}: FID alone {fid_only:.2f} s; FID with its delta-method SE {with_se:.2f} s "
            f"(FID {value:.4f} ± {se:.4f})"
        )
        print(
            f"    the delta-method SE adds {100 * (with_se / fid_only - 1):.0f} % to the FID's own computation "
            f"(delta_se_s {with_se - fid_only:.2f} s)"
        )
        print(
            f"    bootstrap_resample_s {per:.3f} s per resample at N = {args.n}: FID with 1,000 resamples "
            f"{with_bootstrap:.0f} s ({with_bootstrap / 60:.1f} min, projected from {resamples}); "
            f"delta / bootstrap = 1 / {with_bootstrap / with_se:.0f}"
        )
        # Why the delta method cannot add only a few per cent to an FID computed this way: it needs two
        # things the FID does not, each measured here on the same device and matrices.
        y = torch.as_tensor(gen - gen.mean(0), device=device)
        inner = torch.as_tensor(sigma_g, device=device)  # a D×D symmetric PSD matrix like FᵀΣF
        values_s = best_of(args.repeats, lambda: torch.linalg.eigvalsh(inner))[1]
        vectors_s = best_of(args.repeats, lambda: torch.linalg.eigh(inner))[1]
        product_s = best_of(args.repeats, lambda: y @ inner)[1]
        floor = vectors_s - values_s + product_s
        print(
            f"    its floor: eigenvectors where the FID needs eigenvalues (+{vectors_s - values_s:.2f} s) and "
            f"N quadratic forms, one N×D by D×D product (+{product_s:.2f} s): {100 * floor / fid_only:.0f} % of "
            f"the FID alone"
        )


if __name__ == "__main__":
    main()
