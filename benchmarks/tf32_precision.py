"""TF32 against IEEE FP32 for the measurements the precision policy rests on (docs/design.md,
"Precision policy"): each model's gradient on real batches, one epoch's losses (beside an FP32 run
from weights nudged by one ulp: how far any change of arithmetic drifts), and Inception features with
one FID against the same reference.

    python benchmarks/tf32_precision.py [--models diag_d_arelbo iso_i_arelbo] [--config config/ci.yaml]
        [--batches 2] [--epoch-images 2000] [--fid-images N]

On CUDA "TF32" is cuDNN's own (`arithmetic("tf32")`: TF32 convolutions, cuDNN's autotuner off for
both sides); on the CPU it is arelbo.models.precision's simulation (operands rounded to TF32,
products accumulated in FP32), which is what the registry's `tf32_safe` was set from. Prints one
line per measurement; the two sides always start from the same weights and see the same batches.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arelbo.core import layout  # noqa: E402
from arelbo.core.config import load_config  # noqa: E402
from arelbo.core.precision import arithmetic  # noqa: E402
from arelbo.core.runtime import pick_device  # noqa: E402
from arelbo.models.nets import build_net  # noqa: E402
from arelbo.models.objectives import MODELS, loss_and_terms  # noqa: E402
from arelbo.models.precision import gradient_agreement, simulated_tf32  # noqa: E402
from arelbo.stages.data import load_split  # noqa: E402


def tf32_context(device: torch.device):
    """The TF32 side: the GPU's own kernels, or the simulation on the CPU."""
    return (lambda: arithmetic("tf32")) if device.type == "cuda" else simulated_tf32


def fresh_net(model: str, dataset: str, device: torch.device):
    torch.manual_seed(0)
    return build_net(model, dataset).to(device).train()


def gradients(model, dataset, images, device, batches, batch_size, net=None) -> list[str]:
    """The gradient's cosine with IEEE FP32's on `batches` batches, at `net`'s weights (default: fresh)."""
    net = net if net is not None else fresh_net(model, dataset, device)
    lines = []
    for b in range(batches):
        x = images[b * batch_size : (b + 1) * batch_size].to(device).float() / 255

        def loss(x=x):
            torch.manual_seed(1)
            return loss_and_terms(model, dataset, net, x, sample=False)[0]

        a = gradient_agreement(loss, list(net.parameters()), tf32_context(device))
        lines.append(f"batch {b}: gradient cosine {a.gradient_cosine:.4f}, loss {a.loss_fp32:.6g} vs {a.loss:.6g}")
    return lines


