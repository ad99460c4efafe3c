"""How much a job's work slows down with one torch thread instead of two, per kind of CPU work: an
MNIST training step (Table 3 net, batch 64), a Section 3 step (Appendix D net, batch 32) and
Inception on 16 images. `arelbo plan --max-threads 1` scales the work of each job by Amdahl's law
with the parallel fraction p printed here (arelbo/reference/costs.yaml, `parallel_fraction`):
t(1 thread) / t(2 threads) = 1 + p.

    python benchmarks/thread_scaling.py [--repeats 3]

Each workload runs alternately at 2 and 1 threads in this one process, best of `--repeats`.
"""

from __future__ import annotations

import argparse
import time

import torch

from arelbo.core import layout
from arelbo.core.runtime import seed_everything
from arelbo.models.nets import AppendixDAutoencoder, build_net
from arelbo.models.objectives import loss_and_terms


def _training(net, loss_fn, batch_size: int, steps: int):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, 28, 28)

    def run():
        for _ in range(steps):
            loss = loss_fn(net, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def workloads() -> dict:
    seed_everything(0)
    mnist = build_net("vae", "mnist")
    section3 = AppendixDAutoencoder(8)

    def section3_loss(net, x):  # the net's forward and backward are the work; the loss's form is not
        return ((net(x) - x) ** 2).mean()

    found = {
        "train (MNIST VAE, batch 64, 20 steps)": _training(
            mnist, lambda net, x: loss_and_terms("vae", "mnist", net, x)[0], 64, 20
        ),
        "section 3 (Appendix D, batch 32, 40 steps)": _training(section3, section3_loss, 32, 40),
    }
    weights = layout.inception_weights("resources")
    if weights.is_file():
        from arelbo.metrics.inception_weights import build_inception

        inception = build_inception(weights).to(memory_format=torch.channels_last)
        images = torch.rand(16, 3, 299, 299).to(memory_format=torch.channels_last)

        def features():
            with torch.no_grad():
                inception(images)

        found["inception (16 images)"] = features
    else:
        print(f"(no Inception weights at {weights}: `make provision`; its row is skipped)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}; best of {args.repeats}, threads alternating 2 / 1")
    fractions = []
    for name, work in workloads().items():
        work()  # warm-up (allocator, oneDNN primitives)
        best = {1: float("inf"), 2: float("inf")}
        for _ in range(args.repeats):
            for threads in (2, 1):
                torch.set_num_threads(threads)
                start = time.perf_counter()
                work()
                best[threads] = min(best[threads], time.perf_counter() - start)
        ratio = best[1] / best[2]
        fractions.append(ratio - 1)
        print(
            f"{name:45s} 2 threads {best[2]:6.2f} s   1 thread {best[1]:6.2f} s   ratio {ratio:.2f}   p {ratio - 1:.2f}"
        )
    print(f"parallel fraction p, mean over the workloads: {sum(fractions) / len(fractions):.2f}")


if __name__ == "__main__":
    main()
