"""The FID stage of one model (all its FIDs) with arelbo — cached reference statistics, in-memory
uint8 batches, one Inception load — against the pytorch-fid command line on PNG folders, which
decodes PNGs and recomputes the reference statistics for every FID.

    python benchmarks/fid_throughput.py [--n-samples 100] [--n-reference 200] [--model-file model.pt]

Both sides score the same generated images against the same MNIST test images; the script prints
each FID from both (they must agree) and the ratio of the wall times, measured in one run.
Without --model-file it uses a seeded, untrained MNIST VAE (the images are what matter here).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arelbo.core import layout  # noqa: E402
from arelbo.core.config import load_config  # noqa: E402
from arelbo.core.runtime import pick_device, seed_everything  # noqa: E402
from arelbo.metrics.fid import fid_against, reference_stats  # noqa: E402
from arelbo.metrics.inception_weights import FID_WEIGHTS_FILENAME, build_inception  # noqa: E402
from arelbo.metrics.interpolation import interpolation_latents  # noqa: E402
from arelbo.models.estimators import fit_estimator  # noqa: E402
from arelbo.models.nets import build_net  # noqa: E402
from arelbo.stages import evaluate  # noqa: E402
from arelbo.stages.data import load_split  # noqa: E402
from arelbo.stages.train import load_trained  # noqa: E402


def write_pngs(images: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--n-reference", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--model-file", help="a trained MNIST model.pt (default: untrained VAE)")
    args = parser.parse_args()
    os.chdir(REPO)
    cfg = load_config(REPO / "config" / "ci.yaml", check_folders=False)
    device = pick_device()
    weights = layout.inception_weights(cfg.resources)

    if args.model_file:
        net, _ = load_trained(Path(args.model_file), device)
    else:
        seed_everything(0)
        net = build_net("vae", "mnist").eval().to(device)
    train = load_split("mnist", "train", cfg, limit=2000)
    mu, logvar = evaluate.encode_split(net, train, device)
    test_mu, _ = evaluate.encode_split(net, load_split("mnist", "test", cfg, limit=None)[:1000], device)
    latents = {
        "prior": torch.randn(args.n_samples, mu.shape[1], generator=torch.Generator().manual_seed(1)),
        "gmm10": fit_estimator("gmm10", mu, logvar, seed=0).sample(args.n_samples, 3),
        "interp_mid": interpolation_latents(test_mu, args.n_samples, "mid", 5).latents,
        "interp_random": interpolation_latents(test_mu, args.n_samples, "random", 6).latents,
    }
    samples = {k: evaluate.decode_to_uint8(net, z.float(), device) for k, z in latents.items()}
    reference_images = load_split("mnist", "test", cfg, limit=args.n_reference).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # arelbo: reference statistics computed once and cached (first call), then every FID.
        start = time.perf_counter()
        inception = build_inception(weights).to(device)
        ref = reference_stats(
            tmp / "ref.npz",
            lambda: reference_images,
            dataset="mnist",
            split="test",
            count=args.n_reference,
            weights_path=weights,
            model=inception,
            batch_size=args.batch_size,
            device=device,
            progress=False,
        )
        ours = {
            k: fid_against(v, ref, inception, batch_size=args.batch_size, device=device, progress=False)
            for k, v in samples.items()
        }
        arelbo_s = time.perf_counter() - start

        # pytorch-fid's CLI on PNG folders; it finds the weights in TORCH_HOME's hub cache.
        write_pngs(reference_images, tmp / "reference")
        for k, v in samples.items():
            write_pngs(v, tmp / k)
        hub = tmp / "torch" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        (hub / FID_WEIGHTS_FILENAME).symlink_to(weights.resolve())
        env = {**os.environ, "TORCH_HOME": str(tmp / "torch")}
        theirs = {}
        start = time.perf_counter()
        for k in samples:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytorch_fid",
                    str(tmp / "reference"),
                    str(tmp / k),
                    "--device",
                    str(device),
                    "--batch-size",
                    str(args.batch_size),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            theirs[k] = float(out.stdout.strip().split()[-1])
        cli_s = time.perf_counter() - start

    print(f"device {device}; {len(samples)} FIDs of {args.n_samples} samples vs {args.n_reference} reference images")
    for k in samples:
        print(
            f"  fid_{k:14s} arelbo {ours[k]:10.4f}   pytorch-fid CLI {theirs[k]:10.4f}   "
            f"|diff| {abs(ours[k] - theirs[k]):.2e}"
        )
    print(f"arelbo {arelbo_s:.1f} s   pytorch-fid CLI {cli_s:.1f} s   speed-up {cli_s / arelbo_s:.2f}x")


if __name__ == "__main__":
    main()