def one_epoch(model, dataset, train, val, device, batch_size, lr, context, nudge=False):
    """Mean training loss over one epoch from the fresh weights, then the validation loss (z = μ) —
    the whole epoch inside `context` — the epoch's seconds and the trained network. `nudge`: every initial weight moved
    by one FP32 ulp, the size of the difference any change of arithmetic makes: training amplifies
    it, and the FP32 run from nudged weights is the floor a TF32 run is compared with."""
    net = fresh_net(model, dataset, device)
    if nudge:
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    total, steps = 0.0, 0
    start = time.perf_counter()
    with context():
        torch.manual_seed(2)
        for i in range(0, len(train) - batch_size + 1, batch_size):
            x = train[order[i : i + batch_size]].to(device).float() / 255
            loss, _ = loss_and_terms(model, dataset, net, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        net.eval()
        with torch.no_grad():
            val_losses = [
                float(loss_and_terms(model, dataset, net, val[i : i + 500].to(device).float() / 255, sample=False)[0])
                for i in range(0, len(val), 500)
            ]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return total / max(steps, 1), float(np.mean(val_losses)), time.perf_counter() - start, net.train()


def inception_comparison(cfg, dataset: str, n: int, device: torch.device) -> list[str]:
    """Inception features of n test images (standing in for generated ones: what differs here is the
    arithmetic) in IEEE FP32 and in TF32, each scored against one reference computed in IEEE FP32."""
    from arelbo.metrics.fid import feature_stats, frechet_distance, inception_features
    from arelbo.metrics.inception_weights import build_inception

    inception = build_inception(layout.inception_weights(cfg.resources)).to(device)

    def features(images, context):
        with context():
            return inception_features(images, inception, batch_size=cfg.fid.batch_size, device=device, progress=False)

    with arithmetic("fp32"):
        reference = feature_stats(features(load_split(dataset, "train", cfg, limit=n).numpy(), contextlib.nullcontext))
    images = load_split(dataset, "test", cfg, limit=n).numpy()
    start = time.perf_counter()
    strict = features(images, lambda: arithmetic("fp32"))
    strict_s = time.perf_counter() - start
    start = time.perf_counter()
    tf32 = features(images, tf32_context(device))
    tf32_s = time.perf_counter() - start
    scale = float(np.abs(strict).max())
    fid_strict = frechet_distance(feature_stats(strict), reference)
    fid_tf32 = frechet_distance(feature_stats(tf32), reference)
    return [
        f"Inception features of {n} images: max |TF32 - FP32| {np.abs(tf32 - strict).max():.3g} "
        f"(largest feature {scale:.3g}); {strict_s:.1f} s FP32, {tf32_s:.1f} s TF32",
        f"FID against one FP32 reference: {fid_strict:.4f} FP32, {fid_tf32:.4f} TF32 "
        f"(difference {fid_tf32 - fid_strict:+.2g})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "config" / "ci.yaml"))
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "celeba"))
    parser.add_argument("--models", nargs="+", default=["diag_d_arelbo", "iso_i_arelbo"], help="or: all")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epoch-images", type=int, default=2000, help="0: no epoch")
    parser.add_argument("--fid-images", type=int, default=None, help="default: 2048 on CUDA, 0 (none) on the CPU")
    args = parser.parse_args()
    cfg = load_config(args.config, check_folders=False)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # the same algorithms for both sides
    models = sorted(MODELS) if args.models == ["all"] else args.models
    side = "cuDNN TF32" if device.type == "cuda" else "TF32 simulated on the CPU"
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}); {side}")
    train = load_split(args.dataset, "train", cfg)
    val = load_split(args.dataset, "val", cfg)
    settings = getattr(cfg.train, args.dataset)
    for model in models:
        for line in gradients(model, args.dataset, train, device, args.batches, args.batch_size):
            print(f"{model}: {line}", flush=True)
        if args.epoch_images:
            part = train[: args.epoch_images]
            runs = {
                name: one_epoch(
                    model, args.dataset, part, val, device, settings.batch_size, settings.lr, context, nudge
                )
                for name, context, nudge in (
                    ("FP32", lambda: arithmetic("fp32"), False),
                    ("FP32 nudged", lambda: arithmetic("fp32"), True),
                    ("TF32", tf32_context(device), False),
                )
            }
            print(
                f"{model}: one epoch of {len(part)} images, train / validation loss: "
                + "; ".join(f"{name} {t:.6g} / {v:.6g} ({s:.1f} s)" for name, (t, v, s, _) in runs.items()),
                flush=True,
            )
            # where residuals have shrunk, a rounding of μ matters more: the gradients again, at the
            # weights FP32 trained to
            held_out = val[: args.batches * args.batch_size]
            trained = runs["FP32"][3]
            for line in gradients(model, args.dataset, held_out, device, args.batches, args.batch_size, trained):
                print(f"{model}: after the epoch, {line}", flush=True)
    fid_images = args.fid_images if args.fid_images is not None else (2048 if device.type == "cuda" else 0)
    if fid_images:
        for line in inception_comparison(cfg, args.dataset, fid_images, device):
            print(line, flush=True)


if __name__ == "__main__":
    main()
