"""Training steps/s of arelbo's trainer (minibatches indexed from an in-memory uint8 tensor on the
device) against a plain `DataLoader(TensorDataset)` loop with the same model, objective and batch.

    python benchmarks/train_throughput.py [--steps 30] [--model iso_i_arelbo] [--datasets mnist celeba]

Prints steps/s for both and their ratio, measured in one run on the current device.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from arelbo.core.runtime import pick_device, seed_everything
from arelbo.models.nets import build_net
from arelbo.models.objectives import loss_and_terms
from arelbo.models.training import Batches, epoch_generator

SHAPES = {"mnist": (1, 28, 28), "celeba": (3, 64, 64)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(net, opt, x, model, dataset):
    """One optimisation step, identical for both loops. Like the trainer, no per-step host sync: the
    losses' finiteness is the trainer's periodic check, left out of both loops alike."""
    loss, _ = loss_and_terms(model, dataset, net, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def arelbo_loop(net, opt, images, model, dataset, batch_size, steps, device):
    batches = Batches(images.to(device), batch_size)
    done = 0
    _sync(device)
    start = time.perf_counter()
    while done < steps:
        for x in batches.epoch(epoch_generator(0, done)):
            step(net, opt, x, model, dataset)
            done += 1
            if done == steps:
                break
    _sync(device)
    return steps / (time.perf_counter() - start)


def dataloader_loop(net, opt, images, model, dataset, batch_size, steps, device):
    # The common baseline: float images in a TensorDataset, shuffled by a DataLoader, moved per batch.
    loader = DataLoader(
        TensorDataset(images.float().div(255.0)), batch_size=batch_size, shuffle=True, pin_memory=device.type == "cuda"
    )
    done = 0
    _sync(device)
    start = time.perf_counter()
    while done < steps:
        for (x,) in loader:
            step(net, opt, x.to(device, non_blocking=True), model, dataset)
            done += 1
            if done == steps:
                break
    _sync(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model", default="iso_i_arelbo")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-images", type=int, default=4096)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "celeba"])
    args = parser.parse_args()
    device = pick_device()
    print(f"device: {device}  torch {torch.__version__}  threads {torch.get_num_threads()}  model {args.model}")
    for dataset in args.datasets:
        images = torch.randint(0, 256, (args.n_images, *SHAPES[dataset]), dtype=torch.uint8)
        rates = {}
        for name, loop in (("arelbo", arelbo_loop), ("dataloader", dataloader_loop)):
            seed_everything(0)
            net = build_net(args.model, dataset).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            loop(net, opt, images, args.model, dataset, args.batch_size, args.warmup, device)
            rates[name] = loop(net, opt, images, args.model, dataset, args.batch_size, args.steps, device)
        print(
            f"{dataset:7s} arelbo {rates['arelbo']:8.2f} steps/s   DataLoader(TensorDataset) "
            f"{rates['dataloader']:8.2f} steps/s   ratio {rates['arelbo'] / rates['dataloader']:.2f}x"
        )


if __name__ == "__main__":
    main()
